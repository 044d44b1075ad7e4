//! Tuning of the engine (`[realtime]` in the app's Leptos.toml).

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RealtimeSettings {
    /// Most recent changes kept so clients can resume.
    pub retention_changes: usize,
    /// Oldest change kept so clients can resume.
    pub retention_minutes: u64,
    /// Messages buffered per connection before it is closed as too slow.
    pub queue_size: usize,
    /// A connection that sends nothing (not even a heartbeat) this long is closed.
    pub heartbeat_timeout_secs: u64,
    /// Largest message a client may send; larger ones get an error reply.
    pub max_frame_bytes: usize,
    /// Most channels one connection may join.
    pub max_channels: usize,
    /// Replication slot of this server; empty: `threadline_<database>`.
    /// Each app server on one database needs its own.
    pub slot_name: String,
    /// Inactive slots of other Threadline servers holding more WAL than
    /// this are dropped.
    pub stale_slot_max_lag_mb: i64,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        RealtimeSettings {
            retention_changes: 100_000,
            retention_minutes: 60,
            queue_size: 1024,
            heartbeat_timeout_secs: 60,
            max_frame_bytes: 64 * 1024,
            max_channels: 100,
            slot_name: String::new(),
            stale_slot_max_lag_mb: 1024,
        }
    }
}
