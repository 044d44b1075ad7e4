//! WebSocket subscribers speaking the engine's protocol (serializer 2.0.0).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What all subscribers of a run received.
pub struct Stats {
    pub received: AtomicU64,
    /// Commit-to-receive latency in microseconds, sampled.
    pub latency: Mutex<Histogram<u64>>,
    sample_every: u64,
    /// Payloads kept for checking (resume), when asked.
    pub kept: Mutex<Vec<String>>,
    keep: bool,
}

impl Stats {
    pub fn new(sample_every: u64, keep: bool) -> Arc<Stats> {
        Arc::new(Stats {
            received: AtomicU64::new(0),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
            ),
            sample_every: sample_every.max(1),
            kept: Mutex::new(Vec::new()),
            keep,
        })
    }

    fn record(&self, text: &str) {
        let n = self.received.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(self.sample_every)
            && let Some(commit) = commit_micros(text)
        {
            let latency = (now_micros() - commit).max(1) as u64;
            if let Ok(mut histogram) = self.latency.lock() {
                let _ = histogram.record(latency);
            }
        }
        if self.keep
            && let Ok(mut kept) = self.kept.lock()
        {
            kept.push(text.to_string());
        }
    }
}

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The commit timestamp of a `postgres_changes` frame, without parsing it all.
fn commit_micros(text: &str) -> Option<i64> {
    let start = text.find("\"commit_timestamp\":\"")? + 20;
    let stamp = text.get(start..start + 27)?; // 2026-11-25T03:09:00.372131Z
    let number = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second, micros) = (
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        number(20..26)?,
    );
    // days from the civil date (Howard Hinnant's algorithm)
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros)
}

/// Opens a WebSocket with a small read buffer: tungstenite zero-fills its
/// whole read buffer (128 KiB by default) before every read, which with
/// thousands of sockets receiving one small frame each cost the generator
/// more CPU than everything else it does.
async fn connect(
    url: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    tokio_tungstenite::connect_async_with_config(url, Some(config), false).await
}

/// An open, joined subscriber.
pub struct Subscriber {
    reader: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects, joins one channel and starts counting what arrives.
    pub async fn open(
        url: &str,
        token: &str,
        topic: &str,
        binding: serde_json::Value,
        cursor: Option<&str>,
        stats: Arc<Stats>,
    ) -> Result<Subscriber, String> {
        let (socket, _) = connect(url).await.map_err(|e| format!("connect: {e}"))?;
        let (mut sink, mut stream) = socket.split();
        let mut payload = serde_json::json!({ "config": { "postgres_changes": [binding] }, "access_token": token });
        if let Some(cursor) = cursor {
            payload["cursor"] = serde_json::json!(cursor);
        }
        let join = serde_json::json!(["1", "1", topic, "phx_join", payload]).to_string();
        sink.send(Message::Text(join.into()))
            .await
            .map_err(|e| format!("join: {e}"))?;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .map_err(|_| "no join reply".to_string())?
                .ok_or("closed before the join reply")?
                .map_err(|e| e.to_string())?;
            let Message::Text(text) = message else {
                continue;
            };
            let frame: serde_json::Value =
                serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
            if frame[3] == "phx_reply" && frame[1] == "1" {
                if frame[4]["status"] != "ok" {
                    return Err(format!("join refused: {}", frame[4]));
                }
                break;
            }
        }
        let reader = tokio::spawn(async move {
            let mut heartbeat = tokio::time::interval(Duration::from_secs(25));
            heartbeat.tick().await;
            let mut next_ref = 2u64;
            loop {
                tokio::select! {
                    message = stream.next() => match message {
                        Some(Ok(Message::Text(text))) => {
                            // the event name, not a system message's `extension`
                            if text.as_str().contains(",\"postgres_changes\",{") {
                                stats.record(text.as_str());
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    _ = heartbeat.tick() => {
                        let frame = format!("[null,\"{next_ref}\",\"phoenix\",\"heartbeat\",{{}}]");
                        next_ref += 1;
                        if sink.send(Message::Text(frame.into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Subscriber { reader })
    }

    /// Connects and joins many channels (`(topic, bindings)`), keeping on
    /// when some are refused; returns how many were joined and refused.
    pub async fn open_many(
        url: &str,
        token: &str,
        channels: Vec<(String, serde_json::Value)>,
        stats: Arc<Stats>,
    ) -> Result<(Subscriber, usize, usize), String> {
        let (socket, _) = connect(url).await.map_err(|e| format!("connect: {e}"))?;
        let (mut sink, mut stream) = socket.split();
        let (mut joined, mut refused) = (0, 0);
        for (n, (topic, bindings)) in channels.into_iter().enumerate() {
            let payload = serde_json::json!({ "config": { "postgres_changes": bindings }, "access_token": token });
            let join_ref = (n + 1).to_string();
            let join =
                serde_json::json!([join_ref, join_ref, topic, "phx_join", payload]).to_string();
            if sink.send(Message::Text(join.into())).await.is_err() {
                break;
            }
            // as fast as the server lets a connection join
            let reply = loop {
                let Ok(Some(Ok(message))) =
                    tokio::time::timeout(Duration::from_secs(10), stream.next()).await
                else {
                    break None;
                };
                let Message::Text(text) = message else {
                    continue;
                };
                let frame: serde_json::Value =
                    serde_json::from_str(text.as_str()).unwrap_or_default();
                if frame[3] == "phx_reply" && frame[1] == join_ref.as_str() {
                    break Some(frame[4]["status"] == "ok");
                }
            };
            match reply {
                Some(true) => joined += 1,
                Some(false) => refused += 1,
                None => break,
            }
        }
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message
                    && text.as_str().contains(",\"postgres_changes\",{")
                {
                    stats.record(text.as_str());
                }
            }
            drop(sink);
        });
        Ok((Subscriber { reader }, joined, refused))
    }

    pub fn close(self) {
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_timestamps_parse_to_unix_micros() {
        let frame = r#"{"commit_timestamp":"1970-01-02T00:00:01.000002Z"}"#;
        assert_eq!(commit_micros(frame), Some(86_401_000_002));
        let frame = r#"{"commit_timestamp":"2026-11-25T03:09:00.372131Z"}"#;
        assert_eq!(commit_micros(frame), Some(1_795_576_140_372_131));
    }
}
