//! Picks the publications after a position out of what the backend kept,
//! with the same `complete` rules as `helios::MemoryBroker`.

use helios::{History, Publication, StreamPosition};

/// `kept` is in offset order; `position` is the room's head.
pub(crate) fn select(
    position: StreamPosition,
    kept: Vec<Publication>,
    since: Option<StreamPosition>,
    limit: usize,
) -> History {
    let (publications, complete) = match since {
        None => (Vec::new(), true),
        Some(s) if position.offset == 0 => (Vec::new(), s.offset == 0),
        Some(s) if s.epoch != position.epoch => (Vec::new(), false),
        Some(s) => {
            let pubs: Vec<Publication> = kept
                .into_iter()
                .filter(|p| p.offset > s.offset && p.epoch == position.epoch)
                .take(limit)
                .collect();
            let covered = s.offset >= position.offset
                || pubs.first().is_some_and(|p| p.offset == s.offset + 1);
            (pubs, covered)
        }
    };
    History {
        publications,
        position,
        complete,
    }
}
