//! Shared by the `logs_*` tests: real child processes whose stdout and stderr are
//! pipes attached to a real `Logs`, killed by their recorded process group on drop;
//! and a small tmpfs to fill, for the full-disk tests (here and in `logs_e2e`).

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use paios::config::LogSettings;
use paios::logs::Logs;

/// A close-on-exec pipe, so children other than the one it is meant for do not hold
/// it open (tests run in parallel threads).
#[cfg(target_os = "linux")]
pub fn pipe_cloexec() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

#[cfg(not(target_os = "linux"))]
pub fn pipe_cloexec() -> (OwnedFd, OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::os::fd::AsRawFd;
    let (r, w) = nix::unistd::pipe().unwrap();
    for fd in [&r, &w] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    }
    (r, w)
}

pub fn settings(max_size: u64, keep: u32, timestamps: bool, streams: bool) -> LogSettings {
    LogSettings {
        max_size,
        keep,
        timestamps,
        streams,
    }
}

/// A `sh -c` process in its own group, writing into pipes drained by `Logs`.
pub struct Service {
    pub child: Child,
    pub pgid: i32,
    pub run_id: u64,
}

impl Service {
    pub fn start(logs: &Logs, name: &str, run_id: u64, s: LogSettings, script: &str) -> Service {
        let (out_r, out_w) = pipe_cloexec();
        let (err_r, err_w) = pipe_cloexec();
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w))
            .process_group(0)
            .spawn()
            .unwrap();
        // The Command consumed and closed the parent's copies of the write ends.
        let pgid = child.id() as i32;
        logs.attach(name, run_id, s, out_r, err_r);
        Service {
            child,
            pgid,
            run_id,
        }
    }

    /// Waits for the leader to exit, failing the test past `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "service {} did not exit in {timeout:?}",
                self.pgid
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Polls `f` until it holds, failing with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `NAME.log.K` … `NAME.log.1`, `NAME.log` that exist, oldest first.
pub fn log_files(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for i in (1..=100).rev() {
        let p = dir.join(format!("{name}.log.{i}"));
        if p.exists() {
            files.push(p);
        }
    }
    let p = dir.join(format!("{name}.log"));
    if p.exists() {
        files.push(p);
    }
    files
}

/// Everything in `name`'s log files, oldest first.
pub fn read_all(dir: &Path, name: &str) -> Vec<u8> {
    log_files(dir, name)
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap_or_default())
        .collect()
}

pub fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

/// Checks that `lines` are the numbers `first..=last` in order, each once, except
/// where a `[paios: N lines dropped]` line accounts for exactly N missing. Returns the
/// number of lines reported dropped.
pub fn check_sequence(lines: &[&[u8]], first: u64, last: u64) -> u64 {
    let mut expect = first;
    let mut dropped = 0;
    let mut gap = 0;
    for l in lines {
        let s = std::str::from_utf8(l).unwrap();
        if let Some(n) = s
            .strip_prefix("[paios: ")
            .and_then(|r| r.strip_suffix(" lines dropped]"))
        {
            gap += n.parse::<u64>().unwrap();
            continue;
        }
        let v: u64 = s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}"));
        assert_eq!(
            v,
            expect + gap,
            "line out of order or missing (dropped so far {dropped})"
        );
        expect = v + 1;
        dropped += gap;
        gap = 0;
    }
    dropped += gap;
    assert_eq!(expect + gap, last + 1, "the last lines are missing");
    dropped
}

/// A tmpfs mounted for one test, unmounted (lazily) on drop. Needs root: callers hand
/// the reason `mount` failed to `common::needs`.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros into `dir/filler` until the filesystem is full; the filler's path.
pub fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0u8; 4096];
    while let Ok(n) = f.write(&block) {
        if n == 0 {
            break;
        }
    }
    p
}
