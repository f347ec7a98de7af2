//! `paiosctl`: how a person talks to paiosd. Parses arguments, sends one request over
//! the control socket and prints the answer; `logs` and `ledger` read files directly
//! so they work while paiosd is down.
//!
//! Exit codes are an interface: 0 done, 1 the operation failed, 2 usage, 3 paiosd not
//! running. With `--json`, answers go to stdout as JSON (`status`: the array of
//! services; other verbs: the reply object) and every error, including "paiosd is not
//! running", is printed to stdout as `{"error":{"code":...,"message":...}}`.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde::Serialize;

use paios::control::client::{Client, ClientError};
use paios::control::protocol::{ErrorBody, Reply, Request, Response, Target};
use paios::control::render;
use paios::dirs::Dirs;
use paios::ledger::LedgerStats;
use paios::names::is_service_name;

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
    Logs(LogsArgs),
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
    Ledger(paios::ledger::cli::LedgerArgs),
    /// Find processes that look like a service but run outside supervision (strays),
    /// and other problems: probe ports held outside supervision, a stale socket, failed
    /// services. Exit 0 when clean, 1 when something was found.
    Doctor {
        /// End each stray with its service's stop sequence and record it in the ledger.
        #[arg(long)]
        kill: bool,
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

#[derive(Debug, Args)]
struct LogsArgs {
    /// The service whose log to show.
    #[arg(required_unless_present = "all")]
    name: Option<String>,
    /// Every service's log, each line prefixed with its service.
    #[arg(long, conflicts_with = "name")]
    all: bool,
    /// How many lines to show.
    #[arg(short = 'n', long = "lines", default_value_t = 20)]
    lines: usize,
    /// Keep printing new lines as they are written.
    #[arg(short, long)]
    follow: bool,
    /// Only lines written since then: `10m`, `2h`, `1d`, `1w` ago, or an RFC 3339 time.
    /// Needs `timestamps = true` in the service's `[logs]`; unstamped lines always show.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only what the service wrote to stderr. Needs `streams = true` in its `[logs]`.
    #[arg(long)]
    stderr: bool,
}

/// What a verb ends with: the exit code, everything printed already.
type Outcome = Result<i32, Failure>;

/// An error to report in the output mode (text or JSON) the user asked for.
struct Failure {
    code: String,
    message: String,
    exit: i32,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure {
            code: e.code().to_string(),
            message: e.to_string(),
            exit: e.exit_code(),
        }
    }
}

impl From<ErrorBody> for Failure {
    fn from(e: ErrorBody) -> Failure {
        Failure {
            code: e.code.as_str().to_string(),
            message: e.message,
            exit: 1,
        }
    }
}

fn failure(code: &str, message: impl Into<String>) -> Failure {
    Failure {
        code: code.to_string(),
        message: message.into(),
        exit: 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let code = match run(cli) {
        Ok(code) => code,
        Err(f) => {
            report(&f, json);
            f.exit
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn report(f: &Failure, json: bool) {
    if json {
        let value = serde_json::json!({"error": {"code": f.code, "message": f.message}});
        let _ = writeln!(io::stdout().lock(), "{value}");
    } else {
        let _ = writeln!(io::stderr().lock(), "paiosctl: {}", f.message);
    }
}

fn run(cli: Cli) -> Outcome {
    let dirs = Dirs::resolve(cli.config_dir, cli.state_dir, cli.log_dir);
    let json = cli.json;
    let socket = dirs.socket();
    match cli.command {
        Command::Status { names } => status(&socket, names, json),
        Command::Start(args) => ops(
            &socket,
            Request::Start {
                target: args.target(),
                wait: !args.no_wait,
            },
            json,
        ),
        Command::Stop(args) => ops(
            &socket,
            Request::Stop {
                target: args.target(),
                wait: !args.no_wait,
            },
            json,
        ),
        Command::Restart(args) => ops(
            &socket,
            Request::Restart {
                target: args.target(),
                wait: !args.no_wait,
            },
            json,
        ),
        Command::Reload => simple(&socket, Request::Reload, json),
        Command::Run { task, no_wait } => simple(
            &socket,
            Request::Run {
                name: task,
                wait: !no_wait,
            },
            json,
        ),
        Command::Ping => simple(&socket, Request::Ping, json),
        Command::Shutdown { timeout } => shutdown(&dirs, Duration::from_secs(timeout), json),
        Command::Version => version(&socket, json),
        Command::Logs(args) => logs(&dirs.logs, &dirs.config, &args, json),
        Command::Ledger(args) => Ok(paios::ledger::cli::main(&dirs.state, &args, json)),
        Command::Doctor { kill } => doctor(&dirs, kill, json),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "paiosctl", &mut io::stdout());
            Ok(0)
        }
        Command::Man { out_dir } => man(out_dir.as_deref()),
    }
}

/// One request on a fresh connection; an error answer becomes a [`Failure`].
fn ask(socket: &Path, request: &Request) -> Result<Reply, Failure> {
    let mut client = Client::connect(socket)?;
    match client.request(request)? {
        Response::Ok(reply) => Ok(reply),
        Response::Error(body) => Err(body.into()),
    }
}

fn print(text: &str) -> Outcome {
    let mut out = io::stdout().lock();
    // A closed pipe (`paiosctl status | head -1`) is not a failure of the operation.
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(failure("output", format!("cannot write output: {e}")))
        }
        _ => Ok(0),
    }
}

