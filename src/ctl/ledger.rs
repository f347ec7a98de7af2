//! `paiosctl ledger`: reads `ledger.sqlite` directly, read-only, so it works while
//! paiosd is down.
//!
//! `paiosctl ledger [NAME] [--since 2h] [--outcome crashed,hung] [--crashes] [--limit N]`
//! lists entries newest first; `paiosctl ledger show ID` prints one with its crash
//! context (`show` takes no NAME or filters: a usage error, exit 2). A service literally
//! named `show` is listed with `paiosctl ledger -- show`. `--json` prints one object per
//! line and, without `--limit`, every match (humans get the newest 50).
//! With no ledger file yet there is nothing to show, which is not a failure: a note on
//! stderr (nothing at all with `--json`) and exit 0, so scripts piping `--json` into
//! another tool see an empty list rather than an error.
//!
//! Everything printed for humans goes through [`printable`]: service output stored in
//! the ledger is untrusted and must not drive the terminal with escape sequences.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Local, Utc};

use crate::ledger::query::{Entry, Filter, Reader};
use crate::ledger::schema::LedgerError;
use crate::ledger::CRASH_OUTCOMES;
use crate::names::is_service_name;
use crate::units;

/// Entries a person sees without `--limit`.
const HUMAN_LIMIT: u64 = 50;

/// The arguments of `paiosctl ledger`.
#[derive(Debug, Clone, clap::Args)]
pub struct LedgerArgs {
    /// Only this service or task (`paiosd` for the daemon's own events).
    pub name: Option<String>,
    /// Only entries since then: `30m`, `2h`, `1d`, `1w` ago, a date `2026-11-24` (local)
    /// or a time `2026-11-24T08:00:00Z`.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only these outcomes or events, comma-separated (`crashed,hung`, `gave_up`).
    #[arg(long, value_name = "OUTCOME", value_delimiter = ',')]
    pub outcome: Vec<String>,
    /// Only crashes: crashed, hung, killed, memory, spawn_failed (adds to --outcome).
    #[arg(long)]
    pub crashes: bool,
    /// At most N entries, newest first [default: 50, or all with --json; 0: all].
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    #[command(subcommand)]
    pub command: Option<LedgerCommand>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LedgerCommand {
    /// Print one entry with its crash context (the last lines of stderr).
    Show {
        /// The entry's id, as listed.
        id: i64,
    },
}

/// Runs `paiosctl ledger`; returns the process exit code (0 done, 1 failed, 2 usage).
pub fn main(state_dir: &Path, args: &LedgerArgs, json: bool) -> i32 {
    let stdout = io::stdout();
    let stderr = io::stderr();
    run(
        state_dir,
        args,
        json,
        Utc::now(),
        &mut stdout.lock(),
        &mut stderr.lock(),
    )
}

/// [`main`] with the clock and the output streams passed in.
pub fn run(
    state_dir: &Path,
    args: &LedgerArgs,
    json: bool,
    now: DateTime<Utc>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let filter = match filter_from(args, json, now) {
        Ok(filter) => filter,
        Err(message) => {
            let _ = writeln!(err, "paiosctl ledger: {message}");
            return 2;
        }
    };
    let path = state_dir.join("ledger.sqlite");
    let reader = match Reader::open(&path) {
        Ok(reader) => reader,
        Err(LedgerError::NotFound { path }) => {
            if !json {
                let _ = writeln!(
                    err,
                    "no ledger yet at {} (paiosd writes it once it runs)",
                    path.display()
                );
            }
            return match args.command {
                Some(LedgerCommand::Show { id }) => {
                    if json {
                        let _ = writeln!(err, "paiosctl ledger: no entry {id}");
                    }
                    1
                }
                None => 0,
            };
        }
        Err(e) => {
            let _ = writeln!(err, "paiosctl ledger: {e}");
            return 1;
        }
    };
    let result = match &args.command {
        Some(LedgerCommand::Show { id }) => show(&reader, *id, json, out, err),
        None => list(&reader, &filter, json, out, err),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Ledger(e)) => {
            let _ = writeln!(err, "paiosctl ledger: {e}");
            1
        }
        // The reader went away (`paiosctl ledger | head`): nothing left to say.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(Failure::Output(e)) => {
            let _ = writeln!(err, "paiosctl ledger: cannot write the output: {e}");
            1
        }
    }
}

