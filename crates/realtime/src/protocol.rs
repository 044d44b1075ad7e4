//! The wire protocol: Phoenix channel messages as Supabase Realtime speaks
//! them, so `@supabase/realtime-js` works unchanged. Serializer `1.0.0`
//! sends JSON objects, `2.0.0` arrays `[join_ref, ref, topic, event, payload]`.
//!
//! Our extensions ride in fields realtime-js ignores: `cursor` on each
//! change event and in the join reply, `cursor` in the join payload to
//! resume, and `threadline` notices inside `system` messages.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::cursor::ChangeCursor;

pub const PHOENIX_TOPIC: &str = "phoenix";
pub const JOIN: &str = "phx_join";
pub const REPLY: &str = "phx_reply";
pub const LEAVE: &str = "phx_leave";
pub const CLOSE: &str = "phx_close";
pub const ERROR: &str = "phx_error";
pub const HEARTBEAT: &str = "heartbeat";
pub const ACCESS_TOKEN: &str = "access_token";
pub const POSTGRES_CHANGES: &str = "postgres_changes";
pub const SYSTEM: &str = "system";
pub const BROADCAST: &str = "broadcast";
pub const PRESENCE: &str = "presence";
pub const PRESENCE_STATE: &str = "presence_state";
pub const PRESENCE_DIFF: &str = "presence_diff";

/// WebSocket close code for a connection closed because it fell too far
/// behind; reconnecting and resuming from the last cursor loses nothing.
pub const CLOSE_SLOW_CONSUMER: u16 = 4001;
/// Close code when the client stopped sending heartbeats.
pub const CLOSE_HEARTBEAT_TIMEOUT: u16 = 4002;
/// Close code when the server shuts down; reconnect and resume.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code when the connection's credentials stopped counting (signed
/// out, expired, account removed): reconnecting needs a new sign-in.
pub const CLOSE_SIGNED_OUT: u16 = 4003;
/// Close code when a client exceeded a limit (connections, message size or rate).
pub const CLOSE_LIMITED: u16 = 4008;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vsn {
    V1,
    V2,
}

impl Vsn {
    /// From the `vsn` query parameter; Phoenix defaults to 1.0.0.
    pub fn parse(text: Option<&str>) -> Result<Vsn, String> {
        match text {
            None | Some("1.0.0") => Ok(Vsn::V1),
            Some("2.0.0") => Ok(Vsn::V2),
            Some(other) => Err(format!(
                "unsupported serializer version {other:?} (use 1.0.0 or 2.0.0)"
            )),
        }
    }
}

/// One Phoenix message.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

#[derive(Deserialize)]
struct ObjectFrame {
    #[serde(default)]
    join_ref: Option<String>,
    #[serde(default, rename = "ref")]
    msg_ref: Option<String>,
    topic: String,
    event: String,
    #[serde(default)]
    payload: Value,
}

impl Frame {
    pub fn decode(text: &str, vsn: Vsn) -> Result<Frame, String> {
        match vsn {
            Vsn::V1 => {
                let frame: ObjectFrame = serde_json::from_str(text)
                    .map_err(|e| format!("not a Phoenix message: {e}"))?;
                Ok(Frame {
                    join_ref: frame.join_ref,
                    msg_ref: frame.msg_ref,
                    topic: frame.topic,
                    event: frame.event,
                    payload: frame.payload,
                })
            }
            Vsn::V2 => {
                let (join_ref, msg_ref, topic, event, payload): (
                    Option<String>,
                    Option<String>,
                    String,
                    String,
                    Value,
                ) = serde_json::from_str(text).map_err(|e| {
                    format!("not a Phoenix message [join_ref, ref, topic, event, payload]: {e}")
                })?;
                Ok(Frame {
                    join_ref,
                    msg_ref,
                    topic,
                    event,
                    payload,
                })
            }
        }
    }

    pub fn encode(&self, vsn: Vsn) -> String {
        encode_raw(
            vsn,
            self.join_ref.as_deref(),
            self.msg_ref.as_deref(),
            &self.topic,
            &self.event,
            &self.payload.to_string(),
        )
    }

