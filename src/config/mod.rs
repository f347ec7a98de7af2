//! Service files: parse, validate and expand `paiosd.toml` and `services.d/*.toml`.
//!
//! Loading never fails as a whole: every broken file becomes a [`ConfigError`] that
//! names the file, line, column and key, and every valid service is still returned,
//! so one bad file never stops the others (promise 11). `~` and `${VAR}` are
//! expanded after parsing, never in the raw text.
//!
//! # The service file
//!
//! `<config>/services.d/NAME.toml` is one service, named by its file stem (letters,
//! digits, `-`, `_`). A file with `schedule` is a task. Files not ending in `.toml`
//! and hidden files (`.NAME.toml`, such as editor lock files) are ignored.
//!
//! | key | type | default | notes |
//! |---|---|---|---|
//! | `command` | array of strings | — | the argv; exactly one of `command` / `shell` |
//! | `shell` | string | — | run as `/bin/sh -c STRING` |
//! | `cwd` | string | paiosd's | absolute after expansion (`~/…` is fine) |
//! | `env` | table of strings | `{}` | added to paiosd's environment |
//! | `enabled` | bool | `true` | |
//! | `after` | array of names | `[]` | start after these services (not tasks) are ready |
//! | `restart.policy` | `always` \| `on-failure` \| `never` | `on-failure`; tasks `never` | tasks cannot use `always` |
//! | `restart.backoff.initial` | duration | `100ms` | > 0 |
//! | `restart.backoff.max` | duration | `60s` | ≥ `initial` |
//! | `restart.backoff.factor` | number | `2.0` | 1 to 100 |
//! | `restart.backoff.jitter` | number | `0.2` | 0 to 1 |
//! | `restart.reset_after` | duration | `60s` | uptime after which backoff starts over |
//! | `restart.limit.burst` | integer | `10` | restarts within `window` before giving up |
//! | `restart.limit.window` | duration | `5m` | |
//! | `restart.limit.cooldown` | duration | `10m` | wait in `failed` before trying again |
//! | `stop.signal` | signal name | `SIGTERM` | `SIGTERM`/`TERM`, `INT`, `HUP`, `QUIT`, `KILL`, `USR1`, `USR2`, `ALRM`, `ABRT` |
//! | `stop.grace` | duration | `10s` | then SIGKILL to the group; `0s` allowed |
//! | `stop.stdin_grace` | duration | `2s` | `[mcp] transport = "stdio"`: stdin is closed first, then this long to exit |
//! | `health.http` | string | — | `http://HOST:PORT/PATH`; one of `http` / `tcp` / `exec` |
//! | `health.tcp` | string | — | `HOST:PORT` |
//! | `health.exec` | array of strings | — | healthy when it exits 0 |
//! | `health.mcp` | bool | `false` | `true`: a JSON-RPC `ping` over the `[mcp]` transport; any reply is alive |
//! | `health.expect_status` | integer | any 2xx | 100 to 599, `http` only |
//! | `health.interval` | duration | `10s` | > 0 |
//! | `health.timeout` | duration | `2s` | > 0 |
//! | `health.failures` | integer | `3` | ≥ 1 consecutive failures mean hung |
//! | `health.start_period` | duration | `30s` | failures here do not count |
//! | `health.on_failure` | `restart` \| `alert` | `restart` | |
//! | `memory.limit` | size | none | ≥ 1MiB; RSS of the whole group |
//! | `memory.growth_alert` | rate | none | `10MiB/h`, `512KiB/m`, `1GiB/d` |
//! | `memory.interval` | duration | `10s` | > 0 |
//! | `memory.window` | duration | `1h` | ≥ `interval` |
//! | `logs.*` | | from `paiosd.toml` | per-key override of the global `[logs]` |
//! | `mcp.transport` | `stdio` \| `http` | — | required in `[mcp]`: marks an MCP server |
//! | `mcp.url` | string | — | `http://…`; required for `http`, not allowed for `stdio` |
//! | `mcp.share` | `per-client` \| `shared` | `per-client` for stdio, `shared` for http | stdio cannot be `shared` yet; http is always `shared` |
//! | `mcp.max_line` | size | `16MiB` | ≥ 1KiB; the cap on one JSON-RPC line |
//! | `schedule` | cron | — | 5 fields, 6 with seconds first, `@hourly` `@daily` `@weekly` `@monthly` `@yearly` |
//! | `tz` | IANA name | local time | tasks only |
//! | `timeout` | duration | `1h` | tasks only; > 0 |
//! | `catch_up` | bool | `true` | tasks only: one run for missed times |
//! | `retries` | integer | `0` | tasks only; 0 to 100 |
//!
//! `paiosd.toml` (optional, every key optional):
//!
//! | key | type | default |
//! |---|---|---|
//! | `alert_command` | array of strings | none |
//! | `storm.crashes` | integer ≥ 1 | `3` |
//! | `storm.window` | duration | `5m` |
//! | `ledger.keep` | duration | `90d` |
//! | `ledger.max_rows` | integer ≥ 1 | `1000000` |
//! | `ledger.context_lines` | integer | `20` |
//! | `logs.max_size` | size ≥ 1KiB | `10MiB` |
//! | `logs.keep` | integer | `5` rotated files |
//! | `logs.timestamps` | bool | `false`: prefix each line with the time |
//! | `logs.streams` | bool | `false`: mark each line `out`/`err` |
//!
//! Durations: a whole number and a unit, `ms`, `s`, `m`, `h`, `d`, `w`, combinable
//! from largest to smallest (`1m30s`), at most 100 years (the same grammar as
//! `--since` on the command line). Sizes: bytes as an integer or
//! `B`, binary `KiB` `MiB` `GiB` `TiB` (powers of 1024) and decimal `KB` `MB` `GB`
//! `TB` (powers of 1000). Expansion: a leading `~`, and `${NAME}` from paiosd's
//! environment (unset is an error); `$${` is a literal `${`, and any other `$` is
//! left for `/bin/sh`. It applies to `command`, `shell`, `cwd`, `env` values,
//! `health.exec` and `alert_command`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};

