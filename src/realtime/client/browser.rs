//! The connection itself (browser only): a state machine over one
//! `WebSocket`, driven by socket callbacks, timers and window events.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use super::{ConnectionStatus, Listen, RealtimeEvent};
use crate::realtime::cursor::ChangeCursor;
use crate::realtime::poll::{PollChannel, poll_changes};
use crate::realtime::protocol::{
    self, ChangeEvent, Frame, JoinConfig, JoinPayload, JoinResponse, Notice,
    PostgresChangesRequest, SystemMessage, Vsn,
};

const HEARTBEAT: Duration = Duration::from_secs(15);
const FIRST_RETRY_MS: f64 = 500.0;
const MAX_RETRY_MS: f64 = 15_000.0;
/// Socket failures in a row before changes come by polling meanwhile.
const FAILURES_BEFORE_POLLING: u32 = 3;
const POLL_EVERY: Duration = Duration::from_secs(2);

type Listener = Rc<dyn Fn(&RealtimeEvent)>;

struct ChannelState {
    request: PostgresChangesRequest,
    listener: Listener,
    /// The last change this channel has (or the position it joined at).
    cursor: Option<ChangeCursor>,
    join_ref: Option<String>,
    joined: bool,
}

struct Socket {
    ws: WebSocket,
    open: bool,
    /// Whether the server ever answered: a socket that opens and closes
    /// without a word (a proxy refusing the upgrade late) counts as failed.
    answered: bool,
    // the callbacks must live as long as the socket
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

struct State {
    status: RwSignal<ConnectionStatus>,
    last_activity: RwSignal<Option<f64>>,
    socket: Option<Socket>,
    channels: BTreeMap<String, ChannelState>,
    /// The newest cursor seen on any channel: new channels resume from it.
    cursor: Option<ChangeCursor>,
    next_ref: u64,
    next_topic: u64,
    heartbeat_pending: Option<String>,
    attempt: u32,
    failures: u32,
    retry: Option<TimeoutHandle>,
    polling: bool,
    poll_running: bool,
    /// Whether the last poll got through (only then is the page "polling").
    poll_ok: bool,
    /// When the next socket attempt is due (ms since the epoch).
    retry_at: f64,
    started: bool,
}

/// Deliveries are made after the state is released, so a listener may
/// subscribe or unsubscribe.
type Deliveries = Vec<(Listener, RealtimeEvent)>;

#[derive(Clone)]
pub(super) struct Connection {
    state: Rc<RefCell<State>>,
}

fn now() -> f64 {
    js_sys::Date::now()
}

impl Connection {
    pub(super) fn new(
        status: RwSignal<ConnectionStatus>,
        last_activity: RwSignal<Option<f64>>,
        start: Option<ChangeCursor>,
    ) -> Connection {
        Connection {
            state: Rc::new(RefCell::new(State {
                status,
                last_activity,
                socket: None,
                channels: BTreeMap::new(),
                cursor: start,
                next_ref: 1,
                next_topic: 1,
                heartbeat_pending: None,
                attempt: 0,
                failures: 0,
                retry: None,
                polling: false,
                poll_running: false,
                poll_ok: false,
                retry_at: 0.0,
                started: false,
            })),
        }
    }

    /// Timers and window listeners, once, on the first subscription.
    fn start(&self) {
        if std::mem::replace(&mut self.state.borrow_mut().started, true) {
            return;
        }
        let this = self.clone();
        let _ = set_interval_with_handle(move || this.heartbeat(), HEARTBEAT);
        let this = self.clone();
        let _ = set_interval_with_handle(move || this.poll_tick(), POLL_EVERY);
        let this = self.clone();
        window_event_listener(leptos::ev::online, move |_| this.retry_now());
        let this = self.clone();
        window_event_listener(leptos::ev::offline, move |_| this.went_offline());
        let this = self.clone();
        window_event_listener(leptos::ev::focus, move |_| this.nudge());
        let this = self.clone();
        window_event_listener_untyped("visibilitychange", move |_| {
            let visible = document().visibility_state() == web_sys::VisibilityState::Visible;
            if visible {
                this.nudge();
            }
        });
        self.connect();
    }

