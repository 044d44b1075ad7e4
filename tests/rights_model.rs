//! Random writes by an outside writer (psql-style SQL) along every path that
//! changes who may see what — orders moving between buyers and factories,
//! deletes with cascades, messages changing recipient, staff changing
//! factory, sign-outs — checked against an independent model of the rules:
//! no row and no old row ever reaches someone who may not see it, every
//! change someone may see arrives, once, in order, on every channel it
//! matches, and the polling fallback agrees.
#![cfg(feature = "ssr")]

mod common;

use std::collections::{BTreeMap, HashMap};

use common::live::{Client, LiveServer, binding, record_text};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use threadline_realtime::cursor::ChangeCursor;
use threadline_realtime::filter::SubscriptionFilter;
use threadline_realtime::protocol::{ChangeEvent, ChangeKind};
use uuid::Uuid;

const ADMIN: &str = "admin@sleek.test";
/// Factory staff whose factory the test keeps changing.
const SWITCHER: &str = "switch@sleek.test";

/// What someone may see, written out independently of the engine's rules.
#[derive(Clone, Debug)]
struct Rights {
    id: Uuid,
    admin: bool,
    factory: Option<Uuid>,
}

impl Rights {
    fn may_see(&self, table: &str, row: &Map<String, Value>) -> bool {
        let is = |column: &str, id: Uuid| {
            row.get(column)
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<Uuid>().ok())
                == Some(id)
        };
        self.admin
            || match table {
                "orders" | "production_stages" | "order_updates" => {
                    is("buyer_id", self.id) || self.factory.is_some_and(|f| is("factory_id", f))
                }
                "messages" => is("sender_id", self.id) || is("recipient_id", self.id),
                "notifications" => is("user_id", self.id),
                _ => false,
            }
    }
}

/// How a change should reach someone: the event they get, and the row
/// their filters look at; `None` when it is not for them.
fn expected_view(rights: &Rights, event: &ChangeEvent) -> Option<(ChangeKind, bool)> {
    let table = event.data.table.as_str();
    let sees = |row: &Option<Map<String, Value>>| row.as_ref().map(|r| rights.may_see(table, r));
    match (
        event.data.kind,
        sees(&event.data.old_record),
        sees(&event.data.record),
    ) {
        (ChangeKind::Insert, _, Some(true)) => Some((ChangeKind::Insert, false)),
        (ChangeKind::Delete, Some(true), _) => Some((ChangeKind::Delete, true)),
        (ChangeKind::Update, Some(true), Some(true)) => Some((ChangeKind::Update, false)),
        (ChangeKind::Update, Some(false), Some(true)) => Some((ChangeKind::Update, false)),
        (ChangeKind::Update, Some(true), Some(false)) => Some((ChangeKind::Delete, true)),
        _ => None,
    }
}

fn filter_matches(filter: &SubscriptionFilter, event: &ChangeEvent, old_row: bool) -> bool {
    let row = if old_row {
        event.data.old_record.clone()
    } else {
        event.data.record.clone()
    }
    .unwrap_or_default();
    let values: HashMap<String, (String, Option<String>)> = event
        .data
        .columns
        .iter()
        .map(|c| {
            let value = row.get(&c.name).and_then(|v| match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            });
            (c.name.clone(), (c.type_name.clone(), value))
        })
        .collect();
    filter.matches(|name| values.get(name).map(|(t, v)| (t.as_str(), v.as_deref())))
}

struct Channel {
    table: &'static str,
    event: &'static str,
    filter: SubscriptionFilter,
    filter_text: Option<&'static str>,
}

struct Subscriber {
    person: usize,
    client: Client,
    channels: BTreeMap<String, Channel>,
    /// Signed in by a session cookie (which the test may end).
    session: Option<String>,
}

/// A row change as someone received it: channel, cursor and event type.
type Delivery = (String, ChangeCursor, ChangeKind);

