//! The crash ledger: every start, exit, crash, hang, give-up and task result, in
//! `<state-dir>/ledger.sqlite`.
//!
//! The supervisor hands records to [`Ledger::record`], which never blocks: a bounded
//! queue feeds one writer thread that batches them into transactions. When the disk
//! or the database misbehaves, records are counted and kept (up to a bound) for a
//! retry, and supervision goes on unchanged (promise 10). Even opening the file
//! happens on the writer thread, so a slow or broken disk never delays paiosd's start.
//!
//! A run is one row, written when it ends and carrying when it started: there is no
//! separate row at start, so `paiosctl ledger` lists exactly one line per run and a crash
//! loop costs one row per crash. A run still going is in `paiosctl status`; a run that
//! never ended in the ledger because paiosd itself died is recorded by the next paiosd's
//! start-up sweep (`unclean_end`, then `swept`/`sweep_gone` naming its PID and start).
//!
//! The writer's counters ([`LedgerStats`]) travel in the control plane's `ping` and
//! `status` replies, so `paiosctl` can say when records are waiting or were lost.
//!
//! `schema.rs` owns the file format and its migrations, `writer.rs` the thread,
//! `query.rs` the read-only side that `paiosctl ledger` (`crate::ctl::ledger`) uses.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::LedgerSettings;

pub mod query;
pub mod schema;
mod writer;

pub(crate) use writer::head;

pub use schema::{LedgerError, SCHEMA_VERSION};

/// One finished run of a service or task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub service: String,
    /// `service` or `task`.
    pub kind: String,
    /// `exited`, `crashed`, `stopped`, `killed`, `hung`, `memory`, `timeout`, `spawn_failed`.
    pub outcome: String,
    pub pid: Option<i32>,
    pub pgid: Option<i32>,
    pub leader_start_time: Option<u64>,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub ended_at: String,
    pub duration_ms: u64,
    pub exit_code: Option<i32>,
    /// e.g. `SIGKILL`.
    pub signal: Option<String>,
    /// Restart attempt number of this run (0 = first start).
    pub attempt: u32,
    /// The backoff delay chosen before this run, in ms.
    pub delay_ms: Option<u64>,
    /// The last lines of stderr, or the OS error for `spawn_failed`.
    pub context: Option<String>,
}

/// A state change or a paiosd event (`daemon_start`, `gave_up`, `storm`, `reload_applied`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The service, or `paiosd` for daemon events.
    pub service: String,
    /// `service`, `task` or `daemon`.
    pub kind: String,
    pub event: String,
    pub detail: Option<String>,
    /// RFC 3339 UTC.
    pub at: String,
}

impl EventRecord {
    /// An event about a service or task, stamped `at`.
    pub fn new(
        service: &str,
        kind: &str,
        event: &str,
        detail: Option<String>,
        at: DateTime<Utc>,
    ) -> EventRecord {
        EventRecord {
            service: service.to_string(),
            kind: kind.to_string(),
            event: event.to_string(),
            detail,
            at: rfc3339(at),
        }
    }

    /// An event about paiosd itself (`service = "paiosd"`, `kind = "daemon"`).
    pub fn daemon(event: &str, detail: Option<String>, at: DateTime<Utc>) -> EventRecord {
        EventRecord::new(DAEMON_SERVICE, "daemon", event, detail, at)
    }
}

/// The service name daemon events are recorded under.
pub const DAEMON_SERVICE: &str = "paiosd";

/// The outcomes `paiosctl ledger --crashes` selects.
pub const CRASH_OUTCOMES: &[&str] = &["crashed", "hung", "killed", "memory", "spawn_failed"];

/// A time as the ledger writes it: RFC 3339, UTC, milliseconds.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Run(RunRecord),
    Event(EventRecord),
}

/// Counters the control plane shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerStats {
    pub written: u64,
    /// Waiting in memory for the database to accept them.
    pub pending: u64,
    /// Lost because the in-memory bound was reached.
    pub dropped: u64,
    pub last_error: Option<String>,
}

impl LedgerStats {
    /// One line for people when history is not being written as it happens (records
    /// waiting or lost, or writes failing); `None` when all is well, so a healthy ledger
    /// adds nothing to `paiosctl status`.
    pub fn summary(&self) -> Option<String> {
        if self.pending == 0 && self.dropped == 0 && self.last_error.is_none() {
            return None;
        }
        let mut line = format!(
            "ledger: {} record{} waiting to be written, {} dropped",
            self.pending,
            if self.pending == 1 { "" } else { "s" },
            self.dropped
        );
        if let Some(error) = &self.last_error {
            line.push_str(&format!(" (last error: {error})"));
        }
        Some(line)
    }
}

