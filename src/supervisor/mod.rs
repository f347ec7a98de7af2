//! The supervisor actor: the one owner of every service's state.
//!
//! Events come in (a child exited, a timer fired, a control request, a signal to
//! paiosd); the actor updates its state and performs effects through the `process`,
//! `state`, `ledger` and `logs` modules, none of which it ever waits on for long. No
//! other task mutates service state: the control server gets snapshots and answers
//! through `ControlMsg`. Timers are deadlines in one ordered set (`timers.rs`), so
//! nothing polls on a fixed tick.

mod escape;
mod ops;
mod order;
pub mod service;
pub mod sweep;
mod tasks;
pub mod timers;
mod watch;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alert::{Alert, AlertSettings, Alerter, Sent};
use crate::config::{self, Config, ServiceConfig};
use crate::control::protocol::{ErrorBody, ErrorCode, Reply, Request, Response};
use crate::control::{self, ControlMsg};
use crate::dirs::Dirs;
use crate::ledger::{EventRecord, Ledger, Record, RunRecord};
use crate::logs::Logs;
use crate::policy::Decision;
use crate::process::{self, ExitStatus, SpawnSpec};
use crate::state::{LiveRun, StateDb};

use ops::Op;
use service::{Hold, LastExit, Run, Service, StopReason, Stopping};
use timers::{Timer, Timers};

/// How long the first poll of an emptying group waits; each later poll doubles it up to
/// [`POLL_MAX`]. Short at first because most groups empty within a millisecond of the
/// signal, capped so that a group that takes its full grace costs little.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(20);

/// How long a new run must stay up before `start`/`restart --wait` report it running
/// (without a health probe): long enough that a command that fails at once is reported
/// as failed rather than as started.
pub const SETTLE: Duration = Duration::from_millis(200);

/// How long a crash record waits for the run's last stderr lines.
const TAIL_WAIT: Duration = Duration::from_millis(250);

