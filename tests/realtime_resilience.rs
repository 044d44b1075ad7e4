//! The engine under stress and abuse: slow clients, bad input, expired
//! tokens, and restarts of this server.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::live::{
    Client, Incoming, LiveServer, WAIT, binding, order_id, orders, record_text, set_notes,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use threadline::server::settings::RealtimeSettings;
use threadline_realtime::protocol::Vsn;

const ADMIN: &str = "admin@sleek.test";
const BUYER: &str = "buyer@sleek.test";

fn notes_of(event: &threadline_realtime::protocol::ChangeEvent) -> String {
    record_text(event, "notes").to_string()
}

#[sqlx::test]
async fn a_stalled_client_is_cut_off_while_others_get_everything(pool: PgPool) {
    let settings = RealtimeSettings {
        queue_size: 64,
        ..RealtimeSettings::default()
    };
    let server = LiveServer::start_with(pool.clone(), settings, true).await;
    let token = server.token(ADMIN).await;
    let mut stalled = server.connect().await;
    stalled
        .subscribe(
            "realtime:updates",
            &token,
            binding("INSERT", "order_updates", None),
            None,
        )
        .await;
    let mut healthy = server.connect().await;
    healthy
        .subscribe(
            "realtime:updates",
            &token,
            binding("INSERT", "order_updates", None),
            None,
        )
        .await;

    // ~20 MB of changes in 400 transactions; the stalled client reads nothing.
    // The healthy one reads each transaction before the next is written, so
    // its backlog never nears the limit however slowly this machine runs it,
    // while the stalled one's grows by ten with every transaction.
    let order = order_id(&pool, "Merino crewneck sweater").await;
    for transaction in 0..400 {
        sqlx::query(
            "insert into order_updates (order_id, author_id, text) \
             select $1, (select id from users where email = 'admin@sleek.test'), repeat('x', 4990) || n \
             from generate_series(1, 10) as n",
        )
        .bind(order)
        .execute(&pool)
        .await
        .expect("insert");
        for n in 1..=10 {
            let (_, change) = healthy.next_change().await;
            let text = record_text(&change, "text");
            assert!(
                text.ends_with(&format!("x{n}")),
                "transaction {transaction}: change {n} arrived in order"
            );
        }
    }

    // The stalled client finds, after what was already in flight, the reason and the close.
    let mut notice = None;
    let close = loop {
        match stalled.next(WAIT).await {
            Some(Incoming::Frame(frame)) if frame.event == "system" => notice = Some(frame.payload),
            Some(Incoming::Frame(_)) => continue,
            Some(Incoming::Closed(code)) => break code,
            None => break None,
        }
    };
    assert_eq!(close, Some(4001), "closed as a slow consumer");
    assert_eq!(
        notice.map(|n| n["threadline"]["notice"].clone()),
        Some(json!("slow_consumer"))
    );
    let metrics = server.app.metrics().await;
    assert!(
        metrics.contains("threadline_realtime_slow_consumer_closes_total 1"),
        "{metrics}"
    );

    // the healthy client is still live
    set_notes(&pool, order, "after").await;
    let mut healthy_again = server.connect().await;
    healthy_again
        .subscribe("realtime:orders", &token, orders(None), None)
        .await;
    set_notes(&pool, order, "later").await;
    // "after" may still have been on its way from the WAL when this channel
    // joined (a join without a cursor starts at the hub's head), so it may
    // come first; "later" must come, and nothing else
    let mut first = notes_of(&healthy_again.next_change().await.1);
    if first == "after" {
        first = notes_of(&healthy_again.next_change().await.1);
    }
    assert_eq!(first, "later");
    healthy.close().await;
    healthy_again.close().await;
    server.finish().await;
}

