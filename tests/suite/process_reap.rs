//! `process::reap()`, `become_subreaper()` and the blocking stop routine
//! (`process::stop::stop_all`, which reaps as it waits) against real children.
//!
//! `reap()` is `waitpid(-1)`: it collects *any* child of its process. So each test runs
//! in a fresh process of its own (`ran_in_own_process`), and every assertion still looks
//! for its own PIDs among whatever was reaped rather than expecting an exact list.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{fixture_path, ran_in_own_process, wait_until, GroupGuard};
use paios::process::stop::{self, Stop, Target};
use paios::process::{self, ExitStatus, Identity, SpawnSpec};

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

fn group_target(run: &process::Spawned) -> Target {
    Target::Group {
        pgid: run.pgid,
        leader: run.leader,
    }
}

fn first_line(run: &mut process::Spawned) -> Option<String> {
    let stdout = std::mem::replace(
        &mut run.stdout,
        std::fs::File::open("/dev/null").unwrap().into(),
    );
    common::LineReader::new(stdout).line(WAIT)
}

#[test]
fn stop_all_ends_groups_with_their_signal_and_kills_the_stubborn_after_grace() {
    if ran_in_own_process(
        module_path!(),
        "stop_all_ends_groups_with_their_signal_and_kills_the_stubborn_after_grace",
    ) {
        return;
    }
    let mut guard = GroupGuard::new();
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let mut forker = spec(&["forker", "2"]);
    forker
        .env
        .insert("FIXTURE_PIDS".into(), pids_file.display().to_string());
    let polite = process::spawn(&forker).unwrap();
    guard.spawned(&polite);
    let mut stubborn = process::spawn(&spec(&["stubborn"])).unwrap();
    guard.spawned(&stubborn);
    assert_eq!(first_line(&mut stubborn).as_deref(), Some("ready"));
    assert!(wait_until(WAIT, || common::read_pids(&pids_file).len() >= 5));
    guard.pids_from(&pids_file);

    let grace = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let done = stop::stop_all(&[
        Stop {
            target: group_target(&polite),
            signal: libc::SIGTERM,
            grace,
        },
        Stop {
            target: group_target(&stubborn),
            signal: libc::SIGTERM,
            grace,
        },
    ]);
    assert!(
        started.elapsed() >= grace,
        "the stubborn group got its grace"
    );
    assert_eq!(done.len(), 2);
    assert!(!done[0].killed, "SIGTERM was enough: {:?}", done[0]);
    assert!(done[1].killed, "SIGTERM is ignored: {:?}", done[1]);
    assert!(done.iter().all(|d| d.survivors.is_empty()), "{done:?}");
    assert!(!process::group_alive(polite.pgid));
    assert!(!process::group_alive(stubborn.pgid));
    for pid in common::read_pids(&pids_file) {
        assert!(process::start_time(pid).is_none(), "{pid} survived");
    }
}

#[test]
fn stop_all_never_touches_a_reused_pid() {
    if ran_in_own_process(module_path!(), "stop_all_never_touches_a_reused_pid") {
        return;
    }
    let mut guard = GroupGuard::new();
    let mut run = process::spawn(&spec(&["stubborn"])).unwrap();
    guard.spawned(&run);
    assert_eq!(first_line(&mut run).as_deref(), Some("ready"));
    // What was recorded started at another time: the numbers were handed on since.
    let recorded = Identity {
        pid: run.leader.pid,
        start_time: run.leader.start_time.saturating_sub(1),
    };
    let done = stop::stop_all(&[
        Stop {
            target: Target::Group {
                pgid: run.pgid,
                leader: recorded,
            },
            signal: libc::SIGKILL,
            grace: Duration::ZERO,
        },
        Stop {
            target: Target::Process(recorded),
            signal: libc::SIGKILL,
            grace: Duration::ZERO,
        },
    ]);
    assert!(done.iter().all(|d| d.survivors.is_empty()), "{done:?}");
    assert!(
        process::is_alive(run.leader),
        "another program's process was signalled"
    );
    assert!(process::group_alive(run.pgid));
}

#[test]
fn stop_all_ends_a_single_process_and_not_its_group() {
    if ran_in_own_process(
        module_path!(),
        "stop_all_ends_a_single_process_and_not_its_group",
    ) {
        return;
    }
    let mut guard = GroupGuard::new();
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let mut forker = spec(&["forker", "1"]);
    forker
        .env
        .insert("FIXTURE_PIDS".into(), pids_file.display().to_string());
    let run = process::spawn(&forker).unwrap();
    guard.spawned(&run);
    // The leader prints its child's and grandchild's PIDs once it has read them; a child
    // stopped before that would end the leader too (it reads the child's report).
    let out = common::LineReader::new(run.stdout.try_clone().expect("the leader's stdout"));
    let printed = out.lines(2, WAIT);
    assert_eq!(printed.len(), 2, "the forker reported {printed:?}");
    guard.pids_from(&pids_file);
    let child = printed[0]
        .trim()
        .parse::<i32>()
        .ok()
        .and_then(process::proc_info)
        .expect("the forked child")
        .identity();

    let done = stop::stop_all(&[Stop {
        target: Target::Process(child),
        signal: libc::SIGTERM,
        grace: Duration::from_secs(5),
    }]);
    assert_eq!(done[0].survivors, Vec::<i32>::new());
    assert!(!process::is_alive(child));
    assert!(
        process::is_alive(run.leader),
        "only the one process was stopped"
    );
}
