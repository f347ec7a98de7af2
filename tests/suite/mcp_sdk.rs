//! The MCP test harness itself: `tests/mcp/sdk_client.py` (the official Python SDK)
//! against the real reference servers started directly over stdio, so a failure in a
//! bridge test is the bridge's, not the harness's.

use std::ffi::OsString;
use std::time::Duration;

use crate::common::mcp_peers::{self, run_sdk_client, Everything, Served};

const TIMEOUT: Duration = Duration::from_secs(60);

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{value} is not an array"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn every_step_against_server_everything_over_stdio() {
    let Some(everything) = mcp_peers::everything() else {
        return;
    };
    let Some(cmd) = mcp_peers::sdk_client(
        ["--long-steps", "4", "--long-duration", "0.2"],
        everything.stdio_argv(),
    ) else {
        return;
    };
    let summary = run_sdk_client(cmd, TIMEOUT).summary();

    assert_eq!(summary["server"], "mcp-servers/everything", "{summary}");
    assert_eq!(summary["ping"], true, "{summary}");
    let tools = strings(&summary["tools"]);
    for tool in ["echo", "get-sum", "trigger-long-running-operation"] {
        assert!(tools.contains(&tool.to_string()), "no {tool} in {tools:?}");
    }
    assert_eq!(
        summary["echo"], "Echo: hello from the sdk client",
        "{summary}"
    );
    assert_eq!(summary["echo_calls"], 1, "{summary}");
    // One notification per step of the long-running tool, all before its answer.
    assert_eq!(summary["progress"], 4, "{summary}");
    assert_eq!(
        summary["long_running"],
        "Long running operation completed. Duration: 0.2 seconds, Steps: 4.",
        "{summary}"
    );
}

#[test]
fn echo_many_times_with_an_awkward_message() {
    let Some(everything) = mcp_peers::everything() else {
        return;
    };
    let message = "quotes \" and \\ backslash, tab\t, newline\n, unicode é ✓ 🦀";
    let options: Vec<OsString> = vec![
        "--steps".into(),
        "echo".into(),
        "--echo-count".into(),
        "200".into(),
        "--message".into(),
        message.into(),
    ];
    let Some(cmd) = mcp_peers::sdk_client(options, everything.stdio_argv()) else {
        return;
    };
    let summary = run_sdk_client(cmd, TIMEOUT).summary();

    assert_eq!(summary["echo"], format!("Echo: {message}"), "{summary}");
    assert_eq!(summary["echo_calls"], 200, "{summary}");
    // Only the steps asked for ran.
    assert!(summary.get("tools").is_none(), "{summary}");
    assert!(summary.get("progress").is_none(), "{summary}");
}

#[test]
fn a_server_without_the_tools_asked_for_fails_the_client_clearly() {
    let Some(memory) = mcp_peers::server_memory() else {
        return;
    };
    let store = tempfile::tempdir().expect("temp dir");
    let run = |steps: &str| {
        let mut cmd =
            mcp_peers::sdk_client(["--steps", steps], memory.argv(Vec::<OsString>::new()))?;
        cmd.env("MEMORY_FILE_PATH", store.path().join("memory.jsonl"));
        Some(run_sdk_client(cmd, TIMEOUT))
    };

    let Some(listed) = run("tools") else {
        return;
    };
    let summary = listed.summary();
    let tools = strings(&summary["tools"]);
    assert!(tools.contains(&"create_entities".to_string()), "{tools:?}");
    assert!(!tools.contains(&"echo".to_string()), "{tools:?}");

    let Some(echo) = run("echo") else {
        return;
    };
    assert_eq!(echo.status.code(), Some(1), "{echo:?}");
    assert!(
        echo.stdout.is_empty(),
        "a failed run printed a summary: {echo:?}"
    );
    assert!(
        echo.stderr
            .contains("sdk_client: tools/call echo answered an error"),
        "{}",
        echo.stderr
    );

    let Some(long) = run("long") else {
        return;
    };
    assert_eq!(long.status.code(), Some(1), "{long:?}");
    assert!(
        long.stderr.contains("has no long-running tool"),
        "{}",
        long.stderr
    );
}

