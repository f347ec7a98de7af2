//! `paiosctl mcp NAME`: the stdio bridge an MCP client runs as its server command
//! (see [`crate::mcp::bridge`]). Its stdout is the client's JSON-RPC stream, so nothing
//! else is ever printed there, `--json` or not: every failure is a JSON-RPC error reply
//! and a line on stderr.

use crate::dirs::Dirs;
use crate::mcp::bridge;

use super::Outcome;

pub fn mcp(dirs: &Dirs, name: &str) -> Outcome {
    Ok(bridge::run(&dirs.state, &dirs.socket(), name))
}
