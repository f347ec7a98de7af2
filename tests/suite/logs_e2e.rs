//! Issue 10 end to end: service output through a real `paiosd` into rotated
//! `<log-dir>/NAME.log*`, read back with a real `paiosctl logs` (tail and `-f`), the
//! dropped-lines count in `paiosctl status --json` on a full disk, and crash context in
//! `paiosctl ledger --json`. The library-level details (framing, queue, writer) are
//! tested in `logs_*.rs`; these tests prove the pieces are wired together.

use crate::common;
use crate::logs_support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{alive, text, Daemon};
use common::{fixture_path, needs, paiosctl_path, toml_str, wait_until, TestDirs};
use logs_support::{fill, Tmpfs};

const T: Duration = Duration::from_secs(30);

fn fixture() -> String {
    toml_str(&fixture_path().display().to_string())
}

/// Every file of `name`'s log, oldest first, concatenated.
fn all_logs(dir: &Path, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for i in (1..=1000).rev() {
        if let Ok(b) = std::fs::read(dir.join(format!("{name}.log.{i}"))) {
            out.extend(b);
        }
    }
    out.extend(std::fs::read(dir.join(format!("{name}.log"))).unwrap_or_default());
    out
}

fn lines_of(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

fn count(bytes: &[u8], line: &str) -> usize {
    lines_of(bytes).iter().filter(|l| *l == line).count()
}

/// `line a` … `line b`.
fn spew_lines(a: u64, b: u64) -> Vec<String> {
    (a..=b).map(|i| format!("line {i}")).collect()
}

/// A `paiosctl` child whose stdout is collected by a thread; killed by its PID on drop.
struct Ctl {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Ctl {
    fn spawn(d: &Daemon, args: &[&str]) -> Ctl {
        let mut child = Command::new(paiosctl_path())
            .args(d.dirs.args())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("paiosctl starts");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Ctl { child, out }
    }

    fn output(&self) -> Vec<u8> {
        self.out.lock().unwrap().clone()
    }

    /// Waits until the follower sleeps between two polls, which it first does once it
    /// has taken its first look at the logs.
    fn wait_polling(&self) {
        assert!(
            wait_until(T, || between_polls(self.child.id())),
            "paiosctl never started polling the logs"
        );
    }

    /// Waits until the output satisfies `cond`; panics with the output's tail if not.
    fn wait_for(&self, what: &str, cond: impl Fn(&[u8]) -> bool) {
        let ok = wait_until(T, || cond(&self.output()));
        if !ok {
            let out = self.output();
            let tail = &out[out.len().saturating_sub(2000)..];
            panic!(
                "paiosctl never printed {what}; last output:\n{}",
                text(tail)
            );
        }
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        // By PID: this is our own child, not yet reaped, so the PID is still ours.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `pid` is asleep in `nanosleep` (`/proc/PID/syscall` names the system call a
/// blocked process is in).
#[cfg(target_os = "linux")]
fn between_polls(pid: u32) -> bool {
    let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let number = call.split_whitespace().next().and_then(|n| n.parse().ok());
    number == Some(libc::SYS_clock_nanosleep) || number == Some(libc::SYS_nanosleep)
}

/// No `/proc` to tell: the tests that need it are ignored here.
#[cfg(not(target_os = "linux"))]
fn between_polls(_pid: u32) -> bool {
    false
}

/// The pipes (`pipe:[inode]`) process `pid` writes its stdout and stderr to.
fn output_pipes(pid: i32) -> Vec<PathBuf> {
    [1, 2]
        .iter()
        .filter_map(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
        .filter(|link| link.to_string_lossy().starts_with("pipe:"))
        .collect()
}

/// Whether process `pid` still has any of `pipes` open.
fn holds_any(pid: i32, pipes: &[PathBuf]) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| pipes.contains(&link)))
    })
}

