//! The actor's state and its one entry point, [`Supervisor::handle`]: an event comes
//! in (children ended, a timer is due, a control request, a probe result, a shutdown or
//! a reload asked for), the clocks are read once, the handler updates the services and
//! performs effects through the [`Os`] seam and the `state`, `ledger` and `logs`
//! modules, then waiting operations are answered. The run lifecycle is in
//! `lifecycle.rs`, control operations in `ops.rs`, tasks in `tasks.rs`, probes and
//! samples in `watch.rs`, escapes in `escape.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::gates::{RssCache, SampleClock, ScanGate};
use super::model::{Hold, Op, Service, StopReason, Want};
use super::order;
use super::os::{Now, Os};
use super::timers::{Timer, Timers};
use crate::alert::{Alert, AlertSettings, Alerter, Sent};
use crate::config::{self, Config};
use crate::control::protocol::{ErrorBody, ErrorCode, Response};
use crate::control::ControlMsg;
use crate::dirs::Dirs;
use crate::health::ProbeEvent;
use crate::ledger::{EventRecord, Ledger, Record};
use crate::logs::Logs;
use crate::mcp::serve::McpMsg;
use crate::process::ExitStatus;
use crate::state::StateDb;

/// How long a crash record waits for the run's last stderr lines.
pub(super) const TAIL_WAIT: Duration = Duration::from_millis(250);

/// What the actor reacts to.
#[derive(Debug)]
pub enum Event {
    /// SIGCHLD: children may have ended.
    Children,
    /// The earliest timer may be due.
    Timers,
    Control(ControlMsg),
    Probe(ProbeEvent),
    /// A bridge on an MCP socket.
    Mcp(McpMsg),
    /// Stop every service, then end.
    Shutdown(&'static str),
    /// Re-read the config (SIGHUP).
    Reload,
}

/// The actor's state.
pub struct Supervisor {
    pub(super) dirs: Dirs,
    pub(super) global: config::Global,
    pub(super) services: BTreeMap<String, Service>,
    /// Config errors of the files loaded last (reported by status and check).
    pub(super) config_errors: Vec<config::ConfigError>,
    pub(super) timers: Timers,
    pub(super) ledger: Ledger,
    pub(super) logs: Logs,
    pub(super) state_db: StateDb,
    /// Processes and clocks.
    pub(super) os: Box<dyn Os>,
    /// The clocks as read when the event being handled came in.
    pub(super) now: Now,
    /// The grid that idle tasks' clock re-reads are rounded to, so they wake together.
    pub(super) wake_grid: Instant,
    /// The alert runner, with the argv it was made for.
    pub(super) alerter: Option<(Vec<String>, Alerter)>,
    /// Leader PID → service name, for the reaper.
    pub(super) leaders: BTreeMap<i32, String>,
    /// Run records still waiting (off the actor) for their stderr tail; awaited before
    /// the ledger closes at shutdown, or the runs a shutdown ended would go unrecorded.
    pub(super) tails: Vec<tokio::task::JoinHandle<()>>,
    /// How often the process table is scanned for escapees.
    pub(super) escape_scans: ScanGate,
    pub(super) next_run_id: u64,
    pub(super) ops: Vec<Op>,
    pub(super) shutting_down: bool,
    /// Where probers send their results; the receiver is the event loop's.
    pub(super) probe_tx: mpsc::UnboundedSender<ProbeEvent>,
    /// When the sampler next wakes (one wake-up for every run due).
    pub(super) sample_clock: SampleClock,
    /// The last scan of group memory, reused by `status` for a second.
    pub(super) rss_cache: RssCache,
    /// Why the state database could not be trusted at start-up (its records are lost).
    pub(super) state_problem: Option<String>,
    /// The MCP sockets, their clients, and where their connections write.
    pub(super) mcp: super::mcp::McpState,
}

/// What the actor is made from; `run` opens the real ones, tests temporary ones.
pub struct Parts {
    pub dirs: Dirs,
    pub config: Config,
    pub ledger: Ledger,
    pub logs: Logs,
    pub state_db: StateDb,
    pub os: Box<dyn Os>,
    pub probe_tx: mpsc::UnboundedSender<ProbeEvent>,
}

impl Supervisor {
    pub fn new(parts: Parts) -> Supervisor {
        let Parts {
            dirs,
            config,
            ledger,
            logs,
            state_db,
            os,
            probe_tx,
        } = parts;
        let services = config
            .services
            .into_values()
            .map(|cfg| (cfg.name.clone(), Service::new(cfg, config.global.storm)))
            .collect();
        let now = Now::read(&*os);
        Supervisor {
            dirs,
            global: config.global,
            services,
            config_errors: config.errors,
            timers: Timers::default(),
            ledger,
            logs,
            state_db,
            os,
            now,
            wake_grid: now.mono,
            alerter: None,
            leaders: BTreeMap::new(),
            tails: Vec::new(),
            escape_scans: ScanGate::default(),
            next_run_id: 1,
            ops: Vec::new(),
            shutting_down: false,
            probe_tx,
            sample_clock: SampleClock::default(),
            rss_cache: RssCache::default(),
            state_problem: None,
            mcp: super::mcp::McpState::default(),
        }
    }

