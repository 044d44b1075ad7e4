//! The hub: the retention log, the live subscriptions and who they speak
//! for. Each change is appended to the log and matched in memory against
//! the subscriptions that may see it (the index proposes candidates;
//! authorization, event, table and filter decide), then pushed to each
//! matching connection's queue without ever waiting on it.
//!
//! Guarantees kept here, all under one lock so nothing slips between them:
//! - changes are delivered in cursor (commit) order, each once;
//! - a subscription is registered, and its join reply queued, before any
//!   later change can be matched against it ("subscribed means live");
//! - a subscription resuming from a cursor first catches up from the log,
//!   in batches pulled by its connection, then turns live with no gap; a
//!   cursor older than the log gets a reset instead of a silent gap;
//! - rights follow the stream: a change of someone's rights (their role or
//!   group, their removal, the end of their session) is applied at its
//!   place in commit order, so no change committed after it reaches them
//!   under the old rights; a lookup of someone made before such a change
//!   (the join of a channel with a token, a connection's session cookie)
//!   is corrected by it when it reaches the hub after it;
//! - one person's connections, channels and bindings are capped, so no one
//!   can make matching slow for everyone else;
//! - a connection whose queue is full is cut off and told to resume; the
//!   hub never waits for it.

mod index;
mod log;
mod queue;
mod rooms;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::access::{Audience, Viewer};
use crate::change::Change;
use crate::cursor::{ChangeCursor, StreamId};
use crate::join::{Binding, Refusal, matching};
use crate::metrics::{ErrorKind, Metrics};
use crate::ports::{Principal, RightsChange, Room, RoomAccess, SessionEnd, SessionKey};
use crate::protocol::{self, ChangeKind, Notice};

use index::{ALL_TABLES, TableIndex};
pub use log::Retention;
use log::RetentionLog;
pub use queue::{
    Channel, CloseReason, ConnectionHandle, ConnectionId, ConnectionQueue, CutOff, Delivery,
    Outbound, SubscriptionId,
};
pub use rooms::Member;
use rooms::{Note, Rooms};

/// How long a change of someone's rights is remembered, to correct lookups
/// made before it that reach the hub after it.
const RIGHTS_MEMORY_MICROS: i64 = 24 * 3600 * 1_000_000;

/// What one person or one client address may hold at once.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub connections_per_user: usize,
    pub connections_per_address: usize,
    pub channels_per_user: usize,
    pub bindings_per_user: usize,
}

/// What the capture hands the hub, in commit order.
pub enum Published {
    /// A row change subscribers may see.
    Change(Change),
    /// A change of someone's rights, at its place in the stream.
    Rights {
        cursor: ChangeCursor,
        commit_micros: i64,
        change: RightsChange,
    },
    /// A broadcast to a room, at its place in the stream.
    Broadcast {
        cursor: ChangeCursor,
        broadcast: Broadcast,
    },
}

/// A message for a room's members.
#[derive(Clone, Debug)]
pub struct Broadcast {
    pub room: Room,
    /// The `broadcast` event's payload as members get it:
    /// `{"type":"broadcast","event":…,"payload":…}`.
    pub payload: Arc<str>,
    /// The channel it came from, if a client sent it: it hears its own
    /// broadcasts only if it asked to (`self`).
    pub from: Option<Sender>,
}

/// Which channel sent a broadcast: a connection of a server (a node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    pub node: u64,
    pub connection: ConnectionId,
}

/// Who a channel speaks for.
#[derive(Debug)]
pub enum Speaker {
    /// The person the connection's session cookie names (as the hub keeps
    /// them current).
    Cookie,
    /// The person an access token named when it was looked up; `as_of` is
    /// the hub's head before the lookup began.
    Token {
        principal: Principal,
        as_of: ChangeCursor,
    },
}

pub struct SubscribeRequest {
    pub connection: ConnectionId,
    pub channel: Arc<Channel>,
    pub speaker: Speaker,
    pub bindings: Vec<Binding>,
    /// Resume after this cursor.
    pub resume_after: Option<ChangeCursor>,
    /// The room the channel's topic names, if any.
    pub room: Option<RoomRequest>,
}

/// Joining a room.
pub struct RoomRequest {
    pub member: Member,
    /// For a row's room: who the database said may see the row (`None`: no
    /// such row), looked up when the hub's head was at the cursor.
    pub looked_up: Option<(Option<Audience>, ChangeCursor)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Who it speaks for.
    pub user: Uuid,
    /// When its credential runs out (Unix seconds), if it does.
    pub expires_at: Option<i64>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("the connection is closed")]
    Closed,
    #[error("{}", .0.1)]
    Refused(Refusal),
}

/// The next part of a resuming subscription's catch-up.
pub enum CatchUp {
    /// Missed changes in order; `done` when the subscription is now live.
    Batch { changes: Vec<Delivery>, done: bool },
    /// The log moved past the subscription while it caught up.
    Reset { head: ChangeCursor },
    /// The subscription is gone.
    Gone,
}

/// What a poll finds.
pub enum PollRead {
    Changes {
        changes: Vec<Delivery>,
        position: ChangeCursor,
    },
    Reset {
        head: ChangeCursor,
    },
}

struct Subscription {
    connection: ConnectionId,
    channel: Arc<Channel>,
    viewer: Viewer,
    /// The name others see in presence.
    name: Option<Arc<str>>,
    /// Its room, if its topic names one.
    room: Option<Member>,
    bindings: Vec<Binding>,
    live: bool,
    /// While catching up: the last change looked at.
    position: ChangeCursor,
}

/// A connection the hub knows: its queue, who it signed in as, and what it holds.
struct Connection {
    handle: Arc<ConnectionHandle>,
    address: Option<IpAddr>,
    /// The person its session cookie named (kept current), and the session.
    cookie: Option<(Viewer, Option<SessionKey>)>,
    /// That person's name.
    name: Option<Arc<str>>,
    /// Whose connection it counts as (the cookie's person, else the first
    /// channel's).
    owner: Option<Uuid>,
    subscriptions: Vec<SubscriptionId>,
}

/// What the hub remembers of a change of someone's rights.
struct RightsRecord {
    cursor: ChangeCursor,
    commit_micros: i64,
    /// Their rights from then on; `None`: they were removed.
    viewer: Option<Viewer>,
}

struct HubState {
    log: RetentionLog,
    /// Connections that received part of the transaction being published
    /// (it may come in several slices): they get the rest of it.
    admitted: HashSet<ConnectionId>,
    subscriptions: HashMap<SubscriptionId, Subscription>,
    index: HashMap<Arc<str>, TableIndex>,
    connections: HashMap<ConnectionId, Connection>,
    /// Subscriptions by the person they speak for.
    by_user: HashMap<Uuid, HashSet<SubscriptionId>>,
    /// Connections by the person and the session their cookie names.
    by_cookie_user: HashMap<Uuid, HashSet<ConnectionId>>,
    by_session: HashMap<SessionKey, HashSet<ConnectionId>>,
    connections_per_user: HashMap<Uuid, usize>,
    connections_per_address: HashMap<IpAddr, usize>,
    rights: HashMap<Uuid, RightsRecord>,
    ended_sessions: HashMap<SessionKey, (ChangeCursor, i64, SessionEnd)>,
    next_id: SubscriptionId,
    rooms: Rooms,
    /// Broadcasts at or before this are old (sent before this server
    /// started, or replayed after a reconnect): not delivered again.
    broadcasts_after: ChangeCursor,
    /// Everything at or before this was committed before this server
    /// started: the database's rows already hold it. Streaming may still
    /// be replaying it into the log (a restart rebuilds the log), but it is
    /// history, never news to someone who joins now.
    started: ChangeCursor,
}

