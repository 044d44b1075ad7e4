//! A client that sends what it should not — a filter made to crash the
//! parser, a message far over the size limit, more connections, channels
//! and messages than anyone needs — gets a clear refusal, cannot hurt the
//! server, and leaves nothing behind when its connection ends.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::live::{Client, Incoming, LiveServer, orders};
use serde_json::json;
use sqlx::PgPool;
use threadline::server::settings::RealtimeSettings;
use threadline_realtime::protocol::Vsn;

const BUYER: &str = "buyer@sleek.test";

/// The value of one of the server's metrics.
async fn metric(server: &LiveServer, name: &str) -> f64 {
    let text = server.app.metrics().await;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("threadline_realtime_{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Waits (briefly) until a metric reaches `value`.
async fn settles(server: &LiveServer, name: &str, value: f64) -> bool {
    for _ in 0..100 {
        if metric(server, name).await == value {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[sqlx::test]
async fn a_filter_made_to_crash_the_parser_is_refused_and_leaves_nothing_behind(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let token = server.token(BUYER).await;
    let mut client = server.connect().await;
    for filter in [
        "created_at=eq.2026-01-01T00:00:00+1é1",
        "created_at=gt.2026-01-01T00:00:00+99999999999",
        "quantity=eq.99999999999999999999999999999999999999999",
        "é=eq.1",
        "quantity=in.(\"1",
    ] {
        let reply = client
            .join("realtime:x", Some(&token), orders(Some(filter)), None)
            .await;
        assert_eq!(reply.payload["status"], "error", "{filter}");
        assert!(
            reply.payload["response"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("invalid filter") || r.contains("not a valid")),
            "{filter}: {}",
            reply.payload
        );
    }
    assert!(
        client.heartbeat_ok().await,
        "the connection is still healthy"
    );
    client
        .subscribe("realtime:ok", &token, orders(None), None)
        .await;
    assert_eq!(metric(&server, "subscriptions").await, 1.0);
    assert_eq!(metric(&server, "connections").await, 1.0);
    client.close().await;
    assert!(
        settles(&server, "connections", 0.0).await,
        "the connection is released"
    );
    assert!(
        settles(&server, "subscriptions", 0.0).await,
        "and its subscriptions"
    );
    server.finish().await;
}

#[sqlx::test]
async fn a_message_over_the_limit_is_refused_by_the_websocket_layer(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let mut client = server.connect().await;
    // 16 MiB would once have been read whole; now the frame is refused as it comes
    client
        .send_text(&format!(
            "[null,\"1\",\"phoenix\",\"heartbeat\",{{\"pad\":\"{}\"}}]",
            "x".repeat(1 << 20)
        ))
        .await;
    let (mut reason, mut code) = (String::new(), None);
    while let Some(incoming) = client.next(Duration::from_secs(5)).await {
        match incoming {
            Incoming::Frame(frame) => {
                reason = frame.payload["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            }
            Incoming::Closed(c) => {
                code = c;
                break;
            }
        }
    }
    assert!(
        reason.contains("larger than the limit of 65536 bytes"),
        "{reason}"
    );
    // the rest of the refused frame may still be in flight, so the close
    // frame itself can be lost to a reset; the reason has arrived
    assert!(matches!(code, Some(1009) | None), "{code:?}");
    assert!(settles(&server, "connections", 0.0).await);
    server.finish().await;
}

fn tight() -> RealtimeSettings {
    RealtimeSettings {
        max_connections_per_user: 3,
        max_connections_per_address: 5,
        max_channels_per_user: 4,
        max_bindings_per_user: 6,
        max_bindings_per_channel: 3,
        messages_per_second: 20,
        joins_per_second: 5,
        ..RealtimeSettings::default()
    }
}

#[sqlx::test]
async fn one_user_cannot_hold_more_connections_channels_or_bindings_than_the_caps(pool: PgPool) {
    let server = LiveServer::start_with(pool.clone(), tight(), true).await;
    let token = server.token(BUYER).await;
    let mut clients = Vec::new();
    for n in 0..3 {
        let mut client = server.connect().await;
        client
            .subscribe(&format!("realtime:c{n}"), &token, orders(None), None)
            .await;
        clients.push(client);
    }
    let mut fourth = server.connect().await;
    let reply = fourth
        .join("realtime:c3", Some(&token), orders(None), None)
        .await;
    assert!(
        reply.payload["response"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("too many connections for this user")),
        "{}",
        reply.payload
    );
    // channels: three so far, the cap is four
    clients[0]
        .subscribe("realtime:more", &token, orders(None), None)
        .await;
    let reply = clients[0]
        .join("realtime:one-too-many", Some(&token), orders(None), None)
        .await;
    assert!(
        reply.payload["response"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("too many channels for this user")),
        "{}",
        reply.payload
    );
    // bindings: four channels of one binding each; the cap is six
    let mut wide = server.connect().await;
    let reply = wide
        .join(
            "realtime:w",
            Some(&server.token("buyer2@sleek.test").await),
            json!([
                {"event": "*", "schema": "public", "table": "orders"},
                {"event": "*", "schema": "public", "table": "orders"},
                {"event": "*", "schema": "public", "table": "orders"},
                {"event": "*", "schema": "public", "table": "orders"},
            ]),
            None,
        )
        .await;
    assert!(
        reply.payload["response"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("at most 3 postgres_changes bindings per channel")),
        "{}",
        reply.payload
    );
    drop(clients.pop());
    // a closed connection frees its place
    let mut later = None;
    for _ in 0..50 {
        let mut client = server.connect().await;
        let reply = client
            .join("realtime:c4", Some(&token), orders(None), None)
            .await;
        if reply.payload["status"] == "ok" {
            later = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(later.is_some(), "a place is free again");
    server.finish().await;
}

#[sqlx::test]
async fn one_address_cannot_open_more_connections_than_the_cap(pool: PgPool) {
    let server = LiveServer::start_with(pool.clone(), tight(), true).await;
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut client = server.connect().await;
        assert!(client.heartbeat_ok().await);
        open.push(client);
    }
    let mut sixth = server.connect().await;
    let mut refused = false;
    while let Some(incoming) = sixth.next(Duration::from_secs(5)).await {
        match incoming {
            Incoming::Frame(frame) => {
                refused |= frame.payload["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("too many connections from this address"))
            }
            Incoming::Closed(code) => {
                assert_eq!(code, Some(4008));
                break;
            }
        }
    }
    assert!(refused);
    server.finish().await;
}

#[sqlx::test]
async fn messages_and_joins_too_fast_are_refused_with_a_reason(pool: PgPool) {
    let server = LiveServer::start_with(pool.clone(), tight(), true).await;
    let token = server.token(BUYER).await;
    let mut client = server.connect().await;
    for n in 0..15 {
        client
            .send_frame(
                &format!("realtime:j{n}"),
                "phx_join",
                json!({
                    "config": {"postgres_changes": []}, "access_token": token,
                }),
            )
            .await;
    }
    let mut too_many_joins = false;
    let mut too_many_messages = false;
    for _ in 0..60 {
        client.send_frame("phoenix", "heartbeat", json!({})).await;
    }
    while let Some(Incoming::Frame(frame)) = client.next(Duration::from_millis(500)).await {
        let text = frame.payload.to_string();
        too_many_joins |= text.contains("too many joins");
        too_many_messages |= text.contains("too many messages");
    }
    assert!(too_many_joins, "joins are limited per connection");
    assert!(too_many_messages, "messages are limited per connection");
    // a calm client is served again
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(client.heartbeat_ok().await);
    server.finish().await;
}

#[sqlx::test]
async fn a_flood_closes_the_connection(pool: PgPool) {
    let server = LiveServer::start_with(pool.clone(), tight(), true).await;
    let mut client = Client::connect(server.addr, Vsn::V2).await;
    for _ in 0..200 {
        client
            .send_text("[null,null,\"phoenix\",\"heartbeat\",{}]")
            .await;
    }
    let mut code = None;
    while let Some(incoming) = client.next(Duration::from_secs(5)).await {
        if let Incoming::Closed(c) = incoming {
            code = c;
            break;
        }
    }
    assert_eq!(code, Some(4008));
    assert!(settles(&server, "connections", 0.0).await);
    server.finish().await;
}
