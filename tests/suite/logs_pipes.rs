//! What a service can do to its pipes: binary output, a 10 MB line, closing stdout
//! while running, a grandchild that outlives the leader; and the stderr tail that
//! gives the ledger its crash context.

use crate::logs_support;

use std::time::{Duration, Instant};

use logs_support::*;
use paios::logs::{Logs, MAX_LINE};

const T: Duration = Duration::from_secs(60);

fn log(dir: &std::path::Path, name: &str) -> Vec<u8> {
    read_all(dir, name)
}

fn has_line(dir: &std::path::Path, name: &str, want: &[u8]) -> bool {
    lines(&log(dir, name)).contains(&want)
}

#[test]
fn binary_output_is_kept_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bin.dat");
    let mut data: Vec<u8> = (0..=255u8).cycle().take(256 * 64).collect();
    let mut rng = fastrand::Rng::with_seed(7);
    data.extend((0..300_000).map(|_| rng.u8(..)));
    data.push(b'\n');
    std::fs::write(&src, &data).unwrap();
    let logs_dir = dir.path().join("logs");
    let logs = Logs::start(&logs_dir);
    let mut svc = Service::start(
        &logs,
        "bin",
        1,
        settings(1 << 30, 1, false, false),
        &format!("exec cat '{}'", src.display()),
    );
    svc.wait(T);
    wait_for("all bytes", T, || log(&logs_dir, "bin").len() >= data.len());
    assert!(
        log(&logs_dir, "bin") == data,
        "the log differs from what was written"
    );
    logs.close();
}

#[test]
fn a_10_mb_line_is_split_but_every_byte_is_kept_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // A buffer larger than the line: this is about splitting, and on a loaded machine
    // the default 1 MiB may rightly drop pieces of a writer this fast.
    let logs = Logs::start_with(dir.path(), 32 << 20);
    // The digits of 1..=1600000 without newlines: one line of 10,088,896 bytes,
    // ending without `\n`, across rotations of 4 MiB.
    let mut svc = Service::start(
        &logs,
        "long",
        1,
        settings(4 << 20, 5, false, false),
        "seq 1 1600000 | tr -d '\\n'",
    );
    svc.wait(T);
    let want: Vec<u8> = (1..=1_600_000u64)
        .flat_map(|i| i.to_string().into_bytes())
        .collect();
    wait_for("the whole line", T, || {
        assert_eq!(logs.dropped("long"), 0);
        let got = log(dir.path(), "long");
        got.len() >= want.len() && got.ends_with(b"1600000\n")
    });
    let got = log(dir.path(), "long");
    let pieces = lines(&got);
    assert!(pieces.len() >= want.len() / MAX_LINE);
    assert!(pieces.iter().all(|p| p.len() <= MAX_LINE));
    assert!(pieces.concat() == want, "bytes lost or reordered");
    assert!(
        dir.path().join("long.log.2").exists(),
        "expected the line to span rotated files"
    );
    logs.close();
}

#[test]
fn stdout_and_stderr_share_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start(dir.path());
    let mut svc = Service::start(
        &logs,
        "both",
        1,
        settings(1 << 20, 1, false, true),
        "echo o; echo e >&2",
    );
    svc.wait(T);
    wait_for("both lines", T, || {
        has_line(dir.path(), "both", b"o") && has_line(dir.path(), "both", b"[stderr] e")
    });
    logs.close();
}

#[test]
fn stderr_tail_answers_after_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start(dir.path());
    let script = "i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo err$i >&2; done; echo out; exit 3";
    let mut svc = Service::start(
        &logs,
        "crash",
        7,
        settings(1 << 20, 1, false, false),
        script,
    );
    let started = Instant::now();
    let rx = logs.stderr_tail(7, 5, Duration::from_secs(30));
    let tail = rx.blocking_recv().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered by the deadline, not by end of file"
    );
    assert_eq!(tail, vec!["err96", "err97", "err98", "err99", "err100"]);
    assert_eq!(svc.wait(T).code(), Some(3));
    // Asked again after the run ended: answered at once from what was kept.
    let again = logs
        .stderr_tail(7, 2, Duration::from_secs(30))
        .blocking_recv()
        .unwrap();
    assert_eq!(again, vec!["err99", "err100"]);
    // An unknown run: empty, at once.
    assert!(logs
        .stderr_tail(999, 5, Duration::from_secs(30))
        .blocking_recv()
        .unwrap()
        .is_empty());
    logs.close();
}

