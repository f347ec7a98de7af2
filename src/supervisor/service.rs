//! One supervised service as the actor sees it: its config, its current run (a
//! process group that may outlive its leader), why it is not running, and its restart
//! bookkeeping. Only the actor in `mod.rs` mutates these.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};

use crate::config::ServiceConfig;
use crate::policy::{RestartTracker, StormDetector};
use crate::process::{ExitStatus, Identity};

/// Why a stop sequence was started on a run's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `paiosctl stop`, `--all`, or a service that is no longer wanted.
    User,
    /// `paiosctl restart`, or a reload that changed the service.
    Restart,
    /// The service was removed from the config.
    Removed,
    /// paiosd is shutting down.
    Shutdown,
    /// The leader exited on its own while other members of its group lived on.
    LeaderExited,
    /// A task ran past its timeout.
    Timeout,
    /// Its health probe failed `failures` times in a row.
    Hung,
    /// Its group's RSS went over `[memory] limit`.
    Memory,
}

/// A stop sequence in progress.
#[derive(Debug, Clone, Copy)]
pub struct Stopping {
    pub reason: StopReason,
    pub since: Instant,
    /// SIGKILL was needed after the grace period.
    pub killed: bool,
}

/// One run: a process group that exists from spawn until it is empty.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: u64,
    pub leader: Identity,
    pub pgid: i32,
    pub started: Instant,
    pub started_wall: DateTime<Utc>,
    /// Restart attempt of this run (0 = not a restart).
    pub attempt: u32,
    /// The backoff delay that preceded this run.
    pub delay: Option<Duration>,
    /// Set when the leader was reaped; the run lasts until the group is empty too.
    pub leader_exit: Option<(ExitStatus, Instant, DateTime<Utc>)>,
    pub stopping: Option<Stopping>,
    /// Polls of an emptying group so far (sets the next poll's delay).
    pub polls: u32,
    /// Probe state, for a service with `[health]`.
    pub health: Option<super::watch::RunHealth>,
    /// Memory samples and the stopped-by-signal check.
    pub watch: super::watch::RunWatch,
    /// Why paiosd ended it (probe errors, the memory figure), for the ledger's context.
    pub hung_context: Option<String>,
    /// Processes that left the group (`setsid`): ended with the run (see `escape.rs`).
    pub escapees: Vec<super::sweep::Escaped>,
}

impl Run {
    /// The leader is alive and nobody is stopping the run.
    pub fn is_up(&self) -> bool {
        self.leader_exit.is_none() && self.stopping.is_none()
    }
}

/// Why a service without a run is not running.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// Not wanted, or the policy does not restart its last exit.
    None,
    /// Waiting out the backoff before restart `attempt`.
    Backoff {
        until: Instant,
        until_wall: DateTime<Utc>,
        attempt: u32,
        delay: Duration,
    },
    /// Gave up after a crash loop; tries again at `retry_at`.
    Failed {
        retry_at: Instant,
        retry_wall: DateTime<Utc>,
    },
    /// Waiting for the services it comes `after`.
    Waiting(Vec<String>),
}

/// The end of the last run, for status.
#[derive(Debug, Clone)]
pub struct LastExit {
    pub status: Option<ExitStatus>,
    pub outcome: &'static str,
    pub at: DateTime<Utc>,
    pub pid: i32,
}

#[derive(Debug)]
pub struct Service {
    pub cfg: ServiceConfig,
    pub run: Option<Run>,
    /// The user (or boot) wants it running; false after a stop or a policy `Stay`.
    pub want_up: bool,
    pub hold: Hold,
    pub tracker: RestartTracker,
    pub storm: StormDetector,
    /// Wall-clock times of restarts, for `restarts_24h`.
    pub restarts: VecDeque<SystemTime>,
    pub last_exit: Option<LastExit>,
    /// Runs that have ended, so a waiter can tell "the run after this one ended".
    pub runs_finished: u64,
    /// Start again as soon as the current run's group is empty (restart, changed config).
    pub restart_requested: bool,
    /// The config it will run with after the current run ends (a reload changed it).
    pub replacement: Option<ServiceConfig>,
    /// A reload removed it: forget it once its run has ended.
    pub removed: bool,
    /// Attempt number and delay for the next run.
    pub next_attempt: u32,
    pub next_delay: Option<Duration>,
    /// Tasks only: the schedule and the last time handled.
    pub clock: Option<super::tasks::TaskClock>,
}

impl Service {
    pub fn new(cfg: ServiceConfig, storm: crate::config::Storm) -> Service {
        Service {
            tracker: RestartTracker::new(cfg.restart),
            storm: StormDetector::new(storm),
            cfg,
            run: None,
            want_up: false,
            hold: Hold::None,
            restarts: VecDeque::new(),
            last_exit: None,
            runs_finished: 0,
            restart_requested: false,
            replacement: None,
            removed: false,
            next_attempt: 0,
            next_delay: None,
            clock: None,
        }
    }

    pub fn is_task(&self) -> bool {
        self.cfg.task.is_some()
    }

    /// Up and not being stopped: what `after` waits for and `start --wait` reports.
    pub fn is_up(&self) -> bool {
        self.run.as_ref().is_some_and(Run::is_up)
    }

    /// Restarts within the last 24 hours, forgetting older ones.
    pub fn restarts_24h(&mut self, now: SystemTime) -> u32 {
        let day = Duration::from_secs(86_400);
        while let Some(first) = self.restarts.front() {
            match now.duration_since(*first) {
                Ok(age) if age > day => {
                    self.restarts.pop_front();
                }
                _ => break,
            }
        }
        u32::try_from(self.restarts.len()).unwrap_or(u32::MAX)
    }
}