impl HubState {
    fn live_head(&self) -> ChangeCursor {
        self.log.head().max(self.started)
    }
}

pub struct Hub {
    state: Mutex<HubState>,
    /// The stream this hub's cursors belong to.
    stream: StreamId,
    /// The furthest WAL position the database has reported: no cursor of
    /// this stream can be beyond it.
    wal_end: AtomicU64,
    caps: Caps,
    metrics: Arc<Metrics>,
    /// This server among several: how its clients' broadcasts are recognized.
    node: u64,
}

fn now_micros() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(0)
}

fn limited(message: String) -> Refusal {
    Refusal(ErrorKind::Limited, message)
}

impl Hub {
    pub fn new(stream: StreamId, retention: Retention, caps: Caps, metrics: Arc<Metrics>) -> Hub {
        Hub {
            stream,
            wal_end: AtomicU64::new(0),
            state: Mutex::new(HubState {
                log: RetentionLog::new(retention),
                admitted: HashSet::new(),
                subscriptions: HashMap::new(),
                index: HashMap::new(),
                connections: HashMap::new(),
                by_user: HashMap::new(),
                by_cookie_user: HashMap::new(),
                by_session: HashMap::new(),
                connections_per_user: HashMap::new(),
                connections_per_address: HashMap::new(),
                rights: HashMap::new(),
                ended_sessions: HashMap::new(),
                next_id: 1,
                rooms: Rooms::default(),
                broadcasts_after: ChangeCursor::START,
                started: ChangeCursor::START,
            }),
            caps,
            metrics,
            node: uuid::Uuid::new_v4().as_u64_pair().0,
        }
    }

    /// This server's id among several.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// This server started with the database's WAL at `lsn`: what was
    /// committed by then is history. Its broadcasts are not delivered, and
    /// a page rendered or a channel joined without a cursor starts after it,
    /// however far the rebuild of the log has come.
    pub fn started_at(&self, lsn: u64) {
        let mut state = self.lock();
        let started = ChangeCursor::end_of(lsn).in_stream(self.stream);
        state.broadcasts_after = state.broadcasts_after.max(started);
        state.started = state.started.max(started);
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
        self.saw_wal_end(floor.lsn);
        self.lock().log.start_at(floor.in_stream(self.stream));
    }

    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// The database reported its WAL reaching `lsn`.
    pub fn saw_wal_end(&self, lsn: u64) {
        self.wal_end.fetch_max(lsn, Ordering::Relaxed);
    }

    /// A cursor this stream never issued: from another database, cluster
    /// or timeline, or beyond anything the database has written.
    fn is_foreign(&self, cursor: ChangeCursor) -> bool {
        cursor.stream != self.stream || cursor.lsn > self.wal_end.load(Ordering::Relaxed)
    }

    /// The newest change in the log.
    pub fn head(&self) -> ChangeCursor {
        self.lock().log.head()
    }

    /// Where someone starting now starts: after the log's head and after
    /// everything committed before this server started. A page rendered
    /// now resumes from here; rights looked up now are as of here.
    pub fn live_head(&self) -> ChangeCursor {
        self.lock().live_head()
    }

    pub fn subscription_count(&self) -> usize {
        self.lock().subscriptions.len()
    }

