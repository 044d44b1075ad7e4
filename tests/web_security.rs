//! The site as an attacker meets it: changes only from its own pages,
//! redirects only to its own paths, security headers on every response,
//! sign-in guesses limited however they arrive, and metrics only for whoever
//! holds their token.
#![cfg(feature = "ssr")]

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use common::{METRICS_TOKEN, Reply, TestApp};
use leptos::server_fn::ServerFn;
use sqlx::PgPool;
use threadline::api::orders::CreateOrder;
use threadline::auth::api::Login;

const BUYER: &str = "buyer@sleek.test";
const HOST: &str = "portal.test:3000";

async fn signed_in(app: &TestApp) -> String {
    let user = app.user(BUYER).await;
    let token = threadline::auth::server::create_session(&app.pool, user.id, 1)
        .await
        .expect("session");
    format!("threadline_session={token}")
}

fn create_order_body() -> String {
    serde_urlencoded::to_string(CreateOrder {
        product: "Forged tee".into(),
        quantity: "10".into(),
        due_date: "2099-01-01".into(),
        notes: None,
    })
    .expect("encodes")
}

/// A form POST to a server function, with these extra headers.
async fn post(app: &TestApp, path: &str, body: String, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.send(request.body(Body::from(body)).expect("request"))
        .await
}

