//! paiosd's MCP sockets through the real binary, spoken to directly as a bridge would:
//! the hello, the welcome, a run per client of a stdio server (its own group, ended
//! stdin first when its client goes), the http welcome with the URL, refusals with
//! their fix, sweeps after a kill, hostile input, and what status shows.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::daemon::{alive, text, Daemon};
use crate::common::{self, needs, wait_until, TestUser};

fn echo_server() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integration/demo/mcp_echo.py");
    path.display().to_string()
}

/// A per-client stdio service running the demo echo server.
fn echo_service(extra: &str) -> String {
    format!(
        "command = [\"/usr/bin/python3\", {}]\n{extra}\n[mcp]\ntransport = \"stdio\"\n",
        common::toml_str(&echo_server())
    )
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(d: &Daemon, name: &str) -> Conn {
        let path = paios::mcp::socket_path(&d.dirs.state, name);
        let stream = UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Conn {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn send(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).expect("write");
        self.writer.write_all(b"\n").expect("write");
    }

    /// One line, or `None` at EOF.
    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        }
    }

    fn json(&mut self) -> Value {
        let line = self.line().expect("a line before EOF");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Says hello as client `pid` and returns the welcome.
    fn hello(d: &Daemon, name: &str, pid: i32) -> (Conn, Value) {
        let mut c = Conn::open(d, name);
        c.send(&json!({"paios_mcp": 1, "client_pid": pid, "client_command": "tester"}).to_string());
        let welcome = c.json();
        (c, welcome)
    }

    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send(&line.to_string());
        let reply = self.json();
        assert_eq!(reply["id"], id, "{reply}");
        reply
    }

    fn echo(&mut self, id: u64, text: &str) -> String {
        let reply = self.request(
            id,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": text}}),
        );
        reply["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{reply}"))
            .to_string()
    }

    /// True when the connection reaches EOF (or is reset) within the read timeout.
    fn closed(&mut self) -> bool {
        let mut sink = Vec::new();
        match self.reader.read_to_end(&mut sink) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// The run PIDs of `name`'s clients, recorded for cleanup.
fn client_runs(d: &Daemon, name: &str) -> Vec<i32> {
    let row = d.row(name);
    let runs: Vec<i32> = row["mcp"]["clients"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["run_pid"].as_i64())
                .map(|p| p as i32)
                .collect()
        })
        .unwrap_or_default();
    for &pid in &runs {
        d.guard.borrow_mut().group(pid);
    }
    runs
}

fn wait_runs(d: &Daemon, name: &str, n: usize) -> Vec<i32> {
    let mut runs = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        runs = client_runs(d, name);
        runs.len() == n
    });
    assert!(ok, "wanted {n} client runs of {name}: {}", d.row(name));
    runs
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

fn group_gone(pgid: i32) -> bool {
    !paios::process::group_alive(pgid)
}

