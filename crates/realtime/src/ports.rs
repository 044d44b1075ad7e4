//! The engine's ports: the two things only the app knows, which it
//! implements and hands to [`Realtime::start`](crate::engine::Realtime::start).
//! The engine never imports the app.
//!
//! - [`Identity`]: who a session cookie or an access token speaks for,
//!   looked up when it is used (the same lookup the app's HTTP handlers use).
//! - [`Rules`]: who may see a row, decided from the row itself; what a
//!   change to the app's own tables of people and sessions means for rights,
//!   so that rights follow the database in commit order; and which channel
//!   topics are rooms (Broadcast and Presence) and who may join them.

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
    /// The name others see in presence (the engine adds it to what a
    /// client tracks, so nobody can appear under another's name).
    pub name: Option<String>,
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

/// A room: a channel topic with Broadcast and Presence, for the people who
/// may join it. Its spelling ([`Room::topic`]) is canonical: every client
/// naming it lands in the same room.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Room {
    /// The topic without `realtime:`, canonical (e.g. `order:<uuid>`).
    pub topic: String,
    pub access: RoomAccess,
}

/// Who may join a room.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoomAccess {
    /// Those who may see this row (of a published table, by its primary
    /// key), as the database says now; when the row changes or goes, those
    /// who may no longer see it leave.
    Row { table: String, key: String },
    /// This person only.
    Person(Uuid),
}

/// What a channel topic is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topic {
    /// A room.
    Room(Room),
    /// Looks like a room but names none (a malformed id): the reason.
    Invalid(String),
    /// A channel for Postgres Changes only.
    Plain,
}

pub trait Rules: Send + Sync + 'static {
    /// Who may see this row (of `row.table()`), besides viewers who see everything.
    fn audience(&self, row: &RowView<'_>) -> Audience;

    /// Published tables that carry rights (people, sessions), never sent to
    /// subscribers.
    fn rights_tables(&self) -> Vec<String>;

    /// What a change of a rights table means.
    fn rights(&self, row: &RightsRow<'_>) -> Option<RightsChange>;

    /// What a channel topic (without `realtime:`) is. Without rooms, every
    /// topic is plain.
    fn topic(&self, _topic: &str) -> Topic {
        Topic::Plain
    }

    /// The room topics, for refusals (e.g. `order:<order id>, user:<user id>`).
    fn room_topics(&self) -> &'static str {
        "none on this server"
    }
}
