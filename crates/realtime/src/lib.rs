//! Threadline's realtime engine: row changes from PostgreSQL to browsers,
//! live, resumable and authorized per subscriber.
//!
//! ```text
//! PostgreSQL WAL ──logical decoding (pgoutput, commit order)──▶ capture
//!   ──once queries can see the transaction──▶ visibility gate
//!   ──Change{cursor, table, kind, new, old, audience}──▶ hub: retention log + index
//!   ──filter ∧ authorization, in memory──▶ per-connection bounded queue
//!   ──Phoenix / Supabase Realtime protocol (session, socket)──▶ browser client / realtime-js
//! ```
//!
//! The app plugs in through two ports ([`ports`]): who a session or token
//! is, and who may see a row. The engine never imports the app.
//!
//! Shared by both halves: [`cursor`], [`filter`], [`protocol`], [`poll`].
//! Feature `server`: the pipeline above. Feature `client`: the Leptos hook
//! [`client::use_realtime`]; feature `browser` gives it its WebSocket.

pub mod cursor;
pub mod filter;
pub mod poll;
pub mod protocol;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "server")]
pub mod access;
#[cfg(feature = "server")]
pub mod broadcast;
#[cfg(feature = "server")]
pub mod capture;
#[cfg(feature = "server")]
pub mod catalog;
#[cfg(feature = "server")]
pub mod change;
#[cfg(feature = "server")]
pub mod engine;
#[cfg(feature = "server")]
pub mod hub;
#[cfg(feature = "server")]
pub mod join;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod ports;
#[cfg(feature = "server")]
pub mod session;
#[cfg(feature = "server")]
pub mod settings;
#[cfg(feature = "server")]
pub mod slot;
#[cfg(feature = "server")]
pub mod socket;
#[cfg(feature = "server")]
pub mod visibility;
