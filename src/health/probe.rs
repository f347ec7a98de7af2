//! One health probe, run once: an HTTP GET, a TCP connect or a command, each cut off
//! at its timeout.
//!
//! A probe answers one question — does the service work right now — and says why not
//! in a line a person can act on (`connection refused to 127.0.0.1:3001`, `HTTP 503`,
//! `exit code 1: database locked`). It never blocks the thread it runs on and never
//! leaves anything behind: connections are dropped with the future, and a command runs
//! as the leader of its own process group, which is killed whole when the probe ends,
//! overruns or is cancelled. Commands are reaped by paiosd's one `waitpid(-1)` reaper
//! (see `process::watch`), never by tokio or `std::process`, which would race it.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::probe::{host_port, HttpTarget, TcpTarget};
use crate::config::{McpEndpoint, Probe};
use crate::process::{self, watch, ExitStatus, SpawnSpec};
use crate::units::format_duration;

/// Body bytes read from an HTTP answer before the connection is dropped: the status is
/// what counts, and a health endpoint that streams forever must not keep the probe busy.
pub const MAX_BODY: usize = 64 * 1024;

/// Bytes of a command's stderr (or stdout, when stderr is empty) quoted in its error.
pub const OUTPUT_TAIL: usize = 256;

/// Runs `probe` once; `Ok` when the service answered as healthy, else why not.
///
/// Never takes much longer than `timeout` (a command's group is killed at the timeout;
/// only the kill itself follows).
pub async fn probe_once(probe: &Probe, timeout: Duration) -> Result<(), String> {
    match probe {
        Probe::Http { url, expect_status } => {
            with_timeout(timeout, http_probe(url, *expect_status)).await
        }
        Probe::Tcp { addr } => with_timeout(timeout, tcp_probe(addr)).await,
        Probe::Exec { argv } => exec_probe(argv, timeout).await,
        Probe::Mcp(McpEndpoint::Http(url)) => {
            let ids = crate::mcp::probe::PingIds::new();
            with_timeout(timeout, crate::mcp::probe::http_ping(url, &ids, 1)).await
        }
        // Each client's run is pinged on its own connection, by `mcp::serve`.
        Probe::Mcp(McpEndpoint::Stdio) => {
            Err("an MCP probe over stdio runs on each client's connection".to_string())
        }
    }
}

async fn with_timeout(
    timeout: Duration,
    probe: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, probe).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {}", format_duration(timeout))),
    }
}

/// `host:port` resolved (a name through the system resolver, off the runtime thread),
/// then the addresses tried in order until one accepts.
pub(crate) async fn connect(host: &str, port: u16) -> Result<(TcpStream, SocketAddr), String> {
    let shown = host_port(host, port);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {shown}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("cannot resolve {shown}: no addresses"));
    }
    let mut last = String::new();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => last = connect_error(&e, addr),
        }
    }
    Err(last)
}

fn connect_error(e: &std::io::Error, addr: SocketAddr) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("connection refused to {addr}"),
        _ => format!("cannot connect to {addr}: {e}"),
    }
}

async fn tcp_probe(addr: &TcpTarget) -> Result<(), String> {
    connect(&addr.host, addr.port).await.map(drop)
}

async fn http_probe(target: &HttpTarget, expect_status: Option<u16>) -> Result<(), String> {
    let (stream, addr) = connect(&target.host, target.port).await?;
    // Probes are tiny and frequent: do not let Nagle hold the request back.
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
    let request = hyper::Request::get(target.path.as_str())
        .header(hyper::header::HOST, target.host_header())
        .header(hyper::header::USER_AGENT, "paiosd-health")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| {
            format!(
                "http probe URL {:?} makes no valid request: {e}",
                target.as_str()
            )
        })?;

    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http_error(&e, addr))?;
        let status = response.status();
        drain(response.into_body()).await;
        Ok::<_, String>(status)
    };
    // The connection is driven here, beside the request, rather than on a task of its
    // own: when the probe is dropped (timeout, cancel) the socket goes with it.
    tokio::pin!(exchange);
    tokio::pin!(conn);
    let mut conn_done = false;
    let status = loop {
        tokio::select! {
            result = &mut exchange => break result?,
            ended = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = ended {
                    return Err(http_error(&e, addr));
                }
            }
        }
    };
    let code = status.as_u16();
    let healthy = match expect_status {
        Some(expected) => code == expected,
        None => status.is_success() || status.is_redirection(),
    };
    if healthy {
        Ok(())
    } else if let Some(expected) = expect_status {
        Err(format!("HTTP {code} (expected {expected})"))
    } else {
        Err(format!("HTTP {code}"))
    }
}

pub(crate) fn http_error(e: &hyper::Error, addr: SocketAddr) -> String {
    // hyper's own text is terse ("connection error"); the cause is in its sources.
    let mut cause = None;
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) {
                return format!("connection to {addr} reset before a complete HTTP response");
            }
        }
        cause = Some(inner.to_string());
        source = inner.source();
    }
    let detail = match cause {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    if e.is_incomplete_message() || e.is_canceled() {
        format!("connection to {addr} closed before a complete HTTP response")
    } else if e.is_parse() {
        format!("invalid HTTP response from {addr}: {detail}")
    } else {
        format!("HTTP request to {addr} failed: {detail}")
    }
}

