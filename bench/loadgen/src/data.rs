//! The database side: bench orders, the outside writer, and a tiny HTTP
//! client for tokens and metrics.

use std::collections::HashMap;

use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

pub const BENCH_ORDERS: i32 = 1000;

/// The demo users, in the order they are spread over.
pub const USERS: [&str; 5] = [
    "buyer@sleek.test",
    "factory@sleek.test",
    "buyer2@sleek.test",
    "factory2@sleek.test",
    "admin@sleek.test",
];

/// One HTTP/1.1 request, closed after the answer: (status, body).
/// The metrics token the generator starts its server with.
pub const METRICS_TOKEN: &str = "loadgen-metrics";

pub async fn http(
    base: &str,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> Result<(u16, String), String> {
    let host = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    let body = json.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: Bearer {METRICS_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed HTTP response")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub async fn token(base: &str, email: &str) -> Result<String, String> {
    let body = serde_json::json!({ "email": email, "password": "threadline" }).to_string();
    let (status, reply) = http(base, "POST", "/api/auth/token", Some(&body)).await?;
    if status != 200 {
        return Err(format!("token for {email}: HTTP {status}: {reply}"));
    }
    let value: serde_json::Value = serde_json::from_str(&reply).map_err(|e| e.to_string())?;
    value["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "no access_token in reply".into())
}

/// Makes sure the bench orders exist (confirmed, spread over both buyers and
/// both factories) and returns, per demo user, the bench orders they may see.
pub async fn bench_orders(pool: &PgPool) -> Result<HashMap<&'static str, Vec<Uuid>>, String> {
    let sql = format!(
        "insert into orders (buyer_id, product, quantity, due_date) \
         select (select id from users where email = case when i % 2 = 0 then 'buyer@sleek.test' else 'buyer2@sleek.test' end), \
                'bench order ' || i, 100, current_date + 30 \
         from generate_series(1, {BENCH_ORDERS}) as i \
         where not exists (select 1 from orders where product like 'bench order %')"
    );
    sqlx::query(&sql)
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(
        "update orders set status = 'confirmed', factory_id = (select id from factories where name = \
           case when number % 3 = 0 then 'Porto Stitch Works' else 'Dhaka Knitwear Ltd' end) \
         where product like 'bench order %' and status = 'pending'",
    )
    .execute(pool)
    .await
    .map_err(|e| e.to_string())?;
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "select o.id, b.email, f.name from orders o join users b on b.id = o.buyer_id \
         join factories f on f.id = o.factory_id where o.product like 'bench order %' order by o.number",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    let mut visible: HashMap<&'static str, Vec<Uuid>> = HashMap::new();
    for (id, buyer, factory) in rows {
        for user in USERS {
            let sees = match user {
                "admin@sleek.test" => true,
                "factory@sleek.test" => factory == "Dhaka Knitwear Ltd",
                "factory2@sleek.test" => factory == "Porto Stitch Works",
                buyer_email => buyer_email == buyer,
            };
            if sees {
                visible.entry(user).or_default().push(id);
            }
        }
    }
    Ok(visible)
}

/// Commits single-row updates at `rate` per second for `seconds`, spread
/// over `writers` connections; returns how many it committed.
pub async fn write_at_rate(pool: &PgPool, orders: Vec<Uuid>, rate: u64, seconds: u64) -> u64 {
    let writers = 8.min(rate.max(1)) as usize;
    let per_writer = (rate as f64 / writers as f64).max(0.1);
    let period = std::time::Duration::from_secs_f64(1.0 / per_writer);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let orders = std::sync::Arc::new(orders);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let pool = pool.clone();
        let orders = orders.clone();
        // the writers take turns (writer w starts w/writers of a period in),
        // so the commits come as a steady stream, not in bursts of `writers`
        let offset = period.mul_f64(w as f64 / writers as f64);
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(start + offset, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut written = 0u64;
            let mut k = w;
            while tokio::time::Instant::now() < deadline {
                ticker.tick().await;
                let id = orders[k % orders.len()];
                k += writers * 7 + 1;
                if sqlx::query("update orders set notes = $2 where id = $1")
                    .bind(id)
                    .bind(format!("load {written}"))
                    .execute(&pool)
                    .await
                    .is_ok()
                {
                    written += 1;
                }
            }
            written
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap_or(0);
    }
    total
}
