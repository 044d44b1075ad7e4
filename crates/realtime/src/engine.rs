//! The engine as a whole: start (catalog, slot, hub, capture, slot upkeep),
//! serve (sockets and polls), stop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::Viewer;
use crate::capture::{self, Capture, CaptureError, ReplicationTarget};
use crate::catalog::{Catalog, PUBLICATION};
use crate::cursor::ChangeCursor;
use crate::hub::{Caps, Hub, PollRead, Retention};
use crate::join::{Binding, Refusal};
use crate::metrics::{ErrorKind, Metrics};
use crate::poll::{POLL_LIMIT, PollChannel, PollResult};
use crate::ports::{Identity, Rules};
use crate::protocol::ChangeKind;
use crate::session::{Limits, SessionParts};
use crate::settings::RealtimeSettings;
use crate::slot;

/// What the app provides: see [`crate::ports`].
pub struct Ports {
    pub identity: Arc<dyn Identity>,
    pub rules: Arc<dyn Rules>,
}

pub struct Realtime {
    pub hub: Arc<Hub>,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
    pub settings: RealtimeSettings,
    pub identity: Arc<dyn Identity>,
    pub rules: Arc<dyn Rules>,
    /// For looking rows up and writing broadcasts.
    pub pool: PgPool,
    capture: Option<Running>,
    next_id: AtomicU64,
    /// HTTP broadcasts per person (a socket's are limited per connection).
    pub(crate) http_broadcasts: crate::broadcast::HttpLimiter,
}

/// The capture and its upkeep, while they run.
struct Running {
    slot: String,
    pool: PgPool,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Realtime {
    /// Loads the catalog, makes sure the slot exists (so the hub knows where
    /// the stream starts before any client joins), and starts capturing.
    pub async fn start(
        pool: PgPool,
        database_url: &str,
        settings: RealtimeSettings,
        ports: Ports,
    ) -> Result<Arc<Realtime>, CaptureError> {
        let target = ReplicationTarget::from_url(database_url)?;
        let slot = if settings.slot_name.trim().is_empty() {
            slot::default_slot_name(&target.database)
        } else {
            settings.slot_name.trim().to_string()
        };
        if slot.len() > slot::MAX_STREAM_SLOT_NAME
            || !slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(CaptureError::Target(format!(
                "replication slot name {slot:?} must be at most {} lowercase letters, digits and underscores",
                slot::MAX_STREAM_SLOT_NAME
            )));
        }
        let mut catalog = Catalog::load(&pool).await?;
        catalog.hide(ports.rules.rights_tables());
        let catalog = Arc::new(catalog);
        if catalog.is_empty() {
            return Err(CaptureError::Target(format!(
                "the publication {PUBLICATION} is missing or empty; run the migrations"
            )));
        }
        let metrics = Arc::new(Metrics::new());
        let (stream, wal_now) = capture::stream_of(&pool).await?;
        let hub = Arc::new(Hub::new(
            stream,
            retention(&settings),
            caps(&settings),
            metrics.clone(),
        ));
        let max_lag = settings.stale_slot_max_lag_mb.saturating_mul(1 << 20);
        slot::drop_stale_slots(&pool, &slot, max_lag).await?;
        // streaming starts where the retention log must start: at the log
        // slot, so the log is rebuilt and every client resumes exactly
        let start = slot::prepare(&pool, &slot).await?;
        hub.saw_wal_end(wal_now);
        hub.started_at(wal_now);
        hub.start_at(ChangeCursor::before(start.from));
        if start.lost {
            metrics.error(ErrorKind::SlotLost);
        }

        let processed = Arc::new(AtomicU64::new(start.from));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let capture = Capture {
            pool: pool.clone(),
            target,
            slot: slot.clone(),
            hub: hub.clone(),
            catalog: catalog.clone(),
            metrics: metrics.clone(),
            rules: ports.rules.clone(),
            processed: processed.clone(),
        };
        let upkeep = SlotUpkeep {
            pool: pool.clone(),
            slot: slot.clone(),
            hub: hub.clone(),
            metrics: metrics.clone(),
            processed,
            max_lag,
        };
        let tasks = vec![
            tokio::spawn(capture.run(shutdown_rx.clone())),
            tokio::spawn(upkeep.run(shutdown_rx)),
        ];
        Ok(Arc::new(Realtime {
            hub,
            catalog,
            metrics,
            http_broadcasts: crate::broadcast::http_limiter(settings.broadcasts_per_second),
            settings,
            identity: ports.identity,
            rules: ports.rules,
            pool: pool.clone(),
            capture: Some(Running {
                slot,
                pool,
                shutdown,
                tasks: Mutex::new(tasks),
            }),
            next_id: AtomicU64::new(1),
        }))
    }

