//! The bounded buffer between the thread that drains pipes and the thread that writes
//! files, one per service name.
//!
//! The drain thread never waits for the disk: when a name's buffer is full it drops
//! whole lines and counts them, and the first line it can buffer again is preceded by
//! `[paios: N lines dropped]`, so the gap is visible in the log exactly where it is.
//! The writer takes chunks out and only subtracts their size once they are on disk,
//! so bytes waiting for a retry still count against the bound.
//!
//! Dropping is for a disk that fails or stalls, not for one that is merely slower than
//! a service writing flat out (page-cache writes of a busy service routinely outrun
//! one writer thread in bursts). So when the buffer is full while the writer is
//! writing without errors, the lines that do not fit are *held*: the drain thread
//! stops reading that service's pipe, the service waits on its full pipe exactly as
//! it would on a file, and reading resumes once the writer has brought the buffer down
//! to half. A hold lasts at most [`HOLD_MAX`]: a disk that cannot write half the
//! buffer in that time is stalled, and from then on lines are dropped (the service
//! runs at its own pace) until the buffer is down to half again. A failing write
//! (disk full, read-only directory) drops at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use memchr::memrchr;

use super::frame::count_lines;

/// The longest a service is held waiting on its pipe for the writer to make room.
pub const HOLD_MAX: Duration = Duration::from_millis(250);

/// Everything the two log threads share.
#[derive(Debug, Default)]
pub struct Shared {
    pub state: Mutex<State>,
    /// Wakes the writer: new chunks, or closing.
    pub work: Condvar,
    /// Set by the writer when it has finished, for `close()`.
    pub done: Mutex<bool>,
    pub done_cv: Condvar,
}

impl Shared {
    /// Locks the state; a panic in the other thread must not take logging down too.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub queues: HashMap<String, Queue>,
    /// The drain thread has stopped; the writer empties what is left and stops.
    pub closing: bool,
}

/// One service's lines on their way to `NAME.log`.
#[derive(Debug)]
pub struct Queue {
    pub chunks: VecDeque<Vec<u8>>,
    /// Bytes buffered or being written; never above `bound` (a marker line is only
    /// added below half of it).
    pub bytes: usize,
    pub bound: usize,
    /// The most `bytes` ever was, to show that memory stayed bounded.
    pub peak: usize,
    pub dropped_total: u64,
    /// Dropped lines not yet reported in the log by a marker line.
    pub dropped_pending: u64,
    pub max_size: u64,
    pub keep: u32,
    /// Since when lines that did not fit have been held back (see the module doc).
    pub hold_since: Option<Instant>,
    /// The writer's last attempt failed and it is waiting to retry: nothing is held.
    pub failing: bool,
    /// A stream of this name holds lines: the writer wakes the drain thread once it
    /// has made room.
    pub held: bool,
}

impl Queue {
    pub fn new(bound: usize, max_size: u64, keep: u32) -> Queue {
        Queue {
            chunks: VecDeque::new(),
            bytes: 0,
            bound,
            peak: 0,
            dropped_total: 0,
            dropped_pending: 0,
            max_size,
            keep,
            hold_since: None,
            failing: false,
            held: false,
        }
    }

    /// The writer has brought the buffer down to half: held lines may come in, and
    /// a hold that ran out ends.
    pub fn has_room(&self) -> bool {
        self.bytes <= self.bound / 2
    }

    /// Buffers what of `chunk` fits and returns the lines that did not, to be held
    /// in the pipe, while the writer keeps up; otherwise drops like [`Queue::offer`]
    /// and returns nothing. Returns (something was buffered, the held rest).
    pub fn offer_or_hold(
        &mut self,
        mut chunk: Vec<u8>,
        marker_prefix: &[u8],
        now: Instant,
    ) -> (bool, Vec<u8>) {
        if self.has_room() {
            self.hold_since = None;
        }
        if self.dropped_pending > 0 || self.failing || self.bytes + chunk.len() <= self.bound {
            return (self.offer(chunk, marker_prefix), Vec::new());
        }
        let room = self.bound.saturating_sub(self.bytes);
        let cut = memrchr(b'\n', &chunk[..room.min(chunk.len())]).map_or(0, |p| p + 1);
        // A line longer than the whole buffer would wait for nothing.
        let hopeless = cut == 0 && self.bytes == 0;
        let since = *self.hold_since.get_or_insert(now);
        if hopeless || now.duration_since(since) >= HOLD_MAX {
            return (self.offer(chunk, marker_prefix), Vec::new());
        }
        let rest = chunk.split_off(cut);
        self.held = true;
        let any = !chunk.is_empty();
        if any {
            self.push(chunk);
        }
        (any, rest)
    }

    /// A hold that has lasted [`HOLD_MAX`] without the buffer getting down to half:
    /// the writer is stalled.
    pub fn hold_expired(&self, now: Instant) -> bool {
        self.failing
            || self
                .hold_since
                .is_some_and(|t| now.duration_since(t) >= HOLD_MAX)
    }

    /// Buffers `chunk` (whole lines) or as many of its first lines as fit, dropping and
    /// counting the rest. `marker_prefix` goes before a `[paios: N lines dropped]` line.
    /// Returns true when something was buffered.
    pub fn offer(&mut self, mut chunk: Vec<u8>, marker_prefix: &[u8]) -> bool {
        if chunk.is_empty() {
            return false;
        }
        if self.dropped_pending > 0 && !self.offer_marker(marker_prefix) {
            // The marker has to come before anything newer, so nothing fits yet.
            self.drop_lines(count_lines(&chunk));
            return false;
        }
        if self.bytes + chunk.len() > self.bound {
            let room = self.bound.saturating_sub(self.bytes);
            let cut = memrchr(b'\n', &chunk[..room.min(chunk.len())]).map_or(0, |p| p + 1);
            self.drop_lines(count_lines(&chunk[cut..]));
            chunk.truncate(cut);
            if chunk.is_empty() {
                return false;
            }
        }
        self.push(chunk);
        true
    }

