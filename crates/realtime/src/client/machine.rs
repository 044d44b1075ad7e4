//! The browser's connection as a pure state machine: the browser half feeds
//! it what happened (a subscription, the socket opened, a frame, the socket
//! closed, a timer, the network, a poll's answer), with the time, and does
//! the [`Effect`]s it returns. The status shown to the user is derived from
//! the state in one place ([`Machine::status`]).
//!
//! What it guarantees, each unit-tested below: every channel joins (and
//! re-joins after a reconnect) from the newest cursor it has, so nothing is
//! missed; a change at or before a channel's cursor is dropped, so nothing
//! is delivered twice; a reset notice makes the channel refetch; retries
//! back off exponentially with jitter up to a cap; after three failed
//! attempts in a row, changes come by polling with the same cursors until
//! the socket works again.

use std::collections::BTreeMap;
use std::sync::Arc;

mod rooms;
pub use rooms::{Present, RoomEvent, room_topic};

use super::{ConnectionStatus, Listen, RealtimeEvent};
use crate::cursor::ChangeCursor;
use crate::poll::{PollChannel, PollResult};
use crate::protocol::{
    self, ChangeEvent, Frame, JoinConfig, JoinPayload, JoinResponse, Notice,
    PostgresChangesRequest, RawFrame, SystemMessage, Vsn,
};

/// How often a heartbeat goes out; one unanswered by the next means the socket is dead.
pub const HEARTBEAT_MS: f64 = 15_000.0;
pub const FIRST_RETRY_MS: f64 = 500.0;
pub const MAX_RETRY_MS: f64 = 15_000.0;
/// Failed attempts in a row before changes come by polling meanwhile.
pub const FAILURES_BEFORE_POLLING: u32 = 3;
/// How often to poll while polling.
pub const POLL_EVERY_MS: f64 = 2_000.0;

/// What the browser must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Open a new socket, replacing any other; then call `opened` or `closed`.
    Open,
    /// Close the socket (without reporting it back).
    Close,
    /// Send a text frame on the open socket.
    Send(String),
    /// Call `retry_due` after this many milliseconds, replacing a pending retry.
    RetryIn(f64),
    /// Forget the pending retry.
    CancelRetry,
    /// Ask the server for these channels' changes, then call `polled`.
    Poll(Vec<PollChannel>),
    /// Hand an event to the listener of a channel (by topic).
    Deliver(String, RealtimeEvent),
    /// Hand an event to the components in a room (by topic).
    Room(String, RoomEvent),
    /// Something worth a console warning.
    Warn(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Down,
    Opening,
    /// Open; `answered` once the server said anything (a socket that opens
    /// and closes without a word, a proxy refusing late, counts as failed).
    Open {
        answered: bool,
    },
}

struct Channel {
    request: PostgresChangesRequest,
    /// The last change this channel has (or the position it joined at).
    cursor: Option<ChangeCursor>,
    join_ref: Option<String>,
    joined: bool,
}

pub struct Machine {
    link: Link,
    channels: BTreeMap<String, Channel>,
    rooms: BTreeMap<String, rooms::RoomChannel>,
    next_listener: u64,
    /// The newest cursor seen on any channel: a channel added once the page
    /// is interactive starts from it (its data is fetched after that).
    cursor: Option<ChangeCursor>,
    /// The cursor of the data the page was rendered with, until the page has
    /// hydrated: a channel added meanwhile shows that data, so it starts
    /// there even if other channels have moved on (a change they saw first
    /// may be one this channel's data lacks).
    page: Option<ChangeCursor>,
    next_ref: u64,
    next_topic: u64,
    heartbeat_pending: Option<String>,
    started: bool,
    offline: bool,
    /// The server said the session ended: no more attempts until someone
    /// signs in (and subscribes) again.
    signed_out: bool,
    /// Attempts since the socket last worked, and failures among them in a row.
    attempt: u32,
    failures: u32,
    retry_at: Option<f64>,
    polling: bool,
    poll_running: bool,
    /// Whether the last poll got through (only then is the page "polling").
    poll_ok: bool,
    last_activity: Option<f64>,
}

