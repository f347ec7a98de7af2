//! Real process groups through `paios::process`: spawning a group, listing and
//! signalling its members, grandchildren outliving their leader, zombies counting as
//! dead, identity by start time, RSS and stop state, and the spawn errors.
//!
//! These tests run in parallel threads of one process, so none calls `process::reap()`
//! (it would collect the other tests' children); that lives in `process_reap.rs`. Each
//! test's leaders are collected by PID in its `GroupGuard`. The one that ignores SIGHUP
//! for the whole process while it spawns runs in a fresh process of its own.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use common::{fixture_path, ran_in_own_process, wait_until, GroupGuard, LineReader};
use paios::process::{self, SpawnSpec, Spawned};

const WAIT: Duration = Duration::from_secs(10);

fn spec(args: &[&str], env: &[(&str, &Path)]) -> SpawnSpec {
    let mut argv = vec![fixture_path().display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    SpawnSpec {
        argv,
        cwd: None,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .collect(),
    }
}

fn start(guard: &mut GroupGuard, spec: &SpawnSpec) -> (Spawned, LineReader) {
    let mut spawned = process::spawn(spec).expect("spawn fixture");
    guard.spawned(&spawned);
    let stdout = std::mem::replace(
        &mut spawned.stdout,
        std::fs::File::open("/dev/null")
            .expect("open /dev/null")
            .into(),
    );
    (spawned, LineReader::new(stdout))
}

/// Resident memory of the live members of `pgid`, 0 when it has none.
fn group_rss(pgid: i32) -> u64 {
    process::rss_of(&[pgid]).get(&pgid).copied().unwrap_or(0)
}

fn pids_of(lines: &[String]) -> BTreeSet<i32> {
    lines
        .iter()
        .map(|l| l.trim().parse().expect("fixture prints PIDs"))
        .collect()
}

#[test]
fn forker_group_lists_all_members_and_term_ends_them() {
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let mut guard = GroupGuard::new();
    let (run, out) = start(
        &mut guard,
        &spec(&["forker", "2"], &[("FIXTURE_PIDS", &pids_file)]),
    );
    assert_eq!(run.pgid, run.leader.pid);
    let descendants = pids_of(&out.lines(4, WAIT));
    guard.pids_from(&pids_file);

    let mut expected = descendants.clone();
    expected.insert(run.leader.pid);
    let members: BTreeSet<i32> = process::group_members(run.pgid).into_iter().collect();
    assert_eq!(members, expected);
    assert!(process::group_alive(run.pgid));
    let recorded: BTreeSet<i32> = common::read_pids(&pids_file).into_iter().collect();
    assert_eq!(recorded, expected, "every process records its PID");
    for pid in &descendants {
        let info = process::proc_info(*pid).expect("descendant visible");
        assert_eq!(info.pgid, run.pgid);
        assert!(info.is_live());
    }

    process::signal_group(run.pgid, libc::SIGTERM).unwrap();
    assert!(wait_until(WAIT, || !process::group_alive(run.pgid)));
    assert!(process::group_members(run.pgid).is_empty());
    assert!(!process::is_alive(run.leader));
    // The group is gone; signalling it again is not an error.
    process::signal_group(run.pgid, libc::SIGTERM).unwrap();
}

#[test]
fn stubborn_survives_term_and_dies_on_kill() {
    let mut guard = GroupGuard::new();
    let (run, out) = start(&mut guard, &spec(&["stubborn"], &[]));
    assert_eq!(out.line(WAIT).as_deref(), Some("ready"));

    process::signal_group(run.pgid, libc::SIGTERM).unwrap();
    assert!(
        !wait_until(Duration::from_millis(200), || !process::group_alive(
            run.pgid
        )),
        "SIGTERM is ignored, the group must still be there"
    );
    assert!(process::is_alive(run.leader));

    process::signal_group(run.pgid, libc::SIGKILL).unwrap();
    assert!(wait_until(WAIT, || !process::group_alive(run.pgid)));
    assert!(!process::is_alive(run.leader));
}

#[test]
fn group_outlives_its_leader_until_grandchildren_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let mut guard = GroupGuard::new();
    let (run, out) = start(
        &mut guard,
        &spec(&["forker-exit", "1"], &[("FIXTURE_PIDS", &pids_file)]),
    );
    let descendants = pids_of(&out.lines(2, WAIT));
    guard.pids_from(&pids_file);

    assert!(wait_until(WAIT, || !process::is_alive(run.leader)));
    // The leader is our unreaped zombie now; the group lives on without it.
    assert_eq!(
        process::proc_info(run.leader.pid).map(|p| p.state),
        Some('Z')
    );
    assert!(process::group_alive(run.pgid));
    let members: BTreeSet<i32> = process::group_members(run.pgid).into_iter().collect();
    assert_eq!(members, descendants);

    process::signal_group(run.pgid, libc::SIGKILL).unwrap();
    assert!(wait_until(WAIT, || !process::group_alive(run.pgid)));
}

