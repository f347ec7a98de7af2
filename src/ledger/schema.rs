//! The ledger's file format: the migrations from an empty file to the current schema,
//! opening for writing (moving a corrupt file aside), and the errors both sides share.
//!
//! The version lives in `PRAGMA user_version`. `MIGRATIONS[i]` takes a file from version
//! `i` to `i + 1`, each in its own transaction, so a newer paiosd opens every older
//! ledger and keeps its rows; an older paiosd refuses a newer file rather than guess.
//!
//! Version 1 kept runs and events in two tables. Version 2 keeps both in one `entries`
//! table, so that one id sequence names every row (`paiosctl ledger show ID`) and one
//! index serves "newest first" across runs and events. `at_ms` (milliseconds since the
//! epoch of `ended_at`) is what filters, ordering and retention use; the RFC 3339 text
//! columns are what people and scripts read.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use rusqlite::{Connection, ErrorCode};

use crate::sqlite::{self, DbError};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

/// Milliseconds since the epoch of an RFC 3339 text column, in SQL (`julianday` parses
/// `Z` and `+HH:MM` suffixes and exists in every SQLite, unlike `unixepoch(.., 'subsec')`).
macro_rules! epoch_ms {
    ($col:literal) => {
        concat!(
            "CAST(round((julianday(",
            $col,
            ") - 2440587.5) * 86400000.0) AS INTEGER)"
        )
    };
}

const V1: &str = "
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
";

const V2: &str = concat!(
    "
CREATE TABLE entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL CHECK (type IN ('run', 'event')),
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    pid INTEGER,
    pgid INTEGER,
    leader_start_time INTEGER,
    started_at TEXT,
    ended_at TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    duration_ms INTEGER,
    exit_code INTEGER,
    signal TEXT,
    attempt INTEGER,
    delay_ms INTEGER,
    context TEXT,
    detail TEXT
);
INSERT INTO entries (type, service, kind, outcome, pid, pgid, started_at, ended_at, at_ms,
                     duration_ms, exit_code, signal, attempt, detail)
SELECT type, service, kind, outcome, pid, pgid, started_at, ended_at, at_ms,
       duration_ms, exit_code, signal, attempt, detail
FROM (
    SELECT 'run' AS type, service, kind, outcome, pid, pgid, started_at, ended_at,
           COALESCE(",
    epoch_ms!("ended_at"),
    ", 0) AS at_ms,
           max(0, ",
    epoch_ms!("ended_at"),
    " - ",
    epoch_ms!("started_at"),
    ") AS duration_ms,
           exit_code, signal, attempt, NULL AS detail, 0 AS src, id AS src_id
    FROM runs
    UNION ALL
    SELECT 'event', service, kind, event, NULL, NULL, at, at,
           COALESCE(",
    epoch_ms!("at"),
    ", 0), NULL, NULL, NULL, NULL, detail, 1, id
    FROM events
)
ORDER BY at_ms, src, src_id;
DROP TABLE runs;
DROP TABLE events;
CREATE INDEX entries_service_at ON entries (service, at_ms);
CREATE INDEX entries_at ON entries (at_ms);
"
);

/// `MIGRATIONS[i]` takes a file from schema version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2];

/// Why the ledger could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{} has schema version {found}, this {program} knows up to {known}: upgrade {program} or move the file aside",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
        program: &'static str,
    },
    #[error(
        "{} has schema version {found}, older than this paiosctl reads ({known}): start paiosd once to upgrade it",
        path.display()
    )]
    OlderSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{}: the integrity check failed: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("{}: no ledger yet (paiosd creates it when it first runs)", path.display())]
    NotFound { path: PathBuf },
    #[error("could not move {} aside: {source}", path.display())]
    MoveAside {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LedgerError {
    pub(crate) fn sqlite(path: &Path, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: path.to_path_buf(),
            source,
        }
    }

    fn from_db(path: &Path, e: DbError) -> LedgerError {
        match e {
            DbError::Sqlite(source) => LedgerError::sqlite(path, source),
            DbError::Corrupt(detail) => LedgerError::Corrupt {
                path: path.to_path_buf(),
                detail,
            },
            DbError::NewerSchema { found } => LedgerError::NewerSchema {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
                program: "paiosd",
            },
        }
    }

    /// True when the file itself is damaged (not a database, or a page is corrupt).
    pub fn is_corrupt(&self) -> bool {
        match self {
            LedgerError::Corrupt { .. } => true,
            LedgerError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
            ),
            _ => false,
        }
    }

    /// True when waiting may cure it (another process holds a lock).
    pub fn is_busy(&self) -> bool {
        match self {
            LedgerError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

/// A corrupt ledger that was renamed so a fresh one could take its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MovedAside {
    pub to: PathBuf,
    /// What was wrong with it.
    pub reason: String,
}

/// A ledger open for writing.
pub(crate) struct Opened {
    pub conn: Connection,
    /// Rows in `entries` right after opening; the writer keeps the count from there.
    pub rows: u64,
    pub moved_aside: Option<MovedAside>,
}

/// Opens `path` for writing: creates it, switches it to WAL, migrates it to
/// [`SCHEMA_VERSION`]. A file that is not a database (or fails the integrity check when
/// `check_integrity` is set) is renamed `<name>.corrupt-<UTC time>` together with its
/// `-wal` and `-shm`, and a fresh one is created in its place.
pub(crate) fn open_writable(
    path: &Path,
    busy_timeout: Duration,
    check_integrity: bool,
) -> Result<Opened, LedgerError> {
    // Checked before SQLite sees the file: SQLite would otherwise open the `-wal` beside
    // a file it cannot read and delete it on close, losing evidence the user may want.
    let first = match header_problem(path) {
        Some(problem) => Err(LedgerError::Corrupt {
            path: path.to_path_buf(),
            detail: problem,
        }),
        None => open_and_migrate(path, busy_timeout, check_integrity),
    };
    let (conn, moved_aside) = match first {
        Ok(conn) => (conn, None),
        Err(err) if err.is_corrupt() => {
            let reason = match &err {
                LedgerError::Sqlite { source, .. } => source.to_string(),
                LedgerError::Corrupt { detail, .. } => detail.clone(),
                other => other.to_string(),
            };
            let to = move_aside(path)?;
            let conn = open_and_migrate(path, busy_timeout, false)?;
            (conn, Some(MovedAside { to, reason }))
        }
        Err(err) => return Err(err),
    };
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM entries", [], |row| row.get(0))
        .map_err(|e| LedgerError::sqlite(path, e))?;
    Ok(Opened {
        conn,
        rows: u64::try_from(rows).unwrap_or(0),
        moved_aside,
    })
}

/// `Some(why)` when `path` exists, is not empty, and does not start with SQLite's magic
/// header. An unreadable file is left for SQLite to report.
fn header_problem(path: &Path) -> Option<String> {
    use std::io::Read;
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    let mut file = std::fs::File::open(path).ok()?;
    let mut head = Vec::with_capacity(16);
    file.by_ref().take(16).read_to_end(&mut head).ok()?;
    if head.is_empty() || head == MAGIC {
        None
    } else {
        Some("file is not a database (it does not start with the SQLite header)".into())
    }
}

fn open_and_migrate(
    path: &Path,
    busy_timeout: Duration,
    check_integrity: bool,
) -> Result<Connection, LedgerError> {
    // WAL with NORMAL: the ledger is history, and the live runs that must survive a
    // power loss are in state.sqlite.
    let conn = sqlite::open_wal(path, busy_timeout, check_integrity)
        .map_err(|e| LedgerError::from_db(path, e))?;
    // A checkpointed WAL is truncated back to this size, so a storm cannot leave a huge one.
    conn.pragma_update(None, "journal_size_limit", 64_i64 << 20)
        .map_err(|e| LedgerError::sqlite(path, e))?;
    migrate(&conn, path)?;
    Ok(conn)
}

/// Reads `PRAGMA user_version`.
pub(crate) fn user_version(conn: &Connection, path: &Path) -> Result<i64, LedgerError> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| LedgerError::sqlite(path, e))
}

