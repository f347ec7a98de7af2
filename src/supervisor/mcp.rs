//! MCP servers inside the actor: one socket per server (opened and closed as servers
//! come and go with reloads), the welcome for each bridge's hello, and the clients.
//!
//! An http server is a service like any other; its clients are counted while their
//! connections stay open. A per-client stdio server has no run of its own: each
//! client gets a run in a service entry of its own, `NAME#CLIENT`, with restart policy
//! `never` and want `remove`, so the run lifecycle, its stop (stdin closed first),
//! `state.sqlite` and the ledger treat it as any run, and the entry is forgotten when
//! the run ends. The copying between a client and its run is in `crate::mcp::serve`,
//! outside the actor.

use std::collections::BTreeMap;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::actor::Supervisor;
use super::model::{Service, State, StopReason, Want};
use super::timers::Timer;
use crate::config::{McpEndpoint, McpTransport, Probe, RestartPolicy};
use crate::control::protocol::{McpClientStatus, McpStatus};
use crate::mcp::serve::{self, Admit, McpMsg, StdioProbe};
use crate::mcp::Hello;
use crate::policy::{Decision, Ended};

/// How long a client's run that closed its stdout has to exit by itself before it is
/// stopped (its exit usually follows within a millisecond).
const SERVER_EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// More clients of one server than any editor setup has; beyond it a connection is
/// refused, so a runaway client cannot start runs without end.
const MAX_CLIENTS: usize = 256;

/// The actor's MCP state.
#[derive(Debug, Default)]
pub struct McpState {
    /// Where the connections send their hellos; set by `supervisor::run`.
    tx: Option<mpsc::Sender<McpMsg>>,
    /// The listening sockets, by server name.
    listeners: BTreeMap<String, CancellationToken>,
    clients: BTreeMap<u64, Client>,
    next_client: u64,
}

/// One connected bridge.
#[derive(Debug)]
struct Client {
    server: String,
    /// The service entry of its run, for a per-client server.
    entry: Option<String>,
    pid: i32,
    command: Option<String>,
    /// Cancelled to close the connection.
    end: CancellationToken,
}

impl Supervisor {
    pub fn set_mcp_sender(&mut self, tx: mpsc::Sender<McpMsg>) {
        self.mcp.tx = Some(tx);
    }

    /// The names a user can give: the services, without their clients' entries.
    pub(super) fn service_names(&self) -> impl Iterator<Item = &String> {
        self.services
            .iter()
            .filter(|(_, s)| s.client.is_none())
            .map(|(n, _)| n)
    }