    /// Buffers the marker for the lines dropped so far once the writer has made room:
    /// after a drop nothing is buffered until the buffer is down to half its bound, so
    /// the marker goes in when writing works again rather than into the first sliver
    /// of space, and a disk that is still full does not scatter markers.
    pub fn offer_marker(&mut self, prefix: &[u8]) -> bool {
        if self.dropped_pending == 0 {
            return true;
        }
        if self.bytes > self.bound / 2 {
            return false;
        }
        let mut line = prefix.to_vec();
        line.extend_from_slice(marker(self.dropped_pending).as_bytes());
        line.push(b'\n');
        self.dropped_pending = 0;
        self.push(line);
        true
    }

    fn push(&mut self, chunk: Vec<u8>) {
        self.bytes += chunk.len();
        self.peak = self.peak.max(self.bytes);
        self.chunks.push_back(chunk);
    }

    fn drop_lines(&mut self, n: u64) {
        self.dropped_total += n;
        self.dropped_pending += n;
    }
}

/// The line written where lines were dropped.
pub fn marker(n: u64) -> String {
    format!("[paios: {n} lines dropped]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize, len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.extend(vec![b'x'; len - 1]);
            v.push(b'\n');
        }
        v
    }

    #[test]
    fn fits_until_bound_then_drops_whole_lines() {
        let mut q = Queue::new(100, 1000, 1);
        assert!(q.offer(lines(5, 10), b""));
        assert_eq!(q.bytes, 50);
        // 8 lines of 10: 5 fit, 3 dropped.
        assert!(q.offer(lines(8, 10), b""));
        assert_eq!(q.bytes, 100);
        assert_eq!(q.dropped_total, 3);
        assert!(!q.offer(lines(1, 10), b""));
        assert_eq!(q.dropped_total, 4);
        assert_eq!(q.peak, 100);
    }

    #[test]
    fn marker_precedes_the_next_buffered_line() {
        let mut q = Queue::new(100, 1000, 1);
        q.offer(lines(10, 10), b"");
        q.offer(lines(2, 10), b"");
        assert_eq!(q.dropped_pending, 2);
        // The writer takes some out, not enough yet.
        q.bytes = 60;
        assert!(!q.offer(b"next\n".to_vec(), b"T "));
        assert_eq!(q.dropped_pending, 3);
        // Now it has written enough.
        q.chunks.clear();
        q.bytes = 0;
        assert!(q.offer(b"next\n".to_vec(), b"T "));
        let all: Vec<u8> = q.chunks.iter().flatten().copied().collect();
        assert_eq!(all, b"T [paios: 3 lines dropped]\nnext\n");
        assert_eq!(q.dropped_pending, 0);
        assert_eq!(q.dropped_total, 3);
    }

    #[test]
    fn a_full_buffer_holds_while_the_writer_keeps_up_then_drops_when_stalled() {
        let t0 = Instant::now();
        let mut q = Queue::new(100, 1000, 1);
        let (any, rest) = q.offer_or_hold(lines(15, 10), b"", t0);
        assert!(any);
        assert_eq!(q.bytes, 100);
        assert_eq!(rest, lines(5, 10));
        assert_eq!(q.dropped_total, 0);
        // Still full, within the hold: held again, nothing lost.
        let (any, rest) = q.offer_or_hold(rest, b"", t0 + HOLD_MAX / 2);
        assert!(!any);
        assert_eq!(rest.len(), 50);
        assert!(!q.hold_expired(t0 + HOLD_MAX / 2));
        // The writer got it down to half: the hold ends, the rest fits.
        q.bytes = 50;
        q.chunks.clear();
        let (any, rest) = q.offer_or_hold(rest, b"", t0 + HOLD_MAX);
        assert!(any && rest.is_empty());
        assert_eq!(q.bytes, 100);
        assert_eq!(q.hold_since, None);
        // Full again and the writer does not move: after HOLD_MAX lines are dropped.
        let t1 = t0 + HOLD_MAX * 2;
        let (_, rest) = q.offer_or_hold(lines(1, 10), b"", t1);
        assert_eq!(rest.len(), 10);
        assert!(q.hold_expired(t1 + HOLD_MAX));
        let (any, rest) = q.offer_or_hold(rest, b"", t1 + HOLD_MAX);
        assert!(!any && rest.is_empty());
        assert_eq!(q.dropped_total, 1);
    }

    #[test]
    fn a_failing_writer_is_never_waited_for() {
        let mut q = Queue::new(100, 1000, 1);
        q.failing = true;
        let (_, rest) = q.offer_or_hold(lines(12, 10), b"", Instant::now());
        assert!(rest.is_empty());
        assert_eq!(q.dropped_total, 2);
    }

    #[test]
    fn a_line_larger_than_the_bound_is_dropped_not_split() {
        let mut q = Queue::new(10, 1000, 1);
        assert!(!q.offer(lines(1, 20), b""));
        assert_eq!(q.dropped_total, 1);
        assert_eq!(q.bytes, 0);
    }
}
