//! The foundation's promises through the real binaries: restarts after the backoff,
//! the stop sequence reaching every process of a group (grandchildren included, and
//! after the leader exited first), one paiosd per state directory, SIGTERM leaving no
//! service process, and all-or-nothing reloads on SIGHUP.

use crate::common;

use std::time::Duration;

use common::daemon::{alive, text, Daemon};
use common::{fixture_path, toml_str, wait_until, TestDirs};
use nix::sys::signal::Signal;

fn fixture(mode_and_args: &[&str]) -> String {
    let mut argv = vec![toml_str(&fixture_path().display().to_string())];
    argv.extend(mode_and_args.iter().map(|a| toml_str(a)));
    format!("command = [{}]\n", argv.join(", "))
}

fn starts(log: &std::path::Path) -> Vec<(i32, u128)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next()? == "start").then_some(())?;
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect()
}

fn exits(log: &std::path::Path) -> Vec<u128> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next()? == "exit").then_some(())?;
            parts.nth(1)?.parse().ok()
        })
        .collect()
}

#[test]
fn crash_restarts_after_the_backoff() {
    let dirs = TestDirs::new();
    let log = dirs.file("crash.log");
    dirs.write_service(
        "crasher",
        &format!(
            "{}env = {{ FIXTURE_LOG = {} }}\n[restart]\npolicy = \"on-failure\"\nbackoff = {{ initial = \"200ms\", max = \"200ms\", factor = 1.0, jitter = 0.0 }}\n",
            fixture(&["crasher", "3", "0"]),
            toml_str(&log.display().to_string())
        ),
    );
    let d = Daemon::start_in(dirs);
    assert!(
        wait_until(Duration::from_secs(10), || starts(&log).len() >= 3),
        "restarted: {:?}",
        starts(&log)
    );
    let s = starts(&log);
    let e = exits(&log);
    for i in 0..2 {
        let gap_ms = (s[i + 1].1 - e[i]) / 1_000_000;
        assert!(
            gap_ms >= 200,
            "restart {i} came {gap_ms} ms after the exit, before the 200 ms backoff"
        );
        assert!(
            gap_ms < 2_000,
            "restart {i} came {gap_ms} ms after the exit"
        );
    }
    let row = d.row("crasher");
    assert!(
        row["restarts_24h"].as_u64().is_some_and(|n| n >= 2),
        "{row}"
    );
    assert_eq!(row["last_exit"]["code"], 3, "{row}");
}

#[test]
fn clean_exit_is_not_restarted_under_on_failure() {
    let dirs = TestDirs::new();
    let log = dirs.file("ok.log");
    dirs.write_service(
        "once",
        &format!(
            "{}env = {{ FIXTURE_LOG = {} }}\n",
            fixture(&["crasher", "0", "0"]),
            toml_str(&log.display().to_string())
        ),
    );
    let d = Daemon::start_in(dirs);
    let row = d.wait_state("once", "stopped", Duration::from_secs(10));
    assert_eq!(row["last_exit"]["code"], 0, "{row}");
    assert_eq!(starts(&log).len(), 1);
}

