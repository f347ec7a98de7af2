//! Control requests inside the actor: ping, status, reload and shutdown, and the
//! operations start, stop, restart and run, each answered when it is complete (a stop
//! when the group is empty, a start when the run is up). An operation in flight is an
//! [`Op`] that the actor checks after every event; nothing here blocks. The status
//! snapshot is in `status.rs`.

use tokio::sync::oneshot;

use super::actor::{error, Supervisor};
use super::model::{Hold, Op, OpKind, Outcome, Service, StopReason, WaitFor, Want, SETTLE};
use super::status::state_of;
use crate::control::protocol::{ErrorCode, OpResult, Reply, Request, Response, RunResult, Target};
use crate::control::ControlMsg;
use crate::process::{self, ExitStatus};

impl Supervisor {
    pub(super) fn on_control(&mut self, msg: ControlMsg) {
        let ControlMsg { request, reply } = msg;
        if self.shutting_down
            && !matches!(
                request,
                Request::Ping | Request::Status { .. } | Request::Shutdown
            )
        {
            let _ = reply.send(error(ErrorCode::ShuttingDown, "paiosd is shutting down"));
            return;
        }
        match request {
            Request::Ping => {
                let _ = reply.send(Response::Ok(Reply::Pong {
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    pid: std::process::id(),
                    ledger: Some(self.ledger.stats()),
                }));
            }
            Request::Status { names } => {
                let _ = reply.send(self.status_answer(&names));
            }
            Request::Reload => {
                let _ = reply.send(self.reload_answer());
            }
            Request::Shutdown => {
                let _ = reply.send(Response::Ok(Reply::ShuttingDown {
                    pid: std::process::id(),
                }));
                self.begin_shutdown("paiosctl shutdown");
            }
            Request::Start { target, wait } => {
                self.with_targets(&target, reply, |s, names, reply| {
                    s.op_up(names, wait, reply, false)
                })
            }
            Request::Stop { target, wait } => {
                self.with_targets(&target, reply, |s, names, reply| {
                    s.op_stop(names, wait, reply)
                })
            }
            Request::Restart { target, wait } => {
                self.with_targets(&target, reply, |s, names, reply| {
                    s.op_up(names, wait, reply, true)
                })
            }
            Request::Run { name, wait } => self.op_run(name, wait, reply),
        }
    }

    fn status_answer(&mut self, names: &[String]) -> Response {
        match self.resolve(names, names.is_empty()) {
            Ok(names) => Response::Ok(Reply::Status {
                services: self.status(&names),
                ledger: Some(self.ledger.stats()),
            }),
            Err(e) => e,
        }
    }

    fn reload_answer(&mut self) -> Response {
        match self.reload() {
            Ok(report) => Response::Ok(Reply::Reload(report)),
            Err(text) => error(
                ErrorCode::ConfigInvalid,
                format!("the config has errors; nothing was changed:\n{text}"),
            ),
        }
    }

    /// Checks names against the services, with a suggestion for an unknown one.
    pub(super) fn resolve(&self, names: &[String], all: bool) -> Result<Vec<String>, Response> {
        if all {
            return Ok(self
                .services
                .iter()
                .filter(|(_, s)| s.client.is_none())
                .map(|(n, _)| n.clone())
                .collect());
        }
        for name in names {
            if self.services.get(name).is_none_or(|s| s.client.is_some()) {
                let mut message = format!("no service named `{name}`");
                if let Some(close) =
                    crate::names::closest(name, self.service_names().map(String::as_str))
                {
                    message.push_str(&format!(" (did you mean `{close}`?)"));
                }
                return Err(error(ErrorCode::UnknownService, message));
            }
        }
        let mut out = names.to_vec();
        out.dedup();
        Ok(out)
    }

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
            if let Some(answer) = not_to_start(svc, &name) {
                fixed.push(answer);
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
                tracing::info!(service = %name, "crash-loop state cleared by hand");
            }
            if restart || matches!(svc.hold, Hold::Failed { .. }) {
                svc.next_attempt = 0;
            }
            if restart && svc.is_client_parent() {
                // Its runs are its clients': each ends, and its client's next bridge
                // gets a fresh one.
                self.end_clients_of(&name);
                waits.push((name, WaitFor::ClientsEnded));
                continue;
            }
            match &svc.run {
                Some(_) if restart => {
                    svc.want = Want::Restart;
                    self.begin_stop(&name, StopReason::Restart);
                }
                Some(run) if !run.is_up() => svc.want = Want::Restart,
                Some(_) if svc.want == Want::Restart => {}
                Some(_) => svc.want = Want::Up,
                None => {
                    svc.want = Want::Up;
                    svc.rest(Hold::None);
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
            // A removed service is already being stopped, and is forgotten once it is.
            if svc.want != Want::Remove {
                svc.want = Want::Down;
                svc.rest(Hold::None);
                if svc.run.is_some() {
                    self.begin_stop(&name, StopReason::User);
                }
                self.end_clients_of(&name);
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
            WaitFor::Down => (svc.run.is_none() && !self.has_client_runs(name)).then_some(true),
            WaitFor::Up { .. } if svc.is_client_parent() => Some(svc.is_up()),
            WaitFor::ClientsEnded => (!self.has_client_runs(name)).then(|| svc.is_up()),
            WaitFor::Up { marker } => {
                if svc.is_up() {
                    let settled = match svc.run.as_ref().and_then(|r| r.health.as_ref()) {
                        Some(_) => svc.is_ready(),
                        None => svc.run.as_ref().is_some_and(|r| {
                            self.now.mono.saturating_duration_since(r.started) >= SETTLE
                        }),
                    };
                    settled.then_some(true)
                } else if svc.run.is_some() {
                    None
                } else if svc.runs_finished > marker
                    || matches!(svc.hold, Hold::Failed { .. } | Hold::Waiting(_))
                    || !svc.wanted()
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
                    .is_some_and(|e| e.outcome == Outcome::Exited)
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
                let failed = last.is_some_and(|e| e.outcome != Outcome::Exited)
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
        let (state, detail) = state_of(svc, self.now.mono);
        let word = self.client_parent_state(name).unwrap_or(state.as_str());
        let pid = svc
            .run
            .as_ref()
            .filter(|r| r.leader_exit.is_none())
            .map(|r| r.leader.pid);
        let message = match (wait, ok) {
            (WaitFor::Down, true) => "stopped; no process of its group is left".to_string(),
            (WaitFor::Up { .. } | WaitFor::ClientsEnded, true) if svc.is_client_parent() => {
                "accepting clients: each gets a run of its own".to_string()
            }
            (WaitFor::Up { .. }, true) => format!("running (pid {})", pid.unwrap_or(0)),
            (_, _) => {
                let mut m = word.to_string();
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
            state: word.to_string(),
            pid,
            message,
        }
    }
}

/// The answer for a service `start`/`restart` does not touch: a task, or one a reload
/// removed while its run still ends (it is not started again from a file that is gone).
fn not_to_start(svc: &Service, name: &str) -> Option<OpResult> {
    if svc.is_task() {
        Some(not_applicable(name, "is a task: use `paiosctl run`"))
    } else if svc.want == Want::Remove {
        Some(removed(name))
    } else {
        None
    }
}

/// The answer for a service a reload removed while its run still ends.
fn removed(name: &str) -> OpResult {
    OpResult {
        name: name.to_string(),
        ok: false,
        state: "removed".into(),
        pid: None,
        message: format!("`{name}` was removed from the config; it ends with its run"),
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
