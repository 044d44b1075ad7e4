//! The engine's ports: the two things only the app knows, which it
//! implements and hands to [`Realtime::start`](crate::engine::Realtime::start).
//! The engine never imports the app.
//!
//! - [`Identity`]: who a session cookie or an access token speaks for,
//!   looked up when it is used (the same lookup the app's HTTP handlers use).
//! - [`Rules`]: who may see a row, decided from the row itself; and what a
//!   change to the app's own tables of people and sessions means for rights,
//!   so that rights follow the database in commit order.

use std::future::Future;
use std::pin::Pin;

use axum::http::HeaderMap;
use uuid::Uuid;

use crate::access::{Audience, Viewer};
use crate::change::RowView;
use crate::protocol::ChangeKind;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A browser session, as the app names it in its rows (the engine compares
/// it with what the session table's changes carry).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey(pub String);

/// Who a connection or a channel speaks for, as the database says now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub viewer: Viewer,
    /// The browser session it came from (a session cookie), if any.
    pub session: Option<SessionKey>,
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

/// Why a session stopped counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    SignedOut,
    Expired,
}

/// What a change to one of the app's rights tables means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RightsChange {
    /// From this change on, the person sees with these rights (their role
    /// or group may have changed).
    Viewer(Viewer),
    /// The person no longer exists.
    UserRemoved(Uuid),
    /// A session ended: connections signed in with it close.
    SessionEnded(SessionKey, SessionEnd),
    /// A session now ends at this time (Unix seconds): connections signed
    /// in with it close then.
    SessionEnds(SessionKey, i64),
}

/// One row change of a rights table, as decoded.
pub struct RightsRow<'a> {
    pub kind: ChangeKind,
    pub old: Option<RowView<'a>>,
    pub new: Option<RowView<'a>>,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_micros: i64,
}

pub trait Rules: Send + Sync + 'static {
    /// Who may see this row (of `row.table()`), besides viewers who see everything.
    fn audience(&self, row: &RowView<'_>) -> Audience;

    /// Published tables that carry rights (people, sessions), never sent to
    /// subscribers.
    fn rights_tables(&self) -> Vec<String>;

    /// What a change of a rights table means.
    fn rights(&self, row: &RightsRow<'_>) -> Option<RightsChange>;
}
