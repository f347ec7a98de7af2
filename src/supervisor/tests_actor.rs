//! The actor stepped by hand: a fake [`Os`] records every spawn and signal, lets the
//! test end a run's leader, and moves the clock only when the test says so. The
//! ledger, the logs and the state database are the real ones, in temporary
//! directories; no process is started and nothing sleeps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::actor::{Event, Parts, Supervisor};
use super::model::{Outcome, State};
use super::os::Os;
use crate::control::protocol::{Reply, Request, Response, Target};
use crate::control::ControlMsg;
use crate::dirs::Dirs;
use crate::ledger::Ledger;
use crate::logs::Logs;
use crate::process::{ExitStatus, Identity, ProcInfo, SpawnSpec, Spawned};
use crate::state::StateDb;

/// What the fake OS knows and has been asked to do.
struct World {
    now: Instant,
    wall: DateTime<Utc>,
    next_pid: i32,
    /// Live groups: pgid → it ignores the stop signal (only SIGKILL ends it).
    groups: BTreeMap<i32, bool>,
    /// Leaders that have ended and wait to be reaped.
    ended: Vec<(i32, ExitStatus)>,
    /// Every spawn, in order: (pid, argv).
    spawns: Vec<(i32, Vec<String>)>,
    /// Every signal sent, in order: (pgid, signal).
    signals: Vec<(i32, i32)>,
    /// Groups spawned from now on ignore the stop signal.
    stubborn: bool,
    /// Groups whose leader has exited (and been reported) while members live on.
    leaderless: BTreeSet<i32>,
}

impl World {
    fn end(&mut self, pgid: i32, status: ExitStatus) {
        if self.groups.remove(&pgid).is_some() && !self.leaderless.remove(&pgid) {
            self.ended.push((pgid, status));
        }
    }

    /// The leader exits; the rest of its group lives on until it is signalled.
    fn end_leader_only(&mut self, pgid: i32, status: ExitStatus) {
        if self.groups.contains_key(&pgid) && self.leaderless.insert(pgid) {
            self.ended.push((pgid, status));
        }
    }
}

#[derive(Clone)]
struct FakeOs(Arc<Mutex<World>>);

impl FakeOs {
    fn w(&self) -> MutexGuard<'_, World> {
        self.0.lock().expect("world lock")
    }
}

impl Os for FakeOs {
    fn now(&self) -> Instant {
        self.w().now
    }

    fn wall(&self) -> DateTime<Utc> {
        self.w().wall
    }

    fn jitter(&mut self) -> f64 {
        0.5
    }

    fn sleep(&mut self, d: Duration) {
        let mut w = self.w();
        w.now += d;
        w.wall += chrono::Duration::from_std(d).unwrap_or_default();
    }

    fn spawn(&mut self, spec: &SpawnSpec) -> io::Result<Spawned> {
        let mut w = self.w();
        let pid = w.next_pid;
        w.next_pid += 1;
        let stubborn = w.stubborn;
        w.groups.insert(pid, stubborn);
        w.spawns.push((pid, spec.argv.clone()));
        // The logs read these to end of file at once.
        let null = || std::fs::File::open("/dev/null").map(std::os::fd::OwnedFd::from);
        Ok(Spawned {
            leader: Identity { pid, start_time: 1 },
            pgid: pid,
            stdout: null()?,
            stderr: null()?,
            stdin: None,
        })
    }

    fn spawn_with_input(&mut self, spec: &SpawnSpec) -> io::Result<Spawned> {
        let mut spawned = self.spawn(spec)?;
        let (_read, write) = nix::unistd::pipe()?;
        spawned.stdin = Some(write);
        Ok(spawned)
    }

    fn signal_group(&mut self, pgid: i32, signal: i32) -> io::Result<()> {
        let mut w = self.w();
        w.signals.push((pgid, signal));
        let stubborn = w.groups.get(&pgid).copied().unwrap_or(false);
        if signal == libc::SIGKILL || (signal == libc::SIGTERM && !stubborn) {
            w.end(pgid, ExitStatus::Signal(signal));
        }
        Ok(())
    }

    fn signal_process(&mut self, _pid: i32, _signal: i32) -> io::Result<()> {
        Ok(())
    }

    fn group_exists(&self, pgid: i32) -> bool {
        self.w().groups.contains_key(&pgid)
    }

    fn group_alive(&self, pgid: i32) -> bool {
        self.group_exists(pgid)
    }

    fn is_alive(&self, id: Identity) -> bool {
        self.group_exists(id.pid)
    }

    fn reap(&mut self) -> Vec<(i32, ExitStatus)> {
        std::mem::take(&mut self.w().ended)
    }

