//! HTTP and TCP probes and the prober's cadence, against real servers the test
//! starts: one that answers 200, one 503, one that accepts and never answers, one that
//! closes at once, one that sends garbage, and closed or unreachable addresses.
//!
//! Command probes live in `health_exec.rs`: they need a `waitpid(-1)` reaper, which
//! would reap every child of this test process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paios::config::probe::{HttpTarget, TcpTarget};
use paios::config::{HealthConfig, OnFailure, Probe};
use paios::health::{probe_once, spawn_prober, ProbeEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How a fixture server treats each connection.
#[derive(Clone, Copy)]
enum Mode {
    /// Reads the request head, answers with this status and a short body.
    Status(u16),
    /// Reads the request, answers 200 with a body that never ends.
    Endless,
    /// Closes the connection as soon as it is accepted.
    Close,
    /// Answers bytes that are not HTTP.
    Garbage,
}

/// A server on its own thread, so what it observes does not depend on the runtime
/// under test. Accepted connections and request heads are recorded.
struct Server {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
}

impl Server {
    fn start(mode: Mode) -> Server {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind fixture server");
        let addr = listener.local_addr().expect("fixture address");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (h, a) = (heads.clone(), accepted.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                std::thread::spawn(move || serve(stream, mode, &h));
            }
        });
        Server {
            addr,
            heads,
            accepted,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn read_head(stream: &mut StdStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn serve(mut stream: StdStream, mode: Mode, heads: &Mutex<Vec<String>>) {
    if let Mode::Close = mode {
        return;
    }
    let head = read_head(&mut stream);
    heads.lock().expect("heads").push(head);
    match mode {
        Mode::Status(code) => {
            let body = format!("status {code}\n");
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nLocation: /\r\n\r\n{body}",
                body.len()
            );
        }
        Mode::Endless => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            let chunk = format!("{:x}\r\n{}\r\n", 4096, "x".repeat(4096));
            while stream.write_all(chunk.as_bytes()).is_ok() {}
        }
        Mode::Garbage => {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n");
            std::thread::sleep(Duration::from_millis(200));
        }
        Mode::Close => {}
    }
}

/// A server that accepts and never answers, and tells how many probe connections were
/// open at once. A probe's connection counts as open until the client closed it; the
/// check runs at each accept, after the client's close (same thread, earlier in
/// program order) has already reached the kernel over loopback.
struct Silent {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    closed_seen: Arc<AtomicUsize>,
}

impl Silent {
    fn start() -> Silent {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind silent server");
        let addr = listener.local_addr().expect("silent address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let closed_seen = Arc::new(AtomicUsize::new(0));
        let (acc, max, closed) = (accepted.clone(), max_open.clone(), closed_seen.clone());
        std::thread::spawn(move || {
            let mut open: Vec<StdStream> = Vec::new();
            listener
                .set_nonblocking(true)
                .expect("nonblocking listener");
            loop {
                let before = open.len();
                open.retain_mut(|s| !peer_closed(s));
                closed.fetch_add(before - open.len(), Ordering::SeqCst);
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::sleep(Duration::from_millis(2));
                        let before = open.len();
                        open.retain_mut(|s| !peer_closed(s));
                        closed.fetch_add(before - open.len(), Ordering::SeqCst);
                        open.push(stream);
                        acc.fetch_add(1, Ordering::SeqCst);
                        max.fetch_max(open.len(), Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Silent {
            addr,
            accepted,
            max_open,
            closed_seen,
        }
    }
}

fn peer_closed(stream: &mut StdStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// A port on 127.0.0.1 with nothing listening.
fn closed_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn http(url: String) -> Probe {
    Probe::Http {
        url: url.parse().expect("a probe URL"),
        expect_status: None,
    }
}

fn tcp(addr: &str) -> Probe {
    Probe::Tcp {
        addr: addr.parse().expect("a probe address"),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn health(probe: Probe, interval: Duration, timeout: Duration) -> HealthConfig {
    HealthConfig {
        probe,
        interval,
        timeout,
        failures: 3,
        start_period: Duration::ZERO,
        on_failure: OnFailure::Restart,
    }
}

#[tokio::test]
async fn http_200_is_healthy_and_sends_path_and_host() {
    let s = Server::start(Mode::Status(200));
    assert_eq!(
        probe_once(&http(s.url("/health?deep=1")), ms(2000)).await,
        Ok(())
    );
    let heads = s.heads.lock().expect("heads").clone();
    assert_eq!(heads.len(), 1);
    assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
    let head = heads[0].to_ascii_lowercase();
    assert!(
        head.starts_with("get /health?deep=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains(&format!("host: {}\r\n", s.addr)), "{head}");
}

#[tokio::test]
async fn http_redirect_is_healthy() {
    let s = Server::start(Mode::Status(302));
    assert_eq!(probe_once(&http(s.url("/")), ms(2000)).await, Ok(()));
}

#[tokio::test]
async fn http_503_is_unhealthy() {
    let s = Server::start(Mode::Status(503));
    assert_eq!(
        probe_once(&http(s.url("/health")), ms(2000)).await,
        Err("HTTP 503".to_string())
    );
    let s = Server::start(Mode::Status(404));
    assert_eq!(
        probe_once(&http(s.url("/missing")), ms(2000)).await,
        Err("HTTP 404".to_string())
    );
}

#[tokio::test]
async fn expect_status_must_match_exactly() {
    let s = Server::start(Mode::Status(503));
    let expect = |code| Probe::Http {
        url: s.url("/").parse().expect("a probe URL"),
        expect_status: Some(code),
    };
    assert_eq!(probe_once(&expect(503), ms(2000)).await, Ok(()));
    assert_eq!(
        probe_once(&expect(200), ms(2000)).await,
        Err("HTTP 503 (expected 200)".to_string())
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let s = Silent::start();
    let t0 = Instant::now();
    let result = probe_once(&http(format!("http://{}/", s.addr)), ms(300)).await;
    assert_eq!(result, Err("timed out after 300ms".to_string()));
    let took = t0.elapsed();
    assert!(took >= ms(300) && took < ms(1500), "took {took:?}");
}

#[tokio::test]
async fn a_server_that_closes_at_once_is_unhealthy() {
    let s = Server::start(Mode::Close);
    let err = probe_once(&http(s.url("/")), ms(2000))
        .await
        .expect_err("closed connection is healthy");
    assert!(
        err.contains("closed before a complete HTTP response") || err.contains("reset"),
        "{err}"
    );
    assert!(err.contains(&s.addr.to_string()), "{err}");
}

#[tokio::test]
async fn a_server_that_is_not_http_is_unhealthy() {
    let s = Server::start(Mode::Garbage);
    let err = probe_once(&http(s.url("/")), ms(2000))
        .await
        .expect_err("garbage is healthy");
    assert!(err.contains("invalid HTTP response"), "{err}");
}

#[tokio::test]
async fn an_endless_body_does_not_hold_the_probe() {
    let s = Server::start(Mode::Endless);
    let t0 = Instant::now();
    assert_eq!(probe_once(&http(s.url("/")), ms(2000)).await, Ok(()));
    assert!(t0.elapsed() < ms(1000));
}

#[tokio::test]
async fn a_closed_port_is_connection_refused() {
    let port = closed_port();
    let addr = format!("127.0.0.1:{port}");
    let want = Err(format!("connection refused to {addr}"));
    assert_eq!(
        probe_once(&http(format!("http://{addr}/")), ms(2000)).await,
        want
    );
    assert_eq!(probe_once(&tcp(&addr), ms(2000)).await, want);
}

#[tokio::test]
async fn tcp_probe_follows_the_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let probe = tcp(&addr.to_string());
    assert_eq!(probe_once(&probe, ms(2000)).await, Ok(()));
    drop(listener);
    assert_eq!(
        probe_once(&probe, ms(2000)).await,
        Err(format!("connection refused to {addr}"))
    );
    let by_name = tcp(&format!("localhost:{}", closed_port()));
    let err = probe_once(&by_name, ms(2000)).await.expect_err("closed");
    assert!(err.contains("connection refused"), "{err}");
}

#[tokio::test]
async fn unreachable_hosts_fail_within_the_timeout() {
    let timeout = ms(500);
    for probe in [
        // Reserved for documentation: never routed.
        tcp("192.0.2.1:80"),
        http("http://192.0.2.1:8080/health".into()),
        // A name that cannot exist (RFC 6761).
        tcp("no-such-host.invalid:80"),
        http("http://no-such-host.invalid:80/".into()),
    ] {
        let t0 = Instant::now();
        let err = probe_once(&probe, timeout)
            .await
            .expect_err("unreachable is healthy");
        let took = t0.elapsed();
        assert!(took < timeout + ms(1000), "{probe:?} took {took:?}");
        assert!(
            err.starts_with("timed out after")
                || err.starts_with("cannot resolve")
                || err.starts_with("cannot connect")
                // Some sandboxes answer for unroutable addresses themselves.
                || err.starts_with("connection refused"),
            "{probe:?}: {err}"
        );
    }
}

#[test]
fn bad_probe_addresses_are_clear_errors_when_loaded() {
    for (url, want) in [
        ("https://127.0.0.1:80/", "https is not supported"),
        ("127.0.0.1:80", "not a URL"),
        ("http://127.0.0.1:70000/", "not a port"),
        ("http://exa mple:80/", "not a host"),
        ("http://127.0.0.1/", "needs a port"),
    ] {
        let err = url.parse::<HttpTarget>().expect_err(url);
        assert!(err.contains(want), "{url}: {err}");
    }
    for (addr, want) in [
        ("", "needs a port"),
        ("127.0.0.1", "needs a port"),
        ("127.0.0.1:x", "not a port"),
        (":80", "needs a host"),
    ] {
        let err = addr.parse::<TcpTarget>().expect_err(addr);
        assert!(err.contains(want), "{addr:?}: {err}");
    }
}

async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<ProbeEvent>) -> ProbeEvent {
    tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("a probe event in time")
        .expect("prober still running")
}

#[tokio::test]
async fn prober_probes_at_once_then_every_interval() {
    let s = Server::start(Mode::Status(200));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let t0 = Instant::now();
    let task = spawn_prober(
        "kb".into(),
        7,
        health(http(s.url("/")), ms(150), ms(1000)),
        tx,
        cancel.clone(),
    );
    let first = next_event(&mut rx).await;
    let first_at = t0.elapsed();
    assert!(first_at < ms(500), "first probe after {first_at:?}");
    assert_eq!(
        (first.service.as_str(), first.run_id, first.ok, first.error),
        ("kb", 7, true, None)
    );
    for _ in 0..3 {
        assert!(next_event(&mut rx).await.ok);
    }
    let span = t0.elapsed();
    assert!(
        span >= ms(3 * 150) && span < ms(3 * 150 + 1000),
        "four probes took {span:?}"
    );
    cancel.cancel();
    tokio::time::timeout(ms(500), task)
        .await
        .expect("prober ends on cancel")
        .expect("prober task");
}

#[tokio::test]
async fn an_overrunning_probe_is_never_doubled() {
    let s = Silent::start();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let task = spawn_prober(
        "slow".into(),
        1,
        health(http(format!("http://{}/", s.addr)), ms(50), ms(250)),
        tx,
        cancel.clone(),
    );
    let mut at = Vec::new();
    for _ in 0..4 {
        let e = next_event(&mut rx).await;
        assert!(!e.ok);
        assert_eq!(e.error.as_deref(), Some("timed out after 250ms"));
        assert!(
            e.elapsed >= ms(250) && e.elapsed < ms(600),
            "{:?}",
            e.elapsed
        );
        at.push(Instant::now());
    }
    // No catch-up burst: each next probe starts right after the previous one ended, so
    // results come a timeout (250 ms) apart, not back to back. The margin is for when
    // this test's thread sees them: a busy machine delays one receipt more than the next.
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= ms(200), "gap {gap:?}");
    }
    cancel.cancel();
    tokio::time::timeout(ms(500), task)
        .await
        .expect("prober ends on cancel")
        .expect("prober task");
    assert!(s.accepted.load(Ordering::SeqCst) >= 4);
    assert_eq!(s.max_open.load(Ordering::SeqCst), 1, "two probes in flight");
}

#[tokio::test]
async fn cancel_stops_the_prober_and_drops_its_connection() {
    let s = Silent::start();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let task = spawn_prober(
        "gateway".into(),
        3,
        health(
            http(format!("http://{}/", s.addr)),
            ms(100),
            Duration::from_secs(30),
        ),
        tx,
        cancel.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while s.accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no probe connected");
        tokio::time::sleep(ms(5)).await;
    }
    let t0 = Instant::now();
    cancel.cancel();
    tokio::time::timeout(ms(500), task)
        .await
        .expect("prober ends promptly on cancel")
        .expect("prober task");
    assert!(t0.elapsed() < ms(500));
    // The probe in flight was dropped, not left hanging on the server.
    let deadline = Instant::now() + Duration::from_secs(3);
    while s.closed_seen.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "probe connection left open");
        tokio::time::sleep(ms(5)).await;
    }
    assert!(rx.recv().await.is_none(), "no event after cancel");
}

#[tokio::test]
async fn prober_ends_when_nobody_listens() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        loop {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"").await;
                let mut b = [0u8; 1];
                let _ = s.read(&mut b).await;
            }
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = spawn_prober(
        "db".into(),
        9,
        health(tcp(&addr.to_string()), ms(20), ms(500)),
        tx,
        CancellationToken::new(),
    );
    assert!(next_event(&mut rx).await.ok);
    drop(rx);
    tokio::time::timeout(ms(500), task)
        .await
        .expect("prober ends without a receiver")
        .expect("prober task");
    accept.abort();
}

#[tokio::test]
async fn an_absurd_interval_probes_once_without_panicking() {
    let s = Server::start(Mode::Status(200));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let task = spawn_prober(
        "rare".into(),
        2,
        health(http(s.url("/")), Duration::MAX, Duration::MAX),
        tx,
        cancel.clone(),
    );
    assert!(next_event(&mut rx).await.ok);
    assert!(
        tokio::time::timeout(ms(300), rx.recv()).await.is_err(),
        "a second probe came"
    );
    cancel.cancel();
    tokio::time::timeout(ms(500), task)
        .await
        .expect("prober ends on cancel")
        .expect("prober task did not panic");
}
