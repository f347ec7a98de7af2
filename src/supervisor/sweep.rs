//! The start-up sweep (promise 3): before anything starts, end what a previous paiosd
//! left running. Every group recorded in `state.sqlite` is checked by identity — the
//! leader's PID with its start time, so a PID or PGID handed to another program since is
//! never touched — and ended with the stop sequence it was recorded with.
//!
//! Two more things live here because they close the same hole. When the records are
//! gone (`state.sqlite` deleted or corrupt between a kill and the next start),
//! [`sweep_strays`] falls back to `process::strays` for the configured
//! services. And a process that left its run's group (`setsid`) is found by ancestry
//! with [`find_escapees`]: while the run's leader lives the escapee descends from a
//! member of the group; once the leader is gone, paiosd (a child subreaper on Linux)
//! is its parent, and the marker in its environment names the service. macOS has no
//! subreaper and no environment reading here, so there an escapee is found only while
//! an ancestor in the group still lives; once found, it is recorded in `state.sqlite`
//! like a run, so the next start sweeps it on both systems.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use crate::config::ServiceConfig;
use crate::process::marker::Marker;
use crate::process::stop::{self, Stop, Target};
use crate::process::strays::{self, Ended, Supervision};
use crate::process::{self, Identity, ProcInfo};
use crate::state::LiveRun;

/// What the sweep found for one recorded run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No process of the group is left.
    Gone,
    /// The group's number now belongs to another program: left alone.
    Reused,
    /// The group is still ours, with these live members.
    Ours(Vec<i32>),
}

/// Decides whether a recorded group is still the one paiosd started.
///
/// `leader_now` is the start time of the process whose PID is the recorded PGID (the
/// leader), if one is alive. The kernel never hands out a PGID as a new PID while the group
/// exists, so: a leader with another start time means the number was reused; no leader but
/// live members means the old leader exited and its group lives on.
pub fn identify(recorded: &LiveRun, leader_now: Option<u64>, members: Vec<i32>) -> Found {
    if members.is_empty() {
        return Found::Gone;
    }
    if recorded.pid == recorded.pgid {
        if let Some(start) = leader_now {
            if start != recorded.start_time {
                return Found::Reused;
            }
        }
    }
    Found::Ours(members)
}

/// One group ended by the sweep, for the record.
#[derive(Debug, Clone)]
pub struct Swept {
    pub run: LiveRun,
    pub found: Found,
    /// SIGKILL was needed after the grace.
    pub killed: bool,
    /// Members still alive when the sweep gave up waiting (should be empty).
    pub survivors: Vec<i32>,
}

/// Ends every recorded group that is still ours, all in parallel, each with its own stop
/// signal and grace, then SIGKILL; returns once every group is empty (or after the longest
/// grace plus a bound).
pub fn sweep(runs: Vec<LiveRun>) -> Vec<Swept> {
    let mut swept = Vec::with_capacity(runs.len());
    let mut stops = Vec::new();
    for run in runs {
        let leader_now = process::start_time(run.pgid);
        let found = identify(&run, leader_now, process::group_members(run.pgid));
        if let Found::Ours(members) = &found {
            tracing::warn!(
                service = %run.service,
                pgid = run.pgid,
                "left running by a previous paiosd ({} processes); ending it",
                members.len()
            );
            stops.push((
                swept.len(),
                Stop {
                    target: Target::Group {
                        pgid: run.pgid,
                        leader: Identity {
                            pid: run.pid,
                            start_time: run.start_time,
                        },
                    },
                    signal: run.stop_signal,
                    grace: Duration::from_millis(run.grace_ms),
                },
            ));
        }
        swept.push(Swept {
            run,
            found,
            killed: false,
            survivors: Vec::new(),
        });
    }
    let orders: Vec<Stop> = stops.iter().map(|(_, stop)| *stop).collect();
    for ((i, _), done) in stops.iter().zip(stop::stop_all(&orders)) {
        swept[*i].killed = done.killed;
        swept[*i].survivors = done.survivors;
    }
    swept
}

