//! MCP through every real piece at once: the official Python SDK client (or the test
//! itself, as a client) starts the real `paiosctl mcp NAME` as its stdio server
//! command, the bridge reaches the real paiosd over its socket, and paiosd runs the
//! reference server `@modelcontextprotocol/server-everything`, over stdio (a run per
//! client) or Streamable HTTP (one always-on service). The exit paths: the client
//! gone, killed, or five at once; paiosd killed mid-request and the next one sweeping;
//! paiosd absent; hostile lines while another client is served.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::daemon::{alive, text, Daemon};
use crate::common::mcp_peers::{self, run_sdk_client, Everything};
use crate::common::{self, paiosctl_path, wait_until, GroupGuard, LineReader, TestDirs};

/// The SDK client's bound on a whole session (node starts slowly on a loaded machine).
const SESSION: Duration = Duration::from_secs(90);
/// How long one answer through the bridge may take.
const READ: Duration = Duration::from_secs(30);
/// `[stop]` of the per-client server: it ends by itself once its stdin closes, so
/// a run outliving its client by this much has not been stopped.
const STDIN_GRACE: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(3);
/// A run's end after its client's: within its stop sequence, with room for a loaded
/// machine.
const RUN_ENDS: Duration = Duration::from_secs(STDIN_GRACE.as_secs() + GRACE.as_secs() + 3);
const LONG_TOOL: &str = "trigger-long-running-operation";

fn toml_argv(argv: &[OsString]) -> String {
    let items: Vec<toml::Value> = argv
        .iter()
        .map(|a| toml::Value::String(a.to_string_lossy().into_owned()))
        .collect();
    toml::Value::Array(items).to_string()
}

/// server-everything over stdio, a run per client, `mcp` appended to its `[mcp]`.
fn stdio_service(everything: &Everything, mcp: &str) -> String {
    format!(
        "command = {}\n[stop]\ngrace = \"{}s\"\nstdin_grace = \"{}s\"\n[mcp]\ntransport = \"stdio\"\nshare = \"per-client\"\n{mcp}\n",
        toml_argv(&everything.stdio_argv()),
        GRACE.as_secs(),
        STDIN_GRACE.as_secs(),
    )
}

/// `paiosctl --state-dir … mcp NAME`, the command a client is configured with.
fn bridge_argv(dirs: &TestDirs, name: &str) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![paiosctl_path().into()];
    argv.extend(dirs.args().into_iter().map(OsString::from));
    argv.extend(["mcp", name].map(OsString::from));
    argv
}

/// A `paiosctl mcp` the test drives as its client, killed on drop.
struct Bridge {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<LineReader>,
    /// stdout left unread, for the client that never reads.
    raw_stdout: Option<ChildStdout>,
}

impl Bridge {
    fn start(dirs: &TestDirs, name: &str) -> Bridge {
        let mut bridge = Bridge::spawn(dirs, name);
        let stdout = bridge.raw_stdout.take().expect("stdout");
        bridge.stdout = Some(LineReader::new(stdout.into()));
        bridge
    }

