//! `paiosctl` as a script sees it: exit codes (0 done, 1 failed, 2 usage, 3 paiosd
//! not running), where the messages go, `--json`, completions and the man page. The
//! verbs that need paiosd are run against a real control socket answered by a small
//! in-test actor with fixed answers; the live-daemon runs are in `control_e2e.rs`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::{wait_until, LineReader};

use paios::control::protocol::{
    ErrorCode, LastExit, OpResult, ReloadReport, Reply, Request, Response, RunResult, ServiceStatus,
};
use paios::control::server;
use paios::control::ControlMsg;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `paiosctl --state-dir STATE ARGS`, with none of the environment that would point it
/// elsewhere.
fn paiosctl_command(state: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paiosctl"));
    command
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("PAIOS_STATE_DIR")
        .env_remove("PAIOS_CONFIG_DIR")
        .env_remove("PAIOS_LOG_DIR");
    command
}

fn paiosctl(state: &Path, args: &[&str]) -> Output {
    paiosctl_command(state, args)
        .output()
        .expect("paiosctl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_daemon_verb_exits_3_with_how_to_start_when_paiosd_is_down() {
    let state = tempfile::tempdir().expect("tempdir");
    for args in [
        &["status"][..],
        &["start", "kb"],
        &["stop", "--all"],
        &["restart", "kb", "--no-wait"],
        &["reload"],
        &["run", "daily"],
        &["shutdown"],
        &["ping"],
    ] {
        let out = paiosctl(state.path(), args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains("paiosd is not running"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("paiosd.sock"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Start it with `paiosd`"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn json_when_paiosd_is_down_is_an_error_object_on_stdout() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = paiosctl(state.path(), &["--json", "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(value["error"]["code"], "not_running");
    assert!(value["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("paiosd is not running")));
}

#[test]
fn the_state_dir_comes_from_the_environment_too() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_paiosctl"))
        .arg("ping")
        .env("PAIOS_STATE_DIR", state.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3));
    let expected = state.path().join("paiosd.sock");
    assert!(
        text(&out.stderr).contains(&expected.display().to_string()),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2() {
    let state = tempfile::tempdir().expect("tempdir");
    for args in [
        &["start"][..],
        &["stop"],
        &["restart", "kb", "--all"],
        &["run"],
        &["logs"],
        &["frobnicate"],
        &["status", "--bogus"],
        &["completions", "tcsh"],
        &[],
    ] {
        let out = paiosctl(state.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
}

#[test]
fn version_works_without_paiosd() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = paiosctl(state.path(), &["version"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("paiosctl {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(stdout.contains("paiosd not reachable"), "{stdout}");
    let out = paiosctl(state.path(), &["--json", "version"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["paiosctl"], env!("CARGO_PKG_VERSION"));
    assert!(value["paiosd"].is_null());
}

#[test]
fn completions_are_generated_for_each_shell() {
    let state = tempfile::tempdir().expect("tempdir");
    for shell in ["bash", "zsh", "fish"] {
        let out = paiosctl(state.path(), &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains("paiosctl"), "{shell}");
        assert!(script.contains("restart"), "{shell}: lists the verbs");
    }
}

#[test]
fn the_man_page_is_printed_or_written() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = paiosctl(state.path(), &["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = text(&out.stdout);
    assert!(page.contains(".TH paiosctl 1"), "{page}");
    assert!(page.contains("restart"), "{page}");
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("man1");
    let out = paiosctl(
        state.path(),
        &["man", "--out-dir", target.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(target.join("paiosctl.1")).expect("written");
    assert_eq!(written, page);
}

#[test]
fn logs_refuses_a_name_that_is_a_path() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = paiosctl(state.path(), &["logs", "../../etc/passwd"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a service name"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn logs_all_without_a_log_dir_fails_with_the_path() {
    let state = tempfile::tempdir().expect("tempdir");
    let missing = state.path().join("no-logs-here");
    let out = paiosctl(
        state.path(),
        &[
            "--log-dir",
            missing.to_str().expect("utf8"),
            "logs",
            "--all",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no-logs-here"),
        "{}",
        text(&out.stderr)
    );
}

/// A real control socket in a temp state dir, answered by fixed replies.
struct FakeDaemon {
    state: tempfile::TempDir,
    token: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    fn start() -> FakeDaemon {
        let state = tempfile::tempdir().expect("tempdir");
        let socket: PathBuf = state.path().join("paiosd.sock");
        let token = CancellationToken::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let token = token.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = server::bind(&socket).expect("bind");
                    let (tx, mut rx) = mpsc::channel::<ControlMsg>(16);
                    tokio::spawn(async move {
                        while let Some(msg) = rx.recv().await {
                            let _ = msg.reply.send(answer(msg.request));
                        }
                    });
                    let _ = ready_tx.send(());
                    server::serve(listener, tx, token).await;
                });
            })
        };
        ready_rx.recv().expect("server ready");
        FakeDaemon {
            state,
            token,
            thread: Some(thread),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        paiosctl(self.state.path(), args)
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn row(name: &str, kind: &str, state: &str) -> ServiceStatus {
    ServiceStatus {
        name: name.into(),
        kind: kind.into(),
        state: state.into(),
        pid: None,
        pgid: None,
        uptime_s: None,
        restarts_24h: 0,
        last_exit: None,
        health: None,
        rss_bytes: None,
        next_run: None,
        detail: None,
        enabled: true,
        log_dropped: 0,
        mcp: None,
    }
}

/// The PID the fake paiosd reports in its `shutdown` answer (0: it refuses).
static SHUTDOWN_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn answer(request: Request) -> Response {
    match request {
        Request::Ping => Response::Ok(Reply::Pong {
            version: "9.9.9".into(),
            pid: 4242,
            ledger: None,
        }),
        Request::Status { names } if names.iter().any(|n| n == "kbb") => Response::error(
            ErrorCode::UnknownService,
            "no service named `kbb`; did you mean `kb`?",
        ),
        Request::Status { names } if names == ["bench-200"] => Response::Ok(Reply::Status {
            services: (0..200)
                .map(|i| {
                    let mut r = row(&format!("service-{i:03}"), "service", "running");
                    r.pid = Some(10_000 + i);
                    r.pgid = r.pid;
                    r.uptime_s = Some(3_600 + i as u64);
                    r.rss_bytes = Some(40 << 20);
                    r.health = Some("healthy".into());
                    r
                })
                .collect(),
            ledger: None,
        }),
        Request::Status { .. } => {
            let mut kb = row("kb", "service", "running");
            kb.pid = Some(1234);
            kb.pgid = Some(1234);
            kb.uptime_s = Some(312);
            kb.rss_bytes = Some(12_897_485);
            let mut gw = row("gateway", "service", "backoff");
            gw.restarts_24h = 4;
            gw.detail = Some("until 12:00:01".into());
            gw.last_exit = Some(LastExit {
                code: Some(1),
                signal: None,
                at: "2026-01-02T11:58:00Z".into(),
                outcome: None,
            });
            let mut daily = row("daily", "task", "idle");
            daily.next_run = Some("2099-01-01T07:00:00Z".into());
            Response::Ok(Reply::Status {
                services: vec![kb, gw, daily],
                ledger: None,
            })
        }
        Request::Start { target, .. }
        | Request::Stop { target, .. }
        | Request::Restart { target, .. } => Response::Ok(Reply::Ops {
            results: target
                .names
                .into_iter()
                .map(|name| OpResult {
                    ok: name != "broken",
                    state: if name == "broken" {
                        "failed"
                    } else {
                        "running"
                    }
                    .into(),
                    pid: None,
                    message: if name == "broken" {
                        "gave up after 10 crashes in 5m".into()
                    } else {
                        String::new()
                    },
                    name,
                })
                .collect(),
        }),
        Request::Reload => Response::Ok(Reply::Reload(ReloadReport {
            added: vec!["new".into()],
            ..ReloadReport::default()
        })),
        Request::Run { name, .. } if name == "daily" => Response::Ok(Reply::Run(RunResult {
            name,
            outcome: "exited".into(),
            exit_code: Some(3),
            signal: None,
            pid: Some(77),
        })),
        Request::Run { name, .. } => Response::error(
            ErrorCode::Busy,
            format!("{name} is already running (pid 88)"),
        ),
        Request::Shutdown => match SHUTDOWN_PID.load(std::sync::atomic::Ordering::SeqCst) {
            0 => Response::error(ErrorCode::ShuttingDown, "already shutting down"),
            pid => Response::Ok(Reply::ShuttingDown { pid }),
        },
    }
}

#[test]
fn status_prints_a_table_or_the_json_array() {
    let d = FakeDaemon::start();
    let out = d.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    for column in [
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "LAST EXIT",
        "RSS",
        "NEXT RUN",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(
        !table.contains('\x1b'),
        "no colour when stdout is not a TTY"
    );
    assert!(lines[1].contains("kb") && lines[1].contains("1234") && lines[1].contains("5m12s"));
    assert!(lines[2].contains("backoff") && lines[2].contains("until 12:00:01"));

    let out = d.run(&["--json", "status"]);
    assert_eq!(out.status.code(), Some(0));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = value.as_array().expect("an array");
    assert_eq!(rows.len(), 3);
    for field in [
        "name",
        "kind",
        "state",
        "pid",
        "pgid",
        "uptime_s",
        "restarts_24h",
        "last_exit",
        "health",
        "rss_bytes",
        "next_run",
    ] {
        assert!(rows[0].get(field).is_some(), "field {field} in {}", rows[0]);
    }
    assert_eq!(rows[0]["name"], "kb");
    assert_eq!(rows[2]["next_run"], "2099-01-01T07:00:00Z");
    assert!(rows[0]["next_run"].is_null());
}

#[test]
fn an_unknown_name_exits_1_with_the_suggestion() {
    let d = FakeDaemon::start();
    let out = d.run(&["status", "kbb"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("did you mean `kb`"),
        "{}",
        text(&out.stderr)
    );
    let out = d.run(&["--json", "status", "kbb"]);
    assert_eq!(out.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["error"]["code"], "unknown_service");
}

#[test]
fn operations_exit_1_when_any_service_failed() {
    let d = FakeDaemon::start();
    let out = d.run(&["restart", "kb"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kb: ok, running"));
    let out = d.run(&["start", "kb", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("broken: FAILED, failed: gave up after 10 crashes"),
        "{}",
        text(&out.stdout)
    );
    let out = d.run(&["--json", "stop", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["kind"], "ops");
    assert_eq!(value["results"][0]["ok"], false);
}

#[test]
fn reload_run_ping_and_version_print_the_reply() {
    let d = FakeDaemon::start();
    let out = d.run(&["reload"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "added: new\n");

    let out = d.run(&["run", "daily"]);
    assert_eq!(out.status.code(), Some(1), "a task that exits 3 failed");
    assert!(text(&out.stdout).contains("exit code 3"));
    let out = d.run(&["run", "weekly"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already running"));
    let out = d.run(&["--json", "run", "weekly"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["error"]["code"], "busy");

    let out = d.run(&["ping"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("paiosd 9.9.9 (pid 4242)"));
    let out = d.run(&["--json", "ping"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["kind"], "pong");
    assert_eq!(value["pid"], 4242);

    let out = d.run(&["version"]);
    assert!(text(&out.stdout).contains("paiosd 9.9.9 (pid 4242)"));
}

/// Prints the whole-process round trip of `paiosctl status` over 200 services (the
/// socket, the protocol and the rendering; the daemon side here is a fixed answer).
/// Run with `cargo test --release --test control_cli -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: prints figures"]
fn benchmark_status_round_trip_200_services() {
    let d = FakeDaemon::start();
    let mut times = Vec::new();
    for _ in 0..200 {
        let started = std::time::Instant::now();
        let out = d.run(&["status", "bench-200"]);
        times.push(started.elapsed());
        assert_eq!(out.status.code(), Some(0));
    }
    times.sort();
    println!(
        "paiosctl status, 200 services, whole process: median {:?}, p99 {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
}

/// A child of the shutdown test (paiosd's stand-in, or the waiting paiosctl), killed
/// and reaped in Drop.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn shutdown_returns_once_paiosd_has_exited() {
    let d = FakeDaemon::start();
    // "paiosd" is a sleep child holding nothing; the lock is held by this test, as the
    // real paiosd holds it until it exits.
    let mut paiosd = Sleeper(Command::new("sleep").arg("300").spawn().expect("sleep"));
    SHUTDOWN_PID.store(paiosd.0.id(), std::sync::atomic::Ordering::SeqCst);
    let lock = match paios::lock::acquire(&d.state.path().join("paiosd.lock")).expect("lock") {
        paios::lock::Acquired::Held(lock) => lock,
        paios::lock::Acquired::Busy { .. } => panic!("lock busy"),
    };
    let mut waiter = Sleeper(
        paiosctl_command(d.state.path(), &["shutdown", "--timeout", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("paiosctl runs"),
    );
    let stdout = waiter.0.stdout.take().expect("piped stdout");
    let stderr = LineReader::new(waiter.0.stderr.take().expect("piped stderr").into());
    // Its first line says paiosd has answered and the wait has begun.
    let said = stderr.line(Duration::from_secs(20));
    assert!(
        said.as_deref()
            .is_some_and(|l| l.contains("is stopping every service")),
        "{said:?}"
    );
    assert!(
        !wait_until(Duration::from_millis(300), || matches!(
            waiter.0.try_wait(),
            Ok(Some(_))
        )),
        "returned while paiosd still ran"
    );
    // The lock goes first; the process is not reaped yet (a zombie still has its PID).
    drop(lock);
    let _ = paiosd.0.kill();
    let status = waiter.0.wait().expect("wait for paiosctl");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(OwnedFd::from(stdout)), &mut out)
        .expect("read paiosctl's stdout");
    assert_eq!(status.code(), Some(0));
    assert!(out.contains("has exited"), "{out}");
    let _ = paiosd.0.wait();

    // Timing out says so and fails.
    let mut still = Sleeper(Command::new("sleep").arg("300").spawn().expect("sleep"));
    SHUTDOWN_PID.store(still.0.id(), std::sync::atomic::Ordering::SeqCst);
    let _lock = paios::lock::acquire(&d.state.path().join("paiosd.lock")).expect("lock");
    let out = d.run(&["shutdown", "--timeout", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("still runs"),
        "{}",
        text(&out.stderr)
    );
    let _ = still.0.kill();
    SHUTDOWN_PID.store(0, std::sync::atomic::Ordering::SeqCst);
}
