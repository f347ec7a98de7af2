//! The fast core of the fault-injection suite (integration/faults.rs runs the full
//! scenarios): paiosd SIGKILLed and started again ends every process of the old runs
//! before starting one new run per service; with its state database deleted or corrupt
//! it falls back to stray detection; stopped processes and groups are stopped anyway;
//! a process that leaves its group with `setsid` is reported as an escape and ended
//! with its run. Plus `paiosctl doctor`, and the identity check on a real process: a
//! recorded PID that now belongs to another program is left alone.
//!
//! Leftovers are counted by the PIDs the fixtures recorded (with their start times),
//! never by name; every service's argv carries the test's own temp path, so no test
//! here can mistake another test's processes for its own.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{text, Daemon};
use common::{fixture_path, toml_str, wait_until, GroupGuard, TestDirs};
use paios::process::{self, Identity};

/// A service file running the fixture in `mode`, tagged with `tag` (ignored by the
/// fixture, unique per test) and recording its PIDs in `pids`.
fn service(mode: &[&str], tag: &str, pids: &Path, extra: &str) -> String {
    let mut argv = vec![toml_str(&fixture_path().display().to_string())];
    argv.extend(mode.iter().map(|a| toml_str(a)));
    argv.push(toml_str(tag));
    format!(
        "command = [{}]\nenv = {{ FIXTURE_PIDS = {} }}\n{extra}",
        argv.join(", "),
        toml_str(&pids.display().to_string())
    )
}

/// Identities of the PIDs in a `FIXTURE_PIDS` file that are alive now.
fn identities(path: &Path) -> Vec<Identity> {
    common::read_pids(path)
        .into_iter()
        .filter_map(|pid| process::proc_info(pid).filter(|p| p.is_live()))
        .map(|p| p.identity())
        .collect()
}

fn survivors(ids: &[Identity]) -> Vec<i32> {
    ids.iter()
        .filter(|id| process::is_alive(**id))
        .map(|id| id.pid)
        .collect()
}

/// Ledger entries (`paiosctl --json ledger`), oldest first.
fn ledger(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.ctl(&["--json", "ledger", "--limit", "0"]);
    let mut rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    rows.reverse();
    rows
}

fn events(d: &Daemon, event: &str) -> Vec<serde_json::Value> {
    ledger(d)
        .into_iter()
        .filter(|r| r["outcome"] == event)
        .collect()
}

fn wait_event(d: &Daemon, event: &str, n: usize) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    wait_until(Duration::from_secs(10), || {
        found = events(d, event);
        found.len() >= n
    });
    assert!(
        found.len() >= n,
        "expected {n} `{event}` entries in the ledger, got {found:?}; ledger: {:?}",
        ledger(d)
    );
    found
}

/// Starts `n` forker services (leader, 2 children, 2 grandchildren each), waits for all
/// their PIDs, and returns the files the PIDs are in.
fn start_forkers(n: usize, extra: &str) -> (Daemon, Vec<std::path::PathBuf>) {
    let dirs = TestDirs::new();
    let tag = dirs.root.path().display().to_string();
    let mut files = Vec::new();
    for i in 0..n {
        let pids = dirs.file(&format!("f{i}.pids"));
        dirs.write_service(
            &format!("f{i}"),
            &service(&["forker", "2"], &tag, &pids, extra),
        );
        files.push(pids);
    }
    let d = Daemon::start_in(dirs);
    for (i, f) in files.iter().enumerate() {
        assert!(
            wait_until(Duration::from_secs(15), || common::read_pids(f).len() >= 5),
            "f{i} recorded {:?}",
            common::read_pids(f)
        );
        d.pids_from(f);
        d.wait_state(&format!("f{i}"), "running", Duration::from_secs(10));
    }
    (d, files)
}

fn old_ids(files: &[std::path::PathBuf]) -> Vec<Identity> {
    files.iter().flat_map(|f| identities(f)).collect()
}

/// After a restart of paiosd: every service has exactly one run, and it is new.
fn assert_one_new_run_each(d: &Daemon, n: usize, old: &[Identity]) {
    let old_pids: BTreeSet<i32> = old.iter().map(|id| id.pid).collect();
    for i in 0..n {
        let row = d.wait_state(&format!("f{i}"), "running", Duration::from_secs(15));
        let pid = row["pid"].as_i64().unwrap_or(0) as i32;
        assert!(!old_pids.contains(&pid), "f{i} runs as {pid}, an old PID");
    }
    let rows = d.status();
    assert_eq!(rows.len(), n);
    let pgids: BTreeSet<i64> = rows.iter().filter_map(|r| r["pgid"].as_i64()).collect();
    assert_eq!(pgids.len(), n, "one group per service: {rows:?}");
}

