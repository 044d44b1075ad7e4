//! Replication slots: this server's place in PostgreSQL's change stream,
//! and PostgreSQL's WAL as the durable copy of the retention log.
//!
//! Each server has two logical slots. The *stream* slot is read and
//! acknowledged as soon as changes are in the hub, so it holds almost no WAL
//! and never stalls a PostgreSQL shutdown (a walsender waits for its client
//! to confirm what it sent). The *log* slot is never read: it is advanced
//! (`pg_replication_slot_advance`) to the oldest transaction the retention
//! log keeps, so PostgreSQL keeps the WAL of the whole window. When the
//! server starts — after a clean stop or a crash — the stream slot is
//! replaced by a copy of the log slot, and streaming from it rebuilds the
//! retention log: every client resumes exactly from its cursor.
//!
//! Costs, in PostgreSQL: the WAL of the retention window (bounded by
//! `max_slot_wal_keep_size`), and decoding the WAL twice (the stream, and the
//! log slot's advance every few seconds). A slot PostgreSQL invalidated is
//! reported, dropped and made again; what it lost is lost, and clients are
//! told to refetch.

use pgwire_replication::Lsn;
use sqlx::PgPool;

use crate::capture::CaptureError;

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
    name.truncate(MAX_STREAM_SLOT_NAME);
    name
}

/// Longest stream slot name: its log slot adds `_log` within PostgreSQL's 63.
pub const MAX_STREAM_SLOT_NAME: usize = 59;
const LOG_SUFFIX: &str = "_log";

/// The log slot that goes with a stream slot.
pub fn log_slot_name(stream: &str) -> String {
    format!("{stream}{LOG_SUFFIX}")
}

/// A slot as `pg_replication_slots` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    pub confirmed: Option<u64>,
    pub active: bool,
    /// `reserved`, `extended`, `unreserved` or `lost` (invalidated).
    pub wal_status: Option<String>,
}

impl SlotState {
    pub fn is_lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost") || self.confirmed.is_none()
    }
}

fn lsn(text: &str) -> Result<u64, CaptureError> {
    Lsn::parse(text)
        .map(Lsn::as_u64)
        .map_err(|e| CaptureError::Target(format!("bad LSN {text}: {e:?}")))
}

fn pg_lsn(value: u64) -> String {
    Lsn::from_u64(value).to_pg_string()
}

/// A row of `pg_replication_slots`: confirmed position, active, wal_status,
/// plugin, database, and the current database.
type SlotRow = (
    Option<String>,
    bool,
    Option<String>,
    String,
    Option<String>,
    String,
);

/// A slot of this database, if it exists.
pub async fn slot_state(pool: &PgPool, slot: &str) -> Result<Option<SlotState>, CaptureError> {
    let row: Option<SlotRow> = sqlx::query_as(
        "select confirmed_flush_lsn::text, active, wal_status, plugin::text, database::text, \
                    current_database()::text \
             from pg_replication_slots where slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    let Some((confirmed, active, wal_status, plugin, database, current)) = row else {
        return Ok(None);
    };
    if plugin != "pgoutput" || database.as_deref() != Some(current.as_str()) {
        return Err(CaptureError::Target(format!(
            "replication slot {slot} exists but is not a pgoutput slot of database {current}; \
             set THREADLINE_REALTIME_SLOT to another name"
        )));
    }
    Ok(Some(SlotState {
        confirmed: confirmed.as_deref().map(lsn).transpose()?,
        active,
        wal_status,
    }))
}

async fn create_slot(pool: &PgPool, slot: &str) -> Result<u64, CaptureError> {
    tracing::info!(slot, "creating the logical replication slot");
    let position: String = sqlx::query_scalar(
        "select lsn::text from pg_create_logical_replication_slot($1, 'pgoutput')",
    )
    .bind(slot)
    .fetch_one(pool)
    .await?;
    lsn(&position)
}

async fn copy_slot(pool: &PgPool, from: &str, to: &str) -> Result<(), CaptureError> {
    sqlx::query("select pg_copy_logical_replication_slot($1, $2)")
        .bind(from)
        .bind(to)
        .execute(pool)
        .await?;
    Ok(())
}

/// Where streaming starts, and what the hub may know of what came before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamStart {
    /// Transactions committed at or after this position are streamed.
    pub from: u64,
    /// The stream slot had been invalidated: changes were lost.
    pub lost: bool,
}

/// Prepares the stream slot at start: a copy of the log slot when there is
/// one (so streaming rebuilds the retention log), else the stream slot as it
/// is (made if missing, made anew if PostgreSQL invalidated it); and a log
/// slot to go with it.
pub async fn prepare(pool: &PgPool, stream: &str) -> Result<StreamStart, CaptureError> {
    let log = log_slot_name(stream);
    let stream_state = inactive_state(pool, stream).await?;
    match slot_state(pool, &log).await? {
        Some(state) if !state.is_lost() => {
            if stream_state.is_some() {
                drop_slot(pool, stream).await?;
            }
            copy_slot(pool, &log, stream).await?;
            let from = state.confirmed.unwrap_or_default();
            tracing::info!(slot = stream, from = %pg_lsn(from), "rebuilding the retention log from the log slot");
            Ok(StreamStart { from, lost: false })
        }
        lost_log => {
            if lost_log.is_some() {
                tracing::warn!(
                    slot = log,
                    "the log slot was invalidated by PostgreSQL (max_slot_wal_keep_size): making it anew"
                );
                drop_slot(pool, &log).await?;
            }
            let start = ensure_stream_slot(pool, stream, stream_state).await?;
            copy_slot(pool, stream, &log).await?;
            Ok(start)
        }
    }
}

