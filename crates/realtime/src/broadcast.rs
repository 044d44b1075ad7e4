//! Broadcast: messages for a room's members, from a client's channel, from
//! the app's server, over HTTP, or from SQL (`realtime_broadcast(topic,
//! event, payload)`, which a trigger can call). Every one goes through the
//! database as a logical decoding message (`pg_logical_emit_message`), so
//! it reaches the room's members on every server, in commit order with the
//! changes and rights around it, and one sent from SQL only once its
//! transaction commits.
//!
//! Who may send is who may join: the room's rules, checked against the
//! database's current state ([`Realtime::room_access`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::access::{Audience, Viewer};
use crate::change::{Row, RowView, Table};
use crate::engine::Realtime;
use crate::hub::{Broadcast, ConnectionId, Sender};
use crate::ports::{Room, RoomAccess, Rules, Topic};
use crate::protocol::{self, Frame};

/// The prefix of broadcast messages in the WAL.
pub const PREFIX: &str = "threadline.broadcast";
/// Longest event name, in bytes (realtime-js's binary frames allow 255).
const MAX_EVENT_LEN: usize = 255;
/// Most messages in one HTTP request.
const MAX_HTTP_MESSAGES: usize = 100;

/// A broadcast on its way to the database, and the reply its sender asked for.
#[derive(Debug)]
pub struct Outgoing {
    /// The logical decoding message's content.
    pub content: String,
    /// The push to acknowledge once the database has it (`broadcast.ack`).
    pub reply: Option<Frame>,
}

impl Outgoing {
    /// A client's `broadcast` push on a channel in `room`.
    pub fn from_client(
        frame: &Frame,
        room: Room,
        node: u64,
        connection: ConnectionId,
    ) -> Result<Outgoing, String> {
        let event = frame
            .payload
            .get("event")
            .and_then(Value::as_str)
            .ok_or("a broadcast needs an event (a string)")?;
        let payload = frame.payload.get("payload").cloned().unwrap_or(json!({}));
        Ok(Outgoing {
            content: content(&room.topic, event, &payload, Some((node, connection)))?,
            reply: None,
        })
    }
}

/// What goes into the WAL: `{topic, event, payload, from}`.
fn content(
    topic: &str,
    event: &str,
    payload: &Value,
    from: Option<(u64, ConnectionId)>,
) -> Result<String, String> {
    if event.is_empty() || event.len() > MAX_EVENT_LEN {
        return Err(format!(
            "a broadcast's event must be 1 to {MAX_EVENT_LEN} bytes long"
        ));
    }
    let from =
        from.map(|(node, connection)| json!({"node": node.to_string(), "connection": connection}));
    Ok(json!({"topic": topic, "event": event, "payload": payload, "from": from}).to_string())
}

#[derive(Deserialize)]
struct Emitted {
    topic: String,
    event: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    from: Option<EmittedFrom>,
}

#[derive(Deserialize)]
struct EmittedFrom {
    node: String,
    connection: ConnectionId,
}

/// A broadcast message from the WAL, for the hub; `Err` says what is wrong
/// with it (it is then dropped).
pub fn decode_emitted(content: &[u8], rules: &dyn Rules) -> Result<Broadcast, String> {
    let emitted: Emitted =
        serde_json::from_slice(content).map_err(|e| format!("not a broadcast: {e}"))?;
    let topic = emitted
        .topic
        .strip_prefix("realtime:")
        .unwrap_or(&emitted.topic);
    let room = match rules.topic(topic) {
        Topic::Room(room) => room,
        Topic::Invalid(reason) => return Err(reason),
        Topic::Plain => return Err(format!("{topic} is not a room")),
    };
    let payload = json!({
        "type": protocol::BROADCAST,
        "event": emitted.event,
        "payload": emitted.payload,
    });
    Ok(Broadcast {
        room,
        payload: payload.to_string().into(),
        from: emitted.from.and_then(|from| {
            Some(Sender {
                node: from.node.parse().ok()?,
                connection: from.connection,
            })
        }),
    })
}

