//! The browser half of the connection: wires the `WebSocket`, timers and
//! window events to the [`Machine`] and does the effects it returns. All
//! decisions live in the machine.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use super::machine::{Effect, HEARTBEAT_MS, Machine, POLL_EVERY_MS, RoomEvent, room_topic};
use super::{ConnectionStatus, Listen, RealtimeEvent};
use crate::cursor::ChangeCursor;
use crate::poll::{PollChannel, PollResult};

thread_local! {
    /// Whether the page has hydrated (see [`super::page_hydrated`]).
    static HYDRATED: Cell<bool> = const { Cell::new(false) };
}

pub(super) fn page_hydrated() {
    HYDRATED.set(true);
}

type Listener = Rc<dyn Fn(&RealtimeEvent)>;
type RoomListener = Rc<dyn Fn(&RoomEvent)>;

pub(super) type PollFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<PollResult>, String>>>>;
/// Asks the app's server for changes after the channels' cursors.
pub(super) type Poller = Rc<dyn Fn(Vec<PollChannel>) -> PollFuture>;

struct Socket {
    ws: WebSocket,
    // the callbacks must live as long as the socket
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        // a socket being replaced or closed by us must not report its own close
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

struct Inner {
    machine: Machine,
    socket: Option<Socket>,
    retry: Option<TimeoutHandle>,
    listeners: HashMap<String, Listener>,
    /// The components in each room (by topic), with their listener ids.
    room_listeners: HashMap<String, Vec<(u64, RoomListener)>>,
    timers_started: bool,
    status: RwSignal<ConnectionStatus>,
    last_activity: RwSignal<Option<f64>>,
    poll: Poller,
}

#[derive(Clone)]
pub(super) struct Connection {
    inner: Rc<RefCell<Inner>>,
}

fn now() -> f64 {
    js_sys::Date::now()
}

fn online() -> bool {
    window().navigator().on_line()
}

impl Connection {
    pub(super) fn new(
        status: RwSignal<ConnectionStatus>,
        last_activity: RwSignal<Option<f64>>,
        start: Option<ChangeCursor>,
        poll: Poller,
    ) -> Connection {
        Connection {
            inner: Rc::new(RefCell::new(Inner {
                machine: Machine::new(start),
                socket: None,
                retry: None,
                listeners: HashMap::new(),
                room_listeners: HashMap::new(),
                timers_started: false,
                status,
                last_activity,
                poll,
            })),
        }
    }

    /// Runs one input through the machine, then its effects, then shows the status.
    fn input(&self, step: impl FnOnce(&mut Machine) -> Vec<Effect>) {
        let effects = step(&mut self.inner.borrow_mut().machine);
        self.run_all(effects);
    }

    fn run_all(&self, effects: Vec<Effect>) {
        for effect in effects {
            self.run(effect);
        }
        let inner = self.inner.borrow();
        let status = inner.machine.status();
        if inner.status.get_untracked() != status {
            inner.status.set(status);
        }
        let activity = inner.machine.last_activity();
        if inner.last_activity.get_untracked() != activity {
            inner.last_activity.set(activity);
        }
    }

    fn run(&self, effect: Effect) {
        match effect {
            Effect::Open => self.open(),
            Effect::Close => self.inner.borrow_mut().socket = None,
            Effect::Send(text) => {
                if let Some(socket) = &self.inner.borrow().socket {
                    let _ = socket.ws.send_with_str(&text);
                }
            }
            Effect::RetryIn(delay) => {
                let this = self.clone();
                let handle = set_timeout_with_handle(
                    move || this.input(|m| m.retry_due(online())),
                    Duration::from_millis(delay.max(0.0) as u64),
                );
                self.inner.borrow_mut().retry = handle.ok();
            }
            Effect::CancelRetry => {
                if let Some(handle) = self.inner.borrow_mut().retry.take() {
                    handle.clear();
                }
            }
            Effect::Poll(channels) => {
                let request = (self.inner.borrow().poll)(channels);
                let this = self.clone();
                leptos::task::spawn_local(async move {
                    let result = request.await;
                    this.input(|m| m.polled(result, now()));
                });
            }
            Effect::Deliver(topic, event) => {
                // called with nothing borrowed: a listener may (un)subscribe
                let listener = self.inner.borrow().listeners.get(&topic).cloned();
                if let Some(listener) = listener {
                    listener(&event);
                }
            }
            Effect::Room(topic, event) => {
                // called with nothing borrowed: a listener may leave the room
                let listeners: Vec<RoomListener> = self
                    .inner
                    .borrow()
                    .room_listeners
                    .get(&topic)
                    .map(|all| all.iter().map(|(_, l)| l.clone()).collect())
                    .unwrap_or_default();
                for listener in listeners {
                    listener(&event);
                }
            }
            Effect::Warn(message) => leptos::logging::warn!("{message}"),
        }
    }

