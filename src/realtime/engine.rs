//! Starting and stopping the engine: catalog, hub, capture, slot upkeep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::capture::{self, Capture, CaptureError, Catalog, ReplicationTarget};
use super::cursor::ChangeCursor;
use super::hub::{Hub, HubSettings};
use super::metrics::Metrics;
use crate::server::settings::RealtimeSettings;

pub struct Realtime {
    pub hub: Arc<Hub>,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
    pub settings: RealtimeSettings,
    pub slot: String,
    pool: PgPool,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
}

/// `threadline_<database>`, as a valid slot name.
pub fn default_slot_name(database: &str) -> String {
    let mut name: String = format!("threadline_{database}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(63);
    name
}

impl Realtime {
    /// Loads the catalog, makes sure the slot exists (so the hub knows where
    /// the stream starts before any client joins), and starts capturing.
    pub async fn start(
        pool: PgPool,
        database_url: &str,
        settings: RealtimeSettings,
    ) -> Result<Arc<Realtime>, CaptureError> {
        let target = ReplicationTarget::from_url(database_url)?;
        let slot = if settings.slot_name.trim().is_empty() {
            default_slot_name(&target.database)
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
        let catalog = Arc::new(Catalog::load(&pool).await?);
        if catalog.tables.is_empty() {
            return Err(CaptureError::Target(format!(
                "the publication {} is missing or empty; run the migrations",
                capture::PUBLICATION
            )));
        }
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::new(
            HubSettings {
                retention_changes: settings.retention_changes.max(1),
                retention: Duration::from_secs(settings.retention_minutes.max(1) * 60),
            },
            metrics.clone(),
        ));
        let max_lag = settings.stale_slot_max_lag_mb.saturating_mul(1 << 20);
        capture::drop_stale_slots(&pool, &slot, max_lag).await?;
        let confirmed = capture::ensure_slot(&pool, &slot).await?;
        hub.start_at(start_floor(&pool, &slot, confirmed).await?);

        let (shutdown, shutdown_rx) = watch::channel(false);
        let capture = Capture {
            pool: pool.clone(),
            target,
            slot: slot.clone(),
            hub: hub.clone(),
            catalog: catalog.clone(),
            metrics: metrics.clone(),
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
            slot,
            pool,
            shutdown,
            tasks: Mutex::new(tasks),
            next_id: AtomicU64::new(1),
        }))
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops capturing and records how far the stream got, so clients of a
    /// restarted server resume exactly. The slot stays.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        let saved = sqlx::query(
            "insert into realtime_state (slot_name, head_cursor) values ($1, $2) \
             on conflict (slot_name) do update set head_cursor = excluded.head_cursor, stopped_at = now()",
        )
        .bind(&self.slot)
        .bind(self.hub.head().to_string())
        .execute(&self.pool)
        .await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "could not record the realtime position; clients will reset after restart");
        }
    }

    /// Stops and removes the slot (for tests and decommissioning).
    pub async fn shutdown_and_drop_slot(&self) -> Result<(), sqlx::Error> {
        self.shutdown().await;
        sqlx::query("delete from realtime_state where slot_name = $1")
            .bind(&self.slot)
            .execute(&self.pool)
            .await?;
        // the walsender may take a moment to release the slot after the stream closes
        for _ in 0..50 {
            let active: Option<bool> =
                sqlx::query_scalar("select active from pg_replication_slots where slot_name = $1")
                    .bind(&self.slot)
                    .fetch_optional(&self.pool)
                    .await?;
            match active {
                None => return Ok(()),
                Some(false) => return capture::drop_slot(&self.pool, &self.slot).await,
                Some(true) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        capture::drop_slot(&self.pool, &self.slot).await
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
        if let Err(e) = capture::drop_stale_slots(&pool, &own, max_lag).await {
            tracing::warn!(error = %e, "checking for stale replication slots failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_derive_from_the_database() {
        assert_eq!(default_slot_name("threadline"), "threadline_threadline");
        assert_eq!(
            default_slot_name("_sqlx_test_42"),
            "threadline__sqlx_test_42"
        );
        assert_eq!(default_slot_name("My-DB"), "threadline_my_db");
        assert!(default_slot_name(&"x".repeat(100)).len() <= 63);
    }
}
