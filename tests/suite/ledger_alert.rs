//! The alert command, run for real: it gets the event in its environment and on stdin,
//! a hanging one is killed with its whole group at the bound, a failing or missing one
//! is recorded as `alert_failed`, and `send` never waits for any of it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use paios::alert::{Alert, AlertSettings, Alerter, Sent};
use paios::ledger::query::{Entry, Filter, Reader};
use paios::ledger::Ledger;

fn open_ledger(dir: &Path) -> (Ledger, PathBuf) {
    let path = dir.join("ledger.sqlite");
    let settings = paios::config::Global::default().ledger;
    (Ledger::open(&path, settings), path)
}

fn sh(script: String) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script]
}

fn alert(event: &str, at: DateTime<Utc>) -> Alert {
    Alert {
        event: event.into(),
        service: "kb".into(),
        kind: "service".into(),
        detail: "3 crashes within 5m: exit 1, exit 1, SIGSEGV".into(),
        at,
    }
}

fn t0() -> DateTime<Utc> {
    "2026-11-24T12:00:00Z".parse().unwrap()
}

fn settings(timeout: Duration) -> AlertSettings {
    AlertSettings {
        timeout,
        ..AlertSettings::default()
    }
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn failures(ledger: &Ledger, path: &Path, n: usize) -> Vec<Entry> {
    wait_until("the failure records", Duration::from_secs(20), || {
        ledger.stats().written as usize >= n
    });
    Reader::open(path)
        .unwrap()
        .list(&Filter {
            outcomes: vec!["alert_failed".into()],
            ..Filter::default()
        })
        .unwrap()
}

/// Processes a test started through the alert command, by the PIDs they wrote down;
/// killed on drop so a failing test leaves nothing behind.
struct Pids(PathBuf);

impl Pids {
    fn read(&self) -> Vec<i32> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Pids {
    fn drop(&mut self) {
        for pid in self.read() {
            if alive(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Present and not a zombie.
#[cfg(target_os = "linux")]
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !stat[i + 1..].trim_start().starts_with(['Z', 'X']),
            None => false,
        },
        Err(_) => false,
    }
}

/// Present and not a zombie.
#[cfg(not(target_os = "linux"))]
fn alive(pid: i32) -> bool {
    match std::process::Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
    {
        Ok(out) => {
            let stat = String::from_utf8_lossy(&out.stdout);
            let stat = stat.trim();
            !stat.is_empty() && !stat.starts_with('Z')
        }
        Err(_) => false,
    }
}

#[test]
fn the_command_gets_the_event_in_its_environment_and_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, path) = open_ledger(dir.path());
    let out = dir.path().join("alert.out");
    let script = format!(
        "{{ printf '%s\\n' \"$PAIOS_EVENT\" \"$PAIOS_SERVICE\" \"$PAIOS_DETAIL\" \"$PAIOS_AT\" \"$PAIOS_KIND\"; cat; }} > {0}.tmp && mv {0}.tmp {0}",
        out.display()
    );
    let alerter = Alerter::new(
        sh(script),
        ledger.clone(),
        settings(Duration::from_secs(10)),
    )
    .unwrap();
    let t = Instant::now();
    assert_eq!(alerter.send(alert("storm", t0())), Sent::Queued);
    assert!(t.elapsed() < Duration::from_millis(50));
    wait_until("the alert output", Duration::from_secs(10), || out.exists());
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        &lines[..5],
        [
            "storm",
            "kb",
            "3 crashes within 5m: exit 1, exit 1, SIGSEGV",
            "2026-11-24T12:00:00.000Z",
            "service"
        ]
    );
    let json: serde_json::Value = serde_json::from_str(lines[5]).unwrap();
    assert_eq!(json["event"], "storm");
    assert_eq!(json["service"], "kb");
    assert_eq!(
        json["detail"],
        "3 crashes within 5m: exit 1, exit 1, SIGSEGV"
    );
    assert_eq!(json["at"], "2026-11-24T12:00:00.000Z");
    alerter.close(Duration::from_secs(5));
    ledger.close(Duration::from_secs(5));
    // A successful alert records nothing.
    assert!(Reader::open(&path)
        .map(|r| r.count().unwrap() == 0)
        .unwrap_or(true));
}

