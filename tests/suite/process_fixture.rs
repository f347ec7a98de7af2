//! The fixture program's modes behave as the other suites rely on: HTTP answers 200,
//! the hanging modes accept and stay silent, the crasher logs its start and exit
//! times, bad arguments are exit code 2. Each run is its own group, killed by its
//! `GroupGuard`.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{fixture_path, wait_until, GroupGuard, LineReader};
use paios::process::{self, SpawnSpec};

const WAIT: Duration = Duration::from_secs(10);

fn start(guard: &mut GroupGuard, args: &[&str]) -> LineReader {
    let mut argv = vec![fixture_path().display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let mut run = process::spawn(&SpawnSpec {
        argv,
        cwd: None,
        env: Default::default(),
    })
    .expect("spawn fixture");
    guard.spawned(&run);
    let stdout = std::mem::replace(
        &mut run.stdout,
        std::fs::File::open("/dev/null").unwrap().into(),
    );
    LineReader::new(stdout)
}

fn port_of(out: &LineReader) -> u16 {
    let line = out.line(WAIT).expect("fixture prints its port");
    line.strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
}

#[test]
fn http_mode_answers_200_on_any_path() {
    let mut guard = GroupGuard::new();
    let out = start(&mut guard, &["http", "0"]);
    let port = port_of(&out);
    for path in ["/", "/health", "/a/b?c=d"] {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        write!(conn, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply:?}");
        assert!(reply.ends_with("\r\n\r\nok\n"), "{reply:?}");
    }
}

#[test]
fn hanging_modes_accept_but_never_answer() {
    let mut guard = GroupGuard::new();
    for mode in ["http-hang", "tcp"] {
        let out = start(&mut guard, &[mode]);
        let port = port_of(&out);
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut buf = [0u8; 16];
        let err = conn.read(&mut buf).expect_err("no reply, no close");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{mode}: {err}"
        );
    }
}

#[test]
fn port_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let mut guard = GroupGuard::new();
    let mut argv = vec![fixture_path().display().to_string(), "tcp".into()];
    argv.push("0".into());
    let run = process::spawn(&SpawnSpec {
        argv,
        cwd: None,
        env: [("FIXTURE_PORT".to_string(), port_file.display().to_string())].into(),
    })
    .unwrap();
    guard.spawned(&run);
    let mut port = 0u16;
    assert!(wait_until(WAIT, || {
        port = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        port != 0
    }));
    TcpStream::connect(("127.0.0.1", port)).unwrap();
}

#[test]
fn crasher_logs_start_and_exit_and_exits_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let out = Command::new(fixture_path())
        .args(["crasher", "42", "30"])
        .env("FIXTURE_LOG", &log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "crash 42\n");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0][0], "start");
    assert_eq!(lines[1][0], "exit");
    assert_eq!(lines[0][1], lines[1][1], "same pid");
    let started: u128 = lines[0][2].parse().unwrap();
    let ended: u128 = lines[1][2].parse().unwrap();
    assert!(
        ended >= started + 30_000_000,
        "waited {after_ms} ms",
        after_ms = 30
    );
}

#[test]
fn exit_and_spew_and_bad_arguments() {
    let status = |args: &[&str]| {
        Command::new(fixture_path())
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(status(&["exit"]), Some(0));
    assert_eq!(status(&["exit", "9"]), Some(9));
    assert_eq!(status(&["spew", "3"]), Some(0));
    for bad in [
        &[][..],
        &["no-such-mode"],
        &["exit", "x"],
        &["crasher", "1", "-5"],
        &["forker", "many"],
        &["http", "70000"],
    ] {
        let out = Command::new(fixture_path()).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    }
    let out = Command::new(fixture_path())
        .args(["spew", "3"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line 1\nline 2\nline 3\n"
    );
}