#[test]
fn setsid_child_leaves_the_group() {
    let mut guard = GroupGuard::new();
    let (run, out) = start(&mut guard, &spec(&["setsid"], &[]));
    let escaped: i32 = out.line(WAIT).expect("setsid prints PID").parse().unwrap();
    guard.pid(escaped);
    guard.group(escaped);

    let info = process::proc_info(escaped).expect("escaped child visible");
    assert_eq!(info.pgid, escaped);
    assert_eq!(process::group_members(run.pgid), vec![run.leader.pid]);

    process::signal_group(run.pgid, libc::SIGKILL).unwrap();
    assert!(wait_until(WAIT, || !process::group_alive(run.pgid)));
    assert!(process::proc_info(escaped).is_some_and(|p| p.is_live()));
}

#[test]
fn start_time_is_stable_and_identifies_the_process() {
    let mut guard = GroupGuard::new();
    let (a, _out_a) = start(&mut guard, &spec(&["sleeper"], &[]));
    assert_eq!(process::start_time(a.leader.pid), Some(a.leader.start_time));
    assert_eq!(process::start_time(a.leader.pid), Some(a.leader.start_time));
    assert!(process::is_alive(a.leader));

    // Start times are coarse (clock ticks on Linux): start others until one is later.
    let mut later = None;
    assert!(wait_until(WAIT, || {
        let (b, _out) = start(&mut guard, &spec(&["sleeper"], &[]));
        assert_ne!(b.leader.pid, a.leader.pid);
        assert_eq!(process::start_time(b.leader.pid), Some(b.leader.start_time));
        let _ = process::signal_group(b.pgid, libc::SIGKILL);
        if b.leader.start_time != a.leader.start_time {
            later = Some(b.leader.start_time);
            true
        } else {
            false
        }
    }));
    assert!(later > Some(a.leader.start_time));

    // The same PID with another start time is another process: PID reuse is not life.
    let reused = process::Identity {
        pid: a.leader.pid,
        start_time: a.leader.start_time + 1,
    };
    assert!(!process::is_alive(reused));

    process::signal_group(a.pgid, libc::SIGKILL).unwrap();
    assert!(wait_until(WAIT, || !process::is_alive(a.leader)));
}

#[test]
fn zombie_leader_counts_as_dead() {
    let mut guard = GroupGuard::new();
    let (run, _out) = start(&mut guard, &spec(&["exit", "3"], &[]));
    assert!(wait_until(WAIT, || process::proc_info(run.leader.pid)
        .is_some_and(|p| p.state == 'Z')));

    // Present as a zombie, but dead by every measure paios uses.
    let info = process::proc_info(run.leader.pid).unwrap();
    assert_eq!(info.start_time, run.leader.start_time);
    assert!(!info.is_live());
    assert_eq!(process::start_time(run.leader.pid), None);
    assert!(!process::is_alive(run.leader));
    assert!(!process::group_alive(run.pgid));
    assert!(process::group_members(run.pgid).is_empty());
    assert_eq!(group_rss(run.pgid), 0);
    assert!(!process::group_all_stopped(run.pgid));
}

