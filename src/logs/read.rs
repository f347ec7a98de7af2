//! Reading logs for `paiosctl logs`: the last lines across the current and rotated
//! files, and following new lines across rotation and restarts. Reads files only, so
//! it works while paiosd is down.
//!
//! Following polls every 100 ms. A rotation shows as `NAME.log` being another file
//! (inode) than the one open; the follower then reads the rest of the file it had
//! open (now `NAME.log.1` or further), every file rotated after it, and goes on with
//! the new `NAME.log`, so no line is lost or printed twice while the files it needs
//! are still kept. A file that shrank in place was truncated and is read from the
//! start. A log that does not exist yet is waited for.
//!
//! Filters: `--since` compares the RFC 3339 time at the start of each line, which is
//! there only with `timestamps = true`; lines without one cannot be placed in time
//! and are always shown. `--stderr` keeps lines marked `[stderr] `, which exist only
//! with `streams = true`.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use memchr::{memchr, memrchr};

use super::{log_path, STDERR_MARK};

/// Block size for reading files backwards and forwards.
const BLOCK: usize = 64 * 1024;
/// How often `follow` looks for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Attempts at listing the rotated files without a rotation getting in between.
const SCAN_TRIES: usize = 20;

/// Which lines to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only lines stamped at or after this time (lines without a stamp pass).
    pub since: Option<DateTime<FixedOffset>>,
    /// Only lines marked as stderr.
    pub stderr_only: bool,
}

impl Filter {
    pub fn matches(&self, line: &[u8]) -> bool {
        if let Some(since) = self.since {
            if line_time(line).is_some_and(|t| t < since) {
                return false;
            }
        }
        !self.stderr_only || is_stderr(line)
    }

    /// The line is stamped before `since`: everything older is too.
    fn before_since(&self, line: &[u8]) -> bool {
        match (self.since, line_time(line)) {
            (Some(since), Some(t)) => t < since,
            _ => false,
        }
    }
}

/// The RFC 3339 time a line starts with, if it has one.
pub fn line_time(line: &[u8]) -> Option<DateTime<FixedOffset>> {
    let end = memchr(b' ', &line[..line.len().min(40)])?;
    let s = std::str::from_utf8(&line[..end]).ok()?;
    DateTime::parse_from_rfc3339(s).ok()
}

/// The line is marked as stderr (after its time stamp, if any).
pub fn is_stderr(line: &[u8]) -> bool {
    let rest = match line_time(line) {
        Some(_) => memchr(b' ', line).map_or(&[][..], |p| &line[p + 1..]),
        None => line,
    };
    rest.starts_with(STDERR_MARK.as_bytes())
}

/// Error for a `--since` value that is neither a duration nor a date or time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--since {0}")]
pub struct SinceError(pub String);

/// Parses `--since` with the grammar every verb shares ([`crate::units::parse_since`]),
/// in the offset-carrying form the line filter compares with.
pub fn parse_since(arg: &str, now: DateTime<Utc>) -> Result<DateTime<FixedOffset>, SinceError> {
    crate::units::parse_since(arg, now)
        .map(|t| t.fixed_offset())
        .map_err(SinceError)
}

/// One file of a log, opened.
struct Opened {
    file: File,
    id: (u64, u64),
    len: u64,
}

