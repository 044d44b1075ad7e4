pub const USAGE: &str =
    "usage: threadline-loadgen --scenario <latency|fanout|capture|idle|resume|abuse|servers> --database-url <url>
  [--server <path>]      server binary to start (default target/release/threadline)
  [--url <http://…>]     target a running server instead (no CPU/RSS figures)
  [--port <n>]           port for the started server (default 3300)
  [--subscribers <n>]    WebSocket subscribers (default per scenario)
  [--users <n>]          demo users to spread them over, 1-5 (default 5)
  [--rate <n>]           changes per second for latency and fanout (default per scenario)
  [--duration <s>]       seconds of writing for latency and fanout (default 20)
  [--changes <n>]        changes for capture and resume (default per scenario)
  [--json <path>]        also write the report as JSON";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Latency,
    Fanout,
    Capture,
    Idle,
    Resume,
    /// One user takes all the caps allow; the others' latency.
    Abuse,
    /// What each extra app server costs PostgreSQL.
    Servers,
}

#[derive(Clone, Debug)]
pub struct Args {
    pub scenario: Scenario,
    pub database_url: String,
    pub server: String,
    pub url: Option<String>,
    pub port: u16,
    pub subscribers: usize,
    pub users: usize,
    pub rate: u64,
    pub duration: u64,
    pub changes: u64,
    pub json: Option<String>,
}

impl Args {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut values = std::collections::HashMap::new();
        while let Some(key) = args.next() {
            let name = key
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {key:?}"))?;
            let value = args
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            values.insert(name.to_string(), value);
        }
        let take = |name: &str| values.get(name).cloned();
        let number = |name: &str, default: u64| -> Result<u64, String> {
            take(name).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| format!("--{name} must be a number, not {v:?}"))
            })
        };
        let scenario = match take("scenario").as_deref() {
            Some("latency") => Scenario::Latency,
            Some("fanout") => Scenario::Fanout,
            Some("capture") => Scenario::Capture,
            Some("idle") => Scenario::Idle,
            Some("abuse") => Scenario::Abuse,
            Some("servers") => Scenario::Servers,
            Some("resume") => Scenario::Resume,
            Some(other) => return Err(format!("unknown scenario {other:?}")),
            None => return Err("--scenario is required".into()),
        };
        let (subscribers, rate, changes) = match scenario {
            Scenario::Latency => (1_000, 1_000, 0),
            Scenario::Fanout => (10_000, 25, 0),
            Scenario::Capture => (10_000, 0, 200_000),
            Scenario::Idle => (20_000, 0, 0),
            Scenario::Resume => (1, 0, 100_000),
            Scenario::Abuse => (1_000, 1_000, 0),
            Scenario::Servers => (0, 1_000, 0),
        };
        let known = [
            "scenario",
            "database-url",
            "server",
            "url",
            "port",
            "subscribers",
            "users",
            "rate",
            "duration",
            "changes",
            "json",
        ];
        if let Some(unknown) = values.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("unknown option --{unknown}"));
        }
        let users = number("users", 5)? as usize;
        if !(1..=5).contains(&users) {
            return Err("--users must be 1 to 5 (the demo users)".into());
        }
        Ok(Args {
            scenario,
            database_url: take("database-url")
                .or_else(|| std::env::var("DATABASE_URL").ok())
                .ok_or("--database-url (or DATABASE_URL) is required")?,
            server: take("server").unwrap_or_else(|| "target/release/threadline".into()),
            url: take("url"),
            port: number("port", 3300)? as u16,
            subscribers: number("subscribers", subscribers)? as usize,
            users,
            rate: number("rate", rate)?,
            duration: number("duration", 20)?,
            changes: number("changes", changes)?,
            json: take("json"),
        })
    }
}
