//! `follow` started before the log exists, through rotations and a restart, prints
//! every line once in order; `--all` prefixes names; filters and the line format.

use crate::logs_support;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use logs_support::*;
use paios::logs::read::{follow_with, tail, tail_filtered, Filter};
use paios::logs::Logs;

const T: Duration = Duration::from_secs(60);
/// More than any test here writes in total, so no line can be dropped even when a
/// loaded machine leaves the log threads behind: every line must be there exactly
/// once. Dropping is the subject of `logs_full_disk`.
const BOUND: usize = 4 << 20;
const ALL: usize = 1_000_000;

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn get(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// A follower thread, stopped and joined on drop.
struct Follower {
    stop: Arc<AtomicBool>,
    out: Shared,
    handle: Option<JoinHandle<io::Result<()>>>,
}

impl Follower {
    fn start(dir: &std::path::Path, names: &[&str], n: usize, prefix: bool) -> Follower {
        let stop = Arc::new(AtomicBool::new(false));
        let out = Shared::default();
        let (d, s, mut o) = (dir.to_path_buf(), stop.clone(), out.clone());
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let handle = std::thread::spawn(move || {
            follow_with(&d, &names, n, prefix, &Filter::default(), &s, &mut o)
        });
        Follower {
            stop,
            out,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap().unwrap();
        }
        self.out.get()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn follow_started_first_sees_every_line_once_through_rotations_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing exists yet: the follower waits for the file. It asks for every earlier
    // line, so whenever its thread gets going, the hand-over from the initial tail to
    // following must neither lose nor repeat a line.
    let f = Follower::start(dir.path(), &["svc"], ALL, false);
    let logs = Logs::start_with(dir.path(), BOUND);
    // 64 KiB files: the first run alone (288,894 bytes) rotates four times.
    let s = settings(64 * 1024, 20, false, false);
    let mut a = Service::start(&logs, "svc", 1, s, "exec seq 1 50000");
    a.wait(T);
    let mut b = Service::start(&logs, "svc", 2, s, "exec seq 50001 100000");
    b.wait(T);
    wait_for("the follower to reach the last line", T, || {
        f.out.get().ends_with(b"\n100000\n")
    });
    assert!(
        dir.path().join("svc.log.3").exists(),
        "expected at least three rotations"
    );
    let out = f.finish();
    assert_eq!(check_sequence(&lines(&out), 1, 100000), 0);
    assert_eq!(logs.dropped("svc"), 0);
    logs.close();
}

#[test]
fn follow_keeps_up_with_rotations_while_they_happen() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start_with(dir.path(), BOUND);
    let f = Follower::start(dir.path(), &["slow"], ALL, false);
    // A shell loop writes line by line over a few hundred milliseconds, so the
    // follower polls between rotations too.
    let s = settings(16 * 1024, 50, false, false);
    let script = "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); echo $i; done";
    let mut a = Service::start(&logs, "slow", 1, s, script);
    a.wait(T);
    wait_for("the follower to reach the last line", T, || {
        f.out.get().ends_with(b"\n30000\n")
    });
    assert!(
        dir.path().join("slow.log.5").exists(),
        "expected many rotations"
    );
    let out = f.finish();
    assert_eq!(check_sequence(&lines(&out), 1, 30000), 0);
    logs.close();
}

#[test]
fn follow_starts_with_the_last_n_lines_then_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start_with(dir.path(), BOUND);
    let s = settings(1 << 20, 5, false, false);
    let mut a = Service::start(&logs, "svc", 1, s, "exec seq 1 100");
    a.wait(T);
    wait_for("the first run", T, || {
        tail(dir.path(), "svc", 1).unwrap() == vec![b"100".to_vec()]
    });
    let f = Follower::start(dir.path(), &["svc"], 3, false);
    wait_for("the tail", T, || f.out.get() == b"98\n99\n100\n");
    let mut b = Service::start(&logs, "svc", 2, s, "exec seq 101 200");
    b.wait(T);
    wait_for("the new lines", T, || f.out.get().ends_with(b"\n200\n"));
    check_sequence(&lines(&f.finish()), 98, 200);
    logs.close();
}

#[test]
fn follow_all_puts_each_name_in_front() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start_with(dir.path(), BOUND);
    let f = Follower::start(dir.path(), &["a", "bb"], ALL, true);
    let s = settings(1 << 20, 5, false, false);
    let mut a = Service::start(&logs, "a", 1, s, "echo from-a");
    let mut b = Service::start(&logs, "bb", 2, s, "echo from-b");
    a.wait(T);
    b.wait(T);
    wait_for("both lines", T, || {
        let o = String::from_utf8(f.out.get()).unwrap();
        o.contains("a | from-a\n") && o.contains("bb | from-b\n")
    });
    drop(f);
    logs.close();
}

#[test]
fn follow_stops_when_output_fails() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "reader went away",
            ))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.log"), "line\n").unwrap();
    let r = paios::logs::read::follow(dir.path(), &["x".to_string()], 5, false, &mut Broken);
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
}

#[test]
fn timestamps_and_stream_marks_have_the_documented_format_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start_with(dir.path(), BOUND);
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let mut a = Service::start(
        &logs,
        "ts",
        1,
        settings(1 << 20, 5, true, true),
        "echo out; echo err >&2",
    );
    a.wait(T);
    wait_for("both lines", T, || {
        tail(dir.path(), "ts", 5).unwrap().len() == 2
    });
    let text = std::fs::read_to_string(dir.path().join("ts.log")).unwrap();
    let mut saw_err = false;
    for line in text.lines() {
        let (stamp, rest) = line.split_once(' ').unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(stamp).unwrap();
        assert!(t >= before, "{line}");
        // Milliseconds, then the offset (`Z` in UTC).
        assert_eq!(&stamp[19..20], ".", "{line}");
        assert!(stamp[20..23].bytes().all(|b| b.is_ascii_digit()), "{line}");
        assert!(rest == "out" || rest == "[stderr] err", "{line}");
        saw_err |= rest == "[stderr] err";
    }
    assert!(saw_err);
    let stderr_only = Filter {
        since: None,
        stderr_only: true,
    };
    let only = tail_filtered(dir.path(), "ts", 10, &stderr_only).unwrap();
    assert_eq!(only.len(), 1);
    assert!(only[0].ends_with(b"[stderr] err"));
    let future = Filter {
        since: Some((chrono::Utc::now() + chrono::TimeDelta::hours(1)).fixed_offset()),
        stderr_only: false,
    };
    assert!(tail_filtered(dir.path(), "ts", 10, &future)
        .unwrap()
        .is_empty());
    let past = Filter {
        since: Some(before.fixed_offset()),
        stderr_only: false,
    };
    assert_eq!(tail_filtered(dir.path(), "ts", 10, &past).unwrap().len(), 2);
    logs.close();
}
