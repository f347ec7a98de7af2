//! `paiosctl status [NAME...]`: every service's state, PID, uptime, restarts and last
//! exit, as a table (with a line about the ledger when its writes are failing) or, with
//! `--json`, the array of services.

use std::path::Path;

use crate::control::protocol::{Reply, Request};
use crate::ledger::LedgerStats;

use super::{ask, colour, print, print_json, render, unexpected, Outcome};

pub fn status(socket: &Path, names: Vec<String>, json: bool) -> Outcome {
    let reply = ask(socket, &Request::Status { names })?;
    let Reply::Status { services, ledger } = reply else {
        return Err(unexpected(&reply));
    };
    if json {
        print_json(&services)
    } else {
        let mut text = render::status_table(&services, chrono::Utc::now(), colour());
        // History that is not being written is worth a line under the table: the
        // ledger is what answers "what happened last night?".
        if let Some(line) = ledger.as_ref().and_then(LedgerStats::summary) {
            text.push_str(&line);
            text.push('\n');
        }
        print(&text)
    }
}
