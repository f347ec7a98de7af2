//! `state.sqlite`: the live runs, written synchronously before a run counts as started,
//! so that the next paiosd can end what a killed one left behind (promise 3). Kept apart
//! from the ledger so the ledger's queue can never delay or lose a live-run record.
//!
//! Each live run keeps what ending it needs without the config: the group, the leader's
//! identity (PID + start time, so a reused PID is never signalled) and the service's
//! stop sequence, because the service may have been removed from `services.d` by the
//! time the next paiosd sweeps. The file also remembers when each task last ran, for
//! catch-up after sleep or downtime.
//!
//! `synchronous = NORMAL` in WAL mode: a record that `record_run` returned for survives
//! paiosd being killed (it is in the OS's hands), which is the case the sweep exists
//! for. Power loss may lose the last commits, but power loss also ends every process
//! they describe, so nothing is left to sweep; a task's last-handled time may then be
//! one slot old, which costs at most one extra catch-up run. `FULL` would put an fsync
//! — milliseconds on a laptop disk — into every start and every exit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use crate::sqlite::DbError;
use serde::{Deserialize, Serialize};

/// The schema version this build writes and reads.
pub const STATE_SCHEMA_VERSION: i64 = 2;

/// `MIGRATIONS[i]` takes the file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE live_runs (
    service TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pgid INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    argv TEXT NOT NULL,
    stop_signal INTEGER NOT NULL,
    grace_ms INTEGER NOT NULL,
    PRIMARY KEY (service, pgid)
);
CREATE TABLE task_last (
    name TEXT PRIMARY KEY,
    at TEXT NOT NULL
);
",
    "
CREATE TABLE daemon (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL
);
",
];

/// A run that was started and not yet seen to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRun {
    pub service: String,
    pub pid: i32,
    pub pgid: i32,
    /// The leader's start time (see `process::Identity`).
    pub start_time: u64,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub argv: Vec<String>,
    /// The service's stop signal, so a leftover group is ended the way its config says.
    pub stop_signal: i32,
    pub grace_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: the integrity check failed: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{} has schema version {found}, this paiosd knows up to {known}: upgrade paiosd or move the file aside",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{}: {what} {value} is out of range", path.display())]
    OutOfRange {
        path: PathBuf,
        what: &'static str,
        value: String,
    },
    #[error("could not move {} aside: {source}", path.display())]
    MoveAside {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no state database is available: {problem}", path.display())]
    Unavailable { path: PathBuf, problem: String },
}

impl StateError {
    /// True when the file is damaged or of a schema this build cannot use: moving it
    /// aside is the way forward.
    pub fn is_unusable_file(&self) -> bool {
        match self {
            StateError::Corrupt { .. } | StateError::NewerSchema { .. } => true,
            StateError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
            ),
            _ => false,
        }
    }
}

/// The open `state.sqlite`, owned by the supervisor.
pub struct StateDb {
    /// `None` only when not even an in-memory database could be had: every call then
    /// fails with [`StateError::Unavailable`] and supervision goes on without it.
    conn: Option<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb").field("path", &self.path).finish()
    }
}

impl StateDb {
    /// Opens or creates `path`, checks it and migrates it. A corrupt file, or one of a
    /// newer schema, is an error the caller reports (see [`StateDb::open_or_recreate`]).
    pub fn open(path: &Path) -> Result<StateDb, StateError> {
        // The file is tiny, so a full check at every start is cheap.
        let conn = crate::sqlite::open_wal(path, Duration::from_secs(2), true)
            .map_err(|e| from_db(path, e))?;
        migrate(&conn, path)?;
        Ok(StateDb {
            conn: Some(conn),
            path: path.to_path_buf(),
        })
    }

