//! `paiosctl mcp NAME`, the real binary, against a Unix socket listener in the test
//! that plays paiosd's part: it reads the bridge's hello, sends a welcome, and then
//! reads and writes the server's JSON-RPC lines itself. Every exit path of the bridge
//! (stdin EOF, parent killed, stdout closed, paiosd absent or refusing, paiosd gone
//! mid-request) and the hostile lines (not JSON, not UTF-8, over the cap, a burst).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::daemon::alive;
use crate::common::{paiosctl_path, wait_until, GroupGuard, LineReader, TestDirs};

/// The bridge's exit bounds, generous for a loaded machine but failing when missed.
const EXIT_BOUND: Duration = Duration::from_secs(1);
const READ: Duration = Duration::from_secs(10);

/// paiosd's side of one server's socket.
struct Peer {
    conns: mpsc::Receiver<(Value, UnixStream)>,
}

impl Peer {
    /// Listens on `<state>/mcp/NAME.sock` and answers every hello with `welcome`.
    fn start(state: &Path, name: &str, welcome: Value) -> Peer {
        let dir = paios::mcp::socket_dir(state);
        std::fs::create_dir_all(&dir).expect("create the mcp socket dir");
        let listener =
            UnixListener::bind(paios::mcp::socket_path(state, name)).expect("bind the socket");
        let (tx, conns) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut hello = Vec::new();
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                if reader.read_until(b'\n', &mut hello).is_err() {
                    continue;
                }
                let hello: Value = serde_json::from_slice(&hello).unwrap_or(Value::Null);
                let mut line = welcome.to_string().into_bytes();
                line.push(b'\n');
                let _ = stream.write_all(&line);
                if tx.send((hello, stream)).is_err() {
                    return;
                }
            }
        });
        Peer { conns }
    }

    /// The next bridge to connect: its hello and the connection.
    fn accept(&self) -> (Value, Conn) {
        let (hello, stream) = self.conns.recv_timeout(READ).expect("the bridge connects");
        (hello, Conn::new(stream))
    }
}

/// One bridge's connection as paiosd sees it.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        stream.set_read_timeout(Some(READ)).expect("timeout");
        Conn {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
        }
    }

    /// The next line, newline included; empty at EOF.
    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader
            .read_until(b'\n', &mut line)
            .expect("read a line from the bridge");
        line
    }

    /// True once the bridge's end has closed (a reset if it left the welcome unread).
    fn closed(&mut self) -> bool {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }

    fn json(&mut self) -> Value {
        let line = self.line();
        serde_json::from_slice(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the bridge");
    }
}

/// A running `paiosctl mcp`, killed on drop.
struct Bridge {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: LineReader,
}

