//! MCP servers reached through paiosd. A client (an editor) starts the bridge,
//! `paiosctl mcp NAME`, as its stdio server command; the bridge connects to
//! `<state>/mcp/NAME.sock`, and paiosd hands it a run of the server (`transport =
//! "stdio"`) or the server's URL (`transport = "http"`).
//!
//! The socket speaks newline-delimited JSON. The bridge's first line is a [`Hello`];
//! paiosd answers with one [`Welcome`] line. After a welcome for a stdio server, every
//! line in either direction is a JSON-RPC message of the server's, copied verbatim.
//! After a welcome for an HTTP server the connection carries nothing more: it stays
//! open while the client is connected, so paiosd can count the client, and the bridge
//! learns from its end that paiosd has gone.

pub mod serve;

use std::path::{Path, PathBuf};

pub mod bridge;
mod frame;
mod http;
mod jsonrpc;
#[cfg(target_os = "linux")]
mod parent_linux;
#[cfg(target_os = "macos")]
mod parent_macos;
pub mod probe;
mod sse;
#[cfg(target_os = "linux")]
mod trim_linux;

use serde::{Deserialize, Serialize};

/// The version of the hello and welcome lines.
pub const PROTOCOL_VERSION: u32 = 1;

/// The default cap on one JSON-RPC line, either way (`[mcp] max_line`).
pub const DEFAULT_MAX_LINE: u64 = 16 * 1024 * 1024;

/// The cap on the hello line itself, before paiosd knows which server is asked for.
pub const MAX_HELLO_BYTES: usize = 4 * 1024;

/// The directory under the state directory holding one socket per MCP server.
pub fn socket_dir(state: &Path) -> PathBuf {
    state.join("mcp")
}

/// The socket of MCP server `name`.
pub fn socket_path(state: &Path, name: &str) -> PathBuf {
    socket_dir(state).join(format!("{name}.sock"))
}

/// The bridge's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`].
    pub paios_mcp: u32,
    /// The bridge's parent: the MCP client that started it.
    pub client_pid: i32,
    /// The client's command name, where the bridge could read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_command: Option<String>,
}

/// paiosd's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "welcome", rename_all = "snake_case")]
pub enum Welcome {
    /// A run of the server is started for this client; JSON-RPC lines follow.
    Stdio { max_line: u64 },
    /// The server speaks Streamable HTTP at `url`; the bridge talks to it there.
    Http { url: String, max_line: u64 },
    /// No server for this client: `reason` says why, `fix` is the command that helps.
    Refused { reason: String, fix: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_welcome_lines_read_back() {
        let hello = Hello {
            paios_mcp: PROTOCOL_VERSION,
            client_pid: 42,
            client_command: Some("claude".into()),
        };
        let line = serde_json::to_string(&hello).expect("hello");
        assert_eq!(
            line,
            r#"{"paios_mcp":1,"client_pid":42,"client_command":"claude"}"#
        );
        assert_eq!(serde_json::from_str::<Hello>(&line).expect("read"), hello);
        let refused = Welcome::Refused {
            reason: "kb is failed".into(),
            fix: "paiosctl start kb".into(),
        };
        let line = serde_json::to_string(&refused).expect("welcome");
        assert_eq!(
            line,
            r#"{"welcome":"refused","reason":"kb is failed","fix":"paiosctl start kb"}"#
        );
        assert_eq!(
            serde_json::from_str::<Welcome>(&line).expect("read"),
            refused
        );
    }

    #[test]
    fn a_hello_with_unknown_fields_is_refused() {
        let line = r#"{"paios_mcp":1,"client_pid":42,"extra":true}"#;
        assert!(serde_json::from_str::<Hello>(line).is_err());
    }

    #[test]
    fn sockets_live_under_the_state_directory() {
        assert_eq!(
            socket_path(Path::new("/s"), "kb"),
            PathBuf::from("/s/mcp/kb.sock")
        );
    }
}
