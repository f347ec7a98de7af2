//! `paiosctl ping`: checks that paiosd answers, and says which paiosd it is.

use std::path::Path;

use crate::control::protocol::{Reply, Request};
use crate::ledger::LedgerStats;

use super::{ask, print, print_json, unexpected, Outcome};

pub fn ping(socket: &Path, json: bool) -> Outcome {
    let reply = ask(socket, &Request::Ping)?;
    let Reply::Pong {
        version,
        pid,
        ledger,
    } = &reply
    else {
        return Err(unexpected(&reply));
    };
    if json {
        return print_json(&reply);
    }
    let mut text = format!("pong from paiosd {version} (pid {pid})\n");
    if let Some(line) = ledger.as_ref().and_then(LedgerStats::summary) {
        text.push_str(&line);
        text.push('\n');
    }
    print(&text)
}