impl Bridge {
    fn start(dirs: &TestDirs, name: &str) -> Bridge {
        let mut child = Command::new(paiosctl_path())
            .args(dirs.args())
            .args(["mcp", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start paiosctl mcp");
        let stdout = LineReader::new(child.stdout.take().expect("stdout").into());
        Bridge {
            stdin: child.stdin.take(),
            child,
            stdout,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stdin
            .as_mut()
            .expect("stdin open")
            .write_all(bytes)
            .expect("write to the bridge's stdin");
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn line(&self) -> String {
        self.stdout
            .line(READ)
            .expect("a line from the bridge's stdout")
    }

    fn json(&self) -> Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The exit code within `bound`, or a failure naming the bound.
    fn exit_within(&mut self, bound: Duration) -> i32 {
        let mut code = None;
        let exited = wait_until(bound, || {
            code = self.child.try_wait().expect("wait for the bridge");
            code.is_some()
        });
        assert!(exited, "the bridge did not exit within {bound:?}");
        code.and_then(|s| s.code())
            .expect("an exit code, not a signal")
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stdio_welcome(max_line: u64) -> Value {
    json!({"welcome": "stdio", "max_line": max_line})
}

fn request(id: Value, method: &str) -> Vec<u8> {
    let mut line = json!({"jsonrpc": "2.0", "id": id, "method": method})
        .to_string()
        .into_bytes();
    line.push(b'\n');
    line
}

fn error_of(reply: &Value) -> (Value, i64, String) {
    (
        reply["id"].clone(),
        reply["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no error: {reply}")),
        reply["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn lines_are_copied_verbatim_both_ways_and_crlf_is_dropped() {
    let dirs = TestDirs::new();
    let peer = Peer::start(&dirs.state, "kb", stdio_welcome(1 << 20));
    let mut bridge = Bridge::start(&dirs, "kb");
    let (hello, mut conn) = peer.accept();
    assert_eq!(hello["paios_mcp"], json!(1));
    assert_eq!(hello["client_pid"], json!(std::process::id()));
    let own = paios::process::proc_info(std::process::id() as i32).expect("own info");
    assert_eq!(hello["client_command"], json!(own.comm));

    let up = "{ \"jsonrpc\":\"2.0\",  \"id\" : 1,\"method\":\"initialize\",\"params\":{\"b\":1.50,\"a\":\"\\u00e9\"}}";
    bridge.send(format!("{up}\r\n").as_bytes());
    assert_eq!(conn.line(), format!("{up}\n").into_bytes());
    let note = r#"{"method":"notifications/initialized","jsonrpc":"2.0"}"#;
    bridge.send(format!("{note}\n").as_bytes());
    assert_eq!(conn.line(), format!("{note}\n").into_bytes());

    let down = "{\"jsonrpc\":\"2.0\", \"id\":1,\"result\":{\"z\":1e2,\"a\":[ 1,2 ]}}";
    conn.send(format!("{down}\r\n").as_bytes());
    assert_eq!(bridge.line(), down);
    let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#;
    conn.send(format!("{progress}\n").as_bytes());
    assert_eq!(bridge.line(), progress);
}

#[test]
fn lines_that_are_not_json_rpc_are_answered_and_not_sent_on() {
    let dirs = TestDirs::new();
    let peer = Peer::start(&dirs.state, "kb", stdio_welcome(1 << 20));
    let mut bridge = Bridge::start(&dirs, "kb");
    let (_, mut conn) = peer.accept();
    bridge.send(b"this is not json\n");
    bridge.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\xff\xfe\"}\n");
    bridge.send(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\n");
    bridge.send(b"\n   \r\n");
    for _ in 0..3 {
        let (id, code, _) = error_of(&bridge.json());
        assert_eq!((id, code), (Value::Null, -32700));
    }
    bridge.send(&request(json!(3), "ping"));
    assert_eq!(
        conn.json()["id"],
        json!(3),
        "only the good line reached the server"
    );
}

#[test]
fn a_line_over_the_cap_is_answered_for_its_id_and_the_next_line_passes() {
    let dirs = TestDirs::new();
    let peer = Peer::start(&dirs.state, "kb", stdio_welcome(4096));
    let mut bridge = Bridge::start(&dirs, "kb");
    let (_, mut conn) = peer.accept();
    let big = "x".repeat(8 << 20);
    let head_id = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{{\"s\":\"{big}\"}}}}\n"
    );
    let tail_id = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\",\"params\":{{\"s\":\"{big}\"}},\"id\":\"last\"}}\r\n"
    );
    // Written from a thread: the bridge reads it past while the test reads its answer.
    let mut stdin = bridge.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        stdin.write_all(head_id.as_bytes()).expect("write");
        stdin.write_all(tail_id.as_bytes()).expect("write");
        stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"ping\"}\n")
            .expect("write");
        stdin
    });
    let (id, code, message) = error_of(&bridge.json());
    assert_eq!((id, code), (json!(7), -32600));
    assert!(message.contains("4096"), "{message}");
    let (id, code, _) = error_of(&bridge.json());
    assert_eq!((id, code), (json!("last"), -32600));
    assert_eq!(
        conn.json()["id"],
        json!(8),
        "nothing of the long lines reached the server"
    );
    bridge.stdin = Some(writer.join().expect("writer"));

    conn.send(
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":8,\"result\":{{\"s\":\"{}\"}}}}\n",
            "y".repeat(5000)
        )
        .as_bytes(),
    );
    let (id, _, message) = error_of(&bridge.json());
    assert_eq!(
        id,
        json!(8),
        "a server answer over the cap is an error for its id"
    );
    assert!(message.contains("over the line cap"), "{message}");
}

#[test]
fn ten_thousand_lines_in_a_burst_arrive_in_order() {
    const N: usize = 10_000;
    let dirs = TestDirs::new();
    let peer = Peer::start(&dirs.state, "kb", stdio_welcome(1 << 20));
    let mut bridge = Bridge::start(&dirs, "kb");
    let (_, mut conn) = peer.accept();
    let echo = std::thread::spawn(move || {
        for _ in 0..N {
            let line = conn.json();
            let reply = json!({"jsonrpc": "2.0", "id": line["id"], "result": {}});
            conn.send(format!("{reply}\n").as_bytes());
        }
    });
    let mut stdin = bridge.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let mut burst = Vec::new();
        for i in 0..N {
            burst.extend_from_slice(&request(json!(i), "ping"));
        }
        stdin.write_all(&burst).expect("write the burst");
        stdin
    });
    for i in 0..N {
        assert_eq!(bridge.json()["id"], json!(i));
    }
    echo.join().expect("echo");
    bridge.stdin = Some(writer.join().expect("writer"));
}

#[test]
fn stdin_eof_half_closes_drains_the_answer_and_exits_zero() {
    let dirs = TestDirs::new();
    let peer = Peer::start(&dirs.state, "kb", stdio_welcome(1 << 20));
    let mut bridge = Bridge::start(&dirs, "kb");
    let (_, mut conn) = peer.accept();
    bridge.send(&request(json!(1), "tools/call"));
    assert_eq!(conn.json()["id"], json!(1));
    bridge.close_stdin();
    assert_eq!(
        conn.line(),
        b"",
        "the bridge half-closes towards the server"
    );
    conn.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"late\":true}}\n");
    assert_eq!(bridge.json()["result"]["late"], json!(true));
    assert_eq!(bridge.exit_within(Duration::from_secs(5)), 0);
}

