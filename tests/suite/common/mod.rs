//! Helpers every integration test shares: where the binaries and the fixture program
//! are, polling with a deadline instead of sleeping, a guard that kills every recorded
//! process group and PID on drop (even when the test panics), and throw-away
//! config/state/log directories.
//!
//! Processes are only ever found by recorded PID/PGID and checked against their start
//! time before a signal, so a PID the OS has handed to someone else is never touched.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use paios::process;

pub mod daemon;
mod isolate;
pub mod mcp_peers;

pub use isolate::{needs, ran_in_own_process, run_as_user, TestUser};

/// The daemon binary cargo built for this test run.
pub fn paiosd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_paiosd"))
}

/// The client binary cargo built for this test run.
pub fn paiosctl_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_paiosctl"))
}

/// `examples/fixture.rs`, built next to the binaries:
/// `<target>/debug/paiosd` → `<target>/debug/examples/fixture`.
///
/// A plain `cargo test` builds it; `cargo test --test NAME` does not (examples are only
/// built when no target is selected), so when it is missing or older than its source it
/// is built here, once per test process, with the `cargo` that runs the tests (cargo
/// releases its build lock before running test binaries).
pub fn fixture_path() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_fixture).clone()
}

fn build_fixture() -> PathBuf {
    let bin = paiosd_path();
    let dir = bin
        .parent()
        .expect("CARGO_BIN_EXE_paiosd has a parent directory");
    let path = dir.join("examples").join("fixture");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fixture.rs");
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&path), modified(&source)) {
        (Some(built), Some(src)) => built >= src,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !fresh {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut args = vec!["build", "--quiet", "--example", "fixture"];
        if dir.ends_with("release") {
            args.push("--release");
        }
        let status = std::process::Command::new(cargo)
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example fixture");
        assert!(status.success(), "cargo build --example fixture failed");
    }
    assert!(
        path.is_file(),
        "{} is missing after building: is CARGO_TARGET_DIR the same as for this test?",
        path.display()
    );
    path
}

/// Polls `cond` every few milliseconds until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads lines from a pipe on a thread of its own, so a test can wait for output with
/// a deadline instead of blocking forever on a child that never writes.
pub struct LineReader {
    rx: mpsc::Receiver<String>,
}

impl LineReader {
    pub fn new(fd: OwnedFd) -> LineReader {
        let (tx, rx) = mpsc::channel();
        let file = fs::File::from(fd);
        std::thread::spawn(move || {
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineReader { rx }
    }

    /// The next line, or `None` when `timeout` passes or the pipe closed first.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// `n` lines, or panics naming how many arrived before `timeout`.
    pub fn lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.line(left) {
                Some(line) => out.push(line),
                None => panic!("expected {n} lines within {timeout:?}, got {out:?}"),
            }
        }
        out
    }
}

/// PIDs listed one per line in `path` (what the fixture writes to `FIXTURE_PIDS`);
/// a missing file or a torn last line gives what could be read.
pub fn read_pids(path: &Path) -> Vec<i32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills, on drop, every group and process recorded with it that is still the one
/// recorded, then waits briefly for them to go. Record a group as soon as its PGID is
/// known, so a failing assertion still cleans up.
#[derive(Default)]
pub struct GroupGuard {
    /// PGID and the leader's start time when recorded (`None` if unknown).
    groups: Vec<(i32, Option<u64>)>,
    pids: Vec<process::Identity>,
}

impl GroupGuard {
    pub fn new() -> GroupGuard {
        GroupGuard::default()
    }

    /// Records group `pgid`; its leader's start time is read now, so a PGID number later
    /// reused by another leader is left alone.
    pub fn group(&mut self, pgid: i32) {
        let start = process::proc_info(pgid).map(|p| p.start_time);
        self.groups.push((pgid, start));
    }

    pub fn spawned(&mut self, spawned: &process::Spawned) {
        self.groups
            .push((spawned.pgid, Some(spawned.leader.start_time)));
        self.pids.push(spawned.leader);
    }