/// Runs paiosd until SIGTERM, SIGINT or `paiosctl shutdown` has stopped every service.
///
/// The caller holds the instance lock for as long as this runs.
pub async fn run(dirs: Dirs) -> anyhow::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let config = config::load(&dirs.config);
    for error in &config.errors {
        tracing::error!("config: {error}");
    }

    // A state file missing where a previous paiosd has left its ledger means its records
    // were lost (deleted between a kill and this start): sweep by stray detection then.
    // Looked at before the ledger is opened, which creates its file.
    let state_missing =
        !dirs.state_db().exists() && crate::ledger::query::previous_paiosd_ran(&dirs.ledger_db());
    let ledger = Ledger::open(&dirs.ledger_db(), config.global.ledger);
    let logs = Logs::start(&dirs.logs);
    let (state_db, mut state_problem) = StateDb::open_or_recreate(&dirs.state_db());
    if state_missing && state_problem.is_none() {
        state_problem = Some(format!(
            "{} is missing although the ledger {} shows a previous paiosd ran here",
            dirs.state_db().display(),
            dirs.ledger_db().display()
        ));
    }
    let state_db = Some(state_db);
    if let Some(problem) = &state_problem {
        tracing::error!("state database: {problem}");
    }

    let mut sup = Supervisor::new(dirs.clone(), config, ledger, logs, state_db);
    sup.set_alerter();
    sup.record_event(
        "paiosd",
        "daemon",
        "daemon_start",
        Some(format!(
            "version {} pid {} config {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            dirs.config.display()
        )),
    );
    if let Some(problem) = &state_problem {
        sup.record_event(
            "paiosd",
            "daemon",
            "state_unreadable",
            Some(problem.clone()),
        );
    }
    sup.sweep_leftovers();
    if state_problem.is_some() {
        sup.sweep_strays_fallback();
    }

    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlMsg>(256);
    let mut probe_rx = sup.take_probe_rx();
    let cancel = CancellationToken::new();
    let listener = control::server::bind(&dirs.socket())?;
    let server = tokio::spawn(control::server::serve(listener, ctl_tx, cancel.clone()));

    sup.boot();
    loop {
        let deadline = sup.timers.next();
        tokio::select! {
            _ = sigchld.recv() => sup.reap_all(),
            _ = sigterm.recv() => sup.begin_shutdown("SIGTERM"),
            _ = sigint.recv() => sup.begin_shutdown("SIGINT"),
            _ = sighup.recv() => {
                if let Err(errors) = sup.reload() {
                    tracing::error!("reload (SIGHUP) rejected, nothing changed:\n{errors}");
                }
            }
            Some(msg) = ctl_rx.recv() => sup.on_control(msg),
            Some(ev) = probe_rx.recv() => sup.on_probe(ev),
            _ = sleep_until(deadline) => sup.on_timers(Instant::now()),
        }
        if sup.shutting_down {
            sup.advance_shutdown();
        }
        sup.settle_ops();
        if sup.shutting_down && sup.all_stopped() {
            break;
        }
    }

    // Members that died since the last poll are paiosd's zombies: collect them too.
    sup.reap_all();
    // Each waits at most TAIL_WAIT for its stderr tail; the margin covers a busy runtime.
    let tails_deadline = tokio::time::Instant::now() + TAIL_WAIT * 2;
    for tail in std::mem::take(&mut sup.tails) {
        let _ = tokio::time::timeout_at(tails_deadline, tail).await;
    }
    if let Some(db) = &sup.state_db {
        if let Err(e) = db.mark_clean_stop() {
            tracing::error!("cannot record the clean stop in the state database: {e}");
        }
    }
    sup.record_event("paiosd", "daemon", "daemon_stop", Some("clean stop".into()));
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    if let Some((_, alerter)) = sup.alerter.take() {
        alerter.close(Duration::from_secs(2));
    }
    sup.ledger.close(Duration::from_secs(3));
    sup.logs.close();
    tracing::info!("paiosd stopped; no service process is left");
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The actor's state.
pub struct Supervisor {
    dirs: Dirs,
    global: config::Global,
    services: BTreeMap<String, Service>,
    /// Config errors of the files loaded last (reported by status and check).
    config_errors: Vec<config::ConfigError>,
    timers: Timers,
    ledger: Ledger,
    logs: Logs,
    state_db: Option<StateDb>,
    /// The alert runner, with the argv it was made for.
    alerter: Option<(Vec<String>, Alerter)>,
    /// Leader PID → service name, for the reaper.
    leaders: BTreeMap<i32, String>,
    /// Run records still waiting (off the actor) for their stderr tail; awaited before
    /// the ledger closes at shutdown, or the runs a shutdown ended would go unrecorded.
    tails: Vec<tokio::task::JoinHandle<()>>,
    /// When the process table was last scanned for escapees.
    last_escape_scan: Option<Instant>,
    next_run_id: u64,
    ops: Vec<Op>,
    shutting_down: bool,
    /// Where probers send their results; the receiver is the event loop's.
    probe_tx: mpsc::UnboundedSender<crate::health::ProbeEvent>,
    probe_rx: Option<mpsc::UnboundedReceiver<crate::health::ProbeEvent>>,
    /// When the sampler next wakes (one wake-up for every run due).
    sample_tick: Option<Instant>,
    /// The last scan of group memory, reused by `status` for a second.
    rss_cache: Option<(Instant, std::collections::HashMap<i32, u64>)>,
}

impl Supervisor {
    fn new(
        dirs: Dirs,
        config: Config,
        ledger: Ledger,
        logs: Logs,
        state_db: Option<StateDb>,
    ) -> Supervisor {
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let services = config
            .services
            .into_values()
            .map(|cfg| (cfg.name.clone(), Service::new(cfg, config.global.storm)))
            .collect();
        Supervisor {
            dirs,
            global: config.global,
            services,
            config_errors: config.errors,
            timers: Timers::default(),
            ledger,
            logs,
            state_db,
            alerter: None,
            leaders: BTreeMap::new(),
            tails: Vec::new(),
            last_escape_scan: None,
            next_run_id: 1,
            ops: Vec::new(),
            shutting_down: false,
            probe_tx,
            probe_rx: Some(probe_rx),
            sample_tick: None,
            rss_cache: None,
        }
    }

    fn take_probe_rx(&mut self) -> mpsc::UnboundedReceiver<crate::health::ProbeEvent> {
        match self.probe_rx.take() {
            Some(rx) => rx,
            None => mpsc::unbounded_channel().1,
        }
    }

    /// Starts every enabled service (tasks wait for their schedule).
    fn boot(&mut self) {
        let names: Vec<String> = order::start_order(&self.services);
        for name in names {
            let Some(svc) = self.services.get_mut(&name) else {
                continue;
            };
            if svc.cfg.enabled && !svc.is_task() {
                svc.want_up = true;
                self.try_start(&name);
            }
        }
        self.arm_tasks();
    }

