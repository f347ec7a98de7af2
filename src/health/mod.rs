//! Health probes (HTTP, TCP, command) and the memory watch's sampling: the effects
//! behind promises 6 and 7.
//!
//! Each service with a `[health]` section gets a prober: its own tokio task that runs
//! one probe at a time on a fixed cadence and sends every result to the supervisor as
//! a [`ProbeEvent`]. The supervisor feeds them to the pure threshold machine
//! (`policy::health`) and decides; the prober decides nothing, so a slow or hanging
//! probe can never hold up supervision, and a cancelled run's prober ends at once
//! (its probe dropped, a command's group killed).

pub mod probe;

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::HealthConfig;

pub use probe::probe_once;

/// The shortest gap between probe starts, whatever the config says: an `interval` of
/// zero must not turn a prober into a busy loop.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Stands in for "never again" where an interval is too large to add to an instant.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One probe's result, for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    pub service: String,
    /// The run the probe was for, so a result that arrives after a restart is ignored.
    pub run_id: u64,
    pub ok: bool,
    /// Why it failed, one line; `None` when `ok`.
    pub error: Option<String>,
    /// How long the probe took.
    pub elapsed: Duration,
}

/// Starts probing `service`'s run `run_id` on the current runtime and returns the task.
///
/// The first probe runs at once (the start period, not a delay here, keeps early
/// failures from counting; probing at once lets a fast service turn ready at once).
/// Then one probe starts every `interval`, counted from the previous probe's start; a
/// probe that overran is followed at once by the next, never by two at a time and
/// never by a burst to catch up. Each probe is cut off at `timeout`.
///
/// The task ends when `cancel` fires (the probe in flight is dropped: its connection
/// closed, its command's group killed) or when the receiver of `tx` is gone.
pub fn spawn_prober(
    service: String,
    run_id: u64,
    cfg: HealthConfig,
    tx: UnboundedSender<ProbeEvent>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = cfg.interval.max(MIN_INTERVAL);
        let mut next = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
            let started = Instant::now();
            // An absurd interval means "once": a deadline past Instant's range would panic.
            next = started
                .checked_add(interval)
                .unwrap_or_else(|| started + FAR_FUTURE);
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                result = probe_once(&cfg.probe, cfg.timeout) => result,
            };
            let event = ProbeEvent {
                service: service.clone(),
                run_id,
                ok: result.is_ok(),
                error: result.err(),
                elapsed: started.elapsed(),
            };
            if tx.send(event).is_err() {
                return;
            }
        }
    })
}

/// Resident memory in bytes of each of `pgids` that has live members, from one scan of
/// the process table; a group with no live member is absent.
pub fn rss_of_groups(pgids: &[i32]) -> HashMap<i32, u64> {
    let mut all = crate::process::rss_by_group();
    all.retain(|pgid, _| pgids.contains(pgid));
    all
}

/// The least time a hang can take to be decided: `failures` probes, `interval` apart,
/// counted from the first failed one. What the hang-detection benchmark compares with.
pub fn hang_detection_floor(cfg: &HealthConfig) -> Duration {
    cfg.interval
        .max(MIN_INTERVAL)
        .saturating_mul(cfg.failures.max(1))
}

/// The most time from a service wedging to its `hung` decision when the start period is
/// over: up to one interval until the next probe starts, `failures - 1` more intervals,
/// and the last probe's timeout (`interval × failures + timeout`).
pub fn hang_detection_bound(cfg: &HealthConfig) -> Duration {
    hang_detection_floor(cfg).saturating_add(cfg.timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OnFailure, Probe};

    fn cfg(interval_ms: u64, timeout_ms: u64, failures: u32) -> HealthConfig {
        HealthConfig {
            probe: Probe::Tcp {
                addr: "127.0.0.1:1".into(),
            },
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            failures,
            start_period: Duration::ZERO,
            on_failure: OnFailure::Restart,
        }
    }

    #[test]
    fn detection_floor_and_bound() {
        let c = cfg(10_000, 2_000, 3);
        assert_eq!(hang_detection_floor(&c), Duration::from_secs(30));
        assert_eq!(hang_detection_bound(&c), Duration::from_secs(32));
        // failures = 0 behaves like 1, as in the threshold machine.
        assert_eq!(
            hang_detection_floor(&cfg(1_000, 0, 0)),
            Duration::from_secs(1)
        );
        assert_eq!(hang_detection_floor(&cfg(0, 0, 2)), MIN_INTERVAL * 2);
        let huge = HealthConfig {
            interval: Duration::MAX,
            ..cfg(0, 0, 5)
        };
        assert_eq!(hang_detection_bound(&huge), Duration::MAX);
    }
}
