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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pg_walstream::{LogicalReplicationMessage, LogicalReplicationParser, TupleData};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use crate::broadcast;
use crate::catalog::{Catalog, PUBLICATION, builtin_type_name};
use crate::change::{Change, Column, Row, RowView, Table};
use crate::cursor::{ChangeCursor, StreamId};
use crate::hub::{Broadcast, Hub, Published};
use crate::metrics::{ErrorKind, Metrics};
use crate::ports::{RightsRow, Rules};
use crate::protocol::ChangeKind;
use crate::slot;
use crate::visibility::{self, Gate, Step};

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

/// Which stream this database's changes are ([`StreamId`]), and how far its
/// WAL has been written now.
pub async fn stream_of(pool: &PgPool) -> Result<(StreamId, u64), CaptureError> {
    let (system, timeline, database, wal): (String, i32, i64, String) = sqlx::query_as(
        "select (select system_identifier::text from pg_control_system()), \
                (select timeline_id from pg_control_checkpoint()), \
                (select oid::int8 from pg_database where datname = current_database()), \
                pg_current_wal_lsn()::text",
    )
    .fetch_one(pool)
    .await?;
    let wal = Lsn::parse(&wal)
        .map(Lsn::as_u64)
        .map_err(|e| CaptureError::Target(format!("bad LSN {wal}: {e:?}")))?;
    let stream = StreamId::of(
        &system,
        u32::try_from(timeline).unwrap_or_default(),
        u32::try_from(database).unwrap_or_default(),
    );
    Ok((stream, wal))
}

pub struct Capture {
    pub pool: PgPool,
    pub target: ReplicationTarget,
    pub slot: String,
    pub hub: Arc<Hub>,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
    pub rules: Arc<dyn Rules>,
    /// How far the stream slot is acknowledged (everything before it is in the hub).
    pub processed: Arc<AtomicU64>,
}

/// The transaction being decoded. Its changes' cursors carry the LSN of its
/// commit record (known from its first message), so they can go on before
/// its end when it is large.
struct Transaction {
    xid: u32,
    commit_lsn: u64,
    commit_micros: i64,
    pending: Vec<Decoded>,
    next_index: u32,
    /// Its changes are going on in slices.
    streaming: bool,
}

/// What a transaction holds for the hub, waiting to be published.
enum Decoded {
    Row(Pending),
    Broadcast(Broadcast),
}