enum Failure {
    Ledger(LedgerError),
    Output(io::Error),
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Self {
        Failure::Ledger(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

fn filter_from(args: &LedgerArgs, json: bool, now: DateTime<Utc>) -> Result<Filter, String> {
    if args.command.is_some()
        && (args.name.is_some()
            || args.since.is_some()
            || !args.outcome.is_empty()
            || args.crashes
            || args.limit.is_some())
    {
        return Err("`show ID` takes no NAME or filters: `paiosctl ledger show ID`".into());
    }
    if let Some(name) = &args.name {
        if !is_service_name(name) {
            return Err(format!(
                "`{}` is not a service name (letters, digits, `-` and `_`)",
                printable(name)
            ));
        }
    }
    let since = match &args.since {
        Some(text) => Some(units::parse_since(text, now).map_err(|e| format!("--since {e}"))?),
        None => None,
    };
    let mut outcomes = Vec::new();
    for outcome in &args.outcome {
        let outcome = outcome.trim();
        if outcome.is_empty() {
            continue;
        }
        // Outcomes are words of the same alphabet as names (`gave_up`, `spawn_failed`).
        if !is_service_name(outcome) {
            return Err(format!(
                "--outcome: `{}` is not an outcome (e.g. crashed, hung, killed, gave_up)",
                printable(outcome)
            ));
        }
        outcomes.push(outcome.to_string());
    }
    if args.crashes {
        outcomes.extend(CRASH_OUTCOMES.iter().map(|s| s.to_string()));
    }
    outcomes.sort();
    outcomes.dedup();
    let limit = match args.limit {
        Some(0) => None,
        Some(n) => Some(n),
        None if json => None,
        None => Some(HUMAN_LIMIT),
    };
    Ok(Filter {
        service: args.name.clone(),
        since,
        outcomes,
        limit,
    })
}

fn list(
    reader: &Reader,
    filter: &Filter,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, Failure> {
    let entries = reader.list(filter)?;
    if json {
        for entry in &entries {
            writeln!(out, "{}", to_json(entry))?;
        }
        return Ok(0);
    }
    if entries.is_empty() {
        writeln!(err, "no entries match")?;
        return Ok(0);
    }
    let header = [
        "ID", "TIME", "SERVICE", "OUTCOME", "EXIT", "DURATION", "ATTEMPT", "DETAIL",
    ];
    let rows: Vec<[String; 8]> = entries.iter().map(table_row).collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    write_row(out, &header.map(String::from), &widths)?;
    for row in &rows {
        write_row(out, row, &widths)?;
    }
    if filter.limit == Some(entries.len() as u64) {
        writeln!(
            err,
            "(the newest {}; --limit N or --since for more)",
            entries.len()
        )?;
    }
    Ok(0)
}

fn write_row(out: &mut dyn Write, cells: &[String; 8], widths: &[usize; 8]) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths.iter()).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<width$}  "));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

fn table_row(entry: &Entry) -> [String; 8] {
    let dash = || "-".to_string();
    let detail = if entry.is_run() {
        entry
            .context
            .as_deref()
            .and_then(|c| c.lines().rev().find(|l| !l.trim().is_empty()))
    } else {
        entry.detail.as_deref().and_then(|d| d.lines().next())
    };
    [
        entry.id.to_string(),
        local_time(&entry.ended_at),
        printable(&entry.service),
        printable(&entry.outcome),
        exit_text(entry).unwrap_or_else(dash),
        entry.duration_ms.map(duration_text).unwrap_or_else(dash),
        entry.attempt.map(|a| a.to_string()).unwrap_or_else(dash),
        detail
            .map(|d| shorten(&printable(d), 60))
            .unwrap_or_default(),
    ]
}

fn exit_text(entry: &Entry) -> Option<String> {
    match (&entry.signal, entry.exit_code) {
        (Some(signal), _) => Some(printable(signal)),
        (None, Some(code)) => Some(code.to_string()),
        (None, None) => None,
    }
}

fn show(
    reader: &Reader,
    id: i64,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, Failure> {
    let Some(entry) = reader.get(id)? else {
        writeln!(
            err,
            "paiosctl ledger: no entry {id} (it may have been pruned); `paiosctl ledger` lists the ids"
        )?;
        return Ok(1);
    };
    if json {
        writeln!(out, "{}", to_json(&entry))?;
        return Ok(0);
    }
    let mut field = |name: &str, value: String| writeln!(out, "{name:<10} {value}");
    field(
        if entry.is_run() { "run" } else { "event" },
        entry.id.to_string(),
    )?;
    field(
        "service",
        format!("{} ({})", printable(&entry.service), printable(&entry.kind)),
    )?;
    field(
        if entry.is_run() { "outcome" } else { "event" },
        printable(&entry.outcome),
    )?;
    if entry.is_run() {
        let id = |v: Option<i32>| v.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        field(
            "pid/pgid",
            format!("{} / {}", id(entry.pid), id(entry.pgid)),
        )?;
        if let Some(started) = &entry.started_at {
            field("started", local_time(started))?;
        }
        field("ended", local_time(&entry.ended_at))?;
        if let Some(ms) = entry.duration_ms {
            field("duration", duration_text(ms))?;
        }
        let exit = match (&entry.signal, entry.exit_code) {
            (Some(signal), _) => format!("signal {}", printable(signal)),
            (None, Some(code)) => format!("code {code}"),
            (None, None) => "-".into(),
        };
        field("exit", exit)?;
        let attempt = entry.attempt.unwrap_or(0);
        field(
            "attempt",
            match entry.delay_ms {
                Some(delay) => {
                    format!("{attempt} (started after a {} delay)", duration_text(delay))
                }
                None => attempt.to_string(),
            },
        )?;
        match &entry.context {
            Some(context) if !context.is_empty() => {
                writeln!(out, "context:")?;
                for line in context.lines() {
                    writeln!(out, "  {}", printable(line))?;
                }
            }
            _ => field("context", "-".into())?,
        }
    } else {
        field("at", local_time(&entry.ended_at))?;
        if let Some(detail) = &entry.detail {
            writeln!(out, "detail:")?;
            for line in detail.lines() {
                writeln!(out, "  {}", printable(line))?;
            }
        }
    }
    Ok(0)
}

fn to_json(entry: &Entry) -> String {
    // Entry holds only strings and numbers, which always serialise.
    serde_json::to_string(entry).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// A stored RFC 3339 time in local time; text that is not a time is shown as it is.
fn local_time(text: &str) -> String {
    match DateTime::parse_from_rfc3339(text) {
        Ok(at) => at
            .with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => printable(text),
    }
}

/// A stored duration in milliseconds as a column cell (`850ms`, `12.3s`, `2h05m`); `-`
/// for a negative one, which only a damaged row can hold.
fn duration_text(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => units::format_duration_column(Duration::from_millis(ms)),
        Err(_) => "-".into(),
    }
}

/// `s` with control characters (terminal escapes, carriage returns) shown as `\u{..}`
/// escapes instead of acted on.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration_text(850), "850ms");
        assert_eq!(duration_text(12_345), "12.3s");
        assert_eq!(duration_text(192_000), "3m12s");
        assert_eq!(duration_text(7_500_000), "2h05m");
        assert_eq!(duration_text(97_200_000), "1d03h");
        assert_eq!(duration_text(-1), "-");
    }

    #[test]
    fn escapes_cannot_reach_the_terminal() {
        assert_eq!(printable("ok\x1b[2Jgone\r"), "ok\\u{1b}[2Jgone\\r");
        assert_eq!(printable("tab\tkept"), "tab\tkept");
    }
}
