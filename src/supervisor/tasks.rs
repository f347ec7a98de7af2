//! Scheduled tasks inside the actor: arming each task's next time, starting it when the
//! time comes (never twice at once), retries within the slot, the timeout, and one
//! catch-up run for times missed while paiosd was down or the machine slept.
//!
//! The wall clock is re-read at least once a minute ([`RECHECK`]) instead of sleeping
//! until the next run in one monotonic sleep, because a monotonic sleep does not count
//! the time a laptop spends suspended. The last time handled is kept in `state.sqlite`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::service::{Hold, StopReason};
use super::timers::Timer;
use super::Supervisor;
use crate::config::schedule::Schedule;
use crate::policy::catchup::{self, SlotAction};

/// The longest the actor sleeps before looking at the wall clock again.
const RECHECK: Duration = Duration::from_secs(60);

/// A slot handled later than this counts as missed (the machine slept, or the clock
/// jumped) and follows the catch-up rule instead of the on-time one.
const LATE: chrono::Duration = chrono::Duration::seconds(90);

/// One task's schedule state.
#[derive(Debug, Clone)]
pub struct TaskClock {
    pub schedule: Schedule,
    pub next: Option<DateTime<Utc>>,
    pub last_handled: Option<DateTime<Utc>>,
    /// Retries left for the current slot.
    pub retries_left: u32,
}

