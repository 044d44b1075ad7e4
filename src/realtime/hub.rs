//! The hub: a bounded, ordered log of recent changes and the live
//! subscriptions. Each change is matched in memory against the subscriptions
//! that may see it (authorization decides the candidates; event, table and
//! filter narrow them) and pushed to each matching connection's bounded
//! queue without ever waiting on it.
//!
//! Guarantees kept here, all under one lock so nothing slips between them:
//! - changes are delivered in cursor (commit) order, each once;
//! - a subscription is registered, and its join reply queued, before any
//!   later change can be matched against it ("subscribed means live");
//! - a subscription resuming from a cursor first catches up from the log,
//!   in batches pulled by its connection, then turns live with no gap; a
//!   cursor older than the log gets a reset instead of a silent gap;
//! - a connection whose queue is full is cut off and told to resume; the
//!   hub never waits for it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use super::authorization::{Audience, Viewer};
use super::capture::Catalog;
use super::change::Change;
use super::cursor::ChangeCursor;
use super::filter::{CompiledFilter, SubscriptionFilter, canonical_value};
use super::metrics::{ErrorKind, Metrics};
use super::protocol::{ChangeKind, PostgresChangesRequest};
use crate::model::Role;

pub type ConnectionId = u64;
pub type SubscriptionId = u64;

/// What a connection's writer sends, in queue order.
pub enum Outbound {
    /// A ready-made message (replies, notices).
    Text(String),
    /// A change for a channel, with the ids of the bindings it matched.
    Change {
        channel: Arc<Channel>,
        ids: Vec<u64>,
        change: Arc<Change>,
    },
    /// Pull missed changes from the log for a resuming subscription.
    CatchUp {
        subscription: SubscriptionId,
        channel: Arc<Channel>,
    },
}

/// A joined Phoenix channel on one connection.
#[derive(Debug)]
pub struct Channel {
    pub topic: String,
    pub join_ref: Option<String>,
}

/// The hub's handle on one WebSocket connection: its queue and a way to cut
/// it off. The queue is bounded by backlog at transaction boundaries: a
/// connection gets a transaction's first change only while fewer than
/// `limit` messages wait for it, and then the rest of that transaction, so a
/// healthy reader is never cut off by one large transaction.
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

/// Raised once when the hub gives up on a connection that fell behind.
#[derive(Default)]
pub struct CutOff {
    raised: AtomicBool,
    notify: Notify,
}

