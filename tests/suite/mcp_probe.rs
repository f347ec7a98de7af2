//! `[health] mcp = true` through the real paiosd: a JSON-RPC `ping` over the server's
//! own transport. An http server (server-everything over Streamable HTTP, which answers
//! a request without a session with a JSON-RPC error) is healthy while it answers and
//! is restarted, recorded `hung`, once SIGSTOPped; a per-client stdio run is pinged on
//! paiosd's pipe to it, its client never sees a ping or its reply, and a SIGSTOPped run
//! is ended, recorded `hung`, and its client's connection closed. And the HTTP ping
//! against fixture servers: a result, -32601 or an event stream is alive; a reply to
//! another id, an HTML 404, an empty 202 or silence is not.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::daemon::{text, Daemon};
use crate::common::{self, mcp_peers, wait_until};

/// SIGCONTs a group this test stopped, whatever happens (the daemon's guard then kills
/// what is left of it).
struct Stopped(i32);

impl Stopped {
    fn stop(pgid: i32) -> Stopped {
        paios::process::signal_group(pgid, libc::SIGSTOP).expect("SIGSTOP the group");
        Stopped(pgid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = paios::process::signal_group(self.0, libc::SIGCONT);
    }
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

fn hung_record(d: &Daemon, pid: i32) -> Value {
    let mut record = None;
    let found = wait_until(Duration::from_secs(20), || {
        record = ledger(d)
            .into_iter()
            .find(|r| r["pid"] == pid && r["outcome"] == "hung");
        record.is_some()
    });
    assert!(found, "no `hung` record of pid {pid}: {:?}", ledger(d));
    record.unwrap_or_default()
}

fn pid_of(row: &Value) -> i32 {
    row["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid: {row}")) as i32
}

#[test]
fn an_http_server_that_stops_answering_pings_is_restarted_as_hung() {
    let Some(everything) = mcp_peers::everything() else {
        return;
    };
    let port = mcp_peers::free_port();
    let argv: Vec<String> = everything
        .0
        .argv(["streamableHttp"])
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let command = argv
        .iter()
        .map(|a| common::toml_str(a))
        .collect::<Vec<_>>()
        .join(", ");
    let service = format!(
        "command = [{command}]\nenv = {{ PORT = \"{port}\" }}\n\
         [mcp]\ntransport = \"http\"\nurl = \"{}\"\n\
         [health]\nmcp = true\ninterval = \"200ms\"\ntimeout = \"1s\"\nfailures = 2\nstart_period = \"60s\"\n\
         [stop]\ngrace = \"2s\"\n",
        mcp_peers::Everything::http_url(port)
    );
    let d = Daemon::start(&[("everything", &service)]);
    let mut row = Value::Null;
    let healthy = wait_until(Duration::from_secs(60), || {
        row = d.row("everything");
        row["state"] == "running" && row["health"] == "healthy"
    });
    assert!(healthy, "never healthy: {row}");
    let first = pid_of(&row);
    let pgid = row["pgid"].as_i64().expect("pgid") as i32;
    // Healthy stays healthy while it answers: several more pings pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        let now = d.row("everything");
        assert_eq!(now["health"], "healthy", "{now}");
        assert_eq!(pid_of(&now), first, "{now}");
    }

    let stopped = Stopped::stop(pgid);
    let restarted = wait_until(Duration::from_secs(30), || {
        row = d.row("everything");
        row["pid"].as_i64().is_some_and(|p| p as i32 != first)
    });
    assert!(restarted, "not restarted: {row}");
    drop(stopped);
    let record = hung_record(&d, first);
    assert_eq!(record["service"], "everything", "{record}");
    let context = record["context"].as_str().unwrap_or_default();
    assert!(context.contains("consecutive probe failures"), "{record}");
    // The new run answers pings too.
    let healthy_again = wait_until(Duration::from_secs(60), || {
        row = d.row("everything");
        row["health"] == "healthy"
    });
    assert!(healthy_again, "the new run never became healthy: {row}");
    let table = text(&d.ctl(&["ledger", "everything"]).stdout);
    assert!(table.contains("hung"), "{table}");
}

fn echo_server() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integration/demo/mcp_echo.py");
    path.display().to_string()
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn hello(d: &Daemon, name: &str) -> Conn {
        let path = paios::mcp::socket_path(&d.dirs.state, name);
        let stream = UnixStream::connect(&path).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut c = Conn {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        };
        let me = std::process::id() as i32;
        c.send(&json!({"paios_mcp": 1, "client_pid": me}).to_string());
        let welcome = c.line().expect("a welcome");
        assert!(welcome.contains("\"stdio\""), "{welcome}");
        c
    }

    fn send(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).expect("write");
        self.writer.write_all(b"\n").expect("write");
    }

    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        }
    }

    /// Sends one echo call and reads the next line, which must be its answer.
    fn echo(&mut self, id: u64, text: &str) {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text}}});
        self.send(&call.to_string());
        let line = self.line().expect("a reply");
        assert!(
            !line.contains("paios-probe"),
            "a probe's reply reached the client: {line}"
        );
        let reply: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(reply["id"], id, "{reply}");
        assert_eq!(reply["result"]["content"][0]["text"], text, "{reply}");
    }

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

