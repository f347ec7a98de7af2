//! What the actor does once before its event loop: end what a previous paiosd left
//! running (from its records in `state.sqlite`, or by stray detection when those are
//! lost), then start every enabled service in `after` order and arm every task.

use std::collections::BTreeMap;

use super::actor::Supervisor;
use super::model::Want;
use super::order;
use super::os::Now;
use super::sweep;
use crate::config::ServiceConfig;

impl Supervisor {
    /// Starts every enabled service (tasks wait for their schedule).
    pub fn boot(&mut self) {
        self.now = Now::read(&*self.os);
        let names: Vec<String> = order::start_order(&self.services);
        for name in names {
            let Some(svc) = self.services.get_mut(&name) else {
                continue;
            };
            if svc.cfg.enabled && !svc.is_task() {
                svc.want = Want::Up;
                self.try_start(&name);
            }
        }
        self.arm_tasks();
        self.sync_mcp_sockets();
    }

    /// Ends what a previous paiosd left running, before anything starts (promise 3).
    pub(super) fn sweep_leftovers(&mut self) {
        let previous = self
            .state_db
            .mark_running(std::process::id(), self.now.wall);
        let runs = match self.state_db.live_runs() {
            Ok(runs) => runs,
            Err(e) => {
                tracing::error!("cannot read live runs from the state database: {e}");
                self.record_event("paiosd", "daemon", "sweep_unavailable", Some(e.to_string()));
                return;
            }
        };
        match previous {
            Ok(Some((pid, since))) => {
                let detail = format!(
                    "the previous paiosd (pid {pid}, started {since}) ended without a clean stop, with {} runs recorded live",
                    runs.len()
                );
                tracing::warn!("{detail}");
                self.record_event("paiosd", "daemon", "unclean_end", Some(detail));
            }
            Ok(None) => {}
            Err(e) => tracing::error!("cannot record paiosd's start in the state database: {e}"),
        }
        if runs.is_empty() {
            return;
        }
        for s in sweep::sweep(runs) {
            let (event, detail) = describe_swept(&s);
            if let Err(e) = self.state_db.remove_run(&s.run.service, s.run.pgid) {
                tracing::error!("could not clear a swept run from the state database: {e}");
            }
            // The run's own row was never written (its paiosd died first): this event is
            // the ledger's only word on when it started.
            let detail = format!(
                "{detail}; the run of pid {} started {}",
                s.run.pid, s.run.started_at
            );
            // A client's run (`NAME#CLIENT`) is recorded under its server's name.
            let service = s.run.service.split('#').next().unwrap_or(&s.run.service);
            self.record_event(service, "service", event, Some(detail));
        }
    }

    /// The records of the previous paiosd are lost: end what stray detection
    /// (`process::strays`) recognises as strays of the configured services instead, before anything starts.
    pub(super) fn sweep_strays_fallback(&mut self) {
        let detail = "could not sweep from records (the state database was missing or unreadable); falling back to stray detection for the configured services";
        tracing::error!("{detail}");
        self.record_event("paiosd", "daemon", "sweep_fallback", Some(detail.into()));
        let services: BTreeMap<String, ServiceConfig> = self
            .services
            .iter()
            .map(|(n, s)| (n.clone(), s.cfg.clone()))
            .collect();
        for ended in sweep::sweep_strays(&services, &self.dirs.state) {
            let detail = crate::process::strays::describe_ended(&ended);
            tracing::warn!(service = %ended.stray.service, "ended a stray: {detail}");
            self.record_event(
                &ended.stray.service,
                "service",
                "stray_killed",
                Some(detail),
            );
        }
    }
}

/// The ledger event and detail for one group the sweep found.
fn describe_swept(s: &sweep::Swept) -> (&'static str, String) {
    match &s.found {
        sweep::Found::Gone => (
            "sweep_gone",
            format!("pgid {}: no process left", s.run.pgid),
        ),
        sweep::Found::Reused => (
            "sweep_reused",
            format!(
                "pgid {}: the number now belongs to another program; left alone",
                s.run.pgid
            ),
        ),
        sweep::Found::Ours(members) => (
            "swept",
            format!(
                "pgid {}: ended {} processes {:?}{}{}",
                s.run.pgid,
                members.len(),
                members,
                if s.killed {
                    " (SIGKILL after grace)"
                } else {
                    ""
                },
                if s.survivors.is_empty() {
                    String::new()
                } else {
                    format!("; SURVIVORS {:?}", s.survivors)
                }
            ),
        ),
    }
}