fn print_json<T: Serialize>(value: &T) -> Outcome {
    let text = serde_json::to_string(value)
        .map_err(|e| failure("output", format!("cannot encode output: {e}")))?;
    print(&format!("{text}\n"))
}

fn unexpected(reply: &Reply) -> Failure {
    failure(
        "protocol",
        format!(
            "paiosd answered with an unexpected reply ({reply:?}); {}",
            paios::control::protocol::VERSION_HINT
        ),
    )
}

fn colour() -> bool {
    io::stdout().is_terminal()
        && match std::env::var_os("NO_COLOR") {
            None => true,
            Some(v) => v.is_empty(),
        }
}

fn status(socket: &Path, names: Vec<String>, json: bool) -> Outcome {
    let reply = ask(socket, &Request::Status { names })?;
    let Reply::Status { services, ledger } = reply else {
        return Err(unexpected(&reply));
    };
    if json {
        print_json(&services)
    } else {
        let mut text = render::status_table(&services, chrono::Utc::now(), colour());
        // History that is not being written is worth a line under the table: the
        // ledger is what answers "what happened last night?".
        if let Some(line) = ledger.as_ref().and_then(LedgerStats::summary) {
            text.push_str(&line);
            text.push('\n');
        }
        print(&text)
    }
}

fn ops(socket: &Path, request: Request, json: bool) -> Outcome {
    let reply = ask(socket, &request)?;
    let Reply::Ops { results } = &reply else {
        return Err(unexpected(&reply));
    };
    let failed = results.iter().any(|r| !r.ok);
    if json {
        print_json(&reply)?;
    } else {
        print(&render::ops(results))?;
    }
    Ok(if failed { 1 } else { 0 })
}

/// `reload`, `run` and `ping`: one reply, printed.
fn simple(socket: &Path, request: Request, json: bool) -> Outcome {
    let reply = ask(socket, &request)?;
    let (text, ok) = match (&request, &reply) {
        (Request::Reload, Reply::Reload(report)) => (render::reload(report), true),
        (Request::Run { .. }, Reply::Run(result)) => {
            (render::run(result), render::run_succeeded(result))
        }
        (
            Request::Ping,
            Reply::Pong {
                version,
                pid,
                ledger,
            },
        ) => {
            let mut text = format!("pong from paiosd {version} (pid {pid})\n");
            if let Some(line) = ledger.as_ref().and_then(LedgerStats::summary) {
                text.push_str(&line);
                text.push('\n');
            }
            (text, true)
        }
        _ => return Err(unexpected(&reply)),
    };
    if json {
        print_json(&reply)?;
    } else {
        print(&text)?;
    }
    Ok(if ok { 0 } else { 1 })
}

