//! Who may see what, in one place: buyers see their orders (with stages and
//! updates), their messages and notifications; factory staff their
//! factory's orders and their own messages and notifications; admins
//! everything. The engine applies this to every change in memory; the
//! server functions apply the same rule in SQL (`api::scope`).

use threadline_realtime::access::{AccessKey, Audience, Viewer};
use threadline_realtime::change::RowView;
use threadline_realtime::filter::parse_timestamp;
use threadline_realtime::ports::{
    RightsChange, RightsRow, Room, RoomAccess, Rules, SessionEnd, SessionKey, Topic,
};
use threadline_realtime::protocol::ChangeKind;
use uuid::Uuid;

use crate::model::{Role, SessionUser};

/// The rights a signed-in person has.
pub fn viewer(user: &SessionUser) -> Viewer {
    rights_of(user.id, user.role, user.factory_id)
}

fn rights_of(user: Uuid, role: Role, factory: Option<Uuid>) -> Viewer {
    match (role, factory) {
        (Role::Admin, _) => Viewer::everything(user),
        (Role::Factory, Some(factory)) => Viewer::person(user).in_group(factory),
        _ => Viewer::person(user),
    }
}

/// A session as the `sessions` table's changes name it: its `token_hash`
/// as PostgreSQL writes a `bytea` (`\x` and hex).
pub fn session_key(token_hash: &[u8]) -> SessionKey {
    let mut text = String::with_capacity(2 + 2 * token_hash.len());
    text.push_str("\\x");
    for byte in token_hash {
        text.push_str(&format!("{byte:02x}"));
    }
    SessionKey(text)
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

    /// Who someone is (`users`: their role and factory) and whether their
    /// sessions still count (`sessions`) follow the database in commit order.
    fn rights_tables(&self) -> Vec<String> {
        vec!["users".into(), "sessions".into()]
    }

    fn rights(&self, row: &RightsRow<'_>) -> Option<RightsChange> {
        let id = |row: &RowView<'_>, column: &str| row.get(column)?.parse::<Uuid>().ok();
        match (row.kind, row.new.or(row.old)?.table()) {
            (ChangeKind::Update, "users") => {
                let new = row.new.as_ref()?;
                let role = new.get("role")?.parse::<Role>().ok()?;
                Some(RightsChange::Viewer(rights_of(
                    id(new, "id")?,
                    role,
                    id(new, "factory_id"),
                )))
            }
            (ChangeKind::Delete, "users") => {
                Some(RightsChange::UserRemoved(id(row.old.as_ref()?, "id")?))
            }
            (ChangeKind::Delete, "sessions") => Some(RightsChange::SessionEnded(
                SessionKey(row.old.as_ref()?.get("token_hash")?.to_string()),
                SessionEnd::SignedOut,
            )),
            (ChangeKind::Update, "sessions") => {
                let new = row.new.as_ref()?;
                let key = SessionKey(new.get("token_hash")?.to_string());
                let expires = parse_timestamp(new.get("expires_at")?)?;
                if expires <= i128::from(row.commit_micros) {
                    return Some(RightsChange::SessionEnded(key, SessionEnd::Expired));
                }
                let seconds = i64::try_from(expires.div_euclid(1_000_000)).ok()?;
                // a session ending part-way through a second has ended by the next one
                let seconds = seconds.saturating_add(i64::from(expires.rem_euclid(1_000_000) > 0));
                Some(RightsChange::SessionEnds(key, seconds))
            }
            _ => None,
        }
    }

    /// Rooms: `order:<id>` for the people who may see that order (its
    /// buyer, its factory's staff, admins), `user:<id>` for that person.
    fn topic(&self, topic: &str) -> Topic {
        let Some((kind, id)) = topic.split_once(':') else {
            return Topic::Plain;
        };
        if !matches!(kind, "order" | "user") {
            return Topic::Plain;
        }
        let Ok(id) = id.parse::<Uuid>() else {
            return Topic::Invalid(format!("{topic}: {kind}:<id> takes a {kind} id (a UUID)"));
        };
        let access = match kind {
            "order" => RoomAccess::Row {
                table: "orders".into(),
                key: id.to_string(),
            },
            _ => RoomAccess::Person(id),
        };
        Topic::Room(Room {
            topic: format!("{kind}:{id}"),
            access,
        })
    }

    fn room_topics(&self) -> &'static str {
        "order:<order id>, user:<user id>"
    }
}
