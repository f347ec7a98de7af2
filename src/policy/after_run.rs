//! What follows the end of a run (a process group that has emptied): forget a removed
//! service, rest, start again at once, restart after a backoff, give up after a crash
//! loop, or for a task retry within its slot or report it failed. Pure: the time, the
//! jitter sample and the per-service trackers are passed in; the supervisor performs
//! what the returned [`Next`] names.

use std::time::{Duration, Instant};

use super::backoff;
use super::outcome::Outcome;
use super::restart::{Decision, RestartTracker};
use super::storm::StormDetector;
use crate::config::BackoffConfig;

/// What the user (or boot, or a reload) wants of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Not running: stopped, never started, or a policy that does not restart it.
    Down,
    /// Running, restarted by its policy.
    Up,
    /// Running, and started again as soon as the current run's group is empty (a
    /// restart, or a changed config); `Up` once started.
    Restart,
    /// A reload removed it: forgotten once its run has ended.
    Remove,
}

/// How the run ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// When the leader exited (or the group emptied, without a leader exit).
    pub exit_at: Instant,
    pub uptime: Duration,
    pub outcome: Outcome,
    /// paiosd stopped it on request (see [`super::outcome::by_paiosd`]).
    pub by_paiosd: bool,
}

/// The service around the run that ended.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub want: Want,
    pub shutting_down: bool,
    /// `Some(retries left in the current slot)` for a task, `None` for a service.
    pub task_retries_left: Option<u32>,
    /// The attempt number the next run would have.
    pub next_attempt: u32,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// It was removed from the config: forget it.
    Remove,
    /// Nothing: it stays down with no hold (shutdown, stopped on request, not wanted).
    Rest,
    /// Start it again at once (a restart was asked for).
    StartNow,
    /// Its policy does not restart this exit: no longer wanted up.
    Stay,
    /// Restart `attempt` at `until`, after `delay`.
    Backoff {
        until: Instant,
        delay: Duration,
        attempt: u32,
    },
    /// A crash loop: `failed` until the cooldown ends at `retry_at`.
    GiveUp { retry_at: Instant },
    /// A task run is over (`reset_attempt`: it succeeded, the retry count starts over).
    TaskDone { reset_attempt: bool },
    /// A failed task run is retried within its slot at `until`.
    TaskRetry {
        until: Instant,
        delay: Duration,
        attempt: u32,
    },
    /// A failed task run with no retry left.
    TaskFailed,
}

/// The decision, and whether this crash completes a crash storm worth an alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AfterRun {
    pub next: Next,
    pub storm: bool,
}

/// Decides what follows a run's end. `tracker` and `storm` are the service's restart
/// and storm state machines, updated here; `jitter` is uniform in `0.0..1.0`.
pub fn after_run(
    standing: Standing,
    ended: Ended,
    tracker: &mut RestartTracker,
    storm: &mut StormDetector,
    backoff_cfg: &BackoffConfig,
    now: Instant,
    jitter: f64,
) -> AfterRun {
    let rest = |next| AfterRun { next, storm: false };
    if standing.want == Want::Remove {
        return rest(Next::Remove);
    }
    if standing.shutting_down {
        return rest(Next::Rest);
    }
    if standing.want == Want::Restart {
        return rest(Next::StartNow);
    }
    let failed = ended.outcome.is_failure();
    if let Some(retries_left) = standing.task_retries_left {
        return rest(after_task(
            standing,
            ended,
            retries_left,
            backoff_cfg,
            jitter,
        ));
    }
    if ended.by_paiosd || standing.want != Want::Up {
        return rest(Next::Rest);
    }
    let storm = failed && storm.on_crash(now);
    let next = match tracker.on_exit(ended.exit_at, ended.uptime, failed, jitter) {
        Decision::Restart { delay, attempt } => Next::Backoff {
            until: ended.exit_at + delay,
            delay,
            attempt,
        },
        Decision::Stay => Next::Stay,
        Decision::GiveUp { retry_at } => Next::GiveUp { retry_at },
    };
    AfterRun { next, storm }
}

