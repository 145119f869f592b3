//! Reliable delivery, client side: resend policy, and the bounded memories
//! that drop duplicates.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

/// The topic of an acknowledgement of a reliable notification (both ways).
pub(crate) const ACK_TOPIC: &str = "helios:ack";

/// When [`Client::notify_reliable`](crate::Client::notify_reliable) resends:
/// after `first_delay`, then twice as long each time (at most `max_delay`),
/// `max_attempts` sends in all. The same shape as the server's
/// `helios::Retry`.
///
/// ```
/// use std::time::Duration;
/// let r = starling::Retry::default();
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

/// Ids seen recently, oldest forgotten first (bounded).
pub(crate) struct SeenIds {
    order: VecDeque<String>,
    set: HashSet<String>,
    cap: usize,
}

impl SeenIds {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            order: VecDeque::new(),
            set: HashSet::new(),
            cap: cap.max(1),
        }
    }

    /// `true` the first time an id is seen.
    pub(crate) fn first_time(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

/// A bounded map that forgets its oldest entries: the answers already given
/// to server → client requests, replayed when the server resends one.
pub(crate) struct Recent<K, V> {
    order: VecDeque<K>,
    map: HashMap<K, V>,
    cap: usize,
}

impl<K: Eq + Hash + Clone, V> Recent<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            order: VecDeque::new(),
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    pub(crate) fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_some() {
            return;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_are_bounded() {
        let mut s = SeenIds::new(2);
        assert!(s.first_time("a"));
        assert!(!s.first_time("a"));
        assert!(s.first_time("b"));
        assert!(s.first_time("c")); // forgets "a"
        assert!(s.first_time("a"));
        assert!(!s.first_time("c"));
    }

    #[test]
    fn recent_is_bounded() {
        let mut r = Recent::new(2);
        r.insert(1, "x");
        r.insert(2, "y");
        r.insert(3, "z");
        assert!(r.get(&1).is_none());
        assert_eq!(r.get(&3), Some(&"z"));
    }
}