#[sqlx::test]
async fn bad_input_gets_error_replies_and_the_connection_stays_healthy(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let token = server.token(BUYER).await;
    let user = server.app.user(BUYER).await;
    let (expired, _) = server.app.state.auth.issue(&user, Duration::ZERO);
    let mut client = server.connect().await;

    // not JSON, and JSON that is not a Phoenix message
    for text in ["not json", "[1,2]", "{\"topic\": 5}"] {
        client.send_text(text).await;
        let frame = client.next_frame().await;
        assert_eq!(
            (frame.topic.as_str(), frame.event.as_str()),
            ("phoenix", "system"),
            "{text}"
        );
        assert_eq!(frame.payload["status"], "error");
        assert!(
            frame.payload["message"]
                .as_str()
                .is_some_and(|m| m.contains("not a Phoenix message"))
        );
    }

    // joins that must be refused, each with its reason
    let refusals: Vec<(&str, Option<&str>, Value, &str)> = vec![
        (
            "realtime:a",
            Some(&token),
            orders(Some("quantity=cs.{5}")),
            "invalid filter: unknown operator",
        ),
        (
            "realtime:a",
            Some(&token),
            orders(Some("colour=eq.red")),
            "there is no column \"colour\"",
        ),
        (
            "realtime:a",
            Some(&token),
            orders(Some("quantity=gt.many")),
            "is not a valid int4",
        ),
        (
            "realtime:a",
            Some(&token),
            binding("*", "users", None),
            "unknown table \"users\"",
        ),
        (
            "realtime:a",
            Some(&token),
            binding("TRUNCATE", "orders", None),
            "unknown event \"TRUNCATE\"",
        ),
        ("realtime:a", None, orders(None), "unauthorized"),
        (
            "realtime:a",
            Some(&expired),
            orders(None),
            "the access token has expired",
        ),
        (
            "realtime:a",
            Some("not.a.token"),
            orders(None),
            "the access token is malformed",
        ),
        ("orders", Some(&token), orders(None), "unknown topic"),
    ];
    for (topic, token, bindings, reason) in refusals {
        let reply = client.join(topic, token, bindings, None).await;
        assert_eq!(reply.payload["status"], "error", "{reason}");
        let got = reply.payload["response"]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(got.contains(reason), "expected {reason:?}, got {got:?}");
    }
    let bad_payload = client
        .send_frame(
            "realtime:a",
            "phx_join",
            json!({"config": {"postgres_changes": "all"}}),
        )
        .await;
    assert!(
        client.reply_to(&bad_payload).await.payload["response"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("invalid join payload"))
    );

    // a message for a channel never joined
    let stray = client
        .send_frame("realtime:nowhere", "broadcast", json!({}))
        .await;
    assert_eq!(
        client.reply_to(&stray).await.payload["response"]["reason"],
        "unmatched topic"
    );

    // after all that, the connection works
    assert!(client.heartbeat_ok().await);
    client
        .subscribe("realtime:a", &token, orders(None), None)
        .await;
    let unknown = client.send_frame("realtime:a", "shout", json!({})).await;
    assert_eq!(
        client.reply_to(&unknown).await.payload["response"]["reason"],
        "unknown event \"shout\""
    );
    let order = order_id(&pool, "Organic cotton crew tee").await;
    set_notes(&pool, order, "still alive").await;
    assert_eq!(notes_of(&client.next_change().await.1), "still alive");

    let metrics = server.app.metrics().await;
    for kind in [
        "BadJson",
        "InvalidFilter",
        "UnknownTable",
        "Unauthorized",
        "ExpiredToken",
        "UnknownTopic",
    ] {
        assert!(
            metrics.contains(&format!(
                "threadline_realtime_errors_total{{kind=\"{kind}\"}}"
            )),
            "{kind} counted"
        );
    }
    client.close().await;
    server.finish().await;
}

#[sqlx::test]
async fn the_v1_serializer_works_too(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let token = server.token(BUYER).await;
    let mut client = Client::connect(server.addr, Vsn::V1).await;
    client
        .subscribe("realtime:orders", &token, orders(None), None)
        .await;
    let order = order_id(&pool, "Organic cotton crew tee").await;
    set_notes(&pool, order, "v1").await;
    assert_eq!(notes_of(&client.next_change().await.1), "v1");
    client.close().await;
    server.finish().await;
}

#[sqlx::test]
async fn an_expiring_token_closes_its_channel_with_a_clear_error(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let user = server.app.user(BUYER).await;
    // expiry is in whole seconds: a 2-second token is valid for at least one,
    // enough for the join to be accepted first
    let (short, _) = server.app.state.auth.issue(&user, Duration::from_secs(2));
    let mut client = server.connect().await;
    client
        .subscribe("realtime:orders", &short, orders(None), None)
        .await;
    let (system, close) = loop {
        let frame = client.next_frame().await;
        if frame.event == "system" && frame.payload["status"] == "error" {
            break (frame.clone(), client.next_frame().await);
        }
    };
    assert_eq!(system.payload["message"], "the access token has expired");
    assert_eq!(system.payload["threadline"]["notice"], "token_expired");
    assert_eq!(
        (close.topic.as_str(), close.event.as_str()),
        ("realtime:orders", "phx_close")
    );
    assert!(client.heartbeat_ok().await, "only the channel closed");
    client.close().await;
    server.finish().await;
}

#[sqlx::test]
async fn refreshing_with_a_bad_token_closes_the_channel(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let token = server.token(BUYER).await;
    let mut client = server.connect().await;
    client
        .subscribe("realtime:orders", &token, orders(None), None)
        .await;
    client
        .send_frame(
            "realtime:orders",
            "access_token",
            json!({"access_token": "garbage"}),
        )
        .await;
    let frame = loop {
        let frame = client.next_frame().await;
        if frame.event == "system" && frame.payload["status"] == "error" {
            break frame;
        }
    };
    assert_eq!(frame.payload["message"], "the access token is malformed");
    assert_eq!(client.next_frame().await.event, "phx_close");
    client.close().await;
    server.finish().await;
}

