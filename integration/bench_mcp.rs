//! Benchmark: MCP `tools/call echo` round trips against the reference server
//! `@modelcontextprotocol/server-everything`, spoken to directly over stdio and through
//! the stdio bridges an MCP client would start instead, side by side in one run. Prints
//! figures and asserts nothing about speed.
//!
//! Every setup is driven the same way: this program starts one command, as an MCP
//! client (an editor) would, writes newline-delimited JSON-RPC to its stdin and reads
//! its stdout, `initialize` first. For each it prints the median and p99 round trip of
//! `--calls` echo calls made one at a time, the throughput of `--clients` clients (each
//! its own command) making `--per-client` calls at once, and the resident memory of the
//! command this program started (the bridge; for the direct setup, the server itself).
//!
//! The setups:
//! - `direct`: `node server-everything stdio`; the floor every bridge adds to.
//! - `supergateway`: server-everything serves Streamable HTTP (`streamableHttp`, one
//!   process for every client) and each client starts `supergateway --streamableHttp
//!   URL`, supergateway's stdio-to-server direction. This is what `paiosctl mcp` does
//!   for a `transport = "http"` server, so it compares with `paiosctl mcp (http)`; the
//!   HTTP server's own handling is in these figures too.
//! - `mcp-proxy`: the same HTTP server, each client starting mcp-proxy's stdio-to-server
//!   direction (`startStdioServer`, which its command line lacks, as the
//!   `target/mcp-peers/mcp-proxy-stdio.mjs` command).
//! - `supergateway+mcp-proxy`: the stdio server run once by `mcp-proxy` (its command
//!   line: the stdio server served over HTTP, every client multiplexed onto it), each
//!   client starting `supergateway --streamableHttp URL` in front of it: the peers'
//!   way to reach one long-running stdio server from a stdio client, the shape of
//!   `paiosctl mcp` with a `transport = "stdio"` server (which gives each client a run
//!   of its own instead).
//! - `paiosctl mcp (stdio)` / `(http)` ([`paios_bridge`]): a paiosd running
//!   server-everything as an `[mcp]` service over stdio (`share = "per-client"`) and
//!   over HTTP, each client starting `paiosctl mcp everything`. Not measured (says
//!   why) when the release `paiosctl` beside this program has no `mcp` subcommand.
//!
//! Needs the MCP peers: `integration/mcp-peers/install` once. Run:
//! `cargo build --release --bins --examples && target/release/examples/bench_mcp
//! [--calls 1000] [--clients 10] [--per-client 200]`

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "support.rs"]
mod support;

use support::{percentile, wait_until, Bins, Daemon, Scratch};

/// How long one answer may take before the setup counts as broken.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const MESSAGE: &str = "round trip";

struct Args {
    calls: usize,
    clients: usize,
    per_client: usize,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            calls: 1000,
            clients: 10,
            per_client: 200,
        };
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut it = argv.iter();
        while let Some(flag) = it.next() {
            let slot = match flag.as_str() {
                "--calls" => &mut args.calls,
                "--clients" => &mut args.clients,
                "--per-client" => &mut args.per_client,
                _ => usage(&format!("unknown argument {flag}")),
            };
            *slot = it
                .next()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
                .unwrap_or_else(|| usage(&format!("{flag} takes a count above 0")));
        }
        args
    }
}

fn usage(why: &str) -> ! {
    eprintln!("bench_mcp: {why}\nusage: bench_mcp [--calls N] [--clients N] [--per-client N]");
    std::process::exit(2);
}

/// Where `integration/mcp-peers/install` put the peers.
struct Peers {
    node: PathBuf,
    dir: PathBuf,
}