#[test]
fn stderr_tail_answers_at_the_deadline_while_the_pipe_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start(dir.path());
    let mut svc = Service::start(
        &logs,
        "hold",
        1,
        settings(1 << 20, 1, false, false),
        "echo first >&2; printf 'unfinished' >&2; exec sleep 30",
    );
    let started = Instant::now();
    // Dropped receivers must not disturb the thread.
    drop(logs.stderr_tail(1, 5, Duration::from_millis(10)));
    wait_for("the first line", T, || {
        has_line(dir.path(), "hold", b"first")
    });
    let tail = logs
        .stderr_tail(1, 5, Duration::from_millis(300))
        .blocking_recv()
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert_eq!(tail, vec!["first", "unfinished"]);
    assert!(svc.running());
    logs.close();
    // Closing ends the unfinished line in the file.
    assert!(has_line(dir.path(), "hold", b"unfinished"));
}

#[test]
fn a_service_that_closes_stdout_keeps_running_and_logging() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start(dir.path());
    let mut svc = Service::start(
        &logs,
        "half",
        1,
        settings(1 << 20, 1, false, false),
        "echo before; exec 1>&-; echo still >&2; sleep 0.2; echo later >&2; exec sleep 30",
    );
    wait_for("the line after stdout closed", T, || {
        has_line(dir.path(), "half", b"later")
    });
    assert!(svc.running());
    let l = log(dir.path(), "half");
    assert_eq!(lines(&l), vec![&b"before"[..], b"still", b"later"]);
    logs.close();
}

#[test]
fn a_grandchild_holding_the_pipe_is_drained_after_the_leader_exits() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start(dir.path());
    let mut svc = Service::start(
        &logs,
        "gc",
        1,
        settings(1 << 20, 1, false, false),
        "(sleep 0.3; echo late; echo late-err >&2; exec sleep 30) & echo early",
    );
    assert!(svc.wait(T).success());
    wait_for("the grandchild's lines", T, || {
        has_line(dir.path(), "gc", b"late") && has_line(dir.path(), "gc", b"late-err")
    });
    assert_eq!(lines(&log(dir.path(), "gc"))[0], b"early");
    // The grandchild still holds the pipes: the tail answers at its deadline.
    let tail = logs
        .stderr_tail(1, 5, Duration::from_millis(100))
        .blocking_recv()
        .unwrap();
    assert_eq!(tail, vec!["late-err"]);
    logs.close();
}

#[test]
fn attach_after_close_closes_the_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start(dir.path());
    logs.close();
    logs.close();
    let mut svc = Service::start(
        &logs,
        "late",
        1,
        settings(1 << 20, 1, false, false),
        "echo x; echo y",
    );
    // The shell sees a broken pipe; what matters is that nothing hangs.
    svc.wait(T);
    assert!(logs
        .stderr_tail(1, 5, Duration::from_secs(5))
        .blocking_recv()
        .is_err());
}

#[test]
fn dropping_every_handle_flushes_what_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start(dir.path());
    let other = logs.clone();
    let _svc = Service::start(
        &logs,
        "gone",
        1,
        settings(1 << 20, 1, false, false),
        "echo whole; printf 'half'; exec sleep 30",
    );
    wait_for("the whole line", T, || {
        has_line(dir.path(), "gone", b"whole")
    });
    drop(logs);
    drop(other);
    // No close(): the last handle going away stops the threads the same way.
    wait_for("the unfinished line", T, || {
        has_line(dir.path(), "gone", b"half")
    });
}
