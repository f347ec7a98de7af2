//! Control operations inside the actor: start, stop, restart and run, each answered
//! when it is complete (a stop when the group is empty, a start when the run is up),
//! and the status snapshot. An operation in flight is an [`Op`] that the actor checks
//! after every event; nothing here blocks.

use std::time::{Instant, SystemTime};

use tokio::sync::oneshot;

use super::service::{Hold, Service, StopReason};
use super::{error, Supervisor};
use crate::control::protocol::{
    ErrorCode, LastExit as WireLastExit, OpResult, Reply, Response, RunResult, ServiceStatus,
    Target,
};
use crate::process::{self, ExitStatus};

/// How long a scan of group memory is reused by `status`: a script polling status in a
/// loop must not turn into a process-table scan per call.
const RSS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// What an operation waits for, per service.
#[derive(Debug, Clone, Copy)]
pub enum WaitFor {
    /// Up; a run that ends after `runs_finished` passed `marker` means it failed to come up.
    Up { marker: u64 },
    /// No run left: the group is empty.
    Down,
    /// The run started by `run` has ended (`runs_finished` passed `after`).
    RunEnd { after: u64 },
}

#[derive(Debug)]
pub enum OpKind {
    Ops,
    Run,
}

#[derive(Debug)]
pub struct Op {
    kind: OpKind,
    reply: oneshot::Sender<Response>,
    waits: Vec<(String, WaitFor)>,
    /// Results decided up front (names that did not apply).
    fixed: Vec<OpResult>,
}

impl Supervisor {
    /// Resolves the names of a start/stop/restart and hands them to `op`, or answers the
    /// request with the error (an unknown name, or no name and no `--all`).
    pub(super) fn with_targets(
        &mut self,
        target: &Target,
        reply: oneshot::Sender<Response>,
        op: impl FnOnce(&mut Self, Vec<String>, oneshot::Sender<Response>),
    ) {
        match self.targets(target) {
            Ok(names) => op(self, names, reply),
            Err(e) => {
                let _ = reply.send(e);
            }
        }
    }

    fn targets(&self, target: &Target) -> Result<Vec<String>, Response> {
        if !target.all && target.names.is_empty() {
            return Err(error(
                ErrorCode::BadRequest,
                "name at least one service, or use --all",
            ));
        }
        let names = self.resolve(&target.names, target.all)?;
        if target.all {
            return Ok(names
                .into_iter()
                .filter(|n| self.services.get(n).is_some_and(|s| !s.is_task()))
                .collect());
        }
        Ok(names)
    }

    /// `start` (`restart` false) or `restart`: wanted up, a crash loop forgotten, and for
    /// a restart the running group ended first; answered once each run is up (or failed).
    pub(super) fn op_up(
        &mut self,
        names: Vec<String>,
        wait: bool,
        reply: oneshot::Sender<Response>,
        restart: bool,
    ) {
        let mut waits = Vec::new();
        let mut fixed = Vec::new();
        for name in names {
            let Some(svc) = self.services.get_mut(&name) else {
                continue;
            };
            if svc.is_task() {
                fixed.push(not_applicable(&name, "is a task: use `paiosctl run`"));
                continue;
            }
            // The run that ends first (a restart's, or one already stopping) is not a failure.
            let ending = match &svc.run {
                Some(run) => restart || !run.is_up(),
                None => false,
            };
            let marker = svc.runs_finished + u64::from(ending);
            if let Hold::Failed { .. } = svc.hold {
                svc.tracker.clear();
                svc.next_attempt = 0;
                tracing::info!(service = %name, "crash-loop state cleared by hand");
            }
            if restart {
                svc.next_attempt = 0;
            }
            svc.want_up = true;
            match &svc.run {
                Some(_) if restart => {
                    svc.restart_requested = true;
                    self.begin_stop(&name, StopReason::Restart);
                }
                Some(run) if !run.is_up() => svc.restart_requested = true,
                Some(_) => {}
                None => {
                    svc.hold = Hold::None;
                    self.try_start(&name);
                }
            }
            waits.push((name, WaitFor::Up { marker }));
        }
        self.push_op(OpKind::Ops, reply, waits, fixed, wait);
    }

