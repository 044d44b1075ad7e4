//! The app's side of the realtime engine (`crates/realtime`): the tables it
//! publishes, the ports it gives the engine — who a session or token is
//! (`identity`) and who may see a row (`rules`) — and the polling fallback
//! as one of its server functions (`poll`).

#[cfg(feature = "ssr")]
pub mod identity;
pub mod poll;
#[cfg(feature = "ssr")]
pub mod rules;

use threadline_realtime::client::RealtimeTable;

/// The tables in the `threadline_realtime` publication (see `migrations/`)
/// that subscribers may listen to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Orders,
    ProductionStages,
    OrderUpdates,
    Messages,
    Notifications,
}

impl RealtimeTable for Table {
    fn name(&self) -> &'static str {
        match self {
            Table::Orders => "orders",
            Table::ProductionStages => "production_stages",
            Table::OrderUpdates => "order_updates",
            Table::Messages => "messages",
            Table::Notifications => "notifications",
        }
    }
}
