//! A run's lifecycle inside the actor: start (once what it comes `after` is up), the
//! leader's exit, the stop sequence (SIGCONT, the stop signal, SIGKILL after the grace)
//! until the group is empty, and the record of the run; what follows is in `after.rs`.
//! The path from SIGCHLD to the next spawn is direct: reap, decide, spawn (or arm the
//! backoff timer), with no polling in between.

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::actor::{describe, duration_ms, kind_of, Supervisor, TAIL_WAIT};
use super::escape;
use super::model::{Hold, LastExit, LeaderExit, Run, Service, State, StopReason, Stopping, SETTLE};
use super::timers::Timer;
use crate::ledger::{Record, RunRecord};
use crate::policy::{self, Ended, Outcome};
use crate::process::{ExitStatus, SpawnSpec, Spawned};
use crate::state::LiveRun;

/// How long the first poll of an emptying group waits; each later poll doubles it up to
/// [`POLL_MAX`]. Short at first because most groups empty within a millisecond of the
/// signal, capped so that a group that takes its full grace costs little.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(20);

impl Supervisor {
    /// Starts `name` if it is wanted, has no run, and everything it comes `after` is up.
    pub(super) fn try_start(&mut self, name: &str) {
        let Some(svc) = self.services.get(name) else {
            return;
        };
        if svc.run.is_some() || self.shutting_down {
            return;
        }
        if svc.is_client_parent() {
            // Its runs are its clients': each starts when a client connects.
            if let Some(svc) = self.services.get_mut(name) {
                svc.rest(Hold::None);
            }
            return;
        }
        let missing: Vec<String> = svc
            .cfg
            .after
            .iter()
            .filter(|dep| !self.services.get(*dep).is_some_and(Service::is_ready))
            .cloned()
            .collect();
        if !missing.is_empty() {
            if let Some(svc) = self.services.get_mut(name) {
                tracing::info!(service = name, "waiting for {}", missing.join(", "));
                svc.rest(Hold::Waiting(missing));
            }
            return;
        }
        self.spawn_run(name);
    }

    pub(super) fn spawn_run(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let mut env = svc.cfg.env.clone();
        // The marker every process of the run inherits: how doctor and the fallback
        // sweep recognise it even after its leader is gone.
        env.extend(crate::process::marker::marker_env(&self.dirs.state, name));
        let spec = SpawnSpec {
            argv: svc.cfg.argv.clone(),
            cwd: svc.cfg.cwd.clone(),
            env,
        };
        let attempt = svc.next_attempt;
        let delay = svc.next_delay.take();
        svc.hold = Hold::None;
        let spawned = if svc.client.is_some() {
            self.os.spawn_with_input(&spec)
        } else {
            self.os.spawn(&spec)
        };
        match spawned {
            Ok(spawned) => {
                // A run's age counts from its spawn, not from the event that began a
                // batch of them (a boot of 200 services takes a while).
                self.reread_clock();
                self.started(name, &spec, spawned, attempt, delay)
            }
            Err(e) => self.spawn_failed(name, &spec, e, attempt, delay),
        }
    }

