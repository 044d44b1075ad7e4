//! The embedded default database: a private PostgreSQL cluster under the data
//! folder, created and started from the PostgreSQL installed on the machine,
//! configured for logical decoding. PostgreSQL refuses to run as root, so
//! when we are root the cluster runs as the `postgres` system user.

use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

const SUPERUSER: &str = "threadline";
const DATABASE: &str = "threadline";
const SYSTEM_USER: &str = "postgres";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb in /usr/lib/postgresql/*/bin and on PATH); \
         install them (Debian: apt-get install postgresql) or set DATABASE_URL"
    )]
    NoBinaries,
    #[error(
        "running as root, so the embedded PostgreSQL must run as the '{SYSTEM_USER}' user, which does not exist; \
         install Debian's postgresql package (it creates the user) or set DATABASE_URL"
    )]
    NoSystemUser,
    #[error(
        "the '{SYSTEM_USER}' user cannot write to {0} (a parent folder is not searchable by it, e.g. a home \
         folder only root may enter); set THREADLINE_DATA_DIR to a folder it can reach, such as \
         /var/lib/threadline, or set DATABASE_URL"
    )]
    Unreachable(PathBuf),
    #[error("{step} failed: {detail}")]
    Command { step: String, detail: String },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A private cluster at `<data_dir>/postgres`, listening on 127.0.0.1 only,
/// with a generated password kept beside it.
pub struct EmbeddedPostgres {
    base: PathBuf,
    cluster: PathBuf,
    port: u16,
    bin_dir: PathBuf,
    run_as_postgres: bool,
}

impl EmbeddedPostgres {
    pub fn new(data_dir: &Path, port: u16) -> Result<Self, EmbeddedError> {
        let base = std::path::absolute(data_dir).map_err(|source| EmbeddedError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        Ok(EmbeddedPostgres {
            cluster: base.join("postgres"),
            base,
            port,
            bin_dir: find_bin_dir().ok_or(EmbeddedError::NoBinaries)?,
            run_as_postgres: is_root(),
        })
    }

    /// Creates the cluster if needed and starts it if it is not running.
    /// Returns the connection URL, and whether the database is new (so the
    /// caller seeds demo data on first start only).
    pub async fn ensure_running(&self) -> Result<(String, bool), EmbeddedError> {
        if !self.cluster.join("PG_VERSION").exists() {
            self.init().await?;
        }
        if !self.is_running().await {
            tracing::info!(cluster = %self.cluster.display(), port = self.port, "starting embedded PostgreSQL");
            let log = self.cluster.join("server.log");
            self.run(
                "start PostgreSQL",
                Command::new(self.bin_dir.join("pg_ctl"))
                    .arg("start")
                    .arg("-D")
                    .arg(&self.cluster)
                    .arg("-l")
                    .arg(&log)
                    // the port of this start, whatever the cluster was made with
                    .arg("-o")
                    .arg(format!("-p {}", self.port))
                    .args(["-w", "-t", "120", "-s"]),
            )
            .await
            .map_err(|e| with_log_tail(e, &log))?;
        }
        let created = self.ensure_database(DATABASE).await?;
        Ok((self.url(DATABASE)?, created))
    }

    /// Drops a database if it exists, closing its connections first.
    pub async fn drop_database(&self, name: &str) -> Result<(), EmbeddedError> {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.url("postgres")?)
            .await
            .map_err(|e| EmbeddedError::Command {
                step: "connect to the embedded cluster".into(),
                detail: e.to_string(),
            })?;
        sqlx::query(&format!(
            "drop database if exists \"{}\" with (force)",
            name.replace('"', "\"\"")
        ))
        .execute(&mut conn)
        .await
        .map_err(|e| EmbeddedError::Command {
            step: "drop the database".into(),
            detail: e.to_string(),
        })?;
        Ok(())
    }

    /// Creates the database if it does not exist; true if it was created now.
    pub async fn ensure_database(&self, name: &str) -> Result<bool, EmbeddedError> {
        let failed = |step: &str| {
            let step = step.to_string();
            move |e: sqlx::Error| EmbeddedError::Command {
                step,
                detail: e.to_string(),
            }
        };
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.url("postgres")?)
            .await
            .map_err(failed("connect to the embedded cluster"))?;
        let exists: bool =
            sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .map_err(failed("look up the database"))?;
        if exists {
            return Ok(false);
        }
        sqlx::query(&format!(
            "create database \"{}\"",
            name.replace('"', "\"\"")
        ))
        .execute(&mut conn)
        .await
        .map_err(failed("create the database"))?;
        Ok(true)
    }

    pub async fn is_running(&self) -> bool {
        self.cluster.join("PG_VERSION").exists()
            && self
                .run(
                    "check PostgreSQL",
                    Command::new(self.bin_dir.join("pg_ctl"))
                        .arg("status")
                        .arg("-D")
                        .arg(&self.cluster),
                )
                .await
                .is_ok()
    }

    pub async fn stop(&self) -> Result<(), EmbeddedError> {
        if !self.is_running().await {
            return Ok(());
        }
        tracing::info!("stopping embedded PostgreSQL");
        self.run(
            "stop PostgreSQL",
            Command::new(self.bin_dir.join("pg_ctl"))
                .arg("stop")
                .arg("-D")
                .arg(&self.cluster)
                .args(["-m", "fast", "-w", "-t", "60", "-s"]),
        )
        .await
    }

    /// The URL of a database in this cluster.
    pub fn url(&self, database: &str) -> Result<String, EmbeddedError> {
        let path = self.password_file();
        let password =
            std::fs::read_to_string(&path).map_err(|source| EmbeddedError::Io { path, source })?;
        Ok(format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            password.trim(),
            self.port
        ))
    }

    fn password_file(&self) -> PathBuf {
        self.base.join("postgres-password")
    }

    async fn init(&self) -> Result<(), EmbeddedError> {
        tracing::info!(cluster = %self.cluster.display(), "creating embedded PostgreSQL cluster");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EmbeddedError::Io { path, source }
        };
        std::fs::create_dir_all(&self.cluster).map_err(io(&self.cluster))?;
        let password: String = {
            use rand::Rng;
            rand::thread_rng()
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(32)
                .map(char::from)
                .collect()
        };
        write_private(&self.password_file(), &password).map_err(io(&self.password_file()))?;
        // initdb reads the password from a file the cluster's owner can read.
        let pwfile = self.cluster.with_file_name("postgres-initpw");
        write_private(&pwfile, &password).map_err(io(&pwfile))?;
        if self.run_as_postgres {
            self.hand_to_postgres(&[&self.cluster, &pwfile]).await?;
        }
        let result = self
            .run(
                "initdb",
                Command::new(self.bin_dir.join("initdb"))
                    .arg("-D")
                    .arg(&self.cluster)
                    .args([
                        "-U",
                        SUPERUSER,
                        "-A",
                        "scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ])
                    .arg(format!("--pwfile={}", pwfile.display())),
            )
            .await;
        let _ = std::fs::remove_file(&pwfile);
        if let Err(e) = result {
            // leave no half-made cluster behind: the next start retries cleanly
            let _ = std::fs::remove_dir_all(&self.cluster);
            return Err(e);
        }
        let conf = self.cluster.join("postgresql.conf");
        let settings = "\n# Threadline embedded defaults\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = ''\n\
             wal_level = logical\n\
             max_wal_senders = 64\n\
             max_replication_slots = 64\n\
             max_connections = 300\n\
             max_slot_wal_keep_size = '4GB'\n\
             wal_sender_timeout = '30s'\n";
        append(&conf, settings).map_err(io(&conf))
    }

    async fn hand_to_postgres(&self, paths: &[&Path]) -> Result<(), EmbeddedError> {
        let known = Command::new("id").arg("-u").arg(SYSTEM_USER).output().await;
        if !known.is_ok_and(|o| o.status.success()) {
            return Err(EmbeddedError::NoSystemUser);
        }
        for path in paths {
            let owner = format!("{SYSTEM_USER}:{SYSTEM_USER}");
            self.run_plain("chown", Command::new("chown").arg(&owner).arg(path))
                .await?;
        }
        let reachable = Command::new("runuser")
            .args(["-u", SYSTEM_USER, "--", "test", "-w"])
            .arg(&self.cluster)
            .output()
            .await;
        if !reachable.is_ok_and(|o| o.status.success()) {
            let _ = std::fs::remove_dir_all(&self.cluster);
            return Err(EmbeddedError::Unreachable(self.base.clone()));
        }
        Ok(())
    }

    /// Runs a PostgreSQL tool, as the `postgres` user when we are root.
    async fn run(&self, step: &str, command: &mut Command) -> Result<(), EmbeddedError> {
        if self.run_as_postgres {
            let std = command.as_std();
            let mut wrapped = Command::new("runuser");
            wrapped
                .args(["-u", SYSTEM_USER, "--"])
                .arg(std.get_program())
                .args(std.get_args());
            self.run_plain(step, &mut wrapped).await
        } else {
            self.run_plain(step, command).await
        }
    }

    async fn run_plain(&self, step: &str, command: &mut Command) -> Result<(), EmbeddedError> {
        let output: Output = command
            .current_dir(&self.base)
            .output()
            .await
            .map_err(|e| EmbeddedError::Command {
                step: step.into(),
                detail: e.to_string(),
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(EmbeddedError::Command {
                step: step.into(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stderr).trim(),
                    String::from_utf8_lossy(&output.stdout).trim()
                ),
            })
        }
    }
}

fn with_log_tail(err: EmbeddedError, log: &Path) -> EmbeddedError {
    match err {
        EmbeddedError::Command { step, detail } => {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            EmbeddedError::Command {
                step,
                detail: format!("{detail}\n{} says:\n{}", log.display(), tail.join("\n")),
            }
        }
        other => other,
    }
}

fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

fn append(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(contents.as_bytes())
}
