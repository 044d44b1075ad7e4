//! Sign-in, the token API for non-browser clients, and the failed-login limit.
#![cfg(feature = "ssr")]

mod common;

use axum::http::StatusCode;
use common::TestApp;
use sqlx::PgPool;
use threadline::api::orders::ListOrders;
use threadline::auth::api::{Login, Logout};
use threadline::auth::server::TokenError;

#[sqlx::test]
async fn the_token_api_returns_a_working_bearer_token(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app
        .post_json(
            "/api/auth/token",
            r#"{"email":"buyer@sleek.test","password":"threadline"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["expires_in"], 3600);
    let token = reply.body["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let claims = app.state.auth.verify(&token).map(|c| c.email);
    assert_eq!(claims.as_deref(), Ok("buyer@sleek.test"));

    let request = axum::http::Request::builder()
        .method("POST")
        .uri(<ListOrders as leptos::server_fn::ServerFn>::PATH)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap_or_default();
    let orders = app.send(request).await;
    assert_eq!(orders.status, StatusCode::OK);
    assert_eq!(orders.body["items"].as_array().map(Vec::len), Some(7));
}

#[sqlx::test]
async fn the_token_api_refuses_bad_credentials_and_bad_json(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let wrong = app
        .post_json(
            "/api/auth/token",
            r#"{"email":"buyer@sleek.test","password":"nope"}"#,
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body["error"], "unauthorized");
    assert_eq!(wrong.message(), "wrong email or password");

    let unknown = app
        .post_json(
            "/api/auth/token",
            r#"{"email":"nobody@sleek.test","password":"threadline"}"#,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);

    for body in ["not json", "{}", r#"{"email": 5}"#] {
        let reply = app.post_json("/api/auth/token", body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            reply.message().starts_with("send JSON like"),
            "{}",
            reply.message()
        );
    }
}

#[sqlx::test]
async fn an_expired_token_is_refused_with_a_reason(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let user = app.user("buyer@sleek.test").await;
    let (token, _) = app.state.auth.issue(&user, std::time::Duration::ZERO);
    assert_eq!(
        app.state.auth.verify(&token).err(),
        Some(TokenError::Expired)
    );
    let request = axum::http::Request::builder()
        .method("POST")
        .uri(<ListOrders as leptos::server_fn::ServerFn>::PATH)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap_or_default();
    let reply = app.send(request).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.message(), "the access token has expired");
}

#[sqlx::test]
async fn repeated_failures_lock_the_account_for_a_while(pool: PgPool) {
    let app = TestApp::new(pool).await;
    for _ in 0..5 {
        let reply = app
            .post_json(
                "/api/auth/token",
                r#"{"email":"buyer@sleek.test","password":"guess"}"#,
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let locked = app
        .post_json(
            "/api/auth/token",
            r#"{"email":"buyer@sleek.test","password":"threadline"}"#,
        )
        .await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.message().contains("try again in 15 minutes"));
    // other accounts are unaffected
    let other = app
        .post_json(
            "/api/auth/token",
            r#"{"email":"buyer2@sleek.test","password":"threadline"}"#,
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
}

#[sqlx::test]
async fn signing_in_sets_an_http_only_cookie_and_signing_out_ends_the_session(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let login = app
        .call(
            None,
            &Login {
                email: "Buyer@Sleek.test ".into(),
                password: "threadline".into(),
            },
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.body["email"], "buyer@sleek.test");
    let cookie = login.set_cookie.unwrap_or_default();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap_or_default().to_string();
    assert_eq!(app.get("/orders", Some(&session)).await.0, StatusCode::OK);

    let request = axum::http::Request::builder()
        .method("POST")
        .uri(<Logout as leptos::server_fn::ServerFn>::PATH)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &session)
        .header("host", "localhost:3000")
        .header("origin", "http://localhost:3000")
        .body(axum::body::Body::empty())
        .unwrap_or_default();
    assert_eq!(app.send(request).await.status, StatusCode::OK);
    assert!(app.get("/orders", Some(&session)).await.0.is_redirection());
}
