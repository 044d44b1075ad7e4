//! The server process (started here, or already running) and CPU / memory
//! readings of it and of this generator from /proc.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub struct Server {
    pub base: String,
    child: Option<Child>,
}

impl Server {
    pub async fn start(args: &crate::args::Args) -> Result<Server, String> {
        Self::start_on(args, args.port, "threadline_loadgen").await
    }

    /// A server of the generator's on `port`, streaming with slot `slot`.
    pub async fn start_on(
        args: &crate::args::Args,
        port: u16,
        slot: &str,
    ) -> Result<Server, String> {
        if let Some(url) = &args.url {
            let server = Server {
                base: url.trim_end_matches('/').to_string(),
                child: None,
            };
            server.wait_healthy().await?;
            return Ok(server);
        }
        let mut command = Command::new(&args.server);
        if args.scenario != crate::args::Scenario::Abuse {
            // one generator speaks for a few users with thousands of
            // sockets: lift the per-user caps (the abuse scenario keeps them)
            command
                .env("THREADLINE_MAX_CONNECTIONS_PER_USER", "1000000")
                .env("THREADLINE_MAX_CHANNELS_PER_USER", "1000000")
                .env("THREADLINE_MAX_BINDINGS_PER_USER", "1000000");
        }
        if args.scenario == crate::args::Scenario::Resume {
            // it keeps 100,000 whole-row updates (old and new rows): past
            // the default 256 MB budget they would be a reset. The others
            // keep the default budget, so their memory is what a server's is.
            command.env("THREADLINE_RETENTION_MB", "2048");
        }
        let child = command
            .arg("serve")
            .env("DATABASE_URL", &args.database_url)
            .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
            .env("THREADLINE_REALTIME_SLOT", slot)
            .env("THREADLINE_RETENTION_CHANGES", "250000")
            .env("THREADLINE_QUEUE_SIZE", "8192")
            .env("THREADLINE_DEMO", "1")
            .env("THREADLINE_METRICS_TOKEN", crate::data::METRICS_TOKEN)
            // every socket of the generator comes from one address
            .env("THREADLINE_MAX_CONNECTIONS_PER_ADDRESS", "1000000")
            .env("THREADLINE_SIGN_INS_PER_MINUTE", "100000")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} (build it with ./scripts/build release)",
                    args.server
                )
            })?;
        let server = Server {
            base: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        };
        server.wait_healthy().await?;
        Ok(server)
    }

    async fn wait_healthy(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if crate::data::http(&self.base, "GET", "/healthz", None)
                .await
                .is_ok_and(|(status, _)| status == 200)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "the server at {} did not become healthy",
            self.base
        ))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn ws_url(&self) -> String {
        format!(
            "{}/realtime/v1/websocket?vsn=2.0.0",
            self.base.replacen("http", "ws", 1)
        )
    }

    pub async fn stop(mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Some(pid) = child.id() {
                // SIGTERM for a clean stop (the slot position is recorded)
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        }
    }

    /// A counter or gauge from /metrics.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = crate::data::http(&self.base, "GET", "/metrics", None)
            .await
            .ok()?;
        body.lines()
            .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// CPU time (seconds) and resident memory (bytes, now and at its peak) of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    pub rss_bytes: u64,
}

pub fn usage(pid: Option<u32>) -> Option<Usage> {
    let dir = pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"));
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // fields after the command name, which may contain spaces
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(Usage {
        cpu_seconds: ticks / 100.0,
        rss_bytes: field("VmRSS:")? * 1024,
        peak_rss_bytes: field("VmHWM:").unwrap_or(0) * 1024,
    })
}

/// CPU seconds used so far by PostgreSQL's processes of the cluster `pool`
/// is on (its backends, walsenders and background processes), by pid.
pub async fn postgres_cpu(pool: &sqlx::PgPool) -> std::collections::HashMap<u32, f64> {
    let pids: Vec<i32> = sqlx::query_scalar("select pid from pg_stat_activity")
        .fetch_all(pool)
        .await
        .unwrap_or_default();
    pids.into_iter()
        .filter_map(|pid| u32::try_from(pid).ok())
        .filter_map(|pid| Some((pid, usage(Some(pid))?.cpu_seconds)))
        .collect()
}

/// Usage over a window: CPU as percent of one core.
pub struct Window {
    pid: Option<u32>,
    start: Instant,
    server: Option<Usage>,
    generator: Option<Usage>,
}

impl Window {
    pub fn begin(pid: Option<u32>) -> Window {
        Window {
            pid,
            start: Instant::now(),
            server: pid.and_then(|p| usage(Some(p))),
            generator: usage(None),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// (server CPU %, server RSS, generator CPU %, generator RSS)
    pub fn end(&self) -> (Option<f64>, Option<u64>, Option<f64>, Option<u64>) {
        let elapsed = self.start.elapsed().as_secs_f64().max(1e-6);
        let server_now = self.pid.and_then(|p| usage(Some(p)));
        let generator_now = usage(None);
        let cpu = |before: Option<Usage>, now: Option<Usage>| {
            Some((now?.cpu_seconds - before?.cpu_seconds) / elapsed * 100.0)
        };
        (
            cpu(self.server, server_now),
            server_now.map(|u| u.rss_bytes),
            cpu(self.generator, generator_now),
            generator_now.map(|u| u.rss_bytes),
        )
    }
}