    /// A bridge whose stdout nobody reads.
    fn spawn(dirs: &TestDirs, name: &str) -> Bridge {
        let argv = bridge_argv(dirs, name);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start paiosctl mcp");
        Bridge {
            stdin: child.stdin.take(),
            raw_stdout: child.stdout.take(),
            stdout: None,
            child,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stdin
            .as_mut()
            .expect("stdin open")
            .write_all(bytes)
            .expect("write to the bridge's stdin");
    }

    fn send_json(&mut self, value: &Value) {
        self.send(format!("{value}\n").as_bytes());
    }

    fn json(&self) -> Value {
        let line = self
            .stdout
            .as_ref()
            .expect("a read stdout")
            .line(READ)
            .expect("a line from the bridge within the read bound");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The next line that is not a notification (the server sends some of its own,
    /// such as `notifications/tools/list_changed`, whenever it likes).
    fn reply(&self) -> Value {
        loop {
            let line = self.json();
            if line.get("method").is_none() {
                return line;
            }
        }
    }

    /// Lines until the answer to `id`, keeping the notifications on the way.
    fn answer(&self, id: &Value) -> (Value, Vec<Value>) {
        let mut notes = Vec::new();
        loop {
            let line = self.json();
            if &line["id"] == id && line.get("method").is_none() {
                return (line, notes);
            }
            notes.push(line);
        }
    }

    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send_json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.answer(&json!(id)).0
    }

    /// `initialize` and `notifications/initialized`, as a client starts.
    fn handshake(&mut self) -> Value {
        let init = self.request(
            0,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "paios-e2e", "version": "1"}}),
        );
        assert_eq!(
            init["result"]["serverInfo"]["name"], "mcp-servers/everything",
            "{init}"
        );
        self.send_json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        init
    }

    /// server-everything's echo of `message`, as it answered.
    fn echo(&mut self, id: u64, message: &str) -> String {
        let reply = self.request(
            id,
            "tools/call",
            json!({"name": "echo", "arguments": {"message": message}}),
        );
        reply["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("echo answered {reply}"))
            .to_string()
    }

    fn assert_echoes(&mut self, id: u64, message: &str) {
        assert_eq!(self.echo(id, message), format!("Echo: {message}"));
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The exit code, which must come within `bound`.
    fn exit_within(&mut self, bound: Duration) -> i32 {
        let mut status = None;
        let exited = wait_until(bound, || {
            status = self.child.try_wait().expect("wait for the bridge");
            status.is_some()
        });
        assert!(exited, "the bridge did not exit within {bound:?}");
        status
            .and_then(|s| s.code())
            .expect("an exit code, not a signal")
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(client pid, run pid)` of every client of `name`, each run's group recorded for
/// cleanup.
fn clients(d: &Daemon, name: &str) -> Vec<(i64, Option<i32>)> {
    let row = d.row(name);
    let clients: Vec<(i64, Option<i32>)> = row["mcp"]["clients"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} has no mcp clients field: {row}"))
        .iter()
        .map(|c| {
            let run = c["run_pid"].as_i64().map(|p| p as i32);
            (c["pid"].as_i64().unwrap_or(-1), run)
        })
        .collect();
    for run in clients.iter().filter_map(|c| c.1) {
        d.guard.borrow_mut().group(run);
    }
    clients
}

/// The run PIDs of `name`'s clients, once there are `n` clients each with a run.
fn wait_runs(d: &Daemon, name: &str, n: usize) -> Vec<i32> {
    let mut runs = Vec::new();
    let ok = wait_until(READ, || {
        let now = clients(d, name);
        runs = now.iter().filter_map(|c| c.1).collect();
        now.len() == n && runs.len() == n
    });
    assert!(ok, "wanted {n} client runs of {name}: {}", d.row(name));
    runs
}

fn no_clients(d: &Daemon, name: &str) -> bool {
    d.row(name)["mcp"]["clients"] == json!([])
}

fn group_gone(pgid: i32) -> bool {
    !paios::process::group_alive(pgid)
}

/// The group a run leads, and every process in it now, recorded for cleanup.
fn group_of(d: &Daemon, run: i32) -> (i32, Vec<i32>) {
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(run)))
        .expect("the run's group")
        .as_raw();
    let members = paios::process::group_members(pgid);
    let mut guard = d.guard.borrow_mut();
    guard.group(pgid);
    for &pid in &members {
        guard.pid(pid);
    }
    (pgid, members)
}

fn ledger(d: &Daemon) -> Vec<Value> {
    let out = d.ctl(&["--json", "ledger"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .flat_map(|v: Value| match v {
            Value::Array(items) => items,
            one => vec![one],
        })
        .collect()
}

/// The ledger's record of the run led by `pid`, once it is there.
fn run_record(d: &Daemon, pid: i32) -> Value {
    let mut record = None;
    let found = wait_until(Duration::from_secs(10), || {
        record = ledger(d).into_iter().find(|r| r["pid"] == pid);
        record.is_some()
    });
    assert!(found, "no ledger record of run {pid}: {:?}", ledger(d));
    record.expect("record")
}

/// The groups `state.sqlite` holds as live runs.
fn live_pgids(d: &Daemon) -> Vec<i32> {
    let db = rusqlite::Connection::open(d.dirs.state.join("state.sqlite")).expect("open state");
    let mut stmt = db.prepare("SELECT pgid FROM live_runs").expect("query");
    let rows = stmt
        .query_map([], |r| r.get::<_, i32>(0))
        .expect("rows")
        .collect::<Result<Vec<_>, _>>()
        .expect("pgids");
    rows
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{value} is not an array"))
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// What every SDK session below must have seen: initialize, the tools, the echo, and
/// the long-running tool's three progress notifications before its answer.
fn assert_full_session(summary: &Value) {
    assert_eq!(summary["server"], "mcp-servers/everything", "{summary}");
    assert_eq!(summary["ping"], true, "{summary}");
    let tools = strings(&summary["tools"]);
    for tool in ["echo", LONG_TOOL] {
        assert!(tools.contains(&tool.to_string()), "no {tool} in {tools:?}");
    }
    assert_eq!(
        summary["echo"], "Echo: hello from the sdk client",
        "{summary}"
    );
    assert_eq!(summary["progress"], 3, "{summary}");
    assert_eq!(
        summary["long_running"],
        "Long running operation completed. Duration: 0.3 seconds, Steps: 3.",
        "{summary}"
    );
}

const SDK_STEPS: [&str; 4] = ["--long-steps", "3", "--long-duration", "0.3"];

#[test]
fn the_sdk_client_reaches_a_per_client_stdio_server_through_the_bridge() {
    let (Some(everything), Some(_)) = (mcp_peers::everything(), mcp_peers::venv_python()) else {
        return;
    };
    let d = Daemon::start(&[("everything", &stdio_service(&everything, ""))]);
    let row = d.row("everything");
    assert_eq!(row["state"], "idle", "{row}");
    assert_eq!(row["mcp"]["transport"], "stdio", "{row}");
    assert_eq!(row["mcp"]["share"], "per-client", "{row}");

    let cmd = mcp_peers::sdk_client(SDK_STEPS, bridge_argv(&d.dirs, "everything"))
        .expect("the venv was found above");
    let run = run_sdk_client(cmd, SESSION);
    assert_full_session(&run.summary());

    // The client's run was started for it, recorded with the client's PID, and ended
    // with the client.
    let mut started = None;
    assert!(wait_until(Duration::from_secs(10), || {
        started = ledger(&d)
            .into_iter()
            .find(|r| r["outcome"] == "mcp_client");
        started.is_some()
    }));
    let started = started.expect("the mcp_client event");
    let detail = started["detail"].as_str().unwrap_or_default().to_string();
    assert_eq!(started["service"], "everything", "{started}");
    let run_pid: i32 = detail
        .strip_prefix("run pid ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no run pid in {detail:?}"));
    d.guard.borrow_mut().pid(run_pid);
    assert!(detail.contains("for MCP client pid "), "{detail}");
    assert!(
        wait_until(RUN_ENDS, || group_gone(run_pid)),
        "the run outlived its client"
    );
    assert!(wait_until(RUN_ENDS, || no_clients(&d, "everything")));
    let record = run_record(&d, run_pid);
    assert_eq!(record["service"], "everything", "{record}");
    // It ended by itself once its stdin closed, and its exit status was collected.
    assert_eq!(record["outcome"], "stopped", "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["signal"], Value::Null, "{record}");
    assert!(
        record["context"]
            .as_str()
            .is_some_and(|c| c.contains("client pid ")),
        "{record}"
    );
    assert!(live_pgids(&d).is_empty());
    assert_eq!(d.row("everything")["state"], "idle");

    // A second session gets a run of its own.
    let cmd = mcp_peers::sdk_client(["--steps", "echo"], bridge_argv(&d.dirs, "everything"))
        .expect("venv");
    let summary = run_sdk_client(cmd, SESSION).summary();
    assert_eq!(summary["echo"], "Echo: hello from the sdk client");
    let starts = ledger(&d)
        .into_iter()
        .filter(|r| r["outcome"] == "mcp_client")
        .count();
    assert_eq!(starts, 2, "one run per session");
}

#[test]
fn the_sdk_client_reaches_an_always_on_http_server_through_the_bridge() {
    let (Some(everything), Some(_)) = (mcp_peers::everything(), mcp_peers::venv_python()) else {
        return;
    };
    let port = mcp_peers::free_port();
    let url = Everything::http_url(port);
    let service = format!(
        "command = {}\nenv = {{ PORT = \"{port}\" }}\n[stop]\ngrace = \"{}s\"\n[mcp]\ntransport = \"http\"\nurl = {}\n",
        toml_argv(&everything.0.argv(["streamableHttp"])),
        GRACE.as_secs(),
        common::toml_str(&url)
    );
    let d = Daemon::start(&[("everything", &service)]);
    let row = d.wait_state("everything", "running", READ);
    let server = row["pid"].as_i64().expect("the server's pid");
    assert_eq!(row["mcp"]["transport"], "http", "{row}");
    assert_eq!(row["mcp"]["url"], url.as_str(), "{row}");
    assert!(
        wait_until(Duration::from_secs(60), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "server-everything never listened on {port}"
    );

    for _ in 0..2 {
        let cmd = mcp_peers::sdk_client(SDK_STEPS, bridge_argv(&d.dirs, "everything"))
            .expect("the venv was found above");
        assert_full_session(&run_sdk_client(cmd, SESSION).summary());
        // The client was counted while connected and is gone with it; the one server
        // serves every session and stays up.
        assert!(wait_until(Duration::from_secs(5), || no_clients(
            &d,
            "everything"
        )));
        let row = d.row("everything");
        assert_eq!(row["state"], "running", "{row}");
        assert_eq!(row["pid"], server, "{row}");
    }

    // While a client is connected, status shows it (a presence, no run of its own).
    let mut bridge = Bridge::start(&d.dirs, "everything");
    bridge.handshake();
    bridge.assert_echoes(1, "counted");
    let now = clients(&d, "everything");
    assert_eq!(now, vec![(i64::from(std::process::id()), None)]);
    bridge.close_stdin();
    assert_eq!(bridge.exit_within(Duration::from_secs(6)), 0);
    assert!(wait_until(Duration::from_secs(5), || no_clients(
        &d,
        "everything"
    )));
}

#[test]
fn five_clients_at_once_get_five_runs_each_ended_with_its_client() {
    let Some(everything) = mcp_peers::everything() else {
        return;
    };
    let d = Daemon::start(&[("everything", &stdio_service(&everything, ""))]);
    let mut bridges: Vec<Bridge> = (0..5)
        .map(|_| Bridge::start(&d.dirs, "everything"))
        .collect();
    for (i, b) in bridges.iter_mut().enumerate() {
        b.handshake();
        b.assert_echoes(1, &format!("client {i}"));
    }
    let runs = wait_runs(&d, "everything", 5);
    let groups: Vec<(i32, Vec<i32>)> = runs.iter().map(|&r| group_of(&d, r)).collect();
    let mut pgids: Vec<i32> = groups.iter().map(|g| g.0).collect();
    pgids.sort_unstable();
    pgids.dedup();
    assert_eq!(pgids.len(), 5, "five groups: {groups:?}");
    for (run, (pgid, _)) in runs.iter().zip(&groups) {
        assert_eq!(run, pgid, "each run leads its own group");
    }
    let mut live = live_pgids(&d);
    live.sort_unstable();
    assert_eq!(live, pgids, "state.sqlite holds all five before they end");
    // Which run is whose: the bridge's own answers still come from its run only.
    for (i, b) in bridges.iter_mut().enumerate() {
        b.assert_echoes(2, &format!("again {i}"));
    }

    // Each client exits in turn: its bridge ends, then its run within its grace;
    // the others keep serving.
    let mut ended = Vec::new();
    for _ in 0..5 {
        let mut bridge = bridges.remove(0);
        bridge.close_stdin();
        assert_eq!(bridge.exit_within(Duration::from_secs(6)), 0);
        drop(bridge);
        let mut left = Vec::new();
        assert!(
            wait_until(RUN_ENDS, || {
                left = clients(&d, "everything")
                    .into_iter()
                    .filter_map(|c| c.1)
                    .collect();
                left.len() == bridges.len()
            }),
            "a run outlived its client: {left:?}"
        );
        let gone: Vec<i32> = runs.iter().copied().filter(|r| !left.contains(r)).collect();
        let newly: Vec<i32> = gone
            .iter()
            .copied()
            .filter(|r| !ended.contains(r))
            .collect();
        assert_eq!(newly.len(), 1, "one run ended with one client: {newly:?}");
        let pgid = newly[0];
        assert!(
            wait_until(RUN_ENDS, || group_gone(pgid)),
            "run {pgid}'s group outlived its client"
        );
        ended.push(pgid);
        for b in bridges.iter_mut() {
            b.assert_echoes(3, "still served");
        }
    }
    // Zero processes of them left, by every PID and group recorded.
    for (pgid, members) in &groups {
        assert!(group_gone(*pgid), "group {pgid} left");
        for &pid in members {
            assert!(!alive(pid), "process {pid} of group {pgid} left");
        }
    }
    assert!(live_pgids(&d).is_empty());
    assert!(no_clients(&d, "everything"));
    assert_eq!(d.row("everything")["state"], "idle");
    for run in runs {
        let record = run_record(&d, run);
        assert_eq!(record["service"], "everything", "{record}");
    }
}

/// The children of `parent` running `paiosctl … mcp`, found by the parent's PID.
fn bridges_of(parent: i32) -> Vec<i32> {
    paios::process::list_processes()
        .into_iter()
        .filter(|p| p.ppid == parent && p.argv.iter().any(|a| a == "mcp"))
        .map(|p| p.pid)
        .collect()
}

#[test]
fn a_client_killed_with_sigkill_takes_its_bridge_and_its_run_with_it() {
    let (Some(everything), Some(_)) = (mcp_peers::everything(), mcp_peers::venv_python()) else {
        return;
    };
    let d = Daemon::start(&[("everything", &stdio_service(&everything, ""))]);
    let stderr = std::fs::File::create(d.dirs.file("sdk.err")).expect("stderr file");
    // A long call keeps the SDK client in its session until it is killed.
    let mut cmd = mcp_peers::sdk_client(
        [
            "--steps",
            "long",
            "--long-steps",
            "60",
            "--long-duration",
            "60",
            "--timeout",
            "120",
        ],
        bridge_argv(&d.dirs, "everything"),
    )
    .expect("venv");
    let mut client = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .expect("start the SDK client");
    let client_pid = client.id() as i32;
    let mut guard = GroupGuard::new();
    guard.group(client_pid);

    let mut run = None;
    let connected = wait_until(SESSION, || {
        run = clients(&d, "everything")
            .into_iter()
            .find(|c| c.0 == i64::from(client_pid))
            .and_then(|c| c.1);
        run.is_some()
    });
    assert!(
        connected,
        "the SDK client never connected: {}",
        std::fs::read_to_string(d.dirs.file("sdk.err")).unwrap_or_default()
    );
    let run = run.expect("run");
    let (pgid, members) = group_of(&d, run);
    // The SDK starts its server command in a session of its own: the bridge is found
    // by its parent's PID and recorded on its own.
    let bridge = bridges_of(client_pid);
    assert_eq!(bridge.len(), 1, "one bridge under the client: {bridge:?}");
    let bridge = bridge[0];
    guard.pid(bridge);
    // The long call is under way: the run has been asked for it.
    assert!(
        wait_until(READ, || ledger(&d)
            .iter()
            .any(|r| r["outcome"] == "mcp_client")),
        "no run started"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the client");
    let killed = Instant::now();
    let _ = client.wait();
    assert!(
        wait_until(Duration::from_secs(1), || !alive(bridge)),
        "the bridge {bridge} outlived its client by {:?}",
        killed.elapsed()
    );
    assert!(
        wait_until(RUN_ENDS, || group_gone(pgid)),
        "the run outlived its client's bridge"
    );
    for pid in members {
        assert!(!alive(pid), "process {pid} of the run left");
    }
    assert!(wait_until(Duration::from_secs(5), || no_clients(
        &d,
        "everything"
    )));
    let record = run_record(&d, run);
    assert!(
        record["context"]
            .as_str()
            .is_some_and(|c| c.contains(&format!("client pid {client_pid}"))),
        "{record}"
    );
    assert!(live_pgids(&d).is_empty());
}

#[test]
fn paiosd_killed_mid_request_errors_the_call_and_the_next_paiosd_sweeps_the_run() {
    let Some(everything) = mcp_peers::everything() else {
        return;
    };
    // A process of the run's own beside the server, so that something of the run
    // outlives paiosd (the server itself dies with it) for the next paiosd to sweep.
    let argv: Vec<String> = everything
        .stdio_argv()
        .iter()
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    let service = format!(
        "shell = {}\n[stop]\ngrace = \"{}s\"\n[mcp]\ntransport = \"stdio\"\n",
        common::toml_str(&format!("sleep 1000 & exec {}", argv.join(" "))),
        GRACE.as_secs()
    );
    let mut d = Daemon::start(&[("everything", &service)]);
    let mut bridge = Bridge::start(&d.dirs, "everything");
    bridge.handshake();
    bridge.assert_echoes(1, "before");
    let run = wait_runs(&d, "everything", 1)[0];
    let (pgid, _) = group_of(&d, run);
    bridge.send_json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": LONG_TOOL, "arguments": {"duration": 60, "steps": 60},
                   "_meta": {"progressToken": "p7"}}}));
    let first = bridge.json();
    assert_eq!(first["method"], "notifications/progress", "{first}");

    d.kill9();
    let killed = Instant::now();
    let (answer, _) = bridge.answer(&json!(7));
    assert_eq!(answer["error"]["code"], -32000, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("paiosd"), "{message}");
    let left = Duration::from_secs(2).saturating_sub(killed.elapsed());
    assert_eq!(bridge.exit_within(left), 1);
    assert!(
        !group_gone(pgid),
        "nothing of the run outlived paiosd, so there is nothing to sweep"
    );

    d.launch();
    assert!(
        wait_until(Duration::from_secs(15), || group_gone(pgid)),
        "the next paiosd did not sweep the run's group"
    );
    let mut entries = Vec::new();
    let swept = wait_until(Duration::from_secs(10), || {
        entries = ledger(&d);
        entries.iter().any(|r| {
            r["outcome"] == "swept"
                && r["service"] == "everything"
                && r["detail"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("pid {run} ")))
        })
    });
    assert!(swept, "no sweep of run {run} in the ledger: {entries:?}");
    assert!(live_pgids(&d).is_empty());
    // The client starts the bridge again; the new paiosd serves it.
    let mut again = Bridge::start(&d.dirs, "everything");
    again.handshake();
    again.assert_echoes(1, "after");
    wait_runs(&d, "everything", 1);
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn with_paiosd_absent_initialize_is_an_error_and_the_bridge_exits_at_once() {
    let Some(everything) = mcp_peers::everything() else {
        return;
    };
    // Never started, and killed leaving its sockets behind: both are "not running".
    let never = TestDirs::new();
    never.write_service("everything", &stdio_service(&everything, ""));
    let mut killed = Daemon::start(&[("everything", &stdio_service(&everything, ""))]);
    killed.kill9();
    assert!(paios::mcp::socket_path(&killed.dirs.state, "everything").exists());

    for dirs in [&never, &killed.dirs] {
        let mut bridge = Bridge::start(dirs, "everything");
        let asked = Instant::now();
        bridge.send_json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "paios-e2e", "version": "1"}}}));
        let reply = bridge.json();
        assert_eq!(reply["id"], 0, "{reply}");
        assert_eq!(reply["error"]["code"], -32000, "{reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("paiosd is not running"), "{message}");
        let left = Duration::from_secs(1).saturating_sub(asked.elapsed());
        assert_eq!(bridge.exit_within(left), 1);

        // The SDK client is told so and fails, well before its own timeout.
        if let Some(cmd) =
            mcp_peers::sdk_client(["--timeout", "30"], bridge_argv(dirs, "everything"))
        {
            let run = run_sdk_client(cmd, SESSION);
            assert_eq!(run.status.code(), Some(1), "{run:?}");
            assert!(run.stdout.is_empty(), "{run:?}");
            assert!(
                run.stderr.contains("paiosd is not running"),
                "{}",
                run.stderr
            );
            assert!(!run.stderr.contains("no answer within"), "{}", run.stderr);
        }
    }
}

/// Bytes waiting in a pipe (`FIONREAD`).
fn unread(stdout: &ChildStdout) -> i32 {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `queued`, which outlives the call.
    let rc = unsafe { libc::ioctl(stdout.as_raw_fd(), libc::FIONREAD, &mut queued) };
    if rc == 0 {
        queued
    } else {
        0
    }
}

#[test]
fn hostile_input_through_the_bridge_leaves_another_client_unaffected() {
    let Some(everything) = mcp_peers::everything() else {
        return;
    };
    let d = Daemon::start(&[(
        "everything",
        &stdio_service(&everything, "max_line = \"4KiB\""),
    )]);
    let mut other = Bridge::start(&d.dirs, "everything");
    other.handshake();
    other.assert_echoes(1, "before");
    let mut hostile = Bridge::start(&d.dirs, "everything");
    hostile.handshake();
    let mut next = 10;
    let mut other_echoes = |other: &mut Bridge, what: &str| {
        next += 1;
        other.assert_echoes(next, what);
    };

    // Not JSON, and not UTF-8: parse errors from the bridge, nothing sent on.
    hostile.send(b"this is not json\n");
    let reply = hostile.reply();
    assert_eq!(
        (&reply["id"], &reply["error"]["code"]),
        (&Value::Null, &json!(-32700)),
        "{reply}"
    );
    other_echoes(&mut other, "after not json");
    hostile.send(b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/\xff\xfe\"}\n");
    let reply = hostile.reply();
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    other_echoes(&mut other, "after invalid utf-8");

    // Over the cap: an error for its id, and the next line goes through.
    hostile.send_json(&json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "x".repeat(8192)}}}));
    let reply = hostile.reply();
    assert_eq!(reply["id"], 6, "{reply}");
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("4096"), "{message}");
    hostile.assert_echoes(7, "under the cap");
    other_echoes(&mut other, "after the long line");
    let runs = wait_runs(&d, "everything", 2);

    // 10 000 pings in one burst: every one answered, in order, while the other
    // client is served.
    const BURST: usize = 10_000;
    let mut stdin = hostile.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let mut burst = Vec::new();
        for id in 0..BURST {
            burst.extend_from_slice(
                format!("{{\"jsonrpc\":\"2.0\",\"id\":\"b{id}\",\"method\":\"ping\"}}\n")
                    .as_bytes(),
            );
        }
        stdin.write_all(&burst).expect("write the burst");
        stdin
    });
    other_echoes(&mut other, "during the burst");
    for id in 0..BURST {
        let reply = hostile.reply();
        assert_eq!(reply["id"], format!("b{id}"), "{reply}");
        assert_eq!(reply["result"], json!({}), "{reply}");
    }
    hostile.stdin = Some(writer.join().expect("writer"));
    other_echoes(&mut other, "after the burst");
    hostile.assert_echoes(8, "after the burst");
    assert_eq!(clients(&d, "everything").len(), 2);

    // A client that never reads its stdout: its bridge, its connection and its run
    // back up; the other client, paiosd and status carry on.
    let mut deaf = Bridge::spawn(&d.dirs, "everything");
    let mut stdin = deaf.stdin.take().expect("stdin");
    let flood = std::thread::spawn(move || {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "deaf", "version": "1"}}});
        let mut lines =
            format!("{init}\n{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}}\n");
        for id in 1..=4000 {
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "z".repeat(3000)}}});
            lines.push_str(&format!("{call}\n"));
        }
        // Blocks once everything between here and the unread stdout is full; ends
        // when the bridge goes.
        let _ = stdin.write_all(lines.as_bytes());
    });
    let stdout = deaf.raw_stdout.take().expect("stdout");
    assert!(
        wait_until(READ, || unread(&stdout) >= 32 * 1024),
        "the deaf client's stdout never backed up ({} bytes)",
        unread(&stdout)
    );
    wait_runs(&d, "everything", 3);
    for i in 0..20 {
        other_echoes(&mut other, &format!("beside the deaf client {i}"));
    }
    assert_eq!(d.ctl(&["ping"]).status.code(), Some(0));
    // Still backed up to the client: its 12 MB of requests are not all taken.
    assert!(
        !flood.is_finished(),
        "the deaf client's requests all went through"
    );
    let deaf_run = clients(&d, "everything")
        .into_iter()
        .filter_map(|c| c.1)
        .find(|r| !runs.contains(r))
        .expect("the deaf client's run");
    // The client goes (its end of the pipe closes): the bridge ends, then its run.
    drop(stdout);
    assert_eq!(deaf.exit_within(Duration::from_secs(1)), 1);
    flood.join().expect("flood");
    assert!(
        wait_until(RUN_ENDS, || group_gone(deaf_run)),
        "the deaf client's run outlived it"
    );
    let mut left = wait_runs(&d, "everything", 2);
    left.sort_unstable();
    let mut runs = runs;
    runs.sort_unstable();
    assert_eq!(left, runs, "the other clients kept their runs");
    other_echoes(&mut other, "at the end");
    hostile.assert_echoes(9, "at the end");
}

/// A server whose main thread exits at once (`pthread_exit`), leaving the work to
/// another thread: the process table shows its leader as a zombie while it runs. Once
/// its stdin closes, that thread works on for a while, leaves a mark and exits 7.
const MAIN_THREAD_EXITS_FIRST: &str = r#"
import ctypes, os, sys, threading, time
def work():
    sys.stdin.buffer.read()
    time.sleep(1.0)
    with open(os.environ["MARK"], "w") as f:
        f.write("done\n")
    os._exit(7)
threading.Thread(target=work).start()
ctypes.CDLL(None).pthread_exit(None)
"#;

#[test]
fn a_run_whose_main_thread_exits_first_is_waited_for_until_it_has_ended() {
    let dirs = TestDirs::new();
    let mark = dirs.file("mark");
    let script = dirs.file("server.py");
    std::fs::write(&script, MAIN_THREAD_EXITS_FIRST).expect("write the server");
    dirs.write_service(
        "threads",
        &format!(
            "command = [\"/usr/bin/python3\", {}]\nenv = {{ MARK = {} }}\n[stop]\nstdin_grace = \"10s\"\ngrace = \"5s\"\n[mcp]\ntransport = \"stdio\"\n",
            common::toml_str(&script.display().to_string()),
            common::toml_str(&mark.display().to_string()),
        ),
    );
    let d = Daemon::start_in(dirs);
    let mut bridge = Bridge::start(&d.dirs, "threads");
    let run = wait_runs(&d, "threads", 1)[0];
    let (pgid, _) = group_of(&d, run);
    assert!(
        wait_until(READ, || paios::process::state(run) == Some('Z')),
        "the leader never looked like a zombie"
    );
    bridge.close_stdin();
    assert_eq!(bridge.exit_within(Duration::from_secs(6)), 0);
    // The run ends when its process has, not when its leader looked like a zombie.
    assert!(wait_until(READ, || no_clients(&d, "threads")));
    assert!(
        mark.exists(),
        "the run was counted ended while it still worked"
    );
    assert!(group_gone(pgid), "the run's group outlived its end");
    let record = run_record(&d, run);
    assert_eq!(record["exit_code"], 7, "{record}");
    assert_eq!(record["outcome"], "stopped", "{record}");
}
