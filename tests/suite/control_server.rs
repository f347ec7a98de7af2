//! The control socket under hostile and crowded clients: a real socket, the real
//! protocol and limits, and a small in-test actor in place of the supervisor (which is
//! not this module) that answers each `ControlMsg` the way the contract says.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{needs, TestUser};
use paios::control::client::{Client, ClientError};
use paios::control::protocol::{
    ErrorCode, OpResult, Reply, Request, Response, ServiceStatus, Target, MAX_REQUEST_BYTES,
};
use paios::control::server::{self, Limits};
use paios::control::ControlMsg;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How the in-test actor behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Actor {
    /// Answers everything.
    Answering,
    /// Never reads its queue, as if the supervisor were stuck.
    Stuck,
}

/// What the actor saw, for assertions.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    /// `restart slow` replies whose receiver was dropped by a hung-up client.
    abandoned: AtomicUsize,
    /// How many requests wait in the queue of a stuck actor.
    queued: AtomicUsize,
}

struct Harness {
    dir: tempfile::TempDir,
    socket: PathBuf,
    token: CancellationToken,
    seen: Arc<Seen>,
    thread: Option<JoinHandle<()>>,
}

impl Harness {
    fn start() -> Harness {
        Harness::with(Limits::default(), 64, Actor::Answering, |_| {})
    }

    fn with_limits(limits: Limits) -> Harness {
        Harness::with(limits, 64, Actor::Answering, |_| {})
    }

    /// `prepare` runs on the socket's directory before binding.
    fn with(limits: Limits, capacity: usize, actor: Actor, prepare: impl FnOnce(&Path)) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("paiosd.sock");
        prepare(dir.path());
        let token = CancellationToken::new();
        let seen = Arc::new(Seen::default());
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = {
            let socket = socket.clone();
            let token = token.clone();
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = match server::bind(&socket) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = bound_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = bound_tx.send(Ok(()));
                    let (tx, rx) = mpsc::channel(capacity);
                    let actor_task = tokio::spawn(run_actor(rx, actor, seen, token.clone()));
                    server::serve_with(listener, tx, token, limits).await;
                    actor_task.abort();
                });
            })
        };
        bound_rx
            .recv()
            .expect("server thread answered")
            .expect("bind succeeded");
        Harness {
            dir,
            socket,
            token,
            seen,
            thread: Some(thread),
        }
    }

    fn raw(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket).expect("client connects")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fake_service(i: usize) -> ServiceStatus {
    ServiceStatus {
        name: format!("svc-{i:03}"),
        kind: "service".into(),
        state: "running".into(),
        pid: Some(1000 + i as i32),
        pgid: Some(1000 + i as i32),
        uptime_s: Some(60),
        restarts_24h: 0,
        last_exit: None,
        health: None,
        rss_bytes: Some(1 << 20),
        next_run: None,
        detail: None,
        enabled: true,
        log_dropped: 0,
        mcp: None,
    }
}

