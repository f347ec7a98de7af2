//! The pipe side: one thread that drains every run's stdout and stderr with `poll(2)`.
//!
//! A plain poll loop (not an async runtime) because this thread only moves bytes: one
//! syscall waits on every pipe plus a wake pipe for commands, and the timers it needs
//! (stderr-tail deadlines, retrying a drop marker) fit in its timeout. It never touches
//! the disk, so a stalled filesystem cannot stop it; it frames lines, keeps each
//! run's last stderr lines for crash context, and hands lines to the bounded
//! per-service buffers in [`super::queue`]. A stream whose lines are held back (its
//! buffer is full while the writer keeps up) is left out of the poll, so the service
//! waits on its own pipe, until the writer says through the room pipe that it has
//! made room.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::sync::oneshot;

use super::frame::{last_lines, Framer};
use super::queue::{Queue, Shared};
use crate::config::LogSettings;

/// Stderr lines kept per run for [`super::Logs::stderr_tail`].
pub const TAIL_LINES: usize = 50;
/// A kept stderr line is cut to this many bytes: it is context, not the log.
const TAIL_LINE_BYTES: usize = 2048;
/// Finished runs whose stderr tail is still kept, for a late `stderr_tail` call.
const FINISHED_KEPT: usize = 64;
/// Bytes read from one pipe per wake-up at most.
const READ_SIZE: usize = 256 * 1024;
/// How often to try again to write a drop marker while nothing else arrives.
const MARKER_RETRY: Duration = Duration::from_millis(100);
/// Reads per pipe when closing, so a service writing forever cannot delay shutdown.
const CLOSE_READS: usize = 16;
/// How often held streams are offered to their buffer again.
/// The writer says when it has made room; this is only the fallback, and what
/// notices a hold that ran out.
const HOLD_RETRY: Duration = Duration::from_millis(5);

/// What the rest of paiosd asks of the drain thread.
pub enum Cmd {
    Attach {
        name: String,
        run_id: u64,
        settings: LogSettings,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    StderrTail {
        run_id: u64,
        n: usize,
        wait: Duration,
        tx: oneshot::Sender<Vec<String>>,
    },
    Close,
}

struct Stream {
    fd: OwnedFd,
    run_id: u64,
    stderr: bool,
    framer: Framer,
    /// Framed lines that did not fit the buffer while the writer kept up; nothing more
    /// is read from this pipe until they are buffered.
    held: Vec<u8>,
    /// End of file was read; the stream goes once nothing is held.
    eof: bool,
}

impl Stream {
    fn pollable(&self) -> bool {
        self.held.is_empty() && !self.eof
    }
}

struct Waiter {
    n: usize,
    deadline: Instant,
    tx: oneshot::Sender<Vec<String>>,
}

struct Run {
    name: String,
    settings: LogSettings,
    open: u8,
    tail: VecDeque<String>,
    /// The unfinished stderr line, for an answer given before end of file.
    stderr_partial: Vec<u8>,
    waiters: Vec<Waiter>,
}

impl Run {
    fn answer(&self, n: usize) -> Vec<String> {
        let mut lines: Vec<String> = self.tail.iter().cloned().collect();
        if !self.stderr_partial.is_empty() {
            lines.push(tail_line(&self.stderr_partial));
        }
        let skip = lines.len().saturating_sub(n);
        lines.split_off(skip)
    }
}

fn tail_line(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(TAIL_LINE_BYTES)];
    String::from_utf8_lossy(cut).into_owned()
}

/// The drain thread's state.
pub struct Drain {
    rx: Receiver<Cmd>,
    wake: OwnedFd,
    /// Readable when the writer has made room in a buffer that holds lines; `None`
    /// once the writer is gone.
    room: Option<OwnedFd>,
    shared: Arc<Shared>,
    bound: usize,
    streams: Vec<Stream>,
    runs: HashMap<u64, Run>,
    finished: VecDeque<u64>,
    closing: bool,
    buf: Vec<u8>,
    /// Names with dropped lines whose marker is not buffered yet.
    markers_due: bool,
}

impl Drain {
    pub fn new(
        rx: Receiver<Cmd>,
        wake: OwnedFd,
        room: OwnedFd,
        shared: Arc<Shared>,
        bound: usize,
    ) -> Drain {
        Drain {
            rx,
            wake,
            room: Some(room),
            shared,
            bound,
            streams: Vec::new(),
            runs: HashMap::new(),
            finished: VecDeque::new(),
            closing: false,
            buf: vec![0; READ_SIZE],
            markers_due: false,
        }
    }

