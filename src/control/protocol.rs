//! The wire protocol: one JSON object per line each way, with a version field.
//!
//! A request is `{"version":1,"op":"status","names":[]}`; the answer is one line,
//! `{"version":1,"ok":{...}}` or `{"version":1,"error":{"code":"unknown_service","message":"..."}}`.
//! Field names are a public interface: adding is fine, renaming breaks scripts.

use serde::{Deserialize, Serialize};

use crate::ledger::LedgerStats;

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

impl Request {
    /// Whether the answer comes only when the operation is complete, which may take a
    /// service's whole stop grace; the client then waits without a read timeout.
    pub fn waits(&self) -> bool {
        match self {
            Request::Start { wait, .. }
            | Request::Stop { wait, .. }
            | Request::Restart { wait, .. }
            | Request::Run { wait, .. } => *wait,
            Request::Reload => true,
            Request::Ping | Request::Status { .. } | Request::Shutdown => false,
        }
    }
}

impl Response {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error(ErrorBody {
            code,
            message: message.into(),
        })
    }
}

impl ErrorCode {
    /// The wire name, as in the JSON (`unknown_service`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::UnknownService => "unknown_service",
            ErrorCode::NotApplicable => "not_applicable",
            ErrorCode::Busy => "busy",
            ErrorCode::ConfigInvalid => "config_invalid",
            ErrorCode::Failed => "failed",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Overloaded => "overloaded",
        }
    }
}

/// The hint given whenever the two sides disagree about the protocol.
pub const VERSION_HINT: &str =
    "paiosctl and paiosd versions differ; restart paiosd so both come from the same build";

/// One request as a line: JSON and a trailing newline.
pub fn encode_request(request: &Request) -> Vec<u8> {
    encode_line(&RequestEnvelope {
        version: PROTOCOL_VERSION,
        request: request.clone(),
    })
}

/// One response as a line: JSON and a trailing newline.
pub fn encode_response(response: &Response) -> Vec<u8> {
    encode_line(&ResponseEnvelope {
        version: PROTOCOL_VERSION,
        body: response.clone(),
    })
}

fn encode_line<T: Serialize>(value: &T) -> Vec<u8> {
    // These types hold only strings, numbers and maps with string keys, which always
    // serialize; the fallback keeps a bug from becoming a panic in paiosd.
    let mut line = serde_json::to_vec(value).unwrap_or_else(|e| {
        format!(
            r#"{{"version":{PROTOCOL_VERSION},"error":{{"code":"bad_request","message":"cannot encode: {}"}}}}"#,
            e.to_string().replace(['"', '\\'], "'")
        )
        .into_bytes()
    });
    line.push(b'\n');
    line
}

/// Decodes one request line (without its newline). Tells a wrong protocol version
/// apart from a malformed request so the answer can say to restart paiosd.
pub fn decode_request(line: &[u8]) -> Result<Request, ErrorBody> {
    let bad = |message: String| ErrorBody {
        code: ErrorCode::BadRequest,
        message,
    };
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| bad(format!("request is not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(bad("a request is a JSON object".into()));
    };
    match object.get("version").map(serde_json::Value::as_u64) {
        None => return Err(bad(format!("request has no \"version\"; {VERSION_HINT}"))),
        Some(Some(v)) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            let shown = v.map_or_else(|| object["version"].to_string(), |v| v.to_string());
            return Err(ErrorBody {
                code: ErrorCode::VersionMismatch,
                message: format!(
                    "request speaks protocol version {shown}, paiosd speaks {PROTOCOL_VERSION}: {VERSION_HINT}"
                ),
            });
        }
    }
    let keys: Vec<String> = object.keys().cloned().collect();
    let envelope = serde_json::from_value::<RequestEnvelope>(value)
        .map_err(|e| bad(format!("not a valid request: {e}")))?;
    // `flatten` lets serde ignore fields it does not know; a field this paiosd does not
    // understand (say, from a newer paiosctl) must not be silently dropped, so every key
    // has to reappear when the request is encoded again.
    let known = serde_json::to_value(&envelope).unwrap_or_default();
    if let Some(unknown) = keys.iter().find(|k| known.get(k.as_str()).is_none()) {
        return Err(bad(format!(
            "unknown field `{unknown}` in a `{}` request",
            known
                .get("op")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?")
        )));
    }
    Ok(envelope.request)
}

/// Decodes one response line (without its newline), with the version hint when the
/// answer comes from another protocol version.
pub fn decode_response(line: &[u8]) -> Result<Response, String> {
    match serde_json::from_slice::<ResponseEnvelope>(line) {
        Ok(envelope) if envelope.version == PROTOCOL_VERSION => Ok(envelope.body),
        Ok(envelope) => Err(format!(
            "paiosd answered with protocol version {}, paiosctl speaks {PROTOCOL_VERSION}: {VERSION_HINT}",
            envelope.version
        )),
        Err(e) => {
            let version = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("version").and_then(serde_json::Value::as_u64));
            match version {
                Some(v) if v != u64::from(PROTOCOL_VERSION) => Err(format!(
                    "paiosd answered with protocol version {v}, paiosctl speaks {PROTOCOL_VERSION}: {VERSION_HINT}"
                )),
                _ => Err(format!("cannot read paiosd's answer: {e}; {VERSION_HINT}?")),
            }
        }
    }
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
    /// The request line did not arrive complete in time; the connection is closed.
    Timeout,
    /// Too many requests are queued for the supervisor; try again.
    Overloaded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Pong {
        version: String,
        pid: u32,
        /// The ledger writer's counters: records written, waiting for the database
        /// (`pending`), lost (`dropped`), and the last write error. Absent from an older
        /// paiosd.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ledger: Option<LedgerStats>,
    },
    Status {
        services: Vec<ServiceStatus>,
        /// As in `Pong`, so `paiosctl status` can say when history is not being written.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ledger: Option<LedgerStats>,
    },
    Ops {
        results: Vec<OpResult>,
    },
    Reload(ReloadReport),
    Run(RunResult),
    ShuttingDown {
        pid: u32,
    },
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
    /// Log lines paiosd dropped for this service since it started, because the disk
    /// failed or stalled (0 from a paiosd that does not report it).
    #[serde(default)]
    pub log_dropped: u64,
    /// For an MCP server: how it is reached and who is connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpStatus>,
}

