//! `paiosctl doctor` and paiosd's fallback sweep: find the processes of this user that
//! look like a configured service but run outside supervision (the duplicate MCP
//! servers of the old setup), and the other problems visible from outside paiosd: a
//! health-probe port held by a process paiosd does not supervise, a stale control
//! socket, a service in `failed`.
//!
//! A process is a stray of service S when it is ours (same real UID), is not paiosd or
//! paiosctl, is not in a group paiosd supervises, and either
//! - carries the marker paiosd puts in every run's environment (`PAIOS_INSTANCE` equal
//!   to this state directory and `PAIOS_SERVICE=S`) — inherited by every child and
//!   grandchild, so a group whose leader died is still recognised (Linux reads
//!   `/proc/PID/environ`; macOS cannot read another process's environment here), or
//! - carries no marker at all and runs S's executable with S's arguments exactly.
//!
//! A process marked for *another* state directory belongs to another paiosd and is
//! never a stray here. Matching is pure ([`find_strays`]) over a process list, so it is
//! tested without processes; ending strays checks each one's start time before every
//! signal, so a PID handed to another program meanwhile is never touched.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as os;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Probe, ServiceConfig};
use crate::process::{self, Identity, ProcInfo};

/// The environment variable naming the service a process was started for.
pub const ENV_SERVICE: &str = "PAIOS_SERVICE";
/// The environment variable naming the paiosd instance (its state directory).
pub const ENV_INSTANCE: &str = "PAIOS_INSTANCE";

/// The value of [`ENV_INSTANCE`] for a state directory: its canonical path when it
/// exists, so that `paiosctl` and `paiosd` agree however the path was spelled.
pub fn instance_id(state_dir: &Path) -> String {
    std::fs::canonicalize(state_dir)
        .unwrap_or_else(|_| state_dir.to_path_buf())
        .display()
        .to_string()
}

/// The marker a run's environment carries (see the module doc).
pub fn marker_env(state_dir: &Path, service: &str) -> [(String, String); 2] {
    [
        (ENV_SERVICE.to_string(), service.to_string()),
        (ENV_INSTANCE.to_string(), instance_id(state_dir)),
    ]
}

/// What a process's environment says about who started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// The environment could not be read (macOS, a process that vanished).
    Unknown,
    /// Readable, and no paios marker in it.
    None,
    /// Started by the paiosd of `instance` for `service`.
    Paios { instance: String, service: String },
}

/// A process that looks like a configured service but runs outside supervision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stray {
    pub pid: i32,
    pub pgid: i32,
    /// For the identity check before each signal.
    pub start_time: u64,
    /// The service it looks like.
    pub service: String,
    pub argv: Vec<String>,
    /// Seconds since it started, when the OS says.
    pub age_s: Option<u64>,
    /// `argv` (same executable and arguments) or `marker` (started by this paiosd).
    pub why: &'static str,
}

impl Stray {
    pub fn identity(&self) -> Identity {
        Identity {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

/// Anything else doctor can see that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `port_held`, `stale_socket`, `failed`, `port_not_checked`, `config`, `records`.
    pub kind: String,
    /// The service it concerns, if any.
    pub service: Option<String>,
    pub detail: String,
}

/// What doctor found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub strays: Vec<Stray>,
    pub problems: Vec<Problem>,
    /// Notes that are not problems (what could not be checked on this platform).
    pub notes: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.strays.is_empty() && self.problems.is_empty()
    }
}

/// What the caller knows about supervision right now.
#[derive(Debug, Clone, Default)]
pub struct Supervision {
    /// Process groups paiosd supervises (live runs, escaped groups it recorded).
    pub pgids: BTreeSet<i32>,
    /// PIDs that are never strays: paiosd, the caller.
    pub exclude: BTreeSet<i32>,
}

/// The pure core: which of `procs` are strays of `services`.
///
/// `marker_of` reads a process's marker (injected so that tests need no environment).
pub fn find_strays(
    services: &BTreeMap<String, ServiceConfig>,
    procs: &[ProcInfo],
    uid: u32,
    instance: &str,
    supervision: &Supervision,
    marker_of: &dyn Fn(&ProcInfo) -> Marker,
    age_of: &dyn Fn(u64) -> Option<u64>,
) -> Vec<Stray> {
    let mut strays = Vec::new();
    for p in procs {
        if p.uid != uid
            || !p.is_live()
            || supervision.exclude.contains(&p.pid)
            || supervision.pgids.contains(&p.pgid)
            || is_paios_binary(p)
        {
            continue;
        }
        let found = match marker_of(p) {
            Marker::Paios {
                instance: theirs,
                service,
            } => {
                if theirs == instance && services.contains_key(&service) {
                    Some((service, "marker"))
                } else {
                    // Another paiosd's run, or a service no longer configured: not ours to judge.
                    None
                }
            }
            Marker::None | Marker::Unknown => services
                .values()
                .find(|svc| argv_matches(&svc.argv, p))
                .map(|svc| (svc.name.clone(), "argv")),
        };
        if let Some((service, why)) = found {
            strays.push(Stray {
                pid: p.pid,
                pgid: p.pgid,
                start_time: p.start_time,
                service,
                argv: p.argv.clone(),
                age_s: age_of(p.start_time),
                why,
            });
        }
    }
    strays.sort_by_key(|s| (s.service.clone(), s.pid));
    strays
}

