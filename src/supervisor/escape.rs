//! Escapes (promise 3): a process that left its run's group with `setsid` is still the
//! run's. The actor scans for escapees soon after each start, whenever a stop begins
//! and whenever a leader exits (see `sweep::find_escapees` for how they are found),
//! records each one in the ledger (`escape`) and in `state.sqlite` as a live group of
//! the service, so a killed paiosd's successor sweeps it too, and ends it with the
//! run's stop sequence: the run is over only when its group and its escapees are gone.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::sweep::{self, Escaped, RunRef};
use super::Supervisor;
use crate::process;
use crate::state::{LiveRun, StateDb};

/// Scans caused by starts are at most this frequent: one scan reads the whole process table.
const MIN_SCAN_GAP: Duration = Duration::from_millis(100);

/// A stop or a leader exit reuses a scan this recent: stopping 200 services at once, or
/// reaping a burst of exits, then costs one scan rather than one per service.
const FRESH_SCAN: Duration = Duration::from_millis(20);

impl Supervisor {
    /// Finds processes that left their run's group and adopts them into the run.
    /// `urgent` (a stop or a leader exit, which must not miss one) scans unless the last
    /// scan is only [`FRESH_SCAN`] old; otherwise at most every [`MIN_SCAN_GAP`].
    pub(super) fn scan_escapes(&mut self, urgent: bool) {
        let now = Instant::now();
        let gap = if urgent { FRESH_SCAN } else { MIN_SCAN_GAP };
        if self.last_escape_scan.is_some_and(|at| now - at < gap) {
            return;
        }
        self.last_escape_scan = Some(now);
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
        let instance = process::marker::instance_id(&self.dirs.state);
        let found = sweep::find_escapees(
            &runs,
            &known,
            &process::list_processes(),
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
                started_at: Utc::now().to_rfc3339(),
                argv: process::proc_info(e.id.pid)
                    .map(|p| p.argv)
                    .unwrap_or_default(),
                stop_signal: svc.cfg.stop.signal,
                grace_ms: super::duration_ms(svc.cfg.stop.grace),
            };
            if let Some(db) = &self.state_db {
                if let Err(e) = db.record_run(&live) {
                    tracing::error!("could not record an escaped group: {e}");
                }
            }
        }
        // A run already stopping sends its signals to the newcomer too.
        if run.stopping.is_some() {
            sweep::signal_escaped(&e, libc::SIGCONT);
            sweep::signal_escaped(&e, svc.cfg.stop.signal);
        }
        let service = e.service.clone();
        run.escapees.push(e);
        self.record_event(&service, "service", "escape", Some(detail));
    }
}

/// Forgets the state records of a finished run's escaped groups.
pub(super) fn forget_escapees(db: Option<&StateDb>, name: &str, escapees: &[Escaped]) {
    let Some(db) = db else { return };
    for e in escapees.iter().filter(|e| e.leads_group()) {
        if let Err(err) = db.remove_run(name, e.pgid) {
            tracing::error!("could not clear an escaped group from the state database: {err}");
        }
    }
}
