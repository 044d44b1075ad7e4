//! Who may see a changed row, decided in memory from the row itself: every
//! realtime table carries its owners (orders and their stages and updates
//! carry `buyer_id` and `factory_id`; messages `sender_id` and
//! `recipient_id`; notifications `user_id`). A client filter can only narrow
//! this, never widen it.

use uuid::Uuid;

use crate::model::{Role, SessionUser};

/// The person a subscription speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Viewer {
    pub user_id: Uuid,
    pub role: Role,
    pub factory_id: Option<Uuid>,
}

impl From<&SessionUser> for Viewer {
    fn from(user: &SessionUser) -> Viewer {
        Viewer {
            user_id: user.id,
            role: user.role,
            factory_id: user.factory_id,
        }
    }
}

/// Who may see one change, besides admins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// An order's buyer and the staff of its factory.
    Order {
        buyer: Option<Uuid>,
        factory: Option<Uuid>,
    },
    /// Named people (a message's sender and recipient, a notification's owner).
    People([Option<Uuid>; 2]),
    /// Nobody but admins.
    AdminsOnly,
}

impl Audience {
    /// The audience of a row of `table`, read through `field` (column → text value).
    pub fn of<'a>(table: &str, field: impl Fn(&str) -> Option<&'a str>) -> Audience {
        let id = |column: &str| field(column).and_then(|v| v.parse::<Uuid>().ok());
        match table {
            "orders" | "production_stages" | "order_updates" => Audience::Order {
                buyer: id("buyer_id"),
                factory: id("factory_id"),
            },
            "messages" => Audience::People([id("sender_id"), id("recipient_id")]),
            "notifications" => Audience::People([id("user_id"), None]),
            _ => Audience::AdminsOnly,
        }
    }
}

impl Viewer {
    pub fn may_see(&self, audience: &Audience) -> bool {
        if self.role == Role::Admin {
            return true;
        }
        match audience {
            Audience::Order { buyer, factory } => {
                *buyer == Some(self.user_id)
                    || (self.role == Role::Factory
                        && self.factory_id.is_some()
                        && *factory == self.factory_id)
            }
            Audience::People(people) => people.contains(&Some(self.user_id)),
            Audience::AdminsOnly => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUYER: Uuid = Uuid::from_u128(1);
    const OTHER_BUYER: Uuid = Uuid::from_u128(2);
    const STAFF: Uuid = Uuid::from_u128(3);
    const FACTORY: Uuid = Uuid::from_u128(10);
    const OTHER_FACTORY: Uuid = Uuid::from_u128(11);

    fn viewer(user_id: Uuid, role: Role, factory_id: Option<Uuid>) -> Viewer {
        Viewer {
            user_id,
            role,
            factory_id,
        }
    }

    #[test]
    fn order_rows_are_seen_by_their_buyer_their_factory_and_admins() {
        let order = Audience::Order {
            buyer: Some(BUYER),
            factory: Some(FACTORY),
        };
        assert!(viewer(BUYER, Role::Buyer, None).may_see(&order));
        assert!(!viewer(OTHER_BUYER, Role::Buyer, None).may_see(&order));
        assert!(viewer(STAFF, Role::Factory, Some(FACTORY)).may_see(&order));
        assert!(!viewer(STAFF, Role::Factory, Some(OTHER_FACTORY)).may_see(&order));
        assert!(viewer(Uuid::from_u128(99), Role::Admin, None).may_see(&order));
    }

    #[test]
    fn unassigned_orders_are_not_seen_by_factory_staff() {
        let order = Audience::Order {
            buyer: Some(BUYER),
            factory: None,
        };
        assert!(!viewer(STAFF, Role::Factory, Some(FACTORY)).may_see(&order));
    }

    #[test]
    fn messages_are_seen_by_their_two_people() {
        let row = [
            ("sender_id", BUYER.to_string()),
            ("recipient_id", STAFF.to_string()),
        ];
        let audience = Audience::of("messages", |c| {
            row.iter().find(|(n, _)| *n == c).map(|(_, v)| v.as_str())
        });
        assert!(viewer(BUYER, Role::Buyer, None).may_see(&audience));
        assert!(viewer(STAFF, Role::Factory, Some(FACTORY)).may_see(&audience));
        assert!(!viewer(OTHER_BUYER, Role::Buyer, None).may_see(&audience));
    }

    #[test]
    fn other_tables_are_for_admins_only() {
        let audience = Audience::of("users", |_| None);
        assert!(!viewer(BUYER, Role::Buyer, None).may_see(&audience));
        assert!(viewer(BUYER, Role::Admin, None).may_see(&audience));
    }
}