#[test]
fn a_client_gets_its_own_run_and_echo_answers() {
    let d = Daemon::start(&[("echo", &echo_service("[stop]\ngrace = \"5s\""))]);
    let socket = paios::mcp::socket_path(&d.dirs.state, "echo");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().expect("dir")), 0o700);
    let row = d.row("echo");
    assert_eq!(row["state"], "idle", "{row}");
    assert_eq!(row["mcp"]["transport"], "stdio");
    assert_eq!(row["mcp"]["share"], "per-client");
    assert_eq!(row["mcp"]["clients"], json!([]));
    let table = text(&d.ctl(&["status"]).stdout);
    assert!(
        table.contains("idle") && table.contains("0 clients"),
        "{table}"
    );

    let me = std::process::id() as i32;
    let (mut c, welcome) = Conn::hello(&d, "echo", me);
    assert_eq!(
        welcome,
        json!({"welcome": "stdio", "max_line": paios::mcp::DEFAULT_MAX_LINE})
    );
    let init = c.request(1, "initialize", json!({"protocolVersion": "2025-06-18"}));
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-echo", "{init}");
    c.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let tools = c.request(2, "tools/list", json!({}));
    assert_eq!(tools["result"]["tools"][0]["name"], "echo", "{tools}");
    assert_eq!(c.echo(3, "héllo \"world\""), "héllo \"world\"");
    let unknown = c.request(4, "no/such", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");

    let runs = wait_runs(&d, "echo", 1);
    let run = runs[0];
    assert_eq!(
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(run))).map(|p| p.as_raw()),
        Ok(run)
    );
    let row = d.row("echo");
    assert_eq!(row["state"], "running", "{row}");
    assert_eq!(row["mcp"]["clients"][0]["pid"], me, "{row}");
    assert_eq!(row["mcp"]["clients"][0]["command"], "tester", "{row}");
    let table = text(&d.ctl(&["status"]).stdout);
    assert!(
        table.contains(&format!("1 client: {me} tester (run {run})")),
        "{table}"
    );
    // The run is in state.sqlite while it lives, for a sweep should paiosd be killed.
    assert_eq!(live_pgids(&d), vec![run]);

    drop(c);
    assert!(
        wait_until(Duration::from_secs(5), || group_gone(run)),
        "the run outlived its client"
    );
    assert!(wait_until(Duration::from_secs(5), || d.row("echo")["mcp"]
        ["clients"]
        == json!([])));
    assert_eq!(d.row("echo")["state"], "idle");
    assert!(live_pgids(&d).is_empty());
    // The ledger has the run, under the server's name, with its client; it ended by
    // itself once its stdin closed.
    let mut record = None;
    assert!(wait_until(Duration::from_secs(5), || {
        record = ledger(&d).into_iter().find(|r| r["pid"] == run);
        record.is_some()
    }));
    let record = record.expect("the run's record");
    assert_eq!(record["service"], "echo", "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
    assert!(
        record["context"]
            .as_str()
            .is_some_and(|c| c.contains(&format!("client pid {me} (tester)"))),
        "{record}"
    );
}

#[test]
fn five_clients_get_five_runs_in_five_groups_each_ended_with_its_client() {
    let d = Daemon::start(&[(
        "echo",
        &echo_service("[stop]\ngrace = \"3s\"\nstdin_grace = \"1s\""),
    )]);
    let mut conns: Vec<Conn> = (0..5)
        .map(|i| {
            let (c, welcome) = Conn::hello(&d, "echo", 1000 + i);
            assert_eq!(welcome["welcome"], "stdio", "{welcome}");
            c
        })
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(c.echo(1, &format!("client {i}")), format!("client {i}"));
    }
    let runs = wait_runs(&d, "echo", 5);
    let mut groups: Vec<i32> = runs
        .iter()
        .map(|&p| {
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(p)))
                .expect("pgid")
                .as_raw()
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    assert_eq!(groups.len(), 5, "five groups: {groups:?}");
    assert_eq!(runs.iter().filter(|&&p| groups.contains(&p)).count(), 5);

    // Each run ends within its grace after its own client goes; the others live on.
    for (i, c) in conns.drain(..).enumerate() {
        let own = runs[i];
        drop(c);
        assert!(
            wait_until(Duration::from_secs(5), || group_gone(own)),
            "run {own} outlived its client"
        );
        for &other in &runs[i + 1..] {
            assert!(alive(other), "run {other} ended with another client");
        }
    }
    assert!(runs.iter().all(|&p| group_gone(p)));
    assert!(wait_until(Duration::from_secs(5), || d.row("echo")["mcp"]
        ["clients"]
        == json!([])));
}