/// A slot's state once no process streams from it: after a crash,
/// PostgreSQL takes a moment to notice its walsender's client is gone.
async fn inactive_state(pool: &PgPool, slot: &str) -> Result<Option<SlotState>, CaptureError> {
    for _ in 0..100 {
        let state = slot_state(pool, slot).await?;
        if !state.as_ref().is_some_and(|s| s.active) {
            return Ok(state);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(CaptureError::Target(format!(
        "replication slot {slot} is in use by another process; \
         each app server needs its own (set THREADLINE_REALTIME_SLOT)"
    )))
}

/// The stream slot's position, made if missing, made anew if lost.
async fn ensure_stream_slot(
    pool: &PgPool,
    stream: &str,
    state: Option<SlotState>,
) -> Result<StreamStart, CaptureError> {
    match state {
        Some(state) if !state.is_lost() => Ok(StreamStart {
            from: state.confirmed.unwrap_or_default(),
            lost: false,
        }),
        Some(_) => {
            tracing::error!(
                slot = stream,
                "the replication slot was invalidated by PostgreSQL (max_slot_wal_keep_size): \
                 changes since were lost; making it anew, and every client will be told to refetch"
            );
            drop_slot(pool, stream).await?;
            Ok(StreamStart {
                from: create_slot(pool, stream).await?,
                lost: true,
            })
        }
        None => Ok(StreamStart {
            from: create_slot(pool, stream).await?,
            lost: false,
        }),
    }
}

/// On reconnecting: the stream slot's position, or a new slot (and log
/// slot) when PostgreSQL invalidated it.
pub async fn reconnect(pool: &PgPool, stream: &str) -> Result<StreamStart, CaptureError> {
    let state = slot_state(pool, stream).await?;
    let start = ensure_stream_slot(pool, stream, state).await?;
    if start.lost {
        let log = log_slot_name(stream);
        drop_slot(pool, &log).await?;
        copy_slot(pool, stream, &log).await?;
    }
    Ok(start)
}

/// Makes the log slot anew from the stream slot (after PostgreSQL
/// invalidated it): it keeps the WAL from where the stream is now.
pub async fn renew_log(pool: &PgPool, stream: &str) -> Result<(), CaptureError> {
    let log = log_slot_name(stream);
    drop_slot(pool, &log).await?;
    copy_slot(pool, stream, &log).await
}

/// Moves the log slot up to `position` (never back): PostgreSQL may then
/// recycle the WAL before it.
pub async fn advance_log(pool: &PgPool, stream: &str, position: u64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "select pg_replication_slot_advance(slot_name, $2::pg_lsn) from pg_replication_slots \
         where slot_name = $1 and not active and wal_status <> 'lost' \
           and confirmed_flush_lsn < $2::pg_lsn",
    )
    .bind(log_slot_name(stream))
    .bind(pg_lsn(position))
    .execute(pool)
    .await?;
    Ok(())
}

/// WAL each of this server's slots keeps, and its status, for the metrics.
pub async fn health(
    pool: &PgPool,
    stream: &str,
) -> Result<Vec<(String, i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "select slot_name::text, \
                coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::int8, \
                coalesce(wal_status, 'lost') \
         from pg_replication_slots where slot_name in ($1, $2)",
    )
    .bind(stream)
    .bind(log_slot_name(stream))
    .fetch_all(pool)
    .await
}

pub async fn drop_slot(pool: &PgPool, slot: &str) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1 and not active")
        .bind(slot)
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops inactive slots of other Threadline servers that hold more than
/// `max_lag_bytes` of WAL: a server that crashed and never came back must
/// not make PostgreSQL keep WAL without bound. A log slot counts as gone
/// only when its stream slot is inactive too (a running server's log slot
/// is never read, and holds its retention window on purpose).
pub async fn drop_stale_slots(
    pool: &PgPool,
    own: &str,
    max_lag_bytes: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let stale: Vec<String> = sqlx::query_scalar(
        "select s.slot_name::text from pg_replication_slots s \
         where s.slot_name like 'threadline\\_%' and s.slot_name not in ($1, $1 || '_log') \
           and not s.active and s.database = current_database() and s.slot_type = 'logical' \
           and (s.wal_status = 'lost' or pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn) > $2) \
           and not exists (select 1 from pg_replication_slots p \
                           where s.slot_name = p.slot_name || '_log' and p.active)",
    )
    .bind(own)
    .bind(max_lag_bytes)
    .fetch_all(pool)
    .await?;
    for slot in &stale {
        tracing::warn!(
            slot,
            "dropping a stale replication slot of a server that is gone"
        );
        drop_slot(pool, slot).await?;
    }
    Ok(stale)
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
        let long = default_slot_name(&"x".repeat(100));
        assert!(long.len() <= MAX_STREAM_SLOT_NAME);
        assert!(log_slot_name(&long).len() <= 63);
    }
}
