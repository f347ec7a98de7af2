//! `paiosctl shutdown`: asks paiosd to stop every service and itself, then waits until
//! paiosd has let go of its instance lock, which it holds until its last moment: then
//! it has exited (or is about to, with nothing left to do).

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::control::protocol::{Reply, Request};
use crate::dirs::Dirs;

use super::{ask, failure, print, print_json, unexpected, Outcome};

pub fn shutdown(dirs: &Dirs, timeout: Duration, json: bool) -> Outcome {
    let reply = ask(&dirs.socket(), &Request::Shutdown)?;
    let Reply::ShuttingDown { pid } = reply else {
        return Err(unexpected(&reply));
    };
    if !json {
        let _ = writeln!(
            io::stderr(),
            "paiosd (pid {pid}) is stopping every service..."
        );
    }
    let deadline = Instant::now() + timeout;
    loop {
        // The PID first: once paiosd is gone this never touches the lock, so a paiosd
        // started right after cannot meet paiosctl's momentary probe and think another
        // instance runs. The lock covers a paiosd that exited but is not yet reaped.
        if process_gone(pid) {
            break;
        }
        match lock_released(&dirs.lock_file()) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                return Err(failure(
                    "lock",
                    format!("cannot check {}: {e}", dirs.lock_file().display()),
                ))
            }
        }
        if Instant::now() >= deadline {
            return Err(failure(
                "timeout",
                format!(
                    "paiosd (pid {pid}) still runs after {}s; its services may have a long stop grace",
                    timeout.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if json {
        print_json(&serde_json::json!({"kind": "shut_down", "pid": pid}))
    } else {
        print(&format!("paiosd (pid {pid}) has exited\n"))
    }
}

fn process_gone(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Whether nobody holds the instance lock. Opens the file read-only and takes a shared
/// lock for a moment, so the file's content (the holder's PID) is left alone.
fn lock_released(path: &Path) -> io::Result<bool> {
    use nix::fcntl::{Flock, FlockArg};
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_released_on_drop) => Ok(true),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(false),
        Err((_, e)) => Err(e.into()),
    }
}
