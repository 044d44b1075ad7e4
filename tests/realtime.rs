//! The realtime engine end to end: PostgreSQL commits → capture → hub →
//! WebSocket, against a real PostgreSQL with logical decoding.
#![cfg(feature = "ssr")]

mod common;

use std::collections::HashMap;

use common::live::{Client, LiveServer, binding, order_id, orders, set_notes};
use serde_json::{Value, json};
use sqlx::PgPool;
use threadline::server::settings::RealtimeSettings;
use threadline_realtime::cursor::ChangeCursor;
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

/// Users of the demo data with what each may see, written out independently
/// of the engine's own rules.
struct Person {
    email: &'static str,
    id: Uuid,
    factory: Option<Uuid>,
    admin: bool,
}

impl Person {
    fn may_see(&self, table: &str, row: &serde_json::Map<String, Value>) -> bool {
        let is = |column: &str, id: Option<Uuid>| {
            id.is_some()
                && row
                    .get(column)
                    .and_then(Value::as_str)
                    .and_then(|v| v.parse::<Uuid>().ok())
                    == id
        };
        self.admin
            || match table {
                "orders" | "production_stages" | "order_updates" => {
                    is("buyer_id", Some(self.id))
                        || (self.factory.is_some() && is("factory_id", self.factory))
                }
                "messages" => is("sender_id", Some(self.id)) || is("recipient_id", Some(self.id)),
                "notifications" => is("user_id", Some(self.id)),
                _ => false,
            }
    }
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Whether a received row satisfies a channel's filter.
fn filter_matches(
    filter: &threadline_realtime::filter::SubscriptionFilter,
    event: &threadline_realtime::protocol::ChangeEvent,
) -> bool {
    let row = event
        .data
        .record
        .clone()
        .or(event.data.old_record.clone())
        .unwrap_or_default();
    let values: HashMap<String, (String, Option<String>)> = event
        .data
        .columns
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                (c.type_name.clone(), row.get(&c.name).and_then(as_text)),
            )
        })
        .collect();
    filter.matches(|name| values.get(name).map(|(t, v)| (t.as_str(), v.as_deref())))
}

