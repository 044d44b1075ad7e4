//! Rows and enums shared by server and browser. String enums mirror the
//! CHECK constraints in `migrations/`.

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

/// An enum stored as `text` in PostgreSQL and sent as its snake_case name.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal : $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Human wording for the UI.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> { s.parse() }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

text_enum!(Role {
    Buyer = "buyer": "Buyer",
    Factory = "factory": "Factory staff",
    Admin = "admin": "Admin",
});

text_enum!(
    /// The order state machine; the allowed edges are enforced by the
    /// `order_status_allowed` SQL function and mirrored by [`OrderStatus::next`].
    OrderStatus {
        Pending = "pending": "Pending",
        Confirmed = "confirmed": "Confirmed",
        InProduction = "in_production": "In production",
        Shipped = "shipped": "Shipped",
        Delivered = "delivered": "Delivered",
        Cancelled = "cancelled": "Cancelled",
    }
);

impl OrderStatus {
    /// Statuses reachable in one step.
    pub fn next(self) -> &'static [OrderStatus] {
        use OrderStatus::*;
        match self {
            Pending => &[Confirmed, Cancelled],
            Confirmed => &[InProduction, Cancelled],
            InProduction => &[Shipped],
            Shipped => &[Delivered],
            Delivered | Cancelled => &[],
        }
    }

    pub fn can_become(self, to: OrderStatus) -> bool {
        self.next().contains(&to)
    }

    /// Status changes a role may make by hand (others follow from production:
    /// starting the first stage and shipping move the order on by themselves).
    pub fn may_set(role: Role, from: OrderStatus, to: OrderStatus) -> bool {
        use OrderStatus::*;
        from.can_become(to)
            && match role {
                Role::Admin => true,
                Role::Buyer => matches!((from, to), (Pending, Cancelled) | (Shipped, Delivered)),
                Role::Factory => matches!((from, to), (Confirmed, InProduction)),
            }
    }
}

text_enum!(Stage {
    Cutting = "cutting": "Cutting",
    Sewing = "sewing": "Sewing",
    Finishing = "finishing": "Finishing",
    QualityCheck = "quality_check": "Quality check",
    Packing = "packing": "Packing",
    Shipped = "shipped": "Shipped",
});

text_enum!(StageStatus {
    Pending = "pending": "Not started",
    InProgress = "in_progress": "In progress",
    Done = "done": "Done",
});

text_enum!(
    /// A folder of the communication center.
    Folder {
        Inbox = "inbox": "Inbox",
        Sent = "sent": "Sent",
    }
);

text_enum!(NotificationKind {
    Message = "message": "Message",
    OrderStatus = "order_status": "Order status",
    OrderAssigned = "order_assigned": "Order assigned",
    ProductionUpdate = "production_update": "Production update",
    Stage = "stage": "Production stage",
});

/// The signed-in person, as every page and server function sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct SessionUser {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "String"))]
    pub role: Role,
    pub factory_id: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Factory {
    pub id: Uuid,
    pub name: String,
}

/// A person one may write to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Contact {
    pub id: Uuid,
    pub name: String,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "String"))]
    pub role: Role,
    pub factory_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Order {
    pub id: Uuid,
    pub number: i64,
    pub buyer_id: Uuid,
    pub buyer_name: String,
    pub factory_id: Option<Uuid>,
    pub factory_name: Option<String>,
    pub product: String,
    pub quantity: i32,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "String"))]
    pub status: OrderStatus,
    pub due_date: Date,
    pub notes: String,
    /// Percent of the six production stages completed, in-progress ones counted by progress.
    pub progress: i32,
    /// The mutation that last changed the status, echoed for optimistic updates.
    pub client_mutation_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Order {
    pub fn label(&self) -> String {
        format!("PO-{}", self.number)
    }

    /// Where the order sits in the newest-first lists.
    pub fn key(&self) -> OrderKey {
        Key {
            micros: unix_micros(self.created_at),
            tie: self.number,
        }
    }
}

fn unix_micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// A row's place in a newest-first list: its creation time, then a unique
/// tie-breaker, written `<unix microseconds>.<tie>` in page cursors. Lists
/// page by key, never by offset, so rows written meanwhile shift nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key<T> {
    pub micros: i64,
    pub tie: T,
}

/// Orders: creation time, then number.
pub type OrderKey = Key<i64>;
/// Messages: creation time, then id.
pub type MessageKey = Key<Uuid>;

impl<T: std::fmt::Display> std::fmt::Display for Key<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.micros, self.tie)
    }
}

impl<T: std::str::FromStr> std::str::FromStr for Key<T> {
    type Err = String;

    fn from_str(text: &str) -> Result<Key<T>, String> {
        let invalid = || format!("{text:?} is not a list position (<microseconds>.<tie>)");
        let (micros, tie) = text.trim().split_once('.').ok_or_else(invalid)?;
        Ok(Key {
            micros: micros.parse().map_err(|_| invalid())?,
            tie: tie.parse().map_err(|_| invalid())?,
        })
    }
}

