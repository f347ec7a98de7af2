//! Rotation under a writer at full speed: every line once, in order, across
//! `NAME.log*`; sizes within `max_size` plus one line; `keep` honoured.

use crate::logs_support;

use std::time::Duration;

use logs_support::*;
use paios::logs::Logs;

const T: Duration = Duration::from_secs(60);
/// More than any test here writes in total, so no line can be dropped even when a
/// loaded machine leaves the log threads behind: every line must be there exactly
/// once. Dropping is the subject of `logs_full_disk`.
const BOUND: usize = 4 << 20;

fn last_line_is(dir: &std::path::Path, name: &str, want: &[u8]) -> bool {
    let all = std::fs::read(dir.join(format!("{name}.log"))).unwrap_or_default();
    lines(&all).last().is_some_and(|l| *l == want)
}

#[test]
fn full_speed_writer_through_three_rotations_keeps_every_line_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start_with(dir.path(), BOUND);
    let max = 160 * 1024;
    // seq 1 100000 writes 588,895 bytes: three rotations at 160 KiB.
    let mut svc = Service::start(
        &logs,
        "fast",
        1,
        settings(max, 5, false, false),
        "exec seq 1 100000",
    );
    assert!(svc.wait(T).success());
    wait_for("the last line", T, || {
        last_line_is(dir.path(), "fast", b"100000")
    });

    let files = log_files(dir.path(), "fast");
    assert_eq!(files.len(), 4, "three rotations make four files: {files:?}");
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= max + 7, "{f:?} is {len} bytes");
        let b = std::fs::read(f).unwrap();
        assert_eq!(
            b.last(),
            Some(&b'\n'),
            "{f:?} does not end on a line boundary"
        );
    }
    let all = read_all(dir.path(), "fast");
    assert_eq!(check_sequence(&lines(&all), 1, 100000), 0);
    assert_eq!(logs.dropped("fast"), 0);
    logs.close();
}

#[test]
fn keep_is_honoured_and_the_newest_lines_survive() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start_with(dir.path(), BOUND);
    let max = 64 * 1024;
    let mut svc = Service::start(
        &logs,
        "kept",
        1,
        settings(max, 2, false, false),
        "exec seq 1 100000",
    );
    assert!(svc.wait(T).success());
    wait_for("the last line", T, || {
        last_line_is(dir.path(), "kept", b"100000")
    });
    let files = log_files(dir.path(), "kept");
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(!dir.path().join("kept.log.3").exists());
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= max + 7);
    }
    // What is kept is an unbroken run of the newest lines.
    let all = read_all(dir.path(), "kept");
    let ls = lines(&all);
    let first: u64 = std::str::from_utf8(ls[0]).unwrap().parse().unwrap();
    assert!(first > 1);
    check_sequence(&ls, first, 100000);
    logs.close();
}

#[test]
fn a_restarted_service_appends_to_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::start_with(dir.path(), BOUND);
    let s = settings(1 << 20, 5, false, false);
    let mut a = Service::start(&logs, "svc", 1, s, "exec seq 1 1000");
    a.wait(T);
    let mut b = Service::start(&logs, "svc", 2, s, "exec seq 1001 2000");
    b.wait(T);
    wait_for("the second run's lines", T, || {
        last_line_is(dir.path(), "svc", b"2000")
    });
    check_sequence(&lines(&read_all(dir.path(), "svc")), 1, 2000);
    logs.close();
}

#[test]
fn an_oversized_existing_log_is_rotated_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.log"), "x\n".repeat(1000)).unwrap();
    let logs = Logs::start_with(dir.path(), BOUND);
    let mut svc = Service::start(
        &logs,
        "old",
        1,
        settings(100, 3, false, false),
        "echo fresh",
    );
    svc.wait(T);
    wait_for("the new line", T, || {
        last_line_is(dir.path(), "old", b"fresh")
    });
    assert_eq!(
        std::fs::read(dir.path().join("old.log")).unwrap(),
        b"fresh\n"
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("old.log.1"))
            .unwrap()
            .len(),
        2000
    );
    logs.close();
}

#[test]
fn a_writer_faster_than_the_disk_waits_on_its_pipe_instead_of_losing_lines() {
    let dir = tempfile::tempdir().unwrap();
    // A buffer far smaller than the output: without holding the writer back on its
    // pipe while the disk keeps up, most lines would be dropped.
    let logs = Logs::start_with(dir.path(), 16 * 1024);
    let mut svc = Service::start(
        &logs,
        "outrun",
        1,
        settings(1 << 20, 10, true, false),
        "exec seq 1 300000",
    );
    assert!(svc.wait(T).success());
    wait_for("the last line", T, || {
        read_all(dir.path(), "outrun").ends_with(b" 300000\n")
    });
    let all = read_all(dir.path(), "outrun");
    // Strip the time stamps: what is left is every number once, in order.
    let bare: Vec<&[u8]> = lines(&all)
        .into_iter()
        .map(|l| l.splitn(2, |&b| b == b' ').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(check_sequence(&bare, 1, 300000), 0);
    assert_eq!(logs.dropped("outrun"), 0);
    let stats = logs.stats("outrun");
    assert!(stats.peak <= 16 * 1024, "{stats:?}");
    logs.close();
}
