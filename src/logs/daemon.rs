//! paiosd's own log: `<log-dir>/paiosd.log` when it runs in the background.
//!
//! Size-bounded rather than daily: the file keeps the name `paiosd.log` (so
//! `paiosctl logs paiosd` and a plain `tail -f` find it), rotates the same way as the
//! services' logs (`paiosd.log.1` … newest first) and so can never fill the disk.
//! tracing-appender's non-blocking writer sits in front, lossy: when the disk stalls,
//! paiosd's own messages are dropped rather than delaying supervision (promise 10).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

use super::writer::{open_log, rotate};

/// paiosd.log rotates at this size.
pub const DAEMON_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Rotated paiosd.log files kept.
pub const DAEMON_LOG_KEEP: u32 = 5;
/// Lines waiting for the log thread; past it lines are dropped, never waited for.
pub const DAEMON_LOG_QUEUE: usize = 4096;

/// The writer for paiosd's tracing subscriber, and the guard that flushes it on drop
/// (keep it alive until exit).
pub fn daemon_log_writer(dir: &Path) -> (NonBlocking, WorkerGuard) {
    let file = RotatingFile::new(dir.join("paiosd.log"), DAEMON_LOG_MAX_SIZE, DAEMON_LOG_KEEP);
    // The default queue holds 128,000 lines, allocated up front (megabytes of paiosd's
    // RSS); a few thousand lines is plenty between the writer thread's turns.
    NonBlockingBuilder::default()
        .buffered_lines_limit(DAEMON_LOG_QUEUE)
        .lossy(true)
        .thread_name("paios-daemon-log")
        .finish(file)
}

/// A file that rotates before a write would take it past `max_size`. Each write is
/// one whole event, so rotation falls between lines. Opened lazily and reopened after
/// an error, so a log directory that appears later or a disk that frees up is used.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

impl RotatingFile {
    pub fn new(path: PathBuf, max_size: u64, keep: u32) -> RotatingFile {
        RotatingFile {
            path,
            max_size,
            keep,
            file: None,
            size: 0,
        }
    }

    fn write_inner(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            let f = open_log(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        if self.size > 0 && self.size + buf.len() as u64 > self.max_size {
            self.file = None;
            rotate(&self.path, self.keep)?;
            self.file = Some(open_log(&self.path)?);
            self.size = 0;
        }
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("log file not open"));
        };
        f.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.write_inner(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                self.file = None;
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_on_write_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paiosd.log");
        let mut f = RotatingFile::new(path.clone(), 20, 2);
        for i in 0..10 {
            f.write_all(format!("event {i}\n").as_bytes()).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "event 8\nevent 9\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("paiosd.log.1")).unwrap(),
            "event 6\nevent 7\n"
        );
        assert!(dir.path().join("paiosd.log.2").exists());
        assert!(!dir.path().join("paiosd.log.3").exists());
    }

    #[test]
    fn missing_directory_is_an_error_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("later");
        let mut f = RotatingFile::new(sub.join("paiosd.log"), 100, 1);
        assert!(f.write(b"x\n").is_err());
        std::fs::create_dir(&sub).unwrap();
        f.write_all(b"y\n").unwrap();
        assert_eq!(std::fs::read(sub.join("paiosd.log")).unwrap(), b"y\n");
    }

    #[test]
    fn tracing_events_reach_paiosd_log() {
        use tracing_subscriber::fmt::format::FmtSpan;
        let dir = tempfile::tempdir().unwrap();
        let (nb, guard) = daemon_log_writer(dir.path());
        let sub = tracing_subscriber::fmt()
            .with_writer(nb)
            .with_ansi(false)
            .with_span_events(FmtSpan::NONE)
            .finish();
        tracing::subscriber::with_default(sub, || tracing::info!("hello from paiosd"));
        drop(guard);
        let text = std::fs::read_to_string(dir.path().join("paiosd.log")).unwrap();
        assert!(text.contains("hello from paiosd"), "{text}");
    }
}
