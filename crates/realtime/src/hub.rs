//! The hub: the retention log and the live subscriptions. Each change is
//! appended to the log and matched in memory against the subscriptions that
//! may see it (the index proposes candidates; authorization, event, table
//! and filter decide), then pushed to each matching connection's queue
//! without ever waiting on it.
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

mod index;
mod log;
mod queue;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::access::Viewer;
use crate::change::Change;
use crate::cursor::ChangeCursor;
use crate::join::{Binding, matching_ids};
use crate::metrics::Metrics;

use index::{ALL_TABLES, TableIndex};
pub use log::Retention;
use log::RetentionLog;
pub use queue::{
    Channel, ConnectionHandle, ConnectionId, ConnectionQueue, CutOff, Outbound, SubscriptionId,
};

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

struct HubState {
    log: RetentionLog,
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
    metrics: Arc<Metrics>,
}

fn now_micros() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(0)
}

impl Hub {
    pub fn new(retention: Retention, metrics: Arc<Metrics>) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                log: RetentionLog::new(retention),
                admitted: HashSet::new(),
                subscriptions: HashMap::new(),
                index: HashMap::new(),
                by_connection: HashMap::new(),
                next_id: 1,
            }),
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
        self.lock().log.start_at(floor);
    }

    pub fn head(&self) -> ChangeCursor {
        self.lock().log.head()
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
            if change.cursor <= state.log.head() {
                continue;
            }
            if change.cursor.lsn != state.log.head().lsn {
                // a new transaction: every connection must have room again
                state.admitted.clear();
            }
            let change = Arc::new(change);
            state.log.append(change.clone());
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
                let ids = matching_ids(&subscription.viewer, &subscription.bindings, &change);
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
        state.log.evict(now_micros());
        self.metrics
            .subscriptions
            .set(gauge(state.subscriptions.len()));
    }

    /// Drops changes older than the retention time even when nothing new comes.
    pub fn evict_expired(&self) {
        self.lock().log.evict(now_micros());
    }

    /// Registers a subscription. `announce` makes the join reply (and any
    /// notices) for where it starts; they are queued before the
    /// subscription can receive its first change.
    pub fn subscribe(
        &self,
        request: SubscribeRequest,
        announce: impl FnOnce(&Subscribed) -> Vec<String>,
    ) -> Result<Subscribed, HubError> {
        let mut state = self.lock();
        let id = state.next_id;
        let (floor, head) = (state.log.floor(), state.log.head());
        let (reset, catching_up, position) = match request.resume_after {
            None => (false, false, head),
            Some(cursor) if cursor < floor => (true, false, head),
            // Ahead of the log (it may still be replaying after a restart):
            // live, skipping what the client already has.
            Some(cursor) if cursor >= head => (false, false, cursor),
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
        for (table, keys) in index::entries(&subscription.bindings) {
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
            .set(gauge(state.subscriptions.len()));
        Ok(subscribed)
    }

    /// The next batch of changes a resuming subscription missed.
    pub fn catch_up(&self, id: SubscriptionId, max_changes: usize) -> CatchUp {
        let mut guard = self.lock();
        let HubState {
            log, subscriptions, ..
        } = &mut *guard;
        let Some(subscription) = subscriptions.get_mut(&id) else {
            return CatchUp::Gone;
        };
        if subscription.position < log.floor() {
            subscription.live = true;
            self.metrics.resets.inc();
            return CatchUp::Reset { head: log.head() };
        }
        let mut changes = Vec::new();
        let mut last = subscription.position;
        let mut done = true;
        for (looked_at, change) in log.after(subscription.position).enumerate() {
            if changes.len() >= max_changes || looked_at >= 16 * max_changes {
                done = false;
                break;
            }
            last = change.cursor;
            let ids = matching_ids(&subscription.viewer, &subscription.bindings, change);
            if !ids.is_empty() {
                changes.push((ids, change.clone()));
            }
        }
        subscription.position = last;
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
        if after < state.log.floor() {
            return PollRead::Reset {
                head: state.log.head(),
            };
        }
        let mut changes = Vec::new();
        let mut position = after;
        for change in state.log.after(after) {
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
            position: position.max(state.log.head()),
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
            .set(gauge(state.subscriptions.len()));
    }

    pub fn remove_connection(&self, connection: ConnectionId) {
        let mut state = self.lock();
        Self::remove_connection_locked(&mut state, connection);
        self.metrics
            .subscriptions
            .set(gauge(state.subscriptions.len()));
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
        for (table, keys) in index::entries(&subscription.bindings) {
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

/// A count as a gauge value.
fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use uuid::Uuid;

    use crate::access::{AccessKey, Audience};
    use crate::change::{Column, Table};
    use crate::filter::SubscriptionFilter;
    use crate::protocol::ChangeKind;

    const BUYER: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);

    fn hub(retention_changes: usize) -> Hub {
        let hub = Hub::new(
            Retention {
                changes: retention_changes,
                age: Duration::from_secs(3600),
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
        Change::new(
            ChangeCursor::new(lsn, index),
            now_micros(),
            table(),
            ChangeKind::Insert,
            Some(vec![
                Some(buyer.to_string()),
                None,
                Some(quantity.to_string()),
            ]),
            None,
            |row| {
                Audience::of([row
                    .get("buyer_id")
                    .and_then(|id| id.parse().ok())
                    .map(AccessKey::Person)])
            },
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
            viewer: Viewer::person(user),
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
