//! The browser's side of realtime: one WebSocket per page shared by every
//! subscription, with heartbeats, reconnection with backoff (and at once on
//! `online`, `focus` and visibility), resume from cursors, and a polling
//! fallback over the same cursors. Components use [`use_realtime`]; on the
//! server (SSR) it does nothing and pages render from their resources.
//!
//! The connection's decisions are a pure state machine ([`machine`]); the
//! browser half (`browser`, feature `browser`) only wires the socket,
//! timers and window events to it.

use std::sync::Arc;

use leptos::prelude::*;

use crate::cursor::ChangeCursor;
use crate::poll::{PollChannel, PollResult};
use crate::protocol::ChangeEvent;

#[cfg(feature = "browser")]
mod browser;
pub mod machine;

pub use machine::{Present, RoomEvent};

/// How the page is connected to live updates.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnectionStatus {
    /// Opening the socket for the first time.
    Connecting,
    /// Subscribed over the WebSocket.
    Live,
    /// The socket dropped; the next try is at `retry_at` (ms since the epoch).
    Reconnecting { attempt: u32, retry_at: f64 },
    /// The socket cannot be held; changes come by polling (nothing is lost).
    Polling,
    /// The browser says it has no network.
    Offline,
    /// The server closed the connection because the session it spoke for
    /// ended (signed out elsewhere, expired, account removed): sign in again.
    SignedOut,
}

impl ConnectionStatus {
    /// A short name for styles and tests.
    pub fn key(&self) -> &'static str {
        match self {
            ConnectionStatus::Connecting => "connecting",
            ConnectionStatus::Live => "live",
            ConnectionStatus::Reconnecting { .. } => "reconnecting",
            ConnectionStatus::Polling => "polling",
            ConnectionStatus::Offline => "offline",
            ConnectionStatus::SignedOut => "signed-out",
        }
    }
}

/// A table the app publishes, as it names it (the app's own enum of them).
pub trait RealtimeTable {
    fn name(&self) -> &'static str;
}

/// What a component listens to: a table, an event (`*`, `INSERT`,
/// `UPDATE`, `DELETE`) and an optional filter (`column=op.value`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    pub table: &'static str,
    pub event: &'static str,
    pub filter: Option<String>,
}

impl Listen {
    pub fn table(table: impl RealtimeTable) -> Listen {
        Listen {
            table: table.name(),
            event: "*",
            filter: None,
        }
    }

    pub fn event(mut self, event: &'static str) -> Listen {
        self.event = event;
        self
    }

    pub fn filter(mut self, filter: impl Into<String>) -> Listen {
        self.filter = Some(filter.into());
        self
    }
}

/// What a subscription hears.
#[derive(Clone, Debug, PartialEq)]
pub enum RealtimeEvent {
    Change(Arc<ChangeEvent>),
    /// Changes may have been missed (the page was away too long): refetch.
    Reset,
}

impl RealtimeEvent {
    /// Whether the row left the subscription: deleted, or moved to owners
    /// the subscriber may not see.
    pub fn is_delete(&self) -> bool {
        matches!(self, RealtimeEvent::Change(event) if event.data.kind == crate::protocol::ChangeKind::Delete)
    }

    /// The `client_mutation_id` of the changed row, if any: how an
    /// optimistic update recognizes its own confirmation.
    pub fn mutation_id(&self) -> Option<uuid::Uuid> {
        match self {
            RealtimeEvent::Change(event) => event
                .data
                .record
                .as_ref()?
                .get("client_mutation_id")?
                .as_str()?
                .parse()
                .ok(),
            RealtimeEvent::Reset => None,
        }
    }
}

/// A subscription's signals. `version` counts changes and resets: use it as
/// a resource source so each change refetches exactly that resource.
#[derive(Clone, Copy)]
pub struct RealtimeHandle {
    pub version: ReadSignal<u64>,
    pub last: ReadSignal<Option<RealtimeEvent>>,
}

/// The page's realtime connection, in context.
#[derive(Clone, Copy)]
pub struct RealtimeClient {
    pub status: RwSignal<ConnectionStatus>,
    /// When the last change or heartbeat reply arrived (ms since the epoch).
    pub last_activity: RwSignal<Option<f64>>,
    #[cfg(feature = "browser")]
    inner: StoredValue<browser::Connection, LocalStorage>,
}

impl RealtimeClient {
    /// Tries to reconnect now instead of waiting for the next retry.
    pub fn retry_now(&self) {
        #[cfg(feature = "browser")]
        self.inner.with_value(|connection| connection.retry_now());
    }

    /// Closes the socket (it speaks for the user who signed out).
    pub fn disconnect(&self) {
        #[cfg(feature = "browser")]
        self.inner.with_value(|connection| connection.disconnect());
    }
}

/// Provides the page's connection. `start` is the newest change cursor the
/// server knew before it fetched the page's data: subscriptions resume from
/// it, so nothing committed between rendering and subscribing is missed.
/// `poll` asks the app's server for changes while the socket cannot be held
/// (the app serves it with [`Realtime::poll`](crate::engine::Realtime::poll)).
pub fn provide_realtime<F>(
    start: Option<ChangeCursor>,
    poll: impl Fn(Vec<PollChannel>) -> F + 'static,
) -> RealtimeClient
where
    F: std::future::Future<Output = Result<Vec<PollResult>, String>> + 'static,
{
    let status = RwSignal::new(ConnectionStatus::Connecting);
    let last_activity = RwSignal::new(None);
    #[cfg(not(feature = "browser"))]
    let _ = (start, poll);
    let client = RealtimeClient {
        status,
        last_activity,
        #[cfg(feature = "browser")]
        inner: StoredValue::new_local(browser::Connection::new(
            status,
            last_activity,
            start,
            std::rc::Rc::new(move |channels| Box::pin(poll(channels)) as browser::PollFuture),
        )),
    };
    provide_context(client);
    client
}

