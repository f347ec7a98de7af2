//! Hangs and memory inside the actor (promises 6 and 7): feeding probe results to each
//! run's threshold machine, readiness for the services that come `after`, the `hung`
//! restart, the memory sample (limit and growth), and services stopped by a signal.
//!
//! Probes run on tasks of their own (`crate::health`) and only report; every decision
//! is taken here, on the actor, from pure policy (`policy::health`, `policy::growth`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::actor::Supervisor;
use super::model::{RunHealth, State, StopReason};
use super::timers::Timer;
use crate::config::{McpEndpoint, Probe};
use crate::health::{self, ProbeEvent};
use crate::policy::growth::GrowthWatch;
use crate::policy::health::{HealthState, HealthThresholds, HealthVerdict};

/// How often a service without a probe is checked for being stopped by a signal (when
/// its `[memory] interval` does not make it more often): rare enough that 200 idle
/// services cost almost nothing, often enough that a SIGSTOPped group is reported
/// within a minute.
pub const SAMPLE_DEFAULT: Duration = Duration::from_secs(30);

impl Supervisor {
    /// Starts the prober and the memory watch of the run just spawned.
    pub(super) fn watch_run(&mut self, name: &str) {
        let tx = self.probe_tx.clone();
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let cfg = svc.cfg.clone();
        let Some(run) = svc.run.as_mut() else { return };
        if let Some(hc) = &cfg.health {
            let cancel = CancellationToken::new();
            // A stdio MCP server's run is pinged by its client's connection, which holds
            // the pipe (`Supervisor::stdio_probe`); every other probe has a task here.
            if !matches!(hc.probe, Probe::Mcp(McpEndpoint::Stdio)) {
                health::spawn_prober(name.to_string(), run.id, hc.clone(), tx, cancel.clone());
            }
            run.health = Some(RunHealth {
                state: HealthState::new(HealthThresholds::from(hc), run.started),
                cancel,
                ready: false,
                alerted: false,
            });
        }
        run.watch.growth = cfg.memory.as_ref().and_then(GrowthWatch::from_config);
        let at = run.started + sample_interval(&cfg);
        run.watch.next_sample = Some(at);
        self.arm_sampler(at);
    }

    /// Makes sure the sampler wakes by `at`. One wake-up serves every run that is due,
    /// so 200 services sampled every 10 s cost one wake-up per 10 s, not twenty a second.
    fn arm_sampler(&mut self, at: Instant) {
        if self.sample_clock.arm(at) {
            self.timers.at(at, Timer::Sample);
        }
    }