#[test]
fn a_server_that_ignores_stdin_eof_is_ended_by_its_stop_signal() {
    let d = Daemon::start(&[(
        "deaf",
        &echo_service("env = { MCP_ECHO_IGNORE_EOF = \"1\" }\n[stop]\nstdin_grace = \"300ms\"\ngrace = \"5s\""),
    )]);
    let (mut c, _) = Conn::hello(&d, "deaf", 7);
    assert_eq!(c.echo(1, "x"), "x");
    let run = wait_runs(&d, "deaf", 1)[0];
    drop(c);
    assert!(wait_until(Duration::from_secs(5), || group_gone(run)));
    let mut record = None;
    assert!(wait_until(Duration::from_secs(5), || {
        record = ledger(&d).into_iter().find(|r| r["pid"] == run);
        record.is_some()
    }));
    let record = record.expect("record");
    // Not by itself (it ignores EOF), not by SIGKILL: by the stop signal after stdin_grace.
    assert_eq!(record["signal"], "SIGTERM", "{record}");
    assert_eq!(record["outcome"], "stopped", "{record}");
}

#[test]
fn paiosctl_stop_ends_every_client_run_and_refuses_new_clients_until_started() {
    let d = Daemon::start(&[("echo", &echo_service("[stop]\ngrace = \"3s\""))]);
    let (mut a, _) = Conn::hello(&d, "echo", 11);
    let (mut b, _) = Conn::hello(&d, "echo", 12);
    assert_eq!(a.echo(1, "a"), "a");
    assert_eq!(b.echo(1, "b"), "b");
    let runs = wait_runs(&d, "echo", 2);
    let out = d.ctl(&["stop", "echo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // `stop` answers once the client runs are gone, and their connections end.
    assert!(
        runs.iter().all(|&p| group_gone(p)),
        "stop returned before the runs ended"
    );
    assert!(a.closed() && b.closed());
    let (_c, refused) = Conn::hello(&d, "echo", 13);
    assert_eq!(refused["welcome"], "refused", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("stopped")),
        "{refused}"
    );
    assert_eq!(refused["fix"], "paiosctl start echo");
    assert_eq!(d.row("echo")["state"], "stopped");
    let out = d.ctl(&["start", "echo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (mut c, welcome) = Conn::hello(&d, "echo", 14);
    assert_eq!(welcome["welcome"], "stdio", "{welcome}");
    assert_eq!(c.echo(1, "again"), "again");
    wait_runs(&d, "echo", 1);
}

#[test]
fn shutdown_ends_client_runs_stdin_first() {
    let mut d = Daemon::start(&[("echo", &echo_service("[stop]\ngrace = \"5s\""))]);
    let (mut c, _) = Conn::hello(&d, "echo", 21);
    assert_eq!(c.echo(1, "x"), "x");
    let run = wait_runs(&d, "echo", 1)[0];
    let out = d.ctl(&["shutdown"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(group_gone(run));
    assert!(c.closed());
}

#[test]
fn a_killed_paiosd_leaves_client_runs_to_the_next_one_to_sweep() {
    // The leader dies with paiosd (its parent-death signal); the child it started in
    // its group lives on until the next paiosd sweeps the group.
    let service = format!(
        "shell = {}\n[stop]\ngrace = \"2s\"\n[mcp]\ntransport = \"stdio\"\n",
        common::toml_str(&format!(
            "sleep 1000 & exec /usr/bin/python3 {}",
            echo_server()
        ))
    );
    let mut d = Daemon::start(&[("echo", &service)]);
    let (mut a, _) = Conn::hello(&d, "echo", 31);
    let (mut b, _) = Conn::hello(&d, "echo", 32);
    assert_eq!(a.echo(1, "a"), "a");
    assert_eq!(b.echo(1, "b"), "b");
    let runs = wait_runs(&d, "echo", 2);
    d.kill9();
    // The groups are still there: the sleeps outlive paiosd.
    assert!(
        runs.iter().all(|&p| !group_gone(p)),
        "nothing left to sweep"
    );
    d.launch();
    assert!(
        wait_until(Duration::from_secs(10), || runs
            .iter()
            .all(|&p| group_gone(p))),
        "the next paiosd did not sweep the client runs"
    );
    let swept = |entries: &[Value]| {
        entries
            .iter()
            .filter(|r| r["outcome"] != "mcp_client")
            .filter(|r| {
                r["detail"]
                    .as_str()
                    .is_some_and(|t| runs.iter().any(|p| t.contains(&format!("pid {p} "))))
            })
            .count()
    };
    let mut entries = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            entries = ledger(&d);
            swept(&entries) == 2
        }),
        "no sweep of both runs in the ledger: {entries:?}"
    );
    drop((a, b));
    // The new paiosd serves clients again.
    let (mut c, _) = Conn::hello(&d, "echo", 33);
    assert_eq!(c.echo(1, "back"), "back");
    wait_runs(&d, "echo", 1);
}

#[test]
fn bad_hellos_get_one_refused_line_and_the_server_serves_others() {
    let d = Daemon::start(&[("echo", &echo_service(""))]);
    let refused = |bytes: &[u8]| -> Value {
        let mut c = Conn::open(&d, "echo");
        c.writer.write_all(bytes).expect("write");
        let answer = c.json();
        assert!(c.line().is_none(), "more after a refusal");
        answer
    };
    let a = refused(b"hello there\n");
    assert_eq!(a["welcome"], "refused", "{a}");
    assert!(
        a["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a paiosd MCP hello")),
        "{a}"
    );
    assert_eq!(a["fix"], "connect with `paiosctl mcp echo`");
    let a = refused(&vec![b'{'; paios::mcp::MAX_HELLO_BYTES * 4]);
    assert!(
        a["reason"]
            .as_str()
            .is_some_and(|r| r.contains("longer than")),
        "{a}"
    );
    let a = refused(b"{\"paios_mcp\":2,\"client_pid\":1}\n");
    assert!(
        a["reason"]
            .as_str()
            .is_some_and(|r| r.contains("version 2")),
        "{a}"
    );
    let a = refused(b"\xff\xfe\n");
    assert_eq!(a["welcome"], "refused", "{a}");
    let a = refused(b"{\"paios_mcp\":1,\"client_pid\":1,\"extra\":1}\n");
    assert_eq!(a["welcome"], "refused", "{a}");
    // Half a hello, then silence: refused once the hello's time is up.
    {
        let mut c = Conn::open(&d, "echo");
        c.writer.write_all(b"{\"paios_mcp\":1,").expect("write");
        let a = c.json();
        assert!(
            a["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no hello within")),
            "{a}"
        );
        assert!(c.line().is_none());
    }
    // Half a hello, then the client goes: no run was ever started.
    {
        let mut c = Conn::open(&d, "echo");
        c.writer.write_all(b"{\"paios_mcp\":1,").expect("write");
    }
    let (mut c, welcome) = Conn::hello(&d, "echo", 41);
    assert_eq!(welcome["welcome"], "stdio");
    assert_eq!(c.echo(1, "still here"), "still here");
    assert_eq!(wait_runs(&d, "echo", 1).len(), 1);
}

