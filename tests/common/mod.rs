//! Drives the real router (no socket) over a real PostgreSQL database that
//! `#[sqlx::test]` creates fresh for each test and migrates.
#![allow(dead_code)]

pub mod live;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use leptos::server_fn::ServerFn;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

use threadline::auth::server::AuthKeys;
use threadline::model::SessionUser;
use threadline::realtime::identity::AppIdentity;
use threadline::realtime::rules::AppRules;
use threadline::server::settings::Settings;
use threadline::server::{AppState, app, demo};
use threadline_realtime::engine::{Ports, Realtime};

/// The app's ports, as `main` gives them to the engine.
pub fn ports(pool: &PgPool, auth: &Arc<AuthKeys>) -> Ports {
    Ports {
        identity: Arc::new(AppIdentity {
            pool: pool.clone(),
            auth: auth.clone(),
        }),
        rules: Arc::new(AppRules),
    }
}

/// The metrics token of test servers.
pub const METRICS_TOKEN: &str = "test-metrics-token";

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub pool: PgPool,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub set_cookie: Option<String>,
}

impl Reply {
    /// The `message` of an error reply.
    pub fn message(&self) -> &str {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

impl TestApp {
    /// The app on this database, loaded with the demo data.
    pub async fn new(pool: PgPool) -> TestApp {
        demo::seed(&pool).await.expect("demo data loads");
        Self::without_seed(pool).await
    }

    pub async fn without_seed(pool: PgPool) -> TestApp {
        let mut settings = Settings::default();
        settings.server.metrics_token = METRICS_TOKEN.into();
        let auth = Arc::new(AuthKeys::load(&pool).await.expect("signing key"));
        let realtime =
            Realtime::without_capture(&pool, settings.realtime.clone(), ports(&pool, &auth))
                .await
                .expect("realtime catalog loads");
        let state = AppState::new(settings, pool.clone(), auth, realtime);
        TestApp {
            router: app(state.clone()),
            state,
            pool,
        }
    }

    /// Another app on the same database and state.
    pub async fn new_unseeded_like(other: &TestApp) -> TestApp {
        TestApp {
            router: app(other.state.clone()),
            state: other.state.clone(),
            pool: other.pool.clone(),
        }
    }

    pub async fn user(&self, email: &str) -> SessionUser {
        sqlx::query_as("select id, email, name, role, factory_id from users where email = $1")
            .bind(email)
            .fetch_one(&self.pool)
            .await
            .expect("demo user exists")
    }

    pub async fn token(&self, email: &str) -> String {
        self.state
            .auth
            .issue(&self.user(email).await, std::time::Duration::from_secs(300))
            .0
    }

    /// Calls a server function as `email` (or anonymously) the way the
    /// browser does: a form-encoded POST to its path.
    pub async fn call<S: ServerFn + Serialize>(&self, email: Option<&str>, args: &S) -> Reply {
        let body = serde_urlencoded::to_string(args).expect("arguments encode");
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(S::PATH)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        if let Some(email) = email {
            request = request.header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token(email).await),
            );
        }
        self.send(request.body(Body::from(body)).expect("request builds"))
            .await
    }

    /// Calls a server function that takes JSON (`input = Json`) as `email`.
    pub async fn call_json<S: ServerFn + Serialize>(&self, email: Option<&str>, args: &S) -> Reply {
        let body = serde_json::to_string(args).expect("arguments encode");
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(S::PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(email) = email {
            request = request.header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token(email).await),
            );
        }
        self.send(request.body(Body::from(body)).expect("request builds"))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &str) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request builds");
        self.send(request).await
    }

    /// The server's Prometheus metrics.
    pub async fn metrics(&self) -> String {
        let request = Request::builder()
            .uri("/metrics")
            .header(header::AUTHORIZATION, format!("Bearer {METRICS_TOKEN}"))
            .body(Body::empty())
            .expect("request builds");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router answers");
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::builder().uri(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::empty()).expect("request builds"))
            .await
            .expect("router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router answers");
        let status = response.status();
        let set_cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply {
            status,
            body,
            set_cookie,
        }
    }

    pub async fn order_id(&self, product: &str) -> uuid::Uuid {
        sqlx::query_scalar("select id from orders where product = $1")
            .bind(product)
            .fetch_one(&self.pool)
            .await
            .expect("demo order exists")
    }
}
