//! The orders list reaches every row of a long history: keyset pages that
//! stay exact while rows are written, status counts, and search.
#![cfg(feature = "ssr")]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use common::TestApp;
use sqlx::PgPool;
use threadline::api::orders::{ListOrders, OrderCounts};
use threadline::api::paging::PAGE_SIZE;
use threadline::model::{Order, OrderPage, StatusCount};
use uuid::Uuid;

const BUYER: &str = "buyer@sleek.test";
const FACTORY: &str = "factory@sleek.test";

fn list(
    status: Option<&str>,
    search: Option<&str>,
    through: Option<&Order>,
    more: bool,
) -> ListOrders {
    ListOrders {
        status: status.map(str::to_string),
        search: search.map(str::to_string),
        through: through.map(|o| o.key().to_string()),
        more,
    }
}

async fn page(app: &TestApp, email: &str, args: &ListOrders) -> OrderPage {
    let reply = app.call(Some(email), args).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    serde_json::from_value(reply.body).expect("a page of orders")
}

/// `count` orders of the buyer, three to a creation time (so that ties are
/// broken by number), the oldest a few days back.
async fn history(pool: &PgPool, count: i32, product: &str) -> HashSet<Uuid> {
    let ids: Vec<(Uuid,)> = sqlx::query_as(
        "insert into orders (buyer_id, product, quantity, due_date, created_at)
         select (select id from users where email = $1), $2 || ' ' || i, i, current_date + 30,
                now() - interval '3 days' + (i / 3) * interval '1 minute'
         from generate_series(1, $3) as i returning id",
    )
    .bind(BUYER)
    .bind(product)
    .bind(count)
    .fetch_all(pool)
    .await
    .expect("history inserted");
    ids.into_iter().map(|(id,)| id).collect()
}

fn assert_newest_first(orders: &[Order]) {
    for pair in orders.windows(2) {
        assert!(
            pair[0].key() > pair[1].key(),
            "{} before {} is out of order",
            pair[0].label(),
            pair[1].label()
        );
    }
}

