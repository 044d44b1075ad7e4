//! A connection's outbound queue. The hub pushes without ever waiting; the
//! connection's task drains it to the socket. The queue is bounded by
//! backlog at transaction boundaries (see [`Hub::publish`](super::Hub::publish)):
//! a connection that falls behind is cut off and told to resume.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::change::{Change, Visibility};
use crate::join::Columns;
use crate::protocol::Notice;

pub type ConnectionId = u64;
pub type SubscriptionId = u64;

/// What a connection's writer sends, in queue order.
pub enum Outbound {
    /// A ready-made message (replies, notices).
    Text(String),
    /// A change for a channel.
    Change {
        channel: Arc<Channel>,
        delivery: Delivery,
    },
    /// One of our notices on a channel (a `system` message).
    Notice {
        channel: Arc<Channel>,
        message: &'static str,
        notice: Notice,
    },
    /// A room's message for a channel: a broadcast, `presence_state` or
    /// `presence_diff`, with its JSON payload.
    Room {
        channel: Arc<Channel>,
        event: &'static str,
        payload: Arc<str>,
    },
    /// The channel was closed by the server: a `system` error saying why,
    /// then `phx_close`.
    Closed {
        channel: Arc<Channel>,
        message: &'static str,
    },
    /// The session the connection signed in with now ends at this time
    /// (Unix seconds).
    SessionEnds(i64),
    /// Pull missed changes from the log for a resuming subscription.
    CatchUp {
        subscription: SubscriptionId,
        channel: Arc<Channel>,
    },
}

/// A change as one subscription gets it: the ids of the bindings it
/// matched, and how the subscriber may see it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub ids: Vec<u64>,
    pub visibility: Visibility,
    pub change: Arc<Change>,
    /// Only these columns, as the bindings asked.
    pub select: Option<Columns>,
}

impl Delivery {
    /// The payload of its `postgres_changes` event.
    pub fn payload_json(&self) -> String {
        self.change
            .payload_json(&self.ids, self.visibility, self.select.as_deref())
    }

    /// Appends its payload to `out`, a frame being written.
    pub fn write_payload(&self, out: &mut String) {
        self.change
            .write_payload(out, &self.ids, self.visibility, self.select.as_deref())
    }
}

/// A joined Phoenix channel on one connection.
#[derive(Debug)]
pub struct Channel {
    pub topic: String,
    pub join_ref: Option<String>,
}

/// The hub's handle on one connection: its queue and a way to cut it off.
pub struct ConnectionHandle {
    pub id: ConnectionId,
    queue: Arc<Queue>,
    limit: usize,
    cut_off: Arc<CutOff>,
}

/// A queue that allocates nothing until something is queued (an idle
/// connection's whole queue is a few words).
#[derive(Default)]
struct Queue {
    items: Mutex<VecDeque<Outbound>>,
    ready: Notify,
    closed: AtomicBool,
}

impl Queue {
    fn items(&self) -> MutexGuard<'_, VecDeque<Outbound>> {
        self.items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The receiving end of a connection's queue; dropping it closes the queue.
pub struct ConnectionQueue {
    queue: Arc<Queue>,
}

impl ConnectionQueue {
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            self.queue.ready.notified().await;
        }
    }

    pub fn try_recv(&mut self) -> Option<Outbound> {
        let mut items = self.queue.items();
        let item = items.pop_front();
        if items.is_empty() && items.capacity() > 64 {
            // give back what a burst took
            items.shrink_to_fit();
        }
        item
    }
}

impl Drop for ConnectionQueue {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::SeqCst);
        self.queue.items().clear();
    }
}

/// Why the hub closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// It fell too far behind: reconnect and resume.
    TooSlow,
    /// The session it signed in with ended.
    SignedOut,
    /// That session ran out.
    SessionExpired,
    /// Its user no longer exists.
    AccountRemoved,
}

/// Raised once when the hub gives up on a connection, with the reason.
#[derive(Default)]
pub struct CutOff {
    raised: AtomicBool,
    reason: Mutex<Option<CloseReason>>,
    notify: Notify,
}

impl CutOff {
    fn raise(&self, reason: CloseReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.raised.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Resolves with the reason once raised.
    pub async fn notified(&self) -> CloseReason {
        loop {
            if let Some(reason) = *self.reason.lock().unwrap_or_else(|p| p.into_inner()) {
                return reason;
            }
            self.notify.notified().await;
        }
    }
}

impl ConnectionHandle {
    pub fn new(id: ConnectionId, limit: usize) -> (Arc<ConnectionHandle>, ConnectionQueue) {
        let queue = Arc::new(Queue::default());
        let handle = Arc::new(ConnectionHandle {
            id,
            queue: queue.clone(),
            limit,
            cut_off: Arc::default(),
        });
        (handle, ConnectionQueue { queue })
    }

    /// Whether a new transaction may be queued: the backlog is under the limit.
    pub(super) fn has_room(&self) -> bool {
        self.queue.items().len() < self.limit
    }

    /// Whether the backlog grew far past the limit within one (large)
    /// transaction: the connection cannot keep up even with that.
    pub(super) fn is_swamped(&self) -> bool {
        self.queue.items().len() >= self.limit.saturating_mul(16)
    }

    /// Queues without waiting; false if the connection is gone.
    pub fn push(&self, item: Outbound) -> bool {
        if self.queue.closed.load(Ordering::SeqCst) {
            return false;
        }
        self.queue.items().push_back(item);
        self.queue.ready.notify_one();
        true
    }

    /// Gives up on the connection: its task says why and closes it.
    pub(super) fn close(&self, reason: CloseReason) {
        self.cut_off.raise(reason);
    }

    /// Whether the hub gave up on it.
    pub fn is_closing(&self) -> bool {
        self.cut_off.is_raised()
    }

    /// The cut-off signal, for the connection's task.
    pub fn cut_off_signal(&self) -> Arc<CutOff> {
        self.cut_off.clone()
    }
}
