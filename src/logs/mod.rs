//! Service output: paiosd drains every run's stdout and stderr pipes into
//! `<log-dir>/NAME.log` on a thread of its own, so a slow or full disk never stalls a
//! service or the supervisor (promise 10).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::config::LogSettings;

/// Handle to the log thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Logs {}

impl Logs {
    /// Starts the log thread writing into `dir`.
    pub fn start(dir: &Path) -> Logs {
        let _ = dir;
        Logs {}
    }

    /// Drains a new run's pipes into `NAME.log` until both reach end of file.
    pub fn attach(
        &self,
        name: &str,
        run_id: u64,
        settings: LogSettings,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) {
        let _ = (name, run_id, settings, stdout, stderr);
    }

    /// The last `n` stderr lines of run `run_id`, delivered once its pipes reached end of
    /// file or `wait` passed, whichever is first. Never blocks the caller.
    pub fn stderr_tail(
        &self,
        run_id: u64,
        n: usize,
        wait: std::time::Duration,
    ) -> tokio::sync::oneshot::Receiver<Vec<String>> {
        let _ = (run_id, n, wait);
        let (_tx, rx) = tokio::sync::oneshot::channel();
        rx
    }

    /// Lines dropped for `name` because the disk did not keep up.
    pub fn dropped(&self, name: &str) -> u64 {
        let _ = name;
        0
    }

    /// Flushes and stops the log thread.
    pub fn close(&self) {}
}

/// Where `name`'s current log file lives.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

pub mod read;
