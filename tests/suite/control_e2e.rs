//! Every `paiosctl` verb against a live `paiosd` run in the foreground with its own
//! config, state and log directories and fixture services made of `/bin/sh -c`
//! commands: human and `--json` output, exit codes and the error paths (unknown name,
//! failed service, task already running, paiosd down).
//!
//! Each test records the process groups paiosd reported and ends them in `Drop`, with
//! paiosd itself, whatever the outcome.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{text, Daemon};
use nix::sys::signal::killpg;
use nix::unistd::Pid;

fn wait_for_state(d: &Daemon, name: &str, state: &str) -> serde_json::Value {
    d.wait_state(name, state, Duration::from_secs(10))
}

fn group_is_empty(pgid: i32) -> bool {
    matches!(
        killpg(Pid::from_raw(pgid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

const SLEEPER: &str = r#"shell = "sleep 300 & sleep 300 & wait"
[stop]
grace = "2s"
"#;

const QUICK_TASK: &str = r#"shell = "sleep 1; exit 0"
schedule = "0 0 1 1 *"
"#;

#[test]

fn status_shows_services_as_table_and_json() {
    let d = Daemon::start(&[("kb", SLEEPER), ("daily", QUICK_TASK)]);
    let row = wait_for_state(&d, "kb", "running");
    assert_eq!(row["kind"], "service");
    assert!(row["pid"].as_i64().is_some_and(|p| p > 0), "{row}");
    assert!(row["pgid"].as_i64().is_some_and(|p| p > 0), "{row}");
    let task = d.row("daily");
    assert_eq!(task["kind"], "task");
    assert!(task["next_run"].is_string(), "{task}");

    let out = d.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table
        .lines()
        .any(|l| l.starts_with("kb ") && l.contains("running")));
    assert!(table.contains("NEXT RUN"), "{table}");

    let out = d.ctl(&["status", "kbb"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("kb"), "{}", text(&out.stderr));
    let out = d.ctl(&["--json", "status", "kbb"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["error"]["code"], "unknown_service");
}

#[test]

fn stop_and_restart_wait_for_the_whole_group() {
    let d = Daemon::start(&[("kb", SLEEPER)]);
    let before = wait_for_state(&d, "kb", "running");
    let old_pgid = before["pgid"].as_i64().expect("pgid") as i32;
    {
        let deadline = Instant::now() + Duration::from_secs(5);
        while paios::process::group_members(old_pgid).len() < 3 {
            assert!(Instant::now() < deadline, "grandchildren never started");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    let out = d.ctl(&["restart", "kb"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        group_is_empty(old_pgid),
        "restart returned before the old group was empty"
    );
    let after = d.row("kb");
    assert_eq!(after["state"], "running");
    assert_ne!(after["pgid"], before["pgid"]);

    let out = d.ctl(&["--json", "stop", "kb"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["results"][0]["name"], "kb");
    assert_eq!(value["results"][0]["ok"], true);
    let new_pgid = after["pgid"].as_i64().expect("pgid") as i32;
    assert!(
        group_is_empty(new_pgid),
        "stop returned before the group was empty"
    );
    assert_eq!(d.row("kb")["state"], "stopped");

    let out = d.ctl(&["start", "kb"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(d.row("kb")["state"], "running");

    let out = d.ctl(&["stop", "--all", "--no-wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    wait_for_state(&d, "kb", "stopped");

    let out = d.ctl(&["restart", "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]

fn a_crash_looping_service_fails_and_start_clears_it() {
    let d = Daemon::start(&[(
        "crashy",
        r#"shell = "exit 1"
[restart]
policy = "always"
backoff = { initial = "10ms", max = "20ms" }
limit = { burst = 3, window = "1m", cooldown = "10m" }
"#,
    )]);
    let row = wait_for_state(&d, "crashy", "failed");
    assert!(
        row["restarts_24h"].as_u64().is_some_and(|n| n >= 3),
        "{row}"
    );
    assert_eq!(row["last_exit"]["code"], 1, "{row}");
    let out = d.ctl(&["status"]);
    assert!(text(&out.stdout).contains("failed"));
    // Starting it again clears the crash loop; it fails again, which the start reports.
    let out = d.ctl(&["start", "crashy"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
}

#[test]

fn run_waits_for_the_task_and_refuses_a_second_run() {
    let d = Daemon::start(&[("daily", QUICK_TASK)]);
    let out = d.ctl(&["--json", "run", "daily", "--no-wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let started: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(started["outcome"], "started");
    let out = d.ctl(&["--json", "run", "daily"]);
    assert_eq!(out.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["error"]["code"], "busy", "{value}");
    wait_for_state(&d, "daily", "idle");
    let out = d.ctl(&["run", "daily"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("exit code 0"),
        "{}",
        text(&out.stdout)
    );
    let out = d.ctl(&["run", "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]

fn reload_reports_what_changed_and_refuses_broken_config() {
    let d = Daemon::start(&[("kb", SLEEPER)]);
    wait_for_state(&d, "kb", "running");
    d.dirs.write_service("new", SLEEPER);
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("added: new"),
        "{}",
        text(&out.stdout)
    );
    wait_for_state(&d, "new", "running");

    d.dirs
        .write_service("broken", "shell = \"true\"\n[stop]\ngrace = \"soon\"\n");
    let out = d.ctl(&["--json", "reload"]);
    assert_eq!(out.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["error"]["code"], "config_invalid");
    let message = value["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("broken.toml:3"), "{message}");
    assert!(message.contains("stop.grace"), "{message}");
    assert!(d.status().iter().all(|r| r["name"] != "broken"));
}

#[test]

fn logs_show_the_last_lines() {
    let d = Daemon::start(&[(
        "talker",
        r#"shell = "for i in 1 2 3 4 5; do echo line-$i; done; sleep 300"
"#,
    )]);
    wait_for_state(&d, "talker", "running");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = d.ctl(&["logs", "talker", "-n", "2"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let lines = text(&out.stdout);
        if lines.contains("line-5") {
            assert!(
                lines.contains("line-4") && !lines.contains("line-3"),
                "{lines}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log never showed line-5: {lines}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]

fn fifty_concurrent_status_calls_while_services_restart() {
    let d = Daemon::start(&[
        (
            "flappy",
            r#"shell = "sleep 0.05; exit 1"
[restart]
policy = "always"
backoff = { initial = "10ms", max = "20ms" }
limit = { burst = 1000, window = "1m", cooldown = "1m" }
"#,
        ),
        ("kb", SLEEPER),
    ]);
    wait_for_state(&d, "kb", "running");
    let (config, state, logs) = (
        d.dirs.config.clone(),
        d.dirs.state.clone(),
        d.dirs.logs.clone(),
    );
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (config, state, logs) = (config.clone(), state.clone(), logs.clone());
            std::thread::spawn(move || {
                Command::new(env!("CARGO_BIN_EXE_paiosctl"))
                    .arg("--config-dir")
                    .arg(config)
                    .arg("--state-dir")
                    .arg(state)
                    .arg("--log-dir")
                    .arg(logs)
                    .args(["--json", "status"])
                    .output()
                    .expect("runs")
            })
        })
        .collect();
    for t in threads {
        let out = t.join().expect("thread");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(rows.len(), 2);
    }
    assert!(d.row("flappy")["restarts_24h"]
        .as_u64()
        .is_some_and(|n| n > 0));
}

#[test]

fn shutdown_waits_until_paiosd_has_exited() {
    let mut d = Daemon::start(&[("kb", SLEEPER)]);
    let pgid = wait_for_state(&d, "kb", "running")["pgid"]
        .as_i64()
        .expect("pgid") as i32;
    let out = d.ctl(&["ping"]);
    assert!(text(&out.stdout).contains("pong"));
    let out = d.ctl(&["shutdown"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Zombies count as dead; whoever inherits them may take a moment to reap them.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !group_is_empty(pgid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        paios::process::group_members(pgid).is_empty(),
        "a service outlived paiosd's shutdown"
    );
    assert_eq!(
        d.wait_exit(Duration::from_secs(5)),
        Some(0),
        "paiosd still running after shutdown returned, or failed"
    );
    let out = d.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    let out = d.ctl(&["version"]);
    assert!(text(&out.stdout).contains("paiosd not reachable"));
}