fn version(socket: &Path, json: bool) -> Outcome {
    let ours = env!("CARGO_PKG_VERSION");
    let daemon = match ask(socket, &Request::Ping) {
        Ok(Reply::Pong {
            version,
            pid,
            ledger,
        }) => Some((version, pid, ledger)),
        _ => None,
    };
    if json {
        let paiosd = daemon.map(|(version, pid, ledger)| {
            serde_json::json!({"version": version, "pid": pid, "ledger": ledger})
        });
        print_json(&serde_json::json!({"paiosctl": ours, "paiosd": paiosd}))
    } else {
        let line = match daemon {
            Some((version, pid, ledger)) => {
                let mut line = format!("paiosd {version} (pid {pid})");
                if let Some(summary) = ledger.as_ref().and_then(LedgerStats::summary) {
                    line.push('\n');
                    line.push_str(&summary);
                }
                line
            }
            None => "paiosd not reachable".to_string(),
        };
        print(&format!("paiosctl {ours}\n{line}\n"))
    }
}

/// Sends `shutdown`, then waits until paiosd has let go of its instance lock, which it
/// holds until its last moment: then it has exited (or is about to, with nothing left
/// to do).
fn shutdown(dirs: &Dirs, timeout: Duration, json: bool) -> Outcome {
    let reply = ask(&dirs.socket(), &Request::Shutdown)?;
    let Reply::ShuttingDown { pid } = reply else {
        return Err(unexpected(&reply));
    };
    if !json {
        let _ = writeln!(
            io::stderr(),
            "paiosd (pid {pid}) is stopping every service..."
        );
    }
    let deadline = Instant::now() + timeout;
    loop {
        // The PID first: once paiosd is gone this never touches the lock, so a paiosd
        // started right after cannot meet paiosctl's momentary probe and think another
        // instance runs. The lock covers a paiosd that exited but is not yet reaped.
        if process_gone(pid) {
            break;
        }
        match lock_released(&dirs.lock_file()) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                return Err(failure(
                    "lock",
                    format!("cannot check {}: {e}", dirs.lock_file().display()),
                ))
            }
        }
        if Instant::now() >= deadline {
            return Err(failure(
                "timeout",
                format!(
                    "paiosd (pid {pid}) still runs after {}s; its services may have a long stop grace",
                    timeout.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if json {
        print_json(&serde_json::json!({"kind": "shut_down", "pid": pid}))
    } else {
        print(&format!("paiosd (pid {pid}) has exited\n"))
    }
}

fn process_gone(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Whether nobody holds the instance lock. Opens the file read-only and takes a shared
/// lock for a moment, so the file's content (the holder's PID) is left alone.
fn lock_released(path: &Path) -> io::Result<bool> {
    use nix::fcntl::{Flock, FlockArg};
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_released_on_drop) => Ok(true),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(false),
        Err((_, e)) => Err(e.into()),
    }
}

fn logs(dir: &Path, config: &Path, args: &LogsArgs, json: bool) -> Outcome {
    let names: Vec<String> = match &args.name {
        Some(name) if !is_service_name(name) => {
            return Err(failure(
                "bad_request",
                format!("`{name}` is not a service name (letters, digits, `-`, `_`)"),
            ))
        }
        Some(name) => vec![name.clone()],
        None if args.follow => {
            // Configured services that have not written yet are followed too, so
            // their first lines show up.
            let mut names = logged_services(dir)?;
            names.extend(paios::config::load(config).services.into_keys());
            names.sort();
            names.dedup();
            names
        }
        None => logged_services(dir)?,
    };
    let prefix = args.all;
    let since = match &args.since {
        Some(text) => Some(
            paios::logs::read::parse_since(text, chrono::Utc::now())
                .map_err(|e| failure("bad_request", e.to_string()))?,
        ),
        None => None,
    };
    let filter = paios::logs::read::Filter {
        since,
        stderr_only: args.stderr,
    };
    if args.follow {
        let mut out: Box<dyn Write> = if json {
            let service = if prefix { None } else { names.first().cloned() };
            Box::new(JsonLines::new(service, io::stdout()))
        } else {
            Box::new(io::stdout())
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        return match paios::logs::read::follow_with(
            dir, &names, args.lines, prefix, &filter, &stop, &mut out,
        ) {
            Ok(()) => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
            Err(e) => Err(failure(
                "logs",
                format!("cannot follow logs in {}: {e}", dir.display()),
            )),
        };
    }
    // Bytes as the service wrote them (like `-f`): a log need not be UTF-8.
    let mut text: Vec<u8> = Vec::new();
    for name in &names {
        let lines =
            paios::logs::read::tail_filtered(dir, name, args.lines, &filter).map_err(|e| {
                failure(
                    "logs",
                    format!(
                        "cannot read {}: {e}",
                        paios::logs::log_path(dir, name).display()
                    ),
                )
            })?;
        for line in lines {
            if json {
                let line = String::from_utf8_lossy(&line);
                let value =
                    serde_json::json!({"service": name, "line": line.trim_end_matches('\r')});
                text.extend_from_slice(value.to_string().as_bytes());
            } else {
                if prefix {
                    text.extend_from_slice(format!("{name} | ").as_bytes());
                }
                text.extend_from_slice(&line);
            }
            text.push(b'\n');
        }
    }
    let mut out = io::stdout().lock();
    match out.write_all(&text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(failure("output", format!("cannot write output: {e}")))
        }
        _ => Ok(0),
    }
}

/// The services that have a current log file, for `logs --all`: works without paiosd.
fn logged_services(dir: &Path) -> Result<Vec<String>, Failure> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| failure("logs", format!("cannot list {}: {e}", dir.display())))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_suffix(".log")
                // paiosd's own log is not a service's: `paiosctl logs paiosd` shows it.
                .filter(|stem| is_service_name(stem) && *stem != "paiosd")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Turns followed log output into one JSON object per line.
struct JsonLines<W: Write> {
    service: Option<String>,
    pending: Vec<u8>,
    out: W,
}

impl<W: Write> JsonLines<W> {
    fn new(service: Option<String>, out: W) -> JsonLines<W> {
        JsonLines {
            service,
            pending: Vec::new(),
            out,
        }
    }
}

impl<W: Write> Write for JsonLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]);
            let value =
                serde_json::json!({"service": self.service, "line": text.trim_end_matches('\r')});
            writeln!(self.out, "{value}")?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn man(out_dir: Option<&Path>) -> Outcome {
    let page = clap_mangen::Man::new(Cli::command());
    let mut bytes = Vec::new();
    page.render(&mut bytes)
        .map_err(|e| failure("output", format!("cannot render the man page: {e}")))?;
    match out_dir {
        None => print(&String::from_utf8_lossy(&bytes)),
        Some(dir) => {
            let path = dir.join("paiosctl.1");
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&path, &bytes))
                .map_err(|e| failure("output", format!("cannot write {}: {e}", path.display())))?;
            print(&format!("{}\n", path.display()))
        }
    }
}