impl Supervisor {
    /// Arms every enabled task: catch-up for missed times, then its next time.
    pub(super) fn arm_tasks(&mut self) {
        let names: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.cfg.enabled && s.cfg.task.is_some() && s.clock.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            self.arm_task(&name);
        }
    }

    fn arm_task(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(task) = svc.cfg.task.clone() else {
            return;
        };
        let schedule = match Schedule::parse(&task.schedule, task.tz.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                // Config validation already refused this; never panic over it.
                tracing::error!(
                    service = name,
                    "schedule `{}`: {}",
                    task.schedule,
                    e.message
                );
                return;
            }
        };
        let last_handled = self.state_db.as_ref().and_then(|db| db.task_last(name));
        let now = Utc::now();
        let decision =
            catchup::catch_up(last_handled, now, task.catch_up, |t| next_utc(&schedule, t));
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.clock = Some(TaskClock {
            schedule,
            next: decision.next,
            last_handled: Some(now),
            retries_left: task.retries,
        });
        self.persist_task_last(name, now);
        if decision.skipped_record {
            self.record_event(
                name,
                "task",
                "skipped",
                Some(format!(
                    "{} scheduled time(s) missed while paiosd was down; catch_up = false",
                    decision.missed
                )),
            );
        }
        if decision.run_now {
            tracing::info!(
                service = name,
                missed = decision.missed,
                "catching up on missed scheduled time(s)"
            );
            self.record_event(
                name,
                "task",
                "catch_up",
                Some(format!(
                    "{} scheduled time(s) missed; running once now",
                    decision.missed
                )),
            );
            self.start_task_run(name);
        }
        self.schedule_wake(name);
    }

    /// Sets the next wake-up for `name`: its next time, or sooner to re-read the clock.
    fn schedule_wake(&mut self, name: &str) {
        let Some(next) = self
            .services
            .get(name)
            .and_then(|s| s.clock.as_ref())
            .and_then(|c| c.next)
        else {
            return;
        };
        let wait = (next - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(RECHECK);
        self.timers
            .at(Instant::now() + wait, Timer::Schedule(name.to_string()));
    }

    /// A task's wake-up: start it if its time has come, then arm the next one.
    pub(super) fn on_schedule(&mut self, name: &str) {
        let now = Utc::now();
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if !svc.cfg.enabled || self.shutting_down {
            return;
        }
        let Some(clock) = svc.clock.as_mut() else {
            return;
        };
        let Some(slot) = clock.next else { return };
        if slot > now {
            self.schedule_wake(name);
            return;
        }
        let running = svc.run.is_some();
        let catch_up = svc.cfg.task.as_ref().is_none_or(|t| t.catch_up);
        let schedule = clock.schedule.clone();
        clock.next = next_utc(&schedule, now);
        if let Some(task) = &svc.cfg.task {
            clock.retries_left = task.retries;
        }
        if now - slot <= LATE {
            match catchup::on_slot(running) {
                SlotAction::Start => self.start_task_run(name),
                SlotAction::SkipOverlap => {
                    tracing::warn!(
                        service = name,
                        "still running at its next scheduled time; skipped"
                    );
                    self.record_event(
                        name,
                        "task",
                        "skipped",
                        Some(format!("{slot}: the previous run is still running")),
                    );
                }
            }
        } else {
            // Woke long after the slot: the machine slept or the clock jumped.
            let last = self
                .services
                .get(name)
                .and_then(|s| s.clock.as_ref())
                .and_then(|c| c.last_handled);
            let decision = catchup::catch_up(last, now, catch_up, |t| next_utc(&schedule, t));
            if decision.skipped_record {
                self.record_event(
                    name,
                    "task",
                    "skipped",
                    Some(format!(
                        "{} scheduled time(s) missed (sleep or clock jump); catch_up = false",
                        decision.missed
                    )),
                );
            } else if decision.run_now && !running {
                self.record_event(
                    name,
                    "task",
                    "catch_up",
                    Some(format!(
                        "{} scheduled time(s) missed; running once now",
                        decision.missed
                    )),
                );
                self.start_task_run(name);
            } else if running {
                self.record_event(
                    name,
                    "task",
                    "skipped",
                    Some(format!("{slot}: the previous run is still running")),
                );
            }
        }
        if let Some(clock) = self.services.get_mut(name).and_then(|s| s.clock.as_mut()) {
            clock.last_handled = Some(now);
        }
        self.persist_task_last(name, now);
        self.schedule_wake(name);
    }

    fn persist_task_last(&self, name: &str, at: DateTime<Utc>) {
        if let Some(db) = &self.state_db {
            if let Err(e) = db.set_task_last(name, at) {
                tracing::error!(
                    service = name,
                    "could not record the task's last scheduled time: {e}"
                );
            }
        }
    }

    /// Starts one run of a task and arms its timeout.
    pub(super) fn start_task_run(&mut self, name: &str) {
        if self.services.get(name).is_none_or(|s| s.run.is_some()) {
            // One run at a time, whatever asked for another.
            return;
        }
        self.spawn_run(name);
        self.arm_timeout(name);
    }

    pub(super) fn arm_timeout(&mut self, name: &str) {
        let Some(svc) = self.services.get(name) else {
            return;
        };
        let (Some(task), Some(run)) = (&svc.cfg.task, &svc.run) else {
            return;
        };
        self.timers.at(
            run.started + task.timeout,
            Timer::Timeout(name.to_string(), run.id),
        );
    }

    pub(super) fn on_timeout(&mut self, name: &str, run_id: u64) {
        let Some(svc) = self.services.get(name) else {
            return;
        };
        let Some(run) = svc.run.as_ref().filter(|r| r.id == run_id) else {
            return;
        };
        if run.stopping.is_none() {
            let timeout = svc.cfg.task.as_ref().map(|t| t.timeout).unwrap_or_default();
            tracing::warn!(
                service = name,
                pgid = run.pgid,
                "task ran past its timeout of {timeout:?}; stopping its group"
            );
            self.begin_stop(name, StopReason::Timeout);
        }
    }

    /// After a task run ended: retry within the slot if it failed and retries are left.
    pub(super) fn after_task_run(
        &mut self,
        name: &str,
        exit_at: Instant,
        failed: bool,
        outcome: &str,
    ) {
        // A reload that changed the task while it ran left it without a schedule.
        self.arm_tasks();
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.hold = Hold::None;
        svc.want_up = false;
        if !failed {
            return;
        }
        let detail = match &svc.last_exit {
            Some(exit) => format!("{outcome} (pid {})", exit.pid),
            None => outcome.to_string(),
        };
        let retry = match svc.clock.as_mut() {
            Some(clock) if clock.retries_left > 0 => {
                clock.retries_left -= 1;
                true
            }
            _ => false,
        };
        if retry {
            let attempt = svc.next_attempt + 1;
            let delay =
                crate::policy::backoff::delay(&svc.cfg.restart.backoff, attempt, fastrand::f64());
            let until = exit_at + delay;
            svc.next_attempt = attempt;
            svc.next_delay = Some(delay);
            svc.want_up = true;
            svc.hold = Hold::Backoff {
                until,
                until_wall: Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                attempt,
                delay,
            };
            tracing::info!(
                service = name,
                attempt,
                "task failed; retrying in {delay:?}"
            );
            self.timers.at(until, Timer::Start(name.to_string()));
        } else {
            svc.next_attempt = 0;
            tracing::warn!(service = name, "task failed: {detail}");
            self.alert(name, "task", "task_failed", detail);
        }
    }
}

/// The first scheduled time strictly after `t`, in UTC.
fn next_utc(schedule: &Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.next_after(t).map(|n| n.with_timezone(&Utc))
}