#[test]
fn spawn_records_identity_even_when_the_leader_exits_at_once() {
    let mut guard = GroupGuard::new();
    for _ in 0..20 {
        let (run, _out) = start(&mut guard, &spec(&["exit"], &[]));
        assert!(run.leader.start_time > 0);
        assert_eq!(
            process::proc_info(run.leader.pid).map(|p| p.start_time),
            Some(run.leader.start_time)
        );
    }
}

#[test]
fn missing_program_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-program");
    let spec = SpawnSpec {
        argv: vec![missing.display().to_string(), "x".into()],
        cwd: None,
        env: BTreeMap::new(),
    };
    let err = process::spawn(&spec).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let msg = err.to_string();
    assert!(msg.contains("no-such-program"), "{msg}");
    assert!(msg.contains("not found"), "{msg}");

    let spec = SpawnSpec {
        argv: vec!["paios-surely-not-on-path-3f9a".into()],
        cwd: None,
        env: BTreeMap::new(),
    };
    let msg = process::spawn(&spec).unwrap_err().to_string();
    assert!(msg.contains("paios-surely-not-on-path-3f9a"), "{msg}");

    // A file that is not executable.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "not a program").unwrap();
    let spec = SpawnSpec {
        argv: vec![plain.display().to_string()],
        cwd: None,
        env: BTreeMap::new(),
    };
    let err = process::spawn(&spec).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("plain"));
}

#[test]
fn missing_cwd_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(&["exit"], &[]);
    s.cwd = Some(dir.path().join("gone"));
    let err = process::spawn(&s).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let msg = err.to_string();
    assert!(
        msg.contains("gone") && msg.contains("working directory"),
        "{msg}"
    );

    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    s.cwd = Some(file);
    let msg = process::spawn(&s).unwrap_err().to_string();
    assert!(msg.contains("not a directory"), "{msg}");
}

#[test]
fn signal_group_refuses_own_group_and_init() {
    for pgid in [0, 1, -1] {
        let err = process::signal_group(pgid, libc::SIGKILL).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("refusing"));
    }
}

#[test]
fn group_rss_counts_resident_memory() {
    let mut guard = GroupGuard::new();
    let (run, _out) = start(&mut guard, &spec(&["alloc", "200", "64"], &[]));
    assert!(group_rss(run.pgid) > 0);
    assert!(
        wait_until(WAIT, || group_rss(run.pgid) > 32 << 20),
        "rss stayed at {}",
        group_rss(run.pgid)
    );
    process::signal_group(run.pgid, libc::SIGKILL).unwrap();
    assert!(wait_until(WAIT, || !process::group_alive(run.pgid)));
    assert_eq!(group_rss(run.pgid), 0);
}

#[test]
fn group_all_stopped_follows_sigstop_and_sigcont() {
    let mut guard = GroupGuard::new();
    let (run, out) = start(&mut guard, &spec(&["forker", "1"], &[]));
    out.lines(2, WAIT);
    assert!(!process::group_all_stopped(run.pgid));

    process::signal_group(run.pgid, libc::SIGSTOP).unwrap();
    assert!(wait_until(WAIT, || process::group_all_stopped(run.pgid)));
    assert!(process::group_alive(run.pgid), "stopped is alive");

    process::signal_group(run.pgid, libc::SIGCONT).unwrap();
    assert!(wait_until(WAIT, || !process::group_all_stopped(run.pgid)));
    process::signal_group(run.pgid, libc::SIGKILL).unwrap();
    assert!(wait_until(WAIT, || !process::group_alive(run.pgid)));
}

