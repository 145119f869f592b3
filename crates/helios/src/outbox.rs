//! A connection's bounded queue of encoded frames, waiting to be written.
//!
//! Many senders (handlers, room fan-out, relays), one drainer (the
//! connection's writer). Unlike a tokio `mpsc` channel, which allocates its
//! first block of slots up front (~1.5 KB), an idle outbox holds no heap
//! memory beyond what its deque kept, which matters at tens of thousands
//! of idle connections.
//!
//! A room delivery queues one frame on each subscriber's outbox, so a push
//! and a drain are kept to one lock each: the bound is checked under the
//! queue's lock (no semaphore), and the drainer, the only one ever waiting
//! for frames, is woken through an [`AtomicWaker`] (no waiter list).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds its maximum number of frames.
    Full,
    /// The outbox was closed.
    Closed,
}

pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// The queue's length, written under its lock: the writer's checks for
    /// an empty queue (several per frame) read it without the lock.
    len: AtomicUsize,
    max_frames: usize,
    /// The drainer, while it waits ([`Outbox::woken`]).
    drainer: AtomicWaker,
    /// A wake-up for something other than a frame ([`Outbox::wake`]).
    wake: AtomicBool,
    /// Senders waiting for room ([`Outbox::push`] on a full queue).
    space: Notify,
    waiting_senders: AtomicUsize,
    /// Frames the drainer took and has not handed to the socket yet: while
    /// there are some, no one else may write the queue's frames
    /// ([`write_queue`](Self::write_queue)), they would go ahead of them.
    in_hand: AtomicUsize,
}

/// What [`Outbox::write_queue`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueAccess<R> {
    /// Nothing queued.
    Empty,
    /// The drainer holds frames it took: it writes the queue after them.
    Drainer,
    /// The queued frames were given to the writing function.
    Written(R),
}

/// One sender waiting for room, for as long as it lives.
struct WaitingSender<'a>(&'a AtomicUsize);

impl<'a> WaitingSender<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for WaitingSender<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Queue {
    frames: VecDeque<Bytes>,
    closed: bool,
}