/// Same arguments, and the same program: argv\[0\] spelled the same, or the process's
/// executable is the file argv\[0\] names (directly or through `PATH`).
pub fn argv_matches(service_argv: &[String], p: &ProcInfo) -> bool {
    let (Some(program), Some(first)) = (service_argv.first(), p.argv.first()) else {
        return false;
    };
    if service_argv[1..] != p.argv[1..] {
        return false;
    }
    if program == first {
        return true;
    }
    match (&p.exe, resolve_program(program)) {
        (Some(exe), Some(resolved)) => same_file(exe, &resolved),
        _ => false,
    }
}

fn is_paios_binary(p: &ProcInfo) -> bool {
    let named = |path: &Path| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == "paiosd" || n == "paiosctl")
    };
    p.exe.as_deref().is_some_and(named) || p.argv.first().is_some_and(|a| named(Path::new(a)))
}

fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Reads a process's marker from its environment.
pub fn marker(p: &ProcInfo) -> Marker {
    match os::environ(p.pid) {
        None => Marker::Unknown,
        Some(vars) => {
            let get = |key: &str| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            match (get(ENV_INSTANCE), get(ENV_SERVICE)) {
                (Some(instance), Some(service)) => Marker::Paios { instance, service },
                _ => Marker::None,
            }
        }
    }
}

/// Seconds since a process with this start time started, when the OS says.
pub fn age_secs(start_time: u64) -> Option<u64> {
    os::age_secs(start_time)
}

/// The strays of `services` on this machine now.
pub fn strays(
    services: &BTreeMap<String, ServiceConfig>,
    state_dir: &Path,
    supervision: &Supervision,
) -> Vec<Stray> {
    let mut supervision = supervision.clone();
    supervision.exclude.insert(std::process::id() as i32);
    find_strays(
        services,
        &process::list_processes(),
        nix::unistd::getuid().as_raw(),
        &instance_id(state_dir),
        &supervision,
        &marker,
        &age_secs,
    )
}

/// Every problem doctor checks for besides strays: probe ports held outside
/// supervision, a stale control socket.
pub fn problems(
    services: &BTreeMap<String, ServiceConfig>,
    socket: &Path,
    supervision: &Supervision,
    report: &mut Report,
) {
    if let Some(problem) = stale_socket(socket) {
        report.problems.push(problem);
    }
    let uid = nix::unistd::getuid().as_raw();
    for svc in services.values() {
        let Some(port) = svc.health.as_ref().and_then(|h| probe_port(&h.probe)) else {
            continue;
        };
        match os::port_holders(port) {
            None => {
                let note = format!(
                    "{}: port {port} of its health probe not checked on this platform",
                    svc.name
                );
                if !report.notes.contains(&note) {
                    report.notes.push(note);
                }
            }
            Some(holders) => {
                for pid in holders {
                    let Some(p) = process::proc_info(pid) else {
                        continue;
                    };
                    if supervision.pgids.contains(&p.pgid) {
                        continue;
                    }
                    let whose = if p.uid == uid {
                        format!("PID {pid} ({})", p.argv.join(" "))
                    } else {
                        format!("PID {pid} of user {}", p.uid)
                    };
                    report.problems.push(Problem {
                        kind: "port_held".into(),
                        service: Some(svc.name.clone()),
                        detail: format!(
                            "port {port} of its health probe is held by {whose}, outside supervision"
                        ),
                    });
                }
            }
        }
    }
}

/// The TCP port a probe connects to, when it names one.
pub fn probe_port(probe: &Probe) -> Option<u16> {
    match probe {
        Probe::Tcp { addr } => Some(addr.port),
        Probe::Http { url, .. } => Some(url.port),
        Probe::Exec { .. } => None,
    }
}

/// A socket file that exists but where nobody answers.
pub fn stale_socket(socket: &Path) -> Option<Problem> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::symlink_metadata(socket).ok()?;
    if !meta.file_type().is_socket() {
        return Some(Problem {
            kind: "stale_socket".into(),
            service: None,
            detail: format!(
                "{} exists but is not a socket; move it away so paiosd can listen there",
                socket.display()
            ),
        });
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(Problem {
            kind: "stale_socket".into(),
            service: None,
            detail: format!(
                "{} is left from a paiosd that is gone (nobody answers); the next paiosd replaces it",
                socket.display()
            ),
        }),
        Err(_) => None,
    }
}

