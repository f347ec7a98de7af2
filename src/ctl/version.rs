//! `paiosctl version`: paiosctl's version and, when paiosd answers, paiosd's. A paiosd
//! that does not answer is not an error here: the point is to see both versions.

use std::path::Path;

use crate::control::protocol::{Reply, Request};
use crate::ledger::LedgerStats;

use super::{ask, print, print_json, Outcome};

pub fn version(socket: &Path, json: bool) -> Outcome {
    let ours = env!("CARGO_PKG_VERSION");
    let daemon = match ask(socket, &Request::Ping) {
        Ok(Reply::Pong {
            version,
            pid,
            ledger,
        }) => Some((version, pid, ledger)),
        _ => None,
    };
    if json {
        let paiosd = daemon.map(|(version, pid, ledger)| {
            serde_json::json!({"version": version, "pid": pid, "ledger": ledger})
        });
        return print_json(&serde_json::json!({"paiosctl": ours, "paiosd": paiosd}));
    }
    let line = match daemon {
        Some((version, pid, ledger)) => {
            let mut line = format!("paiosd {version} (pid {pid})");
            if let Some(summary) = ledger.as_ref().and_then(LedgerStats::summary) {
                line.push('\n');
                line.push_str(&summary);
            }
            line
        }
        None => "paiosd not reachable".to_string(),
    };
    print(&format!("paiosctl {ours}\n{line}\n"))
}
