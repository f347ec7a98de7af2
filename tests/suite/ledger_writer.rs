//! The ledger writer against a real SQLite file: every record lands as one row, the
//! file migrates and refuses what it does not know, a corrupt file is moved aside, and a
//! locked, read-only or full database never blocks `record()` and loses nothing that
//! fits in memory once it recovers.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use paios::config::LedgerSettings;
use paios::ledger::query::{Entry, Filter, Reader};
use paios::ledger::{EventRecord, Ledger, LedgerStats, Record, RunRecord, WriterOptions};
use rusqlite::Connection;

fn settings() -> LedgerSettings {
    paios::config::Global::default().ledger
}

/// Short waits, so that a locked database shows up in milliseconds.
fn quick() -> WriterOptions {
    WriterOptions {
        busy_timeout: Duration::from_millis(100),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..WriterOptions::default()
    }
}

fn wait_for(what: &str, ledger: &Ledger, ok: impl Fn(&LedgerStats) -> bool) -> LedgerStats {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stats = ledger.stats();
        if ok(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(service: &str, outcome: &str, attempt: u32) -> RunRecord {
    RunRecord {
        service: service.into(),
        kind: "service".into(),
        outcome: outcome.into(),
        pid: Some(4242),
        pgid: Some(4242),
        leader_start_time: Some(987_654),
        started_at: "2026-11-24T10:00:00Z".into(),
        ended_at: "2026-11-24T10:00:01.500Z".into(),
        duration_ms: 1500,
        exit_code: Some(1),
        signal: None,
        attempt,
        delay_ms: Some(100 * u64::from(attempt.min(20) + 1)),
        context: Some("line one\nline two".into()),
    }
}

fn all(path: &Path) -> Vec<Entry> {
    Reader::open(path)
        .unwrap()
        .list(&Filter::default())
        .unwrap()
}

#[test]
fn every_run_and_event_becomes_one_row_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let ledger = Ledger::open_with(&path, settings(), quick());
    for attempt in 0..3 {
        ledger.record(Record::Run(run("crasher", "crashed", attempt)));
    }
    let killed = RunRecord {
        outcome: "killed".into(),
        exit_code: None,
        signal: Some("SIGKILL".into()),
        context: None,
        ended_at: "2026-11-24T10:00:03Z".into(),
        ..run("crasher", "killed", 3)
    };
    ledger.record(Record::Run(killed));
    ledger.record(Record::Event(EventRecord {
        service: "crasher".into(),
        kind: "service".into(),
        event: "gave_up".into(),
        detail: Some("4 crashes in 5m".into()),
        at: "2026-11-24T10:00:04Z".into(),
    }));
    wait_for("5 written", &ledger, |s| s.written == 5);
    ledger.close(Duration::from_secs(5));

    let entries = all(&path);
    assert_eq!(entries.len(), 5);
    let outcomes: Vec<&str> = entries.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        ["gave_up", "killed", "crashed", "crashed", "crashed"]
    );
    let attempts: Vec<Option<i64>> = entries.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [None, Some(3), Some(2), Some(1), Some(0)]);

    let first = &entries[4];
    assert_eq!(first.entry_type, "run");
    assert_eq!(first.service, "crasher");
    assert_eq!(first.kind, "service");
    assert_eq!((first.pid, first.pgid), (Some(4242), Some(4242)));
    assert_eq!(first.leader_start_time, Some(987_654));
    assert_eq!(
        first.started_at.as_deref(),
        Some("2026-11-24T10:00:00.000Z")
    );
    assert_eq!(first.ended_at, "2026-11-24T10:00:01.500Z");
    assert_eq!(first.duration_ms, Some(1500));
    assert_eq!(first.exit_code, Some(1));
    assert_eq!(first.signal, None);
    assert_eq!(first.delay_ms, Some(100));
    assert_eq!(first.context.as_deref(), Some("line one\nline two"));

    let killed = &entries[1];
    assert_eq!(killed.exit_code, None);
    assert_eq!(killed.signal.as_deref(), Some("SIGKILL"));

    let gave_up = &entries[0];
    assert_eq!(gave_up.entry_type, "event");
    assert_eq!(gave_up.detail.as_deref(), Some("4 crashes in 5m"));
    assert_eq!(gave_up.ended_at, "2026-11-24T10:00:04.000Z");

    let json: serde_json::Value = serde_json::to_value(killed).unwrap();
    for key in common::LEDGER_KEYS {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert!(json["exit_code"].is_null());
}