/// Applies the missing migrations, one transaction each.
fn migrate(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    sqlite::migrate(conn, MIGRATIONS, |version| {
        tracing::info!(
            "{}: migrated the ledger schema from version {version} to {}",
            path.display(),
            version + 1
        );
    })
    .map_err(|e| LedgerError::from_db(path, e))
}

/// Renames `path` (and its `-wal`, `-shm`) to `<path>.corrupt-<UTC time>[-N]`.
pub(crate) fn move_aside(path: &Path) -> Result<PathBuf, LedgerError> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = format!("{}.corrupt-{stamp}", path.display());
    let mut target = PathBuf::from(&base);
    let mut n = 2;
    while target.exists() {
        target = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &target).map_err(|source| LedgerError::MoveAside {
        path: path.to_path_buf(),
        source,
    })?;
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", target.display()));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(LedgerError::MoveAside { path: from, source }),
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_file_reaches_current_version_with_empty_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let opened = open_writable(&path, Duration::from_secs(1), false).unwrap();
        assert_eq!(user_version(&opened.conn, &path).unwrap(), SCHEMA_VERSION);
        assert_eq!(opened.rows, 0);
        assert!(opened.moved_aside.is_none());
    }

    #[test]
    fn v1_rows_survive_the_move_to_one_table_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO runs (service, kind, outcome, pid, pgid, started_at, ended_at, exit_code, signal, attempt)
                 VALUES ('kb', 'service', 'crashed', 10, 10, '2026-01-01T00:00:00Z', '2026-01-01T00:00:02.500Z', 1, NULL, 3)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO events (service, kind, event, detail, at) VALUES ('kb', 'service', 'gave_up', 'too many', '2026-01-01T00:00:01+00:00')",
                [],
            )
            .unwrap();
        }
        let opened = open_writable(&path, Duration::from_secs(1), false).unwrap();
        assert_eq!(opened.rows, 2);
        let rows: Vec<(String, String, i64, Option<i64>)> = opened
            .conn
            .prepare("SELECT type, outcome, at_ms, duration_ms FROM entries ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let jan1 = 1_767_225_600_000_i64;
        assert_eq!(
            rows,
            vec![
                ("event".into(), "gave_up".into(), jan1 + 1000, None),
                ("run".into(), "crashed".into(), jan1 + 2500, Some(2500)),
            ]
        );
    }

    #[test]
    fn newer_schema_is_refused_with_the_versions_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = open_writable(&path, Duration::from_secs(1), false)
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.ends_with(
                "ledger.sqlite has schema version 99, this paiosd knows up to 2: upgrade paiosd or move the file aside"
            ),
            "{text}"
        );
    }

    #[test]
    fn move_aside_never_overwrites_an_earlier_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        std::fs::write(&path, b"one").unwrap();
        std::fs::write(dir.path().join("ledger.sqlite-wal"), b"wal").unwrap();
        let first = move_aside(&path).unwrap();
        std::fs::write(&path, b"two").unwrap();
        let second = move_aside(&path).unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read(&first).unwrap(), b"one");
        assert_eq!(std::fs::read(&second).unwrap(), b"two");
        let wal = PathBuf::from(format!("{}-wal", first.display()));
        assert_eq!(std::fs::read(wal).unwrap(), b"wal");
        assert!(!path.exists());
    }
}
