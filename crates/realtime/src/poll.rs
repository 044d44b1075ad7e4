//! The lossless fallback: when the WebSocket cannot be held, the browser
//! asks for the changes after the same cursors it would have resumed from,
//! matched and authorized exactly as on the socket. The app serves this
//! through a server function of its own ([`Realtime::poll`](crate::engine::Realtime::poll)
//! does the work); the types here cross the wire.

use serde::{Deserialize, Serialize};

use crate::cursor::ChangeCursor;
use crate::protocol::PostgresChangesRequest;

/// Most changes returned per channel per poll; `more` says to poll again at once.
pub const POLL_LIMIT: usize = 500;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PollChannel {
    pub topic: String,
    pub bindings: Vec<PostgresChangesRequest>,
    /// Where the channel stands; `None` asks for the current position (and
    /// a reset, since what came before is unknown to the client).
    pub cursor: Option<ChangeCursor>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PollResult {
    pub topic: String,
    /// `postgres_changes` payloads, exactly as the socket sends them.
    pub events: Vec<String>,
    pub cursor: ChangeCursor,
    /// The cursor was older than the retention log: refetch.
    pub reset: bool,
    pub more: bool,
}
