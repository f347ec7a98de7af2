//! Process groups: spawn a run as its own group, signal it, tell when it is empty,
//! reap children, and identify a process by (PID, start time); beside them the run
//! marker ([`marker`]), the one blocking stop routine outside the actor ([`stop`]) and
//! stray detection ([`strays`]), which the start-up sweep and `paiosctl doctor` share.
//!
//! Every OS-specific read lives in `linux.rs` or `macos.rs`; everything else here is
//! portable. The supervisor never touches a PID without going through this module.
//! A leader is put in its own group with std's `CommandExt::process_group`; no child is
//! ever waited for by its own handle, because one `waitpid(-1)` reaper ([`reap`], and
//! [`watch`] for the children others wait for) collects them all.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as os;

pub mod marker;
mod signal;
pub mod stop;
pub mod strays;
pub mod watch;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{PoisonError, RwLock};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub use signal::{parse_signal, signal_name};

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
    /// The write end of its stdin, from [`spawn_with_input`] only (else stdin is /dev/null).
    pub stdin: Option<OwnedFd>,
}

/// How a child ended, as `waitpid` told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// One process as the OS lists it, zombies included; what stray detection matches on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    /// Real user ID.
    pub uid: u32,
    /// Same clock as [`Identity::start_time`]; present for zombies too.
    pub start_time: u64,
    /// `R`, `S`, `D`, `T`, `t`, `Z`, `X`, `I`… as `ps` shows it (macOS mapped onto the same letters).
    pub state: char,
    /// Short command name the kernel keeps (at most 15/16 bytes).
    pub comm: String,
    /// Empty when the kernel does not show it (another user's process, a zombie).
    pub argv: Vec<String>,
    /// `None` when unreadable (another user's process, a zombie, a deleted file on macOS).
    pub exe: Option<PathBuf>,
}

impl ProcInfo {
    /// Zombies (`Z`) and processes being torn down (`X`) count as dead everywhere in paios.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }

    pub fn identity(&self) -> Identity {
        Identity {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

/// Starts `spec` as the leader of a new process group, stdin from /dev/null, stdout and stderr to
/// fresh pipes. The child is never waited for here: [`reap`] collects it.
///
/// The pipes' read ends are close-on-exec, so no other service ever inherits them. On Linux
/// the leader gets `SIGKILL` when the *thread* that spawned it exits (`PR_SET_PDEATHSIG`
/// follows the thread, not the process); paiosd spawns from its main thread, so this
/// means "when paiosd dies".
pub fn spawn(spec: &SpawnSpec) -> io::Result<Spawned> {
    spawn_inner(spec, false)
}

/// Like [`spawn`], but stdin is a pipe whose write end is returned in
/// [`Spawned::stdin`] (close-on-exec too): for a child that is handed its input.
pub fn spawn_with_input(spec: &SpawnSpec) -> io::Result<Spawned> {
    spawn_inner(spec, true)
}

fn spawn_inner(spec: &SpawnSpec, input: bool) -> io::Result<Spawned> {
    let program = check_spec(spec)?;
    let parent = std::process::id() as i32;
    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .envs(&spec.env)
        .stdin(if input { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. `child_after_fork` makes only raw syscalls
    // (sigprocmask, sigaction, prctl, getppid), allocates nothing, takes no lock and
    // touches no state shared with the parent; `parent` is a copied integer.
    unsafe {
        cmd.pre_exec(move || child_after_fork(parent));
    }
    // Until the start time is read below, the reaper waits (see `SPAWNING`).
    let _spawning = SPAWNING.read().unwrap_or_else(PoisonError::into_inner);
    let mut child = cmd.spawn().map_err(|e| spawn_error(program, e))?;

    let pid = child.id() as i32;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stdin = child.stdin.take();
    // Dropping the handle neither kills nor waits, and the child stays ours to reap
    // with `reap()`.
    drop(child);
    let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
        // Cannot happen with `Stdio::piped()`; the group must not leak if it somehow does.
        let _ = signal_group(pid, libc::SIGKILL);
        return Err(io::Error::other(format!(
            "started {program:?} (PID {pid}) but its output pipes were missing; killed it"
        )));
    };
    if input && stdin.is_none() {
        let _ = signal_group(pid, libc::SIGKILL);
        return Err(io::Error::other(format!(
            "started {program:?} (PID {pid}) but its input pipe was missing; killed it"
        )));
    }

    // The leader can have exited already (it is then our zombie: `reap` waits for
    // `SPAWNING`), and the kernel still keeps its start time, so the identity is always
    // complete.
    let Some((start, _state)) = os::start_and_state(pid) else {
        let _ = signal_group(pid, libc::SIGKILL);
        return Err(io::Error::other(format!(
            "started {program:?} as PID {pid} but could not read its start time"
        )));
    };
    Ok(Spawned {
        leader: Identity {
            pid,
            start_time: start,
        },
        pgid: pid,
        stdout: stdout.into(),
        stderr: stderr.into(),
        stdin: stdin.map(OwnedFd::from),
    })
}

/// The program to run, once the spec is known to be startable.
fn check_spec(spec: &SpawnSpec) -> io::Result<&str> {
    let Some(program) = spec.argv.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot start a service with an empty command",
        ));
    };
    if program.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot start a service whose program name is empty",
        ));
    }
    if let Some(cwd) = &spec.cwd {
        match std::fs::metadata(cwd) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "cannot start {program:?}: working directory {} is not a directory",
                        cwd.display()
                    ),
                ))
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start {program:?}: working directory {}: {e}",
                        cwd.display()
                    ),
                ))
            }
        }
    }
    Ok(program)
}