impl Machine {
    /// `start`: the newest cursor the server knew before it fetched the page's data.
    pub fn new(start: Option<ChangeCursor>) -> Machine {
        Machine {
            link: Link::Down,
            channels: BTreeMap::new(),
            rooms: BTreeMap::new(),
            next_listener: 1,
            cursor: start,
            page: start,
            next_ref: 1,
            next_topic: 1,
            heartbeat_pending: None,
            started: false,
            offline: false,
            signed_out: false,
            attempt: 0,
            failures: 0,
            retry_at: None,
            polling: false,
            poll_running: false,
            poll_ok: false,
            last_activity: None,
        }
    }

    pub fn status(&self) -> ConnectionStatus {
        if self.signed_out {
            ConnectionStatus::SignedOut
        } else if self.offline {
            ConnectionStatus::Offline
        } else if self.link == (Link::Open { answered: true }) {
            ConnectionStatus::Live
        } else if self.polling && self.poll_ok {
            ConnectionStatus::Polling
        } else if self.attempt == 0 {
            ConnectionStatus::Connecting
        } else {
            ConnectionStatus::Reconnecting {
                attempt: self.attempt,
                retry_at: self.retry_at.unwrap_or_default(),
            }
        }
    }

    /// When the last frame or poll answer arrived (ms since the epoch).
    pub fn last_activity(&self) -> Option<f64> {
        self.last_activity
    }

    /// Adds a channel for `listen`; returns its topic. The first one starts
    /// the connection.
    pub fn subscribe(&mut self, listen: &Listen, online: bool) -> (String, Vec<Effect>) {
        let topic = format!("realtime:{}-{}", listen.table, self.next_topic);
        self.next_topic += 1;
        self.channels.insert(
            topic.clone(),
            Channel {
                request: PostgresChangesRequest {
                    event: listen.event.to_string(),
                    schema: "public".into(),
                    table: Some(listen.table.to_string()),
                    filter: listen.filter.clone(),
                    select: None,
                },
                cursor: self.page.or(self.cursor),
                join_ref: None,
                joined: false,
            },
        );
        let mut effects = self.start(online);
        effects.extend(self.join(&topic));
        (topic, effects)
    }

    /// The page has hydrated: channels added from now on come with data
    /// fetched now, so they start from the newest cursor seen.
    pub fn page_hydrated(&mut self) {
        self.page = None;
    }

    /// Connects for the first subscription, or one after signing out and
    /// in again.
    fn start(&mut self, online: bool) -> Vec<Effect> {
        if self.link == Link::Down && self.retry_at.is_none() {
            self.signed_out = false;
            self.started = true;
            return self.connect(online);
        }
        Vec::new()
    }

    pub fn unsubscribe(&mut self, topic: &str) -> Vec<Effect> {
        let Some(channel) = self.channels.remove(topic) else {
            return Vec::new();
        };
        // a join sent on this socket is left even before its reply: the
        // server takes frames in order, so the leave undoes it
        if channel.join_ref.is_none() || !self.is_open() {
            return Vec::new();
        }
        let frame = Frame {
            join_ref: channel.join_ref,
            msg_ref: Some(self.next_ref()),
            topic: topic.to_string(),
            event: protocol::LEAVE.into(),
            payload: serde_json::json!({}),
        };
        vec![Effect::Send(frame.encode(Vsn::V2))]
    }

    /// Reconnects now if not connected ("retry now", the network is back).
    pub fn retry_now(&mut self, online: bool) -> Vec<Effect> {
        if self.link != Link::Down || self.signed_out {
            return Vec::new();
        }
        let mut effects = vec![Effect::CancelRetry];
        self.retry_at = None;
        effects.extend(self.connect(online));
        effects
    }

    /// The window got focus or became visible: reconnect at once if down.
    pub fn nudge(&mut self, online: bool) -> Vec<Effect> {
        if self.started {
            self.retry_now(online)
        } else {
            Vec::new()
        }
    }

