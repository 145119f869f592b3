//! A connection's bounded queue of encoded frames, waiting to be written.
//!
//! Many senders (handlers, room fan-out, relays), one drainer (the
//! connection's writer). Unlike a tokio `mpsc` channel, which allocates its
//! first block of slots up front (~1.5 KB), an idle outbox holds no heap
//! memory beyond what its deque kept, which matters at tens of thousands
//! of idle connections.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore, TryAcquireError};

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds its maximum number of frames.
    Full,
    /// The outbox was closed.
    Closed,
}

pub(crate) struct Outbox {
    frames: Mutex<VecDeque<Bytes>>,
    /// One permit per free slot; closed with the outbox.
    space: Semaphore,
    /// Wakes the drainer: a frame was queued, or something else needs it
    /// ([`Outbox::wake`]).
    ready: Notify,
}

impl Outbox {
    pub(crate) fn new(max_frames: usize) -> Self {
        Self {
            frames: Mutex::new(VecDeque::new()),
            space: Semaphore::new(max_frames.clamp(1, Semaphore::MAX_PERMITS)),
            ready: Notify::new(),
        }
    }

    /// Queues a frame, waiting while the queue is full.
    pub(crate) async fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let permit = self.space.acquire().await.map_err(|_| PushError::Closed)?;
        permit.forget();
        self.enqueue(frame);
        Ok(())
    }

    /// Queues a frame without waiting.
    pub(crate) fn try_push(&self, frame: Bytes) -> Result<(), PushError> {
        match self.space.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(PushError::Full),
            Err(TryAcquireError::Closed) => return Err(PushError::Closed),
        }
        self.enqueue(frame);
        Ok(())
    }

    fn enqueue(&self, frame: Bytes) {
        self.frames.lock().push_back(frame);
        self.ready.notify_one();
    }

    /// Moves up to `limit` queued frames into `out` without waiting.
    pub(crate) fn take(&self, out: &mut VecDeque<Bytes>, limit: usize) -> usize {
        let n = {
            let mut frames = self.frames.lock();
            let n = frames.len().min(limit);
            out.extend(frames.drain(..n));
            n
        };
        if n > 0 && !self.space.is_closed() {
            self.space.add_permits(n);
        }
        n
    }

    /// Waits until a frame is queued or [`wake`](Self::wake) is called
    /// (returns at once if a frame is queued, and may return spuriously:
    /// the drainer looks at what it has to do and waits again).
    pub(crate) async fn woken(&self) {
        if self.is_empty() {
            // `notify_one` leaves a permit when nobody waits, so a push or
            // a wake between the check and here is not missed.
            self.ready.notified().await;
        }
    }

    /// Wakes the drainer for something other than a frame (a close, a
    /// health-check tick, a shutdown): one signal for everything keeps a
    /// dozing connection down to one waiter.
    pub(crate) fn wake(&self) {
        self.ready.notify_one();
    }

    /// Gives the queue's memory back if it is empty (the connection is idle).
    pub(crate) fn release(&self) {
        let mut frames = self.frames.lock();
        if frames.is_empty() && frames.capacity() > 0 {
            *frames = VecDeque::new();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.lock().is_empty()
    }

    /// No more pushes; waiting senders get `Closed`, the drainer can still
    /// take what is queued.
    pub(crate) fn close(&self) {
        self.space.close();
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_order_and_bounds_the_queue() {
        let outbox = Outbox::new(2);
        outbox
            .push(Bytes::from_static(b"a"))
            .await
            .expect("test step");
        outbox
            .try_push(Bytes::from_static(b"b"))
            .expect("test step");
        assert_eq!(
            outbox.try_push(Bytes::from_static(b"c")),
            Err(PushError::Full)
        );
        let mut out = VecDeque::new();
        assert_eq!(outbox.take(&mut out, 10), 2);
        assert_eq!(out, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        outbox
            .try_push(Bytes::from_static(b"c"))
            .expect("test step");
        assert!(!outbox.is_empty());
    }

    #[tokio::test]
    async fn a_full_push_waits_for_the_drainer() {
        let outbox = std::sync::Arc::new(Outbox::new(1));
        outbox
            .push(Bytes::from_static(b"1"))
            .await
            .expect("test step");
        let pusher = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.push(Bytes::from_static(b"2")).await })
        };
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished(), "waits while full");
        let mut out = VecDeque::new();
        assert_eq!(outbox.take(&mut out, 1), 1);
        pusher.await.expect("a message").expect("no error");
        out.clear();
        outbox.woken().await;
        assert_eq!(outbox.take(&mut out, 1), 1);
        assert_eq!(out, [Bytes::from_static(b"2")]);
    }

    #[tokio::test]
    async fn close_wakes_the_drainer_and_refuses_pushes() {
        let outbox = std::sync::Arc::new(Outbox::new(4));
        let drainer = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.woken().await })
        };
        tokio::task::yield_now().await;
        assert!(!drainer.is_finished(), "nothing queued yet");
        outbox.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), drainer)
            .await
            .expect("woken by the close")
            .expect("test step");
        assert_eq!(
            outbox.push(Bytes::from_static(b"x")).await,
            Err(PushError::Closed)
        );
    }

    #[tokio::test]
    async fn a_wake_is_kept_until_the_drainer_waits() {
        let outbox = Outbox::new(4);
        // Woken before waiting: the next wait returns at once.
        outbox.wake();
        tokio::time::timeout(std::time::Duration::from_secs(5), outbox.woken())
            .await
            .expect("the earlier wake is not lost");
        // Consumed: the next wait waits.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), outbox.woken());
        assert!(waiting.await.is_err(), "no second wake-up");
        // A queued frame ends the wait without a wake.
        outbox
            .try_push(Bytes::from_static(b"f"))
            .expect("test step");
        tokio::time::timeout(std::time::Duration::from_secs(5), outbox.woken())
            .await
            .expect("a frame is waiting");
    }
}
