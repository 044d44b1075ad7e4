//! Capture: row changes of the published tables from PostgreSQL's logical
//! decoding (pgoutput), in commit order, from any writer.
//!
//! Commits reach the hub through the visibility gate (a change is published
//! only once queries see it). Each commit is acknowledged to the slot once
//! the hub has it, and idle
//! keepalives move the slot along, so the slot never holds WAL for us
//! longer than it takes to process it (a walsender waiting for an
//! acknowledgement would also stall a PostgreSQL shutdown). After a
//! PostgreSQL restart or a dropped connection the stream reconnects with
//! backoff and resumes from the slot; transactions the hub already has are
//! skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pg_walstream::{LogicalReplicationMessage, LogicalReplicationParser, TupleData};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use super::change::{Change, Column, Row, Table};
use super::cursor::ChangeCursor;
use super::hub::Hub;
use super::metrics::{ErrorKind, Metrics};
use super::protocol::ChangeKind;
use super::visibility::{self, Gate, Step};

pub const PUBLICATION: &str = "threadline_realtime";

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{0}")]
    Target(String),
    #[error("database query failed: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("replication stream failed: {0}")]
    Stream(#[from] pgwire_replication::PgWireError),
    #[error("cannot decode a pgoutput message: {0}")]
    Decode(String),
    #[error("the replication stream ended")]
    Ended,
}

/// Where the replication connection goes (from the database URL).
#[derive(Clone, Debug)]
pub struct ReplicationTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
}

impl ReplicationTarget {
    pub fn from_url(text: &str) -> Result<ReplicationTarget, CaptureError> {
        let url = url::Url::parse(text)
            .map_err(|e| CaptureError::Target(format!("DATABASE_URL is not a URL: {e}")))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(CaptureError::Target(
                "DATABASE_URL must start with postgres://".into(),
            ));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let query = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        if query("sslmode")
            .is_some_and(|mode| matches!(mode.as_str(), "require" | "verify-ca" | "verify-full"))
        {
            return Err(CaptureError::Target(
                "realtime capture connects without TLS; use sslmode=disable or prefer for a local or private-network database".into(),
            ));
        }
        Ok(ReplicationTarget {
            host: query("host")
                .or_else(|| url.host_str().map(str::to_string))
                .unwrap_or_else(|| "localhost".into()),
            port: url.port().unwrap_or(5432),
            user: decode(url.username()),
            password: url.password().map(decode).unwrap_or_default(),
            database: url.path().trim_start_matches('/').to_string(),
        })
    }
}

/// Column types of the published tables, for validating filters and
/// naming the types of decoded columns.
#[derive(Debug, Default)]
pub struct Catalog {
    pub tables: HashMap<String, Vec<Column>>,
}

impl Catalog {
    pub async fn load(pool: &PgPool) -> Result<Catalog, sqlx::Error> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "select p.tablename::text, a.attname::text, t.typname::text \
             from pg_publication_tables p \
             join pg_namespace n on n.nspname = p.schemaname \
             join pg_class c on c.relnamespace = n.oid and c.relname = p.tablename \
             join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped \
             join pg_type t on t.oid = a.atttypid \
             where p.pubname = $1 order by p.tablename, a.attnum",
        )
        .bind(PUBLICATION)
        .fetch_all(pool)
        .await?;
        let mut tables: HashMap<String, Vec<Column>> = HashMap::new();
        for (table, name, type_name) in rows {
            tables
                .entry(table)
                .or_default()
                .push(Column { name, type_name });
        }
        Ok(Catalog { tables })
    }

    pub fn column_type(&self, table: &str, column: &str) -> Option<&str> {
        self.tables
            .get(table)?
            .iter()
            .find(|c| c.name == column)
            .map(|c| c.type_name.as_str())
    }
}

fn builtin_type_name(oid: u32) -> Option<&'static str> {
    Some(match oid {
        16 => "bool",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        25 => "text",
        26 => "oid",
        114 => "json",
        700 => "float4",
        701 => "float8",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1184 => "timestamptz",
        1186 => "interval",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        _ => return None,
    })
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

