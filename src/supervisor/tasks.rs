//! Scheduled tasks inside the actor: arming each task's next time, starting it when the
//! time comes (never twice at once), the timeout, and one catch-up run for times missed
//! while paiosd was down or the machine slept. What a wake-up does, and when the next
//! one is, are decided by `policy::slot` over the clocks passed in; retries within a
//! slot by `policy::after_run`. The last time handled is kept in `state.sqlite`, so the
//! next paiosd knows what it missed while it was down.

use chrono::{DateTime, Utc};

use super::actor::Supervisor;
use super::model::{StopReason, TaskClock};
use super::timers::Timer;
use crate::config::schedule::Schedule;
use crate::policy::catchup;
use crate::policy::slot::{self, next_utc, SlotDecision, EARLY};

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
        let Some(task) = self.services.get(name).and_then(|s| s.cfg.task.clone()) else {
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
        let last_handled = self.state_db.task_last(name);
        let now = self.now.wall;
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
            wake: None,
        });
        self.persist_task_last(name, now);
        self.catch_up_on_arming(name, &decision);
        self.schedule_wake(name);
    }

    /// What a task missed while paiosd was down: recorded, and run once if it catches up.
    fn catch_up_on_arming(&mut self, name: &str, decision: &catchup::CatchUp) {
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
    }

    /// Sets the next wake-up for `name`: its next time, or sooner to re-read the clock.
    fn schedule_wake(&mut self, name: &str) {
        let Some(clock) = self.services.get_mut(name).and_then(|s| s.clock.as_mut()) else {
            return;
        };
        let Some(next) = clock.next else {
            clock.wake = None;
            return;
        };
        let at = slot::wake_at(next, self.now.wall, self.now.mono, self.wake_grid);
        clock.wake = Some(at);
        self.timers.at(at, Timer::Schedule(name.to_string()));
    }

    /// A task's wake-up: start it if its time has come, then arm the next one.
    pub(super) fn on_schedule(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if !svc.cfg.enabled || self.shutting_down {
            return;
        }
        let running = svc.run.is_some();
        let Some(catch_up) = svc.cfg.task.as_ref().map(|t| t.catch_up) else {
            return;
        };
        let Some(clock) = svc.clock.as_mut() else {
            return;
        };
        if clock.wake.is_some_and(|w| w > self.now.mono) {
            // A wake-up from before the task was re-armed; the current one is pending.
            return;
        }
        clock.wake = None;
        let Some(slot) = clock.next else { return };
        if let Ok(ahead) = (slot - self.now.wall).to_std() {
            if ahead <= EARLY {
                // Woken on purpose just before the slot (see `wake_at`): the thread's
                // own sleep is precise to tens of microseconds, tokio's timer to 1 ms.
                self.os.sleep(ahead);
                self.reread_clock();
            }
        }
        let Some(clock) = self.services.get(name).and_then(|s| s.clock.as_ref()) else {
            return;
        };
        let now = self.now.wall;
        let decision = slot::decide(slot, now, clock.last_handled, running, catch_up, |t| {
            next_utc(&clock.schedule, t)
        });
        self.on_slot(name, slot, decision);
    }

    /// Acts on what `policy::slot::decide` said about the pending `slot`.
    fn on_slot(&mut self, name: &str, slot: DateTime<Utc>, decision: SlotDecision) {
        let now = self.now.wall;
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let retries = svc.cfg.task.as_ref().map_or(0, |t| t.retries);
        let Some(clock) = svc.clock.as_mut() else {
            return;
        };
        match decision {
            SlotDecision::NotYet => return self.schedule_wake(name),
            SlotDecision::Rearm => {
                tracing::warn!(
                    service = name,
                    "the wall clock went back from {} to {now}; rescheduling",
                    clock.last_handled.unwrap_or(now)
                );
            }
            _ => clock.retries_left = retries,
        }
        clock.next = next_utc(&clock.schedule, now);
        clock.last_handled = Some(now);
        match decision {
            SlotDecision::NotYet | SlotDecision::Rearm => {}
            SlotDecision::Start => self.start_task_run(name),
            SlotDecision::SkipOverlap { missed } => {
                tracing::warn!(
                    service = name,
                    "still running at its next scheduled time; skipped"
                );
                let what = if missed > 1 {
                    format!("{missed} scheduled times up to {slot}")
                } else {
                    slot.to_rfc3339()
                };
                self.record_event(
                    name,
                    "task",
                    "skipped",
                    Some(format!("{what}: the previous run is still running")),
                );
            }
            SlotDecision::SkipMissed { missed } => self.record_event(
                name,
                "task",
                "skipped",
                Some(format!(
                    "{missed} scheduled time(s) missed (the machine slept or the clock \
                     jumped); catch_up = false"
                )),
            ),
            SlotDecision::CatchUp { missed } => self.catch_up_now(name, missed),
        }
        self.persist_task_last(name, now);
        self.schedule_wake(name);
    }

    fn catch_up_now(&mut self, name: &str, missed: u32) {
        tracing::info!(
            service = name,
            missed,
            "woke after its scheduled time; catching up once"
        );
        self.record_event(
            name,
            "task",
            "catch_up",
            Some(format!(
                "{missed} scheduled time(s) missed (the machine slept or the \
                 clock jumped); running once now"
            )),
        );
        self.start_task_run(name);
    }

    fn persist_task_last(&self, name: &str, at: DateTime<Utc>) {
        if let Err(e) = self.state_db.set_task_last(name, at) {
            tracing::error!(
                service = name,
                "could not record the task's last scheduled time: {e}"
            );
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

    fn arm_timeout(&mut self, name: &str) {
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
            let timeout = crate::units::format_duration(timeout);
            tracing::warn!(
                service = name,
                pgid = run.pgid,
                "task ran past its timeout of {timeout}; stopping its group"
            );
            self.begin_stop(name, StopReason::Timeout);
        }
    }
}