fn open_id(path: &Path) -> io::Result<Option<Opened>> {
    match File::open(path) {
        Ok(file) => {
            let m = file.metadata()?;
            Ok(Some(Opened {
                id: (m.dev(), m.ino()),
                len: m.len(),
                file,
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The highest N of an existing `NAME.log.N`.
fn highest_rotated(dir: &Path, name: &str) -> io::Result<u32> {
    let stem = format!("{name}.log.");
    let mut max = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let fname = entry.file_name();
        let Some(f) = fname.to_str() else { continue };
        if let Some(n) = f.strip_prefix(&stem).and_then(|n| n.parse::<u32>().ok()) {
            max = max.max(n);
        }
    }
    Ok(max)
}

/// Every file of `name`'s log, opened, newest first (`NAME.log`, `.1`, `.2`, …).
///
/// Opening in that order, a rotation in between (which moves files to higher numbers)
/// shows as the same file opened twice, or as a gap; then the listing is taken again.
fn scan(dir: &Path, name: &str) -> io::Result<Vec<Opened>> {
    let path = log_path(dir, name);
    let mut files = Vec::new();
    for attempt in 0..SCAN_TRIES {
        let top = highest_rotated(dir, name)?;
        let mut slots: Vec<Option<Opened>> = Vec::with_capacity(top as usize + 3);
        slots.push(open_id(&path)?);
        for i in 1..=top + 1 {
            slots.push(open_id(&super::writer::numbered(&path, i))?);
        }
        let gap = slots
            .iter()
            .position(Option::is_none)
            .is_some_and(|first_none| slots[first_none..].iter().any(Option::is_some));
        files = slots.into_iter().flatten().collect();
        let mut ids: Vec<_> = files.iter().map(|f| f.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if !gap && ids.len() == files.len() {
            break;
        }
        if attempt + 1 < SCAN_TRIES {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(files)
}

/// Lines are collected from the end; stops when enough were found or `--since` is
/// passed.
struct Collector<'a> {
    n: usize,
    filter: &'a Filter,
    /// Newest first.
    lines: Vec<Vec<u8>>,
    done: bool,
}

impl Collector<'_> {
    fn take(&mut self, line: Vec<u8>) {
        if self.filter.before_since(&line) {
            self.done = true;
            return;
        }
        if self.filter.matches(&line) {
            self.lines.push(line);
            if self.lines.len() >= self.n {
                self.done = true;
            }
        }
    }
}

/// Feeds `f`'s lines in `[0, end)` to `c`, last first. `end` must be 0 or just after
/// a `\n` for the newest file; for older files a last line without `\n` is a line.
fn read_back(f: &File, end: u64, c: &mut Collector<'_>) -> io::Result<()> {
    let mut pos = end;
    // The right-hand part of the line being assembled, without its `\n`.
    let mut carry: Vec<u8> = Vec::new();
    let mut first = true;
    while pos > 0 && !c.done {
        let start = pos.saturating_sub(BLOCK as u64);
        let mut block = vec![0; (pos - start) as usize];
        f.read_exact_at(&mut block, start)?;
        pos = start;
        let mut right = block.len();
        while let Some(nl) = memrchr(b'\n', &block[..right]) {
            let mut line = block[nl + 1..right].to_vec();
            line.extend_from_slice(&carry);
            carry.clear();
            // What follows the file's final `\n` is not a line.
            if !(first && line.is_empty()) {
                c.take(line);
                if c.done {
                    return Ok(());
                }
            }
            first = false;
            right = nl;
        }
        let mut left = block[..right].to_vec();
        left.extend_from_slice(&carry);
        carry = left;
        if right > 0 {
            first = false;
        }
    }
    if !carry.is_empty() && !c.done {
        c.take(carry);
    }
    Ok(())
}

/// Where the last complete line of `f` (of length `len`) ends.
fn complete_end(f: &File, len: u64) -> io::Result<u64> {
    let mut pos = len;
    while pos > 0 {
        let start = pos.saturating_sub(BLOCK as u64);
        let mut block = vec![0; (pos - start) as usize];
        f.read_exact_at(&mut block, start)?;
        if let Some(nl) = memrchr(b'\n', &block) {
            return Ok(start + nl as u64 + 1);
        }
        pos = start;
    }
    Ok(0)
}

/// The last `n` lines of `name`'s log, oldest first, across `NAME.log` and its
/// rotations, each without its `\n`. An unfinished last line is left out.
pub fn tail(dir: &Path, name: &str, n: usize) -> io::Result<Vec<Vec<u8>>> {
    tail_filtered(dir, name, n, &Filter::default())
}

/// [`tail`] counting only the lines `filter` lets through.
pub fn tail_filtered(
    dir: &Path,
    name: &str,
    n: usize,
    filter: &Filter,
) -> io::Result<Vec<Vec<u8>>> {
    let files = scan(dir, name)?;
    Ok(tail_of(&files, n, filter)?.0)
}

/// The last lines across `files` (newest first) and where the newest file's complete
/// lines end.
fn tail_of(files: &[Opened], n: usize, filter: &Filter) -> io::Result<(Vec<Vec<u8>>, u64)> {
    let Some(newest) = files.first() else {
        return Ok((Vec::new(), 0));
    };
    let end = complete_end(&newest.file, newest.len)?;
    let mut c = Collector {
        n,
        filter,
        lines: Vec::new(),
        done: n == 0,
    };
    for (i, f) in files.iter().enumerate() {
        if c.done {
            break;
        }
        read_back(&f.file, if i == 0 { end } else { f.len }, &mut c)?;
    }
    let mut lines = c.lines;
    lines.reverse();
    Ok((lines, end))
}

/// Prints the last `n` lines, then every new line as it is written, until `out` fails.
/// `prefix` puts the service name in front of each line (for `--all`).
pub fn follow(
    dir: &Path,
    names: &[String],
    n: usize,
    prefix: bool,
    out: &mut dyn io::Write,
) -> io::Result<()> {
    follow_with(
        dir,
        names,
        n,
        prefix,
        &Filter::default(),
        &AtomicBool::new(false),
        out,
    )
}

/// [`follow`] with a filter, returning when `stop` is set (checked every poll).
pub fn follow_with(
    dir: &Path,
    names: &[String],
    n: usize,
    prefix: bool,
    filter: &Filter,
    stop: &AtomicBool,
    out: &mut dyn io::Write,
) -> io::Result<()> {
    let mut followers = Vec::with_capacity(names.len());
    let mut buf = Vec::new();
    for name in names {
        let label = prefix.then(|| format!("{name} | ").into_bytes());
        let files = scan(dir, name)?;
        let (lines, end) = tail_of(&files, n, filter)?;
        for line in lines {
            emit(&mut buf, label.as_deref(), &line, filter);
        }
        let current = files.into_iter().next().map(|f| (f.file, f.id));
        followers.push(Follower {
            name: name.clone(),
            label,
            current,
            offset: end,
            partial: Vec::new(),
        });
    }
    out.write_all(&buf)?;
    out.flush()?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(FOLLOW_POLL);
        for f in &mut followers {
            buf.clear();
            f.step(dir, filter, &mut buf)?;
            if !buf.is_empty() {
                out.write_all(&buf)?;
            }
        }
        out.flush()?;
    }
    Ok(())
}

fn emit(buf: &mut Vec<u8>, label: Option<&[u8]>, line: &[u8], filter: &Filter) {
    if !filter.matches(line) {
        return;
    }
    if let Some(l) = label {
        buf.extend_from_slice(l);
    }
    buf.extend_from_slice(line);
    buf.push(b'\n');
}

/// Following one service's log.
struct Follower {
    name: String,
    label: Option<Vec<u8>>,
    /// The file being read and its identity.
    current: Option<(File, (u64, u64))>,
    offset: u64,
    /// Bytes of a line not finished yet.
    partial: Vec<u8>,
}

impl Follower {
    fn step(&mut self, dir: &Path, filter: &Filter, buf: &mut Vec<u8>) -> io::Result<()> {
        self.read_current(filter, buf)?;
        let now = match std::fs::metadata(log_path(dir, &self.name)) {
            Ok(m) => Some(((m.dev(), m.ino()), m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let (Some((_, id)), Some((now_id, len))) = (&self.current, now) {
            if *id == now_id {
                if len < self.offset {
                    // Truncated in place: start over.
                    self.offset = 0;
                    self.partial.clear();
                    self.read_current(filter, buf)?;
                }
                return Ok(());
            }
        }
        // Rotated, replaced, or not there (yet).
        let files = scan(dir, &self.name)?;
        let newer: Vec<Opened> = match &self.current {
            Some((_, id)) => match files.iter().position(|f| f.id == *id) {
                Some(p) => files.into_iter().take(p).collect(),
                // Our file was deleted (rotated past keep): all kept files are newer.
                None => files,
            },
            None => files,
        };
        if newer.is_empty() {
            return Ok(());
        }
        // The old file gets no more writes once rotated: read its rest.
        self.read_current(filter, buf)?;
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            emit(buf, self.label.as_deref(), &line, filter);
        }
        let mut newer = newer;
        newer.reverse();
        let last = newer.len() - 1;
        for (i, f) in newer.into_iter().enumerate() {
            self.current = Some((f.file, f.id));
            self.offset = 0;
            self.read_current(filter, buf)?;
            if i < last && !self.partial.is_empty() {
                let line = std::mem::take(&mut self.partial);
                emit(buf, self.label.as_deref(), &line, filter);
            }
        }
        Ok(())
    }

    /// Reads the open file from `offset` to its end, emitting complete lines.
    fn read_current(&mut self, filter: &Filter, buf: &mut Vec<u8>) -> io::Result<()> {
        let Some((file, _)) = &self.current else {
            return Ok(());
        };
        let mut block = vec![0u8; BLOCK];
        loop {
            let n = match file.read_at(&mut block, self.offset) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(());
            }
            self.offset += n as u64;
            let mut rest = &block[..n];
            while let Some(nl) = memchr(b'\n', rest) {
                if self.partial.is_empty() {
                    emit(buf, self.label.as_deref(), &rest[..nl], filter);
                } else {
                    self.partial.extend_from_slice(&rest[..nl]);
                    let line = std::mem::take(&mut self.partial);
                    emit(buf, self.label.as_deref(), &line, filter);
                }
                rest = &rest[nl + 1..];
            }
            self.partial.extend_from_slice(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    fn write(dir: &Path, f: &str, s: &str) {
        std::fs::write(dir.join(f), s).unwrap();
    }

    #[test]
    fn tail_spans_rotated_files_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "s.log.2", "a\nb\n");
        write(d.path(), "s.log.1", "c\nd\n");
        write(d.path(), "s.log", "e\nf\npartial");
        let t = tail(d.path(), "s", 5).unwrap();
        assert_eq!(
            t,
            vec![
                b"b".to_vec(),
                b"c".to_vec(),
                b"d".to_vec(),
                b"e".to_vec(),
                b"f".to_vec()
            ]
        );
        assert_eq!(tail(d.path(), "s", 100).unwrap().len(), 6);
        assert!(tail(d.path(), "s", 0).unwrap().is_empty());
        assert!(tail(d.path(), "missing", 10).unwrap().is_empty());
        assert!(tail(&PathBuf::from("/nonexistent-paios"), "x", 3)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn tail_handles_lines_longer_than_a_block() {
        let d = tempfile::tempdir().unwrap();
        let long = "z".repeat(BLOCK * 2 + 5);
        write(d.path(), "s.log", &format!("first\n{long}\nlast\n"));
        let t = tail(d.path(), "s", 3).unwrap();
        assert_eq!(t[0], b"first");
        assert_eq!(t[1].len(), long.len());
        assert_eq!(t[2], b"last");
    }

    #[test]
    fn empty_lines_count_as_lines() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "s.log", "a\n\n\nb\n");
        let t = tail(d.path(), "s", 10).unwrap();
        assert_eq!(t, vec![b"a".to_vec(), vec![], vec![], b"b".to_vec()]);
    }

    #[test]
    fn since_and_stderr_filters() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "s.log",
            "2026-01-01T10:00:00.000+00:00 old\n\
             2026-01-01T11:00:00.000+00:00 [stderr] err\n\
             2026-01-01T12:00:00.000+01:00 new\n\
             2026-01-01T12:00:00.000+00:00 [stderr] late\n",
        );
        let since = DateTime::parse_from_rfc3339("2026-01-01T10:30:00Z").unwrap();
        let f = Filter {
            since: Some(since),
            stderr_only: false,
        };
        let t = tail_filtered(d.path(), "s", 10, &f).unwrap();
        assert_eq!(t.len(), 3);
        let f = Filter {
            since: None,
            stderr_only: true,
        };
        let t = tail_filtered(d.path(), "s", 10, &f).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[1].ends_with(b"late"));
        assert!(is_stderr(b"[stderr] x"));
        assert!(!is_stderr(b"x [stderr] y"));
    }

    #[test]
    fn since_parses_durations_and_times_and_rejects_junk() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            parse_since("10m", now).unwrap().to_rfc3339(),
            "2026-01-01T11:50:00+00:00"
        );
        assert_eq!(
            parse_since("1d", now).unwrap().to_rfc3339(),
            "2025-12-31T12:00:00+00:00"
        );
        assert_eq!(
            parse_since("500ms", now).unwrap().timestamp_millis(),
            now.timestamp_millis() - 500
        );
        assert_eq!(
            parse_since("1w", now).unwrap().to_rfc3339(),
            "2025-12-25T12:00:00+00:00"
        );
        assert_eq!(
            parse_since("1h30m", now).unwrap().to_rfc3339(),
            "2026-01-01T10:30:00+00:00"
        );
        assert!(parse_since("2026-01-01T11:00:00+01:00", now).is_ok());
        for bad in [
            "",
            "m",
            "10",
            "10x",
            "-5m",
            "99999999999999999999d",
            "1.5h",
            "5215w",
            "30s1m",
        ] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.to_string().contains("--since"), "{bad}");
        }
    }

    #[test]
    fn follow_reads_the_old_file_to_its_end_after_rotation() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "s.log", "one\n");
        let files = scan(d.path(), "s").unwrap();
        let mut f = Follower {
            name: "s".into(),
            label: None,
            current: files.into_iter().next().map(|f| (f.file, f.id)),
            offset: 4,
            partial: Vec::new(),
        };
        let mut buf = Vec::new();
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("s.log"))
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        std::fs::rename(d.path().join("s.log"), d.path().join("s.log.1")).unwrap();
        write(d.path(), "s.log", "three\nfo");
        f.step(d.path(), &Filter::default(), &mut buf).unwrap();
        assert_eq!(buf, b"two\nthree\n");
        buf.clear();
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("s.log"))
            .unwrap()
            .write_all(b"ur\n")
            .unwrap();
        f.step(d.path(), &Filter::default(), &mut buf).unwrap();
        assert_eq!(buf, b"four\n");
        // Truncated in place.
        write(d.path(), "s.log", "x\n");
        buf.clear();
        f.step(d.path(), &Filter::default(), &mut buf).unwrap();
        assert_eq!(buf, b"x\n");
    }
}
