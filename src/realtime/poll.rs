//! The lossless fallback: when the WebSocket cannot be held, the browser
//! polls this server function for changes after the same cursors it would
//! have resumed from, matched and authorized exactly as on the socket.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use serde::{Deserialize, Serialize};

use super::cursor::ChangeCursor;
use super::protocol::PostgresChangesRequest;
use crate::error::AppError;

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

#[server(input = Json)]
pub async fn poll_changes(channels: Vec<PollChannel>) -> Result<Vec<PollResult>, AppError> {
    use super::authorization::Viewer;
    use super::hub::{Binding, PollRead};
    let (state, user) = crate::auth::server::require_user().await?;
    let realtime = state
        .realtime
        .clone()
        .ok_or_else(|| AppError::NotFound("realtime is not running on this server".into()))?;
    if channels.len() > realtime.settings.max_channels {
        return Err(AppError::invalid("too many channels"));
    }
    let viewer = Viewer::from(&user);
    let mut results = Vec::with_capacity(channels.len());
    for channel in channels {
        let bindings = channel
            .bindings
            .iter()
            .enumerate()
            .map(|(i, request)| Binding::from_request(i as u64 + 1, request, &realtime.catalog))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|refusal| AppError::invalid(refusal.1))?;
        let Some(cursor) = channel.cursor else {
            results.push(PollResult {
                topic: channel.topic,
                events: Vec::new(),
                cursor: realtime.hub.head(),
                reset: true,
                more: false,
            });
            continue;
        };
        results.push(
            match realtime
                .hub
                .read_after(&viewer, &bindings, cursor, POLL_LIMIT)
            {
                PollRead::Reset { head } => {
                    realtime.metrics.resets.inc();
                    PollResult {
                        topic: channel.topic,
                        events: Vec::new(),
                        cursor: head,
                        reset: true,
                        more: false,
                    }
                }
                PollRead::Changes { changes, position } => PollResult {
                    topic: channel.topic,
                    more: changes.len() >= POLL_LIMIT,
                    events: changes
                        .iter()
                        .map(|(ids, change)| change.payload_json(ids))
                        .collect(),
                    cursor: position,
                    reset: false,
                },
            },
        );
    }
    Ok(results)
}
