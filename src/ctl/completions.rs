//! `paiosctl completions SHELL`: the shell completion script, generated from the
//! argument tree the binary defines.

use std::io;

use super::Outcome;

pub fn completions(mut command: clap::Command, shell: clap_complete::Shell) -> Outcome {
    clap_complete::generate(shell, &mut command, "paiosctl", &mut io::stdout());
    Ok(0)
}
