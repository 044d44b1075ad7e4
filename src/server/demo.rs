//! Demo data for trying the app: loaded by the embedded default on its first
//! start and by `THREADLINE_DEMO=1` on any database, never otherwise.

use sqlx::{Acquire, PgPool};

pub const DEMO_PASSWORD: &str = "threadline";

/// Loads the demo data unless it is already there. Returns whether it loaded.
pub async fn seed(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let present: bool =
        sqlx::query_scalar("select exists (select 1 from users where email = 'buyer@sleek.test')")
            .fetch_one(pool)
            .await?;
    if present {
        return Ok(false);
    }
    let hash = crate::auth::server::hash_password(DEMO_PASSWORD.to_string())
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("hashing the demo password failed: {e}")))?;
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query("select set_config('threadline.demo_hash', $1, true)")
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(include_str!("demo.sql"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}
