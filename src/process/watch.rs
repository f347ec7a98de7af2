//! Exit routing for children that are not service leaders (health probes, alert
//! commands). paiosd reaps every child in one place — `waitpid(-1)` in the supervisor,
//! which as a subreaper must also collect what services abandon — so anyone else that
//! spawns a child registers here and is handed the exit status by the reaper.
//!
//! [`reap_and_deliver`] reaps and delivers under the registry's lock, so while a PID is
//! registered it has not been reaped yet: that is what lets [`reap_watched`] wait for
//! its own child by PID without ever reaping a reused PID.

use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, MutexGuard, OnceLock};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{ExitStatus, SpawnSpec, Spawned};

type Callback = Box<dyn FnOnce(ExitStatus) + Send>;

fn waiters() -> MutexGuard<'static, HashMap<i32, Callback>> {
    static WAITERS: OnceLock<Mutex<HashMap<i32, Callback>>> = OnceLock::new();
    WAITERS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Spawns like [`super::spawn`] and calls `on_exit` (on the reaper's thread, which must
/// not spawn from it) with the child's exit status once it is reaped. The registration
/// happens under the same lock the reaper takes, so an exit that comes before `spawn`
/// returns is never lost.
pub fn spawn_watched(
    spec: &SpawnSpec,
    on_exit: impl FnOnce(ExitStatus) + Send + 'static,
) -> io::Result<Spawned> {
    let mut map = waiters();
    let spawned = super::spawn(spec)?;
    map.insert(spawned.leader.pid, Box::new(on_exit));
    Ok(spawned)
}

/// [`spawn_watched`] with a pipe on stdin, as [`super::spawn_with_input`].
pub fn spawn_watched_with_input(
    spec: &SpawnSpec,
    on_exit: impl FnOnce(ExitStatus) + Send + 'static,
) -> io::Result<Spawned> {
    let mut map = waiters();
    let spawned = super::spawn_with_input(spec)?;
    map.insert(spawned.leader.pid, Box::new(on_exit));
    Ok(spawned)
}

/// Reaps every ended child and delivers those registered here; returns the rest
/// (service leaders and abandoned grandchildren) for the caller.
pub fn reap_and_deliver() -> Vec<(i32, ExitStatus)> {
    let mut map = waiters();
    let mut rest = Vec::new();
    for (pid, status) in super::reap() {
        match map.remove(&pid) {
            Some(callback) => callback(status),
            None => rest.push((pid, status)),
        }
    }
    rest
}

/// For a process that may run without paiosd's reaper (the alert thread outside
/// paiosd, in tests): reaps the registered child `pid` if it has ended and delivers its
/// status as the reaper would. True once it has been delivered (by either), false
/// while it runs.
pub fn reap_watched(pid: i32) -> bool {
    let mut map = waiters();
    if !map.contains_key(&pid) {
        return true;
    }
    // Registered, so not reaped yet (see the module doc): `pid` is still our child.
    let status = match nix::sys::wait::waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
        Ok(WaitStatus::Signaled(_, signal, _)) => ExitStatus::Signal(signal as i32),
        Ok(_) | Err(Errno::EINTR) => return false,
        // ECHILD: not our child after all (reaped outside this module); nobody will
        // deliver it, so forget it rather than wait forever.
        Err(_) => {
            map.remove(&pid);
            return true;
        }
    };
    if let Some(callback) = map.remove(&pid) {
        callback(status);
    }
    true
}

/// Stops waiting for `pid`: a later exit goes to the reaper's caller like any child's.
pub fn forget(pid: i32) {
    waiters().remove(&pid);
}
