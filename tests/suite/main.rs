//! paios's integration tests, as one binary: the crate is linked once for all of them.
//!
//! Each module is one area (config, control, health, ledger, logs, process, supervisor,
//! tasks) and runs the real binaries, real processes and real SQLite. `common` and
//! `logs_support` are the helpers they share. A test that must own every child of its
//! process (a `waitpid(-1)` reaper, a subreaper, a process-wide signal disposition) runs
//! in a fresh process of this binary through `common::in_own_process`.

mod common;
mod logs_support;

mod config_errors;
mod config_load;
mod config_reference;
mod control_cli;
mod control_e2e;
mod control_server;
mod faults;
mod health_e2e;
mod health_exec;
mod health_probe;
mod ledger_alert;
mod ledger_alert_reaper;
mod ledger_bench;
mod ledger_cli;
mod ledger_e2e;
mod ledger_prune;
mod ledger_writer;
mod logs_e2e;
mod logs_follow;
mod logs_full_disk;
mod logs_pipes;
mod logs_rotation;
mod mcp_bridge;
mod mcp_daemon;
mod mcp_e2e;
mod mcp_print_config;
mod mcp_probe;
mod mcp_sdk;
mod process_fixture;
mod process_groups;
mod process_reap;
mod supervisor;
mod tasks;
