//! `paiosctl reload`: paiosd re-reads `services.d/` (like SIGHUP) and says what it
//! applied, what it refused and why.

use std::path::Path;

use crate::control::protocol::{Reply, Request};

use super::{ask, print, print_json, render, unexpected, Outcome};

pub fn reload(socket: &Path, json: bool) -> Outcome {
    let reply = ask(socket, &Request::Reload)?;
    let Reply::Reload(report) = &reply else {
        return Err(unexpected(&reply));
    };
    if json {
        print_json(&reply)?;
    } else {
        print(&render::reload(report))?;
    }
    Ok(0)
}
