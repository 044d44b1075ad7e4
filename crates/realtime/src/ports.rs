//! The engine's ports: the two things only the app knows, which it
//! implements and hands to [`Realtime::start`](crate::engine::Realtime::start).
//! The engine never imports the app.
//!
//! - [`Identity`]: who a session cookie or an access token speaks for,
//!   looked up when it is used (the same lookup the app's HTTP handlers use).
//! - [`Rules`]: who may see a row, decided from the row itself.

use std::future::Future;
use std::pin::Pin;

use axum::http::HeaderMap;

use crate::access::{Audience, Viewer};
use crate::change::RowView;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who a connection or a channel speaks for, as the database says now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub viewer: Viewer,
    /// When the credential stops counting (Unix seconds), if it runs out.
    pub expires_at: Option<i64>,
}

/// Why a credential was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// It was good once and has run out.
    #[error("{0}")]
    Expired(String),
    /// It is not valid, or names nobody who exists.
    #[error("{0}")]
    Refused(String),
    /// It could not be checked just now (the database did not answer).
    #[error("{0}")]
    Unavailable(String),
}

pub trait Identity: Send + Sync + 'static {
    /// The person whose session the request's cookie names, if any.
    fn session<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> BoxFuture<'a, Result<Option<Principal>, AuthError>>;

    /// The person an access token names.
    fn token<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthError>>;
}

pub trait Rules: Send + Sync + 'static {
    /// Who may see this row (of `row.table()`), besides viewers who see everything.
    fn audience(&self, row: &RowView<'_>) -> Audience;
}
