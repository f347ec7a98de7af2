//! The status snapshot: one row per service with its state word (held by the model)
//! and the detail that explains it, its run, restarts, last exit, health, memory and
//! next scheduled time.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use super::actor::{kind_of, Supervisor};
use super::model::{Hold, Outcome, Service, State};
use crate::control::protocol::{LastExit as WireLastExit, ServiceStatus};
use crate::process::{self, ExitStatus};

impl Supervisor {
    /// One status row per name, in the order given.
    pub(super) fn status(&mut self, names: &[String]) -> Vec<ServiceStatus> {
        let now = self.now.mono;
        let now_sys = SystemTime::from(self.now.wall);
        let pgids: Vec<i32> = names
            .iter()
            .filter_map(|n| self.services.get(n)?.run.as_ref().map(|r| r.pgid))
            .collect();
        let rss = self.group_rss(&pgids);
        let mut rows = Vec::with_capacity(names.len());
        for name in names {
            let Some(svc) = self.services.get_mut(name) else {
                continue;
            };
            let restarts_24h = svc.restarts_24h(now_sys);
            let mut row = status_row(name, svc, now, &rss);
            row.restarts_24h = restarts_24h;
            row.log_dropped = self.logs.dropped(name);
            row.mcp = self.mcp_status(name);
            if let Some(state) = self.client_parent_state(name) {
                row.state = state.to_string();
            }
            rows.push(row);
        }
        rows
    }

    /// Memory per group, from a scan at most a second old.
    fn group_rss(&mut self, pgids: &[i32]) -> HashMap<i32, u64> {
        let os = &self.os;
        self.rss_cache.get(self.now.mono, pgids, |p| os.rss_of(p))
    }
}

fn status_row(name: &str, svc: &Service, now: Instant, rss: &HashMap<i32, u64>) -> ServiceStatus {
    let (state, detail) = state_of(svc, now);
    let run = svc.run.as_ref();
    ServiceStatus {
        name: name.to_string(),
        kind: kind_of(svc).to_string(),
        state: state.to_string(),
        pid: run
            .filter(|r| r.leader_exit.is_none())
            .map(|r| r.leader.pid),
        pgid: run.map(|r| r.pgid),
        uptime_s: run.map(|r| now.saturating_duration_since(r.started).as_secs()),
        restarts_24h: 0,
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
        log_dropped: 0,
        mcp: None,
    }
}

/// The state word and its explanation.
pub fn state_of(svc: &Service, now: Instant) -> (State, Option<String>) {
    let state = svc.state();
    let for_how_long = |since: Instant| now.saturating_duration_since(since).as_secs_f64();
    let stopping_since = svc.run.as_ref().and_then(|r| r.stopping).map(|s| s.since);
    let detail = match state {
        State::Hung => stopping_since.map(|since| {
            format!(
                "stopping after failed probes, for {:.1}s",
                for_how_long(since)
            )
        }),
        State::Stopping => Some(match stopping_since {
            Some(since) => format!("for {:.1}s", for_how_long(since)),
            None => "leader exited; ending its group".into(),
        }),
        State::StoppedBySignal => Some("every process of the group is stopped (SIGSTOP?)".into()),
        State::Starting => Some("waiting for the first healthy probe".into()),
        State::Running => None,
        State::Backoff | State::Failed | State::Waiting | State::Idle | State::Stopped => {
            rest_detail(svc)
        }
    };
    (state, detail)
}

/// Why a service without a run is not running.
fn rest_detail(svc: &Service) -> Option<String> {
    match &svc.hold {
        Hold::Backoff {
            until_wall,
            attempt,
            ..
        } => Some(format!(
            "until {} (restart {attempt})",
            until_wall
                .with_timezone(&chrono::Local)
                .format("%H:%M:%S%.3f")
        )),
        Hold::Failed { retry_wall, .. } => Some(format!(
            "crash loop; retrying at {}",
            retry_wall.with_timezone(&chrono::Local).format("%H:%M:%S")
        )),
        Hold::Waiting(deps) => Some(format!("waiting for {}", deps.join(", "))),
        // The exit code alone does not say that a task timed out or was stopped.
        Hold::None if svc.is_task() => svc
            .last_exit
            .as_ref()
            .filter(|e| e.outcome != Outcome::Exited)
            .map(|e| format!("last run {}", e.outcome)),
        Hold::None if !svc.cfg.enabled => Some("disabled".into()),
        Hold::None => svc.last_exit.as_ref().map(|e| {
            format!(
                "last run {} at {}",
                e.outcome,
                e.at.with_timezone(&chrono::Local).format("%H:%M:%S")
            )
        }),
    }
}