    /// Runs until `close()` or until every `Logs` handle is gone.
    pub fn run(mut self) {
        while !self.closing {
            let (wake, idx) = self.wait();
            if wake {
                self.drain_wake();
                self.commands();
            }
            self.retry_held();
            self.read_streams(&idx, 1);
            self.expire_waiters();
        }
        let all: Vec<usize> = (0..self.streams.len()).collect();
        self.read_streams(&all, CLOSE_READS);
        let prefixes = self.finish_all();
        let mut state = self.shared.lock();
        for (name, chunk) in prefixes {
            if let Some(q) = state.queues.get_mut(&name) {
                q.offer(chunk, b"");
            }
        }
        state.closing = true;
        drop(state);
        self.shared.work.notify_all();
    }

    /// Polls the wake pipe and every stream not held; returns whether the wake pipe is
    /// ready and the indices of the ready streams.
    fn wait(&mut self) -> (bool, Vec<usize>) {
        let now = Instant::now();
        let mut timeout: Option<Duration> = self
            .runs
            .values()
            .flat_map(|r| r.waiters.iter())
            .map(|w| w.deadline.saturating_duration_since(now))
            .min();
        if self.markers_due {
            timeout = Some(timeout.map_or(MARKER_RETRY, |t| t.min(MARKER_RETRY)));
        }
        if self.streams.iter().any(|s| !s.held.is_empty()) {
            timeout = Some(timeout.map_or(HOLD_RETRY, |t| t.min(HOLD_RETRY)));
        }
        let timeout = match timeout {
            // Rounded up so a deadline is not polled for again just before it.
            Some(t) => PollTimeout::from((t.as_millis() as u64 + 1).min(u16::MAX as u64) as u16),
            None => PollTimeout::NONE,
        };
        let polled: Vec<usize> = (0..self.streams.len())
            .filter(|&i| self.streams[i].pollable())
            .collect();
        let mut fds = Vec::with_capacity(2 + polled.len());
        fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
        let room_polled = self.room.is_some();
        if let Some(room) = &self.room {
            fds.push(PollFd::new(room.as_fd(), PollFlags::POLLIN));
        }
        let skip = fds.len();
        for &i in &polled {
            fds.push(PollFd::new(self.streams[i].fd.as_fd(), PollFlags::POLLIN));
        }
        let ready: Vec<bool> = match poll(&mut fds, timeout) {
            Ok(_) => fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect(),
            Err(Errno::EINTR) => vec![false; fds.len()],
            Err(e) => {
                // Not expected with valid descriptors; avoid a hot loop and go on.
                tracing::error!(error = %e, "poll on log pipes failed");
                std::thread::sleep(Duration::from_millis(10));
                vec![true; fds.len()]
            }
        };
        drop(fds);
        let idx = polled
            .into_iter()
            .zip(ready.iter().skip(skip))
            .filter(|(_, r)| **r)
            .map(|(i, _)| i)
            .collect();
        if room_polled && ready.get(1).copied().unwrap_or(false) {
            self.drain_room();
        }
        (ready.first().copied().unwrap_or(false), idx)
    }

    /// Offers held lines again where the writer has made room (or gave up).
    fn retry_held(&mut self) {
        if self.streams.iter().all(|s| s.held.is_empty()) {
            return;
        }
        let now = Instant::now();
        let shared = self.shared.clone();
        let mut state = shared.lock();
        let mut any = false;
        let mut stamp = None;
        for s in self.streams.iter_mut().filter(|s| !s.held.is_empty()) {
            let Some(run) = self.runs.get(&s.run_id) else {
                s.held.clear();
                continue;
            };
            let Some(q) = state.queues.get_mut(&run.name) else {
                s.held.clear();
                continue;
            };
            if q.has_room() || q.hold_expired(now) {
                let marker = marker_prefix(&run.settings, &mut stamp);
                let (buffered, rest) = q.offer_or_hold(std::mem::take(&mut s.held), &marker, now);
                any |= buffered;
                s.held = rest;
            }
        }
        self.markers_due |= state.queues.values().any(|q| q.dropped_pending > 0);
        drop(state);
        if any {
            self.shared.work.notify_one();
        }
        self.remove_ended();
    }

    /// Removes the streams at end of file with nothing held.
    fn remove_ended(&mut self) {
        let mut i = 0;
        while i < self.streams.len() {
            if self.streams[i].eof && self.streams[i].held.is_empty() {
                let s = self.streams.swap_remove(i);
                self.stream_ended(s.run_id);
            } else {
                i += 1;
            }
        }
    }