impl Outbox {
    pub(crate) fn new(max_frames: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                closed: false,
            }),
            len: AtomicUsize::new(0),
            max_frames: max_frames.max(1),
            drainer: AtomicWaker::new(),
            wake: AtomicBool::new(false),
            space: Notify::new(),
            waiting_senders: AtomicUsize::new(0),
            in_hand: AtomicUsize::new(0),
        }
    }

    /// Queues a frame, waiting while the queue is full.
    pub(crate) async fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let mut frame = Some(frame);
        loop {
            let room = self.space.notified();
            let mut room = std::pin::pin!(room);
            // Registered before the attempt, so a drain in between is seen.
            room.as_mut().enable();
            match self.try_push_inner(&mut frame, true) {
                Err(PushError::Full) => {}
                done => return done.map(|_| ()),
            }
            // Counted while it waits, also if this future is dropped then.
            let _waiting = WaitingSender::new(&self.waiting_senders);
            // Re-checked after announcing the wait: a drain that saw no
            // waiting sender has already made room.
            let retry = self.try_push_inner(&mut frame, true);
            if !matches!(retry, Err(PushError::Full)) {
                return retry.map(|_| ());
            }
            room.await;
        }
    }

    /// Waits until `ready()` holds, checking it again whenever room is
    /// made ([`room_made`](Self::room_made), a drain) or the outbox closes.
    pub(crate) async fn wait_until(&self, ready: impl Fn() -> bool) {
        loop {
            let room = self.space.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            if ready() {
                return;
            }
            let _waiting = WaitingSender::new(&self.waiting_senders);
            // Re-checked after announcing the wait, as in `push`.
            if ready() {
                return;
            }
            room.await;
        }
    }

    /// Room was made other than by a drain (e.g. queued bytes were
    /// written): wakes whoever waits for it.
    pub(crate) fn room_made(&self) {
        if self.waiting_senders.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
    }

    /// Queues a frame without waiting.
    pub(crate) fn try_push(&self, frame: Bytes) -> Result<(), PushError> {
        self.try_push_inner(&mut Some(frame), true).map(|_| ())
    }

    /// Queues a frame without waiting and without waking the drainer: the
    /// caller sees that someone writes it. True if the queue was empty
    /// (nobody was going to write it yet).
    pub(crate) fn try_push_quiet(&self, frame: Bytes) -> Result<bool, PushError> {
        self.try_push_inner(&mut Some(frame), false)
    }

    /// Runs `write` on the queued frames, under the queue's lock (nothing
    /// is queued or taken meanwhile), unless the queue is empty or the
    /// drainer holds frames it took earlier. `write` takes off the front
    /// what it wrote.
    pub(crate) fn write_queue<R>(
        &self,
        write: impl FnOnce(&mut VecDeque<Bytes>) -> R,
    ) -> QueueAccess<R> {
        let written = {
            let mut queue = self.queue.lock();
            if queue.frames.is_empty() {
                return QueueAccess::Empty;
            }
            if self.in_hand.load(Ordering::SeqCst) > 0 {
                return QueueAccess::Drainer;
            }
            let r = write(&mut queue.frames);
            self.len.store(queue.frames.len(), Ordering::Release);
            r
        };
        if self.waiting_senders.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
        QueueAccess::Written(written)
    }

    /// The drainer handed `n` frames it took to the socket.
    pub(crate) fn handed_over(&self, n: usize) {
        self.in_hand.fetch_sub(n, Ordering::SeqCst);
    }

    /// Queues the frame in `frame` (taking it) unless the queue is closed or full.
    /// True if the queue was empty before; the drainer is woken if `wake`.
    fn try_push_inner(&self, frame: &mut Option<Bytes>, wake: bool) -> Result<bool, PushError> {
        let was_empty = {
            let mut queue = self.queue.lock();
            if queue.closed {
                return Err(PushError::Closed);
            }
            if queue.frames.len() >= self.max_frames {
                return Err(PushError::Full);
            }
            let was_empty = queue.frames.is_empty();
            if let Some(frame) = frame.take() {
                queue.frames.push_back(frame);
                self.len.store(queue.frames.len(), Ordering::Release);
            }
            was_empty
        };
        if wake {
            self.drainer.wake();
        }
        Ok(was_empty)
    }

    /// Moves up to `limit` queued frames into `out` without waiting.
    pub(crate) fn take(&self, out: &mut VecDeque<Bytes>, limit: usize) -> usize {
        let n = {
            let mut queue = self.queue.lock();
            let n = queue.frames.len().min(limit);
            // Counted while the queue is held, so `write_queue` sees them.
            self.in_hand.fetch_add(n, Ordering::SeqCst);
            if n == queue.frames.len() && out.is_empty() {
                // All of it: the two deques trade buffers, nothing moves.
                std::mem::swap(&mut queue.frames, out);
            } else {
                out.extend(queue.frames.drain(..n));
            }
            self.len.store(queue.frames.len(), Ordering::Release);
            n
        };
        if n > 0 && self.waiting_senders.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
        n
    }

    /// Waits until a frame is queued or [`wake`](Self::wake) is called
    /// (returns at once if a frame is queued, and may return spuriously:
    /// the drainer looks at what it has to do and waits again). One
    /// drainer at a time.
    pub(crate) async fn woken(&self) {
        poll_fn(|cx| {
            if self.take_wake() {
                return Poll::Ready(());
            }
            self.drainer.register(cx.waker());
            // Checked after registering: a push or wake in between is seen
            // here or wakes the drainer.
            if self.take_wake() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// A wake-up is pending or a frame is queued (consuming the wake-up).
    fn take_wake(&self) -> bool {
        self.wake.swap(false, Ordering::AcqRel) || !self.is_empty()
    }

    /// Wakes the drainer for something other than a frame (a close, a
    /// health-check tick, a shutdown): one signal for everything keeps a
    /// dozing connection down to one waiter.
    pub(crate) fn wake(&self) {
        self.wake.store(true, Ordering::Release);
        self.drainer.wake();
    }

    /// Gives the queue's memory back if it is empty (the connection is idle).
    pub(crate) fn release(&self) {
        let mut queue = self.queue.lock();
        if queue.frames.is_empty() && queue.frames.capacity() > 0 {
            queue.frames = VecDeque::new();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// No more pushes; waiting senders get `Closed`, the drainer can still
    /// take what is queued.
    pub(crate) fn close(&self) {
        self.queue.lock().closed = true;
        self.space.notify_waiters();
        self.wake();
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

    /// An outbox of 4 frames and a drainer task waiting on it (not woken
    /// yet).
    async fn waiting_drainer() -> (std::sync::Arc<Outbox>, tokio::task::JoinHandle<()>) {
        let outbox = std::sync::Arc::new(Outbox::new(4));
        let drainer = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.woken().await })
        };
        tokio::task::yield_now().await;
        assert!(!drainer.is_finished(), "nothing queued yet");
        (outbox, drainer)
    }

    async fn woken_in_time(drainer: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(std::time::Duration::from_secs(5), drainer)
            .await
            .expect("woken")
            .expect("test step");
    }

    #[tokio::test]
    async fn a_quiet_push_leaves_the_drainer_asleep() {
        let (outbox, drainer) = waiting_drainer().await;
        assert_eq!(outbox.try_push_quiet(Bytes::from_static(b"a")), Ok(true));
        assert_eq!(outbox.try_push_quiet(Bytes::from_static(b"b")), Ok(false));
        tokio::task::yield_now().await;
        assert!(!drainer.is_finished(), "not woken by a quiet push");
        outbox.wake();
        woken_in_time(drainer).await;
    }

    /// The queue is written by someone else only while the drainer holds
    /// nothing it took: those frames would be overtaken.
    #[test]
    fn the_queue_is_written_only_while_the_drainer_holds_nothing() {
        let outbox = Outbox::new(8);
        let write_all = |frames: &mut VecDeque<Bytes>| frames.drain(..).collect::<Vec<_>>();
        assert_eq!(outbox.write_queue(write_all), QueueAccess::Empty);
        outbox
            .try_push(Bytes::from_static(b"1"))
            .expect("test step");
        let mut batch = VecDeque::new();
        assert_eq!(outbox.take(&mut batch, 8), 1);
        outbox
            .try_push_quiet(Bytes::from_static(b"2"))
            .expect("test step");
        assert_eq!(outbox.write_queue(write_all), QueueAccess::Drainer);
        outbox.handed_over(1);
        assert_eq!(
            outbox.write_queue(write_all),
            QueueAccess::Written(vec![Bytes::from_static(b"2")])
        );
        assert!(outbox.is_empty());
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
        let (outbox, drainer) = waiting_drainer().await;
        outbox.close();
        woken_in_time(drainer).await;
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

    /// One sender, then four, push 5,000 frames each through a queue of 3
    /// while one drainer takes them on another thread: every frame arrives,
    /// each sender's in order, and no sender or drainer is left waiting
    /// (the test would time out).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn senders_waiting_for_room_are_never_forgotten() {
        senders_and_a_drainer::<1>().await;
        senders_and_a_drainer::<4>().await;
    }

    async fn senders_and_a_drainer<const SENDERS: usize>() {
        const EACH: usize = 5_000;
        let outbox = std::sync::Arc::new(Outbox::new(3));
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    for i in 0..EACH {
                        let frame = Bytes::from(format!("{s}:{i}"));
                        outbox.push(frame).await.expect("open");
                    }
                })
            })
            .collect();
        let drained = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            let mut next = [0usize; SENDERS];
            let mut batch = VecDeque::new();
            let mut total = 0;
            while total < SENDERS * EACH {
                if outbox.take(&mut batch, 2) == 0 {
                    outbox.woken().await;
                    continue;
                }
                for frame in batch.drain(..) {
                    let text = std::str::from_utf8(&frame).expect("utf-8");
                    let (s, i) = text.split_once(':').expect("s:i");
                    let (s, i): (usize, usize) = (s.parse().expect("s"), i.parse().expect("i"));
                    assert_eq!(i, next[s], "sender {s} out of order");
                    next[s] += 1;
                    total += 1;
                }
            }
            next
        })
        .await
        .expect("drained without a lost wake-up");
        assert_eq!(drained, [EACH; SENDERS]);
        for s in senders {
            s.await.expect("sender finished");
        }
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn a_sender_dropped_while_waiting_is_no_longer_counted() {
        let outbox = Outbox::new(1);
        outbox.try_push(Bytes::from_static(b"1")).expect("room");
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            outbox.push(Bytes::from_static(b"2")),
        );
        assert!(waiting.await.is_err(), "waits for room, then is dropped");
        assert_eq!(outbox.waiting_senders.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_wait_for_room_ends_when_room_is_made() {
        let outbox = std::sync::Arc::new(Outbox::new(4));
        let level = std::sync::Arc::new(AtomicUsize::new(10));
        let waiter = {
            let (outbox, level) = (outbox.clone(), level.clone());
            tokio::spawn(async move {
                outbox
                    .wait_until(|| level.load(Ordering::SeqCst) <= 5)
                    .await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while the level is high");
        level.store(7, Ordering::SeqCst);
        outbox.room_made();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "checked again, still too high");
        level.store(5, Ordering::SeqCst);
        outbox.room_made();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by room_made")
            .expect("test step");
        assert_eq!(outbox.waiting_senders.load(Ordering::SeqCst), 0);
    }
}
