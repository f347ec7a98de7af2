//! How a run ended, in the words the ledger and `status` use: why paiosd was stopping
//! it (if it was), and the outcome that follows from that and the leader's exit status.
//! Pure: `classify` and `by_paiosd` look only at what they are given.

use serde::Serialize;

use crate::process::ExitStatus;

/// Why a stop sequence was started on a run's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `paiosctl stop`, `--all`, or a service that is no longer wanted.
    User,
    /// `paiosctl restart`, or a reload that changed the service.
    Restart,
    /// The service was removed from the config.
    Removed,
    /// paiosd is shutting down.
    Shutdown,
    /// The leader exited on its own while other members of its group lived on.
    LeaderExited,
    /// A task ran past its timeout.
    Timeout,
    /// Its health probe failed `failures` times in a row.
    Hung,
    /// Its group's RSS went over `[memory] limit`.
    Memory,
}

/// The outcome of one run, as the ledger's `outcome` column and `--json` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The leader exited with code 0 on its own.
    Exited,
    /// A non-zero exit or a signal paiosd did not send.
    Crashed,
    /// Stopped by paiosd, SIGKILL needed after the grace.
    Killed,
    /// Stopped by paiosd within the grace.
    Stopped,
    /// A task ran past its timeout.
    Timeout,
    /// Ended after failed health probes.
    Hung,
    /// Ended for going over its memory limit.
    Memory,
    /// The command could not be started at all.
    SpawnFailed,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Exited,
        Outcome::Crashed,
        Outcome::Killed,
        Outcome::Stopped,
        Outcome::Timeout,
        Outcome::Hung,
        Outcome::Memory,
        Outcome::SpawnFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Exited => "exited",
            Outcome::Crashed => "crashed",
            Outcome::Killed => "killed",
            Outcome::Stopped => "stopped",
            Outcome::Timeout => "timeout",
            Outcome::Hung => "hung",
            Outcome::Memory => "memory",
            Outcome::SpawnFailed => "spawn_failed",
        }
    }

    /// Counts as a failure for the restart policy and a task's retries.
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Exited | Outcome::Stopped)
    }

    /// Its ledger record is worth the run's last stderr lines.
    pub fn wants_stderr_tail(self) -> bool {
        matches!(
            self,
            Outcome::Crashed | Outcome::Killed | Outcome::Timeout | Outcome::Hung | Outcome::Memory
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The run's outcome from why it was being stopped (`stopping`: the reason and whether
/// SIGKILL was needed) and the leader's exit status.
pub fn classify(stopping: Option<(StopReason, bool)>, status: Option<ExitStatus>) -> Outcome {
    match stopping {
        Some((StopReason::Timeout, _)) => Outcome::Timeout,
        Some((StopReason::Hung, _)) => Outcome::Hung,
        Some((StopReason::Memory, _)) => Outcome::Memory,
        Some((StopReason::LeaderExited, _)) | None => match status {
            Some(ExitStatus::Code(0)) => Outcome::Exited,
            _ => Outcome::Crashed,
        },
        Some((_, true)) => Outcome::Killed,
        Some((_, false)) => Outcome::Stopped,
    }
}

/// paiosd ended the run because someone asked it to (stop, restart, reload, shutdown),
/// not because of anything the run did: the restart policy does not apply.
pub fn by_paiosd(reason: Option<StopReason>) -> bool {
    reason.is_some_and(|r| {
        !matches!(
            r,
            StopReason::LeaderExited | StopReason::Timeout | StopReason::Hung | StopReason::Memory
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_words() {
        assert_eq!(classify(None, Some(ExitStatus::Code(0))), Outcome::Exited);
        assert_eq!(classify(None, Some(ExitStatus::Code(3))), Outcome::Crashed);
        assert_eq!(
            classify(None, Some(ExitStatus::Signal(9))),
            Outcome::Crashed
        );
        let stop = |reason, killed| Some((reason, killed));
        assert_eq!(
            classify(stop(StopReason::User, false), Some(ExitStatus::Signal(15))),
            Outcome::Stopped
        );
        assert_eq!(
            classify(stop(StopReason::User, true), Some(ExitStatus::Signal(9))),
            Outcome::Killed
        );
        assert_eq!(
            classify(stop(StopReason::Timeout, true), None),
            Outcome::Timeout
        );
        assert_eq!(
            classify(
                stop(StopReason::LeaderExited, true),
                Some(ExitStatus::Code(1))
            ),
            Outcome::Crashed
        );
    }

    #[test]
    fn serialised_words_are_the_ledger_words() {
        for outcome in Outcome::ALL {
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(json, format!("\"{}\"", outcome.as_str()));
        }
        // `paiosctl ledger --crashes` selects by these words.
        for word in crate::ledger::CRASH_OUTCOMES {
            assert!(Outcome::ALL.iter().any(|o| o.as_str() == *word), "{word}");
        }
    }

    #[test]
    fn only_requested_stops_are_by_paiosd() {
        assert!(!by_paiosd(None));
        for r in [
            StopReason::User,
            StopReason::Restart,
            StopReason::Removed,
            StopReason::Shutdown,
        ] {
            assert!(by_paiosd(Some(r)));
        }
        for r in [
            StopReason::LeaderExited,
            StopReason::Timeout,
            StopReason::Hung,
            StopReason::Memory,
        ] {
            assert!(!by_paiosd(Some(r)));
        }
    }
}
