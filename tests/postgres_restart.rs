//! PostgreSQL under a running server, on private clusters so that nothing
//! here disturbs other tests: a restart (capture reconnects and resumes from
//! its slot, subscribers get every change, in order, on the same
//! connection), and slots PostgreSQL invalidates (made anew; clients told
//! to refetch, never a silent gap).
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::live::{LiveServer, orders};
use serde_json::Value;
use threadline::server::database::MIGRATOR;
use threadline::server::embedded_postgres::EmbeddedPostgres;
use threadline::server::settings::RealtimeSettings;

/// A cluster of the test's own, migrated.
async fn private_cluster(
    name: &str,
) -> (EmbeddedPostgres, String, sqlx::PgPool, std::path::PathBuf) {
    let dir = match std::env::var_os("THREADLINE_DATA_DIR") {
        Some(base) => std::path::PathBuf::from(format!("{}-{name}", base.to_string_lossy())),
        None => std::path::PathBuf::from(format!("target/{name}-test")),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().expect("address").port()
    };
    let cluster = EmbeddedPostgres::new(&dir, port).expect("PostgreSQL is installed");
    let (url, _) = cluster.ensure_running().await.expect("cluster starts");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .connect(&url)
        .await
        .expect("connect");
    MIGRATOR.run(&pool).await.expect("migrate");
    (cluster, url, pool, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_survives_a_postgres_restart_with_nothing_lost() {
    let (cluster, url, pool, dir) = private_cluster("pg-restart").await;

    let server = LiveServer::start_on(pool.clone(), &url, RealtimeSettings::default(), true).await;
    let token = server.token("buyer@sleek.test").await;
    let mut client = server.connect().await;
    client
        .subscribe("realtime:orders", &token, orders(None), None)
        .await;
    let set_notes = |notes: String| {
        let pool = pool.clone();
        async move {
            // the pool reconnects on its own after the restart
            sqlx::query("update orders set notes = $1 where product = 'Organic cotton crew tee'")
                .bind(notes)
                .execute(&pool)
                .await
                .expect("update");
        }
    };
    set_notes("before restart".into()).await;
    let (_, first) = client.next_change().await;
    assert_eq!(
        first
            .data
            .record
            .as_ref()
            .and_then(|r| r.get("notes"))
            .and_then(Value::as_str),
        Some("before restart")
    );

    cluster.stop().await.expect("stop PostgreSQL");
    cluster
        .ensure_running()
        .await
        .expect("start PostgreSQL again");
    for n in 0..5 {
        set_notes(format!("after restart {n}")).await;
    }

    let mut after = Vec::new();
    for _ in 0..5 {
        let (_, event) = client.next_change().await;
        assert!(event.cursor > first.cursor);
        after.push(
            event
                .data
                .record
                .and_then(|r| r.get("notes").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default(),
        );
    }
    let expected: Vec<String> = (0..5).map(|n| format!("after restart {n}")).collect();
    assert_eq!(after, expected);

    client.close().await;
    server.finish().await;
    pool.close().await;
    cluster.stop().await.expect("stop PostgreSQL");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_postgresql_invalidated_is_made_anew_and_clients_refetch() {
    let (cluster, url, pool, dir) = private_cluster("slot-lost").await;
    sqlx::query("alter system set max_slot_wal_keep_size = '16MB'")
        .execute(&pool)
        .await
        .expect("set");
    sqlx::query("select pg_reload_conf()")
        .execute(&pool)
        .await
        .expect("reload");

    let server = LiveServer::start_on(pool.clone(), &url, RealtimeSettings::default(), true).await;
    let slot = server.realtime.slot().unwrap_or_default().to_string();
    let token = server.token("buyer@sleek.test").await;
    let mut client = server.connect().await;
    client
        .subscribe("realtime:orders", &token, orders(None), None)
        .await;
    sqlx::query("update orders set notes = 'seen' where product = 'Organic cotton crew tee'")
        .execute(&pool)
        .await
        .expect("update");
    let (_, seen) = client.next_change().await;
    client.close().await;
    let pool = server.stop().await;

    // the server is away while far more WAL than the slots may keep is written
    sqlx::query("create table filler (x text)")
        .execute(&pool)
        .await
        .expect("filler");
    for _ in 0..4 {
        sqlx::query("insert into filler select repeat('x', 1000) from generate_series(1, 20000)")
            .execute(&pool)
            .await
            .expect("fill");
        sqlx::query("select pg_switch_wal()")
            .execute(&pool)
            .await
            .expect("switch");
        sqlx::query("checkpoint")
            .execute(&pool)
            .await
            .expect("checkpoint");
    }
    sqlx::query(
        "update orders set notes = 'lost while away' where product = 'Organic cotton crew tee'",
    )
    .execute(&pool)
    .await
    .expect("update");
    sqlx::query("checkpoint")
        .execute(&pool)
        .await
        .expect("checkpoint");
    let statuses: Vec<String> = sqlx::query_scalar(
        "select coalesce(wal_status, 'lost') from pg_replication_slots where slot_name like $1 || '%'",
    )
    .bind(&slot)
    .fetch_all(&pool)
    .await
    .expect("slots");
    assert!(
        statuses.iter().all(|s| s == "lost"),
        "PostgreSQL invalidated the slots: {statuses:?}"
    );

    // back: the slots are made anew, and a client resuming from before is told to refetch
    let server = LiveServer::start_on(pool.clone(), &url, RealtimeSettings::default(), false).await;
    let mut client = server.connect().await;
    client
        .subscribe("realtime:orders", &token, orders(None), Some(seen.cursor))
        .await;
    let mut reset = false;
    while let Some(common::live::Incoming::Frame(frame)) = client.next(Duration::from_secs(2)).await
    {
        assert_ne!(
            frame.event, "postgres_changes",
            "nothing pretends to be a resume"
        );
        reset |= frame.payload["threadline"]["notice"] == "reset";
    }
    assert!(reset, "told to refetch");
    let metrics = server.app.metrics().await;
    assert!(
        metrics.contains("threadline_realtime_errors_total{kind=\"SlotLost\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "threadline_realtime_slot_wal_status{{slot=\"{slot}\",wal_status=\"reserved\"}} 1"
        )),
        "{metrics}"
    );
    // changes flow again
    sqlx::query("update orders set notes = 'after' where product = 'Organic cotton crew tee'")
        .execute(&pool)
        .await
        .expect("update");
    let (_, after) = client.next_change().await;
    assert_eq!(
        after
            .data
            .record
            .as_ref()
            .and_then(|r| r.get("notes"))
            .and_then(Value::as_str),
        Some("after")
    );
    client.close().await;
    server.finish().await;
    pool.close().await;
    cluster.stop().await.expect("stop PostgreSQL");
    let _ = std::fs::remove_dir_all(&dir);
}