    pub fn new(topic: &str, event: &str, payload: Value) -> Frame {
        Frame {
            join_ref: None,
            msg_ref: None,
            topic: topic.to_string(),
            event: event.to_string(),
            payload,
        }
    }

    /// A reply to this message.
    pub fn reply(&self, status: &str, response: Value) -> Frame {
        Frame {
            join_ref: self.join_ref.clone(),
            msg_ref: self.msg_ref.clone(),
            topic: self.topic.clone(),
            event: REPLY.to_string(),
            payload: serde_json::json!({ "status": status, "response": response }),
        }
    }

    /// An error reply with a reason, as Phoenix and realtime-js expect.
    pub fn error_reply(&self, reason: &str) -> Frame {
        self.reply("error", serde_json::json!({ "reason": reason }))
    }
}

/// A serializer `2.0.0` message whose payload stays JSON text until its
/// event says what it holds: the browser client reads typed payloads (change
/// events, notices, join replies) from text, as it reads everything else.
/// (Reading them from a [`Value`] would compile a second set of
/// deserializers, one per type, into the Wasm.)
pub struct RawFrame<'a> {
    pub frame: Frame,
    pub payload: &'a RawValue,
}

impl<'a> RawFrame<'a> {
    pub fn decode(text: &'a str) -> Result<RawFrame<'a>, String> {
        let (join_ref, msg_ref, topic, event, payload): (
            Option<String>,
            Option<String>,
            String,
            String,
            &'a RawValue,
        ) = serde_json::from_str(text).map_err(|e| {
            format!("not a Phoenix message [join_ref, ref, topic, event, payload]: {e}")
        })?;
        let value = serde_json::from_str(payload.get())
            .map_err(|e| format!("not a Phoenix message payload: {e}"))?;
        Ok(RawFrame {
            frame: Frame {
                join_ref,
                msg_ref,
                topic,
                event,
                payload: value,
            },
            payload,
        })
    }

    /// The payload read as a `T`.
    pub fn payload<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }
}

/// Encodes a message whose payload is already JSON text.
pub fn encode_raw(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload_json: &str,
) -> String {
    encode_with(
        vsn,
        join_ref,
        msg_ref,
        topic,
        event,
        payload_json.len(),
        |out| out.push_str(payload_json),
    )
}

/// Encodes a message whose payload `write_payload` appends as JSON text, in
/// one buffer (the hot path: a change's payload is written straight into
/// its frame); `payload_len`: about how long it will be.
pub fn encode_with(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload_len: usize,
    write_payload: impl FnOnce(&mut String),
) -> String {
    let quote = |out: &mut String, s: Option<&str>| match s {
        Some(s) => push_json_string(out, s),
        None => out.push_str("null"),
    };
    let capacity = payload_len
        .saturating_add(topic.len())
        .saturating_add(event.len())
        .saturating_add(64);
    let mut out = String::with_capacity(capacity);
    match vsn {
        Vsn::V2 => {
            out.push('[');
            quote(&mut out, join_ref);
            out.push(',');
            quote(&mut out, msg_ref);
            out.push(',');
            push_json_string(&mut out, topic);
            out.push(',');
            push_json_string(&mut out, event);
            out.push(',');
            write_payload(&mut out);
            out.push(']');
        }
        Vsn::V1 => {
            out.push_str("{\"join_ref\":");
            quote(&mut out, join_ref);
            out.push_str(",\"ref\":");
            quote(&mut out, msg_ref);
            out.push_str(",\"topic\":");
            push_json_string(&mut out, topic);
            out.push_str(",\"event\":");
            push_json_string(&mut out, event);
            out.push_str(",\"payload\":");
            write_payload(&mut out);
            out.push('}');
        }
    }
    out
}

pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len().saturating_add(2));
    push_json_string(&mut out, s);
    out
}

