//! Deadlines for the event loop: a min-heap with lazy cancellation.
//!
//! Owners keep their own notion of "when" (a connection's idle deadline moves with every
//! request); a firing timer only tells its owner to look. Stale entries cost one check.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use mio::Token;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Check a client connection's deadlines.
    Conn(Token),
    /// Check an operation's deadlines (kill grace, pings, connect timeout).
    Op(Token),
    /// Check a VM guest agent's deadlines (its key).
    Agent(Token),
    /// Reconnect to Docker after a backoff.
    DockerReconnect,
    /// Send the systemd watchdog keep-alive.
    Watchdog,
    /// Resume accepting after running out of descriptors.
    ResumeAccept,
    /// Look for the sites' resolver thread's answer.
    SitesResolved,
}

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub(crate) fn at(&mut self, when: Instant, timer: Timer) {
        self.heap.push(Reverse((when, timer)));
    }

    pub(crate) fn after(&mut self, delay: Duration, timer: Timer) {
        self.at(Instant::now() + delay, timer);
    }

    /// How long the loop may sleep.
    pub(crate) fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((when, _))| when.saturating_duration_since(now))
    }

    /// The next timer that is due, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((when, _))) if *when <= now => self.heap.pop().map(|Reverse((_, t))| t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_in_order() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.at(now + Duration::from_millis(20), Timer::Watchdog);
        t.at(now + Duration::from_millis(10), Timer::Conn(Token(7)));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(t.timeout(now), Some(Duration::from_millis(10)));
        let later = now + Duration::from_millis(25);
        assert_eq!(t.pop_due(later), Some(Timer::Conn(Token(7))));
        assert_eq!(t.pop_due(later), Some(Timer::Watchdog));
        assert_eq!(t.pop_due(later), None);
    }
}