    /// Ends what a previous paiosd left running, before anything starts (promise 3).
    fn sweep_leftovers(&mut self) {
        let Some(db) = &self.state_db else {
            tracing::error!("no state database: cannot sweep what a previous paiosd left running from its records");
            self.record_event(
                "paiosd",
                "daemon",
                "sweep_unavailable",
                Some("state database unreadable".into()),
            );
            return;
        };
        let previous = db.mark_running(std::process::id(), Utc::now());
        let runs = match db.live_runs() {
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
            let (event, detail) = match &s.found {
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
            };
            if let Some(db) = &self.state_db {
                if let Err(e) = db.remove_run(&s.run.service, s.run.pgid) {
                    tracing::error!("could not clear a swept run from the state database: {e}");
                }
            }
            // The run's own row was never written (its paiosd died first): this event is
            // the ledger's only word on when it started.
            let detail = format!(
                "{detail}; the run of pid {} started {}",
                s.run.pid, s.run.started_at
            );
            self.record_event(&s.run.service, "service", event, Some(detail));
        }
    }

    /// The records of the previous paiosd are lost: end what `doctor` recognises as
    /// strays of the configured services instead, before anything starts.
    fn sweep_strays_fallback(&mut self) {
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

    // ----- starting -------------------------------------------------------------

    /// Starts `name` if it is wanted, has no run, and everything it comes `after` is up.
    fn try_start(&mut self, name: &str) {
        let Some(svc) = self.services.get(name) else {
            return;
        };
        if svc.run.is_some() || self.shutting_down {
            return;
        }
        let missing: Vec<String> = svc
            .cfg
            .after
            .iter()
            .filter(|dep| !self.services.get(*dep).is_some_and(Service::is_ready))
            .cloned()
            .collect();
        if !missing.is_empty() {
            if let Some(svc) = self.services.get_mut(name) {
                tracing::info!(service = name, "waiting for {}", missing.join(", "));
                svc.hold = Hold::Waiting(missing);
            }
            return;
        }
        self.spawn_run(name);
    }

    fn spawn_run(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let mut env = svc.cfg.env.clone();
        // The marker every process of the run inherits: how doctor and the fallback
        // sweep recognise it even after its leader is gone.
        env.extend(crate::process::marker::marker_env(&self.dirs.state, name));
        let spec = SpawnSpec {
            argv: svc.cfg.argv.clone(),
            cwd: svc.cfg.cwd.clone(),
            env,
        };
        let attempt = svc.next_attempt;
        let delay = svc.next_delay.take();
        svc.hold = Hold::None;
        let kind = kind_of(svc);
        let now = Instant::now();
        let now_wall = Utc::now();
        match process::spawn(&spec) {
            Ok(spawned) => {
                let id = self.next_run_id;
                self.next_run_id += 1;
                let live = LiveRun {
                    service: name.to_string(),
                    pid: spawned.leader.pid,
                    pgid: spawned.pgid,
                    start_time: spawned.leader.start_time,
                    started_at: now_wall.to_rfc3339(),
                    argv: spec.argv.clone(),
                    stop_signal: svc.cfg.stop.signal,
                    grace_ms: duration_ms(svc.cfg.stop.grace),
                };
                if let Some(db) = &self.state_db {
                    if let Err(e) = db.record_run(&live) {
                        tracing::error!(
                            service = name,
                            "could not record the live run in the state database: {e}"
                        );
                    }
                }
                self.leaders.insert(spawned.leader.pid, name.to_string());
                self.logs
                    .attach(name, id, svc.cfg.logs, spawned.stdout, spawned.stderr);
                tracing::info!(
                    service = name,
                    pid = spawned.leader.pid,
                    attempt,
                    "started {}",
                    spec.argv.join(" ")
                );
                svc.run = Some(Run {
                    id,
                    leader: spawned.leader,
                    pgid: spawned.pgid,
                    started: now,
                    started_wall: now_wall,
                    attempt,
                    delay,
                    leader_exit: None,
                    stopping: None,
                    polls: 0,
                    health: None,
                    watch: Default::default(),
                    hung_context: None,
                    escapees: Vec::new(),
                });
                self.timers.at(now + SETTLE, Timer::Wake);
                self.watch_run(name);
                if self.services.get(name).is_some_and(Service::is_ready) {
                    self.start_waiting_dependents(name);
                }
            }
            Err(e) => {
                tracing::error!(
                    service = name,
                    "could not start {}: {e}",
                    spec.argv.join(" ")
                );
                svc.runs_finished += 1;
                svc.last_exit = Some(LastExit {
                    status: None,
                    outcome: "spawn_failed",
                    at: now_wall,
                    pid: 0,
                });
                let record = RunRecord {
                    service: name.to_string(),
                    kind: kind.to_string(),
                    outcome: "spawn_failed".into(),
                    pid: None,
                    pgid: None,
                    leader_start_time: None,
                    started_at: now_wall.to_rfc3339(),
                    ended_at: now_wall.to_rfc3339(),
                    duration_ms: 0,
                    exit_code: None,
                    signal: None,
                    attempt,
                    delay_ms: delay.map(duration_ms),
                    context: Some(format!("{}: {e}", spec.argv.join(" "))),
                };
                self.ledger.record(Record::Run(record));
                self.after_run(name, now, Duration::ZERO, "spawn_failed", false);
            }
        }
    }

    /// Services waiting for `name` may be able to start now.
    fn start_waiting_dependents(&mut self, name: &str) {
        let waiting: Vec<String> = self
            .services
            .iter()
            .filter(
                |(_, s)| matches!(&s.hold, Hold::Waiting(deps) if deps.iter().any(|d| d == name)),
            )
            .map(|(n, _)| n.clone())
            .collect();
        for dependent in waiting {
            self.try_start(&dependent);
        }
    }

    // ----- exits and group emptying -----------------------------------------------

    /// Collects every ended child and moves the runs whose leader ended forward.
    fn reap_all(&mut self) {
        for (pid, status) in process::watch::reap_and_deliver() {
            let Some(name) = self.leaders.remove(&pid) else {
                // A grandchild re-parented to paiosd, reaped so it does not linger as a zombie.
                continue;
            };
            self.on_leader_exit(&name, status);
        }
    }

    fn on_leader_exit(&mut self, name: &str, status: ExitStatus) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = svc.run.as_mut() else { return };
        let now = Instant::now();
        run.leader_exit = Some((status, now, Utc::now()));
        tracing::info!(
            service = name,
            pid = run.leader.pid,
            "exited: {}",
            describe(status)
        );
        let pgid = run.pgid;
        self.scan_escapes(true);
        let Some(run) = self.services.get_mut(name).and_then(|s| s.run.as_mut()) else {
            return;
        };
        let escapees_alive = run.escapees.iter().any(sweep::escaped_alive);
        if !process::group_exists(pgid) && !escapees_alive {
            self.finish_run(name);
            return;
        }
        // The group outlived its leader: end it before anything new starts (promise 2).
        if run.stopping.is_none() {
            tracing::info!(
                service = name,
                pgid,
                "leader exited; ending the rest of its group"
            );
            self.begin_stop(name, StopReason::LeaderExited);
        } else {
            self.schedule_poll(name);
        }
    }

