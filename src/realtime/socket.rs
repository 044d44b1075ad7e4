//! `GET /realtime/v1/websocket`: one task reads and answers the client's
//! messages, one writes the connection's queue to the socket; when either
//! ends, so does the other. Bad input of any kind gets an error reply and
//! leaves the connection open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::authorization::Viewer;
use super::engine::Realtime;
use super::hub::Refusal;
use super::hub::{
    Binding, CatchUp, Channel, ConnectionHandle, ConnectionQueue, Outbound, SubscribeRequest,
};
use super::metrics::ErrorKind;
use super::protocol::{
    self, Frame, JoinPayload, JoinResponse, Notice, PostgresChangesBinding, PostgresChangesRequest,
    SystemMessage, Vsn, encode_raw,
};
use crate::error::AppError;
use crate::model::Role;
use crate::server::AppState;

/// Messages larger than this are refused by the WebSocket layer itself
/// (the connection closes); up to it, oversize messages get an error reply.
const HARD_FRAME_LIMIT: usize = 16 << 20;
const CATCH_UP_BATCH: usize = 256;

pub async fn websocket(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(realtime) = state.realtime.clone() else {
        return AppError::NotFound("realtime is not running on this server".into()).into_response();
    };
    let vsn = match Vsn::parse(params.get("vsn").map(String::as_str)) {
        Ok(vsn) => vsn,
        Err(e) => return AppError::invalid(e).into_response(),
    };
    // The session cookie counts only for pages of this site (browsers always
    // send Origin on WebSockets); other clients send an access token.
    let cookie_viewer = if same_origin(&headers) {
        crate::auth::server::session_user(&state.pool, &headers)
            .await
            .ok()
            .flatten()
            .map(|user| Viewer::from(&user))
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
        .on_upgrade(move |socket| serve(socket, state, realtime, vsn, cookie_viewer))
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

/// One task per connection: it reads the client's messages, writes the
/// queue (replies and changes, in order), and watches the heartbeat, the
/// access tokens and the hub's cut-off signal.
async fn serve(
    mut socket: WebSocket,
    state: AppState,
    realtime: Arc<Realtime>,
    vsn: Vsn,
    cookie_viewer: Option<Viewer>,
) {
    let id = realtime.next_id();
    let (connection, mut queue) = ConnectionHandle::new(id, realtime.settings.queue_size.max(8));
    let cut_off = connection.cut_off_signal();
    realtime.metrics.connections.inc();
    let heartbeat = Duration::from_secs(realtime.settings.heartbeat_timeout_secs.max(1));
    let mut reader = Reader {
        state,
        realtime: realtime.clone(),
        connection,
        vsn,
        cookie_viewer,
        channels: HashMap::new(),
        next_binding: 1,
    };
    let mut heard_at = Instant::now();
    loop {
        let expiry = reader.next_expiry();
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
            // The handlers' futures are boxed: an idle connection then holds
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
                if !Box::pin(reader.on_message(message)).await {
                    break;
                }
            }
            _ = tokio::time::sleep_until(heard_at + heartbeat) => {
                let notice = system_frame(vsn, protocol::PHOENIX_TOPIC, "error", "system", "no heartbeat received; closing", None);
                let _ = socket.send(Message::Text(notice.into())).await;
                let _ = socket.send(close(protocol::CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout")).await;
                break;
            }
            _ = sleep_until_unix(expiry), if expiry.is_some() => Box::pin(reader.expire_tokens()).await,
        }
    }
    realtime.hub.remove_connection(id);
    realtime.metrics.connections.dec();
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

fn change_message(
    vsn: Vsn,
    channel: &Channel,
    ids: &[u64],
    change: &super::change::Change,
) -> Message {
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
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
    realtime
        .metrics
        .commit_to_send_seconds
        .observe((now - commit_micros).max(0) as f64 / 1e6);
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }))
}

fn system_frame(
    vsn: Vsn,
    topic: &str,
    status: &str,
    extension: &str,
    message: &str,
    notice: Option<Notice>,
) -> String {
    let payload = SystemMessage {
        status: status.into(),
        extension: extension.into(),
        message: message.into(),
        channel: topic.strip_prefix("realtime:").map(str::to_string),
        threadline: notice,
    };
    let payload = serde_json::to_value(payload).unwrap_or(Value::Null);
    Frame::new(topic, protocol::SYSTEM, payload).encode(vsn)
}

struct JoinedChannel {
    join_ref: Option<String>,
    viewer: Viewer,
    /// When its access token expires (Unix seconds), if it used one.
    expires_at: Option<i64>,
}

struct Reader {
    state: AppState,
    realtime: Arc<Realtime>,
    connection: Arc<ConnectionHandle>,
    vsn: Vsn,
    cookie_viewer: Option<Viewer>,
    channels: HashMap<String, JoinedChannel>,
    next_binding: u64,
}

impl Reader {
    /// Handles one message from the client; false when the connection should end.
    async fn on_message(&mut self, message: Message) -> bool {
        match message {
            Message::Text(text) => self.handle_text(text.as_str()).await,
            Message::Binary(_) => {
                self.connection_error(
                    ErrorKind::BadJson,
                    "binary messages are not supported; send JSON text",
                )
                .await
            }
            Message::Close(_) => false,
            Message::Ping(_) | Message::Pong(_) => true,
        }
    }

