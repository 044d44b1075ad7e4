//! Rooms: the channels with Broadcast and Presence, on topics the app's
//! [`Rules`](crate::ports::Rules) name. Who is in a room and what they
//! track lives here, under the hub's lock, so a room follows the same
//! commit order as everything else: when the row a room is about changes
//! hands (or goes), its members who may no longer see it are put out at
//! that change.
//!
//! Presence is Phoenix's: each member's tracked state is one `meta` (with a
//! server-made `phx_ref`) under its person's key (their user id, never what
//! the client says); joins and leaves go out as `presence_diff`, and a
//! member joining gets the room as `presence_state`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::access::Audience;
use crate::ports::{Room, RoomAccess};
use crate::protocol;

use super::queue::SubscriptionId;

/// How a channel is in its room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub room: Room,
    /// Its own broadcasts come back to it (`broadcast.self`).
    pub echo: bool,
    /// It hears presence (`presence.enabled`).
    pub presence: bool,
}

/// A message for one member: the event and its JSON payload.
pub type Note = (SubscriptionId, &'static str, Arc<str>);

#[derive(Default)]
struct RoomState {
    /// Members, and whether each hears presence.
    members: BTreeMap<SubscriptionId, bool>,
    /// Who may see the row of a row's room, as of the last change applied;
    /// `None` once it is gone.
    audience: Option<Audience>,
    /// What members track, by member.
    tracked: BTreeMap<SubscriptionId, Tracked>,
}

struct Tracked {
    key: String,
    meta: Map<String, Value>,
}

#[derive(Default)]
pub struct Rooms {
    rooms: HashMap<Room, RoomState>,
    /// Row rooms by their table and key, to find them from a change.
    by_row: HashMap<String, HashMap<String, Room>>,
    next_ref: u64,
}

impl Rooms {
    /// Who may see a row room's row now, if the room has members (and so
    /// has followed every change of the row since its first one joined).
    pub fn known_audience(&self, room: &Room) -> Option<Option<&Audience>> {
        self.rooms.get(room).map(|state| state.audience.as_ref())
    }

    /// Whether the hub watches changes of this table for rooms.
    pub fn watches_table(&self, table: &str) -> bool {
        self.by_row.contains_key(table)
    }

    /// Adds a member (authorized by the hub); `audience`: who may see the
    /// row now, for a row's room. Returns the room's presence state for
    /// the new member, if it hears presence.
    pub fn join(
        &mut self,
        id: SubscriptionId,
        member: &Member,
        audience: Option<Audience>,
    ) -> Option<Arc<str>> {
        let state = self.rooms.entry(member.room.clone()).or_default();
        if state.members.is_empty() {
            state.audience = audience;
            if let RoomAccess::Row { table, key } = &member.room.access {
                self.by_row
                    .entry(table.clone())
                    .or_default()
                    .insert(key.clone(), member.room.clone());
            }
        }
        state.members.insert(id, member.presence);
        member.presence.then(|| presence_state(state))
    }

    /// Removes a member; the others hear that it left (if it tracked).
    pub fn leave(&mut self, id: SubscriptionId, room: &Room) -> Vec<Note> {
        let Some(state) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        state.members.remove(&id);
        let notes = match state.tracked.remove(&id) {
            Some(left) => diff(state, None, Some(&left)),
            None => Vec::new(),
        };
        if state.members.is_empty() {
            self.rooms.remove(room);
            if let RoomAccess::Row { table, key } = &room.access
                && let Some(keys) = self.by_row.get_mut(table)
            {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_row.remove(table);
                }
            }
        }
        notes
    }

    /// A member tracks `meta` under `key` (replacing what it tracked).
    pub fn track(
        &mut self,
        id: SubscriptionId,
        room: &Room,
        key: String,
        mut meta: Map<String, Value>,
    ) -> Vec<Note> {
        self.next_ref = self.next_ref.wrapping_add(1);
        let phx_ref = format!("{:x}", self.next_ref);
        let Some(state) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        if !state.members.contains_key(&id) {
            return Vec::new();
        }
        let previous = state.tracked.remove(&id);
        if let Some(previous) = &previous
            && let Some(old_ref) = previous.meta.get("phx_ref")
        {
            meta.insert("phx_ref_prev".into(), old_ref.clone());
        }
        meta.insert("phx_ref".into(), Value::String(phx_ref));
        let joined = Tracked { key, meta };
        let notes = diff(state, Some(&joined), previous.as_ref());
        state.tracked.insert(id, joined);
        notes
    }

    /// A member stops tracking.
    pub fn untrack(&mut self, id: SubscriptionId, room: &Room) -> Vec<Note> {
        let Some(state) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        match state.tracked.remove(&id) {
            Some(left) => diff(state, None, Some(&left)),
            None => Vec::new(),
        }
    }

    /// The members a broadcast in `room` goes to.
    pub fn members(&self, room: &Room) -> Vec<SubscriptionId> {
        self.rooms
            .get(room)
            .map(|state| state.members.keys().copied().collect())
            .unwrap_or_default()
    }

    /// A row changed (`audience`: who may see it now; `None`: it is gone):
    /// the room about it, if any, and its members, to check again.
    pub fn row_changed(
        &mut self,
        table: &str,
        key: &str,
        audience: Option<Audience>,
    ) -> Option<(Room, Vec<SubscriptionId>)> {
        let room = self.by_row.get(table)?.get(key)?;
        let state = self.rooms.get_mut(room)?;
        state.audience = audience;
        Some((room.clone(), state.members.keys().copied().collect()))
    }

    /// Every row room of a table (it was emptied), with its members.
    pub fn rooms_of_table(&mut self, table: &str) -> Vec<(Room, Vec<SubscriptionId>)> {
        let Some(keys) = self.by_row.get(table) else {
            return Vec::new();
        };
        keys.values()
            .filter_map(|room| {
                let state = self.rooms.get_mut(room)?;
                state.audience = None;
                Some((room.clone(), state.members.keys().copied().collect()))
            })
            .collect()
    }

    /// How many members the room has (for tests and metrics).
    pub fn member_count(&self, room: &Room) -> usize {
        self.rooms.get(room).map_or(0, |state| state.members.len())
    }
}