    pub(super) fn subscribe(
        &self,
        listen: &Listen,
        listener: Box<dyn Fn(&RealtimeEvent)>,
    ) -> String {
        let topic = {
            let mut state = self.state.borrow_mut();
            let topic = format!("realtime:{}-{}", listen.table, state.next_topic);
            state.next_topic += 1;
            let channel = ChannelState {
                request: PostgresChangesRequest {
                    event: listen.event.to_string(),
                    schema: "public".into(),
                    table: Some(listen.table.to_string()),
                    filter: listen.filter.clone(),
                },
                listener: Rc::from(listener),
                cursor: state.cursor,
                join_ref: None,
                joined: false,
            };
            state.channels.insert(topic.clone(), channel);
            topic
        };
        self.start();
        self.ensure_connecting();
        self.join(&topic);
        topic
    }

    /// A new subscription while no socket is open and no retry is pending
    /// (after signing out and in again, say) opens one.
    fn ensure_connecting(&self) {
        let idle = {
            let state = self.state.borrow();
            state.socket.is_none() && state.retry.is_none()
        };
        if idle {
            self.connect();
        }
    }

    /// Closes the socket (on sign-out: it was authenticated as the previous
    /// user). The page's cursor stays: it is a position in the change stream,
    /// not anyone's data, so whoever signs in next joins from it and misses
    /// nothing committed while their pages load.
    pub(super) fn disconnect(&self) {
        let mut state = self.state.borrow_mut();
        state.socket = None;
        state.retry = None;
        state.attempt = 0;
        state.failures = 0;
        state.polling = false;
        state.heartbeat_pending = None;
        state.status.set(ConnectionStatus::Connecting);
    }

    pub(super) fn unsubscribe(&self, topic: &str) {
        let mut state = self.state.borrow_mut();
        if let Some(channel) = state.channels.remove(topic)
            && channel.joined
        {
            let frame = Frame {
                join_ref: channel.join_ref,
                msg_ref: Some(next_ref(&mut state)),
                topic: topic.to_string(),
                event: protocol::LEAVE.into(),
                payload: serde_json::json!({}),
            };
            send(&state, &frame);
        }
    }

    /// Reconnects now if not connected (the "retry now" button, `online`).
    pub(super) fn retry_now(&self) {
        {
            let mut state = self.state.borrow_mut();
            if state.socket.is_some() {
                return;
            }
            state.retry = None;
        }
        self.connect();
    }

    /// Focus and visibility: reconnect at once if the socket is down.
    fn nudge(&self) {
        let connected = self.state.borrow().socket.is_some();
        if !connected && self.state.borrow().started {
            self.retry_now();
        }
    }

    fn went_offline(&self) {
        let mut state = self.state.borrow_mut();
        state.status.set(ConnectionStatus::Offline);
        state.socket = None;
        state.retry = None;
    }

    fn url() -> Option<String> {
        let location = window().location();
        let scheme = if location.protocol().ok()? == "https:" {
            "wss"
        } else {
            "ws"
        };
        Some(format!(
            "{scheme}://{}/realtime/v1/websocket?vsn=2.0.0",
            location.host().ok()?
        ))
    }