#[test]
fn stubborn_service_is_killed_after_grace() {
    let dirs = TestDirs::new();
    let pids = dirs.file("pids");
    dirs.write_service(
        "stubborn",
        &format!(
            "{}env = {{ FIXTURE_PIDS = {} }}\n[stop]\ngrace = \"500ms\"\n",
            fixture(&["stubborn"]),
            toml_str(&pids.display().to_string())
        ),
    );
    let d = Daemon::start_in(dirs);
    d.wait_state("stubborn", "running", Duration::from_secs(10));
    assert!(wait_until(Duration::from_secs(5), || !d
        .pids_from(&pids)
        .is_empty()));
    let pid = d.pids_from(&pids)[0];
    let t0 = std::time::Instant::now();
    let out = d.ctl(&["stop", "stubborn"]);
    let took = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(!alive(pid), "the stubborn process survived its stop");
    assert!(
        took >= Duration::from_millis(500),
        "stop returned before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert_eq!(d.row("stubborn")["state"], "stopped");
}

#[test]
fn stop_ends_grandchildren() {
    let dirs = TestDirs::new();
    let pids = dirs.file("pids");
    dirs.write_service(
        "forker",
        &format!(
            "{}env = {{ FIXTURE_PIDS = {} }}\n",
            fixture(&["forker", "2"]),
            toml_str(&pids.display().to_string())
        ),
    );
    let d = Daemon::start_in(dirs);
    // The leader, two children and their two grandchildren.
    assert!(
        wait_until(Duration::from_secs(10), || d.pids_from(&pids).len() >= 5),
        "{:?}",
        d.pids_from(&pids)
    );
    let all = d.pids_from(&pids);
    assert!(all.iter().all(|p| alive(*p)));
    let out = d.ctl(&["stop", "forker"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let left: Vec<i32> = all.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "left after stop: {left:?}");
}

/// A leader that exits while its grandchildren (which ignore SIGTERM) live on: the next
/// run must not start until the whole previous group is gone. Each run checks, at its
/// start, that no PID recorded by an earlier run is still alive.
#[test]
fn next_run_waits_for_the_previous_group_to_empty() {
    let dirs = TestDirs::new();
    let pids = dirs.file("pids");
    let overlap = dirs.file("overlap");
    let script = format!(
        "for p in $(cat {pids} 2>/dev/null); do if kill -0 $p 2>/dev/null; then echo $p >> {overlap}; fi; done; \
         echo $$ >> {pids}; trap '' TERM; sleep 300 & echo $! >> {pids}; sleep 300 & echo $! >> {pids}; sleep 0.1; exit 1",
        pids = pids.display(),
        overlap = overlap.display()
    );
    dirs.write_service(
        "leaky",
        &format!(
            "shell = {}\n[restart]\nbackoff = {{ initial = \"10ms\", max = \"10ms\", factor = 1.0, jitter = 0.0 }}\n[stop]\ngrace = \"300ms\"\n",
            toml_str(&script)
        ),
    );
    let d = Daemon::start_in(dirs);
    // Four runs, each leaving two SIGTERM-proof sleepers behind.
    assert!(
        wait_until(Duration::from_secs(20), || d.pids_from(&pids).len() >= 12),
        "runs so far: {:?}",
        d.pids_from(&pids)
    );
    let overlaps = std::fs::read_to_string(&overlap).unwrap_or_default();
    assert!(
        overlaps.is_empty(),
        "a run started while these of the previous run lived: {overlaps}"
    );
}

#[test]
fn sigterm_to_paiosd_leaves_no_service_process() {
    let dirs = TestDirs::new();
    let pids = dirs.file("pids");
    let env = format!(
        "env = {{ FIXTURE_PIDS = {} }}\n",
        toml_str(&pids.display().to_string())
    );
    dirs.write_service("forker", &format!("{}{env}", fixture(&["forker", "2"])));
    dirs.write_service(
        "stubborn",
        &format!("{}{env}[stop]\ngrace = \"300ms\"\n", fixture(&["stubborn"])),
    );
    dirs.write_service(
        "sleeper",
        &format!("{}{env}after = [\"forker\"]\n", fixture(&["sleeper"])),
    );
    let mut d = Daemon::start_in(dirs);
    assert!(
        wait_until(Duration::from_secs(10), || d.pids_from(&pids).len() >= 7),
        "{:?}",
        d.pids_from(&pids)
    );
    let all = d.pids_from(&pids);
    d.signal(Signal::SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(10)),
        Some(0),
        "paiosd did not exit 0 after SIGTERM"
    );
    let left: Vec<i32> = all.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "left after paiosd's SIGTERM: {left:?}");
}

#[test]
fn second_paiosd_exits_zero_and_the_first_keeps_running() {
    let d = Daemon::start(&[("s", "shell = \"sleep 300\"\n")]);
    let first = d.row("s");
    let out = std::process::Command::new(common::paiosd_path())
        .args(d.dirs.args())
        .output()
        .expect("second paiosd");
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains(&d.pid().to_string()),
        "the second one names the holder: {err}"
    );
    assert_eq!(d.ctl(&["ping"]).status.code(), Some(0));
    assert_eq!(
        d.row("s")["pid"],
        first["pid"],
        "the service was not touched"
    );
}