#[test]
fn paiosd_absent_answers_initialize_and_exits_one() {
    let dirs = TestDirs::new();
    let started = Instant::now();
    let mut bridge = Bridge::start(&dirs, "kb");
    bridge.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/early\"}\n");
    bridge.send(&request(json!(0), "initialize"));
    let (id, code, message) = error_of(&bridge.json());
    assert_eq!((id, code), (json!(0), -32000));
    assert!(message.contains("paiosd is not running"), "{message}");
    assert!(message.contains("paiosd"), "{message}");
    assert_eq!(bridge.exit_within(EXIT_BOUND), 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let mut quiet = Bridge::start(&dirs, "kb");
    quiet.close_stdin();
    assert_eq!(
        quiet.exit_within(EXIT_BOUND),
        1,
        "stdin EOF before any request"
    );
}

#[test]
fn a_refused_welcome_is_answered_with_its_reason_and_fix() {
    let dirs = TestDirs::new();
    let _peer = Peer::start(
        &dirs.state,
        "kb",
        json!({"welcome": "refused", "reason": "kb is failed", "fix": "paiosctl start kb"}),
    );
    let mut bridge = Bridge::start(&dirs, "kb");
    bridge.send(&request(json!("init"), "initialize"));
    let (id, code, message) = error_of(&bridge.json());
    assert_eq!((id, code), (json!("init"), -32000));
    assert!(
        message.contains("kb is failed") && message.contains("`paiosctl start kb`"),
        "{message}"
    );
    assert_eq!(bridge.exit_within(EXIT_BOUND), 1);
}

#[test]
fn a_missing_server_socket_while_paiosd_runs_names_the_fix() {
    let dirs = TestDirs::new();
    let _control = UnixListener::bind(dirs.state.join("paiosd.sock")).expect("bind");
    let mut bridge = Bridge::start(&dirs, "kb");
    bridge.send(&request(json!(1), "initialize"));
    let (_, _, message) = error_of(&bridge.json());
    assert!(
        message.contains("no MCP server `kb`") && message.contains("[mcp]"),
        "{message}"
    );
    assert_eq!(bridge.exit_within(EXIT_BOUND), 1);

    let mut bad = Bridge::start(&dirs, "../kb");
    bad.send(&request(json!(1), "initialize"));
    let (_, _, message) = error_of(&bad.json());
    assert!(message.contains("not a service name"), "{message}");
}