impl Peers {
    fn find() -> Result<Peers, String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mcp-peers");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let node = std::env::split_paths(&path)
            .map(|d| d.join("node"))
            .find(|p| p.is_file())
            .ok_or("no node on PATH")?;
        let peers = Peers { node, dir };
        for script in [peers.everything(), peers.supergateway(), peers.mcp_proxy()] {
            if !script.is_file() {
                return Err(format!("{} is missing", script.display()));
            }
        }
        Ok(peers)
    }

    fn everything(&self) -> PathBuf {
        self.dir
            .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
    }

    fn supergateway(&self) -> PathBuf {
        self.dir.join("node_modules/supergateway/dist/index.js")
    }

    fn mcp_proxy(&self) -> PathBuf {
        self.dir
            .join("node_modules/mcp-proxy/dist/bin/mcp-proxy.mjs")
    }

    fn mcp_proxy_stdio(&self) -> PathBuf {
        self.dir.join("mcp-proxy-stdio.mjs")
    }

    /// `node SCRIPT ARGS...`.
    fn node(&self, script: PathBuf, args: &[&str]) -> Vec<OsString> {
        let mut argv = vec![self.node.clone().into_os_string(), script.into_os_string()];
        argv.extend(args.iter().map(OsString::from));
        argv
    }

    fn everything_stdio(&self) -> Vec<OsString> {
        self.node(self.everything(), &["stdio"])
    }

    /// server-everything over Streamable HTTP on `port`, in a process group of its own.
    fn everything_http(&self, port: u16) -> Result<Served, String> {
        let argv = self.node(self.everything(), &["streamableHttp"]);
        Served::start(&argv, &[("PORT", port.to_string())], port)
    }
}

/// A free TCP port on 127.0.0.1 (free when asked).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/mcp")
}

/// A command started in a process group of its own, the whole group SIGKILLed on drop.
struct Group {
    child: Child,
}

