//! One paiosd per state directory (promise 1): an exclusive `flock` on
//! `<state>/paiosd.lock`, held for the daemon's whole life, with the holder's PID
//! written inside so a second instance can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _file: Flock<File>,
}

/// The outcome of trying to become the one paiosd.
#[derive(Debug)]
pub enum Acquired {
    Held(InstanceLock),
    /// Another process holds it; its PID if it wrote one.
    Busy {
        holder: Option<u32>,
    },
}

/// Tries once, without waiting.
pub fn acquire(path: &Path) -> io::Result<Acquired> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            locked.set_len(0)?;
            locked.rewind()?;
            writeln!(locked, "{}", std::process::id())?;
            locked.sync_data()?;
            Ok(Acquired::Held(InstanceLock { _file: locked }))
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Ok(Acquired::Busy {
                holder: text.trim().parse().ok(),
            })
        }
        Err((_, errno)) => Err(io::Error::from(errno)),
    }
}