#[sqlx::test]
async fn paging_reaches_every_row_once_while_rows_are_inserted_and_updated(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let old = history(&pool, 317, "Paged tee").await;

    // a writer keeps inserting new orders and changing old ones while we page
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (pool, stop) = (pool.clone(), stop.clone());
        async move {
            let mut written = 0u32;
            while !stop.load(Ordering::Relaxed) || written < 20 {
                sqlx::query(
                    "insert into orders (buyer_id, product, quantity, due_date)
                     values ((select id from users where email = $1), 'Fresh polo', 5, current_date + 9)",
                )
                .bind(BUYER)
                .execute(&pool)
                .await
                .expect("insert");
                sqlx::query(
                    "update orders set status = 'cancelled', updated_at = now()
                     where id = (select id from orders where product like 'Paged tee %' and status = 'pending'
                                 order by random() limit 1)",
                )
                .execute(&pool)
                .await
                .expect("update");
                written += 1;
                tokio::task::yield_now().await;
            }
            written
        }
    });

    let mut window = page(&app, BUYER, &list(None, None, None, false)).await;
    assert_eq!(window.items.len(), PAGE_SIZE);
    assert!(window.more);
    let mut pages = 1;
    while window.more {
        let last = window.items.last().cloned().expect("a non-empty window");
        let grown = page(&app, BUYER, &list(None, None, Some(&last), true)).await;
        // the window keeps every row it had (in place) and adds the next page
        let before: HashSet<Uuid> = window.items.iter().map(|o| o.id).collect();
        let kept = grown
            .items
            .iter()
            .filter(|o| before.contains(&o.id))
            .count();
        assert!(kept >= before.len(), "rows already loaded went missing");
        window = grown;
        pages += 1;
        assert!(pages < 20, "paging does not end");
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(written >= 20);

    assert_newest_first(&window.items);
    let ids: Vec<Uuid> = window.items.iter().map(|o| o.id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a row was listed twice");
    for id in &old {
        assert!(unique.contains(id), "an old row was never reached");
    }
    // the list holds exactly what the buyer may see, as the database has it now
    let (visible,): (i64,) = sqlx::query_as(
        "select count(*) from orders where buyer_id = (select id from users where email = $1)",
    )
    .bind(BUYER)
    .fetch_one(&pool)
    .await
    .expect("count");
    let refreshed = page(&app, BUYER, &list(None, None, window.items.last(), false)).await;
    assert_eq!(refreshed.items.len() as i64, visible);
    assert!(!refreshed.more);
    // and the refetched window shows the writer's changes in place
    let cancelled = refreshed
        .items
        .iter()
        .filter(|o| o.product.starts_with("Paged tee") && o.status.as_str() == "cancelled")
        .count();
    assert!(cancelled >= 20);
}

#[sqlx::test]
async fn counts_search_and_status_filter_cover_the_whole_history(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    history(&pool, 130, "Archive hoodie").await;
    history(&pool, 3, "Odd 100% cotton_tee").await;

    // counts per status: the sum is everything the buyer may see
    let reply = app.call(Some(BUYER), &OrderCounts { search: None }).await;
    assert_eq!(reply.status, StatusCode::OK);
    let counts: Vec<StatusCount> = serde_json::from_value(reply.body).expect("counts");
    let total: i64 = counts.iter().map(|c| c.count).sum();
    assert_eq!(total, 7 + 133);

    // search: over every page, never the first one only
    let first = page(
        &app,
        BUYER,
        &list(None, Some("archive HOODIE"), None, false),
    )
    .await;
    assert_eq!(first.items.len(), PAGE_SIZE);
    assert!(first.more);
    let all = page(
        &app,
        BUYER,
        &list(None, Some("archive HOODIE"), first.items.last(), true),
    )
    .await;
    let rest = page(
        &app,
        BUYER,
        &list(None, Some("archive HOODIE"), all.items.last(), true),
    )
    .await;
    assert_eq!(rest.items.len(), 130);
    assert!(!rest.more);
    assert!(
        rest.items
            .iter()
            .all(|o| o.product.starts_with("Archive hoodie"))
    );
    let reply = app
        .call(
            Some(BUYER),
            &OrderCounts {
                search: Some("Archive hoodie".into()),
            },
        )
        .await;
    let counts: Vec<StatusCount> = serde_json::from_value(reply.body).expect("counts");
    assert_eq!(counts.iter().map(|c| c.count).sum::<i64>(), 130);

    // by PO number
    let one = rest.items[17].clone();
    let found = page(&app, BUYER, &list(None, Some(&one.label()), None, false)).await;
    assert!(found.items.iter().any(|o| o.id == one.id));

    // wildcards typed in a search mean themselves
    let literal = page(&app, BUYER, &list(None, Some("100% cotton_"), None, false)).await;
    assert_eq!(literal.items.len(), 3);
    let none = page(&app, BUYER, &list(None, Some("1_0%"), None, false)).await;
    assert!(none.items.is_empty());

    // status filter and search together
    sqlx::query("update orders set status = 'cancelled' where product in ('Archive hoodie 1', 'Archive hoodie 2')")
        .execute(&pool)
        .await
        .expect("cancel two");
    let cancelled = page(
        &app,
        BUYER,
        &list(Some("cancelled"), Some("hoodie"), None, false),
    )
    .await;
    assert_eq!(cancelled.items.len(), 2);

    // another factory's staff find none of it
    let theirs = page(
        &app,
        FACTORY,
        &list(None, Some("Archive hoodie"), None, false),
    )
    .await;
    assert!(theirs.items.is_empty());
}

#[sqlx::test]
async fn bad_list_positions_and_searches_get_clear_errors(pool: PgPool) {
    let app = TestApp::new(pool).await;
    for through in ["yesterday", "1.2.3", "", "99999999999999999999.1", "1.x"] {
        let args = ListOrders {
            status: None,
            search: None,
            through: Some(through.to_string()),
            more: false,
        };
        let reply = app.call(Some(BUYER), &args).await;
        if through.is_empty() {
            assert_eq!(reply.status, StatusCode::OK);
            continue;
        }
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{through}: {}",
            reply.body
        );
        assert!(
            reply.body.to_string().contains("list position"),
            "{}",
            reply.body
        );
    }
    // a time far outside what PostgreSQL stores
    let args = ListOrders {
        status: None,
        search: None,
        through: Some(format!("{}.1", i64::MAX)),
        more: true,
    };
    assert_eq!(
        app.call(Some(BUYER), &args).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let long = "x".repeat(201);
    let reply = app
        .call(Some(BUYER), &list(None, Some(&long), None, false))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let reply = app
        .call(Some(BUYER), &list(Some("lost"), None, None, false))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[sqlx::test]
async fn the_inbox_and_sent_folder_reach_every_message_once(pool: PgPool) {
    use threadline::api::messages::ListMessages;
    use threadline::model::{Folder, Message, Page};
    let app = TestApp::new(pool.clone()).await;
    // 120 messages from the factory to the buyer, several to a timestamp
    let sent: Vec<(Uuid,)> = sqlx::query_as(
        "insert into messages (sender_id, recipient_id, body, created_at)
         select (select id from users where email = $1), (select id from users where email = $2),
                'Update number ' || i, now() - interval '1 day' + (i / 4) * interval '1 second'
         from generate_series(1, 120) as i returning id",
    )
    .bind(FACTORY)
    .bind(BUYER)
    .fetch_all(&pool)
    .await
    .expect("messages");
    for (email, folder) in [(BUYER, Folder::Inbox), (FACTORY, Folder::Sent)] {
        let call = |through: Option<&Message>, more: bool| ListMessages {
            folder,
            through: through.map(|m| m.key().to_string()),
            more,
        };
        let reply = app.call(Some(email), &call(None, false)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let mut window: Page<Message> = serde_json::from_value(reply.body).expect("a page");
        assert_eq!(window.items.len(), PAGE_SIZE);
        while window.more {
            let reply = app
                .call(Some(email), &call(window.items.last(), true))
                .await;
            window = serde_json::from_value(reply.body).expect("a page");
        }
        let ids: HashSet<Uuid> = window.items.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), window.items.len(), "a message listed twice");
        for (id,) in &sent {
            assert!(ids.contains(id), "a message was never reached");
        }
        for pair in window.items.windows(2) {
            assert!(pair[0].key() > pair[1].key());
        }
    }
}

#[sqlx::test]
async fn conversations_group_by_person_and_order_with_unread_counts(pool: PgPool) {
    use threadline::api::messages::{ConversationMessages, ListConversations};
    use threadline::model::{Conversation, Message, Page};
    let app = TestApp::new(pool.clone()).await;
    let order = app.order_id("Merino crewneck sweater").await;
    let user = |email: &str| {
        let pool = pool.clone();
        let email = email.to_string();
        async move {
            sqlx::query_as::<_, (Uuid,)>("select id from users where email = $1")
                .bind(email)
                .fetch_one(&pool)
                .await
                .expect("user")
                .0
        }
    };
    let (buyer, factory) = (user(BUYER).await, user(FACTORY).await);
    // 70 messages about the order, both ways, the factory's 35 unread; then one with no order
    sqlx::query(
        "insert into messages (sender_id, recipient_id, order_id, body, created_at)
         select case when i % 2 = 0 then $1 else $2 end, case when i % 2 = 0 then $2 else $1 end, $3,
                'About the sweaters ' || i, now() - interval '1 hour' + i * interval '1 second'
         from generate_series(1, 70) as i",
    )
    .bind(factory)
    .bind(buyer)
    .bind(order)
    .execute(&pool)
    .await
    .expect("thread");
    sqlx::query(
        "insert into messages (sender_id, recipient_id, body) values ($1, $2, 'Season plans')",
    )
    .bind(factory)
    .bind(buyer)
    .execute(&pool)
    .await
    .expect("one more");

    let reply = app
        .call(
            Some(BUYER),
            &ListConversations {
                through: None,
                more: false,
            },
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let page: Page<Conversation> = serde_json::from_value(reply.body).expect("conversations");
    let with_factory: Vec<&Conversation> = page
        .items
        .iter()
        .filter(|c| c.other_id == factory)
        .collect();
    // newest conversation first: the one with no order
    assert_eq!(with_factory[0].order_id, None);
    assert_eq!(with_factory[0].last_body, "Season plans");
    assert_eq!(with_factory[0].unread, 1);
    let about = with_factory
        .iter()
        .find(|c| c.order_id == Some(order))
        .expect("the order's conversation");
    let (expected_unread,): (i64,) = sqlx::query_as(
        "select count(*) from messages where recipient_id = $1 and sender_id = $2 and order_id = $3 and read_at is null",
    )
    .bind(buyer)
    .bind(factory)
    .bind(order)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(about.unread, expected_unread);
    assert!(about.unread >= 35);
    assert_eq!(about.last_body, "About the sweaters 70");
    assert!(!about.last_from_me);

    // the conversation pages back to its first message, each once
    let call = |through: Option<&Message>, more: bool| ConversationMessages {
        with: factory,
        order_id: Some(order),
        through: through.map(|m| m.key().to_string()),
        more,
    };
    let reply = app.call(Some(BUYER), &call(None, false)).await;
    let mut window: Page<Message> = serde_json::from_value(reply.body).expect("messages");
    assert_eq!(window.items.len(), PAGE_SIZE);
    while window.more {
        let reply = app
            .call(Some(BUYER), &call(window.items.last(), true))
            .await;
        window = serde_json::from_value(reply.body).expect("messages");
    }
    assert_eq!(window.items.len() as i64, about.total);
    assert!(window.items.iter().all(|m| m.order_id == Some(order)));
    let ids: HashSet<Uuid> = window.items.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), window.items.len());

    // someone else's conversation shows nothing of it
    let reply = app
        .call(
            Some("buyer2@sleek.test"),
            &ConversationMessages {
                with: factory,
                order_id: Some(order),
                through: None,
                more: false,
            },
        )
        .await;
    let theirs: Page<Message> = serde_json::from_value(reply.body).expect("messages");
    assert!(theirs.items.is_empty());
}

