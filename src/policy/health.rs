//! Health thresholds: turns a stream of probe results into a verdict (promise 6).
//!
//! The probe itself (HTTP, TCP, command) runs elsewhere; this is only the counting.
//! The rules:
//!
//! - A run starts in its start period. Failures while `now - started < start_period`
//!   do not count: a service may take that long to come up. The verdict is
//!   `Starting` until the first success or the end of the start period.
//! - The first success ends the start period at once: from then on every failure
//!   counts, even if `start_period` has not elapsed.
//! - A success resets the consecutive failure count and gives `Healthy`.
//! - A counted failure gives `Unhealthy { consecutive, of }` below the threshold and
//!   `Hung` once `consecutive` reaches `failures`. Every further failure is still
//!   `Hung`; the supervisor acts on the first one and starts a fresh `HealthState`
//!   with the next run. `failures = 0` behaves like 1.
//!
//! The last few probe errors are kept, so a hang can be recorded with why.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::HealthConfig;

/// How many recent probe errors are kept for context.
pub const KEEP_ERRORS: usize = 5;

/// A probe error is cut to this many bytes: probe output is not trusted to be small.
pub const MAX_ERROR_LEN: usize = 512;

/// The two numbers that decide a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// Consecutive counted failures that make a service hung.
    pub failures: u32,
    /// Time after the start during which failures do not count.
    pub start_period: Duration,
}

impl From<&HealthConfig> for HealthThresholds {
    fn from(cfg: &HealthConfig) -> Self {
        HealthThresholds {
            failures: cfg.failures,
            start_period: cfg.start_period,
        }
    }
}

/// What the probe results so far say about a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthVerdict {
    /// In the start period and no success yet.
    Starting,
    /// The last probe succeeded.
    Healthy,
    /// Counted failures in a row, below the threshold `of`.
    Unhealthy { consecutive: u32, of: u32 },
    /// The failure threshold was reached.
    Hung,
}

impl HealthVerdict {
    /// The form shown by `paiosctl status`: `starting`, `healthy`, `unhealthy 2/3`, `hung`.
    pub fn label(&self) -> String {
        match self {
            HealthVerdict::Starting => "starting".to_string(),
            HealthVerdict::Healthy => "healthy".to_string(),
            HealthVerdict::Unhealthy { consecutive, of } => format!("unhealthy {consecutive}/{of}"),
            HealthVerdict::Hung => "hung".to_string(),
        }
    }
}

/// Probe bookkeeping for one run of one service.
#[derive(Debug, Clone)]
pub struct HealthState {
    cfg: HealthThresholds,
    started: Instant,
    /// Set by the first success; ends the start period early.
    seen_success: bool,
    /// Counted failures since the last success.
    consecutive: u32,
    verdict: HealthVerdict,
    /// The latest probe errors, oldest first, at most `KEEP_ERRORS`.
    errors: VecDeque<String>,
}

impl HealthState {
    pub fn new(cfg: HealthThresholds, started: Instant) -> Self {
        HealthState {
            cfg,
            started,
            seen_success: false,
            consecutive: 0,
            verdict: HealthVerdict::Starting,
            errors: VecDeque::new(),
        }
    }

    /// Records one probe result at `now`; `error` says why a failed probe failed.
    pub fn on_result(&mut self, now: Instant, ok: bool, error: Option<String>) -> HealthVerdict {
        self.verdict = if ok {
            self.seen_success = true;
            self.consecutive = 0;
            HealthVerdict::Healthy
        } else {
            self.remember(error);
            if self.in_start_period(now) {
                HealthVerdict::Starting
            } else {
                self.consecutive = self.consecutive.saturating_add(1);
                let of = self.cfg.failures.max(1);
                if self.consecutive >= of {
                    HealthVerdict::Hung
                } else {
                    HealthVerdict::Unhealthy {
                        consecutive: self.consecutive,
                        of,
                    }
                }
            }
        };
        self.verdict
    }

    /// The verdict of the last result (`Starting` before any).
    pub fn verdict(&self) -> HealthVerdict {
        self.verdict
    }

    /// The verdict as `paiosctl status` shows it.
    pub fn label(&self) -> String {
        self.verdict.label()
    }

    /// Whether failures at `now` would not count yet.
    pub fn in_start_period(&self, now: Instant) -> bool {
        !self.seen_success && now.saturating_duration_since(self.started) < self.cfg.start_period
    }

    /// Counted failures since the last success.
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// The latest probe errors, oldest first.
    pub fn recent_errors(&self) -> impl Iterator<Item = &str> {
        self.errors.iter().map(String::as_str)
    }

