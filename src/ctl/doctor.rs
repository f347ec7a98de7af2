//! `paiosctl doctor [--kill]`: reads the config, asks paiosd (when it runs) which
//! groups it supervises, else takes them from `state.sqlite`, and reports strays and
//! other problems; exit 0 when clean, 1 when something was found. The finding itself
//! is [`crate::doctor`]'s; this is the verb around it.
//!
//! `--kill` ends the strays here, in this process, and records each as `stray_killed`
//! by opening the ledger directly (the writer is closed, flushing, before exit): it
//! works while paiosd is down, and paiosd's own ledger writer and this one share the
//! file through SQLite's locking.

use std::time::Duration;

use crate::config::Config;
use crate::control::client::Client;
use crate::control::protocol::{Reply, Request, Response, ServiceStatus};
use crate::dirs::Dirs;
use crate::doctor::{self, Ended, Problem, Report, Stray, Supervision};
use crate::ledger::{EventRecord, Ledger, Record};

use super::{print, print_json, Outcome};

pub fn doctor(dirs: &Dirs, kill: bool, json: bool) -> Outcome {
    let config = crate::config::load(&dirs.config);
    let report = diagnose(dirs, &config);
    let mut ended = Vec::new();
    if kill && !report.strays.is_empty() {
        ended = end_and_record(dirs, &config, &report.strays);
    }
    let code = if report.is_clean() { 0 } else { 1 };
    if json {
        print_json(&serde_json::json!({
            "clean": report.is_clean(),
            "strays": report.strays,
            "problems": report.problems,
            "notes": report.notes,
            "ended": ended,
        }))?;
    } else {
        print(&render(&report, &ended, kill))?;
    }
    Ok(code)
}

fn diagnose(dirs: &Dirs, config: &Config) -> Report {
    let mut report = Report::default();
    for e in &config.errors {
        report.problems.push(Problem {
            kind: "config".into(),
            service: None,
            detail: e.to_string(),
        });
    }
    let (supervision, status_rows, records_problem) = supervised(dirs);
    if let Some(detail) = records_problem {
        report.problems.push(Problem {
            kind: "records".into(),
            service: None,
            detail,
        });
    }
    match &status_rows {
        Some(rows) => doctor::failed_services(rows, &mut report),
        None => report
            .notes
            .push("paiosd is not running: failed services not checked".into()),
    }
    report
        .notes
        .push("ledger pending writes: not exposed by paiosd; not checked".into());
    let mut strays = doctor::strays(&config.services, &dirs.state, &supervision);
    if !strays.is_empty() {
        // A run that started while the processes were listed is no stray: ask again and
        // keep only what is still outside supervision.
        let (again, _, _) = supervised(dirs);
        strays.retain(|s| !again.pgids.contains(&s.pgid));
    }
    report.strays = strays;
    doctor::problems(&config.services, &dirs.socket(), &supervision, &mut report);
    report
}

/// `--kill`: ends the strays and records each in the ledger.
fn end_and_record(dirs: &Dirs, config: &Config, strays: &[Stray]) -> Vec<Ended> {
    let ended = doctor::end_strays(strays, &config.services);
    let ledger = Ledger::open(&dirs.ledger_db(), config.global.ledger);
    for e in &ended {
        ledger.record(Record::Event(EventRecord::new(
            &e.stray.service,
            "service",
            "stray_killed",
            Some(doctor::describe_ended(e)),
            chrono::Utc::now(),
        )));
    }
    ledger.close(Duration::from_secs(5));
    ended
}

/// The groups paiosd supervises: from `status` when it runs, plus the live runs in
/// `state.sqlite` (escaped groups included; while paiosd is down, what its next start
/// will sweep). Also paiosd's status rows, and a problem reading the records.
fn supervised(dirs: &Dirs) -> (Supervision, Option<Vec<ServiceStatus>>, Option<String>) {
    let mut supervision = Supervision::default();
    let mut status_rows = None;
    if let Ok(mut client) = Client::connect_timeout(&dirs.socket(), Duration::from_secs(5)) {
        if let Ok(Response::Ok(Reply::Pong { pid, .. })) = client.request(&Request::Ping) {
            supervision.exclude.insert(pid as i32);
        }
        if let Ok(Response::Ok(Reply::Status { services, .. })) =
            client.request(&Request::Status { names: Vec::new() })
        {
            supervision
                .pgids
                .extend(services.iter().filter_map(|s| s.pgid));
            status_rows = Some(services);
        }
    }
    let mut problem = None;
    if dirs.state_db().exists() {
        match crate::state::StateDb::open(&dirs.state_db()).and_then(|db| db.live_runs()) {
            Ok(runs) => supervision.pgids.extend(runs.iter().map(|r| r.pgid)),
            Err(e) => problem = Some(format!("cannot read the live runs: {e}")),
        }
    }
    (supervision, status_rows, problem)
}

fn render(report: &Report, ended: &[Ended], kill: bool) -> String {
    let mut out = String::new();
    if report.strays.is_empty() {
        out.push_str("no strays\n");
    } else {
        out.push_str(&format!(
            "{} stray process{} (looks like a service, outside supervision):\n",
            report.strays.len(),
            if report.strays.len() == 1 { "" } else { "es" }
        ));
        for s in &report.strays {
            let age = s.age_s.map_or("?".to_string(), |a| format!("{a}s"));
            out.push_str(&format!(
                "  {:>7}  {:<16} age {:>7}  ({})  {}\n",
                s.pid,
                s.service,
                age,
                s.why,
                s.argv.join(" ")
            ));
        }
        if !kill {
            out.push_str("  end them with `paiosctl doctor --kill`\n");
        }
    }
    for e in ended {
        out.push_str(&format!("ended {}\n", doctor::describe_ended(e)));
    }
    for p in &report.problems {
        match &p.service {
            Some(name) => out.push_str(&format!("problem ({}) {name}: {}\n", p.kind, p.detail)),
            None => out.push_str(&format!("problem ({}): {}\n", p.kind, p.detail)),
        }
    }
    for n in &report.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}
