//! A rate limiter for alerts: at most one event per `per`.
//!
//! Alerts run a user command; a service stuck in a crash or health-failure loop must
//! not run it hundreds of times. The first event passes, and the next one passes
//! only once `per` has elapsed since the last one that passed. Events held back are
//! simply dropped: the ledger still records every one of them.

use std::time::{Duration, Instant};

/// Allows at most one event per `per`.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    pub per: Duration,
    /// When the last allowed event happened.
    last: Option<Instant>,
}

impl RateLimiter {
    pub fn new(per: Duration) -> Self {
        RateLimiter { per, last: None }
    }

    /// True, and remembers `now`, when an event at `now` may pass.
    ///
    /// A `now` earlier than the last allowed event (a fake clock going backwards) is
    /// held back rather than trusted.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            if now.saturating_duration_since(last) < self.per {
                return false;
            }
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_event_passes_then_once_per_period() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(Duration::from_secs(60));
        assert!(r.allow(t0));
        assert!(!r.allow(t0));
        assert!(!r.allow(t0 + Duration::from_secs(59)));
        assert!(r.allow(t0 + Duration::from_secs(60)));
        assert!(!r.allow(t0 + Duration::from_secs(119)));
        assert!(r.allow(t0 + Duration::from_secs(120)));
    }

    #[test]
    fn held_back_events_do_not_extend_the_period() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(Duration::from_secs(10));
        assert!(r.allow(t0));
        for i in 1..10 {
            assert!(!r.allow(t0 + Duration::from_secs(i)));
        }
        assert!(r.allow(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn zero_period_allows_everything() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(Duration::ZERO);
        assert!(r.allow(t0));
        assert!(r.allow(t0));
    }

    #[test]
    fn clock_going_backwards_is_held_back() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut r = RateLimiter::new(Duration::from_secs(10));
        assert!(r.allow(t0));
        assert!(!r.allow(t0 - Duration::from_secs(50)));
    }
}
