//! `paiosd`: the supervisor daemon. Parses its arguments, decides where its own log
//! goes, and hands over to the library.
//!
//! Its own log goes to stderr when someone reads it there: on a terminal, under
//! systemd (which sets `JOURNAL_STREAM` when stderr is the journal), or with
//! `--foreground`. Otherwise — under launchd, whose stderr is /dev/null unless a
//! StandardErrorPath is set, and which would never rotate that file — it goes to
//! `<log-dir>/paiosd.log`, rotated by size; `--log-file` asks for the file anyway.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use paios::dirs::Dirs;
use paios::lock::{self, Acquired};

/// One supervisor for a personal machine's always-on services.
#[derive(Debug, Parser)]
#[command(name = "paiosd", version, about, long_about = None)]
struct Cli {
    /// Where paiosd.toml and services.d/ live.
    #[arg(long, global = true, env = "PAIOS_CONFIG_DIR", value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Where the lock, the socket and the databases live.
    #[arg(long, global = true, env = "PAIOS_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Where service logs are written.
    #[arg(long, global = true, env = "PAIOS_LOG_DIR", value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Write paiosd's own log to stderr (the default on a terminal and under systemd).
    #[arg(long, global = true, conflicts_with = "log_file")]
    foreground: bool,
    /// Write paiosd's own log to <log-dir>/paiosd.log, rotated at 10 MiB, 5 kept (the
    /// default when stderr is neither a terminal nor the systemd journal, e.g. launchd).
    #[arg(long, global = true)]
    log_file: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the supervisor in the foreground (the default; what launchd or systemd starts).
    Run,
    /// Validate paiosd.toml and services.d/ and print one line per service; exit 1 on any error.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dirs = Dirs::resolve(cli.config_dir, cli.state_dir, cli.log_dir);
    let to_file = cli.log_file
        || !(cli.foreground
            || std::io::stderr().is_terminal()
            || std::env::var_os("JOURNAL_STREAM").is_some());
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&dirs),
        Command::Run => run(dirs, to_file),
    }
}

fn check(dirs: &Dirs) -> ExitCode {
    let config = paios::config::load(&dirs.config);
    for svc in config.services.values() {
        println!("{}", paios::config::summary(svc));
    }
    for error in &config.errors {
        eprintln!("error: {error}");
    }
    let n = config.services.len();
    if config.errors.is_empty() {
        println!("ok: {n} service(s) in {}", dirs.config.display());
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{} error(s); {n} valid service(s) in {}",
            config.errors.len(),
            dirs.config.display()
        );
        ExitCode::FAILURE
    }
}

fn run(dirs: Dirs, to_file: bool) -> ExitCode {
    if let Err(e) = dirs.create() {
        eprintln!(
            "paiosd: cannot create {} or {}: {e}",
            dirs.state.display(),
            dirs.logs.display()
        );
        return ExitCode::FAILURE;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAIOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Flushes the file's queue when dropped at the end of this function.
    let _log_guard = if to_file {
        let (writer, guard) = paios::logs::daemon_log_writer(&dirs.logs);
        tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .with_env_filter(filter)
            .init();
        Some(guard)
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter)
            .init();
        None
    };
    let _lock = match lock::acquire(&dirs.lock_file()) {
        Ok(Acquired::Held(lock)) => lock,
        Ok(Acquired::Busy { holder }) => {
            // Exit 0 so that launchd or systemd does not restart this one in a loop.
            match holder {
                Some(pid) => eprintln!(
                    "paiosd is already running (pid {pid}) for {}",
                    dirs.state.display()
                ),
                None => eprintln!("paiosd is already running for {}", dirs.state.display()),
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("paiosd: cannot lock {}: {e}", dirs.lock_file().display());
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = paios::process::become_subreaper() {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    // One thread: services are spawned from it, which is what PR_SET_PDEATHSIG ties to.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("paiosd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(supervise(dirs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("paiosd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the supervisor with this process's signals: SIGTERM and SIGINT stop every
/// service and end paiosd, SIGHUP reloads the config.
async fn supervise(dirs: Dirs) -> std::io::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let why = tokio::select! {
                _ = sigterm.recv() => "SIGTERM",
                _ = sigint.recv() => "SIGINT",
                _ = sighup.recv() => {
                    // A reload already queued covers this one too.
                    let _ = reload_tx.try_send(());
                    continue;
                }
            };
            if !on_signal.is_cancelled() {
                tracing::info!("{why} received");
            }
            on_signal.cancel();
        }
    });
    paios::supervisor::run(dirs, shutdown, reload_rx)
        .await
        .map_err(std::io::Error::other)
}