fn vm_rss(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn rotation_at_full_speed_keeps_every_line_once_in_order_and_honours_keep() {
    let n = 60_000u64;
    let spew = |keep: u32| {
        format!(
            "command = [{f}, \"spew\", \"{n}\"]\n[restart]\npolicy = \"never\"\n\
             [logs]\nmax_size = \"64KiB\"\nkeep = {keep}\n",
            f = fixture()
        )
    };
    let d = Daemon::start(&[("kept", &spew(2)), ("all", &spew(50))]);
    let logs = d.dirs.logs.clone();
    for name in ["kept", "all"] {
        let last = format!("line {n}");
        assert!(
            wait_until(T, || lines_of(&all_logs(&logs, name)).last() == Some(&last)),
            "{name}: the last line never reached the log"
        );
        let row = d.row(name);
        assert_eq!(row["log_dropped"], 0, "{row}");
        assert_eq!(row["last_exit"]["code"], 0, "{row}");
    }

    // Every line once, in order, with nothing rotated away.
    let all = lines_of(&all_logs(&logs, "all"));
    assert_eq!(all, spew_lines(1, n));
    assert!(logs.join("all.log.3").exists(), "fewer than 3 rotations");

    // keep = 2: two rotated files and the current one, each within max_size and
    // ending on a line; together the newest lines, consecutive, through the last.
    assert!(logs.join("kept.log.2").exists());
    assert!(!logs.join("kept.log.3").exists(), "keep = 2 not honoured");
    for f in ["kept.log", "kept.log.1", "kept.log.2"] {
        let b = std::fs::read(logs.join(f)).unwrap();
        assert!(b.len() <= 64 * 1024, "{f} is {} bytes", b.len());
        assert_eq!(b.last(), Some(&b'\n'), "{f} does not end on a line");
    }
    let kept = lines_of(&all_logs(&logs, "kept"));
    let first: u64 = kept[0].strip_prefix("line ").unwrap().parse().unwrap();
    assert!(first > 1, "nothing was rotated away");
    assert_eq!(kept, spew_lines(first, n));

    // `paiosctl logs` reads across the files.
    let out = d.ctl(&["logs", "kept", "-n", "3"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lines_of(&out.stdout), spew_lines(n - 2, n));
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "needs /proc to see the follower polling"
)]
fn follow_started_first_prints_every_line_once_across_rotations_and_a_restart() {
    let dirs = TestDirs::new();
    let go = dirs.file("go");
    let more = dirs.file("more");
    let n = 20_000;
    // Waits for the go file so the follower is surely running before the first line,
    // and for the more file before a last line, the one the follower is caught up at.
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.01; done; echo \"run $$ start\"; \
         {f} spew {n}; echo \"run $$ end\"; \
         while [ ! -e {more} ]; do sleep 0.01; done; echo \"run $$ last\"; exec {f} sleeper",
        go = go.display(),
        more = more.display(),
        f = fixture_path().display()
    );
    dirs.write_service(
        "svc",
        &format!(
            "shell = {}\n[stop]\ngrace = \"2s\"\n[logs]\nmax_size = \"64KiB\"\nkeep = 100\n",
            toml_str(&script)
        ),
    );
    let d = Daemon::start_in(dirs);
    d.wait_state("svc", "running", T);
    let logs = d.dirs.logs.clone();
    assert!(!logs.join("svc.log").exists());
    let follower = Ctl::spawn(&d, &["logs", "svc", "-f"]);
    // It has taken its first look at the (missing) log.
    follower.wait_polling();
    std::fs::write(&go, b"").unwrap();

    let ends = |b: &[u8]| lines_of(b).iter().filter(|l| l.ends_with(" end")).count();
    assert!(
        wait_until(T, || ends(&all_logs(&logs, "svc")) == 1),
        "the first run never finished writing"
    );
    let out = d.ctl(&["restart", "svc"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        wait_until(T, || ends(&all_logs(&logs, "svc")) == 2),
        "the second run never finished writing"
    );
    follower.wait_for("both runs' last lines", |b| ends(b) == 2);
    // Anything printed twice shows up by the time the follower has caught up with the
    // line written after everything else.
    std::fs::write(&more, b"").unwrap();
    follower.wait_for("the last line", |b| {
        lines_of(b).last().is_some_and(|l| l.ends_with(" last"))
    });

    let files = all_logs(&logs, "svc");
    assert!(logs.join("svc.log.3").exists(), "fewer than 3 rotations");
    let printed = follower.output();
    assert_eq!(
        lines_of(&printed),
        lines_of(&files),
        "the follower's lines differ from the files'"
    );
    let lines = lines_of(&printed);
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].ends_with(" start"))
        .collect();
    assert_eq!(starts.len(), 2, "two runs");
    for &s in &starts {
        assert_eq!(lines[s + 1..s + 1 + n as usize], spew_lines(1, n)[..]);
        assert!(lines[s + 1 + n as usize].ends_with(" end"));
    }
    assert_eq!(lines.len(), 2 * (n as usize + 2) + 1);
}

