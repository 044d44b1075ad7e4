//! Between capture and hub: a transaction's changes are published only once
//! new snapshots see it.
//!
//! PostgreSQL writes a commit to the WAL (from where logical decoding
//! streams it) a moment before it lets other sessions see the transaction.
//! A subscriber that refetches on a change in that moment reads the old rows
//! and would stay stale until the next change; under CPU pressure the moment
//! lasts milliseconds. So commits pass through this gate: it asks PostgreSQL
//! which of their transaction ids are still running (one query for all the
//! commits that arrived meanwhile), waits while any is, then publishes them
//! in commit order and reports how far the slot may be acknowledged.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, watch};

use crate::hub::{Hub, Published};
use crate::metrics::Metrics;

/// Changes handed to the hub under one lock, and per slice of a large
/// transaction.
pub const SLICE: usize = 512;
/// Steps checked with one query.
const BATCH: usize = 256;
/// Steps waiting for the gate before the stream pauses: with slices, at
/// most `QUEUE * SLICE` changes wait in memory.
pub const QUEUE: usize = BATCH;

/// What the capture hands over, in WAL order.
pub enum Step {
    /// A whole transaction with changes of the published tables.
    Commit {
        xid: u32,
        commit_micros: i64,
        end: u64,
        changes: Vec<Published>,
    },
    /// A large transaction starts: its slices follow once it is visible.
    Begin { xid: u32 },
    /// Changes of the large transaction that began last.
    Slice(Vec<Published>),
    /// The large transaction ended here.
    End(u64),
    /// Everything up to this WAL position is processed (nothing to publish).
    Processed(u64),
    /// Published as is, in order: nothing to wait for (a broadcast sent
    /// outside any transaction).
    Now(Vec<Published>),
}

pub struct Gate<'a> {
    pub pool: &'a PgPool,
    pub hub: &'a Hub,
    pub metrics: &'a Metrics,
}

impl Gate<'_> {
    /// Publishes steps as they become visible; `acked` follows the WAL
    /// position up to which everything is in the hub. Ends when the sender
    /// is dropped, or with the error of a failed query (nothing unpublished
    /// was acknowledged, so the stream replays it).
    pub async fn run(
        &self,
        mut steps: mpsc::Receiver<Step>,
        acked: watch::Sender<u64>,
    ) -> Result<(), sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        let mut batch = Vec::with_capacity(BATCH);
        while steps.recv_many(&mut batch, BATCH).await > 0 {
            let xids: Vec<u32> = batch
                .iter()
                .filter_map(|step| match step {
                    Step::Commit { xid, .. } | Step::Begin { xid } => Some(*xid),
                    Step::Slice(_) | Step::End(_) | Step::Processed(_) | Step::Now(_) => None,
                })
                .collect();
            if !xids.is_empty() {
                let waits = wait_visible(&mut connection, &xids).await?;
                self.metrics.visibility_waits.inc_by(u64::from(waits));
            }
            let mut position = *acked.borrow();
            for step in batch.drain(..) {
                match step {
                    Step::Commit {
                        end,
                        changes,
                        commit_micros,
                        ..
                    } => {
                        self.hub.publish(changes);
                        self.metrics
                            .commit_to_publish_seconds
                            .observe(crate::metrics::seconds_since(commit_micros));
                        position = position.max(end);
                    }
                    Step::Begin { .. } => {}
                    Step::Slice(changes) | Step::Now(changes) => self.hub.publish(changes),
                    Step::End(end) | Step::Processed(end) => position = position.max(end),
                }
            }
            acked.send_replace(position);
        }
        Ok(())
    }
}

/// Returns once every transaction of `xids` (as pgoutput gives them: 32-bit)
/// is seen by a fresh snapshot, so new queries see what they committed, and
/// how many times it had to wait.
pub async fn wait_visible(connection: &mut PgConnection, xids: &[u32]) -> Result<u32, sqlx::Error> {
    let mut waits = 0;
    let mut pause = Duration::from_micros(100);
    loop {
        let text: String = sqlx::query_scalar("select pg_current_snapshot()::text")
            .fetch_one(&mut *connection)
            .await?;
        let snapshot = Snapshot::parse(&text).ok_or_else(|| {
            sqlx::Error::Protocol(format!("unexpected snapshot from PostgreSQL: {text}"))
        })?;
        if xids.iter().all(|xid| snapshot.sees(*xid)) {
            return Ok(waits);
        }
        waits += 1;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A `pg_snapshot` (`xmin:xmax:xip,...`): which transactions it sees.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// The first transaction id not yet completed when it was taken.
    xmax: u64,
    /// Transactions below `xmax` still running then.
    running: Vec<u64>,
}

impl Snapshot {
    fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.trim().split(':');
        let _xmin: u64 = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        parts.next().is_none().then_some(Snapshot { xmax, running })
    }

    /// Whether a committed transaction is visible: it completed before the
    /// snapshot was taken (below `xmax`, and not among the running ones).
    fn sees(&self, xid: u32) -> bool {
        let full = self.widen(xid);
        full < self.xmax && !self.running.contains(&full)
    }

    /// The 64-bit transaction id with these low 32 bits nearest to `xmax`
    /// (a transaction being decoded is never 2^31 ids away from it).
    fn widen(&self, xid: u32) -> u64 {
        const EPOCH: u64 = 1 << 32;
        const HALF: u64 = 1 << 31;
        let candidate = (self.xmax & !(EPOCH - 1)) | u64::from(xid);
        if candidate > self.xmax + HALF {
            candidate.saturating_sub(EPOCH)
        } else if candidate + HALF < self.xmax {
            candidate + EPOCH
        } else {
            candidate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Snapshot;

    #[test]
    fn snapshots_parse() {
        assert_eq!(
            Snapshot::parse("10:20:12,15"),
            Some(Snapshot {
                xmax: 20,
                running: vec![12, 15]
            })
        );
        assert_eq!(
            Snapshot::parse("20:20:"),
            Some(Snapshot {
                xmax: 20,
                running: vec![]
            })
        );
        assert_eq!(Snapshot::parse("20:20"), None);
        assert_eq!(Snapshot::parse("a:20:"), None);
        assert_eq!(Snapshot::parse("1:20:x"), None);
    }

    #[test]
    fn a_transaction_is_seen_once_completed_before_the_snapshot() {
        let snapshot = Snapshot::parse("10:20:12,15").expect("parses");
        assert!(snapshot.sees(11));
        assert!(snapshot.sees(19));
        assert!(!snapshot.sees(12), "still running");
        assert!(!snapshot.sees(20), "not completed when it was taken");
        assert!(!snapshot.sees(25));
    }

    #[test]
    fn thirty_two_bit_ids_widen_across_an_epoch() {
        // xmax just past an epoch boundary
        let epoch = 1u64 << 32;
        let snapshot = Snapshot {
            xmax: epoch + 5,
            running: vec![epoch - 2],
        };
        assert!(snapshot.sees(u32::MAX), "the last id of the previous epoch");
        assert!(
            !snapshot.sees(u32::MAX - 1),
            "running, from the previous epoch"
        );
        assert!(snapshot.sees(3));
        assert!(!snapshot.sees(7));
        // xmax just before one
        let snapshot = Snapshot {
            xmax: epoch - 3,
            running: vec![],
        };
        assert!(
            !snapshot.sees(1),
            "an id of the next epoch is not completed"
        );
        assert!(snapshot.sees(u32::MAX - 10));
    }
}
