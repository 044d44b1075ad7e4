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

use crate::access::Audience;
use crate::broadcast::{self, Outgoing};
use crate::catalog::Catalog;
use crate::cursor::ChangeCursor;
use crate::hub::{
    Channel, CloseOrRefuse, ConnectionHandle, Hub, Member, Outbound, RoomRequest, Speaker,
    SubscribeError, SubscribeRequest,
};
use crate::join::{Binding, Refusal};
use crate::metrics::{ErrorKind, Metrics};
use crate::ports::{AuthError, Principal, RoomAccess, Rules, Topic};
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
    pub rules: Arc<dyn Rules>,
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
    /// Broadcasts a connection may send per second (bursts of twice that).
    pub broadcasts_per_second: u32,
    /// Presence updates (track, untrack) a connection may send per second
    /// (bursts of twice that).
    pub presence_per_second: u32,
}

/// What the socket does next.
#[derive(Debug)]
pub enum Next {
    /// Go on reading.
    Continue,
    /// Look the token up, then hand the answer to [`Session::resolved`].
    Resolve(Box<TokenLookup>),
    /// Look up who may see a row (for joining its room), then hand the
    /// answer to [`Session::looked_up`].
    LookUp(Box<RowLookup>),
    /// Send a broadcast through the database, then hand the outcome to
    /// [`Session::sent`].
    Broadcast(Box<Outgoing>),
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

/// A row whose audience decides a room join, and the join waiting for it.
#[derive(Debug)]
pub struct RowLookup {
    pub table: String,
    pub key: String,
    /// The hub's head before the lookup began: later changes of the row
    /// correct what it finds.
    as_of: ChangeCursor,
    join: Join,
}

/// A join waiting for its room's row.
#[derive(Debug)]
struct Join {
    frame: Frame,
    payload: JoinPayload,
    speaker: Speaker,
    member: Member,
}

struct JoinedChannel {
    join_ref: Option<String>,
    /// Broadcasts sent on it get a reply (`broadcast.ack`).
    ack: bool,
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
    broadcasts: DefaultDirectRateLimiter,
    presence: DefaultDirectRateLimiter,
    refusals_in_a_row: u32,
}

/// `per_second`, with bursts of twice that.
pub(crate) fn quota(per_second: u32) -> Quota {
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
            broadcasts: RateLimiter::direct(quota(limits.broadcasts_per_second)),
            presence: RateLimiter::direct(quota(limits.presence_per_second)),
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

    /// Handles one binary message from the client: realtime-js 2's
    /// broadcast push (kind 3).
    pub fn receive_binary(&mut self, bytes: &[u8]) -> Next {
        if let Some(next) = self.too_fast() {
            return next;
        }
        match broadcast::decode_broadcast_push(bytes) {
            Ok(frame) => self.receive(frame),
            Err(reason) => {
                self.connection_error(ErrorKind::BadJson, &reason);
                Next::Continue
            }
        }
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
                        as_of: self.parts.hub.live_head(),
                        waiting: Waiting::Refresh(frame),
                    })),
                    None => {
                        let topic = frame.topic.clone();
                        self.refuse_refresh(&topic, AuthError::Refused("no access token".into()));
                        Next::Continue
                    }
                }
            }
            (_, protocol::BROADCAST) if joined => self.broadcast(frame),
            (_, protocol::PRESENCE) if joined => {
                self.presence(&frame);
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
                as_of: self.parts.hub.live_head(),
                waiting: Waiting::Join(frame, payload),
            })),
            _ if self.signed_in => self.subscribe(frame, payload, Speaker::Cookie),
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
    pub fn resolved(
        &mut self,
        lookup: Box<TokenLookup>,
        principal: Result<Principal, AuthError>,
    ) -> Next {
        let as_of = lookup.as_of;
        match (lookup.waiting, principal) {
            (Waiting::Join(frame, payload), Ok(principal)) => {
                return self.subscribe(frame, payload, Speaker::Token { principal, as_of });
            }
            (Waiting::Join(frame, _), Err(e)) => {
                self.refuse(&frame, Refusal(auth_error_kind(&e), e.to_string()))
            }
            (Waiting::Refresh(frame), principal) => self.finish_refresh(&frame.topic, principal),
        }
        Next::Continue
    }

    /// Continues a room join with who may see the room's row (`None`: no
    /// such row), or why that could not be looked up.
    pub fn looked_up(
        &mut self,
        lookup: Box<RowLookup>,
        audience: Result<Option<Audience>, String>,
    ) -> Next {
        let RowLookup { as_of, join, .. } = *lookup;
        match audience {
            Ok(audience) => {
                let room = RoomRequest {
                    member: join.member,
                    looked_up: Some((audience, as_of)),
                };
                if let Err(refusal) =
                    self.try_subscribe(&join.frame, &join.payload, join.speaker, Some(room))
                {
                    self.refuse(&join.frame, refusal);
                }
            }
            Err(e) => self.refuse(
                &join.frame,
                Refusal(
                    ErrorKind::Unauthorized,
                    format!("who may join could not be checked just now: {e}"),
                ),
            ),
        }
        Next::Continue
    }

    /// A join as the token or cookie allows: a plain channel subscribes at
    /// once; a room's needs who may see its row first.
    fn subscribe(&mut self, frame: Frame, payload: JoinPayload, speaker: Speaker) -> Next {
        let name = frame.topic.strip_prefix("realtime:").unwrap_or_default();
        let member = match self.parts.rules.topic(name) {
            Topic::Room(room) => Some(Member {
                room,
                echo: payload.config.broadcast.echo,
                presence: payload.config.presence.enabled,
            }),
            Topic::Invalid(reason) => {
                self.refuse(&frame, Refusal(ErrorKind::UnknownTopic, reason));
                return Next::Continue;
            }
            Topic::Plain if payload.config.presence.enabled => {
                let reason = format!(
                    "{name} has no presence: presence and broadcast are on the room topics ({})",
                    self.parts.rules.room_topics()
                );
                self.refuse(&frame, Refusal(ErrorKind::UnknownTopic, reason));
                return Next::Continue;
            }
            Topic::Plain => None,
        };
        match member {
            Some(member) => match &member.room.access {
                RoomAccess::Row { table, key } => Next::LookUp(Box::new(RowLookup {
                    table: table.clone(),
                    key: key.clone(),
                    as_of: self.parts.hub.live_head(),
                    join: Join {
                        frame,
                        payload,
                        speaker,
                        member,
                    },
                })),
                RoomAccess::Person(_) => {
                    let room = RoomRequest {
                        member,
                        looked_up: None,
                    };
                    if let Err(refusal) = self.try_subscribe(&frame, &payload, speaker, Some(room))
                    {
                        self.refuse(&frame, refusal);
                    }
                    Next::Continue
                }
            },
            None => {
                if let Err(refusal) = self.try_subscribe(&frame, &payload, speaker, None) {
                    self.refuse(&frame, refusal);
                }
                Next::Continue
            }
        }
    }

    fn try_subscribe(
        &mut self,
        frame: &Frame,
        payload: &JoinPayload,
        speaker: Speaker,
        room: Option<RoomRequest>,
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
                room,
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
                ack: payload.config.broadcast.ack,
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

    /// A broadcast from the client: to the other members of its room, on
    /// every server, through the database.
    fn broadcast(&mut self, frame: Frame) -> Next {
        let Some(room) = self.parts.hub.room_of(self.connection.id, &frame.topic) else {
            self.refuse(&frame, self.not_a_room(&frame.topic));
            return Next::Continue;
        };
        if self.broadcasts.check().is_err() {
            let reason = format!(
                "too many broadcasts: at most {} per second; this one was dropped",
                self.parts.limits.broadcasts_per_second
            );
            self.refuse(&frame, Refusal(ErrorKind::Limited, reason));
            return Next::Continue;
        }
        let ack = self.channels.get(&frame.topic).is_some_and(|c| c.ack);
        match Outgoing::from_client(&frame, room, self.parts.hub.node(), self.connection.id) {
            Ok(outgoing) => Next::Broadcast(Box::new(Outgoing {
                reply: ack.then_some(frame),
                ..outgoing
            })),
            Err(reason) => {
                self.refuse(&frame, Refusal(ErrorKind::BadPayload, reason));
                Next::Continue
            }
        }
    }

    /// A broadcast went to the database (or could not): the reply it
    /// asked for.
    pub fn sent(&mut self, outgoing: &Outgoing, result: Result<(), String>) {
        if let Some(frame) = &outgoing.reply {
            match result {
                Ok(()) => self.reply(frame, json!({})),
                Err(e) => self.refuse(
                    frame,
                    Refusal(
                        ErrorKind::Unavailable,
                        format!("the broadcast could not be sent: {e}"),
                    ),
                ),
            }
        } else if let Err(e) = result {
            self.parts.metrics.error(ErrorKind::Unavailable);
            tracing::warn!(error = %e, "a broadcast could not be sent");
        }
    }

    /// `track` or `untrack` in the channel's room.
    fn presence(&mut self, frame: &Frame) {
        if self.presence.check().is_err() {
            let reason = format!(
                "too many presence updates: at most {} per second; this one was dropped",
                self.parts.limits.presence_per_second
            );
            self.refuse(frame, Refusal(ErrorKind::Limited, reason));
            return;
        }
        let done = match frame.payload.get("event").and_then(Value::as_str) {
            Some("track") => {
                let meta = match frame.payload.get("payload") {
                    None | Some(Value::Null) => serde_json::Map::new(),
                    Some(Value::Object(meta)) => meta.clone(),
                    Some(_) => {
                        let reason = "track takes a JSON object".to_string();
                        self.refuse(frame, Refusal(ErrorKind::BadPayload, reason));
                        return;
                    }
                };
                self.parts.hub.track(self.connection.id, &frame.topic, meta)
            }
            Some("untrack") => self.parts.hub.untrack(self.connection.id, &frame.topic),
            other => {
                let reason = format!("unknown presence event {other:?}: use track or untrack");
                self.refuse(frame, Refusal(ErrorKind::UnknownEvent, reason));
                return;
            }
        };
        if done {
            self.reply(frame, json!({}));
        } else {
            self.refuse(frame, self.not_a_room(&frame.topic));
        }
    }

    fn not_a_room(&self, topic: &str) -> Refusal {
        let name = topic.strip_prefix("realtime:").unwrap_or(topic);
        Refusal(
            ErrorKind::UnknownTopic,
            format!(
                "{name} has no broadcast or presence: they are on the room topics ({})",
                self.parts.rules.room_topics()
            ),
        )
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
