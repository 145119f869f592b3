//! Pieces of reliable delivery shared by both ends: the resend policy and
//! the bounded memory of ids already seen.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

/// When to resend an unacknowledged message: after `first_delay`, then
/// twice as long each time (at most `max_delay`), `max_attempts` sends in
/// all.
///
/// ```
/// use std::time::Duration;
/// let r = helios_protocol::Retry::default();
/// assert_eq!(r.max_attempts, 5);
/// assert_eq!(r.delay(0), Duration::from_millis(500));
/// assert_eq!(r.delay(2), Duration::from_secs(2));
/// assert_eq!(r.delay(10), Duration::from_secs(8));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait before the first resend.
    pub first_delay: Duration,
    /// Sends in all, the first included.
    pub max_attempts: u32,
    /// Longest wait between two sends.
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(500),
            max_attempts: 5,
            max_delay: Duration::from_secs(8),
        }
    }
}

impl Retry {
    /// The wait after send number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Ids seen recently, the oldest forgotten first, to drop duplicates.
///
/// ```
/// let mut seen = helios_protocol::SeenIds::new(2);
/// assert!(seen.first_time("a"));
/// assert!(!seen.first_time("a"));
/// assert!(seen.first_time("b"));
/// assert!(seen.first_time("c")); // forgets "a"
/// assert!(seen.first_time("a"));
/// ```
#[derive(Debug)]
pub struct SeenIds {
    order: VecDeque<String>,
    set: HashSet<String>,
    cap: usize,
}

impl SeenIds {
    /// Remembers at most `cap` ids (at least one).
    pub fn new(cap: usize) -> Self {
        Self {
            order: VecDeque::new(),
            set: HashSet::new(),
            cap: cap.max(1),
        }
    }

    /// `true` the first time an id is seen.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}
