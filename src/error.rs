//! The one error type every server function, REST endpoint and page shares.
//! It crosses the wire as `{"error": kind, "message": text}`, so browsers and
//! HTTP clients see the same clear message.

use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", content = "message", rename_all = "snake_case")]
pub enum AppError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    Network(String),
    #[error("something went wrong on our side; please try again")]
    Internal,
}

impl AppError {
    pub fn sign_in() -> Self {
        AppError::Unauthorized("please sign in".into())
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        AppError::Invalid(message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError::Forbidden(message.into())
    }

    pub fn not_found(what: &str) -> Self {
        AppError::NotFound(format!("{what} not found"))
    }

    #[cfg(feature = "ssr")]
    pub fn status_code(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Network(_) => StatusCode::BAD_GATEWAY,
            AppError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl FromServerFnError for AppError {
    type Encoder = crate::api::TextJsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Request(e) | ServerFnErrorErr::Response(e) => {
                AppError::Network(format!("could not reach the server ({e})"))
            }
            ServerFnErrorErr::Args(e) | ServerFnErrorErr::MissingArg(e) => {
                AppError::Invalid(format!("invalid input: {e}"))
            }
            other => AppError::Invalid(other.to_string()),
        }
    }
}

#[cfg(feature = "ssr")]
impl From<sqlx::Error> for AppError {
    /// Constraint violations are the database refusing bad input: their
    /// messages (written in the migrations) go back to the user. Anything
    /// else is logged and hidden.
    fn from(err: sqlx::Error) -> Self {
        if let Some(db) = err.as_database_error() {
            let code = db.code().unwrap_or_default();
            match code.as_ref() {
                // check_violation raised by our triggers carries a user-facing message
                "23514" if db.constraint().is_some_and(is_rule) => {
                    return AppError::Invalid(db.message().to_string());
                }
                "23514" | "23502" | "22001" | "22P02" | "22007" | "22008" => {
                    return AppError::Invalid(constraint_message(db.constraint()));
                }
                "23503" => return AppError::Invalid(constraint_message(db.constraint())),
                "23505" => return AppError::Conflict(constraint_message(db.constraint())),
                _ => {}
            }
        }
        if matches!(err, sqlx::Error::RowNotFound) {
            return AppError::NotFound("not found".into());
        }
        tracing::error!(error = %err, "database error");
        AppError::Internal
    }
}

#[cfg(feature = "ssr")]
fn is_rule(constraint: &str) -> bool {
    matches!(
        constraint,
        "order_status_transition"
            | "order_factory_locked"
            | "stage_order_not_in_work"
            | "stage_transition"
            | "stage_order"
            | "stage_progress"
            | "stage_identity"
    )
}

#[cfg(feature = "ssr")]
fn constraint_message(constraint: Option<&str>) -> String {
    match constraint {
        Some("orders_quantity_check") => "quantity must be between 1 and 1,000,000".into(),
        Some("orders_product_check") => "product must be 1 to 200 characters".into(),
        Some("orders_notes_check") => "notes must be at most 2,000 characters".into(),
        Some("work_needs_a_factory") => "assign a factory before work can start".into(),
        Some("messages_body_check") => "message must be 1 to 5,000 characters".into(),
        Some("not_to_self") => "you cannot message yourself".into(),
        Some("order_updates_text_check") => "update must be 1 to 5,000 characters".into(),
        Some("users_email_key") => "that email is already registered".into(),
        Some(name) if name.ends_with("_fkey") => {
            "it refers to something that does not exist".into()
        }
        Some(name) => format!("the input breaks the rule {name}"),
        None => "the input is not valid".into(),
    }
}

#[cfg(feature = "ssr")]
impl axum::response::IntoResponse for AppError {
    fn into_response(self) -> axum::response::Response {
        (self.status_code(), axum::Json(self)).into_response()
    }
}
