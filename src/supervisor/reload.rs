//! Reload: re-read the config and apply it whole, or not at all. A removed service is
//! stopped and forgotten, an added one started, a changed one restarted with its new
//! config once its group is empty; an unchanged one is left alone.

use std::collections::BTreeMap;

use super::actor::Supervisor;
use super::model::{Hold, Service, StopReason, Want};
use crate::config::{self, ServiceConfig};
use crate::control::protocol::ReloadReport;

impl Supervisor {
    /// Re-reads the config and applies it whole, or not at all.
    pub(super) fn reload(&mut self) -> Result<ReloadReport, String> {
        let config = config::load(&self.dirs.config);
        if !config.errors.is_empty() {
            let text = config
                .errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            self.record_event("paiosd", "daemon", "reload_rejected", Some(text.clone()));
            return Err(text);
        }
        let mut report = ReloadReport::default();
        self.global = config.global;
        self.set_alerter();
        self.config_errors.clear();
        let new: BTreeMap<String, ServiceConfig> = config.services;
        let removed: Vec<String> = self
            .services
            .iter()
            .filter(|(n, s)| s.client.is_none() && !new.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in removed {
            self.remove_service(&name);
            report.removed.push(name);
        }
        let mut to_start = Vec::new();
        for (name, cfg) in new {
            if self.apply_service(&name, cfg, &mut report) {
                to_start.push(name);
            }
        }
        for name in to_start {
            self.try_start(&name);
        }
        // A per-client server disabled or changed by the reload ends its clients' runs
        // too: a changed one's clients get runs of the new config when they come back.
        let unwanted: Vec<String> = self
            .services
            .iter()
            .filter(|(n, s)| s.is_client_parent() && (!s.wanted() || report.restarted.contains(n)))
            .map(|(n, _)| n.clone())
            .collect();
        for name in unwanted {
            self.end_clients_of(&name);
        }
        self.arm_tasks();
        self.sync_mcp_sockets();
        let detail = format!(
            "added [{}] removed [{}] restarted [{}]",
            report.added.join(", "),
            report.removed.join(", "),
            report.restarted.join(", ")
        );
        tracing::info!("reload applied: {detail}");
        self.record_event("paiosd", "daemon", "reload_applied", Some(detail));
        Ok(report)
    }

    /// A reload removed `name`: stopped, and forgotten once its group is empty.
    fn remove_service(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        svc.want = Want::Remove;
        svc.rest(Hold::None);
        self.end_clients_of(name);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.run.is_some() {
            self.begin_stop(name, StopReason::Removed);
        } else {
            self.services.remove(name);
        }
    }

    /// Applies `cfg` to the service `name`; true when it is to be started now.
    fn apply_service(&mut self, name: &str, cfg: ServiceConfig, report: &mut ReloadReport) -> bool {
        let enabled = cfg.enabled && cfg.task.is_none();
        let storm = self.global.storm;
        let Some(svc) = self.services.get_mut(name) else {
            let mut svc = Service::new(cfg, storm);
            svc.want = if enabled { Want::Up } else { Want::Down };
            self.services.insert(name.to_string(), svc);
            report.added.push(name.to_string());
            return enabled;
        };
        if svc.want == Want::Remove {
            // Removed by an earlier reload, its run still stopping, and back now: keep it.
            svc.replacement = Some(cfg);
            svc.want = Want::Restart;
            report.restarted.push(name.to_string());
            return false;
        }
        if svc.cfg == cfg {
            report.unchanged.push(name.to_string());
            return false;
        }
        report.restarted.push(name.to_string());
        svc.storm = crate::policy::StormDetector::new(storm);
        if svc.run.is_some() {
            svc.replacement = Some(cfg);
            svc.want = if enabled { Want::Restart } else { Want::Down };
            self.begin_stop(name, StopReason::Restart);
            return false;
        }
        svc.tracker = crate::policy::RestartTracker::new(cfg.restart);
        svc.clock = None;
        svc.cfg = cfg;
        svc.want = if enabled { Want::Up } else { Want::Down };
        svc.rest(Hold::None);
        enabled
    }
}
