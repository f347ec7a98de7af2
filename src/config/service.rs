//! One `services.d/NAME.toml`: every key of DESIGN.md's service file, its type, its
//! default and the checks that only make sense per file (exactly one of `command`
//! and `shell`, task-only keys, one health probe).
//!
//! Checks across files (`after` naming other services, cycles) happen in
//! `graph.rs` once every file has been read. A file with any error yields no
//! service, so a half-understood file never starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::expand::EnvLookup;
use super::reader::{Ctx, Field, Section};
use super::schedule;
use super::{
    probe, BackoffConfig, ConfigError, HealthConfig, LimitConfig, LogSettings, McpConfig,
    McpEndpoint, McpShare, McpTransport, MemoryConfig, OnFailure, Probe, RestartConfig,
    RestartPolicy, ServiceConfig, StopConfig, TaskConfig,
};
use crate::process;

/// A service file that read cleanly, with where each `after` entry was written so
/// cross-file errors can point at it.
pub(crate) struct Parsed {
    pub svc: ServiceConfig,
    /// `(line, column)` of each entry of `svc.after`, in the same order.
    pub after_at: Vec<(usize, usize)>,
}

const ROOT_KEYS_HELP: &str = "e.g. command = [\"node\", \"server.js\"] or shell = \"./run.sh\"";

/// Reads one service file. Returns the service when the file has no errors.
pub(crate) fn parse(
    name: &str,
    file: &Path,
    text: &str,
    global_logs: LogSettings,
    env: EnvLookup<'_>,
) -> (Option<Parsed>, Vec<ConfigError>) {
    let ctx = Ctx::new(file, text, env);
    if text.trim().is_empty() {
        ctx.error(
            None,
            "",
            "the file is empty: a service needs `command` or `shell`",
            Some(ROOT_KEYS_HELP.to_string()),
        );
        return (None, ctx.into_errors());
    }
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            ctx.syntax_error(&e);
            return (None, ctx.into_errors());
        }
    };
    let root = Section::root(&ctx, doc.as_table());
    let parsed = read_root(name, file, &root, global_logs);
    root.finish(&misplaced_key);
    if ctx.has_errors() {
        return (None, ctx.into_errors());
    }
    (parsed, ctx.into_errors())
}

/// Where a key written at the top level probably belongs.
fn misplaced_key(key: &str) -> Option<String> {
    let section = match key {
        "policy" | "backoff" | "reset_after" => "restart",
        "signal" | "grace" | "stdin_grace" => "stop",
        "transport" | "url" | "share" | "max_line" => "mcp",
        "http" | "tcp" | "exec" | "interval" | "failures" | "start_period" | "on_failure"
        | "expect_status" => "health",
        "growth_alert" => "memory",
        "max_size" | "keep" | "timestamps" | "streams" => "logs",
        "cmd" | "args" | "argv" | "program" | "exec_start" => {
            return Some("did you mean `command`?".to_string())
        }
        "dir" | "workdir" | "working_directory" | "directory" => {
            return Some("did you mean `cwd`?".to_string())
        }
        "depends_on" | "requires" | "wants" | "needs" => {
            return Some("did you mean `after`?".to_string())
        }
        "cron" => return Some("did you mean `schedule`?".to_string()),
        _ => return None,
    };
    Some(format!("`{key}` belongs in the [{section}] table"))
}

