//! What a clean file turns into: values, defaults, expansion, per-service log
//! overrides, the `paiosd check` summary and task run times.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use paios::config::{
    load_with, next_runs, summary_at, Config, OnFailure, Probe, RestartPolicy, ServiceConfig,
};

fn env(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/home/u".into()),
        "PORT" => Some("3001".into()),
        "TOKEN" => Some("s3cret".into()),
        _ => None,
    }
}

fn load_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
    let dir = common::config_dir(files);
    let config = load_with(dir.path(), &env);
    let errors: Vec<String> = config.errors.iter().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    (dir, config)
}

fn one(text: &str) -> ServiceConfig {
    let (_dir, mut config) = load_files(&[("services.d/svc.toml", text)]);
    config.services.remove("svc").unwrap()
}

#[test]
fn a_minimal_service_gets_every_default() {
    let svc = one("command = [\"server\"]");
    assert_eq!(svc.name, "svc");
    assert!(svc.file.ends_with("services.d/svc.toml"));
    assert_eq!(svc.argv, ["server"]);
    assert_eq!(svc.cwd, None);
    assert!(svc.env.is_empty());
    assert!(svc.enabled);
    assert!(svc.after.is_empty());
    let r = svc.restart;
    assert_eq!(r.policy, RestartPolicy::OnFailure);
    assert_eq!(r.backoff.initial, Duration::from_millis(100));
    assert_eq!(r.backoff.max, Duration::from_secs(60));
    assert_eq!(r.backoff.factor, 2.0);
    assert_eq!(r.backoff.jitter, 0.2);
    assert_eq!(r.reset_after, Duration::from_secs(60));
    assert_eq!(r.limit.burst, 10);
    assert_eq!(r.limit.window, Duration::from_secs(300));
    assert_eq!(r.limit.cooldown, Duration::from_secs(600));
    assert_eq!(svc.stop.signal, libc::SIGTERM);
    assert_eq!(svc.stop.grace, Duration::from_secs(10));
    assert_eq!(svc.stop.stdin_grace, Duration::from_secs(2));
    assert_eq!(svc.mcp, None);
    assert_eq!(svc.health, None);
    assert_eq!(svc.memory, None);
    assert_eq!(svc.task, None);
    assert_eq!(svc.logs, paios::config::Global::default().logs);
}

