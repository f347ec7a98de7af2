//! Health probes (HTTP, TCP, command, MCP ping): the effect behind promise 6 (hangs are found).
//!
//! Each service with a `[health]` section gets a prober: its own tokio task that runs
//! one probe at a time on a fixed cadence and sends every result to the supervisor as
//! a [`ProbeEvent`]. The supervisor feeds them to the pure threshold machine
//! (`policy::health`) and decides; the prober decides nothing, so a slow or hanging
//! probe can never hold up supervision, and a cancelled run's prober ends at once
//! (its probe dropped, a command's group killed).

pub mod probe;

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
        let (probe, timeout) = (&cfg.probe, cfg.timeout);
        probe_loop(service, run_id, &cfg, tx, cancel, || async move {
            Some(probe_once(probe, timeout).await)
        })
        .await;
    })
}

/// The prober's cadence around any one probe: `probe()` starts one probe, which cuts
/// itself off at its timeout; `None` is a probe that could not tell (nothing is
/// reported). [`spawn_prober`] runs it for the configured probe; an MCP server's client
/// connection runs it for the pings on its own pipe.
pub async fn probe_loop<F, Fut>(
    service: String,
    run_id: u64,
    cfg: &HealthConfig,
    tx: UnboundedSender<ProbeEvent>,
    cancel: CancellationToken,
    mut probe: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Result<(), String>>>,
{
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
            result = probe() => result,
        };
        let Some(result) = result else { continue };
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
}
