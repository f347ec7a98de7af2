//! Service output: paiosd drains every run's stdout and stderr pipes into
//! `<log-dir>/NAME.log` on threads of its own, so a slow or full disk never stalls a
//! service or the supervisor (promise 10).
//!
//! Two threads: `paios-log-drain` polls every pipe and frames lines into a bounded
//! buffer per service (`queue.rs`); `paios-log-write` appends them to the files and
//! rotates (`writer.rs`). A service is never held up by more than its pipe: while the
//! disk writes, a service faster than it waits on its full pipe as it would on a file
//! (for at most [`queue::HOLD_MAX`] at a time); when the disk fails or stalls, whole
//! lines are dropped and counted instead, and `[paios: N lines dropped]` is written
//! where they were once writing works again.
//!
//! File format: one line per line of output, bytes as the service wrote them (not
//! necessarily UTF-8), lines over 64 KiB split. With `timestamps`, each line starts
//! with an RFC 3339 time with milliseconds and the local offset, then a space
//! (`2026-11-24T13:28:27.123+01:00 `); with `streams`, stderr lines then carry
//! [`STDERR_MARK`] (`[stderr] `). Stdout and stderr of a run share `NAME.log`. A line
//! still unfinished when its pipe closes is ended with `\n`; one unfinished while the
//! pipe stays open waits for its end (a prompt without newline shows up late).
//!
//! Rotation: before a line would take `NAME.log` past `max_size`, it becomes
//! `NAME.log.1` (older ones shift up, past `keep` they are deleted), so every file
//! ends on a line boundary and holds at most `max_size` bytes, or one line if that
//! line alone is longer. The file is created 0600; a `NAME.log` removed by hand is
//! recreated within a second.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::LogSettings;

mod daemon;
mod drain;
mod frame;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as os;
mod queue;
mod writer;

pub use daemon::{daemon_log_writer, RotatingFile, DAEMON_LOG_KEEP, DAEMON_LOG_MAX_SIZE};
pub use drain::TAIL_LINES;
pub use frame::MAX_LINE;
pub use queue::marker;

/// What marks a stderr line when `streams = true`.
pub const STDERR_MARK: &str = "[stderr] ";
/// The default bound of each service's in-memory buffer.
pub const BUFFER_BOUND: usize = 1024 * 1024;
/// How long `close()` waits for buffered lines to reach the disk.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

use drain::Cmd;

/// Handle to the log threads. Cheap to clone.
#[derive(Clone)]
pub struct Logs {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// `None` when the threads could not be started: output is then discarded.
    tx: Mutex<Option<Sender<Cmd>>>,
    /// Write end of the pipe that wakes the drain thread; dropping it wakes it too.
    wake: Mutex<Option<OwnedFd>>,
    shared: Arc<queue::Shared>,
}

impl fmt::Debug for Logs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logs")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// Buffer figures for one service, for status and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Bytes buffered now, including those being written.
    pub bytes: usize,
    /// The most ever buffered.
    pub peak: usize,
    pub dropped: u64,
}

impl Logs {
    /// Starts the log threads writing into `dir`. If the OS refuses a thread or a pipe
    /// (which leaves paiosd nothing better to do), the error is logged and output of
    /// attached runs is discarded rather than failing every start.
    pub fn start(dir: &Path) -> Logs {
        Self::start_with(dir, BUFFER_BOUND)
    }

