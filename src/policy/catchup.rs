//! Task slots: what to do about scheduled times that passed unhandled, and about a
//! slot that comes while the previous run is still going (promise 8).
//!
//! This is wall-clock logic (`DateTime<Utc>`), because a schedule is about the time
//! of day and a sleeping machine's monotonic clock may not advance. The schedule
//! itself is a `next_after` closure returning the first scheduled time strictly after
//! its argument; parsing cron and time zones is done elsewhere.
//!
//! `last_handled` is the latest scheduled time the task runner dealt with (ran,
//! skipped, or recorded as missed). Every scheduled time in `(last_handled, now]` was
//! missed: paiosd was down or the machine slept. With `catch_up`, all of them
//! coalesce into one run now; without it, nothing runs and the skip is recorded. The
//! first start ever (`last_handled = None`) has nothing to catch up: it only waits
//! for the next time. After acting on the answer the caller records `now` as the new
//! `last_handled`, which also covers the times beyond the counting cap.

use chrono::{DateTime, Utc};

/// Missed times are counted up to this many; `missed == MAX_MISSED` means "at least".
/// Bounds the work for an every-second schedule after a month powered off.
pub const MAX_MISSED: u32 = 1000;

/// What to do when (re)arming a task's schedule at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// Start one catch-up run now.
    pub run_now: bool,
    /// Scheduled times missed since `last_handled`, capped at [`MAX_MISSED`].
    pub missed: u32,
    /// Missed times are dropped without a run: record that they were skipped.
    pub skipped_record: bool,
    /// The next scheduled time after `now`; `None` when the schedule has no more.
    pub next: Option<DateTime<Utc>>,
}

