//! The replication slot: this server's place in PostgreSQL's change stream.
//! Each app server on a database has its own; slots of servers that are
//! gone are dropped once they hold too much WAL.

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
    name.truncate(63);
    name
}

/// Makes sure the slot exists; returns its confirmed position.
pub async fn ensure_slot(pool: &PgPool, slot: &str) -> Result<u64, CaptureError> {
    let existing: Option<(Option<String>, String, Option<String>)> = sqlx::query_as(
        "select confirmed_flush_lsn::text, plugin::text, database::text from pg_replication_slots where slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    let lsn = match existing {
        Some((lsn, plugin, database)) => {
            let current: String = sqlx::query_scalar("select current_database()::text")
                .fetch_one(pool)
                .await?;
            if plugin != "pgoutput" || database.as_deref() != Some(current.as_str()) {
                return Err(CaptureError::Target(format!(
                    "replication slot {slot} exists but is not a pgoutput slot of database {current}; \
                     set THREADLINE_REALTIME_SLOT to another name"
                )));
            }
            lsn
        }
        None => {
            tracing::info!(slot, "creating the logical replication slot");
            sqlx::query_scalar(
                "select lsn::text from pg_create_logical_replication_slot($1, 'pgoutput')",
            )
            .bind(slot)
            .fetch_one(pool)
            .await?
        }
    };
    let lsn = lsn.ok_or_else(|| {
        CaptureError::Target(format!("replication slot {slot} has no confirmed position"))
    })?;
    Lsn::parse(&lsn)
        .map(Lsn::as_u64)
        .map_err(|e| CaptureError::Target(format!("bad LSN {lsn}: {e:?}")))
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
/// not make PostgreSQL keep WAL without bound.
pub async fn drop_stale_slots(
    pool: &PgPool,
    own: &str,
    max_lag_bytes: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let stale: Vec<String> = sqlx::query_scalar(
        "select slot_name::text from pg_replication_slots \
         where slot_name like 'threadline\\_%' and slot_name <> $1 and not active \
           and database = current_database() and slot_type = 'logical' \
           and pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) > $2",
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
        assert!(default_slot_name(&"x".repeat(100)).len() <= 63);
    }
}
