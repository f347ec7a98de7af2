//! Scheduled tasks end to end (promise 8): a live `paiosd` runs per-second schedules
//! and the tests read what happened back through `paiosctl ledger --json` (the SQLite
//! ledger, written asynchronously, hence every check polls) and `paiosctl status`.
//!
//! Each test owns its temp dirs and its daemon; every process a task starts is found
//! by recorded PID or PGID, never by name, and ended on drop. Schedules are 6-field
//! per-second ones so that a slot is never more than a few seconds away.

use crate::common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use paios::state::StateDb;

use common::daemon::{alive, text, Daemon};
use common::{fixture_path, paiosd_path, toml_str, wait_until, TestDirs};

/// `paiosctl --json ledger NAME`: every entry of `name`, oldest first.
fn ledger(d: &Daemon, name: &str) -> Vec<serde_json::Value> {
    let out = d.ctl(&["--json", "ledger", name]);
    if out.status.code() != Some(0) {
        // The ledger file may not exist yet right after start: nothing recorded.
        return Vec::new();
    }
    let mut rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("ledger JSON line"))
        .collect();
    rows.sort_by_key(|r| r["id"].as_i64());
    rows
}

/// Polls the ledger until `cond` holds for `name`'s entries; panics with them if not.
fn wait_ledger(
    d: &Daemon,
    name: &str,
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut last = Vec::new();
    let ok = wait_until(timeout, || {
        last = ledger(d, name);
        cond(&last)
    });
    assert!(ok, "{what}: ledger of {name} is {last:#?}");
    last
}

fn count(rows: &[serde_json::Value], ty: &str, outcome: &str) -> usize {
    rows.iter()
        .filter(|r| r["type"] == ty && r["outcome"] == outcome)
        .count()
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

/// A task that never comes due by itself (1 January, midnight) running `shell`.
fn yearly(shell: &str) -> String {
    format!("shell = {}\nschedule = \"0 0 1 1 *\"\n", toml_str(shell))
}

#[test]
fn a_per_second_task_runs_is_recorded_and_shows_in_status() {
    let d = Daemon::start(&[(
        "tick",
        "shell = \"exit 0\"\nschedule = \"* * * * * *\"\ntz = \"UTC\"\n",
    )]);
    let rows = wait_ledger(&d, "tick", Duration::from_secs(10), "two runs", |rows| {
        count(rows, "run", "exited") >= 2
    });
    for run in rows.iter().filter(|r| r["type"] == "run") {
        assert_eq!(run["kind"], "task", "{run}");
        assert_eq!(run["exit_code"], 0, "{run}");
        // Started on its slot: a whole second plus what spawning takes.
        let started = time(&run["started_at"]);
        let ms = started.timestamp_subsec_millis();
        assert!(ms < 800, "started {ms} ms after its second: {run}");
    }
    // Between runs it is idle, with its next time and the last result.
    let mut row = serde_json::Value::Null;
    let idle = wait_until(Duration::from_secs(5), || {
        row = d.row("tick");
        row["state"] == "idle" && row["last_exit"]["code"] == 0
    });
    assert!(idle, "{row}");
    assert_eq!(row["kind"], "task");
    let next = time(&row["next_run"]);
    let now = Utc::now();
    assert!(
        next > now - chrono::Duration::seconds(1) && next <= now + chrono::Duration::seconds(2),
        "next_run {next} vs now {now}"
    );
    assert_eq!(next.timestamp_subsec_nanos(), 0, "{row}");
    assert!(row["pid"].is_null(), "{row}");

    // The human table says the same.
    let out = d.ctl(&["status"]);
    assert!(text(&out.stdout).contains("idle"), "{}", text(&out.stdout));
}

#[test]
fn a_task_past_its_timeout_is_ended_with_its_grandchildren() {
    let dirs = TestDirs::new();
    let pids = dirs.file("pids");
    dirs.write_service(
        "slow",
        &format!(
            "command = [{}, \"forker\", \"2\"]\nschedule = \"0 0 1 1 *\"\ntimeout = \"1s\"\n\
             env = {{ FIXTURE_PIDS = {} }}\n[stop]\ngrace = \"1s\"\n",
            toml_str(&fixture_path().display().to_string()),
            toml_str(&pids.display().to_string()),
        ),
    );
    let d = Daemon::start_in(dirs);
    let t0 = Instant::now();
    let out = d.ctl(&["run", "slow"]);
    let took = t0.elapsed();
    // The forker and its 2 children and 2 grandchildren each recorded their PID.
    let all = d.pids_from(&pids);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("timeout") || text(&out.stdout).contains("timeout"),
        "stdout {} stderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(took >= Duration::from_millis(900), "ended after {took:?}");
    assert_eq!(all.len(), 5, "recorded PIDs {all:?}");
    let gone = wait_until(Duration::from_secs(5), || all.iter().all(|p| !alive(*p)));
    assert!(
        gone,
        "still alive: {:?}",
        all.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    let rows = wait_ledger(
        &d,
        "slow",
        Duration::from_secs(5),
        "a timeout run",
        |rows| count(rows, "run", "timeout") == 1,
    );
    let run = rows
        .iter()
        .find(|r| r["outcome"] == "timeout")
        .expect("run");
    assert_eq!(run["kind"], "task");
    assert_eq!(run["signal"], "SIGTERM", "{run}");
    let row = d.wait_state("slow", "idle", Duration::from_secs(5));
    assert_eq!(row["last_exit"]["signal"], "SIGTERM", "{row}");
    assert_eq!(row["detail"], "last run timeout", "{row}");
}

#[test]
fn an_overlapping_time_is_skipped_and_recorded() {
    let d = Daemon::start(&[(
        "long",
        "shell = \"sleep 1.5\"\nschedule = \"* * * * * *\"\n",
    )]);
    let rows = wait_ledger(
        &d,
        "long",
        Duration::from_secs(12),
        "two runs and a skip",
        |rows| count(rows, "run", "exited") >= 2 && count(rows, "event", "skipped") >= 1,
    );
    let skip = rows
        .iter()
        .find(|r| r["outcome"] == "skipped")
        .expect("skip");
    assert_eq!(skip["kind"], "task");
    assert!(
        skip["detail"]
            .as_str()
            .is_some_and(|s| s.contains("still running")),
        "{skip}"
    );
    // Never two at once: each run starts after the previous one ended.
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = rows
        .iter()
        .filter(|r| r["type"] == "run")
        .map(|r| (time(&r["started_at"]), time(&r["ended_at"])))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "runs overlap: {spans:?}");
    }
}

