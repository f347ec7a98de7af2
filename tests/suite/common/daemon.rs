//! A live `paiosd` for end-to-end tests: started in the foreground on its own temp
//! config/state/log directories, driven with `paiosctl`, and — whatever the test's
//! outcome — stopped on drop together with every process group it was seen to run and
//! every PID the fixtures recorded.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{paiosctl_path, paiosd_path, wait_until, GroupGuard, TestDirs};

pub struct Daemon {
    pub dirs: TestDirs,
    child: Option<Child>,
    /// Every group and PID seen, ended on drop.
    pub guard: std::cell::RefCell<GroupGuard>,
}

impl Daemon {
    /// Writes `services` (name, TOML) into a fresh config and starts paiosd on it,
    /// returning once it answers `ping`.
    pub fn start(services: &[(&str, &str)]) -> Daemon {
        let dirs = TestDirs::new();
        for (name, text) in services {
            dirs.write_service(name, text);
        }
        Daemon::start_in(dirs)
    }

    /// Starts paiosd on directories prepared by the caller.
    pub fn start_in(dirs: TestDirs) -> Daemon {
        let mut d = Daemon {
            dirs,
            child: None,
            guard: Default::default(),
        };
        d.launch();
        d
    }

    /// Starts (again) a paiosd process on the same directories.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "paiosd is already running");
        let child = Command::new(paiosd_path())
            .args(self.dirs.args())
            .env("PAIOS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("paiosd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ctl(&["ping"]).status.code() == Some(0) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("paiosd exited early ({status}): {}", self.take_stderr());
            }
            assert!(Instant::now() < deadline, "paiosd never answered ping");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// What paiosd wrote to stderr so far (only after it exited, or it blocks).
    pub fn take_stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.as_mut().and_then(|c| c.stderr.take()) {
            let _ = e.read_to_string(&mut err);
        }
        err
    }

    pub fn signal(&self, sig: Signal) {
        if self.pid() > 0 {
            let _ = kill(Pid::from_raw(self.pid()), sig);
        }
    }

    /// Waits for paiosd to exit (bounded) and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs paiosd (not its services) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(paiosctl_path())
            .args(self.dirs.args())
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("paiosctl runs")
    }

    /// `status --json`, remembering every process group for cleanup.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let out = self.ctl(&["--json", "status"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "status failed: {}",
            text(&out.stderr)
        );
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("status JSON");
        for row in &rows {
            if let Some(pgid) = row["pgid"].as_i64().and_then(|p| i32::try_from(p).ok()) {
                self.guard.borrow_mut().group(pgid);
            }
        }
        rows
    }

    pub fn row(&self, name: &str) -> serde_json::Value {
        self.status()
            .into_iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in status"))
    }

    /// Polls status until `name` is in `state`; panics with the last row after `timeout`.
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let ok = wait_until(timeout, || {
            last = self.row(name);
            last["state"] == state
        });
        assert!(ok, "{name} never became {state}: {last}");
        last
    }

    /// Records every PID listed in `path` for cleanup, and returns them.
    pub fn pids_from(&self, path: &Path) -> Vec<i32> {
        self.guard.borrow_mut().pids_from(path);
        super::read_pids(path)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The guard's own Drop ends whatever is left of the recorded groups and PIDs.
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// True when `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    paios::process::start_time(pid).is_some()
}
