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
    capture: Option<Running>,
    next_id: AtomicU64,
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
        if slot.len() > 63
            || !slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(CaptureError::Target(format!(
                "replication slot name {slot:?} must be at most 63 lowercase letters, digits and underscores"
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
        let confirmed = slot::ensure_slot(&pool, &slot).await?;
        hub.saw_wal_end(wal_now);
        hub.start_at(start_floor(&pool, &slot, confirmed).await?);

        let (shutdown, shutdown_rx) = watch::channel(false);
        let capture = Capture {
            pool: pool.clone(),
            target,
            slot: slot.clone(),
            hub: hub.clone(),
            catalog: catalog.clone(),
            metrics: metrics.clone(),
            rules: ports.rules,
        };
        let mut tasks = vec![tokio::spawn(capture.run(shutdown_rx.clone()))];
        tasks.push(tokio::spawn(sweep_stale_slots(
            pool.clone(),
            slot.clone(),
            max_lag,
            shutdown_rx,
        )));
        Ok(Arc::new(Realtime {
            hub,
            catalog,
            metrics,
            settings,
            identity: ports.identity,
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
        Ok(Arc::new(Realtime {
            hub: Arc::new(hub),
            catalog: Arc::new(catalog),
            metrics,
            settings,
            identity: ports.identity,
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
            limits: Limits {
                max_frame_bytes: self.settings.max_frame_bytes,
                max_channels: self.settings.max_channels,
                max_bindings: self.settings.max_bindings_per_channel,
                messages_per_second: self.settings.messages_per_second,
                joins_per_second: self.settings.joins_per_second,
            },
        }
    }

    /// The newest change this server knows of: a page rendered now resumes
    /// from it, so nothing committed between rendering and subscribing is lost.
    pub fn head(&self) -> ChangeCursor {
        self.hub.head()
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
                    PollRead::Changes { changes, position } => PollResult {
                        topic: channel.topic,
                        more: changes.len() >= POLL_LIMIT,
                        events: changes
                            .iter()
                            .map(|d| d.change.payload_json(&d.ids, d.visibility))
                            .collect(),
                        cursor: position,
                        reset: false,
                    },
                },
            );
        }
        Ok(results)
    }

    /// Stops capturing and records how far the stream got, so clients of a
    /// restarted server resume exactly. The slot stays.
    pub async fn shutdown(&self) {
        let Some(running) = &self.capture else {
            return;
        };
        let _ = running.shutdown.send(true);
        let tasks = std::mem::take(&mut *running.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        let saved = sqlx::query(
            "insert into realtime_state (slot_name, head_cursor) values ($1, $2) \
             on conflict (slot_name) do update set head_cursor = excluded.head_cursor, stopped_at = now()",
        )
        .bind(&running.slot)
        .bind(self.hub.head().to_string())
        .execute(&running.pool)
        .await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "could not record the realtime position; clients will reset after restart");
        }
    }

    /// Stops and removes the slot (for tests and decommissioning).
    pub async fn shutdown_and_drop_slot(&self) -> Result<(), sqlx::Error> {
        self.shutdown().await;
        let Some(Running { slot, pool, .. }) = &self.capture else {
            return Ok(());
        };
        sqlx::query("delete from realtime_state where slot_name = $1")
            .bind(slot)
            .execute(pool)
            .await?;
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
    }
}

/// Where this server's knowledge of the stream starts. After a clean stop,
/// the head it recorded (everything after it is still in the slot, so it
/// replays); otherwise the slot's confirmed position, and anything at or
/// before it is unknown.
async fn start_floor(
    pool: &PgPool,
    slot: &str,
    confirmed: u64,
) -> Result<ChangeCursor, sqlx::Error> {
    let saved: Option<String> =
        sqlx::query_scalar("delete from realtime_state where slot_name = $1 returning head_cursor")
            .bind(slot)
            .fetch_optional(pool)
            .await?;
    Ok(
        match saved.and_then(|text| text.parse::<ChangeCursor>().ok()) {
            Some(head) if head.lsn >= confirmed => head,
            _ => ChangeCursor::end_of(confirmed),
        },
    )
}

async fn sweep_stale_slots(
    pool: PgPool,
    own: String,
    max_lag: i64,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = slot::drop_stale_slots(&pool, &own, max_lag).await {
            tracing::warn!(error = %e, "checking for stale replication slots failed");
        }
    }
}
