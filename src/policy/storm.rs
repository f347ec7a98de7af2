//! Crash storms: many crashes of one service in a short time, reported to the alert
//! command (promise 9).
//!
//! A sliding window of crash instants: a crash counts while `now - then < window`.
//! `on_crash` reports a storm when the crashes within the window reach
//! `storm.crashes`, and then stays quiet until a full `window` has passed since that
//! report, however many crashes follow: at most one storm report per window, so a
//! service stuck in a loop raises one alert every `window`, not one per crash.
//! `crashes = 0` behaves like 1 (config validation should refuse it).

use std::collections::VecDeque;
use std::time::Instant;

use crate::config::Storm;

/// Counts crashes of one service in a sliding window; reports a storm when the count reaches
/// `storm.crashes`, at most once per window.
#[derive(Debug, Clone)]
pub struct StormDetector {
    cfg: Storm,
    /// The latest crashes, oldest first; at most `crashes` are kept since only whether
    /// the count reaches `crashes` matters.
    crashes: VecDeque<Instant>,
    /// When the last storm was reported, to hold the next one back for a window.
    reported: Option<Instant>,
}

impl StormDetector {
    pub fn new(cfg: Storm) -> Self {
        StormDetector {
            cfg,
            crashes: VecDeque::new(),
            reported: None,
        }
    }

    /// Records a crash at `now`; true when this crash makes a storm that should be reported.
    pub fn on_crash(&mut self, now: Instant) -> bool {
        let window = self.cfg.window;
        let threshold = self.cfg.crashes.max(1) as usize;
        self.crashes.push_back(now);
        self.crashes
            .retain(|&at| now.saturating_duration_since(at) < window);
        while self.crashes.len() > threshold {
            self.crashes.pop_front();
        }
        if let Some(reported) = self.reported {
            if now.saturating_duration_since(reported) < window {
                return false;
            }
        }
        if self.crashes.len() >= threshold {
            self.reported = Some(now);
            return true;
        }
        false
    }

    /// Crashes of this service within the window ending at `now` (capped at `crashes`).
    pub fn recent(&self, now: Instant) -> usize {
        self.crashes
            .iter()
            .filter(|&&at| now.saturating_duration_since(at) < self.cfg.window)
            .count()
    }

    /// Applies a reloaded `storm` setting, keeping the crashes already seen.
    pub fn set_config(&mut self, cfg: Storm) {
        self.cfg = cfg;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn storm(crashes: u32, window_s: u64) -> StormDetector {
        StormDetector::new(Storm {
            crashes,
            window: secs(window_s),
        })
    }

    #[test]
    fn reports_when_the_count_reaches_the_threshold() {
        let t0 = Instant::now();
        let mut s = storm(3, 300);
        assert!(!s.on_crash(t0));
        assert!(!s.on_crash(t0 + secs(10)));
        assert!(s.on_crash(t0 + secs(20)));
        assert_eq!(s.recent(t0 + secs(20)), 3);
    }

    #[test]
    fn crashes_spread_wider_than_the_window_are_no_storm() {
        let t0 = Instant::now();
        let mut s = storm(3, 300);
        for i in 0..10 {
            assert!(!s.on_crash(t0 + secs(150 * i)), "crash {i}");
        }
    }

    #[test]
    fn window_boundary_is_exclusive() {
        let t0 = Instant::now();
        let mut s = storm(2, 60);
        assert!(!s.on_crash(t0));
        // At exactly one window later the first crash no longer counts.
        assert!(!s.on_crash(t0 + secs(60)));
        assert!(s.on_crash(t0 + secs(119)));
    }

    #[test]
    fn reports_at_most_once_per_window() {
        let t0 = Instant::now();
        let mut s = storm(3, 300);
        s.on_crash(t0);
        s.on_crash(t0 + secs(1));
        assert!(s.on_crash(t0 + secs(2)));
        // A continuing loop: a crash every 10s stays quiet until 300s after the report.
        let mut reports = Vec::new();
        for i in 1..=70 {
            let at = t0 + secs(2 + 10 * i);
            if s.on_crash(at) {
                reports.push(10 * i);
            }
        }
        assert_eq!(reports, vec![300, 600]);
    }

    #[test]
    fn after_a_quiet_window_a_new_storm_is_reported() {
        let t0 = Instant::now();
        let mut s = storm(2, 60);
        s.on_crash(t0);
        assert!(s.on_crash(t0 + secs(1)));
        assert!(!s.on_crash(t0 + secs(30)));
        // One crash after the hold-off is not yet a storm on its own...
        assert!(!s.on_crash(t0 + secs(200)));
        // ...a second one within the window is.
        assert!(s.on_crash(t0 + secs(210)));
    }

    #[test]
    fn zero_threshold_behaves_like_one() {
        let t0 = Instant::now();
        let mut s = storm(0, 60);
        assert!(s.on_crash(t0));
        assert!(!s.on_crash(t0 + secs(1)));
        assert!(s.on_crash(t0 + secs(61)));
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut s = storm(3, 1_000_000);
        for i in 0..10_000 {
            s.on_crash(t0 + Duration::from_millis(i));
        }
        assert_eq!(s.crashes.len(), 3);
    }

    #[test]
    fn clock_going_backwards_does_not_panic() {
        let t0 = Instant::now() + secs(100);
        let mut s = storm(2, 60);
        assert!(!s.on_crash(t0));
        assert!(s.on_crash(t0 - secs(10)));
        assert!(!s.on_crash(t0 - secs(20)));
    }
}
