//! The crash ledger end to end (issue 5), through the real `paiosd` and `paiosctl` with
//! real processes: one row per run with its exit code, attempt, backoff delay and last
//! stderr lines; every outcome word from a process that really ended that way; storm,
//! give-up and task-failure alerts through a real alert command, once per window, with
//! failing and hanging commands leaving restart timing alone; a locked, read-only or
//! corrupt ledger never disturbing supervision, with the waiting records reported by
//! `paiosctl` and written once the database accepts them; and `paiosctl ledger` reading
//! the file while paiosd is down.
//!
//! `hung` and `memory` are not here: the supervisor does not yet end runs for failed
//! health probes or memory limits, so no process can produce those outcomes.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use common::daemon::{text, Daemon};
use common::{fixture_path, needs, toml_str, wait_until, TestDirs};
use serde_json::Value;

// ----- helpers ------------------------------------------------------------------------

/// `command = [fixture, args...]`.
fn fixture(args: &[&str]) -> String {
    let mut argv = vec![toml_str(&fixture_path().display().to_string())];
    argv.extend(args.iter().map(|a| toml_str(a)));
    format!("command = [{}]\n", argv.join(", "))
}

/// `command = ["/bin/sh", "-c", script]`.
fn shell(script: &str) -> String {
    format!("command = [\"/bin/sh\", \"-c\", {}]\n", toml_str(script))
}

/// A restart section: fixed backoff of `ms` (no jitter) and no give-up in sight.
fn fixed_backoff(policy: &str, ms: u64) -> String {
    format!(
        "[restart]\npolicy = \"{policy}\"\nbackoff = {{ initial = \"{ms}ms\", max = \"{ms}ms\", factor = 1.0, jitter = 0.0 }}\nlimit = {{ burst = 100000, window = \"1m\", cooldown = \"1s\" }}\n"
    )
}

fn fixture_env(log: &Path, pids: &Path) -> String {
    format!(
        "env = {{ FIXTURE_LOG = {}, FIXTURE_PIDS = {} }}\n",
        toml_str(&log.display().to_string()),
        toml_str(&pids.display().to_string())
    )
}

/// `paiosctl --json ledger ARGS`, one value per line; panics unless it exits 0.
fn ledger(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json", "ledger"];
    all.extend_from_slice(args);
    let out = d.ctl(&all);
    assert_eq!(
        out.status.code(),
        Some(0),
        "paiosctl {all:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The run rows of `service`, oldest first.
fn runs_of(entries: &[Value], service: &str) -> Vec<Value> {
    let mut runs: Vec<Value> = entries
        .iter()
        .filter(|e| e["type"] == "run" && e["service"] == service)
        .cloned()
        .collect();
    runs.sort_by_key(|r| {
        (
            r["started_at"].as_str().unwrap_or("").to_string(),
            r["id"].as_i64(),
        )
    });
    runs
}

/// The event rows named `event` (of `service`), oldest first.
fn events_of(entries: &[Value], service: &str, event: &str) -> Vec<Value> {
    let mut events: Vec<Value> = entries
        .iter()
        .filter(|e| e["type"] == "event" && e["service"] == service && e["outcome"] == event)
        .cloned()
        .collect();
    events.sort_by_key(|e| e["id"].as_i64());
    events
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {v}"))
}

/// The `ledger` object of `paiosctl --json ping`.
fn stats(d: &Daemon) -> Value {
    let out = d.ctl(&["--json", "ping"]);
    assert_eq!(out.status.code(), Some(0), "ping: {}", text(&out.stdout));
    let pong: Value = serde_json::from_slice(&out.stdout).expect("ping JSON");
    pong["ledger"].clone()
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// `(what, pid, unix ns)` lines the fixture appends to `FIXTURE_LOG`.
fn fixture_log(path: &Path) -> Vec<(String, i32, u128)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let what = parts.next()?.to_string();
            let pid = parts.next()?.parse().ok()?;
            let ns = parts.next()?.parse().ok()?;
            Some((what, pid, ns))
        })
        .collect()
}

fn started_pids(log: &Path) -> Vec<i32> {
    fixture_log(log)
        .into_iter()
        .filter(|(what, _, _)| what == "start")
        .map(|(_, pid, _)| pid)
        .collect()
}

