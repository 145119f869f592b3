//! Reliable delivery, client side: resend policy, and the bounded memories
//! that drop duplicates.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// The topic of an acknowledgement of a reliable notification (both ways).
pub(crate) const ACK_TOPIC: &str = helios_protocol::topic::ACK;

pub use helios_protocol::Retry;
pub(crate) use helios_protocol::SeenIds;

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
