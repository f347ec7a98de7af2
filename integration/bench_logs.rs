//! Log throughput through a real paiosd: a service writing as fast as it can, its
//! output drained by paiosd into rotated `<log-dir>/NAME.log*`, against the same
//! command writing straight into a file, in one run; plus paiosd's CPU per GB logged
//! (from /proc/PID/stat, Linux). Prints figures and asserts nothing.
//!
//! Two writers: `fixture spew` (short lines through a buffered writer, like a chatty
//! program) and `yes | head -c` (100-byte lines, as fast as a pipe goes).
//!
//! Run: `cargo build --release --bins --examples && target/release/examples/bench_logs [MB]`

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;

use support::{dir_args, wait_until_every, Bins, Daemon};

/// User + system CPU seconds of `pid` (all threads), Linux only.
fn cpu_seconds(pid: i32) -> Option<f64> {
    Some(support::cpu_ticks(pid)? as f64 / support::ticks_per_second())
}

/// Bytes across `NAME.log*`.
fn logged_bytes(dir: &Path, name: &str) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let prefix = format!("{name}.log");
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

struct Figures {
    bytes: u64,
    lines: u64,
    secs: f64,
}

impl Figures {
    fn print(&self, what: &str) {
        println!(
            "  {what:<28} {:>8.1} MB/s {:>12.0} lines/s  ({:.2} s, {:.1} MB)",
            self.bytes as f64 / 1e6 / self.secs,
            self.lines as f64 / self.secs,
            self.secs,
            self.bytes as f64 / 1e6
        );
    }
}

/// The command straight into a file; the time until it exits.
fn direct(cmd: &str, dir: &Path) -> Option<Figures> {
    let out = dir.join("direct.log");
    let t0 = Instant::now();
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{cmd} > {}", out.display()))
        .status()
        .ok()?;
    let secs = t0.elapsed().as_secs_f64();
    if !status.success() {
        eprintln!("direct run of {cmd:?} failed: {status}");
        return None;
    }
    let data = fs::read(&out).ok()?;
    let _ = fs::remove_file(&out);
    Some(Figures {
        bytes: data.len() as u64,
        lines: data.iter().filter(|&&b| b == b'\n').count() as u64,
        secs,
    })
}

/// The command as a paiosd service with default rotation (10 MiB) but every file
/// kept; the time from "go" until every byte is in the files, and paiosd's CPU.
fn through_paiosd(
    b: &Bins,
    cmd: &str,
    extra: &str,
    expect: &Figures,
) -> Option<(Figures, f64, u64)> {
    let root = tempfile::Builder::new()
        .prefix("paios-bench-logs")
        .tempdir()
        .ok()?;
    let services = root.path().join("config/services.d");
    fs::create_dir_all(&services).ok()?;
    let go = root.path().join("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.01; done; {cmd}; exec sleep 3600",
        go.display()
    );
    let service = format!(
        "shell = {}\n[logs]\nmax_size = \"10MiB\"\nkeep = 1000\n{extra}",
        toml::Value::String(script)
    );
    fs::write(services.join("w.toml"), service).ok()?;
    let args = dir_args(root.path());
    let mut cmd = support::paiosd_command(&b.paiosd, &args);
    cmd.arg("--log-file");
    let d = Daemon::spawn(cmd, Duration::from_secs(10)).ok()?;
    let ping = || {
        Command::new(&b.paiosctl)
            .args(&args)
            .arg("ping")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !wait_until_every(Duration::from_secs(20), Duration::from_millis(20), ping) {
        eprintln!("paiosd did not answer");
        return None;
    }
    // Let the shell reach its wait loop.
    std::thread::sleep(Duration::from_millis(200));
    let pid = d.pid();
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    let t0 = Instant::now();
    fs::write(&go, b"").ok()?;
    let logs = root.path().join("logs");
    // Time stamps add their bytes to every line.
    let stamp = chrono::Local::now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        .len() as u64
        + 1;
    let want = expect.bytes
        + if extra.is_empty() {
            0
        } else {
            expect.lines * stamp
        };
    let arrived = wait_until_every(Duration::from_secs(120), Duration::from_millis(1), || {
        logged_bytes(&logs, "w") >= want
    });
    if !arrived {
        eprintln!("only {} of {want} bytes arrived", logged_bytes(&logs, "w"));
        return None;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    let out = Command::new(&b.paiosctl)
        .args(&args)
        .args(["--json", "status", "w"])
        .output()
        .ok()?;
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let dropped = rows[0]["log_dropped"].as_u64().unwrap_or(0);
    drop(d);
    Some((
        Figures {
            bytes: expect.bytes,
            lines: expect.lines,
            secs,
        },
        cpu,
        dropped,
    ))
}

fn main() {
    let mb: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let b = Bins::beside_exe();
    for p in [&b.paiosd, &b.paiosctl, &b.fixture] {
        if !p.is_file() {
            eprintln!(
                "{} is missing: cargo build --release --bins --examples",
                p.display()
            );
            return;
        }
    }
    let scratch = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tempdir: {e}");
            return;
        }
    };
    // "line N\n" averages about 13 bytes at these counts.
    let spew_lines = mb * 1_000_000 / 13;
    let line100 = "x".repeat(99);
    let stamped = "timestamps = true\n";
    let workloads = [
        (
            "fixture spew (short lines)",
            format!("{} spew {spew_lines}", b.fixture.display()),
            "",
        ),
        (
            "yes | head (100-byte lines)",
            format!("yes {line100} | head -c {}", mb * 1_000_000),
            "",
        ),
        (
            "the same with timestamps",
            format!("yes {line100} | head -c {}", mb * 1_000_000),
            stamped,
        ),
    ];
    println!("about {mb} MB per run; paiosd rotates at 10 MiB");
    for (what, cmd, extra) in workloads {
        println!("{what}:");
        // Once unmeasured, so the page cache is in the same state for both runs.
        let _ = direct(&cmd, scratch.path());
        let Some(d) = direct(&cmd, scratch.path()) else {
            continue;
        };
        d.print("direct to a file");
        let Some((p, cpu, dropped)) = through_paiosd(&b, &cmd, extra, &d) else {
            continue;
        };
        p.print("through paiosd to disk");
        println!(
            "  {:<28} {:>8.0} % of direct; paiosd CPU {:.2} s per GB; {dropped} lines dropped",
            "",
            100.0 * d.secs / p.secs,
            cpu / (p.bytes as f64 / 1e9)
        );
    }
}
