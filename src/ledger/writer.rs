//! The ledger's one writer thread: drains the bounded queue, writes whatever has
//! accumulated in one transaction, keeps records in memory while the database refuses
//! them, and prunes old rows as it goes.
//!
//! It is a plain thread, not a tokio task, because every SQLite call blocks (a locked
//! database blocks for the whole `busy_timeout`); the supervisor only ever touches the
//! queue's non-blocking end. Retention runs in the same transaction as the inserts
//! that exceed the row bound, so no reader ever sees more than `max_rows` rows, and in
//! chunks, so no transaction grows without bound.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, TransactionBehavior};

use super::schema::{self, LedgerError};
use super::{EventRecord, LedgerStats, Record, WriterOptions, DAEMON_SERVICE};
use crate::config::LedgerSettings;

/// Rows deleted per transaction beyond those that make room for the new ones.
const PRUNE_CHUNK: u64 = 10_000;
/// How often rows older than `keep` are looked for when nothing else is going on.
const AGE_PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Bounds on what one row may hold, so a hostile or runaway stderr cannot bloat the file.
const MAX_CONTEXT_BYTES: usize = 64 * 1024;
const MAX_DETAIL_BYTES: usize = 16 * 1024;
const MAX_NAME_BYTES: usize = 256;

// Records travel unboxed: one allocation fewer per record on the supervisor's side,
// for a queue whose size (a few hundred bytes times its bound) is fixed anyway.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Record(Record),
    Close {
        deadline: Instant,
        done: mpsc::Sender<()>,
    },
}

/// Counters shared between the handles and the thread.
#[derive(Default)]
pub(crate) struct Shared {
    pub written: AtomicU64,
    /// In the channel, not yet taken by the thread.
    pub queued: AtomicU64,
    /// Taken by the thread, not yet committed.
    pub buffered: AtomicU64,
    pub dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn snapshot(&self) -> LedgerStats {
        LedgerStats {
            written: self.written.load(Ordering::Relaxed),
            pending: self.buffered.load(Ordering::Relaxed) + self.queued.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            last_error: match self.last_error.lock() {
                Ok(guard) => guard.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            },
        }
    }

    pub fn set_error(&self, error: Option<String>) {
        match self.last_error.lock() {
            Ok(mut guard) => *guard = error,
            Err(poisoned) => *poisoned.into_inner() = error,
        }
    }
}

pub(crate) fn spawn(
    path: PathBuf,
    settings: LedgerSettings,
    options: WriterOptions,
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("paios-ledger".into())
        .spawn(move || {
            let now = Instant::now();
            let mut writer = Writer {
                path,
                settings,
                options,
                shared,
                db: None,
                suspect_corrupt: false,
                buffer: VecDeque::new(),
                backoff: options.retry_min,
                next_attempt: now,
                batch_until: now,
                failing_since: None,
                last_warn: None,
                reported_dropped: 0,
                next_age_prune: now,
            };
            writer.run(rx);
        })
}

struct Db {
    conn: Connection,
    rows: u64,
}