#[test]
fn paiosd_gone_mid_request_errors_every_id_in_flight_and_exits_one() {
    let dirs = TestDirs::new();
    let peer = Peer::start(&dirs.state, "kb", stdio_welcome(1 << 20));
    let mut bridge = Bridge::start(&dirs, "kb");
    let (_, mut conn) = peer.accept();
    bridge.send(&request(json!(1), "tools/call"));
    bridge.send(&request(json!("two"), "tools/call"));
    bridge.send(&request(json!(3), "tools/call"));
    for _ in 0..3 {
        conn.json();
    }
    conn.send(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n");
    assert_eq!(bridge.json()["id"], json!(3));
    let closed = Instant::now();
    drop(conn);
    let mut ids: Vec<String> = (0..2)
        .map(|_| {
            let (id, code, _) = error_of(&bridge.json());
            assert_eq!(code, -32000);
            id.to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["\"two\"".to_string(), "1".to_string()]);
    assert_eq!(bridge.exit_within(Duration::from_secs(2)), 1);
    assert!(closed.elapsed() < Duration::from_secs(2));
}

#[test]
fn the_bridge_exits_when_its_parent_is_killed() {
    let dirs = TestDirs::new();
    let peer = Peer::start(&dirs.state, "kb", stdio_welcome(1 << 20));
    let pid_file = dirs.file("bridge.pid");
    // The shell is the bridge's parent, as an editor would be; its stdin reaches the
    // bridge through fd 3 (a background job's own stdin would be /dev/null). Its stdout
    // is a pipe nobody reads, so the bridge is stuck writing when its parent dies.
    let mut shell = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"exec 3<&0; "$@" <&3 3<&- & echo $! > "$PIDS"; wait"#)
        .arg("sh")
        .arg(paiosctl_path())
        .args(dirs.args())
        .args(["mcp", "kb"])
        .env("PIDS", &pid_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the shell");
    let mut guard = GroupGuard::new();
    guard.pid(shell.id() as i32);
    let (hello, mut conn) = peer.accept();
    assert_eq!(hello["client_pid"], json!(shell.id()));
    let bridge = read_pid(&pid_file);
    guard.pid(bridge);
    let mut stdin = shell.stdin.take().expect("stdin");
    stdin
        .write_all(&request(json!(1), "tools/call"))
        .expect("write");
    assert_eq!(conn.json()["id"], json!(1), "a request is in flight");
    let mut flood = conn.writer.try_clone().expect("clone");
    let flooding = std::thread::spawn(move || {
        let note = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"data\":\"{}\"}}}}\n",
            "z".repeat(64 * 1024)
        );
        // Ends when the bridge is gone and the socket breaks.
        while flood.write_all(note.as_bytes()).is_ok() {}
    });
    // The bridge is stuck on its full stdout once the socket backs up behind it.
    assert!(
        wait_until(READ, || socket_backlog(&conn.writer) > 64 * 1024),
        "the flood never backed up"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shell.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the parent");
    let killed = Instant::now();
    let _ = shell.wait();
    assert!(
        wait_until(EXIT_BOUND, || !alive(bridge)),
        "the bridge {bridge} outlived its parent by {:?}",
        killed.elapsed()
    );
    flooding.join().expect("flood");
    drop(stdin);
}

/// Bytes written to `stream` and not yet read by the other end (`SIOCOUTQ`).
fn socket_backlog(stream: &UnixStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int into `queued`, which outlives the call.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if rc == 0 {
        queued
    } else {
        0
    }
}

fn read_pid(path: &PathBuf) -> i32 {
    let mut pid = None;
    assert!(
        wait_until(READ, || {
            pid = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            pid.is_some()
        }),
        "no pid in {}",
        path.display()
    );
    pid.expect("pid")
}

#[test]
fn the_bridge_exits_when_its_stdout_is_closed() {
    let dirs = TestDirs::new();
    let peer = Peer::start(&dirs.state, "kb", stdio_welcome(1 << 20));
    let mut child = Command::new(paiosctl_path())
        .args(dirs.args())
        .args(["mcp", "kb"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start paiosctl mcp");
    let (_, mut conn) = peer.accept();
    let stdin = child.stdin.take();
    drop(child.stdout.take());
    let mut code = None;
    let exited = wait_until(Duration::from_secs(2), || {
        code = child.try_wait().expect("wait");
        code.is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    drop(stdin);
    assert!(exited, "the bridge kept running with its stdout closed");
    assert!(conn.closed(), "its connection closed with it");
}

/// The reference server `@modelcontextprotocol/server-everything`, installed by
/// `.ci/run` under `target/mcp-peers`, in Streamable HTTP mode on a free loopback port.
struct Everything {
    url: String,
    _guard: GroupGuard,
    child: Child,
}

impl Everything {
    fn start() -> Option<Everything> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Everything::start_on(port)
    }

    fn start_on(port: u16) -> Option<Everything> {
        let node = crate::common::needs(
            "node",
            Command::new("node")
                .arg("--version")
                .output()
                .map_err(|e| e.to_string())
                .and_then(|o| {
                    o.status
                        .success()
                        .then_some(())
                        .ok_or("node --version failed".into())
                }),
        );
        node?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "target/mcp-peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
        );
        let script = crate::common::needs(
            "the npm package @modelcontextprotocol/server-everything",
            if script.is_file() {
                Ok(script)
            } else {
                Err(format!(
                    "{} is missing (`.ci/run` installs it)",
                    script.display()
                ))
            },
        )?;
        use std::os::unix::process::CommandExt;
        let child = Command::new("node")
            .arg(&script)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server-everything");
        let mut guard = GroupGuard::new();
        guard.group(child.id() as i32);
        let listening = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(listening, "server-everything did not listen on port {port}");
        Some(Everything {
            url: format!("http://127.0.0.1:{port}/mcp"),
            _guard: guard,
            child,
        })
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send_json(bridge: &mut Bridge, value: Value) {
    bridge.send(format!("{value}\n").as_bytes());
}

/// Lines until the answer to `id`, keeping the notifications on the way.
fn answer_to(bridge: &Bridge, id: Value) -> (Value, Vec<Value>) {
    let mut notes = Vec::new();
    loop {
        let line = bridge.json();
        if line["id"] == id && line.get("method").is_none() {
            return (line, notes);
        }
        notes.push(line);
    }
}

/// `initialize` and `notifications/initialized`, as a client starts.
fn handshake(bridge: &mut Bridge) -> Value {
    send_json(
        bridge,
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "paios-test", "version": "1"}}}),
    );
    let (init, _) = answer_to(bridge, json!(0));
    send_json(
        bridge,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    init
}

#[test]
fn an_http_server_is_spoken_to_over_streamable_http() {
    let Some(server) = Everything::start() else {
        return;
    };
    let dirs = TestDirs::new();
    let welcome = json!({"welcome": "http", "url": server.url, "max_line": 1 << 24});
    let peer = Peer::start(&dirs.state, "everything", welcome);

    let mut bridge = Bridge::start(&dirs, "everything");
    let (_, _presence) = peer.accept();
    let init = handshake(&mut bridge);
    assert!(init["result"]["protocolVersion"].is_string(), "{init}");
    assert!(init["result"]["serverInfo"]["name"].is_string(), "{init}");

    send_json(
        &mut bridge,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    );
    let (tools, _) = answer_to(&bridge, json!(1));
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {tools}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"echo") && names.contains(&"trigger-long-running-operation"),
        "{names:?}"
    );

    send_json(
        &mut bridge,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "echo", "arguments": {"message": "through the bridge"}}}),
    );
    let (echo, _) = answer_to(&bridge, json!(2));
    let text = echo["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("through the bridge"), "{echo}");

    send_json(
        &mut bridge,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "trigger-long-running-operation",
                          "arguments": {"duration": 1, "steps": 3},
                          "_meta": {"progressToken": "p3"}}}),
    );
    let (done, notes) = answer_to(&bridge, json!(3));
    let progress: Vec<&Value> = notes
        .iter()
        .filter(|n| n["method"] == json!("notifications/progress"))
        .map(|n| &n["params"]["progress"])
        .collect();
    assert_eq!(progress, vec![&json!(1), &json!(2), &json!(3)], "{notes:?}");
    assert!(
        done["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("completed"),
        "{done}"
    );

    bridge.close_stdin();
    assert_eq!(bridge.exit_within(Duration::from_secs(5)), 0);

    // paiosd going away mid-request ends a bridge to an HTTP server too.
    let mut bridge = Bridge::start(&dirs, "everything");
    let (_, presence) = peer.accept();
    handshake(&mut bridge);
    send_json(
        &mut bridge,
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
               "params": {"name": "trigger-long-running-operation",
                          "arguments": {"duration": 30, "steps": 30},
                          "_meta": {"progressToken": "p4"}}}),
    );
    let first = bridge.json();
    assert_eq!(first["method"], json!("notifications/progress"), "{first}");
    drop(presence);
    let (answer, _) = answer_to(&bridge, json!(4));
    assert_eq!(error_of(&answer).1, -32000, "{answer}");
    assert_eq!(bridge.exit_within(Duration::from_secs(2)), 1);
}