/// How ending one stray went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ended {
    pub stray: Stray,
    /// The stray's whole group was signalled (it led a group of strays only).
    pub group: bool,
    /// SIGKILL was needed after the grace.
    pub killed: bool,
    /// PIDs still alive at the end (should be empty).
    pub survivors: Vec<i32>,
}

/// Whether a stray may be ended as a group: it leads its own group, and every live
/// member of that group is a stray or a descendant of one.
fn whole_group(stray: &Stray, strays: &[Stray], procs: &[ProcInfo]) -> bool {
    if stray.pid != stray.pgid || stray.pgid <= 1 {
        return false;
    }
    let own = nix::unistd::getpgrp().as_raw();
    if stray.pgid == own {
        return false;
    }
    let stray_pids: BTreeSet<i32> = strays.iter().map(|s| s.pid).collect();
    let parent: HashMap<i32, i32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let descends = |mut pid: i32| {
        for _ in 0..64 {
            if stray_pids.contains(&pid) {
                return true;
            }
            match parent.get(&pid) {
                Some(&pp) if pp > 1 => pid = pp,
                _ => return false,
            }
        }
        false
    };
    procs
        .iter()
        .filter(|p| p.pgid == stray.pgid && p.is_live())
        .all(|p| descends(p.pid))
}

/// Ends `strays`, all in parallel, each with its service's stop sequence: SIGCONT and
/// the stop signal, `grace`, SIGKILL. A stray leading a group of strays is ended as a
/// group (grandchildren included); otherwise only the process. Every signal to a single
/// process is preceded by an identity check.
pub fn end_strays(strays: &[Stray], services: &BTreeMap<String, ServiceConfig>) -> Vec<Ended> {
    let procs = process::list_processes();
    let start = Instant::now();
    let mut ended: Vec<(Ended, i32, Duration)> = strays
        .iter()
        .map(|s| {
            let (signal, grace) = services
                .get(&s.service)
                .map_or((libc::SIGTERM, Duration::from_secs(10)), |svc| {
                    (svc.stop.signal, svc.stop.grace)
                });
            let group = whole_group(s, strays, &procs);
            let e = Ended {
                stray: s.clone(),
                group,
                killed: false,
                survivors: Vec::new(),
            };
            send(&e, libc::SIGCONT);
            send(&e, signal);
            (e, signal, grace)
        })
        .collect();
    let mut delay = Duration::from_millis(1);
    loop {
        let _ = process::watch::reap_and_deliver();
        let mut pending = false;
        for (e, _, grace) in ended.iter_mut() {
            if !alive(e) {
                continue;
            }
            if !e.killed && start.elapsed() >= *grace {
                e.killed = true;
                send(e, libc::SIGKILL);
            }
            if start.elapsed() < *grace + Duration::from_secs(5) {
                pending = true;
            } else {
                e.survivors = if e.group {
                    process::group_members(e.stray.pgid)
                } else {
                    vec![e.stray.pid]
                };
            }
        }
        if !pending {
            break;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
    ended.into_iter().map(|(e, _, _)| e).collect()
}

fn alive(e: &Ended) -> bool {
    if e.group {
        process::group_alive(e.stray.pgid)
    } else {
        process::is_alive(e.stray.identity())
    }
}

fn send(e: &Ended, signal: i32) {
    if e.group {
        // The leader may have exited since; the PGID cannot be reused while members live.
        if process::is_alive(e.stray.identity()) || process::group_alive(e.stray.pgid) {
            let _ = process::signal_group(e.stray.pgid, signal);
        }
    } else if process::is_alive(e.stray.identity()) {
        if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(e.stray.pid), sig);
        }
    }
}

/// One line for the ledger about an ended stray.
pub fn describe_ended(e: &Ended) -> String {
    format!(
        "PID {} (pgid {}{}) looked like {} ({}): {}{}{}",
        e.stray.pid,
        e.stray.pgid,
        if e.group { ", whole group" } else { "" },
        e.stray.service,
        e.stray.why,
        e.stray.argv.join(" "),
        if e.killed {
            "; SIGKILL after grace"
        } else {
            ""
        },
        if e.survivors.is_empty() {
            String::new()
        } else {
            format!("; SURVIVORS {:?}", e.survivors)
        }
    )
}