/// A window of a newest-first list: its rows, and whether older ones follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

pub type OrderPage = Page<Order>;

/// How many orders of one status the list's filter matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct StatusCount {
    #[cfg_attr(feature = "ssr", sqlx(try_from = "String"))]
    pub status: OrderStatus,
    pub count: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct ProductionStage {
    pub id: Uuid,
    pub order_id: Uuid,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "String"))]
    pub stage: Stage,
    pub position: i16,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "String"))]
    pub status: StageStatus,
    pub progress: i16,
    pub started_at: Option<OffsetDateTime>,
    pub completed_at: Option<OffsetDateTime>,
    pub client_mutation_id: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct OrderUpdate {
    pub id: Uuid,
    pub order_id: Uuid,
    pub author_id: Uuid,
    pub author_name: String,
    pub stage: Option<String>,
    pub text: String,
    pub client_mutation_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Message {
    pub id: Uuid,
    pub sender_id: Uuid,
    pub sender_name: String,
    pub recipient_id: Uuid,
    pub recipient_name: String,
    pub order_id: Option<Uuid>,
    pub order_number: Option<i64>,
    pub body: String,
    pub read_at: Option<OffsetDateTime>,
    pub client_mutation_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
}

impl OrderUpdate {
    /// Where the update sits in the newest-first feed.
    pub fn key(&self) -> Key<Uuid> {
        Key {
            micros: unix_micros(self.created_at),
            tie: self.id,
        }
    }
}

impl Message {
    /// Where the message sits in the newest-first folders.
    pub fn key(&self) -> MessageKey {
        Key {
            micros: unix_micros(self.created_at),
            tie: self.id,
        }
    }
}

/// The messages between the user and one other person about one order (or
/// about no order), as the communication center lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Conversation {
    pub other_id: Uuid,
    pub other_name: String,
    pub order_id: Option<Uuid>,
    pub order_number: Option<i64>,
    pub last_body: String,
    pub last_at: OffsetDateTime,
    pub last_id: Uuid,
    pub last_from_me: bool,
    /// Messages to the user in it that they have not read.
    pub unread: i64,
    pub total: i64,
}

impl Conversation {
    /// Where the conversation sits in the list: its newest message.
    pub fn key(&self) -> MessageKey {
        Key {
            micros: unix_micros(self.last_at),
            tie: self.last_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Notification {
    pub id: Uuid,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "String"))]
    pub kind: NotificationKind,
    pub text: String,
    pub link: String,
    pub read_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// Everything the order page shows, fetched together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDetail {
    pub order: Order,
    pub stages: Vec<ProductionStage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationSummary {
    pub unread: i64,
    pub recent: Vec<Notification>,
}

/// Short dates and times for the UI, the same on server and browser so that
/// hydration matches.
pub fn format_date(date: Date) -> String {
    format!(
        "{} {} {}",
        date.day(),
        &date.month().to_string()[..3],
        date.year()
    )
}

pub fn format_timestamp(at: OffsetDateTime) -> String {
    format!(
        "{} {:02}:{:02} UTC",
        format_date(at.date()),
        at.hour(),
        at.minute()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_status_machine_matches_the_sql_edges() {
        use OrderStatus::*;
        assert!(Pending.can_become(Confirmed));
        assert!(Pending.can_become(Cancelled));
        assert!(Confirmed.can_become(InProduction));
        assert!(!Pending.can_become(Shipped));
        assert!(!Delivered.can_become(Cancelled));
        assert!(!Cancelled.can_become(Pending));
        assert!(Delivered.next().is_empty() && Cancelled.next().is_empty());
    }

    #[test]
    fn buyers_may_cancel_only_while_pending() {
        use OrderStatus::*;
        assert!(OrderStatus::may_set(Role::Buyer, Pending, Cancelled));
        assert!(!OrderStatus::may_set(Role::Buyer, Confirmed, Cancelled));
        assert!(!OrderStatus::may_set(Role::Factory, Pending, Cancelled));
        assert!(OrderStatus::may_set(Role::Admin, Confirmed, Cancelled));
        assert!(!OrderStatus::may_set(Role::Admin, Shipped, Cancelled));
    }

    #[test]
    fn text_enums_round_trip_through_their_names() {
        for stage in Stage::ALL {
            assert_eq!(stage.as_str().parse::<Stage>(), Ok(*stage));
        }
        assert!("unknown".parse::<OrderStatus>().is_err());
        assert_eq!(
            serde_json::to_string(&OrderStatus::InProduction)
                .ok()
                .as_deref(),
            Some("\"in_production\"")
        );
    }

    #[test]
    fn dates_format_compactly() {
        let date = time::macros::date!(2026 - 11 - 25);
        assert_eq!(format_date(date), "25 Nov 2026");
    }
}