/// Appends `s` as a JSON string. Most text needs no escaping (only `"`,
/// `\` and control characters do) and is copied as is; the rest goes
/// through serde_json.
pub fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        match serde_json::to_string(s) {
            Ok(escaped) => out.push_str(&escaped),
            Err(_) => out.push_str("\"\""),
        }
    }
}

/// The payload of `phx_join`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JoinPayload {
    #[serde(default)]
    pub config: JoinConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Extension: resume after this cursor (changes missed while away are
    /// replayed first), or get a reset notice if it is too old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<ChangeCursor>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JoinConfig {
    #[serde(default)]
    pub postgres_changes: Vec<PostgresChangesRequest>,
    #[serde(default)]
    pub broadcast: BroadcastConfig,
    #[serde(default)]
    pub presence: PresenceConfig,
    /// realtime-js's private channels: rooms are authorized either way.
    #[serde(default)]
    pub private: bool,
}

/// A channel's broadcast options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastConfig {
    /// Each broadcast sent gets a reply once the server has it.
    #[serde(default)]
    pub ack: bool,
    /// The channel hears its own broadcasts.
    #[serde(default, rename = "self")]
    pub echo: bool,
}

/// A channel's presence options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceConfig {
    /// The channel hears presence (`presence_state`, `presence_diff`).
    #[serde(default)]
    pub enabled: bool,
    /// realtime-js's presence key: ignored, presence is keyed by the user.
    #[serde(default)]
    pub key: String,
}

/// One `postgres_changes` binding as a client asks for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresChangesRequest {
    pub event: String,
    pub schema: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Only these columns in the payload's rows (realtime-js's `select`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<Vec<String>>,
}

/// A binding as the server accepted it, with the id its events carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresChangesBinding {
    pub id: u64,
    #[serde(flatten)]
    pub request: PostgresChangesRequest,
}

/// The `response` of a successful join.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub postgres_changes: Vec<PostgresChangesBinding>,
    /// Extension: where the channel starts. Every change after this cursor
    /// follows on the channel (those missed since a resume cursor first), so
    /// a client that reconnects resumes from here or from its last change.
    pub cursor: ChangeCursor,
}

/// The payload of a `postgres_changes` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub ids: Vec<u64>,
    pub data: ChangeData,
    /// Extension: where this change sits; resume after it.
    pub cursor: ChangeCursor,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeData {
    pub schema: String,
    pub table: String,
    pub commit_timestamp: String,
    #[serde(rename = "type")]
    pub kind: ChangeKind,
    pub columns: Vec<ColumnInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_record: Option<Map<String, Value>>,
    #[serde(default)]
    pub errors: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
    /// The table was emptied. Subscribers of the table get a reset notice,
    /// never an event of this type.
    Truncate,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "INSERT",
            ChangeKind::Update => "UPDATE",
            ChangeKind::Delete => "DELETE",
            ChangeKind::Truncate => "TRUNCATE",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

/// The payload of a `system` message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SystemMessage {
    pub status: String,
    pub extension: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threadline: Option<Notice>,
}