fn read_root(
    name: &str,
    file: &Path,
    root: &Section<'_>,
    global_logs: LogSettings,
) -> Option<Parsed> {
    let argv = read_argv(root);
    let cwd = root.get("cwd").and_then(|f| {
        let path = f.expanded_str("\"~/projects/kb\"")?;
        if !Path::new(&path).is_absolute() {
            f.error_help(
                format!("`{path}` is not an absolute path (after `~` and `${{VAR}}` expansion)"),
                "e.g. cwd = \"~/projects/kb\" or \"/srv/kb\"",
            );
            return None;
        }
        if path.contains('\0') {
            f.error("contains a NUL character");
            return None;
        }
        Some(PathBuf::from(path))
    });
    let env = root.get("env").map(|f| read_env(&f)).unwrap_or_default();
    let enabled = root.get("enabled").and_then(|f| f.bool()).unwrap_or(true);
    let (after, after_at) = root
        .get("after")
        .map(|f| read_after(&f))
        .unwrap_or_default();

    let task = read_task(root);
    let is_task = root.get("schedule").is_some();

    let restart = match root.get("restart") {
        Some(f) => f.section().and_then(|s| read_restart(&s, is_task)),
        None => Some(default_restart(is_task)),
    };
    let stop = match root.get("stop") {
        Some(f) => f.section().and_then(|s| read_stop(&s)),
        None => Some(default_stop()),
    };
    let mcp = match root.get("mcp") {
        Some(f) if is_task => {
            f.error_help(
                "a task cannot be an MCP server: a task runs to completion",
                "remove `schedule` to make it a service, or remove [mcp]",
            );
            None
        }
        Some(f) => f.section().and_then(|s| read_mcp(&s)).map(Some),
        None => Some(None),
    };
    let mcp_table = root.get("mcp").is_some();
    let health = root.get("health").and_then(|f| {
        if is_task {
            f.error_help(
                "tasks have no health probes: a task runs to completion",
                "use `timeout` to bound a task's run",
            );
            return None;
        }
        let mcp = match &mcp {
            Some(Some(cfg)) => McpSeen::Valid(cfg),
            _ if mcp_table => McpSeen::Broken,
            _ => McpSeen::Absent,
        };
        f.section().and_then(|s| read_health(&s, mcp))
    });
    let memory = root
        .get("memory")
        .and_then(|f| f.section())
        .and_then(|s| read_memory(&s));
    let logs = match root.get("logs") {
        Some(f) => f.section().map(|s| read_logs(&s, global_logs)),
        None => Some(global_logs),
    };

    Some(Parsed {
        svc: ServiceConfig {
            name: name.to_string(),
            file: file.to_path_buf(),
            argv: argv?,
            cwd,
            env,
            enabled,
            after,
            restart: restart?,
            stop: stop?,
            health,
            memory,
            task: task?,
            logs: logs?,
            mcp: mcp?,
        },
        after_at,
    })
}

fn read_argv(root: &Section<'_>) -> Option<Vec<String>> {
    const COMMAND_EXAMPLE: &str = "[\"node\", \"server.js\", \"--port\", \"3001\"]";
    match (root.get("command"), root.get("shell")) {
        (Some(_), Some(shell)) => {
            shell.error_help(
                "`command` and `shell` cannot both be set",
                "keep `command` for an argv array, or `shell` for a /bin/sh command line",
            );
            None
        }
        (None, None) => {
            root.error(
                "command",
                "missing `command` or `shell`: a service needs one of them",
                Some(ROOT_KEYS_HELP.to_string()),
            );
            None
        }
        (Some(command), None) => command.expanded_array(true, COMMAND_EXAMPLE),
        (None, Some(shell)) => {
            let line = shell.expanded_str("\"./run.sh --verbose\"")?;
            if line.trim().is_empty() {
                shell.error_help("must not be empty", "e.g. shell = \"./run.sh --verbose\"");
                return None;
            }
            if line.contains('\0') {
                shell.error("contains a NUL character");
                return None;
            }
            Some(vec!["/bin/sh".to_string(), "-c".to_string(), line])
        }
    }
}

fn read_env(field: &Field<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(section) = field.section() else {
        return out;
    };
    for (name, value) in section.entries() {
        if name.is_empty() || name.contains(['=', '\0']) {
            value.error("an environment variable name must be non-empty, without `=` or NUL");
            continue;
        }
        if matches!(value.kind(), "an integer" | "a float" | "a boolean") {
            value.error_help(
                "expected a string",
                format!("quote it: {name} = \"…\" (environment values are strings)"),
            );
            continue;
        }
        if let Some(v) = value.expanded_str("\"production\"") {
            if v.contains('\0') {
                value.error("contains a NUL character");
                continue;
            }
            out.insert(name, v);
        }
    }
    out
}