#[test]
fn a_line_over_max_line_closes_that_connection_only() {
    let d = Daemon::start(&[(
        "echo",
        &echo_service("[stop]\ngrace = \"3s\"").replace(
            "transport = \"stdio\"",
            "transport = \"stdio\"\nmax_line = \"1KiB\"",
        ),
    )]);
    let (mut other, welcome) = Conn::hello(&d, "echo", 51);
    assert_eq!(welcome["max_line"], 1024);
    let (mut big, _) = Conn::hello(&d, "echo", 52);
    assert_eq!(big.echo(1, "small"), "small");
    let runs = wait_runs(&d, "echo", 2);
    let text = "x".repeat(2048);
    let line = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}}})
    .to_string()
        + "\n";
    // paiosd may close the connection before the whole line is written.
    let _ = big.writer.write_all(line.as_bytes());
    // No reply: nothing of the line reached the server, and the connection closes.
    assert!(big.line().is_none(), "an oversized line got an answer");
    assert_eq!(other.echo(1, "unaffected"), "unaffected");
    assert!(wait_until(Duration::from_secs(5), || client_runs(
        &d, "echo"
    )
    .len()
        == 1));
    let left = client_runs(&d, "echo");
    assert!(runs.contains(&left[0]));
}

#[test]
fn ten_thousand_lines_in_a_burst_all_get_answers_in_order() {
    let d = Daemon::start(&[("echo", &echo_service(""))]);
    let (c, _) = Conn::hello(&d, "echo", 61);
    let Conn { mut reader, writer } = c;
    let n = 10_000u64;
    let sender = std::thread::spawn(move || {
        let mut writer = writer;
        let mut burst = Vec::new();
        for id in 0..n {
            burst.extend_from_slice(
                format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"ping\"}}\n").as_bytes(),
            );
        }
        writer.write_all(&burst).expect("burst");
        writer
    });
    for id in 0..n {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "EOF at {id}"
        );
        let reply: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(reply["id"], id, "{reply}");
    }
    let _writer = sender.join().expect("sender");
    assert_eq!(d.ctl(&["ping"]).status.code(), Some(0));
}