/// For each restart: when it started (unix ns) and how long after the previous run's
/// exit, in ms.
fn restart_gaps(log: &Path) -> Vec<(u128, f64)> {
    let mut gaps = Vec::new();
    let mut exit_at = None;
    for (what, _, ns) in fixture_log(log) {
        match what.as_str() {
            "exit" => exit_at = Some(ns),
            "start" => {
                if let Some(e) = exit_at.take() {
                    gaps.push((ns, (ns.saturating_sub(e)) as f64 / 1e6));
                }
            }
            _ => {}
        }
    }
    gaps
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Every restart came after the backoff and within `slack` of it.
fn assert_gaps_within(gaps: &[(u128, f64)], backoff_ms: f64, slack_ms: f64) {
    for (at, gap) in gaps {
        assert!(
            *gap >= backoff_ms - 1.0 && *gap <= backoff_ms + slack_ms,
            "a restart (at {at}) came {gap:.1} ms after the exit; the backoff is {backoff_ms} ms: {gaps:?}"
        );
    }
}

/// Polls `paiosctl ping` until `ok` holds for the ledger's counters.
fn wait_stats(d: &Daemon, what: &str, limit: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let found = wait_until(limit, || {
        last = stats(d);
        ok(&last)
    });
    assert!(found, "{what}: ledger stats {last}");
    last
}

/// Stops `name` and waits until the ledger holds one run row for every start in `log`.
fn stop_and_collect(d: &Daemon, name: &str, log: &Path) -> (Vec<i32>, Vec<Value>) {
    let out = d.ctl(&["stop", name]);
    assert_eq!(out.status.code(), Some(0), "stop: {}", text(&out.stderr));
    let mut runs = Vec::new();
    let mut pids = Vec::new();
    let complete = wait_until(Duration::from_secs(15), || {
        pids = started_pids(log);
        runs = runs_of(&ledger(d, &[]), name);
        !pids.is_empty() && runs.len() >= pids.len()
    });
    assert!(
        complete,
        "{} starts, {} run rows: {runs:?}",
        pids.len(),
        runs.len()
    );
    (pids, runs)
}

/// Exactly one run row per started PID, and none for anything else.
fn assert_one_row_per_run(pids: &[i32], runs: &[Value]) {
    let rows: Vec<i64> = runs
        .iter()
        .map(|r| r["pid"].as_i64().unwrap_or(-1))
        .collect();
    let mut sorted_rows = rows.clone();
    sorted_rows.sort_unstable();
    let mut sorted_pids: Vec<i64> = pids.iter().map(|&p| i64::from(p)).collect();
    sorted_pids.sort_unstable();
    assert_eq!(sorted_rows, sorted_pids, "run rows vs started PIDs");
}

// ----- one row per run ----------------------------------------------------------------

#[test]
fn a_crasher_leaves_one_row_per_run_with_code_attempt_delay_and_stderr() {
    let dirs = TestDirs::new();
    let log = dirs.file("crash.log");
    let pids = dirs.file("pids");
    dirs.write_global("ledger = { context_lines = 2 }\n");
    // Three stderr lines per run; the ledger keeps the configured last two.
    let script = format!(
        "echo 'an early line' >&2; echo 'the line before' >&2; exec '{}' crasher 3",
        fixture_path().display()
    );
    dirs.write_service(
        "crasher",
        &format!(
            "{}{}[restart]\npolicy = \"on-failure\"\nbackoff = {{ initial = \"100ms\", max = \"400ms\", factor = 2.0, jitter = 0.0 }}\nlimit = {{ burst = 5, window = \"1m\", cooldown = \"1h\" }}\n",
            shell(&script),
            fixture_env(&log, &pids)
        ),
    );
    let d = Daemon::start_in(dirs);
    // Five restarts are allowed, the sixth exit gives up: exactly six runs.
    d.wait_state("crasher", "failed", Duration::from_secs(20));
    d.pids_from(&pids);
    let started = started_pids(&log);
    assert_eq!(started.len(), 6, "{started:?}");
    let mut runs = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            runs = runs_of(&ledger(&d, &[]), "crasher");
            runs.len() >= 6
        }),
        "{runs:?}"
    );
    assert_eq!(runs.len(), 6, "one row per run: {runs:#?}");
    assert_one_row_per_run(&started, &runs);

    let delays = [None, Some(100), Some(200), Some(400), Some(400), Some(400)];
    let gaps = restart_gaps(&log);
    assert_eq!(gaps.len(), 5, "{gaps:?}");
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run["pid"], started[i], "run {i} in start order: {run}");
        assert_eq!(run["pgid"], run["pid"], "{run}");
        assert_eq!(run["kind"], "service");
        assert_eq!(run["outcome"], "crashed", "{run}");
        assert_eq!(run["exit_code"], 3, "{run}");
        assert_eq!(run["signal"], Value::Null, "{run}");
        assert_eq!(run["attempt"], i, "{run}");
        assert_eq!(run["delay_ms"].as_u64(), delays[i], "{run}");
        assert_eq!(run["context"], "the line before\ncrash 3", "{run}");
        assert!(run["leader_start_time"].as_u64().is_some(), "{run}");
        assert!(time(&run["started_at"]) <= time(&run["ended_at"]), "{run}");
        if let Some(delay) = delays[i] {
            // The delay recorded is the one the restart actually waited.
            let gap = gaps[i - 1].1;
            assert!(
                gap >= delay as f64 - 1.0 && gap < delay as f64 + 1000.0,
                "restart {i} waited {gap:.1} ms for a {delay} ms backoff"
            );
        }
    }
    let entries = ledger(&d, &[]);
    let storms = events_of(&entries, "crasher", "storm");
    assert_eq!(
        storms.len(),
        1,
        "3 crashes in 5 min is one storm: {storms:?}"
    );
    let gave_up = events_of(&entries, "crasher", "gave_up");
    assert_eq!(gave_up.len(), 1, "{gave_up:?}");
    assert!(
        gave_up[0]["detail"]
            .as_str()
            .is_some_and(|s| s.contains("more than 5 restarts")),
        "{gave_up:?}"
    );

    // `ledger show` prints one run with its context lines.
    let id = runs[0]["id"].to_string();
    let out = d.ctl(&["ledger", "show", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("the line before") && shown.contains("crash 3"),
        "{shown}"
    );
    assert!(!shown.contains("an early line"), "{shown}");
}

