//! Human output for `paiosctl`: the status table, last exits, next runs and what each
//! operation did (durations and sizes are written by [`crate::units`]). Pure
//! functions over the answers and an injected `now`, so the tests are exact; colour is
//! decided by the caller (a TTY and no `NO_COLOR`).

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Local, Utc};

use crate::control::protocol::{LastExit, OpResult, ReloadReport, RunResult, ServiceStatus};
use crate::units;

/// ANSI colour for a state word, when colour is on.
fn state_colour(state: &str) -> Option<&'static str> {
    match state {
        "running" => Some("\x1b[32m"),
        "starting" | "backoff" | "stopping" | "waiting" => Some("\x1b[33m"),
        "failed" | "hung" => Some("\x1b[31m"),
        _ => None,
    }
}

/// `3d4h`, `5m12s`, `42s`: the two largest units, as people read uptimes.
fn duration(secs: u64) -> String {
    units::format_duration_rounded(Duration::from_secs(secs))
}

/// `code 1, 2m ago` / `SIGKILL, 5s ago`.
pub fn last_exit(exit: &LastExit, now: DateTime<Utc>) -> String {
    let how = match (&exit.signal, exit.code) {
        (Some(signal), _) => signal.clone(),
        (None, Some(code)) => format!("code {code}"),
        (None, None) => exit.outcome.clone().unwrap_or_else(|| "exited".into()),
    };
    match DateTime::parse_from_rfc3339(&exit.at) {
        Ok(at) => {
            let ago = (now - at.with_timezone(&Utc)).num_seconds().max(0);
            format!("{how}, {} ago", duration(ago.unsigned_abs()))
        }
        Err(_) => format!("{how}, at {}", exit.at),
    }
}

