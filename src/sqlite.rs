//! How paiosd opens its two SQLite files, `state.sqlite` and the ledger: WAL with
//! `synchronous = NORMAL`, a busy timeout, an optional quick integrity check, and
//! migrations kept in `PRAGMA user_version`, one write transaction per step. Each file
//! wraps these errors in its own error type, which says which file failed and why.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

/// What went wrong opening or migrating a file.
#[derive(Debug)]
pub(crate) enum DbError {
    Sqlite(rusqlite::Error),
    /// `PRAGMA quick_check` found damage; its first finding.
    Corrupt(String),
    /// The file was written by a newer build, at schema version `found`.
    NewerSchema {
        found: i64,
    },
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        DbError::Sqlite(e)
    }
}

/// Opens or creates `path` read-write in WAL mode with `synchronous = NORMAL` and
/// `busy_timeout`; with `check_integrity`, runs `PRAGMA quick_check` too.
pub(crate) fn open_wal(
    path: &Path,
    busy_timeout: Duration,
    check_integrity: bool,
) -> Result<Connection, DbError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    // The first statement that reads the header: a file of random bytes fails here.
    let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    // WAL with NORMAL loses at most the last transactions on power loss, never the file.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    if check_integrity {
        let verdict: String = conn.query_row("PRAGMA quick_check(1)", [], |row| row.get(0))?;
        if verdict != "ok" {
            return Err(DbError::Corrupt(verdict));
        }
    }
    Ok(conn)
}

/// Applies the steps of `migrations` the file lacks (`migrations[i]` takes version `i`
/// to `i + 1`), each in its own transaction; `on_step(from)` after each one commits.
pub(crate) fn migrate(
    conn: &Connection,
    migrations: &[&str],
    mut on_step: impl FnMut(i64),
) -> Result<(), DbError> {
    let known = migrations.len() as i64;
    loop {
        // Read inside the write transaction, so two openers can never apply a step twice.
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > known {
            return Err(DbError::NewerSchema { found: version });
        }
        let Some(step) = usize::try_from(version)
            .ok()
            .and_then(|v| migrations.get(v))
        else {
            return Ok(());
        };
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        on_step(version);
    }
}