    /// The latest probe error, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.errors.back().map(String::as_str)
    }

    fn remember(&mut self, error: Option<String>) {
        let mut text = error.unwrap_or_else(|| "probe failed".to_string());
        if text.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        if self.errors.len() == KEEP_ERRORS {
            self.errors.pop_front();
        }
        self.errors.push_back(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn state(failures: u32, start_s: u64, t0: Instant) -> HealthState {
        HealthState::new(
            HealthThresholds {
                failures,
                start_period: secs(start_s),
            },
            t0,
        )
    }

    fn fail(h: &mut HealthState, at: Instant) -> HealthVerdict {
        h.on_result(at, false, Some("connection refused".into()))
    }

    #[test]
    fn starts_as_starting() {
        let t0 = Instant::now();
        let h = state(3, 30, t0);
        assert_eq!(h.verdict(), HealthVerdict::Starting);
        assert_eq!(h.label(), "starting");
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let t0 = Instant::now();
        let mut h = state(3, 30, t0);
        for i in 0..29 {
            assert_eq!(fail(&mut h, t0 + secs(i)), HealthVerdict::Starting);
        }
        assert_eq!(h.consecutive(), 0);
        // From exactly start_period on, failures count.
        assert_eq!(
            fail(&mut h, t0 + secs(30)),
            HealthVerdict::Unhealthy {
                consecutive: 1,
                of: 3
            }
        );
        assert_eq!(h.label(), "unhealthy 1/3");
        assert_eq!(
            fail(&mut h, t0 + secs(40)),
            HealthVerdict::Unhealthy {
                consecutive: 2,
                of: 3
            }
        );
        assert_eq!(h.label(), "unhealthy 2/3");
        assert_eq!(fail(&mut h, t0 + secs(50)), HealthVerdict::Hung);
        assert_eq!(h.label(), "hung");
        assert_eq!(fail(&mut h, t0 + secs(60)), HealthVerdict::Hung);
    }

    #[test]
    fn first_success_ends_the_start_period() {
        let t0 = Instant::now();
        let mut h = state(2, 30, t0);
        assert_eq!(fail(&mut h, t0 + secs(1)), HealthVerdict::Starting);
        assert_eq!(
            h.on_result(t0 + secs(2), true, None),
            HealthVerdict::Healthy
        );
        assert_eq!(h.label(), "healthy");
        assert!(!h.in_start_period(t0 + secs(3)));
        assert_eq!(
            fail(&mut h, t0 + secs(3)),
            HealthVerdict::Unhealthy {
                consecutive: 1,
                of: 2
            }
        );
        assert_eq!(fail(&mut h, t0 + secs(4)), HealthVerdict::Hung);
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut h = state(3, 0, t0);
        fail(&mut h, t0);
        fail(&mut h, t0 + secs(1));
        assert_eq!(h.consecutive(), 2);
        assert_eq!(
            h.on_result(t0 + secs(2), true, None),
            HealthVerdict::Healthy
        );
        assert_eq!(h.consecutive(), 0);
        assert_eq!(
            fail(&mut h, t0 + secs(3)),
            HealthVerdict::Unhealthy {
                consecutive: 1,
                of: 3
            }
        );
    }

    #[test]
    fn hung_recovers_on_success() {
        let t0 = Instant::now();
        let mut h = state(1, 0, t0);
        assert_eq!(fail(&mut h, t0), HealthVerdict::Hung);
        assert_eq!(
            h.on_result(t0 + secs(1), true, None),
            HealthVerdict::Healthy
        );
    }

    #[test]
    fn zero_failures_behaves_like_one() {
        let t0 = Instant::now();
        let mut h = state(0, 0, t0);
        assert_eq!(fail(&mut h, t0), HealthVerdict::Hung);
    }

    #[test]
    fn zero_start_period_counts_the_first_failure() {
        let t0 = Instant::now();
        let mut h = state(3, 0, t0);
        assert_eq!(
            fail(&mut h, t0),
            HealthVerdict::Unhealthy {
                consecutive: 1,
                of: 3
            }
        );
    }

    #[test]
    fn keeps_the_last_few_errors() {
        let t0 = Instant::now();
        let mut h = state(100, 0, t0);
        for i in 0..8 {
            h.on_result(t0, false, Some(format!("error {i}")));
        }
        h.on_result(t0, false, None);
        let errs: Vec<&str> = h.recent_errors().collect();
        assert_eq!(
            errs,
            vec!["error 4", "error 5", "error 6", "error 7", "probe failed"]
        );
        assert_eq!(h.last_error(), Some("probe failed"));
        // A success keeps them: they explain the last failures.
        h.on_result(t0, true, Some("ignored".into()));
        assert_eq!(h.recent_errors().count(), KEEP_ERRORS);
        assert_eq!(h.last_error(), Some("probe failed"));
    }

    #[test]
    fn oversized_errors_are_cut_on_a_char_boundary() {
        let t0 = Instant::now();
        let mut h = state(3, 0, t0);
        h.on_result(t0, false, Some("é".repeat(10_000)));
        let e = h.last_error().unwrap_or_default();
        assert!(e.len() <= MAX_ERROR_LEN);
        assert!(e.len() >= MAX_ERROR_LEN - 1);
        assert!(e.chars().all(|c| c == 'é'));
    }

    #[test]
    fn thresholds_come_from_the_health_config() {
        let cfg = HealthConfig {
            probe: crate::config::Probe::Tcp {
                addr: "127.0.0.1:1".parse().expect("a probe address"),
            },
            interval: secs(10),
            timeout: secs(2),
            failures: 3,
            start_period: secs(30),
            on_failure: crate::config::OnFailure::Restart,
        };
        assert_eq!(
            HealthThresholds::from(&cfg),
            HealthThresholds {
                failures: 3,
                start_period: secs(30)
            }
        );
    }

    #[test]
    fn clock_before_start_is_in_the_start_period() {
        let t0 = Instant::now() + secs(100);
        let mut h = state(1, 30, t0);
        assert_eq!(fail(&mut h, t0 - secs(50)), HealthVerdict::Starting);
    }
}
