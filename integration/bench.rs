//! The supervisor benchmark: prints, from one run, the figures the peers are measured
//! on (../shared/peers): restart latency added beyond the configured backoff, the time
//! to stop 200 services of which 20 ignore SIGTERM, paiosd's idle RSS and CPU with 200
//! services, and `paiosctl status` round trips. It asserts nothing about speed.
//!
//! Run: `cargo build --release --bins --examples && target/release/examples/bench [--idle SECS] [--crashes N] [--probe SECS]`

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;

use support::{
    alive, cpu_ticks, percentile, restart_gaps, rss_bytes, wait_until, Bins, Daemon, Scratch,
};

/// (RSS bytes, CPU ticks) of `pid`.
fn usage(pid: i32) -> (u64, u64) {
    (rss_bytes(pid).unwrap_or(0), cpu_ticks(pid).unwrap_or(0))
}

fn restart_latency(bins: &Bins, crashes: usize, out: &mut String) {
    for (label, python) in [
        ("rust fixture", false),
        ("python fixture (as the peers)", true),
    ] {
        let scratch = Scratch::new("paios-bench", if python { "restart-py" } else { "restart" });
        let log = scratch.root.join("starts.log");
        let command = if python {
            let script = scratch.root.join("crash.py");
            fs::write(
                &script,
                "import os, sys, time\nt0 = time.time_ns()\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)\nos.write(fd, ('start %d %d\\n' % (os.getpid(), t0)).encode())\nos.write(fd, ('exit %d %d\\n' % (os.getpid(), time.time_ns())).encode())\nos.close(fd)\nos._exit(1)\n",
            )
            .expect("script");
            // The interpreter itself, as the peers' bench runs it, not a version-manager shim.
            let python = if Path::new("/usr/bin/python3").exists() {
                "/usr/bin/python3"
            } else {
                "python3"
            };
            format!(
                "command = [\"{python}\", \"{}\", \"{}\"]\n{}",
                script.display(),
                log.display(),
                support::CRASHER_RESTART
            )
        } else {
            support::crasher_service(&bins.fixture, &log)
        };
        scratch.service("crash", &command);
        let mut daemon = Daemon::start(&bins.paiosd, &scratch.args());
        let starts = |l: &[String]| l.iter().filter(|x| x.starts_with("start ")).count();
        wait_until(Duration::from_secs(120), || {
            starts(&support::lines(&log)) > crashes
        });
        daemon.terminate();
        let gaps = restart_gaps(&log);
        let _ = writeln!(
            out,
            "restart latency added beyond the backoff ({label}, {} restarts): median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            gaps.len(),
            percentile(&gaps, 0.5),
            percentile(&gaps, 0.99),
            gaps.last().copied().unwrap_or(f64::NAN)
        );
    }
}