fn spawn_error(program: &str, e: io::Error) -> io::Error {
    let what = match e.kind() {
        io::ErrorKind::NotFound => format!("cannot start {program:?}: program not found ({e})"),
        io::ErrorKind::PermissionDenied => {
            format!("cannot start {program:?}: not executable ({e})")
        }
        _ => format!("cannot start {program:?}: {e}"),
    };
    io::Error::new(e.kind(), what)
}

/// Runs in the child between fork and exec: only async-signal-safe syscalls.
///
/// std already unblocks every signal and resets SIGPIPE; this repeats the unblocking so
/// it does not depend on std's internals, and also resets every other *ignored*
/// disposition (exec keeps `SIG_IGN`, so a paiosd started under `nohup` would otherwise
/// hand its services an ignored SIGHUP or SIGINT).
fn child_after_fork(parent: i32) -> io::Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL registers no handler code, so no Rust code can run
        // in signal context; sigaction is async-signal-safe.
        unsafe {
            let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl);
        }
    }
    os::arm_parent_death_signal(parent)
}

/// Sends `signal` to every process of group `pgid`. A group that no longer exists is not an error.
///
/// `pgid` ≤ 1 is refused: `killpg(0)` is paiosd's own group and `killpg(1)` init's.
/// `signal` 0 only checks that the group exists.
pub fn signal_group(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}: not a service's group"),
        ));
    }
    let sig = if signal == 0 {
        None
    } else {
        Some(Signal::try_from(signal).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to send unknown signal {signal} to group {pgid}"),
            )
        })?)
    };
    match nix::sys::signal::killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot signal process group {pgid}: {e}"),
        )),
    }
}

/// True while any process of group `pgid` is present and not a zombie.
pub fn group_alive(pgid: i32) -> bool {
    group_exists(pgid) && !group_members(pgid).is_empty()
}

/// PIDs of the live (non-zombie) members of group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    live_members(pgid).into_iter().map(|(pid, _)| pid).collect()
}

/// The scheduler state letter of `pid` (`R`, `S`, `T`, ...), or `None` if it is gone.
pub fn state(pid: i32) -> Option<char> {
    if pid <= 0 {
        return None;
    }
    os::start_and_state(pid).map(|(_, state)| state)
}

/// Resident memory of each of `pgids`, summed over its live members, from one scan of
/// the process table that reads memory only for those groups' members.
pub fn rss_of(pgids: &[i32]) -> std::collections::HashMap<i32, u64> {
    let wanted: std::collections::HashSet<i32> = pgids.iter().copied().collect();
    let mut by_group = std::collections::HashMap::new();
    if wanted.is_empty() {
        return by_group;
    }
    for (pid, pgid, state) in os::all_groups() {
        if !wanted.contains(&pgid) || matches!(state, 'Z' | 'X') {
            continue;
        }
        if let Some(rss) = os::rss_bytes(pid) {
            *by_group.entry(pgid).or_insert(0u64) += rss;
        }
    }
    by_group
}

/// True when the group has live members and every one of them is stopped (SIGSTOP,
/// SIGTSTP, or a tracer's stop).
pub fn group_all_stopped(pgid: i32) -> bool {
    let members = live_members(pgid);
    !members.is_empty() && members.iter().all(|(_, state)| matches!(state, 'T' | 't'))
}

/// `(pid, state)` of every live member; empty at once when `killpg(pgid, 0)` says the
/// group does not exist, which spares the process-table scan in the common case.
fn live_members(pgid: i32) -> Vec<(i32, char)> {
    if !group_exists(pgid) {
        return Vec::new();
    }
    os::group_states(pgid)
        .into_iter()
        .filter(|(_, state)| !matches!(state, 'Z' | 'X'))
        .collect()
}