#[test]
fn hostile_records_are_bounded_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let ledger = Ledger::open_with(&path, settings(), quick());
    let huge = format!("{}THE END", "x".repeat(5 << 20));
    ledger.record(Record::Run(RunRecord {
        service: "s".repeat(10_000),
        started_at: "not a time".into(),
        ended_at: "\u{0}\u{1b}[2J".into(),
        context: Some(huge),
        leader_start_time: Some(u64::MAX),
        duration_ms: u64::MAX,
        ..run("x", "crashed", u32::MAX)
    }));
    ledger.record(Record::Event(EventRecord {
        service: String::new(),
        kind: "daemon".into(),
        event: "daemon_start".into(),
        detail: Some("é".repeat(100_000)),
        at: "2026-11-24T10:00:00Z".into(),
    }));
    wait_for("2 written", &ledger, |s| s.written == 2);
    ledger.close(Duration::from_secs(5));
    let entries = all(&path);
    assert_eq!(entries.len(), 2);
    let run = entries.iter().find(|e| e.entry_type == "run").unwrap();
    let context = run.context.as_deref().unwrap();
    assert!(context.len() <= 64 * 1024 && context.ends_with("THE END"));
    assert!(run.service.len() <= 256);
    assert_eq!(run.leader_start_time, None);
    assert_eq!(run.attempt, Some(i64::from(u32::MAX)));
    let event = entries.iter().find(|e| e.entry_type == "event").unwrap();
    assert_eq!(event.service, "paiosd");
    assert!(event.detail.as_deref().unwrap().len() <= 16 * 1024);
}

const V1_SCHEMA: &str = "
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    pid INTEGER,
    pgid INTEGER,
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    exit_code INTEGER,
    signal TEXT,
    attempt INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT,
    at TEXT NOT NULL
);
PRAGMA user_version = 1;
";

#[test]
fn a_version_1_ledger_is_migrated_keeping_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(V1_SCHEMA).unwrap();
        for i in 0..50 {
            conn.execute(
                "INSERT INTO runs (service, kind, outcome, pid, pgid, started_at, ended_at, exit_code, signal, attempt)
                 VALUES ('old', 'service', 'crashed', ?1, ?1, '2026-11-01T00:00:00Z', ?2, 2, NULL, ?1)",
                rusqlite::params![i, format!("2026-11-01T00:00:{:02}Z", i)],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO events (service, kind, event, detail, at) VALUES ('paiosd', 'daemon', 'daemon_start', 'v1', '2026-10-31T23:59:59Z')",
            [],
        )
        .unwrap();
    }
    let ledger = Ledger::open_with(&path, settings(), quick());
    ledger.record(Record::Run(run("new", "exited", 0)));
    wait_for("1 written", &ledger, |s| s.written == 1);
    ledger.close(Duration::from_secs(5));

    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, paios::ledger::SCHEMA_VERSION);
    let entries = all(&path);
    assert_eq!(entries.len(), 52);
    assert_eq!(entries[0].service, "new");
    assert_eq!(entries[1].attempt, Some(49));
    assert_eq!(entries[1].ended_at, "2026-11-01T00:00:49Z");
    assert_eq!(entries[1].duration_ms, Some(49_000));
    let oldest = entries.last().unwrap();
    assert_eq!(
        (oldest.outcome.as_str(), oldest.detail.as_deref()),
        ("daemon_start", Some("v1"))
    );
}

#[test]
fn a_newer_ledger_is_refused_and_records_wait_until_it_is_moved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE future (x); PRAGMA user_version = 9;")
        .unwrap();
    let ledger = Ledger::open_with(&path, settings(), quick());
    for i in 0..3 {
        ledger.record(Record::Run(run("kb", "crashed", i)));
    }
    let stats = wait_for("the schema error", &ledger, |s| s.last_error.is_some());
    let error = stats.last_error.unwrap();
    assert!(
        error.ends_with("ledger.sqlite has schema version 9, this paiosd knows up to 2: upgrade paiosd or move the file aside"),
        "{error}"
    );
    assert_eq!((stats.written, stats.pending), (0, 3));

    let reader_error = Reader::open(&path).err().unwrap().to_string();
    assert!(
        reader_error.contains("this paiosctl knows up to 2"),
        "{reader_error}"
    );

    // The user follows the advice; the retry writes to a fresh file.
    std::fs::rename(&path, dir.path().join("ledger.sqlite.future")).unwrap();
    let stats = wait_for("the pending records", &ledger, |s| s.written == 3);
    assert_eq!(
        (stats.pending, stats.dropped, stats.last_error),
        (0, 0, None)
    );
    ledger.close(Duration::from_secs(5));
    assert_eq!(all(&path).len(), 3);
}