fn marker_total(bytes: &[u8]) -> u64 {
    lines_of(bytes)
        .iter()
        .filter_map(|l| {
            l.strip_prefix("[paios: ")?
                .strip_suffix(" lines dropped]")?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn a_full_disk_drops_and_counts_without_slowing_the_service() {
    let Some(tmpfs) = needs("root to mount a tmpfs as the log dir", Tmpfs::mount("512k")) else {
        return;
    };
    let filler = fill(tmpfs.path());
    let mut dirs = TestDirs::new();
    dirs.logs = tmpfs.path().to_path_buf();
    let n = 3_000_000u64;
    let go = dirs.file("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.01; done; exec {} spew {n}",
        go.display(),
        fixture_path().display()
    );
    dirs.write_service(
        "flood",
        &format!(
            // Rotated files that fit the 512 KiB disk, so the 1 MiB buffer drains.
            "shell = {}\n[restart]\npolicy = \"never\"\n\
             [logs]\nmax_size = \"128KiB\"\nkeep = 1\n",
            toml_str(&script)
        ),
    );
    let d = Daemon::start_in(dirs);
    let running = d.wait_state("flood", "running", T);
    let pipes = output_pipes(running["pid"].as_i64().expect("the run's PID") as i32);
    assert_eq!(pipes.len(), 2, "the service's stdout and stderr: {pipes:?}");
    let before = vm_rss(d.pid());
    let started = Instant::now();
    std::fs::write(&go, b"").unwrap();

    // About 35 MB into a full disk: the service finishes at its own pace.
    let mut row = serde_json::Value::Null;
    let finished = wait_until(T, || {
        row = d.row("flood");
        row["last_exit"]["code"] == 0
    });
    assert!(finished, "the service did not finish on a full disk: {row}");
    let took = started.elapsed();
    let during = vm_rss(d.pid());
    // What was still in the pipes when the service exited is read (and dropped) after:
    // the count is final once paiosd has read both to their end and closed them.
    assert!(
        wait_until(T, || !holds_any(d.pid(), &pipes)),
        "paiosd never read the service's output to its end"
    );
    let dropped = d.row("flood")["log_dropped"].as_u64().unwrap_or(0);
    eprintln!(
        "full disk: {n} lines in {took:?}, {dropped} dropped, paiosd RSS {before} -> {during} bytes"
    );
    assert!(dropped > 0, "nothing dropped on a full disk: {row}");
    assert!(
        took < Duration::from_secs(20),
        "the service took {took:?} to write on a full disk"
    );
    // The buffer is 1 MiB; 35 MB went through. Allow for heap slack and the debug
    // build, but far below what keeping the lines would take.
    assert!(
        during < before + 16 * 1024 * 1024,
        "paiosd grew from {before} to {during} bytes"
    );
    let table = d.ctl(&["status", "flood"]);
    assert!(
        text(&table.stdout).contains(&format!("{dropped} log lines dropped")),
        "{}",
        text(&table.stdout)
    );

    // Space returns: what was held back is written, then the count.
    std::fs::remove_file(&filler).unwrap();
    let logs = tmpfs.path().to_path_buf();
    assert!(
        wait_until(T, || marker_total(&all_logs(&logs, "flood")) == dropped),
        "the drop marker never reached the log: {} of {dropped}",
        marker_total(&all_logs(&logs, "flood"))
    );
    // What is left (rotation deletes the oldest) is in order, each line at most once,
    // and the count comes last: it is written where the lines went missing.
    let all = lines_of(&all_logs(&logs, "flood"));
    let numbers: Vec<u64> = all
        .iter()
        .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "lines out of order"
    );
    assert!(numbers.len() as u64 + dropped <= n);
    assert!(
        all.last().is_some_and(|l| l.starts_with("[paios: ")),
        "{:?}",
        all.last()
    );
    drop(d);
    drop(tmpfs);
}

#[test]
fn binary_output_long_lines_closed_stdout_and_a_grandchild_are_all_logged() {
    let dirs = TestDirs::new();
    // Every byte value but `\n`, with invalid UTF-8 in it.
    let mut binary: Vec<u8> = (0u8..=255).filter(|&b| b != b'\n').collect();
    binary.extend_from_slice(b"\xff\xfe\xc3(");
    let bin_file = dirs.file("binary");
    std::fs::write(&bin_file, [&binary[..], b"\n"].concat()).unwrap();
    let f = fixture_path().display().to_string();
    let services = [
        (
            "bin",
            format!("cat {}; exec {f} sleeper", bin_file.display()),
        ),
        (
            "long",
            format!(
                "head -c 10000000 /dev/zero | tr '\\000' x; echo; echo after; exec {f} sleeper"
            ),
        ),
        (
            "closer",
            format!(
                "echo before-close; exec 1>&-; echo stderr-after-close >&2; sleep 0.3; \
                 echo still-running >&2; exec {f} sleeper"
            ),
        ),
        (
            "grand",
            "( trap 'echo grandchild-got-term' TERM; echo grandchild-up; \
             while :; do sleep 0.05; done ) & sleep 0.3; echo leader-exits"
                .to_string(),
        ),
    ];
    for (name, script) in &services {
        dirs.write_service(
            name,
            &format!(
                "shell = {}\n[restart]\npolicy = \"never\"\n[stop]\ngrace = \"1s\"\n\
                 [logs]\nmax_size = \"64MiB\"\n",
                toml_str(script)
            ),
        );
    }
    let d = Daemon::start_in(dirs);
    let logs = d.dirs.logs.clone();

    // Binary: byte-exact in the file and through `paiosctl logs`.
    let want = [&binary[..], b"\n"].concat();
    assert!(
        wait_until(T, || all_logs(&logs, "bin") == want),
        "binary line not kept byte-exact: {:?}",
        all_logs(&logs, "bin")
    );
    let out = d.ctl(&["logs", "bin", "-n", "1"]);
    assert_eq!(out.stdout, want);

    // A 10 MB line: split into pieces, nothing lost.
    assert!(
        wait_until(T, || lines_of(&all_logs(&logs, "long")).last()
            == Some(&"after".to_string())),
        "the line after the 10 MB one never arrived"
    );
    let long = all_logs(&logs, "long");
    let pieces = &long[..long.len() - b"after\n".len()];
    assert_eq!(pieces.iter().filter(|&&b| b == b'x').count(), 10_000_000);
    assert!(pieces
        .split(|&b| b == b'\n')
        .all(|l| l.len() <= paios::logs::MAX_LINE));
    assert!(pieces.iter().all(|&b| b == b'x' || b == b'\n'));

    // Closing stdout is not an exit: stderr is still logged, the service still runs.
    assert!(
        wait_until(T, || count(&all_logs(&logs, "closer"), "still-running")
            == 1),
        "stderr after closing stdout was not logged"
    );
    let closer = d.row("closer");
    assert_eq!(closer["state"], "running", "{closer}");
    assert_eq!(
        lines_of(&all_logs(&logs, "closer")),
        ["before-close", "stderr-after-close", "still-running"]
    );

    // The grandchild holds the pipe after its leader exited; what it writes while
    // paiosd ends the group is still logged, after the leader's last line.
    assert!(
        wait_until(T, || count(
            &all_logs(&logs, "grand"),
            "grandchild-got-term"
        ) == 1),
        "the grandchild's output after the leader's exit was not logged: {}",
        text(&all_logs(&logs, "grand"))
    );
    let grand = lines_of(&all_logs(&logs, "grand"));
    let pos = |l: &str| grand.iter().position(|x| x == l);
    assert!(
        pos("leader-exits") < pos("grandchild-got-term"),
        "{grand:?}"
    );
    assert!(pos("grandchild-up").is_some(), "{grand:?}");
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "needs /proc to see the follower polling"
)]
fn logs_all_follow_interleaves_services_with_their_names() {
    let dirs = TestDirs::new();
    let go = dirs.file("go");
    for name in ["alpha", "beta"] {
        let script = format!(
            "while [ ! -e {go} ]; do sleep 0.01; done; i=0; \
             while [ $i -lt 20 ]; do i=$((i+1)); echo {name} $i; sleep 0.05; done; \
             exec {f} sleeper",
            go = go.display(),
            f = fixture_path().display()
        );
        dirs.write_service(name, &format!("shell = {}\n", toml_str(&script)));
    }
    let d = Daemon::start_in(dirs);
    d.wait_state("alpha", "running", T);
    d.wait_state("beta", "running", T);
    // Neither has written yet: `--all -f` follows the configured services anyway.
    let follower = Ctl::spawn(&d, &["logs", "--all", "-f"]);
    follower.wait_polling();
    std::fs::write(&go, b"").unwrap();
    let both_done = |b: &[u8]| {
        let l = lines_of(b);
        l.contains(&"alpha | alpha 20".to_string()) && l.contains(&"beta | beta 20".to_string())
    };
    follower.wait_for("both services' last lines", both_done);
    let lines = lines_of(&follower.output());
    for name in ["alpha", "beta"] {
        let mine: Vec<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{name} | ")))
            .map(str::to_string)
            .collect();
        let want: Vec<String> = (1..=20).map(|i| format!("{name} {i}")).collect();
        assert_eq!(mine, want, "{name}'s lines once and in order");
    }
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("alpha | ") || l.starts_with("beta | ")),
        "every line has its service in front (paiosd's own log is not a service): {lines:?}"
    );
    let first = |p: &str| lines.iter().position(|l| l.starts_with(p)).unwrap();
    let last = |p: &str| lines.iter().rposition(|l| l.starts_with(p)).unwrap();
    assert!(
        first("beta") < last("alpha") && first("alpha") < last("beta"),
        "not interleaved: {lines:?}"
    );
}

