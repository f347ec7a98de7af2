//! Command probes with real processes, and the group RSS sampler.
//!
//! Each test runs in a fresh process of its own (`ran_in_own_process`): paiosd reaps
//! every child with `waitpid(-1)`, and so does the reaper here (as the supervisor does
//! on SIGCHLD), which would also collect the children of any other test in the same
//! process.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::ran_in_own_process;
use paios::config::{HealthConfig, OnFailure, Probe};
use paios::health::{probe_once, spawn_prober};
use paios::process::{self, watch, SpawnSpec};
use tokio_util::sync::CancellationToken;

/// Collects ended children on SIGCHLD and hands probe exits to their waiters, on the
/// test's own runtime thread — what the supervisor does in paiosd, where spawning and
/// reaping share the one thread and so never race.
struct Reaper {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_reaper() -> Reaper {
    let mut sigchld =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).expect("SIGCHLD");
    let task = tokio::spawn(async move {
        loop {
            watch::reap_and_deliver();
            tokio::select! {
                _ = sigchld.recv() => {}
                // Signals coalesce; a slow sweep as well costs nothing here.
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    Reaper { task }
}

/// Kills a recorded group when the test ends, even on failure.
struct GroupKill(i32);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if self.0 > 1 {
            let _ = process::signal_group(self.0, libc::SIGKILL);
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sh(script: &str) -> Probe {
    Probe::Exec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
    }
}

/// Waits for `path` to hold a line of numbers and returns them.
async fn read_pids(path: &Path, count: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let pids: Vec<i32> = text
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            if pids.len() >= count && text.ends_with('\n') {
                return pids;
            }
        }
        assert!(Instant::now() < deadline, "probe never wrote {path:?}");
        tokio::time::sleep(ms(5)).await;
    }
}

async fn wait_group_gone(pgid: i32) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while process::group_alive(pgid) {
        assert!(
            Instant::now() < deadline,
            "probe group {pgid} still has {:?}",
            process::group_members(pgid)
        );
        tokio::time::sleep(ms(5)).await;
    }
}

#[tokio::test]
async fn exit_zero_is_healthy_and_other_codes_are_not() {
    if ran_in_own_process(
        module_path!(),
        "exit_zero_is_healthy_and_other_codes_are_not",
    ) {
        return;
    }
    let _reaper = start_reaper().await;
    assert_eq!(probe_once(&sh("exit 0"), ms(2000)).await, Ok(()));
    assert_eq!(
        probe_once(&sh("exit 3"), ms(2000)).await,
        Err("exit code 3".to_string())
    );
    assert_eq!(
        probe_once(
            &sh("echo starting; echo 'database locked' >&2; exit 1"),
            ms(2000)
        )
        .await,
        Err("exit code 1: database locked".to_string())
    );
    assert_eq!(
        probe_once(&sh("echo 'no stderr, stdout then'; exit 2"), ms(2000)).await,
        Err("exit code 2: no stderr, stdout then".to_string())
    );
}

#[tokio::test]
async fn a_probe_killed_by_a_signal_says_which() {
    if ran_in_own_process(module_path!(), "a_probe_killed_by_a_signal_says_which") {
        return;
    }
    let _reaper = start_reaper().await;
    assert_eq!(
        probe_once(&sh("kill -9 $$"), ms(2000)).await,
        Err("killed by SIGKILL".to_string())
    );
}

#[tokio::test]
async fn a_hanging_probe_is_killed_with_its_grandchildren_at_the_timeout() {
    if ran_in_own_process(
        module_path!(),
        "a_hanging_probe_is_killed_with_its_grandchildren_at_the_timeout",
    ) {
        return;
    }
    let _reaper = start_reaper().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pids");
    let script = format!("sleep 100 & echo $$ $! > {}; sleep 100", file.display());
    let probe = sh(&script);
    let t0 = Instant::now();
    let run = probe_once(&probe, ms(400));
    tokio::pin!(run);
    // Record the group while the probe runs, so cleanup works even if it fails.
    let pids = tokio::select! {
        pids = read_pids(&file, 2) => pids,
        r = &mut run => panic!("probe ended before writing its pids: {r:?}"),
    };
    let (pgid, grandchild) = (pids[0], pids[1]);
    let _cleanup = GroupKill(pgid);
    assert!(process::group_members(pgid).contains(&grandchild));
    let result = run.await;
    let took = t0.elapsed();
    assert_eq!(result, Err("killed after timeout of 400ms".to_string()));
    assert!(took >= ms(400) && took < ms(2000), "took {took:?}");
    wait_group_gone(pgid).await;
    assert_eq!(process::start_time(grandchild), None, "grandchild survived");
}

#[tokio::test]
async fn background_children_of_a_finished_probe_are_ended() {
    if ran_in_own_process(
        module_path!(),
        "background_children_of_a_finished_probe_are_ended",
    ) {
        return;
    }
    let _reaper = start_reaper().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pids");
    // The leader exits 0 at once and leaves a child behind, holding stdout open.
    let script = format!("sleep 100 & echo $$ $! > {}; exit 0", file.display());
    assert_eq!(probe_once(&sh(&script), ms(2000)).await, Ok(()));
    let pids = read_pids(&file, 2).await;
    let _cleanup = GroupKill(pids[0]);
    wait_group_gone(pids[0]).await;
}

#[tokio::test]
async fn cancelling_the_prober_kills_the_probe_in_flight() {
    if ran_in_own_process(
        module_path!(),
        "cancelling_the_prober_kills_the_probe_in_flight",
    ) {
        return;
    }
    let _reaper = start_reaper().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pids");
    let cfg = HealthConfig {
        probe: sh(&format!("echo $$ > {}; sleep 100", file.display())),
        interval: ms(100),
        timeout: Duration::from_secs(60),
        failures: 3,
        start_period: Duration::ZERO,
        on_failure: OnFailure::Restart,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let task = spawn_prober("watcher".into(), 1, cfg, tx, cancel.clone());
    let pgid = read_pids(&file, 1).await[0];
    let _cleanup = GroupKill(pgid);
    assert!(process::group_alive(pgid));
    cancel.cancel();
    tokio::time::timeout(ms(500), task)
        .await
        .expect("prober ends promptly")
        .expect("prober task");
    wait_group_gone(pgid).await;
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn a_chatty_probe_does_not_block_on_its_pipes() {
    if ran_in_own_process(module_path!(), "a_chatty_probe_does_not_block_on_its_pipes") {
        return;
    }
    let _reaper = start_reaper().await;
    let t0 = Instant::now();
    assert_eq!(
        probe_once(
            &sh("head -c 2000000 /dev/zero; head -c 2000000 /dev/zero >&2; exit 0"),
            ms(3000)
        )
        .await,
        Ok(())
    );
    assert!(t0.elapsed() < ms(2000));
    let err = probe_once(
        &sh("i=0; while [ $i -lt 3000 ]; do echo line $i >&2; i=$((i+1)); done; exit 4"),
        ms(3000),
    )
    .await
    .expect_err("exit 4");
    assert_eq!(err, "exit code 4: line 2999");
}

#[tokio::test]
async fn commands_that_cannot_start_are_clear_errors() {
    if ran_in_own_process(
        module_path!(),
        "commands_that_cannot_start_are_clear_errors",
    ) {
        return;
    }
    let _reaper = start_reaper().await;
    let missing = Probe::Exec {
        argv: vec!["/nonexistent/paios-probe".into()],
    };
    let err = probe_once(&missing, ms(1000)).await.expect_err("missing");
    assert!(
        err.contains("/nonexistent/paios-probe") || err.starts_with("exit code 127"),
        "{err}"
    );
    for argv in [vec![], vec![String::new()]] {
        let err = probe_once(&Probe::Exec { argv }, ms(1000))
            .await
            .expect_err("empty");
        assert_eq!(err, "exec probe has an empty command");
    }
}

#[tokio::test]
async fn rss_is_summed_per_group_in_one_scan() {
    if ran_in_own_process(module_path!(), "rss_is_summed_per_group_in_one_scan") {
        return;
    }
    let _reaper = start_reaper().await;
    let spec = SpawnSpec {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "sleep 30 & sleep 30 & wait".into(),
        ],
        cwd: None,
        env: Default::default(),
    };
    let spawned = watch::spawn_watched(&spec, |_| {}).expect("spawn");
    let pgid = spawned.pgid;
    let cleanup = GroupKill(pgid);
    let deadline = Instant::now() + Duration::from_secs(3);
    while process::group_members(pgid).len() < 3 {
        assert!(Instant::now() < deadline, "group never had 3 members");
        tokio::time::sleep(ms(5)).await;
    }
    let members = process::group_members(pgid);
    let bogus = i32::MAX - 7;
    let rss = process::rss_of(&[pgid, bogus]);
    assert!(!rss.contains_key(&bogus));
    let group = rss.get(&pgid).copied().unwrap_or(0);
    assert!(group > 0, "group RSS 0");
    // The one-scan figure agrees with the process module's per-group sum (sleeping
    // processes barely move; allow a page or so per member).
    let direct = process::rss_of(&[pgid]).get(&pgid).copied().unwrap_or(0);
    let slack = 64 * 1024 * members.len() as u64;
    assert!(group.abs_diff(direct) <= slack, "{group} vs {direct}");
    assert_eq!(rss.len(), 1);
    drop(cleanup);
    wait_group_gone(pgid).await;
    assert!(process::rss_of(&[pgid]).is_empty());
}
