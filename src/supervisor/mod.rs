//! The supervisor: one actor that owns every service's state, and the loop that feeds
//! it events.
//!
//! Events come in (a child exited, a timer fired, a control request, a probe result,
//! a shutdown or reload asked for by the caller); the actor (`actor.rs`) updates its
//! state (`model.rs`), asks `crate::policy` what follows, and performs the effects
//! through a small seam (`os.rs`) and the `state`, `ledger` and `logs` modules, none
//! of which it ever waits on for long. No other task mutates service state: the
//! control server gets snapshots and answers through `ControlMsg`; the MCP sockets'
//! connections ask for their welcome through `McpMsg` (`mcp.rs`). Timers are
//! deadlines in one ordered set (`timers.rs`), so nothing polls on a fixed tick.
//!
//! The caller owns the process's signals: [`run`] takes the shutdown as a token and
//! reload requests as a channel, and listens only to SIGCHLD, which tells the reaper
//! that children have ended.

mod actor;
mod after;
mod escape;
mod gates;
mod lifecycle;
mod mcp;
pub mod model;
mod ops;
mod order;
pub mod os;
mod reload;
mod startup;
mod status;
pub mod sweep;
mod tasks;
pub mod timers;
mod watch;

#[cfg(test)]
mod tests_actor;

use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::control;
use crate::dirs::Dirs;
use crate::ledger::Ledger;
use crate::logs::Logs;
use crate::state::StateDb;

pub use actor::{Event, Parts, Supervisor};
pub use model::SETTLE;

/// Why paiosd could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen for SIGCHLD: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot listen on the control socket {path}: {source}")]
    Socket {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs paiosd until `shutdown` is cancelled or `paiosctl shutdown` is asked for, and
/// every service has stopped. Each message on `reload` re-reads the config.
///
/// The caller holds the instance lock for as long as this runs.
pub async fn run(
    dirs: Dirs,
    shutdown: CancellationToken,
    mut reload: mpsc::Receiver<()>,
) -> Result<(), RunError> {
    let mut sigchld = signal(SignalKind::child()).map_err(RunError::Signal)?;
    let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
    let mut sup = open(&dirs, probe_tx);
    sup.prepare();

    let (ctl_tx, mut ctl_rx) = mpsc::channel::<control::ControlMsg>(256);
    let cancel = CancellationToken::new();
    let listener = control::server::bind(&dirs.socket()).map_err(|source| RunError::Socket {
        path: dirs.socket(),
        source,
    })?;
    let server = tokio::spawn(control::server::serve(listener, ctl_tx, cancel.clone()));

    let (mcp_tx, mut mcp_rx) = mpsc::channel::<crate::mcp::serve::McpMsg>(256);
    sup.set_mcp_sender(mcp_tx);
    sup.boot();
    while !sup.done() {
        let deadline = sup.next_deadline();
        let event = tokio::select! {
            _ = sigchld.recv() => actor::Event::Children,
            _ = shutdown.cancelled(), if !sup.shutting_down() => actor::Event::Shutdown("shutdown requested"),
            Some(()) = reload.recv() => actor::Event::Reload,
            Some(msg) = ctl_rx.recv() => actor::Event::Control(msg),
            Some(ev) = probe_rx.recv() => actor::Event::Probe(ev),
            Some(msg) = mcp_rx.recv() => actor::Event::Mcp(msg),
            _ = sleep_until(deadline) => actor::Event::Timers,
        };
        sup.handle(event);
    }

    sup.finish().await;
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    sup.close();
    tracing::info!("paiosd stopped; no service process is left");
    Ok(())
}

/// Loads the config and opens the ledger, the logs and the state database.
fn open(dirs: &Dirs, probe_tx: mpsc::UnboundedSender<crate::health::ProbeEvent>) -> Supervisor {
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
    if let Some(problem) = &state_problem {
        tracing::error!("state database: {problem}");
    }
    let mut sup = Supervisor::new(Parts {
        dirs: dirs.clone(),
        config,
        ledger,
        logs,
        state_db,
        os: Box::new(os::RealOs),
        probe_tx,
    });
    sup.state_problem = state_problem;
    sup
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
