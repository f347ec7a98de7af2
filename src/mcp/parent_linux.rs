//! Linux: the bridge ends when its parent (the MCP client) dies, whatever the bridge
//! is doing at that moment.
//!
//! `PR_SET_PDEATHSIG` asks the kernel for a signal when the parent goes. The kernel
//! sends it when the *thread* that started the bridge ends, which in a multi-threaded
//! client may be long before the client itself; so the signal is a dedicated one
//! (SIGUSR2) whose handler ends the process only when `getppid()` shows the parent has
//! really gone (the kernel reparents before it signals). The handler calls only
//! `getppid` and `_exit`, both async-signal-safe, so nothing the bridge is blocked in
//! (a full pipe, a pending read) can delay it.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The signal the kernel sends when the parent thread dies.
const DEATH_SIGNAL: Signal = Signal::SIGUSR2;

/// The parent recorded at start, which the handler compares `getppid()` with.
static PARENT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_parent_death(_: libc::c_int) {
    // SAFETY: getppid and _exit are async-signal-safe and take no pointers.
    unsafe {
        if libc::getppid() != PARENT.load(Ordering::Relaxed) {
            libc::_exit(super::bridge::EXIT_PARENT_GONE);
        }
    }
}

/// Arms the watch on `parent` (the PID read before this call). Fails with `ESRCH`
/// when the parent is already gone: then no signal would ever come.
pub fn watch(parent: i32) -> io::Result<()> {
    PARENT.store(parent, Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(on_parent_death),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only calls async-signal-safe functions (see above).
    unsafe { sigaction(DEATH_SIGNAL, &action) }.map_err(io::Error::from)?;
    nix::sys::prctl::set_pdeathsig(DEATH_SIGNAL).map_err(io::Error::from)?;
    if nix::unistd::getppid().as_raw() != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}