pub mod expand;
mod global;
mod graph;
pub mod probe;
mod reader;
pub mod schedule;
mod service;

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
    /// Present when the file has `[mcp]`: this service is an MCP server.
    pub mcp: Option<McpConfig>,
}

/// How an MCP server is reached (`[mcp]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpConfig {
    pub transport: McpTransport,
    /// The server's Streamable HTTP endpoint, for `transport = "http"`.
    pub url: Option<String>,
    pub share: McpShare,
    /// The cap on one JSON-RPC line, either way.
    pub max_line: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpTransport {
    /// paiosd holds the server's stdin and stdout.
    Stdio,
    /// The server speaks Streamable HTTP at `url` itself.
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpShare {
    /// One run of the server per connected client.
    PerClient,
    /// One run serves every client.
    Shared,
}

impl McpTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            McpTransport::Stdio => "stdio",
            McpTransport::Http => "http",
        }
    }
}

impl McpShare {
    pub fn as_str(self) -> &'static str {
        match self {
            McpShare::PerClient => "per-client",
            McpShare::Shared => "shared",
        }
    }
}

impl ServiceConfig {
    /// An MCP server over stdio with a run per client: it has no run of its own.
    pub fn is_per_client(&self) -> bool {
        self.mcp
            .as_ref()
            .is_some_and(|m| m.transport == McpTransport::Stdio && m.share == McpShare::PerClient)
    }
}

impl ServiceConfig {
    /// What stray detection (the fallback sweep, `doctor`) knows of this service.
    pub fn stray_pattern(&self) -> crate::process::strays::Known {
        crate::process::strays::Known {
            argv: self.argv.clone(),
            stop_signal: self.stop.signal,
            grace: self.stop.grace,
        }
    }
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
    /// For an MCP server over stdio: how long it has to exit once its stdin is closed,
    /// before the stop signal.
    pub stdin_grace: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Http {
        url: probe::HttpTarget,
        expect_status: Option<u16>,
    },
    Tcp {
        addr: probe::TcpTarget,
    },
    Exec {
        argv: Vec<String>,
    },
    /// `mcp = true`: a JSON-RPC `ping` over the server's `[mcp]` transport.
    Mcp(McpEndpoint),
}