/// realtime-js 2's binary broadcast push (its `serializer.js`, kind 3):
/// a kind byte, the lengths of join_ref, ref, topic, event and metadata,
/// an encoding byte (1: JSON, 0: binary), the five fields, then the
/// payload. As a `broadcast` frame; refused with a reason when malformed,
/// not kind 3, a binary payload, or asking to be stored (`persist`).
pub fn decode_broadcast_push(bytes: &[u8]) -> Result<Frame, String> {
    const HEADER: usize = 7;
    let header = bytes
        .get(..HEADER)
        .ok_or("a binary message too short to be a broadcast push")?;
    if header[0] != 3 {
        return Err(format!(
            "binary messages of kind {} are not supported: send JSON text, or a broadcast push (kind 3)",
            header[0]
        ));
    }
    let lengths = [header[1], header[2], header[3], header[4], header[5]];
    let encoding = header[6];
    let mut fields: Vec<&str> = Vec::with_capacity(5);
    let mut at = HEADER;
    for length in lengths {
        let end = at.saturating_add(usize::from(length));
        let field = bytes
            .get(at..end)
            .ok_or("a broadcast push shorter than its header says")?;
        fields.push(std::str::from_utf8(field).map_err(|_| "a broadcast push field is not UTF-8")?);
        at = end;
    }
    let [join_ref, msg_ref, topic, event, metadata] = fields[..] else {
        return Err("a malformed broadcast push".into());
    };
    if !metadata.is_empty() {
        let metadata: Value = serde_json::from_str(metadata)
            .map_err(|_| "a broadcast push's metadata is not JSON")?;
        if metadata
            .get("persist")
            .is_some_and(|p| p != &Value::Bool(false))
        {
            return Err("storing broadcasts for replay (persist) is not supported".into());
        }
    }
    let body = bytes.get(at..).unwrap_or_default();
    let payload: Value = match encoding {
        1 => serde_json::from_slice(body).map_err(|_| "a broadcast push's payload is not JSON")?,
        0 => return Err("binary broadcast payloads are not supported: send JSON".into()),
        other => return Err(format!("unknown payload encoding {other}")),
    };
    let optional = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(Frame {
        join_ref: optional(join_ref),
        msg_ref: optional(msg_ref),
        topic: topic.to_string(),
        event: protocol::BROADCAST.into(),
        payload: json!({"type": protocol::BROADCAST, "event": event, "payload": payload}),
    })
}

