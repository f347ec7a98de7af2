//! Process groups: spawn a run as its own group, signal it, tell when it is empty,
//! reap children, and identify a process by (PID, start time).
//!
//! Every OS-specific read lives in `linux.rs` or `macos.rs`; everything else here is
//! portable. The supervisor never touches a PID without going through this module.

pub mod watch;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// A process as paiosd knows it: PID plus the kernel's start time, so a PID reused by
/// another program is never mistaken for the one recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub pid: i32,
    /// Opaque, comparable only with values from [`start_time`] on the same boot
    /// (Linux: clock ticks since boot; macOS: microseconds since the epoch).
    pub start_time: u64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// Added to paiosd's own environment.
    pub env: BTreeMap<String, String>,
}

/// A started run: the leader's identity, the group, and the read ends of its output pipes.
#[derive(Debug)]
pub struct Spawned {
    pub leader: Identity,
    pub pgid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// How a child ended, as `waitpid` told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// Starts `spec` as the leader of a new process group, stdin from /dev/null, stdout and stderr to
/// fresh pipes. The child is never waited for here: [`reap`] collects it.
pub fn spawn(spec: &SpawnSpec) -> io::Result<Spawned> {
    let _ = spec;
    todo!()
}

/// Sends `signal` to every process of group `pgid`. A group that no longer exists is not an error.
pub fn signal_group(pgid: i32, signal: i32) -> io::Result<()> {
    let _ = (pgid, signal);
    todo!()
}

/// True while any process of group `pgid` is present and not a zombie.
pub fn group_alive(pgid: i32) -> bool {
    let _ = pgid;
    todo!()
}

/// PIDs of the live (non-zombie) members of group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let _ = pgid;
    todo!()
}

/// The start time of `pid`, or `None` if it is gone or a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    let _ = pid;
    todo!()
}

/// True when `id` still names the same living process.
pub fn is_alive(id: Identity) -> bool {
    start_time(id.pid) == Some(id.start_time)
}

/// Collects every child that has ended, without blocking (`waitpid(-1, WNOHANG)` until none).
pub fn reap() -> Vec<(i32, ExitStatus)> {
    todo!()
}

/// Makes paiosd the reaper of what its services abandon (Linux `PR_SET_CHILD_SUBREAPER`;
/// a no-op elsewhere).
pub fn become_subreaper() -> io::Result<()> {
    todo!()
}
