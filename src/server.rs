//! Everything that runs only on the server: settings, the database (embedded
//! or external), demo data and the HTTP router that ties the app together.

pub mod assets;
pub mod database;
pub mod demo;
pub mod embedded_postgres;
pub mod page_cache;
pub mod security;
pub mod settings;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list};
use sqlx::PgPool;

use threadline_realtime::engine::Realtime;

use crate::app::{App, shell};
use crate::error::AppError;
use settings::Settings;

/// Shared by every handler and server function (through context).
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    /// The browser bundle's (hashed) file names.
    pub assets: Arc<assets::Assets>,
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub auth: Arc<crate::auth::server::AuthKeys>,
    pub realtime: Arc<Realtime>,
    /// Sign-in attempts per client address.
    pub sign_ins: Arc<security::AddressLimiter>,
    /// Passwords being hashed at once.
    pub hashing: Arc<tokio::sync::Semaphore>,
    /// Rendered pages, reused while the database is unchanged.
    pub pages: Arc<page_cache::PageCache>,
}

impl AppState {
    pub fn new(
        settings: Settings,
        pool: PgPool,
        auth: Arc<crate::auth::server::AuthKeys>,
        realtime: Arc<Realtime>,
    ) -> AppState {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut leptos_options = settings.leptos_options();
        let assets = Arc::new(assets::Assets::load(&mut leptos_options));
        AppState {
            leptos_options,
            assets,
            sign_ins: security::sign_in_limiter(settings.server.sign_ins_per_minute),
            hashing: Arc::new(tokio::sync::Semaphore::new(cores.saturating_mul(2))),
            pages: Arc::default(),
            pool,
            settings: Arc::new(settings),
            auth,
            realtime,
        }
    }

    /// The state of the request being handled, for server functions.
    pub fn current() -> Result<AppState, AppError> {
        use_context::<AppState>().ok_or_else(|| {
            tracing::error!("AppState missing from server function context");
            AppError::Internal
        })
    }
}

pub fn app(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let context_state = state.clone();
    let provide_state = move || {
        provide_context(context_state.clone());
        // the page's nonce for its inline scripts (see `security::page_nonce`)
        match use_context::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<security::PageNonce>().cloned())
        {
            Some(security::PageNonce(nonce)) => provide_context(nonce),
            None => leptos::nonce::provide_nonce(),
        }
    };
    let pages = Router::new()
        .leptos_routes_with_context(&state, routes, provide_state.clone(), {
            let options = state.leptos_options.clone();
            move || shell(options.clone())
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            page_cache::reuse_pages,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            resolve_session,
        ))
        .route_layer(axum::middleware::map_response(server_fn_error_status))
        .route_layer(axum::middleware::from_fn_with_state(
            state.assets.clone(),
            assets::preload_bundle,
        ));
    Router::new()
        .route("/api/auth/token", post(crate::auth::server::issue_token))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/realtime/v1/websocket",
            get(threadline_realtime::socket::websocket),
        )
        .route(
            "/realtime/v1/api/broadcast",
            post(threadline_realtime::broadcast::http_broadcast),
        )
        .route(
            "/realtime/v1/api/broadcast/{topic}/events/{event}",
            post(threadline_realtime::broadcast::http_broadcast_event),
        )
        .route("/metrics", get(metrics))
        .nest_service(
            &format!("/{}", state.leptos_options.site_pkg_dir),
            assets::bundle(
                &state.leptos_options.site_root,
                &state.leptos_options.site_pkg_dir,
            ),
        )
        .merge(pages)
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(provide_state, shell))
        .layer(axum::middleware::from_fn(security::page_nonce))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::limit_sign_ins,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::same_site_only,
        ))
        .layer(axum::middleware::from_fn(security::security_headers))
        .layer(axum::middleware::from_fn(assets::cache_control))
        .layer(assets::compression())
        .with_state(state)
}

/// A router serving only `GET /metrics`, for `metrics-addr`.
pub fn metrics_app(realtime: Arc<Realtime>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || async move { exposition(&realtime) }),
    )
}

/// Prometheus metrics of the realtime engine, for whoever holds the
/// `metrics-token` (or on `metrics-addr`, see `metrics_app`).
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let token = state.settings.server.metrics_token.as_str();
    if token.is_empty() {
        return AppError::NotFound(
            "metrics are served on metrics-addr, or here with a metrics-token".into(),
        )
        .into_response();
    }
    let given = crate::auth::server::bearer_token(&headers).unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return AppError::Unauthorized("send the metrics token as a bearer token".into())
            .into_response();
    }
    exposition(&state.realtime)
}

fn exposition(realtime: &Realtime) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        realtime.metrics.render(),
    )
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Finds who a page request is from, once, for the app to render with, and
/// sends visitors to the sign-in page (before any HTML is streamed).
async fn resolve_session(
    State(state): State<AppState>,
    mut request: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if path.starts_with("/api/") {
        return next.run(request).await;
    }
    let public = path == "/login";
    // a browser's session, looked up with the snapshot its page renders after
    let found = match crate::auth::server::live_session(&state.pool, request.headers()).await {
        Ok(Some(session)) => {
            request
                .extensions_mut()
                .insert(page_cache::Snapshot(session.snapshot));
            Ok(Some(session.user))
        }
        Ok(None) => crate::auth::server::bearer_user(&state, request.headers()).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(Some(user)) => {
            request.extensions_mut().insert(user);
        }
        Ok(None) if !public => return axum::response::Redirect::to("/login").into_response(),
        Ok(None) => {}
        Err(e) if !public => {
            tracing::debug!(error = %e, "page request without a usable session");
            return axum::response::Redirect::to("/login").into_response();
        }
        Err(_) => {}
    }
    next.run(request).await
}

/// Server functions answer every error with 500; give our errors the HTTP
/// status they stand for, so HTTP clients can rely on it.
async fn server_fn_error_status(response: Response) -> Response {
    if response.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Ok(error) = serde_json::from_slice::<AppError>(&bytes) {
        parts.status = error.status_code();
    }
    Response::from_parts(parts, Body::from(bytes))
}
