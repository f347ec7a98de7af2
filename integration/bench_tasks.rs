//! Benchmark of scheduled tasks (promise 8), through the real `paiosd`: how late a
//! per-second task starts after its scheduled time, and what 200 idle scheduled tasks
//! cost paiosd in CPU. Prints figures and asserts nothing about speed.
//!
//! Lateness is measured by the task itself: it is this same program run with
//! `--stamp FILE`, which appends its start time in nanoseconds since the epoch as its
//! first act; the scheduled time is the whole second that start falls in. So the
//! figure includes everything between the slot and the task's own first instruction:
//! the timer, paiosd's loop, fork and exec. Idle CPU is read from
//! `/proc/PID/task/*/schedstat` (nanoseconds, all of paiosd's threads) on Linux.
//!
//! ```text
//! cargo build --release --bins --examples
//! target/release/examples/bench_tasks [--runs N | --quick] [--idle SECS]
//! ```

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Timelike;

#[path = "support.rs"]
mod support;

use support::{percentile, wait_until_every, Daemon, Scratch};

struct Args {
    runs: usize,
    idle: u64,
    stamp: Option<PathBuf>,
}

fn args() -> Args {
    let mut out = Args {
        runs: 100,
        idle: 60,
        stamp: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1);
        match argv[i].as_str() {
            "--stamp" => out.stamp = value.map(PathBuf::from),
            "--runs" => out.runs = value.and_then(|v| v.parse().ok()).unwrap_or(out.runs),
            "--idle" => out.idle = value.and_then(|v| v.parse().ok()).unwrap_or(out.idle),
            "--quick" => {
                out.runs = 20;
                out.idle = 20;
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown argument {other}; usage: bench_tasks [--runs N | --quick] [--idle SECS]");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    out
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The task: one line with the start time, in one `O_APPEND` write.
fn stamp(path: &Path) {
    let now = unix_ns();
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(format!("{now}\n").as_bytes());
    }
}

/// paiosd under test, its stderr shown: SIGTERMed (which stops its tasks) and reaped on
/// drop.
fn start_daemon(paiosd: &Path, scratch: &Scratch) -> Daemon {
    let mut cmd = support::paiosd_command(paiosd, &scratch.args());
    cmd.stdin(Stdio::null()).stderr(Stdio::inherit());
    Daemon::spawn(cmd, Duration::from_secs(10)).expect("start paiosd")
}

fn stamps(path: &Path) -> Vec<u128> {
    support::parsed_lines(path)
}

fn lateness(paiosd: &Path, runs: usize) {
    let scratch = Scratch::new("paios-bench-tasks", "late");
    let file = scratch.root.join("stamps");
    let me = std::env::current_exe().expect("own path");
    scratch.service(
        "tick",
        &format!(
            "command = [{}, \"--stamp\", {}]\nschedule = \"* * * * * *\"\ntz = \"UTC\"\n",
            toml::Value::String(me.display().to_string()),
            toml::Value::String(file.display().to_string()),
        ),
    );
    let _daemon = start_daemon(paiosd, &scratch);
    // The first slot comes while paiosd is still starting up: not counted.
    let want = runs + 1;
    wait_until_every(
        Duration::from_secs(runs as u64 * 2 + 10),
        Duration::from_millis(200),
        || stamps(&file).len() >= want,
    );
    let all = stamps(&file);
    let mut late_ms: Vec<f64> = all
        .iter()
        .skip(1)
        .take(runs)
        .map(|ns| (ns % 1_000_000_000) as f64 / 1e6)
        .collect();
    let n = late_ms.len();
    late_ms.sort_by(f64::total_cmp);
    println!(
        "start lateness of a per-second task over {n} runs: median {:.2} ms, p99 {:.2} ms, max {:.2} ms (aim: <= 5 ms median, <= 20 ms p99)",
        percentile(&late_ms, 0.5),
        percentile(&late_ms, 0.99),
        late_ms.last().copied().unwrap_or(f64::NAN),
    );
    let seconds: Vec<u128> = all.iter().map(|ns| ns / 1_000_000_000).collect();
    let missed = seconds.windows(2).filter(|w| w[1] != w[0] + 1).count();
    if missed > 0 {
        println!("  ({missed} gap(s) between consecutive seconds: a slot was missed or ran twice)");
    }
}

/// CPU time of every thread of `pid`, from the scheduler's own accounting.
#[cfg(target_os = "linux")]
fn cpu_ns(pid: i32) -> Option<u64> {
    let mut total = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let text = fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

#[cfg(not(target_os = "linux"))]
fn cpu_ns(_pid: i32) -> Option<u64> {
    None
}

fn idle_cpu(paiosd: &Path, idle: u64) {
    let scratch = Scratch::new("paios-bench-tasks", "idle");
    // Hourly, at the minute half an hour away: none comes due while measuring.
    let minute = (chrono::Local::now().minute() + 30) % 60;
    for i in 0..200 {
        scratch.service(
            &format!("task{i:03}"),
            &format!("shell = \"exit 0\"\nschedule = \"{minute} * * * *\"\n"),
        );
    }
    let t0 = Instant::now();
    let daemon = start_daemon(paiosd, &scratch);
    let paiosctl = paiosd.with_file_name("paiosctl");
    let up = loop {
        let out = Command::new(&paiosctl)
            .args(scratch.args())
            .args(["--json", "status"])
            .output();
        let armed = out.ok().and_then(|o| {
            let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).ok()?;
            Some(rows.iter().filter(|r| r["next_run"].is_string()).count())
        });
        if armed == Some(200) {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "200 hourly tasks armed in {} ms{}",
        t0.elapsed().as_millis(),
        if up { "" } else { " (not all armed!)" }
    );
    std::thread::sleep(Duration::from_secs(2));
    let Some(before) = cpu_ns(daemon.pid()) else {
        println!("paiosd idle CPU: not measured on this OS (needs /proc/PID/task/*/schedstat)");
        return;
    };
    std::thread::sleep(Duration::from_secs(idle));
    let after = cpu_ns(daemon.pid()).unwrap_or(before);
    let per_min = (after - before) as f64 / 1e6 * 60.0 / idle as f64;
    println!(
        "paiosd idle with 200 scheduled tasks over {idle} s: CPU {per_min:.2} ms per minute (aim: <= 10 ms)"
    );
}

fn main() {
    let args = args();
    if let Some(path) = &args.stamp {
        stamp(path);
        return;
    }
    let paiosd = support::Bins::beside_exe().paiosd;
    support::require(&[&paiosd]);
    lateness(&paiosd, args.runs);
    idle_cpu(&paiosd, args.idle);
}
