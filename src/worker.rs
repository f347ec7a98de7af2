//! Ending a worker thread that is fed through a bounded channel, as the ledger's writer
//! and the alert sender are. Both must close within a deadline whatever state the
//! thread is in: the queue may be full (so the close message waits for room), the
//! thread may already be gone (nothing to do), or it may not answer in time (then it is
//! left to end with the process rather than block paiosd's exit).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Queues `msg` (which carries the sender of `done`) on `tx`, retrying while the queue
/// is full, then waits for the thread to answer on `done` and joins it, all before
/// `deadline`. Gives up quietly at the deadline or when the thread is already gone.
pub(crate) fn close<M>(
    tx: &SyncSender<M>,
    mut msg: M,
    done: &Receiver<()>,
    deadline: Instant,
    thread: &Mutex<Option<JoinHandle<()>>>,
) {
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Disconnected(_)) => return,
            Err(TrySendError::Full(back)) => {
                if Instant::now() >= deadline {
                    return;
                }
                msg = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    if done.recv_timeout(remaining).is_ok() {
        let handle = match thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            // The thread returns right after signalling `done`.
            let _ = handle.join();
        }
    }
}