    pub(super) fn op_stop(
        &mut self,
        names: Vec<String>,
        wait: bool,
        reply: oneshot::Sender<Response>,
    ) {
        let mut waits = Vec::new();
        for name in names {
            let Some(svc) = self.services.get_mut(&name) else {
                continue;
            };
            svc.want_up = false;
            svc.restart_requested = false;
            svc.hold = Hold::None;
            if svc.run.is_some() {
                self.begin_stop(&name, StopReason::User);
            }
            waits.push((name, WaitFor::Down));
        }
        self.push_op(OpKind::Ops, reply, waits, Vec::new(), wait);
    }

    pub(super) fn op_run(&mut self, name: String, wait: bool, reply: oneshot::Sender<Response>) {
        if let Err(e) = self.resolve(std::slice::from_ref(&name), false) {
            let _ = reply.send(e);
            return;
        }
        let Some(svc) = self.services.get(&name) else {
            return;
        };
        if !svc.is_task() {
            let _ = reply.send(error(
                ErrorCode::NotApplicable,
                format!("`{name}` is a service, not a task: use `paiosctl start` or `restart`"),
            ));
            return;
        }
        if let Some(run) = &svc.run {
            let _ = reply.send(error(
                ErrorCode::Busy,
                format!(
                    "task `{name}` is already running (pid {}); not starting it twice",
                    run.leader.pid
                ),
            ));
            return;
        }
        let after = svc.runs_finished;
        self.start_task_run(&name);
        self.push_op(
            OpKind::Run,
            reply,
            vec![(name, WaitFor::RunEnd { after })],
            Vec::new(),
            wait,
        );
    }

    fn push_op(
        &mut self,
        kind: OpKind,
        reply: oneshot::Sender<Response>,
        waits: Vec<(String, WaitFor)>,
        fixed: Vec<OpResult>,
        wait: bool,
    ) {
        let op = Op {
            kind,
            reply,
            waits,
            fixed,
        };
        if wait {
            self.ops.push(op);
            self.settle_ops();
        } else {
            let answer = self.answer(&op, true);
            let _ = op.reply.send(answer);
        }
    }

    /// Answers every operation whose services have all reached where it waits.
    pub(super) fn settle_ops(&mut self) {
        let mut i = 0;
        while i < self.ops.len() {
            let op = &self.ops[i];
            let done =
                op.reply.is_closed() || op.waits.iter().all(|(n, w)| self.settled(n, *w).is_some());
            if done {
                let op = self.ops.swap_remove(i);
                let answer = self.answer(&op, false);
                let _ = op.reply.send(answer);
            } else {
                i += 1;
            }
        }
    }

    /// `Some(ok)` when `name` has reached what `wait` waits for (or can no longer).
    fn settled(&self, name: &str, wait: WaitFor) -> Option<bool> {
        let Some(svc) = self.services.get(name) else {
            return Some(matches!(wait, WaitFor::Down));
        };
        match wait {
            WaitFor::Down => svc.run.is_none().then_some(true),
            WaitFor::Up { marker } => {
                if svc.is_up() {
                    let settled = match svc.run.as_ref().and_then(|r| r.health.as_ref()) {
                        Some(_) => svc.is_ready(),
                        None => svc
                            .run
                            .as_ref()
                            .is_some_and(|r| r.started.elapsed() >= super::SETTLE),
                    };
                    settled.then_some(true)
                } else if svc.run.is_some() {
                    None
                } else if svc.runs_finished > marker
                    || matches!(svc.hold, Hold::Failed { .. } | Hold::Waiting(_))
                    || !svc.want_up
                    || self.shutting_down
                {
                    Some(false)
                } else {
                    None
                }
            }
            WaitFor::RunEnd { after } => (svc.runs_finished > after).then(|| {
                svc.last_exit
                    .as_ref()
                    .is_some_and(|e| e.outcome == "exited")
            }),
        }
    }

