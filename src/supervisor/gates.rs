//! Small pieces of the actor's bookkeeping, each owned by the actor and changed only
//! through its own methods: how often the process table is scanned for escapees, the
//! memory figures `status` reuses, and the sampler's one wake-up for every run due.
//! Each is a plain function of the time passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Scans caused by starts are at most this frequent: one scan reads the whole process table.
pub const MIN_SCAN_GAP: Duration = Duration::from_millis(100);

/// A stop or a leader exit reuses a scan this recent: stopping 200 services at once, or
/// reaping a burst of exits, then costs one scan rather than one per service.
pub const FRESH_SCAN: Duration = Duration::from_millis(20);

/// How long a scan of group memory is reused by `status`: a script polling status in a
/// loop must not turn into a process-table scan per call.
pub const RSS_FRESH: Duration = Duration::from_secs(1);

/// When the process table was last scanned for escapees.
#[derive(Debug, Default)]
pub struct ScanGate {
    last: Option<Instant>,
}

impl ScanGate {
    /// Whether to scan now (and if so, the scan is taken to happen now). `urgent` (a
    /// stop or a leader exit, which must not miss one) scans unless the last scan is
    /// only [`FRESH_SCAN`] old; otherwise at most every [`MIN_SCAN_GAP`].
    pub fn open(&mut self, now: Instant, urgent: bool) -> bool {
        let gap = if urgent { FRESH_SCAN } else { MIN_SCAN_GAP };
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < gap)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// The last scan of group memory, with when it was made.
#[derive(Debug, Default)]
pub struct RssCache {
    last: Option<(Instant, HashMap<i32, u64>)>,
}

impl RssCache {
    /// Memory per group for `pgids`: the last scan if it is at most [`RSS_FRESH`] old
    /// and covers them all, else a fresh one from `scan`.
    pub fn get(
        &mut self,
        now: Instant,
        pgids: &[i32],
        scan: impl FnOnce(&[i32]) -> HashMap<i32, u64>,
    ) -> HashMap<i32, u64> {
        if let Some((at, cached)) = &self.last {
            if now.saturating_duration_since(*at) < RSS_FRESH
                && pgids.iter().all(|p| cached.contains_key(p))
            {
                return cached.clone();
            }
        }
        let fresh = scan(pgids);
        self.last = Some((now, fresh.clone()));
        fresh
    }
}

/// The sampler's next wake-up: one for every run due, so 200 services sampled every
/// 10 s cost one wake-up per 10 s, not twenty a second.
#[derive(Debug, Default)]
pub struct SampleClock {
    tick: Option<Instant>,
}

impl SampleClock {
    /// The sampler must wake by `at`: true when that is sooner than the wake-up armed,
    /// and a timer for `at` is to be set.
    pub fn arm(&mut self, at: Instant) -> bool {
        if self.tick.is_none_or(|tick| at < tick) {
            self.tick = Some(at);
            return true;
        }
        false
    }

    /// A sampler timer fired at `now`: false when an earlier one already ran in its
    /// place (timers are never cancelled).
    pub fn fire(&mut self, now: Instant) -> bool {
        if self.tick.is_some_and(|tick| tick > now) {
            return false;
        }
        self.tick = None;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn scans_are_spaced_unless_urgent() {
        let t0 = Instant::now();
        let mut gate = ScanGate::default();
        assert!(gate.open(t0, false));
        assert!(!gate.open(t0 + 50 * MS, false));
        assert!(gate.open(t0 + 50 * MS, true));
        assert!(!gate.open(t0 + 60 * MS, true), "a scan 10 ms old is fresh");
        assert!(gate.open(t0 + 151 * MS, false));
    }

    #[test]
    fn memory_figures_are_reused_for_a_second() {
        let t0 = Instant::now();
        let mut cache = RssCache::default();
        let scan = |n: u64| move |p: &[i32]| p.iter().map(|g| (*g, n)).collect();
        assert_eq!(cache.get(t0, &[1], scan(5))[&1], 5);
        assert_eq!(cache.get(t0 + 500 * MS, &[1], scan(6))[&1], 5);
        assert_eq!(
            cache.get(t0 + 500 * MS, &[1, 2], scan(7))[&2],
            7,
            "a new group"
        );
        assert_eq!(cache.get(t0 + 2000 * MS, &[1], scan(8))[&1], 8);
    }

    #[test]
    fn the_sampler_keeps_its_earliest_wake_up() {
        let t0 = Instant::now();
        let mut clock = SampleClock::default();
        assert!(clock.arm(t0 + 10 * MS));
        assert!(!clock.arm(t0 + 20 * MS));
        assert!(clock.arm(t0 + 5 * MS));
        assert!(clock.fire(t0 + 5 * MS));
        assert!(
            clock.fire(t0 + 10 * MS),
            "nothing armed: a late timer still samples"
        );
        assert!(clock.arm(t0 + 30 * MS));
        assert!(!clock.fire(t0 + 20 * MS), "superseded");
    }
}