#[test]
fn a_large_answer_is_written_whole_before_the_bridge_exits() {
    let Some(server) = Everything::start() else {
        return;
    };
    let dirs = TestDirs::new();
    let welcome = json!({"welcome": "http", "url": server.url, "max_line": 1 << 24});
    let peer = Peer::start(&dirs.state, "everything", welcome);
    let mut bridge = Bridge::start(&dirs, "everything");
    let (_, _presence) = peer.accept();
    handshake(&mut bridge);
    let message = "m".repeat(2 << 20);
    send_json(
        &mut bridge,
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
               "params": {"name": "echo", "arguments": {"message": message}}}),
    );
    // The client is done at once: the answer still comes whole, then exit 0.
    bridge.close_stdin();
    let (echo, _) = answer_to(&bridge, json!(7));
    let text = echo["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.ends_with(&message), "{} bytes of text", text.len());
    assert_eq!(bridge.exit_within(Duration::from_secs(5)), 0);
}

#[test]
fn a_restarted_http_server_that_forgot_the_session_ends_the_bridge() {
    let Some(server) = Everything::start() else {
        return;
    };
    let dirs = TestDirs::new();
    let welcome = json!({"welcome": "http", "url": server.url, "max_line": 1 << 24});
    let peer = Peer::start(&dirs.state, "everything", welcome);
    let mut bridge = Bridge::start(&dirs, "everything");
    let (_, _presence) = peer.accept();
    handshake(&mut bridge);
    // Answered: the handshake's notification has reached the first server too.
    send_json(
        &mut bridge,
        json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}),
    );
    answer_to(&bridge, json!(5));
    let port: u16 = server
        .url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/mcp")
        .parse()
        .expect("port");
    drop(server);
    let Some(_again) = Everything::start_on(port) else {
        return;
    };
    send_json(
        &mut bridge,
        json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}),
    );
    let (answer, _) = answer_to(&bridge, json!(8));
    let (_, code, message) = error_of(&answer);
    assert_eq!(code, -32000, "{answer}");
    assert!(message.contains("session"), "{message}");
    assert_eq!(bridge.exit_within(Duration::from_secs(2)), 1);
}

#[test]
fn an_unreachable_http_server_is_an_error_for_each_request() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dirs = TestDirs::new();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let peer = Peer::start(
        &dirs.state,
        "web",
        json!({"welcome": "http", "url": url, "max_line": 1 << 20}),
    );
    let mut bridge = Bridge::start(&dirs, "web");
    let (_, _presence) = peer.accept();
    bridge.send(&request(json!(1), "initialize"));
    let (id, code, message) = error_of(&bridge.json());
    assert_eq!((id, code), (json!(1), -32000));
    assert!(message.contains(&url), "{message}");
    bridge.send(b"not json\n");
    assert_eq!(error_of(&bridge.json()).1, -32700);
    bridge.close_stdin();
    assert_eq!(bridge.exit_within(Duration::from_secs(5)), 0);
}