    fn started(
        &mut self,
        name: &str,
        spec: &SpawnSpec,
        spawned: Spawned,
        attempt: u32,
        delay: Option<Duration>,
    ) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let now = self.now;
        let id = self.next_run_id;
        self.next_run_id += 1;
        let live = LiveRun {
            service: name.to_string(),
            pid: spawned.leader.pid,
            pgid: spawned.pgid,
            start_time: spawned.leader.start_time,
            started_at: now.wall.to_rfc3339(),
            argv: spec.argv.clone(),
            stop_signal: svc.cfg.stop.signal,
            grace_ms: duration_ms(svc.cfg.stop.grace),
        };
        if let Err(e) = self.state_db.record_run(&live) {
            tracing::error!(
                service = name,
                "could not record the live run in the state database: {e}"
            );
        }
        self.leaders.insert(spawned.leader.pid, name.to_string());
        let stdout = stdout_for_log(name, svc, spawned.stdin, spawned.stdout);
        self.logs
            .attach(&svc.cfg.name, id, svc.cfg.logs, stdout, spawned.stderr);
        let (pid, command) = (spawned.leader.pid, spec.argv.join(" "));
        tracing::info!(service = name, pid, attempt, "started {command}");
        svc.run = Some(Run::new(
            id,
            spawned.leader,
            spawned.pgid,
            (now.mono, now.wall),
            attempt,
            delay,
        ));
        svc.enter(if svc.cfg.health.is_some() {
            State::Starting
        } else {
            State::Running
        });
        self.timers.at(now.mono + SETTLE, Timer::Wake);
        self.watch_run(name);
        if self.services.get(name).is_some_and(Service::is_ready) {
            self.start_waiting_dependents(name);
        }
    }

    fn spawn_failed(
        &mut self,
        name: &str,
        spec: &SpawnSpec,
        e: std::io::Error,
        attempt: u32,
        delay: Option<Duration>,
    ) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let at = self.now.wall;
        let command = spec.argv.join(" ");
        tracing::error!(service = name, "could not start {command}: {e}");
        svc.runs_finished += 1;
        svc.last_exit = Some(LastExit {
            status: None,
            outcome: Outcome::SpawnFailed,
            at,
            pid: 0,
        });
        let record = RunRecord {
            service: svc.cfg.name.clone(),
            kind: kind_of(svc).to_string(),
            outcome: Outcome::SpawnFailed.to_string(),
            pid: None,
            pgid: None,
            leader_start_time: None,
            started_at: at.to_rfc3339(),
            ended_at: at.to_rfc3339(),
            duration_ms: 0,
            exit_code: None,
            signal: None,
            attempt,
            delay_ms: delay.map(duration_ms),
            context: Some(format!("{command}: {e}")),
        };
        self.ledger.record(Record::Run(record));
        let ended = Ended {
            exit_at: self.now.mono,
            uptime: Duration::ZERO,
            outcome: Outcome::SpawnFailed,
            by_paiosd: false,
        };
        self.after_run(name, ended);
    }

    /// Services waiting for `name` may be able to start now.
    pub(super) fn start_waiting_dependents(&mut self, name: &str) {
        let waiting: Vec<String> = self
            .services
            .iter()
            .filter(
                |(_, s)| matches!(&s.hold, Hold::Waiting(deps) if deps.iter().any(|d| d == name)),
            )
            .map(|(n, _)| n.clone())
            .collect();
        for dependent in waiting {
            self.try_start(&dependent);
        }
    }

    // ----- exits and group emptying -----------------------------------------------

    /// Collects every ended child and moves the runs whose leader ended forward.
    pub(super) fn reap_all(&mut self) {
        for (pid, status) in self.os.reap() {
            let Some(name) = self.leaders.remove(&pid) else {
                // A grandchild re-parented to paiosd, reaped so it does not linger as a zombie.
                continue;
            };
            self.on_leader_exit(&name, status);
        }
    }

    fn on_leader_exit(&mut self, name: &str, status: ExitStatus) {
        let Some(run) = self.services.get_mut(name).and_then(|s| s.run.as_mut()) else {
            return;
        };
        run.leader_exit = Some(LeaderExit {
            status,
            at: self.now.mono,
            wall: self.now.wall,
        });
        tracing::info!(
            service = name,
            pid = run.leader.pid,
            "exited: {}",
            describe(status)
        );
        let pgid = run.pgid;
        self.scan_escapes(true);
        let Some(run) = self.services.get(name).and_then(|s| s.run.as_ref()) else {
            return;
        };
        let escapees_alive = run
            .escapees
            .iter()
            .any(|e| escape::escaped_alive(&*self.os, e));
        if !self.os.group_exists(pgid) && !escapees_alive {
            self.finish_run(name);
            return;
        }
        // The group outlived its leader: end it before anything new starts (promise 2).
        if run.stopping.is_none() {
            tracing::info!(
                service = name,
                pgid,
                "leader exited; ending the rest of its group"
            );
            self.begin_stop(name, StopReason::LeaderExited);
        } else {
            self.schedule_poll(name);
        }
    }

    /// Starts the stop sequence on `name`'s group: SIGCONT, the stop signal, then
    /// SIGKILL after `grace`, until the group is empty.
    pub(super) fn begin_stop(&mut self, name: &str, reason: StopReason) {
        let stopping = self
            .services
            .get(name)
            .and_then(|s| s.run.as_ref())
            .is_none_or(|r| r.stopping.is_some());
        if stopping {
            return;
        }
        self.scan_escapes(true);
        // The grace counts from this group's signal, not from the event's start (a
        // shutdown signals every group in one event).
        self.reread_clock();
        let now = self.now.mono;
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.enter(if reason == StopReason::Hung {
            State::Hung
        } else {
            State::Stopping
        });
        let Some(run) = svc.run.as_mut() else { return };
        if let Some(h) = &run.health {
            h.cancel.cancel();
        }
        run.stopping = Some(Stopping {
            reason,
            since: now,
            killed: false,
        });
        run.polls = 0;
        if let Some(stdin) = run.stdin.take() {
            // A stdio MCP server's stop begins by closing its stdin: most end by
            // themselves then, and the stop signal waits `stdin_grace` for that.
            stdin.cancel();
            let id = run.id;
            self.timers.at(
                now + svc.cfg.stop.stdin_grace,
                Timer::StdinGrace(name.to_string(), id),
            );
            self.schedule_poll(name);
            return;
        }
        self.signal_stop(name);
    }

    /// The stdin grace of a client run is over: on with the stop signal.
    pub(super) fn on_stdin_grace_over(&mut self, name: &str, run_id: u64) {
        let same = self
            .services
            .get(name)
            .and_then(|s| s.run.as_ref())
            .is_some_and(|r| r.id == run_id && r.stopping.is_some());
        if same {
            self.scan_escapes(true);
            self.reread_clock();
            self.signal_stop(name);
        }
    }

    /// SIGCONT, the stop signal, and SIGKILL after `grace` to a stopping run's group.
    fn signal_stop(&mut self, name: &str) {
        let now = self.now.mono;
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = svc.run.as_mut() else { return };
        let (pgid, id) = (run.pgid, run.id);
        // SIGCONT first so that a stopped group sees the stop signal.
        let _ = self.os.signal_group(pgid, libc::SIGCONT);
        if let Err(e) = self.os.signal_group(pgid, svc.cfg.stop.signal) {
            tracing::warn!(service = name, pgid, "stop signal failed: {e}");
        }
        for e in &run.escapees {
            escape::signal_escaped(&mut *self.os, e, libc::SIGCONT);
            escape::signal_escaped(&mut *self.os, e, svc.cfg.stop.signal);
        }
        self.timers
            .at(now + svc.cfg.stop.grace, Timer::Grace(name.to_string(), id));
        self.schedule_poll(name);
    }

    fn schedule_poll(&mut self, name: &str) {
        let Some(run) = self.services.get_mut(name).and_then(|s| s.run.as_mut()) else {
            return;
        };
        let delay = POLL_FIRST
            .saturating_mul(1 << run.polls.min(10))
            .min(POLL_MAX);
        run.polls += 1;
        let id = run.id;
        self.timers
            .at(self.now.mono + delay, Timer::Poll(name.to_string(), id));
    }

    pub(super) fn on_grace_over(&mut self, name: &str, run_id: u64) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = svc.run.as_mut().filter(|r| r.id == run_id) else {
            return;
        };
        let Some(stopping) = run.stopping.as_mut() else {
            return;
        };
        let escapees_alive = run
            .escapees
            .iter()
            .any(|e| escape::escaped_alive(&*self.os, e));
        if self.os.group_exists(run.pgid) || escapees_alive {
            tracing::warn!(
                service = name,
                pgid = run.pgid,
                "still alive after {}; SIGKILL to the group",
                crate::units::format_duration(svc.cfg.stop.grace)
            );
            stopping.killed = true;
            let _ = self.os.signal_group(run.pgid, libc::SIGKILL);
            for e in &run.escapees {
                escape::signal_escaped(&mut *self.os, e, libc::SIGKILL);
            }
            run.polls = 0;
            self.schedule_poll(name);
        }
    }

    pub(super) fn on_poll(&mut self, name: &str, run_id: u64) {
        self.reap_all();
        let Some(run) = self.services.get(name).and_then(|s| s.run.as_ref()) else {
            return;
        };
        if run.id != run_id {
            return;
        }
        let os = &self.os;
        if (os.group_exists(run.pgid) && os.group_alive(run.pgid))
            || run.escapees.iter().any(|e| escape::escaped_alive(&**os, e))
        {
            self.schedule_poll(name);
        } else if run.leader_exit.is_some() || !os.is_alive(run.leader) {
            // Only zombies are left: those that are paiosd's (re-parented members) are
            // collected now, so that "stopped" also means no trace in the process table.
            self.reap_all();
            let Some(run) = self
                .services
                .get(name)
                .and_then(|s| s.run.as_ref())
                .filter(|r| r.id == run_id)
            else {
                return;
            };
            // A leader shown as a zombie that `waitpid` does not return yet is a
            // multi-threaded process whose main thread has exited while its other
            // threads have not: it is still running (or still exiting), so it is waited
            // for, to be collected with its exit status.
            if run.leader_exit.is_none() && self.os.group_exists(run.pgid) {
                self.schedule_poll(name);
            } else {
                self.finish_run(name);
            }
        } else {
            self.schedule_poll(name);
        }
    }

    /// The run's group is empty: record it and decide what comes next.
    fn finish_run(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = svc.run.take() else { return };
        svc.rest(Hold::None);
        if let Some(h) = &run.health {
            h.cancel.cancel();
        }
        self.leaders.remove(&run.leader.pid);
        escape::forget_escapees(&self.state_db, name, &run.escapees);
        if let Err(e) = self.state_db.remove_run(name, run.pgid) {
            tracing::error!(
                service = name,
                "could not clear the live run from the state database: {e}"
            );
        }
        let (status, exit_at, exit_wall) = run
            .leader_exit
            .map_or((None, self.now.mono, self.now.wall), |e| {
                (Some(e.status), e.at, e.wall)
            });
        let outcome = policy::classify(run.stopping.map(|s| (s.reason, s.killed)), status);
        let uptime = exit_at.saturating_duration_since(run.started);
        svc.runs_finished += 1;
        svc.last_exit = Some(LastExit {
            status,
            outcome,
            at: exit_wall,
            pid: run.leader.pid,
        });
        let kind = kind_of(svc);
        let record = run_record(
            &svc.cfg.name,
            kind,
            &run,
            outcome,
            status,
            exit_wall,
            uptime,
        );
        let client = svc.client;
        self.record_run(record, run.id, outcome);
        let ended = Ended {
            exit_at,
            uptime,
            outcome,
            by_paiosd: policy::by_paiosd(run.stopping.map(|s| s.reason)),
        };
        if let Some(client) = client {
            self.client_run_ended(client, &ended);
        }
        self.after_run(name, ended);
    }

    /// Writes a run record; crashed runs wait (off the actor) for their stderr tail first.
    fn record_run(&mut self, mut record: RunRecord, run_id: u64, outcome: Outcome) {
        if !outcome.wants_stderr_tail() {
            self.ledger.record(Record::Run(record));
            return;
        }
        let tail = self
            .logs
            .stderr_tail(run_id, self.global.ledger.context_lines, TAIL_WAIT);
        let ledger = self.ledger.clone();
        self.tails.retain(|handle| !handle.is_finished());
        self.tails.push(tokio::spawn(async move {
            if let Ok(lines) = tail.await {
                if !lines.is_empty() {
                    let tail = lines.join("\n");
                    record.context = Some(match record.context.take() {
                        Some(why) => format!("{why}\n--- stderr ---\n{tail}"),
                        None => tail,
                    });
                }
            }
            ledger.record(Record::Run(record));
        }));
    }
}