/// A task: a run paiosd stopped on request or one that succeeded is done; a failed one
/// is retried while its slot has retries left.
fn after_task(
    standing: Standing,
    ended: Ended,
    retries_left: u32,
    backoff_cfg: &BackoffConfig,
    jitter: f64,
) -> Next {
    if ended.by_paiosd {
        return Next::TaskDone {
            reset_attempt: false,
        };
    }
    if !ended.outcome.is_failure() {
        return Next::TaskDone {
            reset_attempt: true,
        };
    }
    if retries_left == 0 {
        return Next::TaskFailed;
    }
    let attempt = standing.next_attempt + 1;
    let delay = backoff::delay(backoff_cfg, attempt, jitter);
    Next::TaskRetry {
        until: ended.exit_at + delay,
        delay,
        attempt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LimitConfig, RestartConfig, RestartPolicy, Storm};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn backoff() -> BackoffConfig {
        BackoffConfig {
            initial: ms(100),
            max: ms(1000),
            factor: 2.0,
            jitter: 0.0,
        }
    }

    fn tracker(policy: RestartPolicy, burst: u32) -> RestartTracker {
        RestartTracker::new(RestartConfig {
            policy,
            backoff: backoff(),
            reset_after: Duration::from_secs(60),
            limit: LimitConfig {
                burst,
                window: Duration::from_secs(60),
                cooldown: Duration::from_secs(300),
            },
        })
    }

    fn storm() -> StormDetector {
        StormDetector::new(Storm {
            crashes: 2,
            window: Duration::from_secs(60),
        })
    }

    fn service(want: Want) -> Standing {
        Standing {
            want,
            shutting_down: false,
            task_retries_left: None,
            next_attempt: 0,
        }
    }

    fn ended(at: Instant, outcome: Outcome, by_paiosd: bool) -> Ended {
        Ended {
            exit_at: at,
            uptime: ms(5),
            outcome,
            by_paiosd,
        }
    }

    fn decide(s: Standing, e: Ended, t: &mut RestartTracker, st: &mut StormDetector) -> AfterRun {
        after_run(s, e, t, st, &backoff(), e.exit_at, 0.5)
    }

    #[test]
    fn a_crash_backs_off_then_a_loop_gives_up() {
        let t0 = Instant::now();
        let (mut t, mut st) = (tracker(RestartPolicy::OnFailure, 2), storm());
        let crash = |at| ended(at, Outcome::Crashed, false);
        let first = decide(service(Want::Up), crash(t0), &mut t, &mut st);
        assert_eq!(
            first.next,
            Next::Backoff {
                until: t0 + ms(100),
                delay: ms(100),
                attempt: 1
            }
        );
        assert!(!first.storm);
        let second = decide(service(Want::Up), crash(t0 + ms(200)), &mut t, &mut st);
        assert!(matches!(second.next, Next::Backoff { attempt: 2, .. }));
        assert!(second.storm, "two crashes within the storm window");
        let third = decide(service(Want::Up), crash(t0 + ms(600)), &mut t, &mut st);
        assert_eq!(
            third.next,
            Next::GiveUp {
                retry_at: t0 + ms(600) + Duration::from_secs(300)
            }
        );
    }

    #[test]
    fn requests_come_before_the_policy() {
        let t0 = Instant::now();
        let (mut t, mut st) = (tracker(RestartPolicy::Always, 5), storm());
        let crash = ended(t0, Outcome::Crashed, false);
        let stopped = ended(t0, Outcome::Stopped, true);
        assert_eq!(
            decide(service(Want::Remove), crash, &mut t, &mut st).next,
            Next::Remove
        );
        assert_eq!(
            decide(service(Want::Restart), stopped, &mut t, &mut st).next,
            Next::StartNow
        );
        assert_eq!(
            decide(service(Want::Up), stopped, &mut t, &mut st).next,
            Next::Rest
        );
        assert_eq!(
            decide(service(Want::Down), crash, &mut t, &mut st).next,
            Next::Rest
        );
        let mut down = service(Want::Restart);
        down.shutting_down = true;
        assert_eq!(decide(down, crash, &mut t, &mut st).next, Next::Rest);
    }

    #[test]
    fn a_clean_exit_under_on_failure_stays_down() {
        let t0 = Instant::now();
        let (mut t, mut st) = (tracker(RestartPolicy::OnFailure, 5), storm());
        let clean = ended(t0, Outcome::Exited, false);
        assert_eq!(
            decide(service(Want::Up), clean, &mut t, &mut st).next,
            Next::Stay
        );
    }

    #[test]
    fn a_failed_task_retries_while_its_slot_has_retries() {
        let t0 = Instant::now();
        let (mut t, mut st) = (tracker(RestartPolicy::Never, 5), storm());
        let mut task = service(Want::Down);
        task.task_retries_left = Some(1);
        task.next_attempt = 1;
        let failed = ended(t0, Outcome::Crashed, false);
        assert_eq!(
            decide(task, failed, &mut t, &mut st).next,
            Next::TaskRetry {
                until: t0 + ms(200),
                delay: ms(200),
                attempt: 2
            }
        );
        task.task_retries_left = Some(0);
        assert_eq!(decide(task, failed, &mut t, &mut st).next, Next::TaskFailed);
        let ok = ended(t0, Outcome::Exited, false);
        assert_eq!(
            decide(task, ok, &mut t, &mut st).next,
            Next::TaskDone {
                reset_attempt: true
            }
        );
        let timed_out_by_hand = ended(t0, Outcome::Stopped, true);
        assert_eq!(
            decide(task, timed_out_by_hand, &mut t, &mut st).next,
            Next::TaskDone {
                reset_attempt: false
            }
        );
    }
}
