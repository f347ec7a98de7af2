//! The data the supervisor owns, with no behaviour that needs the actor: one service
//! (its config, what is wanted of it, its state word and why it is not running), one
//! run (a process group that may outlive its leader), a run's health and memory
//! watch, a task's clock and the processes that escaped a run's group.
//!
//! The state word is held here and moved only through [`Service::enter`], which checks
//! [`ALLOWED_TRANSITIONS`] and logs a transition the table does not allow. Behaviour
//! files import this module; it imports none of them.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::schedule::Schedule;
use crate::config::ServiceConfig;
use crate::control::protocol::{OpResult, Response};
use crate::policy::growth::GrowthWatch;
use crate::policy::health::HealthState;
use crate::policy::{RestartTracker, StormDetector};
use crate::process::{ExitStatus, Identity};

pub use crate::policy::{Outcome, StopReason, Want};

/// How long a new run must stay up before `start`/`restart --wait` report it running
/// (without a health probe): long enough that a command that fails at once is reported
/// as failed rather than as started.
pub const SETTLE: Duration = Duration::from_millis(200);

/// The state word `status`, `--json` and operation results show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// No run, not wanted (or its policy did not restart it).
    Stopped,
    /// A task between runs.
    Idle,
    /// Wanted, waiting for the services it comes `after`.
    Waiting,
    /// A run with a probe that has not yet passed once.
    Starting,
    Running,
    /// Every process of the group is stopped (SIGSTOP): seen by the sampler.
    StoppedBySignal,
    /// A stop sequence is ending the group.
    Stopping,
    /// A stop sequence after failed probes.
    Hung,
    /// Waiting out the delay before a restart.
    Backoff,
    /// Gave up after a crash loop; retries after the cooldown.
    Failed,
}

use State::*;

