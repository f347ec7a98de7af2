//! `paiosctl mcp NAME`: the stdio bridge an MCP client runs as its server command
//! (see [`crate::mcp::bridge`]). Its stdout is the client's JSON-RPC stream, so nothing
//! else is ever printed there, `--json` or not: every failure is a JSON-RPC error reply
//! and a line on stderr.
//!
//! `paiosctl mcp --print-config [claude|codex|json] [NAME…]` prints what a client needs
//! to reach the bridges instead: the absolute path of this `paiosctl`, and the state
//! directory passed explicitly, because an editor starts its servers with an
//! environment of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{self, ServiceConfig};
use crate::dirs::Dirs;
use crate::mcp::bridge;

use super::{failure, print, Failure, Outcome};

/// Bridges standard input and output to MCP server `name`.
pub fn mcp(dirs: &Dirs, name: &str) -> Outcome {
    Ok(bridge::run(&dirs.state, &dirs.socket(), name))
}

/// The clients `--print-config` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFormat {
    /// Claude Code and Claude Desktop: `{"mcpServers": {NAME: {command, args}}}`.
    Claude,
    /// Codex: `[mcp_servers.NAME]` tables for `~/.codex/config.toml`.
    Codex,
    /// `{NAME: {command, args}}`, for scripts and other clients.
    Json,
}

impl ClientFormat {
    pub fn parse(word: &str) -> Option<ClientFormat> {
        match word {
            "claude" => Some(ClientFormat::Claude),
            "codex" => Some(ClientFormat::Codex),
            "json" => Some(ClientFormat::Json),
            _ => None,
        }
    }
}

/// The words after `mcp`: the bridge's one server name, or with `--print-config` an
/// optional format and then any number of server names. A first word that is a format
/// name is the format, so a server called `claude` is `--print-config claude claude`.
pub fn main(dirs: &Dirs, print_config: bool, words: &[String]) -> Outcome {
    if !print_config {
        return match words {
            [name] => mcp(dirs, name),
            _ => Err(usage(
                "`paiosctl mcp` bridges one server: `paiosctl mcp NAME` \
                 (or `paiosctl mcp --print-config [claude|codex|json] [NAME...]`)",
            )),
        };
    }
    let (format, names) = match words.split_first() {
        Some((first, rest)) => match ClientFormat::parse(first) {
            Some(format) => (format, rest),
            None => (ClientFormat::Claude, words),
        },
        None => (ClientFormat::Claude, words),
    };
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| failure("io", format!("cannot find this paiosctl's own path: {e}")))?;
    let config = config::load(&dirs.config);
    if !config.errors.is_empty() {
        let n = config.errors.len();
        eprintln!(
            "paiosctl: {n} problem{} in {}; the servers in broken files are left out (see `paiosd check`)",
            if n == 1 { "" } else { "s" },
            dirs.config.display()
        );
    }
    let state = absolute(&dirs.state)?;
    let chosen = choose(&config.services, names, &dirs.config)?;
    print(&render(format, &exe, &state, &chosen))
}

fn usage(message: &str) -> Failure {
    Failure {
        code: "usage".into(),
        message: message.into(),
        exit: 2,
    }
}

fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path).map_err(|e| {
        failure(
            "io",
            format!("cannot make {} absolute: {e}", path.display()),
        )
    })
}

/// The named MCP servers, or every one when none is named.
fn choose(
    services: &BTreeMap<String, ServiceConfig>,
    names: &[String],
    config_dir: &Path,
) -> Result<Vec<String>, Failure> {
    let is_mcp = |name: &str| services.get(name).is_some_and(|s| s.mcp.is_some());
    if names.is_empty() {
        let all: Vec<String> = services.keys().filter(|n| is_mcp(n)).cloned().collect();
        if all.is_empty() {
            return Err(failure(
                "not_found",
                format!(
                    "no service in {} has an [mcp] table; mark an MCP server with \
                     `[mcp] transport = \"stdio\"` (or \"http\" with a url)",
                    config_dir.join("services.d").display()
                ),
            ));
        }
        return Ok(all);
    }
    let mut chosen = Vec::new();
    for name in names {
        if is_mcp(name) {
            if !chosen.contains(name) {
                chosen.push(name.clone());
            }
            continue;
        }
        let message = if services.contains_key(name) {
            format!("`{name}` has no [mcp] table: it is not an MCP server")
        } else {
            let servers = services
                .iter()
                .filter(|(_, s)| s.mcp.is_some())
                .map(|(n, _)| n.as_str());
            match crate::names::closest(name, servers) {
                Some(near) => format!("no MCP server `{name}`; did you mean `{near}`?"),
                None => format!("no MCP server `{name}` in {}", config_dir.display()),
            }
        };
        return Err(failure("not_found", message));
    }
    Ok(chosen)
}