// ----- every outcome --------------------------------------------------------------------

#[test]
fn every_outcome_comes_from_a_real_process_and_reads_back_while_paiosd_is_down() {
    let dirs = TestDirs::new();
    let log = dirs.file("log");
    let pids = dirs.file("pids");
    let env = fixture_env(&log, &pids);
    let never = "[restart]\npolicy = \"never\"\n";
    dirs.write_service(
        "clean",
        &format!(
            "{}{env}[restart]\npolicy = \"on-failure\"\n",
            fixture(&["exit", "0"])
        ),
    );
    dirs.write_service(
        "code",
        &format!("{}{env}{never}", fixture(&["crasher", "5"])),
    );
    dirs.write_service(
        "signalled",
        &format!("{}{never}", shell("echo 'dying now' >&2; kill -USR1 $$")),
    );
    dirs.write_service("sleepy", &format!("{}{env}", fixture(&["sleeper"])));
    dirs.write_service(
        "stubborn",
        &format!("{}{env}[stop]\ngrace = \"300ms\"\n", fixture(&["stubborn"])),
    );
    // Still running at shutdown: its run ends (killed after grace) as paiosd stops, and
    // is recorded, stderr tail and all, before the ledger closes, even though a process
    // that left its group keeps the stderr pipe open (so the tail waits its full bound).
    let stand_pids = dirs.file("stand-pids");
    dirs.write_service(
        "last-stand",
        &format!(
            "{}env = {{ FIXTURE_PIDS = {} }}\n[stop]\ngrace = \"300ms\"\n",
            shell(&format!(
                "trap '' TERM; echo 'last words' >&2; '{}' setsid & wait",
                fixture_path().display()
            )),
            toml_str(&stand_pids.display().to_string())
        ),
    );
    dirs.write_service(
        "slow-task",
        &format!(
            "{}{env}schedule = \"0 0 1 1 *\"\ntimeout = \"300ms\"\n",
            fixture(&["sleeper"])
        ),
    );
    dirs.write_service(
        "missing",
        &format!("command = [\"/nonexistent/paios-no-such-program\"]\n{never}"),
    );
    let mut d = Daemon::start_in(dirs);
    d.wait_state("sleepy", "running", Duration::from_secs(10));
    d.wait_state("stubborn", "running", Duration::from_secs(10));
    d.wait_state("last-stand", "running", Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(10), || common::read_pids(&stand_pids)
            .len()
            >= 2),
        "the setsid child never started"
    );
    d.pids_from(&stand_pids);
    d.pids_from(&pids);
    let out = d.ctl(&["stop", "sleepy", "stubborn"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = d.ctl(&["run", "slow-task"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a timed-out task failed: {}",
        text(&out.stdout)
    );
    d.pids_from(&pids);
    // Wait for the runs that end by themselves before shutting down.
    let ended = ["clean", "code", "signalled", "missing"];
    assert!(
        wait_until(Duration::from_secs(10), || {
            let entries = ledger(&d, &[]);
            ended.iter().all(|name| !runs_of(&entries, name).is_empty())
        }),
        "{:#?}",
        ledger(&d, &[])
    );
    let out = d.ctl(&["shutdown"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));

    // From here on paiosd is down: paiosctl reads the file itself.
    assert_eq!(d.ctl(&["ping"]).status.code(), Some(3));
    let entries = ledger(&d, &[]);
    let keys = common::LEDGER_KEYS;
    for entry in &entries {
        for key in keys {
            assert!(entry.get(key).is_some(), "no `{key}` in {entry}");
        }
        time(&entry["ended_at"]);
    }
    let one = |name: &str| {
        let runs = runs_of(&entries, name);
        assert_eq!(runs.len(), 1, "{name}: {runs:#?}");
        runs[0].clone()
    };
    let expect = |name: &str, kind: &str, outcome: &str, code: Value, signal: Value| {
        let run = one(name);
        assert_eq!(
            (
                &run["kind"],
                &run["outcome"],
                &run["exit_code"],
                &run["signal"]
            ),
            (&Value::from(kind), &Value::from(outcome), &code, &signal),
            "{run}"
        );
        assert_eq!(run["attempt"], 0, "{run}");
        run
    };
    expect("clean", "service", "exited", 0.into(), Value::Null);
    let code = expect("code", "service", "crashed", 5.into(), Value::Null);
    assert_eq!(code["context"], "crash 5");
    let signalled = expect(
        "signalled",
        "service",
        "crashed",
        Value::Null,
        "SIGUSR1".into(),
    );
    assert_eq!(signalled["context"], "dying now");
    expect(
        "sleepy",
        "service",
        "stopped",
        Value::Null,
        "SIGTERM".into(),
    );
    for name in ["stubborn", "last-stand"] {
        expect(name, "service", "killed", Value::Null, "SIGKILL".into());
    }
    assert_eq!(one("last-stand")["context"], "last words");
    let timeout = expect(
        "slow-task",
        "task",
        "timeout",
        Value::Null,
        "SIGTERM".into(),
    );
    assert!(
        timeout["duration_ms"].as_u64().is_some_and(|ms| ms >= 300),
        "{timeout}"
    );
    let missing = expect(
        "missing",
        "service",
        "spawn_failed",
        Value::Null,
        Value::Null,
    );
    assert_eq!(missing["pid"], Value::Null);
    let context = missing["context"].as_str().unwrap_or("");
    assert!(
        context.contains("/nonexistent/paios-no-such-program")
            && context.contains("No such file or directory"),
        "the OS error is the context: {missing}"
    );
    for run in [
        "clean",
        "code",
        "signalled",
        "sleepy",
        "stubborn",
        "last-stand",
        "slow-task",
    ]
    .map(one)
    {
        assert!(run["pid"].as_i64().is_some_and(|p| p > 1), "{run}");
        assert_eq!(run["pgid"], run["pid"], "{run}");
    }
    assert_eq!(events_of(&entries, "slow-task", "task_failed").len(), 1);
    assert_eq!(events_of(&entries, "paiosd", "daemon_start").len(), 1);
    assert_eq!(events_of(&entries, "paiosd", "daemon_stop").len(), 1);

    // --crashes: crashed, hung, killed, memory, spawn_failed; not exits, stops or timeouts.
    let crashes: BTreeSet<String> = ledger(&d, &["--crashes"])
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["service"].as_str().unwrap_or("?"),
                e["outcome"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let want: BTreeSet<String> = [
        "code crashed",
        "signalled crashed",
        "stubborn killed",
        "last-stand killed",
        "missing spawn_failed",
    ]
    .map(String::from)
    .into();
    assert_eq!(crashes, want);
    // --since: all of it happened within the hour; nothing after a date far ahead.
    assert_eq!(ledger(&d, &["--since", "1h"]).len(), entries.len());
    assert!(ledger(&d, &["--since", "2099-01-01"]).is_empty());
    // One service, and the outcome filter.
    let code_only = ledger(&d, &["code"]);
    assert!(
        !code_only.is_empty() && code_only.iter().all(|e| e["service"] == "code"),
        "{code_only:?}"
    );
    let timeouts = ledger(&d, &["--outcome", "timeout,stopped"]);
    assert_eq!(timeouts.len(), 2, "{timeouts:?}");
    // The human table and `show` work with paiosd down too.
    let out = d.ctl(&["ledger", "--crashes"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("spawn_failed"),
        "{}",
        text(&out.stdout)
    );
    let out = d.ctl(&["ledger", "show", &signalled["id"].to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("dying now"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(d.ctl(&["ledger", "show", "999999"]).status.code(), Some(1));
}

// ----- alerts ---------------------------------------------------------------------------

/// An alert command that appends `EVENT<TAB>SERVICE<TAB>DETAIL<TAB>STDIN` to `file`.
fn recording_alert(file: &Path) -> String {
    let script = format!(
        "printf '%s\\t%s\\t%s\\t%s\\n' \"$PAIOS_EVENT\" \"$PAIOS_SERVICE\" \"$PAIOS_DETAIL\" \"$(cat)\" >> '{}'",
        file.display()
    );
    format!(
        "alert_command = [\"/bin/sh\", \"-c\", {}]\n",
        toml_str(&script)
    )
}

/// The alert runs recorded by [`recording_alert`]: (event, service, detail, stdin JSON).
fn alerts_run(file: &Path) -> Vec<(String, String, String, Value)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.splitn(4, '\t').collect();
            assert_eq!(parts.len(), 4, "alert line: {l}");
            let json = serde_json::from_str(parts[3]).unwrap_or_else(|e| panic!("stdin {e}: {l}"));
            (parts[0].into(), parts[1].into(), parts[2].into(), json)
        })
        .collect()
}

#[test]
fn a_storm_runs_the_alert_command_once_per_window() {
    const WINDOW_MS: i64 = 2_000;
    let dirs = TestDirs::new();
    let log = dirs.file("log");
    let pids = dirs.file("pids");
    let alerts = dirs.file("alerts");
    dirs.write_global(&format!(
        "{}storm = {{ crashes = 3, window = \"{WINDOW_MS}ms\" }}\n",
        recording_alert(&alerts)
    ));
    dirs.write_service(
        "crasher",
        &format!(
            "{}{}{}",
            fixture(&["crasher", "1"]),
            fixture_env(&log, &pids),
            fixed_backoff("always", 100)
        ),
    );
    let d = Daemon::start_in(dirs);
    // Long enough for the storm to come back twice after the first report.
    let first = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || {
            first.elapsed() > Duration::from_millis(2 * WINDOW_MS as u64 + 600)
                && events_of(&ledger(&d, &[]), "crasher", "storm").len() >= 3
        }),
        "{:#?}",
        events_of(&ledger(&d, &[]), "crasher", "storm")
    );
    let (started, runs) = stop_and_collect(&d, "crasher", &log);
    d.pids_from(&pids);
    assert_one_row_per_run(&started, &runs);
    let entries = ledger(&d, &[]);
    let storms = events_of(&entries, "crasher", "storm");
    // Every storm event ran the command once, with the documented variables.
    let mut ran = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            ran = alerts_run(&alerts);
            ran.len() >= storms.len()
        }),
        "{ran:?} vs {storms:?}"
    );
    assert_eq!(ran.len(), storms.len(), "{ran:?} vs {storms:?}");
    for ((event, service, detail, json), storm) in ran.iter().zip(&storms) {
        assert_eq!((event.as_str(), service.as_str()), ("storm", "crasher"));
        assert_eq!(detail, "3 crashes within 2s");
        assert_eq!(storm["detail"], detail.as_str());
        assert_eq!(
            (
                &json["event"],
                &json["service"],
                &json["kind"],
                &json["detail"]
            ),
            (
                &Value::from("storm"),
                &Value::from("crasher"),
                &Value::from("service"),
                &Value::from(detail.as_str())
            ),
            "{json}"
        );
        time(&json["at"]);
    }
    // The first storm is the third crash; each next one comes a window later, however
    // many crashes happen in between.
    let crash_ends: Vec<DateTime<Utc>> = runs.iter().map(|r| time(&r["ended_at"])).collect();
    let first_storm = time(&storms[0]["ended_at"]);
    assert!(
        first_storm >= crash_ends[2] && first_storm < crash_ends[3],
        "first storm at {first_storm}, crashes ended {crash_ends:?}"
    );
    for pair in storms.windows(2) {
        let gap = (time(&pair[1]["ended_at"]) - time(&pair[0]["ended_at"])).num_milliseconds();
        assert!(
            (WINDOW_MS - 50..WINDOW_MS + 1_000).contains(&gap),
            "storms {gap} ms apart with a {WINDOW_MS} ms window: {storms:#?}"
        );
        let between = crash_ends
            .iter()
            .filter(|&&t| t > time(&pair[0]["ended_at"]) && t < time(&pair[1]["ended_at"]))
            .count();
        assert!(between >= 5, "only {between} crashes between two storms");
    }
    assert!(
        events_of(&entries, "crasher", "alert_failed").is_empty(),
        "{entries:#?}"
    );
}

