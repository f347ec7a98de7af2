//! The file side: a thread that takes buffered lines and appends them to
//! `<log-dir>/NAME.log`, rotating on line boundaries when the file reaches `max_size`.
//!
//! It is a thread of its own, apart from the one draining pipes, because a write to a
//! slow or hung filesystem blocks in the kernel: only this thread waits then, while
//! pipes keep being drained into the bounded buffers. A failed write (disk full, a
//! read-only directory) keeps the bytes not yet written and retries them with a
//! backoff, exactly from the byte where it stopped, so nothing is written twice.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memchr::{memchr, memrchr};

use super::queue::Shared;

/// At most this many bytes are taken from one name's buffer per round, so one busy
/// service cannot keep the writer from the others.
const BATCH: usize = 256 * 1024;
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How long a closing writer keeps retrying a failing disk before giving up.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);
/// How often the writer checks that `NAME.log` is still the file it has open, so a
/// log deleted or moved by hand is recreated.
const RECHECK: Duration = Duration::from_secs(1);

/// Rotates `path`: `path.keep` is deleted, `path.i` becomes `path.(i+1)`, and `path`
/// becomes `path.1`. With `keep == 0` the file is simply removed.
pub fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    if keep == 0 {
        return remove_if_present(path);
    }
    remove_if_present(&numbered(path, keep))?;
    for i in (1..keep).rev() {
        rename_if_present(&numbered(path, i), &numbered(path, i + 1))?;
    }
    rename_if_present(path, &numbered(path, 1))
}

/// `NAME.log.i`.
pub fn numbered(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Opens a log for appending, private to paiosd's user.
pub fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// One open log file and where it stands.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    ino: (u64, u64),
    size: u64,
    /// The last byte written was not `\n` (a write stopped mid-line): the line must
    /// be finished before any rotation.
    mid_line: bool,
    checked: Instant,
}

impl LogFile {
    pub fn new(path: PathBuf) -> LogFile {
        LogFile {
            path,
            file: None,
            ino: (0, 0),
            size: 0,
            mid_line: false,
            checked: Instant::now(),
        }
    }

