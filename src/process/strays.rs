//! Strays: processes of this user that look like a configured service but run outside
//! supervision (the duplicate servers a setup without one supervisor piles up). The
//! fallback sweep ends them when the records of a killed paiosd are lost, and
//! `paiosctl doctor` lists them (and, with `--kill`, ends them).
//!
//! A process is a stray of service S when it is ours (same real UID), is not paiosd or
//! paiosctl, is not in a group paiosd supervises, and either
//! - carries the run marker (see [`super::marker`]) of this state directory and S —
//!   inherited by every child and grandchild, so a group whose leader died is still
//!   recognised (Linux only: macOS does not read another process's environment), or
//! - carries no readable marker and runs S's executable with S's arguments exactly.
//!
//! A process marked for *another* state directory belongs to another paiosd and is
//! never a stray here. Matching is pure ([`find_strays`]) over a process list, so it is
//! tested without processes; ending strays goes through [`super::stop`], which checks
//! each one's identity before every signal.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::marker::{self, Marker};
use super::stop::{self, Stop, Target};
use super::{os, Identity, ProcInfo};

/// What stray detection knows of a configured service: the command it runs and how it
/// stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub argv: Vec<String>,
    pub stop_signal: i32,
    pub grace: Duration,
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

/// What the caller knows about supervision right now.
#[derive(Debug, Clone, Default)]
pub struct Supervision {
    /// Process groups paiosd supervises (live runs, escaped groups it recorded).
    pub pgids: BTreeSet<i32>,
    /// PIDs that are never strays: paiosd, the caller.
    pub exclude: BTreeSet<i32>,
}

/// The pure core: which of `procs` are strays of `services` (by name).
///
/// `marker_of` reads a process's marker (injected so that tests need no environment).
pub fn find_strays(
    services: &BTreeMap<String, Known>,
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
                .iter()
                .find(|(_, svc)| argv_matches(&svc.argv, p))
                .map(|(name, _)| (name.clone(), "argv")),
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

/// Seconds since a process with this start time started, when the OS says.
pub fn age_secs(start_time: u64) -> Option<u64> {
    os::age_secs(start_time)
}

/// The strays of `services` on this machine now, for the paiosd of `state_dir`.
pub fn strays(
    services: &BTreeMap<String, Known>,
    state_dir: &Path,
    supervision: &Supervision,
) -> Vec<Stray> {
    let mut supervision = supervision.clone();
    supervision.exclude.insert(std::process::id() as i32);
    find_strays(
        services,
        &super::list_processes(),
        nix::unistd::getuid().as_raw(),
        &marker::instance_id(state_dir),
        &supervision,
        &marker::marker,
        &age_secs,
    )
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

/// Ends `strays`, all in parallel, each with its service's stop sequence (SIGTERM and
/// 10 s for a service no longer known). A stray leading a group of strays is ended as
/// a group (grandchildren included); otherwise only the process.
pub fn end_strays(strays: &[Stray], services: &BTreeMap<String, Known>) -> Vec<Ended> {
    let procs = super::list_processes();
    let plan: Vec<(bool, Stop)> = strays
        .iter()
        .map(|s| {
            let (signal, grace) = services
                .get(&s.service)
                .map_or((libc::SIGTERM, Duration::from_secs(10)), |svc| {
                    (svc.stop_signal, svc.grace)
                });
            let group = whole_group(s, strays, &procs);
            let target = if group {
                Target::Group {
                    pgid: s.pgid,
                    leader: s.identity(),
                }
            } else {
                Target::Process(s.identity())
            };
            (
                group,
                Stop {
                    target,
                    signal,
                    grace,
                },
            )
        })
        .collect();
    let stops: Vec<Stop> = plan.iter().map(|(_, stop)| *stop).collect();
    stop::stop_all(&stops)
        .into_iter()
        .zip(strays.iter().zip(plan))
        .map(|(done, (stray, (group, _)))| Ended {
            stray: stray.clone(),
            group,
            killed: done.killed,
            survivors: done.survivors,
        })
        .collect()
}

/// One line for the ledger (and `doctor`) about an ended stray.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn known(argv: &[&str]) -> Known {
        Known {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stop_signal: libc::SIGTERM,
            grace: Duration::from_secs(1),
        }
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
        let services: BTreeMap<String, Known> = [
            (
                "kb".into(),
                known(&["/opt/node", "kb.js", "--port", "3001"]),
            ),
            ("gw".into(), known(&["/opt/gw"])),
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
    fn a_group_is_ended_whole_only_when_every_member_descends_from_a_stray() {
        let stray = |pid: i32| Stray {
            pid,
            pgid: pid,
            start_time: 1,
            service: "gw".into(),
            argv: vec![],
            age_s: None,
            why: "argv",
        };
        let child = |pid: i32, ppid: i32, pgid: i32| ProcInfo {
            ppid,
            ..proc(pid, pgid, 500, &[])
        };
        let strays = [stray(10)];
        let mut procs = vec![proc(10, 10, 500, &[]), child(11, 10, 10), child(12, 11, 10)];
        assert!(whole_group(&strays[0], &strays, &procs));
        // A member that is no descendant of a stray keeps the group from being signalled.
        procs.push(child(13, 1, 10));
        assert!(!whole_group(&strays[0], &strays, &procs));
        // A stray that does not lead its group is ended alone.
        let follower = Stray {
            pgid: 10,
            ..stray(11)
        };
        assert!(!whole_group(
            &follower,
            std::slice::from_ref(&follower),
            &procs
        ));
    }

    #[test]
    fn own_process_has_an_age() {
        let me = super::super::start_time(std::process::id() as i32).unwrap();
        assert!(age_secs(me).is_some());
    }
}