impl Group {
    fn spawn(argv: &[OsString], env: &[(&str, String)], stdio: Stdio) -> Result<Group, String> {
        let (program, args) = argv.split_first().ok_or("empty command")?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(stdio)
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {program:?}: {e}"))?;
        Ok(Group { child })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: killpg(2) on the group this program made for its own child, which
        // keeps its PID (and so the group's number) until reaped below.
        unsafe { libc::killpg(self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// An HTTP server for the bridges to reach, listening once `start` returns.
struct Served {
    _group: Group,
}

impl Served {
    fn start(argv: &[OsString], env: &[(&str, String)], port: u16) -> Result<Served, String> {
        let mut group = Group::spawn(argv, env, Stdio::null())?;
        let listening = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                || !matches!(group.child.try_wait(), Ok(None))
        });
        if !listening || !matches!(group.child.try_wait(), Ok(None)) {
            return Err(format!("{argv:?} did not listen on port {port}"));
        }
        Ok(Served { _group: group })
    }
}

/// One MCP client's connection: the command it started, spoken to over its stdin and
/// stdout.
struct Conn {
    group: Group,
    stdin: ChildStdin,
    stdout: ChildStdout,
    buf: Vec<u8>,
    next_id: u64,
}

impl Conn {
    /// Starts `argv` and initializes the session.
    fn open(argv: &[OsString]) -> Result<Conn, String> {
        let mut group = Group::spawn(argv, &[], Stdio::piped())?;
        let stdin = group.child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = group.child.stdout.take().ok_or("no stdout pipe")?;
        let mut conn = Conn {
            group,
            stdin,
            stdout,
            buf: Vec::with_capacity(64 * 1024),
            next_id: 1,
        };
        conn.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "bench_mcp", "version": "1"},
            }),
        )?;
        conn.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(conn)
    }

    fn send(&mut self, message: &Value) -> Result<(), String> {
        let mut line = serde_json::to_vec(message).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("writing to the command: {e}"))
    }

    /// Sends a request and reads lines until its answer (skipping notifications and
    /// anything else); its `result`.
    fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let line = self.read_line(deadline)?;
            let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if message.get("id") != Some(&json!(id)) || message.get("method").is_some() {
                continue;
            }
            if let Some(error) = message.get("error") {
                return Err(format!("{method} answered {error}"));
            }
            return message
                .get("result")
                .cloned()
                .ok_or_else(|| format!("{method} answered neither result nor error"));
        }
    }

    fn echo(&mut self) -> Result<(), String> {
        let result = self.request(
            "tools/call",
            json!({"name": "echo", "arguments": {"message": MESSAGE}}),
        )?;
        let text = result["content"][0]["text"].as_str().unwrap_or_default();
        if text.strip_prefix("Echo: ") == Some(MESSAGE) {
            Ok(())
        } else {
            Err(format!("echo answered {result}"))
        }
    }

    /// The next line of stdout, without its newline, waiting until `deadline`.
    fn read_line(&mut self, deadline: Instant) -> Result<Vec<u8>, String> {
        loop {
            if let Some(end) = memchr::memchr(b'\n', &self.buf) {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                return Ok(line);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no answer within {ANSWER_TIMEOUT:?}"));
            }
            let mut fds = [libc::pollfd {
                fd: self.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one pollfd for a descriptor this struct owns, its length passed.
            if unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) } <= 0 {
                continue;
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = std::io::Read::read(&mut self.stdout, &mut chunk)
                .map_err(|e| format!("reading the command's stdout: {e}"))?;
            if n == 0 {
                return Err("the command closed its stdout".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One setup's figures.
struct Figures {
    median_ms: f64,
    p99_ms: f64,
    calls_per_s: f64,
    rss: Option<u64>,
    /// The anonymous part of `rss`: the command's own memory.
    anon: Option<u64>,
}

/// Measures the setup whose client command is `argv`.
fn measure(argv: &[OsString], args: &Args) -> Result<Figures, String> {
    let mut conn = Conn::open(argv)?;
    for _ in 0..50.min(args.calls) {
        conn.echo()?;
    }
    let mut times = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let t0 = Instant::now();
        conn.echo()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let rss = support::rss_bytes(conn.group.pid());
    let anon = support::rss_anon_bytes(conn.group.pid());
    drop(conn);
    Ok(Figures {
        median_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
        calls_per_s: throughput(argv, args)?,
        rss,
        anon,
    })
}

/// `clients` connections, opened and initialized first, then all making `per_client`
/// calls at once; calls per second from the start to the last answer.
fn throughput(argv: &[OsString], args: &Args) -> Result<f64, String> {
    let conns = (0..args.clients)
        .map(|_| Conn::open(argv))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Arc::new(Barrier::new(args.clients + 1));
    let per_client = args.per_client;
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                (0..per_client).try_for_each(|_| conn.echo())
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    for thread in threads {
        thread.join().map_err(|_| "a client thread panicked")??;
    }
    Ok((args.clients * per_client) as f64 / t0.elapsed().as_secs_f64())
}

fn report(setup: &str, figures: Result<Figures, String>, floor: Option<f64>) -> Option<f64> {
    match figures {
        Ok(f) => {
            let added = floor.map_or("—".to_string(), |d| format!("{:+.3} ms", f.median_ms - d));
            let mib = |b: Option<u64>| {
                b.map_or("?".to_string(), |b| {
                    format!("{:.1} MiB", b as f64 / 1048576.0)
                })
            };
            let (rss, anon) = (mib(f.rss), mib(f.anon));
            println!(
                "  {setup:<26} {:>8.3} ms {:>8.3} ms {added:>11} {:>9.0} calls/s {rss:>10} {anon:>10}",
                f.median_ms, f.p99_ms, f.calls_per_s
            );
            Some(f.median_ms)
        }
        Err(why) => {
            println!("  {setup:<26} not measured: {why}");
            None
        }
    }
}

/// The floor: server-everything over stdio, no bridge.
fn direct(peers: &Peers, args: &Args) -> Result<Figures, String> {
    measure(&peers.everything_stdio(), args)
}

/// supergateway as a stdio bridge to server-everything over Streamable HTTP.
fn supergateway(peers: &Peers, args: &Args) -> Result<Figures, String> {
    let port = free_port()?;
    let _server = peers.everything_http(port)?;
    let bridge = peers.node(
        peers.supergateway(),
        &["--streamableHttp", &url(port), "--logLevel", "none"],
    );
    measure(&bridge, args)
}

/// mcp-proxy's stdio-to-server direction in front of the same HTTP server.
fn mcp_proxy(peers: &Peers, args: &Args) -> Result<Figures, String> {
    let port = free_port()?;
    let _server = peers.everything_http(port)?;
    let bridge = peers.node(peers.mcp_proxy_stdio(), &[&url(port)]);
    measure(&bridge, args)
}

/// The stdio server run once by mcp-proxy, reached through supergateway.
fn supergateway_mcp_proxy(peers: &Peers, args: &Args) -> Result<Figures, String> {
    let port = free_port()?;
    let mut proxy = peers.node(
        peers.mcp_proxy(),
        &["--port", &port.to_string(), "--host", "127.0.0.1", "--"],
    );
    proxy.extend(peers.everything_stdio());
    let _server = Served::start(&proxy, &[], port)?;
    let bridge = peers.node(
        peers.supergateway(),
        &["--streamableHttp", &url(port), "--logLevel", "none"],
    );
    measure(&bridge, args)
}

/// `paiosctl mcp everything` against a paiosd serving server-everything as an `[mcp]`
/// service, over stdio (a run per client) and over HTTP. Prints "not measured: ..."
/// for both when the release `paiosctl` has no `mcp` subcommand (an old build).
fn paios_bridge(peers: &Peers, args: &Args, floor: Option<f64>) {
    let bins = Bins::beside_exe();
    let missing = if !bins.paiosctl.is_file() || !bins.paiosd.is_file() {
        Some(format!(
            "{} or paiosd beside it is missing (cargo build --release --bins)",
            bins.paiosctl.display()
        ))
    } else {
        has_mcp_subcommand(&bins.paiosctl).err()
    };
    if let Some(why) = missing {
        println!("  {:<26} not measured: {why}", "paiosctl mcp");
        return;
    }
    let stdio = |peers: &Peers| -> Result<Figures, String> {
        let everything = toml_array(&peers.everything_stdio());
        let service = format!(
            "command = {everything}\n\n[mcp]\ntransport = \"stdio\"\nshare = \"per-client\"\n"
        );
        paios_measure(&bins, service, None, args)
    };
    report("paiosctl mcp (stdio)", stdio(peers), floor);
    let http = |peers: &Peers| -> Result<Figures, String> {
        let port = free_port()?;
        let everything = toml_array(&peers.node(peers.everything(), &["streamableHttp"]));
        let service = format!(
            "command = {everything}\nenv = {{ PORT = \"{port}\" }}\n\n[mcp]\ntransport = \"http\"\nurl = \"{}\"\nshare = \"shared\"\n",
            url(port)
        );
        paios_measure(&bins, service, Some(port), args)
    };
    report("paiosctl mcp (http)", http(peers), floor);
}

/// Whether `paiosctl mcp --help` succeeds; why not when it does not.
fn has_mcp_subcommand(paiosctl: &Path) -> Result<(), String> {
    let out = Command::new(paiosctl)
        .args(["mcp", "--help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", paiosctl.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    Err(format!(
        "`paiosctl mcp --help` failed ({}): {first}",
        out.status
    ))
}

/// A paiosd with `service` as `everything`, then the bridge measured against it.
fn paios_measure(
    bins: &Bins,
    service: String,
    port: Option<u16>,
    args: &Args,
) -> Result<Figures, String> {
    let scratch = Scratch::new(
        "paios-bench-mcp",
        if port.is_some() { "http" } else { "stdio" },
    );
    scratch.service("everything", &service);
    let mut daemon = Daemon::spawn(
        support::paiosd_command(&bins.paiosd, &scratch.args()),
        Duration::from_secs(10),
    )
    .map_err(|e| format!("cannot start paiosd: {e}"))?;
    let socket = scratch.root.join("state/mcp/everything.sock");
    let ready = wait_until(Duration::from_secs(30), || {
        (socket.exists()
            && port.is_none_or(|p| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok()))
            || !matches!(daemon.child.try_wait(), Ok(None))
    });
    if !ready || !matches!(daemon.child.try_wait(), Ok(None)) {
        return Err(format!("paiosd did not make {} ready", socket.display()));
    }
    let mut bridge = vec![bins.paiosctl.clone().into_os_string()];
    bridge.extend(scratch.args().into_iter().map(OsString::from));
    bridge.extend(["mcp", "everything"].map(OsString::from));
    let figures = measure(&bridge, args);
    daemon.terminate();
    figures
}

/// `argv` as a TOML array of strings.
fn toml_array(argv: &[OsString]) -> String {
    let items: Vec<String> = argv
        .iter()
        .map(|a| serde_json::to_string(&a.to_string_lossy()).unwrap_or_default())
        .collect();
    format!("[{}]", items.join(", "))
}

fn main() {
    let args = Args::parse();
    let peers = match Peers::find() {
        Ok(peers) => peers,
        Err(why) => {
            eprintln!("bench_mcp: the MCP peers are not installed ({why}): run integration/mcp-peers/install");
            std::process::exit(2);
        }
    };
    println!(
        "MCP tools/call echo to server-everything: {} calls one at a time (median, p99, median added to direct), {} clients x {} calls at once, RSS of the command the client started",
        args.calls, args.clients, args.per_client
    );
    println!(
        "  {:<26} {:>11} {:>11} {:>11} {:>17} {:>10} {:>10}",
        "setup", "median", "p99", "added", "throughput", "RSS", "anon RSS"
    );
    let floor = report("direct (stdio)", direct(&peers, &args), None);
    report("supergateway (http)", supergateway(&peers, &args), floor);
    report("mcp-proxy (http)", mcp_proxy(&peers, &args), floor);
    report(
        "supergateway+mcp-proxy",
        supergateway_mcp_proxy(&peers, &args),
        floor,
    );
    paios_bridge(&peers, &args, floor);
}