/// Reads the body up to [`MAX_BODY`] so a well-behaved server sees its answer taken;
/// errors in the body do not matter once the status is known.
async fn drain(mut body: hyper::body::Incoming) {
    let mut read = 0usize;
    while read < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                }
            }
            _ => break,
        }
    }
}

/// Kills the probe's whole group when the probe ends in any way: finished (leftover
/// background children), timed out, or dropped by a cancelled prober.
struct GroupGuard {
    pgid: i32,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // The leader is not reaped before the exit callback fires, so until then the
        // PGID cannot name anyone else; afterwards a group without members is ESRCH.
        let _ = process::signal_group(self.pgid, libc::SIGKILL);
    }
}

/// Collects a pipe's output without ever blocking, keeping the last [`OUTPUT_TAIL`] bytes.
struct Tail {
    pipe: Option<tokio::net::unix::pipe::Receiver>,
    kept: Vec<u8>,
}

impl Tail {
    fn new(fd: OwnedFd) -> Self {
        Tail {
            // A pipe that cannot be registered is only output lost: the exit status
            // still decides.
            pipe: tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok(),
            kept: Vec::new(),
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.kept.extend_from_slice(bytes);
        if self.kept.len() > OUTPUT_TAIL {
            let cut = self.kept.len() - OUTPUT_TAIL;
            self.kept.drain(..cut);
        }
    }

    /// Waits for the next output; returns when the pipe is closed or broken (then never again).
    async fn read_some(&mut self) {
        let Some(pipe) = &self.pipe else {
            return std::future::pending().await;
        };
        let mut buf = [0u8; 4096];
        let n = loop {
            if pipe.readable().await.is_err() {
                break 0;
            }
            match pipe.try_read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break 0,
            }
        };
        if n == 0 {
            self.pipe = None;
        } else {
            self.keep(&buf[..n]);
        }
    }

    /// Takes what is already in the pipe, without waiting.
    fn read_ready(&mut self) {
        let mut buf = [0u8; 4096];
        while let Some(pipe) = &self.pipe {
            match pipe.try_read(&mut buf) {
                Ok(n) if n > 0 => {
                    let chunk = buf[..n].to_vec();
                    self.keep(&chunk);
                }
                _ => break,
            }
        }
    }

    /// The last line of what was kept, trimmed, or `None` when nothing printable came.
    fn last_line(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.kept);
        text.lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
    }
}

async fn exec_probe(argv: &[String], timeout: Duration) -> Result<(), String> {
    if argv.is_empty() || argv[0].is_empty() {
        return Err("exec probe has an empty command".to_string());
    }
    let spec = SpawnSpec {
        argv: argv.to_vec(),
        cwd: None,
        env: Default::default(),
    };
    let (tx, exited) = tokio::sync::oneshot::channel::<ExitStatus>();
    // Spawned on the calling (runtime) thread on purpose: on Linux the child's
    // parent-death signal follows the spawning thread, and a blocking-pool thread exits
    // when idle, which would kill the probe with it.
    let spawned = watch::spawn_watched(&spec, move |status| {
        let _ = tx.send(status);
    })
    .map_err(|e| format!("cannot start probe {:?}: {e}", argv[0]))?;
    let _guard = GroupGuard { pgid: spawned.pgid };
    let mut stdout = Tail::new(spawned.stdout);
    let mut stderr = Tail::new(spawned.stderr);

    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    tokio::pin!(exited);
    let status = loop {
        tokio::select! {
            status = &mut exited => break status,
            _ = &mut deadline => {
                return Err(format!("killed after timeout of {}", format_duration(timeout)));
            }
            _ = stdout.read_some() => {}
            _ = stderr.read_some() => {}
        }
    };
    let status = status.map_err(|_| "probe exit status was lost".to_string())?;
    stdout.read_ready();
    stderr.read_ready();
    let said = stderr.last_line().or_else(|| stdout.last_line());
    let what = match status {
        ExitStatus::Code(0) => return Ok(()),
        ExitStatus::Code(code) => format!("exit code {code}"),
        ExitStatus::Signal(sig) => format!("killed by {}", process::signal_name(sig)),
    };
    Err(match said {
        Some(line) => format!("{what}: {line}"),
        None => what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_line() {
        let mut t = Tail {
            pipe: None,
            kept: Vec::new(),
        };
        t.keep(b"first\nsecond\n\n  ");
        assert_eq!(t.last_line().as_deref(), Some("second"));
        t.keep(&vec![b'x'; 10_000]);
        assert_eq!(t.kept.len(), OUTPUT_TAIL);
        let mut empty = Tail {
            pipe: None,
            kept: Vec::new(),
        };
        empty.keep(b" \n\n");
        assert_eq!(empty.last_line(), None);
    }
}
