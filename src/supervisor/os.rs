//! The actor's seam to the operating system: spawning a run, signalling a group or a
//! process, asking whether a group is empty or alive, reaping, reading the process
//! table, and the clock. [`RealOs`] is `crate::process` and the system clocks; the actor's unit
//! tests put a recording fake in its place, which delivers exits and moves time on
//! when the test says so.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::process::{self, ExitStatus, Identity, ProcInfo, SpawnSpec, Spawned};

/// Every effect the actor has on processes, and every clock it reads. `Send`, so that
/// the future of `supervisor::run` can be spawned.
pub trait Os: Send {
    /// The monotonic clock.
    fn now(&self) -> Instant;
    /// The wall clock.
    fn wall(&self) -> DateTime<Utc>;
    /// A sample uniform in `0.0..1.0`, for backoff jitter.
    fn jitter(&mut self) -> f64;
    /// Sleeps on the thread; only for the last millisecond or two before a task's slot.
    fn sleep(&mut self, d: Duration);
    fn spawn(&mut self, spec: &SpawnSpec) -> io::Result<Spawned>;
    /// Like `spawn`, with stdin a pipe whose write end is returned (an MCP client's run).
    fn spawn_with_input(&mut self, spec: &SpawnSpec) -> io::Result<Spawned> {
        let _ = spec;
        Err(io::Error::other(
            "this Os cannot start a run with its stdin as a pipe",
        ))
    }
    fn signal_group(&mut self, pgid: i32, signal: i32) -> io::Result<()>;
    /// Signals one process (an escapee that does not lead a group of its own).
    fn signal_process(&mut self, pid: i32, signal: i32) -> io::Result<()>;
    /// The group has any member, zombies included.
    fn group_exists(&self, pgid: i32) -> bool;
    /// The group has a member that is not a zombie.
    fn group_alive(&self, pgid: i32) -> bool;
    fn is_alive(&self, id: Identity) -> bool;
    /// Every child that has ended and that no one else waits for.
    fn reap(&mut self) -> Vec<(i32, ExitStatus)>;
    fn processes(&self) -> Vec<ProcInfo>;
    /// Resident memory per group, in bytes.
    fn rss_of(&self, pgids: &[i32]) -> HashMap<i32, u64>;
    /// The leader and every other member of the group are stopped (SIGSTOP).
    fn group_stopped(&self, leader: i32, pgid: i32) -> bool;
}

/// The real thing.
#[derive(Debug, Default)]
pub struct RealOs;

impl Os for RealOs {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn jitter(&mut self) -> f64 {
        fastrand::f64()
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn spawn(&mut self, spec: &SpawnSpec) -> io::Result<Spawned> {
        process::spawn(spec)
    }

    fn spawn_with_input(&mut self, spec: &SpawnSpec) -> io::Result<Spawned> {
        process::spawn_with_input(spec)
    }

    fn signal_group(&mut self, pgid: i32, signal: i32) -> io::Result<()> {
        process::signal_group(pgid, signal)
    }

    fn signal_process(&mut self, pid: i32, signal: i32) -> io::Result<()> {
        let signal = nix::sys::signal::Signal::try_from(signal).map_err(io::Error::from)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(io::Error::from)
    }

    fn group_exists(&self, pgid: i32) -> bool {
        process::group_exists(pgid)
    }

    fn group_alive(&self, pgid: i32) -> bool {
        process::group_alive(pgid)
    }

    fn is_alive(&self, id: Identity) -> bool {
        process::is_alive(id)
    }

    fn reap(&mut self) -> Vec<(i32, ExitStatus)> {
        process::watch::reap_and_deliver()
    }

    fn processes(&self) -> Vec<ProcInfo> {
        process::list_processes()
    }

    fn rss_of(&self, pgids: &[i32]) -> HashMap<i32, u64> {
        process::rss_of(pgids)
    }

    fn group_stopped(&self, leader: i32, pgid: i32) -> bool {
        matches!(process::state(leader), Some('T' | 't')) && process::group_all_stopped(pgid)
    }
}

/// The clocks as read once where an event is handled.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: DateTime<Utc>,
}

impl Now {
    pub fn read(os: &dyn Os) -> Now {
        Now {
            mono: os.now(),
            wall: os.wall(),
        }
    }

    /// The wall time `at` corresponds to (`at` after `mono`; earlier ones map to now).
    pub fn wall_at(&self, at: Instant) -> DateTime<Utc> {
        self.wall
            + chrono::Duration::from_std(at.saturating_duration_since(self.mono))
                .unwrap_or_default()
    }
}
