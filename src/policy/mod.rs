//! Pure policy: restart decisions, backoff, crash-loop limits and storms, health
//! thresholds, memory growth and task catch-up.
//!
//! Nothing here does I/O or reads a clock: every function takes `now` and, where
//! randomness is needed, a sample in `0.0..1.0`, so tests are exact and instant.
//! The supervisor and the task runner feed these state machines events and act on
//! what they return.

pub mod backoff;
pub mod catchup;
pub mod growth;
pub mod health;
pub mod restart;
pub mod storm;

pub use catchup::{catch_up, on_slot, CatchUp, SlotAction, MAX_MISSED};
pub use growth::GrowthWatch;
pub use health::{HealthState, HealthThresholds, HealthVerdict};
pub use restart::{Decision, RestartTracker};
pub use storm::StormDetector;