    fn processes(&self) -> Vec<ProcInfo> {
        Vec::new()
    }

    fn rss_of(&self, pgids: &[i32]) -> HashMap<i32, u64> {
        pgids.iter().map(|p| (*p, 1 << 20)).collect()
    }

    fn group_stopped(&self, _leader: i32, _pgid: i32) -> bool {
        false
    }
}

/// An actor over the fake OS, with real files in a temporary directory.
struct Rig {
    sup: Supervisor,
    world: FakeOs,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new(services: &[(&str, &str)]) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let dirs = Dirs {
            config: dir.path().join("config"),
            state: dir.path().join("state"),
            logs: dir.path().join("logs"),
        };
        for d in [&dirs.config.join("services.d"), &dirs.state, &dirs.logs] {
            std::fs::create_dir_all(d).expect("create dir");
        }
        let rig_dir = dir.path().to_path_buf();
        for (name, toml) in services {
            write_service(&rig_dir, name, toml);
        }
        let world = FakeOs(Arc::new(Mutex::new(World {
            now: Instant::now(),
            wall: "2026-11-24T07:00:00Z".parse().expect("a time"),
            next_pid: 1000,
            groups: BTreeMap::new(),
            ended: Vec::new(),
            spawns: Vec::new(),
            signals: Vec::new(),
            stubborn: false,
            leaderless: BTreeSet::new(),
        })));
        let config = crate::config::load(&dirs.config);
        assert!(config.errors.is_empty(), "{:?}", config.errors);
        let ledger = Ledger::open(&dirs.ledger_db(), config.global.ledger);
        let logs = Logs::start(&dirs.logs);
        let state_db = StateDb::open(&dirs.state_db()).expect("state db");
        let sup = Supervisor::new(Parts {
            dirs,
            config,
            ledger,
            logs,
            state_db,
            os: Box::new(world.clone()),
            probe_tx: mpsc::unbounded_channel().0,
        });
        let mut rig = Rig { sup, world, dir };
        rig.sup.boot();
        rig
    }

    fn state(&self, name: &str) -> State {
        self.sup.services[name].state()
    }

    fn spawns(&self) -> Vec<(i32, Vec<String>)> {
        self.world.w().spawns.clone()
    }

    fn pid(&self, name: &str) -> i32 {
        let run = self.sup.services[name].run.as_ref();
        run.map(|r| r.leader.pid).expect("a run")
    }

    /// The leader of `name`'s run exits with `code`, taking its group with it.
    fn exit(&mut self, name: &str, code: i32) {
        let pid = self.pid(name);
        self.world.w().end(pid, ExitStatus::Code(code));
        self.sup.handle(Event::Children);
    }

    /// Moves the clock to the next deadline and fires what is due; false if none.
    fn step(&mut self) -> bool {
        let Some(at) = self.sup.next_deadline() else {
            return false;
        };
        {
            let mut w = self.world.w();
            if at > w.now {
                let d = at - w.now;
                w.now = at;
                w.wall += chrono::Duration::from_std(d).unwrap_or_default();
            }
        }
        self.sup.handle(Event::Timers);
        true
    }

    /// Steps timers until `done` holds, for at most `limit` of fake time.
    fn step_until(&mut self, limit: Duration, done: impl Fn(&Rig) -> bool) {
        let start = self.world.w().now;
        while !done(self) {
            assert!(self.world.w().now - start <= limit, "not reached in time");
            assert!(self.step(), "nothing left to wait for");
        }
    }

    fn request(&mut self, request: Request) -> oneshot::Receiver<Response> {
        let (reply, rx) = oneshot::channel();
        self.sup
            .handle(Event::Control(ControlMsg { request, reply }));
        rx
    }

    fn close(mut self) {
        self.sup.close();
        drop(self.dir);
    }
}

fn write_service(dir: &std::path::Path, name: &str, toml: &str) {
    let path = dir.join("config/services.d").join(format!("{name}.toml"));
    std::fs::write(path, toml).expect("write service");
}

fn target(name: &str) -> Target {
    Target {
        names: vec![name.to_string()],
        all: false,
    }
}

const CRASHER: &str = "command = [\"/fake/crasher\"]\n[restart]\npolicy = \"on-failure\"\n\
    backoff = { initial = \"100ms\", max = \"100ms\", factor = 1.0, jitter = 0.0 }\n\
    limit = { burst = 2, window = \"1m\", cooldown = \"5s\" }\n";