#[test]
fn a_corrupt_ledger_is_moved_aside_and_a_fresh_one_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut seed = 0x2545_f491_u32;
    let junk: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        })
        .collect();
    std::fs::write(&path, &junk).unwrap();
    std::fs::write(dir.path().join("ledger.sqlite-wal"), b"junk wal").unwrap();

    let ledger = Ledger::open_with(&path, settings(), quick());
    ledger.record(Record::Run(run("kb", "crashed", 0)));
    wait_for("2 written", &ledger, |s| s.written == 2);
    ledger.close(Duration::from_secs(5));

    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let moved: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("ledger.sqlite.corrupt-") && !n.ends_with("-wal"))
        .collect();
    assert_eq!(moved.len(), 1, "{names:?}");
    assert_eq!(std::fs::read(dir.path().join(moved[0])).unwrap(), junk);
    assert!(names.contains(&format!("{}-wal", moved[0])), "{names:?}");

    let entries = all(&path);
    assert_eq!(entries.len(), 2);
    let notice = entries
        .iter()
        .find(|e| e.outcome == "ledger_corrupt_moved")
        .expect("the corrupt-file event");
    assert_eq!(
        (notice.service.as_str(), notice.kind.as_str()),
        ("paiosd", "daemon")
    );
    let detail = notice.detail.as_deref().unwrap();
    assert!(
        detail.contains(moved[0].as_str()) && detail.contains("not a database"),
        "{detail}"
    );
}

/// Holds SQLite's write lock from another connection, as another process would; the
/// lock goes with the connection when dropped.
struct WriteLock {
    _conn: Connection,
}

impl WriteLock {
    fn take(path: &Path) -> WriteLock {
        let conn = Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        WriteLock { _conn: conn }
    }
}

#[test]
fn a_locked_ledger_never_blocks_record_and_catches_up_when_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let first = Ledger::open_with(&path, settings(), quick());
    first.record(Record::Run(run("kb", "exited", 0)));
    wait_for("the first row", &first, |s| s.written == 1);
    first.close(Duration::from_secs(5));

    let ledger = Ledger::open_with(&path, settings(), quick());
    let lock = WriteLock::take(&path);
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let t = Instant::now();
        ledger.record(Record::Run(run("kb", "crashed", i)));
        slowest = slowest.max(t.elapsed());
        if i % 50 == 0 {
            // Spread over several busy waits, so the thread is blocked in SQLite meanwhile.
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    assert!(
        slowest < Duration::from_millis(50),
        "record() took {slowest:?}"
    );
    // While the writer moves a record from its queue into its buffer, it counts in both
    // for a moment (pending may run over, never under): wait for the steady state.
    let stats = wait_for("the lock to be noticed", &ledger, |s| {
        s.last_error.is_some() && s.pending == 200
    });
    assert!(
        stats.last_error.as_deref().unwrap().contains("locked"),
        "{stats:?}"
    );
    assert_eq!(stats.written, 0);
    assert_eq!(stats.pending, 200);

    drop(lock);
    let stats = wait_for("the pending records", &ledger, |s| s.written == 200);
    assert_eq!(
        (stats.pending, stats.dropped, stats.last_error),
        (0, 0, None)
    );
    ledger.close(Duration::from_secs(5));
    assert_eq!(all(&path).len(), 201);
}

#[test]
fn beyond_the_memory_bound_the_oldest_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let options = WriterOptions {
        queue: 16,
        max_pending: 20,
        ..quick()
    };
    let ledger = Ledger::open_with(&path, settings(), options);
    ledger.record(Record::Event(EventRecord::daemon(
        "daemon_start",
        None,
        chrono::Utc::now(),
    )));
    wait_for("the first row", &ledger, |s| s.written == 1);
    let lock = WriteLock::take(&path);
    // In small spaced chunks: at most three fit in one 100 ms busy wait, so the queue
    // (16) never overflows and the memory bound (20) is what drops.
    for chunk in 0..20 {
        for i in 0..5 {
            ledger.record(Record::Run(run("storm", "crashed", chunk * 5 + i)));
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let stats = wait_for("the overflow", &ledger, |s| s.dropped > 0);
    assert!(stats.pending <= 20 + 16, "{stats:?}");
    drop(lock);
    let stats = wait_for("all accounted for", &ledger, |s| {
        s.pending == 0 && s.written + s.dropped == 101
    });
    assert!(stats.written <= 1 + 20 + 16, "{stats:?}");
    ledger.close(Duration::from_secs(5));
    let entries = all(&path);
    assert_eq!(entries.len() as u64, stats.written);
    // The oldest went first: the newest say what is happening now.
    let attempts: Vec<i64> = entries.iter().filter_map(|e| e.attempt).collect();
    assert!(attempts.contains(&99), "{attempts:?}");
    assert!(!attempts.contains(&0), "{attempts:?}");
}

#[test]
fn close_flushes_what_is_queued_and_later_records_count_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let ledger = Ledger::open(&path, settings());
    for i in 0..1000 {
        ledger.record(Record::Run(run("kb", "crashed", i)));
    }
    let t = Instant::now();
    ledger.close(Duration::from_secs(10));
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(all(&path).len(), 1000);
    let clone = ledger.clone();
    clone.record(Record::Run(run("kb", "crashed", 0)));
    let stats = ledger.stats();
    assert_eq!((stats.written, stats.pending, stats.dropped), (1000, 0, 1));
    ledger.close(Duration::from_secs(1));
}

