//! The alert command: runs the user's `alert_command` from `paiosd.toml` on storms,
//! give-ups and task failures, with the event in `PAIOS_*` environment variables and as
//! one JSON object on stdin.
//!
//! An alert must never delay supervision (promise 10), so [`Alerter::send`] only queues
//! (bounded) and one thread runs the commands one after another. Each run is its own
//! process group and is bounded by a timeout, after which the whole group is killed.
//! A failing, hanging or unstartable command is recorded in the ledger as an
//! `alert_failed` event and is never fatal.
//!
//! **Reaping.** The command is spawned and reaped through `crate::process`, like every
//! other group: its own group, the signal dispositions reset, and its exit handed over
//! by paiosd's one `waitpid(-1)` reaper (or reaped here by PID when no reaper runs).
//! The exit status itself is not taken from the wait: the command runs under a small
//! `/bin/sh` that is the group leader and reports the command's status on a pipe of its
//! own: `"$@" >&2; echo $?; kill -s KILL 0`. The status therefore arrives whoever reaps
//! the shell, and the closing pipe says the shell is done. The final `kill -s KILL 0`
//! ends whatever the command left running in its group while the group certainly still
//! exists, so an alert never leaves an orphan and paios never signals a group number
//! that might have been reused. Like every spawn, the shell gets the parent-death
//! signal (Linux): if paiosd is killed mid-alert the shell dies before that last
//! `kill`, and what the command started lives on unmarked (no `PAIOS_INSTANCE`), so
//! no sweep finds it; an alert command should not leave background work behind.
//!
//! A cheap per-(service, event) minimum interval guards against a flood if the caller's
//! rate limiting (the policy's job) ever fails; it is measured on the alerts' own `at`
//! times, so it needs no clock of its own.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::poll::{poll, PollFd, PollFlags};

use crate::ledger::{head, rfc3339, EventRecord, Ledger, Record};
use crate::process::{self, watch, SpawnSpec};
use crate::units;

/// Runs the command under a shell that reports its status on stdout and then ends the
/// group (see the module comment). `$0` is the name `ps` shows.
const SCRIPT: &str = "\"$@\" >&2; echo $?; kill -s KILL 0";
const SHELL: &str = "/bin/sh";
/// Bytes of the command's output kept for the failure record.
const OUTPUT_TAIL: usize = 2048;
/// Bytes of `detail` passed on; keeps the JSON well inside one pipe buffer, so writing
/// stdin never blocks even when the command does not read it.
const MAX_DETAIL: usize = 4096;
/// How long to wait for the shell to become a zombie once its pipe closed.
const REAP_WAIT: Duration = Duration::from_secs(1);

/// One alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `storm`, `gave_up`, `task_failed`, `memory_growth`, ...
    pub event: String,
    pub service: String,
    /// `service`, `task` or `daemon`.
    pub kind: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertSettings {
    /// Each run is killed (with its whole group) after this long.
    pub timeout: Duration,
    /// Alerts for the same (service, event) closer together than this are skipped. A
    /// guard against a flood only: the storm window is the rate limit people configure,
    /// so this stays well below any window they would choose.
    pub min_interval: Duration,
    /// Alerts waiting to run; beyond it `send` drops them.
    pub queue: usize,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            timeout: Duration::from_secs(10),
            min_interval: Duration::from_secs(1),
            queue: 64,
        }
    }
}

/// What [`Alerter::send`] did with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// Skipped: the same (service, event) was alerted less than `min_interval` before.
    RateLimited,
    /// Dropped: the queue is full or the alerter is closed (recorded in the ledger).
    Dropped,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("alert_command is empty")]
    EmptyCommand,
    #[error("could not start the alert thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Handle to the alert thread. Cheap to clone.
#[derive(Clone)]
pub struct Alerter {
    inner: Arc<Inner>,
}

struct Inner {
    tx: SyncSender<Msg>,
    ledger: Ledger,
    settings: AlertSettings,
    last_sent: Mutex<HashMap<(String, String), DateTime<Utc>>>,
    closing: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

enum Msg {
    Alert(Alert),
    Close(mpsc::Sender<()>),
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter")
            .field("settings", &self.inner.settings)
            .finish()
    }
}