    /// Timers and window listeners, once, on the first subscription.
    fn start_timers(&self) {
        if std::mem::replace(&mut self.inner.borrow_mut().timers_started, true) {
            return;
        }
        let this = self.clone();
        let _ = set_interval_with_handle(
            move || this.input(|m| m.heartbeat_due(now(), online(), js_sys::Math::random())),
            Duration::from_millis(HEARTBEAT_MS as u64),
        );
        let this = self.clone();
        let _ = set_interval_with_handle(
            move || this.input(Machine::poll_due),
            Duration::from_millis(POLL_EVERY_MS as u64),
        );
        let this = self.clone();
        window_event_listener(leptos::ev::online, move |_| {
            this.input(|m| m.retry_now(true))
        });
        let this = self.clone();
        window_event_listener(leptos::ev::offline, move |_| {
            this.input(Machine::went_offline)
        });
        let this = self.clone();
        window_event_listener(leptos::ev::focus, move |_| {
            this.input(|m| m.nudge(online()))
        });
        let this = self.clone();
        window_event_listener_untyped("visibilitychange", move |_| {
            if document().visibility_state() == web_sys::VisibilityState::Visible {
                this.input(|m| m.nudge(online()));
            }
        });
    }

    pub(super) fn subscribe(
        &self,
        listen: &Listen,
        listener: Box<dyn Fn(&RealtimeEvent)>,
    ) -> String {
        self.start_timers();
        let mut topic = String::new();
        self.input(|m| {
            if HYDRATED.get() {
                m.page_hydrated();
            }
            let (new_topic, effects) = m.subscribe(listen, online());
            topic = new_topic;
            effects
        });
        self.inner
            .borrow_mut()
            .listeners
            .insert(topic.clone(), Rc::from(listener));
        topic
    }

    pub(super) fn unsubscribe(&self, topic: &str) {
        self.inner.borrow_mut().listeners.remove(topic);
        self.input(|m| m.unsubscribe(topic));
    }

    /// A component joins a room; returns its listener id.
    pub(super) fn join_room(&self, room: &str, listener: Box<dyn Fn(&RoomEvent)>) -> u64 {
        self.start_timers();
        // the listener is in place before the machine's effects run: a
        // newcomer hears who is here at once
        let effects = {
            let mut inner = self.inner.borrow_mut();
            let (id, effects) = inner.machine.join_room(room, online());
            inner
                .room_listeners
                .entry(room_topic(room))
                .or_default()
                .push((id, Rc::from(listener)));
            effects
        };
        self.run_all(effects);
        // the id is the last one pushed for this room
        self.inner
            .borrow()
            .room_listeners
            .get(&room_topic(room))
            .and_then(|all| all.last().map(|(id, _)| *id))
            .unwrap_or_default()
    }

    pub(super) fn leave_room(&self, room: &str, id: u64) {
        if let Some(all) = self
            .inner
            .borrow_mut()
            .room_listeners
            .get_mut(&room_topic(room))
        {
            all.retain(|(other, _)| *other != id);
        }
        self.input(|m| m.leave_room(id));
    }

    pub(super) fn track(&self, room: &str, meta: serde_json::Value) {
        self.input(|m| m.track(room, meta));
    }

    pub(super) fn broadcast(&self, room: &str, event: &str, payload: serde_json::Value) {
        self.input(|m| m.broadcast(room, event, payload));
    }

    /// Reconnects now if not connected (the "retry now" button).
    pub(super) fn retry_now(&self) {
        self.input(|m| m.retry_now(online()));
    }

    /// Closes the socket: it speaks for the user who signed out.
    pub(super) fn disconnect(&self) {
        self.input(Machine::disconnect);
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

    fn open(&self) {
        let ws = Self::url().and_then(|url| WebSocket::new(&url).ok());
        let Some(ws) = ws else {
            let this = self.clone();
            // report the failure after this input is done
            leptos::task::spawn_local(async move {
                this.input(|m| m.closed(now(), online(), js_sys::Math::random()));
            });
            return;
        };
        let this = self.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || this.input(|m| m.opened(now())));
        let this = self.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            if let Some(text) = event.data().as_string() {
                this.input(|m| m.received(&text, now()));
            }
        });
        let this = self.clone();
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |_| {
            this.inner.borrow_mut().socket = None;
            this.input(|m| m.closed(now(), online(), js_sys::Math::random()));
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        self.inner.borrow_mut().socket = Some(Socket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        });
    }
}
