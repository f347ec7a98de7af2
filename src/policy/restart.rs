//! The restart decision for one service: policy, backoff attempt, stable-uptime
//! reset and the crash-loop limit (promise 4).
//!
//! The rules, in the order they apply on every exit:
//!
//! 1. A run that lasted at least `reset_after` was stable: the backoff attempt starts
//!    over (the next restart waits `initial` again). This applies to every exit.
//! 2. `never`, or a clean exit under `on-failure`, stays down. Such an exit is not a
//!    restart and does not count toward the limit.
//! 3. Every exit that would be restarted counts toward the crash-loop limit, stable
//!    runs included: the limit counts restarts, not crashes, so a service that lives
//!    just past `reset_after` and dies again is still caught if it does so more than
//!    `burst` times within `window`. (A stable service that exits once an hour never
//!    comes near `burst = 10` in `5m`.) The window slides and ends at `now`; an
//!    earlier restart counts while `now - then < window`.
//! 4. If this restart would make more than `limit.burst` restarts within the window,
//!    the service gives up until `now + cooldown`, and the window and attempt are
//!    forgotten so that after the cooldown it gets a fresh burst. `burst = 0` gives
//!    up at the first restart.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::backoff;
use crate::config::{RestartConfig, RestartPolicy};

/// What the supervisor should do after a run of a service ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Start the next run after `delay`; `attempt` counts restarts since the last reset (1 = first restart).
    Restart { delay: Duration, attempt: u32 },
    /// The policy does not restart this exit (`never`, or a clean exit under `on-failure`).
    Stay,
    /// Too many restarts within `limit.window`: state `failed` until `retry_at`.
    GiveUp { retry_at: Instant },
}

/// Per-service restart state: backoff attempt, reset after stable uptime, crash-loop limit.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    cfg: RestartConfig,
    /// Restarts since the last stable run or clear; drives the backoff.
    attempt: u32,
    /// When each restart within the current limit window was decided, oldest first.
    /// Never longer than `limit.burst`, because the one that would exceed it gives up
    /// and clears the list.
    restarts: VecDeque<Instant>,
}

impl RestartTracker {
    pub fn new(cfg: RestartConfig) -> Self {
        RestartTracker {
            cfg,
            attempt: 0,
            restarts: VecDeque::new(),
        }
    }

    /// A run ended after `uptime`; `failed` is a non-zero exit or a signal not sent by paiosd.
    /// `jitter_sample` is uniform in `0.0..1.0`.
    pub fn on_exit(
        &mut self,
        now: Instant,
        uptime: Duration,
        failed: bool,
        jitter_sample: f64,
    ) -> Decision {
        if uptime >= self.cfg.reset_after {
            self.attempt = 0;
        }
        match self.cfg.policy {
            RestartPolicy::Never => return Decision::Stay,
            RestartPolicy::OnFailure if !failed => return Decision::Stay,
            RestartPolicy::OnFailure | RestartPolicy::Always => {}
        }

        let window = self.cfg.limit.window;
        self.restarts
            .retain(|&at| now.saturating_duration_since(at) < window);
        if self.restarts.len() as u64 >= u64::from(self.cfg.limit.burst) {
            self.clear();
            return Decision::GiveUp {
                retry_at: saturating_add(now, self.cfg.limit.cooldown),
            };
        }

        self.restarts.push_back(now);
        self.attempt = self.attempt.saturating_add(1);
        Decision::Restart {
            delay: backoff::delay(&self.cfg.backoff, self.attempt, jitter_sample),
            attempt: self.attempt,
        }
    }

    /// The user started the service by hand, or the cooldown ended: forget the crash loop.
    pub fn clear(&mut self) {
        self.attempt = 0;
        self.restarts.clear();
    }

    /// Restarts since the last stable run, clear or give-up (0: none), for status.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The configuration in force.
    pub fn config(&self) -> &RestartConfig {
        &self.cfg
    }

