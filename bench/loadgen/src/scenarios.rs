//! The scenarios. Each starts (or targets) a server, sets up subscribers,
//! writes, and measures.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::args::{Args, Scenario};
use crate::data::{self, USERS};
use crate::process::{Server, Window};
use crate::report::{Latency, Report, ServerCost};
use crate::subscriber::{Stats, Subscriber};

pub async fn run(args: &Args) -> Result<Report, String> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(&args.database_url)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.database_url))?;
    // A scenario's server starts on a fresh slot: one left by the last
    // scenario would make it rebuild its retention log from that
    // scenario's WAL first (as a restarted server does), and measure that.
    if args.url.is_none() {
        drop_generator_slots(&pool).await;
    }
    let server = Server::start(args).await?;
    let result = match args.scenario {
        Scenario::Latency => latency(args, &server, &pool).await,
        Scenario::Fanout => fanout(args, &server, &pool).await,
        Scenario::Capture => capture(args, &server, &pool).await,
        Scenario::Idle => idle(args, &server, &pool).await,
        Scenario::Resume => resume(args, &server, &pool).await,
        Scenario::Abuse => abuse(args, &server, &pool).await,
        Scenario::Servers => servers(args, &server, &pool).await,
    };
    server.stop().await;
    if args.url.is_none() {
        drop_generator_slots(&pool).await;
    }
    result
}

/// Drops the replication slots of the generator's servers (none is running).
async fn drop_generator_slots(pool: &PgPool) {
    let _ = sqlx::query(
        "select pg_drop_replication_slot(slot_name) from pg_replication_slots \
         where slot_name like 'threadline\\_loadgen%' and not active",
    )
    .execute(pool)
    .await;
}

fn orders_binding(order: Uuid) -> serde_json::Value {
    serde_json::json!({ "event": "*", "schema": "public", "table": "orders", "filter": format!("id=eq.{order}") })
}