/// Every state, and the states it may move to. A run's states follow its lifecycle
/// (start, ready, stop) and its end always passes through `stopped` or `idle`, where
/// what follows is decided; the states without a run may follow each other freely,
/// since a reload or an operation can change why a service is not running at any time.
pub const ALLOWED_TRANSITIONS: &[(State, &[State])] = &[
    (
        Stopped,
        &[Stopped, Idle, Waiting, Starting, Running, Backoff, Failed],
    ),
    (
        Idle,
        &[Stopped, Idle, Waiting, Starting, Running, Backoff, Failed],
    ),
    (
        Waiting,
        &[Stopped, Idle, Waiting, Starting, Running, Backoff, Failed],
    ),
    (
        Backoff,
        &[Stopped, Idle, Waiting, Starting, Running, Backoff, Failed],
    ),
    (
        Failed,
        &[Stopped, Idle, Waiting, Starting, Running, Backoff, Failed],
    ),
    (Starting, &[Running, Stopping, Hung, Stopped, Idle]),
    (Running, &[StoppedBySignal, Stopping, Hung, Stopped, Idle]),
    (StoppedBySignal, &[Running, Stopping, Hung, Stopped, Idle]),
    (Stopping, &[Stopped, Idle]),
    (Hung, &[Stopped, Idle]),
];

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Stopped => "stopped",
            Idle => "idle",
            Waiting => "waiting",
            Starting => "starting",
            Running => "running",
            StoppedBySignal => "stopped-by-signal",
            Stopping => "stopping",
            Hung => "hung",
            Backoff => "backoff",
            Failed => "failed",
        }
    }

    /// `to` is in this state's row of [`ALLOWED_TRANSITIONS`].
    pub fn may_become(self, to: State) -> bool {
        ALLOWED_TRANSITIONS
            .iter()
            .find(|(from, _)| *from == self)
            .is_some_and(|(_, next)| next.contains(&to))
    }

    /// A state that a service has only while it has a run.
    pub fn has_run(self) -> bool {
        matches!(self, Starting | Running | StoppedBySignal | Stopping | Hung)
    }

    /// The state of a service without a run, held for `hold`.
    pub fn at_rest(hold: &Hold, is_task: bool) -> State {
        match hold {
            Hold::Backoff { .. } => Backoff,
            Hold::Failed { .. } => Failed,
            Hold::Waiting(_) => Waiting,
            Hold::None if is_task => Idle,
            Hold::None => Stopped,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stop sequence in progress.
#[derive(Debug, Clone, Copy)]
pub struct Stopping {
    pub reason: StopReason,
    pub since: Instant,
    /// SIGKILL was needed after the grace period.
    pub killed: bool,
}

/// The leader's end, reaped: the run lasts until its group is empty too.
#[derive(Debug, Clone, Copy)]
pub struct LeaderExit {
    pub status: ExitStatus,
    pub at: Instant,
    pub wall: DateTime<Utc>,
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
    pub leader_exit: Option<LeaderExit>,
    pub stopping: Option<Stopping>,
    /// Polls of an emptying group so far (sets the next poll's delay).
    pub polls: u32,
    /// Probe state, for a service with `[health]`.
    pub health: Option<RunHealth>,
    /// Memory samples and the stopped-by-signal check.
    pub watch: RunWatch,
    /// Why paiosd ended it (probe errors, the memory figure), for the ledger's context.
    pub hung_context: Option<String>,
    /// Processes that left the group (`setsid`): ended with the run.
    pub escapees: Vec<Escaped>,
    /// An MCP client's run: cancelled to close its stdin, the first step of its stop.
    pub stdin: Option<CancellationToken>,
}

impl Run {
    /// A run just spawned: `attempt` and the `delay` that preceded it are for the record.
    pub fn new(
        id: u64,
        leader: Identity,
        pgid: i32,
        started: (Instant, DateTime<Utc>),
        attempt: u32,
        delay: Option<Duration>,
    ) -> Run {
        Run {
            id,
            leader,
            pgid,
            started: started.0,
            started_wall: started.1,
            attempt,
            delay,
            leader_exit: None,
            stopping: None,
            polls: 0,
            health: None,
            watch: RunWatch::default(),
            hung_context: None,
            escapees: Vec::new(),
            stdin: None,
        }
    }

    /// The leader is alive and nobody is stopping the run.
    pub fn is_up(&self) -> bool {
        self.leader_exit.is_none() && self.stopping.is_none()
    }
}

/// A run's health: the threshold machine, its prober, and whether it has been ready.
#[derive(Debug, Clone)]
pub struct RunHealth {
    pub state: HealthState,
    pub cancel: CancellationToken,
    /// The first probe succeeded: the services that come `after` may start.
    pub ready: bool,
    /// An `on_failure = "alert"` service was reported unhealthy and has not recovered.
    pub alerted: bool,
}

/// What the memory sample and the stop check keep per run.
#[derive(Debug, Clone, Default)]
pub struct RunWatch {
    pub growth: Option<GrowthWatch>,
    pub next_sample: Option<Instant>,
    /// Every process of the group was seen stopped since then.
    pub stopped_since: Option<Instant>,
    /// Reported as stopped by a signal (status and ledger).
    pub stopped_by_signal: bool,
}

/// A process found outside its run's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escaped {
    pub service: String,
    pub id: Identity,
    pub pgid: i32,
}

impl Escaped {
    /// It leads its own group (the `setsid` case): the group is ended, like a run's.
    pub fn leads_group(&self) -> bool {
        self.id.pid == self.pgid
    }
}

/// One task's schedule state.
#[derive(Debug, Clone)]
pub struct TaskClock {
    pub schedule: Schedule,
    pub next: Option<DateTime<Utc>>,
    pub last_handled: Option<DateTime<Utc>>,
    /// Retries left for the current slot.
    pub retries_left: u32,
    /// The wake-up armed last. Timers are never cancelled, so a re-armed task (a
    /// reload) still has its old wake-ups pending: only the latest one is acted on,
    /// or every reload would add one more chain of wake-ups forever.
    pub wake: Option<Instant>,
}

/// Why a service without a run is not running, with what its state word needs.
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
    pub outcome: Outcome,
    pub at: DateTime<Utc>,
    pub pid: i32,
}

#[derive(Debug)]
pub struct Service {
    pub cfg: ServiceConfig,
    pub run: Option<Run>,
    pub want: Want,
    /// The state word, moved by [`Service::enter`] and [`Service::rest`].
    state: State,
    pub hold: Hold,
    pub tracker: RestartTracker,
    pub storm: StormDetector,
    /// Wall-clock times of restarts, for `restarts_24h`.
    pub restarts: VecDeque<SystemTime>,
    pub last_exit: Option<LastExit>,
    /// Runs that have ended, so a waiter can tell "the run after this one ended".
    pub runs_finished: u64,
    /// The config it will run with after the current run ends (a reload changed it).
    pub replacement: Option<ServiceConfig>,
    /// Attempt number and delay for the next run.
    pub next_attempt: u32,
    pub next_delay: Option<Duration>,
    /// Tasks only: the schedule and the last time handled.
    pub clock: Option<TaskClock>,
    /// The MCP client this service entry runs for: a run of a per-client server, kept
    /// as an entry of its own that is forgotten when the run ends.
    pub client: Option<u64>,
    /// A client run's stdin and stdout, from its spawn until the connection takes them.
    pub pipes: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
}