#[test]
fn a_server_that_exits_or_never_answers_fails_the_client() {
    let Some(python) = mcp_peers::venv_python() else {
        return;
    };
    let client = |options: &[&str], server: &[&str]| {
        let mut cmd = std::process::Command::new(&python);
        cmd.arg(mcp_peers::sdk_client_path())
            .args(options)
            .arg("--")
            .args(server);
        run_sdk_client(cmd, TIMEOUT)
    };

    let missing = client(&[], &["/nonexistent/mcp-server"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(
        missing.stderr.contains("No such file or directory"),
        "{}",
        missing.stderr
    );

    let exits = client(&[], &["/bin/true"]);
    assert_eq!(exits.status.code(), Some(1), "{exits:?}");
    assert!(exits.stderr.contains("sdk_client:"), "{}", exits.stderr);

    // A server that never answers: the client's own timeout.
    let silent = client(&["--timeout", "2"], &["/bin/sleep", "600"]);
    assert_eq!(silent.status.code(), Some(1), "{silent:?}");
    assert!(
        silent.stderr.contains("no answer within 2.0 s"),
        "{}",
        silent.stderr
    );

    let usage = client(&["--steps", "nonsense"], &["/bin/true"]);
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    assert!(usage.stderr.contains("unknown step"), "{}", usage.stderr);
}

/// The bridges `bench_mcp` compares paios with, each carrying the SDK client to
/// server-everything: supergateway and mcp-proxy as stdio bridges to the server over
/// Streamable HTTP, and mcp-proxy serving the stdio server over HTTP with supergateway
/// in front.
#[test]
fn the_other_bridges_carry_the_sdk_client_to_server_everything() {
    let (Some(everything), Some(supergateway), Some(proxy), Some(proxy_stdio)) = (
        mcp_peers::everything(),
        mcp_peers::supergateway(),
        mcp_peers::mcp_proxy(),
        mcp_peers::mcp_proxy_stdio(),
    ) else {
        return;
    };
    let port = mcp_peers::free_port();
    let http = Served::start(
        everything.http_command(port),
        port,
        Everything::http_url(port),
    );
    let steps = ["--long-steps", "2", "--long-duration", "0.2"];
    let check = |bridge: Vec<OsString>| {
        let cmd = mcp_peers::sdk_client(steps, bridge).expect("the venv was found above");
        let summary = run_sdk_client(cmd, TIMEOUT).summary();
        assert_eq!(summary["server"], "mcp-servers/everything", "{summary}");
        assert_eq!(
            summary["echo"], "Echo: hello from the sdk client",
            "{summary}"
        );
        assert!(strings(&summary["tools"]).contains(&"echo".to_string()));
        assert_eq!(
            summary["long_running"],
            "Long running operation completed. Duration: 0.2 seconds, Steps: 2.",
            "{summary}"
        );
        summary
    };

    // supergateway answers the call but does not pass the progress on: not asserted.
    check(supergateway.argv(["--streamableHttp", &http.url, "--logLevel", "none"]));
    let via_proxy = check(proxy_stdio.argv([http.url.as_str()]));
    assert_eq!(via_proxy["progress"], 2, "{via_proxy}");
    drop(http);

    let port = mcp_peers::free_port();
    let mut args: Vec<OsString> = ["--port", &port.to_string(), "--host", "127.0.0.1", "--"]
        .iter()
        .map(OsString::from)
        .collect();
    args.extend(everything.stdio_argv());
    let proxy_url = format!("http://127.0.0.1:{port}/mcp");
    let _proxy = Served::start(proxy.command(args), port, proxy_url.clone());
    check(supergateway.argv(["--streamableHttp", &proxy_url, "--logLevel", "none"]));
}