/// Everything a person's channels should get from `events`, judged by the
/// rights they had at each change.
fn expected(
    subscriber: &Subscriber,
    events: &[ChangeEvent],
    rights_at: impl Fn(ChangeCursor) -> Rights,
) -> Vec<Delivery> {
    let mut out = Vec::new();
    for event in events {
        let rights = rights_at(event.cursor);
        let Some((kind, old_row)) = expected_view(&rights, event) else {
            continue;
        };
        for (topic, channel) in &subscriber.channels {
            let event_matches = channel.event == "*" || channel.event == kind.as_str();
            if channel.table == event.data.table
                && event_matches
                && filter_matches(&channel.filter, event, old_row)
            {
                out.push((topic.clone(), event.cursor, kind));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    out
}

/// Checks that what reached `rights`' holder shows nothing they may not see.
fn assert_nothing_leaks(email: &str, rights: &Rights, event: &ChangeEvent) {
    let table = event.data.table.as_str();
    if let Some(record) = &event.data.record {
        assert!(
            rights.may_see(table, record),
            "{email} got a {table} row it may not see: {record:?}"
        );
    }
    if let Some(old) = &event.data.old_record {
        let key_only = old.len() == 1 && old.contains_key("id");
        assert!(
            key_only || rights.may_see(table, old),
            "{email} got an old {table} row it may not see: {old:?}"
        );
    }
}

async fn marker(tx: &mut sqlx::PgConnection, text: &str) {
    sqlx::query(
        "insert into notifications (user_id, kind, text) \
         values ((select id from users where email = 'admin@sleek.test'), 'message', $1)",
    )
    .bind(text)
    .execute(tx)
    .await
    .expect("marker");
}

#[sqlx::test]
async fn randomized_rights_never_leak_and_never_drop(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let seed: u64 = std::env::var("THREADLINE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    sqlx::query(
        "insert into users (email, name, role, factory_id, password_hash) \
         select $1, 'Sam Switch', 'factory', (select id from factories where name = 'Dhaka Knitwear Ltd'), password_hash \
         from users where email = 'buyer@sleek.test'",
    )
    .bind(SWITCHER)
    .execute(&pool)
    .await
    .expect("switcher");
    let factories: Vec<Uuid> = sqlx::query_scalar("select id from factories order by name")
        .fetch_all(&pool)
        .await
        .expect("factories");

    let emails = [
        "buyer@sleek.test",
        "buyer2@sleek.test",
        "factory@sleek.test",
        "factory2@sleek.test",
        SWITCHER,
        ADMIN,
    ];
    let mut people: Vec<(&str, Rights)> = Vec::new();
    for email in emails {
        let user = server.app.user(email).await;
        people.push((
            email,
            Rights {
                id: user.id,
                admin: user.role == threadline::model::Role::Admin,
                factory: user.factory_id,
            },
        ));
    }
    let start = server.realtime.head();

    // Ground truth: an admin sees every change of every table, whole.
    let mut firehose = server.connect().await;
    firehose
        .subscribe(
            "realtime:all",
            &server.token(ADMIN).await,
            json!([{ "event": "*", "schema": "public" }]),
            None,
        )
        .await;

    let choices: [(&'static str, &[Option<&'static str>]); 5] = [
        (
            "orders",
            &[
                None,
                Some("quantity=gt.500"),
                Some("status=in.(pending,confirmed)"),
            ],
        ),
        ("production_stages", &[None, Some("status=eq.in_progress")]),
        ("order_updates", &[None, Some("text=neq.note")]),
        ("messages", &[None, Some("body=eq.hello")]),
        ("notifications", &[None, Some("kind=neq.order_status")]),
    ];
    let events = ["*", "*", "INSERT", "UPDATE", "DELETE"];
    let mut subscribers = Vec::new();
    for (index, (email, _)) in people.iter().enumerate() {
        // a connection with a token, and one signed in with a session cookie
        for cookie in [false, true] {
            let (mut client, session) = if cookie {
                let (client, session) = server.connect_signed_in(email).await;
                (client, Some(session))
            } else {
                (server.connect().await, None)
            };
            let token = server.token(email).await;
            let mut channels = BTreeMap::new();
            for c in 0..4 {
                let (table, filters) = choices[rng.gen_range(0..choices.len())];
                let filter_text = filters[rng.gen_range(0..filters.len())];
                let event = events[rng.gen_range(0..events.len())];
                let topic = format!("realtime:{index}-{cookie}-{c}");
                let bindings = binding(event, table, filter_text);
                if cookie {
                    client.subscribe_signed_in(&topic, bindings).await;
                } else {
                    client.subscribe(&topic, &token, bindings, None).await;
                }
                channels.insert(
                    topic,
                    Channel {
                        table,
                        event,
                        filter: filter_text.unwrap_or("").parse().unwrap_or_default(),
                        filter_text,
                    },
                );
            }
            let barrier = format!("user_id=eq.{}&text=eq.barrier", people[index].1.id);
            let bindings = binding("UPDATE", "notifications", Some(&barrier));
            if cookie {
                client
                    .subscribe_signed_in("realtime:barrier", bindings)
                    .await;
            } else {
                client
                    .subscribe("realtime:barrier", &token, bindings, None)
                    .await;
            }
            subscribers.push(Subscriber {
                person: index,
                client,
                channels,
                session,
            });
        }
    }
    let mut barriers = HashMap::new();
    for (index, (email, _)) in people.iter().enumerate() {
        let id: Uuid = sqlx::query_scalar(
            "insert into notifications (user_id, kind, text) \
             values ((select id from users where email = $1), 'message', 'barrier') returning id",
        )
        .bind(email)
        .fetch_one(&pool)
        .await
        .expect("barrier");
        barriers.insert(index, id);
    }

    // Random writes along every path that moves rights or rows.
    let mut order_ids: Vec<Uuid> = sqlx::query_scalar("select id from orders order by number")
        .fetch_all(&pool)
        .await
        .expect("orders");
    let mut signed_out: Vec<usize> = Vec::new();
    for step in 0..120 {
        let order = order_ids[rng.gen_range(0..order_ids.len())];
        let someone = people[rng.gen_range(0..people.len())].1.id;
        let other = people[rng.gen_range(0..people.len())].1.id;
        let buyer = people[rng.gen_range(0..2)].1.id;
        let result = match rng.gen_range(0..11) {
            0 => sqlx::query("update orders set quantity = $2 where id = $1")
                .bind(order)
                .bind(rng.gen_range(1..2000))
                .execute(&pool)
                .await
                .map(|_| ()),
            1 => sqlx::query(
                "update production_stages set status = case status when 'pending' then 'in_progress' else 'done' end \
                 where id = (select id from production_stages where order_id = $1 and status <> 'done' order by position limit 1)",
            )
            .bind(order)
            .execute(&pool)
            .await
            .map(|_| ()),
            2 => sqlx::query("insert into messages (sender_id, recipient_id, order_id, body) values ($1, $2, $3, $4)")
                .bind(someone)
                .bind(other)
                .bind(order)
                .bind(if rng.gen_bool(0.5) { "hello" } else { "bye" })
                .execute(&pool)
                .await
                .map(|_| ()),
            3 => sqlx::query(
                "insert into order_updates (order_id, author_id, text) \
                 values ($1, (select id from users where email = 'admin@sleek.test'), $2)",
            )
            .bind(order)
            .bind(if rng.gen_bool(0.5) { "note" } else { "other" })
            .execute(&pool)
            .await
            .map(|_| ()),
            4 => sqlx::query("update orders set buyer_id = $2 where id = $1")
                .bind(order)
                .bind(buyer)
                .execute(&pool)
                .await
                .map(|_| ()),
            5 => sqlx::query("update orders set factory_id = $2 where id = $1")
                .bind(order)
                .bind(factories[rng.gen_range(0..factories.len())])
                .execute(&pool)
                .await
                .map(|_| ()),
            6 => sqlx::query(
                "update messages set recipient_id = $1 \
                 where id = (select id from messages where sender_id <> $1 order by random() limit 1)",
            )
            .bind(someone)
            .execute(&pool)
            .await
            .map(|_| ()),
            7 if order_ids.len() > 4 && step % 3 == 0 => {
                // an order with its stages and updates (cascades), its messages kept
                order_ids.retain(|id| *id != order);
                sqlx::query("delete from orders where id = $1")
                    .bind(order)
                    .execute(&pool)
                    .await
                    .map(|_| ())
            }
            8 => {
                let factory = factories[rng.gen_range(0..factories.len())];
                let mut tx = pool.begin().await.expect("tx");
                sqlx::query("update users set factory_id = $2 where email = $1")
                    .bind(SWITCHER)
                    .bind(factory)
                    .execute(&mut *tx)
                    .await
                    .expect("switch");
                marker(&mut tx, &format!("rights {factory}")).await;
                tx.commit().await
            }
            9 => {
                let candidates: Vec<usize> = (0..subscribers.len())
                    .filter(|i| subscribers[*i].session.is_some() && !signed_out.contains(i))
                    .collect();
                if candidates.is_empty() || rng.gen_bool(0.6) {
                    Ok(())
                } else {
                    let i = candidates[rng.gen_range(0..candidates.len())];
                    signed_out.push(i);
                    let session = subscribers[i].session.clone().unwrap_or_default();
                    let mut tx = pool.begin().await.expect("tx");
                    sqlx::query("delete from sessions where token_hash = sha256(convert_to($1, 'UTF8'))")
                        .bind(&session)
                        .execute(&mut *tx)
                        .await
                        .expect("sign out");
                    marker(&mut tx, &format!("signed-out {i}")).await;
                    tx.commit().await
                }
            }
            _ => sqlx::query("update messages set read_at = now() where id = (select id from messages order by random() limit 1)")
                .execute(&pool)
                .await
                .map(|_| ()),
        };
        // moves the rules refuse roll back and publish nothing
        let _ = result;
    }
    sqlx::query("update notifications set read_at = now() where text = 'barrier'")
        .execute(&pool)
        .await
        .expect("barriers");

    // The firehose reads every change up to and including all barriers.
    let mut everything: Vec<ChangeEvent> = Vec::new();
    let mut barriers_seen = 0;
    while barriers_seen < people.len() {
        let (_, event) = firehose.next_change().await;
        let text = record_text(&event, "text").to_string();
        barriers_seen += usize::from(event.data.kind == ChangeKind::Update && text == "barrier");
        everything.push(event);
    }
    assert!(
        everything.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "commit order"
    );
    assert!(
        everything.len() > 150,
        "the writes produced changes ({})",
        everything.len()
    );

    // The switcher's factory, from each marker on; sign-outs, by subscriber.
    let mut switches: Vec<(ChangeCursor, Uuid)> = Vec::new();
    let mut sign_outs: HashMap<usize, ChangeCursor> = HashMap::new();
    for event in &everything {
        let text = record_text(event, "text");
        if event.data.kind != ChangeKind::Insert || event.data.table != "notifications" {
            continue;
        }
        if let Some(factory) = text.strip_prefix("rights ").and_then(|f| f.parse().ok()) {
            switches.push((event.cursor, factory));
        }
        if let Some(i) = text
            .strip_prefix("signed-out ")
            .and_then(|i| i.parse().ok())
        {
            sign_outs.insert(i, event.cursor);
        }
    }
    let switcher = people
        .iter()
        .position(|(email, _)| *email == SWITCHER)
        .unwrap_or_default();
    let rights_at = |person: usize, cursor: ChangeCursor| {
        let mut rights = people[person].1.clone();
        if person == switcher {
            // the marker follows the change of rights in its transaction
            for (at, factory) in &switches {
                if cursor.lsn >= at.lsn {
                    rights.factory = Some(*factory);
                }
            }
        }
        rights
    };

    let mut checked = 0;
    for (index, mut subscriber) in subscribers.into_iter().enumerate() {
        let person = subscriber.person;
        let email = people[person].0;
        let barrier = barriers[&person].to_string();
        let ended = sign_outs.get(&index).copied();
        let mut received: Vec<Delivery> = Vec::new();
        // the last change each connection can be checked up to
        let relevant: Vec<ChangeEvent> = if let Some(at) = ended {
            let (notices, changes, code) = subscriber.client.until_closed().await;
            assert_eq!(
                notices.last().map(String::as_str),
                Some("signed_out"),
                "{email}"
            );
            assert_eq!(code, Some(4003));
            for event in changes {
                assert_nothing_leaks(email, &rights_at(person, event.cursor), &event);
                received.push((String::new(), event.cursor, event.data.kind));
            }
            // nothing of the sign-out's transaction or after it
            everything
                .iter()
                .filter(|e| e.cursor.lsn < at.lsn)
                .cloned()
                .collect()
        } else {
            let until = loop {
                let (topic, event) = subscriber.client.next_change().await;
                assert_nothing_leaks(email, &rights_at(person, event.cursor), &event);
                if topic == "realtime:barrier" {
                    let id = event
                        .data
                        .record
                        .as_ref()
                        .and_then(|r| r.get("id"))
                        .and_then(Value::as_str);
                    if id == Some(barrier.as_str()) {
                        break event.cursor;
                    }
                    continue;
                }
                received.push((topic, event.cursor, event.data.kind));
            };
            // the barrier channel was joined last: for its change, the
            // others' frames came first
            everything
                .iter()
                .filter(|e| e.cursor <= until)
                .cloned()
                .collect()
        };
        let mut want = expected(&subscriber, &relevant, |cursor| rights_at(person, cursor));
        want.retain(|(topic, _, _)| topic != "realtime:barrier");
        if ended.is_some() {
            // after a close, frames are not told apart by channel here
            for delivery in &mut want {
                delivery.0.clear();
            }
        }
        received.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        let filters: Vec<(&str, &str, Option<&str>)> = subscriber
            .channels
            .values()
            .map(|c| (c.table, c.event, c.filter_text))
            .collect();
        assert_eq!(
            received, want,
            "{email} (subscriber {index}) on {filters:?}"
        );
        checked += want.len();
        subscriber.client.close().await;
    }
    assert!(checked > 100, "enough deliveries were checked ({checked})");

    // The polling fallback, from the start, judges by the rights as they are now.
    use threadline::realtime::poll::PollChanges;
    use threadline_realtime::poll::{PollChannel, PollResult};
    use threadline_realtime::protocol::PostgresChangesRequest;
    for (person, (email, _)) in people.iter().enumerate() {
        let now = rights_at(person, ChangeCursor::end_of(u64::MAX));
        let mut cursor = start;
        let mut got: Vec<(ChangeCursor, ChangeKind)> = Vec::new();
        loop {
            let reply = server
                .app
                .call_json(
                    Some(email),
                    &PollChanges {
                        channels: vec![PollChannel {
                            topic: "realtime:poll".into(),
                            bindings: vec![PostgresChangesRequest {
                                event: "*".into(),
                                schema: "public".into(),
                                table: Some("orders".into()),
                                filter: None,
                                select: None,
                            }],
                            cursor: Some(cursor),
                        }],
                    },
                )
                .await;
            assert_eq!(reply.status, axum::http::StatusCode::OK, "{}", reply.body);
            let results: Vec<PollResult> = serde_json::from_value(reply.body).expect("poll result");
            for payload in &results[0].events {
                let event: ChangeEvent = serde_json::from_str(payload).expect("event");
                assert_nothing_leaks(email, &now, &event);
                got.push((event.cursor, event.data.kind));
            }
            cursor = results[0].cursor;
            if !results[0].more {
                break;
            }
        }
        let last = everything.last().map_or(start, |e| e.cursor);
        let want: Vec<(ChangeCursor, ChangeKind)> = everything
            .iter()
            .filter(|e| e.data.table == "orders" && e.cursor <= last)
            .filter_map(|e| expected_view(&now, e).map(|(kind, _)| (e.cursor, kind)))
            .collect();
        got.retain(|(c, _)| *c <= last);
        assert_eq!(got, want, "{email} by polling");
    }
    firehose.close().await;
    server.finish().await;
}
