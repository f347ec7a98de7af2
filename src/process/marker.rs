//! The run marker: two variables paiosd puts in every run's environment,
//! `PAIOS_SERVICE` (the service) and `PAIOS_INSTANCE` (this paiosd's state directory).
//! Every child and grandchild inherits them, so a process that lost its group's leader,
//! or left the group with `setsid`, still says whose it is. The fallback sweep, escape
//! detection and `paiosctl doctor` all read it here.
//!
//! Linux reads another process's environment from `/proc/PID/environ` (our own
//! processes only); macOS does not read it, so there the marker is always
//! [`Marker::Unknown`] and the callers fall back to other evidence.

use std::path::Path;

use super::{os, ProcInfo};

/// The environment variable naming the service a process was started for.
pub const ENV_SERVICE: &str = "PAIOS_SERVICE";
/// The environment variable naming the paiosd instance (its state directory).
pub const ENV_INSTANCE: &str = "PAIOS_INSTANCE";

/// What a process's environment says about who started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// The environment could not be read (macOS, a process that vanished).
    Unknown,
    /// Readable, and no paios marker in it.
    None,
    /// Started by the paiosd of `instance` for `service`.
    Paios { instance: String, service: String },
}

/// The value of [`ENV_INSTANCE`] for a state directory: its canonical path when it
/// exists, so that `paiosctl` and `paiosd` agree however the path was spelled.
pub fn instance_id(state_dir: &Path) -> String {
    std::fs::canonicalize(state_dir)
        .unwrap_or_else(|_| state_dir.to_path_buf())
        .display()
        .to_string()
}

/// The marker a run of `service` carries in its environment.
pub fn marker_env(state_dir: &Path, service: &str) -> [(String, String); 2] {
    [
        (ENV_SERVICE.to_string(), service.to_string()),
        (ENV_INSTANCE.to_string(), instance_id(state_dir)),
    ]
}

/// Reads a process's marker from its environment.
pub fn marker(p: &ProcInfo) -> Marker {
    match os::environ(p.pid) {
        None => Marker::Unknown,
        Some(vars) => from_environ(&vars),
    }
}

fn from_environ(vars: &[(String, String)]) -> Marker {
    let get = |key: &str| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    match (get(ENV_INSTANCE), get(ENV_SERVICE)) {
        (Some(instance), Some(service)) => Marker::Paios { instance, service },
        _ => Marker::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn both_variables_make_a_marker() {
        assert_eq!(
            from_environ(&vars(&[
                ("PATH", "/bin"),
                (ENV_SERVICE, "kb"),
                (ENV_INSTANCE, "/state")
            ])),
            Marker::Paios {
                instance: "/state".into(),
                service: "kb".into()
            }
        );
        assert_eq!(from_environ(&vars(&[(ENV_SERVICE, "kb")])), Marker::None);
        assert_eq!(from_environ(&vars(&[(ENV_INSTANCE, "/s")])), Marker::None);
        assert_eq!(from_environ(&[]), Marker::None);
    }

    #[test]
    fn marker_env_names_the_service_and_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        let [service, instance] = marker_env(dir.path(), "kb");
        assert_eq!(service, (ENV_SERVICE.to_string(), "kb".to_string()));
        assert_eq!(instance.0, ENV_INSTANCE);
        assert_eq!(instance.1, instance_id(dir.path()));
        // However the path is spelled, the instance is the same.
        let dotted = dir.path().join(".");
        assert_eq!(instance_id(&dotted), instance_id(dir.path()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn own_environment_is_read() {
        let me = super::super::proc_info(std::process::id() as i32).unwrap();
        assert_ne!(marker(&me), Marker::Unknown);
    }
}