async fn forged_orders(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from orders where product = 'Forged tee'")
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[sqlx::test]
async fn a_signed_in_change_from_another_site_is_refused(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let cookie = signed_in(&app).await;
    let path = CreateOrder::PATH;
    let attempts: Vec<Vec<(&str, &str)>> = vec![
        vec![("cookie", &cookie), ("origin", "https://evil.example")],
        vec![("cookie", &cookie), ("origin", "null")],
        vec![("cookie", &cookie), ("origin", "http://portal.test:3001")],
        vec![("cookie", &cookie), ("sec-fetch-site", "cross-site")],
        vec![
            ("cookie", &cookie),
            ("sec-fetch-site", "same-site"),
            ("origin", "http://portal.test:3000"),
        ],
        // a "simple" cross-site request: text/plain, no preflight
        vec![("cookie", &cookie), ("content-type", "text/plain")],
    ];
    for headers in attempts {
        let reply = post(&app, path, create_order_body(), &headers).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(reply.body["error"], "forbidden", "{headers:?}");
        assert!(!reply.message().is_empty());
    }
    assert_eq!(forged_orders(&app).await, 0, "nothing was written");
    // the site's own page: allowed
    let reply = post(
        &app,
        path,
        create_order_body(),
        &[
            ("cookie", &cookie),
            ("origin", "http://portal.test:3000"),
            ("sec-fetch-site", "same-origin"),
            ("accept", "application/json"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(forged_orders(&app).await, 1);
}

#[sqlx::test]
async fn signing_in_from_another_site_sets_no_session(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let body = serde_urlencoded::to_string(Login {
        email: BUYER.into(),
        password: "threadline".into(),
    })
    .expect("encodes");
    let reply = post(
        &app,
        Login::PATH,
        body.clone(),
        &[
            ("origin", "https://evil.example"),
            ("referer", "https://evil.example/phish"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.set_cookie.is_none());
}

#[sqlx::test]
async fn a_form_posted_without_javascript_is_sent_back_only_within_the_site(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let body = serde_urlencoded::to_string(Login {
        email: BUYER.into(),
        password: "threadline".into(),
    })
    .expect("encodes");
    let request = Request::builder()
        .method("POST")
        .uri(Login::PATH)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "http://portal.test:3000")
        .header(header::REFERER, "https://evil.example/after-login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "text/html")
        .body(Body::from(body))
        .expect("request");
    let response = tower::ServiceExt::oneshot(app.router.clone(), request)
        .await
        .expect("answers");
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or("");
    assert!(
        location.starts_with('/') && !location.starts_with("//"),
        "redirected to {location:?}"
    );
}

#[sqlx::test]
async fn every_response_carries_security_headers(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let request = Request::builder()
        .uri("/login")
        .body(Body::empty())
        .expect("request");
    let response = tower::ServiceExt::oneshot(app.router.clone(), request)
        .await
        .expect("answers");
    let headers = response.headers().clone();
    let html = String::from_utf8_lossy(
        &axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .expect("body"),
    )
    .into_owned();
    let policy = headers
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("'wasm-unsafe-eval'"), "{policy}");
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_default();
    assert!(!nonce.is_empty(), "{policy}");
    assert!(
        html.contains(&format!("nonce=\"{nonce}\"")),
        "the page's own scripts carry the nonce"
    );
    assert_eq!(
        headers
            .get(header::X_CONTENT_TYPE_OPTIONS)
            .map(|v| v.as_bytes()),
        Some(&b"nosniff"[..])
    );
    assert_eq!(
        headers.get(header::REFERRER_POLICY).map(|v| v.as_bytes()),
        Some(&b"strict-origin-when-cross-origin"[..])
    );
    // an API error too
    let reply = post(&app, CreateOrder::PATH, create_order_body(), &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let request = Request::builder()
        .uri("/healthz")
        .body(Body::empty())
        .expect("request");
    let response = tower::ServiceExt::oneshot(app.router.clone(), request)
        .await
        .expect("answers");
    assert!(
        response
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .is_some()
    );
    assert!(
        response
            .headers()
            .get(header::X_CONTENT_TYPE_OPTIONS)
            .is_some()
    );
}

#[sqlx::test]
async fn cookies_are_secure_when_the_site_is_served_over_https(pool: PgPool) {
    let mut app = TestApp::new(pool).await;
    let mut settings = (*app.state.settings).clone();
    settings.server.trust_proxy_headers = true;
    app.state.settings = std::sync::Arc::new(settings);
    app.router = threadline::server::app(app.state.clone());
    let body = serde_urlencoded::to_string(Login {
        email: BUYER.into(),
        password: "threadline".into(),
    })
    .expect("encodes");
    let reply = post(
        &app,
        Login::PATH,
        body,
        &[
            ("origin", "https://portal.test:3000"),
            ("x-forwarded-proto", "https"),
            ("accept", "application/json"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        reply
            .set_cookie
            .as_deref()
            .is_some_and(|c| c.contains("; Secure")),
        "{:?}",
        reply.set_cookie
    );
}

#[sqlx::test]
async fn concurrent_guesses_cannot_get_past_the_limit(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let guesses = (0..40).map(|n| {
        let app = &app;
        async move {
            app.post_json(
                "/api/auth/token",
                &format!(r#"{{"email":"{BUYER}","password":"guess {n}"}}"#),
            )
            .await
            .status
        }
    });
    let statuses = futures::future::join_all(guesses).await;
    let evaluated = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(evaluated <= 5, "{evaluated} guesses were checked");
    assert_eq!(evaluated + limited, 40);
    // and the right password is refused too until the window passes
    let reply = app
        .post_json(
            "/api/auth/token",
            &format!(r#"{{"email":"{BUYER}","password":"threadline"}}"#),
        )
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
}

#[sqlx::test]
async fn sign_ins_are_limited_per_client_address(pool: PgPool) {
    let mut app = TestApp::new(pool).await;
    let mut settings = (*app.state.settings).clone();
    settings.server.sign_ins_per_minute = 5;
    app.state = threadline::server::AppState::new(
        settings,
        app.pool.clone(),
        app.state.auth.clone(),
        app.state.realtime.clone(),
    );
    app.router = threadline::server::app(app.state.clone());
    let from = |address: [u8; 4], n: usize| {
        let mut request = Request::builder()
            .method("POST")
            .uri("/api/auth/token")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(format!(
                r#"{{"email":"nobody{n}@sleek.test","password":"x"}}"#
            )))
            .expect("request");
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((address, 40000))));
        request
    };
    let mut statuses = Vec::new();
    for n in 0..8 {
        statuses.push(app.send(from([203, 0, 113, 7], n)).await.status);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        3
    );
    // someone else is not held up
    assert_eq!(
        app.send(from([198, 51, 100, 1], 0)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test]
async fn metrics_are_only_for_whoever_holds_their_token(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let get = |auth: Option<&str>| {
        let mut request = Request::builder().uri("/metrics");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        request.body(Body::empty()).expect("request")
    };
    assert_eq!(app.send(get(None)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.send(get(Some("Bearer wrong"))).await.status,
        StatusCode::UNAUTHORIZED
    );
    let ok = app
        .send(get(Some(&format!("Bearer {METRICS_TOKEN}"))))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    // without a token set, the site does not serve them at all
    let mut bare = TestApp::new_unseeded_like(&app).await;
    let mut settings = (*bare.state.settings).clone();
    settings.server.metrics_token.clear();
    bare.state.settings = std::sync::Arc::new(settings);
    bare.router = threadline::server::app(bare.state.clone());
    assert_eq!(
        bare.send(get(Some(&format!("Bearer {METRICS_TOKEN}"))))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}