/// `in 5h2m (07:00)` in local time, or the raw text if it is not RFC 3339.
pub fn next_run(at: &str, now: DateTime<Utc>) -> String {
    match DateTime::parse_from_rfc3339(at) {
        Ok(at) => {
            let local = at.with_timezone(&Local);
            let secs = (at.with_timezone(&Utc) - now).num_seconds();
            let clock = if secs < 86_400 {
                local.format("%H:%M").to_string()
            } else {
                local.format("%Y-%m-%d %H:%M").to_string()
            };
            if secs <= 0 {
                format!("now ({clock})")
            } else {
                format!("in {} ({clock})", duration(secs.unsigned_abs()))
            }
        }
        Err(_) => at.to_string(),
    }
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The DETAIL cell: the state's explanation and any log lines dropped.
fn detail(s: &ServiceStatus) -> Option<String> {
    let dropped = (s.log_dropped > 0).then(|| match s.log_dropped {
        1 => "1 log line dropped".to_string(),
        n => format!("{n} log lines dropped"),
    });
    let parts: Vec<String> = [s.detail.clone(), s.mcp.as_ref().map(mcp_detail), dropped]
        .into_iter()
        .flatten()
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `mcp stdio per-client, 2 clients: 812 claude (run 901), 840 codex (run 944)`.
fn mcp_detail(m: &crate::control::protocol::McpStatus) -> String {
    let count = match m.clients.len() {
        1 => "1 client".to_string(),
        n => format!("{n} clients"),
    };
    let mut out = format!("mcp {} {}, {count}", m.transport, m.share);
    let clients: Vec<String> = m
        .clients
        .iter()
        .map(|c| {
            let mut one = c.pid.to_string();
            if let Some(command) = &c.command {
                one.push_str(&format!(" {command}"));
            }
            if let Some(run) = c.run_pid {
                one.push_str(&format!(" (run {run})"));
            }
            one
        })
        .collect();
    if !clients.is_empty() {
        out.push_str(&format!(": {}", clients.join(", ")));
    }
    out
}

/// The `paiosctl status` table. The NEXT RUN column appears when a task is listed and
/// DETAIL when any row has one.
pub fn status_table(services: &[ServiceStatus], now: DateTime<Utc>, colour: bool) -> String {
    if services.is_empty() {
        return "no services configured\n".into();
    }
    let with_next = services.iter().any(|s| s.kind == "task");
    let with_detail = services.iter().any(|s| detail(s).is_some());
    let mut header = vec![
        "NAME",
        "KIND",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS(24h)",
        "LAST EXIT",
        "HEALTH",
        "RSS",
    ];
    if with_next {
        header.push("NEXT RUN");
    }
    if with_detail {
        header.push("DETAIL");
    }
    let state_column = 2;
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let state = if s.enabled {
                s.state.clone()
            } else {
                format!("{} (disabled)", s.state)
            };
            let mut row = vec![
                s.name.clone(),
                s.kind.clone(),
                state,
                opt(s.pid),
                opt(s.uptime_s.map(duration)),
                s.restarts_24h.to_string(),
                opt(s.last_exit.as_ref().map(|e| last_exit(e, now))),
                opt(s.health.clone()),
                opt(s.rss_bytes.map(units::format_size_rounded)),
            ];
            if with_next {
                row.push(opt(s.next_run.as_deref().map(|at| next_run(at, now))));
            }
            if with_detail {
                row.push(detail(s).unwrap_or_default());
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    push_row(&mut out, &header, &widths, None);
    for (row, service) in rows.iter().zip(services) {
        let paint = if colour {
            state_colour(&service.state).map(|c| (state_column, c))
        } else {
            None
        };
        push_row(&mut out, row, &widths, paint);
    }
    out
}

fn push_row(out: &mut String, row: &[String], widths: &[usize], paint: Option<(usize, &str)>) {
    let last = row.len().saturating_sub(1);
    let mut line = String::new();
    for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
        // Pad before colouring so escape codes do not count as width.
        let padded = if i == last {
            cell.clone()
        } else {
            format!("{cell:<width$}  ")
        };
        match paint {
            Some((column, code)) if column == i => {
                let _ = write!(line, "{code}{}\x1b[0m{}", cell, &padded[cell.len()..]);
            }
            _ => line.push_str(&padded),
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// One line per service of a start/stop/restart.
pub fn ops(results: &[OpResult]) -> String {
    let mut out = String::new();
    for r in results {
        let mark = if r.ok { "ok" } else { "FAILED" };
        let pid = r.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        let message = if r.message.is_empty() {
            String::new()
        } else {
            format!(": {}", r.message)
        };
        let _ = writeln!(out, "{}: {mark}, {}{pid}{message}", r.name, r.state);
    }
    if out.is_empty() {
        out.push_str("nothing to do\n");
    }
    out
}

/// What a reload changed.
pub fn reload(report: &ReloadReport) -> String {
    let mut out = String::new();
    for (label, names) in [
        ("added", &report.added),
        ("removed", &report.removed),
        ("restarted", &report.restarted),
        ("unchanged", &report.unchanged),
    ] {
        if !names.is_empty() {
            let _ = writeln!(out, "{label}: {}", names.join(", "));
        }
    }
    if out.is_empty() {
        out.push_str("reloaded: no services configured\n");
    }
    out
}

/// Whether a task run counts as a success for the exit code: started (`--no-wait`)
/// or finished with code 0 and no signal.
pub fn run_succeeded(result: &RunResult) -> bool {
    result.outcome == "started" || (result.exit_code == Some(0) && result.signal.is_none())
}

pub fn run(result: &RunResult) -> String {
    let mut out = format!("{}: {}", result.name, result.outcome);
    if let Some(pid) = result.pid {
        let _ = write!(out, " (pid {pid})");
    }
    match (&result.signal, result.exit_code) {
        (Some(signal), _) => {
            let _ = write!(out, ", killed by {signal}");
        }
        (None, Some(code)) => {
            let _ = write!(out, ", exit code {code}");
        }
        (None, None) => {}
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-02T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn service(name: &str, state: &str) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            kind: "service".into(),
            state: state.into(),
            pid: None,
            pgid: None,
            uptime_s: None,
            restarts_24h: 0,
            last_exit: None,
            health: None,
            rss_bytes: None,
            next_run: None,
            detail: None,
            enabled: true,
            log_dropped: 0,
            mcp: None,
        }
    }

    #[test]
    fn last_exit_says_how_and_when() {
        let code = LastExit {
            code: Some(1),
            signal: None,
            at: "2026-01-02T11:58:00Z".into(),
            outcome: None,
        };
        assert_eq!(last_exit(&code, now()), "code 1, 2m ago");
        let killed = LastExit {
            code: None,
            signal: Some("SIGKILL".into()),
            at: "2026-01-02T11:59:55+00:00".into(),
            outcome: None,
        };
        assert_eq!(last_exit(&killed, now()), "SIGKILL, 5s ago");
        let odd = LastExit {
            code: Some(0),
            signal: None,
            at: "yesterday".into(),
            outcome: None,
        };
        assert_eq!(last_exit(&odd, now()), "code 0, at yesterday");
    }

    #[test]
    fn next_run_counts_down() {
        assert!(next_run("2026-01-02T17:00:00Z", now()).starts_with("in 5h ("));
        assert!(next_run("2026-01-02T11:00:00Z", now()).starts_with("now ("));
        assert_eq!(next_run("soon", now()), "soon");
    }

    #[test]
    fn dropped_log_lines_show_in_detail() {
        let mut a = service("a", "running");
        a.log_dropped = 1234;
        let mut b = service("b", "backoff");
        b.detail = Some("until 12:00:01".into());
        b.log_dropped = 1;
        let table = status_table(&[a, b, service("c", "running")], now(), false);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].ends_with("DETAIL"), "{table}");
        assert!(lines[1].ends_with("1234 log lines dropped"), "{table}");
        assert!(
            lines[2].ends_with("until 12:00:01; 1 log line dropped"),
            "{table}"
        );
        assert!(!lines[3].contains("dropped"), "{table}");
        let plain = status_table(&[service("c", "running")], now(), false);
        assert!(!plain.contains("DETAIL"), "{plain}");
        // An older paiosd without the field still decodes.
        let mut v = serde_json::to_value(service("d", "running")).expect("json");
        v.as_object_mut().expect("object").remove("log_dropped");
        let row: ServiceStatus = serde_json::from_value(v).expect("decodes");
        assert_eq!(row.log_dropped, 0);
    }

    #[test]
    fn table_aligns_columns_and_adds_task_and_detail_columns() {
        let mut kb = service("kb", "running");
        kb.pid = Some(4242);
        kb.uptime_s = Some(312);
        kb.rss_bytes = Some(12_897_485);
        kb.health = Some("healthy".into());
        let mut gw = service("gateway-long-name", "backoff");
        gw.restarts_24h = 3;
        gw.detail = Some("until 12:00:01".into());
        gw.last_exit = Some(LastExit {
            code: Some(1),
            signal: None,
            at: "2026-01-02T11:58:00Z".into(),
            outcome: None,
        });
        let table = status_table(&[kb.clone(), gw.clone()], now(), false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("NAME "), "{table}");
        assert!(lines[0].ends_with("DETAIL"), "{table}");
        assert!(!lines[0].contains("NEXT RUN"), "{table}");
        let state_at = lines[0].find("STATE").expect("STATE");
        assert_eq!(&lines[1][state_at..state_at + 7], "running");
        assert_eq!(&lines[2][state_at..state_at + 7], "backoff");
        assert!(lines[1].contains("5m12s") && lines[1].contains("12.3 MiB"));
        assert!(lines[2].contains("code 1, 2m ago") && lines[2].ends_with("until 12:00:01"));
        assert!(!table.contains('\x1b'));

        let mut task = service("daily", "idle");
        task.kind = "task".into();
        task.next_run = Some("2026-01-02T17:00:00Z".into());
        let table = status_table(&[kb, task], now(), true);
        assert!(table
            .lines()
            .next()
            .is_some_and(|h| h.ends_with("NEXT RUN")));
        assert!(table.contains("\x1b[32mrunning\x1b[0m"), "{table}");
        assert!(table.contains("in 5h ("), "{table}");
    }

    #[test]
    fn colour_does_not_shift_columns() {
        let rows = [service("a", "failed"), service("b", "stopped")];
        let plain = status_table(&rows, now(), false);
        let coloured = status_table(&rows, now(), true);
        assert_eq!(
            coloured.replace("\x1b[31m", "").replace("\x1b[0m", ""),
            plain
        );
    }

    #[test]
    fn ops_reload_and_run_read_plainly() {
        let text = ops(&[
            OpResult {
                name: "kb".into(),
                ok: true,
                state: "running".into(),
                pid: Some(9),
                message: "restarted".into(),
            },
            OpResult {
                name: "gw".into(),
                ok: false,
                state: "failed".into(),
                pid: None,
                message: "gave up after 10 crashes".into(),
            },
        ]);
        assert_eq!(
            text,
            "kb: ok, running (pid 9): restarted\ngw: FAILED, failed: gave up after 10 crashes\n"
        );
        let report = ReloadReport {
            added: vec!["a".into()],
            restarted: vec!["b".into(), "c".into()],
            ..ReloadReport::default()
        };
        assert_eq!(reload(&report), "added: a\nrestarted: b, c\n");
        let done = RunResult {
            name: "daily".into(),
            outcome: "exited".into(),
            exit_code: Some(0),
            signal: None,
            pid: Some(5),
        };
        assert!(run_succeeded(&done));
        assert_eq!(run(&done), "daily: exited (pid 5), exit code 0\n");
        let killed = RunResult {
            outcome: "timeout".into(),
            exit_code: None,
            signal: Some("SIGKILL".into()),
            ..done
        };
        assert!(!run_succeeded(&killed));
    }
}
