//! A crash loses nothing: the server process is killed with SIGKILL while
//! changes are being written, more are committed while it is down, and a
//! restarted server lets the client resume from its cursor with every
//! change it missed — once, in order, no reset. Large transactions stream
//! through with the retention log bounded; TRUNCATE reaches subscribers as
//! a reset; server pings keep a quiet client connected; an invalidated slot
//! is made anew and every client told to refetch.
#![cfg(feature = "ssr")]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::live::{
    Client, Incoming, LiveServer, WAIT, database_url, order_id, orders, record_text,
};
use sqlx::PgPool;
use threadline::server::settings::RealtimeSettings;
use threadline_realtime::cursor::ChangeCursor;
use threadline_realtime::protocol::{ChangeEvent, Vsn};

const BUYER: &str = "buyer@sleek.test";

/// The real server binary, on its own port and slot.
struct ServerProcess {
    child: Child,
    addr: std::net::SocketAddr,
}

impl ServerProcess {
    fn start(url: &str, port: u16, slot: &str) -> ServerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_threadline"))
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
            .env("THREADLINE_REALTIME_SLOT", slot)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("the server starts");
        ServerProcess {
            child,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    async fn wait_ready(&self) {
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server did not start");
    }

    fn kill_hard(mut self) {
        // SIGKILL: no chance to record or flush anything
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    // a failed assertion must not leave the server running (and holding
    // the test's database and output open)
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn drop_slots(pool: &PgPool, slot: &str) {
    for _ in 0..50 {
        let active: i64 = sqlx::query_scalar(
            "select count(*) from pg_replication_slots where slot_name like $1 || '%' and active",
        )
        .bind(slot)
        .fetch_one(pool)
        .await
        .expect("slots");
        if active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::query("select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name like $1 || '%'")
        .bind(slot)
        .execute(pool)
        .await
        .expect("drop slots");
}

fn notes(event: &ChangeEvent) -> String {
    record_text(event, "notes").to_string()
}

#[sqlx::test]
async fn after_kill_9_a_restarted_server_resumes_every_client_exactly(pool: PgPool) {
    threadline::server::demo::seed(&pool)
        .await
        .expect("demo data");
    let url = database_url(&pool);
    let slot = "threadline_crash_test";
    let port = free_port();
    let server = ServerProcess::start(&url, port, slot);
    server.wait_ready().await;
    let app = common::TestApp::without_seed(pool.clone()).await;
    let token = app.token(BUYER).await;
    let order = order_id(&pool, "Organic cotton crew tee").await;

    let mut client = Client::connect(server.addr, Vsn::V2).await;
    client
        .subscribe("realtime:orders", &token, orders(None), None)
        .await;
    // a writer that keeps committing, through the crash and after it
    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for n in 0..200 {
                sqlx::query("update orders set notes = $2 where id = $1")
                    .bind(order)
                    .bind(format!("n{n}"))
                    .execute(&pool)
                    .await
                    .expect("update");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // read a few, then the server dies mid-stream
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = ChangeCursor::START;
    while seen.len() < 20 {
        let (_, event) = client.next_change().await;
        cursor = event.cursor;
        seen.push(notes(&event));
    }
    server.kill_hard();
    let _ = client.next(Duration::from_secs(2)).await;
    writer.await.expect("writer");

    let server = ServerProcess::start(&url, port, slot);
    server.wait_ready().await;
    // someone new joins at once, without a cursor, while the restarted
    // server may still be replaying its log: history is not news to them
    let mut newcomer = Client::connect(server.addr, Vsn::V2).await;
    newcomer
        .subscribe("realtime:orders", &token, orders(None), None)
        .await;
    let mut client = Client::connect(server.addr, Vsn::V2).await;
    let reply = client
        .subscribe("realtime:orders", &token, orders(None), Some(cursor))
        .await;
    assert_eq!(reply.payload["response"]["cursor"], cursor.to_string());
    while seen.len() < 200 {
        match client.next(WAIT).await {
            Some(Incoming::Frame(frame)) if frame.event == "postgres_changes" => {
                let event: ChangeEvent = serde_json::from_value(frame.payload).expect("change");
                assert!(event.cursor > cursor, "in order, no repeat");
                cursor = event.cursor;
                seen.push(notes(&event));
            }
            Some(Incoming::Frame(frame)) => {
                assert_ne!(
                    frame.payload["threadline"]["notice"], "reset",
                    "no reset after a crash"
                );
            }
            other => panic!(
                "expected the missed changes, got {other:?} after {} of 200",
                seen.len()
            ),
        }
    }
    let expected: Vec<String> = (0..200).map(|n| format!("n{n}")).collect();
    assert_eq!(seen, expected, "every change, once, in order");
    sqlx::query("update orders set notes = 'after the restart' where id = $1")
        .bind(order)
        .execute(&pool)
        .await
        .expect("update");
    let (_, event) = newcomer.next_change().await;
    assert_eq!(
        notes(&event),
        "after the restart",
        "only what came after joining"
    );
    server.stop();
    drop_slots(&pool, slot).await;
}

#[sqlx::test]
async fn a_transaction_far_larger_than_the_retention_log_streams_through(pool: PgPool) {
    let settings = RealtimeSettings {
        retention_changes: 1_000,
        ..RealtimeSettings::default()
    };
    let server = LiveServer::start_with(pool.clone(), settings, true).await;
    let token = server.token("admin@sleek.test").await;
    let start = server.realtime.head();
    let mut client = server.connect().await;
    client
        .subscribe(
            "realtime:n",
            &token,
            common::live::binding("INSERT", "notifications", None),
            None,
        )
        .await;
    let rows = 20_000;
    sqlx::query(
        "insert into notifications (user_id, kind, text) \
         select (select id from users where email = 'admin@sleek.test'), 'message', 'bulk ' || i \
         from generate_series(1, $1) as i",
    )
    .bind(rows)
    .execute(&pool)
    .await
    .expect("bulk insert");
    let mut previous = ChangeCursor::START;
    for n in 1..=rows {
        let (_, event) = client.next_change().await;
        assert!(event.cursor > previous);
        previous = event.cursor;
        let text = record_text(&event, "text").to_string();
        assert_eq!(text, format!("bulk {n}"));
    }
    // the log kept only the end of it: resuming from before it is a reset
    let mut late = server.connect().await;
    late.subscribe(
        "realtime:n",
        &token,
        common::live::binding("INSERT", "notifications", None),
        Some(start),
    )
    .await;
    let mut reset = false;
    while let Some(Incoming::Frame(frame)) = late.next(Duration::from_secs(2)).await {
        reset |= frame.payload["threadline"]["notice"] == "reset";
        if reset {
            break;
        }
    }
    assert!(
        reset,
        "a cursor from before the retention window gets a reset"
    );
    server.finish().await;
}

#[sqlx::test]
async fn truncating_a_table_tells_its_subscribers_to_refetch(pool: PgPool) {
    let server = LiveServer::start(pool.clone()).await;
    let token = server.token("admin@sleek.test").await;
    let mut client = server.connect().await;
    client
        .subscribe(
            "realtime:n",
            &token,
            common::live::binding("*", "notifications", None),
            None,
        )
        .await;
    let mut other = server.connect().await;
    other
        .subscribe("realtime:o", &token, orders(None), None)
        .await;
    sqlx::query("truncate notifications")
        .execute(&pool)
        .await
        .expect("truncate");
    let mut notice = None;
    while let Some(Incoming::Frame(frame)) = client.next(WAIT).await {
        if let Some(n) = frame.payload["threadline"]["notice"].as_str() {
            notice = Some((n.to_string(), frame.payload["threadline"]["cursor"].clone()));
            break;
        }
    }
    let (notice, cursor) = notice.expect("a notice");
    assert_eq!(notice, "reset");
    assert!(cursor.is_string());
    // nobody listening to other tables hears of it
    assert!(
        other
            .drain_changes(Duration::from_millis(300))
            .await
            .is_empty()
    );
    server.finish().await;
}

#[sqlx::test]
async fn server_pings_keep_a_quiet_client_connected_and_a_dead_one_is_closed(pool: PgPool) {
    let settings = RealtimeSettings {
        heartbeat_timeout_secs: 2,
        ping_interval_secs: 1,
        ..RealtimeSettings::default()
    };
    let server = LiveServer::start_with(pool.clone(), settings, true).await;
    let token = server.token(BUYER).await;
    // a client that sends no heartbeats but answers pings (as a browser
    // does for a hidden tab whose timers are throttled)
    let mut quiet = server.connect().await;
    quiet
        .subscribe("realtime:o", &token, orders(None), None)
        .await;
    // reading answers the server's pings; nothing else is sent for 5 s
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match quiet.next(left).await {
            None => break,
            Some(Incoming::Closed(code)) => {
                panic!("closed ({code:?}) though it answered every ping")
            }
            Some(Incoming::Frame(frame)) => {
                assert_ne!(frame.event, "postgres_changes", "nothing was written");
            }
        }
    }
    let order = order_id(&pool, "Organic cotton crew tee").await;
    common::live::set_notes(&pool, order, "still here").await;
    let (_, event) = quiet.next_change().await;
    assert_eq!(notes(&event), "still here");
    // a client that stops reading cannot answer: it is closed
    let mut dead = server.connect().await;
    dead.subscribe("realtime:o", &token, orders(None), None)
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut closed = false;
    while let Some(incoming) = dead.next(Duration::from_secs(2)).await {
        if let Incoming::Closed(code) = incoming {
            // its close frame may be lost to its own pending pongs hitting the closed socket
            assert!(matches!(code, Some(4002) | None), "{code:?}");
            closed = true;
            break;
        }
    }
    assert!(closed, "a client that answers nothing is closed");
    server.finish().await;
}