    /// Applies a reloaded configuration without forgetting the crash loop in progress,
    /// so a reload cannot be used to escape the limit by accident.
    pub fn set_config(&mut self, cfg: RestartConfig) {
        self.cfg = cfg;
    }
}

/// `now + d`, or the latest representable instant on the way there: an absurd
/// cooldown must not panic the supervisor.
pub(crate) fn saturating_add(now: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackoffConfig, LimitConfig};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn cfg(policy: RestartPolicy) -> RestartConfig {
        RestartConfig {
            policy,
            backoff: BackoffConfig {
                initial: ms(100),
                max: secs(60),
                factor: 2.0,
                jitter: 0.0,
            },
            reset_after: secs(60),
            limit: LimitConfig {
                burst: 10,
                window: secs(300),
                cooldown: secs(600),
            },
        }
    }

    fn restart(delay: Duration, attempt: u32) -> Decision {
        Decision::Restart { delay, attempt }
    }

    #[test]
    fn never_stays_on_any_exit() {
        let t0 = Instant::now();
        let mut r = RestartTracker::new(cfg(RestartPolicy::Never));
        assert_eq!(r.on_exit(t0, secs(1), true, 0.5), Decision::Stay);
        assert_eq!(r.on_exit(t0, secs(1), false, 0.5), Decision::Stay);
        assert_eq!(r.attempt(), 0);
    }

    #[test]
    fn on_failure_restarts_only_failures() {
        let t0 = Instant::now();
        let mut r = RestartTracker::new(cfg(RestartPolicy::OnFailure));
        assert_eq!(r.on_exit(t0, secs(1), false, 0.5), Decision::Stay);
        assert_eq!(r.attempt(), 0);
        assert_eq!(r.on_exit(t0, secs(1), true, 0.5), restart(ms(100), 1));
        assert_eq!(r.attempt(), 1);
    }

    #[test]
    fn always_restarts_clean_exits_too() {
        let t0 = Instant::now();
        let mut r = RestartTracker::new(cfg(RestartPolicy::Always));
        assert_eq!(r.on_exit(t0, secs(1), false, 0.5), restart(ms(100), 1));
        assert_eq!(r.on_exit(t0, secs(1), true, 0.5), restart(ms(200), 2));
    }

    #[test]
    fn backoff_grows_with_each_quick_crash() {
        let t0 = Instant::now();
        let mut c = cfg(RestartPolicy::Always);
        c.limit.burst = 100;
        let mut r = RestartTracker::new(c);
        let delays: Vec<Decision> = (0..5)
            .map(|i| r.on_exit(t0 + secs(i), ms(10), true, 0.5))
            .collect();
        assert_eq!(
            delays,
            vec![
                restart(ms(100), 1),
                restart(ms(200), 2),
                restart(ms(400), 3),
                restart(ms(800), 4),
                restart(ms(1600), 5),
            ]
        );
    }

    #[test]
    fn jitter_sample_reaches_the_delay() {
        let t0 = Instant::now();
        let mut c = cfg(RestartPolicy::Always);
        c.backoff.jitter = 0.5;
        let mut r = RestartTracker::new(c);
        assert_eq!(r.on_exit(t0, ms(1), true, 0.0), restart(ms(50), 1));
        let mut r = RestartTracker::new(c);
        assert_eq!(
            r.on_exit(t0, ms(1), true, 0.999),
            restart(Duration::from_micros(149_900), 1)
        );
    }

    #[test]
    fn stable_uptime_resets_the_attempt() {
        let t0 = Instant::now();
        let mut r = RestartTracker::new(cfg(RestartPolicy::Always));
        assert_eq!(r.on_exit(t0, secs(1), true, 0.5), restart(ms(100), 1));
        assert_eq!(
            r.on_exit(t0 + secs(2), secs(1), true, 0.5),
            restart(ms(200), 2)
        );
        assert_eq!(
            r.on_exit(t0 + secs(4), secs(1), true, 0.5),
            restart(ms(400), 3)
        );
        // Just under reset_after is not stable.
        assert_eq!(
            r.on_exit(t0 + secs(70), secs(59), true, 0.5),
            restart(ms(800), 4)
        );
        // Exactly reset_after is stable: the backoff starts over.
        assert_eq!(
            r.on_exit(t0 + secs(140), secs(60), true, 0.5),
            restart(ms(100), 1)
        );
        assert_eq!(r.attempt(), 1);
    }

    #[test]
    fn stable_clean_exit_under_on_failure_still_resets() {
        let t0 = Instant::now();
        let mut r = RestartTracker::new(cfg(RestartPolicy::OnFailure));
        r.on_exit(t0, secs(1), true, 0.5);
        r.on_exit(t0, secs(1), true, 0.5);
        assert_eq!(r.attempt(), 2);
        assert_eq!(r.on_exit(t0, secs(3600), false, 0.5), Decision::Stay);
        assert_eq!(r.attempt(), 0);
    }

    #[test]
    fn crash_loop_gives_up_after_burst_then_fresh_burst_after_cooldown() {
        let t0 = Instant::now();
        let mut c = cfg(RestartPolicy::Always);
        c.limit = LimitConfig {
            burst: 3,
            window: secs(60),
            cooldown: secs(600),
        };
        let mut r = RestartTracker::new(c);
        assert_eq!(r.on_exit(t0, ms(10), true, 0.5), restart(ms(100), 1));
        assert_eq!(
            r.on_exit(t0 + secs(1), ms(10), true, 0.5),
            restart(ms(200), 2)
        );
        assert_eq!(
            r.on_exit(t0 + secs(2), ms(10), true, 0.5),
            restart(ms(400), 3)
        );
        // The fourth restart within 60s is one too many.
        assert_eq!(
            r.on_exit(t0 + secs(3), ms(10), true, 0.5),
            Decision::GiveUp {
                retry_at: t0 + secs(603)
            }
        );
        assert_eq!(r.attempt(), 0);
        // After the cooldown the service is started again and gets a full burst.
        let t1 = t0 + secs(603);
        assert_eq!(r.on_exit(t1, ms(10), true, 0.5), restart(ms(100), 1));
        assert_eq!(r.on_exit(t1, ms(10), true, 0.5), restart(ms(200), 2));
        assert_eq!(r.on_exit(t1, ms(10), true, 0.5), restart(ms(400), 3));
        assert!(matches!(
            r.on_exit(t1, ms(10), true, 0.5),
            Decision::GiveUp { .. }
        ));
    }

    #[test]
    fn limit_window_slides() {
        let t0 = Instant::now();
        let mut c = cfg(RestartPolicy::Always);
        c.limit = LimitConfig {
            burst: 2,
            window: secs(60),
            cooldown: secs(600),
        };
        let mut r = RestartTracker::new(c);
        assert!(matches!(
            r.on_exit(t0, ms(10), true, 0.5),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            r.on_exit(t0 + secs(30), ms(10), true, 0.5),
            Decision::Restart { .. }
        ));
        // At exactly +60s the first restart has left the window: two in the window, allowed.
        assert!(matches!(
            r.on_exit(t0 + secs(60), ms(10), true, 0.5),
            Decision::Restart { .. }
        ));
        // At +89s the restarts at +30s and +60s are still in it: a third gives up.
        assert_eq!(
            r.on_exit(t0 + secs(89), ms(10), true, 0.5),
            Decision::GiveUp {
                retry_at: t0 + secs(689)
            }
        );
    }

    #[test]
    fn stays_do_not_count_toward_the_limit() {
        let t0 = Instant::now();
        let mut c = cfg(RestartPolicy::OnFailure);
        c.limit.burst = 1;
        let mut r = RestartTracker::new(c);
        for i in 0..20 {
            assert_eq!(r.on_exit(t0 + ms(i), ms(1), false, 0.5), Decision::Stay);
        }
        assert!(matches!(
            r.on_exit(t0 + secs(1), ms(1), true, 0.5),
            Decision::Restart { attempt: 1, .. }
        ));
    }

    #[test]
    fn stable_restarts_count_toward_the_limit() {
        // A service that dies just after reset_after keeps a fresh backoff but is still
        // caught by the limit if it does so too often.
        let t0 = Instant::now();
        let mut c = cfg(RestartPolicy::Always);
        c.reset_after = secs(1);
        c.limit = LimitConfig {
            burst: 3,
            window: secs(60),
            cooldown: secs(10),
        };
        let mut r = RestartTracker::new(c);
        for i in 0..3 {
            assert_eq!(
                r.on_exit(t0 + secs(2 * i), secs(2), true, 0.5),
                restart(ms(100), 1)
            );
        }
        assert_eq!(
            r.on_exit(t0 + secs(6), secs(2), true, 0.5),
            Decision::GiveUp {
                retry_at: t0 + secs(16)
            }
        );
    }

    #[test]
    fn burst_zero_gives_up_at_once() {
        let t0 = Instant::now();
        let mut c = cfg(RestartPolicy::Always);
        c.limit.burst = 0;
        let mut r = RestartTracker::new(c);
        assert_eq!(
            r.on_exit(t0, ms(1), true, 0.5),
            Decision::GiveUp {
                retry_at: t0 + secs(600)
            }
        );
    }

    #[test]
    fn clear_forgets_attempts_and_window() {
        let t0 = Instant::now();
        let mut c = cfg(RestartPolicy::Always);
        c.limit.burst = 2;
        let mut r = RestartTracker::new(c);
        r.on_exit(t0, ms(1), true, 0.5);
        r.on_exit(t0, ms(1), true, 0.5);
        r.clear();
        assert_eq!(r.attempt(), 0);
        assert_eq!(r.on_exit(t0, ms(1), true, 0.5), restart(ms(100), 1));
        assert_eq!(r.on_exit(t0, ms(1), true, 0.5), restart(ms(200), 2));
    }

    #[test]
    fn set_config_keeps_the_crash_loop() {
        let t0 = Instant::now();
        let mut c = cfg(RestartPolicy::Always);
        c.limit.burst = 2;
        let mut r = RestartTracker::new(c);
        r.on_exit(t0, ms(1), true, 0.5);
        r.on_exit(t0, ms(1), true, 0.5);
        c.backoff.initial = ms(1000);
        r.set_config(c);
        assert_eq!(r.config().backoff.initial, ms(1000));
        assert_eq!(r.attempt(), 2);
        assert!(matches!(
            r.on_exit(t0, ms(1), true, 0.5),
            Decision::GiveUp { .. }
        ));
    }

    #[test]
    fn absurd_cooldown_saturates_instead_of_panicking() {
        let t0 = Instant::now();
        let mut c = cfg(RestartPolicy::Always);
        c.limit.burst = 0;
        c.limit.cooldown = Duration::MAX;
        let mut r = RestartTracker::new(c);
        match r.on_exit(t0, ms(1), true, 0.5) {
            Decision::GiveUp { retry_at } => assert!(retry_at > t0 + secs(86_400 * 365)),
            other => panic!("expected give-up, got {other:?}"),
        }
    }

    #[test]
    fn clock_going_backwards_does_not_panic_and_counts_as_in_window() {
        let t0 = Instant::now() + secs(100);
        let mut c = cfg(RestartPolicy::Always);
        c.limit.burst = 1;
        let mut r = RestartTracker::new(c);
        assert!(matches!(
            r.on_exit(t0, ms(1), true, 0.5),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            r.on_exit(t0 - secs(50), ms(1), true, 0.5),
            Decision::GiveUp { .. }
        ));
    }
}
