//! `paiosctl`: how a person talks to paiosd. This file is the argument tree and the
//! dispatch; each verb is a module of [`paios::ctl`], which also documents the exit
//! codes and the `--json` output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use paios::control::protocol::Target;
use paios::ctl;
use paios::dirs::Dirs;

/// Control paiosd, the supervisor of this machine's services.
#[derive(Debug, Parser)]
#[command(name = "paiosctl", version, about, long_about = None)]
struct Cli {
    /// Where services.d/ and paiosd.toml live.
    #[arg(long, env = "PAIOS_CONFIG_DIR", global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Where paiosd.sock and the ledger live.
    #[arg(long, env = "PAIOS_STATE_DIR", global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Where the service logs are written.
    #[arg(long, env = "PAIOS_LOG_DIR", global = true, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show every service (or the named ones): state, PID, uptime, restarts, last exit.
    Status { names: Vec<String> },
    /// Start services and wait until they run; clears a `failed` crash loop.
    Start(OpArgs),
    /// Stop services and wait until their process groups are empty.
    Stop(OpArgs),
    /// Stop then start services, waiting for both.
    Restart(OpArgs),
    /// Re-read services.d/ (all or nothing), like SIGHUP.
    Reload,
    /// Print the last lines of a service's log, or follow it.
    Logs(ctl::logs::LogsArgs),
    /// Run a scheduled task now and wait for its result.
    Run {
        task: String,
        /// Return as soon as the run has started.
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop every service and paiosd itself, and wait until paiosd has exited.
    Shutdown {
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Print paiosctl's version and, when it runs, paiosd's.
    Version,
    /// Check that paiosd answers.
    Ping,
    /// Show the history of starts, exits, crashes and task runs (reads the ledger file).
    Ledger(ctl::ledger::LedgerArgs),
    /// Find processes that look like a service but run outside supervision (strays),
    /// and other problems: probe ports held outside supervision, a stale socket, failed
    /// services. Exit 0 when clean, 1 when something was found.
    Doctor {
        /// End each stray with its service's stop sequence and record it in the ledger.
        #[arg(long)]
        kill: bool,
    },
    /// Bridge an MCP client to MCP server NAME: the command a client starts
    /// (`{"command": "/abs/path/paiosctl", "args": ["mcp", "NAME"]}`); JSON-RPC on
    /// stdin/stdout, ending with the client.
    Mcp {
        /// Print the configuration that points an MCP client at the bridges (FORMAT
        /// claude, codex or json; claude by default) instead of bridging.
        #[arg(long)]
        print_config: bool,
        /// The MCP server's service name; with --print-config, an optional FORMAT then
        /// any number of servers (every MCP server by default).
        #[arg(required_unless_present = "print_config", value_name = "NAME")]
        words: Vec<String>,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Print the man page, or write paiosctl.1 into a directory.
    Man {
        /// Write the page into this directory instead of printing it.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct OpArgs {
    /// The services to act on.
    #[arg(required_unless_present = "all")]
    names: Vec<String>,
    /// Act on every service.
    #[arg(long, conflicts_with = "names")]
    all: bool,
    /// Return at once instead of waiting for the operation to finish.
    #[arg(long)]
    no_wait: bool,
}

impl OpArgs {
    fn target(&self) -> Target {
        Target {
            names: self.names.clone(),
            all: self.all,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let code = ctl::finish(run(cli), json);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run(cli: Cli) -> ctl::Outcome {
    let dirs = Dirs::resolve(cli.config_dir, cli.state_dir, cli.log_dir);
    let json = cli.json;
    let socket = dirs.socket();
    match cli.command {
        Command::Status { names } => ctl::status::status(&socket, names, json),
        Command::Start(args) => ctl::start_stop::start(&socket, args.target(), !args.no_wait, json),
        Command::Stop(args) => ctl::start_stop::stop(&socket, args.target(), !args.no_wait, json),
        Command::Restart(args) => {
            ctl::start_stop::restart(&socket, args.target(), !args.no_wait, json)
        }
        Command::Reload => ctl::reload::reload(&socket, json),
        Command::Run { task, no_wait } => ctl::run::run(&socket, task, !no_wait, json),
        Command::Ping => ctl::ping::ping(&socket, json),
        Command::Shutdown { timeout } => {
            ctl::shutdown::shutdown(&dirs, Duration::from_secs(timeout), json)
        }
        Command::Version => ctl::version::version(&socket, json),
        Command::Logs(args) => ctl::logs::logs(&dirs, &args, json),
        Command::Ledger(args) => Ok(ctl::ledger::main(&dirs.state, &args, json)),
        Command::Doctor { kill } => ctl::doctor::doctor(&dirs, kill, json),
        Command::Mcp {
            print_config,
            words,
        } => ctl::mcp::main(&dirs, print_config, &words),
        Command::Completions { shell } => ctl::completions::completions(Cli::command(), shell),
        Command::Man { out_dir } => ctl::man::man(Cli::command(), out_dir.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