#[test]
fn rows_older_than_keep_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let now = chrono::Utc::now();
    let ledger = Ledger::open_with(&path, settings(), quick());
    for days in [200, 120, 91, 89, 1, 0] {
        let at = now - chrono::Duration::days(days);
        ledger.record(Record::Event(EventRecord::new(
            "kb",
            "service",
            &format!("aged_{days}"),
            None,
            at,
        )));
    }
    wait_for("6 written", &ledger, |s| s.written == 6);
    ledger.close(Duration::from_secs(5));
    // Pruning runs at open, so a second start removes what the first one wrote old.
    let ledger = Ledger::open_with(&path, settings(), quick());
    ledger.record(Record::Event(EventRecord::daemon(
        "daemon_start",
        None,
        now,
    )));
    wait_for("1 written", &ledger, |s| s.written == 1);
    ledger.close(Duration::from_secs(5));
    let mut names: Vec<String> = all(&path).into_iter().map(|e| e.outcome).collect();
    names.sort();
    assert_eq!(names, ["aged_0", "aged_1", "aged_89", "daemon_start"]);
}

/// Undoes `chattr +i` even when the test fails, so the temp dir can be removed.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Result<Immutable, String> {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .map_err(|e| format!("chattr: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        // As root, file modes mean nothing; check that the flag really stops writes.
        if std::fs::OpenOptions::new().append(true).open(path).is_ok() {
            let guard = Immutable(path.to_path_buf());
            drop(guard);
            return Err("the immutable flag does not stop writes here".into());
        }
        Ok(Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_ledger_keeps_records_pending_until_writable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let first = Ledger::open_with(&path, settings(), quick());
    first.record(Record::Run(run("kb", "exited", 0)));
    wait_for("the first row", &first, |s| s.written == 1);
    first.close(Duration::from_secs(5));

    let Some(immutable) = common::needs("chattr +i on a temp dir", Immutable::set(&path)) else {
        return;
    };
    let ledger = Ledger::open_with(&path, settings(), quick());
    for i in 0..10 {
        ledger.record(Record::Run(run("kb", "crashed", i)));
    }
    let stats = wait_for("the write error", &ledger, |s| s.last_error.is_some());
    assert_eq!((stats.written, stats.pending), (0, 10), "{stats:?}");
    assert!(
        stats.last_error.as_deref().unwrap().contains("readonly")
            || stats.last_error.as_deref().unwrap().contains("read-only"),
        "{stats:?}"
    );
    // Reading still works while it is read-only.
    assert_eq!(all(&path).len(), 1);

    drop(immutable);
    let stats = wait_for("the pending records", &ledger, |s| s.written == 10);
    assert_eq!((stats.pending, stats.dropped), (0, 0));
    ledger.close(Duration::from_secs(5));
    assert_eq!(all(&path).len(), 11);
}

/// A tiny tmpfs, unmounted even when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` with a file there; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0xa5u8; 4096];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    filler
}

#[test]
fn a_full_disk_keeps_records_pending_until_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    let Some(_tmpfs) = common::needs("root to mount a tmpfs", Tmpfs::mount(&mount, "1m")) else {
        return;
    };
    let path = mount.join("ledger.sqlite");
    let first = Ledger::open_with(&path, settings(), quick());
    first.record(Record::Run(run("kb", "exited", 0)));
    wait_for("the first row", &first, |s| s.written == 1);
    first.close(Duration::from_secs(5));

    let ledger = Ledger::open_with(&path, settings(), quick());
    // Let the open (and its prune) happen before the disk fills.
    ledger.record(Record::Run(run("kb", "exited", 0)));
    wait_for("the second row", &ledger, |s| s.written == 1);
    let filler = fill(&mount);
    let context = "stderr line\n".repeat(250);
    for i in 0..100 {
        ledger.record(Record::Run(RunRecord {
            context: Some(context.clone()),
            ..run("kb", "crashed", i)
        }));
    }
    let stats = wait_for("the write error", &ledger, |s| s.last_error.is_some());
    assert!(
        stats.last_error.as_deref().unwrap().contains("full"),
        "{stats:?}"
    );
    assert!(stats.pending > 0, "{stats:?}");

    std::fs::remove_file(filler).unwrap();
    let stats = wait_for("the pending records", &ledger, |s| s.written == 101);
    assert_eq!((stats.pending, stats.dropped), (0, 0));
    ledger.close(Duration::from_secs(5));
    assert_eq!(all(&path).len(), 102);
}