#[test]
fn kill9_then_start_ends_every_old_process_before_one_new_run_each() {
    let (mut d, files) = start_forkers(3, "");
    d.kill9();
    let old = old_ids(&files);
    // The children and grandchildren outlive paiosd (only leaders get PDEATHSIG on Linux).
    assert!(
        old.len() >= 12,
        "expected the old groups to outlive paiosd, alive: {old:?}"
    );
    d.launch();
    let left = survivors(&old);
    assert!(
        left.is_empty(),
        "old processes survived the sweep: {left:?}"
    );
    assert_one_new_run_each(&d, 3, &old);
    wait_event(&d, "unclean_end", 1);
    let swept = wait_event(&d, "swept", 3);
    let services: BTreeSet<String> = swept
        .iter()
        .filter_map(|r| r["service"].as_str().map(String::from))
        .collect();
    assert_eq!(services.len(), 3, "{swept:?}");
}

fn kill9_lose_records_restart(damage: impl FnOnce(&Path)) {
    let (mut d, files) = start_forkers(2, "");
    // What tells the next start that a paiosd ran here before.
    wait_event(&d, "daemon_start", 1);
    d.kill9();
    let old = old_ids(&files);
    assert!(old.len() >= 8, "alive after kill -9: {old:?}");
    let state = d.dirs.state.join("state.sqlite");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", state.display()));
    }
    damage(&state);
    d.launch();
    let left = survivors(&old);
    assert!(
        left.is_empty(),
        "old processes survived the fallback: {left:?}"
    );
    assert_one_new_run_each(&d, 2, &old);
    wait_event(&d, "state_unreadable", 1);
    wait_event(&d, "sweep_fallback", 1);
    wait_event(&d, "stray_killed", 1);
}

#[test]
fn deleted_state_database_falls_back_to_stray_detection() {
    kill9_lose_records_restart(|state| std::fs::remove_file(state).expect("remove state.sqlite"));
}

#[test]
fn corrupt_state_database_falls_back_to_stray_detection() {
    kill9_lose_records_restart(|state| {
        std::fs::write(state, vec![0xA5u8; 8192]).expect("corrupt state.sqlite")
    });
}

#[test]
fn stopped_group_is_stopped_within_grace() {
    let (d, files) = start_forkers(1, "[stop]\ngrace = \"5s\"\n");
    let row = d.row("f0");
    let pgid = row["pgid"].as_i64().unwrap() as i32;
    process::signal_group(pgid, libc::SIGSTOP).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        process::group_all_stopped(pgid)
    }));
    let ids = old_ids(&files);
    let began = Instant::now();
    let out = d.ctl(&["stop", "f0"]);
    let took = began.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        took < Duration::from_secs(4),
        "a stopped group took {took:?}: SIGCONT must come before SIGTERM"
    );
    assert!(survivors(&ids).is_empty());
    assert!(!process::group_alive(pgid));
}

#[test]
fn group_stopped_after_paiosd_died_is_swept() {
    let (mut d, files) = start_forkers(1, "");
    let pgid = d.row("f0")["pgid"].as_i64().unwrap() as i32;
    d.kill9();
    // Stopped only now: stopped before paiosd's death, the kernel's orphaned-group
    // SIGHUP + SIGCONT would do the sweep's work.
    assert!(wait_until(Duration::from_secs(5), || {
        !process::group_members(pgid).is_empty()
    }));
    process::signal_group(pgid, libc::SIGSTOP).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        process::group_all_stopped(pgid)
    }));
    let old = old_ids(&files);
    d.launch();
    assert!(survivors(&old).is_empty(), "{:?}", survivors(&old));
    assert!(!process::group_alive(pgid));
}

fn setsid_daemon() -> (Daemon, std::path::PathBuf) {
    let dirs = TestDirs::new();
    let tag = dirs.root.path().display().to_string();
    let pids = dirs.file("esc.pids");
    dirs.write_service("esc", &service(&["setsid"], &tag, &pids, ""));
    let d = Daemon::start_in(dirs);
    assert!(wait_until(Duration::from_secs(10), || common::read_pids(
        &pids
    )
    .len()
        >= 2));
    d.pids_from(&pids);
    (d, pids)
}

