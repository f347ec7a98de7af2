//! `paiosctl doctor`: what is wrong on this machine as seen from outside paiosd — the
//! strays of the configured services (processes that look like one but run outside
//! supervision, found and ended by [`crate::process::strays`]), a health-probe port held
//! by a process paiosd does not supervise, a stale control socket, a service in
//! `failed`. This is the client's diagnostic; paiosd itself never calls it.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as os;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::Serialize;

use crate::config::{Probe, ServiceConfig};
use crate::process::{self, strays};

pub use crate::process::strays::{describe_ended, Ended, Stray, Supervision};

/// Anything else doctor can see that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `port_held`, `stale_socket`, `failed`, `port_not_checked`, `config`, `records`.
    pub kind: String,
    /// The service it concerns, if any.
    pub service: Option<String>,
    pub detail: String,
}

/// What doctor found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub strays: Vec<Stray>,
    pub problems: Vec<Problem>,
    /// Notes that are not problems (what could not be checked on this platform).
    pub notes: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.strays.is_empty() && self.problems.is_empty()
    }
}

/// The strays of `services` on this machine now (see [`crate::process::strays`]).
pub fn strays(
    services: &BTreeMap<String, ServiceConfig>,
    state_dir: &Path,
    supervision: &Supervision,
) -> Vec<Stray> {
    strays::strays(&patterns(services), state_dir, supervision)
}

/// Ends `strays`, each with its service's stop sequence (see
/// [`crate::process::strays::end_strays`]).
pub fn end_strays(strays: &[Stray], services: &BTreeMap<String, ServiceConfig>) -> Vec<Ended> {
    strays::end_strays(strays, &patterns(services))
}

fn patterns(services: &BTreeMap<String, ServiceConfig>) -> BTreeMap<String, strays::Known> {
    services
        .iter()
        .map(|(name, svc)| (name.clone(), svc.stray_pattern()))
        .collect()
}

/// Every problem doctor checks for besides strays: probe ports held outside
/// supervision, a stale control socket.
pub fn problems(
    services: &BTreeMap<String, ServiceConfig>,
    socket: &Path,
    supervision: &Supervision,
    report: &mut Report,
) {
    if let Some(problem) = stale_socket(socket) {
        report.problems.push(problem);
    }
    let uid = nix::unistd::getuid().as_raw();
    for svc in services.values() {
        let Some(port) = svc.health.as_ref().and_then(|h| probe_port(&h.probe)) else {
            continue;
        };
        match os::port_holders(port) {
            None => {
                let note = format!(
                    "{}: port {port} of its health probe not checked on this platform",
                    svc.name
                );
                if !report.notes.contains(&note) {
                    report.notes.push(note);
                }
            }
            Some(holders) => {
                for pid in holders {
                    let Some(p) = process::proc_info(pid) else {
                        continue;
                    };
                    if supervision.pgids.contains(&p.pgid) {
                        continue;
                    }
                    let whose = if p.uid == uid {
                        format!("PID {pid} ({})", p.argv.join(" "))
                    } else {
                        format!("PID {pid} of user {}", p.uid)
                    };
                    report.problems.push(Problem {
                        kind: "port_held".into(),
                        service: Some(svc.name.clone()),
                        detail: format!(
                            "port {port} of its health probe is held by {whose}, outside supervision"
                        ),
                    });
                }
            }
        }
    }
}

/// The TCP port a probe connects to, when it names one.
pub fn probe_port(probe: &Probe) -> Option<u16> {
    match probe {
        Probe::Tcp { addr } => Some(addr.port),
        Probe::Http { url, .. } => Some(url.port),
        Probe::Mcp(crate::config::McpEndpoint::Http(url)) => Some(url.port),
        Probe::Exec { .. } | Probe::Mcp(crate::config::McpEndpoint::Stdio) => None,
    }
}

/// A socket file that exists but where nobody answers.
pub fn stale_socket(socket: &Path) -> Option<Problem> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::symlink_metadata(socket).ok()?;
    if !meta.file_type().is_socket() {
        return Some(Problem {
            kind: "stale_socket".into(),
            service: None,
            detail: format!(
                "{} exists but is not a socket; move it away so paiosd can listen there",
                socket.display()
            ),
        });
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(Problem {
            kind: "stale_socket".into(),
            service: None,
            detail: format!(
                "{} is left from a paiosd that is gone (nobody answers); the next paiosd replaces it",
                socket.display()
            ),
        }),
        Err(_) => None,
    }
}

/// Services in `failed`, from a status listing.
pub fn failed_services(status: &[crate::control::protocol::ServiceStatus], report: &mut Report) {
    for s in status.iter().filter(|s| s.state == "failed") {
        report.problems.push(Problem {
            kind: "failed".into(),
            service: Some(s.name.clone()),
            detail: format!(
                "gave up after a crash loop{}; `paiosctl start {}` tries again now",
                s.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default(),
                s.name
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_ports() {
        let http = |url: &str| Probe::Http {
            url: url.parse().expect("a probe URL"),
            expect_status: None,
        };
        assert_eq!(
            probe_port(&http("http://127.0.0.1:3001/health")),
            Some(3001)
        );
        assert_eq!(probe_port(&http("http://[::1]:8080/x")), Some(8080));
        let tcp = |addr: &str| Probe::Tcp {
            addr: addr.parse().expect("a probe address"),
        };
        assert_eq!(probe_port(&tcp("127.0.0.1:5432")), Some(5432));
        assert_eq!(probe_port(&Probe::Exec { argv: vec![] }), None);
    }

    #[test]
    fn stale_socket_is_found_and_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert_eq!(stale_socket(&path), None);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(stale_socket(&path), None);
        drop(listener);
        assert_eq!(
            stale_socket(&path).map(|p| p.kind),
            Some("stale_socket".into())
        );
        let file = dir.path().join("f.sock");
        std::fs::write(&file, b"x").unwrap();
        assert!(stale_socket(&file).is_some());
    }
}
