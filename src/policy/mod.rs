//! Pure policy: what follows a run's end, outcome words, restart decisions, backoff,
//! crash-loop limits and storms, health thresholds, memory growth, and a task's slot
//! and catch-up.
//!
//! Nothing here does I/O or reads a clock: every function takes `now` and, where
//! randomness is needed, a sample in `0.0..1.0`, so tests are exact and instant.
//! The supervisor and the task runner feed these state machines events and act on
//! what they return.

pub mod after_run;
pub mod backoff;
pub mod catchup;
pub mod growth;
pub mod health;
pub mod outcome;
pub mod restart;
pub mod slot;
pub mod storm;

pub use after_run::{after_run, AfterRun, Ended, Next, Standing, Want};
pub use catchup::{catch_up, on_slot, CatchUp, SlotAction, MAX_MISSED};
pub use growth::GrowthWatch;
pub use health::{HealthState, HealthThresholds, HealthVerdict};
pub use outcome::{by_paiosd, classify, Outcome, StopReason};
pub use restart::{Decision, RestartTracker};
pub use slot::SlotDecision;
pub use storm::StormDetector;
