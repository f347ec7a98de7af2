//! macOS process facts from libproc (`proc_pidinfo`, `proc_listpgrppids`,
//! `proc_listallpids`) and the `KERN_PROCARGS2` sysctl, all through `libc`.
//!
//! `PROC_PIDTBSDINFO` answers for zombies too (status `SZOMB`), with the start time the
//! kernel recorded at fork, so an identity can be taken even for a leader that exited
//! before `spawn` returned. A process can vanish between listing and reading; that
//! simply leaves it out. The `unsafe` here is confined to FFI calls that write into
//! buffers this module owns and sizes.

use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::ProcInfo;

fn bsd_info(pid: i32) -> Option<libc::proc_bsdinfo> {
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
    let mut info = MaybeUninit::<libc::proc_bsdinfo>::zeroed();
    // SAFETY: the buffer is exactly one `proc_bsdinfo` and `size` says so; the kernel
    // writes at most `size` bytes and returns how many.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTBSDINFO,
            0,
            info.as_mut_ptr().cast(),
            size,
        )
    };
    if n != size {
        return None;
    }
    // SAFETY: the kernel filled all `size` bytes; every field is a plain integer.
    let info = unsafe { info.assume_init() };
    (info.pbi_pid as i32 == pid).then_some(info)
}

fn start_of(info: &libc::proc_bsdinfo) -> u64 {
    info.pbi_start_tvsec
        .saturating_mul(1_000_000)
        .saturating_add(info.pbi_start_tvusec)
}

/// Status letters as `ps` prints them on macOS.
fn state_of(info: &libc::proc_bsdinfo) -> char {
    match info.pbi_status {
        libc::SIDL => 'I',
        libc::SRUN => 'R',
        libc::SSLEEP => 'S',
        libc::SSTOP => 'T',
        libc::SZOMB => 'Z',
        _ => '?',
    }
}

/// Start time and state letter, zombies included (see the module note).
pub(super) fn start_and_state(pid: i32) -> Option<(u64, char)> {
    bsd_info(pid).map(|info| (start_of(&info), state_of(&info)))
}

/// Calls a libproc listing function with a growing buffer until the answer fits.
fn list_pids(list: impl Fn(*mut libc::c_void, libc::c_int) -> libc::c_int) -> Vec<i32> {
    let mut capacity = 1024usize;
    loop {
        let mut pids = vec![0i32; capacity];
        let bytes = (capacity * std::mem::size_of::<i32>()) as libc::c_int;
        let n = list(pids.as_mut_ptr().cast(), bytes);
        if n <= 0 {
            return Vec::new();
        }
        let n = n as usize;
        if n < capacity || capacity >= 1 << 20 {
            pids.truncate(n.min(capacity));
            pids.retain(|&pid| pid > 0);
            return pids;
        }
        capacity *= 4;
    }
}

fn all_pids() -> Vec<i32> {
    // SAFETY: `list_pids` passes a buffer it owns together with its true size in bytes.
    list_pids(|buf, size| unsafe { libc::proc_listallpids(buf, size) })
}

pub(super) fn group_states(pgid: i32) -> Vec<(i32, char)> {
    // SAFETY: as in `all_pids`.
    let pids = list_pids(|buf, size| unsafe { libc::proc_listpgrppids(pgid, buf, size) });
    pids.into_iter()
        .filter_map(|pid| {
            let info = bsd_info(pid)?;
            (info.pbi_pgid as i32 == pgid).then_some((pid, state_of(&info)))
        })
        .collect()
}

/// `(pid, pgid, state)` of every process, zombies included.
pub(super) fn all_groups() -> Vec<(i32, i32, char)> {
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let info = bsd_info(pid)?;
            Some((pid, info.pbi_pgid as i32, state_of(&info)))
        })
        .collect()
}

pub(super) fn rss_bytes(pid: i32) -> Option<u64> {
    let size = std::mem::size_of::<libc::proc_taskinfo>() as libc::c_int;
    let mut info = MaybeUninit::<libc::proc_taskinfo>::zeroed();
    // SAFETY: as in `bsd_info`, with a `proc_taskinfo` buffer.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTASKINFO,
            0,
            info.as_mut_ptr().cast(),
            size,
        )
    };
    if n != size {
        return None;
    }
    // SAFETY: fully written by the kernel; plain integers.
    Some(unsafe { info.assume_init() }.pti_resident_size)
}