    /// Opens `path`; when it is corrupt or of a newer schema, moves it aside
    /// (`<name>.corrupt-<UTC time>`) and starts a fresh one. When even that fails, the
    /// live runs are kept in memory (a killed paiosd then cannot sweep them) so paiosd
    /// still runs. The second value says what went wrong, for the caller to report.
    pub fn open_or_recreate(path: &Path) -> (StateDb, Option<String>) {
        let first = match StateDb::open(path) {
            Ok(db) => return (db, None),
            Err(e) => e,
        };
        let mut problem = first.to_string();
        if first.is_unusable_file() {
            match move_aside(path) {
                Ok(to) => {
                    problem = format!(
                        "{problem}; moved it to {} and started a fresh state file (runs the old one recorded cannot be swept)",
                        to.display()
                    );
                    match StateDb::open(path) {
                        Ok(db) => return (db, Some(problem)),
                        Err(e) => problem = format!("{problem}; then: {e}"),
                    }
                }
                Err(e) => problem = format!("{problem}; {e}"),
            }
        }
        match StateDb::in_memory(path) {
            Ok(db) => (
                db,
                Some(format!(
                    "{problem}; live runs are kept in memory only, so a killed paiosd cannot end them at its next start"
                )),
            ),
            Err(e) => {
                let problem = format!("{problem}; an in-memory state database failed too: {e}");
                let db = StateDb {
                    conn: None,
                    path: path.to_path_buf(),
                };
                (db, Some(problem))
            }
        }
    }

    fn in_memory(path: &Path) -> Result<StateDb, StateError> {
        let conn = Connection::open_in_memory().map_err(|e| sqlite(path, e))?;
        migrate(&conn, path)?;
        Ok(StateDb {
            conn: Some(conn),
            path: path.to_path_buf(),
        })
    }