#[test]
fn a_hanging_command_is_killed_with_its_group_at_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, path) = open_ledger(dir.path());
    let pids = Pids(dir.path().join("pids"));
    let script = format!(
        "sleep 60 & echo $! > {0}.tmp; echo $$ >> {0}.tmp; mv {0}.tmp {0}; echo hanging >&2; wait",
        pids.0.display()
    );
    let alerter = Alerter::new(
        sh(script),
        ledger.clone(),
        settings(Duration::from_millis(500)),
    )
    .unwrap();
    let t = Instant::now();
    alerter.send(alert("gave_up", t0()));
    assert!(t.elapsed() < Duration::from_millis(50));
    wait_until("the pids", Duration::from_secs(10), || pids.0.exists());
    let started = pids.read();
    assert_eq!(started.len(), 2);
    assert!(started.iter().all(|&p| alive(p)));
    let entries = failures(&ledger, &path, 1);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(entries.len(), 1);
    let detail = entries[0].detail.as_deref().unwrap();
    assert!(detail.contains("timed out after 500ms"), "{detail}");
    assert!(detail.contains("hanging"), "{detail}");
    assert_eq!(
        (entries[0].service.as_str(), entries[0].kind.as_str()),
        ("kb", "service")
    );
    wait_until("the group to be gone", Duration::from_secs(5), || {
        started.iter().all(|&p| !alive(p))
    });
    alerter.close(Duration::from_secs(5));
    ledger.close(Duration::from_secs(5));
}

#[test]
fn failing_and_missing_commands_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, path) = open_ledger(dir.path());
    let failing = Alerter::new(
        sh("cat > /dev/null; echo 'channel not found' >&2; exit 3".into()),
        ledger.clone(),
        settings(Duration::from_secs(10)),
    )
    .unwrap();
    failing.send(alert("task_failed", t0()));
    let missing = Alerter::new(
        vec![dir.path().join("no-such-notify").display().to_string()],
        ledger.clone(),
        settings(Duration::from_secs(10)),
    )
    .unwrap();
    missing.send(alert("storm", t0()));
    let entries = failures(&ledger, &path, 2);
    let details: Vec<&str> = entries.iter().filter_map(|e| e.detail.as_deref()).collect();
    assert!(
        details.iter().any(|d| d.starts_with("task_failed alert:")
            && d.contains("failed with exit status 3: channel not found")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("no-such-notify") && d.contains("was not found")),
        "{details:?}"
    );
    failing.close(Duration::from_secs(5));
    missing.close(Duration::from_secs(5));
    ledger.close(Duration::from_secs(5));
}

#[test]
fn what_a_successful_command_leaves_running_is_ended() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _path) = open_ledger(dir.path());
    let pids = Pids(dir.path().join("pids"));
    let script = format!(
        "sleep 60 & echo $! > {0}.tmp; mv {0}.tmp {0}; exit 0",
        pids.0.display()
    );
    let alerter = Alerter::new(
        sh(script),
        ledger.clone(),
        settings(Duration::from_secs(10)),
    )
    .unwrap();
    alerter.send(alert("storm", t0()));
    wait_until("the pids", Duration::from_secs(10), || pids.0.exists());
    let left = pids.read();
    assert_eq!(left.len(), 1);
    wait_until("the leftover to be ended", Duration::from_secs(5), || {
        !alive(left[0])
    });
    alerter.close(Duration::from_secs(5));
    ledger.close(Duration::from_secs(5));
    assert_eq!(
        ledger.stats().written,
        0,
        "a success was recorded as a failure"
    );
}

