//! macOS: the bridge ends when its parent (the MCP client) dies, whatever the bridge
//! is doing at that moment.
//!
//! macOS has no parent-death signal; a kqueue `EVFILT_PROC`/`NOTE_EXIT` on the parent's
//! PID wakes a thread of its own the moment the parent exits, and that thread ends the
//! process. Registering fails with `ESRCH` when the parent is already gone, and
//! `getppid()` is checked after registering for a parent that exited in between.

use std::io;

use nix::sys::event::{EventFilter, EventFlag, FilterFlag, KEvent, Kqueue};

/// Arms the watch on `parent` (the PID read before this call). Fails with `ESRCH`
/// when the parent is already gone.
pub fn watch(parent: i32) -> io::Result<()> {
    let queue = Kqueue::new().map_err(io::Error::from)?;
    let change = KEvent::new(
        parent as usize,
        EventFilter::EVFILT_PROC,
        EventFlag::EV_ADD | EventFlag::EV_ONESHOT,
        FilterFlag::NOTE_EXIT,
        0,
        0,
    );
    queue
        .kevent(&[change], &mut [], None)
        .map_err(io::Error::from)?;
    if nix::unistd::getppid().as_raw() != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    std::thread::Builder::new()
        .name("parent-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            let mut events = [KEvent::new(
                0,
                EventFilter::EVFILT_PROC,
                EventFlag::empty(),
                FilterFlag::empty(),
                0,
                0,
            )];
            match queue.kevent(&[], &mut events, None) {
                Ok(n) if n > 0 => std::process::exit(super::bridge::EXIT_PARENT_GONE),
                Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
                // A queue that cannot be waited on leaves the getppid() poll in charge.
                Err(_) => return,
            }
        })?;
    Ok(())
}