#[test]
fn a_client_run_is_pinged_unseen_and_ended_as_hung_when_stopped() {
    let dirs = common::TestDirs::new();
    let log = dirs.file("methods.log");
    let service = format!(
        "command = [\"/usr/bin/python3\", {}]\nenv = {{ MCP_ECHO_LOG = {} }}\n\
         [mcp]\ntransport = \"stdio\"\n\
         [health]\nmcp = true\ninterval = \"50ms\"\ntimeout = \"1s\"\nfailures = 2\n\
         [stop]\nstdin_grace = \"200ms\"\ngrace = \"2s\"\n",
        common::toml_str(&echo_server()),
        common::toml_str(&log.display().to_string())
    );
    dirs.write_service("echo", &service);
    let d = Daemon::start_in(dirs);
    let mut c = Conn::hello(&d, "echo");
    c.send(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#);
    let init = c.line().expect("initialize's reply");
    assert!(
        init.contains("mcp-echo") && !init.contains("paios-probe"),
        "{init}"
    );
    let run = d.row("echo")["mcp"]["clients"][0]["run_pid"]
        .as_i64()
        .expect("the client's run") as i32;
    d.guard.borrow_mut().group(run);

    // The client's calls and paiosd's pings share the pipe; every line the client reads
    // answers its own call, in order, while the server sees the pings between them.
    let pings = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "ping")
            .count()
    };
    let mut id = 1;
    let pinged = wait_until(Duration::from_secs(20), || {
        c.echo(
            id,
            &format!("call {id} {}", "x".repeat(id as usize % 7 * 1000)),
        );
        id += 1;
        pings() >= 5 && id > 20
    });
    assert!(pinged, "the run saw {} pings", pings());
    let methods = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        methods.lines().filter(|l| *l == "tools/call").count() >= 20,
        "{methods}"
    );
    assert!(
        methods
            .lines()
            .all(|l| ["initialize", "ping", "tools/call"].contains(&l)),
        "{methods}"
    );
    // Nothing unasked arrives between calls either.
    c.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut more = String::new();
    let extra = c.reader.read_line(&mut more);
    assert!(
        extra.is_err(),
        "an unasked line reached the client: {more:?}"
    );
    c.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");

    let stopped = Stopped::stop(run);
    assert!(c.closed(), "the hung run's client was not disconnected");
    drop(stopped);
    let record = hung_record(&d, run);
    assert_eq!(record["service"], "echo", "{record}");
    let context = record["context"].as_str().unwrap_or_default();
    assert!(
        context.contains("no reply to a JSON-RPC ping") && context.contains("MCP client pid"),
        "{record}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !paios::process::group_alive(
            run
        )),
        "the hung run's group is still there"
    );
    let row = d.row("echo");
    assert_eq!(row["mcp"]["clients"], json!([]), "{row}");
    // Nothing to restart for that client; the next client gets a run of its own.
    let mut next = Conn::hello(&d, "echo");
    next.echo(1, "again");
}

/// How the fixture HTTP server answers a ping.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// 200, a JSON body with the ping's id and a result.
    Result,
    /// 200, a JSON body with the ping's id and -32601 (a server without `ping`).
    MethodNotFound,
    /// 200, an event stream: a notification, then the reply, and the stream left open.
    Events,
    /// 200, a JSON reply to another id.
    OtherId,
    /// 404 with an HTML page.
    Html404,
    /// 202 with no body.
    Accepted,
    /// Reads the request and never answers.
    Silent,
}

/// A one-connection-at-a-time HTTP server on its own thread; the request it saw last
/// (head and body) is kept.
struct Fixture {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Fixture {
    fn start(answer: Answer) -> Fixture {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let keep = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let keep = keep.clone();
                std::thread::spawn(move || {
                    let request = read_request(&mut stream);
                    *keep.lock().expect("seen") = request.clone();
                    let id = request
                        .split("\r\n\r\n")
                        .nth(1)
                        .and_then(|b| serde_json::from_str::<Value>(b).ok())
                        .map(|v| v["id"].clone())
                        .unwrap_or(Value::Null);
                    let json = |body: Value| {
                        let body = body.to_string();
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let response = match answer {
                        Answer::Result => json(json!({"jsonrpc": "2.0", "id": id, "result": {}})),
                        Answer::MethodNotFound => json(json!({"jsonrpc": "2.0", "id": id,
                            "error": {"code": -32601, "message": "Method not found"}})),
                        Answer::OtherId => json(json!({"jsonrpc": "2.0", "id": "1", "result": {}})),
                        Answer::Events => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n\
                             event: message\r\ndata: {}\r\n\r\n: keep-alive\r\n\r\ndata: {}\r\n\r\n",
                            json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {}}),
                            json!({"jsonrpc": "2.0", "id": id, "result": {}})
                        ),
                        Answer::Html404 => "HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\n\
                             content-length: 9\r\n\r\nnot found"
                            .to_string(),
                        Answer::Accepted => "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_string(),
                        Answer::Silent => String::new(),
                    };
                    let _ = stream.write_all(response.as_bytes());
                    // Held open (an event stream, a silent server) until the client goes.
                    let mut sink = [0u8; 64];
                    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                });
            }
        });
        Fixture { port, seen }
    }

    fn probe(&self) -> paios::config::Probe {
        let url = format!("http://127.0.0.1:{}/mcp", self.port);
        paios::config::Probe::Mcp(paios::config::McpEndpoint::Http(
            url.parse().expect("a URL"),
        ))
    }
}

