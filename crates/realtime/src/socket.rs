//! `GET /realtime/v1/websocket`: the upgrade, and one task per connection
//! that feeds the client's messages to its [`Session`] and writes the
//! connection's queue (replies, notices and changes, in order) to the
//! socket, while watching the heartbeat, the credentials' expiry and the
//! hub's signal to close.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use tokio::time::{Instant, Sleep};

use crate::cursor::ChangeCursor;
use crate::engine::Realtime;
use crate::hub::{
    CatchUp, Channel, CloseOrRefuse, CloseReason, ConnectionHandle, ConnectionQueue, Delivery,
    Outbound,
};
use crate::metrics::ErrorKind;
use crate::ports::Principal;
use crate::protocol::{self, ChangeKind, Notice, Vsn, encode_raw, encode_with};
use crate::session::{Next, Session, system_frame};

const CATCH_UP_BATCH: usize = 256;

/// Close code for a message larger than the limit (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;

pub async fn websocket(
    State(realtime): State<Arc<Realtime>>,
    Query(params): Query<HashMap<String, String>>,
    connect_info: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
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
    let address = client_address(
        &headers,
        connect_info.map(|info| info.0.0.ip()),
        realtime.settings.trust_forwarded_for,
    );
    // The session cookie counts only for pages of this site (browsers always
    // send Origin on WebSockets); other clients send an access token. The
    // hub's head before the lookup lets it correct what the lookup saw.
    let (cookie, cookie_headers) = if same_origin(&headers) {
        let as_of = realtime.hub.live_head();
        let principal = realtime.identity.session(&headers).await.ok().flatten();
        let mut cookie_headers = HeaderMap::new();
        for value in headers.get_all(COOKIE) {
            cookie_headers.append(COOKIE, value.clone());
        }
        (principal.map(|p| (p, as_of)), cookie_headers)
    } else {
        (None, HeaderMap::new())
    };
    let limit = realtime.settings.max_frame_bytes.max(1024);
    // tungstenite preallocates its read buffer (128 KiB by default) for
    // every socket; 1 KiB grows on demand and keeps idle sockets small.
    // Messages over the limit are refused by the WebSocket layer itself,
    // before they are buffered whole.
    upgrade
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve(socket, realtime, vsn, address, cookie, cookie_headers))
}

