//! `paiosctl`'s verbs, one module per verb: each sends its request over the control
//! socket (or reads its file directly, for `logs`, `ledger` and `doctor`, so they work
//! while paiosd is down) and prints the answer. `bin/paiosctl.rs` is only the argument
//! tree and the dispatch to these; nothing in the daemon uses this module.
//!
//! Exit codes are an interface: 0 done, 1 the operation failed, 2 usage, 3 paiosd not
//! running. With `--json`, answers go to stdout as JSON (`status`: the array of
//! services; other verbs: the reply object) and every error, including "paiosd is not
//! running", is printed to stdout as `{"error":{"code":...,"message":...}}`.

use std::io::{self, IsTerminal, Write};
use std::path::Path;

use serde::Serialize;

use crate::control::client::{Client, ClientError};
use crate::control::protocol::{ErrorBody, Reply, Request, Response, VERSION_HINT};

pub mod completions;
pub mod doctor;
pub mod ledger;
pub mod logs;
pub mod man;
pub mod mcp;
pub mod ping;
pub mod reload;
pub mod render;
pub mod run;
pub mod shutdown;
pub mod start_stop;
pub mod status;
pub mod version;

/// What a verb ends with: the exit code, everything printed already.
pub type Outcome = Result<i32, Failure>;

/// An error to report in the output mode (text or JSON) the user asked for.
#[derive(Debug)]
pub struct Failure {
    code: String,
    message: String,
    exit: i32,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure {
            code: e.code().to_string(),
            message: e.to_string(),
            exit: e.exit_code(),
        }
    }
}

impl From<ErrorBody> for Failure {
    fn from(e: ErrorBody) -> Failure {
        Failure {
            code: e.code.as_str().to_string(),
            message: e.message,
            exit: 1,
        }
    }
}

fn failure(code: &str, message: impl Into<String>) -> Failure {
    Failure {
        code: code.to_string(),
        message: message.into(),
        exit: 1,
    }
}

/// The process exit code of a verb's outcome, after reporting its failure if any:
/// with `--json` on stdout, else on stderr.
pub fn finish(outcome: Outcome, json: bool) -> i32 {
    match outcome {
        Ok(code) => code,
        Err(f) => {
            if json {
                let value = serde_json::json!({"error": {"code": f.code, "message": f.message}});
                let _ = writeln!(io::stdout().lock(), "{value}");
            } else {
                let _ = writeln!(io::stderr().lock(), "paiosctl: {}", f.message);
            }
            f.exit
        }
    }
}

/// One request on a fresh connection; an error answer becomes a [`Failure`].
fn ask(socket: &Path, request: &Request) -> Result<Reply, Failure> {
    let mut client = Client::connect(socket)?;
    match client.request(request)? {
        Response::Ok(reply) => Ok(reply),
        Response::Error(body) => Err(body.into()),
    }
}

fn print(text: &str) -> Outcome {
    print_bytes(text.as_bytes())
}

fn print_bytes(bytes: &[u8]) -> Outcome {
    let mut out = io::stdout().lock();
    // A closed pipe (`paiosctl status | head -1`) is not a failure of the operation.
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(failure("output", format!("cannot write output: {e}")))
        }
        _ => Ok(0),
    }
}

fn print_json<T: Serialize>(value: &T) -> Outcome {
    let text = serde_json::to_string(value)
        .map_err(|e| failure("output", format!("cannot encode output: {e}")))?;
    print(&format!("{text}\n"))
}

fn unexpected(reply: &Reply) -> Failure {
    failure(
        "protocol",
        format!("paiosd answered with an unexpected reply ({reply:?}); {VERSION_HINT}"),
    )
}

fn colour() -> bool {
    io::stdout().is_terminal()
        && match std::env::var_os("NO_COLOR") {
            None => true,
            Some(v) => v.is_empty(),
        }
}