/// How the writer thread behaves; [`WriterOptions::default`] is what paiosd uses. Tests
/// shorten the waits so that a locked database shows up in milliseconds, not seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriterOptions {
    /// Records the queue between `record()` and the thread holds; beyond it `record()`
    /// counts the record dropped rather than wait.
    pub queue: usize,
    /// Records kept in memory while the database refuses them; beyond it the oldest are
    /// dropped (and counted): the newest say most about what is happening now.
    pub max_pending: usize,
    /// SQLite's `busy_timeout`: how long one write waits for another process's lock.
    pub busy_timeout: Duration,
    /// First wait before retrying a failed write; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// At most one warning per this interval while writes keep failing.
    pub warn_every: Duration,
    /// After a write, records gather this long before the next one (unless half a
    /// queue's worth is waiting): a crash storm then costs one transaction per interval, not
    /// one per crash, which keeps the ledger's disk traffic from slowing the synchronous
    /// writes of `state.sqlite` that every restart makes.
    pub batch_wait: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            queue: 4096,
            max_pending: 10_000,
            busy_timeout: Duration::from_secs(5),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            warn_every: Duration::from_secs(60),
            batch_wait: Duration::from_millis(50),
        }
    }
}

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    tx: SyncSender<writer::Msg>,
    shared: Arc<writer::Shared>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Ledger {
    /// Opens (creating, migrating, or moving a corrupt file aside) and starts the writer thread.
    /// Never fails: a ledger that cannot be opened keeps records pending and retries.
    pub fn open(path: &Path, settings: LedgerSettings) -> Ledger {
        Ledger::open_with(path, settings, WriterOptions::default())
    }

    /// [`Ledger::open`] with explicit writer options.
    pub fn open_with(path: &Path, settings: LedgerSettings, options: WriterOptions) -> Ledger {
        let (tx, rx) = mpsc::sync_channel(options.queue.max(1));
        let shared = Arc::new(writer::Shared::default());
        let thread = writer::spawn(path.to_path_buf(), settings, options, shared.clone(), rx);
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(err) => {
                // The receiver is gone with the failed spawn, so every record() now counts
                // as dropped: supervision goes on, and the reason is visible in stats.
                let message = format!("could not start the ledger writer thread: {err}");
                tracing::error!("{message}");
                shared.set_error(Some(message));
                None
            }
        };
        Ledger {
            inner: Arc::new(Inner {
                tx,
                shared,
                closed: AtomicBool::new(false),
                thread: Mutex::new(thread),
            }),
        }
    }

    /// Queues a record; never blocks.
    pub fn record(&self, record: Record) {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            inner.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Counted before the send so that `pending` never dips below what is queued.
        inner.shared.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = inner.tx.try_send(writer::Msg::Record(record)) {
            inner.shared.queued.fetch_sub(1, Ordering::Relaxed);
            inner.shared.dropped.fetch_add(1, Ordering::Relaxed);
            if let TrySendError::Disconnected(_) = err {
                inner.closed.store(true, Ordering::Release);
            }
        }
    }

    pub fn stats(&self) -> LedgerStats {
        self.inner.shared.snapshot()
    }

    /// Flushes what is queued (bounded by `timeout`) and stops the writer thread.
    ///
    /// Records passed to [`Ledger::record`] afterwards are counted as dropped. When the
    /// database still refuses writes at the deadline, what is left stays counted as
    /// pending and is lost with the process.
    pub fn close(&self, timeout: Duration) {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = mpsc::channel();
        let msg = writer::Msg::Close {
            deadline,
            done: done_tx,
        };
        crate::worker::close(&inner.tx, msg, &done_rx, deadline, &inner.thread);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LedgerSettings {
        crate::config::Global::default().ledger
    }

    fn event(n: u32) -> Record {
        Record::Event(EventRecord::daemon("test", Some(n.to_string()), Utc::now()))
    }

    fn wait_written(ledger: &Ledger, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while ledger.stats().written < n {
            assert!(Instant::now() < deadline, "{:?}", ledger.stats());
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn records_arriving_within_the_batch_wait_share_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let options = WriterOptions {
            batch_wait: Duration::from_millis(400),
            ..WriterOptions::default()
        };
        let ledger = Ledger::open_with(&dir.path().join("ledger.sqlite"), settings(), options);
        ledger.record(event(0));
        wait_written(&ledger, 1);
        let after_first = Instant::now();
        for n in 1..=5 {
            ledger.record(event(n));
        }
        wait_written(&ledger, 6);
        // All five went in together, once the wait that followed the first write was over.
        assert!(
            after_first.elapsed() >= Duration::from_millis(300),
            "{:?}",
            after_first.elapsed()
        );
        ledger.close(Duration::from_secs(5));
    }

    #[test]
    fn close_does_not_wait_out_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let options = WriterOptions {
            batch_wait: Duration::from_secs(60),
            ..WriterOptions::default()
        };
        let ledger = Ledger::open_with(&dir.path().join("ledger.sqlite"), settings(), options);
        ledger.record(event(0));
        wait_written(&ledger, 1);
        ledger.record(event(1));
        let t = Instant::now();
        ledger.close(Duration::from_secs(5));
        assert_eq!(ledger.stats().written, 2);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn a_full_batch_is_written_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let options = WriterOptions {
            queue: 64,
            batch_wait: Duration::from_secs(60),
            ..WriterOptions::default()
        };
        let ledger = Ledger::open_with(&dir.path().join("ledger.sqlite"), settings(), options);
        ledger.record(event(0));
        wait_written(&ledger, 1);
        // Half the queue's worth is a full batch: written at once, not a minute later.
        for n in 1..=32 {
            ledger.record(event(n));
        }
        wait_written(&ledger, 33);
        ledger.close(Duration::from_secs(5));
    }

    #[test]
    fn a_healthy_ledger_says_nothing_and_a_troubled_one_says_why() {
        assert_eq!(LedgerStats::default().summary(), None);
        let written_only = LedgerStats {
            written: 9,
            ..LedgerStats::default()
        };
        assert_eq!(written_only.summary(), None);
        let locked = LedgerStats {
            written: 9,
            pending: 1,
            dropped: 0,
            last_error: Some("database is locked".into()),
        };
        assert_eq!(
            locked.summary().as_deref(),
            Some("ledger: 1 record waiting to be written, 0 dropped (last error: database is locked)")
        );
        let lost = LedgerStats {
            dropped: 4,
            pending: 2,
            ..LedgerStats::default()
        };
        assert_eq!(
            lost.summary().as_deref(),
            Some("ledger: 2 records waiting to be written, 4 dropped")
        );
    }
}