fn read_after(field: &Field<'_>) -> (Vec<String>, Vec<(usize, usize)>) {
    let mut names = Vec::new();
    let mut at = Vec::new();
    let Some(elems) = field.str_array(false, "[\"embedding-server\"]") else {
        return (names, at);
    };
    for e in elems {
        if !crate::names::is_service_name(&e.value) {
            field.error_at(
                e.span.clone(),
                &e.key,
                format!(
                    "`{}` is not a service name (letters, digits, `-`, `_`)",
                    e.value
                ),
            );
            continue;
        }
        if names.contains(&e.value) {
            continue;
        }
        at.push(field.line_col(e.span.clone()));
        names.push(e.value);
    }
    (names, at)
}

/// The task keys; `Some(None)` for a service, `None` after an error.
fn read_task(root: &Section<'_>) -> Option<Option<TaskConfig>> {
    let schedule = root.get("schedule");
    let tz = root.get("tz");
    let timeout = root.get("timeout");
    let catch_up = root.get("catch_up");
    let retries = root.get("retries");
    let Some(schedule) = schedule else {
        let mut ok = true;
        for f in [tz, timeout, catch_up, retries].into_iter().flatten() {
            let key = f.key.clone();
            f.error_help(
                format!("`{key}` is only for tasks, and this file has no `schedule`"),
                "add schedule = \"0 7 * * *\" to make it a task, or remove the key",
            );
            ok = false;
        }
        return ok.then_some(None);
    };
    let expr = schedule
        .str("\"0 7 * * *\"")
        .and_then(|s| match schedule::parse_cron(s) {
            Ok(_) => Some(s.trim().to_string()),
            Err(e) => {
                match e.help {
                    Some(h) => schedule.error_help(e.message, h),
                    None => schedule.error(e.message),
                }
                None
            }
        });
    let tz = match tz {
        Some(f) => match f.str("\"Europe/Berlin\"") {
            Some(name) => match schedule::parse_tz(name) {
                Ok(_) => Some(Some(name.to_string())),
                Err(e) => {
                    match e.help {
                        Some(h) => f.error_help(e.message, h),
                        None => f.error(e.message),
                    }
                    None
                }
            },
            None => None,
        },
        None => Some(None),
    };
    let timeout = match timeout {
        Some(f) => f.duration(true, "\"30m\""),
        None => Some(std::time::Duration::from_secs(3600)),
    };
    let catch_up = match catch_up {
        Some(f) => f.bool(),
        None => Some(true),
    };
    let retries = match retries {
        Some(f) => f.u32(0, 100, "2"),
        None => Some(0),
    };
    Some(Some(TaskConfig {
        schedule: expr?,
        tz: tz?,
        timeout: timeout?,
        catch_up: catch_up?,
        retries: retries?,
    }))
}

pub(crate) fn default_restart(is_task: bool) -> RestartConfig {
    RestartConfig {
        policy: if is_task {
            RestartPolicy::Never
        } else {
            RestartPolicy::OnFailure
        },
        backoff: BackoffConfig {
            initial: std::time::Duration::from_millis(100),
            max: std::time::Duration::from_secs(60),
            factor: 2.0,
            jitter: 0.2,
        },
        reset_after: std::time::Duration::from_secs(60),
        limit: LimitConfig {
            burst: 10,
            window: std::time::Duration::from_secs(300),
            cooldown: std::time::Duration::from_secs(600),
        },
    }
}

pub(crate) fn default_stop() -> StopConfig {
    StopConfig {
        signal: libc::SIGTERM,
        grace: std::time::Duration::from_secs(10),
        stdin_grace: std::time::Duration::from_secs(2),
    }
}