#[test]
fn a_client_that_never_reads_stalls_only_its_own_run() {
    let d = Daemon::start(&[(
        "echo",
        &echo_service("[stop]\ngrace = \"3s\"\nstdin_grace = \"500ms\""),
    )]);
    let (slow, _) = Conn::hello(&d, "echo", 71);
    let Conn {
        reader: slow_reader,
        writer,
    } = slow;
    // Far more than every pipe and socket buffer in between holds.
    let line = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "y".repeat(64 * 1024)}}})
    .to_string()
        + "\n";
    let writer_thread = std::thread::spawn(move || {
        let mut writer = writer;
        writer
            .set_write_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        for _ in 0..400 {
            if writer.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        writer
    });
    let runs = wait_runs(&d, "echo", 1);
    // The writer stalls (its write times out) while everything else is served.
    let (mut fast, _) = Conn::hello(&d, "echo", 72);
    for i in 0..20 {
        assert_eq!(fast.echo(i, &format!("fast {i}")), format!("fast {i}"));
    }
    assert_eq!(d.ctl(&["ping"]).status.code(), Some(0));
    assert_eq!(
        d.row("echo")["mcp"]["clients"].as_array().map(Vec::len),
        Some(2)
    );
    let writer = writer_thread.join().expect("writer");
    drop(writer);
    drop(slow_reader);
    assert!(
        wait_until(Duration::from_secs(10), || group_gone(runs[0])),
        "the stalled client's run outlived it"
    );
    assert_eq!(fast.echo(99, "after"), "after");
}

#[test]
fn a_foreign_uid_on_the_socket_is_refused() {
    let Some(user) = needs("root, useradd and setpriv", TestUser::create()) else {
        return;
    };
    let d = Daemon::start(&[("echo", &echo_service(""))]);
    let socket = paios::mcp::socket_path(&d.dirs.state, "echo");
    // Let the kernel admit the other user, so that paiosd's own UID check refuses it.
    for dir in [
        d.dirs.root.path(),
        &d.dirs.state,
        socket.parent().expect("dir"),
    ] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\ntry:\n    s.sendall(b'{{\"paios_mcp\":1,\"client_pid\":1}}\\n')\nexcept OSError:\n    pass\nsys.stdout.write(s.makefile().readline())\n",
        socket.display().to_string()
    );
    let out = std::process::Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--clear-groups")
        .args(["/usr/bin/python3", "-c", &script])
        .env("HOME", "/nonexistent")
        .output()
        .expect("setpriv");
    let stdout = text(&out.stdout);
    let answer: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{stdout:?} {}: {e}", text(&out.stderr)));
    assert_eq!(answer["welcome"], "refused", "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("UID {}", user.uid))),
        "{answer}"
    );
    // No run was started for it; paiosd's own user is still served.
    assert_eq!(d.row("echo")["mcp"]["clients"], json!([]));
    let (mut c, _) = Conn::hello(&d, "echo", 81);
    assert_eq!(c.echo(1, "mine"), "mine");
}

