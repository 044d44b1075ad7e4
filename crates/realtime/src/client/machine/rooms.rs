//! Rooms on the page's one socket: a channel per room topic, shared by
//! every component using it, joined with presence on; what the page
//! tracks is tracked again after every join; the room's presence is kept
//! from `presence_state` and `presence_diff` (Phoenix's), and handed to
//! the components as one entry per person. Broadcasts are fire-and-forget:
//! while the socket is down they are dropped (they are about now).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Effect, Machine};
use crate::protocol::{self, Frame, Vsn};

/// What a room's components hear.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomEvent {
    /// Someone in the room broadcast `event`.
    Broadcast { event: String, payload: Value },
    /// Who is in the room now (empty while the socket is down).
    Presence(Vec<Present>),
    /// The server closed the room for this user (they may no longer see
    /// what it is about).
    Closed,
}

/// One person in a room (however many tabs they have in it).
#[derive(Clone, Debug, PartialEq)]
pub struct Present {
    pub user_id: String,
    /// The name the server gave them.
    pub name: String,
    /// What they track (their first tab's).
    pub meta: Value,
}

#[derive(Default)]
pub(super) struct RoomChannel {
    listeners: BTreeSet<u64>,
    join_ref: Option<String>,
    joined: bool,
    /// The server refused the join: not tried again on this socket.
    refused: bool,
    tracked: Option<Value>,
    /// key → metas, as the server says.
    presence: BTreeMap<String, Vec<Value>>,
}

impl RoomChannel {
    fn present(&self) -> Vec<Present> {
        self.presence
            .iter()
            .filter_map(|(key, metas)| {
                let meta = metas.first()?;
                Some(Present {
                    user_id: key.clone(),
                    name: meta
                        .get("user_name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    meta: meta.clone(),
                })
            })
            .collect()
    }
}

/// The topic of a room.
pub fn room_topic(room: &str) -> String {
    format!("realtime:{room}")
}

impl Machine {
    /// A component joins `room` (e.g. `order:<id>`); returns its listener
    /// id. The first one joins the room's channel.
    pub fn join_room(&mut self, room: &str, online: bool) -> (u64, Vec<Effect>) {
        let topic = room_topic(room);
        let listener = self.next_listener;
        self.next_listener += 1;
        let channel = self.rooms.entry(topic.clone()).or_default();
        let first = channel.listeners.is_empty();
        channel.listeners.insert(listener);
        let mut effects = Vec::new();
        if !first {
            // a newcomer hears who is here already
            effects.push(Effect::Room(topic, RoomEvent::Presence(channel.present())));
            return (listener, effects);
        }
        effects.extend(self.start(online));
        effects.extend(self.join_room_channel(&topic));
        (listener, effects)
    }

    /// A component leaves its room; the last one leaves the channel.
    pub fn leave_room(&mut self, listener: u64) -> Vec<Effect> {
        let Some(topic) = self
            .rooms
            .iter()
            .find(|(_, c)| c.listeners.contains(&listener))
            .map(|(topic, _)| topic.clone())
        else {
            return Vec::new();
        };
        let Some(channel) = self.rooms.get_mut(&topic) else {
            return Vec::new();
        };
        channel.listeners.remove(&listener);
        if !channel.listeners.is_empty() {
            return Vec::new();
        }
        let Some(channel) = self.rooms.remove(&topic) else {
            return Vec::new();
        };
        if !channel.joined || !self.is_open() {
            return Vec::new();
        }
        let frame = Frame {
            join_ref: channel.join_ref,
            msg_ref: Some(self.next_ref()),
            topic,
            event: protocol::LEAVE.into(),
            payload: json!({}),
        };
        vec![Effect::Send(frame.encode(Vsn::V2))]
    }