/// Tokens of the first `count` demo users.
async fn tokens(
    server: &Server,
    users: &[&'static str],
) -> Result<Vec<(&'static str, String)>, String> {
    let mut out = Vec::new();
    for user in users {
        out.push((*user, data::token(&server.base, user).await?));
    }
    Ok(out)
}

/// Opens `count` subscribers, 200 at a time; subscriber `i` speaks for a
/// user and watches one bench order that user may see.
async fn open_subscribers(
    server: &Server,
    tokens: &[(&'static str, String)],
    watch: impl Fn(usize, &'static str) -> Uuid,
    count: usize,
    stats: &Arc<Stats>,
) -> Result<Vec<Subscriber>, String> {
    let url = server.ws_url();
    let plans: Vec<(usize, String, Uuid)> = (0..count)
        .map(|i| {
            let (user, token) = &tokens[i % tokens.len()];
            (i, token.clone(), watch(i, user))
        })
        .collect();
    let results: Vec<Result<Subscriber, String>> = futures::stream::iter(plans)
        .map(|(i, token, order)| {
            let url = url.clone();
            let stats = stats.clone();
            async move {
                Subscriber::open(
                    &url,
                    &token,
                    &format!("realtime:bench-{i}"),
                    orders_binding(order),
                    None,
                    stats,
                )
                .await
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    results.into_iter().collect()
}

fn latency_of(stats: &Stats) -> Option<Latency> {
    let histogram = stats.latency.lock().ok()?;
    if histogram.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Latency {
        samples: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
    })
}

async fn captured(server: &Server) -> f64 {
    server
        .metric("threadline_realtime_changes_captured_total")
        .await
        .unwrap_or(0.0)
}

/// Waits until no message has arrived for `quiet`, up to `limit`.
async fn settle(stats: &Stats, quiet: Duration, limit: Duration) {
    let start = Instant::now();
    let mut last = stats.received.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = stats.received.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}

fn finish(report: &mut Report, window: &Window) {
    let (server_cpu, server_rss, generator_cpu, generator_rss) = window.end();
    report.server_peak_rss_mb = window
        .pid()
        .and_then(|pid| crate::process::usage(Some(pid)))
        .map(|u| u.peak_rss_bytes as f64 / 1_048_576.0);
    report.server_cpu_percent = server_cpu;
    report.server_rss_mb = server_rss.map(|b| b as f64 / 1_048_576.0);
    report.generator_cpu_percent = generator_cpu;
    report.generator_rss_mb = generator_rss.map(|b| b as f64 / 1_048_576.0);
}

/// Changes the server captured since `before` and messages the subscribers
/// received, as totals and as rates over their windows, with the latencies.
async fn count_flow(
    report: &mut Report,
    server: &Server,
    before: f64,
    stats: &Stats,
    capture_seconds: f64,
    deliver_seconds: f64,
) {
    report.changes_captured = (captured(server).await - before) as u64;
    report.captured_per_s = report.changes_captured as f64 / capture_seconds;
    report.messages_delivered = stats.received.load(Ordering::Relaxed);
    report.delivered_per_s = report.messages_delivered as f64 / deliver_seconds;
    report.latency = latency_of(stats);
}

/// Many subscribers, each watching one order, with a steady stream of commits.
async fn latency(args: &Args, server: &Server, pool: &PgPool) -> Result<Report, String> {
    let visible = data::bench_orders(pool).await?;
    let tokens = tokens(server, &USERS[..args.users]).await?;
    let stats = Stats::new(1, false);
    let watch = |i: usize, user: &'static str| {
        let list = &visible[user];
        list[(i / USERS.len()) % list.len()]
    };
    let subscribers = open_subscribers(server, &tokens, watch, args.subscribers, &stats).await?;
    let all: Vec<Uuid> = visible["admin@sleek.test"].clone();
    let before = captured(server).await;
    let window = Window::begin(server.pid());
    let start = Instant::now();
    let written = data::write_at_rate(pool, all, args.rate, args.duration).await;
    settle(&stats, Duration::from_secs(1), Duration::from_secs(30)).await;
    let seconds = start.elapsed().as_secs_f64();
    let mut report = Report {
        scenario: "latency".into(),
        subscribers: args.subscribers,
        users: args.users,
        target_rate_per_s: args.rate,
        seconds,
        changes_written: written,
        ..Report::default()
    };
    finish(&mut report, &window);
    let seconds = args.duration as f64;
    count_flow(&mut report, server, before, &stats, seconds, seconds).await;
    report.checked = format!(
        "authorization on: {} users, each subscriber filtered to one order it may see",
        args.users
    );
    subscribers.into_iter().for_each(Subscriber::close);
    Ok(report)
}

/// Every subscriber watches the same hot order.
async fn fanout(args: &Args, server: &Server, pool: &PgPool) -> Result<Report, String> {
    let visible = data::bench_orders(pool).await?;
    // the first bench order of buyer@ at Dhaka: seen by buyer@, factory@ and admin@
    let hot = *visible["buyer@sleek.test"]
        .iter()
        .find(|id| visible["factory@sleek.test"].contains(id))
        .ok_or("no bench order shared by buyer@ and factory@")?;
    let users = ["buyer@sleek.test", "factory@sleek.test", "admin@sleek.test"];
    let tokens = tokens(server, &users).await?;
    let stats = Stats::new(50, false);
    let subscribers =
        open_subscribers(server, &tokens, |_, _| hot, args.subscribers, &stats).await?;
    let before = captured(server).await;
    let window = Window::begin(server.pid());
    let start = Instant::now();
    let written = data::write_at_rate(pool, vec![hot], args.rate, args.duration).await;
    settle(&stats, Duration::from_secs(1), Duration::from_secs(60)).await;
    let seconds = start.elapsed().as_secs_f64();
    let mut report = Report {
        scenario: "fanout".into(),
        subscribers: args.subscribers,
        users: users.len(),
        target_rate_per_s: args.rate,
        seconds,
        changes_written: written,
        ..Report::default()
    };
    finish(&mut report, &window);
    count_flow(&mut report, server, before, &stats, seconds, seconds).await;
    let expected = written * args.subscribers as u64;
    report.checked = format!(
        "{} of {expected} expected deliveries arrived",
        report.messages_delivered
    );
    subscribers.into_iter().for_each(Subscriber::close);
    Ok(report)
}

/// A bulk write of many changes in one transaction against many
/// subscriptions: how fast they are captured, matched and delivered.
async fn capture(args: &Args, server: &Server, pool: &PgPool) -> Result<Report, String> {
    let visible = data::bench_orders(pool).await?;
    let tokens = tokens(server, &USERS[..args.users]).await?;
    let stats = Stats::new(100, false);
    let watch = |i: usize, user: &'static str| {
        let list = &visible[user];
        list[(i / USERS.len()) % list.len()]
    };
    let subscribers = open_subscribers(server, &tokens, watch, args.subscribers, &stats).await?;
    let rounds = (args.changes / data::BENCH_ORDERS as u64).max(1);
    let before = captured(server).await;
    let window = Window::begin(server.pid());
    let sql = format!(
        "do $$ begin for i in 1..{rounds} loop \
           update orders set notes = 'bulk ' || i where product like 'bench order %'; \
         end loop; end $$"
    );
    let write_start = Instant::now();
    sqlx::query(&sql)
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    let committed = Instant::now();
    let total = rounds * data::BENCH_ORDERS as u64;
    while captured(server).await - before < total as f64 {
        if committed.elapsed() > Duration::from_secs(300) {
            return Err("the server did not capture the bulk write within 5 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let capture_seconds = committed.elapsed().as_secs_f64();
    settle(&stats, Duration::from_secs(1), Duration::from_secs(120)).await;
    let deliver_seconds = committed.elapsed().as_secs_f64();
    let mut report = Report {
        scenario: "capture".into(),
        subscribers: args.subscribers,
        users: args.users,
        seconds: capture_seconds,
        changes_written: total,
        ..Report::default()
    };
    finish(&mut report, &window);
    count_flow(
        &mut report,
        server,
        before,
        &stats,
        capture_seconds,
        deliver_seconds,
    )
    .await;
    report.checked = format!(
        "one transaction of {total} changes written in {:.1} s; captured and matched against {} subscriptions {:.1} s after commit",
        (committed - write_start).as_secs_f64(),
        args.subscribers,
        capture_seconds
    );
    subscribers.into_iter().for_each(Subscriber::close);
    Ok(report)
}

/// Many open, joined, quiet sockets: server memory per connection.
async fn idle(args: &Args, server: &Server, pool: &PgPool) -> Result<Report, String> {
    let visible = data::bench_orders(pool).await?;
    let tokens = tokens(server, &USERS[..args.users]).await?;
    let stats = Stats::new(1, false);
    let baseline = crate::process::usage(server.pid());
    let window = Window::begin(server.pid());
    let start = Instant::now();
    let watch = |i: usize, user: &'static str| {
        let list = &visible[user];
        list[(i / USERS.len()) % list.len()]
    };
    let subscribers = open_subscribers(server, &tokens, watch, args.subscribers, &stats).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let connections = server
        .metric("threadline_realtime_connections")
        .await
        .unwrap_or(0.0);
    let loaded = crate::process::usage(server.pid());
    let mut report = Report {
        scenario: "idle".into(),
        subscribers: args.subscribers,
        users: args.users,
        seconds: start.elapsed().as_secs_f64(),
        ..Report::default()
    };
    finish(&mut report, &window);
    if let (Some(before), Some(after)) = (baseline, loaded) {
        report.bytes_per_idle_connection = Some(
            (after.rss_bytes.saturating_sub(before.rss_bytes)) as f64 / args.subscribers as f64,
        );
    }
    report.checked = format!("{connections} connections open and joined at the server");
    subscribers.into_iter().for_each(Subscriber::close);
    Ok(report)
}

/// One client falls far behind, then resumes from its cursor.
async fn resume(args: &Args, server: &Server, pool: &PgPool) -> Result<Report, String> {
    let visible = data::bench_orders(pool).await?;
    let first_order = visible["admin@sleek.test"][0];
    let token = data::token(&server.base, "admin@sleek.test").await?;
    let url = server.ws_url();
    let all_orders =
        serde_json::json!({ "event": "UPDATE", "schema": "public", "table": "orders" });
    let stats = Stats::new(1, true);
    let first = Subscriber::open(
        &url,
        &token,
        "realtime:resume",
        all_orders.clone(),
        None,
        stats.clone(),
    )
    .await?;
    sqlx::query("update orders set notes = 'before' where id = $1")
        .bind(first_order)
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.received.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cursor = stats
        .kept
        .lock()
        .ok()
        .and_then(|kept| kept.first().cloned())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|frame| frame[4]["cursor"].as_str().map(str::to_string))
        .ok_or("the first change did not arrive")?;
    first.close();

    // while the client is away: `rounds` updates of every bench order
    let rounds = (args.changes / data::BENCH_ORDERS as u64).max(1);
    let behind = rounds * data::BENCH_ORDERS as u64;
    let write_start = Instant::now();
    for round in 1..=rounds {
        sqlx::query("update orders set notes = $1 where product like 'bench order %'")
            .bind(round.to_string())
            .execute(pool)
            .await
            .map_err(|e| e.to_string())?;
    }
    let written_seconds = write_start.elapsed().as_secs_f64();

    let caught_up = Stats::new(1, true);
    let window = Window::begin(server.pid());
    let start = Instant::now();
    let second = Subscriber::open(
        &url,
        &token,
        "realtime:resume",
        all_orders,
        Some(&cursor),
        caught_up.clone(),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while caught_up.received.load(Ordering::Relaxed) < behind && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    second.close();
    let kept = caught_up.kept.lock().map(|k| k.clone()).unwrap_or_default();
    // exactly one change per (order, round), with strictly increasing cursors
    let cursor_of = |text: &str| -> Option<(u64, u32)> {
        let position = text.rsplit_once(':').map_or(text, |(_, p)| p);
        let (lsn, index) = position.split_once('/')?;
        Some((u64::from_str_radix(lsn, 16).ok()?, index.parse().ok()?))
    };
    let mut seen = std::collections::HashSet::new();
    let mut previous = None;
    let mut in_order = true;
    for text in &kept {
        let frame: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let record = &frame[4]["data"]["record"];
        let key = (
            record["id"].as_str().unwrap_or_default().to_string(),
            record["notes"].as_str().unwrap_or_default().to_string(),
        );
        let cursor = frame[4]["cursor"].as_str().and_then(cursor_of);
        if cursor.is_none() || cursor <= previous || !seen.insert(key) {
            in_order = false;
            break;
        }
        previous = cursor;
    }
    let mut report = Report {
        scenario: "resume".into(),
        subscribers: 1,
        users: 1,
        seconds,
        changes_written: behind,
        messages_delivered: kept.len() as u64,
        delivered_per_s: kept.len() as f64 / seconds,
        ..Report::default()
    };
    finish(&mut report, &window);
    report.checked = if in_order && kept.len() as u64 == behind {
        format!(
            "{behind} missed changes (written in {written_seconds:.1} s) replayed exactly once each, in commit order, no gap"
        )
    } else {
        format!(
            "FAILED: got {} of {behind} changes, each once and in order: {in_order}",
            kept.len()
        )
    };
    Ok(report)
}

/// One user holds every connection, channel and binding the server's caps
/// allow, each binding listening to every table, while a steady stream of
/// commits (half of them on that user's own orders) goes on: the other
/// users' commit-to-receive time, to set beside the latency scenario's.
async fn abuse(args: &Args, server: &Server, pool: &PgPool) -> Result<Report, String> {
    let visible = data::bench_orders(pool).await?;
    let abuser = "buyer@sleek.test";
    let others = [
        "buyer2@sleek.test",
        "factory@sleek.test",
        "factory2@sleek.test",
        "admin@sleek.test",
    ];
    let tokens = tokens(server, &others).await?;
    let stats = Stats::new(1, false);
    let watch = |i: usize, user: &'static str| {
        let list = &visible[user];
        list[(i / others.len()) % list.len()]
    };
    let subscribers = open_subscribers(server, &tokens, watch, args.subscribers, &stats).await?;

    // the abuser: connections, channels of 17 bindings each, as many as it can get
    let token = data::token(&server.base, abuser).await?;
    let everything: Vec<serde_json::Value> = [
        "orders",
        "production_stages",
        "order_updates",
        "messages",
        "notifications",
    ]
    .iter()
    .cycle()
    .take(17)
    .map(|table| serde_json::json!({ "event": "*", "schema": "public", "table": table }))
    .collect();
    let abuse_stats = Stats::new(1000, false);
    let join_start = Instant::now();
    let mut held = Vec::new();
    let (mut connections, mut channels, mut refused) = (0, 0, 0);
    for c in 0..40 {
        let plans: Vec<(String, serde_json::Value)> = (0..100)
            .map(|n| {
                (
                    format!("realtime:abuse-{c}-{n}"),
                    serde_json::Value::Array(everything.clone()),
                )
            })
            .collect();
        match Subscriber::open_many(&server.ws_url(), &token, plans, abuse_stats.clone()).await {
            Ok((subscriber, joined, refusals)) => {
                connections += usize::from(joined > 0);
                channels += joined;
                refused += refusals;
                held.push(subscriber);
            }
            Err(_) => refused += 100,
        }
    }
    let join_seconds = join_start.elapsed().as_secs_f64();

    // writes over every bench order: half of them the abuser's own
    let mut orders: Vec<Uuid> = visible[abuser].clone();
    let theirs: Vec<Uuid> = visible["admin@sleek.test"]
        .iter()
        .filter(|id| !visible[abuser].contains(id))
        .copied()
        .collect();
    orders.extend(theirs.iter().take(visible[abuser].len()));
    let before = captured(server).await;
    let window = Window::begin(server.pid());
    let start = Instant::now();
    let written = data::write_at_rate(pool, orders, args.rate, args.duration).await;
    settle(&stats, Duration::from_secs(1), Duration::from_secs(30)).await;
    let seconds = start.elapsed().as_secs_f64();
    let mut report = Report {
        scenario: "abuse".into(),
        subscribers: args.subscribers,
        users: others.len() + 1,
        target_rate_per_s: args.rate,
        seconds,
        changes_written: written,
        ..Report::default()
    };
    finish(&mut report, &window);
    let seconds = args.duration as f64;
    count_flow(&mut report, server, before, &stats, seconds, seconds).await;
    report.checked = format!(
        "{abuser} held {connections} connections and {channels} channels of 17 bindings (joined in {join_seconds:.1} s; {refused} joins refused by the caps) and received {} messages; latency is of the {} other users' subscribers",
        abuse_stats.received.load(Ordering::Relaxed),
        others.len()
    );
    held.into_iter().for_each(Subscriber::close);
    subscribers.into_iter().for_each(Subscriber::close);
    Ok(report)
}

/// The same steady stream of commits with 1, 2 and 4 app servers capturing
/// (each its own slots): the CPU PostgreSQL spends (a walsender decoding the
/// whole WAL for each server, and each server's log slot advancing), and the
/// app servers' own.
async fn servers(args: &Args, first: &Server, pool: &PgPool) -> Result<Report, String> {
    let visible = data::bench_orders(pool).await?;
    let orders: Vec<Uuid> = visible["admin@sleek.test"].clone();
    let mut costs = Vec::new();
    let mut extra: Vec<Server> = Vec::new();
    for count in [1usize, 2, 4] {
        while extra.len() + 1 < count {
            let n = extra.len() + 1;
            let port = args.port.saturating_add(u16::try_from(n).unwrap_or(0));
            extra.push(Server::start_on(args, port, &format!("threadline_loadgen_{n}")).await?);
        }
        // let every capture settle before measuring
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = crate::process::postgres_cpu(pool).await;
        let pids: Vec<Option<u32>> = std::iter::once(first.pid())
            .chain(extra.iter().map(Server::pid))
            .collect();
        let app_before: Vec<f64> = pids
            .iter()
            .map(|pid| crate::process::usage(*pid).map_or(0.0, |u| u.cpu_seconds))
            .collect();
        let start = Instant::now();
        let written = data::write_at_rate(pool, orders.clone(), args.rate, args.duration).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seconds = start.elapsed().as_secs_f64();
        let after = crate::process::postgres_cpu(pool).await;
        let postgres: f64 = after
            .iter()
            .map(|(pid, cpu)| cpu - before.get(pid).copied().unwrap_or(0.0))
            .sum();
        let app: f64 = pids
            .iter()
            .zip(&app_before)
            .map(|(pid, before)| {
                crate::process::usage(*pid).map_or(0.0, |u| u.cpu_seconds) - before
            })
            .sum();
        costs.push(ServerCost {
            servers: count,
            postgres_cpu_percent: postgres / seconds * 100.0,
            app_servers_cpu_percent: app / seconds * 100.0,
            changes_per_s: written as f64 / args.duration.max(1) as f64,
        });
    }
    for server in extra {
        server.stop().await;
    }
    drop_generator_slots(pool).await;
    let per_server = match (costs.first(), costs.last()) {
        (Some(one), Some(four)) if four.servers > one.servers => {
            (four.postgres_cpu_percent - one.postgres_cpu_percent)
                / (four.servers - one.servers) as f64
        }
        _ => 0.0,
    };
    let report = Report {
        scenario: "servers".into(),
        target_rate_per_s: args.rate,
        seconds: args.duration as f64,
        checked: format!(
            "each extra app server costs PostgreSQL about {per_server:.1}% of a core at {} changes/s",
            args.rate
        ),
        server_costs: costs,
        ..Report::default()
    };
    Ok(report)
}