/// Why a broadcast was not sent.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// The topic names no room, or the message is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The sender may not send to this room.
    #[error("{0}")]
    Forbidden(String),
    #[error("the database could not take the broadcast: {0}")]
    Database(#[from] sqlx::Error),
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Realtime {
    /// Who may see a row of a published table now (`None`: there is no
    /// such row), by the app's rules, from the database.
    pub async fn row_audience(&self, table: &str, key: &str) -> Result<Option<Audience>, String> {
        let columns = self
            .catalog
            .columns(table)
            .ok_or_else(|| format!("{table} is not a published table"))?;
        let primary_key = self.catalog.primary_key(table);
        let [key_column] = primary_key else {
            return Err(format!("{table} has no single-column primary key"));
        };
        let key_type = self
            .catalog
            .column_type(table, key_column)
            .ok_or_else(|| format!("{table} has no column {key_column}"))?;
        let select = columns
            .iter()
            .map(|c| format!("{}::text", quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "select {select} from public.{} where {} = $1::{}",
            quote_ident(table),
            quote_ident(key_column),
            quote_ident(key_type)
        );
        let found = sqlx::query(&sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        let Some(found) = found else {
            return Ok(None);
        };
        let row: Row = (0..columns.len())
            .map(|i| found.try_get::<Option<String>, _>(i).ok().flatten())
            .collect();
        let shape = Table::new("public", table, columns.to_vec(), primary_key);
        Ok(Some(self.rules.audience(&RowView::new(&shape, &row))))
    }

    /// The room a topic names, if `viewer` may join it now.
    pub async fn room_access(&self, viewer: &Viewer, topic: &str) -> Result<Room, BroadcastError> {
        let topic = topic.strip_prefix("realtime:").unwrap_or(topic);
        let room = match self.rules.topic(topic) {
            Topic::Room(room) => room,
            Topic::Invalid(reason) => return Err(BroadcastError::Invalid(reason)),
            Topic::Plain => {
                return Err(BroadcastError::Invalid(format!(
                    "{topic} is not a room: broadcast goes to the room topics ({})",
                    self.rules.room_topics()
                )));
            }
        };
        let allowed = match &room.access {
            RoomAccess::Person(person) => *person == viewer.user_id,
            RoomAccess::Row { table, key } => self
                .row_audience(table, key)
                .await
                .map_err(BroadcastError::Invalid)?
                .is_some_and(|audience| viewer.may_see(&audience)),
        };
        if allowed {
            Ok(room)
        } else {
            Err(BroadcastError::Forbidden(format!(
                "you may not send to {topic}: it is for the people who may join it"
            )))
        }
    }

    /// Sends a broadcast as the server (every member gets it), once the
    /// database has it; no one's rights are checked: the caller decided.
    pub async fn broadcast(
        &self,
        topic: &str,
        event: &str,
        payload: &Value,
    ) -> Result<(), BroadcastError> {
        let topic = topic.strip_prefix("realtime:").unwrap_or(topic);
        let room = match self.rules.topic(topic) {
            Topic::Room(room) => room,
            Topic::Invalid(reason) => return Err(BroadcastError::Invalid(reason)),
            Topic::Plain => return Err(BroadcastError::Invalid(format!("{topic} is not a room"))),
        };
        let content =
            content(&room.topic, event, payload, None).map_err(BroadcastError::Invalid)?;
        self.emit(&[content]).await
    }

    /// Writes broadcast messages to the WAL, in one transaction.
    pub async fn emit(&self, contents: &[String]) -> Result<(), BroadcastError> {
        let mut tx = self.pool.begin().await?;
        for content in contents {
            sqlx::query("select pg_logical_emit_message(true, $1, $2)::text")
                .bind(PREFIX)
                .bind(content)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Who an HTTP request speaks for: its bearer token, else its session cookie.
    async fn http_viewer(&self, headers: &HeaderMap) -> Result<Viewer, Response> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let principal = match bearer {
            Some(token) => self.identity.token(token).await.map(Some),
            None => self.identity.session(headers).await,
        };
        match principal {
            Ok(Some(principal)) => Ok(principal.viewer),
            Ok(None) => Err(json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "sign in, or send Authorization: Bearer <token from /api/auth/token>",
            )),
            Err(e) => Err(json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &e.to_string(),
            )),
        }
    }

    /// Checks and sends broadcasts an HTTP client asked for: all or none.
    async fn http_send(&self, headers: &HeaderMap, messages: Vec<HttpMessage>) -> Response {
        let viewer = match self.http_viewer(headers).await {
            Ok(viewer) => viewer,
            Err(response) => return response,
        };
        if messages.is_empty() || messages.len() > MAX_HTTP_MESSAGES {
            return json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                &format!("send 1 to {MAX_HTTP_MESSAGES} messages"),
            );
        }
        // each message counts, as on a socket
        let count = u32::try_from(messages.len())
            .ok()
            .and_then(std::num::NonZeroU32::new)
            .unwrap_or(std::num::NonZeroU32::MIN);
        match self.http_broadcasts.check_key_n(&viewer.user_id, count) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                let mut response = json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    &format!(
                        "at most {} broadcasts per second per person; try again shortly",
                        self.settings.broadcasts_per_second
                    ),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                return response;
            }
            // more than a burst: waiting would never let it through
            Err(_) => {
                return json_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    &format!(
                        "a batch holds at most {} messages here (twice the broadcasts allowed per second)",
                        self.settings.broadcasts_per_second.max(1).saturating_mul(2)
                    ),
                );
            }
        }
        let mut contents = Vec::with_capacity(messages.len());
        for message in messages {
            let room = match self.room_access(&viewer, &message.topic).await {
                Ok(room) => room,
                Err(e) => return broadcast_error(e),
            };
            match content(&room.topic, &message.event, &message.payload, None) {
                Ok(content) => contents.push(content),
                Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", &e),
            }
        }
        match self.emit(&contents).await {
            Ok(()) => StatusCode::ACCEPTED.into_response(),
            Err(e) => broadcast_error(e),
        }
    }
}

#[derive(Deserialize)]
pub struct HttpBroadcast {
    messages: Vec<HttpMessage>,
}

