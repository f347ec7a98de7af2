//! Reading the ledger: a read-only connection, filters, one entry by id, the
//! and whether a paiosd ran here before. `--since` is read by [`crate::units::parse_since`].
//!
//! The file is opened `SQLITE_OPEN_READ_ONLY`, so `paiosctl ledger` can never change
//! it, works while paiosd is down, and (thanks to WAL) reads a consistent snapshot while
//! the writer holds a write transaction. Time parsing is pure over an injected `now`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use super::schema::{user_version, LedgerError, SCHEMA_VERSION};

/// One row of the ledger as `paiosctl ledger --json` prints it. Every field is always
/// present (null when it does not apply), so scripts can rely on the keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub id: i64,
    /// `run` or `event`.
    #[serde(rename = "type")]
    pub entry_type: String,
    pub service: String,
    /// `service`, `task` or `daemon`.
    pub kind: String,
    /// The run's outcome, or the event's name.
    pub outcome: String,
    pub pid: Option<i32>,
    pub pgid: Option<i32>,
    pub leader_start_time: Option<i64>,
    /// RFC 3339 UTC; for an event, its time.
    pub started_at: Option<String>,
    /// RFC 3339 UTC; for an event, its time.
    pub ended_at: String,
    pub duration_ms: Option<i64>,
    /// Null when the run was ended by a signal.
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub attempt: Option<i64>,
    pub delay_ms: Option<i64>,
    /// The last stderr lines of a run.
    pub context: Option<String>,
    /// What an event says.
    pub detail: Option<String>,
}

impl Entry {
    pub fn is_run(&self) -> bool {
        self.entry_type == "run"
    }
}

/// Which entries to list. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub service: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Run outcomes or event names; any of them matches.
    pub outcomes: Vec<String>,
    /// `None`: every match.
    pub limit: Option<u64>,
}

/// A read-only view of `ledger.sqlite`.
pub struct Reader {
    conn: Connection,
    path: PathBuf,
    /// A file paiosd created but never migrated holds no entries table yet.
    empty: bool,
}

impl Reader {
    /// Opens `path` read-only. A missing file is [`LedgerError::NotFound`]; a file of a
    /// schema this build does not read is refused with both versions named.
    pub fn open(path: &Path) -> Result<Reader, LedgerError> {
        let err = |e| LedgerError::sqlite(path, e);
        if !path.exists() {
            return Err(LedgerError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        // Readers never wait on WAL writers; this covers only a checkpoint or recovery.
        conn.busy_timeout(Duration::from_secs(2)).map_err(err)?;
        let version = user_version(&conn, path)?;
        if version > SCHEMA_VERSION {
            return Err(LedgerError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                known: SCHEMA_VERSION,
                program: "paiosctl",
            });
        }
        if version > 0 && version < SCHEMA_VERSION {
            return Err(LedgerError::OlderSchema {
                path: path.to_path_buf(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        Ok(Reader {
            conn,
            path: path.to_path_buf(),
            empty: version == 0,
        })
    }

    /// Matching entries, newest first.
    pub fn list(&self, filter: &Filter) -> Result<Vec<Entry>, LedgerError> {
        if self.empty {
            return Ok(Vec::new());
        }
        let mut sql = format!("SELECT {COLUMNS} FROM entries WHERE 1");
        let mut params: Vec<Value> = Vec::new();
        if let Some(service) = &filter.service {
            params.push(Value::Text(service.clone()));
            sql.push_str(&format!(" AND service = ?{}", params.len()));
        }
        if let Some(since) = filter.since {
            params.push(Value::Integer(since.timestamp_millis()));
            sql.push_str(&format!(" AND at_ms >= ?{}", params.len()));
        }
        if !filter.outcomes.is_empty() {
            let mut marks = Vec::new();
            for outcome in &filter.outcomes {
                params.push(Value::Text(outcome.clone()));
                marks.push(format!("?{}", params.len()));
            }
            sql.push_str(&format!(" AND outcome IN ({})", marks.join(", ")));
        }
        sql.push_str(" ORDER BY at_ms DESC, id DESC");
        if let Some(limit) = filter.limit {
            params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" LIMIT ?{}", params.len()));
        }
        let err = |e| LedgerError::sqlite(&self.path, e);
        let mut stmt = self.conn.prepare(&sql).map_err(err)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), entry_from_row)
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// The entry with this id, if it exists (it may have been pruned).
    pub fn get(&self, id: i64) -> Result<Option<Entry>, LedgerError> {
        if self.empty {
            return Ok(None);
        }
        let sql = format!("SELECT {COLUMNS} FROM entries WHERE id = ?1");
        self.conn
            .query_row(&sql, [id], entry_from_row)
            .optional()
            .map_err(|e| LedgerError::sqlite(&self.path, e))
    }

    /// How many rows the ledger holds.
    pub fn count(&self) -> Result<u64, LedgerError> {
        if self.empty {
            return Ok(0);
        }
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM entries", [], |row| row.get(0))
            .map_err(|e| LedgerError::sqlite(&self.path, e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

const COLUMNS: &str = "id, type, service, kind, outcome, pid, pgid, leader_start_time, \
    started_at, ended_at, duration_ms, exit_code, signal, attempt, delay_ms, context, detail";

fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        id: row.get(0)?,
        entry_type: row.get(1)?,
        service: row.get(2)?,
        kind: row.get(3)?,
        outcome: row.get(4)?,
        pid: row.get(5)?,
        pgid: row.get(6)?,
        leader_start_time: row.get(7)?,
        started_at: row.get(8)?,
        ended_at: row.get(9)?,
        duration_ms: row.get(10)?,
        exit_code: row.get(11)?,
        signal: row.get(12)?,
        attempt: row.get(13)?,
        delay_ms: row.get(14)?,
        context: row.get(15)?,
        detail: row.get(16)?,
    })
}

/// Whether a paiosd ran on the state directory of this ledger before: it holds a
/// `daemon_start`. The start-up sweep asks, before opening the ledger (which creates
/// the file), to tell a first start from records lost since the last one. A ledger
/// that exists but cannot be read counts as yes (better one needless stray search than
/// a missed one); a ledger only `paiosctl doctor --kill` created does not.
pub fn previous_paiosd_ran(ledger: &Path) -> bool {
    if !ledger.exists() {
        return false;
    }
    let Ok(reader) = Reader::open(ledger) else {
        return true;
    };
    let filter = Filter {
        service: None,
        since: None,
        outcomes: vec!["daemon_start".into()],
        limit: Some(1),
    };
    reader.list(&filter).map_or(true, |found| !found.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_previous_paiosd_is_told_by_its_daemon_start() {
        use crate::ledger::{EventRecord, Ledger, Record};
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::config::Global::default().ledger;
        let record = |path: &Path, event: &str| {
            let ledger = Ledger::open(path, settings);
            ledger.record(Record::Event(EventRecord::new(
                "kb",
                "service",
                event,
                None,
                Utc::now(),
            )));
            ledger.close(Duration::from_secs(10));
        };

        let path = dir.path().join("ledger.sqlite");
        assert!(!previous_paiosd_ran(&path), "no ledger at all");
        record(&path, "stray_killed");
        assert!(!previous_paiosd_ran(&path), "only doctor --kill wrote it");
        record(&path, "daemon_start");
        assert!(previous_paiosd_ran(&path));

        let garbage = dir.path().join("garbage.sqlite");
        std::fs::write(&garbage, b"not a database at all, not even close").unwrap();
        assert!(previous_paiosd_ran(&garbage), "unreadable counts as yes");
    }
}
