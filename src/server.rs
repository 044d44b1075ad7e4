//! Everything that runs only on the server: settings, the database (embedded
//! or external), demo data and the HTTP router that ties the app together.

pub mod database;
pub mod demo;
pub mod embedded_postgres;
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

use crate::app::{App, shell};
use crate::error::AppError;
use settings::Settings;

/// Shared by every handler and server function (through context).
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub auth: Arc<crate::auth::server::AuthKeys>,
}

impl AppState {
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
    let provide_state = move || provide_context(context_state.clone());
    let pages = Router::new()
        .leptos_routes_with_context(&state, routes, provide_state.clone(), {
            let options = state.leptos_options.clone();
            move || shell(options.clone())
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            resolve_session,
        ));
    Router::new()
        .route("/api/auth/token", post(crate::auth::server::issue_token))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/api/{*fn_name}",
            post(server_fn_handler).get(server_fn_handler),
        )
        .merge(pages)
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(provide_state, shell))
        .with_state(state)
}

/// Finds who a page request is from, once, for the app to render with.
async fn resolve_session(
    State(state): State<AppState>,
    mut request: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    match crate::auth::server::user_from_headers(&state, request.headers()).await {
        Ok(Some(user)) => {
            request.extensions_mut().insert(user);
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "page request without a usable session"),
    }
    next.run(request).await
}

/// Runs a server function and gives its error the HTTP status it stands for
/// (server functions otherwise answer every error with 500).
async fn server_fn_handler(State(state): State<AppState>, request: Request<Body>) -> Response {
    let response = leptos_axum::handle_server_fns_with_context(
        move || provide_context(state.clone()),
        request,
    )
    .await
    .into_response();
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