async fn run_actor(
    mut rx: mpsc::Receiver<ControlMsg>,
    actor: Actor,
    seen: Arc<Seen>,
    token: CancellationToken,
) {
    if actor == Actor::Stuck {
        // Holds the receiver so the queue stays full, reads nothing, and says how full
        // it is so a test knows when its request has taken the slot.
        loop {
            seen.queued.store(rx.len(), Ordering::SeqCst);
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
        drop(rx);
        return;
    }
    while let Some(ControlMsg { request, reply }) = rx.recv().await {
        seen.requests.fetch_add(1, Ordering::SeqCst);
        let answer = match request {
            Request::Ping => Response::Ok(Reply::Pong {
                version: "test".into(),
                pid: std::process::id(),
                ledger: None,
            }),
            Request::Status { names } => {
                let all: Vec<ServiceStatus> = (0..200).map(fake_service).collect();
                if let Some(unknown) = names.iter().find(|n| !all.iter().any(|s| &s.name == *n)) {
                    Response::error(
                        ErrorCode::UnknownService,
                        format!("no service named {unknown}"),
                    )
                } else if names.is_empty() {
                    Response::Ok(Reply::Status {
                        services: all,
                        ledger: None,
                    })
                } else {
                    let services = all
                        .into_iter()
                        .filter(|s| names.contains(&s.name))
                        .collect();
                    Response::Ok(Reply::Status {
                        services,
                        ledger: None,
                    })
                }
            }
            Request::Restart {
                target: Target { names, .. },
                ..
            } if names == ["slow"] => {
                let seen = Arc::clone(&seen);
                let mut reply = reply;
                tokio::spawn(async move {
                    reply.closed().await;
                    seen.abandoned.fetch_add(1, Ordering::SeqCst);
                });
                continue;
            }
            Request::Restart {
                target: Target { names, .. },
                ..
            } => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Response::Ok(Reply::Ops {
                    results: names
                        .into_iter()
                        .map(|name| OpResult {
                            name,
                            ok: true,
                            state: "running".into(),
                            pid: Some(1),
                            message: "restarted".into(),
                        })
                        .collect(),
                })
            }
            Request::Shutdown => {
                let _ = reply.send(Response::Ok(Reply::ShuttingDown {
                    pid: std::process::id(),
                }));
                token.cancel();
                continue;
            }
            _ => Response::error(ErrorCode::NotApplicable, "not in this test"),
        };
        let _ = reply.send(answer);
    }
}

/// Reads one answer line as JSON.
fn read_answer(reader: &mut impl BufRead) -> serde_json::Value {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read answer");
    assert!(line.ends_with('\n'), "answer is a whole line: {line:?}");
    serde_json::from_str(&line).expect("answer is JSON")
}

fn error_code(answer: &serde_json::Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("<not an error>")
}

fn assert_closed(reader: &mut impl Read) {
    let mut rest = Vec::new();
    let n = reader.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "connection closed after the error: {rest:?}");
}