#[test]
fn child_gets_env_cwd_null_stdin_own_group_and_clean_signals() {
    if ran_in_own_process(
        module_path!(),
        "child_gets_env_cwd_null_stdin_own_group_and_clean_signals",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut guard = GroupGuard::new();
    let mut s = spec(&["inspect", "PAIOS_TEST_VALUE"], &[]);
    s.env
        .insert("PAIOS_TEST_VALUE".into(), "hello world=1".into());
    s.cwd = Some(dir.path().to_path_buf());

    // Block a signal in this thread: the child must not inherit the mask.
    let mut block = nix::sys::signal::SigSet::empty();
    block.add(nix::sys::signal::Signal::SIGUSR1);
    let mut old = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&block),
        Some(&mut old),
    )
    .unwrap();
    // And ignore SIGHUP, as a paiosd started under `nohup` would: exec keeps SIG_IGN.
    // SAFETY: SIG_IGN runs no handler code; the old disposition is put back below.
    let old_hup = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }
    .unwrap();
    let started = start(&mut guard, &s);
    // SAFETY: restores the disposition saved above.
    unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGHUP, old_hup) }.unwrap();
    nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&old), None)
        .unwrap();
    let (run, out) = started;

    let lines = out.lines(6, WAIT);
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(lines[0], format!("cwd {}", cwd.display()));
    assert_eq!(lines[1], "env hello world=1");
    assert_eq!(lines[2], "stdin 0");
    assert_eq!(lines[3], format!("pid {0} pgid {0}", run.leader.pid));
    assert_eq!(lines[4], "blocked ");
    assert_eq!(lines[5], "ignored ");

    // paiosd's own environment is passed on too.
    let mut s = spec(&["inspect", "PATH"], &[]);
    s.cwd = None;
    let (_run, out) = start(&mut guard, &s);
    let lines = out.lines(2, WAIT);
    assert_eq!(
        lines[1],
        format!(
            "env {}",
            std::env::var("PATH").unwrap_or_else(|_| "-unset-".into())
        )
    );
}

#[test]
fn output_pipes_carry_stdout_and_stderr_and_are_close_on_exec() {
    let mut guard = GroupGuard::new();
    let run = process::spawn(&spec(&["crasher", "4"], &[])).unwrap();
    guard.spawned(&run);
    for fd in [&run.stdout, &run.stderr] {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );
    }
    let Spawned { stdout, stderr, .. } = run;
    let err = LineReader::new(stderr);
    assert_eq!(err.line(WAIT).as_deref(), Some("crash 4"));
    let out = LineReader::new(stdout);
    assert_eq!(
        out.line(WAIT),
        None,
        "stdout closes empty when the crasher exits"
    );
}

#[test]
fn spew_output_arrives_complete() {
    let mut guard = GroupGuard::new();
    let (_run, out) = start(&mut guard, &spec(&["spew", "5000"], &[]));
    let lines = out.lines(5000, WAIT);
    assert_eq!(lines[0], "line 1");
    assert_eq!(lines[4999], "line 5000");
    assert_eq!(out.line(WAIT), None);
}

#[cfg(target_os = "linux")]
#[test]
fn leader_is_killed_when_the_spawning_thread_exits() {
    // PR_SET_PDEATHSIG follows the spawning thread, which is why paiosd spawns from its
    // main thread; here a short-lived thread shows that the leader goes with it.
    let mut guard = GroupGuard::new();
    let run = std::thread::spawn(|| process::spawn(&spec(&["sleeper"], &[])).unwrap())
        .join()
        .unwrap();
    guard.spawned(&run);
    assert!(wait_until(WAIT, || !process::is_alive(run.leader)));
    let info = process::proc_info(run.leader.pid).expect("our zombie");
    assert_eq!(info.state, 'Z');
}

#[test]
fn list_processes_shows_a_spawned_group() {
    let mut guard = GroupGuard::new();
    let (run, out) = start(&mut guard, &spec(&["forker", "1"], &[]));
    let descendants = pids_of(&out.lines(2, WAIT));
    let all = process::list_processes();
    let leader = all
        .iter()
        .find(|p| p.pid == run.leader.pid)
        .expect("leader listed");
    assert_eq!(leader.identity(), run.leader);
    assert_eq!(leader.ppid, std::process::id() as i32);
    assert_eq!(leader.uid, nix::unistd::getuid().as_raw());
    assert_eq!(leader.argv[1..], ["forker", "1"]);
    assert_eq!(
        leader
            .exe
            .as_deref()
            .map(std::fs::canonicalize)
            .and_then(Result::ok),
        std::fs::canonicalize(fixture_path()).ok()
    );
    for pid in descendants {
        let p = all
            .iter()
            .find(|p| p.pid == pid)
            .expect("descendant listed");
        assert_eq!(p.pgid, run.pgid);
    }
}