    /// Before anything starts: the alert runner, the start record, and the sweep of
    /// what a previous paiosd left running.
    pub fn prepare(&mut self) {
        self.reread_clock();
        self.set_alerter();
        self.record_event(
            "paiosd",
            "daemon",
            "daemon_start",
            Some(format!(
                "version {} pid {} config {}",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                self.dirs.config.display()
            )),
        );
        if let Some(problem) = self.state_problem.clone() {
            self.record_event("paiosd", "daemon", "state_unreadable", Some(problem));
        }
        self.sweep_leftovers();
        if self.state_problem.is_some() {
            self.sweep_strays_fallback();
        }
    }

    /// Once [`Supervisor::done`]: collects the last zombies, waits (briefly) for the
    /// last run records and records the clean stop.
    pub async fn finish(&mut self) {
        self.now = Now::read(&*self.os);
        // Members that died since the last poll are paiosd's zombies: collect them too.
        self.reap_all();
        // Each waits at most TAIL_WAIT for its stderr tail; the margin covers a busy runtime.
        let tails_deadline = tokio::time::Instant::now() + TAIL_WAIT * 2;
        for tail in std::mem::take(&mut self.tails) {
            let _ = tokio::time::timeout_at(tails_deadline, tail).await;
        }
        self.end_all_clients();
        if let Err(e) = self.state_db.mark_clean_stop() {
            tracing::error!("cannot record the clean stop in the state database: {e}");
        }
        self.now = Now::read(&*self.os);
        self.record_event("paiosd", "daemon", "daemon_stop", Some("clean stop".into()));
    }