/// The ledger's record of a run that has ended.
fn run_record(
    name: &str,
    kind: &str,
    run: &Run,
    outcome: Outcome,
    status: Option<ExitStatus>,
    ended: chrono::DateTime<chrono::Utc>,
    uptime: Duration,
) -> RunRecord {
    RunRecord {
        service: name.to_string(),
        kind: kind.to_string(),
        outcome: outcome.to_string(),
        pid: Some(run.leader.pid),
        pgid: Some(run.pgid),
        leader_start_time: Some(run.leader.start_time),
        started_at: run.started_wall.to_rfc3339(),
        ended_at: ended.to_rfc3339(),
        duration_ms: duration_ms(uptime),
        exit_code: match status {
            Some(ExitStatus::Code(c)) => Some(c),
            _ => None,
        },
        signal: match status {
            Some(ExitStatus::Signal(s)) => Some(crate::process::signal_name(s)),
            _ => None,
        },
        attempt: run.attempt,
        delay_ms: run.delay.map(duration_ms),
        context: run.hung_context.clone(),
    }
}

/// The read end of a pipe whose write end is already closed: a stream that has ended.
fn closed_pipe() -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::os::fd::AsRawFd;
    let (read, write) = nix::unistd::pipe()?;
    drop(write);
    fcntl(read.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(read)
}

/// What the log reads as a run's stdout. A client's run writes its stdout to its client
/// (both pipes are kept in `svc.pipes`); only its stderr goes to the log, which is given
/// a pipe that is already at its end.
fn stdout_for_log(
    name: &str,
    svc: &mut Service,
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
) -> OwnedFd {
    let Some(stdin) = stdin else {
        return stdout;
    };
    match closed_pipe() {
        Ok(empty) => {
            svc.pipes = Some((stdin, stdout));
            empty
        }
        Err(e) => {
            tracing::error!(service = name, "cannot make a pipe for the log: {e}");
            stdout
        }
    }
}