    /// What the page shows of itself in the room (kept, and tracked again
    /// after every join).
    pub fn track(&mut self, room: &str, meta: Value) -> Vec<Effect> {
        let topic = room_topic(room);
        let Some(channel) = self.rooms.get_mut(&topic) else {
            return Vec::new();
        };
        channel.tracked = Some(meta);
        self.push_track(&topic)
    }

    /// Broadcasts to the room's other members, if the room is joined now.
    pub fn broadcast(&mut self, room: &str, event: &str, payload: Value) -> Vec<Effect> {
        let topic = room_topic(room);
        let joined = self.rooms.get(&topic).is_some_and(|c| c.joined);
        if !joined || !self.is_open() {
            return Vec::new();
        }
        let frame = Frame {
            join_ref: self.rooms.get(&topic).and_then(|c| c.join_ref.clone()),
            msg_ref: Some(self.next_ref()),
            topic,
            event: protocol::BROADCAST.into(),
            payload: json!({"type": protocol::BROADCAST, "event": event, "payload": payload}),
        };
        vec![Effect::Send(frame.encode(Vsn::V2))]
    }

    fn push_track(&mut self, topic: &str) -> Vec<Effect> {
        let Some(channel) = self.rooms.get(topic) else {
            return Vec::new();
        };
        let (Some(meta), true) = (channel.tracked.clone(), channel.joined) else {
            return Vec::new();
        };
        let join_ref = channel.join_ref.clone();
        if !self.is_open() {
            return Vec::new();
        }
        let frame = Frame {
            join_ref,
            msg_ref: Some(self.next_ref()),
            topic: topic.to_string(),
            event: protocol::PRESENCE.into(),
            payload: json!({"type": protocol::PRESENCE, "event": "track", "payload": meta}),
        };
        vec![Effect::Send(frame.encode(Vsn::V2))]
    }

    pub(super) fn join_room_channel(&mut self, topic: &str) -> Vec<Effect> {
        if !self.is_open() {
            return Vec::new();
        }
        let msg_ref = self.next_ref();
        let Some(channel) = self.rooms.get_mut(topic) else {
            return Vec::new();
        };
        if channel.refused {
            return Vec::new();
        }
        channel.join_ref = Some(msg_ref.clone());
        channel.joined = false;
        let frame = Frame {
            join_ref: Some(msg_ref.clone()),
            msg_ref: Some(msg_ref),
            topic: topic.to_string(),
            event: protocol::JOIN.into(),
            payload: json!({"config": {
                "broadcast": {"ack": false, "self": false},
                "presence": {"enabled": true, "key": ""},
                "postgres_changes": [],
            }}),
        };
        vec![Effect::Send(frame.encode(Vsn::V2))]
    }

    /// Every room's channel joins (the socket opened).
    pub(super) fn join_rooms(&mut self) -> Vec<Effect> {
        let topics: Vec<String> = self.rooms.keys().cloned().collect();
        let mut effects = Vec::new();
        for topic in topics {
            if let Some(channel) = self.rooms.get_mut(&topic) {
                channel.refused = false;
            }
            effects.extend(self.join_room_channel(&topic));
        }
        effects
    }

    /// The socket is down: nobody is known to be here until it is back.
    pub(super) fn rooms_down(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (topic, channel) in self.rooms.iter_mut() {
            channel.joined = false;
            if !channel.presence.is_empty() {
                channel.presence.clear();
                effects.push(Effect::Room(topic.clone(), RoomEvent::Presence(Vec::new())));
            }
        }
        effects
    }