    /// The browser says the network is gone.
    pub fn went_offline(&mut self) -> Vec<Effect> {
        self.offline = true;
        self.drop_link();
        self.retry_at = None;
        let mut effects = vec![Effect::Close, Effect::CancelRetry];
        effects.extend(self.rooms_down());
        effects
    }

    /// Signing out: the socket spoke for that user. The cursor stays: it is
    /// a position in the change stream, not anyone's data, so whoever signs
    /// in next joins from it and misses nothing committed meanwhile.
    pub fn disconnect(&mut self) -> Vec<Effect> {
        self.drop_link();
        self.signed_out = false;
        self.retry_at = None;
        self.attempt = 0;
        self.failures = 0;
        self.polling = false;
        let mut effects = vec![Effect::Close, Effect::CancelRetry];
        effects.extend(self.rooms_down());
        effects
    }

    fn connect(&mut self, online: bool) -> Vec<Effect> {
        if !online {
            self.offline = true;
            return Vec::new();
        }
        self.offline = false;
        self.link = Link::Opening;
        vec![Effect::Open]
    }

    fn drop_link(&mut self) {
        self.link = Link::Down;
        self.heartbeat_pending = None;
        for channel in self.channels.values_mut() {
            channel.joined = false;
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.link, Link::Open { .. })
    }

    fn next_ref(&mut self) -> String {
        let r = self.next_ref.to_string();
        self.next_ref += 1;
        r
    }

    /// The socket opened: every channel joins from its cursor.
    pub fn opened(&mut self, now: f64) -> Vec<Effect> {
        if self.link != Link::Opening {
            return Vec::new();
        }
        self.link = Link::Open { answered: false };
        self.heartbeat_pending = None;
        self.last_activity = Some(now);
        let topics: Vec<String> = self.channels.keys().cloned().collect();
        let mut effects = Vec::new();
        for topic in topics {
            effects.extend(self.join(&topic));
        }
        effects.extend(self.join_rooms());
        // an immediate heartbeat proves the link even with no channels
        effects.extend(self.send_heartbeat());
        effects
    }

    fn join(&mut self, topic: &str) -> Vec<Effect> {
        if !self.is_open() {
            return Vec::new();
        }
        let msg_ref = self.next_ref();
        let Some(channel) = self.channels.get_mut(topic) else {
            return Vec::new();
        };
        channel.join_ref = Some(msg_ref.clone());
        channel.joined = false;
        let payload = JoinPayload {
            config: JoinConfig {
                postgres_changes: vec![channel.request.clone()],
                ..JoinConfig::default()
            },
            access_token: None,
            cursor: channel.cursor,
        };
        let frame = Frame {
            join_ref: Some(msg_ref.clone()),
            msg_ref: Some(msg_ref),
            topic: topic.to_string(),
            event: protocol::JOIN.into(),
            payload: serde_json::to_value(payload).unwrap_or_default(),
        };
        vec![Effect::Send(frame.encode(Vsn::V2))]
    }

    /// The socket closed or failed to open: back off and retry; after
    /// repeated failures, poll meanwhile. `random` in [0, 1) jitters the delay.
    pub fn closed(&mut self, now: f64, online: bool, random: f64) -> Vec<Effect> {
        if self.link == Link::Down {
            return Vec::new();
        }
        let worked = self.link == (Link::Open { answered: true });
        self.drop_link();
        let mut effects = self.rooms_down();
        if self.signed_out {
            return effects;
        }
        if !online {
            self.offline = true;
            return effects;
        }
        self.attempt = self.attempt.saturating_add(1);
        self.failures = if worked {
            0
        } else {
            self.failures.saturating_add(1)
        };
        if self.failures >= FAILURES_BEFORE_POLLING {
            self.polling = true;
        }
        let delay = retry_delay(self.attempt, random);
        self.retry_at = Some(now + delay);
        effects.push(Effect::RetryIn(delay));
        effects
    }

    /// The retry timer fired.
    pub fn retry_due(&mut self, online: bool) -> Vec<Effect> {
        self.retry_at = None;
        if self.link != Link::Down {
            return Vec::new();
        }
        self.connect(online)
    }