    async fn send(&self, text: String) -> bool {
        self.connection.send(Outbound::Text(text)).await
    }

    async fn reply(&self, request: &Frame, response: Value) -> bool {
        self.send(request.reply("ok", response).encode(self.vsn))
            .await
    }

    /// A message that belongs to no channel was bad: a `system` error on
    /// `phoenix`; the connection stays open.
    async fn connection_error(&self, kind: ErrorKind, message: &str) -> bool {
        self.realtime.metrics.error(kind);
        self.send(system_frame(
            self.vsn,
            protocol::PHOENIX_TOPIC,
            "error",
            "system",
            message,
            None,
        ))
        .await
    }

    async fn refuse(&self, request: &Frame, refusal: Refusal) -> bool {
        self.realtime.metrics.error(refusal.0);
        self.send(request.error_reply(&refusal.1).encode(self.vsn))
            .await
    }

    /// Handles one message; false when the connection should end.
    async fn handle_text(&mut self, text: &str) -> bool {
        let limit = self.realtime.settings.max_frame_bytes;
        if text.len() > limit {
            let message = format!(
                "message of {} bytes is larger than the limit of {limit} bytes",
                text.len()
            );
            return self
                .connection_error(ErrorKind::OversizeFrame, &message)
                .await;
        }
        let frame = match Frame::decode(text, self.vsn) {
            Ok(frame) => frame,
            Err(e) => return self.connection_error(ErrorKind::BadJson, &e).await,
        };
        match (frame.topic.as_str(), frame.event.as_str()) {
            (protocol::PHOENIX_TOPIC, protocol::HEARTBEAT) => self.reply(&frame, json!({})).await,
            (_, protocol::JOIN) => match self.join(&frame).await {
                Ok(sent) => sent,
                Err(refusal) => self.refuse(&frame, refusal).await,
            },
            (topic, protocol::LEAVE) if self.channels.contains_key(topic) => {
                let topic = topic.to_string();
                self.leave(&topic);
                self.reply(&frame, json!({})).await
                    && self
                        .send(Frame::new(&topic, protocol::CLOSE, json!({})).encode(self.vsn))
                        .await
            }
            (topic, protocol::ACCESS_TOKEN) if self.channels.contains_key(topic) => {
                self.refresh_token(&frame).await
            }
            (topic, "broadcast" | "presence") if self.channels.contains_key(topic) => {
                let reason = format!(
                    "{} is not supported by this server; use postgres_changes",
                    frame.event
                );
                self.refuse(&frame, Refusal(ErrorKind::UnknownEvent, reason))
                    .await
            }
            (topic, event) if self.channels.contains_key(topic) => {
                let reason = format!("unknown event {event:?}");
                self.refuse(&frame, Refusal(ErrorKind::UnknownEvent, reason))
                    .await
            }
            _ => {
                self.refuse(
                    &frame,
                    Refusal(ErrorKind::UnknownTopic, "unmatched topic".into()),
                )
                .await
            }
        }
    }

    fn viewer_for(&self, token: Option<&str>) -> Result<(Viewer, Option<i64>), Refusal> {
        match token.filter(|t| !t.trim().is_empty()) {
            Some(token) => {
                let claims = self.state.auth.verify(token.trim()).map_err(|e| {
                    let kind = if e == crate::auth::server::TokenError::Expired {
                        ErrorKind::ExpiredToken
                    } else {
                        ErrorKind::Unauthorized
                    };
                    Refusal(kind, e.to_string())
                })?;
                let role: Role = claims.role.parse().map_err(|_| {
                    Refusal(
                        ErrorKind::Unauthorized,
                        "the access token names an unknown role".into(),
                    )
                })?;
                Ok((
                    Viewer {
                        user_id: claims.sub,
                        role,
                        factory_id: claims.factory_id,
                    },
                    Some(claims.exp),
                ))
            }
            None => self.cookie_viewer.map(|v| (v, None)).ok_or_else(|| {
                Refusal(
                    ErrorKind::Unauthorized,
                    "unauthorized: sign in, or send an access_token from /api/auth/token".into(),
                )
            }),
        }
    }

    fn binding(&mut self, request: &PostgresChangesRequest) -> Result<Binding, Refusal> {
        let binding = Binding::from_request(self.next_binding, request, &self.realtime.catalog)?;
        self.next_binding += 1;
        Ok(binding)
    }