impl Service {
    pub fn new(cfg: ServiceConfig, storm: crate::config::Storm) -> Service {
        let state = State::at_rest(&Hold::None, cfg.task.is_some());
        Service {
            tracker: RestartTracker::new(cfg.restart),
            storm: StormDetector::new(storm),
            cfg,
            run: None,
            want: Want::Down,
            state,
            hold: Hold::None,
            restarts: VecDeque::new(),
            last_exit: None,
            runs_finished: 0,
            replacement: None,
            next_attempt: 0,
            next_delay: None,
            clock: None,
            client: None,
            pipes: None,
        }
    }

    /// A per-client MCP server itself: it has no run, its clients' entries do.
    pub fn is_client_parent(&self) -> bool {
        self.client.is_none() && self.cfg.is_per_client()
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Moves the state word to `to`; a move the table does not allow is logged (and
    /// made anyway, so that status never shows a word that is no longer true).
    pub fn enter(&mut self, to: State) {
        if self.state != to && !self.state.may_become(to) {
            tracing::error!(
                service = %self.cfg.name,
                "state {} -> {} is not an allowed transition",
                self.state,
                to
            );
            // The actor's unit tests hold every path to the table.
            #[cfg(test)]
            panic!(
                "{}: state {} -> {} is not allowed",
                self.cfg.name, self.state, to
            );
        }
        self.state = to;
    }

    /// Sets why the service is not running; without a run the state word follows.
    pub fn rest(&mut self, hold: Hold) {
        self.hold = hold;
        if self.run.is_none() {
            self.enter(State::at_rest(&self.hold, self.is_task()));
        }
    }

    pub fn is_task(&self) -> bool {
        self.cfg.task.is_some()
    }

    /// Wanted running, now or after the current run.
    pub fn wanted(&self) -> bool {
        matches!(self.want, Want::Up | Want::Restart)
    }

    /// Up and not being stopped: what `after` waits for and `start --wait` reports.
    pub fn is_up(&self) -> bool {
        if self.is_client_parent() {
            return self.wanted();
        }
        self.run.as_ref().is_some_and(Run::is_up)
    }

    /// Up, and healthy once if it has a probe: what `after` and `start --wait` wait for.
    pub fn is_ready(&self) -> bool {
        if self.is_client_parent() {
            return self.wanted();
        }
        self.run
            .as_ref()
            .is_some_and(|r| r.is_up() && r.health.as_ref().is_none_or(|h| h.ready))
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

/// What an operation waits for, per service.
#[derive(Debug, Clone, Copy)]
pub enum WaitFor {
    /// Up; a run that ends after `runs_finished` passed `marker` means it failed to come up.
    Up { marker: u64 },
    /// No run left: the group is empty.
    Down,
    /// The run started by `run` has ended (`runs_finished` passed `after`).
    RunEnd { after: u64 },
    /// A per-client server's restart: every client's run has ended.
    ClientsEnded,
}

/// What kind of answer an operation gets.
#[derive(Debug)]
pub enum OpKind {
    Ops,
    Run,
}

/// A control operation waiting for its services to settle.
#[derive(Debug)]
pub struct Op {
    pub kind: OpKind,
    pub reply: oneshot::Sender<Response>,
    pub waits: Vec<(String, WaitFor)>,
    /// Results decided up front (names that did not apply).
    pub fixed: Vec<OpResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [State; 10] = [
        Stopped,
        Idle,
        Waiting,
        Starting,
        Running,
        StoppedBySignal,
        Stopping,
        Hung,
        Backoff,
        Failed,
    ];

    #[test]
    fn every_state_has_one_row_and_words_are_stable() {
        for state in ALL {
            let rows = ALLOWED_TRANSITIONS.iter().filter(|(s, _)| *s == state);
            assert_eq!(rows.count(), 1, "{state}");
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert_eq!(StoppedBySignal.as_str(), "stopped-by-signal");
    }

    #[test]
    fn the_table_follows_a_run_lifecycle() {
        for (from, next) in ALLOWED_TRANSITIONS {
            for to in *next {
                assert!(from.may_become(*to));
                // A run begins as starting or running, and ends by being stopped.
                if to.has_run() && !from.has_run() {
                    assert!(matches!(to, Starting | Running), "{from} -> {to}");
                }
                if from.has_run() && !to.has_run() {
                    assert!(matches!(to, Stopped | Idle), "{from} -> {to}");
                }
            }
        }
        // A run's end is decided at rest, never straight from a run state.
        assert!(!Running.may_become(Backoff));
        assert!(!Running.may_become(Failed));
        assert!(!Stopping.may_become(Running));
        assert!(!Hung.may_become(StoppedBySignal));
        assert!(!Failed.may_become(Hung));
        // Every state can be entered.
        for state in ALL {
            let reachable = ALL.iter().any(|s| s.may_become(state));
            assert!(reachable, "{state} is never entered");
        }
    }
}
