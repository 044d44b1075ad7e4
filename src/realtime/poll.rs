//! The lossless fallback as a server function: the browser polls it with
//! the cursors it would have resumed from when the WebSocket cannot be held.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use threadline_realtime::poll::{PollChannel, PollResult};

use crate::error::AppError;

#[server(input = Json)]
pub async fn poll_changes(channels: Vec<PollChannel>) -> Result<Vec<PollResult>, AppError> {
    let (state, user) = crate::auth::server::require_user().await?;
    state
        .realtime
        .poll(&super::rules::viewer(&user), channels)
        .map_err(|refusal| AppError::invalid(refusal.1))
}
