//! Hang detection and the memory watch through the real daemon: probes of each kind
//! turning a service `starting` → `running`, a SIGSTOPped service and one that keeps its
//! port open but stops answering found `hung` and restarted, readiness gating `after`,
//! a growing service restarted at its memory limit, the growth alert, and a group
//! stopped by a signal reported without a probe.

use crate::common;

use std::time::{Duration, Instant};

use common::daemon::{alive, Daemon};
use common::{fixture_path, toml_str, wait_until, TestDirs};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn fixture(args: &[&str]) -> String {
    let mut argv = vec![toml_str(&fixture_path().display().to_string())];
    argv.extend(args.iter().map(|a| toml_str(a)));
    format!("command = [{}]\n", argv.join(", "))
}

fn ledger(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.ctl(&["ledger", "--json"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn ledger_has(d: &Daemon, service: &str, outcome: &str) -> Option<serde_json::Value> {
    ledger(d)
        .into_iter()
        .find(|r| r["service"] == service && r["outcome"] == outcome)
}

const FAST_PROBE: &str =
    "interval = \"200ms\"\ntimeout = \"200ms\"\nfailures = 2\nstart_period = \"0s\"\n";

#[test]
fn http_probe_makes_a_service_healthy() {
    let port = free_port();
    let d = Daemon::start(&[(
        "web",
        &format!(
            "{}[health]\nhttp = \"http://127.0.0.1:{port}/health\"\n{FAST_PROBE}",
            fixture(&["http", &port.to_string()])
        ),
    )]);
    let row = d.wait_state("web", "running", Duration::from_secs(10));
    assert_eq!(row["health"], "healthy", "{row}");
}

#[test]
fn tcp_and_exec_probes_work() {
    let port = free_port();
    let d = Daemon::start(&[
        (
            "tcp",
            &format!("{}[health]\ntcp = \"127.0.0.1:{port}\"\n{FAST_PROBE}", fixture(&["tcp", &port.to_string()])),
        ),
        ("cmd", &format!("shell = \"sleep 300\"\n[health]\nexec = [\"sh\", \"-c\", \"exit 0\"]\n{FAST_PROBE}")),
    ]);
    assert_eq!(
        d.wait_state("tcp", "running", Duration::from_secs(10))["health"],
        "healthy"
    );
    assert_eq!(
        d.wait_state("cmd", "running", Duration::from_secs(10))["health"],
        "healthy"
    );
}

#[test]
fn a_sigstopped_service_is_found_hung_and_restarted() {
    let port = free_port();
    let d = Daemon::start(&[(
        "web",
        &format!(
            "{}[health]\nhttp = \"http://127.0.0.1:{port}/\"\n{FAST_PROBE}[restart]\nbackoff = {{ initial = \"50ms\", jitter = 0.0 }}\n",
            fixture(&["http", &port.to_string()])
        ),
    )]);
    let row = d.wait_state("web", "running", Duration::from_secs(10));
    let (pid, pgid) = (
        row["pid"].as_i64().unwrap_or(0) as i32,
        row["pgid"].as_i64().unwrap_or(0) as i32,
    );
    let stopped_at = Instant::now();
    killpg(Pid::from_raw(pgid), Signal::SIGSTOP).expect("SIGSTOP the group");
    // interval × failures + timeout = 600 ms; allow generous slack for a loaded machine.
    assert!(
        wait_until(Duration::from_secs(10), || d.row("web")["pid"]
            .as_i64()
            .is_some_and(|p| p as i32 != pid)),
        "never restarted: {}",
        d.row("web")
    );
    let took = stopped_at.elapsed();
    assert!(took < Duration::from_secs(5), "hang found after {took:?}");
    assert!(!alive(pid), "the hung run's leader survived");
    assert!(wait_until(Duration::from_secs(5), || ledger_has(
        &d, "web", "hung"
    )
    .is_some()));
    let rec = ledger_has(&d, "web", "hung").unwrap_or_default();
    assert!(
        rec["context"].as_str().is_some_and(|c| c.contains("probe")),
        "{rec}"
    );
    d.wait_state("web", "running", Duration::from_secs(10));
}

#[test]
fn a_service_that_stops_answering_is_found_hung() {
    let port = free_port();
    let d = Daemon::start(&[(
        "mute",
        &format!(
            "{}[health]\nhttp = \"http://127.0.0.1:{port}/\"\n{FAST_PROBE}[restart]\nbackoff = {{ initial = \"50ms\", jitter = 0.0 }}\n",
            fixture(&["http-hang", &port.to_string()])
        ),
    )]);
    assert!(
        wait_until(Duration::from_secs(10), || ledger_has(&d, "mute", "hung")
            .is_some()),
        "{:?}",
        ledger(&d)
    );
    let rec = ledger_has(&d, "mute", "hung").unwrap_or_default();
    assert!(
        rec["context"]
            .as_str()
            .is_some_and(|c| c.contains("timed out")),
        "{rec}"
    );
}

#[test]
fn dependents_wait_until_the_dependency_is_healthy() {
    let port = free_port();
    let dirs = TestDirs::new();
    let order = dirs.file("order");
    let fixture_bin = fixture_path().display().to_string();
    dirs.write_service(
        "db",
        &format!(
            "shell = {}\n[health]\nhttp = \"http://127.0.0.1:{port}/\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nstart_period = \"10s\"\n",
            toml_str(&format!("sleep 1; echo db-ready >> {}; exec {fixture_bin} http {port}", order.display()))
        ),
    );
    dirs.write_service(
        "api",
        &format!(
            "shell = {}\nafter = [\"db\"]\n",
            toml_str(&format!("echo api >> {}; exec sleep 300", order.display()))
        ),
    );
    let d = Daemon::start_in(dirs);
    let api = d.wait_state("api", "waiting", Duration::from_secs(5));
    assert!(
        api["detail"].as_str().is_some_and(|s| s.contains("db")),
        "{api}"
    );
    assert_eq!(d.row("db")["state"], "starting");
    d.wait_state("api", "running", Duration::from_secs(10));
    assert!(wait_until(
        Duration::from_secs(5),
        || std::fs::read_to_string(&order)
            .unwrap_or_default()
            .lines()
            .count()
            == 2
    ));
    assert_eq!(
        std::fs::read_to_string(&order).unwrap_or_default(),
        "db-ready\napi\n"
    );
}

#[test]
fn memory_limit_restarts_the_group_with_outcome_memory() {
    let d = Daemon::start(&[(
        "leak",
        &format!(
            "{}[memory]\nlimit = \"60MiB\"\ninterval = \"100ms\"\n[restart]\nbackoff = {{ initial = \"5s\", jitter = 0.0 }}\n",
            fixture(&["alloc", "100", "500"])
        ),
    )]);
    let first = d.wait_state("leak", "running", Duration::from_secs(10));
    let mut seen = 0u64;
    assert!(wait_until(Duration::from_secs(10), || {
        let row = d.row("leak");
        seen = seen.max(row["rss_bytes"].as_u64().unwrap_or(0));
        ledger_has(&d, "leak", "memory").is_some()
    }));
    assert!(
        seen > 10 << 20,
        "status showed the group's RSS growing: max {seen}"
    );
    let rec = ledger_has(&d, "leak", "memory").unwrap_or_default();
    assert_eq!(rec["pid"], first["pid"], "{rec}");
    assert!(
        rec["context"]
            .as_str()
            .is_some_and(|c| c.contains("over the limit")),
        "{rec}"
    );
}

#[test]
fn growth_alert_fires_once_per_window() {
    let dirs = TestDirs::new();
    let alerts = dirs.file("alerts");
    let script = dirs.file("alert.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$PAIOS_EVENT $PAIOS_SERVICE\" >> {}\n",
            alerts.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    dirs.write_global(&format!(
        "alert_command = [{}]\n",
        toml_str(&script.display().to_string())
    ));
    dirs.write_service(
        "grow",
        &format!(
            "{}[memory]\ngrowth_alert = \"1MiB/h\"\ninterval = \"100ms\"\nwindow = \"2s\"\n",
            fixture(&["alloc", "5", "400"])
        ),
    );
    let d = Daemon::start_in(dirs);
    let count = || {
        std::fs::read_to_string(&alerts)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("memory_growth grow"))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || count() >= 1),
        "no growth alert"
    );
    let first = Instant::now();
    // Within one window after the first alert there is no second one.
    std::thread::sleep(Duration::from_millis(100));
    while first.elapsed() < Duration::from_millis(1500) {
        assert_eq!(count(), 1, "alerted twice within one window");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
}

#[test]
fn a_stopped_group_without_a_probe_is_reported() {
    let d = Daemon::start(&[(
        "s",
        &format!("{}[memory]\ninterval = \"100ms\"\n", fixture(&["sleeper"])),
    )]);
    let row = d.wait_state("s", "running", Duration::from_secs(10));
    let pgid = row["pgid"].as_i64().unwrap_or(0) as i32;
    killpg(Pid::from_raw(pgid), Signal::SIGSTOP).expect("SIGSTOP");
    d.wait_state("s", "stopped-by-signal", Duration::from_secs(10));
    killpg(Pid::from_raw(pgid), Signal::SIGCONT).expect("SIGCONT");
    d.wait_state("s", "running", Duration::from_secs(10));
    assert!(ledger(&d)
        .iter()
        .any(|r| r["service"] == "s" && r["outcome"] == "stopped_by_signal"));
}

#[test]
fn stopping_a_sigstopped_service_still_ends_it() {
    let d = Daemon::start(&[(
        "s",
        &format!("{}[stop]\ngrace = \"2s\"\n", fixture(&["sleeper"])),
    )]);
    let row = d.wait_state("s", "running", Duration::from_secs(10));
    let (pid, pgid) = (
        row["pid"].as_i64().unwrap_or(0) as i32,
        row["pgid"].as_i64().unwrap_or(0) as i32,
    );
    killpg(Pid::from_raw(pgid), Signal::SIGSTOP).expect("SIGSTOP");
    let t0 = Instant::now();
    let out = d.ctl(&["stop", "s"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!alive(pid));
    // SIGCONT before SIGTERM: the stop does not need the SIGKILL after grace.
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
}
