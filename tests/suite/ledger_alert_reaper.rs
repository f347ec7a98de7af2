//! The alert command under paiosd's reaping: the supervisor collects every child with
//! `waitpid(-1)`, so the alert thread must learn exit statuses without waiting itself.
//! A thread here reaps everything the way the supervisor does (in a fresh process of its
//! own, so it steals no other test's children) while alerts succeed, fail and hang.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::ran_in_own_process;
use paios::alert::{Alert, AlertSettings, Alerter};
use paios::ledger::query::{Filter, Reader};
use paios::ledger::Ledger;

/// Reaps every child of this process until dropped, as paiosd's supervisor does.
struct Reaper {
    stop: Arc<AtomicBool>,
    reaped: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reaper {
    fn start() -> Reaper {
        let stop = Arc::new(AtomicBool::new(false));
        let reaped = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, reaped) = (stop.clone(), reaped.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // paiosd's own reaper, as fast as it can go, so it wins the race
                    // for every child: the alert thread's own wait then finds nothing.
                    let collected = paios::process::reap();
                    reaped.fetch_add(collected.len(), Ordering::Relaxed);
                }
            })
        };
        Reaper {
            stop,
            reaped,
            thread: Some(thread),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn alert(event: &str) -> Alert {
    Alert {
        event: event.into(),
        service: "kb".into(),
        kind: "service".into(),
        detail: "detail".into(),
        at: chrono::Utc::now(),
    }
}

fn alerter(ledger: &Ledger, script: &str, timeout: Duration) -> Alerter {
    Alerter::new(
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        ledger.clone(),
        AlertSettings {
            timeout,
            ..AlertSettings::default()
        },
    )
    .unwrap()
}

fn details(path: &Path) -> Vec<String> {
    Reader::open(path)
        .map(|r| {
            r.list(&Filter::default())
                .unwrap()
                .into_iter()
                .filter_map(|e| e.detail)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn statuses_arrive_even_when_another_thread_reaps_every_child() {
    if ran_in_own_process(
        module_path!(),
        "statuses_arrive_even_when_another_thread_reaps_every_child",
    ) {
        return;
    }
    let reaper = Reaper::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let settings = paios::config::Global::default().ledger;
    let ledger = Ledger::open(&path, settings);
    let marker = dir.path().join("ok");

    let ok = alerter(
        &ledger,
        &format!("echo x >> {}", marker.display()),
        Duration::from_secs(10),
    );
    let failing = alerter(&ledger, "exit 7", Duration::from_secs(10));
    let hanging = alerter(&ledger, "sleep 60", Duration::from_millis(300));
    for i in 0..30 {
        ok.send(alert(&format!("storm_ok_{i}")));
    }
    failing.send(alert("storm_fail"));
    hanging.send(alert("storm_hang"));

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = details(&path);
        if d.len() >= 2 {
            assert_eq!(d.len(), 2, "{d:?}");
            assert!(
                d.iter()
                    .any(|s| s.contains("storm_fail alert") && s.contains("exit status 7")),
                "{d:?}"
            );
            assert!(
                d.iter()
                    .any(|s| s.contains("storm_hang alert") && s.contains("timed out")),
                "{d:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failure records: {d:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let runs = || {
        std::fs::read_to_string(&marker)
            .unwrap_or_default()
            .lines()
            .count()
    };
    while runs() < 30 {
        assert!(
            Instant::now() < deadline,
            "only {} of 30 alerts ran",
            runs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for a in [&ok, &failing, &hanging] {
        a.close(Duration::from_secs(5));
    }
    ledger.close(Duration::from_secs(5));
    // Each shell goes to whichever wait comes first; over 32 runs the reaper wins some
    // (about a third here), and the statuses above were right regardless.
    assert!(
        reaper.reaped.load(Ordering::Relaxed) >= 1,
        "{}",
        reaper.reaped.load(Ordering::Relaxed)
    );
    // Successful runs recorded nothing, even though their statuses were reaped elsewhere.
    assert_eq!(details(&path).len(), 2);
}
