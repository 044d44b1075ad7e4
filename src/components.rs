pub mod connection_status;
pub mod notification_bell;
pub mod status_badge;
