//! Rights follow the database, for every writer: who may see a row is
//! decided from its current owners, an UPDATE that moves a row between
//! owners is a DELETE for those who lose it and carries nothing old to
//! those who gain it, and a sign-out, an expiry, a removal or a change of
//! role or factory (by psql here) takes effect on open connections at that
//! very commit.
#![cfg(feature = "ssr")]

mod common;

use std::time::{Duration, Instant};

use common::live::{Client, LiveServer, binding, order_id, orders};
use serde_json::{Value, json};
use sqlx::PgPool;
use threadline_realtime::protocol::{ChangeEvent, ChangeKind};
use uuid::Uuid;

const BUYER: &str = "buyer@sleek.test";
const BUYER2: &str = "buyer2@sleek.test";
const FACTORY: &str = "factory@sleek.test";
const FACTORY2: &str = "factory2@sleek.test";

fn id_of(event: &ChangeEvent) -> String {
    event
        .data
        .record
        .as_ref()
        .or(event.data.old_record.as_ref())
        .and_then(|row| row.get("id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

async fn user_id(pool: &PgPool, email: &str) -> Uuid {
    sqlx::query_scalar("select id from users where email = $1")
        .bind(email)
        .fetch_one(pool)
        .await
        .expect("user")
}

async fn factory_id(pool: &PgPool, name: &str) -> Uuid {
    sqlx::query_scalar("select id from factories where name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .expect("factory")
}

async fn sql(pool: &PgPool, statement: &str) {
    sqlx::raw_sql(statement)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// A row only `email` may see, committed after everything before it: when
/// it arrives, everything committed earlier that was meant for them has.
async fn barrier(pool: &PgPool, email: &str) -> Uuid {
    sqlx::query_scalar(
        "insert into notifications (user_id, kind, text) \
         values ((select id from users where email = $1), 'message', 'barrier') returning id",
    )
    .bind(email)
    .fetch_one(pool)
    .await
    .expect("barrier")
}

/// Changes on a connection up to and including the barrier row `until`.
async fn changes_until(client: &mut Client, until: Uuid) -> Vec<ChangeEvent> {
    let mut out = Vec::new();
    loop {
        let (_, event) = client.next_change().await;
        let done = id_of(&event) == until.to_string();
        if !done {
            out.push(event);
        } else {
            return out;
        }
    }
}

fn everything() -> Value {
    json!([
        {"event": "*", "schema": "public", "table": "orders"},
        {"event": "*", "schema": "public", "table": "production_stages"},
        {"event": "*", "schema": "public", "table": "order_updates"},
        {"event": "*", "schema": "public", "table": "notifications"},
    ])
}

#[sqlx::test]
async fn reassigning_an_orders_buyer_moves_its_stages_and_updates_with_it(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let order = order_id(&pool, "Merino crewneck sweater").await;
    let mut clients = Vec::new();
    for email in [BUYER, BUYER2, FACTORY] {
        let token = server.token(email).await;
        let mut client = server.connect().await;
        client
            .subscribe("realtime:all", &token, everything(), None)
            .await;
        clients.push(client);
    }
    let buyer2 = user_id(&pool, BUYER2).await;
    let earlier_updates: i64 =
        sqlx::query_scalar("select count(*) from order_updates where order_id = $1")
            .bind(order)
            .fetch_one(&pool)
            .await
            .expect("count");
    let earlier_updates = usize::try_from(earlier_updates).unwrap_or_default();
    // any writer: a plain UPDATE of the order
    sql(
        &pool,
        &format!("update orders set buyer_id = '{buyer2}' where id = '{order}'"),
    )
    .await;
    sql(&pool, &format!(
        "update production_stages set progress = 90 where order_id = '{order}' and status = 'in_progress'"
    ))
    .await;
    sql(
        &pool,
        &format!(
            "insert into order_updates (order_id, author_id, text) \
         values ('{order}', (select id from users where email = '{FACTORY}'), 'after the move')"
        ),
    )
    .await;
    let mut seen = Vec::new();
    for (client, email) in clients.iter_mut().zip([BUYER, BUYER2, FACTORY]) {
        let until = barrier(&pool, email).await;
        let events = changes_until(client, until).await;
        seen.push(
            events
                .into_iter()
                .filter(|e| e.data.table != "notifications")
                .collect::<Vec<_>>(),
        );
    }
    let kinds = |events: &[ChangeEvent], table: &str| {
        events
            .iter()
            .filter(|e| e.data.table == table)
            .map(|e| e.data.kind)
            .collect::<Vec<_>>()
    };
    let (old, new, factory) = (&seen[0], &seen[1], &seen[2]);

    // the old buyer: the order, its six stages and its updates leave, and nothing after
    assert_eq!(kinds(old, "orders"), vec![ChangeKind::Delete]);
    assert_eq!(kinds(old, "production_stages"), vec![ChangeKind::Delete; 6]);
    assert_eq!(
        kinds(old, "order_updates"),
        vec![ChangeKind::Delete; earlier_updates]
    );
    for event in old {
        let keys: Vec<&String> = event
            .data
            .old_record
            .iter()
            .flat_map(|r| r.keys())
            .collect();
        assert_eq!(keys, vec!["id"], "a move-out carries only the key");
        assert!(event.data.record.is_none());
    }
    // the new buyer: the order and stages arrive without the old owner's data, then the rest
    assert_eq!(kinds(new, "orders"), vec![ChangeKind::Update]);
    assert_eq!(kinds(new, "production_stages"), vec![ChangeKind::Update; 7]);
    let mut updates = vec![ChangeKind::Update; earlier_updates];
    updates.push(ChangeKind::Insert);
    assert_eq!(kinds(new, "order_updates"), updates);
    let moved_in = 1 + 6 + earlier_updates;
    for event in new
        .iter()
        .filter(|e| e.data.kind == ChangeKind::Update)
        .take(moved_in)
    {
        let old_record = event.data.old_record.clone().unwrap_or_default();
        assert_eq!(
            old_record.len(),
            1,
            "only the key of what they never saw: {old_record:?}"
        );
        assert_eq!(
            event.data.record.as_ref().and_then(|r| r.get("buyer_id")),
            Some(&json!(buyer2.to_string()))
        );
    }
    // the factory saw the order before and after: every change, whole
    assert_eq!(kinds(factory, "orders"), vec![ChangeKind::Update]);
    assert_eq!(
        kinds(factory, "production_stages"),
        vec![ChangeKind::Update; 7]
    );
    assert_eq!(kinds(factory, "order_updates"), updates);
    assert!(factory.iter().all(|e| e.data.kind != ChangeKind::Update
        || e.data.old_record.as_ref().is_some_and(|r| r.len() > 1)));

    // the copies are right in the database too
    let stale: i64 = sqlx::query_scalar(
        "select (select count(*) from production_stages where order_id = $1 and buyer_id <> $2) \
              + (select count(*) from order_updates where order_id = $1 and buyer_id <> $2)",
    )
    .bind(order)
    .bind(buyer2)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(stale, 0);
    for client in clients {
        client.close().await;
    }
    server.finish().await;
}

#[sqlx::test]
async fn reassigning_an_order_to_another_factory_is_a_delete_for_the_old_one(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let order = order_id(&pool, "Linen camp shirt").await;
    let porto = factory_id(&pool, "Porto Stitch Works").await;
    let mut old_factory = server.connect().await;
    let mut new_factory = server.connect().await;
    let mut buyer = server.connect().await;
    old_factory
        .subscribe(
            "realtime:o",
            &server.token(FACTORY).await,
            orders(None),
            None,
        )
        .await;
    new_factory
        .subscribe(
            "realtime:o",
            &server.token(FACTORY2).await,
            orders(None),
            None,
        )
        .await;
    buyer
        .subscribe("realtime:o", &server.token(BUYER).await, orders(None), None)
        .await;
    sql(&pool, &format!(
        "update orders set factory_id = '{porto}', notes = 'moved to Porto' where id = '{order}'"
    ))
    .await;

    let (_, moved_out) = old_factory.next_change().await;
    assert_eq!(moved_out.data.kind, ChangeKind::Delete);
    assert_eq!(
        moved_out.data.old_record,
        json!({"id": order.to_string()}).as_object().cloned()
    );
    let (_, moved_in) = new_factory.next_change().await;
    assert_eq!(moved_in.data.kind, ChangeKind::Update);
    assert_eq!(
        moved_in.data.old_record,
        json!({"id": order.to_string()}).as_object().cloned()
    );
    assert_eq!(
        moved_in.data.record.as_ref().map(|r| r["notes"].clone()),
        Some(json!("moved to Porto"))
    );
    let (_, whole) = buyer.next_change().await;
    assert_eq!(whole.data.kind, ChangeKind::Update);
    assert_eq!(
        whole.data.old_record.as_ref().map(|r| r["notes"].clone()),
        Some(json!("Demo order"))
    );

    // from now on only the new factory hears of it
    sql(
        &pool,
        &format!("update orders set notes = 'later' where id = '{order}'"),
    )
    .await;
    let (_, later) = new_factory.next_change().await;
    assert_eq!(
        later.data.record.as_ref().map(|r| r["notes"].clone()),
        Some(json!("later"))
    );
    assert!(
        old_factory
            .drain_changes(Duration::from_millis(300))
            .await
            .is_empty()
    );
    for client in [old_factory, new_factory, buyer] {
        client.close().await;
    }
    server.finish().await;
}

#[sqlx::test]
async fn an_order_update_written_while_the_order_moves_follows_its_new_owners(pool: PgPool) {
    // Two writers race many times: one moves the order between buyers, the
    // other posts updates to it. Every update ends with its order's owners.
    let server = LiveServer::start(pool.clone()).await;
    let order = order_id(&pool, "Merino crewneck sweater").await;
    let buyers = [user_id(&pool, BUYER).await, user_id(&pool, BUYER2).await];
    let author = user_id(&pool, FACTORY).await;
    for round in 0..40 {
        let mover = {
            let pool = pool.clone();
            let to = buyers[round % 2];
            tokio::spawn(async move {
                sqlx::query("update orders set buyer_id = $2 where id = $1")
                    .bind(order)
                    .bind(to)
                    .execute(&pool)
                    .await
            })
        };
        let poster = {
            let pool = pool.clone();
            tokio::spawn(async move {
                sqlx::query(
                    "insert into order_updates (order_id, author_id, text) values ($1, $2, 'race')",
                )
                .bind(order)
                .bind(author)
                .execute(&pool)
                .await
            })
        };
        assert!(matches!(mover.await, Ok(Ok(_))));
        assert!(matches!(poster.await, Ok(Ok(_))));
    }
    let stale: i64 = sqlx::query_scalar(
        "select count(*) from order_updates u join orders o on o.id = u.order_id \
         where (u.buyer_id, u.factory_id) is distinct from (o.buyer_id, o.factory_id)",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(stale, 0);
    // a writer under REPEATABLE READ could miss a child committed after it
    // began, so it is refused with a reason instead
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("set transaction isolation level repeatable read")
        .execute(&mut *tx)
        .await
        .expect("isolation");
    let refused = sqlx::query("update orders set buyer_id = $2 where id = $1")
        .bind(order)
        .bind(buyers[0])
        .execute(&mut *tx)
        .await;
    assert!(refused.is_err_and(|e| e.to_string().contains("READ COMMITTED")));
    server.finish().await;
}

#[sqlx::test]
async fn a_sign_out_closes_the_connection_at_that_very_commit(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let (mut client, session) = server.connect_signed_in(BUYER).await;
    client.subscribe_signed_in("realtime:o", orders(None)).await;
    let order = order_id(&pool, "Linen camp shirt").await;
    // before, the sign-out itself (any writer deleting the session), after:
    // all in one transaction, so only the commit order separates them
    let hash = format!("{:x}", sha256(&session));
    sql(
        &pool,
        &format!(
            "begin; \
         update orders set notes = 'before' where id = '{order}'; \
         delete from sessions where token_hash = '\\x{hash}'; \
         update orders set notes = 'after' where id = '{order}'; \
         commit;"
        ),
    )
    .await;
    let started = Instant::now();
    let (notices, changes, code) = client.until_closed().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let notes: Vec<Value> = changes
        .iter()
        .filter_map(|e| e.data.record.as_ref().map(|r| r["notes"].clone()))
        .collect();
    assert_eq!(notes, vec![json!("before")], "nothing after the sign-out");
    assert_eq!(notices, vec!["signed_out"]);
    assert_eq!(code, Some(4003));
    // and the cookie no longer opens anything
    let mut again =
        Client::connect_with_cookie(server.addr, &format!("threadline_session={session}")).await;
    let reply = again.join("realtime:o", None, orders(None), None).await;
    assert_eq!(reply.payload["status"], "error");
    server.finish().await;
}

fn sha256(text: &str) -> impl std::fmt::LowerHex {
    use sha2::Digest;
    struct Hex(Vec<u8>);
    impl std::fmt::LowerHex for Hex {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
    }
    Hex(sha2::Sha256::digest(text.as_bytes()).to_vec())
}

#[sqlx::test]
async fn a_session_expiry_set_in_the_past_closes_with_expired(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let (mut client, session) = server.connect_signed_in(BUYER).await;
    client.subscribe_signed_in("realtime:o", orders(None)).await;
    let hash = format!("{:x}", sha256(&session));
    sql(&pool, &format!(
        "update sessions set expires_at = now() - interval '1 second' where token_hash = '\\x{hash}'"
    ))
    .await;
    let (notices, _, code) = client.until_closed().await;
    assert_eq!(notices, vec!["session_expired"]);
    assert_eq!(code, Some(4003));
    server.finish().await;
}

#[sqlx::test]
async fn a_session_that_simply_runs_out_closes_within_two_seconds(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    // a session that ends in three seconds, with no write at all when it does
    let token = "short-lived-session-token";
    let hash = format!("{:x}", sha256(token));
    let ends_at: time::OffsetDateTime = sqlx::query_scalar(&format!(
        "insert into sessions (token_hash, user_id, expires_at) \
         values ('\\x{hash}', (select id from users where email = '{BUYER}'), now() + interval '3 seconds') \
         returning expires_at"
    ))
    .fetch_one(&pool)
    .await
    .expect("session");
    let mut client =
        Client::connect_with_cookie(server.addr, &format!("threadline_session={token}")).await;
    client.subscribe_signed_in("realtime:o", orders(None)).await;
    let (notices, _, code) = client.until_closed().await;
    let late = time::OffsetDateTime::now_utc() - ends_at;
    assert!(
        late < time::Duration::seconds(2),
        "closed {late} after the end"
    );
    assert_eq!(notices, vec!["session_expired"]);
    assert_eq!(code, Some(4003));

    // a session shortened by any writer ends when it now says
    let (mut client, session) = server.connect_signed_in(BUYER).await;
    client.subscribe_signed_in("realtime:o", orders(None)).await;
    let hash = format!("{:x}", sha256(&session));
    let ends_at: time::OffsetDateTime = sqlx::query_scalar(&format!(
        "update sessions set expires_at = now() + interval '2 seconds' where token_hash = '\\x{hash}' returning expires_at"
    ))
    .fetch_one(&pool)
    .await
    .expect("shortened");
    let (notices, _, code) = client.until_closed().await;
    let early = ends_at - time::OffsetDateTime::now_utc();
    let late = time::OffsetDateTime::now_utc() - ends_at;
    assert!(
        early < time::Duration::milliseconds(100),
        "closed {early} before the end"
    );
    assert!(
        late < time::Duration::seconds(2),
        "closed {late} after the end"
    );
    assert_eq!(notices, vec!["session_expired"]);
    assert_eq!(code, Some(4003));
    server.finish().await;
}

#[sqlx::test]
async fn a_removed_user_is_closed_and_their_token_refused(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    sql(&pool, "insert into users (email, name, role, password_hash) \
                select 'temp@sleek.test', 'Temp', 'buyer', password_hash from users where email = 'buyer@sleek.test'").await;
    let token = server.token("temp@sleek.test").await;
    let mut client = server.connect().await;
    client
        .subscribe("realtime:o", &token, orders(None), None)
        .await;
    sql(&pool, "delete from users where email = 'temp@sleek.test'").await;
    let (notices, _, code) = client.until_closed().await;
    assert_eq!(notices, vec!["account_removed"]);
    assert_eq!(code, Some(4003));
    let mut again = server.connect().await;
    let reply = again
        .join("realtime:o", Some(&token), orders(None), None)
        .await;
    assert_eq!(reply.payload["status"], "error");
    assert!(
        reply.payload["response"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no longer exists"))
    );
    // over HTTP too: the same lookup
    let reply = server
        .app
        .send(
            axum::http::Request::builder()
                .method("POST")
                .uri(<threadline::api::orders::ListOrders as leptos::server_fn::ServerFn>::PATH)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(reply.status, axum::http::StatusCode::UNAUTHORIZED);
    server.finish().await;
}

#[sqlx::test]
async fn a_token_of_a_user_who_never_existed_is_refused(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let ghost = threadline::model::SessionUser {
        id: Uuid::new_v4(),
        email: "ghost@sleek.test".into(),
        name: "Ghost".into(),
        role: threadline::model::Role::Admin,
        factory_id: None,
    };
    let (token, _) = server
        .app
        .state
        .auth
        .issue(&ghost, Duration::from_secs(300));
    let mut client = server.connect().await;
    let reply = client
        .join("realtime:o", Some(&token), orders(None), None)
        .await;
    assert_eq!(reply.payload["status"], "error");
    server.finish().await;
}

#[sqlx::test]
async fn moving_staff_to_another_factory_narrows_their_open_channels_at_that_commit(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let token = server.token(FACTORY).await;
    let mut client = server.connect().await;
    client
        .subscribe("realtime:o", &token, orders(None), None)
        .await;
    let (mut cookie_client, _) = server.connect_signed_in(FACTORY).await;
    cookie_client
        .subscribe_signed_in("realtime:o", orders(None))
        .await;
    let dhaka_order = order_id(&pool, "Linen camp shirt").await;
    let porto_order = order_id(&pool, "Canvas tote bag").await;
    let porto = factory_id(&pool, "Porto Stitch Works").await;
    sql(
        &pool,
        &format!(
            "begin; \
         update orders set notes = 'dhaka before' where id = '{dhaka_order}'; \
         update users set factory_id = '{porto}' where email = '{FACTORY}'; \
         update orders set notes = 'dhaka after' where id = '{dhaka_order}'; \
         update orders set notes = 'porto after' where id = '{porto_order}'; \
         commit;"
        ),
    )
    .await;
    for client in [&mut client, &mut cookie_client] {
        let mut notes = Vec::new();
        let mut refetch = false;
        while notes.len() < 2 {
            let frame = client.next_frame().await;
            if frame.payload["threadline"]["notice"] == "rights_changed" {
                refetch = true;
            }
            if frame.event == "postgres_changes" {
                let event: ChangeEvent = serde_json::from_value(frame.payload).expect("change");
                notes.push(
                    event
                        .data
                        .record
                        .map(|r| r["notes"].clone())
                        .unwrap_or_default(),
                );
            }
        }
        assert!(refetch, "told to refetch under the new rights");
        assert_eq!(notes, vec![json!("dhaka before"), json!("porto after")]);
    }
    // a refreshed token follows the database too
    let refreshed = server.token(FACTORY).await;
    client
        .send_frame(
            "realtime:o",
            "access_token",
            json!({"access_token": refreshed}),
        )
        .await;
    sql(
        &pool,
        &format!("update orders set notes = 'porto again' where id = '{porto_order}'"),
    )
    .await;
    let (_, event) = client.next_change().await;
    assert_eq!(
        event.data.record.map(|r| r["notes"].clone()),
        Some(json!("porto again"))
    );
    server.finish().await;
}

#[sqlx::test]
async fn the_polling_fallback_follows_the_same_rights(pool: PgPool) {
    use threadline::realtime::poll::PollChanges;
    use threadline_realtime::poll::{PollChannel, PollResult};
    use threadline_realtime::protocol::PostgresChangesRequest;
    let server = LiveServer::start(pool.clone()).await;
    let start = server.realtime.head();
    let order = order_id(&pool, "Linen camp shirt").await;
    let buyer2 = user_id(&pool, BUYER2).await;
    sql(
        &pool,
        &format!("update orders set buyer_id = '{buyer2}' where id = '{order}'"),
    )
    .await;
    sql(
        &pool,
        &format!("update orders set notes = 'for the new buyer' where id = '{order}'"),
    )
    .await;
    // wait until both are in the hub
    let mut watcher = server.connect().await;
    watcher
        .subscribe(
            "realtime:w",
            &server.token(BUYER2).await,
            orders(None),
            Some(start),
        )
        .await;
    watcher.next_change().await;
    watcher.next_change().await;
    let poll = |email: &'static str| {
        let server = &server;
        async move {
            let reply = server
                .app
                .call_json(
                    Some(email),
                    &PollChanges {
                        channels: vec![PollChannel {
                            topic: "realtime:p".into(),
                            bindings: vec![PostgresChangesRequest {
                                event: "*".into(),
                                schema: "public".into(),
                                table: Some("orders".into()),
                                filter: None,
                                select: None,
                            }],
                            cursor: Some(start),
                        }],
                    },
                )
                .await;
            assert_eq!(reply.status, axum::http::StatusCode::OK, "{}", reply.body);
            let results: Vec<PollResult> = serde_json::from_value(reply.body).expect("poll result");
            results[0]
                .events
                .iter()
                .map(|e| serde_json::from_str::<ChangeEvent>(e).expect("event"))
                .filter(|e| id_of(e) == order.to_string())
                .map(|e| (e.data.kind, e.data.old_record.map(|r| r.len())))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(poll(BUYER).await, vec![(ChangeKind::Delete, Some(1))]);
    assert_eq!(
        poll(BUYER2).await,
        vec![
            (ChangeKind::Update, Some(1)),
            (ChangeKind::Update, Some(orders_columns(&pool).await))
        ]
    );
    server.finish().await;
}

async fn orders_columns(pool: &PgPool) -> usize {
    let count: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.columns where table_name = 'orders' and table_schema = 'public'",
    )
    .fetch_one(pool)
    .await
    .expect("columns");
    usize::try_from(count).unwrap_or_default()
}

#[sqlx::test]
async fn nobody_may_listen_to_the_rights_tables(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let token = server.token("admin@sleek.test").await;
    let mut client = server.connect().await;
    for table in ["users", "sessions"] {
        let reply = client
            .join("realtime:x", Some(&token), binding("*", table, None), None)
            .await;
        assert_eq!(reply.payload["status"], "error", "{table}");
    }
    // an admin listening to every table never gets a users or sessions row
    client
        .subscribe(
            "realtime:all",
            &token,
            json!([{"event": "*", "schema": "public"}]),
            None,
        )
        .await;
    sql(
        &pool,
        "update users set name = 'Renamed' where email = 'buyer@sleek.test'",
    )
    .await;
    let until = barrier(&pool, "admin@sleek.test").await;
    let events = changes_until(&mut client, until).await;
    assert!(
        events
            .iter()
            .all(|e| e.data.table != "users" && e.data.table != "sessions")
    );
    server.finish().await;
}
