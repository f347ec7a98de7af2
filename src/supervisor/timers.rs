//! The actor's one clock: a set of deadlines, the earliest of which the event loop
//! sleeps until. Timers are never cancelled; a timer that fires for a state that has
//! moved on is simply ignored by its handler, which keeps the bookkeeping trivial.

use std::collections::BTreeSet;
use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// A backoff or a dependency wait may be over: try to start the service.
    Start(String),
    /// The stop grace of run `run_id` is over: SIGKILL its group if it is still there.
    Grace(String, u64),
    /// The stdin grace of MCP client run `run_id` is over: send the stop signal.
    StdinGrace(String, u64),
    /// MCP client run `run_id` closed its stdout: stop it unless it has ended by itself.
    ServerDone(String, u64),
    /// Check whether the group of run `run_id` is empty yet.
    Poll(String, u64),
    /// The crash-loop cooldown of a failed service is over.
    Cooldown(String),
    /// A task's scheduled time may have come; re-checked at least every minute.
    Schedule(String),
    /// Task run `run_id` may have run past its timeout.
    Timeout(String, u64),
    /// Time to sample memory and check for groups stopped by a signal (every run due).
    Sample,
    /// Nothing to do but look at waiting operations again (a run has settled).
    Wake,
}

#[derive(Debug, Default)]
pub struct Timers {
    set: BTreeSet<(Instant, u64, Timer)>,
    seq: u64,
}

impl Timers {
    pub fn at(&mut self, when: Instant, timer: Timer) {
        self.seq += 1;
        self.set.insert((when, self.seq, timer));
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.set.first().map(|(when, _, _)| *when)
    }

    /// Removes and returns every timer due at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Timer> {
        let mut out = Vec::new();
        while let Some((when, _, _)) = self.set.first() {
            if *when > now {
                break;
            }
            if let Some((_, _, timer)) = self.set.pop_first() {
                out.push(timer);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_returns_only_past_deadlines_in_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.at(t0 + Duration::from_millis(20), Timer::Start("b".into()));
        timers.at(t0 + Duration::from_millis(10), Timer::Start("a".into()));
        timers.at(t0 + Duration::from_millis(30), Timer::Cooldown("c".into()));
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(10)));
        let due = timers.due(t0 + Duration::from_millis(25));
        assert_eq!(
            due,
            vec![Timer::Start("a".into()), Timer::Start("b".into())]
        );
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn same_deadline_keeps_both() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.at(t0, Timer::Start("a".into()));
        timers.at(t0, Timer::Start("a".into()));
        assert_eq!(timers.due(t0).len(), 2);
        assert!(timers.is_empty());
    }
}