/// `{key: {metas: [...]}}` for everyone tracked in the room.
fn presence_state(state: &RoomState) -> Arc<str> {
    let mut by_key: BTreeMap<&str, Vec<&Map<String, Value>>> = BTreeMap::new();
    for tracked in state.tracked.values() {
        by_key.entry(&tracked.key).or_default().push(&tracked.meta);
    }
    let state: Map<String, Value> = by_key
        .into_iter()
        .map(|(key, metas)| (key.to_string(), json!({ "metas": metas })))
        .collect();
    Value::Object(state).to_string().into()
}

/// A `presence_diff` for every member that hears presence.
fn diff(state: &RoomState, joined: Option<&Tracked>, left: Option<&Tracked>) -> Vec<Note> {
    let side = |tracked: Option<&Tracked>| -> Value {
        match tracked {
            Some(t) => json!({ t.key.clone(): { "metas": [t.meta] } }),
            None => json!({}),
        }
    };
    let payload: Arc<str> = json!({ "joins": side(joined), "leaves": side(left) })
        .to_string()
        .into();
    let listeners: BTreeSet<SubscriptionId> = state
        .members
        .iter()
        .filter(|(_, hears)| **hears)
        .map(|(id, _)| *id)
        .collect();
    listeners
        .into_iter()
        .map(|id| (id, protocol::PRESENCE_DIFF, payload.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn room() -> Room {
        Room {
            topic: "order:1".into(),
            access: RoomAccess::Row {
                table: "orders".into(),
                key: "1".into(),
            },
        }
    }

    fn member(presence: bool) -> Member {
        Member {
            room: room(),
            echo: false,
            presence,
        }
    }

    fn meta(name: &str) -> Map<String, Value> {
        let mut meta = Map::new();
        meta.insert("user_name".into(), Value::String(name.into()));
        meta
    }

    fn parsed(note: &Note) -> Value {
        serde_json::from_str(&note.2).unwrap_or_default()
    }

    #[test]
    fn members_hear_joins_and_leaves_and_newcomers_get_the_state() {
        let mut rooms = Rooms::default();
        let ann = Uuid::from_u128(1).to_string();
        assert_eq!(
            rooms.join(1, &member(true), Some(Audience::nobody())),
            Some("{}".into())
        );
        assert_eq!(rooms.join(2, &member(false), None), None);
        let notes = rooms.track(1, &room(), ann.clone(), meta("Ann"));
        // only the member that hears presence (itself included) gets it
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].0, 1);
        let diff = parsed(&notes[0]);
        assert_eq!(diff["joins"][&ann]["metas"][0]["user_name"], "Ann");
        assert!(diff["joins"][&ann]["metas"][0]["phx_ref"].is_string());

        let state = rooms.join(3, &member(true), None).unwrap_or_default();
        let state: Value = serde_json::from_str(&state).unwrap_or_default();
        assert_eq!(state[&ann]["metas"][0]["user_name"], "Ann");

        let notes = rooms.leave(1, &room());
        assert_eq!(notes.iter().map(|n| n.0).collect::<Vec<_>>(), vec![3]);
        assert_eq!(
            parsed(&notes[0])["leaves"][&ann]["metas"][0]["user_name"],
            "Ann"
        );
        assert_eq!(rooms.member_count(&room()), 2);
    }

    #[test]
    fn tracking_again_replaces_and_the_room_goes_with_its_last_member() {
        let mut rooms = Rooms::default();
        rooms.join(1, &member(true), None);
        rooms.track(1, &room(), "k".into(), meta("first"));
        let notes = rooms.track(1, &room(), "k".into(), meta("second"));
        let diff = parsed(&notes[0]);
        assert_eq!(diff["joins"]["k"]["metas"][0]["user_name"], "second");
        assert_eq!(diff["leaves"]["k"]["metas"][0]["user_name"], "first");
        assert!(rooms.watches_table("orders"));
        rooms.leave(1, &room());
        assert!(!rooms.watches_table("orders"));
        assert_eq!(rooms.known_audience(&room()), None);
    }

    #[test]
    fn a_change_of_the_row_updates_who_may_see_it() {
        let mut rooms = Rooms::default();
        rooms.join(1, &member(false), Some(Audience::nobody()));
        let audience = Audience::of([Some(crate::access::AccessKey::Person(Uuid::nil()))]);
        let (_, members) = rooms
            .row_changed("orders", "1", Some(audience.clone()))
            .unwrap_or((room(), vec![]));
        assert_eq!(members, vec![1]);
        assert_eq!(rooms.known_audience(&room()), Some(Some(&audience)));
        assert!(rooms.row_changed("orders", "2", None).is_none());
        assert_eq!(rooms.rooms_of_table("orders").len(), 1);
        assert_eq!(rooms.known_audience(&room()), Some(None));
    }
}