    /// Opens a socket for every MCP server that has none and closes those of servers
    /// gone from the config.
    pub(super) fn sync_mcp_sockets(&mut self) {
        let Some(tx) = self.mcp.tx.clone() else {
            return;
        };
        if self.shutting_down {
            return;
        }
        let servers: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.client.is_none() && s.want != Want::Remove && s.cfg.mcp.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        let gone: Vec<String> = self
            .mcp
            .listeners
            .keys()
            .filter(|n| !servers.contains(n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(cancel) = self.mcp.listeners.remove(&name) {
                cancel.cancel();
            }
        }
        for name in servers {
            if self.mcp.listeners.contains_key(&name) {
                continue;
            }
            let cancel = CancellationToken::new();
            match serve::listen(&self.dirs.state, &name, tx.clone(), cancel.clone()) {
                Ok(()) => {
                    tracing::info!(service = %name, "MCP socket open");
                    self.mcp.listeners.insert(name, cancel);
                }
                Err(e) => {
                    tracing::error!(service = %name, "cannot open the MCP socket: {e}");
                    self.record_event(&name, "service", "mcp_socket_failed", Some(e.to_string()));
                }
            }
        }
    }

    /// Shutdown: no new clients.
    pub(super) fn close_mcp_sockets(&mut self) {
        for (_, cancel) in std::mem::take(&mut self.mcp.listeners) {
            cancel.cancel();
        }
    }

    /// The end: every connection still open is closed.
    pub(super) fn end_all_clients(&mut self) {
        for (_, client) in std::mem::take(&mut self.mcp.clients) {
            client.end.cancel();
        }
    }

    pub(super) fn on_mcp(&mut self, msg: McpMsg) {
        match msg {
            McpMsg::Hello {
                service,
                hello,
                reply,
            } => {
                let admit = self.admit(&service, &hello);
                if let Err(Admit::Stdio { client, .. } | Admit::Http { client, .. }) =
                    reply.send(admit)
                {
                    // The bridge went before its welcome.
                    self.client_gone(client);
                }
            }
            McpMsg::Gone { client } => self.client_gone(client),
            McpMsg::ServerDone { client } => self.server_done(client),
        }
    }

    fn admit(&mut self, server: &str, hello: &Hello) -> Admit {
        let mcp = match self.admissible(server) {
            Ok(mcp) => mcp,
            Err((reason, fix)) => return Admit::Refused { reason, fix },
        };
        let id = self.mcp.next_client;
        self.mcp.next_client += 1;
        let command = hello
            .client_command
            .clone()
            .or_else(|| crate::process::proc_info(hello.client_pid).map(|p| p.comm));
        let end = CancellationToken::new();
        let mut client = Client {
            server: server.to_string(),
            entry: None,
            pid: hello.client_pid,
            command,
            end: end.clone(),
        };
        match mcp.transport {
            McpTransport::Http => {
                tracing::info!(
                    service = server,
                    client_pid = client.pid,
                    "MCP client connected"
                );
                self.mcp.clients.insert(id, client);
                Admit::Http {
                    client: id,
                    url: mcp.url.unwrap_or_default(),
                    max_line: mcp.max_line,
                    end,
                }
            }
            McpTransport::Stdio => {
                let entry = format!("{server}#{id}");
                let close_stdin = CancellationToken::new();
                match self.start_client_run(server, &entry, id, &client, close_stdin.clone()) {
                    Ok((stdin, stdout)) => {
                        let probe = self.stdio_probe(&entry);
                        client.entry = Some(entry);
                        self.mcp.clients.insert(id, client);
                        Admit::Stdio {
                            client: id,
                            max_line: mcp.max_line,
                            stdin,
                            stdout,
                            end,
                            close_stdin,
                            probe,
                        }
                    }
                    Err(reason) => Admit::Refused {
                        reason,
                        fix: format!("paiosctl logs {server}"),
                    },
                }
            }
        }
    }

    /// The server's `[mcp]` when it takes clients now; else why not and what fixes it.
    fn admissible(&self, server: &str) -> Result<crate::config::McpConfig, (String, String)> {
        let fix = format!("paiosctl start {server}");
        if self.shutting_down {
            return Err(("paiosd is shutting down".into(), fix));
        }
        let Some(svc) = self.services.get(server).filter(|s| s.want != Want::Remove) else {
            let reason = format!("no MCP server named `{server}` in paiosd's config");
            return Err((reason, "paiosctl status".into()));
        };
        let Some(mcp) = svc.cfg.mcp.clone() else {
            let reason = format!("`{server}` is not an MCP server (its file has no [mcp] table)");
            return Err((reason, "paiosctl status".into()));
        };
        if !svc.wanted() {
            let reason = if svc.cfg.enabled {
                format!("{server} is stopped")
            } else {
                format!("{server} is disabled (enabled = false in its service file)")
            };
            return Err((reason, fix));
        }
        let clients = self
            .mcp
            .clients
            .values()
            .filter(|c| c.server == server)
            .count();
        if clients >= MAX_CLIENTS {
            let reason = format!("{server} has {clients} clients already, the most it takes");
            return Err((reason, format!("paiosctl status {server}")));
        }
        if svc.state() == State::Failed {
            let (_, detail) = super::status::state_of(svc, self.now.mono);
            let mut reason = format!("{server} is failed");
            if let Some(detail) = detail {
                reason.push_str(&format!(" ({detail})"));
            }
            return Err((reason, fix));
        }
        Ok(mcp)
    }

    /// Starts a run of `server` for one client in the entry `entry`; its pipes, or why not.
    fn start_client_run(
        &mut self,
        server: &str,
        entry: &str,
        id: u64,
        client: &Client,
        close_stdin: CancellationToken,
    ) -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), String> {
        let Some(parent) = self.services.get(server) else {
            return Err(format!("no MCP server named `{server}`"));
        };
        let mut cfg = parent.cfg.clone();
        cfg.restart.policy = RestartPolicy::Never;
        // Only the ping is a probe of one client's run: the others look at a port or a
        // command that no single run owns.
        cfg.health = cfg
            .health
            .filter(|h| matches!(h.probe, Probe::Mcp(McpEndpoint::Stdio)));
        cfg.after.clear();
        let mut svc = Service::new(cfg, self.global.storm);
        svc.want = Want::Remove;
        svc.client = Some(id);
        self.services.insert(entry.to_string(), svc);
        self.spawn_run(entry);
        let who = match &client.command {
            Some(command) => format!("for MCP client pid {} ({command})", client.pid),
            None => format!("for MCP client pid {}", client.pid),
        };
        let Some(svc) = self.services.get_mut(entry) else {
            // The spawn failed, was recorded, and the entry is gone with it.
            return Err(format!(
                "{server} could not be started for this client; its log and `paiosctl ledger {server}` say why"
            ));
        };
        let Some(run) = svc.run.as_mut() else {
            return Err(format!("{server} could not be started for this client"));
        };
        run.stdin = Some(close_stdin);
        run.hung_context = Some(who.clone());
        let pid = run.leader.pid;
        let Some(pipes) = svc.pipes.take() else {
            self.begin_stop(entry, StopReason::User);
            return Err(format!(
                "{server} was started without its pipes; stopped it"
            ));
        };
        tracing::info!(service = server, pid, "started a run {who}");
        self.record_event(
            server,
            "service",
            "mcp_client",
            Some(format!("run pid {pid} {who}")),
        );
        Ok(pipes)
    }