#[tokio::test]
async fn a_crash_backs_off_then_restarts() {
    let mut rig = Rig::new(&[("web", CRASHER)]);
    assert_eq!(rig.state("web"), State::Running);
    let t0 = rig.world.w().now;
    rig.exit("web", 3);
    assert_eq!(rig.state("web"), State::Backoff);
    let last = rig.sup.services["web"]
        .last_exit
        .clone()
        .expect("last exit");
    assert_eq!(last.outcome, Outcome::Crashed);
    assert_eq!(
        rig.spawns().len(),
        1,
        "no restart before the backoff is over"
    );
    rig.step_until(Duration::from_secs(1), |r| r.spawns().len() == 2);
    assert_eq!(rig.world.w().now - t0, Duration::from_millis(100));
    assert_eq!(rig.state("web"), State::Running);
    let run = rig.sup.services["web"].run.clone().expect("a run");
    assert_eq!(
        (run.attempt, run.delay),
        (1, Some(Duration::from_millis(100)))
    );
    rig.close();
}

#[tokio::test]
async fn a_crash_loop_fails_then_retries_after_the_cooldown() {
    let mut rig = Rig::new(&[("web", CRASHER)]);
    for restarts in 1..=2 {
        rig.exit("web", 1);
        assert_eq!(rig.state("web"), State::Backoff);
        rig.step_until(Duration::from_secs(1), |r| r.spawns().len() == restarts + 1);
    }
    let failed_at = rig.world.w().now;
    rig.exit("web", 1);
    assert_eq!(rig.state("web"), State::Failed);
    let (word, detail) = super::status::state_of(&rig.sup.services["web"], failed_at);
    assert_eq!(word.as_str(), "failed");
    assert!(detail.is_some_and(|d| d.starts_with("crash loop; retrying at")));
    rig.step_until(Duration::from_secs(6), |r| r.spawns().len() == 4);
    assert_eq!(rig.world.w().now - failed_at, Duration::from_secs(5));
    assert_eq!(rig.state("web"), State::Running);
    // The cooldown forgot the loop: the next crash backs off again.
    rig.exit("web", 1);
    assert_eq!(rig.state("web"), State::Backoff);
    rig.close();
}

#[tokio::test]
async fn a_stop_kills_the_group_after_its_grace() {
    let toml = "command = [\"/fake/stubborn\"]\n[stop]\ngrace = \"500ms\"\n";
    let mut rig = Rig::new(&[]);
    rig.world.w().stubborn = true;
    write_service(rig.dir.path(), "stubborn", toml);
    rig.sup.handle(Event::Reload);
    assert_eq!(rig.state("stubborn"), State::Running);
    let pgid = rig.pid("stubborn");
    let t0 = rig.world.w().now;
    let mut reply = rig.request(Request::Stop {
        target: target("stubborn"),
        wait: true,
    });
    assert_eq!(rig.state("stubborn"), State::Stopping);
    assert_eq!(
        rig.world.w().signals,
        vec![(pgid, libc::SIGCONT), (pgid, libc::SIGTERM)]
    );
    assert!(
        reply.try_recv().is_err(),
        "answered before the group is empty"
    );
    rig.step_until(Duration::from_secs(1), |r| {
        r.sup.services["stubborn"].run.is_none()
    });
    let signals = rig.world.w().signals.clone();
    assert_eq!(signals.last(), Some(&(pgid, libc::SIGKILL)));
    assert!(rig.world.w().now - t0 >= Duration::from_millis(500));
    assert_eq!(rig.state("stubborn"), State::Stopped);
    let last = rig.sup.services["stubborn"]
        .last_exit
        .clone()
        .expect("last exit");
    assert_eq!(last.outcome, Outcome::Killed);
    match reply.try_recv() {
        Ok(Response::Ok(Reply::Ops { results })) => {
            assert!(results[0].ok, "{results:?}");
            assert_eq!(results[0].state, "stopped");
        }
        other => panic!("unexpected answer {other:?}"),
    }
    assert_eq!(rig.spawns().len(), 1, "a stopped service is not restarted");
    rig.close();
}

