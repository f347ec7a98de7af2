//! The one blocking stop routine outside the actor: SIGCONT, the stop signal, `grace`,
//! then SIGKILL, for many targets at once, until every one is gone. The start-up sweep
//! uses it for the groups a previous paiosd left, and the stray ending of the fallback
//! sweep and `paiosctl doctor --kill` for strays.
//!
//! It blocks the calling thread on purpose: both callers run before (or without) any
//! supervision, and nothing else may start until what they end is gone. Every signal is
//! preceded by an identity check, so a PID or group number handed to another program
//! meanwhile is never touched.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::Identity;

/// How long a target may outlive its SIGKILL before it is reported as surviving.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// What to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every process of group `pgid`, which `leader` started (it may have exited since,
    /// leaving members behind: the group is still ours while it has members).
    Group { pgid: i32, leader: Identity },
    /// This one process, not its group.
    Process(Identity),
}

impl Target {
    /// Whether something of the target is still present, not a zombie, and the one
    /// that was recorded. A group is, while it has live members and its number names no
    /// other process: the kernel hands out no PID
    /// equal to a live group's number, so a process with the leader's PID and another
    /// start time means the group ended and the number was reused.
    pub fn is_ours(&self) -> bool {
        match *self {
            Target::Group { pgid, leader } => {
                if leader.pid == pgid {
                    if let Some(start) = super::start_time(pgid) {
                        if start != leader.start_time {
                            return false;
                        }
                    }
                }
                super::group_alive(pgid)
            }
            Target::Process(id) => super::is_alive(id),
        }
    }

    /// Sends `signal` after the identity check; a target that is gone is left alone.
    pub fn signal(&self, signal: i32) {
        if !self.is_ours() {
            return;
        }
        match *self {
            Target::Group { pgid, .. } => {
                let _ = super::signal_group(pgid, signal);
            }
            Target::Process(id) => {
                if let Ok(sig) = Signal::try_from(signal) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(id.pid), sig);
                }
            }
        }
    }

    /// The live PIDs left of the target.
    pub fn members(&self) -> Vec<i32> {
        if !self.is_ours() {
            return Vec::new();
        }
        match *self {
            Target::Group { pgid, .. } => super::group_members(pgid),
            Target::Process(id) => vec![id.pid],
        }
    }
}

/// One target with the signal that asks it to stop and the grace before SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub target: Target,
    pub signal: i32,
    pub grace: Duration,
}

/// How stopping one target went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stopped {
    /// SIGKILL was needed after the grace.
    pub killed: bool,
    /// PIDs still alive [`KILL_WAIT`] after the SIGKILL (should be empty).
    pub survivors: Vec<i32>,
}

/// Stops every target in parallel, each with its own signal and grace, and returns (in
/// the same order) once all are gone, or [`KILL_WAIT`] after the last SIGKILL. A target
/// that is not (or no longer) the recorded one counts as gone and is never signalled.
///
/// Children of this process that end meanwhile are reaped (and handed to whoever
/// waits for them in [`super::watch`]), so a zombie never counts as alive.
pub fn stop_all(stops: &[Stop]) -> Vec<Stopped> {
    let start = Instant::now();
    for s in stops {
        s.target.signal(libc::SIGCONT);
        s.target.signal(s.signal);
    }
    let mut done: Vec<Stopped> = vec![Stopped::default(); stops.len()];
    let mut delay = Duration::from_millis(1);
    loop {
        let _ = super::watch::reap_and_deliver();
        let mut pending = false;
        for (s, d) in stops.iter().zip(done.iter_mut()) {
            if !s.target.is_ours() {
                continue;
            }
            if !d.killed && start.elapsed() >= s.grace {
                d.killed = true;
                s.target.signal(libc::SIGKILL);
            }
            if start.elapsed() < s.grace + KILL_WAIT {
                pending = true;
            } else {
                d.survivors = s.target.members();
            }
        }
        if !pending {
            break;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
    done
}