    fn connect(&self) {
        if !window().navigator().on_line() {
            self.state.borrow().status.set(ConnectionStatus::Offline);
            return;
        }
        let Some(url) = Self::url() else { return };
        let Ok(ws) = WebSocket::new(&url) else {
            self.closed();
            return;
        };
        let this = self.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || this.opened());
        let this = self.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            if let Some(text) = event.data().as_string() {
                this.received(&text);
            }
        });
        let this = self.clone();
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |_| this.closed());
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let mut state = self.state.borrow_mut();
        if state.attempt == 0 && !state.polling {
            state.status.set(ConnectionStatus::Connecting);
        }
        // a socket being replaced must not report its own close
        state.socket = None;
        state.socket = Some(Socket {
            ws,
            open: false,
            answered: false,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        });
    }

    fn opened(&self) {
        let topics: Vec<String> = {
            let mut state = self.state.borrow_mut();
            if let Some(socket) = state.socket.as_mut() {
                socket.open = true;
            }
            state.heartbeat_pending = None;
            state.last_activity.set(Some(now()));
            for channel in state.channels.values_mut() {
                channel.joined = false;
            }
            state.channels.keys().cloned().collect()
        };
        for topic in topics {
            self.join(&topic);
        }
        // an immediate heartbeat proves the link even with no channels
        self.heartbeat();
    }

    fn join(&self, topic: &str) {
        let mut state = self.state.borrow_mut();
        if !state.socket.as_ref().is_some_and(|s| s.open) {
            return;
        }
        let msg_ref = next_ref(&mut state);
        let Some(channel) = state.channels.get_mut(topic) else {
            return;
        };
        channel.join_ref = Some(msg_ref.clone());
        let payload = JoinPayload {
            config: JoinConfig {
                postgres_changes: vec![channel.request.clone()],
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
        send(&state, &frame);
    }

    /// The socket closed or failed: back off and retry; after repeated
    /// failures, poll meanwhile.
    fn closed(&self) {
        let mut state = self.state.borrow_mut();
        let worked = state.socket.as_ref().is_some_and(|s| s.open && s.answered);
        state.socket = None;
        state.heartbeat_pending = None;
        for channel in state.channels.values_mut() {
            channel.joined = false;
        }
        if !window().navigator().on_line() {
            state.status.set(ConnectionStatus::Offline);
            return;
        }
        state.attempt += 1;
        if worked {
            state.failures = 0;
        } else {
            state.failures += 1;
        }
        if state.failures >= FAILURES_BEFORE_POLLING {
            state.polling = true;
        }
        let ceiling =
            (FIRST_RETRY_MS * 2f64.powi(state.attempt.saturating_sub(1) as i32)).min(MAX_RETRY_MS);
        let delay = ceiling * (0.5 + js_sys::Math::random() / 2.0);
        let retry_at = now() + delay;
        state.retry_at = retry_at;
        state.status.set(if state.polling && state.poll_ok {
            ConnectionStatus::Polling
        } else {
            ConnectionStatus::Reconnecting {
                attempt: state.attempt,
                retry_at,
            }
        });
        let this = self.clone();
        state.retry = set_timeout_with_handle(
            move || {
                this.state.borrow_mut().retry = None;
                this.connect();
            },
            Duration::from_millis(delay as u64),
        )
        .ok();
    }

    /// Sends a heartbeat; one still unanswered means the socket is dead.
    fn heartbeat(&self) {
        let dead = {
            let mut state = self.state.borrow_mut();
            if !state.socket.as_ref().is_some_and(|s| s.open) {
                return;
            }
            if state.heartbeat_pending.is_some() {
                true
            } else {
                let msg_ref = next_ref(&mut state);
                state.heartbeat_pending = Some(msg_ref.clone());
                let frame = Frame {
                    join_ref: None,
                    msg_ref: Some(msg_ref),
                    topic: protocol::PHOENIX_TOPIC.into(),
                    event: protocol::HEARTBEAT.into(),
                    payload: serde_json::json!({}),
                };
                send(&state, &frame);
                false
            }
        };
        if dead {
            self.closed();
        }
    }

    fn received(&self, text: &str) {
        let Ok(frame) = Frame::decode(text, Vsn::V2) else {
            return;
        };
        let mut deliveries: Deliveries = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            state.last_activity.set(Some(now()));
            // The first answer proves the socket works: live again.
            if let Some(socket) = state.socket.as_mut()
                && !socket.answered
            {
                socket.answered = true;
                state.attempt = 0;
                state.failures = 0;
                state.polling = false;
                state.status.set(ConnectionStatus::Live);
            }
            match frame.event.as_str() {
                protocol::REPLY
                    if frame.topic == protocol::PHOENIX_TOPIC
                        && state.heartbeat_pending.as_deref() == frame.msg_ref.as_deref() =>
                {
                    state.heartbeat_pending = None;
                }
                protocol::REPLY => {
                    if let Some(channel) = state.channels.get_mut(&frame.topic)
                        && channel.join_ref.is_some()
                        && channel.join_ref == frame.msg_ref
                    {
                        match serde_json::from_value::<JoinResponse>(
                            frame.payload["response"].clone(),
                        ) {
                            Ok(response) if frame.payload["status"] == "ok" => {
                                channel.joined = true;
                                channel.cursor = Some(
                                    channel
                                        .cursor
                                        .map_or(response.cursor, |c| c.max(response.cursor)),
                                );
                                state.cursor = state.cursor.max(channel.cursor);
                            }
                            _ => leptos::logging::warn!(
                                "realtime join of {} refused: {}",
                                frame.topic,
                                frame.payload["response"]["reason"]
                            ),
                        }
                    }
                }
                protocol::POSTGRES_CHANGES => {
                    if let Ok(event) = serde_json::from_value::<ChangeEvent>(frame.payload)
                        && let Some(delivery) = accept(state, &frame.topic, event)
                    {
                        deliveries.push(delivery);
                    }
                }
                protocol::SYSTEM => {
                    if let Ok(message) = serde_json::from_value::<SystemMessage>(frame.payload)
                        && let Some(Notice::Reset { cursor }) = message.threadline
                        && let Some(channel) = state.channels.get_mut(&frame.topic)
                    {
                        channel.cursor = Some(cursor);
                        state.cursor = state.cursor.max(Some(cursor));
                        deliveries.push((channel.listener.clone(), RealtimeEvent::Reset));
                    }
                }
                protocol::CLOSE => {
                    if let Some(channel) = state.channels.get_mut(&frame.topic) {
                        channel.joined = false;
                    }
                }
                _ => {}
            }
        }
        deliver(deliveries);
    }

    /// While polling: fetch changes since each channel's cursor.
    fn poll_tick(&self) {
        let channels: Vec<PollChannel> = {
            let mut state = self.state.borrow_mut();
            if !state.polling || state.poll_running || state.channels.is_empty() {
                return;
            }
            state.poll_running = true;
            state
                .channels
                .iter()
                .map(|(topic, c)| PollChannel {
                    topic: topic.clone(),
                    bindings: vec![c.request.clone()],
                    cursor: c.cursor,
                })
                .collect()
        };
        let this = self.clone();
        leptos::task::spawn_local(async move {
            let result = poll_changes(channels).await;
            let mut again = false;
            let mut deliveries: Deliveries = Vec::new();
            {
                let mut state = this.state.borrow_mut();
                state.poll_running = false;
                let live = state.socket.as_ref().is_some_and(|s| s.answered);
                state.poll_ok = result.is_ok();
                if !live && state.polling {
                    state.status.set(if state.poll_ok {
                        ConnectionStatus::Polling
                    } else {
                        ConnectionStatus::Reconnecting {
                            attempt: state.attempt,
                            retry_at: state.retry_at,
                        }
                    });
                }
                if let Ok(results) = result {
                    state.last_activity.set(Some(now()));
                    for result in results {
                        again |= result.more;
                        for payload in &result.events {
                            if let Ok(event) = serde_json::from_str::<ChangeEvent>(payload)
                                && let Some(delivery) = accept(&mut state, &result.topic, event)
                            {
                                deliveries.push(delivery);
                            }
                        }
                        let state = &mut *state;
                        if let Some(channel) = state.channels.get_mut(&result.topic) {
                            let had_cursor = channel.cursor.is_some();
                            channel.cursor = Some(
                                channel
                                    .cursor
                                    .map_or(result.cursor, |c| c.max(result.cursor)),
                            );
                            state.cursor = state.cursor.max(channel.cursor);
                            if result.reset && had_cursor {
                                deliveries.push((channel.listener.clone(), RealtimeEvent::Reset));
                            }
                        }
                    }
                }
            }
            deliver(deliveries);
            if again {
                this.poll_tick();
            }
        });
    }
}

/// Records a change for a channel; skips anything at or before its cursor
/// (a change can arrive twice around a reconnect or a switch to polling).
fn accept(state: &mut State, topic: &str, event: ChangeEvent) -> Option<(Listener, RealtimeEvent)> {
    let channel = state.channels.get_mut(topic)?;
    if channel.cursor.is_some_and(|c| event.cursor <= c) {
        return None;
    }
    channel.cursor = Some(event.cursor);
    state.cursor = state.cursor.max(Some(event.cursor));
    Some((
        channel.listener.clone(),
        RealtimeEvent::Change(Arc::new(event)),
    ))
}

fn deliver(deliveries: Deliveries) {
    for (listener, event) in deliveries {
        listener(&event);
    }
}

fn next_ref(state: &mut State) -> String {
    let r = state.next_ref.to_string();
    state.next_ref += 1;
    r
}

fn send(state: &State, frame: &Frame) {
    if let Some(socket) = state.socket.as_ref().filter(|s| s.open) {
        let _ = socket.ws.send_with_str(&frame.encode(Vsn::V2));
    }
}
