//! The realtime engine: row changes from PostgreSQL to browsers, live.
//!
//! ```text
//! PostgreSQL WAL ──logical decoding (pgoutput, commit order)──▶ capture
//! capture ──Change{cursor, table, kind, new, old, commit_ts}──▶ hub (bounded retention log)
//! hub ──match subscriptions (filter ∧ authorization)──▶ per-connection bounded queue
//! queue ──WebSocket (Phoenix / Supabase Realtime protocol)──▶ browser hook / realtime-js
//! ```
//!
//! `cursor`, `filter`, `protocol` and `poll` are shared with the browser;
//! `client` is the browser's side (`use_realtime`); the rest runs only on
//! the server.

pub mod client;
pub mod cursor;
pub mod filter;
pub mod poll;
pub mod protocol;

#[cfg(feature = "ssr")]
pub mod authorization;
#[cfg(feature = "ssr")]
pub mod capture;
#[cfg(feature = "ssr")]
pub mod change;
#[cfg(feature = "ssr")]
pub mod engine;
#[cfg(feature = "ssr")]
pub mod hub;
#[cfg(feature = "ssr")]
pub mod metrics;
#[cfg(feature = "ssr")]
pub mod socket;
#[cfg(feature = "ssr")]
pub mod visibility;

/// Tables whose changes are published (see the publication in `migrations/`).
pub const REALTIME_TABLES: &[&str] = &[
    "orders",
    "production_stages",
    "order_updates",
    "messages",
    "notifications",
];