    fn conn(&self) -> Result<&Connection, StateError> {
        self.conn.as_ref().ok_or_else(|| StateError::Unavailable {
            path: self.path.clone(),
            problem: "it could not be opened, even in memory".into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a started run; returns once it is on disk.
    pub fn record_run(&self, run: &LiveRun) -> Result<(), StateError> {
        let start_time = i64::try_from(run.start_time).map_err(|_| StateError::OutOfRange {
            path: self.path.clone(),
            what: "start time",
            value: run.start_time.to_string(),
        })?;
        let grace_ms = i64::try_from(run.grace_ms).unwrap_or(i64::MAX);
        let argv = serde_json::to_string(&run.argv).unwrap_or_else(|_| "[]".into());
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO live_runs
                    (service, pid, pgid, start_time, started_at, argv, stop_signal, grace_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    run.service,
                    run.pid,
                    run.pgid,
                    start_time,
                    run.started_at,
                    argv,
                    run.stop_signal,
                    grace_ms
                ],
            )
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(())
    }

    /// Forgets a run whose group is gone. Removing one that is not there is not an error.
    pub fn remove_run(&self, service: &str, pgid: i32) -> Result<(), StateError> {
        self.conn()?
            .execute(
                "DELETE FROM live_runs WHERE service = ?1 AND pgid = ?2",
                params![service, pgid],
            )
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(())
    }

    /// Every recorded live run. A row that cannot be used (a negative start time) is
    /// skipped with a warning; an unreadable argv becomes empty, since it only names
    /// the run in messages.
    pub fn live_runs(&self) -> Result<Vec<LiveRun>, StateError> {
        let err = |e| sqlite(&self.path, e);
        let mut stmt = self
            .conn()?
            .prepare(
                "SELECT service, pid, pgid, start_time, started_at, argv, stop_signal, grace_ms
                 FROM live_runs ORDER BY started_at, service",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i32>(1)?,
                    row.get::<_, i32>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, i32>(6)?,
                    row.get::<_, i64>(7)?,
                ))
            })
            .map_err(err)?;
        let mut runs = Vec::new();
        for row in rows {
            let (service, pid, pgid, start_time, started_at, argv, stop_signal, grace_ms) =
                row.map_err(err)?;
            let Ok(start_time) = u64::try_from(start_time) else {
                tracing::warn!(
                    "{}: skipping live run of {service} (pgid {pgid}): start time {start_time} is negative",
                    self.path.display()
                );
                continue;
            };
            let argv = serde_json::from_str(&argv).unwrap_or_else(|e| {
                tracing::warn!(
                    "{}: live run of {service} (pgid {pgid}) has an unreadable argv: {e}",
                    self.path.display()
                );
                Vec::new()
            });
            runs.push(LiveRun {
                service,
                pid,
                pgid,
                start_time,
                started_at,
                argv,
                stop_signal,
                grace_ms: u64::try_from(grace_ms).unwrap_or(0),
            });
        }
        Ok(runs)
    }

    /// When task `name` last started, if ever. A read error is logged and taken as
    /// "never": at worst one catch-up run too many.
    pub fn task_last(&self, name: &str) -> Option<DateTime<Utc>> {
        let conn = match self.conn() {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("reading the last run of task {name}: {e}");
                return None;
            }
        };
        let text: Option<String> = match conn
            .query_row("SELECT at FROM task_last WHERE name = ?1", [name], |row| {
                row.get(0)
            })
            .optional()
        {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(
                    "{}: reading the last run of task {name}: {e}",
                    self.path.display()
                );
                return None;
            }
        };
        let text = text?;
        match DateTime::parse_from_rfc3339(&text) {
            Ok(at) => Some(at.with_timezone(&Utc)),
            Err(e) => {
                tracing::warn!(
                    "{}: task {name} has an unreadable last-run time `{text}`: {e}",
                    self.path.display()
                );
                None
            }
        }
    }

    /// Records that paiosd `pid` runs from now on, and returns the previous instance's
    /// `(pid, started_at)` if that one never recorded a clean stop: it ended uncleanly
    /// (killed, crashed, power lost), whether or not it left runs behind.
    pub fn mark_running(
        &self,
        pid: u32,
        at: DateTime<Utc>,
    ) -> Result<Option<(i64, String)>, StateError> {
        let conn = self.conn()?;
        let previous = conn
            .query_row(
                "SELECT pid, started_at FROM daemon WHERE id = 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| sqlite(&self.path, e))?;
        conn.execute(
            "INSERT OR REPLACE INTO daemon (id, pid, started_at) VALUES (1, ?1, ?2)",
            params![i64::from(pid), crate::ledger::rfc3339(at)],
        )
        .map_err(|e| sqlite(&self.path, e))?;
        Ok(previous)
    }

    /// Records a clean stop: the next paiosd will not report an unclean end.
    pub fn mark_clean_stop(&self) -> Result<(), StateError> {
        self.conn()?
            .execute("DELETE FROM daemon WHERE id = 1", [])
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(())
    }

    pub fn set_task_last(&self, name: &str, at: DateTime<Utc>) -> Result<(), StateError> {
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO task_last (name, at) VALUES (?1, ?2)",
                params![name, crate::ledger::rfc3339(at)],
            )
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(())
    }
}

