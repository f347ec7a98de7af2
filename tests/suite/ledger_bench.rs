//! A benchmark, not a test: ledger rows written per second, and what `record()` costs
//! the supervisor's thread (its latency percentiles), healthy and with the database
//! locked. Prints figures, asserts nothing about speed.
//! Run: `cargo test --release --test ledger_bench -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use paios::ledger::{Ledger, Record, RunRecord, WriterOptions};

fn record(i: u32) -> Record {
    Record::Run(RunRecord {
        service: "bench".into(),
        kind: "service".into(),
        outcome: "crashed".into(),
        pid: Some(1234),
        pgid: Some(1234),
        leader_start_time: Some(42),
        started_at: "2026-11-24T10:00:00Z".into(),
        ended_at: "2026-11-24T10:00:01Z".into(),
        duration_ms: 1000,
        exit_code: Some(1),
        signal: None,
        attempt: i,
        delay_ms: Some(100),
        context: Some("some stderr line\n".repeat(20)),
    })
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    format!(
        "p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    )
}

#[test]
#[ignore]
fn ledger_throughput_and_record_latency() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let settings = paios::config::Global::default().ledger;

    let ledger = Ledger::open(&path, settings);
    let n = 200_000u32;
    let mut costs = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        while i % 256 == 0 && ledger.stats().pending > 3_500 {
            std::thread::sleep(Duration::from_micros(200));
        }
        let t = Instant::now();
        ledger.record(record(i));
        costs.push(t.elapsed());
    }
    ledger.close(Duration::from_secs(60));
    let elapsed = start.elapsed();
    let stats = ledger.stats();
    println!(
        "healthy: {} rows in {elapsed:.2?} = {:.0} rows/s; record(): {}",
        stats.written,
        stats.written as f64 / elapsed.as_secs_f64(),
        percentiles(costs)
    );

    // Locked by another connection: what record() costs while the writer is stuck.
    let ledger = Ledger::open_with(&path, settings, WriterOptions::default());
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.busy_timeout(Duration::from_secs(5)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut costs = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    let mut i = 0;
    while Instant::now() < until {
        let t = Instant::now();
        ledger.record(record(i));
        costs.push(t.elapsed());
        i += 1;
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let stats = ledger.stats();
    println!(
        "locked: {} records offered, {} pending, {} dropped; record(): {}",
        i,
        stats.pending,
        stats.dropped,
        percentiles(costs)
    );
    drop(lock);
    ledger.close(Duration::from_secs(30));
}