    /// Joins a channel; Ok(false) if the connection is gone.
    async fn join(&mut self, frame: &Frame) -> Result<bool, Refusal> {
        if !frame.topic.starts_with("realtime:") || frame.topic.len() > 200 {
            return Err(Refusal(
                ErrorKind::UnknownTopic,
                "unknown topic: channel topics look like realtime:<name>".into(),
            ));
        }
        let payload: JoinPayload = serde_json::from_value(frame.payload.clone())
            .map_err(|e| Refusal(ErrorKind::BadPayload, format!("invalid join payload: {e}")))?;
        let (viewer, expires_at) = self.viewer_for(payload.access_token.as_deref())?;
        if !self.channels.contains_key(&frame.topic)
            && self.channels.len() >= self.realtime.settings.max_channels
        {
            return Err(Refusal(
                ErrorKind::TooManyChannels,
                "too many channels on this connection".into(),
            ));
        }
        if payload.config.postgres_changes.len() > 100 {
            return Err(Refusal(
                ErrorKind::BadPayload,
                "at most 100 postgres_changes bindings per channel".into(),
            ));
        }
        let mut bindings = Vec::new();
        let mut accepted = Vec::new();
        for request in &payload.config.postgres_changes {
            let binding = self.binding(request)?;
            accepted.push(PostgresChangesBinding {
                id: binding.id,
                request: request.clone(),
            });
            bindings.push(binding);
        }
        if self.channels.contains_key(&frame.topic) {
            self.leave(&frame.topic);
        }
        let channel = Arc::new(Channel {
            topic: frame.topic.clone(),
            join_ref: frame.join_ref.clone(),
        });
        let vsn = self.vsn;
        let subscribed = self.realtime.hub.subscribe(
            SubscribeRequest {
                connection: self.connection.clone(),
                channel: channel.clone(),
                viewer,
                bindings,
                resume_after: payload.cursor,
            },
            |subscribed| {
                let response = JoinResponse {
                    postgres_changes: accepted,
                    cursor: subscribed.position,
                };
                let mut frames = vec![
                    frame
                        .reply("ok", serde_json::to_value(response).unwrap_or(Value::Null))
                        .encode(vsn),
                ];
                if !payload.config.postgres_changes.is_empty() {
                    frames.push(system_frame(
                        vsn,
                        &frame.topic,
                        "ok",
                        protocol::POSTGRES_CHANGES,
                        "Subscribed to PostgreSQL",
                        None,
                    ));
                }
                if subscribed.reset {
                    frames.push(system_frame(
                        vsn,
                        &frame.topic,
                        "ok",
                        protocol::POSTGRES_CHANGES,
                        "some changes are no longer available: refetch, then continue",
                        Some(Notice::Reset {
                            cursor: subscribed.position,
                        }),
                    ));
                }
                frames
            },
        );
        let Ok(subscribed) = subscribed else {
            return Ok(false);
        };
        self.channels.insert(
            frame.topic.clone(),
            JoinedChannel {
                join_ref: frame.join_ref.clone(),
                viewer,
                expires_at,
            },
        );
        if subscribed.catching_up {
            return Ok(self
                .connection
                .send(Outbound::CatchUp {
                    subscription: subscribed.id,
                    channel,
                })
                .await);
        }
        Ok(true)
    }

    fn leave(&mut self, topic: &str) {
        self.realtime.hub.unsubscribe(self.connection.id, topic);
        self.channels.remove(topic);
    }

    async fn refresh_token(&mut self, frame: &Frame) -> bool {
        let token = frame.payload.get("access_token").and_then(Value::as_str);
        let Some(channel) = self.channels.get(&frame.topic) else {
            return true;
        };
        let current = channel.viewer;
        match self.viewer_for(token) {
            Ok((viewer, expires_at)) if viewer.user_id == current.user_id => {
                if let Some(channel) = self.channels.get_mut(&frame.topic) {
                    channel.expires_at = expires_at;
                }
                true
            }
            Ok(_) => {
                self.close_channel(
                    &frame.topic.clone(),
                    "the access token belongs to another user",
                    None,
                )
                .await
            }
            Err(Refusal(kind, message)) => {
                self.realtime.metrics.error(kind);
                let notice = (kind == ErrorKind::ExpiredToken).then_some(Notice::TokenExpired);
                self.close_channel(&frame.topic.clone(), &message, notice)
                    .await
            }
        }
    }

    /// Closes a channel with a `system` error saying why.
    async fn close_channel(&mut self, topic: &str, message: &str, notice: Option<Notice>) -> bool {
        let join_ref = self.channels.get(topic).and_then(|c| c.join_ref.clone());
        self.leave(topic);
        let mut close = Frame::new(topic, protocol::CLOSE, json!({}));
        close.join_ref = join_ref;
        self.send(system_frame(
            self.vsn, topic, "error", "system", message, notice,
        ))
        .await
            && self.send(close.encode(self.vsn)).await
    }

    fn next_expiry(&self) -> Option<i64> {
        self.channels.values().filter_map(|c| c.expires_at).min()
    }

    async fn expire_tokens(&mut self) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let expired: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, c)| c.expires_at.is_some_and(|at| at <= now))
            .map(|(topic, _)| topic.clone())
            .collect();
        for topic in expired {
            self.realtime.metrics.error(ErrorKind::ExpiredToken);
            self.close_channel(
                &topic,
                "the access token has expired",
                Some(Notice::TokenExpired),
            )
            .await;
        }
    }
}

async fn sleep_until_unix(at: Option<i64>) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let wait = at.map_or(0, |at| (at - now).max(0)) as u64;
    tokio::time::sleep_until(Instant::now() + Duration::from_secs(wait)).await
}