    /// Opens a connection's place in the hub. `cookie`: the person its
    /// session cookie named, and the hub's head before that was looked up.
    pub fn register(
        &self,
        handle: Arc<ConnectionHandle>,
        address: Option<IpAddr>,
        cookie: Option<(Principal, ChangeCursor)>,
    ) -> Result<(), CloseOrRefuse> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(address) = address
            && state
                .connections_per_address
                .get(&address)
                .is_some_and(|n| *n >= self.caps.connections_per_address)
        {
            return Err(CloseOrRefuse::Refuse(limited(format!(
                "too many connections from this address (at most {})",
                self.caps.connections_per_address
            ))));
        }
        let name = cookie
            .as_ref()
            .and_then(|(principal, _)| principal.name.as_deref().map(Arc::from));
        let cookie = match cookie {
            None => None,
            Some((principal, as_of)) => Some(Self::current(state, principal, as_of)?),
        };
        let owner = cookie.as_ref().map(|(viewer, _)| viewer.user_id);
        if let Some(owner) = owner {
            self.count_owner(state, owner)?;
        }
        if let Some(address) = address {
            *state.connections_per_address.entry(address).or_default() += 1;
        }
        if let Some((viewer, session)) = &cookie {
            state
                .by_cookie_user
                .entry(viewer.user_id)
                .or_default()
                .insert(handle.id);
            if let Some(session) = session {
                state
                    .by_session
                    .entry(session.clone())
                    .or_default()
                    .insert(handle.id);
            }
        }
        state.connections.insert(
            handle.id,
            Connection {
                handle,
                address,
                cookie,
                name,
                owner,
                subscriptions: Vec::new(),
            },
        );
        self.metrics.connections.set(gauge(state.connections.len()));
        Ok(())
    }

    /// Counts a connection against its owner's cap.
    fn count_owner(&self, state: &mut HubState, owner: Uuid) -> Result<(), CloseOrRefuse> {
        let count = state.connections_per_user.entry(owner).or_default();
        if *count >= self.caps.connections_per_user {
            return Err(CloseOrRefuse::Refuse(limited(format!(
                "too many connections for this user (at most {})",
                self.caps.connections_per_user
            ))));
        }
        *count += 1;
        Ok(())
    }

    /// A person's rights as of now, from a lookup made when the hub's head
    /// was `as_of`: a change of their rights or an end of their session
    /// that the hub applied after that point overrides what the lookup saw.
    fn current(
        state: &HubState,
        principal: Principal,
        as_of: ChangeCursor,
    ) -> Result<(Viewer, Option<SessionKey>), CloseOrRefuse> {
        if let Some(session) = &principal.session
            && let Some((cursor, _, end)) = state.ended_sessions.get(session)
            && *cursor > as_of
        {
            return Err(CloseOrRefuse::Close(match end {
                SessionEnd::SignedOut => CloseReason::SignedOut,
                SessionEnd::Expired => CloseReason::SessionExpired,
            }));
        }
        let user = principal.viewer.user_id;
        match state.rights.get(&user) {
            Some(record) if record.cursor > as_of => match &record.viewer {
                Some(viewer) => Ok((viewer.clone(), principal.session)),
                None => Err(CloseOrRefuse::Close(CloseReason::AccountRemoved)),
            },
            _ => Ok((principal.viewer, principal.session)),
        }
    }

    /// Appends committed changes (in order) and fans them out; applies
    /// changes of rights at their place. Changes already seen (replayed
    /// after a reconnect) are skipped.
    pub fn publish(&self, items: Vec<Published>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut too_slow: Vec<ConnectionId> = Vec::new();
        let mut candidates = Vec::new();
        for item in items {
            let change = match item {
                Published::Change(change) => change,
                Published::Rights {
                    cursor,
                    commit_micros,
                    change,
                } => {
                    if cursor > state.log.head() {
                        self.apply_rights(state, cursor, commit_micros, change);
                    }
                    continue;
                }
                Published::Broadcast { cursor, broadcast } => {
                    if cursor > state.broadcasts_after {
                        state.broadcasts_after = cursor;
                        self.deliver_broadcast(state, &broadcast);
                    }
                    continue;
                }
            };
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
                    if change.kind == ChangeKind::Truncate {
                        index.all(&mut candidates);
                    } else {
                        index.candidates(&change, &mut candidates);
                    }
                }
            }
            candidates.sort_unstable();
            candidates.dedup();
            for id in &candidates {
                let Some(subscription) = state.subscriptions.get(id) else {
                    continue;
                };
                let Some(connection) = state.connections.get(&subscription.connection) else {
                    continue;
                };
                let handle = &connection.handle;
                // A resumed subscription already has everything up to its position.
                if !subscription.live
                    || change.cursor <= subscription.position
                    || handle.is_closing()
                {
                    continue;
                }
                let Some((visibility, groups)) =
                    matching(&subscription.viewer, &subscription.bindings, &change)
                else {
                    continue;
                };
                let admitted = state.admitted.contains(&handle.id);
                if (!admitted && !handle.has_room()) || (admitted && handle.is_swamped()) {
                    handle.close(CloseReason::TooSlow);
                    too_slow.push(handle.id);
                    continue;
                }
                state.admitted.insert(handle.id);
                for (select, ids) in groups {
                    handle.push(Outbound::Change {
                        channel: subscription.channel.clone(),
                        delivery: Delivery {
                            ids,
                            visibility,
                            change: change.clone(),
                            select,
                        },
                    });
                }
            }
            if state.rooms.watches_table(&change.table.name) {
                self.check_rooms(state, &change);
            }
        }
        for connection in too_slow {
            if state.connections.contains_key(&connection) {
                self.metrics.slow_consumer_closes.inc();
                tracing::info!(connection, "closing a connection that fell behind");
                self.drop_subscriptions(state, connection);
            }
        }
        state.log.evict(now_micros());
        self.forget_old_rights(state);
        self.metrics
            .subscriptions
            .set(gauge(state.subscriptions.len()));
    }

    fn apply_rights(
        &self,
        state: &mut HubState,
        cursor: ChangeCursor,
        commit_micros: i64,
        change: RightsChange,
    ) {
        match change {
            RightsChange::Viewer(viewer) => {
                let user = viewer.user_id;
                for id in state.by_cookie_user.get(&user).into_iter().flatten() {
                    if let Some(Connection {
                        cookie: Some((cookie, _)),
                        ..
                    }) = state.connections.get_mut(id)
                    {
                        *cookie = viewer.clone();
                    }
                }
                let ids: Vec<SubscriptionId> = state
                    .by_user
                    .get(&user)
                    .map(|ids| ids.iter().copied().collect())
                    .unwrap_or_default();
                for id in ids {
                    self.narrow(state, id, &viewer, cursor);
                    self.check_member(state, id);
                }
                state.rights.insert(
                    user,
                    RightsRecord {
                        cursor,
                        commit_micros,
                        viewer: Some(viewer),
                    },
                );
            }
            RightsChange::UserRemoved(user) => {
                let mut affected: HashSet<ConnectionId> =
                    state.by_cookie_user.get(&user).cloned().unwrap_or_default();
                for id in state.by_user.get(&user).into_iter().flatten() {
                    if let Some(subscription) = state.subscriptions.get(id) {
                        affected.insert(subscription.connection);
                    }
                }
                for connection in affected {
                    self.close(state, connection, CloseReason::AccountRemoved);
                }
                state.rights.insert(
                    user,
                    RightsRecord {
                        cursor,
                        commit_micros,
                        viewer: None,
                    },
                );
            }
            RightsChange::SessionEnds(session, at) => {
                for connection in state.by_session.get(&session).into_iter().flatten() {
                    if let Some(entry) = state.connections.get(connection) {
                        entry.handle.push(Outbound::SessionEnds(at));
                    }
                }
            }
            RightsChange::SessionEnded(session, end) => {
                let reason = match end {
                    SessionEnd::SignedOut => CloseReason::SignedOut,
                    SessionEnd::Expired => CloseReason::SessionExpired,
                };
                for connection in state.by_session.get(&session).cloned().unwrap_or_default() {
                    self.close(state, connection, reason);
                }
                state
                    .ended_sessions
                    .insert(session, (cursor, commit_micros, end));
            }
        }
    }

    /// Moves a subscription to new rights, and tells its channel to refetch.
    fn narrow(&self, state: &mut HubState, id: SubscriptionId, viewer: &Viewer, at: ChangeCursor) {
        let Some(subscription) = state.subscriptions.get(&id) else {
            return;
        };
        if subscription.viewer == *viewer {
            return;
        }
        for (table, keys) in index::entries(&subscription.bindings) {
            let index = state.index.entry(table).or_default();
            index.remove(id, &subscription.viewer, keys.clone());
            index.insert(id, viewer, keys);
        }
        let Some(subscription) = state.subscriptions.get_mut(&id) else {
            return;
        };
        subscription.viewer = viewer.clone();
        if let Some(connection) = state.connections.get(&subscription.connection) {
            connection.handle.push(Outbound::Notice {
                channel: subscription.channel.clone(),
                message: "what you may see changed: refetch, then continue",
                notice: Notice::RightsChanged { cursor: at },
            });
        }
    }

    /// Closes a connection for `reason`: from now on it gets nothing.
    fn close(&self, state: &mut HubState, connection: ConnectionId, reason: CloseReason) {
        if let Some(entry) = state.connections.get(&connection) {
            entry.handle.close(reason);
        }
        self.drop_subscriptions(state, connection);
    }

    fn forget_old_rights(&self, state: &mut HubState) {
        let horizon = now_micros().saturating_sub(RIGHTS_MEMORY_MICROS);
        state.rights.retain(|_, r| r.commit_micros >= horizon);
        state
            .ended_sessions
            .retain(|_, (_, micros, _)| *micros >= horizon);
    }

    /// Changes were lost (PostgreSQL dropped WAL of the slot): the stream
    /// starts over at `floor`, and every subscription is told to refetch.
    pub fn reset_all(&self, floor: ChangeCursor) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let floor = floor.in_stream(self.stream);
        state.log.restart_at(floor);
        for subscription in state.subscriptions.values_mut() {
            subscription.position = floor;
            subscription.live = true;
            if let Some(connection) = state.connections.get(&subscription.connection) {
                connection.handle.push(Outbound::Notice {
                    channel: subscription.channel.clone(),
                    message: "changes were lost on the server: refetch, then continue",
                    notice: Notice::Reset { cursor: floor },
                });
            }
        }
        self.metrics.resets.inc();
    }

    /// The oldest change the retention log keeps: the log slot must keep
    /// the WAL from its transaction on.
    pub fn oldest_retained(&self) -> Option<ChangeCursor> {
        self.lock().log.oldest()
    }

    /// Drops changes older than the retention time even when nothing new comes.
    pub fn evict_expired(&self) {
        let mut state = self.lock();
        state.log.evict(now_micros());
        self.forget_old_rights(&mut state);
    }

    /// Registers a subscription. `announce` makes the join reply (and any
    /// notices) for where it starts; they are queued before the
    /// subscription can receive its first change.
    pub fn subscribe(
        &self,
        request: SubscribeRequest,
        announce: impl FnOnce(&Subscribed) -> Vec<String>,
    ) -> Result<Subscribed, SubscribeError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(connection) = state.connections.get(&request.connection) else {
            return Err(SubscribeError::Closed);
        };
        if connection.handle.is_closing() {
            return Err(SubscribeError::Closed);
        }
        let token_name: Option<Arc<str>> = match &request.speaker {
            Speaker::Token { principal, .. } => principal.name.as_deref().map(Arc::from),
            Speaker::Cookie => None,
        };
        let (viewer, expires_at) = match request.speaker {
            Speaker::Cookie => match &connection.cookie {
                Some((viewer, _)) => (viewer.clone(), None),
                None => {
                    return Err(SubscribeError::Refused(Refusal(
                        ErrorKind::Unauthorized,
                        "unauthorized: sign in, or send an access_token from /api/auth/token"
                            .into(),
                    )));
                }
            },
            Speaker::Token { principal, as_of } => {
                let expires_at = principal.expires_at;
                match Self::current(state, principal, as_of) {
                    Ok((viewer, _)) => (viewer, expires_at),
                    Err(_) => {
                        return Err(SubscribeError::Refused(Refusal(
                            ErrorKind::Unauthorized,
                            "the access token's user no longer exists".into(),
                        )));
                    }
                }
            }
        };
        let user = viewer.user_id;
        let user_subscriptions = state.by_user.get(&user);
        let channels = user_subscriptions.map_or(0, HashSet::len);
        if channels >= self.caps.channels_per_user {
            return Err(SubscribeError::Refused(limited(format!(
                "too many channels for this user (at most {})",
                self.caps.channels_per_user
            ))));
        }
        let bindings: usize = user_subscriptions
            .into_iter()
            .flatten()
            .filter_map(|id| state.subscriptions.get(id))
            .map(|s| s.bindings.len())
            .sum();
        if bindings.saturating_add(request.bindings.len()) > self.caps.bindings_per_user {
            return Err(SubscribeError::Refused(limited(format!(
                "too many postgres_changes bindings for this user (at most {})",
                self.caps.bindings_per_user
            ))));
        }
        let admitted = match &request.room {
            Some(room) => Some(Self::admit(state, &viewer, room)?),
            None => None,
        };
        if connection.owner.is_none() {
            self.count_owner(state, user).map_err(|e| match e {
                CloseOrRefuse::Refuse(refusal) => SubscribeError::Refused(refusal),
                CloseOrRefuse::Close(_) => SubscribeError::Closed,
            })?;
            if let Some(connection) = state.connections.get_mut(&request.connection) {
                connection.owner = Some(user);
            }
        }
        let (floor, head) = (state.log.floor(), state.log.head());
        let (reset, catching_up, position) = match request.resume_after {
            // from now on: not what a restarted server is still replaying
            None => (false, false, state.live_head()),
            Some(cursor) if cursor < floor || self.is_foreign(cursor) => (true, false, head),
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
        let id = state.next_id;
        let subscribed = Subscribed {
            id,
            position,
            reset,
            catching_up,
            user,
            expires_at,
        };
        let Some(connection) = state.connections.get_mut(&request.connection) else {
            return Err(SubscribeError::Closed);
        };
        let name = token_name.or_else(|| connection.name.clone());
        for frame in announce(&subscribed) {
            if !connection.handle.push(Outbound::Text(frame)) {
                return Err(SubscribeError::Closed);
            }
        }
        connection.subscriptions.push(id);
        state.next_id += 1;
        for (table, keys) in index::entries(&request.bindings) {
            state
                .index
                .entry(table)
                .or_default()
                .insert(id, &viewer, keys);
        }
        state.by_user.entry(user).or_default().insert(id);
        let member = request.room.map(|room| room.member);
        if let (Some(member), Some(audience)) = (&member, admitted)
            && let Some(presence) = state.rooms.join(id, member, audience)
        {
            connection.handle.push(Outbound::Room {
                channel: request.channel.clone(),
                event: protocol::PRESENCE_STATE,
                payload: presence,
            });
        }
        state.subscriptions.insert(
            id,
            Subscription {
                connection: request.connection,
                channel: request.channel,
                viewer,
                name,
                room: member,
                bindings: request.bindings,
                live: !catching_up,
                position,
            },
        );
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
            if let Some((visibility, groups)) =
                matching(&subscription.viewer, &subscription.bindings, change)
            {
                changes.extend(groups.into_iter().map(|(select, ids)| Delivery {
                    ids,
                    visibility,
                    change: change.clone(),
                    select,
                }));
            }
        }
        subscription.position = last;
        if done {
            subscription.live = true;
        }
        CatchUp::Batch { changes, done }
    }

    /// For polling: the changes after `after` and up to `until` (the head
    /// when the viewer's rights were looked up) that the viewer's bindings
    /// match, at most `limit`, and the position reached; or a reset when
    /// `after` is older than the log.
    pub fn read_after(
        &self,
        viewer: &Viewer,
        bindings: &[Binding],
        after: ChangeCursor,
        until: ChangeCursor,
        limit: usize,
    ) -> PollRead {
        let state = self.lock();
        // nothing past what the rights were looked up for, nor past the log
        let end = until.min(state.log.head());
        if after < state.log.floor() || self.is_foreign(after) {
            return PollRead::Reset { head: end };
        }
        let mut changes = Vec::new();
        for change in state.log.after(after) {
            if change.cursor > end {
                break;
            }
            if let Some((visibility, groups)) = matching(viewer, bindings, change) {
                changes.extend(groups.into_iter().map(|(select, ids)| Delivery {
                    ids,
                    visibility,
                    change: change.clone(),
                    select,
                }));
                // a truncate ends the read: the client refetches from it
                if changes.len() >= limit || change.kind == ChangeKind::Truncate {
                    let position = change.cursor;
                    return PollRead::Changes { changes, position };
                }
            }
        }
        PollRead::Changes {
            changes,
            position: after.max(end),
        }
    }

    /// Ends the subscriptions of one channel on a connection.
    pub fn unsubscribe(&self, connection: ConnectionId, topic: &str) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let ids: Vec<SubscriptionId> = state
            .connections
            .get(&connection)
            .map(|c| {
                c.subscriptions
                    .iter()
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
            Self::remove_subscription(state, id);
        }
        self.metrics
            .subscriptions
            .set(gauge(state.subscriptions.len()));
    }

    /// Releases everything a connection holds (it ended, for any reason).
    pub fn remove_connection(&self, connection: ConnectionId) {
        let mut guard = self.lock();
        let state = &mut *guard;
        self.drop_subscriptions(state, connection);
        if let Some(entry) = state.connections.remove(&connection) {
            if let Some(owner) = entry.owner {
                decrement(&mut state.connections_per_user, owner);
            }
            if let Some(address) = entry.address {
                decrement(&mut state.connections_per_address, address);
            }
            if let Some((viewer, session)) = entry.cookie {
                remove_from(&mut state.by_cookie_user, viewer.user_id, connection);
                if let Some(session) = session {
                    remove_from(&mut state.by_session, session, connection);
                }
            }
        }
        self.metrics
            .subscriptions
            .set(gauge(state.subscriptions.len()));
        self.metrics.connections.set(gauge(state.connections.len()));
    }

    fn drop_subscriptions(&self, state: &mut HubState, connection: ConnectionId) {
        let ids = state
            .connections
            .get_mut(&connection)
            .map(|c| std::mem::take(&mut c.subscriptions))
            .unwrap_or_default();
        for id in ids {
            Self::remove_subscription(state, id);
        }
    }

    fn remove_subscription(state: &mut HubState, id: SubscriptionId) {
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
        remove_from(&mut state.by_user, subscription.viewer.user_id, id);
        if let Some(connection) = state.connections.get_mut(&subscription.connection) {
            connection.subscriptions.retain(|other| *other != id);
        }
        if let Some(member) = &subscription.room {
            let notes = state.rooms.leave(id, &member.room);
            Self::deliver_notes(state, notes);
        }
    }

    /// Who may join a room, decided from the database's current state: a
    /// person's room for that person; a row's room for those who may see
    /// the row, as the room has followed it (when it has members) or as
    /// looked up, corrected by every change of the row since. Returns who
    /// may see the row, for a row's room.
    fn admit(
        state: &HubState,
        viewer: &Viewer,
        request: &RoomRequest,
    ) -> Result<Option<Audience>, SubscribeError> {
        let room = &request.member.room;
        let refused = |why: &str| {
            SubscribeError::Refused(Refusal(
                ErrorKind::Unauthorized,
                format!("you may not join {}: {why}", room.topic),
            ))
        };
        let (table, key) = match &room.access {
            RoomAccess::Person(person) if *person == viewer.user_id => return Ok(None),
            RoomAccess::Person(_) => return Err(refused("it is only for that user")),
            RoomAccess::Row { table, key } => (table, key),
        };
        let audience = match state.rooms.known_audience(room) {
            Some(known) => known.cloned(),
            None => {
                let Some((found, as_of)) = &request.looked_up else {
                    return Err(refused("who may see it could not be looked up"));
                };
                if *as_of < state.log.floor() {
                    return Err(SubscribeError::Refused(limited(format!(
                        "{} changed too much while you joined: join again",
                        room.topic
                    ))));
                }
                let mut audience = found.clone();
                for change in state.log.after(*as_of) {
                    if *change.table.name != **table {
                        continue;
                    }
                    match change.kind {
                        ChangeKind::Truncate => audience = None,
                        _ if change.key() != Some(key.as_str()) => {}
                        ChangeKind::Delete => audience = None,
                        _ => audience = change.after.clone(),
                    }
                }
                audience
            }
        };
        match audience {
            Some(audience) if viewer.may_see(&audience) => Ok(Some(audience)),
            _ => Err(refused(&format!(
                "it is for the people who may see that row of {table}"
            ))),
        }
    }

    /// Puts a channel out of its room (and closes it): its person may no
    /// longer see what the room is about.
    fn put_out(state: &mut HubState, id: SubscriptionId) {
        let Some(subscription) = state.subscriptions.get(&id) else {
            return;
        };
        let channel = subscription.channel.clone();
        if let Some(connection) = state.connections.get(&subscription.connection) {
            connection.handle.push(Outbound::Closed {
                channel,
                message: "you may no longer see what this room is about: it is closed for you",
            });
        }
        Self::remove_subscription(state, id);
    }

    /// A change of a row some room is about: who may see it now decides
    /// who stays.
    fn check_rooms(&self, state: &mut HubState, change: &Change) {
        let affected: Vec<(Room, Vec<SubscriptionId>)> = if change.kind == ChangeKind::Truncate {
            state.rooms.rooms_of_table(&change.table.name)
        } else {
            let Some(key) = change.key() else {
                return;
            };
            let audience = match change.kind {
                ChangeKind::Delete => None,
                _ => change.after.clone(),
            };
            state
                .rooms
                .row_changed(&change.table.name, key, audience)
                .into_iter()
                .collect()
        };
        for (_, members) in affected {
            for id in members {
                self.check_member(state, id);
            }
        }
    }

    /// Whether a room's member may still be in it; put out if not.
    fn check_member(&self, state: &mut HubState, id: SubscriptionId) {
        let Some(subscription) = state.subscriptions.get(&id) else {
            return;
        };
        let Some(member) = &subscription.room else {
            return;
        };
        let stays = match &member.room.access {
            RoomAccess::Person(person) => *person == subscription.viewer.user_id,
            RoomAccess::Row { .. } => state
                .rooms
                .known_audience(&member.room)
                .flatten()
                .is_some_and(|audience| subscription.viewer.may_see(audience)),
        };
        if !stays {
            self.metrics.error(ErrorKind::Unauthorized);
            Self::put_out(state, id);
        }
    }

    /// Hands a room's messages to its members' connections.
    fn deliver_notes(state: &HubState, notes: Vec<Note>) {
        for (id, event, payload) in notes {
            let Some(subscription) = state.subscriptions.get(&id) else {
                continue;
            };
            if let Some(connection) = state.connections.get(&subscription.connection) {
                connection.handle.push(Outbound::Room {
                    channel: subscription.channel.clone(),
                    event,
                    payload,
                });
            }
        }
    }

    /// A broadcast goes to every member of its room but the channel that
    /// sent it (unless it asked for its own); a connection without room in
    /// its queue misses it (broadcasts are not kept).
    fn deliver_broadcast(&self, state: &HubState, broadcast: &Broadcast) {
        for id in state.rooms.members(&broadcast.room) {
            let Some(subscription) = state.subscriptions.get(&id) else {
                continue;
            };
            let Some(connection) = state.connections.get(&subscription.connection) else {
                continue;
            };
            let echo = subscription.room.as_ref().is_some_and(|m| m.echo);
            let own = broadcast.from
                == Some(Sender {
                    node: self.node,
                    connection: subscription.connection,
                });
            if own && !echo {
                continue;
            }
            if !connection.handle.has_room() {
                self.metrics.broadcasts_dropped.inc();
                continue;
            }
            connection.handle.push(Outbound::Room {
                channel: subscription.channel.clone(),
                event: protocol::BROADCAST,
                payload: broadcast.payload.clone(),
            });
            self.metrics.broadcasts_sent.inc();
        }
    }

    /// The room of a connection's channel, and who speaks in it: what a
    /// broadcast from it needs. `None` when the channel is not in a room.
    pub fn room_of(&self, connection: ConnectionId, topic: &str) -> Option<Room> {
        let state = self.lock();
        Self::member_id(&state, connection, topic)
            .and_then(|id| state.subscriptions.get(&id)?.room.as_ref())
            .map(|member| member.room.clone())
    }

    fn member_id(
        state: &HubState,
        connection: ConnectionId,
        topic: &str,
    ) -> Option<SubscriptionId> {
        state
            .connections
            .get(&connection)?
            .subscriptions
            .iter()
            .copied()
            .find(|id| {
                state
                    .subscriptions
                    .get(id)
                    .is_some_and(|s| s.channel.topic == topic && s.room.is_some())
            })
    }

    /// A channel tracks its presence (`meta`, a JSON object), under its
    /// person's id and with their name, whatever the client says. `false`
    /// when the channel is not in a room.
    pub fn track(
        &self,
        connection: ConnectionId,
        topic: &str,
        mut meta: serde_json::Map<String, serde_json::Value>,
    ) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(id) = Self::member_id(state, connection, topic) else {
            return false;
        };
        let Some(subscription) = state.subscriptions.get(&id) else {
            return false;
        };
        let Some(member) = subscription.room.clone() else {
            return false;
        };
        let key = subscription.viewer.user_id.to_string();
        meta.insert("user_id".into(), serde_json::Value::String(key.clone()));
        match &subscription.name {
            Some(name) => meta.insert(
                "user_name".into(),
                serde_json::Value::String(name.to_string()),
            ),
            None => meta.remove("user_name"),
        };
        meta.remove("phx_ref_prev");
        let notes = state.rooms.track(id, &member.room, key, meta);
        Self::deliver_notes(state, notes);
        true
    }

    /// A channel stops tracking. `false` when it is not in a room.
    pub fn untrack(&self, connection: ConnectionId, topic: &str) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(id) = Self::member_id(state, connection, topic) else {
            return false;
        };
        let Some(room) = state
            .subscriptions
            .get(&id)
            .and_then(|s| s.room.as_ref())
            .map(|m| m.room.clone())
        else {
            return false;
        };
        let notes = state.rooms.untrack(id, &room);
        Self::deliver_notes(state, notes);
        true
    }

    /// Which of these people have a connection to this server now.
    pub fn online(&self, people: &[Uuid]) -> Vec<Uuid> {
        let state = self.lock();
        people
            .iter()
            .copied()
            .filter(|person| state.connections_per_user.contains_key(person))
            .collect()
    }

    /// How many channels are in a room on this server.
    pub fn room_size(&self, room: &Room) -> usize {
        self.lock().rooms.member_count(room)
    }
}

