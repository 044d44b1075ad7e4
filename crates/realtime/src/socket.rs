//! `GET /realtime/v1/websocket`: the upgrade, and one task per connection
//! that feeds the client's messages to its [`Session`] and writes the
//! connection's queue (replies and changes, in order) to the socket, while
//! watching the heartbeat, the access tokens and the hub's cut-off signal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use tokio::time::Instant;

use crate::change::Change;
use crate::engine::Realtime;
use crate::hub::{CatchUp, Channel, ConnectionHandle, ConnectionQueue, Outbound};
use crate::ports::Principal;
use crate::protocol::{self, Notice, Vsn, encode_raw};
use crate::session::{Next, Session, system_frame};

/// Messages larger than this are refused by the WebSocket layer itself
/// (the connection closes); up to it, oversize messages get an error reply.
const HARD_FRAME_LIMIT: usize = 16 << 20;
const CATCH_UP_BATCH: usize = 256;

pub async fn websocket(
    State(realtime): State<Arc<Realtime>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let vsn = match Vsn::parse(params.get("vsn").map(String::as_str)) {
        Ok(vsn) => vsn,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(serde_json::json!({"error": "invalid", "message": e})),
            )
                .into_response();
        }
    };
    // The session cookie counts only for pages of this site (browsers always
    // send Origin on WebSockets); other clients send an access token.
    let cookie = if same_origin(&headers) {
        realtime.identity.session(&headers).await.ok().flatten()
    } else {
        None
    };
    // tungstenite preallocates its read buffer (128 KiB by default) for
    // every socket; 1 KiB grows on demand and keeps idle sockets small.
    upgrade
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| serve(socket, realtime, vsn, cookie))
}

fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

async fn serve(
    mut socket: WebSocket,
    realtime: Arc<Realtime>,
    vsn: Vsn,
    cookie: Option<Principal>,
) {
    let (connection, mut queue) =
        ConnectionHandle::new(realtime.next_id(), realtime.settings.queue_size.max(8));
    let cut_off = connection.cut_off_signal();
    let mut session = Session::new(realtime.session_parts(), connection, vsn, cookie);
    let heartbeat = Duration::from_secs(realtime.settings.heartbeat_timeout_secs.max(1));
    let mut heard_at = Instant::now();
    loop {
        let expiry = session.next_expiry();
        tokio::select! {
            biased;
            _ = cut_off.notified() => {
                let notice = system_frame(vsn, protocol::PHOENIX_TOPIC, "error", "system",
                    "this connection fell too far behind; reconnect and resume from your last cursor",
                    Some(Notice::SlowConsumer));
                let _ = socket.send(Message::Text(notice.into())).await;
                let _ = socket.send(close(protocol::CLOSE_SLOW_CONSUMER, "too slow: reconnect and resume")).await;
                break;
            }
            // The writer's future is boxed: an idle connection then holds
            // only a small future, not the state of every path it might take.
            item = queue.recv() => {
                let Some(item) = item else { break };
                if Box::pin(write(&mut socket, item, &mut queue, &realtime, vsn)).await.is_err() {
                    break;
                }
            }
            message = socket.recv() => {
                let Some(Ok(message)) = message else { break };
                heard_at = Instant::now();
                let next = match &message {
                    Message::Text(text) => session.receive_text(text.as_str()),
                    Message::Binary(bytes) => session.receive_binary(bytes),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => Next::Continue,
                };
                if let Next::Resolve(lookup) = next {
                    let principal = Box::pin(realtime.identity.token(&lookup.token)).await;
                    session.resolved(lookup, principal);
                }
            }
            _ = tokio::time::sleep_until(heard_at + heartbeat) => {
                let notice = system_frame(vsn, protocol::PHOENIX_TOPIC, "error", "system", "no heartbeat received; closing", None);
                let _ = socket.send(Message::Text(notice.into())).await;
                let _ = socket.send(close(protocol::CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout")).await;
                break;
            }
            _ = sleep_until_unix(expiry), if expiry.is_some() => session.expire(unix_now()),
        }
    }
}

/// Writes one queued item and whatever else is already queued, then flushes.
async fn write(
    socket: &mut WebSocket,
    first: Outbound,
    queue: &mut ConnectionQueue,
    realtime: &Realtime,
    vsn: Vsn,
) -> Result<(), axum::Error> {
    send_item(socket, first, realtime, vsn).await?;
    while let Some(item) = queue.try_recv() {
        send_item(socket, item, realtime, vsn).await?;
    }
    socket.flush().await
}

async fn send_item(
    sink: &mut WebSocket,
    item: Outbound,
    realtime: &Realtime,
    vsn: Vsn,
) -> Result<(), axum::Error> {
    match item {
        Outbound::Text(text) => sink.feed(Message::Text(text.into())).await,
        Outbound::Change {
            channel,
            ids,
            change,
        } => {
            sink.feed(change_message(vsn, &channel, &ids, &change))
                .await?;
            record_sent(realtime, change.commit_micros);
            Ok(())
        }
        Outbound::CatchUp {
            subscription,
            channel,
        } => loop {
            match realtime.hub.catch_up(subscription, CATCH_UP_BATCH) {
                CatchUp::Batch { changes, done } => {
                    for (ids, change) in changes {
                        sink.feed(change_message(vsn, &channel, &ids, &change))
                            .await?;
                        record_sent(realtime, change.commit_micros);
                    }
                    sink.flush().await?;
                    if done {
                        return Ok(());
                    }
                }
                CatchUp::Reset { head } => {
                    let notice = system_frame(
                        vsn,
                        &channel.topic,
                        "ok",
                        protocol::POSTGRES_CHANGES,
                        "some changes are no longer available: refetch, then continue",
                        Some(Notice::Reset { cursor: head }),
                    );
                    return sink.feed(Message::Text(notice.into())).await;
                }
                CatchUp::Gone => return Ok(()),
            }
        },
    }
}

fn change_message(vsn: Vsn, channel: &Channel, ids: &[u64], change: &Change) -> Message {
    let text = encode_raw(
        vsn,
        None,
        None,
        &channel.topic,
        protocol::POSTGRES_CHANGES,
        &change.payload_json(ids),
    );
    Message::Text(text.into())
}

fn record_sent(realtime: &Realtime, commit_micros: i64) {
    realtime.metrics.messages_sent.inc();
    let now = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000)
        .unwrap_or(i64::MAX);
    realtime
        .metrics
        .commit_to_send_seconds
        .observe(now.saturating_sub(commit_micros).max(0) as f64 / 1e6);
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }))
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn sleep_until_unix(at: Option<i64>) {
    let wait = at.map_or(0, |at| at.saturating_sub(unix_now()).max(0));
    let wait = u64::try_from(wait).unwrap_or(0);
    tokio::time::sleep_until(Instant::now() + Duration::from_secs(wait)).await
}