/// A change decoded from a transaction, waiting to be published.
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
        let start = slot::reconnect(&self.pool, &self.slot).await?;
        let floor = ChangeCursor::before(start.from);
        if start.lost {
            // PostgreSQL dropped WAL this server had not read: what lies
            // between is gone, so every client must refetch
            self.metrics.error(ErrorKind::SlotLost);
            self.hub.reset_all(floor);
        } else if floor > self.hub.head() {
            // The slot moved past what we processed (advanced by someone
            // else): what lies between is lost, so older cursors reset.
            tracing::warn!(slot = %self.slot, "the replication slot is ahead of this server; older cursors will be reset");
            self.hub.start_at(floor);
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
        .with_start_lsn(Lsn::from_u64(start.from))
        .with_options("-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=1")
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(5))
        .with_application_name(format!("threadline realtime {}", self.slot));
        let client = ReplicationClient::connect(config).await?;
        let (steps, queued) = mpsc::channel(visibility::QUEUE);
        let (acked, published) = watch::channel(start.from);
        let gate = Gate {
            pool: &self.pool,
            hub: &self.hub,
            metrics: &self.metrics,
        };
        tokio::select! {
            result = self.read(client, start.from, steps, published, shutdown) => result,
            result = gate.run(queued, acked) => result.map_err(CaptureError::from),
        }
    }

    /// Decodes the stream into steps for the gate, and acknowledges to the
    /// slot what the gate has published. A transaction's changes are held
    /// until its commit, unless it is large: then they go on in slices (the
    /// gate publishes them once the transaction is visible), so memory does
    /// not grow with the transaction.
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
        let mut tx: Option<Transaction> = None;
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
                    self.processed.fetch_max(acked, Ordering::Relaxed);
                    self.metrics
                        .replication_lag_bytes
                        .set(i64::try_from(wal_end.saturating_sub(acked)).unwrap_or(i64::MAX));
                    continue;
                }
                event = client.recv() => event?,
            };
            if !connected {
                connected = true;
                tracing::info!(slot = %self.slot, from = %Lsn::from_u64(confirmed).to_pg_string(), "realtime capture streaming");
            }
            let mut out: Vec<Step> = Vec::new();
            match event.ok_or(CaptureError::Ended)? {
                ReplicationEvent::Begin {
                    final_lsn,
                    xid,
                    commit_time_micros,
                } => {
                    tx = Some(Transaction {
                        xid,
                        commit_lsn: final_lsn.as_u64(),
                        commit_micros: commit_time_micros.saturating_add(PG_EPOCH_OFFSET_MICROS),
                        pending: Vec::new(),
                        next_index: 0,
                        streaming: false,
                    });
                }
                ReplicationEvent::XLogData {
                    data, wal_end: end, ..
                } => {
                    wal_end = wal_end.max(end.as_u64());
                    self.hub.saw_wal_end(wal_end);
                    let message = parser
                        .parse_wal_message(&data)
                        .map_err(|e| CaptureError::Decode(e.to_string()))?
                        .message;
                    let mut scratch = Vec::new();
                    let pending = tx.as_mut().map_or(&mut scratch, |tx| &mut tx.pending);
                    self.decode(message, &mut relations, pending)?;
                    if let Some(tx) = tx.as_mut()
                        && tx.pending.len() >= visibility::SLICE
                    {
                        if !tx.streaming {
                            tx.streaming = true;
                            out.push(Step::Begin { xid: tx.xid });
                        }
                        out.push(Step::Slice(self.publishable(tx)));
                    }
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    let end = end_lsn.as_u64();
                    wal_end = wal_end.max(end);
                    if let Some(mut tx) = tx.take() {
                        if tx.streaming {
                            out.push(Step::Slice(self.publishable(&mut tx)));
                            out.push(Step::End(end));
                        } else if tx.pending.is_empty() {
                            out.push(Step::Processed(end));
                        } else {
                            self.metrics.transactions_captured.inc();
                            self.metrics
                                .commit_to_capture_seconds
                                .observe(crate::metrics::seconds_since(tx.commit_micros));
                            out.push(Step::Commit {
                                xid: tx.xid,
                                commit_micros: tx.commit_micros,
                                end,
                                changes: self.publishable(&mut tx),
                            });
                        }
                    } else {
                        out.push(Step::Processed(end));
                    }
                }
                ReplicationEvent::KeepAlive { wal_end: end, .. } => {
                    wal_end = wal_end.max(end.as_u64());
                    self.hub.saw_wal_end(wal_end);
                    self.hub.evict_expired();
                    // Between transactions, everything up to the server's WAL
                    // end is processed (the rest did not touch published tables).
                    if tx.is_none() {
                        out.push(Step::Processed(end.as_u64()));
                    }
                }
                ReplicationEvent::Message {
                    transactional,
                    lsn,
                    prefix,
                    content,
                } if prefix == broadcast::PREFIX => {
                    match broadcast::decode_emitted(&content, self.rules.as_ref()) {
                        Ok(message) => match tx.as_mut() {
                            // after the transaction's commit, with its changes
                            Some(tx) if transactional => {
                                tx.pending.push(Decoded::Broadcast(message))
                            }
                            _ => {
                                let cursor =
                                    ChangeCursor::new(lsn.as_u64(), 0).in_stream(self.hub.stream());
                                out.push(Step::Now(vec![Published::Broadcast {
                                    cursor,
                                    broadcast: message,
                                }]));
                            }
                        },
                        Err(reason) => {
                            self.metrics.error(ErrorKind::BadPayload);
                            tracing::warn!(%reason, "a broadcast message in the WAL was dropped");
                        }
                    }
                }
                ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
            }
            for step in out {
                // the gate only stops on an error, which ends the session
                if steps.send(step).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// The transaction's decoded changes so far, as the hub takes them.
    fn publishable(&self, tx: &mut Transaction) -> Vec<Published> {
        let stream = self.hub.stream();
        let mut out = Vec::with_capacity(tx.pending.len());
        for decoded in tx.pending.drain(..) {
            let cursor = ChangeCursor::new(tx.commit_lsn, tx.next_index).in_stream(stream);
            tx.next_index = tx.next_index.saturating_add(1);
            match decoded {
                Decoded::Row(p) => out.extend(self.published(cursor, tx.commit_micros, p)),
                Decoded::Broadcast(broadcast) => {
                    out.push(Published::Broadcast { cursor, broadcast })
                }
            }
        }
        out
    }

    /// A decoded row change as the hub takes it: a change for subscribers,
    /// or what a change of a rights table means.
    fn published(&self, cursor: ChangeCursor, commit_micros: i64, p: Pending) -> Option<Published> {
        if !self.catalog.is_subscribable(&p.table.name) {
            let rights = RightsRow {
                kind: p.kind,
                old: p.old.as_ref().map(|row| RowView::new(&p.table, row)),
                new: p.new.as_ref().map(|row| RowView::new(&p.table, row)),
                commit_micros,
            };
            return self.rules.rights(&rights).map(|change| Published::Rights {
                cursor,
                commit_micros,
                change,
            });
        }
        Some(Published::Change(Change::new(
            cursor,
            commit_micros,
            p.table,
            p.kind,
            p.new,
            p.old,
            |row| self.rules.audience(row),
        )))
    }

    fn decode(
        &self,
        message: LogicalReplicationMessage,
        relations: &mut HashMap<u32, Arc<Table>>,
        pending: &mut Vec<Decoded>,
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
                let primary_key = self.catalog.primary_key(&relation_name);
                relations.insert(
                    relation_id,
                    Arc::new(Table::new(&namespace, &relation_name, columns, primary_key)),
                );
            }
            LogicalReplicationMessage::Insert { relation_id, tuple } => {
                let table = relation(relations, relation_id)?;
                pending.push(Decoded::Row(Pending {
                    table,
                    kind: ChangeKind::Insert,
                    new: Some(row(&tuple, None)),
                    old: None,
                }));
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
                pending.push(Decoded::Row(Pending {
                    table,
                    kind: ChangeKind::Update,
                    new: Some(new),
                    old,
                }));
            }
            LogicalReplicationMessage::Delete {
                relation_id,
                old_tuple,
                ..
            } => {
                let table = relation(relations, relation_id)?;
                pending.push(Decoded::Row(Pending {
                    table,
                    kind: ChangeKind::Delete,
                    new: None,
                    old: Some(row(&old_tuple, None)),
                }));
            }
            LogicalReplicationMessage::Truncate { relation_ids, .. } => {
                for relation_id in relation_ids {
                    pending.push(Decoded::Row(Pending {
                        table: relation(relations, relation_id)?,
                        kind: ChangeKind::Truncate,
                        new: None,
                        old: None,
                    }));
                }
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