#[test]
fn an_http_server_welcomes_with_its_url_and_refuses_when_stopped_or_failed() {
    let http = "command = [\"sleep\", \"1000\"]\n[mcp]\ntransport = \"http\"\nurl = \"http://127.0.0.1:39999/mcp\"\n";
    let failing = "command = [\"false\"]\n[restart]\nbackoff = { initial = \"10ms\", max = \"10ms\" }\nlimit = { burst = 1, window = \"1m\", cooldown = \"10m\" }\n[mcp]\ntransport = \"http\"\nurl = \"http://127.0.0.1:39998/mcp\"\n";
    let disabled = "command = [\"sleep\", \"1000\"]\nenabled = false\n[mcp]\ntransport = \"http\"\nurl = \"http://127.0.0.1:39997/mcp\"\n";
    let d = Daemon::start(&[("web", http), ("flaky", failing), ("off", disabled)]);
    d.wait_state("web", "running", Duration::from_secs(10));
    let (mut c, welcome) = Conn::hello(&d, "web", 91);
    assert_eq!(
        welcome,
        json!({"welcome": "http", "url": "http://127.0.0.1:39999/mcp", "max_line": paios::mcp::DEFAULT_MAX_LINE})
    );
    let row = d.row("web");
    assert_eq!(row["mcp"]["transport"], "http");
    assert_eq!(row["mcp"]["share"], "shared");
    assert_eq!(row["mcp"]["clients"][0]["pid"], 91, "{row}");
    assert_eq!(row["mcp"]["clients"][0]["run_pid"], Value::Null, "{row}");
    // The connection stays open and idle while the client is there; its end is counted.
    let (c2, _) = Conn::hello(&d, "web", 92);
    assert!(wait_until(Duration::from_secs(5), || {
        d.row("web")["mcp"]["clients"].as_array().map(Vec::len) == Some(2)
    }));
    drop(c2);
    assert!(wait_until(Duration::from_secs(5), || {
        d.row("web")["mcp"]["clients"].as_array().map(Vec::len) == Some(1)
    }));
    let out = d.ctl(&["stop", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(c.closed(), "the presence connection outlived the server");
    let (_r, refused) = Conn::hello(&d, "web", 93);
    assert_eq!(refused["welcome"], "refused");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("web is stopped")),
        "{refused}"
    );
    assert_eq!(refused["fix"], "paiosctl start web");

    d.wait_state("flaky", "failed", Duration::from_secs(10));
    let (_r, refused) = Conn::hello(&d, "flaky", 94);
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("flaky is failed")),
        "{refused}"
    );
    assert_eq!(refused["fix"], "paiosctl start flaky");

    let (_r, refused) = Conn::hello(&d, "off", 95);
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("disabled")),
        "{refused}"
    );
    assert_eq!(refused["fix"], "paiosctl start off");
}

#[test]
fn reload_opens_and_closes_sockets_as_mcp_servers_come_and_go() {
    let d = Daemon::start(&[("plain", "command = [\"sleep\", \"1000\"]\n")]);
    let socket = paios::mcp::socket_path(&d.dirs.state, "echo");
    assert!(!socket.exists());
    assert!(!paios::mcp::socket_path(&d.dirs.state, "plain").exists());
    d.dirs.write_service("echo", &echo_service(""));
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (mut c, _) = Conn::hello(&d, "echo", 101);
    assert_eq!(c.echo(1, "new"), "new");
    let run = wait_runs(&d, "echo", 1)[0];
    std::fs::remove_file(d.dirs.services_d.join("echo.toml")).expect("rm");
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        wait_until(Duration::from_secs(5), || !socket.exists()),
        "socket left after removal"
    );
    assert!(wait_until(Duration::from_secs(10), || group_gone(run)));
    assert!(c.closed());
}

