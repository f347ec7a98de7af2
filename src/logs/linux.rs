//! Linux only: a larger pipe for service output.
//!
//! A 64 KiB pipe makes the drain thread wake for every 64 KiB a fast service writes;
//! 1 MiB lets it take more per read and gives a bursty service more room before it
//! would wait on the pipe. Refusal (past `/proc/sys/fs/pipe-max-size` for an
//! unprivileged user) is harmless: the pipe keeps its size.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg};

pub const PIPE_SIZE: i32 = 1024 * 1024;

pub fn grow_pipe(fd: &OwnedFd) {
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
}

/// A pipe whose ends are close-on-exec (so no service inherits them) and
/// non-blocking, created atomically.
pub fn wake_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
}
