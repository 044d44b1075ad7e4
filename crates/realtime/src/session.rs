//! One connection's protocol session, without I/O: the socket hands it each
//! message and does what it answers ([`Next`]); replies, notices and
//! changes go out through the connection's queue, in order. Bad input of
//! any kind gets an error reply and leaves the connection open; a client
//! that sends too much, too fast, is refused with a reason.
//!
//! A session holds the connection's place in the hub; dropping it (the
//! connection ended, for whatever reason, a panic included) releases every
//! subscription and every count the connection held.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Value, json};

use crate::catalog::Catalog;
use crate::cursor::ChangeCursor;
use crate::hub::{
    Channel, CloseOrRefuse, ConnectionHandle, Hub, Outbound, Speaker, SubscribeError,
    SubscribeRequest,
};
use crate::join::{Binding, Refusal};
use crate::metrics::{ErrorKind, Metrics};
use crate::ports::{AuthError, Principal};
use crate::protocol::{
    self, Frame, JoinPayload, JoinResponse, Notice, PostgresChangesBinding, SystemMessage, Vsn,
};

/// Longest channel topic accepted.
const MAX_TOPIC_LEN: usize = 200;
/// Refusals for sending too fast in a row before the connection is closed.
const MAX_REFUSALS_IN_A_ROW: u32 = 50;

/// What a session needs of the engine.
#[derive(Clone)]
pub struct SessionParts {
    pub hub: Arc<Hub>,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest client message, in bytes.
    pub max_frame_bytes: usize,
    /// Most channels on one connection.
    pub max_channels: usize,
    /// Most `postgres_changes` bindings in one channel.
    pub max_bindings: usize,
    /// Messages a connection may send per second (bursts of twice that).
    pub messages_per_second: u32,
    /// Joins a connection may send per second (bursts of twice that).
    pub joins_per_second: u32,
}

/// What the socket does next.
#[derive(Debug)]
pub enum Next {
    /// Go on reading.
    Continue,
    /// Look the token up, then hand the answer to [`Session::resolved`].
    Resolve(Box<TokenLookup>),
    /// Close the connection with this code and reason (after sending what is queued).
    Close(u16, &'static str),
}

/// An access token to look up, and what waits for the answer.
#[derive(Debug)]
pub struct TokenLookup {
    pub token: String,
    /// The hub's head before the lookup began: changes of rights after it
    /// correct what the lookup finds.
    as_of: ChangeCursor,
    waiting: Waiting,
}

#[derive(Debug)]
enum Waiting {
    Join(Frame, JoinPayload),
    Refresh(Frame),
}

struct JoinedChannel {
    join_ref: Option<String>,
    /// The person it speaks for.
    user: uuid::Uuid,
    /// When its access token expires (Unix seconds), if it used one.
    expires_at: Option<i64>,
}

pub struct Session {
    parts: SessionParts,
    connection: Arc<ConnectionHandle>,
    vsn: Vsn,
    signed_in: bool,
    channels: HashMap<String, JoinedChannel>,
    next_binding: u64,
    messages: DefaultDirectRateLimiter,
    joins: DefaultDirectRateLimiter,
    refusals_in_a_row: u32,
}

fn quota(per_second: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(per_second.max(1).saturating_mul(2)).unwrap_or(rate);
    Quota::per_second(rate).allow_burst(burst)
}

impl Session {
    /// Opens a session for a connection. `cookie`: who its session cookie
    /// named, and the hub's head before that was looked up. Refused when the
    /// client holds too many connections, or when the session it signed in
    /// with has meanwhile ended.
    pub fn open(
        parts: SessionParts,
        connection: Arc<ConnectionHandle>,
        vsn: Vsn,
        address: Option<IpAddr>,
        cookie: Option<(Principal, ChangeCursor)>,
    ) -> Result<Session, CloseOrRefuse> {
        let signed_in = cookie.is_some();
        parts.hub.register(connection.clone(), address, cookie)?;
        let limits = parts.limits;
        Ok(Session {
            parts,
            connection,
            vsn,
            signed_in,
            channels: HashMap::new(),
            next_binding: 1,
            messages: RateLimiter::direct(quota(limits.messages_per_second)),
            joins: RateLimiter::direct(quota(limits.joins_per_second)),
            refusals_in_a_row: 0,
        })
    }