fn read_restart(s: &Section<'_>, is_task: bool) -> Option<RestartConfig> {
    let mut cfg = default_restart(is_task);
    let mut ok = true;
    if let Some(f) = s.get("policy") {
        match f.choice(&[
            ("always", RestartPolicy::Always),
            ("on-failure", RestartPolicy::OnFailure),
            ("never", RestartPolicy::Never),
        ]) {
            Some(RestartPolicy::Always) if is_task => {
                f.error_help(
                    "a task cannot use policy \"always\": it runs to completion on its schedule",
                    "use \"on-failure\" (or `retries`) to run a failed task again, or remove `schedule` to make it a service",
                );
                ok = false;
            }
            Some(p) => cfg.policy = p,
            None => ok = false,
        }
    }
    if let Some(f) = s.get("backoff") {
        match f.section() {
            Some(b) => {
                let backoff = &mut cfg.backoff;
                if let Some(f) = b.get("initial") {
                    match f.duration(true, "\"100ms\"") {
                        Some(d) => backoff.initial = d,
                        None => ok = false,
                    }
                }
                if let Some(f) = b.get("max") {
                    match f.duration(true, "\"60s\"") {
                        Some(d) => backoff.max = d,
                        None => ok = false,
                    }
                }
                if let Some(f) = b.get("factor") {
                    match f.float(1.0, 100.0, "2.0") {
                        Some(v) => backoff.factor = v,
                        None => ok = false,
                    }
                }
                if let Some(f) = b.get("jitter") {
                    match f.float(0.0, 1.0, "0.2") {
                        Some(v) => backoff.jitter = v,
                        None => ok = false,
                    }
                }
                if ok && backoff.max < backoff.initial {
                    if let Some(f) = b.get("max").or_else(|| b.get("initial")) {
                        f.error_help(
                            format!(
                                "`max` ({}) is shorter than `initial` ({})",
                                crate::units::format_duration(backoff.max),
                                crate::units::format_duration(backoff.initial)
                            ),
                            "the delay grows from `initial` up to `max`",
                        );
                    }
                    ok = false;
                }
                b.finish(&|_| None);
            }
            None => ok = false,
        }
    }
    if let Some(f) = s.get("reset_after") {
        match f.duration(false, "\"60s\"") {
            Some(d) => cfg.reset_after = d,
            None => ok = false,
        }
    }
    if let Some(f) = s.get("limit") {
        match f.section() {
            Some(l) => {
                if let Some(f) = l.get("burst") {
                    match f.u32(1, 1_000_000, "10") {
                        Some(n) => cfg.limit.burst = n,
                        None => ok = false,
                    }
                }
                if let Some(f) = l.get("window") {
                    match f.duration(true, "\"5m\"") {
                        Some(d) => cfg.limit.window = d,
                        None => ok = false,
                    }
                }
                if let Some(f) = l.get("cooldown") {
                    match f.duration(true, "\"10m\"") {
                        Some(d) => cfg.limit.cooldown = d,
                        None => ok = false,
                    }
                }
                l.finish(&|_| None);
            }
            None => ok = false,
        }
    }
    s.finish(&|_| None);
    ok.then_some(cfg)
}

/// Signals a stop may use. Not SIGSTOP (it stops nothing) nor job-control or fault
/// signals that a service would not take as "exit now".
const STOP_SIGNALS: [i32; 9] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGKILL,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGABRT,
];

/// `SIGTERM`, `TERM` or `sigterm`, if it names a signal a stop may use. Names only,
/// as written: numbers differ between platforms.
fn stop_signal(name: &str) -> Option<i32> {
    if name.is_empty() || name.trim() != name || name.parse::<i64>().is_ok() {
        return None;
    }
    process::parse_signal(name).filter(|s| STOP_SIGNALS.contains(s))
}