#[test]
fn a_client_run_that_crashes_ends_its_connection_and_is_not_restarted() {
    let crashy = "shell = \"read line; echo 'going' >&2; exit 3\"\n[mcp]\ntransport = \"stdio\"\n";
    let missing = "command = [\"/nonexistent/mcp-server\"]\n[mcp]\ntransport = \"stdio\"\n";
    let d = Daemon::start(&[("crashy", crashy), ("missing", missing)]);
    let (mut c, welcome) = Conn::hello(&d, "crashy", 111);
    assert_eq!(welcome["welcome"], "stdio", "{welcome}");
    let run = wait_runs(&d, "crashy", 1)[0];
    c.send(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    assert!(c.closed(), "the connection outlived its run");
    assert!(wait_until(Duration::from_secs(5), || group_gone(run)));
    assert!(wait_until(Duration::from_secs(5), || d.row("crashy")
        ["mcp"]["clients"]
        == json!([])));
    let mut record = None;
    assert!(wait_until(Duration::from_secs(5), || {
        record = ledger(&d).into_iter().find(|r| r["pid"] == run);
        record.is_some()
    }));
    let record = record.expect("record");
    assert_eq!(record["outcome"], "crashed", "{record}");
    assert_eq!(record["exit_code"], 3, "{record}");
    assert_eq!(record["service"], "crashy", "{record}");
    // No new run for that client; the server still takes the next one.
    assert_eq!(d.row("crashy")["state"], "idle");
    let (_c, welcome) = Conn::hello(&d, "crashy", 112);
    assert_eq!(welcome["welcome"], "stdio");

    let (_m, refused) = Conn::hello(&d, "missing", 113);
    assert_eq!(refused["welcome"], "refused", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("could not be started")),
        "{refused}"
    );
    assert_eq!(refused["fix"], "paiosctl logs missing");
    assert_eq!(d.row("missing")["mcp"]["clients"], json!([]));
}

#[test]
fn restart_and_a_changed_file_end_the_client_runs_and_new_clients_get_the_new_command() {
    let d = Daemon::start(&[("echo", &echo_service("[stop]\ngrace = \"3s\""))]);
    let (mut a, _) = Conn::hello(&d, "echo", 21);
    assert_eq!(a.echo(1, "a"), "a");
    let run = wait_runs(&d, "echo", 1)[0];
    assert_eq!(d.row("echo")["state"], "running");
    let out = d.ctl(&["--json", "restart", "echo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer["results"][0]["state"], "idle", "{answer}");
    assert!(wait_until(Duration::from_secs(10), || group_gone(run)));
    assert!(
        a.closed(),
        "the restarted run's client is told by its connection's end"
    );

    let (mut b, _) = Conn::hello(&d, "echo", 22);
    assert_eq!(b.echo(1, "b"), "b");
    let run = wait_runs(&d, "echo", 1)[0];
    // The file changes: the run of the old command ends, the next client gets the new.
    d.dirs.write_service(
        "echo",
        &echo_service("env = { MCP_ECHO_IGNORE_EOF = \"0\" }\n[stop]\ngrace = \"3s\""),
    );
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(wait_until(Duration::from_secs(10), || group_gone(run)));
    assert!(b.closed());
    let (mut c, welcome) = Conn::hello(&d, "echo", 23);
    assert_eq!(welcome["welcome"], "stdio", "{welcome}");
    assert_eq!(c.echo(1, "c"), "c");
    let run = wait_runs(&d, "echo", 1)[0];
    let environ = std::fs::read(format!("/proc/{run}/environ")).expect("environ");
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"MCP_ECHO_IGNORE_EOF=0"),
        "the new client's run has the new file's env"
    );
}