/// The escapee's identity: the recorded process whose group is not the run's.
fn escapee(pids: &Path, run_pgid: i32) -> Identity {
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = common::read_pids(pids)
            .into_iter()
            .filter_map(process::proc_info)
            .find(|p| p.pgid != run_pgid && p.pgid == p.pid);
        found.is_some()
    });
    found.expect("the setsid child left the group").identity()
}

#[test]
fn setsid_escape_is_reported_and_ended_with_its_run() {
    let (d, pids) = setsid_daemon();
    let pgid = d.wait_state("esc", "running", Duration::from_secs(10))["pgid"]
        .as_i64()
        .unwrap() as i32;
    let esc = escapee(&pids, pgid);
    let found = wait_event(&d, "escape", 1);
    assert!(
        found[0]["detail"]
            .as_str()
            .is_some_and(|c| c.contains(&esc.pid.to_string())),
        "{found:?}"
    );
    let out = d.ctl(&["stop", "esc"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!process::is_alive(esc), "the escapee outlived its run");
    assert!(!process::group_alive(pgid));
}

#[test]
fn setsid_escape_is_swept_after_paiosd_is_killed() {
    let (mut d, pids) = setsid_daemon();
    let pgid = d.wait_state("esc", "running", Duration::from_secs(10))["pgid"]
        .as_i64()
        .unwrap() as i32;
    let esc = escapee(&pids, pgid);
    wait_event(&d, "escape", 1);
    d.kill9();
    assert!(process::is_alive(esc), "the escapee should outlive paiosd");
    d.launch();
    assert!(!process::is_alive(esc), "the escapee survived the sweep");
    d.wait_state("esc", "running", Duration::from_secs(10));
}

/// A child of this test in its own group, killed on drop.
struct Loose {
    child: std::process::Child,
    guard: GroupGuard,
}

impl Loose {
    fn start(argv: &[String]) -> Loose {
        use std::os::unix::process::CommandExt;
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the fixture");
        let mut guard = GroupGuard::new();
        guard.group(child.id() as i32);
        guard.pid(child.id() as i32);
        Loose { child, guard }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Loose {
    fn drop(&mut self) {
        let _ = &self.guard;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn recorded_pid_now_another_program_is_left_alone() {
    // The sweep reaps with `waitpid(-1)`, as paiosd does at start-up.
    if common::ran_in_own_process(
        module_path!(),
        "recorded_pid_now_another_program_is_left_alone",
    ) {
        return;
    }
    let fixture = fixture_path().display().to_string();
    let other = Loose::start(&[fixture, "sleeper".into()]);
    let pid = other.pid();
    assert!(wait_until(Duration::from_secs(5), || process::start_time(
        pid
    )
    .is_some()));
    let now = process::start_time(pid).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = paios::state::StateDb::open(&dir.path().join("state.sqlite")).unwrap();
    let recorded = paios::state::LiveRun {
        service: "kb".into(),
        pid,
        pgid: pid,
        // The run paiosd recorded started at another time: this PID was handed on.
        start_time: now.saturating_sub(1),
        started_at: "2026-01-01T00:00:00Z".into(),
        argv: vec!["node".into()],
        stop_signal: libc::SIGKILL,
        grace_ms: 10,
    };
    db.record_run(&recorded).unwrap();
    let swept = paios::supervisor::sweep::sweep(db.live_runs().unwrap());
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].found, paios::supervisor::sweep::Found::Reused);
    assert!(process::is_alive(Identity {
        pid,
        start_time: now
    }));
}

fn doctor(dirs: &TestDirs, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(common::paiosctl_path())
        .args(dirs.args())
        .args(["--json", "doctor"])
        .args(args)
        .output()
        .expect("paiosctl runs");
    let value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor JSON ({e}): {}", text(&out.stdout)));
    (out.status.code(), value)
}

fn stray_pids(report: &serde_json::Value) -> Vec<i64> {
    report["strays"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["pid"].as_i64()).collect())
        .unwrap_or_default()
}

#[test]
fn doctor_finds_a_duplicate_and_kill_ends_it() {
    let dirs = TestDirs::new();
    let tag = dirs.root.path().display().to_string();
    let fixture = fixture_path().display().to_string();
    let argv = vec![fixture.clone(), "sleeper".to_string(), tag.clone()];
    dirs.write_service(
        "kb",
        &format!(
            "command = [{}]\n[stop]\ngrace = \"1s\"\n",
            argv.iter()
                .map(|a| toml_str(a))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    // A different argument: not a duplicate.
    let _other = Loose::start(&[fixture, "sleeper".into(), format!("{tag}-other")]);
    let dup = Loose::start(&argv);
    assert!(wait_until(Duration::from_secs(5), || process::proc_info(
        dup.pid()
    )
    .is_some_and(|p| p.argv == argv)));

    let (code, report) = doctor(&dirs, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(stray_pids(&report), vec![dup.pid() as i64], "{report}");
    assert_eq!(report["strays"][0]["service"], "kb");

    let (code, report) = doctor(&dirs, &["--kill"]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report["ended"][0]["survivors"]
            .as_array()
            .is_some_and(|s| s.is_empty()),
        "{report}"
    );
    assert!(wait_until(Duration::from_secs(5), || process::start_time(
        dup.pid()
    )
    .is_none()));
    assert!(process::is_alive(_other.guard_id()));

    let out = Command::new(common::paiosctl_path())
        .args(dirs.args())
        .args(["--json", "ledger", "--outcome", "stray_killed"])
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains(&dup.pid().to_string()),
        "{}",
        text(&out.stdout)
    );

    let (code, report) = doctor(&dirs, &[]);
    assert_eq!(code, Some(0), "{report}");

    // The ledger `--kill` created is no sign of a previous paiosd: its first start must
    // not report lost records.
    let d = Daemon::start_in(dirs);
    d.wait_state("kb", "running", Duration::from_secs(10));
    let out = d.ctl(&["stop", "kb"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    wait_event(&d, "stopped", 1);
    for event in ["state_unreadable", "sweep_fallback"] {
        assert!(events(&d, event).is_empty(), "{event}: {:?}", ledger(&d));
    }
}

impl Loose {
    fn guard_id(&self) -> Identity {
        process::proc_info(self.pid())
            .map(|p| p.identity())
            .unwrap_or(Identity {
                pid: self.pid(),
                start_time: 0,
            })
    }
}

#[test]
fn doctor_leaves_supervised_runs_alone_and_sees_a_held_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dirs = TestDirs::new();
    let tag = dirs.root.path().display().to_string();
    let pids = dirs.file("kb.pids");
    dirs.write_service(
        "kb",
        &service(
            &["sleeper"],
            &tag,
            &pids,
            &format!(
                "[health]\ntcp = \"127.0.0.1:{port}\"\non_failure = \"alert\"\nstart_period = \"1h\"\n"
            ),
        ),
    );
    let fixture = fixture_path().display().to_string();
    let holder = Loose::start(&[fixture, "tcp".into(), port.to_string()]);
    let d = Daemon::start_in(dirs);
    d.wait_state("kb", "running", Duration::from_secs(10));
    d.pids_from(&pids);
    let mut report = serde_json::Value::Null;
    let seen = wait_until(Duration::from_secs(5), || {
        report = doctor(&d.dirs, &[]).1;
        report["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["kind"] == "port_held"))
    });
    if cfg!(target_os = "linux") {
        assert!(seen, "{report}");
        let detail = report["problems"][0]["detail"].as_str().unwrap_or("");
        assert!(detail.contains(&holder.pid().to_string()), "{report}");
    }
    assert!(
        stray_pids(&report).is_empty(),
        "a supervised run is no stray: {report}"
    );
}

#[test]
fn doctor_reports_a_stale_socket() {
    let dirs = TestDirs::new();
    let sock = dirs.state.join("paiosd.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let (code, report) = doctor(&dirs, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["problems"][0]["kind"], "stale_socket", "{report}");
}

#[test]
fn first_start_has_no_lost_records_to_fall_back_from() {
    let dirs = TestDirs::new();
    let tag = dirs.root.path().display().to_string();
    let pids = dirs.file("kb.pids");
    dirs.write_service("kb", &service(&["sleeper"], &tag, &pids, ""));
    let d = Daemon::start_in(dirs);
    d.wait_state("kb", "running", Duration::from_secs(10));
    d.pids_from(&pids);
    let out = d.ctl(&["stop", "kb"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The ledger keeps the order of one queue: once the stop is there, so is anything
    // recorded at start.
    wait_event(&d, "stopped", 1);
    for event in ["state_unreadable", "sweep_fallback", "unclean_end"] {
        assert!(events(&d, event).is_empty(), "{event}: {:?}", ledger(&d));
    }
}