/// The request head and its body (by its content-length).
fn read_request(stream: &mut std::net::TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
    String::from_utf8_lossy(&data).into_owned()
}

#[tokio::test]
async fn an_http_ping_counts_any_json_rpc_reply_and_nothing_else() {
    let timeout = Duration::from_millis(1500);
    for answer in [Answer::Result, Answer::MethodNotFound, Answer::Events] {
        let f = Fixture::start(answer);
        let result = paios::health::probe_once(&f.probe(), timeout).await;
        assert_eq!(result, Ok(()), "{answer:?}");
        let seen = f.seen.lock().expect("seen").to_ascii_lowercase();
        assert!(seen.starts_with("post /mcp http/1.1\r\n"), "{seen}");
        assert!(
            seen.contains("content-type: application/json\r\n"),
            "{seen}"
        );
        assert!(
            seen.contains("accept: application/json, text/event-stream\r\n"),
            "{seen}"
        );
        assert!(!seen.contains("mcp-session-id"), "{seen}");
        assert!(seen.contains("\"method\":\"ping\""), "{seen}");
        assert!(seen.contains("\"id\":\"paios-probe-"), "{seen}");
    }
    let failures = [
        (
            Answer::OtherId,
            "HTTP 200 (application/json) without a JSON-RPC reply",
        ),
        (
            Answer::Html404,
            "HTTP 404 (text/html) without a JSON-RPC reply",
        ),
        (
            Answer::Accepted,
            "HTTP 202 (no content type) without a JSON-RPC reply",
        ),
        (Answer::Silent, "timed out after 1s500ms"),
    ];
    for (answer, want) in failures {
        let f = Fixture::start(answer);
        let result = paios::health::probe_once(&f.probe(), timeout).await;
        let err = result.expect_err(&format!("{answer:?} counted as alive"));
        assert!(err.contains(want), "{answer:?}: {err}");
    }
    // Nothing listening: the connection error, as for an `http` probe.
    let port = mcp_peers::free_port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let probe =
        paios::config::Probe::Mcp(paios::config::McpEndpoint::Http(url.parse().expect("url")));
    let err = paios::health::probe_once(&probe, timeout)
        .await
        .expect_err("refused");
    assert!(err.contains("connection refused"), "{err}");
}

#[test]
fn a_client_that_does_not_read_does_not_make_its_run_hung() {
    let dirs = common::TestDirs::new();
    let log = dirs.file("methods.log");
    let service = format!(
        "command = [\"/usr/bin/python3\", {}]\nenv = {{ MCP_ECHO_LOG = {} }}\n\
         [mcp]\ntransport = \"stdio\"\n\
         [health]\nmcp = true\ninterval = \"50ms\"\ntimeout = \"300ms\"\nfailures = 2\nstart_period = \"0s\"\n",
        common::toml_str(&echo_server()),
        common::toml_str(&log.display().to_string())
    );
    dirs.write_service("echo", &service);
    let d = Daemon::start_in(dirs);
    let mut c = Conn::hello(&d, "echo");
    c.echo(1, "first");
    let run = d.row("echo")["mcp"]["clients"][0]["run_pid"]
        .as_i64()
        .expect("the client's run") as i32;
    d.guard.borrow_mut().group(run);

    // Calls with large answers, none read: the socket and the run's stdout fill up,
    // and the run blocks writing its answers.
    const CALLS: u64 = 200;
    let big = "y".repeat(64 * 1024);
    let mut writer = c.writer.try_clone().expect("clone");
    let sending = std::thread::spawn(move || {
        for id in 2..2 + CALLS {
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": big}}});
            if writer.write_all(format!("{call}\n").as_bytes()).is_err() {
                return;
            }
        }
    });
    let calls = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "tools/call")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(20), || calls() >= 5),
        "the run never got the calls"
    );
    // Many probe periods while the client reads nothing: the run is not taken for hung.
    let watched_until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < watched_until {
        let row = d.row("echo");
        assert_eq!(row["mcp"]["clients"][0]["run_pid"], run, "{row}");
        assert!(paios::process::group_alive(run), "the run's group is gone");
    }
    // Once the client reads, every answer arrives, in order, with no ping's among them.
    for id in 2..2 + CALLS {
        let line = c.line().expect("an answer");
        assert!(
            !line.contains("paios-probe"),
            "a probe's reply reached the client"
        );
        let reply: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(reply["id"], id);
    }
    sending.join().expect("the sender");
    c.echo(2 + CALLS, "last");
    assert!(
        !ledger(&d).iter().any(|r| r["outcome"] == "hung"),
        "{:?}",
        ledger(&d)
    );
}