#[test]
fn the_same_alert_within_the_interval_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _path) = open_ledger(dir.path());
    let count = dir.path().join("count");
    let script = format!("echo x >> {}", count.display());
    let alerter = Alerter::new(
        sh(script),
        ledger.clone(),
        AlertSettings {
            min_interval: Duration::from_secs(60),
            ..AlertSettings::default()
        },
    )
    .unwrap();
    let s = chrono::Duration::seconds;
    assert_eq!(alerter.send(alert("storm", t0())), Sent::Queued);
    assert_eq!(
        alerter.send(alert("storm", t0() + s(30))),
        Sent::RateLimited
    );
    assert_eq!(alerter.send(alert("gave_up", t0() + s(30))), Sent::Queued);
    assert_eq!(alerter.send(alert("storm", t0() + s(61))), Sent::Queued);
    let lines = || {
        std::fs::read_to_string(&count)
            .unwrap_or_default()
            .lines()
            .count()
    };
    wait_until("three runs", Duration::from_secs(10), || lines() == 3);
    alerter.close(Duration::from_secs(5));
    assert_eq!(lines(), 3);
    ledger.close(Duration::from_secs(5));
}

#[test]
fn a_full_queue_drops_without_waiting_and_close_kills_the_running_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, path) = open_ledger(dir.path());
    let pids = Pids(dir.path().join("pids"));
    let script = format!("echo $$ >> {}; sleep 60", pids.0.display());
    let alerter = Alerter::new(
        sh(script),
        ledger.clone(),
        AlertSettings {
            timeout: Duration::from_secs(30),
            min_interval: Duration::ZERO,
            queue: 2,
        },
    )
    .unwrap();
    let t = Instant::now();
    let sent: Vec<Sent> = (0..10)
        .map(|i| alerter.send(alert(&format!("e{i}"), t0())))
        .collect();
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert!(sent.contains(&Sent::Dropped), "{sent:?}");
    wait_until("the first run", Duration::from_secs(10), || {
        !pids.read().is_empty()
    });
    let running = pids.read()[0];

    let t = Instant::now();
    alerter.close(Duration::from_secs(5));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    wait_until(
        "the running alert to be ended",
        Duration::from_secs(5),
        || !alive(running),
    );
    assert_eq!(pids.read().len(), 1, "queued alerts ran after close");
    assert_eq!(alerter.send(alert("late", t0())), Sent::Dropped);

    let dropped = sent.iter().filter(|s| **s == Sent::Dropped).count();
    let entries = failures(&ledger, &path, dropped + 1);
    assert!(entries.iter().any(|e| e
        .detail
        .as_deref()
        .unwrap()
        .contains("still running when paiosd stopped")));
    assert!(
        entries
            .iter()
            .filter(|e| e.detail.as_deref().unwrap().contains("already waiting"))
            .count()
            == dropped
    );
    ledger.close(Duration::from_secs(5));
}

#[test]
fn an_empty_command_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _path) = open_ledger(dir.path());
    assert!(Alerter::new(Vec::new(), ledger.clone(), AlertSettings::default()).is_err());
    ledger.close(Duration::from_secs(1));
}

/// An alert command starts with default signal dispositions, like every run paiosd
/// spawns: a signal ignored by paiosd (say, under `nohup`) is not ignored by it.
#[cfg(target_os = "linux")]
#[test]
fn the_command_does_not_inherit_ignored_signals() {
    // It ignores a signal for the whole process: run it in one of its own.
    if crate::common::ran_in_own_process(
        module_path!(),
        "the_command_does_not_inherit_ignored_signals",
    ) {
        return;
    }
    // SAFETY: SIG_IGN installs no handler code; nothing in this binary uses SIGUSR2.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGUSR2,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _path) = open_ledger(dir.path());
    let out = dir.path().join("ignored");
    let script = format!(
        "grep '^SigIgn:' /proc/self/status > {0}.tmp && mv {0}.tmp {0}",
        out.display()
    );
    let alerter = Alerter::new(
        sh(script),
        ledger.clone(),
        settings(Duration::from_secs(10)),
    )
    .unwrap();
    assert_eq!(alerter.send(alert("storm", t0())), Sent::Queued);
    wait_until("the alert output", Duration::from_secs(10), || out.exists());
    let line = std::fs::read_to_string(&out).unwrap();
    let mask = line
        .trim()
        .strip_prefix("SigIgn:")
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("unexpected status line {line:?}"));
    let bit = 1u64 << (libc::SIGUSR2 - 1);
    assert_eq!(mask & bit, 0, "SIGUSR2 is ignored in the alert: {line:?}");
    alerter.close(Duration::from_secs(5));
    ledger.close(Duration::from_secs(5));
}
