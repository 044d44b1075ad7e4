use std::process::ExitCode;
use std::sync::Arc;

use threadline::auth::server::AuthKeys;
use threadline::realtime::identity::AppIdentity;
use threadline::realtime::rules::AppRules;
use threadline::server::embedded_postgres::EmbeddedPostgres;
use threadline::server::settings::Settings;
use threadline::server::{AppState, app, database, demo};
use threadline_realtime::engine::{Ports, Realtime};

// Rendering a page allocates and frees many small strings and views;
// glibc's allocator spent a third of the server's time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: threadline [serve]      run the web server
       threadline db start     start the embedded PostgreSQL and print its DATABASE_URL
       threadline db fresh NAME  start the embedded PostgreSQL, (re)create database NAME, print its URL
       threadline db stop      stop the embedded PostgreSQL";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("threadline: {e}");
            return ExitCode::from(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] | ["serve"] => serve(settings).await,
        ["db", "start"] => db_start(&settings).await,
        ["db", "fresh", name] => db_fresh(&settings, name).await,
        ["db", "stop"] => db_stop(&settings).await,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("threadline: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> Result<(), String> {
    let db = database::open(&settings.server)
        .await
        .map_err(|e| e.to_string())?;
    if db.created || settings.server.demo {
        let loaded = demo::seed(&db.pool)
            .await
            .map_err(|e| format!("loading demo data failed: {e}"))?;
        if loaded {
            tracing::info!("loaded demo data: sign in as buyer@sleek.test / threadline");
        }
    }
    let auth = AuthKeys::load(&db.pool)
        .await
        .map_err(|e| format!("loading the token signing key failed: {e}"))?;
    let auth = Arc::new(auth);
    let ports = Ports {
        identity: Arc::new(AppIdentity {
            pool: db.pool.clone(),
            auth: auth.clone(),
        }),
        rules: Arc::new(AppRules),
    };
    let realtime = Realtime::start(db.pool.clone(), &db.url, settings.realtime.clone(), ports)
        .await
        .map_err(|e| format!("starting realtime failed: {e}"))?;
    tracing::info!(
        slot = realtime.slot().unwrap_or_default(),
        "realtime engine started"
    );
    let addr = settings.server.site_addr;
    let metrics_addr = settings.server.metrics_addr.trim().to_string();
    let state = AppState::new(settings, db.pool.clone(), auth, realtime.clone());
    if !metrics_addr.is_empty() {
        let listener = tokio::net::TcpListener::bind(&metrics_addr)
            .await
            .map_err(|e| format!("cannot listen for metrics on {metrics_addr}: {e}"))?;
        tracing::info!("metrics at http://{metrics_addr}/metrics");
        let metrics = threadline::server::metrics_app(realtime.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, metrics).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr}: {e} (set LEPTOS_SITE_ADDR to another address)")
    })?;
    // A page streams out in several writes: without TCP_NODELAY, Nagle's
    // algorithm holds the last one until the client's delayed ACK, 40 ms.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
    });
    tracing::info!("Threadline is listening on http://{addr}");
    let served = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| format!("server error: {e}"));
    realtime.shutdown().await;
    db.pool.close().await;
    if let (Some(embedded), true) = (&db.embedded, db.started_embedded)
        && let Err(e) = embedded.stop().await
    {
        tracing::error!("stopping the embedded PostgreSQL failed: {e}");
    }
    served
}

async fn db_start(settings: &Settings) -> Result<(), String> {
    let embedded = EmbeddedPostgres::new(
        &settings.server.data_dir,
        settings.server.embedded_postgres_port,
    )
    .map_err(|e| e.to_string())?;
    let (url, _) = embedded.ensure_running().await.map_err(|e| e.to_string())?;
    println!("{url}");
    Ok(())
}

/// A new, empty database in the embedded cluster, for test runs.
async fn db_fresh(settings: &Settings, name: &str) -> Result<(), String> {
    let embedded = EmbeddedPostgres::new(
        &settings.server.data_dir,
        settings.server.embedded_postgres_port,
    )
    .map_err(|e| e.to_string())?;
    embedded.ensure_running().await.map_err(|e| e.to_string())?;
    embedded
        .drop_database(name)
        .await
        .map_err(|e| e.to_string())?;
    embedded
        .ensure_database(name)
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", embedded.url(name).map_err(|e| e.to_string())?);
    Ok(())
}

async fn db_stop(settings: &Settings) -> Result<(), String> {
    let embedded = EmbeddedPostgres::new(
        &settings.server.data_dir,
        settings.server.embedded_postgres_port,
    )
    .map_err(|e| e.to_string())?;
    embedded.stop().await.map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