/// Stops paiosd (SIGTERM) after a first run on a 2-second schedule, makes it look down
/// for six seconds (across three scheduled times) by setting the task's last handled
/// time in `state.sqlite` that far back, and starts it again; returns it and when.
fn downtime(catch_up: bool) -> (Daemon, DateTime<Utc>) {
    let mut d = Daemon::start(&[(
        "every2",
        &format!("shell = \"exit 0\"\nschedule = \"*/2 * * * * *\"\ncatch_up = {catch_up}\n"),
    )]);
    wait_ledger(
        &d,
        "every2",
        Duration::from_secs(10),
        "a first run",
        |rows| count(rows, "run", "exited") >= 1,
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    let restarted = Utc::now();
    let state = StateDb::open(&d.dirs.state.join("state.sqlite")).expect("open state.sqlite");
    state
        .set_task_last("every2", restarted - chrono::Duration::seconds(6))
        .expect("set the task's last handled time");
    drop(state);
    d.launch();
    (d, restarted)
}

#[test]
fn downtime_across_scheduled_times_runs_exactly_one_catch_up() {
    let (d, restarted) = downtime(true);
    let rows = wait_ledger(
        &d,
        "every2",
        Duration::from_secs(10),
        "a catch-up and a scheduled run after it",
        |rows| {
            count(rows, "event", "catch_up") >= 1
                && rows
                    .iter()
                    .filter(|r| r["type"] == "run" && time(&r["started_at"]) > restarted)
                    .count()
                    >= 2
        },
    );
    let catch_ups: Vec<_> = rows.iter().filter(|r| r["outcome"] == "catch_up").collect();
    assert_eq!(catch_ups.len(), 1, "{rows:#?}");
    let detail = catch_ups[0]["detail"].as_str().unwrap_or_default();
    let missed: u32 = detail
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        missed >= 2,
        "several missed times coalesce into one: {detail}"
    );
    // The catch-up ran at once, not on a slot; the run after it is on its slot.
    let after: Vec<_> = rows
        .iter()
        .filter(|r| r["type"] == "run" && time(&r["started_at"]) > restarted)
        .collect();
    let first = time(&after[0]["started_at"]);
    assert!(
        first - restarted < chrono::Duration::seconds(2),
        "catch-up started at {first}, paiosd at {restarted}"
    );
    assert!(count(&rows, "event", "skipped") == 0, "{rows:#?}");
}