    fn answer(&self, op: &Op, no_wait: bool) -> Response {
        match op.kind {
            OpKind::Run => {
                let Some((name, wait)) = op.waits.first() else {
                    return error(ErrorCode::Failed, "nothing to run");
                };
                let svc = self.services.get(name);
                let ended = !no_wait && self.settled(name, *wait).is_some();
                let last = svc.and_then(|s| s.last_exit.as_ref()).filter(|_| ended);
                let result = RunResult {
                    name: name.clone(),
                    outcome: match last {
                        Some(exit) => exit.outcome.to_string(),
                        None => "started".to_string(),
                    },
                    exit_code: last.and_then(|e| match e.status {
                        Some(ExitStatus::Code(c)) => Some(c),
                        _ => None,
                    }),
                    signal: last.and_then(|e| match e.status {
                        Some(ExitStatus::Signal(s)) => Some(process::signal_name(s)),
                        _ => None,
                    }),
                    pid: svc
                        .and_then(|s| s.run.as_ref().map(|r| r.leader.pid))
                        .or(last.map(|e| e.pid)),
                };
                let failed = last.is_some_and(|e| e.outcome != "exited")
                    || (no_wait && svc.is_some_and(|s| s.run.is_none()));
                if failed {
                    let what =
                        last.map_or("could not start".to_string(), |e| e.outcome.to_string());
                    return error(
                        ErrorCode::Failed,
                        format!("task `{name}` {what}: {}", describe_result(&result)),
                    );
                }
                Response::Ok(Reply::Run(result))
            }
            OpKind::Ops => {
                let mut results = op.fixed.clone();
                for (name, wait) in &op.waits {
                    let ok = if no_wait {
                        Some(true)
                    } else {
                        self.settled(name, *wait)
                    };
                    results.push(self.op_result(name, ok.unwrap_or(false), *wait));
                }
                Response::Ok(Reply::Ops { results })
            }
        }
    }

    fn op_result(&self, name: &str, ok: bool, wait: WaitFor) -> OpResult {
        let Some(svc) = self.services.get(name) else {
            return OpResult {
                name: name.to_string(),
                ok,
                state: "removed".into(),
                pid: None,
                message: "removed".into(),
            };
        };
        let (state, detail) = state_of(svc, Instant::now());
        let pid = svc
            .run
            .as_ref()
            .filter(|r| r.leader_exit.is_none())
            .map(|r| r.leader.pid);
        let message = match (wait, ok) {
            (WaitFor::Down, true) => "stopped; no process of its group is left".to_string(),
            (WaitFor::Up { .. }, true) => format!("running (pid {})", pid.unwrap_or(0)),
            (_, _) => {
                let mut m = state.to_string();
                if let Some(d) = detail {
                    m.push_str(&format!(": {d}"));
                }
                if let Some(exit) = &svc.last_exit {
                    m.push_str(&format!(" (last run {})", exit.outcome));
                }
                m
            }
        };
        OpResult {
            name: name.to_string(),
            ok,
            state: state.to_string(),
            pid,
            message,
        }
    }