fn read_stop(s: &Section<'_>) -> Option<StopConfig> {
    let mut cfg = default_stop();
    let mut ok = true;
    if let Some(f) = s.get("signal") {
        match f.str("\"SIGTERM\"") {
            Some(name) => match stop_signal(name) {
                Some(sig) => cfg.signal = sig,
                None => {
                    let names: Vec<String> = STOP_SIGNALS
                        .iter()
                        .map(|&s| process::signal_name(s))
                        .collect();
                    f.error_help(
                        format!("`{name}` is not a signal a stop can use"),
                        format!("one of {}", names.join(", ")),
                    );
                    ok = false;
                }
            },
            None => ok = false,
        }
    }
    if let Some(f) = s.get("grace") {
        match f.duration(false, "\"10s\"") {
            Some(d) => cfg.grace = d,
            None => ok = false,
        }
    }
    if let Some(f) = s.get("stdin_grace") {
        match f.duration(false, "\"2s\"") {
            Some(d) => cfg.stdin_grace = d,
            None => ok = false,
        }
    }
    s.finish(&|_| None);
    ok.then_some(cfg)
}

/// `[mcp]`: the transport decides which of the other keys apply and their defaults.
fn read_mcp(s: &Section<'_>) -> Option<McpConfig> {
    let mut ok = true;
    let transport = match s.get("transport") {
        Some(f) => f.choice(&[("stdio", McpTransport::Stdio), ("http", McpTransport::Http)]),
        None => {
            s.error(
                "transport",
                "an [mcp] table needs `transport`: \"stdio\" or \"http\"",
                Some(
                    "e.g. transport = \"stdio\" for a server spoken to on stdin and stdout".into(),
                ),
            );
            None
        }
    };
    let url = match (s.get("url"), transport) {
        (Some(f), Some(McpTransport::Stdio)) => {
            f.error_help(
                "`url` is only for transport = \"http\": a stdio server is spoken to on its stdin and stdout",
                "remove `url`, or set transport = \"http\"",
            );
            ok = false;
            None
        }
        (Some(f), _) => match f.str("\"http://127.0.0.1:3001/mcp\"") {
            Some(url) => match probe::parse_http_url(url) {
                Ok(_) => Some(url.to_string()),
                Err(e) => {
                    f.error(e);
                    ok = false;
                    None
                }
            },
            None => {
                ok = false;
                None
            }
        },
        (None, Some(McpTransport::Http)) => {
            s.error(
                "url",
                "transport = \"http\" needs `url`: where the server speaks Streamable HTTP",
                Some("e.g. url = \"http://127.0.0.1:3001/mcp\"".into()),
            );
            ok = false;
            None
        }
        (None, _) => None,
    };
    let share = match (s.get("share"), transport) {
        (Some(f), transport) => match f.choice(&[
            ("per-client", McpShare::PerClient),
            ("shared", McpShare::Shared),
        ]) {
            Some(McpShare::Shared) if transport == Some(McpTransport::Stdio) => {
                f.error_help(
                    "share = \"shared\" is not supported for a stdio server yet: paiosd cannot multiplex one server's stdin and stdout between clients",
                    "use share = \"per-client\" (one run of the server per client)",
                );
                None
            }
            Some(McpShare::PerClient) if transport == Some(McpTransport::Http) => {
                f.error_help(
                    "share = \"per-client\" does not apply to an http server: its one run serves every client at its URL",
                    "remove `share` (an http server is always \"shared\"), or use transport = \"stdio\"",
                );
                None
            }
            other => other,
        },
        (None, Some(McpTransport::Http)) => Some(McpShare::Shared),
        (None, _) => Some(McpShare::PerClient),
    };
    let max_line = match s.get("max_line") {
        Some(f) => f.size(1 << 10, "\"16MiB\""),
        None => Some(crate::mcp::DEFAULT_MAX_LINE),
    };
    s.finish(&|_| None);
    let cfg = McpConfig {
        transport: transport?,
        url,
        share: share?,
        max_line: max_line?,
    };
    ok.then_some(cfg)
}