    /// The heartbeat timer fired: a heartbeat still unanswered means the
    /// socket is dead.
    pub fn heartbeat_due(&mut self, now: f64, online: bool, random: f64) -> Vec<Effect> {
        if !self.is_open() {
            return Vec::new();
        }
        if self.heartbeat_pending.is_some() {
            let mut effects = vec![Effect::Close];
            effects.extend(self.closed(now, online, random));
            return effects;
        }
        self.send_heartbeat()
    }

    fn send_heartbeat(&mut self) -> Vec<Effect> {
        let msg_ref = self.next_ref();
        self.heartbeat_pending = Some(msg_ref.clone());
        let frame = Frame {
            join_ref: None,
            msg_ref: Some(msg_ref),
            topic: protocol::PHOENIX_TOPIC.into(),
            event: protocol::HEARTBEAT.into(),
            payload: serde_json::json!({}),
        };
        vec![Effect::Send(frame.encode(Vsn::V2))]
    }

    /// A text frame from the server.
    pub fn received(&mut self, text: &str, now: f64) -> Vec<Effect> {
        let Ok(raw) = RawFrame::decode(text) else {
            return Vec::new();
        };
        let frame = &raw.frame;
        self.last_activity = Some(now);
        // the first answer proves the socket works: live again
        if self.link == (Link::Open { answered: false }) {
            self.link = Link::Open { answered: true };
            self.attempt = 0;
            self.failures = 0;
            self.polling = false;
        }
        if let Some(effects) = self.room_received(frame) {
            return effects;
        }
        let mut effects = Vec::new();
        match frame.event.as_str() {
            protocol::REPLY
                if frame.topic == protocol::PHOENIX_TOPIC
                    && self.heartbeat_pending.is_some()
                    && self.heartbeat_pending.as_deref() == frame.msg_ref.as_deref() =>
            {
                self.heartbeat_pending = None;
            }
            protocol::REPLY if frame.topic == protocol::PHOENIX_TOPIC => {}
            protocol::REPLY => effects.extend(self.join_replied(&raw)),
            protocol::POSTGRES_CHANGES => {
                if let Ok(event) = raw.payload::<ChangeEvent>() {
                    effects.extend(self.accept(&frame.topic, event));
                }
            }
            protocol::SYSTEM => {
                let notice = raw
                    .payload::<SystemMessage>()
                    .ok()
                    .and_then(|message| message.threadline);
                match notice {
                    // changes may have been missed, or what the channel may
                    // see changed: refetch
                    Some(Notice::Reset { cursor } | Notice::RightsChanged { cursor }) => {
                        effects.extend(self.reset(&frame.topic, cursor));
                    }
                    Some(Notice::SignedOut | Notice::SessionExpired | Notice::AccountRemoved) => {
                        self.signed_out = true;
                    }
                    _ => {}
                }
            }
            protocol::CLOSE => {
                if let Some(channel) = self.channels.get_mut(&frame.topic) {
                    channel.joined = false;
                }
            }
            _ => {}
        }
        effects
    }