    /// Records `pid` (for processes that may leave the group, e.g. with `setsid`).
    pub fn pid(&mut self, pid: i32) {
        if let Some(info) = process::proc_info(pid) {
            self.pids.push(info.identity());
        }
    }

    /// Records every PID listed in a `FIXTURE_PIDS` file.
    pub fn pids_from(&mut self, path: &Path) {
        for pid in read_pids(path) {
            self.pid(pid);
        }
    }

    fn kill_all(&self) {
        for &(pgid, start) in &self.groups {
            let current = process::proc_info(pgid).map(|p| p.start_time);
            // A different process now has the leader's PID, so this number may name a
            // new group that is none of ours.
            if current.is_some() && start.is_some() && current != start {
                continue;
            }
            let _ = process::signal_group(pgid, libc::SIGKILL);
        }
        for &id in &self.pids {
            if process::is_alive(id) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(id.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill_all();
        wait_until(Duration::from_secs(5), || {
            let groups_gone = self
                .groups
                .iter()
                .all(|&(pgid, _)| !process::group_alive(pgid));
            let pids_gone = self.pids.iter().all(|&id| !process::is_alive(id));
            groups_gone && pids_gone
        });
        // Leaders spawned by this test process are its children: collect each one
        // (only these PIDs, never `waitpid(-1)`, which would steal other tests' children).
        for id in &self.pids {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(id.pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// A config directory with `services.d/`, and state and log directories, all `0700`
/// under one temporary root removed on drop.
pub struct TestDirs {
    pub root: tempfile::TempDir,
    pub config: PathBuf,
    pub services_d: PathBuf,
    pub state: PathBuf,
    pub logs: PathBuf,
}

impl TestDirs {
    pub fn new() -> TestDirs {
        let root = tempfile::Builder::new()
            .prefix("paios-test-")
            .tempdir()
            .expect("create temp dir");
        let config = root.path().join("config");
        let services_d = config.join("services.d");
        let state = root.path().join("state");
        let logs = root.path().join("logs");
        for dir in [&config, &services_d, &state, &logs] {
            fs::create_dir_all(dir).expect("create test dir");
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).expect("chmod test dir");
        }
        TestDirs {
            root,
            config,
            services_d,
            state,
            logs,
        }
    }

    /// Writes `services.d/NAME.toml`; returns its path.
    pub fn write_service(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.services_d.join(format!("{name}.toml"));
        fs::write(&path, toml).expect("write service file");
        path
    }

    /// Writes `paiosd.toml`; returns its path.
    pub fn write_global(&self, toml: &str) -> PathBuf {
        let path = self.config.join("paiosd.toml");
        fs::write(&path, toml).expect("write paiosd.toml");
        path
    }

    /// A path inside the temporary root (for `FIXTURE_PIDS`, `FIXTURE_LOG`, …).
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// `--config-dir`, `--state-dir` and `--log-dir` for either binary.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--config-dir".into(),
            self.config.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
            "--log-dir".into(),
            self.logs.display().to_string(),
        ]
    }
}

/// A config directory with an empty `services.d/`, holding `files` (paths relative to
/// it, such as `services.d/web.toml` or `paiosd.toml`), removed on drop.
pub fn config_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create temp dir");
    fs::create_dir(dir.path().join("services.d")).expect("create services.d");
    for (name, text) in files {
        fs::write(dir.path().join(name), text).expect("write config file");
    }
    dir
}

/// The keys every ledger entry keeps, in `paiosctl ledger --json` and wherever an entry
/// is serialized: the stable interface scripts rely on.
pub const LEDGER_KEYS: [&str; 12] = [
    "id",
    "service",
    "kind",
    "outcome",
    "pid",
    "pgid",
    "started_at",
    "ended_at",
    "exit_code",
    "signal",
    "attempt",
    "context",
];

/// A TOML string literal for `s` (quotes and backslashes escaped), for writing paths
/// into service files.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