struct Writer {
    path: PathBuf,
    settings: LedgerSettings,
    options: WriterOptions,
    shared: Arc<Shared>,
    db: Option<Db>,
    /// Set after a write reported corruption: the next open runs the integrity check.
    suspect_corrupt: bool,
    buffer: VecDeque<Record>,
    backoff: Duration,
    /// No write before this (a retry's backoff after a failure).
    next_attempt: Instant,
    /// While healthy, no write before this unless the batch is full (`batch_wait`).
    batch_until: Instant,
    failing_since: Option<Instant>,
    last_warn: Option<Instant>,
    reported_dropped: u64,
    next_age_prune: Instant,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        loop {
            let wait = self.next_wake().saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    // Every handle is gone without close(): one last try, then out.
                    self.flush_until(Instant::now() + self.options.busy_timeout);
                    return;
                }
            };
            let mut close = None;
            if let Some(msg) = first {
                close = self.take(msg);
            }
            while close.is_none() && self.may_take_more() {
                match rx.try_recv() {
                    Ok(msg) => close = self.take(msg),
                    Err(_) => break,
                }
            }
            if let Some((deadline, done)) = close {
                self.flush_until(deadline);
                let _ = done.send(());
                return;
            }
            if self.due(Instant::now()) && self.has_work() {
                self.attempt();
            }
            self.maybe_warn();
        }
    }

    /// When healthy, the batch is capped at `max_pending` and written before more is
    /// taken; while writes fail, everything is taken so the channel never fills and the
    /// in-memory bound (not the channel) decides what is dropped.
    fn may_take_more(&self) -> bool {
        self.failing_since.is_some() || self.buffer.len() < self.options.max_pending
    }

    fn take(&mut self, msg: Msg) -> Option<(Instant, mpsc::Sender<()>)> {
        match msg {
            Msg::Record(record) => {
                self.push(record);
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                None
            }
            Msg::Close { deadline, done } => Some((deadline, done)),
        }
    }

    fn push(&mut self, record: Record) {
        self.buffer.push_back(record);
        while self.buffer.len() > self.options.max_pending.max(1) {
            self.buffer.pop_front();
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.publish_buffered();
    }

    fn publish_buffered(&self) {
        self.shared
            .buffered
            .store(self.buffer.len() as u64, Ordering::Relaxed);
    }

    /// Whether a write may be tried now: never during a retry's backoff; while healthy,
    /// once the batch wait is over or the batch is full.
    fn due(&self, now: Instant) -> bool {
        now >= self.next_attempt && (now >= self.batch_until || self.batch_full())
    }

    /// Half a queue's worth is waiting (more waiting would risk the queue overflowing,
    /// and the batch is big enough to pay for its transaction), or there is no database
    /// yet, or writes are failing (whose pace the retry backoff sets): no reason to wait.
    fn batch_full(&self) -> bool {
        self.buffer.len() >= (self.options.queue / 2).clamp(1, self.options.max_pending.max(1))
            || self.db.is_none()
            || self.failing_since.is_some()
    }

    fn has_work(&self) -> bool {
        !self.buffer.is_empty() || self.db.is_none() || self.prune_due()
    }

    fn prune_due(&self) -> bool {
        match &self.db {
            Some(db) => db.rows > self.settings.max_rows || Instant::now() >= self.next_age_prune,
            None => false,
        }
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let open_and_within_bound = self
            .db
            .as_ref()
            .is_some_and(|db| db.rows <= self.settings.max_rows);
        if !self.buffer.is_empty() || !open_and_within_bound {
            // Unopened too: opening early reports a moved-aside corrupt file at start, not
            // at the first crash; after a failure this waits out the backoff.
            let at = if self.batch_full() {
                self.next_attempt
            } else {
                self.next_attempt.max(self.batch_until)
            };
            return at.max(now);
        }
        self.next_age_prune.max(now)
    }

    /// Writes until the buffer is empty or `deadline` passes.
    fn flush_until(&mut self, deadline: Instant) {
        while !self.buffer.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            if now < self.next_attempt {
                std::thread::sleep(self.next_attempt.min(deadline) - now);
                continue;
            }
            self.attempt();
        }
    }

    /// One try: open if needed, then write the buffer and prune, in one transaction.
    fn attempt(&mut self) {
        // Only a write of records starts a batch window: opening the file (or a prune)
        // with nothing queued must not make the first record wait out `batch_wait`.
        let wrote = !self.buffer.is_empty();
        match self.try_write() {
            Ok(()) => {
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        "{}: ledger writes work again after {:.0?}; {} dropped in all",
                        self.path.display(),
                        since.elapsed(),
                        self.shared.dropped.load(Ordering::Relaxed)
                    );
                }
                self.shared.set_error(None);
                self.backoff = self.options.retry_min;
                let now = Instant::now();
                self.next_attempt = now;
                if wrote {
                    self.batch_until = now + self.options.batch_wait;
                }
            }
            Err(err) => {
                if err.is_corrupt() {
                    self.suspect_corrupt = true;
                }
                if !err.is_busy() {
                    // Read-only, corrupt, gone or newer: a fresh open is the only cure, and
                    // it is what notices the file became writable again.
                    self.db = None;
                }
                let now = Instant::now();
                self.failing_since.get_or_insert(now);
                self.shared.set_error(Some(err.to_string()));
                self.next_attempt = now + self.backoff;
                self.backoff = (self.backoff * 2).min(self.options.retry_max);
            }
        }
    }

    fn try_write(&mut self) -> Result<(), LedgerError> {
        if self.db.is_none() {
            let opened =
                schema::open_writable(&self.path, self.options.busy_timeout, self.suspect_corrupt)?;
            self.suspect_corrupt = false;
            if let Some(moved) = &opened.moved_aside {
                let detail = format!(
                    "{} was corrupt ({}); moved it to {} and started a fresh ledger",
                    self.path.display(),
                    moved.reason,
                    moved.to.display()
                );
                tracing::error!("{detail}");
                self.buffer.push_front(Record::Event(EventRecord::daemon(
                    "ledger_corrupt_moved",
                    Some(detail),
                    Utc::now(),
                )));
                self.publish_buffered();
            }
            self.db = Some(Db {
                conn: opened.conn,
                rows: opened.rows,
            });
        }
        let Some(db) = self.db.as_mut() else {
            return Ok(());
        };
        let path = &self.path;
        let err = |e| LedgerError::sqlite(path, e);
        let age_due = Instant::now() >= self.next_age_prune;
        if self.buffer.is_empty() && !age_due && db.rows <= self.settings.max_rows {
            return Ok(());
        }
        let now_ms = Utc::now().timestamp_millis();
        let keep_ms = i64::try_from(self.settings.keep.as_millis()).unwrap_or(i64::MAX);

        let tx = rusqlite::Transaction::new_unchecked(&db.conn, TransactionBehavior::Immediate)
            .map_err(err)?;
        let inserted = self.buffer.len() as u64;
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(err)?;
            for record in &self.buffer {
                let row = Row::from(record, now_ms);
                insert
                    .execute(params![
                        row.kind_of_row,
                        row.service,
                        row.kind,
                        row.outcome,
                        row.pid,
                        row.pgid,
                        row.leader_start_time,
                        row.started_at,
                        row.ended_at,
                        row.at_ms,
                        row.duration_ms,
                        row.exit_code,
                        row.signal,
                        row.attempt,
                        row.delay_ms,
                        row.context,
                        row.detail,
                    ])
                    .map_err(err)?;
            }
        }
        let mut rows = db.rows + inserted;
        let excess = rows.saturating_sub(self.settings.max_rows);
        let mut deleted_age = 0;
        if excess > 0 {
            let n = excess.min(inserted + PRUNE_CHUNK);
            let gone = tx
                .execute(
                    "DELETE FROM entries WHERE id IN (SELECT id FROM entries ORDER BY id LIMIT ?1)",
                    [i64::try_from(n).unwrap_or(i64::MAX)],
                )
                .map_err(err)?;
            rows = rows.saturating_sub(gone as u64);
        }
        if age_due {
            deleted_age = tx
                .execute(
                    "DELETE FROM entries WHERE id IN
                        (SELECT id FROM entries WHERE at_ms < ?1 ORDER BY id LIMIT ?2)",
                    params![now_ms.saturating_sub(keep_ms), PRUNE_CHUNK as i64],
                )
                .map_err(err)? as u64;
            rows = rows.saturating_sub(deleted_age);
        }
        tx.commit().map_err(err)?;

        db.rows = rows;
        if age_due {
            // A full chunk means more may be waiting: come back at once rather than in an hour.
            self.next_age_prune = if deleted_age >= PRUNE_CHUNK {
                Instant::now()
            } else {
                Instant::now() + AGE_PRUNE_EVERY
            };
        }
        self.buffer.clear();
        self.publish_buffered();
        self.shared.written.fetch_add(inserted, Ordering::Relaxed);
        Ok(())
    }

    /// Logs the trouble at most once per `warn_every`: a locked ledger for an hour is one
    /// problem, not a million log lines.
    fn maybe_warn(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        let new_drops = dropped > self.reported_dropped;
        if self.failing_since.is_none() && !new_drops {
            return;
        }
        let now = Instant::now();
        if self
            .last_warn
            .is_some_and(|at| now.duration_since(at) < self.options.warn_every)
        {
            return;
        }
        self.last_warn = Some(now);
        self.reported_dropped = dropped;
        let stats = self.shared.snapshot();
        match &stats.last_error {
            Some(error) => tracing::warn!(
                "ledger writes are failing: {error}; {} records pending, {} dropped; retrying in {:.0?}",
                stats.pending,
                stats.dropped,
                self.next_attempt.saturating_duration_since(now)
            ),
            None => tracing::warn!(
                "ledger queue overflowed: {} records dropped so far",
                stats.dropped
            ),
        }
    }
}

