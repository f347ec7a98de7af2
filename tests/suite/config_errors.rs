//! Every malformed value of every key is an error that names file:line:column and
//! the dotted key, and the broken file yields no service (promise 11).
//!
//! Each case is a whole file with `‸` marking where the error must point; the marker
//! is removed before the file is written, so the expected line and column come from
//! the text itself instead of hand-counted numbers.

use crate::common;

use std::path::Path;

use paios::config::{load_with, Config};

const MARK: char = '‸';

fn env(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/home/u".into()),
        "PORT" => Some("3001".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn load_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
    let dir = common::config_dir(files);
    let config = load_with(dir.path(), &env);
    (dir, config)
}

/// Removes the marker and returns the text with the marker's 1-based line and column.
fn unmark(marked: &str) -> (String, usize, usize) {
    let at = marked
        .find(MARK)
        .unwrap_or_else(|| panic!("no marker in {marked:?}"));
    let before = &marked[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (marked.replacen(MARK, "", 1), line, column)
}

fn all_errors(config: &Config) -> String {
    config
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `(marked file text, dotted key, fragment of the message or help)`.
type Case = (&'static str, &'static str, &'static str);

fn check_service_cases(cases: &[Case]) {
    for (marked, key, fragment) in cases {
        let (text, line, column) = unmark(marked);
        let (_dir, config) = load_files(&[("services.d/svc.toml", &text)]);
        let want = format!("services.d/svc.toml:{line}:{column}: `{key}`: ");
        let found = config
            .errors
            .iter()
            .map(|e| e.to_string())
            .any(|e| e.contains(&want) && e.contains(fragment));
        assert!(
            found,
            "file:\n{text}\nwanted an error containing {want:?} and {fragment:?}, got:\n{}",
            all_errors(&config)
        );
        assert!(
            config.services.is_empty(),
            "a broken file must not load:\n{text}"
        );
    }
}

#[test]
fn top_level_keys() {
    check_service_cases(&[
        (
            "command = ‸\"node server.js\"",
            "command",
            "expected an array of strings, found a string",
        ),
        ("command = ‸[]", "command", "must not be empty"),
        (
            "command = [\"node\", ‸3]",
            "command[1]",
            "expected a string, found an integer",
        ),
        (
            "command = ‸[\"\", \"x\"]",
            "command",
            "program name must not be empty",
        ),
        (
            "command = [\"node\", ‸\"${NOPE}\"]",
            "command[1]",
            "`NOPE` is not set",
        ),
        (
            "command = ‸[\"${EMPTY}\"]",
            "command",
            "program name must not be empty",
        ),
        (
            "command = [\"node\", ‸\"${PORT\"]",
            "command[1]",
            "unclosed",
        ),
        ("shell = ‸5", "shell", "expected a string, found an integer"),
        ("shell = ‸\"  \"", "shell", "must not be empty"),
        ("shell = ‸\"run ${NOPE}\"", "shell", "`NOPE` is not set"),
        (
            "command = [\"x\"]\nshell = ‸\"x\"",
            "shell",
            "cannot both be set",
        ),
        ("‸enabled = true", "command", "missing `command` or `shell`"),
        ("command = [\"x\"]\ncwd = ‸5", "cwd", "expected a string"),
        (
            "command = [\"x\"]\ncwd = ‸\"relative/dir\"",
            "cwd",
            "not an absolute path",
        ),
        (
            "command = [\"x\"]\ncwd = ‸\"${NOPE}/x\"",
            "cwd",
            "`NOPE` is not set",
        ),
        (
            "command = [\"x\"]\nenv = ‸\"A=1\"",
            "env",
            "expected a table",
        ),
        (
            "command = [\"x\"]\nenv = { PORT = ‸3001 }",
            "env.PORT",
            "quote it",
        ),
        (
            "command = [\"x\"]\nenv = { A = ‸\"${NOPE}\" }",
            "env.A",
            "`NOPE` is not set",
        ),
        (
            "command = [\"x\"]\nenv = { \"A=B\" = ‸\"x\" }",
            "env.A=B",
            "without `=`",
        ),
        (
            "command = [\"x\"]\nenabled = ‸\"yes\"",
            "enabled",
            "expected true or false",
        ),
        (
            "command = [\"x\"]\nafter = ‸\"kb\"",
            "after",
            "expected an array of strings",
        ),
        (
            "command = [\"x\"]\nafter = [‸\"my kb\"]",
            "after[0]",
            "not a service name",
        ),
        (
            "command = [\"x\"]\nafter = [‸1]",
            "after[0]",
            "expected a string",
        ),
        (
            "command = [\"x\"]\n‸comand = [\"y\"]",
            "comand",
            "did you mean `command`?",
        ),
        (
            "command = [\"x\"]\n‸grace = \"5s\"",
            "grace",
            "belongs in the [stop] table",
        ),
        (
            "command = [\"x\"]\n‸depends_on = [\"kb\"]",
            "depends_on",
            "did you mean `after`?",
        ),
        ("command = [\"x\"]\n‸bogus = 1", "bogus", "known keys here"),
        ("command = [\"x\"\n‸", "command", "invalid TOML"),
        (
            "command = [\"x\"]\n[restart]\npolicy = ‸",
            "restart.policy",
            "invalid TOML",
        ),
    ]);
}

#[test]
fn task_keys() {
    check_service_cases(&[
        (
            "shell = \"x\"\nschedule = ‸5",
            "schedule",
            "expected a string",
        ),
        (
            "shell = \"x\"\nschedule = ‸\"0 25 * * *\"",
            "schedule",
            "field 2 (hour) `25`",
        ),
        (
            "shell = \"x\"\nschedule = ‸\"0 7 * *\"",
            "schedule",
            "4 fields",
        ),
        (
            "shell = \"x\"\nschedule = ‸\"@reboot\"",
            "schedule",
            "not a supported nickname",
        ),
        (
            "shell = \"x\"\nschedule = ‸\"0 0 30 2 *\"",
            "schedule",
            "never fires",
        ),
        (
            "shell = \"x\"\nschedule = \"@daily\"\ntz = ‸\"Europe/Berln\"",
            "tz",
            "did you mean `Europe/Berlin`?",
        ),
        (
            "shell = \"x\"\nschedule = \"@daily\"\ntz = ‸1",
            "tz",
            "expected a string",
        ),
        (
            "shell = \"x\"\nschedule = \"@daily\"\ntimeout = ‸\"0s\"",
            "timeout",
            "longer than zero",
        ),
        (
            "shell = \"x\"\nschedule = \"@daily\"\ntimeout = ‸30",
            "timeout",
            "needs a unit",
        ),
        (
            "shell = \"x\"\nschedule = \"@daily\"\ncatch_up = ‸\"yes\"",
            "catch_up",
            "true or false",
        ),
        (
            "shell = \"x\"\nschedule = \"@daily\"\nretries = ‸-1",
            "retries",
            "out of range",
        ),
        (
            "shell = \"x\"\nschedule = \"@daily\"\nretries = ‸1000",
            "retries",
            "between 0 and 100",
        ),
        ("shell = \"x\"\ntz = ‸\"UTC\"", "tz", "only for tasks"),
        (
            "shell = \"x\"\ntimeout = ‸\"1h\"",
            "timeout",
            "only for tasks",
        ),
        (
            "shell = \"x\"\ncatch_up = ‸true",
            "catch_up",
            "only for tasks",
        ),
        ("shell = \"x\"\nretries = ‸1", "retries", "only for tasks"),
        (
            "shell = \"x\"\nschedule = \"@daily\"\n[restart]\npolicy = ‸\"always\"",
            "restart.policy",
            "a task cannot use policy \"always\"",
        ),
        (
            "shell = \"x\"\nschedule = \"@daily\"\n‸[health]\ntcp = \"h:1\"",
            "health",
            "tasks have no health probes",
        ),
    ]);
}

#[test]
fn restart_keys() {
    check_service_cases(&[
        (
            "command = [\"x\"]\nrestart = ‸5",
            "restart",
            "expected a table",
        ),
        (
            "command = [\"x\"]\n[restart]\npolicy = ‸\"sometimes\"",
            "restart.policy",
            "is not one of",
        ),
        (
            "command = [\"x\"]\n[restart]\npolicy = ‸\"on_failure\"",
            "restart.policy",
            "did you mean \"on-failure\"?",
        ),
        (
            "command = [\"x\"]\n[restart]\n‸polcy = \"never\"",
            "restart.polcy",
            "did you mean `policy`?",
        ),
        (
            "command = [\"x\"]\n[restart]\nbackoff = { initial = ‸\"10\" }",
            "restart.backoff.initial",
            "no unit",
        ),
        (
            "command = [\"x\"]\n[restart]\nbackoff = { initial = ‸\"0s\" }",
            "restart.backoff.initial",
            "longer than zero",
        ),
        (
            "command = [\"x\"]\n[restart]\nbackoff = { max = ‸\"1x\" }",
            "restart.backoff.max",
            "unknown unit `x`",
        ),
        (
            "command = [\"x\"]\n[restart]\nbackoff = { initial = \"2m\", max = ‸\"1m\" }",
            "restart.backoff.max",
            "shorter than `initial`",
        ),
        (
            "command = [\"x\"]\n[restart]\nbackoff = { factor = ‸0.5 }",
            "restart.backoff.factor",
            "between 1 and 100",
        ),
        (
            "command = [\"x\"]\n[restart]\nbackoff = { factor = ‸\"2\" }",
            "restart.backoff.factor",
            "expected a number",
        ),
        (
            "command = [\"x\"]\n[restart]\nbackoff = { factor = ‸nan }",
            "restart.backoff.factor",
            "out of range",
        ),
        (
            "command = [\"x\"]\n[restart]\nbackoff = { jitter = ‸1.5 }",
            "restart.backoff.jitter",
            "between 0 and 1",
        ),
        (
            "command = [\"x\"]\n[restart]\nbackoff = { ‸jiter = 0.1 }",
            "restart.backoff.jiter",
            "did you mean `jitter`?",
        ),
        (
            "command = [\"x\"]\n[restart]\nreset_after = ‸\"-1s\"",
            "restart.reset_after",
            "negative",
        ),
        (
            "command = [\"x\"]\n[restart]\nlimit = { burst = ‸0 }",
            "restart.limit.burst",
            "out of range",
        ),
        (
            "command = [\"x\"]\n[restart]\nlimit = { window = ‸5 }",
            "restart.limit.window",
            "needs a unit",
        ),
        (
            "command = [\"x\"]\n[restart]\nlimit = { cooldown = ‸\"0s\" }",
            "restart.limit.cooldown",
            "longer than zero",
        ),
        (
            "command = [\"x\"]\n[restart.limit]\ncooldown = ‸\"99999999999999999999s\"",
            "restart.limit.cooldown",
            "too large",
        ),
        (
            "command = [\"x\"]\nrestart.limit.burst = ‸\"ten\"",
            "restart.limit.burst",
            "expected an integer",
        ),
    ]);
}

#[test]
fn stop_keys() {
    check_service_cases(&[
        (
            "command = [\"x\"]\n[stop]\nsignal = ‸\"SIGFOO\"",
            "stop.signal",
            "not a signal",
        ),
        (
            "command = [\"x\"]\n[stop]\nsignal = ‸15",
            "stop.signal",
            "expected a string",
        ),
        (
            "command = [\"x\"]\n[stop]\ngrace = ‸\"10\"",
            "stop.grace",
            "no unit",
        ),
        (
            "command = [\"x\"]\n[stop]\ngrace = ‸\"1.5s\"",
            "stop.grace",
            "e.g.",
        ),
        (
            "command = [\"x\"]\n[stop]\n‸grase = \"1s\"",
            "stop.grase",
            "did you mean `grace`?",
        ),
    ]);
}

#[test]
fn mcp_keys() {
    let c = "command = [\"x\"]\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("{c}‸[mcp]\nshare = \"per-client\""), "mcp.transport", "needs `transport`"),
        (format!("{c}[mcp]\ntransport = ‸\"sse\""), "mcp.transport", "\"stdio\""),
        (format!("{c}[mcp]\ntransport = ‸1"), "mcp.transport", "expected a string"),
        (format!("{c}‸[mcp]\ntransport = \"http\""), "mcp.url", "needs `url`"),
        (
            format!("{c}[mcp]\ntransport = \"http\"\nurl = ‸\"https://h:1/mcp\""),
            "mcp.url",
            "http://",
        ),
        (
            format!("{c}[mcp]\ntransport = \"stdio\"\nurl = ‸\"http://127.0.0.1:1/mcp\""),
            "mcp.url",
            "only for transport = \"http\"",
        ),
        (
            format!("{c}[mcp]\ntransport = \"stdio\"\nshare = ‸\"shared\""),
            "mcp.share",
            "use share = \"per-client\"",
        ),
        (
            format!("{c}[health]\ntcp = ‸\"127.0.0.1:1\"\n[mcp]\ntransport = \"stdio\""),
            "health.tcp",
            "probe each client's run with `mcp = true`",
        ),
        (
            format!("{c}[mcp]\ntransport = \"stdio\"\nshare = ‸\"shared\""),
            "mcp.share",
            "not supported for a stdio server yet",
        ),
        (
            format!(
                "{c}[mcp]\ntransport = \"http\"\nurl = \"http://127.0.0.1:1/mcp\"\nshare = ‸\"per-client\""
            ),
            "mcp.share",
            "serves every client",
        ),
        (
            format!("{c}[mcp]\ntransport = \"stdio\"\nshare = ‸\"each\""),
            "mcp.share",
            "\"per-client\"",
        ),
        (
            format!("{c}[mcp]\ntransport = \"stdio\"\nmax_line = ‸\"12\""),
            "mcp.max_line",
            "",
        ),
        (
            format!("{c}[mcp]\ntransport = \"stdio\"\nmax_line = ‸100"),
            "mcp.max_line",
            "at least 1KiB",
        ),
        (
            format!("{c}[mcp]\ntransport = \"stdio\"\n‸transprot = \"stdio\""),
            "mcp.transprot",
            "did you mean `transport`?",
        ),
        (format!("{c}‸transport = \"stdio\""), "transport", "[mcp]"),
        (format!("{c}mcp = ‸\"stdio\""), "mcp", "expected a table"),
        (
            "schedule = \"@daily\"\ncommand = [\"x\"]\n‸[mcp]\ntransport = \"stdio\"".to_string(),
            "mcp",
            "a task cannot be an MCP server",
        ),
        (format!("{c}[stop]\nstdin_grace = ‸\"2\""), "stop.stdin_grace", "no unit"),
        (format!("{c}‸stdin_grace = \"2s\""), "stdin_grace", "[stop]"),
    ];
    let cases: Vec<Case> = cases
        .into_iter()
        .map(|(t, k, f)| (&*Box::leak(t.into_boxed_str()), k, f))
        .collect();
    check_service_cases(&cases);
}

#[test]
fn health_keys() {
    check_service_cases(&[
        (
            "command = [\"x\"]\n[health]\nhttp = ‸\"https://127.0.0.1:1/\"",
            "health.http",
            "https is not supported",
        ),
        (
            "command = [\"x\"]\n[health]\nhttp = ‸\"ftp://127.0.0.1:1/\"",
            "health.http",
            "only http://",
        ),
        (
            "command = [\"x\"]\n[health]\nhttp = ‸\"http://127.0.0.1/health\"",
            "health.http",
            "needs a port",
        ),
        (
            "command = [\"x\"]\n[health]\nhttp = ‸[\"x\"]",
            "health.http",
            "expected a string",
        ),
        (
            "command = [\"x\"]\n[health]\ntcp = ‸\"nope\"",
            "health.tcp",
            "needs a port",
        ),
        (
            "command = [\"x\"]\n[health]\ntcp = ‸\"tcp://h:1\"",
            "health.tcp",
            "without a scheme",
        ),
        (
            "command = [\"x\"]\n[health]\nexec = ‸[]",
            "health.exec",
            "must not be empty",
        ),
        (
            "command = [\"x\"]\n[health]\nexec = [\"check\", ‸\"${NOPE}\"]",
            "health.exec[1]",
            "`NOPE` is not set",
        ),
        (
            "command = [\"x\"]\n[health]\nhttp = \"http://h:1/\"\ntcp = ‸\"h:1\"",
            "health.tcp",
            "only one probe",
        ),
        (
            "command = [\"x\"]\n‸[health]\ninterval = \"5s\"",
            "health.http",
            "needs one probe",
        ),
        (
            "command = [\"x\"]\n[health]\nhttp = \"http://h:1/\"\nexpect_status = ‸700",
            "health.expect_status",
            "between 100 and 599",
        ),
        (
            "command = [\"x\"]\n[health]\ntcp = \"h:1\"\nexpect_status = ‸200",
            "health.expect_status",
            "only applies to `http`",
        ),
        (
            "command = [\"x\"]\n[health]\ntcp = \"h:1\"\ninterval = ‸\"0s\"",
            "health.interval",
            "longer than zero",
        ),
        (
            "command = [\"x\"]\n[health]\ntcp = \"h:1\"\ntimeout = ‸\"x\"",
            "health.timeout",
            "not a duration",
        ),
        (
            "command = [\"x\"]\n[health]\ntcp = \"h:1\"\nfailures = ‸0",
            "health.failures",
            "out of range",
        ),
        (
            "command = [\"x\"]\n[health]\ntcp = \"h:1\"\nstart_period = ‸30",
            "health.start_period",
            "needs a unit",
        ),
        (
            "command = [\"x\"]\n[health]\ntcp = \"h:1\"\non_failure = ‸\"ignore\"",
            "health.on_failure",
            "is not one of \"restart\", \"alert\"",
        ),
        (
            "command = [\"x\"]\n[health]\ntcp = \"h:1\"\n‸intervall = \"1s\"",
            "health.intervall",
            "did you mean `interval`?",
        ),
    ]);
}

#[test]
fn memory_and_logs_keys() {
    check_service_cases(&[
        (
            "command = [\"x\"]\n[memory]\nlimit = ‸\"1.5GiB\"",
            "memory.limit",
            "fractions are not supported",
        ),
        (
            "command = [\"x\"]\n[memory]\nlimit = ‸\"100\"",
            "memory.limit",
            "at least 1MiB",
        ),
        (
            "command = [\"x\"]\n[memory]\nlimit = ‸-5",
            "memory.limit",
            "negative",
        ),
        (
            "command = [\"x\"]\n[memory]\nlimit = ‸\"1 GiB\"",
            "memory.limit",
            "e.g.",
        ),
        (
            "command = [\"x\"]\n[memory]\ngrowth_alert = ‸\"10MiB\"",
            "memory.growth_alert",
            "not a rate",
        ),
        (
            "command = [\"x\"]\n[memory]\ngrowth_alert = ‸\"10MiB/week\"",
            "memory.growth_alert",
            "unknown time unit",
        ),
        (
            "command = [\"x\"]\n[memory]\ninterval = ‸\"0s\"",
            "memory.interval",
            "longer than zero",
        ),
        (
            "command = [\"x\"]\n[memory]\ninterval = \"1m\"\nwindow = ‸\"30s\"",
            "memory.window",
            "shorter than `interval`",
        ),
        (
            "command = [\"x\"]\n[memory]\n‸limt = \"1GiB\"",
            "memory.limt",
            "did you mean `limit`?",
        ),
        (
            "command = [\"x\"]\n[logs]\nmax_size = ‸\"big\"",
            "logs.max_size",
            "not a size",
        ),
        (
            "command = [\"x\"]\n[logs]\nmax_size = ‸\"10\"",
            "logs.max_size",
            "at least 1KiB",
        ),
        (
            "command = [\"x\"]\n[logs]\nkeep = ‸-1",
            "logs.keep",
            "out of range",
        ),
        (
            "command = [\"x\"]\n[logs]\ntimestamps = ‸\"yes\"",
            "logs.timestamps",
            "true or false",
        ),
        (
            "command = [\"x\"]\n[logs]\nstreams = ‸1",
            "logs.streams",
            "true or false",
        ),
        (
            "command = [\"x\"]\n[logs]\n‸stream = true",
            "logs.stream",
            "did you mean `streams`?",
        ),
    ]);
}

#[test]
fn all_errors_of_a_file_are_reported_at_once() {
    let text = "command = [\"x\"]\n[restart]\npolicy = \"bad\"\n[stop]\ngrace = \"1\"\n[health]\nfailures = 0\n";
    let (_dir, config) = load_files(&[("services.d/svc.toml", text)]);
    let keys: Vec<&str> = config.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "restart.policy",
            "stop.grace",
            "health.http",
            "health.failures"
        ],
        "{}",
        all_errors(&config)
    );
}