#[tokio::test]
async fn a_reload_restarts_a_changed_service_with_its_new_command() {
    let mut rig = Rig::new(&[("api", "command = [\"/fake/api\", \"v1\"]\n")]);
    let old = rig.pid("api");
    write_service(rig.dir.path(), "api", "command = [\"/fake/api\", \"v2\"]\n");
    write_service(rig.dir.path(), "new", "command = [\"/fake/new\"]\n");
    rig.sup.handle(Event::Reload);
    // The old group took SIGTERM and ended; its exit is reaped with the next SIGCHLD.
    assert!(rig.world.w().signals.contains(&(old, libc::SIGTERM)));
    rig.sup.handle(Event::Children);
    let argvs: BTreeSet<Vec<String>> = rig.spawns().into_iter().map(|(_, a)| a).collect();
    let want: BTreeSet<Vec<String>> = [
        vec!["/fake/api".to_string(), "v1".to_string()],
        vec!["/fake/api".to_string(), "v2".to_string()],
        vec!["/fake/new".to_string()],
    ]
    .into();
    assert_eq!(argvs, want);
    assert_eq!(rig.state("api"), State::Running);
    assert_eq!(rig.state("new"), State::Running);
    assert_ne!(rig.pid("api"), old);
    let last = rig.sup.services["api"]
        .last_exit
        .clone()
        .expect("last exit");
    assert_eq!(last.outcome, Outcome::Stopped);
    rig.close();
}

/// `run` is driven in-process: no signal of the test process is involved, a reload is
/// asked for through its channel, and it returns once the token is cancelled.
#[tokio::test]
async fn run_ends_when_its_shutdown_token_is_cancelled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dirs = Dirs {
        config: dir.path().join("config"),
        state: dir.path().join("state"),
        logs: dir.path().join("logs"),
    };
    std::fs::create_dir_all(dirs.config.join("services.d")).expect("config dir");
    dirs.create().expect("state and log dirs");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (reload, reloads) = mpsc::channel(1);
    let daemon = tokio::spawn(super::run(dirs.clone(), shutdown.clone(), reloads));
    reload.send(()).await.expect("reload asked for");
    shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), daemon).await;
    let result = ended
        .expect("run returned in time")
        .expect("run did not panic");
    assert!(result.is_ok(), "{result:?}");
    let db = StateDb::open(&dirs.state_db()).expect("state db");
    assert!(db.live_runs().expect("live runs").is_empty());
}

/// Promise 2: a leader that exits while its group lives on (here a member that ignores
/// SIGTERM) gets no successor until the group is empty, however long that takes.
#[tokio::test]
async fn no_new_run_starts_while_the_old_group_outlives_its_leader() {
    let toml =
        "command = [\"/fake/web\"]\n[restart]\npolicy = \"always\"\n[stop]\ngrace = \"2s\"\n";
    let mut rig = Rig::new(&[]);
    rig.world.w().stubborn = true;
    write_service(rig.dir.path(), "web", toml);
    rig.sup.handle(Event::Reload);
    let pgid = rig.pid("web");
    let t0 = rig.world.w().now;
    rig.world.w().end_leader_only(pgid, ExitStatus::Code(1));
    rig.sup.handle(Event::Children);
    assert!(rig.world.w().signals.contains(&(pgid, libc::SIGTERM)));
    while rig.world.w().groups.contains_key(&pgid) {
        assert_eq!(rig.spawns().len(), 1, "a new run beside a live group");
        assert!(rig.step(), "nothing left to wait for");
        assert!(
            rig.world.w().now - t0 <= Duration::from_secs(5),
            "never killed"
        );
    }
    assert!(
        rig.world.w().now - t0 >= Duration::from_secs(2),
        "killed before its grace"
    );
    assert_eq!(rig.world.w().signals.last(), Some(&(pgid, libc::SIGKILL)));
    rig.step_until(Duration::from_secs(5), |r| r.spawns().len() == 2);
    assert_eq!(rig.state("web"), State::Running);
    assert_ne!(rig.pid("web"), pgid);
    rig.close();
}

/// A service a reload removed is forgotten once its run ends, even when a stop or a
/// start for it arrives while that run is still ending; it is never started again
/// from the file that is gone.
#[tokio::test]
async fn a_removed_service_stays_removed_when_stopped_or_started_while_it_ends() {
    for request in ["stop", "start", "restart"] {
        let toml = "command = [\"/fake/old\"]\n[stop]\ngrace = \"1s\"\n";
        let mut rig = Rig::new(&[]);
        rig.world.w().stubborn = true;
        write_service(rig.dir.path(), "old", toml);
        rig.sup.handle(Event::Reload);
        let pgid = rig.pid("old");
        std::fs::remove_file(rig.dir.path().join("config/services.d/old.toml"))
            .expect("remove the file");
        rig.sup.handle(Event::Reload);
        assert_eq!(rig.state("old"), State::Stopping, "{request}");
        let target = target("old");
        let mut reply = rig.request(match request {
            "stop" => Request::Stop { target, wait: true },
            "start" => Request::Start { target, wait: true },
            _ => Request::Restart { target, wait: true },
        });
        rig.step_until(Duration::from_secs(3), |r| {
            !r.sup.services.contains_key("old")
        });
        assert!(!rig.world.w().groups.contains_key(&pgid), "{request}");
        assert_eq!(
            rig.spawns().len(),
            1,
            "{request}: started from a removed file"
        );
        match reply.try_recv() {
            Ok(Response::Ok(Reply::Ops { results })) => {
                assert_eq!(results[0].state, "removed", "{request}: {results:?}");
                assert_eq!(results[0].ok, request == "stop", "{request}: {results:?}");
            }
            other => panic!("{request}: unexpected answer {other:?}"),
        }
        rig.close();
    }
}