/// Ends, before anything starts, the strays of the configured services (stray
/// detection with nothing supervised yet): the fallback when the records of the
/// previous paiosd are lost.
pub fn sweep_strays(services: &BTreeMap<String, ServiceConfig>, state_dir: &Path) -> Vec<Ended> {
    let patterns = services
        .iter()
        .map(|(name, svc)| (name.clone(), svc.stray_pattern()))
        .collect();
    let found = strays::strays(&patterns, state_dir, &Supervision::default());
    if found.is_empty() {
        return Vec::new();
    }
    strays::end_strays(&found, &patterns)
}

/// A process found outside its run's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escaped {
    pub service: String,
    pub id: Identity,
    pub pgid: i32,
}

impl Escaped {
    /// It leads its own group (the `setsid` case): the group is ended, like a run's.
    pub fn leads_group(&self) -> bool {
        self.id.pid == self.pgid
    }
}

/// One live run as escape detection needs it.
#[derive(Debug, Clone)]
pub struct RunRef {
    pub service: String,
    pub leader: i32,
    pub pgid: i32,
}

/// Which of `procs` left a run's group: processes outside every group in `known`
/// (runs' groups and groups already recorded as escaped) that descend from a member
/// of a run's group or its leader, or — re-parented to `paiosd` — carry the marker of
/// a service with a run. A process whose group is led by another escapee is covered by
/// that one and not listed.
pub fn find_escapees(
    runs: &[RunRef],
    known: &BTreeSet<i32>,
    procs: &[ProcInfo],
    paiosd: i32,
    marker_of: &dyn Fn(&ProcInfo) -> Marker,
    instance: &str,
) -> Vec<Escaped> {
    let by_pid: HashMap<i32, &ProcInfo> = procs.iter().map(|p| (p.pid, p)).collect();
    let run_of_group: HashMap<i32, &RunRef> = runs.iter().map(|r| (r.pgid, r)).collect();
    let run_of_leader: HashMap<i32, &RunRef> = runs.iter().map(|r| (r.leader, r)).collect();
    let own_group = by_pid.get(&paiosd).map(|p| p.pgid);
    let mut found: Vec<Escaped> = Vec::new();
    for p in procs {
        if !p.is_live()
            || p.pid == paiosd
            || known.contains(&p.pgid)
            || Some(p.pgid) == own_group
            || run_of_leader.contains_key(&p.pid)
        {
            continue;
        }
        let mut owner: Option<&RunRef> = None;
        let mut at = p.ppid;
        for _ in 0..64 {
            if at <= 1 {
                break;
            }
            if at == paiosd {
                // Re-parented to paiosd: only the marker can say whose it was.
                if let Marker::Paios {
                    instance: theirs,
                    service,
                } = marker_of(p)
                {
                    if theirs == instance {
                        owner = runs.iter().find(|r| r.service == service);
                    }
                }
                break;
            }
            if let Some(r) = run_of_leader.get(&at) {
                owner = Some(r);
                break;
            }
            let Some(parent) = by_pid.get(&at) else { break };
            if let Some(r) = run_of_group.get(&parent.pgid) {
                owner = Some(r);
                break;
            }
            at = parent.ppid;
        }
        if let Some(run) = owner {
            found.push(Escaped {
                service: run.service.clone(),
                id: p.identity(),
                pgid: p.pgid,
            });
        }
    }
    let leaders: BTreeSet<i32> = found
        .iter()
        .filter(|e| e.leads_group())
        .map(|e| e.pgid)
        .collect();
    found.retain(|e| e.leads_group() || !leaders.contains(&e.pgid));
    found
}

/// Sends `signal` to an escapee: its group when it led one (the group cannot be
/// reused while members live), else the process after an identity check.
pub fn signal_escaped(e: &Escaped, signal: i32) {
    if e.leads_group() {
        let _ = process::signal_group(e.pgid, signal);
    } else if process::is_alive(e.id) {
        if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(e.id.pid), sig);
        }
    }
}