fn check_global_cases(cases: &[Case]) {
    for (marked, key, fragment) in cases {
        let (text, line, column) = unmark(marked);
        let (_dir, config) = load_files(&[
            ("paiosd.toml", &text),
            ("services.d/ok.toml", "command = [\"true\"]"),
        ]);
        let want = format!("paiosd.toml:{line}:{column}: `{key}`: ");
        let found = config
            .errors
            .iter()
            .map(|e| e.to_string())
            .any(|e| e.contains(&want) && e.contains(fragment));
        assert!(
            found,
            "file:\n{text}\nwanted {want:?} and {fragment:?}, got:\n{}",
            all_errors(&config)
        );
        assert!(config.services.contains_key("ok"), "services still load");
    }
}

#[test]
fn global_keys() {
    check_global_cases(&[
        ("alert_command = ‸[]", "alert_command", "must not be empty"),
        (
            "alert_command = ‸\"notify\"",
            "alert_command",
            "expected an array of strings",
        ),
        (
            "alert_command = [‸\"${NOPE}\"]",
            "alert_command[0]",
            "`NOPE` is not set",
        ),
        ("storm = { crashes = ‸0 }", "storm.crashes", "out of range"),
        ("storm = { window = ‸\"5\" }", "storm.window", "no unit"),
        (
            "storm = { ‸crash = 3 }",
            "storm.crash",
            "did you mean `crashes`?",
        ),
        (
            "ledger = { keep = ‸\"0s\" }",
            "ledger.keep",
            "longer than zero",
        ),
        (
            "ledger = { max_rows = ‸0 }",
            "ledger.max_rows",
            "out of range",
        ),
        (
            "ledger = { context_lines = ‸-1 }",
            "ledger.context_lines",
            "out of range",
        ),
        (
            "[logs]\nmax_size = ‸\"1\"",
            "logs.max_size",
            "at least 1KiB",
        ),
        ("[logs]\nkeep = ‸\"5\"", "logs.keep", "expected an integer"),
        ("‸keep = 5", "keep", "belongs in the [logs] table"),
        ("‸command = [\"x\"]", "command", "services.d/NAME.toml"),
        ("storm = ‸3", "storm", "expected a table"),
        ("storm = {‸", "storm", "invalid TOML"),
    ]);
}

