//! `process::reap()` and `become_subreaper()` against real children.
//!
//! `reap()` is `waitpid(-1)`: it collects *any* child of its process. So each test runs
//! in a fresh process of its own (`ran_in_own_process`), and every assertion still looks
//! for its own PIDs among whatever was reaped rather than expecting an exact list.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{fixture_path, ran_in_own_process, wait_until, GroupGuard};
use paios::process::{self, ExitStatus, SpawnSpec};

const WAIT: Duration = Duration::from_secs(10);

fn spec(args: &[&str]) -> SpawnSpec {
    let mut argv = vec![fixture_path().display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    SpawnSpec {
        argv,
        cwd: None,
        env: BTreeMap::new(),
    }
}

/// Calls `reap()` until `pid` shows up; returns its status.
fn reap_until(pid: i32) -> Option<ExitStatus> {
    let mut found = None;
    wait_until(WAIT, || {
        for (p, status) in process::reap() {
            if p == pid {
                found = Some(status);
            }
        }
        found.is_some()
    });
    found
}

#[test]
fn reap_collects_exit_codes() {
    if ran_in_own_process(module_path!(), "reap_collects_exit_codes") {
        return;
    }
    let mut guard = GroupGuard::new();
    let run = process::spawn(&spec(&["exit", "7"])).unwrap();
    guard.spawned(&run);
    assert_eq!(reap_until(run.leader.pid), Some(ExitStatus::Code(7)));
    // Gone for good: no zombie left behind.
    assert_eq!(process::proc_info(run.leader.pid), None);

    let run = process::spawn(&spec(&["crasher", "0"])).unwrap();
    guard.spawned(&run);
    assert_eq!(reap_until(run.leader.pid), Some(ExitStatus::Code(0)));
}

#[test]
fn reap_collects_the_killing_signal() {
    if ran_in_own_process(module_path!(), "reap_collects_the_killing_signal") {
        return;
    }
    let mut guard = GroupGuard::new();
    let run = process::spawn(&spec(&["sleeper"])).unwrap();
    guard.spawned(&run);
    assert!(process::is_alive(run.leader));
    assert!(
        !process::reap().iter().any(|(p, _)| *p == run.leader.pid),
        "a live child is not reaped"
    );
    process::signal_group(run.pgid, libc::SIGKILL).unwrap();
    assert_eq!(
        reap_until(run.leader.pid),
        Some(ExitStatus::Signal(libc::SIGKILL))
    );

    let run = process::spawn(&spec(&["sleeper"])).unwrap();
    guard.spawned(&run);
    process::signal_group(run.pgid, libc::SIGTERM).unwrap();
    assert_eq!(
        reap_until(run.leader.pid),
        Some(ExitStatus::Signal(libc::SIGTERM))
    );
}

#[test]
fn reap_without_children_returns_nothing_and_does_not_block() {
    if ran_in_own_process(
        module_path!(),
        "reap_without_children_returns_nothing_and_does_not_block",
    ) {
        return;
    }
    // Drain whatever earlier tests left, then nothing is left to collect.
    process::reap();
    let started = std::time::Instant::now();
    assert!(process::reap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[cfg(target_os = "linux")]
#[test]
fn subreaper_inherits_abandoned_grandchildren_and_reaps_them() {
    if ran_in_own_process(
        module_path!(),
        "subreaper_inherits_abandoned_grandchildren_and_reaps_them",
    ) {
        return;
    }
    process::become_subreaper().unwrap();
    let mut guard = GroupGuard::new();
    let mut run = process::spawn(&spec(&["forker-exit", "1"])).unwrap();
    guard.spawned(&run);
    let stdout = std::mem::replace(
        &mut run.stdout,
        std::fs::File::open("/dev/null").unwrap().into(),
    );
    let out = common::LineReader::new(stdout);
    let pids: Vec<i32> = out
        .lines(2, WAIT)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    for &pid in &pids {
        guard.pid(pid);
    }
    assert_eq!(reap_until(run.leader.pid), Some(ExitStatus::Code(0)));

    // The child whose parent (the leader) exited now belongs to us.
    let me = std::process::id() as i32;
    assert!(wait_until(WAIT, || process::proc_info(pids[0])
        .is_some_and(|p| p.ppid == me)));
    assert!(process::group_alive(run.pgid));

    process::signal_group(run.pgid, libc::SIGKILL).unwrap();
    assert_eq!(reap_until(pids[0]), Some(ExitStatus::Signal(libc::SIGKILL)));
    assert!(wait_until(WAIT, || !process::group_alive(run.pgid)));
}

#[test]
fn become_subreaper_succeeds() {
    if ran_in_own_process(module_path!(), "become_subreaper_succeeds") {
        return;
    }
    process::become_subreaper().unwrap();
    process::become_subreaper().unwrap();
}
