//! `paiosctl start|stop|restart NAME...|--all`: one operation on several services.
//! paiosd answers once every one is done (unless `--no-wait`); the exit code is 1 when
//! any of them failed.

use std::path::Path;

use crate::control::protocol::{Reply, Request, Target};

use super::{ask, print, print_json, render, unexpected, Outcome};

/// Starts services and waits until they run; clears a `failed` crash loop.
pub fn start(socket: &Path, target: Target, wait: bool, json: bool) -> Outcome {
    op(socket, Request::Start { target, wait }, json)
}

/// Stops services and waits until their process groups are empty.
pub fn stop(socket: &Path, target: Target, wait: bool, json: bool) -> Outcome {
    op(socket, Request::Stop { target, wait }, json)
}

/// Stops then starts services, waiting for both.
pub fn restart(socket: &Path, target: Target, wait: bool, json: bool) -> Outcome {
    op(socket, Request::Restart { target, wait }, json)
}

fn op(socket: &Path, request: Request, json: bool) -> Outcome {
    let reply = ask(socket, &request)?;
    let Reply::Ops { results } = &reply else {
        return Err(unexpected(&reply));
    };
    let failed = results.iter().any(|r| !r.ok);
    if json {
        print_json(&reply)?;
    } else {
        print(&render::ops(results))?;
    }
    Ok(if failed { 1 } else { 0 })
}
