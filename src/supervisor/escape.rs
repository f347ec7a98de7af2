//! Escapes (promise 3): a process that left its run's group with `setsid` is still the
//! run's. The actor scans for escapees soon after each start, whenever a stop begins
//! and whenever a leader exits, records each one in the ledger (`escape`) and in
//! `state.sqlite` as a live group of the service, so a killed paiosd's successor sweeps
//! it too, and ends it with the run's stop sequence: the run is over only when its
//! group and its escapees are gone.
//!
//! An escapee is found by ancestry ([`find_escapees`]): while the run's leader lives it
//! descends from a member of the group; once the leader is gone, paiosd (a child
//! subreaper on Linux) is its parent, and the marker in its environment names the
//! service. macOS has no subreaper and no environment reading here, so there an
//! escapee is found only while an ancestor in the group still lives; once found, it
//! is recorded in `state.sqlite` like a run, so the next start sweeps it on both
//! systems.

use std::collections::{BTreeSet, HashMap};

use super::actor::{duration_ms, Supervisor};
use super::model::Escaped;
use super::os::Os;
use crate::process::marker::{self, Marker};
use crate::process::{self, ProcInfo};
use crate::state::{LiveRun, StateDb};

impl Supervisor {
    /// Finds processes that left their run's group and adopts them into the run, as
    /// often as the scan gate allows (`urgent`: a stop or a leader exit).
    pub(super) fn scan_escapes(&mut self, urgent: bool) {
        if !self.escape_scans.open(self.now.mono, urgent) {
            return;
        }
        let mut runs = Vec::new();
        let mut known = BTreeSet::new();
        for (name, svc) in &self.services {
            if let Some(run) = &svc.run {
                runs.push(RunRef {
                    service: name.clone(),
                    leader: run.leader.pid,
                    pgid: run.pgid,
                });
                known.insert(run.pgid);
                known.extend(run.escapees.iter().map(|e| e.pgid));
            }
        }
        if runs.is_empty() {
            return;
        }
        let instance = marker::instance_id(&self.dirs.state);
        let found = find_escapees(
            &runs,
            &known,
            &self.os.processes(),
            std::process::id() as i32,
            &process::marker::marker,
            &instance,
        );
        for e in found {
            self.adopt_escapee(e);
        }
    }

    fn adopt_escapee(&mut self, e: Escaped) {
        let Some(svc) = self.services.get_mut(&e.service) else {
            return;
        };
        let Some(run) = svc.run.as_mut() else { return };
        if run.escapees.iter().any(|x| x.id == e.id) {
            return;
        }
        let detail = format!(
            "PID {} left the run's group {} (now in group {}); it is ended with the run",
            e.id.pid, run.pgid, e.pgid
        );
        tracing::warn!(service = %e.service, "escape: {detail}");
        if e.leads_group() {
            let live = LiveRun {
                service: e.service.clone(),
                pid: e.id.pid,
                pgid: e.pgid,
                start_time: e.id.start_time,
                started_at: self.now.wall.to_rfc3339(),
                argv: process::proc_info(e.id.pid)
                    .map(|p| p.argv)
                    .unwrap_or_default(),
                stop_signal: svc.cfg.stop.signal,
                grace_ms: duration_ms(svc.cfg.stop.grace),
            };
            if let Err(e) = self.state_db.record_run(&live) {
                tracing::error!("could not record an escaped group: {e}");
            }
        }
        // A run already stopping sends its signals to the newcomer too.
        if run.stopping.is_some() {
            signal_escaped(&mut *self.os, &e, libc::SIGCONT);
            signal_escaped(&mut *self.os, &e, svc.cfg.stop.signal);
        }
        let service = e.service.clone();
        run.escapees.push(e);
        self.record_event(&service, "service", "escape", Some(detail));
    }
}

/// Forgets the state records of a finished run's escaped groups.
pub(super) fn forget_escapees(db: &StateDb, name: &str, escapees: &[Escaped]) {
    for e in escapees.iter().filter(|e| e.leads_group()) {
        if let Err(err) = db.remove_run(name, e.pgid) {
            tracing::error!("could not clear an escaped group from the state database: {err}");
        }
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
    let tree = Ancestry {
        by_pid: procs.iter().map(|p| (p.pid, p)).collect(),
        run_of_group: runs.iter().map(|r| (r.pgid, r)).collect(),
        run_of_leader: runs.iter().map(|r| (r.leader, r)).collect(),
        runs,
        paiosd,
        marker_of,
        instance,
    };
    let own_group = tree.by_pid.get(&paiosd).map(|p| p.pgid);
    let mut found: Vec<Escaped> = Vec::new();
    for p in procs {
        if !p.is_live()
            || p.pid == paiosd
            || known.contains(&p.pgid)
            || Some(p.pgid) == own_group
            || tree.run_of_leader.contains_key(&p.pid)
        {
            continue;
        }
        let owner = tree.owner_of(p);
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

/// What walking up from a process to the run it came from needs.
struct Ancestry<'a> {
    by_pid: HashMap<i32, &'a ProcInfo>,
    run_of_group: HashMap<i32, &'a RunRef>,
    run_of_leader: HashMap<i32, &'a RunRef>,
    runs: &'a [RunRef],
    paiosd: i32,
    marker_of: &'a dyn Fn(&ProcInfo) -> Marker,
    instance: &'a str,
}

impl<'a> Ancestry<'a> {
    /// The run `p` descends from: through a member of its group or its leader, or, once
    /// re-parented to paiosd, by the marker in its environment.
    fn owner_of(&self, p: &ProcInfo) -> Option<&'a RunRef> {
        let mut at = p.ppid;
        for _ in 0..64 {
            if at <= 1 {
                return None;
            }
            if at == self.paiosd {
                // Re-parented to paiosd: only the marker can say whose it was.
                return match (self.marker_of)(p) {
                    Marker::Paios { instance, service } if instance == self.instance => {
                        self.runs.iter().find(|r| r.service == service)
                    }
                    _ => None,
                };
            }
            if let Some(r) = self.run_of_leader.get(&at) {
                return Some(r);
            }
            let parent = self.by_pid.get(&at)?;
            if let Some(r) = self.run_of_group.get(&parent.pgid) {
                return Some(r);
            }
            at = parent.ppid;
        }
        None
    }
}

/// Sends `signal` to an escapee: its group when it led one (the group cannot be
/// reused while members live), else the process after an identity check.
pub fn signal_escaped(os: &mut dyn Os, e: &Escaped, signal: i32) {
    if e.leads_group() {
        let _ = os.signal_group(e.pgid, signal);
    } else if os.is_alive(e.id) {
        let _ = os.signal_process(e.id.pid, signal);
    }
}

/// Something of the escapee is still alive.
pub fn escaped_alive(os: &dyn Os, e: &Escaped) -> bool {
    if e.leads_group() {
        os.group_alive(e.pgid)
    } else {
        os.is_alive(e.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
