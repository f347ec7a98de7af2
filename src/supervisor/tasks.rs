//! Scheduled tasks inside the actor: arming each task's next time, starting it when the
//! time comes (never twice at once), retries within the slot, the timeout, and one
//! catch-up run for times missed while paiosd was down or the machine slept.
//!
//! The wall clock is re-read at least once a minute ([`RECHECK`]) instead of sleeping
//! until the next run in one monotonic sleep, because a monotonic sleep does not count
//! the time a laptop spends suspended. What a wake-up does is decided by the pure
//! [`decide`] over the wall time passed in: on time, an overlap, a slot found long
//! after it passed (a suspend or a clock jump forward: one catch-up run), or a clock
//! set far back. The last time handled is kept in `state.sqlite`, so the next paiosd
//! knows what it missed while it was down.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::service::{Hold, StopReason};
use super::timers::Timer;
use super::Supervisor;
use crate::config::schedule::Schedule;
use crate::policy::catchup::{self, SlotAction};

/// The longest the actor sleeps before looking at the wall clock again.
const RECHECK: Duration = Duration::from_secs(60);

/// A wall clock set back by less than this waits for the slot it was waiting for, so
/// times already run are not run again (as cron does); set back further (a wrong clock
/// corrected), the schedule starts over from the new time.
const BACKWARD: chrono::Duration = chrono::Duration::hours(3);