impl CutOff {
    fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Resolves once raised.
    pub async fn notified(&self) {
        if !self.is_raised() {
            self.notify.notified().await
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
    fn has_room(&self) -> bool {
        self.queue.items().len() < self.limit
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

    /// Queues the connection's own messages (replies, notices).
    pub async fn send(&self, item: Outbound) -> bool {
        self.push(item)
    }

    fn cut_off_as_too_slow(&self) {
        self.cut_off.raise();
    }

    pub fn is_too_slow(&self) -> bool {
        self.cut_off.is_raised()
    }

    /// The cut-off signal, for the connection's task.
    pub fn cut_off_signal(&self) -> Arc<CutOff> {
        self.cut_off.clone()
    }
}

/// One `postgres_changes` binding, validated.
#[derive(Clone, Debug)]
pub struct Binding {
    pub id: u64,
    /// `None` for every event (`*`).
    pub kind: Option<ChangeKind>,
    /// `None` for every table.
    pub table: Option<Arc<str>>,
    pub filter: CompiledFilter,
}

/// A refusal of bad input: what to count it as and what to tell the client.
#[derive(Debug)]
pub struct Refusal(pub ErrorKind, pub String);

impl Binding {
    /// Validates a binding as a client asked for it: a known event, the
    /// public schema, a published table (or all), and a filter whose columns
    /// and values fit the table.
    pub fn from_request(
        id: u64,
        request: &PostgresChangesRequest,
        catalog: &Catalog,
    ) -> Result<Binding, Refusal> {
        let kind = match request.event.to_ascii_uppercase().as_str() {
            "*" => None,
            "INSERT" => Some(ChangeKind::Insert),
            "UPDATE" => Some(ChangeKind::Update),
            "DELETE" => Some(ChangeKind::Delete),
            other => {
                return Err(Refusal(
                    ErrorKind::UnknownEvent,
                    format!("unknown event {other:?}: use *, INSERT, UPDATE or DELETE"),
                ));
            }
        };
        if request.schema != "public" && request.schema != "*" {
            return Err(Refusal(
                ErrorKind::UnknownTable,
                format!(
                    "unknown schema {:?}: realtime tables are in public",
                    request.schema
                ),
            ));
        }
        let table = match request.table.as_deref() {
            None | Some("*") | Some("") => None,
            Some(name) if catalog.tables.contains_key(name) => Some(name),
            Some(name) => {
                let mut known: Vec<&str> = catalog.tables.keys().map(String::as_str).collect();
                known.sort_unstable();
                return Err(Refusal(
                    ErrorKind::UnknownTable,
                    format!(
                        "unknown table {name:?}: realtime tables are {}",
                        known.join(", ")
                    ),
                ));
            }
        };
        let filter: SubscriptionFilter = request.filter.as_deref().unwrap_or("").parse().map_err(
            |e: super::filter::FilterError| Refusal(ErrorKind::InvalidFilter, e.to_string()),
        )?;
        let filter = match table {
            Some(table) => filter
                .compile(|column| catalog.column_type(table, column))
                .map_err(|e| Refusal(ErrorKind::InvalidFilter, format!("{e} in table {table}")))?,
            None if !filter.is_empty() => {
                return Err(Refusal(
                    ErrorKind::InvalidFilter,
                    "invalid filter: a filter needs a table".into(),
                ));
            }
            None => CompiledFilter::default(),
        };
        Ok(Binding {
            id,
            kind,
            table: table.map(Arc::from),
            filter,
        })
    }

    fn matches(&self, change: &Change) -> bool {
        self.kind.is_none_or(|kind| kind == change.kind)
            && self
                .table
                .as_ref()
                .is_none_or(|table| **table == *change.table.name)
            && self
                .filter
                .matches(|column| change.field(column).map(|(_, value)| value))
    }
}

pub struct SubscribeRequest {
    pub connection: Arc<ConnectionHandle>,
    pub channel: Arc<Channel>,
    pub viewer: Viewer,
    pub bindings: Vec<Binding>,
    /// Resume after this cursor.
    pub resume_after: Option<ChangeCursor>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscribed {
    pub id: SubscriptionId,
    /// Where the subscription starts: it is sent every matching change
    /// after this cursor (the resume cursor, or the head when it starts
    /// fresh or after a reset). Never later than a change still to come.
    pub position: ChangeCursor,
    /// The resume cursor was older than the log: the client must refetch.
    pub reset: bool,
    /// The subscription must catch up from the log before it is live.
    pub catching_up: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("the connection is closed")]
    Closed,
}

/// The next part of a resuming subscription's catch-up.
pub enum CatchUp {
    /// Missed changes in order; `done` when the subscription is now live.
    Batch {
        changes: Vec<(Vec<u64>, Arc<Change>)>,
        done: bool,
    },
    /// The log moved past the subscription while it caught up.
    Reset { head: ChangeCursor },
    /// The subscription is gone.
    Gone,
}

/// The ids of the bindings a change matches, if the viewer may see it.
fn matching_ids(viewer: &Viewer, bindings: &[Binding], change: &Change) -> Vec<u64> {
    if !viewer.may_see(&change.audience) {
        return Vec::new();
    }
    bindings
        .iter()
        .filter(|b| b.matches(change))
        .map(|b| b.id)
        .collect()
}

/// What a poll finds.
pub enum PollRead {
    Changes {
        changes: Vec<(Vec<u64>, Arc<Change>)>,
        position: ChangeCursor,
    },
    Reset {
        head: ChangeCursor,
    },
}

struct Subscription {
    connection: Arc<ConnectionHandle>,
    channel: Arc<Channel>,
    viewer: Viewer,
    bindings: Vec<Binding>,
    live: bool,
    /// While catching up: the last change looked at.
    position: ChangeCursor,
}

impl Subscription {
    fn matching_ids(&self, change: &Change) -> Vec<u64> {
        if !self.viewer.may_see(&change.audience) {
            return Vec::new();
        }
        self.bindings
            .iter()
            .filter(|b| b.matches(change))
            .map(|b| b.id)
            .collect()
    }

    /// The tables it binds ("*" for all), each with its `eq` index keys if
    /// every binding on that table has one.
    fn index_entries(&self) -> Vec<(Arc<str>, Option<Vec<IndexKey>>)> {
        let tables: HashSet<Arc<str>> = self
            .bindings
            .iter()
            .map(|b| b.table.clone().unwrap_or_else(|| ALL_TABLES.into()))
            .collect();
        tables
            .into_iter()
            .map(|table| {
                let keys = self
                    .bindings
                    .iter()
                    .filter(|b| b.table.as_deref().unwrap_or(ALL_TABLES) == &*table)
                    .map(|b| {
                        b.filter
                            .index_key()
                            .map(|(column, value)| (Arc::<str>::from(column), value))
                    })
                    .collect::<Option<Vec<_>>>();
                (table, keys)
            })
            .collect()
    }
}

const ALL_TABLES: &str = "*";

/// A column and the canonical value a subscription's `eq` condition wants there.
type IndexKey = (Arc<str>, String);

/// Subscriptions of one table. Those whose every binding here has an `eq`
/// condition are found by the changed row's value in that column; the
/// rest by whom they could see changes for.
#[derive(Default)]
struct TableIndex {
    admins: HashSet<SubscriptionId>,
    people: HashMap<Uuid, HashSet<SubscriptionId>>,
    factories: HashMap<Uuid, HashSet<SubscriptionId>>,
    by_value: HashMap<IndexKey, HashSet<SubscriptionId>>,
    /// Columns with entries in `by_value`, and how many.
    indexed_columns: HashMap<Arc<str>, usize>,
}

impl TableIndex {
    fn insert(&mut self, id: SubscriptionId, viewer: &Viewer, keys: Option<Vec<IndexKey>>) {
        if let Some(keys) = keys {
            for (column, value) in keys {
                *self.indexed_columns.entry(column.clone()).or_default() += 1;
                self.by_value.entry((column, value)).or_default().insert(id);
            }
            return;
        }
        if viewer.role == Role::Admin {
            self.admins.insert(id);
            return;
        }
        self.people.entry(viewer.user_id).or_default().insert(id);
        if let (Role::Factory, Some(factory)) = (viewer.role, viewer.factory_id) {
            self.factories.entry(factory).or_default().insert(id);
        }
    }

    fn remove(&mut self, id: SubscriptionId, viewer: &Viewer, keys: Option<Vec<IndexKey>>) {
        if let Some(keys) = keys {
            for (column, value) in keys {
                let key = (column.clone(), value);
                if let Some(set) = self.by_value.get_mut(&key) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.by_value.remove(&key);
                    }
                }
                if let Some(count) = self.indexed_columns.get_mut(&column) {
                    *count -= 1;
                    if *count == 0 {
                        self.indexed_columns.remove(&column);
                    }
                }
            }
            return;
        }
        self.admins.remove(&id);
        remove_from(&mut self.people, viewer.user_id, id);
        if let Some(factory) = viewer.factory_id {
            remove_from(&mut self.factories, factory, id);
        }
    }

    fn candidates(&self, change: &Change, out: &mut Vec<SubscriptionId>) {
        for column in self.indexed_columns.keys() {
            let value = change
                .field(column)
                .and_then(|(type_name, value)| canonical_value(type_name, value?));
            if let Some(ids) = value.and_then(|v| self.by_value.get(&(column.clone(), v))) {
                out.extend(ids.iter().copied());
            }
        }
        out.extend(self.admins.iter().copied());
        let mut people = |person: &Option<Uuid>| {
            if let Some(ids) = person.as_ref().and_then(|p| self.people.get(p)) {
                out.extend(ids.iter().copied());
            }
        };
        match &change.audience {
            Audience::Order { buyer, factory } => {
                people(buyer);
                if let Some(ids) = factory.as_ref().and_then(|f| self.factories.get(f)) {
                    out.extend(ids.iter().copied());
                }
            }
            Audience::People(persons) => persons.iter().for_each(people),
            Audience::AdminsOnly => {}
        }
    }

    fn is_empty(&self) -> bool {
        self.admins.is_empty()
            && self.people.is_empty()
            && self.factories.is_empty()
            && self.by_value.is_empty()
    }
}

fn remove_from(map: &mut HashMap<Uuid, HashSet<SubscriptionId>>, key: Uuid, id: SubscriptionId) {
    if let Some(set) = map.get_mut(&key) {
        set.remove(&id);
        if set.is_empty() {
            map.remove(&key);
        }
    }
}

#[derive(Clone, Debug)]
pub struct HubSettings {
    /// Most changes kept for resuming.
    pub retention_changes: usize,
    /// Oldest change kept for resuming.
    pub retention: Duration,
}

struct HubState {
    log: VecDeque<Arc<Change>>,
    /// Every change at or before this cursor may be gone from the log.
    floor: ChangeCursor,
    /// The newest change seen.
    head: ChangeCursor,
    /// Connections that received part of the transaction being published
    /// (it may come in several slices): they get the rest of it.
    admitted: HashSet<ConnectionId>,
    subscriptions: HashMap<SubscriptionId, Subscription>,
    index: HashMap<Arc<str>, TableIndex>,
    by_connection: HashMap<ConnectionId, Vec<SubscriptionId>>,
    next_id: SubscriptionId,
}

pub struct Hub {
    state: Mutex<HubState>,
    settings: HubSettings,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(settings: HubSettings, metrics: Arc<Metrics>) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                log: VecDeque::new(),
                floor: ChangeCursor::START,
                head: ChangeCursor::START,
                admitted: HashSet::new(),
                subscriptions: HashMap::new(),
                index: HashMap::new(),
                by_connection: HashMap::new(),
                next_id: 1,
            }),
            settings,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding the lock cannot leave the state half-changed
        // in a way that matters more than stopping realtime altogether.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets where the stream starts: changes at or before `floor` are
    /// unknown to this hub, so older cursors get a reset.
    pub fn start_at(&self, floor: ChangeCursor) {
        let mut state = self.lock();
        state.floor = state.floor.max(floor);
        state.head = state.head.max(state.floor);
    }

    pub fn head(&self) -> ChangeCursor {
        self.lock().head
    }

    pub fn subscription_count(&self) -> usize {
        self.lock().subscriptions.len()
    }

    /// Appends one committed transaction's changes (in order) and fans them
    /// out. Changes already seen (replayed after a reconnect) are skipped.
    pub fn publish(&self, changes: Vec<Change>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut too_slow: Vec<Arc<ConnectionHandle>> = Vec::new();
        let mut candidates = Vec::new();
        for change in changes {
            if change.cursor <= state.head {
                continue;
            }
            if change.cursor.lsn != state.head.lsn {
                // a new transaction: every connection must have room again
                state.admitted.clear();
            }
            let change = Arc::new(change);
            state.head = change.cursor;
            state.log.push_back(change.clone());
            self.metrics.changes_captured.inc();
            candidates.clear();
            for key in [&*change.table.name, ALL_TABLES] {
                if let Some(index) = state.index.get(key) {
                    index.candidates(&change, &mut candidates);
                }
            }
            candidates.sort_unstable();
            candidates.dedup();
            for id in &candidates {
                let Some(subscription) = state.subscriptions.get(id) else {
                    continue;
                };
                let connection = &subscription.connection;
                // A resumed subscription already has everything up to its position.
                if !subscription.live
                    || change.cursor <= subscription.position
                    || connection.is_too_slow()
                {
                    continue;
                }
                let ids = subscription.matching_ids(&change);
                if ids.is_empty() {
                    continue;
                }
                if !state.admitted.contains(&connection.id) {
                    if !connection.has_room() {
                        connection.cut_off_as_too_slow();
                        too_slow.push(connection.clone());
                        continue;
                    }
                    state.admitted.insert(connection.id);
                }
                connection.push(Outbound::Change {
                    channel: subscription.channel.clone(),
                    ids,
                    change: change.clone(),
                });
            }
        }
        for connection in too_slow {
            if state.by_connection.contains_key(&connection.id) {
                self.metrics.slow_consumer_closes.inc();
                tracing::info!(
                    connection = connection.id,
                    "closing a connection that fell behind"
                );
                Self::remove_connection_locked(state, connection.id);
            }
        }
        self.evict(state);
        self.metrics
            .subscriptions
            .set(state.subscriptions.len() as i64);
    }

    fn evict(&self, state: &mut HubState) {
        let now_micros = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
        let max_age = self.settings.retention.as_micros() as i64;
        while let Some(front) = state.log.front() {
            let too_many = state.log.len() > self.settings.retention_changes;
            let too_old = now_micros - front.commit_micros > max_age;
            if !too_many && !too_old {
                break;
            }
            state.floor = front.cursor;
            state.log.pop_front();
        }
    }

    /// Drops changes older than the retention time even when nothing new comes.
    pub fn evict_expired(&self) {
        let mut state = self.lock();
        self.evict(&mut state);
    }

    /// Registers a subscription. `announce` makes the join reply (and any
    /// notices) for the head cursor; they are queued before the subscription
    /// can receive its first change.
    pub fn subscribe(
        &self,
        request: SubscribeRequest,
        announce: impl FnOnce(&Subscribed) -> Vec<String>,
    ) -> Result<Subscribed, HubError> {
        let mut state = self.lock();
        let id = state.next_id;
        let (reset, catching_up, position) = match request.resume_after {
            None => (false, false, state.head),
            Some(cursor) if cursor < state.floor => (true, false, state.head),
            // Ahead of the log (it may still be replaying after a restart):
            // live, skipping what the client already has.
            Some(cursor) if cursor >= state.head => (false, false, cursor),
            Some(cursor) => (false, true, cursor),
        };
        if request.resume_after.is_some() {
            self.metrics.resumes.inc();
        }
        if reset {
            self.metrics.resets.inc();
        }
        let subscribed = Subscribed {
            id,
            position,
            reset,
            catching_up,
        };
        for frame in announce(&subscribed) {
            if !request.connection.push(Outbound::Text(frame)) {
                return Err(HubError::Closed);
            }
        }
        state.next_id += 1;
        let subscription = Subscription {
            connection: request.connection.clone(),
            channel: request.channel,
            viewer: request.viewer,
            bindings: request.bindings,
            live: !catching_up,
            position,
        };
        for (table, keys) in subscription.index_entries() {
            state
                .index
                .entry(table)
                .or_default()
                .insert(id, &subscription.viewer, keys);
        }
        state
            .by_connection
            .entry(request.connection.id)
            .or_default()
            .push(id);
        state.subscriptions.insert(id, subscription);
        self.metrics
            .subscriptions
            .set(state.subscriptions.len() as i64);
        Ok(subscribed)
    }

    /// The next batch of changes a resuming subscription missed.
    pub fn catch_up(&self, id: SubscriptionId, max_changes: usize) -> CatchUp {
        let mut state = self.lock();
        let floor = state.floor;
        let head = state.head;
        let Some(position) = state.subscriptions.get(&id).map(|s| s.position) else {
            return CatchUp::Gone;
        };
        if position < floor {
            if let Some(subscription) = state.subscriptions.get_mut(&id) {
                subscription.live = true;
            }
            self.metrics.resets.inc();
            return CatchUp::Reset { head };
        }
        let start = state.log.partition_point(|c| c.cursor <= position);
        let mut changes = Vec::new();
        let mut last = position;
        let mut looked_at = 0;
        let state = &mut *state;
        let Some(subscription) = state.subscriptions.get_mut(&id) else {
            return CatchUp::Gone;
        };
        for change in state.log.range(start..) {
            looked_at += 1;
            last = change.cursor;
            let ids = subscription.matching_ids(change);
            if !ids.is_empty() {
                changes.push((ids, change.clone()));
            }
            if changes.len() >= max_changes || looked_at >= 16 * max_changes {
                break;
            }
        }
        subscription.position = last;
        let done = start + looked_at >= state.log.len();
        if done {
            subscription.live = true;
        }
        CatchUp::Batch { changes, done }
    }

    /// For polling: the changes after `after` that a viewer's bindings
    /// match, at most `limit`, and the position reached; or a reset when
    /// `after` is older than the log.
    pub fn read_after(
        &self,
        viewer: &Viewer,
        bindings: &[Binding],
        after: ChangeCursor,
        limit: usize,
    ) -> PollRead {
        let state = self.lock();
        if after < state.floor {
            return PollRead::Reset { head: state.head };
        }
        let start = state.log.partition_point(|c| c.cursor <= after);
        let mut changes = Vec::new();
        let mut position = after;
        for change in state.log.range(start..) {
            position = change.cursor;
            let ids = matching_ids(viewer, bindings, change);
            if !ids.is_empty() {
                changes.push((ids, change.clone()));
                if changes.len() >= limit {
                    return PollRead::Changes { changes, position };
                }
            }
        }
        PollRead::Changes {
            changes,
            position: position.max(state.head),
        }
    }

    /// Ends the subscriptions of one channel on a connection.
    pub fn unsubscribe(&self, connection: ConnectionId, topic: &str) {
        let mut state = self.lock();
        let ids: Vec<SubscriptionId> = state
            .by_connection
            .get(&connection)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|id| {
                        state
                            .subscriptions
                            .get(id)
                            .is_some_and(|s| s.channel.topic == topic)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            Self::remove_subscription_locked(&mut state, id);
        }
        if let Some(ids) = state.by_connection.get(&connection)
            && ids.is_empty()
        {
            state.by_connection.remove(&connection);
        }
        self.metrics
            .subscriptions
            .set(state.subscriptions.len() as i64);
    }

    pub fn remove_connection(&self, connection: ConnectionId) {
        let mut state = self.lock();
        Self::remove_connection_locked(&mut state, connection);
        self.metrics
            .subscriptions
            .set(state.subscriptions.len() as i64);
    }

    fn remove_connection_locked(state: &mut HubState, connection: ConnectionId) {
        for id in state.by_connection.remove(&connection).unwrap_or_default() {
            Self::remove_subscription_locked(state, id);
        }
    }

    fn remove_subscription_locked(state: &mut HubState, id: SubscriptionId) {
        let Some(subscription) = state.subscriptions.remove(&id) else {
            return;
        };
        for (table, keys) in subscription.index_entries() {
            if let Some(index) = state.index.get_mut(&table) {
                index.remove(id, &subscription.viewer, keys);
                if index.is_empty() {
                    state.index.remove(&table);
                }
            }
        }
        if let Some(ids) = state.by_connection.get_mut(&subscription.connection.id) {
            ids.retain(|other| *other != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::change::{Column, Table};

    const BUYER: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);

    fn hub(retention_changes: usize) -> Hub {
        let hub = Hub::new(
            HubSettings {
                retention_changes,
                retention: Duration::from_secs(3600),
            },
            Arc::new(Metrics::new()),
        );
        hub.start_at(ChangeCursor::end_of(0x100));
        hub
    }

    fn table() -> Arc<Table> {
        Arc::new(Table::new(
            "public",
            "orders",
            vec![
                Column {
                    name: "buyer_id".into(),
                    type_name: "uuid".into(),
                },
                Column {
                    name: "factory_id".into(),
                    type_name: "uuid".into(),
                },
                Column {
                    name: "quantity".into(),
                    type_name: "int4".into(),
                },
            ],
        ))
    }

    fn change(lsn: u64, index: u32, buyer: Uuid, quantity: i32) -> Change {
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
        Change::new(
            ChangeCursor::new(lsn, index),
            now,
            table(),
            ChangeKind::Insert,
            Some(vec![
                Some(buyer.to_string()),
                None,
                Some(quantity.to_string()),
            ]),
            None,
        )
    }

    fn connection(id: u64, size: usize) -> (Arc<ConnectionHandle>, ConnectionQueue) {
        ConnectionHandle::new(id, size)
    }

    fn request(
        connection: &Arc<ConnectionHandle>,
        user: Uuid,
        filter: &str,
        resume: Option<ChangeCursor>,
    ) -> SubscribeRequest {
        SubscribeRequest {
            connection: connection.clone(),
            channel: Arc::new(Channel {
                topic: "realtime:orders".into(),
                join_ref: None,
            }),
            viewer: Viewer {
                user_id: user,
                role: Role::Buyer,
                factory_id: None,
            },
            bindings: vec![Binding {
                id: 5,
                kind: None,
                table: Some("orders".into()),
                filter: filter
                    .parse::<SubscriptionFilter>()
                    .and_then(|f| {
                        f.compile(|column| match column {
                            "buyer_id" | "factory_id" => Some("uuid"),
                            "quantity" => Some("int4"),
                            _ => None,
                        })
                    })
                    .unwrap_or_default(),
            }],
            resume_after: resume,
        }
    }

    fn received(rx: &mut ConnectionQueue) -> Vec<ChangeCursor> {
        let mut out = Vec::new();
        while let Some(item) = rx.try_recv() {
            if let Outbound::Change { change, .. } = item {
                out.push(change.cursor);
            }
        }
        out
    }

    #[test]
    fn a_subscriber_gets_only_rows_it_may_see_and_asked_for() {
        let hub = hub(100);
        let (conn, mut rx) = connection(1, 16);
        assert!(
            hub.subscribe(request(&conn, BUYER, "quantity=gt.10", None), |_| vec![])
                .is_ok()
        );
        hub.publish(vec![
            change(0x200, 0, BUYER, 50),
            change(0x200, 1, OTHER, 50),
            change(0x200, 2, BUYER, 5),
        ]);
        assert_eq!(received(&mut rx), vec![ChangeCursor::new(0x200, 0)]);
    }

    #[test]
    fn the_join_reply_is_queued_before_any_change() {
        let hub = hub(100);
        let (conn, mut rx) = connection(1, 16);
        assert!(
            hub.subscribe(request(&conn, BUYER, "", None), |_| vec!["reply".into()])
                .is_ok()
        );
        hub.publish(vec![change(0x200, 0, BUYER, 1)]);
        assert!(matches!(rx.try_recv(), Some(Outbound::Text(text)) if text == "reply"));
        assert!(matches!(rx.try_recv(), Some(Outbound::Change { .. })));
    }

    #[test]
    fn replayed_changes_are_not_delivered_twice() {
        let hub = hub(100);
        let (conn, mut rx) = connection(1, 16);
        assert!(
            hub.subscribe(request(&conn, BUYER, "", None), |_| vec![])
                .is_ok()
        );
        hub.publish(vec![change(0x200, 0, BUYER, 1)]);
        hub.publish(vec![change(0x200, 0, BUYER, 1), change(0x300, 0, BUYER, 1)]);
        assert_eq!(
            received(&mut rx),
            vec![ChangeCursor::new(0x200, 0), ChangeCursor::new(0x300, 0)]
        );
    }

    #[test]
    fn resuming_catches_up_exactly_then_turns_live() {
        let hub = hub(100);
        for lsn in 1..=10u64 {
            hub.publish(vec![change(0x1000 + lsn, 0, BUYER, 1)]);
        }
        let (conn, mut rx) = connection(1, 64);
        let resume = Some(ChangeCursor::new(0x1004, 0));
        let subscribed = hub.subscribe(request(&conn, BUYER, "", resume), |_| vec![]);
        let Ok(subscribed) = subscribed else {
            panic!("subscribe failed")
        };
        assert!(subscribed.catching_up && !subscribed.reset);
        hub.publish(vec![change(0x2000, 0, BUYER, 1)]);
        assert!(received(&mut rx).is_empty(), "not live before catching up");
        let mut caught = Vec::new();
        loop {
            match hub.catch_up(subscribed.id, 2) {
                CatchUp::Batch { changes, done } => {
                    caught.extend(changes.into_iter().map(|(_, c)| c.cursor.lsn));
                    if done {
                        break;
                    }
                }
                _ => panic!("unexpected catch-up result"),
            }
        }
        assert_eq!(
            caught,
            vec![0x1005, 0x1006, 0x1007, 0x1008, 0x1009, 0x100A, 0x2000]
        );
        hub.publish(vec![change(0x3000, 0, BUYER, 1)]);
        assert_eq!(received(&mut rx), vec![ChangeCursor::new(0x3000, 0)]);
    }

    #[test]
    fn a_cursor_older_than_the_log_gets_a_reset() {
        let hub = hub(3);
        for lsn in 1..=10u64 {
            hub.publish(vec![change(0x1000 + lsn, 0, BUYER, 1)]);
        }
        let (conn, _rx) = connection(1, 16);
        let subscribed = hub.subscribe(
            request(&conn, BUYER, "", Some(ChangeCursor::new(0x1002, 0))),
            |_| vec![],
        );
        assert!(matches!(subscribed, Ok(s) if s.reset && !s.catching_up));
        let fresh = hub.subscribe(
            request(&conn, BUYER, "", Some(ChangeCursor::new(0x1008, 0))),
            |_| vec![],
        );
        assert!(matches!(fresh, Ok(s) if !s.reset && s.catching_up));
    }

    #[test]
    fn a_full_queue_cuts_off_only_that_connection() {
        let hub = hub(100);
        let (slow, _slow_rx) = connection(1, 1);
        let (fast, mut fast_rx) = connection(2, 64);
        assert!(
            hub.subscribe(request(&slow, BUYER, "", None), |_| vec![])
                .is_ok()
        );
        assert!(
            hub.subscribe(request(&fast, BUYER, "", None), |_| vec![])
                .is_ok()
        );
        for lsn in 1..=5u64 {
            hub.publish(vec![change(0x1000 + lsn, 0, BUYER, 1)]);
        }
        assert!(slow.is_too_slow());
        assert_eq!(received(&mut fast_rx).len(), 5);
        assert_eq!(hub.subscription_count(), 1);
    }

    #[test]
    fn unsubscribing_removes_from_every_index() {
        let hub = hub(100);
        let (conn, mut rx) = connection(1, 16);
        assert!(
            hub.subscribe(request(&conn, BUYER, "", None), |_| vec![])
                .is_ok()
        );
        hub.unsubscribe(1, "realtime:orders");
        assert_eq!(hub.subscription_count(), 0);
        hub.publish(vec![change(0x200, 0, BUYER, 1)]);
        assert!(received(&mut rx).is_empty());
    }
}