#[test]
fn give_ups_and_task_failures_run_the_alert_command() {
    let dirs = TestDirs::new();
    let alerts = dirs.file("alerts");
    dirs.write_global(&format!(
        "{}storm = {{ crashes = 100 }}\n",
        recording_alert(&alerts)
    ));
    dirs.write_service(
        "looper",
        &format!(
            "{}[restart]\npolicy = \"always\"\nbackoff = {{ initial = \"50ms\", max = \"50ms\", jitter = 0.0 }}\nlimit = {{ burst = 2, window = \"1m\", cooldown = \"500ms\" }}\n",
            fixture(&["crasher", "2"])
        ),
    );
    dirs.write_service(
        "nightly",
        &format!(
            "{}schedule = \"0 0 1 1 *\"\n",
            shell("echo 'nightly broke' >&2; exit 4")
        ),
    );
    let d = Daemon::start_in(dirs);
    let out = d.ctl(&["run", "nightly"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let mut ran = Vec::new();
    assert!(
        wait_until(Duration::from_secs(15), || {
            ran = alerts_run(&alerts);
            ran.iter().any(|a| a.0 == "gave_up") && ran.iter().any(|a| a.0 == "task_failed")
        }),
        "{ran:?}"
    );
    let gave_up = ran
        .iter()
        .find(|a| a.0 == "gave_up")
        .cloned()
        .unwrap_or_default();
    assert_eq!(gave_up.1, "looper");
    assert!(gave_up.2.contains("more than 2 restarts"), "{gave_up:?}");
    assert_eq!(gave_up.3["event"], "gave_up");
    let failed = ran
        .iter()
        .find(|a| a.0 == "task_failed")
        .cloned()
        .unwrap_or_default();
    assert_eq!(failed.1, "nightly");
    assert_eq!(failed.3["kind"], "task");
    // The cooldown ends by itself and says so.
    assert!(
        wait_until(Duration::from_secs(10), || {
            !events_of(&ledger(&d, &[]), "looper", "cooldown_over").is_empty()
        }),
        "{:#?}",
        ledger(&d, &[])
    );
    let entries = ledger(&d, &[]);
    let nightly = runs_of(&entries, "nightly");
    assert_eq!(nightly.len(), 1, "{nightly:?}");
    assert_eq!(
        (
            &nightly[0]["kind"],
            &nightly[0]["outcome"],
            &nightly[0]["exit_code"]
        ),
        (
            &Value::from("task"),
            &Value::from("crashed"),
            &Value::from(4)
        )
    );
    assert_eq!(nightly[0]["context"], "nightly broke");
}

/// The crasher used by the alert-failure tests: backoff 200 ms, a storm at the third crash.
fn storm_crasher(alert: &str) -> (Daemon, PathBuf, PathBuf) {
    let dirs = TestDirs::new();
    let log = dirs.file("log");
    let pids = dirs.file("pids");
    dirs.write_global(&format!(
        "alert_command = [\"/bin/sh\", \"-c\", {}]\n",
        toml_str(alert)
    ));
    dirs.write_service(
        "crasher",
        &format!(
            "{}{}{}",
            fixture(&["crasher", "1"]),
            fixture_env(&log, &pids),
            fixed_backoff("always", 200)
        ),
    );
    (Daemon::start_in(dirs), log, pids)
}

#[test]
fn a_failing_alert_command_is_recorded_and_restarts_keep_their_timing() {
    let (d, log, pids) = storm_crasher("echo 'no route to pager' >&2; exit 7");
    let mut failures = Vec::new();
    assert!(
        wait_until(Duration::from_secs(15), || {
            failures = events_of(&ledger(&d, &[]), "crasher", "alert_failed");
            !failures.is_empty() && started_pids(&log).len() >= 8
        }),
        "{failures:?}"
    );
    let (started, runs) = stop_and_collect(&d, "crasher", &log);
    d.pids_from(&pids);
    assert_one_row_per_run(&started, &runs);
    let detail = failures[0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("storm alert")
            && detail.contains("exit status 7")
            && detail.contains("no route to pager"),
        "{detail}"
    );
    assert_gaps_within(&restart_gaps(&log), 200.0, 800.0);
}

#[test]
fn a_hanging_alert_command_never_delays_a_restart() {
    let dirs_pids = tempfile::tempdir().expect("temp dir");
    let alert_pids = dirs_pids.path().join("alert-pids");
    let (mut d, log, pids) = storm_crasher(&format!(
        "echo $$ >> '{}'; exec sleep 1000",
        alert_pids.display()
    ));
    // The alert hangs from the third crash on (its bound is 10 s); restarts go on.
    assert!(
        wait_until(Duration::from_secs(10), || !common::read_pids(&alert_pids)
            .is_empty()),
        "the alert command never ran"
    );
    d.guard.borrow_mut().pids_from(&alert_pids);
    let hung_at = unix_ns();
    let hanging_since = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || {
            restart_gaps(&log)
                .iter()
                .filter(|(at, _)| *at > hung_at)
                .count()
                >= 6
        }),
        "restarts stopped while the alert hung: {:?}",
        restart_gaps(&log)
    );
    let alert_pid = common::read_pids(&alert_pids)[0];
    // Well inside the alert's 10 s bound, unless this machine is very slow today.
    let within_bound = hanging_since.elapsed() < Duration::from_secs(8);
    if within_bound {
        assert!(
            common::daemon::alive(alert_pid),
            "the alert should still hang"
        );
    }
    assert_gaps_within(&restart_gaps(&log), 200.0, 800.0);
    // Control requests are answered meanwhile too.
    assert_eq!(d.ctl(&["status"]).status.code(), Some(0));

    // Shutting down ends the hanging command's group and records why.
    let out = d.ctl(&["shutdown"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    d.pids_from(&pids);
    assert!(
        wait_until(Duration::from_secs(5), || !common::daemon::alive(alert_pid)),
        "the hanging alert (pid {alert_pid}) outlived paiosd"
    );
    let entries = ledger(&d, &[]);
    let failures = events_of(&entries, "crasher", "alert_failed");
    assert_eq!(failures.len(), 1, "{failures:?}");
    let why = if within_bound {
        "still running when paiosd stopped"
    } else {
        "its process group was killed"
    };
    assert!(
        failures[0]["detail"]
            .as_str()
            .is_some_and(|s| s.contains(why)),
        "{failures:?}"
    );
    assert_one_row_per_run(&started_pids(&log), &runs_of(&entries, "crasher"));
}

// ----- a ledger that refuses writes -----------------------------------------------------------

/// A crasher restarting every 200 ms whose first few runs are in the ledger.
fn crashing_daemon() -> (Daemon, PathBuf, PathBuf) {
    let dirs = TestDirs::new();
    let log = dirs.file("log");
    let pids = dirs.file("pids");
    dirs.write_service(
        "crasher",
        &format!(
            "{}{}{}",
            fixture(&["crasher", "1"]),
            fixture_env(&log, &pids),
            fixed_backoff("always", 200)
        ),
    );
    let d = Daemon::start_in(dirs);
    wait_stats(&d, "the first runs written", Duration::from_secs(10), |s| {
        s["written"].as_u64().is_some_and(|n| n >= 4)
    });
    (d, log, pids)
}

/// Waits until `n` restarts have happened after `since` (unix ns).
fn wait_restarts_after(log: &Path, since: u128, n: usize) {
    assert!(
        wait_until(Duration::from_secs(15), || {
            restart_gaps(log)
                .iter()
                .filter(|(at, _)| *at > since)
                .count()
                >= n
        }),
        "restarts stalled: {:?}",
        restart_gaps(log)
    );
}

#[test]
fn a_locked_ledger_keeps_restart_timing_reports_pending_and_catches_up() {
    let (d, log, pids) = crashing_daemon();
    let path = d.dirs.state.join("ledger.sqlite");
    let conn = rusqlite::Connection::open(&path).expect("open the ledger");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let locked_at = unix_ns();
    let at_lock = wait_stats(&d, "records waiting", Duration::from_secs(10), |s| {
        s["pending"].as_u64().is_some_and(|n| n >= 3)
    });
    // Supervision goes on at its pace while nothing can be written.
    wait_restarts_after(&log, locked_at, 8);
    let held = stats(&d);
    assert_eq!(
        held["written"], at_lock["written"],
        "written while locked? {held}"
    );
    // Each crash's record may still be waiting for its stderr tail, hence not all 8.
    assert!(count(&held["pending"]) >= 5, "{held}");
    assert_eq!(held["dropped"], 0, "{held}");
    let out = d.ctl(&["status"]);
    assert!(
        text(&out.stdout).contains("waiting to be written"),
        "status says nothing about the ledger: {}",
        text(&out.stdout)
    );
    // Readers are not blocked by the lock.
    assert!(!ledger(&d, &[]).is_empty());

    conn.execute_batch("ROLLBACK").expect("release the lock");
    drop(conn);
    let after = wait_stats(
        &d,
        "the waiting records written",
        Duration::from_secs(20),
        |s| s["pending"] == 0 && s["last_error"].is_null(),
    );
    assert!(
        count(&after["written"]) >= count(&held["written"]) + count(&held["pending"]),
        "{held} then {after}"
    );
    assert_eq!(after["dropped"], 0);
    let (started, runs) = stop_and_collect(&d, "crasher", &log);
    d.pids_from(&pids);
    assert_one_row_per_run(&started, &runs);
    assert_gaps_within(&restart_gaps(&log), 200.0, 800.0);
}

/// Sets the immutable attribute on files, and clears it on drop (even when the test fails,
/// so the temporary directory can be removed).
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: &[PathBuf]) -> Result<Immutable, String> {
        let mut guard = Immutable(Vec::new());
        for path in paths {
            let out = Command::new("chattr")
                .arg("+i")
                .arg(path)
                .output()
                .map_err(|e| format!("chattr: {e}"))?;
            if !out.status.success() {
                return Err(text(&out.stderr).trim().to_string());
            }
            guard.0.push(path.clone());
        }
        Ok(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(path).status();
        }
    }
}