/// Decides about the scheduled times between `last_handled` and `now`.
///
/// A `next_after` that does not move forward (returns a time at or before its
/// argument) ends the counting rather than looping: a broken schedule must not
/// hang the supervisor.
pub fn catch_up(
    last_handled: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    catch_up: bool,
    next_after: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> CatchUp {
    let next = next_after(now);
    let missed = match last_handled {
        Some(last) => count_missed(last, now, &next_after),
        None => 0,
    };
    CatchUp {
        run_now: catch_up && missed > 0,
        missed,
        skipped_record: !catch_up && missed > 0,
        next,
    }
}

fn count_missed(
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    next_after: &impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> u32 {
    let mut missed = 0;
    let mut at = last;
    while missed < MAX_MISSED {
        match next_after(at) {
            Some(slot) if slot > at && slot <= now => {
                missed += 1;
                at = slot;
            }
            _ => break,
        }
    }
    missed
}

/// What to do when a scheduled time comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAction {
    /// Start a run.
    Start,
    /// The previous run is still going: skip this time (and record the skip); tasks
    /// never overlap.
    SkipOverlap,
}

/// Tasks never overlap: a slot that comes while a run is going is skipped.
pub fn on_slot(running: bool) -> SlotAction {
    if running {
        SlotAction::SkipOverlap
    } else {
        SlotAction::Start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap_or_default()
    }

    /// Every hour on the hour.
    fn hourly(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = (t.timestamp().div_euclid(3600) + 1) * 3600;
        DateTime::from_timestamp(next, 0)
    }

    /// Every day at 07:00 UTC.
    fn daily_7am(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let day = 86_400;
        let offset = 7 * 3600;
        let next = ((t.timestamp() - offset).div_euclid(day) + 1) * day + offset;
        DateTime::from_timestamp(next, 0)
    }

    #[test]
    fn schedules_used_here_are_right() {
        assert_eq!(hourly(at(2026, 3, 1, 10, 0)), Some(at(2026, 3, 1, 11, 0)));
        assert_eq!(hourly(at(2026, 3, 1, 10, 59)), Some(at(2026, 3, 1, 11, 0)));
        assert_eq!(daily_7am(at(2026, 3, 1, 6, 59)), Some(at(2026, 3, 1, 7, 0)));
        assert_eq!(daily_7am(at(2026, 3, 1, 7, 0)), Some(at(2026, 3, 2, 7, 0)));
    }

    #[test]
    fn three_day_gap_daily_coalesces_into_one_run() {
        let last = at(2026, 3, 1, 7, 0);
        let now = at(2026, 3, 4, 9, 30);
        let c = catch_up(Some(last), now, true, daily_7am);
        assert_eq!(
            c,
            CatchUp {
                run_now: true,
                missed: 3,
                skipped_record: false,
                next: Some(at(2026, 3, 5, 7, 0)),
            }
        );
    }

    #[test]
    fn three_day_gap_hourly_coalesces_into_one_run() {
        let last = at(2026, 3, 1, 7, 0);
        let now = at(2026, 3, 4, 7, 30);
        let c = catch_up(Some(last), now, true, hourly);
        assert_eq!(
            c,
            CatchUp {
                run_now: true,
                missed: 72,
                skipped_record: false,
                next: Some(at(2026, 3, 4, 8, 0)),
            }
        );
    }

    #[test]
    fn without_catch_up_nothing_runs_and_the_skip_is_recorded() {
        let last = at(2026, 3, 1, 7, 0);
        let now = at(2026, 3, 4, 9, 30);
        let c = catch_up(Some(last), now, false, daily_7am);
        assert_eq!(
            c,
            CatchUp {
                run_now: false,
                missed: 3,
                skipped_record: true,
                next: Some(at(2026, 3, 5, 7, 0)),
            }
        );
    }

    #[test]
    fn first_start_ever_only_waits_for_the_next_time() {
        let now = at(2026, 3, 4, 9, 30);
        for flag in [true, false] {
            let c = catch_up(None, now, flag, daily_7am);
            assert_eq!(
                c,
                CatchUp {
                    run_now: false,
                    missed: 0,
                    skipped_record: false,
                    next: Some(at(2026, 3, 5, 7, 0)),
                }
            );
        }
    }

    #[test]
    fn nothing_missed_nothing_to_do() {
        let last = at(2026, 3, 4, 7, 0);
        let now = at(2026, 3, 4, 9, 30);
        let c = catch_up(Some(last), now, true, daily_7am);
        assert!(!c.run_now && !c.skipped_record);
        assert_eq!(c.missed, 0);
        assert_eq!(c.next, Some(at(2026, 3, 5, 7, 0)));
    }

    #[test]
    fn a_time_exactly_now_counts_as_missed() {
        let last = at(2026, 3, 3, 7, 0);
        let now = at(2026, 3, 4, 7, 0);
        let c = catch_up(Some(last), now, true, daily_7am);
        assert_eq!(c.missed, 1);
        assert!(c.run_now);
        assert_eq!(c.next, Some(at(2026, 3, 5, 7, 0)));
    }

    #[test]
    fn last_handled_in_the_future_misses_nothing() {
        // The wall clock was set back.
        let last = at(2026, 3, 10, 7, 0);
        let now = at(2026, 3, 4, 9, 30);
        let c = catch_up(Some(last), now, true, daily_7am);
        assert_eq!(c.missed, 0);
        assert!(!c.run_now);
        assert_eq!(c.next, Some(at(2026, 3, 5, 7, 0)));
    }

    #[test]
    fn counting_is_capped() {
        let every_minute =
            |t: DateTime<Utc>| DateTime::from_timestamp((t.timestamp().div_euclid(60) + 1) * 60, 0);
        let last = at(2026, 1, 1, 0, 0);
        let now = at(2026, 3, 1, 0, 0);
        let c = catch_up(Some(last), now, true, every_minute);
        assert_eq!(c.missed, MAX_MISSED);
        assert!(c.run_now);
        assert_eq!(c.next, Some(at(2026, 3, 1, 0, 1)));
    }

    #[test]
    fn exhausted_schedule_has_no_next() {
        // A schedule whose only time was 2026-03-02 07:00.
        let once = |t: DateTime<Utc>| {
            let only = at(2026, 3, 2, 7, 0);
            (t < only).then_some(only)
        };
        let c = catch_up(Some(at(2026, 3, 1, 0, 0)), at(2026, 3, 4, 0, 0), true, once);
        assert_eq!(c.missed, 1);
        assert!(c.run_now);
        assert_eq!(c.next, None);
    }

    #[test]
    fn schedule_that_does_not_advance_cannot_hang() {
        let stuck = |t: DateTime<Utc>| Some(t);
        let c = catch_up(
            Some(at(2026, 3, 1, 0, 0)),
            at(2026, 3, 4, 0, 0),
            true,
            stuck,
        );
        assert_eq!(c.missed, 0);
        let backwards = |t: DateTime<Utc>| Some(t - chrono::Duration::hours(1));
        let c = catch_up(
            Some(at(2026, 3, 1, 0, 0)),
            at(2026, 3, 4, 0, 0),
            true,
            backwards,
        );
        assert_eq!(c.missed, 0);
    }

    #[test]
    fn works_with_a_real_cron_schedule() {
        let cron: Result<croner::Cron, _> = "0 7 * * *".parse();
        let Ok(cron) = cron else {
            panic!("test schedule must parse");
        };
        let next = |t: DateTime<Utc>| cron.find_next_occurrence(&t, false).ok();
        let c = catch_up(
            Some(at(2026, 3, 1, 7, 0)),
            at(2026, 3, 4, 9, 30),
            true,
            next,
        );
        assert_eq!(c.missed, 3);
        assert_eq!(c.next, Some(at(2026, 3, 5, 7, 0)));
    }

    #[test]
    fn overlap_is_skipped() {
        assert_eq!(on_slot(false), SlotAction::Start);
        assert_eq!(on_slot(true), SlotAction::SkipOverlap);
    }
}
