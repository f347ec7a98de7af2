//! macOS only: macOS has no `pipe2`, so the wake pipe's flags are set after creation.
//! Logs start before paiosd spawns anything, so no fork can slip in between and
//! inherit the descriptors before they are close-on-exec.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

/// A pipe whose ends are close-on-exec (so no service inherits them) and non-blocking.
pub fn wake_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe()?;
    for fd in [&r, &w] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        let fl = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    }
    Ok((r, w))
}