    /// The pings of a client's run just started, when its server has `[health] mcp =
    /// true`: the connection sends them on its pipe, and the results come back as any
    /// probe's, to the run's threshold machine.
    fn stdio_probe(&self, entry: &str) -> Option<StdioProbe> {
        let svc = self.services.get(entry)?;
        let cfg = svc.cfg.health.clone()?;
        let run = svc.run.as_ref()?;
        let health = run.health.as_ref()?;
        Some(StdioProbe {
            service: entry.to_string(),
            run_id: run.id,
            cfg,
            tx: self.probe_tx.clone(),
            cancel: health.cancel.clone(),
        })
    }

    /// A client's connection has ended (or it has stopped sending): its run is stopped,
    /// stdin first. An http client is forgotten at once; a stdio client once its run ends.
    fn client_gone(&mut self, id: u64) {
        let Some(client) = self.mcp.clients.get(&id) else {
            return;
        };
        match client.entry.clone() {
            Some(entry) if self.services.get(&entry).is_some_and(|s| s.run.is_some()) => {
                self.begin_stop(&entry, StopReason::User);
            }
            _ => {
                if let Some(client) = self.mcp.clients.remove(&id) {
                    client.end.cancel();
                }
            }
        }
    }

    /// A client's run closed its stdout, most often because it is exiting: its exit is
    /// left a moment to arrive, so that a crash is recorded as one and not as a stop.
    fn server_done(&mut self, id: u64) {
        let Some(entry) = self.mcp.clients.get(&id).and_then(|c| c.entry.clone()) else {
            return;
        };
        let Some(run) = self.services.get(&entry).and_then(|s| s.run.as_ref()) else {
            return;
        };
        let at = self.now.mono + SERVER_EXIT_WAIT;
        self.timers.at(at, Timer::ServerDone(entry, run.id));
    }