const PER_CLIENT: &str = "command = [\"/fake/mcp\"]\n[mcp]\ntransport = \"stdio\"\n\
    [stop]\nstdin_grace = \"2s\"\ngrace = \"5s\"\n";

/// A bridge says hello to `server`; the actor's answer.
fn hello(rig: &mut Rig, server: &str, pid: i32) -> crate::mcp::serve::Admit {
    let (reply, mut rx) = oneshot::channel();
    let hello = crate::mcp::Hello {
        paios_mcp: crate::mcp::PROTOCOL_VERSION,
        client_pid: pid,
        client_command: Some("editor".into()),
    };
    rig.sup.handle(Event::Mcp(crate::mcp::serve::McpMsg::Hello {
        service: server.to_string(),
        hello,
        reply,
    }));
    rx.try_recv().expect("answered at once")
}

#[tokio::test]
async fn a_client_run_is_stopped_stdin_first_then_by_signal_after_stdin_grace() {
    use crate::mcp::serve::{Admit, McpMsg};
    let mut rig = Rig::new(&[("mcp", PER_CLIENT)]);
    // A per-client server starts nothing of its own.
    assert!(rig.spawns().is_empty());
    assert!(rig.sup.services["mcp"].is_up());
    rig.world.w().stubborn = true;
    let Admit::Stdio {
        client,
        close_stdin,
        end,
        ..
    } = hello(&mut rig, "mcp", 42)
    else {
        panic!("not admitted");
    };
    assert_eq!(rig.spawns().len(), 1);
    let entry = format!("mcp#{client}");
    let pid = rig.pid(&entry);
    let t0 = rig.world.w().now;
    rig.sup.handle(Event::Mcp(McpMsg::Gone { client }));
    // Stdin is closed first; no signal yet.
    assert!(close_stdin.is_cancelled());
    assert!(rig.world.w().signals.is_empty());
    assert_eq!(rig.state(&entry), State::Stopping);
    rig.step_until(Duration::from_secs(3), |r| !r.world.w().signals.is_empty());
    assert_eq!(rig.world.w().now - t0, Duration::from_secs(2));
    assert_eq!(
        rig.world.w().signals,
        vec![(pid, libc::SIGCONT), (pid, libc::SIGTERM)]
    );
    // It ignores SIGTERM: SIGKILL after the grace, then the entry is gone.
    rig.step_until(Duration::from_secs(10), |r| {
        !r.sup.services.contains_key(&entry)
    });
    assert_eq!(rig.world.w().now - t0, Duration::from_secs(7));
    assert_eq!(rig.world.w().signals.last(), Some(&(pid, libc::SIGKILL)));
    assert!(end.is_cancelled(), "the connection outlived its run");
    assert!(rig.sup.mcp_status("mcp").expect("mcp").clients.is_empty());
    rig.close();
}

#[tokio::test]
async fn a_client_run_that_exits_on_stdin_eof_needs_no_signal() {
    use crate::mcp::serve::{Admit, McpMsg};
    let mut rig = Rig::new(&[("mcp", PER_CLIENT)]);
    let Admit::Stdio { client, .. } = hello(&mut rig, "mcp", 42) else {
        panic!("not admitted");
    };
    let entry = format!("mcp#{client}");
    rig.sup.handle(Event::Mcp(McpMsg::Gone { client }));
    rig.exit(&entry, 0);
    assert!(!rig.sup.services.contains_key(&entry));
    assert!(rig.world.w().signals.is_empty());
    // No restart for that client, and no run of the server's own.
    assert_eq!(rig.spawns().len(), 1);
    // A stopped server refuses with the fix.
    let rx = rig.request(Request::Stop {
        target: target("mcp"),
        wait: true,
    });
    drop(rx);
    let Admit::Refused { reason, fix } = hello(&mut rig, "mcp", 43) else {
        panic!("a stopped server admitted a client");
    };
    assert!(reason.contains("mcp is stopped"), "{reason}");
    assert_eq!(fix, "paiosctl start mcp");
    rig.close();
}