#[sqlx::test]
async fn randomized_authorization_never_leaks_and_never_drops(pool: PgPool) {
    use rand::{Rng, SeedableRng};
    use threadline_realtime::filter::SubscriptionFilter;
    use threadline_realtime::protocol::ChangeEvent;

    let server = LiveServer::start(pool.clone()).await;
    let seed: u64 = std::env::var("THREADLINE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let emails = [
        "buyer@sleek.test",
        "buyer2@sleek.test",
        "factory@sleek.test",
        "factory2@sleek.test",
        "admin@sleek.test",
    ];
    let mut people = Vec::new();
    for email in emails {
        let user = server.app.user(email).await;
        people.push(Person {
            email,
            id: user.id,
            factory: user.factory_id,
            admin: user.role == threadline::model::Role::Admin,
        });
    }
    let choices: [(&str, &[Option<&str>]); 5] = [
        (
            "orders",
            &[
                None,
                Some("quantity=gt.500"),
                Some("status=in.(pending,confirmed)"),
                Some("quantity=lte.300"),
            ],
        ),
        (
            "production_stages",
            &[None, Some("status=eq.in_progress"), Some("progress=gte.50")],
        ),
        ("order_updates", &[None, Some("text=neq.note")]),
        ("messages", &[None, Some("body=eq.hello")]),
        (
            "notifications",
            &[None, Some("kind=eq.message"), Some("kind=neq.message")],
        ),
    ];

    async fn barrier_row(pool: &PgPool, owner: Uuid) -> Uuid {
        sqlx::query_scalar("insert into notifications (user_id, kind, text) values ($1, 'message', 'barrier') returning id")
            .bind(owner)
            .fetch_one(pool)
            .await
            .expect("barrier row")
    }

    // Ground truth: an admin sees every change of every table.
    let admin_token = server.token(ADMIN).await;
    let mut firehose = server.connect().await;
    firehose
        .subscribe(
            "realtime:all",
            &admin_token,
            json!([{ "event": "*", "schema": "public" }]),
            None,
        )
        .await;

    // Each person gets two connections with three random channels each and a
    // barrier channel on notifications of their own. The barrier channel is
    // joined last, so for any one change it is matched after the others.
    struct Subscriber {
        person: usize,
        client: Client,
        channels: HashMap<String, (&'static str, SubscriptionFilter)>,
        barrier: Uuid,
    }
    let mut subscribers = Vec::new();
    for (index, person) in people.iter().enumerate() {
        for copy in 0..2 {
            let token = server.token(person.email).await;
            let mut client = server.connect().await;
            let mut channels = HashMap::new();
            for c in 0..3 {
                let (table, filters) = choices[rng.gen_range(0..choices.len())];
                let filter = filters[rng.gen_range(0..filters.len())];
                let topic = format!("realtime:{index}-{copy}-{c}");
                client
                    .subscribe(&topic, &token, binding("*", table, filter), None)
                    .await;
                channels.insert(
                    topic,
                    (table, filter.unwrap_or("").parse().unwrap_or_default()),
                );
            }
            let filter = format!("user_id=eq.{}&text=eq.barrier", person.id);
            client
                .subscribe(
                    "realtime:barrier",
                    &token,
                    binding("UPDATE", "notifications", Some(&filter)),
                    None,
                )
                .await;
            subscribers.push(Subscriber {
                person: index,
                client,
                channels,
                barrier: Uuid::nil(),
            });
        }
    }
    // Everyone is subscribed (joins are acknowledged only once live): from
    // here on every commit must reach every subscriber that may see it.
    for subscriber in &mut subscribers {
        subscriber.barrier = barrier_row(&pool, people[subscriber.person].id).await;
    }

    // Random writes along every path the app has; moves the state machine
    // refuses roll back and publish nothing.
    let order_ids: Vec<Uuid> = sqlx::query_scalar("select id from orders order by number")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    for _ in 0..80 {
        let order = order_ids[rng.gen_range(0..order_ids.len())];
        let _ = match rng.gen_range(0..4) {
            0 => sqlx::query("update orders set quantity = $2 where id = $1").bind(order).bind(rng.gen_range(1..2000)).execute(&pool).await,
            1 => sqlx::query(
                "update production_stages set status = case status when 'pending' then 'in_progress' else 'done' end \
                 where id = (select id from production_stages where order_id = $1 and status <> 'done' order by position limit 1)",
            )
            .bind(order)
            .execute(&pool)
            .await,
            2 => {
                let from = people[rng.gen_range(0..people.len())].id;
                let to = people[rng.gen_range(0..people.len())].id;
                sqlx::query("insert into messages (sender_id, recipient_id, order_id, body) values ($1, $2, $3, $4)")
                    .bind(from)
                    .bind(to)
                    .bind(order)
                    .bind(if rng.gen_bool(0.5) { "hello" } else { "bye" })
                    .execute(&pool)
                    .await
            }
            _ => sqlx::query(
                "insert into order_updates (order_id, author_id, text) \
                 values ($1, (select id from users where email = 'admin@sleek.test'), $2)",
            )
            .bind(order)
            .bind(if rng.gen_bool(0.5) { "note" } else { "other" })
            .execute(&pool)
            .await,
        };
    }
    sqlx::query("update notifications set read_at = now() where text = 'barrier'")
        .execute(&pool)
        .await
        .expect("barriers");

    // The firehose reads every change up to and including all barriers.
    let mut everything: Vec<ChangeEvent> = Vec::new();
    let mut barriers_seen = 0;
    while barriers_seen < subscribers.len() {
        let (_, event) = firehose.next_change().await;
        let is_barrier = event.data.kind == ChangeKind::Update
            && event.data.table == "notifications"
            && record_field(&event, "text") == "barrier";
        barriers_seen += usize::from(is_barrier);
        everything.push(event);
    }
    assert!(
        everything.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "the firehose is in commit order"
    );
    let writes = everything.len() - subscribers.len();
    assert!(writes > 80, "the random writes produced changes ({writes})");

    let mut checked = 0;
    for mut subscriber in subscribers {
        let person = &people[subscriber.person];
        let mut received: Vec<(String, ChangeCursor)> = Vec::new();
        let barrier_cursor = loop {
            let (topic, event) = subscriber.client.next_change().await;
            let row = event
                .data
                .record
                .clone()
                .or(event.data.old_record.clone())
                .unwrap_or_default();
            assert!(
                person.may_see(&event.data.table, &row),
                "{} got a {} row it may not see: {row:?}",
                person.email,
                event.data.table
            );
            if topic == "realtime:barrier" {
                if row.get("id").and_then(Value::as_str) == Some(&subscriber.barrier.to_string()) {
                    break event.cursor;
                }
                continue;
            }
            received.push((topic, event.cursor));
        };
        let mut expected: Vec<(String, ChangeCursor)> = Vec::new();
        for event in everything.iter().filter(|e| e.cursor <= barrier_cursor) {
            let row = event
                .data
                .record
                .clone()
                .or(event.data.old_record.clone())
                .unwrap_or_default();
            if !person.may_see(&event.data.table, &row) {
                continue;
            }
            for (topic, (table, filter)) in &subscriber.channels {
                if *table == event.data.table && filter_matches(filter, event) {
                    expected.push((topic.clone(), event.cursor));
                }
            }
        }
        let sort = |v: &mut Vec<(String, ChangeCursor)>| {
            v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)))
        };
        sort(&mut received);
        sort(&mut expected);
        assert_eq!(
            received,
            expected,
            "{} on {:?}",
            person.email,
            subscriber.channels.keys().collect::<Vec<_>>()
        );
        checked += expected.len();
        subscriber.client.close().await;
    }
    assert!(checked > 0, "some deliveries were checked");
    firehose.close().await;
    server.finish().await;
}
