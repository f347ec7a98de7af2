//! `paiosctl ledger` over a real ledger file: argument parsing, filters, newest first,
//! `show`, `--json` lines, exit codes, and reading while the writer holds a lock.

use crate::common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{CommandFactory, Parser};
use paios::ctl::ledger::{run, LedgerArgs, LedgerCommand};
use paios::ledger::{EventRecord, Ledger, Record, RunRecord};

#[derive(Parser)]
struct Ctl {
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    Ledger(LedgerArgs),
}

fn parse(args: &[&str]) -> Result<(LedgerArgs, bool), clap::Error> {
    let ctl = Ctl::try_parse_from(["paiosctl", "ledger"].iter().chain(args))?;
    let Cmd::Ledger(args) = ctl.cmd;
    Ok((args, ctl.json))
}

fn now() -> DateTime<Utc> {
    "2026-11-24T12:00:00Z".parse().unwrap()
}

fn at(minutes_ago: i64) -> String {
    paios::ledger::rfc3339(now() - chrono::Duration::minutes(minutes_ago))
}

fn run_record(service: &str, outcome: &str, minutes_ago: i64, attempt: u32) -> Record {
    let signalled = outcome == "killed";
    Record::Run(RunRecord {
        service: service.into(),
        kind: "service".into(),
        outcome: outcome.into(),
        pid: Some(1000 + attempt as i32),
        pgid: Some(1000 + attempt as i32),
        leader_start_time: Some(5),
        started_at: at(minutes_ago + 1),
        ended_at: at(minutes_ago),
        duration_ms: 60_000,
        exit_code: if signalled { None } else { Some(2) },
        signal: signalled.then(|| "SIGKILL".to_string()),
        attempt,
        delay_ms: Some(200),
        context: Some("starting\npanic: \u{1b}[31mboom\u{1b}[0m".into()),
    })
}

/// kb: crashed 10, 70, 200 min ago; gateway: exited 30 min ago, killed 5 days ago;
/// gave_up for kb 9 min ago.
fn fixture(state: &Path) {
    let settings = paios::config::Global::default().ledger;
    let ledger = Ledger::open(&state.join("ledger.sqlite"), settings);
    ledger.record(run_record("kb", "crashed", 200, 0));
    ledger.record(run_record("gateway", "killed", 5 * 24 * 60, 4));
    ledger.record(run_record("kb", "crashed", 70, 1));
    ledger.record(run_record("gateway", "exited", 30, 0));
    ledger.record(run_record("kb", "crashed", 10, 2));
    ledger.record(Record::Event(EventRecord {
        service: "kb".into(),
        kind: "service".into(),
        event: "gave_up".into(),
        detail: Some("3 crashes within 5m; retrying after 10m".into()),
        at: at(9),
    }));
    ledger.close(Duration::from_secs(10));
    assert_eq!(ledger.stats().written, 6);
}

struct Output {
    code: i32,
    out: String,
    err: String,
}