#[test]
fn a_read_only_ledger_keeps_restart_timing_reports_pending_and_catches_up() {
    let (d, log, pids) = crashing_daemon();
    let path = d.dirs.state.join("ledger.sqlite");
    // The database and its write-ahead log. Not the `-shm` index: SQLite maps it into
    // paiosd's memory, and a shared mapping whose file turns immutable underneath faults
    // (SIGBUS) on the next write to it, which is the kernel's doing, not the ledger's.
    let files = [path.clone(), d.dirs.state.join("ledger.sqlite-wal")];
    let found = needs("chattr +i on the state dir", Immutable::set(&files));
    let Some(immutable) = found else {
        d.pids_from(&pids);
        return;
    };
    let frozen_at = unix_ns();
    let at_freeze = wait_stats(&d, "the write error", Duration::from_secs(10), |s| {
        !s["last_error"].is_null() && s["pending"].as_u64().is_some_and(|n| n >= 2)
    });
    wait_restarts_after(&log, frozen_at, 8);
    let held = stats(&d);
    // Each crash's record may still be waiting for its stderr tail, hence not all 8.
    assert!(count(&held["pending"]) >= 5, "{held}");
    assert!(
        count(&held["written"]) <= count(&at_freeze["written"]),
        "{held}"
    );
    let error = held["last_error"].as_str().unwrap_or("");
    assert!(
        error.contains("readonly") || error.contains("read-only") || error.contains("I/O"),
        "{held}"
    );
    let out = d.ctl(&["ping"]);
    assert!(
        text(&out.stdout).contains("waiting to be written"),
        "{}",
        text(&out.stdout)
    );

    drop(immutable);
    // Retries back off (1 s, 2 s, 4 s, ...), so this may take a few seconds.
    let after = wait_stats(
        &d,
        "the waiting records written",
        Duration::from_secs(40),
        |s| s["pending"] == 0 && s["last_error"].is_null(),
    );
    assert_eq!(after["dropped"], 0);
    let (started, runs) = stop_and_collect(&d, "crasher", &log);
    d.pids_from(&pids);
    assert_one_row_per_run(&started, &runs);
    assert_gaps_within(&restart_gaps(&log), 200.0, 800.0);
}

