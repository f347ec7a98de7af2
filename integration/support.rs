//! What the benchmarks and the fault suite under `integration/` share: finding the built
//! binaries beside the running example, a scratch config/state/log tree, a paiosd child
//! that is always ended, polling with a deadline, percentiles, and reading a process's
//! CPU and memory from /proc. Each example is a crate of its own and includes this file
//! with `#[path = "support.rs"] mod support;`, so not every example uses every item.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The binaries under test, as cargo lays them out: `paiosd` and `paiosctl` in the
/// profile directory, the `fixture` example beside this one.
pub struct Bins {
    pub paiosd: PathBuf,
    pub paiosctl: PathBuf,
    pub fixture: PathBuf,
}

impl Bins {
    /// Beside the example `exe`.
    pub fn beside(exe: &Path) -> Bins {
        let examples = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let profile = examples.parent().map(Path::to_path_buf).unwrap_or_default();
        Bins {
            paiosd: profile.join("paiosd"),
            paiosctl: profile.join("paiosctl"),
            fixture: examples.join("fixture"),
        }
    }

    /// Beside the running example.
    pub fn beside_exe() -> Bins {
        Bins::beside(&std::env::current_exe().unwrap_or_default())
    }
}

/// Exits with status 2 and says how to build them when any of `paths` is missing.
pub fn require(paths: &[&Path]) {
    for p in paths {
        if !p.exists() {
            eprintln!(
                "missing {}: run `cargo build --release --bins --examples` first",
                p.display()
            );
            std::process::exit(2);
        }
    }
}

/// paiosd's and paiosctl's directory flags for a tree under `root`.
pub fn dir_args(root: &Path) -> Vec<String> {
    [
        ("--config-dir", "config"),
        ("--state-dir", "state"),
        ("--log-dir", "logs"),
    ]
    .iter()
    .flat_map(|(flag, dir)| [flag.to_string(), root.join(dir).display().to_string()])
    .collect()
}

/// A scratch config/state/log tree, removed on drop.
pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    /// `<temp dir>/<prefix>-<tag>-<pid>`.
    pub fn new(prefix: &str, tag: &str) -> Scratch {
        Scratch::new_in(&std::env::temp_dir(), prefix, tag)
    }

    /// `<base>/<prefix>-<tag>-<pid>`, emptied first, with `config/services.d` made.
    pub fn new_in(base: &Path, prefix: &str, tag: &str) -> Scratch {
        let root = base.join(format!("{prefix}-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("config/services.d")).expect("scratch dir");
        Scratch { root }
    }

    pub fn service(&self, name: &str, body: &str) {
        let path = self.root.join(format!("config/services.d/{name}.toml"));
        fs::write(path, body).expect("service file");
    }

    pub fn args(&self) -> Vec<String> {
        dir_args(&self.root)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// `paiosd ARGS` with its own logging at `warn` and its output discarded.
pub fn paiosd_command(paiosd: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(paiosd);
    cmd.args(args)
        .env("PAIOS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// paiosd under test, ended on drop if still running: SIGTERM and up to `grace` to
/// exit (which stops its services), then SIGKILL. With no grace it is SIGKILLed at once.
pub struct Daemon {
    pub child: Child,
    grace: Duration,
}

impl Daemon {
    /// `paiosd_command(paiosd, args)`, SIGKILLed on drop.
    pub fn start(paiosd: &Path, args: &[String]) -> Daemon {
        Daemon::spawn(paiosd_command(paiosd, args), Duration::ZERO).expect("start paiosd")
    }

    pub fn spawn(mut cmd: Command, grace: Duration) -> std::io::Result<Daemon> {
        Ok(Daemon {
            child: cmd.spawn()?,
            grace,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, then waits for the exit; the time that took.
    pub fn terminate(&mut self) -> Duration {
        let t0 = Instant::now();
        // SAFETY: kill(2) on our own child's PID, which it keeps until we reap it.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let _ = self.child.wait();
        t0.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if !self.grace.is_zero() {
            // SAFETY: kill(2) on our own child's PID, which it keeps until we reap it.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            let exited = wait_until_every(self.grace, Duration::from_millis(10), || {
                !matches!(self.child.try_wait(), Ok(None))
            });
            if exited {
                return;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 5 ms until it holds or `timeout` has passed; whether it held.
pub fn wait_until(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_until_every(timeout, Duration::from_millis(5), cond)
}

/// Polls `cond` every `poll` until it holds or `timeout` has passed; whether it held.
pub fn wait_until_every(timeout: Duration, poll: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(poll);
    }
}

/// The `p` quantile (0 to 1) of `sorted`, nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The lines of `path`; none when it cannot be read.
pub fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every line of `path` that parses as a `T` (trimmed); none when it cannot be read.
pub fn parsed_lines<T: FromStr>(path: &Path) -> Vec<T> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The crashing service of the restart-latency runs: the fixture exiting 1 at once,
/// logging `start PID NS` and `exit PID NS` lines to `log`.
pub fn crasher_service(fixture: &Path, log: &Path) -> String {
    format!(
        "command = [\"{}\", \"crasher\", \"1\", \"0\"]\nenv = {{ FIXTURE_LOG = \"{}\" }}\n{CRASHER_RESTART}",
        fixture.display(),
        log.display()
    )
}

/// Restart at once, forever: a 1 ms backoff and a limit no storm reaches.
pub const CRASHER_RESTART: &str = "[restart]\npolicy = \"always\"\nbackoff = { initial = \"1ms\", max = \"1ms\", factor = 1.0, jitter = 0.0 }\nlimit = { burst = 1000000, window = \"1m\", cooldown = \"1s\" }\n";

/// The milliseconds from each `exit` to the next `start` in a crasher's log, less the
/// configured 1 ms backoff (what paiosd adds), sorted.
pub fn restart_gaps(log: &Path) -> Vec<f64> {
    let mut exit_at: Option<i128> = None;
    let mut gaps = Vec::new();
    for line in lines(log) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let Some(ns) = parts.get(2).and_then(|v| v.parse::<i128>().ok()) else {
            continue;
        };
        match parts[0] {
            "exit" => exit_at = Some(ns),
            "start" => {
                if let Some(e) = exit_at.take() {
                    gaps.push((ns - e) as f64 / 1e6 - 1.0);
                }
            }
            _ => {}
        }
    }
    gaps.sort_by(f64::total_cmp);
    gaps
}

/// Whether `pid` exists and is not a zombie (Linux /proc).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Resident memory of `pid` in bytes (Linux /proc).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// The anonymous part of `pid`'s resident memory (heap, stacks: what is its own, not
/// the program's and libraries' file pages, which other processes share), in bytes
/// (Linux /proc).
pub fn rss_anon_bytes(pid: i32) -> Option<u64> {
    status_kib(pid, "RssAnon:").map(|kib| kib * 1024)
}

/// A `kB` figure of `/proc/PID/status`.
fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User plus system CPU of `pid`, all threads, in clock ticks (Linux /proc).
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second, the unit of `cpu_ticks`.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}