#[test]
fn sighup_with_a_broken_file_changes_nothing() {
    let d = Daemon::start(&[
        ("a", "shell = \"sleep 300\"\n"),
        ("b", "shell = \"sleep 300\"\n"),
    ]);
    let a = d.wait_state("a", "running", Duration::from_secs(10));
    let b = d.wait_state("b", "running", Duration::from_secs(10));
    d.dirs.write_service("a", "shell = \"sleep 301\"\n");
    d.dirs.write_service(
        "b",
        "shell = \"sleep 302\"\n[restart]\npolicy = \"sometimes\"\n",
    );
    d.dirs.write_service("c", "shell = \"sleep 300\"\n");
    d.signal(Signal::SIGHUP);
    // The same request through the socket gives the answer SIGHUP only logs.
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr) + &text(&out.stdout);
    assert!(err.contains("b.toml") && err.contains("policy"), "{err}");
    assert_eq!(d.row("a")["pid"], a["pid"]);
    assert_eq!(d.row("b")["pid"], b["pid"]);
    assert!(
        d.status().iter().all(|r| r["name"] != "c"),
        "c was added by a rejected reload"
    );
}

#[test]
fn sighup_restarts_only_the_changed_service() {
    let d = Daemon::start(&[
        ("a", "shell = \"sleep 300\"\n"),
        ("b", "shell = \"sleep 300\"\n"),
        ("gone", "shell = \"sleep 300\"\n"),
    ]);
    let a = d.wait_state("a", "running", Duration::from_secs(10));
    let b = d.wait_state("b", "running", Duration::from_secs(10));
    let gone = d.wait_state("gone", "running", Duration::from_secs(10));
    d.dirs.write_service("b", "shell = \"sleep 301\"\n");
    d.dirs.write_service("c", "shell = \"sleep 300\"\n");
    std::fs::remove_file(d.dirs.services_d.join("gone.toml")).expect("remove");
    d.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let rows = d.status();
            let pid = |n: &str| {
                rows.iter()
                    .find(|r| r["name"] == n)
                    .map(|r| r["pid"].clone())
            };
            pid("b").is_some_and(|p| p.is_i64() && p != b["pid"])
                && pid("c").is_some_and(|p| p.is_i64())
                && pid("gone").is_none()
        }),
        "{:?}",
        d.status()
    );
    assert_eq!(
        d.row("a")["pid"],
        a["pid"],
        "an unchanged service was restarted"
    );
    let gone_pid = gone["pid"].as_i64().unwrap_or(0) as i32;
    assert!(
        wait_until(Duration::from_secs(5), || !alive(gone_pid)),
        "the removed service still runs"
    );
}

#[test]
fn services_wait_for_what_they_come_after() {
    let d = Daemon::start(&[
        ("db", "shell = \"sleep 300\"\nenabled = false\n"),
        ("api", "shell = \"sleep 300\"\nafter = [\"db\"]\n"),
        ("web", "shell = \"sleep 300\"\nafter = [\"api\"]\n"),
    ]);
    let api = d.wait_state("api", "waiting", Duration::from_secs(10));
    assert!(
        api["detail"].as_str().is_some_and(|s| s.contains("db")),
        "{api}"
    );
    let web = d.wait_state("web", "waiting", Duration::from_secs(10));
    assert!(
        web["detail"].as_str().is_some_and(|s| s.contains("api")),
        "{web}"
    );
    assert!(web["pid"].is_null());
    let out = d.ctl(&["start", "db"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    d.wait_state("api", "running", Duration::from_secs(10));
    d.wait_state("web", "running", Duration::from_secs(10));
}

/// launchd has no restart cap: a paiosd that exited on bad config would crash-loop. With
/// every file broken it runs, answers, and reports the errors.
#[test]
fn every_file_broken_still_runs_and_reports() {
    let d = Daemon::start(&[
        ("a", "command = [\"sleep\", 300\n"),
        (
            "b",
            "shell = \"sleep 300\"\n[restart]\npolicy = \"sometimes\"\n",
        ),
    ]);
    assert_eq!(d.ctl(&["ping"]).status.code(), Some(0));
    assert!(d.status().is_empty());
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        said.contains("a.toml:2:1") && said.contains("b.toml:3:10"),
        "{said}"
    );
    // Fixed files are picked up by the next reload.
    d.dirs
        .write_service("a", "command = [\"sleep\", \"300\"]\n");
    d.dirs.write_service("b", "shell = \"sleep 300\"\n");
    assert_eq!(d.ctl(&["reload"]).status.code(), Some(0));
    d.wait_state("a", "running", Duration::from_secs(10));
    d.wait_state("b", "running", Duration::from_secs(10));
}
