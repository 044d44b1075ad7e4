//! The lossless fallback as a server function: the browser polls it with
//! the cursors it would have resumed from when the WebSocket cannot be held.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
#[cfg(feature = "ssr")]
use threadline_realtime::metrics::ErrorKind;
use threadline_realtime::poll::{PollChannel, PollResult};

use crate::error::AppError;

#[server(input = Json, output = crate::api::TextJson)]
pub async fn poll_changes(channels: Vec<PollChannel>) -> Result<Vec<PollResult>, AppError> {
    // The head before the user is looked up: changes after it wait for the
    // next poll, judged by rights looked up after them.
    let until = crate::server::AppState::current()?.realtime.head();
    let (state, user) = crate::auth::server::require_user().await?;
    state
        .realtime
        .poll(&super::rules::viewer(&user), until, channels)
        .map_err(|refusal| match refusal.0 {
            ErrorKind::Limited | ErrorKind::TooManyChannels => AppError::RateLimited(refusal.1),
            _ => AppError::invalid(refusal.1),
        })
}