    /// Closes the alert runner, the ledger and the logs.
    pub fn close(&mut self) {
        if let Some((_, alerter)) = self.alerter.take() {
            alerter.close(Duration::from_secs(2));
        }
        self.ledger.close(Duration::from_secs(3));
        self.logs.close();
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Handles one event: the clocks are read once, here, for everything it causes.
    pub fn handle(&mut self, event: Event) {
        self.now = Now::read(&*self.os);
        match event {
            Event::Children => self.reap_all(),
            Event::Timers => self.on_timers(),
            Event::Control(msg) => self.on_control(msg),
            Event::Probe(ev) => self.on_probe(ev),
            Event::Mcp(msg) => self.on_mcp(msg),
            Event::Shutdown(why) => self.begin_shutdown(why),
            Event::Reload => {
                if let Err(errors) = self.reload() {
                    tracing::error!("reload (SIGHUP) rejected, nothing changed:\n{errors}");
                }
            }
        }
        if self.shutting_down {
            self.advance_shutdown();
        }
        self.settle_ops();
    }

    /// The earliest timer's deadline: when to deliver [`Event::Timers`].
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Shutting down, and every group is empty.
    pub fn done(&self) -> bool {
        self.shutting_down && self.services.values().all(|s| s.run.is_none())
    }

    /// Re-reads the clocks in the middle of an event (after a deliberate sleep).
    pub(super) fn reread_clock(&mut self) {
        self.now = Now::read(&*self.os);
    }

    fn on_timers(&mut self) {
        let now = self.now.mono;
        for timer in self.timers.due(now) {
            match timer {
                Timer::Start(name) => self.on_backoff_over(&name),
                Timer::Grace(name, id) => self.on_grace_over(&name, id),
                Timer::StdinGrace(name, id) => self.on_stdin_grace_over(&name, id),
                Timer::ServerDone(name, id) => self.on_server_done(&name, id),
                Timer::Poll(name, id) => self.on_poll(&name, id),
                Timer::Cooldown(name) => self.on_cooldown_over(&name),
                Timer::Schedule(name) => self.on_schedule(&name),
                Timer::Timeout(name, id) => self.on_timeout(&name, id),
                Timer::Sample => self.on_sample_tick(now),
                Timer::Wake => self.scan_escapes(false),
            }
        }
    }

    fn on_backoff_over(&mut self, name: &str) {
        let now = self.now.mono;
        let Some(svc) = self.services.get(name) else {
            return;
        };
        let due = svc.wanted() && matches!(svc.hold, Hold::Backoff { until, .. } if until <= now);
        if !due {
            return;
        }
        if svc.is_task() {
            self.start_task_run(name);
        } else {
            self.try_start(name);
        }
    }

    fn on_cooldown_over(&mut self, name: &str) {
        let now = self.now.mono;
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if matches!(svc.hold, Hold::Failed { retry_at, .. } if retry_at <= now) && svc.wanted() {
            svc.tracker.clear();
            svc.next_attempt = 0;
            svc.rest(Hold::None);
            tracing::info!(service = %name, "cooldown over; starting again");
            self.record_event(name, "service", "cooldown_over", None);
            self.try_start(name);
        }
    }

    // ----- shutdown -----------------------------------------------------------------

    pub(super) fn begin_shutdown(&mut self, why: &str) {
        if !self.shutting_down {
            tracing::info!("{why}: stopping every service");
        }
        self.shutting_down = true;
        self.close_mcp_sockets();
        for svc in self.services.values_mut() {
            if svc.want != Want::Remove {
                svc.want = Want::Down;
            }
            svc.rest(Hold::None);
        }
        self.advance_shutdown();
    }

    /// Stops, in parallel, every service that nothing still running comes `after`.
    fn advance_shutdown(&mut self) {
        for name in order::stoppable(&self.services) {
            self.begin_stop(&name, StopReason::Shutdown);
        }
    }

    // ----- records ------------------------------------------------------------------

    pub(super) fn record_event(
        &self,
        service: &str,
        kind: &str,
        event: &str,
        detail: Option<String>,
    ) {
        self.ledger.record(Record::Event(EventRecord::new(
            service,
            kind,
            event,
            detail,
            self.now.wall,
        )));
    }

    /// Records an event that people should hear about and runs the alert command.
    pub(super) fn alert(&self, service: &str, kind: &str, event: &str, detail: String) {
        self.record_event(service, kind, event, Some(detail.clone()));
        if let Some((_, alerter)) = &self.alerter {
            let sent = alerter.send(Alert {
                event: event.to_string(),
                service: service.to_string(),
                kind: kind.to_string(),
                detail,
                at: self.now.wall,
            });
            if sent == Sent::Dropped {
                tracing::warn!(service, event, "alert not run: {sent:?}");
            }
        }
    }

    /// (Re)creates the alert runner when `alert_command` is set or changed.
    pub(super) fn set_alerter(&mut self) {
        let wanted = self.global.alert_command.clone();
        if self.alerter.as_ref().map(|(argv, _)| Some(argv)) == Some(wanted.as_ref()) {
            return;
        }
        if let Some((_, old)) = self.alerter.take() {
            old.close(Duration::from_secs(1));
        }
        if let Some(argv) = wanted {
            match Alerter::new(argv.clone(), self.ledger.clone(), AlertSettings::default()) {
                Ok(alerter) => self.alerter = Some((argv, alerter)),
                Err(e) => tracing::error!("alert_command cannot be used: {e}"),
            }
        }
    }
}

pub(super) fn kind_of(svc: &Service) -> &'static str {
    if svc.is_task() {
        "task"
    } else {
        "service"
    }
}

pub(super) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn describe(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exit code {c}"),
        ExitStatus::Signal(s) => format!("killed by {}", crate::process::signal_name(s)),
    }
}

pub(super) fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorBody {
        code,
        message: message.into(),
    })
}
