//! paios: one supervisor for a personal machine's always-on services.
//!
//! `paiosd` starts every service from a drop-in file in `services.d/`, each in its
//! own process group, keeps exactly one run of each alive, stops them completely,
//! finds the ones that hang, runs scheduled tasks and records everything that
//! happened. `paiosctl` talks to it over a Unix socket. Policy (backoff, crash
//! windows, schedules) is pure code over an injected clock; effects (processes,
//! SQLite, sockets, files) each live in one module with a small API that the single
//! supervisor actor calls.

pub mod alert;
pub mod config;
pub mod control;
pub mod ctl;
pub mod dirs;
pub mod doctor;
pub mod health;
pub mod ledger;
pub mod lock;
pub mod logs;
pub mod mcp;
pub mod names;
pub mod policy;
pub mod process;
mod sqlite;
pub mod state;
pub mod supervisor;
pub mod units;
mod worker;