    fn join_replied(&mut self, raw: &RawFrame) -> Vec<Effect> {
        #[derive(serde::Deserialize)]
        struct Reply<'a> {
            status: &'a str,
            #[serde(borrow)]
            response: &'a serde_json::value::RawValue,
        }
        let frame = &raw.frame;
        let Some(channel) = self.channels.get_mut(&frame.topic) else {
            return Vec::new();
        };
        if channel.join_ref.is_none() || channel.join_ref != frame.msg_ref {
            return Vec::new();
        }
        let response = raw.payload::<Reply>().and_then(|reply| {
            let response = serde_json::from_str::<JoinResponse>(reply.response.get())?;
            Ok((reply.status, response))
        });
        match response {
            Ok(("ok", response)) => {
                channel.joined = true;
                let cursor = ChangeCursor::latest(channel.cursor, response.cursor);
                channel.cursor = Some(cursor);
                self.cursor = Some(ChangeCursor::latest(self.cursor, cursor));
                Vec::new()
            }
            _ => vec![Effect::Warn(format!(
                "realtime join of {} refused: {}",
                frame.topic, frame.payload["response"]["reason"]
            ))],
        }
    }

    /// Records a change for a channel; drops anything at or before its
    /// cursor (a change can arrive twice around a reconnect or a switch to
    /// polling).
    fn accept(&mut self, topic: &str, event: ChangeEvent) -> Vec<Effect> {
        let Some(channel) = self.channels.get_mut(topic) else {
            return Vec::new();
        };
        if channel
            .cursor
            .is_some_and(|c| c.stream == event.cursor.stream && event.cursor <= c)
        {
            return Vec::new();
        }
        channel.cursor = Some(event.cursor);
        self.cursor = Some(ChangeCursor::latest(self.cursor, event.cursor));
        vec![Effect::Deliver(
            topic.to_string(),
            RealtimeEvent::Change(Arc::new(event)),
        )]
    }

    /// Changes may have been missed: the channel refetches, then goes on from `cursor`.
    fn reset(&mut self, topic: &str, cursor: ChangeCursor) -> Vec<Effect> {
        let Some(channel) = self.channels.get_mut(topic) else {
            return Vec::new();
        };
        channel.cursor = Some(cursor);
        self.cursor = Some(ChangeCursor::latest(self.cursor, cursor));
        vec![Effect::Deliver(topic.to_string(), RealtimeEvent::Reset)]
    }

    /// The poll timer fired: while polling, ask for every channel's changes.
    pub fn poll_due(&mut self) -> Vec<Effect> {
        if !self.polling || self.poll_running || self.channels.is_empty() {
            return Vec::new();
        }
        self.poll_running = true;
        let channels = self
            .channels
            .iter()
            .map(|(topic, c)| PollChannel {
                topic: topic.clone(),
                bindings: vec![c.request.clone()],
                cursor: c.cursor,
            })
            .collect();
        vec![Effect::Poll(channels)]
    }

    /// A poll's answer.
    pub fn polled(&mut self, result: Result<Vec<PollResult>, String>, now: f64) -> Vec<Effect> {
        self.poll_running = false;
        self.poll_ok = result.is_ok();
        let Ok(results) = result else {
            return Vec::new();
        };
        self.last_activity = Some(now);
        let mut effects = Vec::new();
        let mut more = false;
        for result in results {
            more |= result.more;
            for payload in &result.events {
                if let Ok(event) = serde_json::from_str::<ChangeEvent>(payload) {
                    effects.extend(self.accept(&result.topic, event));
                }
            }
            let Some(channel) = self.channels.get_mut(&result.topic) else {
                continue;
            };
            let had_cursor = channel.cursor.is_some();
            let cursor = ChangeCursor::latest(channel.cursor, result.cursor);
            channel.cursor = Some(cursor);
            self.cursor = Some(ChangeCursor::latest(self.cursor, cursor));
            if result.reset && had_cursor {
                effects.push(Effect::Deliver(result.topic.clone(), RealtimeEvent::Reset));
            }
        }
        if more {
            effects.extend(self.poll_due());
        }
        effects
    }
}

