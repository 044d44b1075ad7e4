//! What each role may see and do, the order state machine, and bad input:
//! every refusal is a clear error and changes nothing.
#![cfg(feature = "ssr")]

mod common;

use axum::http::StatusCode;
use common::TestApp;
use sqlx::PgPool;
use threadline::api::messages::{MarkMessageRead, SendMessage};
use threadline::api::orders::{
    AdvanceStage, AssignFactory, CreateOrder, GetOrder, ListOrders, PostOrderUpdate, SetOrderStatus,
};
use threadline::model::OrderStatus;
use uuid::Uuid;

const BUYER: &str = "buyer@sleek.test";
const BUYER2: &str = "buyer2@sleek.test";
const FACTORY: &str = "factory@sleek.test";
const FACTORY2: &str = "factory2@sleek.test";
const ADMIN: &str = "admin@sleek.test";

fn products(reply: &common::Reply) -> Vec<String> {
    reply.body["items"]
        .as_array()
        .map(|orders| {
            orders
                .iter()
                .filter_map(|o| {
                    o.get("product")
                        .and_then(|p| p.as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn list_all() -> ListOrders {
    ListOrders {
        status: None,
        search: None,
        through: None,
        more: false,
    }
}

#[sqlx::test]
async fn each_role_lists_exactly_the_orders_it_may_see(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let buyer = products(&app.call(Some(BUYER), &list_all()).await);
    assert_eq!(buyer.len(), 7);
    assert!(buyer.contains(&"Merino crewneck sweater".to_string()));
    assert!(
        !buyer.contains(&"Wool overcoat".to_string()),
        "buyer2's order leaked"
    );

    let factory2 = products(&app.call(Some(FACTORY2), &list_all()).await);
    let mut factory2_sorted = factory2.clone();
    factory2_sorted.sort();
    assert_eq!(
        factory2_sorted,
        vec!["Canvas tote bag", "Performance running shorts"]
    );

    let admin = products(&app.call(Some(ADMIN), &list_all()).await);
    assert_eq!(admin.len(), 10);
}

#[sqlx::test]
async fn a_buyer_gets_not_found_for_another_buyers_order(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let overcoat = app.order_id("Wool overcoat").await;
    let reply = app.call(Some(BUYER), &GetOrder { id: overcoat }).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.message(), "order not found");
    let own = app.call(Some(BUYER2), &GetOrder { id: overcoat }).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body["stages"].as_array().map(Vec::len), Some(6));
}

#[sqlx::test]
async fn a_visitor_must_sign_in(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app.call(None, &list_all()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body["error"], "unauthorized");
}

#[sqlx::test]
async fn a_buyer_cannot_move_production(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let sweater = app.order_id("Merino crewneck sweater").await;
    let reply = app
        .call(
            Some(BUYER),
            &AdvanceStage {
                order_id: sweater,
                client_mutation_id: None,
                stage_id: None,
                to: None,
            },
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let sewing: String = sqlx::query_scalar(
        "select status from production_stages where order_id = $1 and stage = 'sewing'",
    )
    .bind(sweater)
    .fetch_one(&app.pool)
    .await
    .unwrap_or_default();
    assert_eq!(sewing, "in_progress");
}

#[sqlx::test]
async fn factory_staff_cannot_touch_another_factorys_order(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shorts = app.order_id("Performance running shorts").await;
    let reply = app
        .call(
            Some(FACTORY),
            &AdvanceStage {
                order_id: shorts,
                client_mutation_id: None,
                stage_id: None,
                to: None,
            },
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = app
        .call(
            Some(FACTORY),
            &PostOrderUpdate {
                order_id: shorts,
                text: "hello".into(),
                stage: None,
                client_mutation_id: None,
            },
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn advancing_completes_the_current_stage_then_starts_the_next(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let sweater = app.order_id("Merino crewneck sweater").await;
    let advance = AdvanceStage {
        order_id: sweater,
        client_mutation_id: None,
        stage_id: None,
        to: None,
    };
    assert_eq!(
        app.call(Some(FACTORY), &advance).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Some(FACTORY), &advance).await.status,
        StatusCode::OK
    );
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "select stage, status from production_stages where order_id = $1 order by position",
    )
    .bind(sweater)
    .fetch_all(&app.pool)
    .await
    .unwrap_or_default();
    assert_eq!(statuses[1], ("sewing".into(), "done".into()));
    assert_eq!(statuses[2], ("finishing".into(), "in_progress".into()));
}

#[sqlx::test]
async fn a_move_chosen_on_a_page_that_production_has_left_behind_changes_nothing(pool: PgPool) {
    use threadline::model::StageStatus;
    let app = TestApp::new(pool).await;
    // the sweater's sewing is in progress: its page offers "Complete sewing"
    let sweater = app.order_id("Merino crewneck sweater").await;
    let stage = |name: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_as::<_, (uuid::Uuid, String)>(
                "select id, status from production_stages where order_id = $1 and stage = $2",
            )
            .bind(sweater)
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap_or_default()
        }
    };
    // the move a page's button sends: this stage, to this status
    let chosen = |stage_id, to| AdvanceStage {
        order_id: sweater,
        client_mutation_id: None,
        stage_id: Some(stage_id),
        to: Some(to),
    };
    let (sewing, _) = stage("sewing").await;
    let complete_sewing = chosen(sewing, StageStatus::Done);
    // someone else completes it first; the stale click must not start finishing
    assert_eq!(
        app.call(Some(FACTORY), &complete_sewing).await.status,
        StatusCode::OK
    );
    let reply = app.call(Some(FACTORY), &complete_sewing).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["error"], "conflict");
    assert_eq!(stage("finishing").await.1, "pending");
    // the move the page offers now goes through
    let (finishing, _) = stage("finishing").await;
    let start_finishing = chosen(finishing, StageStatus::InProgress);
    assert_eq!(
        app.call(Some(FACTORY), &chosen(finishing, StageStatus::Done))
            .await
            .status,
        StatusCode::CONFLICT
    );
    // a move that names no status this server knows, or no stage, is
    // refused as bad input, and nothing moves
    let token = app.token(FACTORY).await;
    for body in [
        format!("order_id={sweater}&stage_id={finishing}&to=sideways"),
        format!("order_id={sweater}&stage_id=not-a-stage&to=in_progress"),
    ] {
        let request = axum::http::Request::builder()
            .method(axum::http::Method::POST)
            .uri(<AdvanceStage as leptos::server_fn::ServerFn>::PATH)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::from(body.clone()))
            .expect("request builds");
        let reply = app.send(request).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["error"], "invalid", "{body}");
        assert!(!reply.message().is_empty(), "{body}: a reason");
        assert_eq!(stage("finishing").await.1, "pending", "{body}");
    }
    assert_eq!(
        app.call(Some(FACTORY), &start_finishing).await.status,
        StatusCode::OK
    );
    assert_eq!(stage("finishing").await.1, "in_progress");
}

#[sqlx::test]
async fn the_state_machine_refuses_skipping_steps(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let pending = app.order_id("Organic cotton crew tee").await;
    let reply = app
        .call(
            Some(ADMIN),
            &SetOrderStatus {
                id: pending,
                to: OrderStatus::Shipped,
                client_mutation_id: None,
            },
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reply.message(),
        "an order that is pending cannot become shipped"
    );

    // the rule holds for every writer, not just the app
    let direct = sqlx::query("update orders set status = 'delivered' where id = $1")
        .bind(pending)
        .execute(&app.pool)
        .await;
    let message = direct.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("invalid status change from pending to delivered"),
        "{message}"
    );
}

