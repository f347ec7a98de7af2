//! Where paios keeps its config, state and logs, from flags, `PAIOS_*_DIR` variables
//! or the platform defaults in DESIGN.md, and creating them `0700` when missing.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The three directories both binaries agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub config: PathBuf,
    pub state: PathBuf,
    pub logs: PathBuf,
}

impl Dirs {
    /// Resolves each directory: the flag if given (clap fills it from `PAIOS_*_DIR` too),
    /// else the platform default.
    pub fn resolve(config: Option<PathBuf>, state: Option<PathBuf>, logs: Option<PathBuf>) -> Dirs {
        let home = home_dir();
        let config = config.unwrap_or_else(|| default_config(&home));
        let state = state.unwrap_or_else(|| default_state(&home));
        let logs = logs.unwrap_or_else(|| default_logs(&home, &state));
        Dirs {
            config,
            state,
            logs,
        }
    }

    /// Creates the state and log directories `0700` when missing. An existing state
    /// directory that others can enter is tightened to `0700`, because the control socket
    /// lives there (promise 12).
    pub fn create(&self) -> io::Result<()> {
        for dir in [&self.state, &self.logs] {
            create_private_dir(dir)?;
        }
        let meta = std::fs::metadata(&self.state)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.state, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state.join("paiosd.lock")
    }
    pub fn socket(&self) -> PathBuf {
        self.state.join("paiosd.sock")
    }
    pub fn state_db(&self) -> PathBuf {
        self.state.join("state.sqlite")
    }
    pub fn ledger_db(&self) -> PathBuf {
        self.state.join("ledger.sqlite")
    }
}

/// `mkdir -p` with mode `0700` for every directory it creates.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn xdg(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn default_config(home: &Path) -> PathBuf {
    if cfg!(target_os = "macos") {
        home.join(".config/paios")
    } else {
        xdg("XDG_CONFIG_HOME")
            .map(|d| d.join("paios"))
            .unwrap_or_else(|| home.join(".config/paios"))
    }
}

fn default_state(home: &Path) -> PathBuf {
    if cfg!(target_os = "macos") {
        home.join("Library/Application Support/paios")
    } else {
        xdg("XDG_STATE_HOME")
            .map(|d| d.join("paios"))
            .unwrap_or_else(|| home.join(".local/state/paios"))
    }
}

fn default_logs(home: &Path, state: &Path) -> PathBuf {
    if cfg!(target_os = "macos") {
        home.join("Library/Logs/paios")
    } else {
        state.join("logs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_defaults() {
        let d = Dirs::resolve(Some("/c".into()), Some("/s".into()), None);
        assert_eq!(d.config, PathBuf::from("/c"));
        assert_eq!(d.state, PathBuf::from("/s"));
        if cfg!(target_os = "macos") {
            assert!(d.logs.ends_with("Library/Logs/paios"));
        } else {
            assert_eq!(d.logs, PathBuf::from("/s/logs"));
        }
    }

    #[test]
    fn create_makes_private_dirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = Dirs::resolve(
            None,
            Some(tmp.path().join("a/state")),
            Some(tmp.path().join("b/logs")),
        );
        d.create().expect("create");
        for p in [&d.state, &d.logs] {
            let mode = std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
    }
}
