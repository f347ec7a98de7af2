//! `paiosd.toml`: the alert command, storm threshold, ledger retention and default
//! log settings.
//!
//! Every key is optional. Unlike a service file, a broken global file is not thrown
//! away: each key that reads cleanly applies and each broken one keeps its default
//! (and is reported), because there is no "not starting" for global settings.

use std::path::Path;

use super::expand::EnvLookup;
use super::reader::{Ctx, Section};
use super::service::read_logs;
use super::{ConfigError, Global};

pub(crate) fn parse(file: &Path, text: &str, env: EnvLookup<'_>) -> (Global, Vec<ConfigError>) {
    let mut global = Global::default();
    let ctx = Ctx::new(file, text, env);
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            ctx.syntax_error(&e);
            return (global, ctx.into_errors());
        }
    };
    let root = Section::root(&ctx, doc.as_table());
    if let Some(f) = root.get("alert_command") {
        if let Some(argv) = f.expanded_array(true, "[\"~/bin/notify\", \"--channel\", \"ops\"]") {
            global.alert_command = Some(argv);
        }
    }
    if let Some(s) = root.get("storm").and_then(|f| f.section()) {
        if let Some(n) = s.get("crashes").and_then(|f| f.u32(1, 1_000_000, "3")) {
            global.storm.crashes = n;
        }
        if let Some(d) = s.get("window").and_then(|f| f.duration(true, "\"5m\"")) {
            global.storm.window = d;
        }
        s.finish(&|_| None);
    }
    if let Some(s) = root.get("ledger").and_then(|f| f.section()) {
        if let Some(d) = s.get("keep").and_then(|f| f.duration(true, "\"90d\"")) {
            global.ledger.keep = d;
        }
        if let Some(n) = s.get("max_rows").and_then(|f| f.u64(1, "1000000")) {
            global.ledger.max_rows = n;
        }
        if let Some(n) = s.get("context_lines").and_then(|f| f.u32(0, 10_000, "20")) {
            global.ledger.context_lines = n as usize;
        }
        s.finish(&|_| None);
    }
    if let Some(s) = root.get("logs").and_then(|f| f.section()) {
        global.logs = read_logs(&s, global.logs);
    }
    root.finish(&|key| match key {
        "crashes" => Some("`crashes` belongs in the storm table: storm = { crashes = 3 }".into()),
        "max_size" | "keep" | "timestamps" | "streams" => {
            Some(format!("`{key}` belongs in the [logs] table"))
        }
        "command" | "shell" | "restart" | "stop" | "health" | "schedule" => {
            Some("service settings go in services.d/NAME.toml, not paiosd.toml".to_string())
        }
        _ => None,
    });
    (global, ctx.into_errors())
}
