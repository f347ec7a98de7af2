//! The wire protocol: one JSON object per line each way, with a version field.
//!
//! A request is `{"version":1,"op":"status","names":[]}`; the answer is one line,
//! `{"version":1,"ok":{...}}` or `{"version":1,"error":{"code":"unknown_service","message":"..."}}`.
//! Field names are a public interface: adding is fine, renaming breaks scripts.

use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;

/// A request line longer than this is refused without being read further.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// Names the services an operation applies to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Ping,
    Status {
        #[serde(default)]
        names: Vec<String>,
    },
    Start {
        #[serde(flatten)]
        target: Target,
        #[serde(default = "yes")]
        wait: bool,
    },
    Stop {
        #[serde(flatten)]
        target: Target,
        #[serde(default = "yes")]
        wait: bool,
    },
    Restart {
        #[serde(flatten)]
        target: Target,
        #[serde(default = "yes")]
        wait: bool,
    },
    Reload,
    Run {
        name: String,
        #[serde(default = "yes")]
        wait: bool,
    },
    Shutdown,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    pub version: u32,
    #[serde(flatten)]
    pub body: Response,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Error(ErrorBody),
}

/// A failure with a stable machine-readable `code` and a message for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line was not JSON, or not a request this version knows.
    BadRequest,
    /// The line was longer than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// The client speaks another protocol version.
    VersionMismatch,
    UnknownService,
    /// The operation does not apply (e.g. `run` on a service that is not a task).
    NotApplicable,
    /// The task is already running.
    Busy,
    /// The configuration has errors; nothing was applied.
    ConfigInvalid,
    /// The operation was carried out but did not succeed (e.g. a start that gave up).
    Failed,
    /// paiosd is shutting down.
    ShuttingDown,
    /// The peer is not paiosd's user.
    PermissionDenied,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Pong { version: String, pid: u32 },
    Status { services: Vec<ServiceStatus> },
    Ops { results: Vec<OpResult> },
    Reload(ReloadReport),
    Run(RunResult),
    ShuttingDown { pid: u32 },
}

/// One row of `paiosctl status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// `service` or `task`.
    pub kind: String,
    /// `running`, `starting`, `backoff`, `stopping`, `stopped`, `failed`, `hung`, `idle`, `waiting`.
    pub state: String,
    pub pid: Option<i32>,
    pub pgid: Option<i32>,
    pub uptime_s: Option<u64>,
    pub restarts_24h: u32,
    pub last_exit: Option<LastExit>,
    /// `healthy`, `unhealthy 2/3`, `starting`, or null without a probe.
    pub health: Option<String>,
    pub rss_bytes: Option<u64>,
    /// RFC 3339, tasks only.
    pub next_run: Option<String>,
    /// Why the state is what it is: "until 12:00:01", "waiting for gateway", the give-up reason.
    pub detail: Option<String>,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastExit {
    pub code: Option<i32>,
    /// e.g. `SIGKILL`.
    pub signal: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// What one service did in a start/stop/restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    pub name: String,
    pub ok: bool,
    /// The state afterwards.
    pub state: String,
    pub pid: Option<i32>,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
    pub unchanged: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    /// `started` with `--no-wait`, else the run's outcome (`exited`, `crashed`, `timeout`, ...).
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub pid: Option<i32>,
}