    /// The sampler's wake-up: samples every run due now, or due within half its
    /// interval (so runs started at different moments fall into step), then re-arms.
    pub(super) fn on_sample_tick(&mut self, now: Instant) {
        if !self.sample_clock.fire(now) {
            return; // superseded by an earlier tick that already ran
        }
        let due: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| {
                let slack = (sample_interval(&s.cfg) / 2).min(Duration::from_secs(5));
                s.run
                    .as_ref()
                    .filter(|r| r.is_up())
                    .and_then(|r| r.watch.next_sample)
                    .is_some_and(|at| at <= now + slack)
            })
            .map(|(n, _)| n.clone())
            .collect();
        // One scan of the process table serves every due run that watches its memory.
        let pgids: Vec<i32> = due
            .iter()
            .filter_map(|n| self.services.get(n))
            .filter(|s| s.cfg.memory.is_some())
            .filter_map(|s| s.run.as_ref().map(|r| r.pgid))
            .collect();
        let rss = self.os.rss_of(&pgids);
        for name in due {
            self.on_sample(&name, now, &rss);
        }
        let next = self
            .services
            .values()
            .filter_map(|s| s.run.as_ref().filter(|r| r.is_up())?.watch.next_sample)
            .min();
        if let Some(at) = next {
            self.arm_sampler(at.max(now + Duration::from_millis(1)));
        }
    }

    pub(super) fn on_probe(&mut self, ev: ProbeEvent) {
        let now = self.now.mono;
        let Some(svc) = self.services.get_mut(&ev.service) else {
            return;
        };
        let Some(run) = svc.run.as_mut().filter(|r| r.id == ev.run_id && r.is_up()) else {
            return;
        };
        let Some(h) = run.health.as_mut() else { return };
        let before = h.state.verdict();
        let verdict = h.state.on_result(now, ev.ok, ev.error.clone());
        let name = ev.service.clone();
        // A client's run is recorded under its server's name (the entry is `NAME#ID`).
        let recorded = svc.cfg.name.clone();
        match verdict {
            HealthVerdict::Healthy => self.on_healthy(&name, before),
            HealthVerdict::Unhealthy { consecutive, of } => {
                if consecutive == 1 {
                    let err = ev.error.unwrap_or_default();
                    tracing::warn!(service = %name, "health probe failed ({consecutive}/{of}): {err}");
                    self.record_event(
                        &recorded,
                        "service",
                        "health_failed",
                        Some(format!("{consecutive}/{of}: {err}")),
                    );
                }
            }
            HealthVerdict::Hung => self.on_hung(&name),
            HealthVerdict::Starting => {}
        }
    }

    /// A probe passed: the first makes the run ready (and running).
    fn on_healthy(&mut self, name: &str, before: HealthVerdict) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(h) = svc.run.as_mut().and_then(|r| r.health.as_mut()) else {
            return;
        };
        let first = !h.ready;
        h.ready = true;
        let recovered = h.alerted;
        h.alerted = false;
        if first {
            if svc.state() == State::Starting {
                svc.enter(State::Running);
            }
            tracing::info!(service = %name, "healthy: ready");
            self.start_waiting_dependents(name);
        } else if before != HealthVerdict::Healthy {
            tracing::info!(service = %name, "healthy again");
            if recovered {
                self.record_event(name, "service", "health_recovered", None);
            }
        }
    }

    /// Too many probes failed in a row: restart it, or only alert if so configured.
    fn on_hung(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let on_failure = svc.cfg.health.as_ref().map(|h| h.on_failure);
        let Some(run) = svc.run.as_mut() else { return };
        let Some(h) = run.health.as_mut() else { return };
        let errors: Vec<String> = h.state.recent_errors().map(str::to_string).collect();
        let detail = format!(
            "{} consecutive probe failures: {}",
            h.state.consecutive(),
            errors.join("; ")
        );
        match on_failure {
            Some(crate::config::OnFailure::Alert) => {
                if !h.alerted {
                    h.alerted = true;
                    tracing::error!(service = %name, "unhealthy: {detail}");
                    self.alert(name, "service", "unhealthy", detail);
                }
            }
            _ => {
                if svc.client.is_some() {
                    // A client's run: there is nothing to restart; its client's
                    // connection closes when the run has ended.
                    tracing::error!(service = %name, "hung: {detail}; ending it");
                } else {
                    tracing::error!(service = %name, "hung: {detail}; restarting");
                }
                run.hung_context = Some(match run.hung_context.take() {
                    Some(who) => format!("{detail} (run {who})"),
                    None => detail,
                });
                self.begin_stop(name, StopReason::Hung);
            }
        }
    }

    /// The periodic sample of one run: memory limit and growth, and a group stopped by
    /// a signal when there is no probe to notice it.
    fn on_sample(&mut self, name: &str, now: Instant, rss_by_group: &HashMap<i32, u64>) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let (every, probed) = (sample_interval(&svc.cfg), svc.cfg.health.is_some());
        let Some(run) = svc.run.as_mut().filter(|r| r.is_up()) else {
            return;
        };
        run.watch.next_sample = Some(now + every);
        let pgid = run.pgid;
        if svc.cfg.memory.is_some() {
            let rss = rss_by_group.get(&pgid).copied().unwrap_or(0);
            if self.check_memory(name, now, rss) {
                return;
            }
        }
        // Without a probe nothing else would notice a group that was SIGSTOPped.
        if !probed {
            self.check_stopped(name, now, every);
        }
    }

    /// The memory limit and growth; true when the run is being stopped for its memory.
    fn check_memory(&mut self, name: &str, now: Instant, rss: u64) -> bool {
        let Some(svc) = self.services.get_mut(name) else {
            return false;
        };
        let Some(mem) = svc.cfg.memory else {
            return false;
        };
        let Some(run) = svc.run.as_mut() else {
            return false;
        };
        if let Some(limit) = mem.limit.filter(|limit| rss > *limit) {
            let detail = format!(
                "group RSS {} over the limit of {}",
                crate::units::format_size_rounded(rss),
                crate::units::format_size_rounded(limit)
            );
            tracing::error!(service = name, "{detail}; restarting");
            run.hung_context = Some(detail);
            self.begin_stop(name, StopReason::Memory);
            return true;
        }
        if let Some(growth) = run.watch.growth.as_mut() {
            growth.sample(now, rss);
            if let Some(slope) = growth.check(now) {
                let detail = format!(
                    "RSS growing {}/h over the last {} (now {}); alert above {}/h",
                    crate::units::format_size_rounded((slope * 3600.0) as u64),
                    crate::units::format_duration(mem.window),
                    crate::units::format_size_rounded(rss),
                    crate::units::format_size_rounded(
                        (mem.growth_alert.unwrap_or(0.0) * 3600.0) as u64
                    )
                );
                tracing::warn!(service = name, "memory growth: {detail}");
                self.alert(name, "service", "memory_growth", detail);
            }
        }
        false
    }

    /// Every process of the group stopped for a whole interval: `stopped-by-signal`
    /// until one of them runs again.
    fn check_stopped(&mut self, name: &str, now: Instant, every: Duration) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = svc.run.as_mut() else { return };
        let pgid = run.pgid;
        if self.os.group_stopped(run.leader.pid, pgid) {
            let since = *run.watch.stopped_since.get_or_insert(now);
            if now.duration_since(since) >= every && !run.watch.stopped_by_signal {
                run.watch.stopped_by_signal = true;
                svc.enter(State::StoppedBySignal);
                tracing::warn!(
                    service = name,
                    pgid,
                    "every process of the group is stopped (SIGSTOP?)"
                );
                self.record_event(
                    name,
                    "service",
                    "stopped_by_signal",
                    Some(format!("pgid {pgid}: all processes stopped")),
                );
            }
        } else if run.watch.stopped_since.take().is_some() && run.watch.stopped_by_signal {
            run.watch.stopped_by_signal = false;
            svc.enter(State::Running);
            self.record_event(name, "service", "continued", None);
        }
    }
}

fn sample_interval(cfg: &crate::config::ServiceConfig) -> Duration {
    let from_memory = cfg.memory.as_ref().map(|m| m.interval);
    let from_health = if cfg.health.is_none() {
        Some(SAMPLE_DEFAULT)
    } else {
        None
    };
    [from_memory, from_health]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(SAMPLE_DEFAULT)
        .max(Duration::from_millis(10))
}