    fn ensure_open(&mut self) -> io::Result<&mut File> {
        if self.file.is_some() && self.checked.elapsed() >= RECHECK {
            self.checked = Instant::now();
            let same = std::fs::metadata(&self.path)
                .map(|m| (m.dev(), m.ino()) == self.ino)
                .unwrap_or(false);
            if !same {
                self.file = None;
            }
        }
        match &mut self.file {
            Some(f) => Ok(f),
            slot => {
                let f = match open_log(&self.path) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        if let Some(parent) = self.path.parent() {
                            std::fs::DirBuilder::new()
                                .recursive(true)
                                .mode(0o700)
                                .create(parent)?;
                        }
                        open_log(&self.path)?
                    }
                    other => other?,
                };
                let m = f.metadata()?;
                self.ino = (m.dev(), m.ino());
                self.size = m.len();
                self.checked = Instant::now();
                Ok(slot.insert(f))
            }
        }
    }

    /// Writes whole lines from `buf`, rotating first whenever the next line would take
    /// the file past `max_size` (a single line longer than that gets a file of its
    /// own). Returns how many bytes reached the file, also when it stopped on an error,
    /// so a retry starts exactly after them.
    pub fn write_lines(&mut self, buf: &[u8], max_size: u64, keep: u32) -> (usize, io::Result<()>) {
        let mut done = 0;
        while done < buf.len() {
            let rest = &buf[done..];
            let take = match self.next_piece(rest, max_size, keep) {
                Ok(t) => t,
                Err(e) => return (done, Err(e)),
            };
            match self.write_some(&rest[..take]) {
                Ok(n) => done += n,
                Err(e) => return (done, Err(e)),
            }
        }
        (done, Ok(()))
    }

    /// How many bytes of `rest` go into the current file next; rotates when needed.
    fn next_piece(&mut self, rest: &[u8], max_size: u64, keep: u32) -> io::Result<usize> {
        self.ensure_open()?;
        if self.mid_line {
            return Ok(memchr(b'\n', rest).map_or(rest.len(), |p| p + 1));
        }
        let room = max_size.saturating_sub(self.size);
        if rest.len() as u64 <= room {
            return Ok(rest.len());
        }
        let room = room as usize;
        if let Some(p) = memrchr(b'\n', &rest[..room]) {
            return Ok(p + 1);
        }
        if self.size > 0 {
            self.rotate(keep)?;
            self.ensure_open()?;
            if rest.len() as u64 <= max_size {
                return Ok(rest.len());
            }
            if let Some(p) = memrchr(b'\n', &rest[..max_size as usize]) {
                return Ok(p + 1);
            }
        }
        // A line longer than max_size: alone in its file.
        Ok(memchr(b'\n', rest).map_or(rest.len(), |p| p + 1))
    }

    fn write_some(&mut self, piece: &[u8]) -> io::Result<usize> {
        let f = self.ensure_open()?;
        let mut written = 0;
        let result = loop {
            if written == piece.len() {
                break Ok(());
            }
            match f.write(&piece[written..]) {
                Ok(0) => break Err(io::Error::new(io::ErrorKind::WriteZero, "wrote nothing")),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.size += written as u64;
        if written > 0 {
            self.mid_line = piece[written - 1] != b'\n';
        }
        if result.is_err() {
            // Reopen on retry: the handle may be what is broken.
            self.file = None;
        }
        result.map(|()| written)
    }

    fn rotate(&mut self, keep: u32) -> io::Result<()> {
        self.file = None;
        rotate(&self.path, keep)?;
        self.size = 0;
        Ok(())
    }
}

/// One name's bytes taken from its queue and not yet fully on disk.
#[derive(Debug)]
struct Sink {
    file: LogFile,
    inflight: VecDeque<Vec<u8>>,
    inflight_bytes: usize,
    /// Bytes of `inflight[0]` already written.
    offset: usize,
    retry_at: Option<Instant>,
    backoff: Duration,
    max_size: u64,
    keep: u32,
}

impl Sink {
    /// Writes what is in flight; returns bytes that reached the file.
    fn write_out(&mut self, name: &str) -> usize {
        let mut total = 0;
        while let Some(chunk) = self.inflight.front() {
            let (n, result) =
                self.file
                    .write_lines(&chunk[self.offset..], self.max_size, self.keep);
            total += n;
            self.offset += n;
            if let Err(e) = result {
                if self.retry_at.is_none() {
                    tracing::warn!(service = name, error = %e, path = %self.file.path.display(),
                        "cannot write the log; buffering and retrying");
                }
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
                break;
            }
            self.offset = 0;
            if let Some(c) = self.inflight.pop_front() {
                self.inflight_bytes -= c.len();
            }
        }
        if self.inflight.is_empty() && self.retry_at.take().is_some() {
            tracing::info!(service = name, "writing the log again");
            self.backoff = RETRY_MIN;
        }
        total
    }
}

/// The writer thread's body: runs until the drain thread is closing and everything
/// buffered is written (or the disk failed past [`CLOSE_DEADLINE`]).
///
/// `room` is written to when a buffer holding back a service has room again, so the
/// drain thread resumes reading its pipe at once.
pub fn run(dir: PathBuf, shared: Arc<Shared>, room: OwnedFd) {
    let mut sinks: HashMap<String, Sink> = HashMap::new();
    let mut closing_since: Option<Instant> = None;
    loop {
        let mut ready: Vec<String> = Vec::new();
        {
            let mut state = shared.lock();
            loop {
                let now = Instant::now();
                if state.closing && closing_since.is_none() {
                    closing_since = Some(now);
                }
                let mut next_retry: Option<Instant> = None;
                for (name, q) in state.queues.iter_mut() {
                    let sink = sinks.entry(name.clone()).or_insert_with(|| Sink {
                        file: LogFile::new(super::log_path(&dir, name)),
                        inflight: VecDeque::new(),
                        inflight_bytes: 0,
                        offset: 0,
                        retry_at: None,
                        backoff: RETRY_MIN,
                        max_size: q.max_size,
                        keep: q.keep,
                    });
                    sink.max_size = q.max_size.max(1);
                    sink.keep = q.keep;
                    if let Some(at) = sink.retry_at {
                        if at > now {
                            next_retry = Some(next_retry.map_or(at, |n: Instant| n.min(at)));
                            continue;
                        }
                    }
                    while sink.inflight_bytes < BATCH {
                        let Some(c) = q.chunks.pop_front() else { break };
                        sink.inflight_bytes += c.len();
                        sink.inflight.push_back(c);
                    }
                    if !sink.inflight.is_empty() {
                        ready.push(name.clone());
                    }
                }
                if !ready.is_empty() {
                    break;
                }
                if let Some(since) = closing_since {
                    let pending = sinks.values().any(|s| !s.inflight.is_empty())
                        || state.queues.values().any(|q| !q.chunks.is_empty());
                    if !pending || since.elapsed() >= CLOSE_DEADLINE {
                        drop(state);
                        finish(&shared);
                        return;
                    }
                }
                let wait = next_retry
                    .map(|t| t.saturating_duration_since(now))
                    .unwrap_or(Duration::from_secs(3600));
                let wait = if closing_since.is_some() {
                    wait.min(Duration::from_millis(50))
                } else {
                    wait
                };
                state = shared
                    .work
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        let mut written: Vec<(String, usize, bool)> = Vec::with_capacity(ready.len());
        for name in ready {
            if let Some(sink) = sinks.get_mut(&name) {
                let n = sink.write_out(&name);
                written.push((name, n, sink.retry_at.is_some()));
            }
        }
        let mut state = shared.lock();
        let mut wake = false;
        for (name, n, failing) in written {
            if let Some(q) = state.queues.get_mut(&name) {
                q.bytes = q.bytes.saturating_sub(n);
                // Tells the drain thread not to hold a service back for a disk that
                // fails.
                q.failing = failing;
                if q.held && (q.has_room() || failing) {
                    q.held = false;
                    wake = true;
                }
            }
        }
        drop(state);
        if wake {
            // A full pipe already means "look again"; nothing is lost.
            let _ = nix::unistd::write(&room, &[1]);
        }
    }
}

fn finish(shared: &Shared) {
    let mut done = shared.done.lock().unwrap_or_else(|e| e.into_inner());
    *done = true;
    shared.done_cv.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap_or_default()
    }

    #[test]
    fn rotation_keeps_lines_whole_and_sizes_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut f = LogFile::new(path.clone());
        let mut all = Vec::new();
        for i in 0..1000 {
            all.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let (n, r) = f.write_lines(&all, 1000, 3);
        r.unwrap();
        assert_eq!(n, all.len());
        let mut files = vec![];
        for i in (1..=3).rev() {
            files.push(read(&numbered(&path, i)));
        }
        files.push(read(&path));
        assert!(!numbered(&path, 4).exists());
        for b in &files {
            assert!(b.len() <= 1000);
            assert_eq!(b.last(), Some(&b'\n'));
        }
        let joined = files.concat();
        assert!(all.ends_with(&joined));
    }

    #[test]
    fn a_line_longer_than_max_size_gets_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut f = LogFile::new(path.clone());
        let mut buf = b"short\n".to_vec();
        buf.extend(vec![b'y'; 300]);
        buf.extend_from_slice(b"\nafter\n");
        f.write_lines(&buf, 100, 5).1.unwrap();
        assert_eq!(read(&numbered(&path, 2)), b"short\n");
        assert_eq!(read(&numbered(&path, 1)).len(), 301);
        assert_eq!(read(&path), b"after\n");
    }

    #[test]
    fn keep_zero_removes_instead_of_renaming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut f = LogFile::new(path.clone());
        f.write_lines(b"aaaa\nbbbb\n", 5, 0).1.unwrap();
        assert_eq!(read(&path), b"bbbb\n");
        assert!(!numbered(&path, 1).exists());
    }

    #[test]
    fn existing_file_is_appended_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        std::fs::write(&path, b"old1\nold2\n").unwrap();
        let mut f = LogFile::new(path.clone());
        f.write_lines(b"new\n", 12, 1).1.unwrap();
        assert_eq!(read(&numbered(&path, 1)), b"old1\nold2\n");
        assert_eq!(read(&path), b"new\n");
    }

    #[test]
    fn unwritable_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"").unwrap();
        let mut f = LogFile::new(not_a_dir.join("s.log"));
        let (n, r) = f.write_lines(b"x\n", 100, 1);
        assert_eq!(n, 0);
        assert!(r.is_err());
    }
}