    pub fn vsn(&self) -> Vsn {
        self.vsn
    }

    /// Handles one text message from the client.
    pub fn receive_text(&mut self, text: &str) -> Next {
        if let Some(next) = self.too_fast() {
            return next;
        }
        let limit = self.parts.limits.max_frame_bytes;
        if text.len() > limit {
            let message = format!(
                "message of {} bytes is larger than the limit of {limit} bytes",
                text.len()
            );
            self.connection_error(ErrorKind::OversizeFrame, &message);
            return Next::Continue;
        }
        let frame = match Frame::decode(text, self.vsn) {
            Ok(frame) => frame,
            Err(e) => {
                self.connection_error(ErrorKind::BadJson, &e);
                return Next::Continue;
            }
        };
        self.receive(frame)
    }

    /// Handles one binary message from the client.
    pub fn receive_binary(&mut self, _bytes: &[u8]) -> Next {
        if let Some(next) = self.too_fast() {
            return next;
        }
        self.connection_error(
            ErrorKind::BadJson,
            "binary messages are not supported; send JSON text",
        );
        Next::Continue
    }

    /// Counts a message against the rate limit: `Some` when it must be refused.
    fn too_fast(&mut self) -> Option<Next> {
        if self.messages.check().is_ok() {
            self.refusals_in_a_row = 0;
            return None;
        }
        self.refusals_in_a_row = self.refusals_in_a_row.saturating_add(1);
        if self.refusals_in_a_row > MAX_REFUSALS_IN_A_ROW {
            self.parts.metrics.error(ErrorKind::Limited);
            self.send(system_frame(
                self.vsn,
                protocol::PHOENIX_TOPIC,
                "error",
                "system",
                "closing: far too many messages too fast",
                Some(Notice::Limited),
            ));
            return Some(Next::Close(protocol::CLOSE_LIMITED, "too many messages"));
        }
        let message = format!(
            "too many messages: at most {} per second; this one was dropped",
            self.parts.limits.messages_per_second
        );
        self.parts.metrics.error(ErrorKind::Limited);
        self.send(system_frame(
            self.vsn,
            protocol::PHOENIX_TOPIC,
            "error",
            "system",
            &message,
            Some(Notice::Limited),
        ));
        Some(Next::Continue)
    }

    fn receive(&mut self, frame: Frame) -> Next {
        let joined = self.channels.contains_key(&frame.topic);
        match (frame.topic.as_str(), frame.event.as_str()) {
            (protocol::PHOENIX_TOPIC, protocol::HEARTBEAT) => {
                self.reply(&frame, json!({}));
                Next::Continue
            }
            (_, protocol::JOIN) => self.join(frame),
            (topic, protocol::LEAVE) if joined => {
                let topic = topic.to_string();
                self.leave(&topic);
                self.reply(&frame, json!({}));
                self.send(Frame::new(&topic, protocol::CLOSE, json!({})).encode(self.vsn));
                Next::Continue
            }
            (_, protocol::ACCESS_TOKEN) if joined => {
                let token = frame.payload.get("access_token").and_then(Value::as_str);
                match token.map(str::trim).filter(|t| !t.is_empty()) {
                    Some(token) => Next::Resolve(Box::new(TokenLookup {
                        token: token.to_string(),
                        as_of: self.parts.hub.head(),
                        waiting: Waiting::Refresh(frame),
                    })),
                    None => {
                        let topic = frame.topic.clone();
                        self.refuse_refresh(&topic, AuthError::Refused("no access token".into()));
                        Next::Continue
                    }
                }
            }
            (_, "broadcast" | "presence") if joined => {
                let reason = format!(
                    "{} is not supported by this server; use postgres_changes",
                    frame.event
                );
                self.refuse(&frame, Refusal(ErrorKind::UnknownEvent, reason));
                Next::Continue
            }
            (_, event) if joined => {
                let reason = format!("unknown event {event:?}");
                self.refuse(&frame, Refusal(ErrorKind::UnknownEvent, reason));
                Next::Continue
            }
            _ => {
                self.refuse(
                    &frame,
                    Refusal(ErrorKind::UnknownTopic, "unmatched topic".into()),
                );
                Next::Continue
            }
        }
    }