impl Alerter {
    /// Starts the thread that will run `argv` for each alert; failures go to `ledger`.
    pub fn new(
        argv: Vec<String>,
        ledger: Ledger,
        settings: AlertSettings,
    ) -> Result<Alerter, AlertError> {
        if argv.is_empty() {
            return Err(AlertError::EmptyCommand);
        }
        let (tx, rx) = mpsc::sync_channel(settings.queue.max(1));
        let closing = Arc::new(AtomicBool::new(false));
        let runner = Runner {
            argv,
            ledger: ledger.clone(),
            timeout: settings.timeout,
            closing: closing.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("paios-alert".into())
            .spawn(move || runner.run(rx))
            .map_err(AlertError::Thread)?;
        Ok(Alerter {
            inner: Arc::new(Inner {
                tx,
                ledger,
                settings,
                last_sent: Mutex::new(HashMap::new()),
                closing,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Queues `alert`; never blocks.
    pub fn send(&self, alert: Alert) -> Sent {
        let inner = &self.inner;
        if inner.closing.load(Ordering::Acquire) {
            return Sent::Dropped;
        }
        if !self.admit(&alert) {
            tracing::info!(
                "alert {} for {} skipped: sent less than {} ago",
                alert.event,
                alert.service,
                units::format_duration(inner.settings.min_interval)
            );
            return Sent::RateLimited;
        }
        match inner.tx.try_send(Msg::Alert(alert)) {
            Ok(()) => Sent::Queued,
            Err(
                TrySendError::Full(Msg::Alert(alert))
                | TrySendError::Disconnected(Msg::Alert(alert)),
            ) => {
                let detail = format!(
                    "{} alert dropped: {} alerts already waiting for the alert command",
                    alert.event, inner.settings.queue
                );
                tracing::warn!("{}: {detail}", alert.service);
                inner.ledger.record(failure_record(&alert, detail));
                Sent::Dropped
            }
            Err(_) => Sent::Dropped,
        }
    }

    /// True when no alert for the same (service, event) was admitted within
    /// `min_interval` before this one's `at`; remembers this one if so.
    fn admit(&self, alert: &Alert) -> bool {
        let min = chrono::Duration::from_std(self.inner.settings.min_interval)
            .unwrap_or(chrono::Duration::MAX);
        let mut last = match self.inner.last_sent.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = (alert.service.clone(), alert.event.clone());
        if let Some(prev) = last.get(&key) {
            if alert.at >= *prev && alert.at.signed_duration_since(*prev) < min {
                return false;
            }
        }
        if last.len() >= 1024 {
            // Bounded memory: entries older than the interval no longer decide anything.
            last.retain(|_, at| alert.at.signed_duration_since(*at) < min);
        }
        last.insert(key, alert.at);
        true
    }

    /// Stops taking alerts, kills a running command's group, and stops the thread,
    /// waiting at most `timeout`.
    pub fn close(&self, timeout: Duration) {
        let inner = &self.inner;
        if inner.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = mpsc::channel();
        crate::worker::close(
            &inner.tx,
            Msg::Close(done_tx),
            &done_rx,
            deadline,
            &inner.thread,
        );
    }
}

fn failure_record(alert: &Alert, detail: String) -> Record {
    Record::Event(EventRecord::new(
        &alert.service,
        &alert.kind,
        "alert_failed",
        Some(detail),
        Utc::now(),
    ))
}

/// The thread's side.
struct Runner {
    argv: Vec<String>,
    ledger: Ledger,
    timeout: Duration,
    closing: Arc<AtomicBool>,
}

impl Runner {
    fn run(self, rx: Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Alert(alert) => {
                    if self.closing.load(Ordering::Acquire) {
                        continue;
                    }
                    match self.run_one(&alert) {
                        Ok(()) => tracing::info!(
                            "alert {} for {}: the alert command succeeded",
                            alert.event,
                            alert.service
                        ),
                        Err(problem) => {
                            let detail = format!(
                                "{} alert: `{}` {problem}",
                                alert.event,
                                self.argv.join(" ")
                            );
                            tracing::warn!("{}: {detail}", alert.service);
                            self.ledger.record(failure_record(&alert, detail));
                        }
                    }
                }
                Msg::Close(done) => {
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    /// Runs the command once; `Err` says what went wrong, in words for the ledger.
    fn run_one(&self, alert: &Alert) -> Result<(), String> {
        let detail = clean(head(&alert.detail, MAX_DETAIL));
        let at = rfc3339(alert.at);
        let json = serde_json::json!({
            "event": alert.event,
            "service": alert.service,
            "kind": alert.kind,
            "detail": detail,
            "at": at,
        })
        .to_string();
        let mut argv = vec![
            SHELL.to_string(),
            "-c".to_string(),
            SCRIPT.to_string(),
            "paios-alert".to_string(),
        ];
        argv.extend(self.argv.iter().cloned());
        let env = [
            ("PAIOS_EVENT", clean(&alert.event)),
            ("PAIOS_SERVICE", clean(&alert.service)),
            ("PAIOS_KIND", clean(&alert.kind)),
            ("PAIOS_DETAIL", detail),
            ("PAIOS_AT", at),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let spec = SpawnSpec {
            argv,
            cwd: None,
            env,
        };
        // The status comes on the pipe (see the module doc); the wait only reaps.
        let spawned = watch::spawn_watched_with_input(&spec, |_| {})
            .map_err(|e| format!("could not be started: {e}"))?;
        let shell = spawned.leader.pid;
        let group = Group(spawned.pgid);
        if let Some(stdin) = spawned.stdin {
            // A command that exits without reading gives EPIPE; that is its business.
            let mut stdin = File::from(stdin);
            let _ = stdin.write_all(json.as_bytes());
            let _ = stdin.write_all(b"\n");
        }
        let report = self.collect(File::from(spawned.stdout), File::from(spawned.stderr));
        match report.status {
            Collected::Status(_) | Collected::Silent => group.forget(),
            Collected::TimedOut | Collected::Closing => drop(group),
        }
        reap(shell);
        let output = tail_text(&report.output);
        let said = if output.is_empty() {
            String::new()
        } else {
            format!(": {output}")
        };
        match report.status {
            Collected::Status(0) => Ok(()),
            Collected::Status(127) => Err(format!("was not found (exit status 127){said}")),
            Collected::Status(126) => Err(format!("could not be executed (exit status 126){said}")),
            Collected::Status(n) if n > 128 => Err(format!(
                "was killed by signal {} (exit status {n}){said}",
                n - 128
            )),
            Collected::Status(n) => Err(format!("failed with exit status {n}{said}")),
            Collected::Silent => Err(format!("ended without reporting a status{said}")),
            Collected::TimedOut => Err(format!(
                "timed out after {}; its process group was killed{said}",
                units::format_duration(self.timeout)
            )),
            Collected::Closing => Err(format!(
                "was still running when paiosd stopped; its process group was killed{said}"
            )),
        }
    }

    /// Reads the status pipe and the output pipe until the status arrives, the timeout
    /// passes, or the alerter closes.
    fn collect(&self, status_pipe: File, output_pipe: File) -> Report {
        let deadline = Instant::now() + self.timeout;
        let mut status_pipe = Some(status_pipe);
        let mut output_pipe = Some(output_pipe);
        let mut status_text = Vec::new();
        let mut output = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if status_pipe.is_none() {
                let status = std::str::from_utf8(&status_text)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok());
                return Report {
                    status: status.map_or(Collected::Silent, Collected::Status),
                    output,
                };
            }
            if self.closing.load(Ordering::Acquire) {
                // A status line already read means the command is done; only its shell's
                // last moments are left, and those end the group by themselves.
                let status = std::str::from_utf8(&status_text)
                    .ok()
                    .filter(|s| s.ends_with('\n'))
                    .and_then(|s| s.trim().parse::<i32>().ok());
                return Report {
                    status: status.map_or(Collected::Closing, Collected::Status),
                    output,
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Report {
                    status: Collected::TimedOut,
                    output,
                };
            }
            // Short slices so that close() is noticed promptly.
            let slice = (deadline - now).min(Duration::from_millis(100));
            let slice = u16::try_from(slice.as_millis()).unwrap_or(100).max(1);
            let (status_ready, output_ready) = {
                let mut fds = Vec::with_capacity(2);
                if let Some(pipe) = &status_pipe {
                    fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
                }
                if let Some(pipe) = &output_pipe {
                    fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, slice) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!("alert: poll failed: {e}");
                        std::thread::sleep(Duration::from_millis(u64::from(slice)));
                        continue;
                    }
                }
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), fds.get(1).is_some_and(ready))
            };
            if status_ready {
                if let Some(pipe) = status_pipe.as_mut() {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => status_pipe = None,
                        Ok(n) => {
                            if status_text.len() < 64 {
                                status_text.extend_from_slice(&buf[..n]);
                            }
                        }
                    }
                }
            }
            if output_ready {
                if let Some(pipe) = output_pipe.as_mut() {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => output_pipe = None,
                        Ok(n) => {
                            output.extend_from_slice(&buf[..n]);
                            if output.len() > 2 * OUTPUT_TAIL {
                                output.drain(..output.len() - OUTPUT_TAIL);
                            }
                        }
                    }
                }
            }
        }
    }
}

enum Collected {
    Status(i32),
    /// The shell ended without a status line (killed from outside).
    Silent,
    TimedOut,
    Closing,
}

struct Report {
    status: Collected,
    output: Vec<u8>,
}

/// Kills the whole group when dropped, unless forgotten: a timeout, a close, or a panic
/// on this thread all end the alert's processes.
struct Group(i32);

impl Group {
    fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The shell leader has not reported yet, so it is alive (or an unreaped zombie)
        // and the group number is still ours.
        if let Err(e) = process::signal_group(self.0, libc::SIGKILL) {
            tracing::warn!("alert: {e}");
        }
    }
}

/// Waits (briefly: its pipe has closed or its group was killed) until the shell is
/// reaped, by paiosd's reaper or here.
fn reap(shell: i32) {
    let deadline = Instant::now() + REAP_WAIT;
    while !watch::reap_watched(shell) {
        if Instant::now() >= deadline {
            tracing::warn!("alert: shell {shell} did not exit after its pipe closed");
            watch::forget(shell);
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The last output, as one line of text.
fn tail_text(output: &[u8]) -> String {
    let start = output.len().saturating_sub(OUTPUT_TAIL);
    let text = String::from_utf8_lossy(&output[start..]);
    let text = text.trim();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    clean(&lines.join(" | "))
}

/// Environment values cannot hold NUL; other control characters are passed on.
fn clean(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}