/// What a client missed: it took `cursor`, then its server stopped and ten
/// changes ("while down 0".."while down 9") were committed to `order`.
struct Outage {
    pool: PgPool,
    token: String,
    order: uuid::Uuid,
    cursor: threadline_realtime::cursor::ChangeCursor,
}

async fn ten_changes_while_down(pool: PgPool) -> Outage {
    let server = LiveServer::start(pool.clone()).await;
    let token = server.token(BUYER).await;
    let order = order_id(&pool, "Organic cotton crew tee").await;
    let mut client = server.connect().await;
    client
        .subscribe("realtime:orders", &token, orders(None), None)
        .await;
    set_notes(&pool, order, "before").await;
    let cursor = client.next_change().await.1.cursor;
    client.close().await;
    let pool = server.stop().await;
    for n in 0..10 {
        set_notes(&pool, order, &format!("while down {n}")).await;
    }
    Outage {
        pool,
        token,
        order,
        cursor,
    }
}

#[sqlx::test]
async fn after_a_server_restart_clients_resume_with_nothing_lost(pool: PgPool) {
    let Outage {
        pool,
        token,
        order,
        cursor,
    } = ten_changes_while_down(pool).await;

    let server = LiveServer::start_with(pool.clone(), RealtimeSettings::default(), false).await;
    let mut client = server.connect().await;
    client
        .subscribe("realtime:orders", &token, orders(None), Some(cursor))
        .await;
    let mut missed = Vec::new();
    for _ in 0..10 {
        missed.push(notes_of(&client.next_change().await.1));
    }
    let expected: Vec<String> = (0..10).map(|n| format!("while down {n}")).collect();
    assert_eq!(missed, expected);
    set_notes(&pool, order, "back").await;
    assert_eq!(
        notes_of(&client.next_change().await.1),
        "back",
        "then live, without repeats"
    );
    client.close().await;
    server.finish().await;
}

#[sqlx::test]
async fn after_a_restart_a_cursor_beyond_retention_gets_a_reset(pool: PgPool) {
    let Outage {
        pool,
        token,
        order,
        cursor,
    } = ten_changes_while_down(pool).await;
    let settings = RealtimeSettings {
        retention_changes: 3,
        ..RealtimeSettings::default()
    };
    let server = LiveServer::start_with(pool.clone(), settings, false).await;
    // wait until the replay is through: a fresh subscriber sees a new change
    let mut watcher = server.connect().await;
    watcher
        .subscribe("realtime:w", &token, orders(Some("notes=eq.marker")), None)
        .await;
    set_notes(&pool, order, "marker").await;
    watcher.next_change().await;

    let mut client = server.connect().await;
    client
        .subscribe("realtime:orders", &token, orders(None), Some(cursor))
        .await;
    let notice = loop {
        let frame = client.next_frame().await;
        assert_ne!(frame.event, "postgres_changes", "a reset, not a silent gap");
        if frame.payload.get("threadline").is_some() {
            break frame.payload;
        }
    };
    assert_eq!(notice["threadline"]["notice"], "reset");
    client.close().await;
    watcher.close().await;
    server.finish().await;
}

/// A client refetches when a change arrives, so the change must be visible
/// to queries by then. PostgreSQL streams a commit to logical decoding a
/// moment before other sessions see it; the capture holds each transaction
/// until no fresh snapshot lists it as running. Here the transaction is
/// held open, the strongest form of "not visible yet".
#[sqlx::test]
async fn the_visibility_gate_waits_until_queries_can_see_a_transaction(pool: PgPool) {
    use threadline_realtime::visibility::wait_visible;

    let mut writer = pool.begin().await.expect("begin");
    let xid: i64 = sqlx::query_scalar("select xid(pg_current_xact_id())::text::bigint")
        .fetch_one(&mut *writer)
        .await
        .expect("xid");
    let xid = u32::try_from(xid).expect("a 32-bit transaction id");
    sqlx::query("insert into factories (name) values ('Held Knitwear')")
        .execute(&mut *writer)
        .await
        .expect("insert");

    let mut watcher = pool.acquire().await.expect("connection");
    let xids = [xid];
    let mut waiting = Box::pin(wait_visible(&mut watcher, &xids));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "a running transaction is not visible"
    );
    writer.commit().await.expect("commit");
    let waits = waiting.await.expect("visible after commit");
    assert!(waits > 0);

    // and a finished one passes at once
    let mut watcher = pool.acquire().await.expect("connection");
    assert_eq!(wait_visible(&mut watcher, &xids).await.expect("query"), 0);
    let seen: i64 =
        sqlx::query_scalar("select count(*) from factories where name = 'Held Knitwear'")
            .fetch_one(&pool)
            .await
            .expect("read");
    assert_eq!(seen, 1);
}