#[sqlx::test]
async fn a_stage_cannot_start_before_the_previous_one_is_done(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shirt = app.order_id("Linen camp shirt").await;
    let jumped = sqlx::query("update production_stages set status = 'in_progress' where order_id = $1 and stage = 'sewing'")
        .bind(shirt)
        .execute(&app.pool)
        .await;
    let message = jumped.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("cannot start before the previous stage is done"),
        "{message}"
    );
}

#[sqlx::test]
async fn a_buyer_may_cancel_only_while_pending(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let confirmed = app.order_id("Linen camp shirt").await;
    let reply = app
        .call(
            Some(BUYER),
            &SetOrderStatus {
                id: confirmed,
                to: OrderStatus::Cancelled,
                client_mutation_id: None,
            },
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    let pending = app.order_id("Organic cotton crew tee").await;
    let reply = app
        .call(
            Some(BUYER),
            &SetOrderStatus {
                id: pending,
                to: OrderStatus::Cancelled,
                client_mutation_id: None,
            },
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let status: String = sqlx::query_scalar("select status from orders where id = $1")
        .bind(pending)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_default();
    assert_eq!(status, "cancelled");
}

#[sqlx::test]
async fn assigning_a_factory_confirms_the_order_and_tells_its_staff(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let pending = app.order_id("Organic cotton crew tee").await;
    let factory_id = app
        .user(FACTORY)
        .await
        .factory_id
        .map(|f| f.to_string())
        .unwrap_or_default();
    let by_buyer = app
        .call(
            Some(BUYER),
            &AssignFactory {
                id: pending,
                factory_id: factory_id.clone(),
            },
        )
        .await;
    assert_eq!(by_buyer.status, StatusCode::FORBIDDEN);
    let reply = app
        .call(
            Some(ADMIN),
            &AssignFactory {
                id: pending,
                factory_id,
            },
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let detail = app.call(Some(FACTORY), &GetOrder { id: pending }).await;
    assert_eq!(detail.body["order"]["status"], "confirmed");
    let told: i64 = sqlx::query_scalar(
        "select count(*) from notifications n join users u on u.id = n.user_id \
         where u.email = $1 and n.kind = 'order_assigned' and n.link = '/orders/' || $2",
    )
    .bind(FACTORY)
    .bind(pending.to_string())
    .fetch_one(&app.pool)
    .await
    .unwrap_or_default();
    assert_eq!(told, 1);
}

#[sqlx::test]
async fn bad_order_input_is_refused_with_a_clear_message(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let order = |product: &str, quantity: &str, due: &str| CreateOrder {
        product: product.into(),
        quantity: quantity.into(),
        due_date: due.into(),
        notes: None,
    };
    let cases = [
        (
            order("Tee", "-5", "2099-01-01"),
            "quantity must be a whole number from 1 to 1,000,000",
        ),
        (
            order("Tee", "lots", "2099-01-01"),
            "quantity must be a whole number from 1 to 1,000,000",
        ),
        (
            order("  ", "10", "2099-01-01"),
            "product must be 1 to 200 characters",
        ),
        (
            order("Tee", "10", "tomorrow"),
            "due date must be a date like 2026-12-31",
        ),
        (
            order("Tee", "10", "2000-01-01"),
            "due date cannot be in the past",
        ),
    ];
    let before: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&app.pool)
        .await
        .unwrap_or(-1);
    for (input, expected) in cases {
        let reply = app.call(Some(BUYER), &input).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{expected}");
        assert_eq!(reply.message(), expected);
    }
    let factory = app
        .call(Some(FACTORY), &order("Tee", "10", "2099-01-01"))
        .await;
    assert_eq!(factory.status, StatusCode::FORBIDDEN);
    let after: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&app.pool)
        .await
        .unwrap_or(-2);
    assert_eq!(before, after, "a refused order was written");
}

#[sqlx::test]
async fn bad_messages_are_refused_and_nothing_is_sent(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let factory = app.user(FACTORY).await.id.to_string();
    let buyer2 = app.user(BUYER2).await.id.to_string();
    let message = |to: &str, order: Option<String>, body: &str| SendMessage {
        recipient_id: to.into(),
        order_id: order,
        body: body.into(),
        client_mutation_id: None,
    };
    let before: i64 = sqlx::query_scalar("select count(*) from messages")
        .fetch_one(&app.pool)
        .await
        .unwrap_or(-1);

    let empty = app.call(Some(BUYER), &message(&factory, None, "   ")).await;
    assert_eq!(
        (empty.status, empty.message()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "write a message before sending"
        )
    );

    let stranger = app.call(Some(BUYER), &message(&buyer2, None, "hi")).await;
    assert_eq!(
        (stranger.status, stranger.message()),
        (StatusCode::FORBIDDEN, "you cannot message that person")
    );

    let bad_id = app
        .call(Some(BUYER), &message("not-a-uuid", None, "hi"))
        .await;
    assert_eq!(
        (bad_id.status, bad_id.message()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "recipient is not a valid id"
        )
    );

    let unknown_order = app
        .call(
            Some(BUYER),
            &message(&factory, Some(Uuid::new_v4().to_string()), "hi"),
        )
        .await;
    assert_eq!(
        (unknown_order.status, unknown_order.message()),
        (StatusCode::NOT_FOUND, "order not found")
    );

    let after: i64 = sqlx::query_scalar("select count(*) from messages")
        .fetch_one(&app.pool)
        .await
        .unwrap_or(-2);
    assert_eq!(before, after);

    let sent = app
        .call(Some(BUYER), &message(&factory, None, "Swatches, please"))
        .await;
    assert_eq!(sent.status, StatusCode::OK);
}

#[sqlx::test]
async fn only_the_recipient_marks_a_message_read(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let id: Uuid = sqlx::query_scalar(
        "select m.id from messages m join users u on u.id = m.recipient_id \
         where u.email = $1 and m.read_at is null limit 1",
    )
    .bind(BUYER)
    .fetch_one(&app.pool)
    .await
    .unwrap_or_default();
    let by_other = app
        .call(
            Some(FACTORY),
            &MarkMessageRead {
                id,
                client_mutation_id: None,
            },
        )
        .await;
    assert_eq!(by_other.status, StatusCode::FORBIDDEN);
    let by_recipient = app
        .call(
            Some(BUYER),
            &MarkMessageRead {
                id,
                client_mutation_id: None,
            },
        )
        .await;
    assert_eq!(by_recipient.status, StatusCode::OK);
    let read: bool = sqlx::query_scalar("select read_at is not null from messages where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap_or(false);
    assert!(read);
}

#[sqlx::test]
async fn pages_render_for_a_signed_in_user_and_redirect_visitors(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (status, _) = app.get("/orders", None).await;
    assert!(status.is_redirection(), "{status}");
    let user = app.user(BUYER).await;
    let token = threadline::auth::server::create_session(&app.pool, user.id, 1)
        .await
        .unwrap_or_default();
    let cookie = format!("threadline_session={token}");
    let (status, html) = app.get("/orders", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Merino crewneck sweater"),
        "orders are rendered on the server"
    );
    assert!(!html.contains("Wool overcoat"));
    let (status, _) = app.get("/no/such/page", Some(&cookie)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn the_bell_counts_every_unread_notification_and_lists_the_newest_fifteen(pool: PgPool) {
    use threadline::api::notifications::{MarkNotificationsRead, Notifications};
    let app = TestApp::new(pool.clone()).await;
    let buyer2 = app.user(BUYER2).await;
    sqlx::query("delete from notifications where user_id = $1")
        .bind(buyer2.id)
        .execute(&pool)
        .await
        .expect("clear");
    let empty = app.call(Some(BUYER2), &Notifications {}).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert_eq!(empty.body["unread"], 0);
    assert_eq!(empty.body["recent"], serde_json::json!([]));

    // 20 notifications a second apart, the oldest 3 already read
    sqlx::query(
        "insert into notifications (user_id, kind, text, link, read_at, created_at) \
         select $1, 'order_status', 'note ' || i, '/orders', \
                case when i <= 3 then now() end, now() - make_interval(secs => 100 - i) \
         from generate_series(1, 20) as i",
    )
    .bind(buyer2.id)
    .execute(&pool)
    .await
    .expect("notifications");
    let texts = |reply: &common::Reply| -> Vec<String> {
        reply.body["recent"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|n| n["text"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let full = app.call(Some(BUYER2), &Notifications {}).await;
    assert_eq!(full.body["unread"], 17);
    let newest: Vec<String> = (6..=20).rev().map(|i| format!("note {i}")).collect();
    assert_eq!(texts(&full), newest);

    // marking all read leaves nothing unread and the same list
    let marked = app
        .call(Some(BUYER2), &MarkNotificationsRead { id: None })
        .await;
    assert_eq!(marked.status, StatusCode::OK, "{}", marked.body);
    let read = app.call(Some(BUYER2), &Notifications {}).await;
    assert_eq!(read.body["unread"], 0);
    assert_eq!(texts(&read), newest);

    // another user's notifications are neither counted nor listed
    let other = app.call(Some(BUYER), &Notifications {}).await;
    assert!(texts(&other).iter().all(|t| !t.starts_with("note ")));
}
