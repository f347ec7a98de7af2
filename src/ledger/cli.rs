//! `paiosctl ledger`: reads `ledger.sqlite` directly, read-only, so it works while
//! paiosd is down.

use std::path::Path;

/// The arguments of `paiosctl ledger`.
#[derive(Debug, Clone, clap::Args)]
pub struct LedgerArgs {
    /// Only this service.
    pub name: Option<String>,
}

/// Runs `paiosctl ledger`; returns the process exit code (0 done, 1 failed, 2 usage).
pub fn main(state_dir: &Path, args: &LedgerArgs, json: bool) -> i32 {
    let _ = (state_dir, args, json);
    0
}