/// What the file's `[mcp]` table is, for `[health] mcp = true`.
#[derive(Clone, Copy)]
enum McpSeen<'c> {
    Absent,
    /// Present with errors of its own, already reported.
    Broken,
    Valid(&'c McpConfig),
}

fn read_health(s: &Section<'_>, mcp: McpSeen<'_>) -> Option<HealthConfig> {
    let mut ok = true;
    // `mcp = false` is no probe at all; a wrongly typed `mcp` is an error here.
    let mcp_field = s.get("mcp").filter(|f| match f.bool() {
        Some(on) => on,
        None => {
            ok = false;
            false
        }
    });
    let probes: Vec<Field<'_>> = ["http", "tcp", "exec"]
        .into_iter()
        .filter_map(|k| s.get(k))
        .chain(mcp_field)
        .collect();
    let mut probe = None;
    match probes.as_slice() {
        [] if !ok => {}
        [] => {
            s.error(
                "http",
                "a [health] table needs one probe: `http`, `tcp`, `exec` or `mcp`",
                Some("e.g. http = \"http://127.0.0.1:3001/health\"".to_string()),
            );
            ok = false;
        }
        [f] if f.key.rsplit('.').next() == Some("mcp") => probe = read_mcp_probe(f, mcp),
        [f] if matches!(&mcp, McpSeen::Valid(c) if c.share == McpShare::PerClient) => {
            // No port or command belongs to one client's run: only the ping probes it.
            f.error_help(
                "a per-client MCP server runs once per client, and this probe cannot tell their runs apart",
                "probe each client's run with `mcp = true`",
            );
            ok = false;
        }
        [f] => probe = read_probe(f),
        [_, second, ..] => {
            second.error_help(
                "only one probe per service: `http`, `tcp`, `exec` or `mcp`",
                "keep the one that best shows the service is working",
            );
            ok = false;
        }
    }
    if let Some(f) = s.get("expect_status") {
        match f.u32(100, 599, "200") {
            Some(code) => match &mut probe {
                Some(Probe::Http { expect_status, .. }) => {
                    *expect_status = u16::try_from(code).ok()
                }
                Some(_) => {
                    f.error("`expect_status` only applies to `http` probes");
                    ok = false;
                }
                None => {}
            },
            None => ok = false,
        }
    }
    let mut cfg = HealthConfig {
        probe: Probe::Exec { argv: Vec::new() },
        interval: std::time::Duration::from_secs(10),
        timeout: std::time::Duration::from_secs(2),
        failures: 3,
        start_period: std::time::Duration::from_secs(30),
        on_failure: OnFailure::Restart,
    };
    if let Some(f) = s.get("interval") {
        match f.duration(true, "\"10s\"") {
            Some(d) => cfg.interval = d,
            None => ok = false,
        }
    }
    if let Some(f) = s.get("timeout") {
        match f.duration(true, "\"2s\"") {
            Some(d) => cfg.timeout = d,
            None => ok = false,
        }
    }
    if let Some(f) = s.get("failures") {
        match f.u32(1, 1000, "3") {
            Some(n) => cfg.failures = n,
            None => ok = false,
        }
    }
    if let Some(f) = s.get("start_period") {
        match f.duration(false, "\"30s\"") {
            Some(d) => cfg.start_period = d,
            None => ok = false,
        }
    }
    if let Some(f) = s.get("on_failure") {
        match f.choice(&[("restart", OnFailure::Restart), ("alert", OnFailure::Alert)]) {
            Some(v) => cfg.on_failure = v,
            None => ok = false,
        }
    }
    s.finish(&|_| None);
    cfg.probe = probe?;
    ok.then_some(cfg)
}