const INSERT: &str = "INSERT INTO entries (type, service, kind, outcome, pid, pgid,
    leader_start_time, started_at, ended_at, at_ms, duration_ms, exit_code, signal, attempt,
    delay_ms, context, detail)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// A record as one `entries` row: times normalised, sizes bounded.
struct Row<'a> {
    kind_of_row: &'static str,
    service: &'a str,
    kind: &'a str,
    outcome: &'a str,
    pid: Option<i32>,
    pgid: Option<i32>,
    leader_start_time: Option<i64>,
    started_at: Option<String>,
    ended_at: String,
    at_ms: i64,
    duration_ms: Option<i64>,
    exit_code: Option<i32>,
    signal: Option<&'a str>,
    attempt: Option<i64>,
    delay_ms: Option<i64>,
    context: Option<&'a str>,
    detail: Option<&'a str>,
}

impl<'a> Row<'a> {
    fn from(record: &'a Record, now_ms: i64) -> Row<'a> {
        match record {
            Record::Run(run) => {
                let (ended_at, at_ms) = normalise_time(&run.ended_at, now_ms);
                Row {
                    kind_of_row: "run",
                    service: head(&run.service, MAX_NAME_BYTES),
                    kind: head(&run.kind, MAX_NAME_BYTES),
                    outcome: head(&run.outcome, MAX_NAME_BYTES),
                    pid: run.pid,
                    pgid: run.pgid,
                    leader_start_time: run.leader_start_time.and_then(|t| i64::try_from(t).ok()),
                    started_at: Some(normalise_time(&run.started_at, now_ms).0),
                    ended_at,
                    at_ms,
                    duration_ms: Some(i64::try_from(run.duration_ms).unwrap_or(i64::MAX)),
                    exit_code: run.exit_code,
                    signal: run.signal.as_deref().map(|s| head(s, MAX_NAME_BYTES)),
                    attempt: Some(i64::from(run.attempt)),
                    delay_ms: run.delay_ms.and_then(|d| i64::try_from(d).ok()),
                    context: run.context.as_deref().map(|c| tail(c, MAX_CONTEXT_BYTES)),
                    detail: None,
                }
            }
            Record::Event(event) => {
                let (at, at_ms) = normalise_time(&event.at, now_ms);
                Row {
                    kind_of_row: "event",
                    service: head(nonempty(&event.service), MAX_NAME_BYTES),
                    kind: head(&event.kind, MAX_NAME_BYTES),
                    outcome: head(&event.event, MAX_NAME_BYTES),
                    pid: None,
                    pgid: None,
                    leader_start_time: None,
                    started_at: Some(at.clone()),
                    ended_at: at,
                    at_ms,
                    duration_ms: None,
                    exit_code: None,
                    signal: None,
                    attempt: None,
                    delay_ms: None,
                    context: None,
                    detail: event.detail.as_deref().map(|d| head(d, MAX_DETAIL_BYTES)),
                }
            }
        }
    }
}

fn nonempty(service: &str) -> &str {
    if service.is_empty() {
        DAEMON_SERVICE
    } else {
        service
    }
}

/// The canonical text and epoch milliseconds of an RFC 3339 time. A time that does not
/// parse is kept as written (it is evidence) and filed under the moment it was written.
fn normalise_time(text: &str, now_ms: i64) -> (String, i64) {
    match DateTime::parse_from_rfc3339(text) {
        Ok(at) => {
            let at = at.with_timezone(&Utc);
            (super::rfc3339(at), at.timestamp_millis())
        }
        Err(_) => (head(text, MAX_NAME_BYTES).to_string(), now_ms),
    }
}

/// The first `max` bytes of `s`, cut at a character boundary.
pub(crate) fn head(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The last `max` bytes of `s`, cut at a character boundary: the end of stderr is what
/// explains a crash.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_respect_character_boundaries() {
        let s = "ééé";
        assert_eq!(head(s, 3), "é");
        assert_eq!(tail(s, 3), "é");
        assert_eq!(head(s, 100), s);
        assert_eq!(tail("", 0), "");
    }

    #[test]
    fn times_are_normalised_to_utc_millis_and_bad_ones_kept() {
        assert_eq!(
            normalise_time("2026-01-01T01:00:00+01:00", 5),
            ("2026-01-01T00:00:00.000Z".to_string(), 1_767_225_600_000)
        );
        assert_eq!(normalise_time("yesterday", 5), ("yesterday".to_string(), 5));
    }
}
