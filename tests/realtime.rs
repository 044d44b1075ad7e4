//! The realtime engine end to end: PostgreSQL commits → capture → hub →
//! WebSocket, against a real PostgreSQL with logical decoding.
#![cfg(feature = "ssr")]

mod common;

use common::live::{LiveServer, binding, order_id, orders, set_notes};
use serde_json::{Value, json};
use sqlx::PgPool;
use threadline::server::settings::RealtimeSettings;
use threadline_realtime::protocol::ChangeKind;
use uuid::Uuid;

const BUYER: &str = "buyer@sleek.test";
const ADMIN: &str = "admin@sleek.test";

fn record_field(event: &threadline_realtime::protocol::ChangeEvent, field: &str) -> Value {
    event
        .data
        .record
        .as_ref()
        .or(event.data.old_record.as_ref())
        .and_then(|r| r.get(field).cloned())
        .unwrap_or(Value::Null)
}

#[sqlx::test]
async fn a_change_made_with_psql_reaches_a_subscriber_with_the_supabase_payload(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let mut client = server.connect().await;
    let token = server.token(BUYER).await;
    let reply = client
        .subscribe("realtime:orders", &token, orders(None), None)
        .await;
    let ids = &reply.payload["response"]["postgres_changes"];
    assert_eq!(ids[0]["table"], "orders");
    assert!(ids[0]["id"].as_u64().is_some_and(|id| id > 0));

    // an outside writer: the psql command-line client
    let url = common::live::database_url(&pool);
    let status = std::process::Command::new("psql")
        .arg(&url)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "update orders set notes = 'rush' where product = 'Linen camp shirt'",
        ])
        .status()
        .expect("psql runs");
    assert!(status.success());

    let (topic, event) = client.next_change().await;
    assert_eq!(topic, "realtime:orders");
    assert_eq!(event.data.kind, ChangeKind::Update);
    assert_eq!(event.data.schema, "public");
    assert_eq!(event.data.table, "orders");
    assert_eq!(record_field(&event, "notes"), "rush");
    assert_eq!(
        event
            .data
            .old_record
            .as_ref()
            .and_then(|r| r.get("notes"))
            .cloned(),
        Some(json!("Demo order"))
    );
    assert_eq!(
        record_field(&event, "quantity"),
        json!(800),
        "typed, not text"
    );
    assert!(
        event
            .data
            .columns
            .iter()
            .any(|c| c.name == "quantity" && c.type_name == "int4")
    );
    assert!(event.data.commit_timestamp.ends_with('Z'));
    assert_eq!(event.ids, vec![ids[0]["id"].as_u64().unwrap_or_default()]);
    client.close().await;
    server.finish().await;
}

#[sqlx::test]
async fn concurrent_transactions_arrive_in_commit_order_none_lost(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let mut client = server.connect().await;
    let token = server.token(ADMIN).await;
    client
        .subscribe(
            "realtime:updates",
            &token,
            binding("INSERT", "order_updates", None),
            None,
        )
        .await;
    let order = order_id(&pool, "Merino crewneck sweater").await;
    let author: Uuid =
        sqlx::query_scalar("select id from users where email = 'factory@sleek.test'")
            .fetch_one(&pool)
            .await
            .expect("author");

    // 12 writers on their own connections start transactions in order but commit in reverse
    use sqlx::{Connection, Executor};
    let url = common::live::database_url(&pool);
    let mut open = Vec::new();
    for i in 0..12 {
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        conn.execute("begin").await.expect("begin");
        sqlx::query("insert into order_updates (order_id, author_id, text) values ($1, $2, $3)")
            .bind(order)
            .bind(author)
            .bind(format!("started {i}"))
            .execute(&mut conn)
            .await
            .expect("insert");
        open.push(conn);
    }
    let mut commit_order = Vec::new();
    while let Some(mut conn) = open.pop() {
        commit_order.push(format!("started {}", open.len()));
        conn.execute("commit").await.expect("commit");
    }

    let mut received = Vec::new();
    let mut cursors = Vec::new();
    for _ in 0..12 {
        let (_, event) = client.next_change().await;
        received.push(
            record_field(&event, "text")
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        cursors.push(event.cursor);
    }
    assert_eq!(
        received, commit_order,
        "events follow commit order, not start order"
    );
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "cursors increase");
    client.close().await;
    server.finish().await;
}