fn ledger(state: &Path, args: &[&str]) -> Output {
    let (args, json) = parse(args).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(state, &args, json, now(), &mut out, &mut err);
    Output {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn outcomes(out: &str) -> Vec<String> {
    json_lines(out)
        .iter()
        .map(|v| {
            format!(
                "{}:{}",
                v["service"].as_str().unwrap(),
                v["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn arguments_parse_with_a_name_or_show() {
    Ctl::command().debug_assert();
    let (args, _) = parse(&["kb", "--since", "2h", "--outcome", "crashed,hung"]).unwrap();
    assert_eq!(args.name.as_deref(), Some("kb"));
    assert_eq!(args.outcome, ["crashed", "hung"]);
    let (args, _) = parse(&["show", "42"]).unwrap();
    assert!(matches!(args.command, Some(LedgerCommand::Show { id: 42 })));
    assert!(parse(&["show", "x"]).is_err());
    assert!(parse(&["show", "3", "--crashes"]).is_err());
    assert!(parse(&["--limit", "-3"]).is_err());
    let (args, _) = parse(&["--", "show"]).unwrap();
    assert_eq!(args.name.as_deref(), Some("show"));
}

#[test]
fn json_lists_everything_newest_first_with_the_stable_keys() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let o = ledger(dir.path(), &["--json"]);
    assert_eq!((o.code, o.err.as_str()), (0, ""));
    assert_eq!(
        outcomes(&o.out),
        [
            "kb:gave_up",
            "kb:crashed",
            "gateway:exited",
            "kb:crashed",
            "kb:crashed",
            "gateway:killed"
        ]
    );
    let lines = json_lines(&o.out);
    let killed = &lines[5];
    for key in common::LEDGER_KEYS {
        assert!(killed.get(key).is_some(), "no {key}: {killed}");
    }
    assert!(killed["exit_code"].is_null());
    assert_eq!(killed["signal"], "SIGKILL");
    assert_eq!(killed["kind"], "service");
    assert_eq!(killed["attempt"], 4);
    assert_eq!(lines[1]["exit_code"], 2);
    assert_eq!(lines[1]["ended_at"], "2026-11-24T11:50:00.000Z");
    assert_eq!(lines[0]["context"], serde_json::Value::Null);
}

#[test]
fn filters_combine_name_since_outcome_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let list = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let o = ledger(dir.path(), &all);
        assert_eq!(o.code, 0, "{}", o.err);
        outcomes(&o.out)
    };
    assert_eq!(
        list(&["kb", "--since", "2h"]),
        ["kb:gave_up", "kb:crashed", "kb:crashed"]
    );
    assert_eq!(
        list(&["--since", "2026-11-24T11:45:00Z"]),
        ["kb:gave_up", "kb:crashed"]
    );
    assert_eq!(
        list(&["--crashes", "--since", "1d"]),
        ["kb:crashed", "kb:crashed", "kb:crashed"]
    );
    assert_eq!(
        list(&["--crashes", "--outcome", "exited", "--limit", "3"]),
        ["kb:crashed", "gateway:exited", "kb:crashed"]
    );
    assert_eq!(list(&["gateway", "--crashes"]), ["gateway:killed"]);
    assert_eq!(list(&["--outcome", "gave_up"]), ["kb:gave_up"]);
    assert!(list(&["nosuch"]).is_empty());
}

#[test]
fn humans_get_a_table_with_local_times_and_no_escapes() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let o = ledger(dir.path(), &["kb"]);
    assert_eq!(o.code, 0, "{}", o.err);
    let lines: Vec<&str> = o.out.lines().collect();
    assert_eq!(lines.len(), 5, "{}", o.out);
    for column in [
        "ID", "TIME", "SERVICE", "OUTCOME", "EXIT", "DURATION", "ATTEMPT",
    ] {
        assert!(lines[0].contains(column), "{}", lines[0]);
    }
    assert!(lines[1].contains("gave_up") && lines[1].contains("3 crashes within 5m"));
    assert!(lines[2].contains("crashed") && lines[2].contains("1m00s"));
    let local = (now() - chrono::Duration::minutes(10))
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    assert!(lines[2].contains(&local), "{} lacks {local}", lines[2]);
    assert!(
        !o.out.contains('\u{1b}'),
        "escape reached the terminal: {:?}",
        o.out
    );

    let o = ledger(dir.path(), &["--limit", "2"]);
    assert_eq!(o.out.lines().count(), 3);
    assert!(o.err.contains("newest 2"), "{}", o.err);
}

#[test]
fn show_prints_one_run_with_its_context() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let o = ledger(dir.path(), &["--json", "kb", "--limit", "1", "--crashes"]);
    let id = json_lines(&o.out)[0]["id"].as_i64().unwrap();
    let o = ledger(dir.path(), &["show", &id.to_string()]);
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(o.out.contains("crashed"));
    assert!(o.out.contains("code 2"));
    assert!(o.out.contains("2 (started after a 200ms delay)"));
    assert!(o.out.contains("  starting\n"));
    assert!(o.out.contains("panic: \\u{1b}[31mboom"), "{}", o.out);

    let o = ledger(dir.path(), &["--json", "show", &id.to_string()]);
    let lines = json_lines(&o.out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], id);

    let o = ledger(dir.path(), &["show", "999999"]);
    assert_eq!(o.code, 1);
    assert!(o.err.contains("no entry 999999"));
}

#[test]
fn bad_input_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    for args in [
        &["--since", "yesterday"][..],
        &["--since", "2x"],
        &["--outcome", "crash;drop table"],
        &["../etc"],
        &["kb", "show", "3"],
        &["--crashes", "show", "3"],
    ] {
        let o = ledger(dir.path(), args);
        assert_eq!(o.code, 2, "{args:?}: {}", o.err);
        assert!(o.err.starts_with("paiosctl ledger: "), "{}", o.err);
        assert!(o.out.is_empty());
    }
}

#[test]
fn no_ledger_yet_is_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let o = ledger(dir.path(), &[]);
    assert_eq!(o.code, 0);
    assert!(o.err.contains("no ledger yet"), "{}", o.err);
    let o = ledger(dir.path(), &["--json"]);
    assert_eq!((o.code, o.out.as_str(), o.err.as_str()), (0, "", ""));
    let o = ledger(dir.path(), &["show", "1"]);
    assert_eq!(o.code, 1);
    assert!(
        !dir.path().join("ledger.sqlite").exists(),
        "reading created the file"
    );
}

#[test]
fn a_newer_or_corrupt_file_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 5)
        .unwrap();
    let o = ledger(dir.path(), &[]);
    assert_eq!(o.code, 1);
    assert!(
        o.err.contains("has schema version 5, this paiosctl knows up to 2: upgrade paiosctl or move the file aside"),
        "{}",
        o.err
    );
    std::fs::write(
        &path,
        b"this is not sqlite at all, not even close, padding padding",
    )
    .unwrap();
    let o = ledger(dir.path(), &[]);
    assert_eq!(o.code, 1);
    assert!(o.err.contains("not a database"), "{}", o.err);
    // Reading never moves or repairs anything.
    assert!(std::fs::read(&path)
        .unwrap()
        .starts_with(b"this is not sqlite"));
}

#[test]
fn reading_works_while_a_writer_holds_a_write_transaction() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let writer = rusqlite::Connection::open(dir.path().join("ledger.sqlite")).unwrap();
    writer
        .execute_batch("BEGIN IMMEDIATE; DELETE FROM entries;")
        .unwrap();
    let o = ledger(dir.path(), &["--json"]);
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.out.lines().count(), 6);
    writer.execute_batch("ROLLBACK").unwrap();
}