    /// A frame for a room's channel; `None` if `topic` is not a room.
    pub(super) fn room_received(&mut self, frame: &Frame) -> Option<Vec<Effect>> {
        let channel = self.rooms.get_mut(&frame.topic)?;
        let topic = frame.topic.clone();
        let mut effects = Vec::new();
        match frame.event.as_str() {
            protocol::REPLY if channel.join_ref.is_some() && channel.join_ref == frame.msg_ref => {
                if frame.payload["status"] == "ok" {
                    channel.joined = true;
                    return Some(self.push_track(&topic));
                }
                channel.refused = true;
                effects.push(Effect::Warn(format!(
                    "realtime join of {topic} refused: {}",
                    frame.payload["response"]["reason"]
                )));
            }
            protocol::BROADCAST => {
                let event = frame.payload["event"].as_str().unwrap_or_default();
                effects.push(Effect::Room(
                    topic,
                    RoomEvent::Broadcast {
                        event: event.to_string(),
                        payload: frame.payload["payload"].clone(),
                    },
                ));
            }
            protocol::PRESENCE_STATE => {
                channel.presence = metas_by_key(&frame.payload);
                effects.push(Effect::Room(topic, RoomEvent::Presence(channel.present())));
            }
            protocol::PRESENCE_DIFF => {
                apply_diff(&mut channel.presence, &frame.payload);
                effects.push(Effect::Room(topic, RoomEvent::Presence(channel.present())));
            }
            protocol::CLOSE => {
                channel.joined = false;
                channel.refused = true;
                channel.presence.clear();
                effects.push(Effect::Room(topic, RoomEvent::Closed));
            }
            _ => {}
        }
        Some(effects)
    }