#[test]
fn broken_global_keys_keep_their_defaults_and_good_ones_apply() {
    let (_dir, config) = load_files(&[(
        "paiosd.toml",
        "storm = { crashes = 0, window = \"2m\" }\nlogs = { keep = 9 }\n",
    )]);
    assert_eq!(config.errors.len(), 1, "{}", all_errors(&config));
    assert_eq!(config.global.storm.crashes, 3);
    assert_eq!(config.global.storm.window.as_secs(), 120);
    assert_eq!(config.global.logs.keep, 9);
}

fn error_for(config: &Config, file: &str) -> Vec<String> {
    config
        .errors
        .iter()
        .filter(|e| e.file.ends_with(file))
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn empty_and_missing_directories() {
    // No services.d: a fresh install, not an error.
    let dir = tempfile::tempdir().unwrap();
    let config = load_with(dir.path(), &env);
    assert!(config.errors.is_empty() && config.services.is_empty());

    // An empty services.d likewise.
    let (_d, config) = load_files(&[]);
    assert!(config.errors.is_empty() && config.services.is_empty());

    // A config directory that does not exist is one error naming it.
    let missing = dir.path().join("nope");
    let config = load_with(&missing, &env);
    assert_eq!(config.errors.len(), 1);
    let e = config.errors[0].to_string();
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");

    // A file where a directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let config = load_with(&file, &env);
    assert!(config.errors[0].to_string().contains("not a directory"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.d"), "").unwrap();
    let config = load_with(dir.path(), &env);
    assert!(
        all_errors(&config).contains("services.d is a file"),
        "{}",
        all_errors(&config)
    );
}

#[test]
fn whole_file_problems_name_the_file_and_others_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services.d");
    std::fs::create_dir(&services).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(services.join(name), bytes).unwrap();
    write("good.toml", b"command = [\"true\"]\n");
    write("empty.toml", b"");
    write("blank.toml", b"  \n\n# only a comment\n");
    write("latin1.toml", b"command = [\"caf\xe9\"]\n");
    write("my service.toml", b"command = [\"true\"]\n");
    write("a.b.toml", b"command = [\"true\"]\n");
    write("README.md", b"not toml");
    write("kb.toml~", b"backup");
    write(".hidden.toml", b"garbage =");
    write("big.toml", &vec![b'#'; (1 << 20) + 1]);
    std::fs::create_dir(services.join("x.toml")).unwrap();
    std::os::unix::fs::symlink(services.join("gone"), services.join("dangling.toml")).unwrap();
    let fifo = services.join("fifo.toml");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);

    let config = load_with(dir.path(), &env);
    let names: Vec<&str> = config.services.keys().map(String::as_str).collect();
    assert_eq!(names, ["good"], "{}", all_errors(&config));

    let expect = [
        ("empty.toml", "the file is empty"),
        ("blank.toml", "missing `command` or `shell`"),
        ("latin1.toml", "latin1.toml:1:16: is not valid UTF-8"),
        (
            "my service.toml",
            "`my service` is not a valid service name",
        ),
        ("my service.toml", "rename it to my-service.toml"),
        ("a.b.toml", "`a.b` is not a valid service name"),
        ("big.toml", "larger than 1MiB"),
        ("x.toml", "is a directory"),
        (
            "dangling.toml",
            "symbolic link to a file that does not exist",
        ),
        ("fifo.toml", "not a regular file"),
    ];
    for (file, fragment) in expect {
        let errors = error_for(&config, file);
        assert!(
            errors.iter().any(|e| e.contains(fragment)),
            "{file}: wanted {fragment:?} in {errors:?}"
        );
    }
    assert!(error_for(&config, "README.md").is_empty());
    assert!(error_for(&config, ".hidden.toml").is_empty());
    assert!(error_for(&config, "good.toml").is_empty());
    // Errors come sorted by file name.
    let files: Vec<_> = config.errors.iter().map(|e| e.file.clone()).collect();
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(files, sorted);
}

#[test]
fn unreadable_file_is_an_error_for_that_file() {
    use std::os::unix::fs::PermissionsExt;
    if nix::unistd::geteuid().is_root() {
        // root reads any file regardless of its mode: run the test as a user who cannot.
        let Some(user) = common::needs("root, useradd and setpriv", common::TestUser::create())
        else {
            return;
        };
        common::run_as_user(
            module_path!(),
            "unreadable_file_is_an_error_for_that_file",
            &user,
        );
        return;
    }
    let (dir, _) = load_files(&[]);
    let path = dir.path().join("services.d/secret.toml");
    std::fs::write(&path, "command = [\"true\"]").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let config = load_with(dir.path(), &env);
    assert!(error_for(&config, "secret.toml")[0].contains("cannot open"));
}

#[test]
fn after_problems_point_at_the_entry() {
    let (_dir, config) = load_files(&[
        ("services.d/a.toml", "command = [\"x\"]\nafter = [\"b\"]\n"),
        ("services.d/b.toml", "command = [\"x\"]\nafter = [\"c\"]\n"),
        ("services.d/c.toml", "command = [\"x\"]\nafter = [\"a\"]\n"),
        (
            "services.d/self.toml",
            "command = [\"x\"]\nafter = [\"self\"]\n",
        ),
        (
            "services.d/typo.toml",
            "command = [\"x\"]\nafter = [\"good\", \"gooood\"]\n",
        ),
        ("services.d/good.toml", "command = [\"x\"]\n"),
        ("services.d/broken.toml", "command = 5\n"),
        (
            "services.d/needs-broken.toml",
            "command = [\"x\"]\nafter = [\"broken\"]\n",
        ),
        (
            "services.d/chain.toml",
            "command = [\"x\"]\nafter = [\"needs-broken\"]\n",
        ),
        (
            "services.d/job.toml",
            "shell = \"x\"\nschedule = \"@daily\"\n",
        ),
        (
            "services.d/after-job.toml",
            "command = [\"x\"]\nafter = [\"job\"]\n",
        ),
        (
            "services.d/job-after-good.toml",
            "shell = \"x\"\nschedule = \"@daily\"\nafter = [\"good\"]\n",
        ),
    ]);
    let names: Vec<&str> = config.services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["good", "job", "job-after-good"],
        "{}",
        all_errors(&config)
    );
    let expect = [
        ("a.toml", "a.toml:2:10: `after[0]`: `after` forms a cycle: a -> b -> c -> a"),
        ("b.toml", "b.toml:2:10: `after[0]`: `after` forms a cycle"),
        ("c.toml", "c.toml:2:10: `after[0]`: `after` forms a cycle"),
        ("self.toml", "self.toml:2:10: `after[0]`: a service cannot come after itself"),
        ("typo.toml", "typo.toml:2:18: `after[1]`: unknown service `gooood` (help: did you mean `good`?)"),
        ("needs-broken.toml", "needs-broken.toml:2:10: `after[0]`: `broken` is not loaded because its file has errors"),
        ("chain.toml", "chain.toml:2:10: `after[0]`: `needs-broken` is not loaded"),
        ("after-job.toml", "after-job.toml:2:10: `after[0]`: `job` is a task"),
    ];
    for (file, want) in expect {
        let errors = error_for(&config, file);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{file}: wanted {want:?} in {errors:?}"
        );
    }
}