/// Something of the escapee is still alive.
pub fn escaped_alive(e: &Escaped) -> bool {
    if e.leads_group() {
        process::group_alive(e.pgid)
    } else {
        process::is_alive(e.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(pid: i32, start_time: u64) -> LiveRun {
        LiveRun {
            service: "kb".into(),
            pid,
            pgid: pid,
            start_time,
            started_at: "2026-01-01T00:00:00Z".into(),
            argv: vec!["node".into()],
            stop_signal: libc::SIGTERM,
            grace_ms: 100,
        }
    }

    #[test]
    fn empty_group_is_gone() {
        assert_eq!(identify(&live(100, 5), Some(5), vec![]), Found::Gone);
    }

    #[test]
    fn leader_with_the_recorded_start_time_is_ours() {
        assert_eq!(
            identify(&live(100, 5), Some(5), vec![100, 101]),
            Found::Ours(vec![100, 101])
        );
    }

    #[test]
    fn pid_reused_by_another_program_is_untouched() {
        assert_eq!(identify(&live(100, 5), Some(9), vec![100]), Found::Reused);
    }

    #[test]
    fn group_outliving_its_leader_is_still_ours() {
        assert_eq!(
            identify(&live(100, 5), None, vec![101, 102]),
            Found::Ours(vec![101, 102])
        );
    }

    fn p(pid: i32, ppid: i32, pgid: i32) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            pgid,
            uid: 500,
            start_time: 7,
            state: 'S',
            comm: "x".into(),
            argv: vec![],
            exe: None,
        }
    }

    fn escapees(procs: &[ProcInfo], marked: &[i32]) -> Vec<(String, i32)> {
        let runs = [
            RunRef {
                service: "a".into(),
                leader: 100,
                pgid: 100,
            },
            RunRef {
                service: "b".into(),
                leader: 200,
                pgid: 200,
            },
        ];
        let known: BTreeSet<i32> = [100, 200].into();
        let marker_of = |p: &ProcInfo| {
            if marked.contains(&p.pid) {
                Marker::Paios {
                    instance: "/s".into(),
                    service: "b".into(),
                }
            } else {
                Marker::None
            }
        };
        find_escapees(&runs, &known, procs, 10, &marker_of, "/s")
            .into_iter()
            .map(|e| (e.service, e.id.pid))
            .collect()
    }

    #[test]
    fn setsid_child_of_the_leader_is_an_escapee() {
        let procs = [
            p(10, 1, 10),
            p(100, 10, 100),
            p(101, 100, 101),
            p(102, 101, 101),
        ];
        // 102 is in 101's group: covered by 101, not listed apart.
        assert_eq!(escapees(&procs, &[]), vec![("a".into(), 101)]);
    }

    #[test]
    fn grandchild_escapes_through_a_member_whose_leader_died() {
        let procs = [p(10, 1, 10), p(150, 10, 100), p(151, 150, 151)];
        assert_eq!(escapees(&procs, &[]), vec![("a".into(), 151)]);
    }

    #[test]
    fn orphan_of_paiosd_is_attributed_only_by_its_marker() {
        let procs = [
            p(10, 1, 10),
            p(300, 10, 300),
            p(301, 10, 301),
            p(200, 10, 200),
        ];
        // 301 is marked for b; 300 (an alert command, say) is not and is left alone.
        assert_eq!(escapees(&procs, &[301]), vec![("b".into(), 301)]);
    }

    #[test]
    fn unrelated_processes_and_known_groups_are_not_escapees() {
        let mut zombie = p(103, 100, 103);
        zombie.state = 'Z';
        let procs = [
            p(10, 1, 10),
            p(100, 10, 100),
            p(101, 100, 100),
            p(500, 1, 500),
            p(501, 500, 501),
            zombie,
            p(11, 10, 10),
        ];
        assert!(escapees(&procs, &[]).is_empty());
    }
}