/// How much before a slot the timer is armed. Tokio's timer wheel ticks in whole
/// milliseconds and rounds a deadline up, so a timer fires up to about 1.2 ms late;
/// arming it this much early and sleeping the rest on the thread (at most this long,
/// once per slot) starts a task within a fraction of a millisecond of its time.
const EARLY: Duration = Duration::from_millis(2);

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
    /// The wake-up armed last. Timers are never cancelled, so a re-armed task (a
    /// reload) still has its old wake-ups pending: only the latest one is acted on,
    /// or every reload would add one more chain of wake-ups forever.
    pub wake: Option<Instant>,
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
            wake: None,
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
        let Some(clock) = self.services.get_mut(name).and_then(|s| s.clock.as_mut()) else {
            return;
        };
        let Some(next) = clock.next else {
            clock.wake = None;
            return;
        };
        let at = wake_at(next, Utc::now(), Instant::now());
        clock.wake = Some(at);
        self.timers.at(at, Timer::Schedule(name.to_string()));
    }

    /// A task's wake-up: start it if its time has come, then arm the next one.
    pub(super) fn on_schedule(&mut self, name: &str) {
        let mut now = Utc::now();
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if !svc.cfg.enabled || self.shutting_down {
            return;
        }
        let running = svc.run.is_some();
        let Some(task) = svc.cfg.task.clone() else {
            return;
        };
        let Some(clock) = svc.clock.as_mut() else {
            return;
        };
        if clock.wake.is_some_and(|w| w > Instant::now()) {
            // A wake-up from before the task was re-armed; the current one is pending.
            return;
        }
        clock.wake = None;
        let Some(slot) = clock.next else { return };
        if let Ok(ahead) = (slot - now).to_std() {
            if ahead <= EARLY {
                // Woken on purpose just before the slot (see `wake_at`): the thread's
                // own sleep is precise to tens of microseconds, tokio's timer to 1 ms.
                std::thread::sleep(ahead);
                now = Utc::now();
            }
        }
        let schedule = clock.schedule.clone();
        let decision = decide(slot, now, clock.last_handled, running, task.catch_up, |t| {
            next_utc(&schedule, t)
        });
        if decision == SlotDecision::NotYet {
            self.schedule_wake(name);
            return;
        }
        if decision == SlotDecision::Rearm {
            tracing::warn!(
                service = name,
                "the wall clock went back from {} to {now}; rescheduling",
                clock.last_handled.unwrap_or(now)
            );
            clock.next = next_utc(&schedule, now);
            clock.last_handled = Some(now);
            self.persist_task_last(name, now);
            self.schedule_wake(name);
            return;
        }
        clock.next = next_utc(&schedule, now);
        clock.retries_left = task.retries;
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
            SlotDecision::CatchUp { missed } => {
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
            svc.next_attempt = 0;
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

/// What a task's wake-up does about its pending slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotDecision {
    /// The slot has not come: woken early to re-read the wall clock, or the clock went
    /// back. Nothing is recorded; the task sleeps again.
    NotYet,
    /// The wall clock went back more than [`BACKWARD`]: the pending slot may be that
    /// far away, so the schedule starts over from the new time.
    Rearm,
    /// On time and idle: run.
    Start,
    /// The previous run is still going: the `missed` time(s) are skipped and recorded.
    SkipOverlap { missed: u32 },
    /// Woken more than [`LATE`] after the slot (a suspend, a wall-clock jump forward):
    /// the `missed` times coalesce into one run.
    CatchUp { missed: u32 },
    /// As `CatchUp`, but with `catch_up = false`: nothing runs, the skip is recorded.
    SkipMissed { missed: u32 },
}

/// Decides a wake-up at wall time `now` for the pending `slot`. Pure: the supervisor
/// passes the clock in. `last_handled` is the wall time of the previous decision, so
/// everything scheduled in `(last_handled, now]` is what this wake-up covers.
pub fn decide(
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
    last_handled: Option<DateTime<Utc>>,
    running: bool,
    catch_up: bool,
    next_after: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> SlotDecision {
    if last_handled.is_some_and(|l| l - now > BACKWARD) {
        return SlotDecision::Rearm;
    }
    if slot > now {
        return SlotDecision::NotYet;
    }
    // The slot itself always counts, even when `last_handled` is missing or later
    // (the wall clock went back after it was written).
    let from = last_handled
        .filter(|l| *l < slot)
        .unwrap_or(slot - chrono::Duration::nanoseconds(1));
    let missed = catchup::catch_up(Some(from), now, catch_up, &next_after)
        .missed
        .max(1);
    if now - slot <= LATE {
        return match catchup::on_slot(running) {
            SlotAction::Start => SlotDecision::Start,
            SlotAction::SkipOverlap => SlotDecision::SkipOverlap { missed },
        };
    }
    if !catch_up {
        SlotDecision::SkipMissed { missed }
    } else if running {
        SlotDecision::SkipOverlap { missed }
    } else {
        SlotDecision::CatchUp { missed }
    }
}

/// The monotonic instant to wake at for a slot at wall time `next`, seen at `now_wall`
/// / `now_mono`: [`EARLY`] before the slot, or [`RECHECK`] from now, whichever comes
/// first.
/// Monotonic clocks stop during a suspend on both Linux and macOS, so one long sleep
/// to a slot hours away would wake hours late; re-reading the wall clock every minute
/// bounds that to a minute. Rechecks are rounded down to a whole second of a shared
/// grid so that many idle tasks wake together rather than one by one.
fn wake_at(next: DateTime<Utc>, now_wall: DateTime<Utc>, now_mono: Instant) -> Instant {
    let wait = (next - now_wall).to_std().unwrap_or(Duration::ZERO);
    if wait < RECHECK {
        return now_mono + wait.saturating_sub(EARLY);
    }
    static GRID: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let base = *GRID.get_or_init(|| now_mono);
    let at = now_mono + RECHECK;
    let past = at.saturating_duration_since(base);
    at - Duration::from_nanos(u64::from(past.subsec_nanos()))
}

/// The first scheduled time strictly after `t`, in UTC.
fn next_utc(schedule: &Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.next_after(t).map(|n| n.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn every(expr: &str) -> impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>> {
        let schedule = Schedule::parse(expr, Some("UTC")).unwrap();
        move |t| next_utc(&schedule, t)
    }

    #[test]
    fn an_early_wake_up_waits_for_the_slot() {
        let slot = utc("2026-11-24T07:00:00Z");
        let now = utc("2026-11-24T06:59:00Z");
        let d = decide(slot, now, Some(now), false, true, every("0 7 * * *"));
        assert_eq!(d, SlotDecision::NotYet);
    }

    #[test]
    fn on_time_starts_or_skips_an_overlap() {
        let slot = utc("2026-11-24T07:00:00Z");
        let last = utc("2026-11-24T06:59:00Z");
        let now = utc("2026-11-24T07:00:00.002Z");
        let next = every("0 7 * * *");
        assert_eq!(
            decide(slot, now, Some(last), false, true, &next),
            SlotDecision::Start
        );
        assert_eq!(
            decide(slot, now, Some(last), true, true, &next),
            SlotDecision::SkipOverlap { missed: 1 }
        );
        // Up to 90 s late is still on time (a busy machine, not a missed slot).
        let late = utc("2026-11-24T07:01:30Z");
        assert_eq!(
            decide(slot, late, Some(last), false, false, &next),
            SlotDecision::Start
        );
    }

    #[test]
    fn a_wall_clock_jump_forward_catches_up_once() {
        // Asleep from 06:59:30 to 09:00:10: a per-minute task missed 121 times, and the
        // wake-up after the resume runs it once.
        let slot = utc("2026-11-24T07:00:00Z");
        let last = utc("2026-11-24T06:59:30Z");
        let now = utc("2026-11-24T09:00:10Z");
        let next = every("0 * * * * *");
        assert_eq!(
            decide(slot, now, Some(last), false, true, &next),
            SlotDecision::CatchUp { missed: 121 }
        );
        assert_eq!(
            decide(slot, now, Some(last), false, false, &next),
            SlotDecision::SkipMissed { missed: 121 }
        );
        // Still running from before the sleep: no second run beside it.
        assert_eq!(
            decide(slot, now, Some(last), true, true, &next),
            SlotDecision::SkipOverlap { missed: 121 }
        );
    }

    #[test]
    fn a_three_day_gap_is_one_catch_up() {
        let slot = utc("2026-11-21T07:00:00Z");
        let last = utc("2026-11-20T08:00:00Z");
        let now = utc("2026-11-24T08:00:00Z");
        assert_eq!(
            decide(slot, now, Some(last), false, true, every("0 7 * * *")),
            SlotDecision::CatchUp { missed: 4 }
        );
    }

    #[test]
    fn a_clock_that_went_back_still_counts_the_slot() {
        let slot = utc("2026-11-24T07:00:00Z");
        let last = utc("2026-11-24T08:00:00Z");
        let now = utc("2026-11-24T07:05:00Z");
        assert_eq!(
            decide(slot, now, Some(last), false, true, every("0 7 * * *")),
            SlotDecision::CatchUp { missed: 1 }
        );
        assert_eq!(
            decide(slot, now, None, false, false, every("0 7 * * *")),
            SlotDecision::SkipMissed { missed: 1 }
        );
    }

    #[test]
    fn a_clock_set_far_back_starts_the_schedule_over() {
        let slot = utc("2026-11-24T07:01:00Z");
        let last = utc("2026-11-24T07:00:00Z");
        let next = every("0 * * * * *");
        // Back by an hour: wait for the pending slot rather than run minutes twice.
        let hour = utc("2026-11-24T06:00:30Z");
        assert_eq!(
            decide(slot, hour, Some(last), false, true, &next),
            SlotDecision::NotYet
        );
        // Back by a day: a wrong clock was corrected; do not wait a day.
        let day = utc("2026-11-23T07:00:30Z");
        assert_eq!(
            decide(slot, day, Some(last), false, true, &next),
            SlotDecision::Rearm
        );
    }

    #[test]
    fn wake_ups_are_at_the_slot_or_within_a_minute() {
        let wall = utc("2026-11-24T07:00:00Z");
        let mono = Instant::now();
        let soon = wake_at(utc("2026-11-24T07:00:02.5Z"), wall, mono);
        assert_eq!(soon - mono, Duration::from_millis(2500) - EARLY);
        assert_eq!(wake_at(utc("2026-11-24T06:00:00Z"), wall, mono), mono);
        let far = wake_at(utc("2026-11-25T07:00:00Z"), wall, mono) - mono;
        assert!(
            far <= RECHECK && far > RECHECK - Duration::from_secs(1),
            "{far:?}"
        );
    }
}
