//! Linux process facts from `/proc` (environments included), plus the two `prctl`s
//! paiosd relies on.
//!
//! `/proc/PID/stat` is the one source for state, parent, group and start time (field 22,
//! clock ticks since boot, present for zombies too). Its second field is the command
//! name in parentheses and may itself contain spaces and `)`, so every parse splits at
//! the *last* `)`. A process can vanish between listing `/proc` and reading its files;
//! that is normal and simply leaves it out.

use std::fs;
use std::io;

use nix::sys::signal::Signal;

use super::ProcInfo;

/// The fields of `/proc/PID/stat` this module uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    comm: String,
    state: char,
    ppid: i32,
    pgid: i32,
    start_time: u64,
}

fn parse_stat(text: &[u8]) -> Option<Stat> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = String::from_utf8_lossy(&text[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the `)`: field 3 (state) is index 0, so field N is index N - 3.
    let mut state_chars = fields.first()?.chars();
    let state = state_chars.next()?;
    if state_chars.next().is_some() {
        return None;
    }
    Some(Stat {
        comm,
        state,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Numeric entries of `/proc`: every process (threads other than leaders are not listed).
fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid > 0)
        .collect()
}

/// Start time and state letter, zombies included: `spawn` records the start time right
/// after the fork, when the leader may already have exited.
pub(super) fn start_and_state(pid: i32) -> Option<(u64, char)> {
    read_stat(pid).map(|s| (s.start_time, s.state))
}

/// `(pid, state)` of every process in group `pgid`, zombies included.
pub(super) fn group_states(pgid: i32) -> Vec<(i32, char)> {
    all_groups()
        .into_iter()
        .filter(|&(_, g, _)| g == pgid)
        .map(|(pid, _, state)| (pid, state))
        .collect()
}

/// `(pid, pgid, state)` of every process, zombies included.
pub(super) fn all_groups() -> Vec<(i32, i32, char)> {
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = read_stat(pid)?;
            Some((pid, stat.pgid, stat.state))
        })
        .collect()
}

/// Resident set of `pid` in bytes: `/proc/PID/statm` field 2 (pages) times the page size.
pub(super) fn rss_bytes(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page_size()))
}

fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => size as u64,
        _ => 4096,
    }
}

pub(super) fn proc_info(pid: i32) -> Option<ProcInfo> {
    let stat = read_stat(pid)?;
    let uid = read_uid(pid).unwrap_or(u32::MAX);
    let argv = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| split_cmdline(&raw))
        .unwrap_or_default();
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
    Some(ProcInfo {
        pid,
        ppid: stat.ppid,
        pgid: stat.pgid,
        uid,
        start_time: stat.start_time,
        state: stat.state,
        comm: stat.comm,
        argv,
        exe,
    })
}

pub(super) fn list_processes() -> Vec<ProcInfo> {
    all_pids().into_iter().filter_map(proc_info).collect()
}

/// Real UID from the `Uid:` line of `/proc/PID/status`.
fn read_uid(pid: i32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_uid(&status)
}

fn parse_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line["Uid:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// NUL-separated arguments; a trailing NUL ends the last one rather than adding an empty one.
fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// `KEY=VALUE` pairs of `/proc/PID/environ`, or `None` when unreadable (another user's
/// process, gone).
pub(super) fn environ(pid: i32) -> Option<Vec<(String, String)>> {
    let raw = fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(parse_environ(&raw))
}

fn parse_environ(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            let eq = entry.iter().position(|&b| b == b'=')?;
            Some((
                String::from_utf8_lossy(&entry[..eq]).into_owned(),
                String::from_utf8_lossy(&entry[eq + 1..]).into_owned(),
            ))
        })
        .collect()
}

/// Seconds since boot minus the start time (clock ticks since boot).
pub(super) fn age_secs(start_time: u64) -> Option<u64> {
    let uptime = fs::read_to_string("/proc/uptime").ok()?;
    let up: f64 = uptime.split_ascii_whitespace().next()?.parse().ok()?;
    let ticks = match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    };
    let age = up - start_time as f64 / ticks;
    (age >= 0.0).then_some(age as u64)
}

/// Called in the forked child: SIGKILL when the spawning thread dies. If the parent died
/// before the `prctl` took effect the signal will never come, so `getppid()` is checked
/// afterwards and the child refuses to exec.
pub(super) fn arm_parent_death_signal(parent: i32) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid().as_raw() != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

pub(super) fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("PR_SET_CHILD_SUBREAPER: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_line(comm: &str) -> Vec<u8> {
        format!(
            "4242 ({comm}) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345 67 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n"
        )
        .into_bytes()
    }

    #[test]
    fn stat_parses_plain_comm() {
        let s = parse_stat(&stat_line("sleep")).unwrap();
        assert_eq!(
            s,
            Stat {
                comm: "sleep".into(),
                state: 'S',
                ppid: 1,
                pgid: 4242,
                start_time: 987654,
            }
        );
    }

    #[test]
    fn stat_parses_comm_with_spaces_and_parens() {
        for comm in ["a b", "x) S 9 9 9", ") (", "((", "))", ""] {
            let s = parse_stat(&stat_line(comm)).unwrap();
            assert_eq!(s.comm, comm);
            assert_eq!(s.start_time, 987654);
            assert_eq!(s.pgid, 4242);
        }
    }

    #[test]
    fn stat_rejects_truncated_and_garbage() {
        let full = stat_line("sleep");
        let field22 = full.windows(7).position(|w| w == b" 987654").unwrap();
        for cut in 0..=field22 {
            // Every truncation before field 22 is complete must be refused, never panic.
            assert_eq!(parse_stat(&full[..cut]), None, "cut at {cut}");
        }
        assert_eq!(parse_stat(b""), None);
        assert_eq!(parse_stat(b")("), None);
        assert_eq!(parse_stat(b"1 (x) SS 1 2 3"), None);
        assert_eq!(parse_stat(&[0xff; 300]), None);
        let mut bad = stat_line("sleep");
        bad.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(parse_stat(&bad), None);
    }

    #[test]
    fn cmdline_splits_on_nul() {
        assert_eq!(split_cmdline(b"a\0b c\0\0d\0"), vec!["a", "b c", "", "d"]);
        assert_eq!(split_cmdline(b"single"), vec!["single"]);
        assert!(split_cmdline(b"").is_empty());
        assert!(split_cmdline(b"\0").is_empty());
    }

    #[test]
    fn environ_parses_pairs_and_skips_junk() {
        let raw = b"A=1\0B=x=y\0NOEQ\0\0C=\0";
        assert_eq!(
            parse_environ(raw),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("C".into(), String::new())
            ]
        );
        assert!(parse_environ(b"").is_empty());
    }

    #[test]
    fn own_environment_is_readable() {
        assert!(environ(std::process::id() as i32).is_some());
    }

    #[test]
    fn uid_line_parses() {
        assert_eq!(
            parse_uid("Name:\tx\nUid:\t1000\t1001\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(parse_uid("Name:\tx\n"), None);
        assert_eq!(parse_uid("Uid:\n"), None);
        assert_eq!(parse_uid("Uid:\tabc\n"), None);
    }
}
