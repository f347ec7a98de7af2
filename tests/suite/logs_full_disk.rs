//! A full disk never blocks a service: on a small tmpfs filled to the brim, a service
//! writing as fast as it can finishes at its own pace, paiosd's buffer stays within
//! its bound, the dropped lines are counted, and once space returns the count is
//! written into the log. Needs root to mount (see `common::needs`). Runs in a process of
//! its own, since it measures that process's memory.

use crate::common::{needs, ran_in_own_process};
use crate::logs_support;

use std::process::Command;
use std::time::{Duration, Instant};

use logs_support::*;
use paios::logs::{Logs, BUFFER_BOUND};

const T: Duration = Duration::from_secs(60);

/// Peak resident memory of this process, in bytes.
#[cfg(target_os = "linux")]
fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[cfg(not(target_os = "linux"))]
fn peak_rss() -> u64 {
    0
}

fn marker_counts(bytes: &[u8]) -> u64 {
    lines(bytes)
        .iter()
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter_map(|s| {
            s.strip_prefix("[paios: ")?
                .strip_suffix(" lines dropped]")?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn a_full_disk_drops_and_counts_lines_without_slowing_the_service() {
    // The memory bound is read from this process's peak RSS: no other test may share it.
    if ran_in_own_process(
        module_path!(),
        "a_full_disk_drops_and_counts_lines_without_slowing_the_service",
    ) {
        return;
    }
    let Some(fs) = needs("root to mount a tmpfs", Tmpfs::mount("512k")) else {
        return;
    };
    let dir = fs.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    let filler = fill(fs.path());

    // The same writer into a pipe drained by cat first, for its own pace.
    let script = "exec seq 1 2000000";
    let t0 = Instant::now();
    let direct = Command::new("/bin/sh")
        .args(["-c", &format!("{script} | cat >/dev/null")])
        .status()
        .unwrap();
    assert!(direct.success());
    let direct_time = t0.elapsed();

    let rss_before = peak_rss();
    let logs = Logs::start(&dir);
    let s = settings(100 * 1024, 2, false, false);
    let t1 = Instant::now();
    let mut svc = Service::start(&logs, "flood", 1, s, script);
    let mut peak_seen = 0;
    let deadline = Instant::now() + T;
    // The disk stays full the whole time: the service must finish anyway.
    while svc.running() {
        peak_seen = peak_seen.max(logs.stats("flood").bytes);
        assert!(
            Instant::now() < deadline,
            "the service was blocked by the full disk"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let logged_time = t1.elapsed();
    println!("seq 1 2000000 (14.8 MB): {direct_time:?} through cat, {logged_time:?} through paiosd onto a full disk");

    // The pipe may still hold what the service wrote last: wait for end of file, so
    // the count is final before space returns.
    logs.stderr_tail(svc.run_id, 0, T).blocking_recv().unwrap();
    let stats = logs.stats("flood");
    assert!(
        stats.dropped > 0,
        "nothing was dropped on a full disk: {stats:?}"
    );
    assert!(stats.peak <= BUFFER_BOUND, "{stats:?}");
    assert!(peak_seen <= BUFFER_BOUND);
    let grown = peak_rss().saturating_sub(rss_before);
    println!(
        "peak buffer {} bytes, process peak RSS grew {grown} bytes",
        stats.peak
    );
    assert!(
        grown < 8 * BUFFER_BOUND as u64,
        "memory grew by {grown} bytes"
    );

    // Space returns: what was buffered is written, then the count of what was not.
    std::fs::remove_file(filler).unwrap();
    wait_for("the dropped-lines marker", T, || {
        marker_counts(&read_all(&dir, "flood")) == logs.dropped("flood")
            && logs.stats("flood").bytes == 0
    });
    let all = read_all(&dir, "flood");
    let ls = lines(&all);
    assert_eq!(marker_counts(&all), logs.dropped("flood"));
    let last = std::str::from_utf8(ls[ls.len() - 1]).unwrap();
    assert_eq!(
        last,
        format!("[paios: {} lines dropped]", logs.dropped("flood"))
    );
    // The lines kept are in order with none repeated, and the marker accounts for
    // exactly the lines after them.
    let first: u64 = std::str::from_utf8(ls[0]).unwrap().parse().unwrap();
    check_sequence(&ls, first, 2_000_000);
    logs.close();
}