#[derive(Deserialize)]
struct HttpMessage {
    topic: String,
    event: String,
    #[serde(default)]
    payload: Value,
}

/// HTTP broadcasts allowed per person.
pub(crate) type HttpLimiter = governor::DefaultKeyedRateLimiter<uuid::Uuid>;

/// `per_second` HTTP broadcasts per person, in bursts of twice that (as on
/// a socket, where the limit is per connection).
pub(crate) fn http_limiter(per_second: u32) -> HttpLimiter {
    governor::RateLimiter::keyed(crate::session::quota(per_second))
}

fn json_error(status: StatusCode, error: &str, message: &str) -> Response {
    (status, Json(json!({"error": error, "message": message}))).into_response()
}

fn broadcast_error(error: BroadcastError) -> Response {
    match error {
        BroadcastError::Invalid(m) => json_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", &m),
        BroadcastError::Forbidden(m) => json_error(StatusCode::FORBIDDEN, "forbidden", &m),
        BroadcastError::Database(e) => {
            tracing::warn!(error = %e, "a broadcast could not be written");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database could not take the broadcast; try again",
            )
        }
    }
}

/// `POST /realtime/v1/api/broadcast` with `{messages: [{topic, event,
/// payload}]}` (realtime-js's REST fallback): 202 once sent.
pub async fn http_broadcast(
    State(realtime): State<Arc<Realtime>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<HttpBroadcast>(&body) {
        Ok(request) => realtime.http_send(&headers, request.messages).await,
        Err(e) => json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            &format!("expected {{\"messages\": [{{\"topic\", \"event\", \"payload\"}}]}}: {e}"),
        ),
    }
}

/// `POST /realtime/v1/api/broadcast/{topic}/events/{event}` with the
/// payload as the body (realtime-js's `httpSend`): 202 once sent.
pub async fn http_broadcast_event(
    State(realtime): State<Arc<Realtime>>,
    Path((topic, event)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let payload = match serde_json::from_slice::<Value>(&body) {
        Ok(payload) => payload,
        Err(_) => {
            return json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "the payload must be JSON (binary payloads are not supported)",
            );
        }
    };
    let message = HttpMessage {
        topic,
        event,
        payload,
    };
    realtime.http_send(&headers, vec![message]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: u8, fields: [&str; 5], encoding: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![kind];
        bytes.extend(
            fields
                .iter()
                .map(|f| u8::try_from(f.len()).unwrap_or(u8::MAX)),
        );
        bytes.push(encoding);
        for field in fields {
            bytes.extend_from_slice(field.as_bytes());
        }
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_binary_broadcast_push_becomes_a_broadcast_frame() {
        let bytes = push(
            3,
            ["1", "2", "realtime:order:x", "typing", ""],
            1,
            "{\"a\":\"é\"}".as_bytes(),
        );
        let frame = decode_broadcast_push(&bytes).map_err(|e| e.to_string());
        let frame = frame.as_ref().ok();
        assert_eq!(frame.map(|f| f.topic.as_str()), Some("realtime:order:x"));
        assert_eq!(frame.and_then(|f| f.msg_ref.as_deref()), Some("2"));
        assert_eq!(
            frame.map(|f| f.payload.clone()),
            Some(json!({"type": "broadcast", "event": "typing", "payload": {"a": "é"}}))
        );
    }

    #[test]
    fn malformed_or_unsupported_pushes_are_refused_with_a_reason() {
        let cases: [(Vec<u8>, &str); 6] = [
            (vec![3, 1, 1], "too short"),
            (push(4, ["", "", "t", "e", ""], 1, b"{}"), "kind 4"),
            (vec![3, 9, 0, 0, 0, 0, 1, b'a'], "shorter than its header"),
            (
                push(3, ["", "", "t", "e", ""], 0, b"\x00\x01"),
                "binary broadcast payloads",
            ),
            (
                push(3, ["", "", "t", "e", "{\"persist\":true}"], 1, b"{}"),
                "persist",
            ),
            (push(3, ["", "", "t", "e", ""], 1, b"{nope"), "not JSON"),
        ];
        for (bytes, reason) in cases {
            let error = decode_broadcast_push(&bytes).err().unwrap_or_default();
            assert!(error.contains(reason), "{reason}: {error}");
        }
    }
}
