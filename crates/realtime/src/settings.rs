//! Tuning of the engine (`[realtime]` in the app's Leptos.toml).

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RealtimeSettings {
    /// Most recent changes kept so clients can resume.
    pub retention_changes: usize,
    /// Oldest change kept so clients can resume.
    pub retention_minutes: u64,
    /// Most memory the kept changes may take, in MiB.
    pub retention_mb: u64,
    /// Messages buffered per connection before it is closed as too slow.
    pub queue_size: usize,
    /// A connection that sends nothing (not even a heartbeat) this long is closed.
    pub heartbeat_timeout_secs: u64,
    /// Largest message a client may send; larger ones get an error reply.
    pub max_frame_bytes: usize,
    /// Most channels one connection may join.
    pub max_channels: usize,
    /// Most `postgres_changes` bindings in one channel.
    pub max_bindings_per_channel: usize,
    /// Most open connections one person may hold.
    pub max_connections_per_user: usize,
    /// Most open connections from one client address.
    pub max_connections_per_address: usize,
    /// Most channels one person may hold over all their connections.
    pub max_channels_per_user: usize,
    /// Most `postgres_changes` bindings one person may hold.
    pub max_bindings_per_user: usize,
    /// Messages a connection may send per second (bursts of twice that).
    pub messages_per_second: u32,
    /// Joins a connection may send per second (bursts of twice that).
    pub joins_per_second: u32,
    /// Broadcasts a connection may send per second (bursts of twice that).
    pub broadcasts_per_second: u32,
    /// Presence updates (track, untrack) a connection may send per second
    /// (bursts of twice that).
    pub presence_per_second: u32,
    /// How often the server pings each socket (a browser answers without
    /// running JavaScript, so throttled background tabs stay connected).
    pub ping_interval_secs: u64,
    /// Take the client address from the last `X-Forwarded-For` entry (only
    /// behind a proxy you run, which sets that header; the app decides).
    #[serde(skip)]
    pub trust_forwarded_for: bool,
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
            retention_mb: 256,
            queue_size: 1024,
            heartbeat_timeout_secs: 60,
            max_frame_bytes: 64 * 1024,
            max_channels: 100,
            max_bindings_per_channel: 100,
            max_connections_per_user: 32,
            max_connections_per_address: 200,
            max_channels_per_user: 200,
            max_bindings_per_user: 500,
            messages_per_second: 50,
            joins_per_second: 20,
            broadcasts_per_second: 20,
            presence_per_second: 5,
            ping_interval_secs: 20,
            trust_forwarded_for: false,
            slot_name: String::new(),
            stale_slot_max_lag_mb: 1024,
        }
    }
}