    fn join(&mut self, frame: Frame) -> Next {
        if self.joins.check().is_err() {
            let reason = format!(
                "too many joins: at most {} per second",
                self.parts.limits.joins_per_second
            );
            self.refuse(&frame, Refusal(ErrorKind::Limited, reason));
            return Next::Continue;
        }
        if !frame.topic.starts_with("realtime:") || frame.topic.len() > MAX_TOPIC_LEN {
            self.refuse(
                &frame,
                Refusal(
                    ErrorKind::UnknownTopic,
                    "unknown topic: channel topics look like realtime:<name>".into(),
                ),
            );
            return Next::Continue;
        }
        let payload: JoinPayload = match serde_json::from_value(frame.payload.clone()) {
            Ok(payload) => payload,
            Err(e) => {
                let reason = format!("invalid join payload: {e}");
                self.refuse(&frame, Refusal(ErrorKind::BadPayload, reason));
                return Next::Continue;
            }
        };
        match payload.access_token.as_deref().map(str::trim) {
            Some(token) if !token.is_empty() => Next::Resolve(Box::new(TokenLookup {
                token: token.to_string(),
                as_of: self.parts.hub.head(),
                waiting: Waiting::Join(frame, payload),
            })),
            _ if self.signed_in => {
                self.subscribe(frame, payload, Speaker::Cookie);
                Next::Continue
            }
            _ => {
                self.refuse(
                    &frame,
                    Refusal(
                        ErrorKind::Unauthorized,
                        "unauthorized: sign in, or send an access_token from /api/auth/token"
                            .into(),
                    ),
                );
                Next::Continue
            }
        }
    }

    /// Continues what waited for a token lookup.
    pub fn resolved(&mut self, lookup: Box<TokenLookup>, principal: Result<Principal, AuthError>) {
        let as_of = lookup.as_of;
        match (lookup.waiting, principal) {
            (Waiting::Join(frame, payload), Ok(principal)) => {
                self.subscribe(frame, payload, Speaker::Token { principal, as_of })
            }
            (Waiting::Join(frame, _), Err(e)) => {
                self.refuse(&frame, Refusal(auth_error_kind(&e), e.to_string()))
            }
            (Waiting::Refresh(frame), principal) => self.finish_refresh(&frame.topic, principal),
        }
    }

    fn subscribe(&mut self, frame: Frame, payload: JoinPayload, speaker: Speaker) {
        if let Err(refusal) = self.try_subscribe(&frame, &payload, speaker) {
            self.refuse(&frame, refusal);
        }
    }

