//! Service files: parse, validate and expand `paiosd.toml` and `services.d/*.toml`.
//!
//! Loading never fails as a whole: every broken file becomes a [`ConfigError`] that
//! names the file, line, column and key, and every valid service is still returned,
//! so one bad file never stops the others (promise 11). `~` and `${VAR}` are
//! expanded after parsing, never in the raw text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything read from a config directory: the valid services and every error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub global: Global,
    /// Valid services and tasks by name (the file stem).
    pub services: BTreeMap<String, ServiceConfig>,
    /// One entry per problem found, across all files.
    pub errors: Vec<ConfigError>,
}

/// Settings from the optional `paiosd.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// Run on storms, give-ups and task failures; `None` when not configured.
    pub alert_command: Option<Vec<String>>,
    pub storm: Storm,
    pub ledger: LedgerSettings,
    pub logs: LogSettings,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Storm {
    pub crashes: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LedgerSettings {
    pub keep: Duration,
    pub max_rows: u64,
    pub context_lines: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogSettings {
    pub max_size: u64,
    pub keep: u32,
    pub timestamps: bool,
    pub streams: bool,
}

/// One service or task, validated and expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    /// The file it came from, for messages.
    pub file: PathBuf,
    /// The argv to execute; a `shell` string becomes `["/bin/sh", "-c", s]`.
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub enabled: bool,
    pub after: Vec<String>,
    pub restart: RestartConfig,
    pub stop: StopConfig,
    pub health: Option<HealthConfig>,
    pub memory: Option<MemoryConfig>,
    /// Present when the file has `schedule`: this is a task.
    pub task: Option<TaskConfig>,
    /// The global `[logs]` with this file's `[logs]` applied on top.
    pub logs: LogSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
    /// Fraction in `0.0..=1.0`: a delay `d` becomes a value in `d*(1-jitter) ..= d*(1+jitter)`.
    pub jitter: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitConfig {
    pub burst: u32,
    pub window: Duration,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartConfig {
    pub policy: RestartPolicy,
    pub backoff: BackoffConfig,
    pub reset_after: Duration,
    pub limit: LimitConfig,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopConfig {
    /// Signal number (e.g. `libc::SIGTERM`).
    pub signal: i32,
    pub grace: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Http {
        url: String,
        expect_status: Option<u16>,
    },
    Tcp {
        addr: String,
    },
    Exec {
        argv: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Restart,
    Alert,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
    pub start_period: Duration,
    pub on_failure: OnFailure,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryConfig {
    /// Bytes of RSS summed over the group; `None`: no limit.
    pub limit: Option<u64>,
    /// Bytes per second of sustained growth that raises an alert.
    pub growth_alert: Option<f64>,
    pub interval: Duration,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskConfig {
    /// The expression as written (`0 7 * * *`, `@daily`, 6 fields with seconds).
    pub schedule: String,
    /// IANA zone name; `None`: local time.
    pub tz: Option<String>,
    pub timeout: Duration,
    pub catch_up: bool,
    pub retries: u32,
}

/// One problem in one file, pointing at the exact place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    /// 1-based; 0 when the problem is the file as a whole.
    pub column: usize,
    /// Dotted key path (`restart.backoff.initial`), empty for whole-file problems.
    pub key: String,
    pub message: String,
    /// A suggestion, e.g. "did you mean `grace`?".
    pub help: Option<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

/// Reads `<dir>/paiosd.toml` and every `<dir>/services.d/*.toml`.
///
/// Never fails as a whole: problems are collected in [`Config::errors`].
pub fn load(dir: &Path) -> Config {
    let _ = dir;
    todo!("config::load")
}

impl Default for Global {
    fn default() -> Self {
        Global {
            alert_command: None,
            storm: Storm {
                crashes: 3,
                window: Duration::from_secs(300),
            },
            ledger: LedgerSettings {
                keep: Duration::from_secs(90 * 86_400),
                max_rows: 1_000_000,
                context_lines: 20,
            },
            logs: LogSettings {
                max_size: 10 << 20,
                keep: 5,
                timestamps: false,
                streams: false,
            },
        }
    }
}