/// An MCP server's transport, share mode and connected clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpStatus {
    /// `stdio` or `http`.
    pub transport: String,
    /// `per-client` or `shared`.
    pub share: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub clients: Vec<McpClientStatus>,
}

/// One connected MCP client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpClientStatus {
    /// The client's PID, as its bridge gave it.
    pub pid: i32,
    /// Its command name, as given or read from the process table.
    pub command: Option<String>,
    /// The leader of the client's own run of the server (per-client servers).
    pub run_pid: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastExit {
    pub code: Option<i32>,
    /// e.g. `SIGKILL`.
    pub signal: Option<String>,
    /// RFC 3339.
    pub at: String,
    /// The run's outcome as the ledger spells it (`exited`, `crashed`, `spawn_failed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Ping,
            Request::Status {
                names: vec!["kb".into()],
            },
            Request::Restart {
                target: Target {
                    names: vec![],
                    all: true,
                },
                wait: false,
            },
            Request::Run {
                name: "daily".into(),
                wait: true,
            },
            Request::Reload,
            Request::Shutdown,
        ];
        for request in requests {
            let line = encode_request(&request);
            assert_eq!(line.last(), Some(&b'\n'));
            let decoded = decode_request(&line[..line.len() - 1]).expect("decodes");
            assert_eq!(decoded, request);
        }
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let r = decode_request(br#"{"version":1,"op":"stop","names":["a"]}"#).expect("ok");
        assert_eq!(
            r,
            Request::Stop {
                target: Target {
                    names: vec!["a".into()],
                    all: false
                },
                wait: true
            }
        );
    }

    #[test]
    fn bad_requests_are_named() {
        for (line, code) in [
            (&b"garbage"[..], ErrorCode::BadRequest),
            (b"[1,2]", ErrorCode::BadRequest),
            (br#"{"op":"ping"}"#, ErrorCode::BadRequest),
            (br#"{"version":2,"op":"ping"}"#, ErrorCode::VersionMismatch),
            (
                br#"{"version":"1","op":"ping"}"#,
                ErrorCode::VersionMismatch,
            ),
            (br#"{"version":1,"op":"explode"}"#, ErrorCode::BadRequest),
            (br#"{"version":1}"#, ErrorCode::BadRequest),
            (br#"{"version":1,"op":"ping","x":1}"#, ErrorCode::BadRequest),
            (
                br#"{"version":1,"op":"status","names":[],"bogus":1}"#,
                ErrorCode::BadRequest,
            ),
            (br#"{"version":1,"op":"run"}"#, ErrorCode::BadRequest),
            (
                br#"{"version":1,"op":"status","names":"kb"}"#,
                ErrorCode::BadRequest,
            ),
            (
                b"{\"version\":1,\"op\":\"ping\"\xff}",
                ErrorCode::BadRequest,
            ),
        ] {
            let err = decode_request(line).expect_err(&String::from_utf8_lossy(line));
            assert_eq!(err.code, code, "{}", String::from_utf8_lossy(line));
        }
        let err = decode_request(br#"{"version":7,"op":"ping"}"#).expect_err("mismatch");
        assert!(err.message.contains("restart paiosd"), "{}", err.message);
    }

    #[test]
    fn responses_round_trip_and_report_versions() {
        let response = Response::Ok(Reply::Pong {
            version: "0.1.0".into(),
            pid: 7,
            ledger: Some(LedgerStats {
                written: 3,
                pending: 2,
                dropped: 1,
                last_error: Some("database is locked".into()),
            }),
        });
        let line = encode_response(&response);
        assert_eq!(
            decode_response(&line[..line.len() - 1]).expect("decodes"),
            response
        );
        // An older paiosd says nothing about its ledger; that is not an error.
        assert_eq!(
            decode_response(br#"{"version":1,"ok":{"kind":"pong","version":"0.0.1","pid":7}}"#),
            Ok(Response::Ok(Reply::Pong {
                version: "0.0.1".into(),
                pid: 7,
                ledger: None
            }))
        );
        assert_eq!(
            decode_response(br#"{"version":1,"ok":{"kind":"status","services":[]}}"#),
            Ok(Response::Ok(Reply::Status {
                services: vec![],
                ledger: None
            }))
        );
        let err = decode_response(br#"{"version":9,"ok":{"kind":"new_thing"}}"#).expect_err("v9");
        assert!(err.contains("version 9"), "{err}");
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::TooLarge,
            ErrorCode::VersionMismatch,
            ErrorCode::UnknownService,
            ErrorCode::NotApplicable,
            ErrorCode::Busy,
            ErrorCode::ConfigInvalid,
            ErrorCode::Failed,
            ErrorCode::ShuttingDown,
            ErrorCode::PermissionDenied,
            ErrorCode::Timeout,
            ErrorCode::Overloaded,
        ] {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        let err = Response::error(ErrorCode::Overloaded, "x");
        let line = encode_response(&err);
        let text = String::from_utf8(line).expect("utf8");
        assert!(text.contains(r#""code":"overloaded""#), "{text}");
    }
}
