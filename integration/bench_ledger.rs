//! The ledger benchmark (issue 5): how many records per second the writer thread puts
//! into SQLite through `Ledger::record` (batched into transactions), what one `record()`
//! call costs the caller, and what the ledger adds to paiosd's restart latency — the same
//! crasher as `bench.rs`, with the ledger written as usual and with the ledger locked by
//! another connection for the whole run (nothing written: the records only pile up in
//! memory, which is paiosd without the ledger's I/O), each with paiosd's directories on
//! disk and on tmpfs. It prints figures and asserts nothing.
//!
//! Run: `cargo build --release --bins --examples && target/release/examples/bench_ledger [--records N] [--crashes N]`

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paios::config::LedgerSettings;
use paios::ledger::{EventRecord, Ledger, Record, RunRecord, WriterOptions};

#[path = "support.rs"]
mod support;

use support::{lines, percentile, restart_gaps, wait_until, Bins, Daemon, Scratch};

fn settings() -> LedgerSettings {
    paios::config::Global::default().ledger
}

fn run_record(i: u32) -> Record {
    Record::Run(RunRecord {
        service: "bench".into(),
        kind: "service".into(),
        outcome: "crashed".into(),
        pid: Some(10_000 + i as i32 % 1000),
        pgid: Some(10_000 + i as i32 % 1000),
        leader_start_time: Some(u64::from(i)),
        started_at: "2026-11-24T10:00:00.000Z".into(),
        ended_at: "2026-11-24T10:00:01.000Z".into(),
        duration_ms: 1000,
        exit_code: Some(1),
        signal: None,
        attempt: i,
        delay_ms: Some(100),
        context: Some("a line of stderr, as a crashing service prints it\n".repeat(20)),
    })
}

/// Feeds `n` records through `record()` as fast as the queue takes them (never so fast
/// that it overflows), and times until the writer has committed them all.
fn throughput(label: &str, n: u32, make: impl Fn(u32) -> Record, out: &mut String) {
    let dir = std::env::temp_dir().join(format!(
        "paios-bench-ledger-rows-{}-{label}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("bench dir");
    let options = WriterOptions::default();
    let ledger = Ledger::open_with(&dir.join("ledger.sqlite"), settings(), options);
    // Let the writer open and create the file before the clock starts.
    ledger.record(Record::Event(EventRecord::daemon(
        "bench_start",
        None,
        chrono::Utc::now(),
    )));
    while ledger.stats().written < 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut calls = Vec::with_capacity(n as usize);
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        if ledger.stats().pending as usize > options.queue / 2 {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        for _ in 0..(options.queue / 4).min((n - i) as usize) {
            let record = make(i);
            let t = Instant::now();
            ledger.record(record);
            calls.push(t.elapsed().as_secs_f64() * 1e6);
            i += 1;
        }
    }
    while ledger.stats().written < u64::from(n) + 1 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = t0.elapsed();
    let stats = ledger.stats();
    ledger.close(Duration::from_secs(10));
    let size = fs::metadata(dir.join("ledger.sqlite"))
        .map(|m| m.len())
        .unwrap_or(0);
    let _ = fs::remove_dir_all(&dir);
    calls.sort_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "ledger writes ({label}): {n} records in {:.2} s = {:.0} records/s committed; record() p50 {:.2} us, p99 {:.2} us, max {:.1} us; dropped {}; file {:.1} MiB",
        took.as_secs_f64(),
        f64::from(n) / took.as_secs_f64(),
        percentile(&calls, 0.5),
        percentile(&calls, 0.99),
        calls.last().copied().unwrap_or(f64::NAN),
        stats.dropped,
        size as f64 / (1024.0 * 1024.0)
    );
}

/// One restart-latency run: paiosd's directories under `base`, and whether the ledger
/// is locked for the whole run (nothing written: the run without the ledger's writes).
fn restart_latency(bins: &Bins, base: &Path, locked: bool, crashes: usize, out: &mut String) {
    let label = format!(
        "{}, state and logs in {}",
        if locked {
            "ledger locked throughout, nothing written"
        } else {
            "ledger written"
        },
        base.display()
    );
    if !base.is_dir() {
        let _ = writeln!(out, "restart latency ({label}): skipped, no such directory");
        return;
    }
    let scratch = Scratch::new_in(
        base,
        "paios-bench-ledger",
        &format!("restart-{}", u8::from(locked)),
    );
    fs::create_dir_all(scratch.root.join("state")).expect("state dir");
    let log = scratch.root.join("starts.log");
    scratch.service("crash", &support::crasher_service(&bins.fixture, &log));
    let ledger_path = scratch.root.join("state").join("ledger.sqlite");
    let lock = if locked {
        // A ledger of the current schema, then a write transaction held open on it.
        let ledger = Ledger::open(&ledger_path, settings());
        ledger.record(Record::Event(EventRecord::daemon(
            "bench",
            None,
            chrono::Utc::now(),
        )));
        ledger.close(Duration::from_secs(10));
        let conn = rusqlite::Connection::open(&ledger_path).expect("open the ledger");
        conn.execute_batch("BEGIN IMMEDIATE")
            .expect("lock the ledger");
        Some(conn)
    } else {
        None
    };
    let mut daemon = Daemon::start(&bins.paiosd, &scratch.args());
    let starts = |l: &[String]| l.iter().filter(|x| x.starts_with("start ")).count();
    wait_until(Duration::from_secs(120), || starts(&lines(&log)) > crashes);
    daemon.terminate();
    drop(lock);
    let gaps = restart_gaps(&log);
    let rows = paios::ledger::query::Reader::open(&ledger_path)
        .and_then(|r| r.list(&paios::ledger::query::Filter::default()))
        .map(|rows| rows.iter().filter(|e| e.is_run()).count())
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "restart latency added beyond the backoff ({label}, {} restarts): median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; run rows in the ledger afterwards: {rows}",
        gaps.len(),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.9),
        percentile(&gaps, 0.99),
        gaps.last().copied().unwrap_or(f64::NAN)
    );
}

fn main() {
    let mut records: u32 = 200_000;
    let mut crashes = 300;
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--records" => records = pair[1].parse().unwrap_or(records),
            "--crashes" => crashes = pair[1].parse().unwrap_or(crashes),
            _ => {}
        }
    }
    let bins = Bins::beside_exe();
    support::require(&[&bins.paiosd, &bins.fixture]);
    let mut out = String::new();
    throughput(
        "runs with 20 lines of context",
        records,
        run_record,
        &mut out,
    );
    throughput(
        "small events",
        records,
        |i| {
            Record::Event(EventRecord::new(
                "bench",
                "service",
                "storm",
                Some(format!("event {i}")),
                chrono::Utc::now(),
            ))
        },
        &mut out,
    );
    print!("{out}");
    out.clear();
    for base in [std::env::temp_dir(), PathBuf::from("/dev/shm")] {
        for locked in [false, true] {
            restart_latency(&bins, &base, locked, crashes, &mut out);
        }
    }
    print!("{out}");
}
