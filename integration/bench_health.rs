//! Benchmark: the CPU cost of health probing, the way paiosd does it — many probers on
//! one current-thread runtime — printed as milliseconds of CPU per minute. Asserts
//! nothing about speed.
//!
//! The probed servers run in a child process (this same program with `--serve`), so
//! the figure is the probing side's alone: `getrusage(RUSAGE_SELF)` of this process
//! does not include its children.
//!
//! ```text
//! cargo run --release --example bench_health -- --secs 20
//! ```

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use paios::config::{HealthConfig, OnFailure, Probe};
use paios::health::{spawn_prober, ProbeEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "CPU time of paiosd-style health probing")]
struct Args {
    /// Seconds to measure, after a 2 s warm-up.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Half the probers (with `--kind both`: the HTTP ones; as many TCP again).
    #[arg(long, default_value_t = 100)]
    each: usize,
    /// Probe interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Which probes to run: `both` (half each), `http` or `tcp`.
    #[arg(long, default_value = "both")]
    kind: String,
    /// Server mode (used by the benchmark itself): HTTP on PORTBASE, TCP on
    /// PORTBASE+1 (0: any free ports); prints `PORTS http tcp`, exits when stdin closes.
    #[arg(long, value_name = "PORTBASE")]
    serve: Option<u16>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.serve {
        Some(base) => rt.block_on(serve(base)),
        None => rt.block_on(bench(&args)),
    }
}

async fn serve(base: u16) -> anyhow::Result<()> {
    let port = |offset: u16| if base == 0 { 0 } else { base + offset };
    let http = tokio::net::TcpListener::bind(("127.0.0.1", port(0))).await?;
    let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port(1))).await?;
    println!(
        "PORTS {} {}",
        http.local_addr()?.port(),
        tcp.local_addr()?.port()
    );
    std::io::stdout().flush()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = http.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::with_capacity(256);
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                    )
                    .await;
            });
        }
    });
    tokio::spawn(async move {
        loop {
            // Accept and close: all a TCP probe asks.
            let _ = tcp.accept().await;
        }
    });
    // The parent holds our stdin; when it ends (or dies), so do we.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let _ = done_tx.send(());
    });
    let _ = done_rx.await;
    Ok(())
}

/// The server child, killed and waited for when the benchmark ends in any way.
struct ServerChild(Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    let (user, sys) = cpu_split();
    user + sys
}

/// `(user, system)` CPU time of this process so far.
fn cpu_split() -> (Duration, Duration) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage for RUSAGE_SELF.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take();
    let child = ServerChild(child);
    let mut line = String::new();
    if let Some(out) = stdout {
        BufReader::new(out).read_line(&mut line)?;
    }
    let ports: Vec<u16> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    let [http_port, tcp_port] = ports[..] else {
        anyhow::bail!("server child did not report its ports: {line:?}");
    };

    let interval = Duration::from_millis(args.interval_ms);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ProbeEvent>();
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    for i in 0..args.each * 2 {
        let http = match args.kind.as_str() {
            "http" => true,
            "tcp" => false,
            _ => i % 2 == 0,
        };
        let probe = if http {
            Probe::Http {
                url: format!("http://127.0.0.1:{http_port}/health")
                    .parse()
                    .expect("a probe URL"),
                expect_status: None,
            }
        } else {
            Probe::Tcp {
                addr: format!("127.0.0.1:{tcp_port}")
                    .parse()
                    .expect("a probe address"),
            }
        };
        let cfg = HealthConfig {
            probe,
            interval,
            timeout: Duration::from_secs(2),
            failures: 3,
            start_period: Duration::ZERO,
            on_failure: OnFailure::Restart,
        };
        tasks.push(spawn_prober(
            format!("svc-{i}"),
            1,
            cfg,
            tx.clone(),
            cancel.clone(),
        ));
    }
    drop(tx);

    // Warm-up, then the measured stretch; the receiving side is part of the cost.
    let warm_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::timeout_at(warm_until, rx.recv()).await.is_ok() {}
    let (cpu0, split0, t0) = (cpu_time(), cpu_split(), Instant::now());
    let until = tokio::time::Instant::now() + Duration::from_secs(args.secs);
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut elapsed = Vec::new();
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(until, rx.recv()).await {
        elapsed.push(event.elapsed);
        if event.ok {
            ok += 1;
        } else {
            failed += 1;
            *errors.entry(event.error.unwrap_or_default()).or_default() += 1;
        }
    }
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    let split = cpu_split();
    let (user, sys) = (split.0 - split0.0, split.1 - split0.1);
    cancel.cancel();
    for task in tasks {
        let _ = task.await;
    }
    drop(child);

    elapsed.sort();
    let pct = |p: f64| {
        elapsed
            .get(((elapsed.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    let per_min = cpu.as_secs_f64() * 1000.0 * 60.0 / wall.as_secs_f64();
    println!(
        "probers: {} ({}), interval {:?}, measured {:.1}s",
        args.each * 2,
        args.kind,
        interval,
        wall.as_secs_f64()
    );
    println!(
        "probes: {} ok, {} failed, {:.1}/s",
        ok,
        failed,
        (ok + failed) as f64 / wall.as_secs_f64()
    );
    println!(
        "probe time: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    for (error, n) in &errors {
        println!("  {n} × {error}");
    }
    let probes = (ok + failed).max(1) as f64;
    println!(
        "CPU: user {:.0} ms, system {:.0} ms; per probe: user {:.1} µs, system {:.1} µs",
        user.as_secs_f64() * 1000.0,
        sys.as_secs_f64() * 1000.0,
        user.as_secs_f64() * 1e6 / probes,
        sys.as_secs_f64() * 1e6 / probes
    );
    println!(
        "CPU: {:.0} ms over {:.1}s = {:.0} ms CPU per minute (aim: <= 150)",
        cpu.as_secs_f64() * 1000.0,
        wall.as_secs_f64(),
        per_min
    );
    Ok(())
}