/// `mcp = true`: the ping goes over the service's own `[mcp]` transport.
fn read_mcp_probe(f: &Field<'_>, mcp: McpSeen<'_>) -> Option<Probe> {
    match mcp {
        McpSeen::Absent => {
            f.error_help(
                "`mcp = true` pings an MCP server, and this service has no [mcp] table",
                "add [mcp] with its `transport`, or probe with `http`, `tcp` or `exec`",
            );
            None
        }
        McpSeen::Broken => None,
        McpSeen::Valid(cfg) => match cfg.transport {
            McpTransport::Stdio => Some(Probe::Mcp(McpEndpoint::Stdio)),
            McpTransport::Http => {
                let url = cfg.url.as_deref().unwrap_or_default();
                match probe::parse_http_url(url) {
                    Ok(url) => Some(Probe::Mcp(McpEndpoint::Http(url))),
                    Err(e) => {
                        f.error(e);
                        None
                    }
                }
            }
        },
    }
}

fn read_probe(f: &Field<'_>) -> Option<Probe> {
    match f.key.rsplit('.').next() {
        Some("http") => {
            let url = f.str("\"http://127.0.0.1:3001/health\"")?;
            match probe::parse_http_url(url) {
                Ok(url) => Some(Probe::Http {
                    url,
                    expect_status: None,
                }),
                Err(e) => {
                    f.error(e);
                    None
                }
            }
        }
        Some("tcp") => {
            let addr = f.str("\"127.0.0.1:3001\"")?;
            match probe::parse_tcp_addr(addr) {
                Ok(addr) => Some(Probe::Tcp { addr }),
                Err(e) => {
                    f.error(e);
                    None
                }
            }
        }
        _ => f
            .expanded_array(true, "[\"pg_isready\", \"-q\"]")
            .map(|argv| Probe::Exec { argv }),
    }
}

fn read_memory(s: &Section<'_>) -> Option<MemoryConfig> {
    let mut ok = true;
    let mut cfg = MemoryConfig {
        limit: None,
        growth_alert: None,
        interval: std::time::Duration::from_secs(10),
        window: std::time::Duration::from_secs(3600),
    };
    if let Some(f) = s.get("limit") {
        match f.size(1 << 20, "\"1GiB\"") {
            Some(n) => cfg.limit = Some(n),
            None => ok = false,
        }
    }
    if let Some(f) = s.get("growth_alert") {
        match f.str("\"10MiB/h\"").map(crate::units::parse_rate) {
            Some(Ok(rate)) => cfg.growth_alert = Some(rate),
            Some(Err(e)) => {
                f.error(e);
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(f) = s.get("interval") {
        match f.duration(true, "\"10s\"") {
            Some(d) => cfg.interval = d,
            None => ok = false,
        }
    }
    if let Some(f) = s.get("window") {
        match f.duration(true, "\"1h\"") {
            Some(d) if d < cfg.interval => {
                f.error_help(
                    "`window` is shorter than `interval`: growth needs several samples",
                    "e.g. window = \"1h\" with interval = \"10s\"",
                );
                ok = false;
            }
            Some(d) => cfg.window = d,
            None => ok = false,
        }
    }
    s.finish(&|_| None);
    ok.then_some(cfg)
}

/// `[logs]`: each key given replaces the inherited value.
pub(crate) fn read_logs(s: &Section<'_>, inherited: LogSettings) -> LogSettings {
    let mut cfg = inherited;
    if let Some(n) = s.get("max_size").and_then(|f| f.size(1 << 10, "\"10MiB\"")) {
        cfg.max_size = n;
    }
    if let Some(n) = s.get("keep").and_then(|f| f.u32(0, 1000, "5")) {
        cfg.keep = n;
    }
    if let Some(b) = s.get("timestamps").and_then(|f| f.bool()) {
        cfg.timestamps = b;
    }
    if let Some(b) = s.get("streams").and_then(|f| f.bool()) {
        cfg.streams = b;
    }
    s.finish(&|_| None);
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signal_names() {
        assert_eq!(stop_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(stop_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(stop_signal("sigusr1"), Some(libc::SIGUSR1));
        for bad in [
            "SIGSTOP", "15", "+15", "SIG15", " TERM", "TERM ", "", "SIGFOO",
        ] {
            assert_eq!(stop_signal(bad), None, "{bad:?}");
        }
    }
}