/// `doctor`: reads the config, asks paiosd (when it runs) which groups it supervises,
/// else takes them from `state.sqlite`, and reports. `--kill` ends the strays here, in
/// this process, and records each as `stray_killed` by opening the ledger directly
/// (the writer is closed, flushing, before exit): it works while paiosd is down, and
/// paiosd's own ledger writer and this one share the file through SQLite's locking.
fn doctor(dirs: &Dirs, kill: bool, json: bool) -> Outcome {
    use paios::doctor::{self, Problem, Report};

    let config = paios::config::load(&dirs.config);
    let mut report = Report::default();
    for e in &config.errors {
        report.problems.push(Problem {
            kind: "config".into(),
            service: None,
            detail: e.to_string(),
        });
    }
    let (supervision, status_rows, records_problem) = supervised(dirs);
    if let Some(detail) = records_problem {
        report.problems.push(Problem {
            kind: "records".into(),
            service: None,
            detail,
        });
    }
    match &status_rows {
        Some(rows) => doctor::failed_services(rows, &mut report),
        None => report
            .notes
            .push("paiosd is not running: failed services not checked".into()),
    }
    report
        .notes
        .push("ledger pending writes: not exposed by paiosd; not checked".into());
    let mut strays = doctor::strays(&config.services, &dirs.state, &supervision);
    if !strays.is_empty() {
        // A run that started while the processes were listed is no stray: ask again and
        // keep only what is still outside supervision.
        let (again, _, _) = supervised(dirs);
        strays.retain(|s| !again.pgids.contains(&s.pgid));
    }
    report.strays = strays;
    doctor::problems(&config.services, &dirs.socket(), &supervision, &mut report);

    let mut ended = Vec::new();
    if kill && !report.strays.is_empty() {
        ended = doctor::end_strays(&report.strays, &config.services);
        let ledger = paios::ledger::Ledger::open(&dirs.ledger_db(), config.global.ledger);
        for e in &ended {
            ledger.record(paios::ledger::Record::Event(
                paios::ledger::EventRecord::new(
                    &e.stray.service,
                    "service",
                    "stray_killed",
                    Some(doctor::describe_ended(e)),
                    chrono::Utc::now(),
                ),
            ));
        }
        ledger.close(Duration::from_secs(5));
    }
    let code = if report.is_clean() { 0 } else { 1 };
    if json {
        print_json(&serde_json::json!({
            "clean": report.is_clean(),
            "strays": report.strays,
            "problems": report.problems,
            "notes": report.notes,
            "ended": ended,
        }))?;
    } else {
        print(&render_doctor(&report, &ended, kill))?;
    }
    Ok(code)
}