    /// Whether a room channel uses this link state (for tests).
    #[cfg(test)]
    pub(super) fn room_joined(&self, room: &str) -> bool {
        self.is_open() && self.rooms.get(&room_topic(room)).is_some_and(|c| c.joined)
    }
}

/// `{key: {metas: [...]}}` as a map.
fn metas_by_key(state: &Value) -> BTreeMap<String, Vec<Value>> {
    state
        .as_object()
        .map(|object| {
            object
                .iter()
                .map(|(key, entry)| {
                    let metas = entry["metas"].as_array().cloned().unwrap_or_default();
                    (key.clone(), metas)
                })
                .filter(|(_, metas)| !metas.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Phoenix's `syncDiff`: joins add metas (replacing ones with the same
/// `phx_ref`), leaves remove them by `phx_ref`; a key without metas goes.
fn apply_diff(presence: &mut BTreeMap<String, Vec<Value>>, diff: &Value) {
    for (key, joined) in metas_by_key(&diff["joins"]) {
        let metas = presence.entry(key).or_default();
        for meta in joined {
            metas.retain(|m| m["phx_ref"] != meta["phx_ref"]);
            metas.push(meta);
        }
    }
    for (key, left) in metas_by_key(&diff["leaves"]) {
        if let Some(metas) = presence.get_mut(&key) {
            metas.retain(|m| !left.iter().any(|l| l["phx_ref"] == m["phx_ref"]));
            if metas.is_empty() {
                presence.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sent;
    use super::*;

    fn rooms_of(effects: &[Effect]) -> Vec<RoomEvent> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Room(_, event) => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    /// A machine whose socket works, in room `order:1`.
    fn in_room() -> (Machine, u64) {
        let mut machine = Machine::new(None);
        let (listener, effects) = machine.join_room("order:1", true);
        assert_eq!(effects, vec![Effect::Open]);
        for frame in sent(&machine.opened(0.0)) {
            machine.received(&frame.reply("ok", json!({})).encode(Vsn::V2), 1.0);
        }
        assert!(machine.room_joined("order:1"));
        (machine, listener)
    }

    fn presence(event: &str, payload: Value) -> String {
        Frame::new("realtime:order:1", event, payload).encode(Vsn::V2)
    }

    #[test]
    fn a_room_joins_with_presence_and_tracks_again_after_every_join() {
        let (mut machine, _) = in_room();
        let frames = sent(&machine.track("order:1", json!({"viewing": true})));
        assert_eq!(frames[0].event, "presence");
        assert_eq!(frames[0].payload["payload"]["viewing"], true);
        machine.closed(2.0, true, 0.5);
        machine.retry_due(true);
        let joins = sent(&machine.opened(3.0));
        let join = joins.iter().find(|f| f.event == protocol::JOIN);
        assert_eq!(
            join.map(|f| f.payload["config"]["presence"]["enabled"].clone()),
            Some(json!(true))
        );
        let tracked = join
            .map(|f| machine.received(&f.reply("ok", json!({})).encode(Vsn::V2), 4.0))
            .unwrap_or_default();
        assert_eq!(sent(&tracked)[0].payload["payload"]["viewing"], true);
    }

    #[test]
    fn presence_follows_state_and_diffs_one_entry_per_person() {
        let (mut machine, _) = in_room();
        let state = json!({"u1": {"metas": [{"phx_ref": "a", "user_name": "Ann"}]}});
        let events = rooms_of(&machine.received(&presence("presence_state", state), 2.0));
        assert!(
            matches!(&events[..], [RoomEvent::Presence(p)] if p.len() == 1 && p[0].name == "Ann")
        );
        // a second tab of Ann, then Bo, then Ann's first tab leaves
        let diff = json!({"joins": {"u1": {"metas": [{"phx_ref": "b", "user_name": "Ann"}]},
                                    "u2": {"metas": [{"phx_ref": "c", "user_name": "Bo"}]}},
                          "leaves": {"u1": {"metas": [{"phx_ref": "a"}]}}});
        let events = rooms_of(&machine.received(&presence("presence_diff", diff), 3.0));
        let RoomEvent::Presence(people) = &events[0] else {
            panic!("presence expected");
        };
        let names: Vec<&str> = people.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["Ann", "Bo"]);
        let leaves = json!({"joins": {}, "leaves": {"u1": {"metas": [{"phx_ref": "b"}]}}});
        let events = rooms_of(&machine.received(&presence("presence_diff", leaves), 4.0));
        assert!(
            matches!(&events[..], [RoomEvent::Presence(p)] if p.len() == 1 && p[0].name == "Bo")
        );
        // the socket drops: nobody is known to be here
        let events = rooms_of(&machine.closed(5.0, true, 0.5));
        assert_eq!(events, vec![RoomEvent::Presence(Vec::new())]);
    }

    #[test]
    fn broadcasts_go_out_while_joined_and_come_in_as_events() {
        let (mut machine, _) = in_room();
        let out = sent(&machine.broadcast("order:1", "typing", json!({"to": "x"})));
        assert_eq!(out[0].event, "broadcast");
        assert_eq!(out[0].payload["event"], "typing");
        let incoming = Frame::new(
            "realtime:order:1",
            "broadcast",
            json!({"type": "broadcast", "event": "typing", "payload": {"name": "Bo"}}),
        );
        let events = rooms_of(&machine.received(&incoming.encode(Vsn::V2), 2.0));
        assert_eq!(
            events,
            vec![RoomEvent::Broadcast {
                event: "typing".into(),
                payload: json!({"name": "Bo"})
            }]
        );
        machine.closed(3.0, true, 0.5);
        assert!(
            machine.broadcast("order:1", "typing", json!({})).is_empty(),
            "dropped while down"
        );
    }

    #[test]
    fn components_share_a_room_and_the_last_to_go_leaves_it() {
        let (mut machine, first) = in_room();
        let (second, effects) = machine.join_room("order:1", true);
        assert!(sent(&effects).is_empty(), "no second join");
        assert!(machine.leave_room(first).is_empty());
        let frames = sent(&machine.leave_room(second));
        assert_eq!(frames[0].event, protocol::LEAVE);
    }

    #[test]
    fn a_room_closed_by_the_server_says_so_and_is_not_joined_again_on_that_socket() {
        let (mut machine, _) = in_room();
        let close = Frame::new("realtime:order:1", protocol::CLOSE, json!({}));
        let events = rooms_of(&machine.received(&close.encode(Vsn::V2), 2.0));
        assert_eq!(events, vec![RoomEvent::Closed]);
        assert!(!machine.room_joined("order:1"));
    }
}