/// Where an MCP probe's `ping` goes: the server's own transport.
#[derive(Debug, Clone, PartialEq)]
pub enum McpEndpoint {
    /// Each client's run, on paiosd's own pipe to it.
    Stdio,
    /// An HTTP POST to the server's `[mcp] url`.
    Http(probe::HttpTarget),
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

/// Reads `<dir>/paiosd.toml` and every `<dir>/services.d/*.toml`, in file-name order.
///
/// Never fails as a whole: problems are collected in [`Config::errors`], sorted by
/// file and position, and every service whose file is clean (and whose `after`
/// names only loaded services) is returned.
///
/// - A missing `<dir>` is one error with empty services: it is created at install,
///   so its absence means a mistyped `--config-dir`, which a user wants to hear
///   about rather than see a supervisor quietly running nothing.
/// - A missing `paiosd.toml` means all defaults; a missing `services.d/` means no
///   services. Neither is an error: both are a fresh install.
/// - A broken `paiosd.toml` keeps the default of each broken key; a broken service
///   file yields no service, and the services that come `after` it are not loaded
///   either (each with an error pointing at that `after` entry).
pub fn load(dir: &Path) -> Config {
    load_with(dir, &expand::process_env)
}

/// [`load`] with the environment used for `~` and `${VAR}` given explicitly.
pub fn load_with(dir: &Path, env: expand::EnvLookup<'_>) -> Config {
    let mut config = Config::default();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            config.errors.push(file_error(
                dir,
                "the config directory is not a directory",
                Some("pass a directory to --config-dir (or PAIOS_CONFIG_DIR)".into()),
            ));
            return config;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            config.errors.push(file_error(
                dir,
                "the config directory does not exist",
                Some(
                    "create it with a services.d/ inside, or pass --config-dir (or PAIOS_CONFIG_DIR)"
                        .into(),
                ),
            ));
            return config;
        }
        Err(e) => {
            config.errors.push(file_error(
                dir,
                format!("cannot read the config directory: {e}"),
                None,
            ));
            return config;
        }
    }

    let global_path = dir.join("paiosd.toml");
    match read_text(&global_path) {
        Ok(Some(text)) => {
            let (global, errors) = global::parse(&global_path, &text, env);
            config.global = global;
            config.errors.extend(errors);
        }
        Ok(None) => {}
        Err(e) => config.errors.push(e),
    }

    let services_dir = dir.join("services.d");
    let mut parsed = BTreeMap::new();
    let mut broken = BTreeSet::new();
    for entry in service_files(&services_dir, &mut config.errors) {
        let (name, path) = entry;
        let text = match read_text(&path) {
            Ok(Some(text)) => text,
            Ok(None) => {
                // Removed between listing and reading: nothing to load.
                continue;
            }
            Err(e) => {
                config.errors.push(e);
                broken.insert(name);
                continue;
            }
        };
        let (service, errors) = service::parse(&name, &path, &text, config.global.logs, env);
        config.errors.extend(errors);
        match service {
            Some(p) => {
                parsed.insert(name, p);
            }
            None => {
                broken.insert(name);
            }
        }
    }
    shared_probe_ports(&mut parsed, &mut broken, &mut config.errors);
    config.services = graph::resolve(parsed, &broken, &mut config.errors);
    config
        .errors
        .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    config
}

/// A health probe must look at its own service: a probe aimed at the port another
/// service's probe uses would judge (and restart) one service by another's health. The
/// second file in name order gets the error and is not loaded.
fn shared_probe_ports(
    parsed: &mut BTreeMap<String, service::Parsed>,
    broken: &mut BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) {
    let mut seen: BTreeMap<(String, u16), String> = BTreeMap::new();
    let mut clash = Vec::new();
    for (name, p) in parsed.iter() {
        let Some(health) = &p.svc.health else {
            continue;
        };
        let (key, written, target) = match &health.probe {
            Probe::Http { url, .. } => ("health.http", url.to_string(), (&url.host, url.port)),
            Probe::Tcp { addr } => ("health.tcp", addr.to_string(), (&addr.host, addr.port)),
            Probe::Exec { .. } | Probe::Mcp(_) => continue,
        };
        let host = match target.0.to_ascii_lowercase().as_str() {
            "localhost" | "127.0.0.1" => "127.0.0.1".to_string(),
            "::1" | "[::1]" => "::1".to_string(),
            other => other.to_string(),
        };
        match seen.get(&(host.clone(), target.1)) {
            Some(first) => clash.push((
                name.clone(),
                key,
                written,
                first.clone(),
                p.svc.file.clone(),
            )),
            None => {
                seen.insert((host, target.1), name.clone());
            }
        }
    }
    for (name, key, written, first, file) in clash {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let (line, column) = text
            .lines()
            .enumerate()
            .find_map(|(i, l)| {
                let quoted = format!("\"{written}\"");
                l.find(&quoted)
                    .or_else(|| l.find(&written))
                    .map(|c| (i + 1, c + 1))
            })
            .unwrap_or((0, 0));
        errors.push(ConfigError {
            file,
            line,
            column,
            key: key.to_string(),
            message: format!("`{written}` is the port that service `{first}` is probed on"),
            help: Some("each service's probe must point at that service's own port".into()),
        });
        parsed.remove(&name);
        broken.insert(name);
    }
}