#[sqlx::test]
async fn an_orders_updates_feed_and_thread_page_back_to_the_first_entry(pool: PgPool) {
    use threadline::api::messages::OrderMessages;
    use threadline::api::orders::ListOrderUpdates;
    use threadline::model::{Message, OrderUpdate, Page};
    let app = TestApp::new(pool.clone()).await;
    let order = app.order_id("Merino crewneck sweater").await;
    sqlx::query(
        "insert into order_updates (order_id, author_id, text, created_at)
         select $1, (select id from users where email = $2), 'Note ' || i,
                now() - interval '1 hour' + (i / 3) * interval '1 second'
         from generate_series(1, 130) as i",
    )
    .bind(order)
    .bind(FACTORY)
    .execute(&pool)
    .await
    .expect("updates");
    sqlx::query(
        "insert into messages (sender_id, recipient_id, order_id, body)
         select (select id from users where email = $2), (select id from users where email = $3), $1, 'Thread ' || i
         from generate_series(1, 75) as i",
    )
    .bind(order)
    .bind(FACTORY)
    .bind(BUYER)
    .execute(&pool)
    .await
    .expect("messages");

    let call = |through: Option<&OrderUpdate>, more| ListOrderUpdates {
        order_id: order,
        through: through.map(|u| u.key().to_string()),
        more,
    };
    let mut feed: Page<OrderUpdate> =
        serde_json::from_value(app.call(Some(BUYER), &call(None, false)).await.body).expect("feed");
    assert_eq!(feed.items.len(), PAGE_SIZE);
    while feed.more {
        feed = serde_json::from_value(
            app.call(Some(BUYER), &call(feed.items.last(), true))
                .await
                .body,
        )
        .expect("feed");
    }
    let (updates,): (i64,) =
        sqlx::query_as("select count(*) from order_updates where order_id = $1")
            .bind(order)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(feed.items.len() as i64, updates);
    let ids: HashSet<Uuid> = feed.items.iter().map(|u| u.id).collect();
    assert_eq!(ids.len(), feed.items.len());

    let call = |through: Option<&Message>, more| OrderMessages {
        order_id: order,
        through: through.map(|m| m.key().to_string()),
        more,
    };
    let mut thread: Page<Message> =
        serde_json::from_value(app.call(Some(BUYER), &call(None, false)).await.body)
            .expect("thread");
    while thread.more {
        thread = serde_json::from_value(
            app.call(Some(BUYER), &call(thread.items.last(), true))
                .await
                .body,
        )
        .expect("thread");
    }
    assert!(
        thread
            .items
            .iter()
            .filter(|m| m.body.starts_with("Thread "))
            .count()
            == 75
    );
    // another buyer sees neither
    let reply = app
        .call(Some("buyer2@sleek.test"), &call(None, false))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}