#[test]
fn crash_context_in_the_ledger_holds_the_last_stderr_lines() {
    let script = "echo to-stdout; for i in 1 2 3 4 5 6; do echo \"dying words $i\" >&2; done; \
                  printf 'no newline at the end' >&2; exit 3";
    let d = Daemon::start(&[(
        "crasher",
        &format!(
            "shell = {}\n[restart]\npolicy = \"never\"\n",
            toml_str(script)
        ),
    )]);
    let mut context = String::new();
    let found = wait_until(T, || {
        let out = d.ctl(&["ledger", "--json"]);
        text(&out.stdout).lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            if v["service"] == "crasher" && v["outcome"] == "crashed" {
                context = v["context"].as_str().unwrap_or_default().to_string();
                true
            } else {
                false
            }
        })
    });
    assert!(found, "no crash of `crasher` in the ledger");
    let want: Vec<String> = (1..=6)
        .map(|i| format!("dying words {i}"))
        .chain(["no newline at the end".to_string()])
        .collect();
    assert_eq!(context.lines().collect::<Vec<_>>(), want);
    assert!(
        !context.contains("to-stdout"),
        "stdout is not crash context"
    );
}

#[test]
fn paiosd_logs_to_its_own_file_when_stderr_is_not_a_terminal() {
    let d = Daemon::start(&[("s", "shell = \"echo hi; sleep 300\"\n")]);
    d.wait_state("s", "running", T);
    let path = d.dirs.logs.join("paiosd.log");
    assert!(
        wait_until(T, || {
            std::fs::read_to_string(&path)
                .is_ok_and(|t| t.contains("started") && t.contains("service=\"s\""))
        }),
        "paiosd.log does not say it started s: {:?}",
        std::fs::read_to_string(&path)
    );
    let out = d.ctl(&["logs", "paiosd", "-n", "100"]);
    assert!(
        text(&out.stdout).contains("service=\"s\""),
        "{}",
        text(&out.stdout)
    );
    let pid = d.row("s")["pid"].as_i64().unwrap() as i32;
    assert!(alive(pid));
}

