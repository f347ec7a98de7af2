//! A scheduled task's slot: what a wake-up does about the pending scheduled time
//! (on time, an overlap, a slot found long after it passed, a clock set far back) and
//! when to wake next. Pure: the wall and monotonic times are passed in.
//!
//! The wall clock is re-read at least once a minute ([`RECHECK`]) instead of sleeping
//! until the next run in one monotonic sleep, because a monotonic sleep does not count
//! the time a laptop spends suspended.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::catchup::{self, SlotAction};
use crate::config::schedule::Schedule;

/// The longest the actor sleeps before looking at the wall clock again.
pub const RECHECK: Duration = Duration::from_secs(60);

/// A wall clock set back by less than this waits for the slot it was waiting for, so
/// times already run are not run again (as cron does); set back further (a wrong clock
/// corrected), the schedule starts over from the new time.
pub const BACKWARD: chrono::Duration = chrono::Duration::hours(3);

/// How much before a slot the timer is armed. Tokio's timer wheel ticks in whole
/// milliseconds and rounds a deadline up, so a timer fires up to about 1.2 ms late;
/// arming it this much early and sleeping the rest on the thread (at most this long,
/// once per slot) starts a task within a fraction of a millisecond of its time.
pub const EARLY: Duration = Duration::from_millis(2);

/// A slot handled later than this counts as missed (the machine slept, or the clock
/// jumped) and follows the catch-up rule instead of the on-time one.
pub const LATE: chrono::Duration = chrono::Duration::seconds(90);

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
/// bounds that to a minute. Rechecks are rounded down to a whole second of the grid
/// that starts at `grid` (any instant not after `now_mono`, the same for every task) so
/// that many idle tasks wake together rather than one by one.
pub fn wake_at(
    next: DateTime<Utc>,
    now_wall: DateTime<Utc>,
    now_mono: Instant,
    grid: Instant,
) -> Instant {
    let wait = (next - now_wall).to_std().unwrap_or(Duration::ZERO);
    if wait < RECHECK {
        return now_mono + wait.saturating_sub(EARLY);
    }
    let base = grid.min(now_mono);
    let at = now_mono + RECHECK;
    let past = at.saturating_duration_since(base);
    at - Duration::from_nanos(u64::from(past.subsec_nanos()))
}

/// The first scheduled time strictly after `t`, in UTC.
pub fn next_utc(schedule: &Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
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
        let soon = wake_at(utc("2026-11-24T07:00:02.5Z"), wall, mono, mono);
        assert_eq!(soon - mono, Duration::from_millis(2500) - EARLY);
        assert_eq!(wake_at(utc("2026-11-24T06:00:00Z"), wall, mono, mono), mono);
        let far = wake_at(utc("2026-11-25T07:00:00Z"), wall, mono, mono) - mono;
        assert!(
            far <= RECHECK && far > RECHECK - Duration::from_secs(1),
            "{far:?}"
        );
    }
}