pub struct Capture {
    pub pool: PgPool,
    pub target: ReplicationTarget,
    pub slot: String,
    pub hub: Arc<Hub>,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
}

/// A change decoded from a transaction, waiting for its commit.
struct Pending {
    table: Arc<Table>,
    kind: ChangeKind,
    new: Option<Row>,
    old: Option<Row>,
}

impl Capture {
    /// Streams until `shutdown` turns true, reconnecting after failures.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.stream(&mut shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.error(ErrorKind::Capture);
                    tracing::warn!(error = %e, retry_in = ?backoff, "realtime capture interrupted");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn stream(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), CaptureError> {
        let confirmed = ensure_slot(&self.pool, &self.slot).await?;
        if confirmed > self.hub.head().lsn {
            // The slot moved past what we processed (recreated, or advanced by
            // someone else): what lies between is lost, so older cursors reset.
            tracing::warn!(slot = %self.slot, "the replication slot is ahead of this server; older cursors will be reset");
            self.hub.start_at(ChangeCursor::end_of(confirmed));
        }
        let t = &self.target;
        let config = ReplicationConfig::new(
            &t.host,
            &t.user,
            &t.password,
            &t.database,
            &self.slot,
            PUBLICATION,
        )
        .with_port(t.port)
        .with_start_lsn(Lsn::from_u64(confirmed))
        .with_options("-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=1")
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(5))
        .with_application_name(format!("threadline realtime {}", self.slot));
        let client = ReplicationClient::connect(config).await?;
        let (steps, queued) = mpsc::channel(visibility::QUEUE);
        let (acked, published) = watch::channel(confirmed);
        let gate = Gate {
            pool: &self.pool,
            hub: &self.hub,
            metrics: &self.metrics,
        };
        tokio::select! {
            result = self.read(client, confirmed, steps, published, shutdown) => result,
            result = gate.run(queued, acked) => result.map_err(CaptureError::from),
        }
    }

    /// Decodes the stream into steps for the gate, and acknowledges to the
    /// slot what the gate has published.
    async fn read(
        &self,
        mut client: ReplicationClient,
        confirmed: u64,
        steps: mpsc::Sender<Step>,
        mut published: watch::Receiver<u64>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), CaptureError> {
        let mut parser = LogicalReplicationParser::with_protocol_version(1);
        let mut relations: HashMap<u32, Arc<Table>> = HashMap::new();
        let mut pending: Vec<Pending> = Vec::new();
        let mut xid = 0;
        let mut wal_end: u64 = confirmed;
        let mut connected = false;
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    client.stop();
                    return Ok(());
                }
                Ok(()) = published.changed() => {
                    let acked = *published.borrow_and_update();
                    client.update_applied_lsn(Lsn::from_u64(acked));
                    self.metrics
                        .replication_lag_bytes
                        .set(wal_end.saturating_sub(acked) as i64);
                    continue;
                }
                event = client.recv() => event?,
            };
            if !connected {
                connected = true;
                tracing::info!(slot = %self.slot, from = %Lsn::from_u64(confirmed).to_pg_string(), "realtime capture streaming");
            }
            let step = match event.ok_or(CaptureError::Ended)? {
                ReplicationEvent::Begin { xid: begun, .. } => {
                    pending.clear();
                    xid = begun;
                    None
                }
                ReplicationEvent::XLogData {
                    data, wal_end: end, ..
                } => {
                    wal_end = wal_end.max(end.as_u64());
                    let message = parser
                        .parse_wal_message(&data)
                        .map_err(|e| CaptureError::Decode(e.to_string()))?
                        .message;
                    self.decode(message, &mut relations, &mut pending)?;
                    None
                }
                ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                } => {
                    let commit_micros = commit_time_micros + PG_EPOCH_OFFSET_MICROS;
                    let end = end_lsn.as_u64();
                    wal_end = wal_end.max(end);
                    if pending.is_empty() {
                        Some(Step::Processed(end))
                    } else {
                        self.metrics.transactions_captured.inc();
                        let changes = pending
                            .drain(..)
                            .enumerate()
                            .map(|(index, p)| {
                                Change::new(
                                    ChangeCursor::new(end, index as u32),
                                    commit_micros,
                                    p.table,
                                    p.kind,
                                    p.new,
                                    p.old,
                                )
                            })
                            .collect();
                        Some(Step::Commit { xid, end, changes })
                    }
                }
                ReplicationEvent::KeepAlive { wal_end: end, .. } => {
                    wal_end = wal_end.max(end.as_u64());
                    self.hub.evict_expired();
                    // Between transactions, everything up to the server's WAL
                    // end is processed (the rest did not touch published tables).
                    pending.is_empty().then(|| Step::Processed(end.as_u64()))
                }
                ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => None,
            };
            if let Some(step) = step {
                // the gate only stops on an error, which ends the session
                if steps.send(step).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    fn decode(
        &self,
        message: LogicalReplicationMessage,
        relations: &mut HashMap<u32, Arc<Table>>,
        pending: &mut Vec<Pending>,
    ) -> Result<(), CaptureError> {
        let relation = |relations: &HashMap<u32, Arc<Table>>, id: u32| {
            relations
                .get(&id)
                .cloned()
                .ok_or_else(|| CaptureError::Decode(format!("change for unknown relation {id}")))
        };
        match message {
            LogicalReplicationMessage::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                ..
            } => {
                let columns = columns
                    .iter()
                    .map(|c| Column {
                        name: c.name.to_string(),
                        type_name: self
                            .catalog
                            .column_type(&relation_name, &c.name)
                            .or_else(|| builtin_type_name(c.type_id))
                            .unwrap_or("text")
                            .to_string(),
                    })
                    .collect();
                relations.insert(
                    relation_id,
                    Arc::new(Table::new(&namespace, &relation_name, columns)),
                );
            }
            LogicalReplicationMessage::Insert { relation_id, tuple } => {
                let table = relation(relations, relation_id)?;
                pending.push(Pending {
                    table,
                    kind: ChangeKind::Insert,
                    new: Some(row(&tuple, None)),
                    old: None,
                });
            }
            LogicalReplicationMessage::Update {
                relation_id,
                old_tuple,
                new_tuple,
                ..
            } => {
                let table = relation(relations, relation_id)?;
                let old = old_tuple.map(|t| row(&t, None));
                let new = row(&new_tuple, old.as_ref());
                pending.push(Pending {
                    table,
                    kind: ChangeKind::Update,
                    new: Some(new),
                    old,
                });
            }
            LogicalReplicationMessage::Delete {
                relation_id,
                old_tuple,
                ..
            } => {
                let table = relation(relations, relation_id)?;
                pending.push(Pending {
                    table,
                    kind: ChangeKind::Delete,
                    new: None,
                    old: Some(row(&old_tuple, None)),
                });
            }
            LogicalReplicationMessage::Truncate { .. } => {
                tracing::warn!(
                    "a published table was truncated; subscribers are not told (no row events)"
                );
            }
            _ => {}
        }
        Ok(())
    }
}

/// Text values of a tuple. An unchanged TOASTed value in a new row is taken
/// from the old row (complete under REPLICA IDENTITY FULL).
fn row(tuple: &TupleData, old: Option<&Row>) -> Row {
    tuple
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            if column.is_null() {
                None
            } else if column.is_unchanged() {
                old.and_then(|o| o.get(i).cloned().flatten())
            } else {
                column.as_str().map(|s| s.into_owned())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_becomes_a_replication_target() {
        let target = ReplicationTarget::from_url(
            "postgres://thread%20line:p%40ss@127.0.0.1:54329/threadline?sslmode=disable",
        );
        let target = target.ok();
        assert_eq!(
            target.as_ref().map(|t| t.user.as_str()),
            Some("thread line")
        );
        assert_eq!(target.as_ref().map(|t| t.password.as_str()), Some("p@ss"));
        assert_eq!(
            target.as_ref().map(|t| (t.host.as_str(), t.port)),
            Some(("127.0.0.1", 54329))
        );
        assert_eq!(target.map(|t| t.database), Some("threadline".to_string()));
        assert!(ReplicationTarget::from_url("mysql://x").is_err());
        assert!(ReplicationTarget::from_url("postgres://h/db?sslmode=require").is_err());
    }
}