fn two_hundred(bins: &Bins, idle: u64, out: &mut String) {
    let scratch = Scratch::new("paios-bench", "200");
    let pids = scratch.root.join("pids.log");
    for i in 0..200 {
        let mode = if i < 20 { "stubborn" } else { "sleeper" };
        scratch.service(
            &format!("svc{i:03}"),
            &format!(
                "command = [\"{}\", \"{mode}\"]\nenv = {{ FIXTURE_PIDS = \"{}\" }}\n[stop]\ngrace = \"2s\"\n",
                bins.fixture.display(),
                pids.display()
            ),
        );
    }
    let t0 = Instant::now();
    let mut daemon = Daemon::start(&bins.paiosd, &scratch.args());
    let all_up = wait_until(Duration::from_secs(60), || {
        support::lines(&pids).len() >= 200
    });
    let _ = writeln!(
        out,
        "start of 200 services: {} ms{}",
        t0.elapsed().as_millis(),
        if all_up { "" } else { " (not all started!)" }
    );

    // Status round trips, whole paiosctl process each time.
    let mut rtts = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        let ok = Command::new(&bins.paiosctl)
            .args(scratch.args())
            .arg("status")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            rtts.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    rtts.sort_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "paiosctl status with 200 services ({} ok of 100): median {:.2} ms, p99 {:.2} ms",
        rtts.len(),
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99)
    );

    // The daemon's side alone: one connection, no process start.
    let socket = scratch.root.join("state/paiosd.sock");
    let mut socket_rtts = Vec::new();
    if let Ok(mut client) = paios::control::client::Client::connect(&socket) {
        for _ in 0..500 {
            let t = Instant::now();
            let request = paios::control::protocol::Request::Status { names: Vec::new() };
            if client.request(&request).is_ok() {
                socket_rtts.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    socket_rtts.sort_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "status request over the socket with 200 services (daemon side + socket, {} requests): median {:.3} ms, p99 {:.3} ms",
        socket_rtts.len(),
        percentile(&socket_rtts, 0.5),
        percentile(&socket_rtts, 0.99)
    );

    // Idle cost.
    std::thread::sleep(Duration::from_secs(2));
    let (_, ticks0) = usage(daemon.pid());
    std::thread::sleep(Duration::from_secs(idle));
    let (rss, ticks1) = usage(daemon.pid());
    let hz = support::ticks_per_second();
    let cpu_ms_per_min = (ticks1 - ticks0) as f64 * 1000.0 / hz * 60.0 / idle as f64;
    let _ = writeln!(
        out,
        "paiosd idle with 200 services over {idle} s: RSS {:.1} MiB, CPU {:.1} ms per minute (tick resolution {:.0} ms)",
        rss as f64 / (1024.0 * 1024.0),
        cpu_ms_per_min,
        1000.0 / hz
    );

    // Stop everything: 20 of them ignore SIGTERM, grace 2 s.
    let recorded: BTreeSet<i32> = support::lines(&pids)
        .iter()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let took = daemon.terminate();
    let survivors = recorded.iter().filter(|p| alive(**p)).count();
    let _ = writeln!(
        out,
        "stop of 200 services (20 ignore SIGTERM, grace 2 s): {} ms, survivors {survivors} of {}",
        took.as_millis(),
        recorded.len()
    );
    for pid in recorded.iter().filter(|p| alive(**p)) {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
}

/// 200 services probed every second (100 HTTP, 100 TCP): paiosd's CPU per minute, then
/// the time from SIGSTOP to the `hung` decision against its floor (interval × failures).
fn probing(bins: &Bins, secs: u64, out: &mut String) {
    let scratch = Scratch::new("paios-bench", "probe");
    let base = 21000 + (std::process::id() % 2000) as u16 * 10;
    for i in 0..200u16 {
        let port = base + i;
        let (mode, probe) = if i % 2 == 0 {
            ("http", format!("http = \"http://127.0.0.1:{port}/\""))
        } else {
            ("tcp", format!("tcp = \"127.0.0.1:{port}\""))
        };
        scratch.service(
            &format!("p{i:03}"),
            &format!(
                "command = [\"{}\", \"{mode}\", \"{port}\"]\n[health]\n{probe}\ninterval = \"1s\"\ntimeout = \"500ms\"\nfailures = 3\nstart_period = \"0s\"\n[restart]\nbackoff = {{ initial = \"100ms\", jitter = 0.0 }}\n",
                bins.fixture.display()
            ),
        );
    }
    let daemon = Daemon::start(&bins.paiosd, &scratch.args());
    let socket = scratch.root.join("state/paiosd.sock");
    let status = || -> Vec<paios::control::protocol::ServiceStatus> {
        let Ok(mut client) = paios::control::client::Client::connect(&socket) else {
            return Vec::new();
        };
        match client.request(&paios::control::protocol::Request::Status { names: Vec::new() }) {
            Ok(paios::control::protocol::Response::Ok(
                paios::control::protocol::Reply::Status { services, .. },
            )) => services,
            _ => Vec::new(),
        }
    };
    let healthy = wait_until(Duration::from_secs(60), || {
        status()
            .iter()
            .filter(|s| s.health.as_deref() == Some("healthy"))
            .count()
            == 200
    });
    let (_, t0) = usage(daemon.pid());
    std::thread::sleep(Duration::from_secs(secs));
    let (rss, t1) = usage(daemon.pid());
    let hz = support::ticks_per_second();
    let _ = writeln!(
        out,
        "paiosd probing 200 services every 1 s (100 HTTP, 100 TCP{}) over {secs} s: CPU {:.0} ms per minute, RSS {:.1} MiB",
        if healthy { "" } else { "; not all were healthy!" },
        (t1 - t0) as f64 * 1000.0 / hz * 60.0 / secs as f64,
        rss as f64 / (1024.0 * 1024.0)
    );
    let mut latencies = Vec::new();
    for s in status().into_iter().take(5) {
        let (Some(pid), Some(pgid)) = (s.pid, s.pgid) else {
            continue;
        };
        let t = Instant::now();
        unsafe { libc::killpg(pgid, libc::SIGSTOP) };
        let found = wait_until(Duration::from_secs(15), || {
            status()
                .iter()
                .any(|r| r.name == s.name && (r.state == "hung" || r.pid.is_some_and(|p| p != pid)))
        });
        if found {
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
        }
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }
    latencies.sort_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "hang detection (SIGSTOP to `hung`, interval 1 s, failures 3, timeout 500 ms; floor 3000 ms, aim floor + 1 interval): {}",
        latencies.iter().map(|l| format!("{l:.0} ms")).collect::<Vec<_>>().join(", ")
    );
}

fn main() {
    let mut idle = 60;
    let mut crashes = 300;
    let mut probe_secs = 30;
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--idle" => idle = pair[1].parse().unwrap_or(idle),
            "--crashes" => crashes = pair[1].parse().unwrap_or(crashes),
            "--probe" => probe_secs = pair[1].parse().unwrap_or(probe_secs),
            _ => {}
        }
    }
    let bins = Bins::beside_exe();
    support::require(&[&bins.paiosd, &bins.paiosctl, &bins.fixture]);
    let mut out = String::new();
    restart_latency(&bins, crashes, &mut out);
    two_hundred(&bins, idle, &mut out);
    probing(&bins, probe_secs, &mut out);
    print!("{out}");
}
