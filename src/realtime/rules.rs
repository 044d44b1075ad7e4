//! Who may see what, in one place: buyers see their orders (with stages and
//! updates), their messages and notifications; factory staff their
//! factory's orders and their own messages and notifications; admins
//! everything. The engine applies this to every change in memory; the
//! server functions apply the same rule in SQL (`api::scope`).

use threadline_realtime::access::{AccessKey, Audience, Viewer};
use threadline_realtime::change::RowView;
use threadline_realtime::ports::Rules;
use uuid::Uuid;

use crate::model::{Role, SessionUser};

/// The rights a signed-in person has.
pub fn viewer(user: &SessionUser) -> Viewer {
    match (user.role, user.factory_id) {
        (Role::Admin, _) => Viewer::everything(user.id),
        (Role::Factory, Some(factory)) => Viewer::person(user.id).in_group(factory),
        _ => Viewer::person(user.id),
    }
}

pub struct AppRules;

impl Rules for AppRules {
    fn audience(&self, row: &RowView<'_>) -> Audience {
        let id = |column: &str| row.get(column).and_then(|v| v.parse::<Uuid>().ok());
        let person = |column: &str| id(column).map(AccessKey::Person);
        match row.table() {
            "orders" | "production_stages" | "order_updates" => {
                Audience::of([person("buyer_id"), id("factory_id").map(AccessKey::Group)])
            }
            "messages" => Audience::of([person("sender_id"), person("recipient_id")]),
            "notifications" => Audience::of([person("user_id")]),
            _ => Audience::nobody(),
        }
    }
}