    fn drain_room(&mut self) {
        let Some(room) = &self.room else { return };
        let mut b = [0u8; 64];
        while let Ok(n) = nix::unistd::read(room.as_raw_fd(), &mut b) {
            if n == 0 {
                // The writer is gone; holds now end by their deadline.
                self.room = None;
                break;
            }
        }
    }

    fn drain_wake(&mut self) {
        let mut b = [0u8; 64];
        while let Ok(n) = nix::unistd::read(self.wake.as_raw_fd(), &mut b) {
            if n == 0 {
                // Every Logs handle is gone.
                self.closing = true;
                break;
            }
        }
    }

    fn commands(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(Cmd::Attach {
                    name,
                    run_id,
                    settings,
                    stdout,
                    stderr,
                }) => self.attach(name, run_id, settings, stdout, stderr),
                Ok(Cmd::StderrTail {
                    run_id,
                    n,
                    wait,
                    tx,
                }) => self.stderr_tail(run_id, n, wait, tx),
                Ok(Cmd::Close) | Err(TryRecvError::Disconnected) => {
                    self.closing = true;
                    break;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
    }

    fn attach(
        &mut self,
        name: String,
        run_id: u64,
        settings: LogSettings,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) {
        {
            let mut state = self.shared.lock();
            let q = state
                .queues
                .entry(name.clone())
                .or_insert_with(|| Queue::new(self.bound, settings.max_size, settings.keep));
            q.max_size = settings.max_size;
            q.keep = settings.keep;
        }
        let mut open = 0;
        for (fd, stderr) in [(stdout, false), (stderr, true)] {
            // Non-blocking so a spurious wake-up can never park the thread in read().
            let nonblock = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)
                .map(OFlag::from_bits_truncate)
                .and_then(|fl| fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)));
            if let Err(e) = nonblock {
                tracing::warn!(service = %name, error = %e, "cannot make a log pipe non-blocking");
            }
            #[cfg(target_os = "linux")]
            super::linux::grow_pipe(&fd);
            self.streams.push(Stream {
                fd,
                run_id,
                stderr,
                framer: Framer::default(),
                held: Vec::new(),
                eof: false,
            });
            open += 1;
        }
        match self.runs.get_mut(&run_id) {
            // The same run attached twice: count its pipes together rather than lose
            // track of the first pair.
            Some(run) => {
                run.open = run.open.saturating_add(open);
                self.finished.retain(|&r| r != run_id);
            }
            None => {
                self.runs.insert(
                    run_id,
                    Run {
                        name,
                        settings,
                        open,
                        tail: VecDeque::new(),
                        stderr_partial: Vec::new(),
                        waiters: Vec::new(),
                    },
                );
            }
        }
    }

    fn stderr_tail(
        &mut self,
        run_id: u64,
        n: usize,
        wait: Duration,
        tx: oneshot::Sender<Vec<String>>,
    ) {
        match self.runs.get_mut(&run_id) {
            Some(run) if run.open > 0 => run.waiters.push(Waiter {
                n,
                deadline: Instant::now() + wait,
                tx,
            }),
            Some(run) => {
                // The caller may have gone away; nothing to do then.
                let _ = tx.send(run.answer(n));
            }
            None => {
                let _ = tx.send(Vec::new());
            }
        }
    }

    /// Reads up to `reads` times from each stream in `idx` and buffers the lines.
    fn read_streams(&mut self, idx: &[usize], reads: usize) {
        if idx.is_empty() && !self.markers_due {
            return;
        }
        let mut out: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::new();
        let mut stamp: Option<String> = None;
        for &i in idx {
            for _ in 0..reads {
                let Some(s) = self.streams.get_mut(i) else {
                    break;
                };
                if !s.pollable() {
                    break;
                }
                let n = match nix::unistd::read(s.fd.as_raw_fd(), &mut self.buf) {
                    Ok(n) => n,
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a log pipe failed; closing it");
                        0
                    }
                };
                let Some(run) = self.runs.get_mut(&s.run_id) else {
                    break;
                };
                let prefix = line_prefix(&run.settings, s.stderr, &mut stamp);
                let marker_prefix = marker_prefix(&run.settings, &mut stamp);
                let mut framed = Vec::with_capacity(n + 64);
                if n == 0 {
                    s.framer.finish(&prefix, &mut framed);
                } else {
                    s.framer.push(&self.buf[..n], &prefix, &mut framed);
                }
                if s.stderr {
                    for line in last_lines(&framed, prefix.len(), TAIL_LINES) {
                        run.tail.push_back(tail_line(line));
                    }
                    while run.tail.len() > TAIL_LINES {
                        run.tail.pop_front();
                    }
                    run.stderr_partial.clear();
                    let p = s.framer.partial();
                    run.stderr_partial
                        .extend_from_slice(&p[..p.len().min(TAIL_LINE_BYTES)]);
                }
                if !framed.is_empty() {
                    out.push((i, framed, marker_prefix));
                }
                if n == 0 {
                    s.eof = true;
                    break;
                }
            }
        }
        self.buffer(out, &mut stamp);
        self.remove_ended();
    }

    /// Hands framed lines to the queues under one lock, holding in their stream what
    /// does not fit while the writer keeps up, then wakes the writer.
    fn buffer(&mut self, out: Vec<(usize, Vec<u8>, Vec<u8>)>, stamp: &mut Option<String>) {
        let now = Instant::now();
        let shared = self.shared.clone();
        let mut state = shared.lock();
        let mut any = false;
        for (i, chunk, marker_prefix) in out {
            let Some(s) = self.streams.get_mut(i) else {
                continue;
            };
            if !s.held.is_empty() {
                // Lines behind held ones wait with them, to keep their order.
                s.held.extend_from_slice(&chunk);
                continue;
            }
            let Some(run) = self.runs.get(&s.run_id) else {
                continue;
            };
            if let Some(q) = state.queues.get_mut(&run.name) {
                let (buffered, rest) = q.offer_or_hold(chunk, &marker_prefix, now);
                any |= buffered;
                s.held = rest;
            }
        }
        if self.markers_due {
            let mut due = false;
            for (name, q) in state.queues.iter_mut() {
                if q.dropped_pending > 0 {
                    let ts = self
                        .runs
                        .values()
                        .find(|r| &r.name == name)
                        .map(|r| marker_prefix(&r.settings, stamp))
                        .unwrap_or_default();
                    any |= q.offer_marker(&ts);
                    due |= q.dropped_pending > 0;
                }
            }
            self.markers_due = due;
        } else {
            self.markers_due = state.queues.values().any(|q| q.dropped_pending > 0);
        }
        drop(state);
        if any {
            self.shared.work.notify_one();
        }
    }

    fn stream_ended(&mut self, run_id: u64) {
        let Some(run) = self.runs.get_mut(&run_id) else {
            return;
        };
        run.open = run.open.saturating_sub(1);
        if run.open > 0 {
            return;
        }
        for w in std::mem::take(&mut run.waiters) {
            let _ = w.tx.send(run.answer(w.n));
        }
        self.finished.push_back(run_id);
        while self.finished.len() > FINISHED_KEPT {
            if let Some(old) = self.finished.pop_front() {
                self.runs.remove(&old);
            }
        }
    }

    fn expire_waiters(&mut self) {
        let now = Instant::now();
        for run in self.runs.values_mut() {
            if run.waiters.iter().all(|w| w.deadline > now) {
                continue;
            }
            let (due, later): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut run.waiters)
                .into_iter()
                .partition(|w| w.deadline <= now);
            run.waiters = later;
            for w in due {
                let _ = w.tx.send(run.answer(w.n));
            }
        }
    }

    /// At close: every unfinished line becomes a line; waiting callers get answers.
    fn finish_all(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut stamp = None;
        let mut out = Vec::new();
        for s in &mut self.streams {
            if let Some(run) = self.runs.get(&s.run_id) {
                let prefix = line_prefix(&run.settings, s.stderr, &mut stamp);
                let mut framed = std::mem::take(&mut s.held);
                if s.framer.finish(&prefix, &mut framed) > 0 || !framed.is_empty() {
                    out.push((run.name.clone(), framed));
                }
            }
        }
        for run in self.runs.values_mut() {
            for w in std::mem::take(&mut run.waiters) {
                let _ = w.tx.send(run.answer(w.n));
            }
        }
        out
    }
}

/// `TIMESTAMP ` and/or `[stderr] ` as the settings ask. The timestamp is taken once
/// per batch read: lines that arrived together share it, which saves formatting a
/// clock for every line of a fast writer.
fn line_prefix(settings: &LogSettings, stderr: bool, stamp: &mut Option<String>) -> Vec<u8> {
    let mut p = marker_prefix(settings, stamp);
    if settings.streams && stderr {
        p.extend_from_slice(super::STDERR_MARK.as_bytes());
    }
    p
}

fn marker_prefix(settings: &LogSettings, stamp: &mut Option<String>) -> Vec<u8> {
    if !settings.timestamps {
        return Vec::new();
    }
    let ts = stamp.get_or_insert_with(|| {
        chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    });
    let mut p = ts.as_bytes().to_vec();
    p.push(b' ');
    p
}
