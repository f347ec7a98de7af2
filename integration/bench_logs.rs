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
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Bins {
    paiosd: PathBuf,
    paiosctl: PathBuf,
    fixture: PathBuf,
}

fn bins() -> Bins {
    let exe = std::env::current_exe().unwrap_or_default();
    let examples = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let profile = examples.parent().map(Path::to_path_buf).unwrap_or_default();
    Bins {
        paiosd: profile.join("paiosd"),
        paiosctl: profile.join("paiosctl"),
        fixture: examples.join("fixture"),
    }
}

/// paiosd on scratch directories; SIGTERMed (then SIGKILLed) on drop.
struct Daemon {
    child: Child,
    root: tempfile::TempDir,
}

impl Daemon {
    fn args(&self) -> Vec<String> {
        let r = self.root.path();
        vec![
            "--config-dir".into(),
            r.join("config").display().to_string(),
            "--state-dir".into(),
            r.join("state").display().to_string(),
            "--log-dir".into(),
            r.join("logs").display().to_string(),
        ]
    }

    fn logs(&self) -> PathBuf {
        self.root.path().join("logs")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds of `pid` (all threads), Linux only.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / hz)
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
    let d = Daemon {
        child: Command::new(&b.paiosd)
            .env("PAIOS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .arg("--log-file")
            .args([
                "--config-dir",
                &root.path().join("config").display().to_string(),
                "--state-dir",
                &root.path().join("state").display().to_string(),
                "--log-dir",
                &root.path().join("logs").display().to_string(),
            ])
            .spawn()
            .ok()?,
        root,
    };
    let ping = || {
        Command::new(&b.paiosctl)
            .args(d.args())
            .arg("ping")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ping() {
        if Instant::now() > deadline {
            eprintln!("paiosd did not answer");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the shell reach its wait loop.
    std::thread::sleep(Duration::from_millis(200));
    let pid = d.child.id();
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    let t0 = Instant::now();
    fs::write(&go, b"").ok()?;
    let logs = d.logs();
    let deadline = Instant::now() + Duration::from_secs(120);
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
    while logged_bytes(&logs, "w") < want {
        if Instant::now() > deadline {
            eprintln!("only {} of {want} bytes arrived", logged_bytes(&logs, "w"));
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    let out = Command::new(&b.paiosctl)
        .args(d.args())
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
    let b = bins();
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
