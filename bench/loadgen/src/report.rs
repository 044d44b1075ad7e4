//! The run's figures, as a table and as JSON.

use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub subscribers: usize,
    pub users: usize,
    pub target_rate_per_s: u64,
    pub seconds: f64,
    pub changes_written: u64,
    pub changes_captured: u64,
    pub captured_per_s: f64,
    pub messages_delivered: u64,
    pub delivered_per_s: f64,
    pub latency: Option<Latency>,
    pub server_cpu_percent: Option<f64>,
    pub server_rss_mb: Option<f64>,
    /// The server's largest resident memory since it started.
    pub server_peak_rss_mb: Option<f64>,
    pub bytes_per_idle_connection: Option<f64>,
    pub generator_cpu_percent: Option<f64>,
    pub generator_rss_mb: Option<f64>,
    /// What was checked, e.g. "100000 changes in order, no gap".
    pub checked: String,
    /// The servers scenario: PostgreSQL's and the app servers' CPU by number of servers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_costs: Vec<ServerCost>,
}

/// CPU, as percent of one core, with `servers` app servers capturing.
#[derive(Debug, Default, Serialize)]
pub struct ServerCost {
    pub servers: usize,
    pub postgres_cpu_percent: f64,
    pub app_servers_cpu_percent: f64,
    pub changes_per_s: f64,
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

impl Report {
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn table(&self) -> String {
        let mut rows = vec![
            ("scenario", self.scenario.clone()),
            (
                "subscribers / users",
                format!("{} / {}", self.subscribers, self.users),
            ),
            ("seconds measured", format!("{:.1}", self.seconds)),
            ("changes written", self.changes_written.to_string()),
            (
                "changes captured",
                format!("{} ({:.0}/s)", self.changes_captured, self.captured_per_s),
            ),
            (
                "messages delivered",
                format!(
                    "{} ({:.0}/s)",
                    self.messages_delivered, self.delivered_per_s
                ),
            ),
        ];
        if self.target_rate_per_s > 0 {
            rows.insert(2, ("target rate", format!("{}/s", self.target_rate_per_s)));
        }
        if let Some(l) = &self.latency {
            rows.push((
                "commit→receive latency",
                format!(
                    "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.samples
                ),
            ));
        }
        rows.push((
            "server CPU / RSS",
            format!(
                "{}% / {} MB",
                opt(self.server_cpu_percent, 0),
                opt(self.server_rss_mb, 1)
            ),
        ));
        if let Some(bytes) = self.bytes_per_idle_connection {
            rows.push(("server bytes per idle connection", format!("{bytes:.0}")));
        }
        rows.push((
            "generator CPU / RSS",
            format!(
                "{}% / {} MB",
                opt(self.generator_cpu_percent, 0),
                opt(self.generator_rss_mb, 1)
            ),
        ));
        if !self.checked.is_empty() {
            rows.push(("checked", self.checked.clone()));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