/// The client's address: the peer, or (behind a proxy of ours) the last
/// address it put in `X-Forwarded-For`.
fn client_address(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trust_forwarded: bool,
) -> Option<IpAddr> {
    if trust_forwarded
        && let Some(forwarded) = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|part| part.trim().parse::<IpAddr>().ok())
            .next_back()
    {
        return Some(forwarded);
    }
    peer
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
    address: Option<IpAddr>,
    cookie: Option<(Principal, ChangeCursor)>,
    cookie_headers: HeaderMap,
) {
    let (connection, mut queue) =
        ConnectionHandle::new(realtime.next_id(), realtime.settings.queue_size.max(8));
    let cut_off = connection.cut_off_signal();
    let mut session_expires = cookie.as_ref().and_then(|(p, _)| p.expires_at);
    let session_key = cookie.as_ref().and_then(|(p, _)| p.session.clone());
    let mut session =
        match Session::open(realtime.session_parts(), connection, vsn, address, cookie) {
            Ok(session) => session,
            Err(CloseOrRefuse::Refuse(refusal)) => {
                realtime.metrics.error(refusal.0);
                let notice = system_frame(
                    vsn,
                    protocol::PHOENIX_TOPIC,
                    "error",
                    "system",
                    &refusal.1,
                    Some(Notice::Limited),
                );
                let _ = socket.send(Message::Text(notice.into())).await;
                let _ = socket
                    .send(close(protocol::CLOSE_LIMITED, "limit reached"))
                    .await;
                return;
            }
            Err(CloseOrRefuse::Close(reason)) => {
                let _ = say_goodbye(&mut socket, vsn, reason).await;
                return;
            }
        };
    let heartbeat = Duration::from_secs(realtime.settings.heartbeat_timeout_secs.max(1));
    let mut ping = tokio::time::interval(Duration::from_secs(
        realtime.settings.ping_interval_secs.max(1),
    ));
    ping.tick().await;
    // The timers are made once and set again only when their deadline
    // moves: a connection may write thousands of messages a minute.
    let silence = tokio::time::sleep(heartbeat);
    tokio::pin!(silence);
    let mut token_expiry = UnixTimer::new();
    let mut cookie_expiry = UnixTimer::new();
    loop {
        token_expiry.set(session.next_expiry());
        cookie_expiry.set(session_expires);
        tokio::select! {
            biased;
            reason = cut_off.notified() => {
                // what was queued before a change of rights closed the
                // connection was committed before it: deliver it first
                if reason != CloseReason::TooSlow {
                    while let Some(item) = queue.try_recv() {
                        if Box::pin(write(&mut socket, item, &mut queue, &realtime, vsn)).await.is_err() {
                            break;
                        }
                    }
                }
                let _ = say_goodbye(&mut socket, vsn, reason).await;
                break;
            }
            // The writer's future is boxed: an idle connection then holds
            // only a small future, not the state of every path it might take.
            item = queue.recv() => {
                let Some(item) = item else { break };
                match Box::pin(write(&mut socket, item, &mut queue, &realtime, vsn)).await {
                    Ok(Some(ends)) => session_expires = Some(ends),
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            message = socket.recv() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        // the WebSocket layer refused it: too large (before
                        // buffering it whole), or not a valid frame
                        let error = e.to_string();
                        let (kind, text) = if error.contains("too long") || error.contains("Space limit") {
                            (ErrorKind::OversizeFrame, format!(
                                "closing: a message larger than the limit of {} bytes ({error})",
                                realtime.settings.max_frame_bytes
                            ))
                        } else {
                            (ErrorKind::BadJson, format!("closing: not a valid WebSocket message ({error})"))
                        };
                        realtime.metrics.error(kind);
                        let notice = system_frame(vsn, protocol::PHOENIX_TOPIC, "error", "system", &text, None);
                        let _ = socket.send(Message::Text(notice.into())).await;
                        close_gracefully(&mut socket, CLOSE_TOO_BIG, "message too big or malformed").await;
                        break;
                    }
                    None => break,
                };
                silence.as_mut().reset(Instant::now() + heartbeat);
                let next = match &message {
                    Message::Text(text) => session.receive_text(text.as_str()),
                    Message::Binary(bytes) => session.receive_binary(bytes),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => Next::Continue,
                };
                if let Some((code, reason)) = Box::pin(follow(&mut session, &realtime, next)).await {
                    while let Some(item) = queue.try_recv() {
                        if let Outbound::Text(text) = item {
                            let _ = socket.feed(Message::Text(text.into())).await;
                        }
                    }
                    close_gracefully(&mut socket, code, reason).await;
                    break;
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            _ = &mut silence => {
                let notice = system_frame(vsn, protocol::PHOENIX_TOPIC, "error", "system", "no heartbeat received; closing", None);
                let _ = socket.send(Message::Text(notice.into())).await;
                close_gracefully(&mut socket, protocol::CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout").await;
                break;
            }
            _ = token_expiry.elapsed(), if token_expiry.is_set() => session.expire(unix_now()),
            // the session cookie's own end, even when nothing was written
            _ = cookie_expiry.elapsed(), if cookie_expiry.is_set() => {
                let renewed = realtime.identity.session(&cookie_headers).await.ok().flatten();
                match renewed {
                    Some(principal) if principal.session == session_key
                        && principal.expires_at.is_some_and(|at| at > unix_now()) => {
                        session_expires = principal.expires_at;
                    }
                    _ => {
                        let _ = say_goodbye(&mut socket, vsn, CloseReason::SessionExpired).await;
                        break;
                    }
                }
            }
        }
    }
}

/// Does what the session asks (look a token or a row up, send a broadcast)
/// until it asks for nothing more; the close it asks for, if any.
async fn follow(
    session: &mut Session,
    realtime: &Realtime,
    mut next: Next,
) -> Option<(u16, &'static str)> {
    loop {
        next = match next {
            Next::Continue => return None,
            Next::Close(code, reason) => return Some((code, reason)),
            Next::Resolve(lookup) => {
                let principal = realtime.identity.token(&lookup.token).await;
                session.resolved(lookup, principal)
            }
            Next::LookUp(lookup) => {
                let audience = realtime.row_audience(&lookup.table, &lookup.key).await;
                session.looked_up(lookup, audience)
            }
            Next::Broadcast(outgoing) => {
                let result = realtime
                    .emit(std::slice::from_ref(&outgoing.content))
                    .await
                    .map_err(|e| e.to_string());
                session.sent(&outgoing, result);
                Next::Continue
            }
        };
    }
}

/// Tells the client why the server closes its connection, and closes it.
async fn say_goodbye(
    socket: &mut WebSocket,
    vsn: Vsn,
    reason: CloseReason,
) -> Result<(), axum::Error> {
    let (message, notice, code, close_reason) = match reason {
        CloseReason::TooSlow => (
            "this connection fell too far behind; reconnect and resume from your last cursor",
            Notice::SlowConsumer,
            protocol::CLOSE_SLOW_CONSUMER,
            "too slow: reconnect and resume",
        ),
        CloseReason::SignedOut => (
            "you signed out: this connection is closed; sign in again",
            Notice::SignedOut,
            protocol::CLOSE_SIGNED_OUT,
            "signed out",
        ),
        CloseReason::SessionExpired => (
            "your session expired: this connection is closed; sign in again",
            Notice::SessionExpired,
            protocol::CLOSE_SIGNED_OUT,
            "session expired",
        ),
        CloseReason::AccountRemoved => (
            "your account no longer exists: this connection is closed",
            Notice::AccountRemoved,
            protocol::CLOSE_SIGNED_OUT,
            "account removed",
        ),
    };
    let notice = system_frame(
        vsn,
        protocol::PHOENIX_TOPIC,
        "error",
        "system",
        message,
        Some(notice),
    );
    socket.send(Message::Text(notice.into())).await?;
    close_gracefully(socket, code, close_reason).await;
    Ok(())
}

/// Sends a close frame and waits (briefly) for the client's, discarding
/// what it still sends: closing with unread data would reset the TCP
/// connection and could lose the close frame and the notice before it.
async fn close_gracefully(socket: &mut WebSocket, code: u16, reason: &str) {
    if socket.send(close(code, reason)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Writes one queued item and whatever else is already queued, then
/// flushes; returns when the session now ends, if an item said so.
async fn write(
    socket: &mut WebSocket,
    first: Outbound,
    queue: &mut ConnectionQueue,
    realtime: &Realtime,
    vsn: Vsn,
) -> Result<Option<i64>, axum::Error> {
    let mut session_ends = None;
    let mut item = Some(first);
    while let Some(next) = item {
        match next {
            Outbound::SessionEnds(at) => session_ends = Some(at),
            other => send_item(socket, other, realtime, vsn).await?,
        }
        item = queue.try_recv();
    }
    socket.flush().await?;
    Ok(session_ends)
}

async fn send_item(
    sink: &mut WebSocket,
    item: Outbound,
    realtime: &Realtime,
    vsn: Vsn,
) -> Result<(), axum::Error> {
    match item {
        Outbound::Text(text) => sink.feed(Message::Text(text.into())).await,
        Outbound::SessionEnds(_) => Ok(()),
        Outbound::Change { channel, delivery } => {
            sink.feed(change_message(vsn, &channel, &delivery)).await?;
            record_sent(realtime, delivery.change.commit_micros);
            Ok(())
        }
        Outbound::Notice {
            channel,
            message,
            notice,
        } => {
            let text = system_frame(
                vsn,
                &channel.topic,
                "ok",
                protocol::POSTGRES_CHANGES,
                message,
                Some(notice),
            );
            sink.feed(Message::Text(text.into())).await
        }
        Outbound::Room {
            channel,
            event,
            payload,
        } => {
            let text = encode_raw(
                vsn,
                channel.join_ref.as_deref(),
                None,
                &channel.topic,
                event,
                &payload,
            );
            sink.feed(Message::Text(text.into())).await
        }
        Outbound::Closed { channel, message } => {
            let error = system_frame(
                vsn,
                &channel.topic,
                "error",
                "system",
                message,
                Some(Notice::RoomClosed),
            );
            sink.feed(Message::Text(error.into())).await?;
            let mut close =
                protocol::Frame::new(&channel.topic, protocol::CLOSE, serde_json::json!({}));
            close.join_ref = channel.join_ref.clone();
            sink.feed(Message::Text(close.encode(vsn).into())).await
        }
        Outbound::CatchUp {
            subscription,
            channel,
        } => loop {
            match realtime.hub.catch_up(subscription, CATCH_UP_BATCH) {
                CatchUp::Batch { changes, done } => {
                    for delivery in changes {
                        sink.feed(change_message(vsn, &channel, &delivery)).await?;
                        record_sent(realtime, delivery.change.commit_micros);
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

fn change_message(vsn: Vsn, channel: &Channel, delivery: &Delivery) -> Message {
    if delivery.change.kind == ChangeKind::Truncate {
        let notice = system_frame(
            vsn,
            &channel.topic,
            "ok",
            protocol::POSTGRES_CHANGES,
            &format!(
                "table {} was emptied: refetch, then continue",
                delivery.change.table.name
            ),
            Some(Notice::Reset {
                cursor: delivery.change.cursor,
            }),
        );
        return Message::Text(notice.into());
    }
    let text = encode_with(
        vsn,
        None,
        None,
        &channel.topic,
        protocol::POSTGRES_CHANGES,
        delivery.change.payload_len(),
        |out| delivery.write_payload(out),
    );
    Message::Text(text.into())
}

fn record_sent(realtime: &Realtime, commit_micros: i64) {
    realtime.metrics.messages_sent.inc();
    realtime
        .metrics
        .commit_to_send_seconds
        .observe(crate::metrics::seconds_since(commit_micros));
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

/// A timer for a deadline in Unix seconds, set again only when the
/// deadline changes or after it went off.
struct UnixTimer {
    at: Option<i64>,
    sleep: Pin<Box<Sleep>>,
}

impl UnixTimer {
    fn new() -> UnixTimer {
        UnixTimer {
            at: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    fn set(&mut self, at: Option<i64>) {
        if at == self.at {
            return;
        }
        self.at = at;
        if let Some(at) = at {
            let wait = u64::try_from(at.saturating_sub(unix_now())).unwrap_or(0);
            self.sleep
                .as_mut()
                .reset(Instant::now() + Duration::from_secs(wait));
        }
    }

    fn is_set(&self) -> bool {
        self.at.is_some()
    }

    /// Waits for the deadline; once it went off, the next [`UnixTimer::set`]
    /// sets it again from the clock (the deadline may still be the same).
    async fn elapsed(&mut self) {
        (&mut self.sleep).await;
        self.at = None;
    }
}