/// Capped exponential backoff with jitter: attempt 1 waits 0.5 s (±50%),
/// each next one twice as long, never over 15 s.
pub fn retry_delay(attempt: u32, random: f64) -> f64 {
    let exponent = i32::try_from(attempt.saturating_sub(1).min(30)).unwrap_or(30);
    let ceiling = (FIRST_RETRY_MS * 2f64.powi(exponent)).min(MAX_RETRY_MS);
    ceiling * (0.5 + random.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn orders() -> Listen {
        Listen {
            table: "orders",
            event: "*",
            filter: None,
        }
    }

    pub(super) fn sent(effects: &[Effect]) -> Vec<Frame> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send(text) => Frame::decode(text, Vsn::V2).ok(),
                _ => None,
            })
            .collect()
    }

    fn delivered(effects: &[Effect]) -> Vec<RealtimeEvent> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Deliver(_, event) => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    fn change(topic: &str, cursor: ChangeCursor) -> String {
        Frame::new(
            topic,
            protocol::POSTGRES_CHANGES,
            json!({
                "ids": [1],
                "data": {"schema": "public", "table": "orders", "commit_timestamp": "2026-01-01T00:00:00Z",
                         "type": "INSERT", "columns": [], "record": {}, "errors": null},
                "cursor": cursor,
            }),
        )
        .encode(Vsn::V2)
    }

    /// A machine with one channel on a socket that works, and its topic.
    fn live(start: Option<ChangeCursor>) -> (Machine, String) {
        let mut machine = Machine::new(start);
        let (topic, effects) = machine.subscribe(&orders(), true);
        assert_eq!(effects, vec![Effect::Open]);
        let effects = machine.opened(0.0);
        let frames = sent(&effects);
        assert!(
            frames.iter().any(|f| f.event == protocol::JOIN),
            "joins on open"
        );
        // the server answers the join and the first heartbeat
        for frame in frames {
            let reply = frame.reply(
                "ok",
                json!({"postgres_changes": [], "cursor": start.unwrap_or_default()}),
            );
            machine.received(&reply.encode(Vsn::V2), 1.0);
        }
        assert_eq!(machine.status(), ConnectionStatus::Live);
        (machine, topic)
    }

    #[test]
    fn channels_join_from_the_page_cursor_and_rejoin_from_their_last_change() {
        let start = ChangeCursor::new(0x10, 0);
        let (mut machine, topic) = live(Some(start));
        machine.received(&change(&topic, ChangeCursor::new(0x20, 1)), 2.0);
        machine.closed(3.0, true, 0.5);
        machine.retry_due(true);
        let join = sent(&machine.opened(4.0))
            .into_iter()
            .find(|f| f.event == protocol::JOIN)
            .expect("joins again");
        assert_eq!(join.payload["cursor"], "00000000:20/1");
    }

    #[test]
    fn a_channel_added_while_the_page_hydrates_starts_from_the_page_cursor() {
        let start = ChangeCursor::new(0x10, 0);
        let (mut machine, topic) = live(Some(start));
        // the order page's stage change and the buyer's notification commit
        // together; the notification reaches an early channel first
        machine.received(&change(&topic, ChangeCursor::new(0x20, 1)), 2.0);
        let join_cursor = |machine: &mut Machine| {
            let (_, effects) = machine.subscribe(&orders(), true);
            sent(&effects)
                .into_iter()
                .find(|f| f.event == protocol::JOIN)
                .map(|join| join.payload["cursor"].clone())
        };
        assert_eq!(
            join_cursor(&mut machine),
            Some(json!("00000000:10/0")),
            "its data is the page's: it must get the stage change at 20/0 too"
        );
        machine.page_hydrated();
        assert_eq!(
            join_cursor(&mut machine),
            Some(json!("00000000:20/1")),
            "its data is fetched now"
        );
    }

    #[test]
    fn a_channel_dropped_before_its_join_reply_is_still_left() {
        let (mut machine, _) = live(None);
        let (topic, effects) = machine.subscribe(&orders(), true);
        assert!(sent(&effects).iter().any(|f| f.event == protocol::JOIN));
        // the page moved on before the server answered
        let leave = sent(&machine.unsubscribe(&topic));
        assert_eq!(leave.len(), 1);
        assert_eq!(leave[0].event, protocol::LEAVE);
        assert_eq!(leave[0].topic, topic);
        // a channel that never got to join (the socket is down) sends nothing
        machine.closed(5.0, true, 0.5);
        let (down, _) = machine.subscribe(&orders(), true);
        assert!(machine.unsubscribe(&down).is_empty());
    }

    #[test]
    fn a_change_at_or_before_the_cursor_is_dropped() {
        let (mut machine, topic) = live(Some(ChangeCursor::new(0x10, 0)));
        assert_eq!(
            delivered(&machine.received(&change(&topic, ChangeCursor::new(0x10, 0)), 2.0)).len(),
            0
        );
        assert_eq!(
            delivered(&machine.received(&change(&topic, ChangeCursor::new(0x11, 0)), 2.0)).len(),
            1
        );
        assert_eq!(
            delivered(&machine.received(&change(&topic, ChangeCursor::new(0x11, 0)), 2.0)).len(),
            0,
            "twice"
        );
    }

    #[test]
    fn a_reset_notice_makes_the_channel_refetch_and_go_on_from_its_cursor() {
        let (mut machine, topic) = live(Some(ChangeCursor::new(0x10, 0)));
        let notice = Frame::new(
            &topic,
            protocol::SYSTEM,
            json!({"status": "ok", "extension": "postgres_changes", "message": "refetch",
                   "threadline": {"notice": "reset", "cursor": "90/0"}}),
        );
        let effects = machine.received(&notice.encode(Vsn::V2), 2.0);
        assert!(matches!(
            delivered(&effects).as_slice(),
            [RealtimeEvent::Reset]
        ));
        assert!(
            delivered(&machine.received(&change(&topic, ChangeCursor::new(0x80, 0)), 3.0))
                .is_empty(),
            "older than the reset cursor"
        );
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_a_cap() {
        assert_eq!(retry_delay(1, 1.0), FIRST_RETRY_MS);
        assert_eq!(retry_delay(1, 0.0), FIRST_RETRY_MS / 2.0);
        assert_eq!(retry_delay(2, 1.0), 2.0 * FIRST_RETRY_MS);
        assert_eq!(retry_delay(3, 1.0), 4.0 * FIRST_RETRY_MS);
        assert_eq!(retry_delay(20, 1.0), MAX_RETRY_MS);
        assert_eq!(retry_delay(u32::MAX, 0.999), MAX_RETRY_MS * 0.9995);
        let mut machine = Machine::new(None);
        machine.subscribe(&orders(), true);
        assert_eq!(
            machine.closed(1000.0, true, 1.0),
            vec![Effect::RetryIn(500.0)]
        );
        assert_eq!(
            machine.status(),
            ConnectionStatus::Reconnecting {
                attempt: 1,
                retry_at: 1500.0
            }
        );
    }

    #[test]
    fn three_failed_attempts_switch_to_polling_with_the_same_cursors() {
        let mut machine = Machine::new(Some(ChangeCursor::new(0x10, 0)));
        let (topic, _) = machine.subscribe(&orders(), true);
        for _ in 0..2 {
            machine.closed(0.0, true, 0.5);
            assert!(machine.poll_due().is_empty(), "not polling yet");
            machine.retry_due(true);
        }
        machine.closed(0.0, true, 0.5);
        let effects = machine.poll_due();
        let [Effect::Poll(channels)] = effects.as_slice() else {
            panic!("polls after three failures: {effects:?}");
        };
        assert_eq!(channels[0].cursor, Some(ChangeCursor::new(0x10, 0)));
        assert_eq!(channels[0].topic, topic);
        // polling shows only once a poll got through
        assert!(matches!(
            machine.status(),
            ConnectionStatus::Reconnecting { attempt: 3, .. }
        ));
        let answer = PollResult {
            topic: topic.clone(),
            events: vec![],
            cursor: ChangeCursor::new(0x30, 0),
            reset: false,
            more: false,
        };
        machine.polled(Ok(vec![answer]), 5.0);
        assert_eq!(machine.status(), ConnectionStatus::Polling);
        assert_eq!(machine.last_activity(), Some(5.0));
    }

    #[test]
    fn polled_changes_are_delivered_once_and_move_the_cursor() {
        let (mut machine, topic) = live(Some(ChangeCursor::new(0x10, 0)));
        machine.received(&change(&topic, ChangeCursor::new(0x20, 0)), 1.0);
        let event = |cursor: ChangeCursor| {
            serde_json::to_string(&json!({
                "ids": [1],
                "data": {"schema": "public", "table": "orders", "commit_timestamp": "2026-01-01T00:00:00Z",
                         "type": "INSERT", "columns": [], "errors": null},
                "cursor": cursor,
            }))
            .unwrap_or_default()
        };
        let answer = PollResult {
            topic: topic.clone(),
            events: vec![
                event(ChangeCursor::new(0x20, 0)),
                event(ChangeCursor::new(0x21, 0)),
            ],
            cursor: ChangeCursor::new(0x22, 0),
            reset: false,
            more: false,
        };
        let effects = machine.polled(Ok(vec![answer]), 2.0);
        assert_eq!(
            delivered(&effects).len(),
            1,
            "the one already seen is dropped"
        );
        assert!(
            delivered(&machine.received(&change(&topic, ChangeCursor::new(0x21, 5)), 3.0))
                .is_empty(),
            "the poll's position counts too"
        );
    }

    #[test]
    fn the_first_frame_on_a_new_socket_means_live_again() {
        let mut machine = Machine::new(None);
        machine.subscribe(&orders(), true);
        for _ in 0..3 {
            machine.closed(0.0, true, 0.5);
            machine.retry_due(true);
        }
        machine.opened(1.0);
        assert_ne!(
            machine.status(),
            ConnectionStatus::Live,
            "open is not yet live"
        );
        let heartbeat_reply = Frame {
            join_ref: None,
            msg_ref: Some("999".into()),
            topic: protocol::PHOENIX_TOPIC.into(),
            event: protocol::REPLY.into(),
            payload: json!({"status": "ok", "response": {}}),
        };
        machine.received(&heartbeat_reply.encode(Vsn::V2), 2.0);
        assert_eq!(machine.status(), ConnectionStatus::Live);
        assert!(machine.poll_due().is_empty(), "polling stops");
    }

    #[test]
    fn an_unanswered_heartbeat_means_the_socket_is_dead() {
        let (mut machine, _) = live(None);
        let first = machine.heartbeat_due(10.0, true, 0.5);
        assert_eq!(sent(&first)[0].event, protocol::HEARTBEAT);
        let second = machine.heartbeat_due(20.0, true, 0.5);
        assert_eq!(second[0], Effect::Close);
        assert!(matches!(second[1], Effect::RetryIn(_)));
        assert!(matches!(
            machine.status(),
            ConnectionStatus::Reconnecting { attempt: 1, .. }
        ));
    }

    #[test]
    fn offline_waits_for_the_network_then_reconnects_at_once() {
        let (mut machine, _) = live(None);
        machine.went_offline();
        assert_eq!(machine.status(), ConnectionStatus::Offline);
        assert!(machine.retry_due(false).is_empty());
        assert_eq!(machine.status(), ConnectionStatus::Offline);
        assert_eq!(
            machine.retry_now(true),
            vec![Effect::CancelRetry, Effect::Open]
        );
        assert_eq!(machine.status(), ConnectionStatus::Connecting);
    }

    #[test]
    fn a_rights_change_refetches_and_the_end_of_the_session_stops_reconnecting() {
        let (mut machine, topic) = live(Some(ChangeCursor::new(0x10, 0)));
        let notice = |topic: &str, threadline: serde_json::Value| {
            Frame::new(
                topic,
                protocol::SYSTEM,
                json!({"status": "ok", "extension": "postgres_changes", "message": "", "threadline": threadline}),
            )
            .encode(Vsn::V2)
        };
        let effects = machine.received(
            &notice(
                &topic,
                json!({"notice": "rights_changed", "cursor": "20/0"}),
            ),
            1.0,
        );
        assert!(matches!(
            delivered(&effects).as_slice(),
            [RealtimeEvent::Reset]
        ));
        machine.received(
            &notice(protocol::PHOENIX_TOPIC, json!({"notice": "signed_out"})),
            2.0,
        );
        assert!(machine.closed(3.0, true, 0.5).is_empty(), "no retry");
        assert_eq!(machine.status(), ConnectionStatus::SignedOut);
        assert!(machine.retry_now(true).is_empty());
        // signing in again: the next subscription connects
        let (_, effects) = machine.subscribe(&orders(), true);
        assert!(effects.contains(&Effect::Open));
    }

    #[test]
    fn leaving_a_joined_channel_tells_the_server() {
        let (mut machine, topic) = live(None);
        let effects = machine.unsubscribe(&topic);
        assert_eq!(sent(&effects)[0].event, protocol::LEAVE);
        assert!(machine.unsubscribe(&topic).is_empty());
    }
}