    /// An engine that captures nothing: it serves sockets and polls from a
    /// hub nothing feeds. For tests of an app's pages and APIs that need no
    /// live changes (and no replication slot to clean up).
    pub async fn without_capture(
        pool: &PgPool,
        settings: RealtimeSettings,
        ports: Ports,
    ) -> Result<Arc<Realtime>, CaptureError> {
        let metrics = Arc::new(Metrics::new());
        let mut catalog = Catalog::load(pool).await?;
        catalog.hide(ports.rules.rights_tables());
        let (stream, wal_now) = capture::stream_of(pool).await?;
        let hub = Hub::new(
            stream,
            retention(&settings),
            caps(&settings),
            metrics.clone(),
        );
        hub.saw_wal_end(wal_now);
        hub.started_at(wal_now);
        Ok(Arc::new(Realtime {
            hub: Arc::new(hub),
            catalog: Arc::new(catalog),
            metrics,
            http_broadcasts: crate::broadcast::http_limiter(settings.broadcasts_per_second),
            settings,
            identity: ports.identity,
            rules: ports.rules,
            pool: pool.clone(),
            capture: None,
            next_id: AtomicU64::new(1),
        }))
    }

    /// This server's replication slot, when it captures.
    pub fn slot(&self) -> Option<&str> {
        self.capture.as_ref().map(|running| running.slot.as_str())
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// What a connection's protocol session uses of the engine.
    pub fn session_parts(&self) -> SessionParts {
        SessionParts {
            hub: self.hub.clone(),
            catalog: self.catalog.clone(),
            metrics: self.metrics.clone(),
            rules: self.rules.clone(),
            limits: Limits {
                max_frame_bytes: self.settings.max_frame_bytes,
                max_channels: self.settings.max_channels,
                max_bindings: self.settings.max_bindings_per_channel,
                messages_per_second: self.settings.messages_per_second,
                joins_per_second: self.settings.joins_per_second,
                broadcasts_per_second: self.settings.broadcasts_per_second,
                presence_per_second: self.settings.presence_per_second,
            },
        }
    }

    /// Where a page rendered now resumes, so nothing committed between
    /// rendering and subscribing is lost: the newest change this server knows
    /// of, and never before what was committed when it started (a restarted
    /// server may still be replaying that into its log).
    pub fn head(&self) -> ChangeCursor {
        self.hub.live_head()
    }

    /// The polling fallback: for each channel, the changes after its cursor
    /// that `viewer` may see and its bindings match, up to `until` — the
    /// head before `viewer` was looked up, so no change committed after a
    /// change of their rights is judged by the rights from before it. The
    /// same caps hold as on a socket.
    pub fn poll(
        &self,
        viewer: &Viewer,
        until: ChangeCursor,
        channels: Vec<PollChannel>,
    ) -> Result<Vec<PollResult>, Refusal> {
        let settings = &self.settings;
        if channels.len() > settings.max_channels.min(settings.max_channels_per_user) {
            return Err(Refusal(
                ErrorKind::TooManyChannels,
                format!(
                    "at most {} channels per poll",
                    settings.max_channels.min(settings.max_channels_per_user)
                ),
            ));
        }
        let bindings: usize = channels.iter().map(|c| c.bindings.len()).sum();
        if channels
            .iter()
            .any(|c| c.bindings.len() > settings.max_bindings_per_channel)
            || bindings > settings.max_bindings_per_user
        {
            return Err(Refusal(
                ErrorKind::Limited,
                format!(
                    "at most {} postgres_changes bindings per channel and {} per poll",
                    settings.max_bindings_per_channel, settings.max_bindings_per_user
                ),
            ));
        }
        let mut results = Vec::with_capacity(channels.len());
        for channel in channels {
            let bindings = Binding::all_from_requests(1, &channel.bindings, &self.catalog)?;
            let Some(cursor) = channel.cursor else {
                results.push(PollResult {
                    topic: channel.topic,
                    events: Vec::new(),
                    cursor: until,
                    reset: true,
                    more: false,
                });
                continue;
            };
            results.push(
                match self
                    .hub
                    .read_after(viewer, &bindings, cursor, until, POLL_LIMIT)
                {
                    PollRead::Reset { head } => {
                        self.metrics.resets.inc();
                        PollResult {
                            topic: channel.topic,
                            events: Vec::new(),
                            cursor: head,
                            reset: true,
                            more: false,
                        }
                    }
                    PollRead::Changes { changes, position } => {
                        // a table emptied: what came before, then a refetch from there
                        let truncated = changes
                            .last()
                            .is_some_and(|d| d.change.kind == ChangeKind::Truncate);
                        PollResult {
                            topic: channel.topic,
                            more: changes.len() >= POLL_LIMIT,
                            events: changes
                                .iter()
                                .filter(|d| d.change.kind != ChangeKind::Truncate)
                                .map(|d| d.payload_json())
                                .collect(),
                            cursor: position,
                            reset: truncated,
                        }
                    }
                },
            );
        }
        Ok(results)
    }

    /// Stops capturing; the slots stay (with the log slot advanced as far
    /// as retention allows), so a restarted server rebuilds the retention
    /// log and its clients resume exactly.
    pub async fn shutdown(&self) {
        let Some(running) = &self.capture else {
            return;
        };
        let _ = running.shutdown.send(true);
        let tasks = std::mem::take(&mut *running.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Stops and removes the slots (for tests and decommissioning).
    pub async fn shutdown_and_drop_slot(&self) -> Result<(), sqlx::Error> {
        self.shutdown().await;
        let Some(Running { slot, pool, .. }) = &self.capture else {
            return Ok(());
        };
        slot::drop_slot(pool, &slot::log_slot_name(slot)).await?;
        // the walsender may take a moment to release the slot after the stream closes
        for _ in 0..50 {
            let active: Option<bool> =
                sqlx::query_scalar("select active from pg_replication_slots where slot_name = $1")
                    .bind(slot)
                    .fetch_optional(pool)
                    .await?;
            match active {
                None => return Ok(()),
                Some(false) => return slot::drop_slot(pool, slot).await,
                Some(true) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        slot::drop_slot(pool, slot).await
    }
}

/// Keeps the slots right while the server runs: the log slot follows the
/// retention log (every few seconds, and once more at shutdown), slots of
/// servers that are gone are dropped (every minute), and the slots' WAL and
/// status are in the metrics.
struct SlotUpkeep {
    pool: PgPool,
    slot: String,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// How far the stream slot is acknowledged.
    processed: Arc<AtomicU64>,
    max_lag: i64,
}

impl SlotUpkeep {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => {
                    self.advance_log().await;
                    return;
                }
            }
            ticks += 1;
            self.advance_log().await;
            match slot::health(&self.pool, &self.slot).await {
                Ok(slots) => self.metrics.slot_health(&slots),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the replication slots' health failed")
                }
            }
            if ticks.is_multiple_of(12)
                && let Err(e) = slot::drop_stale_slots(&self.pool, &self.slot, self.max_lag).await
            {
                tracing::warn!(error = %e, "checking for stale replication slots failed");
            }
        }
    }

    /// Moves the log slot to the oldest transaction the retention log keeps
    /// (or, with nothing kept, to what the stream has processed).
    async fn advance_log(&self) {
        let processed = self.processed.load(Ordering::Relaxed);
        let target = self
            .hub
            .oldest_retained()
            .map_or(processed, |oldest| oldest.lsn.min(processed));
        if let Err(e) = slot::advance_log(&self.pool, &self.slot, target).await {
            tracing::warn!(error = %e, "advancing the log slot failed");
        }
    }
}

fn caps(settings: &RealtimeSettings) -> Caps {
    Caps {
        connections_per_user: settings.max_connections_per_user.max(1),
        connections_per_address: settings.max_connections_per_address.max(1),
        channels_per_user: settings.max_channels_per_user.max(1),
        bindings_per_user: settings.max_bindings_per_user.max(1),
    }
}

fn retention(settings: &RealtimeSettings) -> Retention {
    Retention {
        changes: settings.retention_changes.max(1),
        age: Duration::from_secs(settings.retention_minutes.max(1).saturating_mul(60)),
        bytes: usize::try_from(settings.retention_mb.max(1).saturating_mul(1 << 20))
            .unwrap_or(usize::MAX),
    }
}
