//! The start-up sweep (promise 3): before anything starts, end what a previous paiosd
//! left running. Every group recorded in `state.sqlite` is checked by identity — the
//! leader's PID with its start time, so a PID or PGID handed to another program since is
//! never touched — and ended with the stop sequence it was recorded with.
//!
//! When the records are gone (`state.sqlite` deleted or corrupt between a kill and the
//! next start), [`sweep_strays`] falls back to `process::strays` for the configured
//! services.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::config::ServiceConfig;
use crate::process::stop::{self, Stop, Target};
use crate::process::strays::{self, Ended, Supervision};
use crate::process::{self, Identity};
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
}
