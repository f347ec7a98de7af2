//! The shipped configurations load cleanly: the reference PAIOS deployment in
//! `services.d/` and the demo in `integration/demo/`.
//!
//! They are documentation people copy from, so a key renamed in the loader without
//! updating them must fail here. Every `shell` line is also checked with `sh -n`, so
//! a quoting mistake shows up before anything runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use paios::config::{load_with, Config, OnFailure, Probe, RestartPolicy};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn env(name: &str) -> Option<String> {
    (name == "HOME").then(|| "/home/paios".to_string())
}

fn assert_clean(config: &Config) {
    let errors: Vec<String> = config.errors.iter().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "errors:\n{}", errors.join("\n"));
}

fn assert_shell_lines_parse(config: &Config) {
    for svc in config.services.values() {
        if let [sh, c, line] = svc.argv.as_slice() {
            if sh == "/bin/sh" && c == "-c" {
                let status = Command::new("/bin/sh")
                    .args(["-n", "-c", line])
                    .status()
                    .expect("run sh -n");
                assert!(status.success(), "{}: sh -n rejects {line:?}", svc.name);
            }
        }
    }
}

#[test]
fn reference_deployment_loads_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo("services.d"), dir.path().join("services.d")).unwrap();
    let config = load_with(dir.path(), &env);
    assert_clean(&config);
    let names: Vec<&str> = config.services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "daily-tasks",
            "embedding-server",
            "emit-server",
            "file-watcher",
            "gateway",
            "google-workspace",
            "kb",
            "macos-system",
            "observability",
            "weekly-tasks"
        ]
    );
    assert_shell_lines_parse(&config);
    // The MCP servers listen on their ports: clients reach them at their URLs.
    for (name, port) in [
        ("kb", 3001),
        ("observability", 3002),
        ("macos-system", 3003),
        ("google-workspace", 3004),
    ] {
        let mcp = config.services[name].mcp.as_ref().unwrap();
        assert_eq!(mcp.transport, paios::config::McpTransport::Http, "{name}");
        assert_eq!(
            mcp.url.as_deref(),
            Some(format!("http://127.0.0.1:{port}/mcp").as_str())
        );
    }

    let kb = &config.services["kb"];
    assert_eq!(
        kb.argv,
        [
            "node",
            "/home/paios/.openclaw/projects/knowledge-base/mcp-server.js",
            "--port",
            "3001"
        ]
    );
    assert_eq!(kb.after, ["embedding-server"]);
    assert_eq!(kb.restart.policy, RestartPolicy::OnFailure);
    let health = kb.health.as_ref().unwrap();
    assert_eq!(
        health.probe,
        Probe::Http {
            url: "http://127.0.0.1:3001/health".parse().unwrap(),
            expect_status: None
        }
    );
    assert_eq!(health.on_failure, OnFailure::Restart);

    // Every server has a probe, on its own loopback port.
    let mut ports = Vec::new();
    for svc in config.services.values() {
        if svc.task.is_some() || svc.name == "file-watcher" {
            continue;
        }
        match &svc.health.as_ref().expect(&svc.name).probe {
            Probe::Http { url, .. } => {
                assert_eq!(url.host, "127.0.0.1", "{}", svc.name);
                ports.push(url.port);
            }
            other => panic!("{}: {other:?}", svc.name),
        }
    }
    let count = ports.len();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), count, "two services share a port");

    assert_eq!(
        config.services["daily-tasks"]
            .task
            .as_ref()
            .unwrap()
            .schedule,
        "0 7 * * *"
    );
    assert_eq!(
        config.services["weekly-tasks"]
            .task
            .as_ref()
            .unwrap()
            .schedule,
        "0 8 * * 1"
    );
}

#[test]
fn demo_config_loads_without_errors() {
    let config = load_with(&repo("integration/demo"), &env);
    assert_clean(&config);
    let names: Vec<&str> = config.services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "crasher",
            "forker",
            "gateway",
            "heartbeat",
            "mcp-echo",
            "stubborn"
        ]
    );
    assert_shell_lines_parse(&config);
    assert_eq!(config.global.storm.crashes, 3);
    assert!(config.global.logs.timestamps);

    let stubborn = &config.services["stubborn"];
    assert_eq!(stubborn.stop.signal, libc::SIGTERM);
    assert_eq!(stubborn.stop.grace, std::time::Duration::from_secs(2));
    let heartbeat = config.services["heartbeat"].task.as_ref().unwrap();
    assert_eq!(heartbeat.schedule, "*/10 * * * * *");
    match &config.services["gateway"].health.as_ref().unwrap().probe {
        Probe::Http { url, expect_status } => {
            assert_eq!(url.as_str(), "http://127.0.0.1:18080/");
            assert_eq!(*expect_status, Some(200));
        }
        other => panic!("{other:?}"),
    }
    // The demo needs nothing but sh and python3.
    for svc in config.services.values() {
        assert!(
            ["/bin/sh", "/usr/bin/python3"].contains(&svc.argv[0].as_str()),
            "{}",
            svc.name
        );
    }
    assert!(config.services["mcp-echo"].is_per_client());
}
