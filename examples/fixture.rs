//! The one fixture program the test suites and benchmarks run as a "service": each mode
//! (argv[1]) is one behaviour a supervisor must cope with — sleeping, crashing,
//! ignoring SIGTERM, forking grandchildren, leaving the group, serving or hanging on
//! HTTP/TCP, growing memory, flooding stdout.
//!
//! It uses std, libc and nix only, so it starts in a millisecond. Every process it
//! becomes appends its PID to the file named by `FIXTURE_PIDS` (when set), so a test
//! can find, and clean up, every process by PID and never by name. Modes that bind a
//! port print `port N` on stdout and write N to `FIXTURE_PORT` (when set).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: fixture MODE [ARGS]
modes:
  sleeper                   sleep forever
  crasher [code] [after_ms] print `crash CODE` to stderr, exit CODE after a delay (1, 0)
  stubborn                  ignore SIGTERM, print `ready`, sleep forever
  forker [n]                start n children that each start a grandchild; print their
                            PIDs one per line, then sleep (n = 2)
  forker-exit [n]           like forker, but the leader exits after printing
  setsid                    start a child that leaves the group with setsid(); print its
                            PID; both sleep
  http [port]               HTTP/1.0 server answering 200 on every path (port 0 = any)
  http-hang [port]          accept connections, never answer
  tcp [port]                listen and accept, never answer
  alloc [MiB/s] [max MiB]   allocate and touch memory steadily (10, 1024), then sleep
  spew [lines]              write numbered lines to stdout as fast as possible, exit 0
  exit [code]               exit at once with CODE (0)
  inspect [VAR]             print cwd, $VAR, stdin size, pid/pgid, blocked and ignored
                            signals, then exit 0";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let rest = args.get(1..).unwrap_or(&[]);
    record_pid();
    let code = match run(mode, rest) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("fixture {mode}: {msg}\n{USAGE}");
            2
        }
    };
    std::process::exit(code);
}

fn run(mode: &str, args: &[String]) -> Result<i32, String> {
    match mode {
        "sleeper" => sleep_forever(),
        "crasher" => {
            let code = arg(args, 0, 1)?;
            let after_ms: u64 = arg(args, 1, 0)?;
            log_event("start");
            eprintln!("crash {code}");
            std::thread::sleep(Duration::from_millis(after_ms));
            log_event("exit");
            Ok(code)
        }
        "stubborn" => {
            // SAFETY: SIG_IGN installs no handler code; the program is single-threaded here.
            unsafe {
                nix::sys::signal::signal(
                    nix::sys::signal::Signal::SIGTERM,
                    nix::sys::signal::SigHandler::SigIgn,
                )
            }
            .map_err(|e| format!("cannot ignore SIGTERM: {e}"))?;
            say("ready");
            sleep_forever()
        }
        "forker" | "forker-exit" => {
            let n: usize = arg(args, 0, 2)?;
            forker(n)?;
            if mode == "forker-exit" {
                return Ok(0);
            }
            sleep_forever()
        }
        "forker-child" => {
            // Started by `forker`: start one grandchild, report both PIDs, sleep.
            let grandchild = start_self(&["sleeper"])?;
            say(&format!("{}\n{}", std::process::id(), grandchild));
            sleep_forever()
        }
        "setsid" => {
            let mut child = Command::new(self_exe()?)
                .arg("setsid-child")
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start child: {e}"))?;
            let out = child.stdout.take().ok_or("child has no stdout")?;
            let mut line = String::new();
            BufReader::new(out)
                .read_line(&mut line)
                .map_err(|e| format!("reading child: {e}"))?;
            say(line.trim());
            sleep_forever()
        }
        "setsid-child" => {
            nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
            say(&std::process::id().to_string());
            sleep_forever()
        }
        "http" | "http-hang" | "tcp" => {
            let port: u16 = arg(args, 0, 0)?;
            let listener = TcpListener::bind(("127.0.0.1", port))
                .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
            let port = listener
                .local_addr()
                .map_err(|e| format!("local_addr: {e}"))?
                .port();
            if let Ok(path) = std::env::var("FIXTURE_PORT") {
                std::fs::write(&path, format!("{port}\n"))
                    .map_err(|e| format!("cannot write {path}: {e}"))?;
            }
            say(&format!("port {port}"));
            serve(&listener, mode == "http")
        }
        "alloc" => {
            let rate: usize = arg(args, 0, 10)?;
            let max: usize = arg(args, 1, 1024)?;
            alloc(rate, max);
            sleep_forever()
        }
        "spew" => {
            let lines: u64 = arg(args, 0, 1000)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for i in 1..=lines {
                if writeln!(out, "line {i}").is_err() {
                    return Ok(1);
                }
            }
            Ok(if out.flush().is_err() { 1 } else { 0 })
        }
        "exit" => arg(args, 0, 0),
        "inspect" => {
            inspect(args.first().map(String::as_str));
            Ok(0)
        }
        "" => Err("no mode given".into()),
        other => Err(format!("unknown mode {other:?}")),
    }
}