#[derive(Serialize)]
struct Entry {
    command: String,
    args: Vec<String>,
}

fn entry(exe: &Path, state: &Path, name: &str) -> Entry {
    Entry {
        command: exe.to_string_lossy().into_owned(),
        args: vec![
            "--state-dir".into(),
            state.to_string_lossy().into_owned(),
            "mcp".into(),
            name.into(),
        ],
    }
}

fn render(format: ClientFormat, exe: &Path, state: &Path, names: &[String]) -> String {
    let entries: BTreeMap<&str, Entry> = names
        .iter()
        .map(|n| (n.as_str(), entry(exe, state, n)))
        .collect();
    match format {
        ClientFormat::Claude => pretty(&ClaudeConfig {
            mcp_servers: &entries,
        }),
        ClientFormat::Json => pretty(&entries),
        ClientFormat::Codex => {
            let mut out = String::new();
            for (name, e) in &entries {
                let args: Vec<String> = e.args.iter().map(|a| toml_string(a)).collect();
                // Service names are letters, digits, `-` and `_`: bare TOML keys.
                out.push_str(&format!(
                    "[mcp_servers.{name}]\ncommand = {}\nargs = [{}]\n\n",
                    toml_string(&e.command),
                    args.join(", ")
                ));
            }
            out.pop();
            out
        }
    }
}

#[derive(Serialize)]
struct ClaudeConfig<'a> {
    #[serde(rename = "mcpServers")]
    mcp_servers: &'a BTreeMap<&'a str, Entry>,
}

/// Pretty JSON of plain strings and maps, which cannot fail to serialise.
fn pretty(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// A TOML basic string. JSON's string escapes are TOML's, except that TOML wants
/// DEL escaped too.
fn toml_string(s: &str) -> String {
    serde_json::Value::from(s)
        .to_string()
        .replace('\u{7f}', "\\u007F")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_word_comes_first_and_the_rest_are_names() {
        assert_eq!(ClientFormat::parse("codex"), Some(ClientFormat::Codex));
        assert_eq!(ClientFormat::parse("kb"), None);
    }

    #[test]
    fn codex_tables_are_toml_with_escaped_paths() {
        let text = render(
            ClientFormat::Codex,
            Path::new("/opt/pa\"ios/paiosctl"),
            Path::new("/s/Application Support\u{7f}"),
            &["kb".into(), "obs".into()],
        );
        assert_eq!(
            text,
            "[mcp_servers.kb]\ncommand = \"/opt/pa\\\"ios/paiosctl\"\n\
             args = [\"--state-dir\", \"/s/Application Support\\u007F\", \"mcp\", \"kb\"]\n\n\
             [mcp_servers.obs]\ncommand = \"/opt/pa\\\"ios/paiosctl\"\n\
             args = [\"--state-dir\", \"/s/Application Support\\u007F\", \"mcp\", \"obs\"]\n"
        );
    }

    #[test]
    fn claude_config_nests_the_servers_under_mcp_servers() {
        let text = render(
            ClientFormat::Claude,
            Path::new("/bin/paiosctl"),
            Path::new("/s"),
            &["kb".into()],
        );
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["mcpServers"]["kb"]["command"], "/bin/paiosctl");
        assert_eq!(
            value["mcpServers"]["kb"]["args"],
            serde_json::json!(["--state-dir", "/s", "mcp", "kb"])
        );
    }
}