#[sqlx::test]
async fn a_resuming_client_gets_exactly_what_it_missed(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let token = server.token(BUYER).await;
    let order = order_id(&pool, "Organic cotton crew tee").await;
    let note = |n: i32| {
        let pool = pool.clone();
        async move { set_notes(&pool, order, &format!("note {n}")).await }
    };

    let mut client = server.connect().await;
    client
        .subscribe("realtime:orders", &token, orders(None), None)
        .await;
    note(0).await;
    let (_, first) = client.next_change().await;
    let cursor = first.cursor;
    client.close().await;

    for n in 1..=25 {
        note(n).await;
    }

    let mut client = server.connect().await;
    let reply = client
        .subscribe("realtime:orders", &token, orders(None), Some(cursor))
        .await;
    // the channel starts where the client left off, so the 25 changes that
    // follow are not mistaken for ones it already has
    assert_eq!(
        reply.payload["response"]["cursor"].as_str(),
        Some(cursor.to_string().as_str())
    );
    let mut missed = Vec::new();
    for _ in 1..=25 {
        let (_, event) = client.next_change().await;
        missed.push(
            record_field(&event, "notes")
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let expected: Vec<String> = (1..=25).map(|n| format!("note {n}")).collect();
    assert_eq!(missed, expected);

    // then it is live, with nothing repeated
    note(26).await;
    let (_, live) = client.next_change().await;
    assert_eq!(record_field(&live, "notes"), "note 26");
    client.close().await;
    server.finish().await;
}

#[sqlx::test]
async fn a_cursor_older_than_the_retention_log_gets_a_reset_notice(pool: PgPool) {
    let settings = RealtimeSettings {
        retention_changes: 5,
        ..RealtimeSettings::default()
    };
    let server = LiveServer::start_with(pool.clone(), settings, true).await;
    let token = server.token(BUYER).await;
    let order = order_id(&pool, "Organic cotton crew tee").await;
    let mut client = server.connect().await;
    client
        .subscribe("realtime:orders", &token, orders(None), None)
        .await;
    sqlx::query("update orders set notes = 'first' where id = $1")
        .bind(order)
        .execute(&pool)
        .await
        .expect("update");
    let (_, first) = client.next_change().await;
    client.close().await;
    for n in 0..20 {
        sqlx::query("update orders set notes = $2 where id = $1")
            .bind(order)
            .bind(format!("n{n}"))
            .execute(&pool)
            .await
            .expect("update");
    }
    // wait until the server has captured the last one: a live subscriber sees it
    let mut watcher = server.connect().await;
    watcher
        .subscribe(
            "realtime:orders",
            &token,
            orders(Some("notes=eq.marker")),
            None,
        )
        .await;
    sqlx::query("update orders set notes = 'marker' where id = $1")
        .bind(order)
        .execute(&pool)
        .await
        .expect("update");
    watcher.next_change().await;

    let mut client = server.connect().await;
    client
        .subscribe("realtime:orders", &token, orders(None), Some(first.cursor))
        .await;
    let notice = loop {
        let frame = client.next_frame().await;
        if frame.event == "system" && frame.payload.get("threadline").is_some() {
            break frame.payload;
        }
        assert_ne!(
            frame.event, "postgres_changes",
            "no change may come before the reset notice"
        );
    };
    assert_eq!(notice["threadline"]["notice"], "reset");
    assert!(notice["threadline"]["cursor"].as_str().is_some());
    client.close().await;
    watcher.close().await;
    server.finish().await;
}

#[sqlx::test]
async fn updates_match_filters_on_the_new_row_and_deletes_on_the_old(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let token = server.token(ADMIN).await;
    let mut client = server.connect().await;
    client
        .subscribe(
            "realtime:big",
            &token,
            binding("*", "order_updates", Some("text=eq.keep")),
            None,
        )
        .await;
    let order = order_id(&pool, "Merino crewneck sweater").await;
    let author: Uuid = sqlx::query_scalar("select id from users where email = 'admin@sleek.test'")
        .fetch_one(&pool)
        .await
        .expect("author");
    let insert = |text: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>("insert into order_updates (order_id, author_id, text) values ($1, $2, $3) returning id")
                .bind(order)
                .bind(author)
                .bind(text)
                .fetch_one(&pool)
                .await
                .expect("insert")
        }
    };
    let kept = insert("keep").await; // INSERT, matches
    let other = insert("other").await; // INSERT, does not match
    sqlx::query("update order_updates set text = 'keep' where id = $1")
        .bind(other)
        .execute(&pool)
        .await
        .expect("u1"); // new row matches
    sqlx::query("update order_updates set text = 'gone' where id = $1")
        .bind(kept)
        .execute(&pool)
        .await
        .expect("u2"); // new row does not
    sqlx::query("delete from order_updates where id = $1")
        .bind(other)
        .execute(&pool)
        .await
        .expect("d1"); // old row 'keep' matches
    sqlx::query("delete from order_updates where id = $1")
        .bind(kept)
        .execute(&pool)
        .await
        .expect("d2"); // old row 'gone' does not
    insert("keep").await; // barrier

    let mut seen = Vec::new();
    for _ in 0..4 {
        let (_, event) = client.next_change().await;
        let id = record_field(&event, "id")
            .as_str()
            .unwrap_or_default()
            .parse::<Uuid>()
            .unwrap_or_default();
        seen.push((
            event.data.kind,
            if id == kept {
                "kept"
            } else if id == other {
                "other"
            } else {
                "barrier"
            },
        ));
    }
    assert_eq!(
        seen,
        vec![
            (ChangeKind::Insert, "kept"),
            (ChangeKind::Update, "other"),
            (ChangeKind::Delete, "other"),
            (ChangeKind::Insert, "barrier"),
        ]
    );
    client.close().await;
    server.finish().await;
}