#[test]
fn cycles_through_larger_groups_are_all_rejected() {
    // a <-> b and b <-> c: one group of three with two loops.
    let (_dir, config) = load_files(&[
        ("services.d/a.toml", "command = [\"x\"]\nafter = [\"b\"]\n"),
        (
            "services.d/b.toml",
            "command = [\"x\"]\nafter = [\"a\", \"c\"]\n",
        ),
        ("services.d/c.toml", "command = [\"x\"]\nafter = [\"b\"]\n"),
        ("services.d/d.toml", "command = [\"x\"]\n"),
    ]);
    let names: Vec<&str> = config.services.keys().map(String::as_str).collect();
    assert_eq!(names, ["d"]);
    for file in ["a.toml", "b.toml", "c.toml"] {
        assert!(
            error_for(&config, file)
                .iter()
                .any(|e| e.contains("forms a cycle")),
            "{}",
            all_errors(&config)
        );
    }
}

#[test]
fn a_deep_after_chain_loads() {
    let files: Vec<(String, String)> = (0..500)
        .map(|i| {
            let after = if i == 0 {
                String::new()
            } else {
                format!("after = [\"s{}\"]\n", i - 1)
            };
            (
                format!("services.d/s{i}.toml"),
                format!("command = [\"x\"]\n{after}"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let (_dir, config) = load_files(&refs);
    assert!(config.errors.is_empty(), "{}", all_errors(&config));
    assert_eq!(config.services.len(), 500);
}

#[test]
fn hostile_bytes_never_panic() {
    let inputs: [&[u8]; 8] = [
        b"\x00\x00\x00",
        b"command = [\"a\x00b\"]",
        b"[[[[[[[[[[",
        b"command = \"\"\"",
        b"\xef\xbb\xbfcommand = [\"true\"]",
        b"command = [\"x\"]\n[health]\nhttp = \"http://[::1:80/\"",
        b"command = [\"x\"]\nenv = { a = { b = { c = 1 } } }",
        b"command = [\"x\"]\n[[restart]]\npolicy = \"never\"",
    ];
    for bytes in inputs {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("services.d")).unwrap();
        std::fs::write(dir.path().join("services.d/h.toml"), bytes).unwrap();
        let config = load_with(dir.path(), &env);
        // Each is either loaded or explained; nothing in between.
        assert!(
            config.services.contains_key("h") == config.errors.is_empty(),
            "{bytes:?}: {}",
            all_errors(&config)
        );
        for e in &config.errors {
            assert!(e.file.ends_with(Path::new("services.d/h.toml")));
        }
    }
}

#[test]
fn a_probe_on_another_services_port_is_refused() {
    let (_dir, config) = load_files(&[
        (
            "services.d/kb.toml",
            "command = [\"node\"]\n[health]\nhttp = \"http://127.0.0.1:3001/health\"\n",
        ),
        (
            "services.d/other.toml",
            "command = [\"node\"]\n[health]\ntcp = \"localhost:3001\"\n",
        ),
        (
            "services.d/own.toml",
            "command = [\"node\"]\n[health]\ntcp = \"127.0.0.1:3002\"\n",
        ),
    ]);
    let text = all_errors(&config);
    assert!(text.contains("other.toml:3:7: `health.tcp`"), "{text}");
    assert!(text.contains("`kb`"), "{text}");
    assert!(config.services.contains_key("kb") && config.services.contains_key("own"));
    assert!(!config.services.contains_key("other"));
}

#[test]
fn health_mcp_key() {
    let stdio = "command = [\"x\"]\n[mcp]\ntransport = \"stdio\"\n";
    let http =
        "command = [\"x\"]\n[mcp]\ntransport = \"http\"\nurl = \"http://127.0.0.1:3001/mcp\"\n";
    let cases = vec![
        (
            "command = [\"x\"]\n[health]\nmcp = ‸true".to_string(),
            "health.mcp",
            "this service has no [mcp] table",
        ),
        (
            format!("{stdio}[health]\nmcp = ‸\"yes\""),
            "health.mcp",
            "expected true or false",
        ),
        (
            format!("{http}[health]\nhttp = \"http://127.0.0.1:3001/health\"\nmcp = ‸true"),
            "health.mcp",
            "only one probe",
        ),
        (
            format!("{stdio}[health]\ntcp = \"127.0.0.1:1\"\nmcp = ‸true"),
            "health.mcp",
            "`http`, `tcp`, `exec` or `mcp`",
        ),
        (
            format!("{stdio}[health]\nexec = [\"true\"]\nmcp = ‸true"),
            "health.mcp",
            "only one probe",
        ),
        (
            format!("{stdio}‸[health]\nmcp = false"),
            "health.http",
            "needs one probe",
        ),
        (
            format!("{http}[health]\nmcp = true\nexpect_status = ‸200"),
            "health.expect_status",
            "only applies to `http`",
        ),
        (
            format!("{stdio}[health]\nmcp = true\ntimeout = ‸\"0s\""),
            "health.timeout",
            "longer than zero",
        ),
        (
            "command = [\"x\"]\nmcp = ‸true".to_string(),
            "mcp",
            "expected a table",
        ),
    ];
    let cases: Vec<Case> = cases
        .into_iter()
        .map(|(t, k, f)| (&*Box::leak(t.into_boxed_str()), k, f))
        .collect();
    check_service_cases(&cases);

    // Valid: the ping goes over the transport of the file's own [mcp] table, and the
    // other [health] keys apply as to any probe.
    let (_dir, config) = load_files(&[
        (
            "services.d/web.toml",
            &format!("{http}[health]\nmcp = true\ninterval = \"5s\"\nfailures = 2\n"),
        ),
        (
            "services.d/pipe.toml",
            &format!("{stdio}[health]\nmcp = true\n"),
        ),
        (
            "services.d/plain.toml",
            &format!("{http}[health]\nmcp = false\ntcp = \"127.0.0.1:9\"\n"),
        ),
    ]);
    assert!(config.errors.is_empty(), "{}", all_errors(&config));
    let probe = |name: &str| {
        let svc = config.services.get(name).expect(name);
        svc.health.clone().expect("a [health] table")
    };
    let web = probe("web");
    match &web.probe {
        paios::config::Probe::Mcp(paios::config::McpEndpoint::Http(url)) => {
            assert_eq!((url.port, url.path.as_str()), (3001, "/mcp"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (web.interval, web.failures),
        (std::time::Duration::from_secs(5), 2)
    );
    assert_eq!(
        probe("pipe").probe,
        paios::config::Probe::Mcp(paios::config::McpEndpoint::Stdio)
    );
    assert!(matches!(
        probe("plain").probe,
        paios::config::Probe::Tcp { .. }
    ));
}