    /// Starts the stop sequence on `name`'s group: SIGCONT, the stop signal, then
    /// SIGKILL after `grace`, until the group is empty.
    fn begin_stop(&mut self, name: &str, reason: StopReason) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = svc.run.as_mut() else { return };
        if run.stopping.is_some() {
            return;
        }
        self.scan_escapes(true);
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = svc.run.as_mut() else { return };
        if let Some(h) = &run.health {
            h.cancel.cancel();
        }
        let now = Instant::now();
        run.stopping = Some(Stopping {
            reason,
            since: now,
            killed: false,
        });
        run.polls = 0;
        let (pgid, id) = (run.pgid, run.id);
        // SIGCONT first so that a stopped group sees the stop signal.
        let _ = process::signal_group(pgid, libc::SIGCONT);
        if let Err(e) = process::signal_group(pgid, svc.cfg.stop.signal) {
            tracing::warn!(service = name, pgid, "stop signal failed: {e}");
        }
        for e in &run.escapees {
            sweep::signal_escaped(e, libc::SIGCONT);
            sweep::signal_escaped(e, svc.cfg.stop.signal);
        }
        self.timers
            .at(now + svc.cfg.stop.grace, Timer::Grace(name.to_string(), id));
        self.schedule_poll(name);
    }

    fn schedule_poll(&mut self, name: &str) {
        let Some(run) = self.services.get_mut(name).and_then(|s| s.run.as_mut()) else {
            return;
        };
        let delay = POLL_FIRST
            .saturating_mul(1 << run.polls.min(10))
            .min(POLL_MAX);
        run.polls += 1;
        let id = run.id;
        self.timers
            .at(Instant::now() + delay, Timer::Poll(name.to_string(), id));
    }

    fn on_grace_over(&mut self, name: &str, run_id: u64) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = svc.run.as_mut().filter(|r| r.id == run_id) else {
            return;
        };
        let Some(stopping) = run.stopping.as_mut() else {
            return;
        };
        let escapees_alive = run.escapees.iter().any(sweep::escaped_alive);
        if process::group_exists(run.pgid) || escapees_alive {
            tracing::warn!(
                service = name,
                pgid = run.pgid,
                "still alive after {:?}; SIGKILL to the group",
                svc.cfg.stop.grace
            );
            stopping.killed = true;
            let _ = process::signal_group(run.pgid, libc::SIGKILL);
            for e in &run.escapees {
                sweep::signal_escaped(e, libc::SIGKILL);
            }
            run.polls = 0;
            self.schedule_poll(name);
        }
    }

    fn on_poll(&mut self, name: &str, run_id: u64) {
        self.reap_all();
        let Some(run) = self.services.get(name).and_then(|s| s.run.as_ref()) else {
            return;
        };
        if run.id != run_id {
            return;
        }
        if (process::group_exists(run.pgid) && process::group_alive(run.pgid))
            || run.escapees.iter().any(sweep::escaped_alive)
        {
            self.schedule_poll(name);
        } else if run.leader_exit.is_some() || !process::is_alive(run.leader) {
            // Only zombies are left: those that are paiosd's (re-parented members) are
            // collected now, so that "stopped" also means no trace in the process table.
            self.reap_all();
            let same = self
                .services
                .get(name)
                .and_then(|s| s.run.as_ref())
                .is_some_and(|r| r.id == run_id);
            if same {
                self.finish_run(name);
            }
        } else {
            self.schedule_poll(name);
        }
    }

    /// The run's group is empty: record it and decide what comes next.
    fn finish_run(&mut self, name: &str) {
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = svc.run.take() else { return };
        if let Some(h) = &run.health {
            h.cancel.cancel();
        }
        self.leaders.remove(&run.leader.pid);
        escape::forget_escapees(self.state_db.as_ref(), name, &run.escapees);
        if let Some(db) = &self.state_db {
            if let Err(e) = db.remove_run(name, run.pgid) {
                tracing::error!(
                    service = name,
                    "could not clear the live run from the state database: {e}"
                );
            }
        }
        let now = Instant::now();
        let (status, exit_at, exit_wall) = run
            .leader_exit
            .map_or((None, now, Utc::now()), |(s, at, wall)| (Some(s), at, wall));
        let outcome = classify(run.stopping, status);
        let uptime = exit_at.saturating_duration_since(run.started);
        svc.runs_finished += 1;
        svc.last_exit = Some(LastExit {
            status,
            outcome,
            at: exit_wall,
            pid: run.leader.pid,
        });
        let record = RunRecord {
            service: name.to_string(),
            kind: kind_of(svc).to_string(),
            outcome: outcome.to_string(),
            pid: Some(run.leader.pid),
            pgid: Some(run.pgid),
            leader_start_time: Some(run.leader.start_time),
            started_at: run.started_wall.to_rfc3339(),
            ended_at: exit_wall.to_rfc3339(),
            duration_ms: duration_ms(uptime),
            exit_code: match status {
                Some(ExitStatus::Code(c)) => Some(c),
                _ => None,
            },
            signal: match status {
                Some(ExitStatus::Signal(s)) => Some(process::signal_name(s)),
                _ => None,
            },
            attempt: run.attempt,
            delay_ms: run.delay.map(duration_ms),
            context: run.hung_context.clone(),
        };
        self.record_run(record, run.id);
        let by_paiosd = run.stopping.is_some_and(|s| {
            !matches!(
                s.reason,
                StopReason::LeaderExited
                    | StopReason::Timeout
                    | StopReason::Hung
                    | StopReason::Memory
            )
        });
        self.after_run(name, exit_at, uptime, outcome, by_paiosd);
    }

    /// Decides what follows a run's end: nothing, an immediate start, a backoff, or giving up.
    fn after_run(
        &mut self,
        name: &str,
        exit_at: Instant,
        uptime: Duration,
        outcome: &str,
        by_paiosd: bool,
    ) {
        let failed = !matches!(outcome, "exited" | "stopped");
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.removed {
            tracing::info!(service = name, "removed");
            self.services.remove(name);
            return;
        }
        if let Some(cfg) = svc.replacement.take() {
            svc.tracker = crate::policy::RestartTracker::new(cfg.restart);
            svc.clock = None;
            svc.cfg = cfg;
        }
        if self.shutting_down {
            svc.hold = Hold::None;
            return;
        }
        if svc.restart_requested {
            svc.restart_requested = false;
            svc.next_attempt = 0;
            self.try_start(name);
            return;
        }
        if svc.is_task() {
            if by_paiosd {
                svc.hold = Hold::None;
                svc.want_up = false;
                // A reload that changed the task while it ran left it without a schedule.
                self.arm_tasks();
            } else {
                self.after_task_run(name, exit_at, failed, outcome);
            }
            return;
        }
        if by_paiosd || !svc.want_up {
            svc.hold = Hold::None;
            return;
        }
        let now = Instant::now();
        if failed && svc.storm.on_crash(now) {
            let detail = format!(
                "{} crashes within {:?}",
                self.global.storm.crashes, self.global.storm.window
            );
            tracing::warn!(service = name, "crash storm: {detail}");
            self.alert(name, "service", "storm", detail);
        }
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        match svc
            .tracker
            .on_exit(exit_at, uptime, failed, fastrand::f64())
        {
            Decision::Restart { delay, attempt } => {
                let until = exit_at + delay;
                tracing::info!(service = name, attempt, "restarting in {}", human_ms(delay));
                svc.next_attempt = attempt;
                svc.next_delay = Some(delay);
                svc.restarts.push_back(SystemTime::now());
                svc.hold = Hold::Backoff {
                    until,
                    until_wall: Utc::now()
                        + chrono::Duration::from_std(until.saturating_duration_since(now))
                            .unwrap_or_default(),
                    attempt,
                    delay,
                };
                self.timers.at(until, Timer::Start(name.to_string()));
            }
            Decision::Stay => {
                svc.want_up = false;
                svc.hold = Hold::None;
            }
            Decision::GiveUp { retry_at } => {
                let wait = retry_at.saturating_duration_since(now);
                let retry_wall = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                svc.hold = Hold::Failed {
                    retry_at,
                    retry_wall,
                };
                let detail = format!(
                    "more than {} restarts within {:?}; retrying at {}",
                    svc.cfg.restart.limit.burst,
                    svc.cfg.restart.limit.window,
                    retry_wall.with_timezone(&chrono::Local).format("%H:%M:%S")
                );
                tracing::error!(service = name, "gave up: {detail}");
                self.timers.at(retry_at, Timer::Cooldown(name.to_string()));
                self.alert(name, "service", "gave_up", detail);
            }
        }
    }

    // ----- timers -------------------------------------------------------------------

    fn on_timers(&mut self, now: Instant) {
        for timer in self.timers.due(now) {
            match timer {
                Timer::Start(name) => {
                    let due = self.services.get(&name).is_some_and(|s| {
                        s.want_up && matches!(s.hold, Hold::Backoff { until, .. } if until <= now)
                    });
                    if due {
                        if self.services.get(&name).is_some_and(Service::is_task) {
                            self.start_task_run(&name);
                        } else {
                            self.try_start(&name);
                        }
                    }
                }
                Timer::Grace(name, id) => self.on_grace_over(&name, id),
                Timer::Poll(name, id) => self.on_poll(&name, id),
                Timer::Cooldown(name) => {
                    let Some(svc) = self.services.get_mut(&name) else {
                        continue;
                    };
                    if matches!(svc.hold, Hold::Failed { retry_at, .. } if retry_at <= now)
                        && svc.want_up
                    {
                        svc.tracker.clear();
                        svc.next_attempt = 0;
                        svc.hold = Hold::None;
                        tracing::info!(service = %name, "cooldown over; starting again");
                        self.record_event(&name, "service", "cooldown_over", None);
                        self.try_start(&name);
                    }
                }
                Timer::Schedule(name) => self.on_schedule(&name),
                Timer::Timeout(name, id) => self.on_timeout(&name, id),
                Timer::Sample => self.on_sample_tick(now),
                Timer::Wake => self.scan_escapes(false),
            }
        }
    }

    // ----- shutdown -----------------------------------------------------------------

    fn begin_shutdown(&mut self, why: &str) {
        if !self.shutting_down {
            tracing::info!("{why}: stopping every service");
        }
        self.shutting_down = true;
        for svc in self.services.values_mut() {
            svc.want_up = false;
            svc.restart_requested = false;
            svc.hold = Hold::None;
        }
        self.advance_shutdown();
    }

    /// Stops, in parallel, every service that nothing still running comes `after`.
    fn advance_shutdown(&mut self) {
        for name in order::stoppable(&self.services) {
            self.begin_stop(&name, StopReason::Shutdown);
        }
    }

    fn all_stopped(&self) -> bool {
        self.services.values().all(|s| s.run.is_none())
    }

    // ----- records ------------------------------------------------------------------

    fn record_event(&self, service: &str, kind: &str, event: &str, detail: Option<String>) {
        self.ledger.record(Record::Event(EventRecord {
            service: service.to_string(),
            kind: kind.to_string(),
            event: event.to_string(),
            detail,
            at: Utc::now().to_rfc3339(),
        }));
    }

    /// Records an event that people should hear about and runs the alert command.
    fn alert(&self, service: &str, kind: &str, event: &str, detail: String) {
        self.record_event(service, kind, event, Some(detail.clone()));
        if let Some((_, alerter)) = &self.alerter {
            let sent = alerter.send(Alert {
                event: event.to_string(),
                service: service.to_string(),
                kind: kind.to_string(),
                detail,
                at: Utc::now(),
            });
            if sent == Sent::Dropped {
                tracing::warn!(service, event, "alert not run: {sent:?}");
            }
        }
    }

    /// (Re)creates the alert runner when `alert_command` is set or changed.
    fn set_alerter(&mut self) {
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

    /// Writes a run record; crashed runs wait (off the actor) for their stderr tail first.
    fn record_run(&mut self, mut record: RunRecord, run_id: u64) {
        if matches!(
            record.outcome.as_str(),
            "crashed" | "killed" | "timeout" | "hung" | "memory"
        ) {
            let tail = self
                .logs
                .stderr_tail(run_id, self.global.ledger.context_lines, TAIL_WAIT);
            let ledger = self.ledger.clone();
            self.tails.retain(|handle| !handle.is_finished());
            self.tails.push(tokio::spawn(async move {
                if let Ok(lines) = tail.await {
                    if !lines.is_empty() {
                        let tail = lines.join("\n");
                        record.context = Some(match record.context.take() {
                            Some(why) => format!("{why}\n--- stderr ---\n{tail}"),
                            None => tail,
                        });
                    }
                }
                ledger.record(Record::Run(record));
            }));
        } else {
            self.ledger.record(Record::Run(record));
        }
    }
}

