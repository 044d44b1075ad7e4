//! Opening the database: the embedded default or `DATABASE_URL`, checked
//! for logical replication and migrated.

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::embedded_postgres::{EmbeddedError, EmbeddedPostgres};
use super::settings::ServerSettings;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("embedded PostgreSQL: {0}")]
    Embedded(#[from] EmbeddedError),
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect { target: String, source: sqlx::Error },
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(sqlx::Error),
    #[error(
        "PostgreSQL at {target} has wal_level={wal_level}, but realtime needs logical decoding: \
         run `ALTER SYSTEM SET wal_level = logical;` and restart PostgreSQL"
    )]
    NotLogical { target: String, wal_level: String },
    #[error(
        "the PostgreSQL role {role} may not use logical replication: \
         run `ALTER ROLE {role} WITH REPLICATION;` (or connect as a role that has it)"
    )]
    NoReplicationRole { role: String },
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

pub struct Database {
    pub pool: PgPool,
    pub url: String,
    /// Set when we run the embedded cluster; stopped on shutdown if we started it.
    pub embedded: Option<EmbeddedPostgres>,
    pub started_embedded: bool,
    /// True on the embedded default's first start (demo data goes in).
    pub created: bool,
}

pub async fn open(settings: &ServerSettings) -> Result<Database, DatabaseError> {
    let (url, embedded, started_embedded, created) = match &settings.database_url {
        Some(url) => (url.clone(), None, false, false),
        None => {
            let embedded =
                EmbeddedPostgres::new(&settings.data_dir, settings.embedded_postgres_port)?;
            let was_running = embedded.is_running().await;
            let (url, created) = embedded.ensure_running().await?;
            (url, Some(embedded), !was_running, created)
        }
    };
    let options: PgConnectOptions = url.parse().map_err(DatabaseError::BadUrl)?;
    let target = format!("{}:{}", options.get_host(), options.get_port());
    let pool = PgPoolOptions::new()
        .max_connections(settings.database_max_connections)
        // A connection in steady use is known to work: testing it before
        // each query cost a round trip to PostgreSQL per query (about 6% of
        // the server's time rendering /orders). One that sat idle may
        // have lost its server (restarted, or the network dropped), so it is
        // tested first; one that fails is replaced without the caller seeing.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= TEST_AFTER_IDLE {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(|source| DatabaseError::Connect {
            target: target.clone(),
            source,
        })?;
    check_logical_replication(&pool, &target).await?;
    MIGRATOR.run(&pool).await?;
    Ok(Database {
        pool,
        url,
        embedded,
        started_embedded,
        created,
    })
}

/// How long a pooled connection may sit idle before it is tested on its way
/// out. Far below the time PostgreSQL takes to restart, far above the gaps
/// between queries under load.
const TEST_AFTER_IDLE: std::time::Duration = std::time::Duration::from_millis(250);

/// Realtime streams changes by logical decoding; say plainly at start if the
/// server cannot do it, rather than failing later.
pub async fn check_logical_replication(pool: &PgPool, target: &str) -> Result<(), DatabaseError> {
    let (wal_level, role, can_replicate): (String, String, bool) = sqlx::query_as(
        "select current_setting('wal_level'), current_user::text, \
                (select rolreplication or rolsuper from pg_roles where rolname = current_user)",
    )
    .fetch_one(pool)
    .await?;
    if wal_level != "logical" {
        return Err(DatabaseError::NotLogical {
            target: target.to_string(),
            wal_level,
        });
    }
    if !can_replicate {
        return Err(DatabaseError::NoReplicationRole { role });
    }
    Ok(())
}