    /// A client's run closed its stdout a while ago and is still up: it can serve its
    /// client no more, so it is stopped.
    pub(super) fn on_server_done(&mut self, entry: &str, run_id: u64) {
        self.reap_all();
        let up = self
            .services
            .get(entry)
            .and_then(|s| s.run.as_ref())
            .is_some_and(|r| r.id == run_id && r.is_up());
        if up {
            tracing::warn!(
                service = entry,
                "closed its stdout but did not exit; stopping it"
            );
            self.begin_stop(entry, StopReason::User);
        }
    }

    /// A client's run has ended: its connection is closed and the client forgotten. A
    /// crash counts toward the server's crash-loop limit (`[restart] limit`): a server
    /// whose clients' runs keep crashing is `failed` until its cooldown, and new clients
    /// are refused with the reason instead of getting one more run that crashes.
    pub(super) fn client_run_ended(&mut self, id: u64, ended: &Ended) {
        let Some(client) = self.mcp.clients.remove(&id) else {
            return;
        };
        tracing::info!(service = %client.server, client_pid = client.pid, "MCP client's run ended");
        client.end.cancel();
        if ended.by_paiosd || !ended.outcome.is_failure() {
            return;
        }
        let (now, jitter) = (self.now.mono, self.os.jitter());
        let Some(server) = self.services.get_mut(&client.server) else {
            return;
        };
        if let Decision::GiveUp { retry_at } =
            server.tracker.on_exit(now, ended.uptime, true, jitter)
        {
            self.give_up(&client.server, retry_at);
        }
    }

    /// `paiosctl stop` (or a removal): every client's run is stopped, every http
    /// client's connection closed.
    pub(super) fn end_clients_of(&mut self, server: &str) {
        let ids: Vec<u64> = self
            .mcp
            .clients
            .iter()
            .filter(|(_, c)| c.server == server)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let entry = self.mcp.clients.get(&id).and_then(|c| c.entry.clone());
            match entry {
                Some(entry) if self.services.get(&entry).is_some_and(|s| s.run.is_some()) => {
                    self.begin_stop(&entry, StopReason::User);
                }
                _ => {
                    if let Some(client) = self.mcp.clients.remove(&id) {
                        client.end.cancel();
                    }
                }
            }
        }
    }

    /// The state word of a wanted per-client server, which runs only for its clients:
    /// `running` while one has a run, else `idle`. None for any other service, and for
    /// one that is `failed` (its clients' runs kept crashing).
    pub(super) fn client_parent_state(&self, server: &str) -> Option<&'static str> {
        self.services
            .get(server)
            .filter(|s| s.is_client_parent() && s.wanted() && s.state() != State::Failed)?;
        Some(if self.has_client_runs(server) {
            "running"
        } else {
            "idle"
        })
    }

    /// Some client of `server` still has a run.
    pub(super) fn has_client_runs(&self, server: &str) -> bool {
        self.mcp.clients.values().any(|c| {
            c.server == server
                && c.entry
                    .as_ref()
                    .is_some_and(|e| self.services.get(e).is_some_and(|s| s.run.is_some()))
        })
    }

    /// The `mcp` part of a status row.
    pub(super) fn mcp_status(&self, server: &str) -> Option<McpStatus> {
        let mcp = self.services.get(server)?.cfg.mcp.as_ref()?;
        let clients = self
            .mcp
            .clients
            .values()
            .filter(|c| c.server == server)
            .map(|c| McpClientStatus {
                pid: c.pid,
                command: c.command.clone(),
                run_pid: c
                    .entry
                    .as_ref()
                    .and_then(|e| self.services.get(e)?.run.as_ref())
                    .map(|r| r.leader.pid),
            })
            .collect();
        Some(McpStatus {
            transport: mcp.transport.as_str().to_string(),
            share: mcp.share.as_str().to_string(),
            url: mcp.url.clone(),
            clients,
        })
    }
}