/// `killpg(pgid, 0)`: false only when no process (zombies included) has that group.
/// EPERM means it exists but belongs to someone else, which still counts.
pub fn group_exists(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    !matches!(
        nix::sys::signal::killpg(Pid::from_raw(pgid), None),
        Err(Errno::ESRCH)
    )
}

/// The start time of `pid`, or `None` if it is gone or a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    // Only the one stat read: this is on the supervisor's path for every identity check.
    let (start, state) = os::start_and_state(pid)?;
    (!matches!(state, 'Z' | 'X')).then_some(start)
}

/// What the OS shows of `pid`, zombies included; `None` when there is no such process.
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    if pid <= 0 {
        return None;
    }
    os::proc_info(pid)
}

/// Every process the OS lists, zombies included, in no particular order. Processes that
/// end while being read are left out.
pub fn list_processes() -> Vec<ProcInfo> {
    os::list_processes()
}

/// True when `id` still names the same living process.
pub fn is_alive(id: Identity) -> bool {
    start_time(id.pid) == Some(id.start_time)
}

/// Held shared from a child's fork until its start time is read, and exclusively by
/// [`reap`]: a child spawned off the reaper's thread (an alert command, an exec probe)
/// that exits at once is then at worst a zombie while its identity is read, never
/// collected with its PID free for reuse before that.
static SPAWNING: RwLock<()> = RwLock::new(());

/// Collects every child that has ended, without blocking (`waitpid(-1, WNOHANG)` until none).
pub fn reap() -> Vec<(i32, ExitStatus)> {
    let _no_spawn_midway = SPAWNING.write().unwrap_or_else(PoisonError::into_inner);
    let mut reaped = Vec::new();
    loop {
        match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                reaped.push((pid.as_raw(), ExitStatus::Code(code)))
            }
            Ok(WaitStatus::Signaled(pid, signal, _core)) => {
                reaped.push((pid.as_raw(), ExitStatus::Signal(signal as i32)))
            }
            Ok(WaitStatus::StillAlive) => break,
            // Stops and continues are only reported with WUNTRACED/WCONTINUED, which are
            // not asked for; should one arrive, the child is still there.
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            // ECHILD: no children at all. Anything else (EINVAL) cannot be fixed by retrying.
            Err(_) => break,
        }
    }
    reaped
}

/// Makes paiosd the reaper of what its services abandon (Linux `PR_SET_CHILD_SUBREAPER`;
/// a no-op elsewhere).
pub fn become_subreaper() -> io::Result<()> {
    os::become_subreaper()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_group_refuses_own_group_and_init() {
        for pgid in [0, 1, -1, -12345, i32::MIN] {
            let err = signal_group(pgid, libc::SIGTERM).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        assert!(!group_alive(0));
        assert!(!group_alive(1));
        assert!(group_members(0).is_empty());
    }

    #[test]
    fn signal_group_rejects_unknown_signal() {
        let me = nix::unistd::getpgrp().as_raw();
        if me > 1 {
            let err = signal_group(me, 12345).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn own_process_is_listed_and_alive() {
        let me = std::process::id() as i32;
        let info = proc_info(me).expect("own process must be visible");
        assert_eq!(info.pid, me);
        assert_eq!(info.pgid, nix::unistd::getpgrp().as_raw());
        assert_eq!(info.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(info.uid, nix::unistd::getuid().as_raw());
        assert!(info.is_live());
        assert!(!info.argv.is_empty());
        assert!(info.exe.is_some());
        let id = info.identity();
        assert!(is_alive(id));
        assert!(!is_alive(Identity {
            pid: me,
            start_time: id.start_time + 1
        }));
        assert!(list_processes().iter().any(|p| p.pid == me));
        assert!(group_members(info.pgid).contains(&me));
        assert!(rss_of(&[info.pgid])
            .get(&info.pgid)
            .is_some_and(|&rss| rss > 0));
        assert!(!group_all_stopped(info.pgid));
    }

    #[test]
    fn nonexistent_pids_have_no_start_time() {
        for pid in [0, -1, i32::MIN, i32::MAX] {
            assert_eq!(start_time(pid), None);
            assert_eq!(proc_info(pid), None);
        }
    }

    #[test]
    fn empty_and_blank_argv_are_errors() {
        let mut spec = SpawnSpec {
            argv: vec![],
            cwd: None,
            env: BTreeMap::new(),
        };
        assert_eq!(
            spawn(&spec).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        spec.argv = vec![String::new()];
        assert_eq!(
            spawn(&spec).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        spec.argv = vec!["tr\0ue".into()];
        assert!(spawn(&spec).is_err());
    }
}