pub fn use_connection() -> Option<RealtimeClient> {
    use_context::<RealtimeClient>()
}

/// Says the page has hydrated. Until then a new subscription starts from the
/// cursor the page was rendered at (its component shows the server-rendered
/// data, whatever other subscriptions have received meanwhile); from then on
/// from the newest change the page has seen (its data is fetched after
/// that). Call it once hydration is over; without it subscriptions always
/// start from the page's cursor, which loses nothing but replays more.
pub fn page_hydrated() {
    #[cfg(feature = "browser")]
    browser::page_hydrated();
}

/// Subscribes the calling component to changes; unsubscribes when it is
/// cleaned up. `on_event` runs for each change (and each reset).
pub fn use_realtime(listen: Listen, on_event: impl Fn(&RealtimeEvent) + 'static) -> RealtimeHandle {
    let (version, set_version) = signal(0u64);
    let (last, set_last) = signal(None::<RealtimeEvent>);
    #[cfg(feature = "browser")]
    if let Some(client) = use_connection() {
        let topic = client.inner.with_value(|connection| {
            connection.subscribe(
                &listen,
                Box::new(move |event: &RealtimeEvent| {
                    on_event(event);
                    set_last.set(Some(event.clone()));
                    set_version.update(|v| *v += 1);
                }),
            )
        });
        on_cleanup(move || {
            client
                .inner
                .try_with_value(|connection| connection.unsubscribe(&topic));
        });
    }
    #[cfg(not(feature = "browser"))]
    let _ = (listen, on_event, set_version, set_last);
    RealtimeHandle { version, last }
}

/// A room the component is in (Broadcast and Presence on the page's one
/// socket): who is here, and ways to speak in it.
#[derive(Clone, Copy)]
pub struct RoomHandle {
    /// The people in the room, one entry each (yourself too, once tracked).
    pub present: ReadSignal<Vec<Present>>,
    /// The server closed the room for this user.
    pub closed: ReadSignal<bool>,
    room: StoredValue<String>,
    client: Option<RealtimeClient>,
}

impl RoomHandle {
    /// Shows this page in the room with `meta` (kept, and shown again after
    /// every reconnect).
    pub fn track(&self, meta: serde_json::Value) {
        #[cfg(feature = "browser")]
        if let Some(client) = self.client {
            let room = self.room.get_value();
            client
                .inner
                .with_value(|connection| connection.track(&room, meta));
        }
        #[cfg(not(feature = "browser"))]
        let _ = (meta, self.client, self.room);
    }

    /// Tells the room's other members `event` (dropped while disconnected:
    /// broadcasts are about now).
    pub fn send(&self, event: &str, payload: serde_json::Value) {
        #[cfg(feature = "browser")]
        if let Some(client) = self.client {
            let room = self.room.get_value();
            client
                .inner
                .with_value(|connection| connection.broadcast(&room, event, payload));
        }
        #[cfg(not(feature = "browser"))]
        let _ = (event, payload, self.client);
    }
}

/// Joins a room (`order:<id>`, `user:<id>`) for as long as the calling
/// component lives; `on_broadcast` hears each broadcast (event, payload).
pub fn use_room(
    room: impl Into<String>,
    on_broadcast: impl Fn(&str, &serde_json::Value) + 'static,
) -> RoomHandle {
    let room: String = room.into();
    let (present, set_present) = signal(Vec::<Present>::new());
    let (closed, set_closed) = signal(false);
    let client = use_connection();
    #[cfg(feature = "browser")]
    if let Some(client) = client {
        let listener = Box::new(move |event: &RoomEvent| match event {
            RoomEvent::Broadcast { event, payload } => on_broadcast(event, payload),
            RoomEvent::Presence(people) => set_present.set(people.clone()),
            RoomEvent::Closed => set_closed.set(true),
        });
        let id = client
            .inner
            .with_value(|connection| connection.join_room(&room, listener));
        let leaving = room.clone();
        on_cleanup(move || {
            client
                .inner
                .try_with_value(|connection| connection.leave_room(&leaving, id));
        });
    }
    #[cfg(not(feature = "browser"))]
    let _ = (on_broadcast, set_present, set_closed);
    RoomHandle {
        present,
        closed,
        room: StoredValue::new(room),
        client,
    }
}

/// A fresh id for an optimistic mutation, echoed back in its change event.
pub fn new_mutation_id() -> uuid::Uuid {
    #[cfg(feature = "browser")]
    {
        // getRandomValues works on plain-HTTP origins too (randomUUID does not)
        let mut bytes = [0u8; 16];
        if let Some(crypto) = web_sys::window().and_then(|w| w.crypto().ok()) {
            let _ = crypto.get_random_values_with_u8_array(&mut bytes);
        }
        if bytes == [0u8; 16] {
            for byte in bytes.iter_mut() {
                *byte = (js_sys::Math::random() * 256.0) as u8;
            }
        }
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
    #[cfg(not(feature = "browser"))]
    {
        uuid::Uuid::nil()
    }
}
