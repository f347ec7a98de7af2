//! Exit routing for children that are not service leaders (health probes, alert
//! commands). paiosd reaps every child in one place — `waitpid(-1)` in the supervisor,
//! which as a subreaper must also collect what services abandon — so anyone else that
//! spawns a child registers here and is handed the exit status by the reaper.

use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, OnceLock};

use super::{ExitStatus, SpawnSpec, Spawned};

type Callback = Box<dyn FnOnce(ExitStatus) + Send>;

fn waiters() -> &'static Mutex<HashMap<i32, Callback>> {
    static WAITERS: OnceLock<Mutex<HashMap<i32, Callback>>> = OnceLock::new();
    WAITERS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Spawns like [`super::spawn`] and calls `on_exit` (on the reaper's thread) with the
/// child's exit status once it is reaped. The registration happens under the same lock
/// the reaper takes, so an exit that comes before `spawn` returns is never lost.
pub fn spawn_watched(
    spec: &SpawnSpec,
    on_exit: impl FnOnce(ExitStatus) + Send + 'static,
) -> io::Result<Spawned> {
    let mut map = waiters()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let spawned = super::spawn(spec)?;
    map.insert(spawned.leader.pid, Box::new(on_exit));
    Ok(spawned)
}

/// Called by the reaper for a child that is not a service leader; true if someone waited for it.
pub fn deliver(pid: i32, status: ExitStatus) -> bool {
    let callback = waiters()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(&pid);
    match callback {
        Some(callback) => {
            callback(status);
            true
        }
        None => false,
    }
}

/// Reaps every ended child and delivers those registered here; returns the rest
/// (service leaders and abandoned grandchildren) for the caller.
pub fn reap_and_deliver() -> Vec<(i32, ExitStatus)> {
    super::reap()
        .into_iter()
        .filter(|(pid, status)| !deliver(*pid, *status))
        .collect()
}
