//! Sign-in: the shared server functions in `api`, the server-only half
//! (password hashes, sessions, access tokens, rate limiting) in `server`.

pub mod api;
#[cfg(feature = "ssr")]
pub mod server;