#[test]
fn clients_runs_that_keep_crashing_make_the_server_failed_until_started() {
    let crashy = "shell = \"exit 3\"\n\
                  [restart]\nlimit = { burst = 2, window = \"5m\", cooldown = \"1h\" }\n\
                  [mcp]\ntransport = \"stdio\"\n";
    let d = Daemon::start(&[("crashy", crashy)]);
    // Two crashes are within the burst; the third gives up.
    for pid in [121, 122, 123] {
        let (mut c, welcome) = Conn::hello(&d, "crashy", pid);
        assert_eq!(welcome["welcome"], "stdio", "client {pid}: {welcome}");
        assert!(c.closed(), "the connection outlived its crashed run");
        assert!(wait_until(Duration::from_secs(5), || d.row("crashy")
            ["mcp"]["clients"]
            == json!([])));
    }
    assert!(wait_until(Duration::from_secs(5), || d.row("crashy")
        ["state"]
        == "failed"));
    let (_c, refused) = Conn::hello(&d, "crashy", 124);
    assert_eq!(refused["welcome"], "refused", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("crashy is failed")),
        "{refused}"
    );
    assert_eq!(refused["fix"], "paiosctl start crashy");
    // `paiosctl start` clears the crash loop, as for any service.
    let out = d.ctl(&["start", "crashy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (_c, welcome) = Conn::hello(&d, "crashy", 125);
    assert_eq!(welcome["welcome"], "stdio", "{welcome}");
}

#[test]
fn a_client_that_hangs_up_on_a_server_that_reads_nothing_still_ends_its_run() {
    // The server never reads: paiosd's write to its stdin waits on a full pipe, so the
    // client's hangup must be seen without reading the socket.
    let deaf = "command = [\"sleep\", \"1000\"]\n[stop]\nstdin_grace = \"200ms\"\ngrace = \"1s\"\n\
                [mcp]\ntransport = \"stdio\"\n";
    let d = Daemon::start(&[("deaf", deaf)]);
    let (c, _) = Conn::hello(&d, "deaf", 131);
    let run = wait_runs(&d, "deaf", 1)[0];
    let Conn { reader, writer } = c;
    let line = format!(
        "{}\n",
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping",
        "params": {"pad": "p".repeat(16 * 1024)}})
    );
    let mut writer = writer;
    writer
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    // Past the pipe's buffer and the socket's: the writes stall.
    for _ in 0..64 {
        if writer.write_all(line.as_bytes()).is_err() {
            break;
        }
    }
    drop(writer);
    drop(reader);
    assert!(
        wait_until(Duration::from_secs(10), || group_gone(run)),
        "the run outlived its client: {}",
        d.row("deaf")
    );
    assert!(wait_until(Duration::from_secs(5), || d.row("deaf")["mcp"]
        ["clients"]
        == json!([])));
}

#[test]
fn a_servers_last_replies_reach_a_slow_client_after_it_has_exited() {
    // Answers one request with two large lines and exits at once.
    let script = "import sys\n\
                  sys.stdin.readline()\n\
                  sys.stdout.write('{\"jsonrpc\":\"2.0\",\"method\":\"n\",\"params\":\"' + 'a' * 2000000 + '\"}\\n')\n\
                  sys.stdout.write('{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"' + 'b' * 240000 + '\"}\\n')\n\
                  sys.stdout.flush()\n";
    let d = Daemon::start(&[(
        "parting",
        &format!(
            "command = [\"/usr/bin/python3\", \"-c\", {}]\n[mcp]\ntransport = \"stdio\"\n",
            common::toml_str(script)
        ),
    )]);
    let (mut c, _) = Conn::hello(&d, "parting", 141);
    let run = wait_runs(&d, "parting", 1)[0];
    c.send(r#"{"jsonrpc":"2.0","id":1,"method":"go"}"#);
    // A slow reader: the run is done writing (and exits) long before the client is.
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match c.reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read: {e} after {} bytes", got.len()),
        }
        if !group_gone(run) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let lines: Vec<&[u8]> = got
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 2, "{} bytes", got.len());
    let last: Value = serde_json::from_slice(lines[1]).expect("the last reply whole");
    assert_eq!(last["result"].as_str().map(str::len), Some(240_000));
}