/// The groups paiosd supervises: from `status` when it runs, plus the live runs in
/// `state.sqlite` (escaped groups included; while paiosd is down, what its next start
/// will sweep). Also paiosd's status rows, and a problem reading the records.
fn supervised(
    dirs: &Dirs,
) -> (
    paios::doctor::Supervision,
    Option<Vec<paios::control::protocol::ServiceStatus>>,
    Option<String>,
) {
    let mut supervision = paios::doctor::Supervision::default();
    let mut status_rows = None;
    if let Ok(mut client) = Client::connect_timeout(&dirs.socket(), Duration::from_secs(5)) {
        if let Ok(Response::Ok(Reply::Pong { pid, .. })) = client.request(&Request::Ping) {
            supervision.exclude.insert(pid as i32);
        }
        if let Ok(Response::Ok(Reply::Status { services, .. })) =
            client.request(&Request::Status { names: Vec::new() })
        {
            supervision
                .pgids
                .extend(services.iter().filter_map(|s| s.pgid));
            status_rows = Some(services);
        }
    }
    let mut problem = None;
    if dirs.state_db().exists() {
        match paios::state::StateDb::open(&dirs.state_db()).and_then(|db| db.live_runs()) {
            Ok(runs) => supervision.pgids.extend(runs.iter().map(|r| r.pgid)),
            Err(e) => problem = Some(format!("cannot read the live runs: {e}")),
        }
    }
    (supervision, status_rows, problem)
}

fn render_doctor(
    report: &paios::doctor::Report,
    ended: &[paios::doctor::Ended],
    kill: bool,
) -> String {
    let mut out = String::new();
    if report.strays.is_empty() {
        out.push_str("no strays\n");
    } else {
        out.push_str(&format!(
            "{} stray process{} (looks like a service, outside supervision):\n",
            report.strays.len(),
            if report.strays.len() == 1 { "" } else { "es" }
        ));
        for s in &report.strays {
            let age = s.age_s.map_or("?".to_string(), |a| format!("{a}s"));
            out.push_str(&format!(
                "  {:>7}  {:<16} age {:>7}  ({})  {}\n",
                s.pid,
                s.service,
                age,
                s.why,
                s.argv.join(" ")
            ));
        }
        if !kill {
            out.push_str("  end them with `paiosctl doctor --kill`\n");
        }
    }
    for e in ended {
        out.push_str(&format!("ended {}\n", paios::doctor::describe_ended(e)));
    }
    for p in &report.problems {
        match &p.service {
            Some(name) => out.push_str(&format!("problem ({}) {name}: {}\n", p.kind, p.detail)),
            None => out.push_str(&format!("problem ({}): {}\n", p.kind, p.detail)),
        }
    }
    for n in &report.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_lines_splits_across_writes() {
        let mut out = Vec::new();
        {
            let mut w = JsonLines::new(Some("kb".into()), &mut out);
            w.write_all(b"hel").expect("write");
            w.write_all(b"lo\r\nwor").expect("write");
            w.write_all(b"ld\n").expect("write");
        }
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "{\"line\":\"hello\",\"service\":\"kb\"}\n{\"line\":\"world\",\"service\":\"kb\"}\n"
        );
    }
}