fn sqlite(path: &Path, source: rusqlite::Error) -> StateError {
    StateError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn from_db(path: &Path, e: DbError) -> StateError {
    match e {
        DbError::Sqlite(source) => sqlite(path, source),
        DbError::Corrupt(detail) => StateError::Corrupt {
            path: path.to_path_buf(),
            detail,
        },
        DbError::NewerSchema { found } => StateError::NewerSchema {
            path: path.to_path_buf(),
            found,
            known: STATE_SCHEMA_VERSION,
        },
    }
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StateError> {
    crate::sqlite::migrate(conn, MIGRATIONS, |_| {}).map_err(|e| from_db(path, e))
}

fn move_aside(path: &Path) -> Result<PathBuf, StateError> {
    crate::ledger::schema::move_aside(path).map_err(|e| match e {
        crate::ledger::LedgerError::MoveAside { path, source } => {
            StateError::MoveAside { path, source }
        }
        other => StateError::MoveAside {
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(service: &str, pgid: i32) -> LiveRun {
        LiveRun {
            service: service.into(),
            pid: pgid,
            pgid,
            start_time: 123_456,
            started_at: "2026-11-24T12:00:00.000Z".into(),
            argv: vec!["node".into(), "server.js".into(), "--port=3001".into()],
            stop_signal: libc::SIGTERM,
            grace_ms: 10_000,
        }
    }

    #[test]
    fn live_runs_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        {
            let db = StateDb::open(&path).unwrap();
            db.record_run(&run("kb", 100)).unwrap();
            db.record_run(&run("gateway", 200)).unwrap();
            db.record_run(&run("kb", 100)).unwrap();
        }
        let db = StateDb::open(&path).unwrap();
        let mut runs = db.live_runs().unwrap();
        runs.sort_by_key(|r| r.pgid);
        assert_eq!(runs, vec![run("kb", 100), run("gateway", 200)]);
        db.remove_run("kb", 100).unwrap();
        db.remove_run("kb", 100).unwrap();
        assert_eq!(db.live_runs().unwrap(), vec![run("gateway", 200)]);
    }

    #[test]
    fn an_instance_without_a_clean_stop_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.sqlite")).unwrap();
        assert_eq!(db.mark_running(10, Utc::now()).unwrap(), None);
        let previous = db.mark_running(11, Utc::now()).unwrap();
        assert_eq!(previous.map(|(pid, _)| pid), Some(10));
        db.mark_clean_stop().unwrap();
        assert_eq!(db.mark_running(12, Utc::now()).unwrap(), None);
    }

    #[test]
    fn task_last_round_trips_and_unknown_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.sqlite")).unwrap();
        assert_eq!(db.task_last("daily"), None);
        let at = DateTime::parse_from_rfc3339("2026-11-24T07:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc);
        db.set_task_last("daily", at).unwrap();
        assert_eq!(db.task_last("daily"), Some(at));
    }

    #[test]
    fn unusable_rows_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.sqlite")).unwrap();
        db.record_run(&run("ok", 1)).unwrap();
        db.conn()
            .unwrap()
            .execute_batch(
                "INSERT INTO live_runs VALUES ('neg', 2, 2, -5, 'x', '[]', 15, 0);
                 INSERT INTO live_runs VALUES ('badargv', 3, 3, 7, 'y', 'not json', 15, 0);
                 INSERT INTO task_last VALUES ('t', 'garbage');",
            )
            .unwrap();
        let runs = db.live_runs().unwrap();
        let names: Vec<&str> = runs.iter().map(|r| r.service.as_str()).collect();
        assert_eq!(names, vec!["ok", "badargv"]);
        assert!(runs[1].argv.is_empty());
        assert_eq!(db.task_last("t"), None);
        let too_big = LiveRun {
            start_time: u64::MAX,
            ..run("big", 4)
        };
        assert!(matches!(
            db.record_run(&too_big),
            Err(StateError::OutOfRange { .. })
        ));
    }

    #[test]
    fn corrupt_file_is_an_error_and_recreate_moves_it_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let junk: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(&path, &junk).unwrap();
        let err = StateDb::open(&path).unwrap_err();
        assert!(err.is_unusable_file(), "{err}");
        let (db, problem) = StateDb::open_or_recreate(&path);
        let problem = problem.unwrap();
        assert!(problem.contains("moved it to"), "{problem}");
        db.record_run(&run("kb", 9)).unwrap();
        assert_eq!(db.live_runs().unwrap().len(), 1);
        let moved: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("state.sqlite.corrupt-"))
            .collect();
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(std::fs::read(dir.path().join(&moved[0])).unwrap(), junk);
    }

    #[test]
    fn newer_schema_is_refused_then_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        let err = StateDb::open(&path).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("state.sqlite has schema version 7, this paiosd knows up to 2: upgrade paiosd or move the file aside"),
            "{err}"
        );
        let (db, problem) = StateDb::open_or_recreate(&path);
        assert!(problem.is_some());
        assert!(db.live_runs().unwrap().is_empty());
    }

    #[test]
    fn unwritable_place_falls_back_to_memory() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: no SQLite can open it.
        let path = dir.path().join("state.sqlite");
        std::fs::create_dir(&path).unwrap();
        let (db, problem) = StateDb::open_or_recreate(&path);
        assert!(problem.unwrap().contains("in memory"));
        db.record_run(&run("kb", 5)).unwrap();
        assert_eq!(db.live_runs().unwrap().len(), 1);
    }
}