    /// [`Logs::start`] with another per-service buffer bound.
    pub fn start_with(dir: &Path, bound: usize) -> Logs {
        match Self::try_start(dir, bound) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e,
                    "cannot start the log threads; service output will be discarded");
                Logs {
                    inner: Arc::new(Inner {
                        dir: dir.to_path_buf(),
                        tx: Mutex::new(None),
                        wake: Mutex::new(None),
                        shared: Arc::default(),
                    }),
                }
            }
        }
    }

    /// Starts the log threads, or says why not.
    pub fn try_start(dir: &Path, bound: usize) -> io::Result<Logs> {
        let (wake_rx, wake_tx) = os::wake_pipe()?;
        let (room_rx, room_tx) = os::wake_pipe()?;
        let (tx, rx) = mpsc::channel();
        let shared: Arc<queue::Shared> = Arc::default();
        let drain = drain::Drain::new(rx, wake_rx, room_rx, shared.clone(), bound.max(1));
        std::thread::Builder::new()
            .name("paios-log-drain".into())
            .spawn(move || drain.run())?;
        let (wdir, wshared) = (dir.to_path_buf(), shared.clone());
        let started = std::thread::Builder::new()
            .name("paios-log-write".into())
            .spawn(move || writer::run(wdir, wshared, room_tx));
        if let Err(e) = started {
            // The drain thread stops when the wake pipe closes (dropped here).
            drop((tx, wake_tx));
            return Err(e);
        }
        Ok(Logs {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                tx: Mutex::new(Some(tx)),
                wake: Mutex::new(Some(wake_tx)),
                shared,
            }),
        })
    }

    /// The directory the logs are written to.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn send(&self, cmd: Cmd) {
        let sent = {
            let tx = self.inner.tx.lock().unwrap_or_else(|e| e.into_inner());
            tx.as_ref().is_some_and(|tx| tx.send(cmd).is_ok())
        };
        if sent {
            let wake = self.inner.wake.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = wake.as_ref() {
                // A full wake pipe already means "wake up"; nothing is lost.
                let _ = nix::unistd::write(w, &[1]);
            }
        }
    }

    /// Drains a new run's pipes into `NAME.log` until both reach end of file. Never
    /// blocks: the descriptors are handed to the drain thread. After `close()` they
    /// are simply closed.
    pub fn attach(
        &self,
        name: &str,
        run_id: u64,
        settings: LogSettings,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) {
        self.send(Cmd::Attach {
            name: name.to_string(),
            run_id,
            settings,
            stdout,
            stderr,
        });
    }

    /// The last `n` (at most [`TAIL_LINES`]) stderr lines of run `run_id`, delivered
    /// once its pipes reached end of file or `wait` passed, whichever is first; an
    /// unfinished last line is included. An unknown run gets an empty list. Never
    /// blocks the caller, who may drop the receiver.
    pub fn stderr_tail(
        &self,
        run_id: u64,
        n: usize,
        wait: Duration,
    ) -> tokio::sync::oneshot::Receiver<Vec<String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        // If the thread is gone the sender is dropped with the command and the
        // receiver sees a closed channel.
        self.send(Cmd::StderrTail {
            run_id,
            n,
            wait,
            tx,
        });
        rx
    }

    /// Lines dropped for `name` because the disk did not keep up (cumulative).
    pub fn dropped(&self, name: &str) -> u64 {
        self.stats(name).dropped
    }

    /// Buffer figures for `name`.
    pub fn stats(&self, name: &str) -> BufferStats {
        let state = self.inner.shared.lock();
        state
            .queues
            .get(name)
            .map_or_else(BufferStats::default, |q| BufferStats {
                bytes: q.bytes,
                peak: q.peak,
                dropped: q.dropped_total,
            })
    }

    /// Flushes and stops the log threads: what the pipes hold now is read, unfinished
    /// lines are ended, and buffered lines are written, waiting at most a few seconds
    /// for a failing disk. Later `attach` calls close their pipes.
    pub fn close(&self) {
        let running = self
            .inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !running {
            return;
        }
        self.send(Cmd::Close);
        self.inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.inner
            .wake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let deadline = Instant::now() + CLOSE_WAIT;
        let mut done = self
            .inner
            .shared
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while !*done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("log threads did not finish writing in time");
                break;
            }
            done = self
                .inner
                .shared
                .done_cv
                .wait_timeout(done, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Where `name`'s current log file lives.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

pub mod read;