/// A connection refused at the door, or closed because its credentials no
/// longer count.
#[derive(Debug, PartialEq, Eq)]
pub enum CloseOrRefuse {
    Refuse(Refusal),
    Close(CloseReason),
}

fn remove_from<K: std::hash::Hash + Eq, V: std::hash::Hash + Eq>(
    map: &mut HashMap<K, HashSet<V>>,
    key: K,
    value: V,
) {
    if let Some(set) = map.get_mut(&key) {
        set.remove(&value);
        if set.is_empty() {
            map.remove(&key);
        }
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(count) = map.get_mut(&key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(&key);
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

    use crate::access::{AccessKey, Audience};
    use crate::change::{Column, Table, Visibility};
    use crate::filter::SubscriptionFilter;
    use crate::protocol::ChangeKind;

    const BUYER: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);
    const STAFF: Uuid = Uuid::from_u128(3);
    const FACTORY: Uuid = Uuid::from_u128(10);

    fn caps() -> Caps {
        Caps {
            connections_per_user: 4,
            connections_per_address: 8,
            channels_per_user: 3,
            bindings_per_user: 5,
        }
    }

    fn hub(retention_changes: usize) -> Hub {
        let hub = Hub::new(
            StreamId(0),
            Retention {
                changes: retention_changes,
                age: Duration::from_secs(3600),
                bytes: usize::MAX,
            },
            caps(),
            Arc::new(Metrics::new()),
        );
        hub.start_at(ChangeCursor::end_of(0x100));
        hub.saw_wal_end(u64::MAX);
        hub
    }

    fn table() -> Arc<Table> {
        let column = |name: &str, type_name: &str| Column {
            name: name.into(),
            type_name: type_name.into(),
        };
        Arc::new(Table::new(
            "public",
            "orders",
            vec![
                column("id", "int4"),
                column("buyer_id", "uuid"),
                column("factory_id", "uuid"),
                column("quantity", "int4"),
            ],
            &["id".to_string()],
        ))
    }

    fn audience(row: &crate::change::RowView<'_>) -> Audience {
        let id = |c: &str| row.get(c).and_then(|v| v.parse().ok());
        Audience::of([
            id("buyer_id").map(AccessKey::Person),
            id("factory_id").map(AccessKey::Group),
        ])
    }

    fn row(buyer: Uuid, factory: Option<Uuid>, quantity: i32) -> crate::change::Row {
        vec![
            Some("7".into()),
            Some(buyer.to_string()),
            factory.map(|f| f.to_string()),
            Some(quantity.to_string()),
        ]
    }

    fn insert(lsn: u64, index: u32, buyer: Uuid, quantity: i32) -> Published {
        Published::Change(Change::new(
            ChangeCursor::new(lsn, index),
            now_micros(),
            table(),
            ChangeKind::Insert,
            Some(row(buyer, None, quantity)),
            None,
            audience,
        ))
    }

    fn update(lsn: u64, before: crate::change::Row, after: crate::change::Row) -> Published {
        Published::Change(Change::new(
            ChangeCursor::new(lsn, 0),
            now_micros(),
            table(),
            ChangeKind::Update,
            Some(after),
            Some(before),
            audience,
        ))
    }

    fn rights(lsn: u64, change: RightsChange) -> Published {
        Published::Rights {
            cursor: ChangeCursor::new(lsn, 0),
            commit_micros: now_micros(),
            change,
        }
    }

    fn principal(viewer: Viewer, session: Option<&str>) -> Principal {
        Principal {
            viewer,
            name: None,
            session: session.map(|s| SessionKey(s.into())),
            expires_at: None,
        }
    }

    /// A registered connection signed in (by cookie) as `viewer`.
    fn connection(
        hub: &Hub,
        id: u64,
        size: usize,
        viewer: Viewer,
    ) -> (Arc<ConnectionHandle>, ConnectionQueue) {
        let (handle, queue) = ConnectionHandle::new(id, size);
        let registered = hub.register(
            handle.clone(),
            None,
            Some((principal(viewer, Some("s")), hub.head())),
        );
        assert_eq!(registered, Ok(()));
        (handle, queue)
    }

    fn binding(filter: &str) -> Binding {
        Binding {
            id: 5,
            kind: None,
            table: Some("orders".into()),
            filter: filter
                .parse::<SubscriptionFilter>()
                .and_then(|f| {
                    f.compile(|column| match column {
                        "buyer_id" | "factory_id" => Some("uuid"),
                        "quantity" | "id" => Some("int4"),
                        _ => None,
                    })
                })
                .unwrap_or_default(),
            select: None,
        }
    }

    fn request(
        connection: &Arc<ConnectionHandle>,
        filter: &str,
        resume: Option<ChangeCursor>,
    ) -> SubscribeRequest {
        SubscribeRequest {
            connection: connection.id,
            channel: Arc::new(Channel {
                topic: format!("realtime:orders-{filter}"),
                join_ref: None,
            }),
            speaker: Speaker::Cookie,
            bindings: vec![binding(filter)],
            resume_after: resume,
            room: None,
        }
    }

    fn received(rx: &mut ConnectionQueue) -> Vec<(ChangeCursor, Visibility)> {
        let mut out = Vec::new();
        while let Some(item) = rx.try_recv() {
            if let Outbound::Change { delivery, .. } = item {
                out.push((delivery.change.cursor, delivery.visibility));
            }
        }
        out
    }

    fn cursors(rx: &mut ConnectionQueue) -> Vec<ChangeCursor> {
        received(rx).into_iter().map(|(c, _)| c).collect()
    }

    #[test]
    fn a_subscriber_gets_only_rows_it_may_see_and_asked_for() {
        let hub = hub(100);
        let (conn, mut rx) = connection(&hub, 1, 16, Viewer::person(BUYER));
        assert!(
            hub.subscribe(request(&conn, "quantity=gt.10", None), |_| vec![])
                .is_ok()
        );
        hub.publish(vec![
            insert(0x200, 0, BUYER, 50),
            insert(0x200, 1, OTHER, 50),
            insert(0x200, 2, BUYER, 5),
        ]);
        assert_eq!(cursors(&mut rx), vec![ChangeCursor::new(0x200, 0)]);
    }

    #[test]
    fn the_join_reply_is_queued_before_any_change() {
        let hub = hub(100);
        let (conn, mut rx) = connection(&hub, 1, 16, Viewer::person(BUYER));
        assert!(
            hub.subscribe(request(&conn, "", None), |_| vec!["reply".into()])
                .is_ok()
        );
        hub.publish(vec![insert(0x200, 0, BUYER, 1)]);
        assert!(matches!(rx.try_recv(), Some(Outbound::Text(text)) if text == "reply"));
        assert!(matches!(rx.try_recv(), Some(Outbound::Change { .. })));
    }

    #[test]
    fn replayed_changes_are_not_delivered_twice() {
        let hub = hub(100);
        let (conn, mut rx) = connection(&hub, 1, 16, Viewer::person(BUYER));
        assert!(hub.subscribe(request(&conn, "", None), |_| vec![]).is_ok());
        hub.publish(vec![insert(0x200, 0, BUYER, 1)]);
        hub.publish(vec![insert(0x200, 0, BUYER, 1), insert(0x300, 0, BUYER, 1)]);
        assert_eq!(
            cursors(&mut rx),
            vec![ChangeCursor::new(0x200, 0), ChangeCursor::new(0x300, 0)]
        );
    }

    #[test]
    fn a_restarted_server_replaying_its_log_sends_history_to_no_one_who_joins_now() {
        let hub = hub(100);
        // started with the WAL at 0x500; the log is rebuilt from 0x100
        hub.started_at(0x500);
        assert_eq!(hub.live_head(), ChangeCursor::end_of(0x500));
        let (fresh, mut fresh_rx) = connection(&hub, 1, 16, Viewer::person(BUYER));
        let Ok(joined) = hub.subscribe(request(&fresh, "", None), |_| vec![]) else {
            panic!("subscribe failed")
        };
        assert_eq!(joined.position, ChangeCursor::end_of(0x500));
        // a page rendered before the restart resumes from its cursor
        let (resumed, mut resumed_rx) = connection(&hub, 2, 16, Viewer::person(BUYER));
        let resume = Some(ChangeCursor::new(0x200, 0));
        assert!(
            hub.subscribe(request(&resumed, "", resume), |_| vec![])
                .is_ok()
        );
        hub.publish(vec![insert(0x200, 0, BUYER, 1), insert(0x300, 0, BUYER, 1)]);
        hub.publish(vec![insert(0x500, 0, BUYER, 1), insert(0x600, 0, BUYER, 1)]);
        assert_eq!(cursors(&mut fresh_rx), vec![ChangeCursor::new(0x600, 0)]);
        assert_eq!(
            cursors(&mut resumed_rx),
            vec![
                ChangeCursor::new(0x300, 0),
                ChangeCursor::new(0x500, 0),
                ChangeCursor::new(0x600, 0)
            ]
        );
        assert_eq!(hub.live_head(), ChangeCursor::new(0x600, 0));
    }

    #[test]
    fn resuming_catches_up_exactly_then_turns_live() {
        let hub = hub(100);
        for lsn in 1..=10u64 {
            hub.publish(vec![insert(0x1000 + lsn, 0, BUYER, 1)]);
        }
        let (conn, mut rx) = connection(&hub, 1, 64, Viewer::person(BUYER));
        let resume = Some(ChangeCursor::new(0x1004, 0));
        let Ok(subscribed) = hub.subscribe(request(&conn, "", resume), |_| vec![]) else {
            panic!("subscribe failed")
        };
        assert!(subscribed.catching_up && !subscribed.reset);
        hub.publish(vec![insert(0x2000, 0, BUYER, 1)]);
        assert!(cursors(&mut rx).is_empty(), "not live before catching up");
        let mut caught = Vec::new();
        loop {
            match hub.catch_up(subscribed.id, 2) {
                CatchUp::Batch { changes, done } => {
                    caught.extend(changes.into_iter().map(|d| d.change.cursor.lsn));
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
        hub.publish(vec![insert(0x3000, 0, BUYER, 1)]);
        assert_eq!(cursors(&mut rx), vec![ChangeCursor::new(0x3000, 0)]);
    }

    #[test]
    fn a_cursor_older_than_the_log_gets_a_reset() {
        let hub = hub(3);
        for lsn in 1..=10u64 {
            hub.publish(vec![insert(0x1000 + lsn, 0, BUYER, 1)]);
        }
        let (conn, _rx) = connection(&hub, 1, 16, Viewer::person(BUYER));
        let subscribed = hub.subscribe(
            request(&conn, "", Some(ChangeCursor::new(0x1002, 0))),
            |_| vec![],
        );
        assert!(matches!(subscribed, Ok(s) if s.reset && !s.catching_up));
        let fresh = hub.subscribe(
            request(&conn, "", Some(ChangeCursor::new(0x1008, 0))),
            |_| vec![],
        );
        assert!(matches!(fresh, Ok(s) if !s.reset && s.catching_up));
    }

    #[test]
    fn a_full_queue_cuts_off_only_that_connection() {
        let hub = hub(100);
        let (slow, _slow_rx) = connection(&hub, 1, 1, Viewer::person(BUYER));
        let (fast, mut fast_rx) = connection(&hub, 2, 64, Viewer::person(BUYER));
        assert!(hub.subscribe(request(&slow, "", None), |_| vec![]).is_ok());
        assert!(hub.subscribe(request(&fast, "", None), |_| vec![]).is_ok());
        for lsn in 1..=5u64 {
            hub.publish(vec![insert(0x1000 + lsn, 0, BUYER, 1)]);
        }
        assert!(slow.is_closing());
        assert_eq!(cursors(&mut fast_rx).len(), 5);
        assert_eq!(hub.subscription_count(), 1);
    }

    #[test]
    fn unsubscribing_and_ending_release_everything() {
        let hub = hub(100);
        let (conn, mut rx) = connection(&hub, 1, 16, Viewer::person(BUYER));
        assert!(hub.subscribe(request(&conn, "", None), |_| vec![]).is_ok());
        hub.unsubscribe(1, "realtime:orders-");
        assert_eq!(hub.subscription_count(), 0);
        hub.publish(vec![insert(0x200, 0, BUYER, 1)]);
        assert!(cursors(&mut rx).is_empty());
        assert!(hub.subscribe(request(&conn, "", None), |_| vec![]).is_ok());
        hub.remove_connection(1);
        assert_eq!(hub.subscription_count(), 0);
        let state = hub.lock();
        assert!(state.connections.is_empty() && state.by_user.is_empty());
        assert!(state.by_session.is_empty() && state.connections_per_user.is_empty());
    }

    #[test]
    fn an_update_that_moves_a_row_is_a_delete_for_the_old_side_and_a_move_in_for_the_new() {
        let hub = hub(100);
        let (old_side, mut old_rx) = connection(&hub, 1, 16, Viewer::person(BUYER));
        let (new_side, mut new_rx) = connection(&hub, 2, 16, Viewer::person(OTHER));
        let (factory, mut factory_rx) =
            connection(&hub, 3, 16, Viewer::person(STAFF).in_group(FACTORY));
        for conn in [&old_side, &new_side, &factory] {
            assert!(hub.subscribe(request(conn, "", None), |_| vec![]).is_ok());
        }
        hub.publish(vec![update(
            0x200,
            row(BUYER, Some(FACTORY), 5),
            row(OTHER, Some(FACTORY), 6),
        )]);
        assert_eq!(
            received(&mut old_rx),
            vec![(ChangeCursor::new(0x200, 0), Visibility::MovedOut)]
        );
        assert_eq!(
            received(&mut new_rx),
            vec![(ChangeCursor::new(0x200, 0), Visibility::MovedIn)]
        );
        assert_eq!(
            received(&mut factory_rx),
            vec![(ChangeCursor::new(0x200, 0), Visibility::Full)]
        );
    }

    #[test]
    fn a_change_of_rights_narrows_every_later_change_and_says_so() {
        let hub = hub(100);
        let staff = Viewer::person(STAFF).in_group(FACTORY);
        let (conn, mut rx) = connection(&hub, 1, 16, staff);
        assert!(hub.subscribe(request(&conn, "", None), |_| vec![]).is_ok());
        let order = |lsn| {
            Published::Change(Change::new(
                ChangeCursor::new(lsn, 0),
                now_micros(),
                table(),
                ChangeKind::Insert,
                Some(row(BUYER, Some(FACTORY), 1)),
                None,
                audience,
            ))
        };
        // one transaction: a change seen under the old rights, the change
        // of rights, and a change after it
        hub.publish(vec![
            order(0x200),
            rights(0x201, RightsChange::Viewer(Viewer::person(STAFF))),
            order(0x202),
        ]);
        let mut items = Vec::new();
        while let Some(item) = rx.try_recv() {
            items.push(item);
        }
        assert!(
            matches!(&items[0], Outbound::Change { delivery, .. } if delivery.change.cursor.lsn == 0x200)
        );
        assert!(matches!(
            &items[1],
            Outbound::Notice {
                notice: Notice::RightsChanged { .. },
                ..
            }
        ));
        assert_eq!(items.len(), 2, "nothing after the change of rights");
    }

    #[test]
    fn the_end_of_a_session_closes_its_connections_from_that_change_on() {
        let hub = hub(100);
        let (conn, mut rx) = connection(&hub, 1, 16, Viewer::person(BUYER));
        let (token_conn, mut token_rx) = ConnectionHandle::new(2, 16);
        assert_eq!(hub.register(token_conn.clone(), None, None), Ok(()));
        let token = SubscribeRequest {
            speaker: Speaker::Token {
                principal: principal(Viewer::person(BUYER), None),
                as_of: hub.head(),
            },
            ..request(&token_conn, "", None)
        };
        assert!(hub.subscribe(token, |_| vec![]).is_ok());
        assert!(hub.subscribe(request(&conn, "", None), |_| vec![]).is_ok());
        hub.publish(vec![
            rights(
                0x200,
                RightsChange::SessionEnded(SessionKey("s".into()), SessionEnd::SignedOut),
            ),
            insert(0x201, 0, BUYER, 1),
        ]);
        assert!(conn.is_closing());
        assert!(cursors(&mut rx).is_empty());
        assert!(!token_conn.is_closing(), "a token is not the session");
        assert_eq!(cursors(&mut token_rx), vec![ChangeCursor::new(0x201, 0)]);
        hub.publish(vec![
            rights(0x300, RightsChange::UserRemoved(BUYER)),
            insert(0x301, 0, BUYER, 1),
        ]);
        assert!(token_conn.is_closing());
        assert!(cursors(&mut token_rx).is_empty());
    }

    #[test]
    fn a_lookup_made_before_a_change_of_rights_is_corrected_by_it() {
        let hub = hub(100);
        let before = hub.head();
        hub.publish(vec![
            rights(
                0x200,
                RightsChange::SessionEnded(SessionKey("s".into()), SessionEnd::SignedOut),
            ),
            rights(0x201, RightsChange::Viewer(Viewer::person(OTHER))),
            rights(0x202, RightsChange::UserRemoved(STAFF)),
        ]);
        // the cookie was looked up before the sign-out reached the hub
        let (signed_out, _) = ConnectionHandle::new(1, 16);
        assert_eq!(
            hub.register(
                signed_out,
                None,
                Some((principal(Viewer::person(BUYER), Some("s")), before))
            ),
            Err(CloseOrRefuse::Close(CloseReason::SignedOut))
        );
        // a token of someone whose rights changed: the hub's rights count
        let (conn, _) = ConnectionHandle::new(2, 16);
        assert_eq!(hub.register(conn.clone(), None, None), Ok(()));
        let widened = SubscribeRequest {
            speaker: Speaker::Token {
                principal: principal(Viewer::everything(OTHER), None),
                as_of: before,
            },
            ..request(&conn, "", None)
        };
        assert!(hub.subscribe(widened, |_| vec![]).is_ok());
        assert_eq!(
            hub.lock()
                .subscriptions
                .values()
                .next()
                .map(|s| s.viewer.clone()),
            Some(Viewer::person(OTHER))
        );
        let removed = SubscribeRequest {
            speaker: Speaker::Token {
                principal: principal(Viewer::person(STAFF), None),
                as_of: before,
            },
            ..request(&conn, "x", None)
        };
        assert!(matches!(
            hub.subscribe(removed, |_| vec![]),
            Err(SubscribeError::Refused(_))
        ));
    }

    #[test]
    fn one_user_cannot_hold_more_than_their_caps() {
        let hub = hub(100);
        let mut connections = Vec::new();
        for id in 0..4 {
            connections.push(connection(&hub, id, 16, Viewer::person(BUYER)));
        }
        let (fifth, _) = ConnectionHandle::new(9, 16);
        assert!(matches!(
            hub.register(
                fifth,
                None,
                Some((principal(Viewer::person(BUYER), None), hub.head()))
            ),
            Err(CloseOrRefuse::Refuse(Refusal(ErrorKind::Limited, _)))
        ));
        let conn = &connections[0].0;
        for filter in ["", "quantity=gt.1", "quantity=gt.2"] {
            assert!(
                hub.subscribe(request(conn, filter, None), |_| vec![])
                    .is_ok()
            );
        }
        assert!(matches!(
            hub.subscribe(request(conn, "quantity=gt.3", None), |_| vec![]),
            Err(SubscribeError::Refused(Refusal(ErrorKind::Limited, _)))
        ));
        hub.remove_connection(0);
        let too_many_bindings = SubscribeRequest {
            bindings: vec![binding(""); 6],
            ..request(&connections[1].0, "", None)
        };
        assert!(matches!(
            hub.subscribe(too_many_bindings, |_| vec![]),
            Err(SubscribeError::Refused(Refusal(ErrorKind::Limited, _)))
        ));
    }

    #[test]
    fn a_cursor_of_another_stream_or_from_the_future_gets_a_reset() {
        let hub = Hub::new(
            StreamId(7),
            Retention {
                changes: 100,
                age: Duration::from_secs(3600),
                bytes: usize::MAX,
            },
            caps(),
            Arc::new(Metrics::new()),
        );
        hub.start_at(ChangeCursor::end_of(0x100));
        hub.saw_wal_end(0x5000);
        let (conn, _rx) = connection(&hub, 1, 16, Viewer::person(BUYER));
        let ours = ChangeCursor::new(0x200, 0).in_stream(StreamId(7));
        for (cursor, reset) in [
            (ours, false),
            (ChangeCursor::new(0x200, 0).in_stream(StreamId(8)), true),
            (ChangeCursor::new(0x9000, 0).in_stream(StreamId(7)), true),
        ] {
            let subscribed = hub.subscribe(request(&conn, "", Some(cursor)), |_| vec![]);
            assert!(matches!(subscribed, Ok(s) if s.reset == reset), "{cursor}");
        }
        let read = hub.read_after(
            &Viewer::person(BUYER),
            &[binding("")],
            ChangeCursor::new(0x9000, 0).in_stream(StreamId(7)),
            ChangeCursor::new(0x9000, 0),
            10,
        );
        assert!(matches!(read, PollRead::Reset { .. }));
    }

    #[test]
    fn a_poll_reads_nothing_past_the_point_its_rights_were_looked_up() {
        let hub = hub(100);
        for lsn in 1..=5u64 {
            hub.publish(vec![insert(0x1000 + lsn, 0, BUYER, 1)]);
        }
        let read = hub.read_after(
            &Viewer::person(BUYER),
            &[binding("")],
            ChangeCursor::new(0x1001, 0),
            ChangeCursor::new(0x1003, 0),
            100,
        );
        let PollRead::Changes { changes, position } = read else {
            panic!("no reset expected");
        };
        let got: Vec<u64> = changes.iter().map(|d| d.change.cursor.lsn).collect();
        assert_eq!(got, vec![0x1002, 0x1003]);
        assert_eq!(position, ChangeCursor::new(0x1003, 0));
    }
}