/// The `i`th argument parsed, or `default` when absent.
fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> Result<T, String> {
    match args.get(i) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| format!("bad argument {s:?}")),
    }
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// One line to stdout, flushed at once so a reader sees it while the program sleeps.
/// A closed stdout is ignored: the process must go on being what its mode says.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn append(path: &str, line: &str) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut file) = file {
        // One short write with O_APPEND: lines from many processes never interleave.
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

fn record_pid() {
    if let Ok(path) = std::env::var("FIXTURE_PIDS") {
        append(&path, &std::process::id().to_string());
    }
}

fn log_event(what: &str) {
    if let Ok(path) = std::env::var("FIXTURE_LOG") {
        append(
            &path,
            &format!("{what} {} {}", std::process::id(), unix_ns()),
        );
    }
}

fn self_exe() -> Result<std::path::PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))
}

/// Starts this program in `args`' mode in the same process group; returns its PID.
/// The child is never waited for: it is meant to outlive or be killed with the group.
fn start_self(args: &[&str]) -> Result<u32, String> {
    let child = Command::new(self_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {args:?}: {e}"))?;
    Ok(child.id())
}

/// Starts `n` children, each of which starts one grandchild, and prints all 2n PIDs once
/// every one of them exists (each child reports only after its grandchild is running).
fn forker(n: usize) -> Result<(), String> {
    let mut pids = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let mut child = Command::new(self_exe()?)
            .arg("forker-child")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start child: {e}"))?;
        let out = child.stdout.take().ok_or("child has no stdout")?;
        let mut lines = BufReader::new(out).lines();
        for _ in 0..2 {
            let line = lines
                .next()
                .ok_or("child ended before reporting")?
                .map_err(|e| format!("reading child: {e}"))?;
            pids.push(line.trim().to_string());
        }
    }
    say(&pids.join("\n"));
    Ok(())
}

fn serve(listener: &TcpListener, answer: bool) -> ! {
    let mut held: Vec<TcpStream> = Vec::new();
    loop {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        if !answer {
            // Keep it open and silent, like a service that hung mid-request.
            held.push(stream);
            continue;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n",
        );
    }
}

/// Allocates `rate` MiB per second in tenth-of-a-second steps, touching every page so it
/// counts as resident, until `max` MiB are held.
fn alloc(rate: usize, max: usize) {
    const MIB: usize = 1 << 20;
    let step = (rate * MIB / 10).max(4096);
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    while total < max * MIB {
        let mut block = vec![0u8; step];
        for byte in block.iter_mut().step_by(4096) {
            *byte = 1;
        }
        total += block.len();
        held.push(block);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::hint::black_box(&held);
}

/// What a supervisor promised the child: working directory, environment, stdin from
/// /dev/null, its own group, and a clean signal state.
fn inspect(var: Option<&str>) {
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("?{e}"));
    say(&format!("cwd {cwd}"));
    if let Some(var) = var {
        let value = std::env::var(var).unwrap_or_else(|_| "-unset-".into());
        say(&format!("env {value}"));
    }
    let mut stdin = Vec::new();
    let stdin_len = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(n) => n.to_string(),
        Err(e) => format!("error {e}"),
    };
    say(&format!("stdin {stdin_len}"));
    say(&format!(
        "pid {} pgid {}",
        std::process::id(),
        nix::unistd::getpgrp()
    ));
    let mut blocked = Vec::new();
    if let Ok(mask) = nix::sys::signal::SigSet::thread_get_mask() {
        blocked = nix::sys::signal::Signal::iterator()
            .filter(|s| mask.contains(*s))
            .map(|s| s.as_str())
            .collect();
    }
    say(&format!("blocked {}", blocked.join(",")));
    // The Rust runtime of this very program ignores SIGPIPE before `main`, so that one
    // says nothing about what was inherited.
    let ignored: Vec<&str> = nix::sys::signal::Signal::iterator()
        .filter(|&s| s != nix::sys::signal::Signal::SIGPIPE && is_ignored(s))
        .map(|s| s.as_str())
        .collect();
    say(&format!("ignored {}", ignored.join(",")));
}

fn is_ignored(signal: nix::sys::signal::Signal) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current disposition into `old`, which is
    // a zeroed, properly sized `sigaction` owned here.
    let rc = unsafe { libc::sigaction(signal as libc::c_int, std::ptr::null(), old.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: sigaction succeeded, so `old` is initialised.
    let old = unsafe { old.assume_init() };
    old.sa_sigaction == libc::SIG_IGN
}
