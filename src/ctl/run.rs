//! `paiosctl run TASK`: runs a scheduled task now and, unless `--no-wait`, waits for
//! its result; the exit code is 1 when the run did not succeed.

use std::path::Path;

use crate::control::protocol::{Reply, Request};

use super::{ask, print, print_json, render, unexpected, Outcome};

pub fn run(socket: &Path, task: String, wait: bool, json: bool) -> Outcome {
    let reply = ask(socket, &Request::Run { name: task, wait })?;
    let Reply::Run(result) = &reply else {
        return Err(unexpected(&reply));
    };
    let ok = render::run_succeeded(result);
    if json {
        print_json(&reply)?;
    } else {
        print(&render::run(result))?;
    }
    Ok(if ok { 0 } else { 1 })
}
