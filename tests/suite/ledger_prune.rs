//! Retention under a crash storm: a million events through the real writer never leave
//! more than `max_rows` rows in the file, as seen by a concurrent reader, and the ones
//! kept are the newest.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paios::config::LedgerSettings;
use paios::ledger::query::{Filter, Reader};
use paios::ledger::{EventRecord, Ledger, Record};

const EVENTS: u64 = 1_000_000;
const MAX_ROWS: u64 = 50_000;

#[test]
fn a_million_event_storm_keeps_the_row_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let settings = LedgerSettings {
        keep: Duration::from_secs(90 * 86_400),
        max_rows: MAX_ROWS,
        context_lines: 20,
    };
    let ledger = Ledger::open(&path, settings);
    let at = chrono::Utc::now();
    let template = EventRecord::new("storm", "service", "crashed", None, at);

    // A reader samples the row count throughout, as `paiosctl ledger` would.
    let done = Arc::new(AtomicBool::new(false));
    let most_seen = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, most_seen, path) = (done.clone(), most_seen.clone(), path.clone());
        std::thread::spawn(move || {
            let mut samples = 0;
            while !done.load(Ordering::Relaxed) {
                if let Ok(reader) = Reader::open(&path) {
                    if let Ok(n) = reader.count() {
                        most_seen.fetch_max(n, Ordering::Relaxed);
                        samples += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        })
    };

    let started = Instant::now();
    let mut sent = 0u64;
    while sent < EVENTS {
        // A real storm overflows the queue; this one waits for room, so every event is
        // written and the bound is tested against the full million.
        if sent % 256 == 0 && ledger.stats().pending >= 3_500 {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        ledger.record(Record::Event(EventRecord {
            detail: Some(format!("crash {sent}")),
            ..template.clone()
        }));
        sent += 1;
    }
    ledger.close(Duration::from_secs(60));
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();

    let stats = ledger.stats();
    assert_eq!((stats.written, stats.dropped), (EVENTS, 0), "{stats:?}");
    let reader = Reader::open(&path).unwrap();
    assert_eq!(reader.count().unwrap(), MAX_ROWS);
    assert!(
        most_seen.load(Ordering::Relaxed) <= MAX_ROWS,
        "a reader saw {} rows",
        most_seen.load(Ordering::Relaxed)
    );
    let newest = reader
        .list(&Filter {
            limit: Some(1),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(
        newest[0].detail.as_deref(),
        Some(format!("crash {}", EVENTS - 1).as_str())
    );
    let file_size = std::fs::metadata(&path).unwrap().len();
    eprintln!(
        "{EVENTS} events in {elapsed:.2?} ({:.0}/s); {samples} reader samples; file {} KiB",
        EVENTS as f64 / elapsed.as_secs_f64(),
        file_size / 1024
    );
    // Deleted rows' pages are reused: the file holds about MAX_ROWS rows, not a million.
    assert!(file_size < 64 << 20, "file is {file_size} bytes");
}
