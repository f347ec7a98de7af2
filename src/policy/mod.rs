//! Pure policy: restart decisions, backoff, crash-loop limits and storms.
//!
//! Nothing here does I/O or reads a clock: every function takes `now` and, where
//! randomness is needed, a sample in `0.0..1.0`, so tests are exact and instant.

use std::time::{Duration, Instant};

use crate::config::{RestartConfig, Storm};

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
}

impl RestartTracker {
    pub fn new(cfg: RestartConfig) -> Self {
        RestartTracker { cfg }
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
        let _ = (now, uptime, failed, jitter_sample, &self.cfg);
        todo!()
    }

    /// The user started the service by hand, or the cooldown ended: forget the crash loop.
    pub fn clear(&mut self) {
        todo!()
    }
}

/// Counts crashes of one service in a sliding window; reports a storm when the count reaches
/// `storm.crashes`, at most once per window.
#[derive(Debug, Clone)]
pub struct StormDetector {
    cfg: Storm,
}

impl StormDetector {
    pub fn new(cfg: Storm) -> Self {
        StormDetector { cfg }
    }

    /// Records a crash at `now`; true when this crash makes a storm that should be reported.
    pub fn on_crash(&mut self, now: Instant) -> bool {
        let _ = (now, &self.cfg);
        todo!()
    }
}