/// Services in `failed`, from a status listing.
pub fn failed_services(status: &[crate::control::protocol::ServiceStatus], report: &mut Report) {
    for s in status.iter().filter(|s| s.state == "failed") {
        report.problems.push(Problem {
            kind: "failed".into(),
            service: Some(s.name.clone()),
            detail: format!(
                "gave up after a crash loop{}; `paiosctl start {}` tries again now",
                s.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default(),
                s.name
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, argv: &[&str]) -> (String, ServiceConfig) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "command = [{}]\n",
            argv.iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::fs::create_dir_all(dir.path().join("services.d")).unwrap();
        std::fs::write(dir.path().join(format!("services.d/{name}.toml")), text).unwrap();
        let mut config = crate::config::load(dir.path());
        assert!(config.errors.is_empty(), "{:?}", config.errors);
        let cfg = config.services.remove(name).unwrap();
        (name.to_string(), cfg)
    }

    fn proc(pid: i32, pgid: i32, uid: u32, argv: &[&str]) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: 1,
            pgid,
            uid,
            start_time: 1000 + pid as u64,
            state: 'S',
            comm: "x".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            exe: None,
        }
    }

    fn find(procs: &[ProcInfo], sup: &Supervision, markers: &[(i32, Marker)]) -> Vec<i32> {
        let services: BTreeMap<_, _> = [
            service("kb", &["/opt/node", "kb.js", "--port", "3001"]),
            service("gw", &["/opt/gw"]),
        ]
        .into_iter()
        .collect();
        let marker_of = |p: &ProcInfo| {
            markers
                .iter()
                .find(|(pid, _)| *pid == p.pid)
                .map_or(Marker::None, |(_, m)| m.clone())
        };
        find_strays(&services, procs, 500, "/state", sup, &marker_of, &|_| None)
            .into_iter()
            .map(|s| s.pid)
            .collect()
    }

    #[test]
    fn same_argv_outside_supervision_is_a_stray() {
        let procs = [
            proc(10, 10, 500, &["/opt/node", "kb.js", "--port", "3001"]),
            proc(11, 11, 500, &["/opt/node", "kb.js", "--port", "3002"]),
            proc(12, 12, 500, &["/opt/node", "kb.js"]),
            proc(13, 13, 500, &["/opt/gw"]),
        ];
        assert_eq!(find(&procs, &Supervision::default(), &[]), vec![13, 10]);
    }

    #[test]
    fn supervised_groups_other_users_and_excluded_pids_are_not_strays() {
        let procs = [
            proc(10, 10, 500, &["/opt/gw"]),
            proc(11, 11, 501, &["/opt/gw"]),
            proc(12, 12, 500, &["/opt/gw"]),
            proc(13, 10, 500, &["/opt/gw"]),
        ];
        let sup = Supervision {
            pgids: [10].into(),
            exclude: [12].into(),
        };
        assert!(find(&procs, &sup, &[]).is_empty());
    }

    #[test]
    fn zombies_and_paios_binaries_are_not_strays() {
        let mut zombie = proc(10, 10, 500, &["/opt/gw"]);
        zombie.state = 'Z';
        let mut ctl = proc(11, 11, 500, &["/opt/gw"]);
        ctl.exe = Some("/usr/bin/paiosctl".into());
        assert!(find(&[zombie, ctl], &Supervision::default(), &[]).is_empty());
    }

    #[test]
    fn marker_decides_over_argv() {
        let procs = [
            // A grandchild of ours whose argv is nothing like the service's.
            proc(20, 20, 500, &["sleep", "100"]),
            // The same argv, but started by another paiosd.
            proc(21, 21, 500, &["/opt/gw"]),
            // Our marker for a service no longer configured.
            proc(22, 22, 500, &["x"]),
        ];
        let ours = |s: &str| Marker::Paios {
            instance: "/state".into(),
            service: s.into(),
        };
        let theirs = Marker::Paios {
            instance: "/other".into(),
            service: "gw".into(),
        };
        let found = find(
            &procs,
            &Supervision::default(),
            &[(20, ours("kb")), (21, theirs), (22, ours("gone"))],
        );
        assert_eq!(found, vec![20]);
    }

    #[test]
    fn probe_ports() {
        let http = |url: &str| Probe::Http {
            url: url.parse().expect("a probe URL"),
            expect_status: None,
        };
        assert_eq!(
            probe_port(&http("http://127.0.0.1:3001/health")),
            Some(3001)
        );
        assert_eq!(probe_port(&http("http://[::1]:8080/x")), Some(8080));
        let tcp = |addr: &str| Probe::Tcp {
            addr: addr.parse().expect("a probe address"),
        };
        assert_eq!(probe_port(&tcp("127.0.0.1:5432")), Some(5432));
        assert_eq!(probe_port(&Probe::Exec { argv: vec![] }), None);
    }

    #[test]
    fn stale_socket_is_found_and_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert_eq!(stale_socket(&path), None);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(stale_socket(&path), None);
        drop(listener);
        assert_eq!(
            stale_socket(&path).map(|p| p.kind),
            Some("stale_socket".into())
        );
        let file = dir.path().join("f.sock");
        std::fs::write(&file, b"x").unwrap();
        assert!(stale_socket(&file).is_some());
    }
}