/// Extension notices inside `system` messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// The resume cursor is older than the retention window: changes may
    /// have been missed, so refetch, then continue from `cursor`.
    Reset { cursor: ChangeCursor },
    /// The connection fell too far behind and is being closed; reconnect
    /// and resume from your last cursor.
    SlowConsumer,
    /// The access token expired; the channel is closed.
    TokenExpired,
    /// What this channel may see changed (its user's role or group did):
    /// refetch, then continue from `cursor`, under the new rights.
    RightsChanged { cursor: ChangeCursor },
    /// The session this connection signed in with ended: the connection is
    /// closed; sign in again.
    SignedOut,
    /// The session ran out; the connection is closed; sign in again.
    SessionExpired,
    /// The account no longer exists; the connection is closed.
    AccountRemoved,
    /// Too many connections or subscriptions, or messages too fast.
    Limited,
    /// The channel's room is closed to this user (they may no longer see
    /// what it is about).
    RoomClosed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for text in [
            "",
            "realtime:orders",
            "say \"hi\"",
            "back\\slash",
            "line\nbreak\ttab\u{1}\u{1f}",
            "del\u{7f} and é, 漢字, 🧵",
        ] {
            let mut out = String::from("x");
            push_json_string(&mut out, text);
            let expected = serde_json::to_string(text).map(|json| format!("x{json}"));
            assert_eq!(Ok(out), expected.map_err(|e| e.to_string()), "{text:?}");
        }
    }

    #[test]
    fn a_payload_written_in_place_makes_the_same_frame() {
        for vsn in [Vsn::V1, Vsn::V2] {
            let payload = r#"{"a":[1,"two"]}"#;
            let raw = encode_raw(vsn, Some("1"), None, "realtime:\"q\"", "ev", payload);
            let written = encode_with(vsn, Some("1"), None, "realtime:\"q\"", "ev", 0, |out| {
                out.push_str(payload)
            });
            assert_eq!(raw, written);
            let frame = Frame::decode(&written, vsn).map_err(|e| e.to_string());
            assert_eq!(
                frame.map(|f| (f.join_ref, f.msg_ref, f.topic, f.payload["a"][1].clone())),
                Ok((
                    Some("1".to_string()),
                    None,
                    "realtime:\"q\"".to_string(),
                    serde_json::json!("two")
                ))
            );
        }
    }

    #[test]
    fn both_serializers_round_trip() {
        let frame = Frame {
            join_ref: Some("1".into()),
            msg_ref: Some("2".into()),
            topic: "realtime:orders".into(),
            event: JOIN.into(),
            payload: serde_json::json!({"config": {"postgres_changes": []}}),
        };
        for vsn in [Vsn::V1, Vsn::V2] {
            assert_eq!(Frame::decode(&frame.encode(vsn), vsn), Ok(frame.clone()));
        }
        assert!(
            frame
                .encode(Vsn::V2)
                .starts_with(r#"["1","2","realtime:orders","phx_join","#)
        );
    }

    #[test]
    fn realtime_js_heartbeats_decode() {
        let frame = Frame::decode(r#"[null,"5","phoenix","heartbeat",{}]"#, Vsn::V2);
        assert_eq!(
            frame.map(|f| (f.topic, f.event)),
            Ok(("phoenix".into(), "heartbeat".into()))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "",
            "{",
            "[]",
            "[1,2,3,4,5]",
            "null",
            "\"x\"",
            "[null,null,null,\"e\",{}]",
        ] {
            assert!(Frame::decode(text, Vsn::V2).is_err(), "{text}");
            assert!(Frame::decode(text, Vsn::V1).is_err(), "{text}");
        }
    }

    #[test]
    fn replies_carry_the_refs_of_the_request() {
        let request = Frame::decode(r#"["3","4","realtime:x","phx_join",{}]"#, Vsn::V2)
            .map(|f| f.error_reply("nope"));
        let encoded = request.map(|r| r.encode(Vsn::V2)).unwrap_or_default();
        assert_eq!(
            encoded,
            r#"["3","4","realtime:x","phx_reply",{"response":{"reason":"nope"},"status":"error"}]"#
        );
    }

    #[test]
    fn a_join_with_a_resume_cursor_parses() {
        let payload: Result<JoinPayload, _> = serde_json::from_value(serde_json::json!({
            "config": {"broadcast": {}, "postgres_changes": [{"event": "*", "schema": "public", "table": "orders", "filter": "status=eq.pending"}]},
            "access_token": "t",
            "cursor": "1A/2"
        }));
        let payload = payload.ok();
        assert_eq!(
            payload.as_ref().and_then(|p| p.cursor),
            Some(ChangeCursor::new(0x1A, 2))
        );
        assert_eq!(payload.map(|p| p.config.postgres_changes.len()), Some(1));
    }

    #[test]
    fn notices_are_tagged() {
        let text = serde_json::to_string(&Notice::Reset {
            cursor: ChangeCursor::new(1, 0),
        })
        .unwrap_or_default();
        assert_eq!(text, r#"{"notice":"reset","cursor":"00000000:1/0"}"#);
    }
}
