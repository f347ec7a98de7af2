//! The real MCP peers the MCP tests run against, as `integration/mcp-peers/install`
//! lays them out under `<repo>/target/mcp-peers/`: server-everything and server-memory
//! (the reference servers), supergateway and mcp-proxy (other bridges), and a venv with
//! the official Python SDK to run `tests/mcp/sdk_client.py` with.
//!
//! Each finder gives `None` after printing what is missing and how to install it, and
//! fails the test under CI (which runs the install script), through [`super::needs`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::needs;

const WHAT: &str = "the MCP peers (run integration/mcp-peers/install)";

/// `<repo>/target/mcp-peers`, where the install script puts them whatever
/// `CARGO_TARGET_DIR` says.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mcp-peers")
}

/// `tests/mcp/sdk_client.py`, the SDK client (run it with [`venv_python`]).
pub fn sdk_client_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/sdk_client.py")
}

/// A Node.js program: the `node` on PATH and the script it runs.
#[derive(Clone, Debug)]
pub struct NodeScript {
    pub node: PathBuf,
    pub script: PathBuf,
}

impl NodeScript {
    /// `node SCRIPT ARGS...` as an argv, for a harness that takes one (the SDK client's
    /// `-- COMMAND...`, a service's `command`).
    pub fn argv<S: Into<OsString>>(&self, args: impl IntoIterator<Item = S>) -> Vec<OsString> {
        let mut argv = vec![self.node.clone().into(), self.script.clone().into()];
        argv.extend(args.into_iter().map(Into::into));
        argv
    }

    /// `node SCRIPT ARGS...`, nothing else set.
    pub fn command<S: Into<OsString>>(&self, args: impl IntoIterator<Item = S>) -> Command {
        let mut argv = self.argv(args).into_iter();
        let mut cmd = Command::new(argv.next().expect("argv starts with node"));
        cmd.args(argv);
        cmd
    }
}

/// `@modelcontextprotocol/server-everything`: every MCP feature, including the `echo`
/// tool and `trigger-long-running-operation` (progress notifications when the call
/// carries a progress token).
#[derive(Clone, Debug)]
pub struct Everything(pub NodeScript);

impl Everything {
    /// The argv of the server over stdio: `node dist/index.js stdio`.
    pub fn stdio_argv(&self) -> Vec<OsString> {
        self.0.argv(["stdio"])
    }

    /// The server over Streamable HTTP on `port` (its `PORT`; it listens on every
    /// address, answering at [`Everything::http_url`]). Its stdout is chatty: one line
    /// per session.
    pub fn http_command(&self, port: u16) -> Command {
        let mut cmd = self.0.command(["streamableHttp"]);
        cmd.env("PORT", port.to_string());
        cmd
    }

    /// Where [`Everything::http_command`] on `port` answers.
    pub fn http_url(port: u16) -> String {
        format!("http://127.0.0.1:{port}/mcp")
    }
}

/// server-everything, if installed.
pub fn everything() -> Option<Everything> {
    node_script("@modelcontextprotocol/server-everything/dist/index.js").map(Everything)
}

/// `@modelcontextprotocol/server-memory`, a knowledge-graph server over stdio (no
/// arguments; `MEMORY_FILE_PATH` names its JSON-lines store, by default beside its
/// script: always set it to a temp file in tests).
pub fn server_memory() -> Option<NodeScript> {
    node_script("@modelcontextprotocol/server-memory/dist/index.js")
}

/// supergateway. As a stdio bridge to a Streamable HTTP server:
/// `argv(["--streamableHttp", URL, "--logLevel", "none"])`; the other way round
/// (a stdio server exposed over HTTP):
/// `argv(["--stdio", "CMD", "--outputTransport", "streamableHttp", "--port", "P"])`.
/// It does not relay progress notifications from an HTTP server to its stdio client.
pub fn supergateway() -> Option<NodeScript> {
    node_script("supergateway/dist/index.js")
}

/// mcp-proxy's command line: a stdio server it spawns served over HTTP,
/// `argv(["--port", "P", "--host", "127.0.0.1", "--", CMD, ARGS...])`, Streamable HTTP at
/// `/mcp` and SSE at `/sse`; all clients share the one server it spawned.
pub fn mcp_proxy() -> Option<NodeScript> {
    node_script("mcp-proxy/dist/bin/mcp-proxy.mjs")
}