#[test]
fn every_key_is_read() {
    let svc = one(r#"
command = ["node", "~/kb/mcp-server.js", "--port", "${PORT}"]
cwd = "~/kb"
env = { NODE_ENV = "production", TOKEN = "${TOKEN}", LITERAL = "$${HOME} $HOME" }
enabled = false
after = []

[restart]
policy = "always"
backoff = { initial = "250ms", max = "1m30s", factor = 1.5, jitter = 0 }
reset_after = "0s"
limit = { burst = 4, window = "2m", cooldown = "1h" }

[stop]
signal = "INT"
grace = "0s"

[health]
exec = ["~/bin/check", "--port=${PORT}"]
interval = "5s"
timeout = "1s"
failures = 1
start_period = "0s"
on_failure = "alert"

[memory]
limit = "512MiB"
growth_alert = "1MiB/s"
interval = "1s"
window = "10m"

[logs]
max_size = 2048
timestamps = true
"#);
    assert_eq!(
        svc.argv,
        ["node", "/home/u/kb/mcp-server.js", "--port", "3001"]
    );
    assert_eq!(svc.cwd.as_deref(), Some(std::path::Path::new("/home/u/kb")));
    let want_env: BTreeMap<String, String> = [
        ("NODE_ENV", "production"),
        ("TOKEN", "s3cret"),
        ("LITERAL", "${HOME} $HOME"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(svc.env, want_env);
    assert!(!svc.enabled);
    assert_eq!(svc.restart.policy, RestartPolicy::Always);
    assert_eq!(svc.restart.backoff.initial, Duration::from_millis(250));
    assert_eq!(svc.restart.backoff.max, Duration::from_secs(90));
    assert_eq!(svc.restart.backoff.factor, 1.5);
    assert_eq!(svc.restart.backoff.jitter, 0.0);
    assert_eq!(svc.restart.reset_after, Duration::ZERO);
    assert_eq!(svc.restart.limit.burst, 4);
    assert_eq!(svc.restart.limit.cooldown, Duration::from_secs(3600));
    assert_eq!(svc.stop.signal, libc::SIGINT);
    assert_eq!(svc.stop.grace, Duration::ZERO);
    let h = svc.health.unwrap();
    assert_eq!(
        h.probe,
        Probe::Exec {
            argv: vec!["/home/u/bin/check".into(), "--port=3001".into()]
        }
    );
    assert_eq!(h.interval, Duration::from_secs(5));
    assert_eq!(h.timeout, Duration::from_secs(1));
    assert_eq!(h.failures, 1);
    assert_eq!(h.start_period, Duration::ZERO);
    assert_eq!(h.on_failure, OnFailure::Alert);
    let m = svc.memory.unwrap();
    assert_eq!(m.limit, Some(512 << 20));
    assert_eq!(m.growth_alert, Some((1u64 << 20) as f64));
    assert_eq!(m.interval, Duration::from_secs(1));
    assert_eq!(m.window, Duration::from_secs(600));
    assert_eq!(svc.logs.max_size, 2048);
    assert!(svc.logs.timestamps);
    // Keys not overridden come from the global settings.
    assert_eq!(svc.logs.keep, 5);
}

#[test]
fn shell_becomes_sh_dash_c_and_leaves_shell_syntax_alone() {
    let svc = one("shell = '~/run.sh $1 \"$HOME\" $$ ${PORT}'");
    assert_eq!(
        svc.argv,
        ["/bin/sh", "-c", "/home/u/run.sh $1 \"$HOME\" $$ 3001"]
    );
}

#[test]
fn probes_and_expect_status() {
    let svc = one(
        "command = [\"x\"]\n[health]\nhttp = \"http://127.0.0.1:3001/health\"\nexpect_status = 204",
    );
    assert_eq!(
        svc.health.unwrap().probe,
        Probe::Http {
            url: "http://127.0.0.1:3001/health".parse().unwrap(),
            expect_status: Some(204)
        }
    );
    let svc = one("command = [\"x\"]\nhealth = { tcp = \"[::1]:5432\" }");
    assert_eq!(
        svc.health.unwrap().probe,
        Probe::Tcp {
            addr: "[::1]:5432".parse().unwrap()
        }
    );
}

#[test]
fn dotted_and_inline_tables_read_like_headers() {
    let a = one("command = [\"x\"]\nrestart.policy = \"never\"\nrestart.limit.burst = 3\nstop = { signal = \"SIGHUP\" }");
    assert_eq!(a.restart.policy, RestartPolicy::Never);
    assert_eq!(a.restart.limit.burst, 3);
    assert_eq!(a.stop.signal, libc::SIGHUP);
}

#[test]
fn a_task_gets_task_defaults() {
    let svc = one("shell = \"~/daily.sh\"\nschedule = \"0 7 * * *\"");
    let task = svc.task.unwrap();
    assert_eq!(task.schedule, "0 7 * * *");
    assert_eq!(task.tz, None);
    assert_eq!(task.timeout, Duration::from_secs(3600));
    assert!(task.catch_up);
    assert_eq!(task.retries, 0);
    assert_eq!(svc.restart.policy, RestartPolicy::Never);

    let svc = one(
        "shell = \"x\"\nschedule = \"@weekly\"\ntz = \"Europe/Berlin\"\ntimeout = \"30m\"\ncatch_up = false\nretries = 2\n[restart]\npolicy = \"on-failure\"",
    );
    let task = svc.task.unwrap();
    assert_eq!(task.tz.as_deref(), Some("Europe/Berlin"));
    assert_eq!(task.timeout, Duration::from_secs(1800));
    assert!(!task.catch_up);
    assert_eq!(task.retries, 2);
    assert_eq!(svc.restart.policy, RestartPolicy::OnFailure);
}

#[test]
fn global_settings_and_per_service_log_overrides() {
    let (_dir, config) = load_files(&[
        (
            "paiosd.toml",
            r#"
alert_command = ["~/bin/notify", "--channel", "ops"]
storm = { crashes = 5, window = "10m" }
ledger = { keep = "30d", max_rows = 5000, context_lines = 50 }
logs = { max_size = "1MiB", keep = 3, timestamps = true, streams = true }
"#,
        ),
        ("services.d/a.toml", "command = [\"x\"]"),
        (
            "services.d/b.toml",
            "command = [\"x\"]\n[logs]\nkeep = 0\nstreams = false",
        ),
    ]);
    let g = &config.global;
    assert_eq!(
        g.alert_command.as_deref(),
        Some(
            &[
                "/home/u/bin/notify".to_string(),
                "--channel".into(),
                "ops".into()
            ][..]
        )
    );
    assert_eq!(g.storm.crashes, 5);
    assert_eq!(g.storm.window, Duration::from_secs(600));
    assert_eq!(g.ledger.keep, Duration::from_secs(30 * 86_400));
    assert_eq!(g.ledger.max_rows, 5000);
    assert_eq!(g.ledger.context_lines, 50);
    assert_eq!(config.services["a"].logs, g.logs);
    let b = config.services["b"].logs;
    assert_eq!(
        (b.max_size, b.keep, b.timestamps, b.streams),
        (1 << 20, 0, true, false)
    );
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn summary_lines_for_check() {
    let (_dir, config) = load_files(&[
        (
            "services.d/kb.toml",
            r#"command = ["node", "~/.openclaw/projects/knowledge-base/mcp-server.js", "--port", "3001"]
after = ["embedding-server"]
health = { http = "http://127.0.0.1:3001/health" }
"#,
        ),
        (
            "services.d/embedding-server.toml",
            "command = [\"embed\"]\nenabled = false",
        ),
        (
            "services.d/daily.toml",
            "shell = \"~/daily.sh\"\nschedule = \"0 7 * * *\"\ntz = \"Europe/Berlin\"",
        ),
    ]);
    let now = at("2026-03-27T12:00:00Z");
    assert_eq!(
        summary_at(&config.services["kb"], now),
        "kb  service  node …/mcp-server.js --port 3001  restart=on-failure after=embedding-server health=http://127.0.0.1:3001/health"
    );
    assert_eq!(
        summary_at(&config.services["embedding-server"], now),
        "embedding-server  service  embed  disabled restart=on-failure"
    );
    // The third run is after the switch to summer time.
    assert_eq!(
        summary_at(&config.services["daily"], now),
        "daily  task  sh -c '/home/u/daily.sh'  schedule=\"0 7 * * *\" tz=Europe/Berlin \
         next=2026-03-28 07:00 +01:00, 2026-03-29 07:00 +02:00, 2026-03-30 07:00 +02:00"
    );
}

#[test]
fn next_runs_of_a_task() {
    let task = one("shell = \"x\"\nschedule = \"*/10 * * * * *\"\ntz = \"UTC\"")
        .task
        .unwrap();
    let runs = next_runs(&task, at("2026-01-01T00:00:03Z"), 3).unwrap();
    let runs: Vec<String> = runs.iter().map(|t| t.to_rfc3339()).collect();
    assert_eq!(
        runs,
        [
            "2026-01-01T00:00:10+00:00",
            "2026-01-01T00:00:20+00:00",
            "2026-01-01T00:00:30+00:00"
        ]
    );
    let mut broken = task.clone();
    broken.tz = Some("Mars/Olympus".into());
    assert!(next_runs(&broken, at("2026-01-01T00:00:00Z"), 1)
        .unwrap_err()
        .contains("Mars/Olympus"));
}

#[test]
fn mcp_tables_get_their_transport_defaults() {
    use paios::config::{McpShare, McpTransport};
    let svc = one("command = [\"s\"]\n[mcp]\ntransport = \"stdio\"");
    let mcp = svc.mcp.clone().unwrap();
    assert_eq!(mcp.transport, McpTransport::Stdio);
    assert_eq!(mcp.share, McpShare::PerClient);
    assert_eq!(mcp.url, None);
    assert_eq!(mcp.max_line, paios::mcp::DEFAULT_MAX_LINE);
    assert!(svc.is_per_client());

    let svc = one(
        "command = [\"s\"]\n[mcp]\ntransport = \"http\"\nurl = \"http://127.0.0.1:3001/mcp\"\nmax_line = \"1MiB\"\n[stop]\nstdin_grace = \"500ms\"",
    );
    let mcp = svc.mcp.clone().unwrap();
    assert_eq!(mcp.transport, McpTransport::Http);
    assert_eq!(mcp.share, McpShare::Shared);
    assert_eq!(mcp.url.as_deref(), Some("http://127.0.0.1:3001/mcp"));
    assert_eq!(mcp.max_line, 1 << 20);
    assert_eq!(svc.stop.stdin_grace, Duration::from_millis(500));
    assert!(!svc.is_per_client());

    let svc = one("command = [\"s\"]\n[mcp]\ntransport = \"stdio\"\nshare = \"per-client\"");
    assert!(svc.is_per_client());
}