// ----- a corrupt ledger at start ---------------------------------------------------------------

#[test]
fn a_corrupt_ledger_at_start_is_moved_aside_and_paiosd_runs() {
    let mut header_then_noise = b"SQLite format 3\0".to_vec();
    header_then_noise.extend((0..8192).map(|_| fastrand::u8(..)));
    let mut noise: Vec<u8> = (0..65536).map(|_| fastrand::u8(..)).collect();
    noise[0] = b'x';
    for (case, bytes) in [
        ("random bytes", noise),
        ("a header then noise", header_then_noise),
    ] {
        let dirs = TestDirs::new();
        let pids = dirs.file("pids");
        let ledger_path = dirs.state.join("ledger.sqlite");
        std::fs::write(&ledger_path, &bytes).expect("write the corrupt ledger");
        dirs.write_service(
            "steady",
            &format!(
                "{}env = {{ FIXTURE_PIDS = {} }}\n",
                fixture(&["sleeper"]),
                toml_str(&pids.display().to_string())
            ),
        );
        let d = Daemon::start_in(dirs);
        d.wait_state("steady", "running", Duration::from_secs(10));
        d.pids_from(&pids);
        let mut entries = Vec::new();
        assert!(
            wait_until(Duration::from_secs(10), || {
                entries = ledger(&d, &[]);
                !events_of(&entries, "paiosd", "ledger_corrupt_moved").is_empty()
                    && !events_of(&entries, "paiosd", "daemon_start").is_empty()
            }),
            "{case}: {entries:#?}"
        );
        let moved: Vec<PathBuf> = std::fs::read_dir(&d.dirs.state)
            .expect("list the state dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ledger.sqlite.corrupt-"))
            })
            .collect();
        assert_eq!(moved.len(), 1, "{case}: {moved:?}");
        assert_eq!(
            std::fs::read(&moved[0]).expect("read the moved file"),
            bytes,
            "{case}: the corrupt file is kept as it was"
        );
        let event = &events_of(&entries, "paiosd", "ledger_corrupt_moved")[0];
        assert!(
            event["detail"]
                .as_str()
                .is_some_and(|s| s.contains(moved[0].to_str().unwrap_or("?"))),
            "{case}: {event}"
        );
        // Records keep arriving (runs, events) and are written in batches: wait for a
        // moment when nothing is pending rather than expecting one at a fixed time.
        let mut s = stats(&d);
        let settled = wait_until(Duration::from_secs(10), || {
            s = stats(&d);
            s["last_error"].is_null() && s["pending"] == 0
        });
        assert!(settled, "{case}: {s}");
        // The fresh ledger takes new runs.
        let out = d.ctl(&["restart", "steady"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
        d.pids_from(&pids);
        assert!(
            wait_until(Duration::from_secs(10), || {
                runs_of(&ledger(&d, &[]), "steady")
                    .iter()
                    .any(|r| r["outcome"] == "stopped")
            }),
            "{case}: {:#?}",
            ledger(&d, &[])
        );
    }
}