/// mcp-proxy the other way: a stdio bridge to a Streamable HTTP server,
/// `argv([URL])` (`integration/mcp-peers/mcp-proxy-stdio.mjs`, installed beside the
/// packages so it finds them).
pub fn mcp_proxy_stdio() -> Option<NodeScript> {
    let script = peers_dir().join("mcp-proxy-stdio.mjs");
    let found = node().and_then(|node| {
        if script.is_file() && peers_dir().join("node_modules/mcp-proxy").is_dir() {
            Ok(NodeScript { node, script })
        } else {
            Err(format!(
                "{} or node_modules/mcp-proxy beside it is missing",
                script.display()
            ))
        }
    });
    needs(WHAT, found)
}

/// The venv's python, which has the official `mcp` SDK.
pub fn venv_python() -> Option<PathBuf> {
    let python = peers_dir().join("venv/bin/python");
    let found = if python.is_file() {
        Ok(python)
    } else {
        Err(format!("{} is missing", python.display()))
    };
    needs(WHAT, found)
}

/// `venv/bin/python tests/mcp/sdk_client.py OPTIONS -- SERVER...`: the SDK client
/// against the stdio server `server`, if the venv is installed.
pub fn sdk_client<S: Into<OsString>>(
    options: impl IntoIterator<Item = S>,
    server: impl IntoIterator<Item = OsString>,
) -> Option<Command> {
    let python = venv_python()?;
    let mut cmd = Command::new(python);
    cmd.arg(sdk_client_path());
    cmd.args(options.into_iter().map(Into::into));
    cmd.arg("--");
    cmd.args(server);
    Some(cmd)
}

fn node_script(under_node_modules: &str) -> Option<NodeScript> {
    let script = peers_dir().join("node_modules").join(under_node_modules);
    let found = node().and_then(|node| {
        if script.is_file() {
            Ok(NodeScript { node, script })
        } else {
            Err(format!("{} is missing", script.display()))
        }
    });
    needs(WHAT, found)
}

/// The `node` on PATH.
fn node() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("node"))
        .find(|p| p.is_file())
        .ok_or_else(|| "no node on PATH".to_string())
}

/// How one run of the SDK client ended.
#[derive(Debug)]
pub struct SdkRun {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl SdkRun {
    /// The JSON summary line, when the client succeeded; panics with its stderr when not.
    pub fn summary(&self) -> serde_json::Value {
        assert!(
            self.status.success(),
            "the SDK client failed ({}): stderr:\n{}\nstdout:\n{}",
            self.status,
            self.stderr,
            self.stdout
        );
        let last = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("the SDK client's summary {last:?} is not JSON: {e}"))
    }
}

/// Runs `cmd` (an [`sdk_client`] command) in a process group of its own and waits for
/// it up to `timeout`; the group (the client and the server it launched) is killed
/// when it ends, on a timeout, or when this panics.
pub fn run_sdk_client(mut cmd: Command, timeout: std::time::Duration) -> SdkRun {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn the SDK client");
    let mut guard = super::GroupGuard::new();
    guard.group(child.id() as i32);
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut status = None;
    super::wait_until(timeout, || {
        status = child.try_wait().expect("wait for the SDK client");
        status.is_some()
    });
    // Kill what is left of the group (the client on a timeout, a server it failed to
    // stop) so the readers see end of file.
    drop(guard);
    let status = match status {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the SDK client did not end within {timeout:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
    };
    SdkRun {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// A free TCP port on 127.0.0.1 (free when asked: bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// An HTTP server (server-everything over Streamable HTTP, mcp-proxy) running in a
/// process group of its own, killed with its children on drop.
pub struct Served {
    pub url: String,
    child: std::process::Child,
    guard: Option<super::GroupGuard>,
}

impl Served {
    /// Starts `cmd`, which listens on `port`, and waits until 127.0.0.1:`port` accepts a
    /// connection; `url` is where it answers MCP.
    pub fn start(mut cmd: Command, port: u16, url: String) -> Served {
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;

        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().expect("spawn the HTTP server");
        let mut guard = super::GroupGuard::new();
        guard.group(child.id() as i32);
        let mut served = Served {
            url,
            child,
            guard: Some(guard),
        };
        let listening = super::wait_until(std::time::Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                || matches!(served.child.try_wait(), Ok(Some(_)))
        });
        let exited = served.child.try_wait().expect("wait for the HTTP server");
        assert!(
            listening && exited.is_none(),
            "the HTTP server for {} did not listen on port {port} ({exited:?})",
            served.url
        );
        served
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        drop(self.guard.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