#[test]
fn ping_status_and_several_requests_on_one_connection() {
    let h = Harness::start();
    let mut client = h.client();
    match client.request(&Request::Ping).expect("ping") {
        Response::Ok(Reply::Pong { pid, .. }) => assert_eq!(pid, std::process::id()),
        other => panic!("unexpected {other:?}"),
    }
    match client
        .request(&Request::Status {
            names: vec!["svc-007".into()],
        })
        .expect("status")
    {
        Response::Ok(Reply::Status { services, .. }) => {
            assert_eq!(services.len(), 1);
            assert_eq!(services[0].name, "svc-007");
        }
        other => panic!("unexpected {other:?}"),
    }
    match client
        .request(&Request::Status {
            names: vec!["nope".into()],
        })
        .expect("status")
    {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::UnknownService),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn garbage_gets_bad_request_and_the_connection_goes_on() {
    let h = Harness::start();
    let mut stream = h.raw();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    for garbage in [
        &b"\x00\x01\xffgarbage\n"[..],
        b"{\"version\":1,\"op\":\"explode\"}\n",
        b"[]\n",
        b"\n",
    ] {
        stream.write_all(garbage).expect("write");
        let answer = read_answer(&mut reader);
        assert_eq!(error_code(&answer), "bad_request", "{answer}");
        assert_eq!(answer["version"], 1);
    }
    stream
        .write_all(b"{\"version\":1,\"op\":\"ping\"}\n")
        .expect("write");
    let answer = read_answer(&mut reader);
    assert_eq!(answer["ok"]["kind"], "pong", "{answer}");
    assert_eq!(h.seen.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn wrong_version_says_to_restart_paiosd() {
    let h = Harness::start();
    let mut stream = h.raw();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    stream
        .write_all(b"{\"version\":99,\"op\":\"ping\"}\n")
        .expect("write");
    let answer = read_answer(&mut reader);
    assert_eq!(error_code(&answer), "version_mismatch", "{answer}");
    let message = answer["error"]["message"].as_str().expect("message");
    assert!(message.contains("restart paiosd"), "{message}");
    assert_eq!(h.seen.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn unknown_op_and_unknown_fields_are_bad_requests() {
    let h = Harness::start();
    let mut stream = h.raw();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    stream
        .write_all(b"{\"version\":1,\"op\":\"format_disk\"}\n")
        .expect("write");
    let answer = read_answer(&mut reader);
    assert_eq!(error_code(&answer), "bad_request");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("format_disk")),
        "{answer}"
    );
    stream
        .write_all(b"{\"version\":1,\"op\":\"stop\",\"names\":[\"a\"],\"force\":true}\n")
        .expect("write");
    let answer = read_answer(&mut reader);
    assert_eq!(error_code(&answer), "bad_request", "{answer}");
    assert_eq!(h.seen.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn a_half_sent_request_is_refused_and_closed() {
    let h = Harness::start();
    let mut stream = h.raw();
    stream
        .write_all(b"{\"version\":1,\"op\":\"pi")
        .expect("write");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half close");
    let mut reader = BufReader::new(stream);
    let answer = read_answer(&mut reader);
    assert_eq!(error_code(&answer), "bad_request", "{answer}");
    assert_closed(&mut reader);
    assert_eq!(h.seen.requests.load(Ordering::SeqCst), 0);
    // A client that vanishes mid-line does not disturb the next one.
    let mut gone = h.raw();
    gone.write_all(b"{\"vers").expect("write");
    drop(gone);
    assert!(matches!(
        h.client().request(&Request::Ping),
        Ok(Response::Ok(_))
    ));
}

#[cfg(target_os = "linux")]
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[test]
fn a_100_mb_line_is_too_large_and_memory_does_not_grow() {
    // Memory is read from this process's RSS: no other test may share it.
    if crate::common::ran_in_own_process(
        module_path!(),
        "a_100_mb_line_is_too_large_and_memory_does_not_grow",
    ) {
        return;
    }
    let h = Harness::with_limits(Limits {
        request_timeout: Duration::from_secs(60),
        ..Limits::default()
    });
    #[cfg(target_os = "linux")]
    let before = rss_bytes();
    let mut stream = h.raw();
    let chunk = vec![b'x'; 64 * 1024];
    let total = 100 * 1024 * 1024;
    let mut sent = 0;
    stream
        .write_all(b"{\"version\":1,\"op\":\"status\",\"names\":[\"")
        .expect("write");
    #[cfg(target_os = "linux")]
    let mut peak = before;
    while sent < total {
        stream.write_all(&chunk).expect("server keeps reading");
        sent += chunk.len();
        // Sampled while the line streams in: a buffer freed at the end would not show
        // in a measurement taken afterwards.
        #[cfg(target_os = "linux")]
        if sent % (1024 * 1024) == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    stream.write_all(b"\"]}\n").expect("write");
    let mut reader = BufReader::new(stream);
    let answer = read_answer(&mut reader);
    assert_eq!(error_code(&answer), "too_large", "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains(&MAX_REQUEST_BYTES.to_string())));
    assert_closed(&mut reader);
    #[cfg(target_os = "linux")]
    {
        let grown = peak.max(rss_bytes()).saturating_sub(before);
        assert!(grown < 20 * 1024 * 1024, "RSS grew by {grown} bytes");
    }
    assert_eq!(h.seen.requests.load(Ordering::SeqCst), 0);
    assert!(matches!(
        h.client().request(&Request::Ping),
        Ok(Response::Ok(_))
    ));
}

#[test]
fn a_line_just_under_the_limit_is_read() {
    let h = Harness::start();
    let mut stream = h.raw();
    let prefix = b"{\"version\":1,\"op\":\"status\",\"names\":[\"";
    let suffix = b"\"]}";
    let name = "n".repeat(MAX_REQUEST_BYTES - prefix.len() - suffix.len());
    let mut line = prefix.to_vec();
    line.extend_from_slice(name.as_bytes());
    line.extend_from_slice(suffix);
    assert_eq!(line.len(), MAX_REQUEST_BYTES);
    line.push(b'\n');
    stream.write_all(&line).expect("write");
    let mut reader = BufReader::new(stream);
    let answer = read_answer(&mut reader);
    assert_eq!(error_code(&answer), "unknown_service", "{answer}");
}

#[test]
fn a_slow_loris_times_out_while_others_are_served() {
    let h = Harness::with_limits(Limits {
        request_timeout: Duration::from_millis(1500),
        ..Limits::default()
    });
    let slow = h.raw();
    let (began_tx, began) = std::sync::mpsc::channel();
    let trickle = {
        let mut slow = slow.try_clone().expect("clone");
        std::thread::spawn(move || {
            for b in b"{\"version\":1,\"op\":\"status\",\"names\":[]"
                .iter()
                .cycle()
            {
                if slow.write_all(&[*b]).is_err() {
                    return;
                }
                let _ = began_tx.send(());
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // The slow client is connected and trickling before the others come.
    began
        .recv_timeout(Duration::from_secs(10))
        .expect("the slow client sent its first byte");
    let started = Instant::now();
    let mut other = h.client();
    for _ in 0..5 {
        assert!(matches!(
            other.request(&Request::Status { names: vec![] }),
            Ok(Response::Ok(Reply::Status { .. }))
        ));
    }
    // Served while the slow client still holds its connection (it times out at 1.5 s).
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "served in {:?}",
        started.elapsed()
    );
    let mut reader = BufReader::new(slow.try_clone().expect("clone"));
    let answer = read_answer(&mut reader);
    assert_eq!(error_code(&answer), "timeout", "{answer}");
    assert_closed(&mut reader);
    let _ = slow.shutdown(std::net::Shutdown::Both);
    trickle
        .join()
        .expect("trickler ends when the server closes");
}

#[test]
fn fifty_concurrent_status_requests_are_all_answered() {
    let h = Harness::start();
    let socket = h.socket.clone();
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&socket).expect("connect");
                match client.request(&Request::Status { names: vec![] }) {
                    Ok(Response::Ok(Reply::Status { services, .. })) => services.len(),
                    other => panic!("unexpected {other:?}"),
                }
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread"), 200);
    }
    assert_eq!(h.seen.requests.load(Ordering::SeqCst), 50);
}

#[test]
fn a_stuck_supervisor_queue_answers_overloaded() {
    let h = Harness::with(
        Limits {
            queue_timeout: Duration::from_millis(200),
            ..Limits::default()
        },
        1,
        Actor::Stuck,
        |_| {},
    );
    // The first request fills the one slot and waits for an answer that never comes.
    let mut first = h.raw();
    first
        .write_all(b"{\"version\":1,\"op\":\"ping\"}\n")
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.seen.queued.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the first request never took the slot"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let mut second = h.client();
    match second.request(&Request::Ping).expect("answered") {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::Overloaded),
        other => panic!("unexpected {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn connections_beyond_the_limit_are_refused_at_once() {
    let h = Harness::with_limits(Limits {
        max_connections: 2,
        ..Limits::default()
    });
    let mut held = vec![h.client(), h.client()];
    // Make sure both are accepted and counted before the third arrives.
    for c in &mut held {
        assert!(matches!(c.request(&Request::Ping), Ok(Response::Ok(_))));
    }
    let mut third = BufReader::new(h.raw());
    let answer = read_answer(&mut third);
    assert_eq!(error_code(&answer), "overloaded", "{answer}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = h.client();
        if let Ok(Response::Ok(_)) = c.request(&Request::Ping) {
            break;
        }
        assert!(Instant::now() < deadline, "slots were never freed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_client_that_hangs_up_while_waiting_drops_its_reply() {
    let h = Harness::start();
    let mut stream = h.raw();
    stream
        .write_all(b"{\"version\":1,\"op\":\"restart\",\"names\":[\"slow\"]}\n")
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.seen.requests.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "request never reached the actor");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(h.seen.abandoned.load(Ordering::SeqCst), 0);
    drop(stream);
    while h.seen.abandoned.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the connection task kept waiting for a gone client"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn waiting_operations_are_answered_when_done() {
    let h = Harness::start();
    let mut client = h.client();
    match client
        .request(&Request::Restart {
            target: Target {
                names: vec!["kb".into(), "gw".into()],
                all: false,
            },
            wait: true,
        })
        .expect("restart")
    {
        Response::Ok(Reply::Ops { results }) => {
            let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names, ["kb", "gw"]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_socket_is_0600() {
    let h = Harness::start();
    let meta = std::fs::symlink_metadata(&h.socket).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(
        !h.dir.path().join(".sock.new").exists(),
        "the temporary name is gone"
    );
}

#[test]
fn a_stale_socket_is_replaced() {
    let h = Harness::with(Limits::default(), 8, Actor::Answering, |dir| {
        // A socket left by a killed paiosd: bound, then its owner gone.
        let old = std::os::unix::net::UnixListener::bind(dir.join("paiosd.sock")).expect("bind");
        drop(old);
        // And a leftover temporary from a paiosd killed halfway through binding.
        let tmp = std::os::unix::net::UnixListener::bind(dir.join(".sock.new")).expect("bind");
        drop(tmp);
    });
    assert!(matches!(
        h.client().request(&Request::Ping),
        Ok(Response::Ok(_))
    ));
}

#[test]
fn a_file_that_is_not_a_socket_is_refused_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("paiosd.sock");
    std::fs::write(&path, "precious").expect("write");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let err = rt
        .block_on(async { server::bind(&path) })
        .expect_err("refused");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).expect("kept"), "precious");

    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&path, &link).expect("symlink");
    let err = rt
        .block_on(async { server::bind(&link) })
        .expect_err("refused");
    assert!(err.to_string().contains("not a socket"), "{err}");
}

#[test]
fn shutdown_stops_accepting_after_answering() {
    let h = Harness::start();
    let mut client = h.client();
    match client.request(&Request::Shutdown).expect("answered") {
        Response::Ok(Reply::ShuttingDown { pid }) => assert_eq!(pid, std::process::id()),
        other => panic!("unexpected {other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Client::connect(&h.socket) {
            Err(e @ ClientError::NotRunning { .. }) => {
                assert_eq!(e.exit_code(), 3);
                break;
            }
            _ => {
                assert!(Instant::now() < deadline, "still accepting after shutdown");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[test]
fn the_client_times_out_on_a_silent_paiosd() {
    let h = Harness::with(Limits::default(), 1, Actor::Stuck, |_| {});
    let mut client =
        Client::connect_timeout(&h.socket, Duration::from_millis(300)).expect("connect");
    let started = Instant::now();
    match client.request(&Request::Status { names: vec![] }) {
        Err(ClientError::Timeout(_)) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn no_socket_means_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Client::connect(&dir.path().join("paiosd.sock")).expect_err("nothing there");
    assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 3);
    assert!(err.to_string().contains("paiosd is not running"), "{err}");
    assert!(err.to_string().contains("Start it with"), "{err}");
}

#[test]
fn a_connection_from_another_uid_is_refused() {
    let Some(user) = needs("root, useradd and setpriv", TestUser::create()) else {
        return;
    };
    let h = Harness::start();
    // Let the kernel admit the other user so that paiosd's own UID check is what
    // refuses it (in real use the 0700 directory and 0600 socket already stop it).
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod dir");
    std::fs::set_permissions(&h.socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    let output = std::process::Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--clear-groups")
        .arg(env!("CARGO_BIN_EXE_paiosctl"))
        .arg("--state-dir")
        .arg(h.dir.path())
        .args(["--json", "ping"])
        .env("HOME", "/nonexistent")
        .output()
        .expect("run paiosctl with setpriv");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout {stdout} stderr {stderr}"
    );
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON error");
    assert_eq!(error_code(&answer), "permission_denied", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("UID {}", user.uid))),
        "{answer}"
    );
    assert_eq!(h.seen.requests.load(Ordering::SeqCst), 0);
    // paiosd's own user is still served.
    assert!(matches!(
        h.client().request(&Request::Ping),
        Ok(Response::Ok(_))
    ));
}