/// More service files than any one machine runs; beyond it the files are reported,
/// not read, so a directory filled by accident cannot exhaust memory.
const MAX_SERVICE_FILES: usize = 1000;

/// Larger than any hand-written service file; a bigger file is a mistake.
const MAX_FILE_BYTES: u64 = 1 << 20;

fn file_error(path: &Path, message: impl Into<String>, help: Option<String>) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message: message.into(),
        help,
    }
}

/// The `(name, path)` of every `services.d/*.toml` with a valid name, sorted by file
/// name; reports the files whose names cannot be service names.
fn service_files(dir: &Path, errors: &mut Vec<ConfigError>) -> Vec<(String, PathBuf)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            let message = if dir.is_file() {
                "services.d is a file; it must be a directory of NAME.toml files".to_string()
            } else {
                format!("cannot read the services directory: {e}")
            };
            errors.push(file_error(dir, message, None));
            return Vec::new();
        }
    };
    let mut names: Vec<OsString> = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let name = entry.file_name();
                let bytes = name.as_bytes();
                if bytes.ends_with(b".toml") && !bytes.starts_with(b".") {
                    names.push(name);
                }
            }
            Err(e) => errors.push(file_error(
                dir,
                format!("cannot list the services directory: {e}"),
                None,
            )),
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut out = Vec::new();
    for file_name in names {
        let path = dir.join(&file_name);
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".toml")) else {
            errors.push(file_error(
                &path,
                "the file name is not valid UTF-8, so it cannot name a service",
                Some("rename it to NAME.toml with letters, digits, `-` and `_`".into()),
            ));
            continue;
        };
        if !crate::names::is_service_name(name) {
            let suggestion: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let suggestion = suggestion.trim_matches('-');
            let help = if suggestion.is_empty() {
                "rename it to NAME.toml with letters, digits, `-` and `_`".to_string()
            } else {
                format!("rename it to {suggestion}.toml")
            };
            errors.push(file_error(
                &path,
                format!("`{name}` is not a valid service name: use letters, digits, `-` and `_`"),
                Some(help),
            ));
            continue;
        }
        if out.len() == MAX_SERVICE_FILES {
            errors.push(file_error(
                &path,
                format!("more than {MAX_SERVICE_FILES} service files; this one and the rest are not read"),
                None,
            ));
            break;
        }
        out.push((name.to_string(), path));
    }
    out
}

/// Reads a config file as UTF-8. `Ok(None)`: the file does not exist.
fn read_text(path: &Path) -> Result<Option<String>, ConfigError> {
    // Look before opening: opening a FIFO named `x.toml` would block loading forever.
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(file_error(
                path,
                "is a directory, not a file",
                Some("service files are NAME.toml files directly in services.d".into()),
            ))
        }
        Ok(m) if !m.is_file() => {
            return Err(file_error(
                path,
                "is not a regular file (a FIFO, socket or device)",
                None,
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symlink is listed but not found: say what it is.
            return if std::fs::symlink_metadata(path).is_ok() {
                Err(file_error(
                    path,
                    "is a symbolic link to a file that does not exist",
                    None,
                ))
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(file_error(path, format!("cannot read: {e}"), None)),
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, format!("cannot open: {e}"), None)),
    };
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
        return Err(file_error(path, format!("cannot read: {e}"), None));
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(file_error(
            path,
            format!(
                "is larger than {}",
                crate::units::format_size(MAX_FILE_BYTES)
            ),
            Some("a service file is a few lines of TOML".into()),
        ));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            Err(ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                key: String::new(),
                message: "is not valid UTF-8".to_string(),
                help: Some("save the file as UTF-8".into()),
            })
        }
    }
}