/// The run's outcome word, as the ledger and status spell it.
fn classify(stopping: Option<Stopping>, status: Option<ExitStatus>) -> &'static str {
    match stopping {
        Some(Stopping {
            reason: StopReason::Timeout,
            ..
        }) => "timeout",
        Some(Stopping {
            reason: StopReason::Hung,
            ..
        }) => "hung",
        Some(Stopping {
            reason: StopReason::Memory,
            ..
        }) => "memory",
        Some(Stopping {
            reason: StopReason::LeaderExited,
            ..
        })
        | None => match status {
            Some(ExitStatus::Code(0)) => "exited",
            _ => "crashed",
        },
        Some(Stopping { killed: true, .. }) => "killed",
        Some(_) => "stopped",
    }
}

fn kind_of(svc: &Service) -> &'static str {
    if svc.is_task() {
        "task"
    } else {
        "service"
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn human_ms(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn describe(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exit code {c}"),
        ExitStatus::Signal(s) => format!("killed by {}", process::signal_name(s)),
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorBody {
        code,
        message: message.into(),
    })
}

impl Supervisor {
    /// Re-reads the config and applies it whole, or not at all.
    fn reload(&mut self) -> Result<crate::control::protocol::ReloadReport, String> {
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
        let mut report = crate::control::protocol::ReloadReport::default();
        self.global = config.global;
        self.set_alerter();
        self.config_errors.clear();
        let new: BTreeMap<String, ServiceConfig> = config.services;
        let removed: Vec<String> = self
            .services
            .keys()
            .filter(|n| !new.contains_key(*n))
            .cloned()
            .collect();
        for name in removed {
            if let Some(svc) = self.services.get_mut(&name) {
                svc.removed = true;
                svc.want_up = false;
                svc.hold = Hold::None;
                if svc.run.is_some() {
                    self.begin_stop(&name, StopReason::Removed);
                } else {
                    self.services.remove(&name);
                }
            }
            report.removed.push(name);
        }
        let mut to_start = Vec::new();
        for (name, cfg) in new {
            match self.services.get_mut(&name) {
                None => {
                    let enabled = cfg.enabled && cfg.task.is_none();
                    let mut svc = Service::new(cfg, self.global.storm);
                    svc.want_up = enabled;
                    self.services.insert(name.clone(), svc);
                    if enabled {
                        to_start.push(name.clone());
                    }
                    report.added.push(name);
                }
                Some(svc) if svc.removed => {
                    // Removed and re-added within one reload: keep it.
                    svc.removed = false;
                    svc.replacement = Some(cfg);
                    svc.restart_requested = true;
                    report.restarted.push(name);
                }
                Some(svc) if svc.cfg == cfg => report.unchanged.push(name),
                Some(svc) => {
                    let enabled = cfg.enabled && cfg.task.is_none();
                    svc.storm = crate::policy::StormDetector::new(self.global.storm);
                    if svc.run.is_some() {
                        svc.replacement = Some(cfg);
                        svc.restart_requested = enabled;
                        svc.want_up = enabled;
                        self.begin_stop(&name, StopReason::Restart);
                    } else {
                        svc.tracker = crate::policy::RestartTracker::new(cfg.restart);
                        svc.clock = None;
                        svc.cfg = cfg;
                        svc.want_up = enabled;
                        svc.hold = Hold::None;
                        if enabled {
                            to_start.push(name.clone());
                        }
                    }
                    report.restarted.push(name);
                }
            }
        }
        for name in to_start {
            self.try_start(&name);
        }
        self.arm_tasks();
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

    fn on_control(&mut self, msg: ControlMsg) {
        let ControlMsg { request, reply } = msg;
        if self.shutting_down
            && !matches!(
                request,
                Request::Ping | Request::Status { .. } | Request::Shutdown
            )
        {
            let _ = reply.send(error(ErrorCode::ShuttingDown, "paiosd is shutting down"));
            return;
        }
        match request {
            Request::Ping => {
                let _ = reply.send(Response::Ok(Reply::Pong {
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    pid: std::process::id(),
                    ledger: Some(self.ledger.stats()),
                }));
            }
            Request::Status { names } => {
                let answer = match self.resolve(&names, names.is_empty()) {
                    Ok(names) => Response::Ok(Reply::Status {
                        services: self.status(&names),
                        ledger: Some(self.ledger.stats()),
                    }),
                    Err(e) => e,
                };
                let _ = reply.send(answer);
            }
            Request::Reload => {
                let answer = match self.reload() {
                    Ok(report) => Response::Ok(Reply::Reload(report)),
                    Err(text) => error(
                        ErrorCode::ConfigInvalid,
                        format!("the config has errors; nothing was changed:\n{text}"),
                    ),
                };
                let _ = reply.send(answer);
            }
            Request::Shutdown => {
                let _ = reply.send(Response::Ok(Reply::ShuttingDown {
                    pid: std::process::id(),
                }));
                self.begin_shutdown("paiosctl shutdown");
            }
            Request::Start { target, wait } => {
                self.with_targets(&target, reply, |s, names, reply| {
                    s.op_up(names, wait, reply, false)
                })
            }
            Request::Stop { target, wait } => {
                self.with_targets(&target, reply, |s, names, reply| {
                    s.op_stop(names, wait, reply)
                })
            }
            Request::Restart { target, wait } => {
                self.with_targets(&target, reply, |s, names, reply| {
                    s.op_up(names, wait, reply, true)
                })
            }
            Request::Run { name, wait } => self.op_run(name, wait, reply),
        }
    }

    /// Checks names against the services, with a suggestion for an unknown one.
    fn resolve(&self, names: &[String], all: bool) -> Result<Vec<String>, Response> {
        if all {
            return Ok(self.services.keys().cloned().collect());
        }
        for name in names {
            if !self.services.contains_key(name) {
                let mut message = format!("no service named `{name}`");
                if let Some(close) = closest(name, self.services.keys()) {
                    message.push_str(&format!(" (did you mean `{close}`?)"));
                }
                return Err(error(ErrorCode::UnknownService, message));
            }
        }
        let mut out = names.to_vec();
        out.dedup();
        Ok(out)
    }
}

/// The known name closest to `name`, if it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    known
        .map(|k| (strsim::damerau_levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_words() {
        assert_eq!(classify(None, Some(ExitStatus::Code(0))), "exited");
        assert_eq!(classify(None, Some(ExitStatus::Code(3))), "crashed");
        assert_eq!(classify(None, Some(ExitStatus::Signal(9))), "crashed");
        let stop = |reason, killed| {
            Some(Stopping {
                reason,
                since: Instant::now(),
                killed,
            })
        };
        assert_eq!(
            classify(stop(StopReason::User, false), Some(ExitStatus::Signal(15))),
            "stopped"
        );
        assert_eq!(
            classify(stop(StopReason::User, true), Some(ExitStatus::Signal(9))),
            "killed"
        );
        assert_eq!(classify(stop(StopReason::Timeout, true), None), "timeout");
        assert_eq!(
            classify(
                stop(StopReason::LeaderExited, true),
                Some(ExitStatus::Code(1))
            ),
            "crashed"
        );
    }

    #[test]
    fn suggestions_are_close_names_only() {
        let known = [
            "gateway".to_string(),
            "kb".to_string(),
            "embedding-server".to_string(),
        ];
        assert_eq!(closest("gatway", known.iter()), Some(&known[0]));
        assert_eq!(closest("kd", known.iter()), Some(&known[1]));
        assert_eq!(closest("zzzzzzzz", known.iter()), None);
    }
}