    fn try_subscribe(
        &mut self,
        frame: &Frame,
        payload: &JoinPayload,
        speaker: Speaker,
    ) -> Result<(), Refusal> {
        if !self.channels.contains_key(&frame.topic)
            && self.channels.len() >= self.parts.limits.max_channels
        {
            return Err(Refusal(
                ErrorKind::TooManyChannels,
                format!(
                    "too many channels on this connection (at most {})",
                    self.parts.limits.max_channels
                ),
            ));
        }
        let requests = &payload.config.postgres_changes;
        if requests.len() > self.parts.limits.max_bindings {
            return Err(Refusal(
                ErrorKind::Limited,
                format!(
                    "at most {} postgres_changes bindings per channel",
                    self.parts.limits.max_bindings
                ),
            ));
        }
        let bindings =
            Binding::all_from_requests(self.next_binding, requests, &self.parts.catalog)?;
        self.next_binding = self
            .next_binding
            .saturating_add(u64::try_from(bindings.len()).unwrap_or(u64::MAX));
        let accepted: Vec<PostgresChangesBinding> = bindings
            .iter()
            .zip(requests)
            .map(|(binding, request)| PostgresChangesBinding {
                id: binding.id,
                request: request.clone(),
            })
            .collect();
        if self.channels.contains_key(&frame.topic) {
            self.leave(&frame.topic);
        }
        let channel = Arc::new(Channel {
            topic: frame.topic.clone(),
            join_ref: frame.join_ref.clone(),
        });
        let vsn = self.vsn;
        let subscribed = self.parts.hub.subscribe(
            SubscribeRequest {
                connection: self.connection.id,
                channel: channel.clone(),
                speaker,
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
                if !requests.is_empty() {
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
        let subscribed = match subscribed {
            Ok(subscribed) => subscribed,
            // a closed connection is ending: nothing more to say
            Err(SubscribeError::Closed) => return Ok(()),
            Err(SubscribeError::Refused(refusal)) => return Err(refusal),
        };
        self.channels.insert(
            frame.topic.clone(),
            JoinedChannel {
                join_ref: frame.join_ref.clone(),
                user: subscribed.user,
                expires_at: subscribed.expires_at,
            },
        );
        if subscribed.catching_up {
            self.connection.push(Outbound::CatchUp {
                subscription: subscribed.id,
                channel,
            });
        }
        Ok(())
    }

    fn leave(&mut self, topic: &str) {
        self.parts.hub.unsubscribe(self.connection.id, topic);
        self.channels.remove(topic);
    }

    fn finish_refresh(&mut self, topic: &str, principal: Result<Principal, AuthError>) {
        let Some(channel) = self.channels.get_mut(topic) else {
            return;
        };
        match principal {
            Ok(principal) if principal.viewer.user_id == channel.user => {
                channel.expires_at = principal.expires_at;
            }
            Ok(_) => {
                self.parts.metrics.error(ErrorKind::Unauthorized);
                self.close_channel(topic, "the access token belongs to another user", None);
            }
            Err(e) => self.refuse_refresh(topic, e),
        }
    }

    fn refuse_refresh(&mut self, topic: &str, error: AuthError) {
        let kind = auth_error_kind(&error);
        self.parts.metrics.error(kind);
        let notice = (kind == ErrorKind::ExpiredToken).then_some(Notice::TokenExpired);
        self.close_channel(topic, &error.to_string(), notice);
    }

    /// Closes a channel with a `system` error saying why.
    fn close_channel(&mut self, topic: &str, message: &str, notice: Option<Notice>) {
        let join_ref = self.channels.get(topic).and_then(|c| c.join_ref.clone());
        self.leave(topic);
        let mut close = Frame::new(topic, protocol::CLOSE, json!({}));
        close.join_ref = join_ref;
        self.send(system_frame(
            self.vsn, topic, "error", "system", message, notice,
        ));
        self.send(close.encode(self.vsn));
    }

    /// When the next channel's access token runs out (Unix seconds).
    pub fn next_expiry(&self) -> Option<i64> {
        self.channels.values().filter_map(|c| c.expires_at).min()
    }

    /// Closes the channels whose access token ran out by `now` (Unix seconds).
    pub fn expire(&mut self, now: i64) {
        let expired: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, c)| c.expires_at.is_some_and(|at| at <= now))
            .map(|(topic, _)| topic.clone())
            .collect();
        for topic in expired {
            self.parts.metrics.error(ErrorKind::ExpiredToken);
            self.close_channel(
                &topic,
                "the access token has expired",
                Some(Notice::TokenExpired),
            );
        }
    }

    fn send(&self, text: String) {
        // a closed queue means the connection is ending; nothing to do
        let _ = self.connection.push(Outbound::Text(text));
    }

    fn reply(&self, request: &Frame, response: Value) {
        self.send(request.reply("ok", response).encode(self.vsn));
    }

    /// A message that belongs to no channel was bad: a `system` error on
    /// `phoenix`; the connection stays open.
    fn connection_error(&self, kind: ErrorKind, message: &str) {
        self.parts.metrics.error(kind);
        self.send(system_frame(
            self.vsn,
            protocol::PHOENIX_TOPIC,
            "error",
            "system",
            message,
            None,
        ));
    }

    fn refuse(&self, request: &Frame, refusal: Refusal) {
        self.parts.metrics.error(refusal.0);
        self.send(request.error_reply(&refusal.1).encode(self.vsn));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.parts.hub.remove_connection(self.connection.id);
    }
}

fn auth_error_kind(error: &AuthError) -> ErrorKind {
    match error {
        AuthError::Expired(_) => ErrorKind::ExpiredToken,
        AuthError::Refused(_) | AuthError::Unavailable(_) => ErrorKind::Unauthorized,
    }
}

/// A `system` message on `topic`, with an optional notice of ours.
pub fn system_frame(
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
