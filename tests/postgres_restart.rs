//! PostgreSQL restarts under a running server: capture reconnects and
//! resumes from its slot, and subscribers get every change, in order, on
//! the same connection. Runs on a private cluster, so restarting it does
//! not disturb other tests.
#![cfg(feature = "ssr")]

mod common;

use common::live::{LiveServer, orders};
use serde_json::Value;
use threadline::server::database::MIGRATOR;
use threadline::server::embedded_postgres::EmbeddedPostgres;
use threadline::server::settings::RealtimeSettings;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_survives_a_postgres_restart_with_nothing_lost() {
    let dir = match std::env::var_os("THREADLINE_DATA_DIR") {
        Some(base) => std::path::PathBuf::from(format!("{}-pg-restart", base.to_string_lossy())),
        None => std::path::PathBuf::from("target/pg-restart-test"),
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
