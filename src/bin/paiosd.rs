//! `paiosd`: the supervisor daemon. Parses its arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&dirs),
        Command::Run => run(dirs),
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

fn run(dirs: Dirs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAIOS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = dirs.create() {
        eprintln!(
            "paiosd: cannot create {} or {}: {e}",
            dirs.state.display(),
            dirs.logs.display()
        );
        return ExitCode::FAILURE;
    }
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
    match runtime.block_on(paios::supervisor::run(dirs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("paiosd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