/// The next `n` run times of a task strictly after `after`, in the task's zone.
pub fn next_runs(
    task: &TaskConfig,
    after: DateTime<Utc>,
    n: usize,
) -> Result<Vec<DateTime<FixedOffset>>, String> {
    let schedule =
        schedule::Schedule::parse(&task.schedule, task.tz.as_deref()).map_err(|e| e.message)?;
    Ok(schedule.runs_after(after, n))
}

/// One line per service for `paiosd check`, e.g.
/// `kb  service  node …/mcp-server.js --port 3001  restart=on-failure after=embedding-server health=http://127.0.0.1:3001/health`.
/// Tasks show their schedule and next three runs from the current time.
pub fn summary(svc: &ServiceConfig) -> String {
    summary_at(svc, Utc::now())
}

/// [`summary`] with the current time passed in.
pub fn summary_at(svc: &ServiceConfig, now: DateTime<Utc>) -> String {
    let kind = if svc.task.is_some() {
        "task"
    } else {
        "service"
    };
    let mut parts = vec![format!("{}  {kind}  {}", svc.name, show_argv(&svc.argv))];
    let mut extra = Vec::new();
    if !svc.enabled {
        extra.push("disabled".to_string());
    }
    let policy = match svc.restart.policy {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "never",
    };
    if svc.task.is_none() || svc.restart.policy != RestartPolicy::Never {
        extra.push(format!("restart={policy}"));
    }
    if !svc.after.is_empty() {
        extra.push(format!("after={}", svc.after.join(",")));
    }
    if let Some(h) = &svc.health {
        let probe = match &h.probe {
            Probe::Http { url, .. } => url.to_string(),
            Probe::Tcp { addr } => format!("tcp:{addr}"),
            Probe::Exec { argv } => format!("exec:{}", show_argv(argv)),
            Probe::Mcp(_) => "mcp".to_string(),
        };
        extra.push(format!("health={probe}"));
    }
    if let Some(mcp) = &svc.mcp {
        let mut word = format!("mcp={}/{}", mcp.transport.as_str(), mcp.share.as_str());
        if let Some(url) = &mcp.url {
            word.push_str(&format!(" url={url}"));
        }
        extra.push(word);
    }
    if let Some(limit) = svc.memory.and_then(|m| m.limit) {
        extra.push(format!("memory<={}", crate::units::format_size(limit)));
    }
    if let Some(task) = &svc.task {
        extra.push(format!("schedule=\"{}\"", task.schedule));
        if let Some(tz) = &task.tz {
            extra.push(format!("tz={tz}"));
        }
        match next_runs(task, now, 3) {
            Ok(runs) if runs.is_empty() => extra.push("next=never".to_string()),
            Ok(runs) => {
                let with_seconds = runs.iter().any(|t| chrono::Timelike::second(t) != 0);
                let fmt = if with_seconds {
                    "%Y-%m-%d %H:%M:%S %:z"
                } else {
                    "%Y-%m-%d %H:%M %:z"
                };
                let list: Vec<String> = runs.iter().map(|t| t.format(fmt).to_string()).collect();
                extra.push(format!("next={}", list.join(", ")));
            }
            Err(e) => extra.push(format!("next=? ({e})")),
        }
    }
    if !extra.is_empty() {
        parts.push(extra.join(" "));
    }
    parts.join("  ")
}

/// An argv as a short command line: long paths keep their last component.
fn show_argv(argv: &[String]) -> String {
    let shown: Vec<String> = match argv {
        [sh, c, line] if sh == "/bin/sh" && c == "-c" => {
            let short: String = if line.chars().count() > 60 {
                line.chars().take(59).chain(std::iter::once('…')).collect()
            } else {
                line.clone()
            };
            return format!("sh -c '{short}'");
        }
        _ => argv
            .iter()
            .map(|a| {
                let a = if a.contains('/') && a.chars().count() > 24 {
                    format!("…/{}", a.rsplit('/').next().unwrap_or(a))
                } else {
                    a.clone()
                };
                if a.is_empty() || a.contains(char::is_whitespace) {
                    format!("'{a}'")
                } else {
                    a
                }
            })
            .collect(),
    };
    shown.join(" ")
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