pub(super) fn proc_info(pid: i32) -> Option<ProcInfo> {
    let info = bsd_info(pid)?;
    // A name filling the whole array has no NUL; stop at the array's end then.
    let comm_bytes: Vec<u8> = info
        .pbi_comm
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let comm = String::from_utf8_lossy(&comm_bytes).into_owned();
    Some(ProcInfo {
        pid,
        ppid: info.pbi_ppid as i32,
        pgid: info.pbi_pgid as i32,
        uid: info.pbi_ruid,
        start_time: start_of(&info),
        state: state_of(&info),
        comm,
        argv: read_argv(pid).unwrap_or_default(),
        exe: read_exe(pid),
    })
}

pub(super) fn list_processes() -> Vec<ProcInfo> {
    all_pids().into_iter().filter_map(proc_info).collect()
}

fn read_exe(pid: i32) -> Option<PathBuf> {
    let mut buf = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
    // SAFETY: the buffer is owned here and its size is passed along.
    let n = unsafe { libc::proc_pidpath(pid, buf.as_mut_ptr().cast(), buf.len() as u32) };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&buf)))
}

/// `KERN_PROCARGS2`: argc as a native int, the exec path, NUL padding, then argc
/// NUL-terminated arguments (then the environment, which is not read).
fn read_argv(pid: i32) -> Option<Vec<String>> {
    let mut mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, pid];
    let mut size: libc::size_t = arg_max();
    let mut buf = vec![0u8; size];
    // SAFETY: `mib` names three ints; `buf` is owned and `size` holds its length, which
    // the kernel lowers to the bytes it wrote.
    let rc = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            mib.len() as libc::c_uint,
            buf.as_mut_ptr().cast(),
            &mut size,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    buf.truncate(size.min(buf.len()));
    parse_procargs2(&buf)
}

fn arg_max() -> usize {
    let mut mib = [libc::CTL_KERN, libc::KERN_ARGMAX];
    let mut value: libc::c_int = 0;
    let mut size = std::mem::size_of::<libc::c_int>();
    // SAFETY: `value` is one int and `size` says so.
    let rc = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            mib.len() as libc::c_uint,
            (&mut value as *mut libc::c_int).cast(),
            &mut size,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc == 0 && value > 0 {
        value as usize
    } else {
        1 << 20
    }
}

fn parse_procargs2(buf: &[u8]) -> Option<Vec<String>> {
    let argc_bytes: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let argc = i32::from_ne_bytes(argc_bytes);
    let argc = usize::try_from(argc).ok()?;
    let mut rest = &buf[4..];
    // Skip the exec path, then the NULs that pad it.
    let path_end = rest.iter().position(|&b| b == 0)?;
    rest = &rest[path_end..];
    let first_arg = rest.iter().position(|&b| b != 0)?;
    rest = &rest[first_arg..];
    let mut argv = Vec::with_capacity(argc.min(4096));
    for _ in 0..argc {
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        argv.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        if end >= rest.len() {
            break;
        }
        rest = &rest[end + 1..];
    }
    Some(argv)
}

/// The start time here is microseconds since the epoch.
pub(super) fn age_secs(start_time: u64) -> Option<u64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_micros();
    let now = u64::try_from(now).ok()?;
    now.checked_sub(start_time).map(|us| us / 1_000_000)
}

/// Not read on macOS (it would take the environment part of `KERN_PROCARGS2`), so a
/// run's marker is never seen here: see `marker`.
pub(super) fn environ(_pid: i32) -> Option<Vec<(String, String)>> {
    None
}

/// Linux's parent-death signal has no macOS counterpart; the start-up sweep covers it.
pub(super) fn arm_parent_death_signal(_parent: i32) -> io::Result<()> {
    Ok(())
}

/// macOS has no subreaper; orphans go to launchd, and the sweep finds them by group.
pub(super) fn become_subreaper() -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procargs(argc: i32, body: &[u8]) -> Vec<u8> {
        let mut v = argc.to_ne_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn procargs2_parses_args_and_skips_env() {
        let buf = procargs(2, b"/bin/sleep\0\0\0\0sleep\x0010\0HOME=/x\0");
        assert_eq!(parse_procargs2(&buf).unwrap(), vec!["sleep", "10"]);
    }

    #[test]
    fn procargs2_survives_truncation() {
        let buf = procargs(3, b"/bin/sleep\0\0sleep\x0010\0HOME=/x\0");
        for cut in 0..buf.len() {
            let _ = parse_procargs2(&buf[..cut]);
        }
        assert_eq!(parse_procargs2(&procargs(-1, b"x\0y\0")), None);
    }
}
