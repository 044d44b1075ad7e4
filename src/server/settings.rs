//! Runtime settings: `Leptos.toml`, then environment variables on top.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use leptos::config::LeptosOptions;
use serde::Deserialize;
pub use threadline_realtime::settings::RealtimeSettings;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub realtime: RealtimeSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ServerSettings {
    pub site_addr: SocketAddr,
    pub site_root: String,
    pub output_name: String,
    pub data_dir: PathBuf,
    pub embedded_postgres_port: u16,
    pub database_max_connections: u32,
    pub session_days: i64,
    pub token_minutes: i64,
    pub secure_cookies: bool,
    /// The site's origin as browsers see it (`https://portal.example.com`),
    /// when it is served behind a proxy; empty: the request's own `Host`.
    pub public_origin: String,
    /// Trust `X-Forwarded-Proto` and `X-Forwarded-For` (set it only behind
    /// a proxy you run, which sets them).
    pub trust_proxy_headers: bool,
    /// Bearer token that `GET /metrics` on the site requires; empty: the
    /// site does not serve metrics (see `metrics_addr`).
    pub metrics_token: String,
    /// A separate listen address for `GET /metrics` (no token needed there);
    /// empty: none.
    pub metrics_addr: String,
    /// Sign-in attempts one client address may make per minute.
    pub sign_ins_per_minute: u32,
    /// Only from the environment: the external database, if any.
    #[serde(skip)]
    pub database_url: Option<String>,
    /// Only from the environment: load demo data into any database.
    #[serde(skip)]
    pub demo: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            site_addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            site_root: "target/site".into(),
            output_name: "threadline".into(),
            data_dir: PathBuf::from(".data"),
            embedded_postgres_port: 54329,
            database_max_connections: 20,
            session_days: 14,
            token_minutes: 60,
            secure_cookies: false,
            public_origin: String::new(),
            trust_proxy_headers: false,
            metrics_token: String::new(),
            metrics_addr: String::new(),
            sign_ins_per_minute: 30,
            database_url: None,
            demo: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("environment variable {name}={value:?} is not valid: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
}

impl Settings {
    /// Reads `THREADLINE_CONFIG` or `./Leptos.toml` (defaults if absent),
    /// then applies environment overrides.
    pub fn load() -> Result<Settings, SettingsError> {
        let explicit = std::env::var_os("THREADLINE_CONFIG").map(PathBuf::from);
        let path = explicit
            .clone()
            .unwrap_or_else(|| PathBuf::from("Leptos.toml"));
        let mut settings = match std::fs::read_to_string(&path) {
            Ok(text) => Settings::parse(&text, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
                Settings::default()
            }
            Err(source) => return Err(SettingsError::Read { path, source }),
        };
        settings.apply_env(|name| std::env::var(name).ok())?;
        Ok(settings)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Settings, SettingsError> {
        toml::from_str(text).map_err(|source| SettingsError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), SettingsError> {
        let s = &mut self.server;
        override_from(&var, "LEPTOS_SITE_ADDR", &mut s.site_addr)?;
        override_from(&var, "LEPTOS_SITE_ROOT", &mut s.site_root)?;
        override_from(&var, "LEPTOS_OUTPUT_NAME", &mut s.output_name)?;
        override_from(&var, "THREADLINE_DATA_DIR", &mut s.data_dir)?;
        override_from(&var, "THREADLINE_PG_PORT", &mut s.embedded_postgres_port)?;
        override_from(
            &var,
            "THREADLINE_DB_MAX_CONNECTIONS",
            &mut s.database_max_connections,
        )?;
        override_from(&var, "THREADLINE_SESSION_DAYS", &mut s.session_days)?;
        override_from(&var, "THREADLINE_TOKEN_MINUTES", &mut s.token_minutes)?;
        override_from(&var, "THREADLINE_SECURE_COOKIES", &mut s.secure_cookies)?;
        override_from(&var, "THREADLINE_PUBLIC_ORIGIN", &mut s.public_origin)?;
        override_from(
            &var,
            "THREADLINE_TRUST_PROXY_HEADERS",
            &mut s.trust_proxy_headers,
        )?;
        override_from(&var, "THREADLINE_METRICS_TOKEN", &mut s.metrics_token)?;
        override_from(&var, "THREADLINE_METRICS_ADDR", &mut s.metrics_addr)?;
        override_from(
            &var,
            "THREADLINE_SIGN_INS_PER_MINUTE",
            &mut s.sign_ins_per_minute,
        )?;
        let r = &mut self.realtime;
        override_from(
            &var,
            "THREADLINE_RETENTION_CHANGES",
            &mut r.retention_changes,
        )?;
        override_from(
            &var,
            "THREADLINE_RETENTION_MINUTES",
            &mut r.retention_minutes,
        )?;
        override_from(&var, "THREADLINE_RETENTION_MB", &mut r.retention_mb)?;
        override_from(&var, "THREADLINE_QUEUE_SIZE", &mut r.queue_size)?;
        override_from(
            &var,
            "THREADLINE_HEARTBEAT_TIMEOUT_SECS",
            &mut r.heartbeat_timeout_secs,
        )?;
        override_from(&var, "THREADLINE_MAX_FRAME_BYTES", &mut r.max_frame_bytes)?;
        override_from(&var, "THREADLINE_MAX_CHANNELS", &mut r.max_channels)?;
        override_from(&var, "THREADLINE_REALTIME_SLOT", &mut r.slot_name)?;
        override_from(
            &var,
            "THREADLINE_STALE_SLOT_MAX_LAG_MB",
            &mut r.stale_slot_max_lag_mb,
        )?;
        for (name, target) in [
            (
                "THREADLINE_MAX_BINDINGS_PER_CHANNEL",
                &mut r.max_bindings_per_channel,
            ),
            (
                "THREADLINE_MAX_CONNECTIONS_PER_USER",
                &mut r.max_connections_per_user,
            ),
            (
                "THREADLINE_MAX_CONNECTIONS_PER_ADDRESS",
                &mut r.max_connections_per_address,
            ),
            (
                "THREADLINE_MAX_CHANNELS_PER_USER",
                &mut r.max_channels_per_user,
            ),
            (
                "THREADLINE_MAX_BINDINGS_PER_USER",
                &mut r.max_bindings_per_user,
            ),
        ] {
            override_from(&var, name, target)?;
        }
        override_from(
            &var,
            "THREADLINE_MESSAGES_PER_SECOND",
            &mut r.messages_per_second,
        )?;
        override_from(&var, "THREADLINE_JOINS_PER_SECOND", &mut r.joins_per_second)?;
        override_from(
            &var,
            "THREADLINE_BROADCASTS_PER_SECOND",
            &mut r.broadcasts_per_second,
        )?;
        override_from(
            &var,
            "THREADLINE_PRESENCE_PER_SECOND",
            &mut r.presence_per_second,
        )?;
        override_from(
            &var,
            "THREADLINE_PING_INTERVAL_SECS",
            &mut r.ping_interval_secs,
        )?;
        r.trust_forwarded_for = self.server.trust_proxy_headers;
        let s = &mut self.server;
        s.database_url = var("DATABASE_URL").filter(|url| !url.trim().is_empty());
        if let Some(value) = var("THREADLINE_DEMO") {
            s.demo = match value.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                _ => {
                    return Err(SettingsError::Env {
                        name: "THREADLINE_DEMO",
                        value,
                        reason: "use 1 or 0".into(),
                    });
                }
            };
        }
        Ok(())
    }

    pub fn leptos_options(&self) -> LeptosOptions {
        LeptosOptions::builder()
            .output_name(self.server.output_name.as_str())
            .site_root(self.server.site_root.as_str())
            .site_pkg_dir("pkg")
            .site_addr(self.server.site_addr)
            .build()
    }
}

fn override_from<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    target: &mut T,
) -> Result<(), SettingsError>
where
    T::Err: std::fmt::Display,
{
    if let Some(value) = var(name) {
        *target = value.parse().map_err(|e: T::Err| SettingsError::Env {
            name,
            value: value.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_leptos_toml_parses() {
        let text = include_str!("../../Leptos.toml");
        let settings = Settings::parse(text, Path::new("Leptos.toml"));
        assert!(settings.is_ok(), "{settings:?}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut settings = Settings::default();
        let env = |name: &str| match name {
            "LEPTOS_SITE_ADDR" => Some("0.0.0.0:8080".to_string()),
            "THREADLINE_DEMO" => Some("1".to_string()),
            _ => None,
        };
        assert!(settings.apply_env(env).is_ok());
        assert_eq!(settings.server.site_addr.port(), 8080);
        assert!(settings.server.demo);
    }

    #[test]
    fn a_bad_environment_value_is_named_in_the_error() {
        let mut settings = Settings::default();
        let err = settings
            .apply_env(|name| (name == "THREADLINE_PG_PORT").then(|| "seventy".to_string()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("THREADLINE_PG_PORT"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let parsed = Settings::parse("[server]\nsite-adr = \"x\"\n", Path::new("Leptos.toml"));
        assert!(parsed.is_err());
    }
}