    /// One status row per name, in the order given.
    pub(super) fn status(&mut self, names: &[String]) -> Vec<ServiceStatus> {
        let now = Instant::now();
        let now_sys = SystemTime::now();
        let mut rows = Vec::with_capacity(names.len());
        let pgids: Vec<i32> = names
            .iter()
            .filter_map(|n| self.services.get(n)?.run.as_ref().map(|r| r.pgid))
            .collect();
        let rss = match &self.rss_cache {
            Some((at, cached))
                if now.saturating_duration_since(*at) < RSS_FRESH
                    && pgids.iter().all(|p| cached.contains_key(p)) =>
            {
                cached.clone()
            }
            _ => {
                let fresh = process::rss_of(&pgids);
                self.rss_cache = Some((now, fresh.clone()));
                fresh
            }
        };
        for name in names {
            let Some(svc) = self.services.get_mut(name) else {
                continue;
            };
            let restarts_24h = svc.restarts_24h(now_sys);
            let (state, detail) = state_of(svc, now);
            let run = svc.run.as_ref();
            rows.push(ServiceStatus {
                name: name.clone(),
                kind: if svc.is_task() { "task" } else { "service" }.to_string(),
                state: state.to_string(),
                pid: run
                    .filter(|r| r.leader_exit.is_none())
                    .map(|r| r.leader.pid),
                pgid: run.map(|r| r.pgid),
                uptime_s: run.map(|r| now.saturating_duration_since(r.started).as_secs()),
                restarts_24h,
                last_exit: svc.last_exit.as_ref().map(|e| WireLastExit {
                    code: match e.status {
                        Some(ExitStatus::Code(c)) => Some(c),
                        _ => None,
                    },
                    signal: match e.status {
                        Some(ExitStatus::Signal(s)) => Some(process::signal_name(s)),
                        _ => None,
                    },
                    at: e.at.to_rfc3339(),
                    outcome: Some(e.outcome.to_string()),
                }),
                health: run.and_then(|r| r.health.as_ref()).map(|h| h.state.label()),
                rss_bytes: run.map(|r| rss.get(&r.pgid).copied().unwrap_or(0)),
                next_run: svc
                    .clock
                    .as_ref()
                    .and_then(|c| c.next)
                    .map(|t| t.to_rfc3339()),
                detail,
                enabled: svc.cfg.enabled,
                log_dropped: self.logs.dropped(name),
            });
        }
        rows
    }
}

/// The state word and its explanation.
pub fn state_of(svc: &Service, now: Instant) -> (&'static str, Option<String>) {
    if let Some(run) = &svc.run {
        return match run.stopping {
            Some(s) if s.reason == StopReason::Hung => (
                "hung",
                Some(format!(
                    "stopping after failed probes, for {:.1}s",
                    now.saturating_duration_since(s.since).as_secs_f64()
                )),
            ),
            Some(s) => (
                "stopping",
                Some(format!(
                    "for {:.1}s",
                    now.saturating_duration_since(s.since).as_secs_f64()
                )),
            ),
            None if run.leader_exit.is_some() => {
                ("stopping", Some("leader exited; ending its group".into()))
            }
            None if run.watch.stopped_by_signal => (
                "stopped-by-signal",
                Some("every process of the group is stopped (SIGSTOP?)".into()),
            ),
            None => match &run.health {
                Some(h) if !h.ready => (
                    "starting",
                    Some("waiting for the first healthy probe".into()),
                ),
                _ => ("running", None),
            },
        };
    }
    match &svc.hold {
        Hold::Backoff {
            until_wall,
            attempt,
            ..
        } => (
            "backoff",
            Some(format!(
                "until {} (restart {attempt})",
                until_wall
                    .with_timezone(&chrono::Local)
                    .format("%H:%M:%S%.3f")
            )),
        ),
        Hold::Failed { retry_wall, .. } => (
            "failed",
            Some(format!(
                "crash loop; retrying at {}",
                retry_wall.with_timezone(&chrono::Local).format("%H:%M:%S")
            )),
        ),
        Hold::Waiting(deps) => ("waiting", Some(format!("waiting for {}", deps.join(", ")))),
        // The exit code alone does not say that a task timed out or was stopped.
        Hold::None if svc.is_task() => (
            "idle",
            svc.last_exit
                .as_ref()
                .filter(|e| e.outcome != "exited")
                .map(|e| format!("last run {}", e.outcome)),
        ),
        Hold::None if !svc.cfg.enabled => ("stopped", Some("disabled".into())),
        Hold::None => (
            "stopped",
            svc.last_exit.as_ref().map(|e| {
                format!(
                    "last run {} at {}",
                    e.outcome,
                    e.at.with_timezone(&chrono::Local).format("%H:%M:%S")
                )
            }),
        ),
    }
}

fn not_applicable(name: &str, why: &str) -> OpResult {
    OpResult {
        name: name.to_string(),
        ok: false,
        state: "idle".into(),
        pid: None,
        message: format!("`{name}` {why}"),
    }
}

fn describe_result(r: &RunResult) -> String {
    match (&r.exit_code, &r.signal) {
        (Some(code), _) => format!("exit code {code}"),
        (_, Some(sig)) => format!("killed by {sig}"),
        _ => "no exit status".into(),
    }
}
