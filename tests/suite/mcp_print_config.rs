//! `paiosctl mcp --print-config`: the snippets that point Claude Code, Claude Desktop
//! and Codex at the bridges, through the real binary. The printed command is run as a
//! client would run it, to show it is a working bridge and not just text.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{paiosctl_path, TestDirs};

fn dirs_with_servers() -> TestDirs {
    let d = TestDirs::new();
    d.write_service(
        "kb",
        "command = [\"/bin/true\"]\n[mcp]\ntransport = \"http\"\nurl = \"http://127.0.0.1:3001/mcp\"\n",
    );
    d.write_service(
        "echo",
        "command = [\"/bin/cat\"]\n[mcp]\ntransport = \"stdio\"\n",
    );
    d.write_service("gateway", "command = [\"/bin/sleep\", \"1000\"]\n");
    d
}

fn ctl(d: &TestDirs, state: &Path, args: &[&str]) -> Output {
    Command::new(paiosctl_path())
        .arg("--config-dir")
        .arg(&d.config)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("run paiosctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn own_paiosctl() -> String {
    paiosctl_path()
        .canonicalize()
        .expect("paiosctl path")
        .display()
        .to_string()
}

#[test]
fn claude_config_lists_every_mcp_server_with_absolute_paths() {
    let d = dirs_with_servers();
    let out = ctl(&d, &d.state, &["mcp", "--print-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let servers = value["mcpServers"].as_object().expect("mcpServers");
    let names: Vec<&String> = servers.keys().collect();
    assert_eq!(names, ["echo", "kb"], "the plain service is left out");
    for (name, entry) in servers {
        assert_eq!(entry["command"], own_paiosctl());
        assert_eq!(
            entry["args"],
            serde_json::json!(["--state-dir", d.state.display().to_string(), "mcp", name])
        );
    }
    // The same for `claude` spelled out, and `json` without the wrapper.
    let named = ctl(&d, &d.state, &["mcp", "--print-config", "claude"]);
    assert_eq!(stdout(&named), stdout(&out));
    let json = ctl(&d, &d.state, &["mcp", "--print-config", "json", "kb"]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("JSON");
    assert_eq!(value["kb"]["command"], own_paiosctl());
    assert_eq!(value.as_object().map(|o| o.len()), Some(1));
}

#[test]
fn codex_config_is_toml_even_for_a_state_dir_with_quotes_and_spaces() {
    let d = dirs_with_servers();
    let state = d.root.path().join("Application Support \"x\" \\ y");
    let out = ctl(
        &d,
        &state,
        &["mcp", "--print-config", "codex", "echo", "kb"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let value: toml::Value = toml::from_str(&stdout(&out)).expect("TOML");
    for name in ["echo", "kb"] {
        let entry = &value["mcp_servers"][name];
        assert_eq!(entry["command"].as_str(), Some(own_paiosctl().as_str()));
        let args: Vec<&str> = entry["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert_eq!(
            args,
            ["--state-dir", &state.display().to_string(), "mcp", name]
        );
    }
}

#[test]
fn a_wrong_name_is_an_error_that_says_what_is_there() {
    let d = dirs_with_servers();
    let typo = ctl(&d, &d.state, &["mcp", "--print-config", "codex", "ehco"]);
    assert_eq!(typo.status.code(), Some(1));
    assert!(stdout(&typo).is_empty());
    assert!(
        stderr(&typo).contains("did you mean `echo`?"),
        "{}",
        stderr(&typo)
    );
    let plain = ctl(&d, &d.state, &["mcp", "--print-config", "gateway"]);
    assert_eq!(plain.status.code(), Some(1));
    assert!(stderr(&plain).contains("`gateway` has no [mcp] table"));
    // Nothing printed for one bad name among good ones: a half snippet would be pasted.
    let mixed = ctl(&d, &d.state, &["mcp", "--print-config", "kb", "nope"]);
    assert_eq!(mixed.status.code(), Some(1));
    assert!(stdout(&mixed).is_empty());
}

#[test]
fn no_mcp_server_and_broken_files_are_said() {
    let d = TestDirs::new();
    d.write_service("gateway", "command = [\"/bin/true\"]\n");
    let none = ctl(&d, &d.state, &["mcp", "--print-config"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        stderr(&none).contains("has an [mcp] table"),
        "{}",
        stderr(&none)
    );

    d.write_service(
        "echo",
        "command = [\"/bin/cat\"]\n[mcp]\ntransport = \"stdio\"\n",
    );
    d.write_service(
        "broken",
        "command = [\"/bin/cat\"]\n[mcp]\ntransprt = \"stdio\"\n",
    );
    let out = ctl(&d, &d.state, &["mcp", "--print-config", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("2 problems in"), "{}", stderr(&out));
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert!(value.get("echo").is_some() && value.get("broken").is_none());
}

#[test]
fn the_bridge_takes_exactly_one_name() {
    let d = dirs_with_servers();
    for args in [&["mcp", "kb", "echo"][..], &["mcp"][..]] {
        let out = ctl(&d, &d.state, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "nothing on a client's stdout");
    }
}

/// The printed command, started the way a client starts it, is the bridge: with no
/// paiosd it answers `initialize` with a JSON-RPC error and exits 1.
#[test]
fn the_printed_command_runs_the_bridge() {
    let d = dirs_with_servers();
    let out = ctl(&d, &d.state, &["mcp", "--print-config", "json", "echo"]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let command = PathBuf::from(value["echo"]["command"].as_str().expect("command"));
    let args: Vec<String> = value["echo"]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    let mut child = Command::new(command)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the bridge");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{}}}}"#
    )
    .expect("write initialize");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the answer");
    let answer: serde_json::Value = serde_json::from_str(&line).expect("JSON-RPC answer");
    assert_eq!(answer["id"], 1);
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("paiosd")),
        "{answer}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the bridge did not exit without paiosd");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(1));
}
