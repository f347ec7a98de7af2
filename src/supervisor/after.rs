//! What follows a run's end, performed: `policy::after_run` decides (forget a removed
//! service, rest, start again at once, back off, give up after a crash loop, retry or
//! report a task) from the service's standing, the run's end, the time and a jitter
//! sample; this file applies the config a reload left waiting, asks, and carries the
//! decision out (holds, timers, alerts).

use std::time::{Duration, Instant};

use super::actor::Supervisor;
use super::model::{Hold, Outcome, Want};
use super::timers::Timer;
use crate::policy::{self, Ended, Next, Standing};

impl Supervisor {
    /// Performs what `policy::after_run` decides follows a run's end.
    pub(super) fn after_run(&mut self, name: &str, ended: Ended) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.want != Want::Remove {
            if let Some(cfg) = svc.replacement.take() {
                svc.tracker = crate::policy::RestartTracker::new(cfg.restart);
                svc.clock = None;
                svc.cfg = cfg;
                svc.rest(Hold::None);
            }
        }
        let settled = !matches!(svc.want, Want::Remove | Want::Restart);
        if svc.is_task() && settled && !self.shutting_down {
            // A reload that changed the task while it ran left it without a schedule.
            self.arm_tasks();
        }
        let jitter = self.os.jitter();
        let (now, shutting_down) = (self.now.mono, self.shutting_down);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let standing = Standing {
            want: svc.want,
            shutting_down,
            task_retries_left: svc
                .is_task()
                .then(|| svc.clock.as_ref().map_or(0, |c| c.retries_left)),
            next_attempt: svc.next_attempt,
        };
        let backoff = svc.cfg.restart.backoff;
        let decision = policy::after_run(
            standing,
            ended,
            &mut svc.tracker,
            &mut svc.storm,
            &backoff,
            now,
            jitter,
        );
        if decision.storm {
            let detail = format!(
                "{} crashes within {}",
                self.global.storm.crashes,
                crate::units::format_duration(self.global.storm.window)
            );
            tracing::warn!(service = name, "crash storm: {detail}");
            self.alert(name, "service", "storm", detail);
        }
        self.perform(name, decision.next, ended.outcome);
    }

    fn perform(&mut self, name: &str, next: Next, outcome: Outcome) {
        let wall = self.now.wall;
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        match next {
            Next::Remove => {
                tracing::info!(service = name, "removed");
                self.services.remove(name);
            }
            Next::Rest => svc.rest(Hold::None),
            Next::StartNow => {
                svc.want = Want::Up;
                svc.next_attempt = 0;
                self.try_start(name);
            }
            Next::Stay => {
                svc.want = Want::Down;
                svc.rest(Hold::None);
            }
            Next::Backoff {
                until,
                delay,
                attempt,
            } => {
                let delay_text = crate::units::format_duration_rounded(delay);
                tracing::info!(service = name, attempt, "restarting in {delay_text}");
                svc.restarts.push_back(wall.into());
                self.hold_backoff(name, until, delay, attempt);
            }
            Next::GiveUp { retry_at } => self.give_up(name, retry_at),
            Next::TaskDone { reset_attempt } => {
                svc.want = Want::Down;
                svc.rest(Hold::None);
                svc.next_attempt = if reset_attempt { 0 } else { svc.next_attempt };
            }
            Next::TaskRetry {
                until,
                delay,
                attempt,
            } => {
                if let Some(clock) = svc.clock.as_mut() {
                    clock.retries_left = clock.retries_left.saturating_sub(1);
                }
                svc.want = Want::Up;
                tracing::info!(
                    service = name,
                    attempt,
                    "task failed; retrying in {}",
                    crate::units::format_duration_rounded(delay)
                );
                self.hold_backoff(name, until, delay, attempt);
            }
            Next::TaskFailed => self.task_failed(name, outcome),
        }
    }

    /// A failed task run with no retry left: reported, and idle until its next time.
    fn task_failed(&mut self, name: &str, outcome: Outcome) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.want = Want::Down;
        svc.rest(Hold::None);
        svc.next_attempt = 0;
        let detail = match &svc.last_exit {
            Some(exit) => format!("{outcome} (pid {})", exit.pid),
            None => outcome.to_string(),
        };
        tracing::warn!(service = name, "task failed: {detail}");
        self.alert(name, "task", "task_failed", detail);
    }

    /// Holds `name` in backoff until `until`, when its next run (restart `attempt`) starts.
    fn hold_backoff(&mut self, name: &str, until: Instant, delay: Duration, attempt: u32) {
        let until_wall = self.now.wall_at(until);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.next_attempt = attempt;
        svc.next_delay = Some(delay);
        svc.rest(Hold::Backoff {
            until,
            until_wall,
            attempt,
            delay,
        });
        self.timers.at(until, Timer::Start(name.to_string()));
    }

    pub(super) fn give_up(&mut self, name: &str, retry_at: Instant) {
        let retry_wall = self.now.wall_at(retry_at);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.rest(Hold::Failed {
            retry_at,
            retry_wall,
        });
        let detail = format!(
            "more than {} restarts within {}; retrying at {}",
            svc.cfg.restart.limit.burst,
            crate::units::format_duration(svc.cfg.restart.limit.window),
            retry_wall.with_timezone(&chrono::Local).format("%H:%M:%S")
        );
        tracing::error!(service = name, "gave up: {detail}");
        self.timers.at(retry_at, Timer::Cooldown(name.to_string()));
        self.alert(name, "service", "gave_up", detail);
    }
}