#[test]
fn downtime_without_catch_up_runs_nothing_and_records_the_skip() {
    let (d, restarted) = downtime(false);
    let rows = wait_ledger(
        &d,
        "every2",
        Duration::from_secs(10),
        "a skip record and a scheduled run",
        |rows| {
            count(rows, "event", "skipped") >= 1
                && rows
                    .iter()
                    .any(|r| r["type"] == "run" && time(&r["started_at"]) > restarted)
        },
    );
    assert_eq!(count(&rows, "event", "catch_up"), 0, "{rows:#?}");
    let skip = rows
        .iter()
        .find(|r| r["outcome"] == "skipped")
        .expect("skip");
    assert!(
        skip["detail"]
            .as_str()
            .is_some_and(|s| s.contains("catch_up = false")),
        "{skip}"
    );
    // The first run after the restart is a scheduled one: on an even second.
    let first = rows
        .iter()
        .filter(|r| r["type"] == "run")
        .map(|r| time(&r["started_at"]))
        .find(|t| *t > restarted)
        .expect("a run after the restart");
    assert_eq!(
        first.timestamp() % 2,
        0,
        "run at {first} is off its schedule"
    );
    assert!(first.timestamp_subsec_millis() < 800, "run at {first}");
}

#[test]
fn run_is_refused_while_the_task_runs_and_waits_for_the_result() {
    let d = Daemon::start(&[
        ("busy", "shell = \"sleep 3\"\nschedule = \"* * * * * *\"\n"),
        ("ok", &yearly("exit 0")),
        ("bad", &yearly("echo broken >&2; exit 3")),
    ]);
    let row = d.wait_state("busy", "running", Duration::from_secs(5));
    let out = d.ctl(&["run", "busy"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("already running"),
        "{}",
        text(&out.stderr)
    );
    // Refused means refused: the run going on is the same one.
    assert_eq!(d.row("busy")["pid"], row["pid"]);

    let out = d.ctl(&["run", "ok"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("exit code 0"),
        "{}",
        text(&out.stdout)
    );
    let out = d.ctl(&["run", "bad"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("exit code 3"),
        "{}",
        text(&out.stderr)
    );
    let rows = wait_ledger(&d, "bad", Duration::from_secs(5), "a crash", |rows| {
        count(rows, "run", "crashed") == 1
    });
    let run = rows.iter().find(|r| r["type"] == "run").expect("run");
    assert_eq!(run["exit_code"], 3);
    assert!(
        run["context"]
            .as_str()
            .is_some_and(|c| c.contains("broken")),
        "{run}"
    );
}

#[test]
fn a_failing_task_retries_within_its_slot_then_alerts() {
    let dirs = TestDirs::new();
    let alert_out = dirs.file("alert.env");
    dirs.write_global(&format!(
        "alert_command = [\"sh\", \"-c\", {}]\n",
        toml_str(&format!(
            "env > {0}.tmp && mv {0}.tmp {0}",
            alert_out.display()
        ))
    ));
    dirs.write_service(
        "flaky",
        "shell = \"exit 3\"\nschedule = \"*/5 * * * * *\"\nretries = 2\n\
         [restart]\nbackoff = { initial = \"50ms\", max = \"200ms\", factor = 2.0, jitter = 0.0 }\n",
    );
    let d = Daemon::start_in(dirs);
    let rows = wait_ledger(
        &d,
        "flaky",
        Duration::from_secs(12),
        "three runs and an alert",
        |rows| count(rows, "run", "crashed") >= 3 && count(rows, "event", "task_failed") >= 1,
    );
    let runs: Vec<_> = rows.iter().filter(|r| r["type"] == "run").collect();
    let starts: Vec<DateTime<Utc>> = runs.iter().map(|r| time(&r["started_at"])).collect();
    // All three within the slot the first one started in (the next is 5 s later).
    let slot = starts[0].timestamp() - starts[0].timestamp() % 5;
    for (run, start) in runs.iter().zip(&starts).take(3) {
        assert_eq!(run["exit_code"], 3, "{run}");
        assert!(
            start.timestamp() < slot + 5,
            "retry outside the slot: {starts:?}"
        );
    }
    // The alert comes once, after the last retry failed.
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r["outcome"] == "task_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{rows:#?}");
    assert!(
        time(&failed[0]["ended_at"]) >= time(&runs[2]["ended_at"]),
        "{rows:#?}"
    );
    assert!(wait_until(Duration::from_secs(5), || alert_out.exists()));
    let env = std::fs::read_to_string(&alert_out).expect("alert output");
    assert!(env.lines().any(|l| l == "PAIOS_EVENT=task_failed"), "{env}");
    assert!(env.lines().any(|l| l == "PAIOS_SERVICE=flaky"), "{env}");
}

#[test]
fn check_names_file_line_and_key_of_bad_task_settings() {
    let dirs = TestDirs::new();
    let bad = [
        (
            "cron",
            "shell = \"true\"\nschedule = \"0 25 * * *\"\n",
            ":2:",
            "`schedule`",
            "field 2 (hour) `25`",
        ),
        (
            "cron6",
            "shell = \"true\"\n\nschedule = \"*/2 * * * * MON-XYZ\"\n",
            ":3:",
            "`schedule`",
            "field 6 (day-of-week)",
        ),
        (
            "zone",
            "shell = \"true\"\nschedule = \"@daily\"\ntz = \"Europe/Berln\"\n",
            ":3:",
            "`tz`",
            "unknown time zone `Europe/Berln`",
        ),
        (
            "zero",
            "shell = \"true\"\nschedule = \"@daily\"\ntimeout = \"0s\"\n",
            ":3:",
            "`timeout`",
            "longer than zero",
        ),
        (
            "always",
            "shell = \"true\"\nschedule = \"@daily\"\n[restart]\npolicy = \"always\"\n",
            ":4:",
            "`restart.policy`",
            "always",
        ),
    ];
    for (name, body, ..) in &bad {
        dirs.write_service(name, body);
    }
    dirs.write_service(
        "good",
        "shell = \"true\"\nschedule = \"0 7 * * *\"\ntz = \"America/New_York\"\n",
    );
    let out = std::process::Command::new(paiosd_path())
        .args(dirs.args())
        .arg("check")
        .output()
        .expect("paiosd check runs");
    let stderr = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    for (name, _, line, key, message) in &bad {
        let found = stderr.lines().any(|l| {
            l.contains(&format!("{name}.toml{line}")) && l.contains(key) && l.contains(message)
        });
        assert!(found, "{name}: want {line} {key} {message} in\n{stderr}");
    }
    // The good task is listed with its next three run times, in its zone.
    let good = stdout
        .lines()
        .find(|l| l.starts_with("good"))
        .unwrap_or_else(|| panic!("good not listed:\n{stdout}"));
    let next = good.split("next=").nth(1).unwrap_or_default();
    let times: Vec<&str> = next.split(", ").collect();
    assert_eq!(times.len(), 3, "{good}");
    for t in times {
        assert!(t.contains(" 07:00") && t.ends_with("-05:00"), "{good}");
    }
}

#[test]
fn a_task_changed_while_it_runs_keeps_its_schedule() {
    let d = Daemon::start(&[("edit", "shell = \"sleep 5\"\nschedule = \"* * * * * *\"\n")]);
    d.wait_state("edit", "running", Duration::from_secs(5));
    d.dirs
        .write_service("edit", "shell = \"exit 0\"\nschedule = \"* * * * * *\"\n");
    let reloaded = Utc::now();
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The old run is stopped for the new config, and the new one runs on schedule.
    wait_ledger(
        &d,
        "edit",
        Duration::from_secs(10),
        "runs of the new config",
        |rows| {
            count(rows, "run", "stopped") == 1
                && rows
                    .iter()
                    .filter(|r| r["outcome"] == "exited" && time(&r["started_at"]) > reloaded)
                    .count()
                    >= 2
        },
    );
}
