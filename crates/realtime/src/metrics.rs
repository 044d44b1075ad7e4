//! Prometheus metrics of the realtime engine, served at `GET /metrics`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ErrorKind {
    BadJson,
    BadPayload,
    UnknownTopic,
    UnknownEvent,
    UnknownTable,
    InvalidFilter,
    Unauthorized,
    ExpiredToken,
    OversizeFrame,
    TooManyChannels,
    Limited,
    Capture,
    /// PostgreSQL invalidated a slot of this server: changes were lost.
    SlotLost,
    /// The database could not take a broadcast.
    Unavailable,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: ErrorKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlotLabels {
    pub slot: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlotStatusLabels {
    pub slot: String,
    pub wal_status: String,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub subscriptions: Gauge,
    pub changes_captured: Counter,
    pub transactions_captured: Counter,
    pub messages_sent: Counter,
    pub commit_to_send_seconds: Histogram,
    /// The stages before the send: the capture has the commit decoded, and
    /// the visibility gate has handed it to the hub.
    pub commit_to_capture_seconds: Histogram,
    pub commit_to_publish_seconds: Histogram,
    pub replication_lag_bytes: Gauge,
    pub resumes: Counter,
    pub resets: Counter,
    pub slow_consumer_closes: Counter,
    pub visibility_waits: Counter,
    pub broadcasts_sent: Counter,
    pub broadcasts_dropped: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    /// WAL each slot keeps (bytes from its restart position to the WAL's end).
    pub slot_retained_wal_bytes: Family<SlotLabels, Gauge>,
    /// 1 for each slot's current `wal_status`, 0 for the others.
    pub slot_wal_status: Family<SlotStatusLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Seconds from `commit_micros` (microseconds since the Unix epoch) to now.
pub fn seconds_since(commit_micros: i64) -> f64 {
    let now = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000)
        .unwrap_or(i64::MAX);
    now.saturating_sub(commit_micros).max(0) as f64 / 1e6
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("threadline_realtime");
        let metrics = Metrics {
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            changes_captured: Counter::default(),
            transactions_captured: Counter::default(),
            messages_sent: Counter::default(),
            commit_to_send_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            commit_to_capture_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            commit_to_publish_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            replication_lag_bytes: Gauge::default(),
            resumes: Counter::default(),
            resets: Counter::default(),
            slow_consumer_closes: Counter::default(),
            visibility_waits: Counter::default(),
            broadcasts_sent: Counter::default(),
            broadcasts_dropped: Counter::default(),
            errors: Family::default(),
            slot_retained_wal_bytes: Family::default(),
            slot_wal_status: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "subscriptions",
            "Live and catching-up channel subscriptions",
            metrics.subscriptions.clone(),
        );
        registry.register(
            "changes_captured",
            "Row changes captured from PostgreSQL",
            metrics.changes_captured.clone(),
        );
        registry.register(
            "transactions_captured",
            "Transactions with published changes captured from PostgreSQL",
            metrics.transactions_captured.clone(),
        );
        registry.register(
            "messages_sent",
            "postgres_changes events written to sockets",
            metrics.messages_sent.clone(),
        );
        registry.register(
            "commit_to_send_seconds",
            "Time from a change's commit to its event being written to a socket",
            metrics.commit_to_send_seconds.clone(),
        );
        registry.register(
            "commit_to_capture_seconds",
            "Time from a transaction's commit to the capture having it decoded",
            metrics.commit_to_capture_seconds.clone(),
        );
        registry.register(
            "commit_to_publish_seconds",
            "Time from a transaction's commit to the hub having it (visible to new snapshots)",
            metrics.commit_to_publish_seconds.clone(),
        );
        registry.register(
            "replication_lag_bytes",
            "WAL bytes between the server's WAL end and the last change processed",
            metrics.replication_lag_bytes.clone(),
        );
        registry.register(
            "resumes",
            "Joins that asked to resume from a cursor",
            metrics.resumes.clone(),
        );
        registry.register(
            "resets",
            "Resumes refused because the cursor was older than the retention log",
            metrics.resets.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Connections closed because their queue was full",
            metrics.slow_consumer_closes.clone(),
        );
        registry.register(
            "visibility_waits",
            "Times committed transactions were held back because queries could not see them yet",
            metrics.visibility_waits.clone(),
        );
        registry.register(
            "broadcasts_sent",
            "Broadcasts queued for room members",
            metrics.broadcasts_sent.clone(),
        );
        registry.register(
            "broadcasts_dropped",
            "Broadcasts a member missed because its queue was full",
            metrics.broadcasts_dropped.clone(),
        );
        registry.register(
            "errors",
            "Errors by kind (bad input and capture failures)",
            metrics.errors.clone(),
        );
        registry.register(
            "slot_retained_wal_bytes",
            "WAL bytes each of this server's replication slots keeps",
            metrics.slot_retained_wal_bytes.clone(),
        );
        registry.register(
            "slot_wal_status",
            "Each replication slot's wal_status (reserved, extended, unreserved, lost): 1 for the current one",
            metrics.slot_wal_status.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Records each slot's retained WAL and status (`slot`, bytes, `wal_status`).
    pub fn slot_health(&self, slots: &[(String, i64, String)]) {
        for (slot, bytes, status) in slots {
            self.slot_retained_wal_bytes
                .get_or_create(&SlotLabels { slot: slot.clone() })
                .set(*bytes);
            for known in ["reserved", "extended", "unreserved", "lost"] {
                self.slot_wal_status
                    .get_or_create(&SlotStatusLabels {
                        slot: slot.clone(),
                        wal_status: known.into(),
                    })
                    .set(i64::from(known == status));
            }
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