/// Holds the read end of a FIFO open and drains it, so a writer stuck opening it
/// goes on; closed on drop.
struct FifoReader {
    path: PathBuf,
}

impl Drop for FifoReader {
    fn drop(&mut self) {
        let path = self.path.clone();
        // Opening for reading releases a writer blocked in open(); read to the end so it
        // is never blocked on a full FIFO either.
        std::thread::spawn(move || {
            if let Ok(mut f) = std::fs::File::open(&path) {
                let _ = std::io::copy(&mut f, &mut std::io::sink());
            }
        });
    }
}

#[test]
fn a_stalled_log_file_holds_a_fast_service_only_briefly_then_drops() {
    let dirs = TestDirs::new();
    // A FIFO nobody reads: opening it for writing blocks, like a hung filesystem.
    let fifo = dirs.logs.join("stall.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let release = FifoReader { path: fifo.clone() };
    let go = dirs.file("go");
    let n = 1_000_000;
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.01; done; exec {} spew {n}",
        go.display(),
        fixture_path().display()
    );
    dirs.write_service(
        "stall",
        &format!(
            "shell = {}\n[restart]\npolicy = \"never\"\n",
            toml_str(&script)
        ),
    );
    let d = Daemon::start_in(dirs);
    d.wait_state("stall", "running", T);
    let started = Instant::now();
    std::fs::write(&go, b"").unwrap();
    let mut row = serde_json::Value::Null;
    let finished = wait_until(T, || {
        row = d.row("stall");
        row["last_exit"]["code"] == 0
    });
    let took = started.elapsed();
    assert!(
        finished,
        "the service did not finish while its log hung: {row}"
    );
    // About 12 MB against a 1 MiB buffer: held at most once for a moment, then
    // dropped at the service's own pace.
    assert!(
        took < Duration::from_secs(10),
        "the service took {took:?} while its log hung"
    );
    assert!(
        wait_until(T, || d.row("stall")["log_dropped"].as_u64() > Some(0)),
        "nothing was dropped while the log hung"
    );
    // Unblocked first, so paiosd's shutdown need not wait out the hung writer.
    drop(release);
    drop(d);
}

#[test]
fn logs_since_takes_the_same_durations_as_the_ledger() {
    let dirs = TestDirs::new();
    let stamp = |days: i64| {
        (chrono::Utc::now() - chrono::TimeDelta::days(days))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    std::fs::write(
        dirs.logs.join("kb.log"),
        format!(
            "{} ten days ago\n{} two days ago\n{} today\n",
            stamp(10),
            stamp(2),
            stamp(0)
        ),
    )
    .expect("write kb.log");
    let logs = |since: &str| {
        let out = Command::new(paiosctl_path())
            .args(dirs.args())
            .args(["logs", "kb", "--since", since])
            .stdin(Stdio::null())
            .output()
            .expect("paiosctl runs");
        let stdout = lines_of(&out.stdout);
        (out.status.code(), stdout, text(&out.stderr))
    };
    let (code, lines, err) = logs("1w");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].ends_with(" two days ago"), "{lines:?}");
    assert!(lines[1].ends_with(" today"), "{lines:?}");
    let (code, lines, err) = logs("1w5d");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    let (code, lines, err) = logs("1d1w");
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(err.contains("--since"), "{err}");
}
