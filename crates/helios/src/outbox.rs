//! A connection's bounded queue of encoded frames, waiting to be written.
//!
//! Many senders (handlers, room fan-out, relays), one drainer (the
//! connection's writer). Unlike a tokio `mpsc` channel, which allocates its
//! first block of slots up front (~1.5 KB), an idle outbox holds no heap
//! memory beyond what its deque kept, which matters at tens of thousands
//! of idle connections.

use std::collections::VecDeque;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

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
    queue: Mutex<Queue>,
    /// One permit per free slot; closed with the outbox.
    space: Semaphore,
    /// Wakes the drainer: a frame was queued, or something else needs it
    /// ([`Outbox::wake`]).
    ready: Notify,
}

struct Queue {
    frames: VecDeque<Bytes>,
    /// The drainer's task is being polled ([`Outbox::drive`]): its writer
    /// looks at the queue before that poll ends, so a push needs no wake-up.
    drainer_running: bool,
}

impl Outbox {
    pub(crate) fn new(max_frames: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                drainer_running: false,
            }),
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
        let wake = {
            let mut queue = self.queue.lock();
            queue.frames.push_back(frame);
            !queue.drainer_running
        };
        if wake {
            self.ready.notify_one();
        }
    }

    /// Runs the drainer's task future `fut` (the connection's reader and
    /// writer), with frames queued *during one of its polls* not waking it.
    ///
    /// Why: the reader answers a request in the same poll in which the
    /// writer then drains the queue. A `notify_one` there would wake the
    /// task that is already running, for one more poll that finds nothing
    /// to do: a third of the polls of a connection whose requests arrive
    /// one at a time. A frame still queued when a poll ends (pushed by
    /// another thread after the writer looked, or more than the writer
    /// took) gets its wake-up then, so none is lost. Only the future that
    /// drains this outbox may be driven here.
    pub(crate) async fn drive<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        std::future::poll_fn(|cx| self.poll_drainer(fut.as_mut(), cx)).await
    }

    fn poll_drainer<F: Future>(&self, fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.queue.lock().drainer_running = true;
        let out = fut.poll(cx);
        let left = {
            let mut queue = self.queue.lock();
            queue.drainer_running = false;
            !queue.frames.is_empty()
        };
        if left && out.is_pending() {
            // Wakes the writer if it waits for a frame; if it waits for the
            // socket instead, the permit this leaves is one spurious look.
            self.ready.notify_one();
        }
        out
    }

    /// Moves up to `limit` queued frames into `out` without waiting.
    pub(crate) fn take(&self, out: &mut VecDeque<Bytes>, limit: usize) -> usize {
        let n = {
            let frames = &mut self.queue.lock().frames;
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
        let mut notified = pin!(self.ready.notified());
        std::future::poll_fn(|cx| {
            // Looked at on every poll: under [`drive`](Self::drive) a frame
            // is queued without a notification.
            if !self.is_empty() {
                return Poll::Ready(());
            }
            // `notify_one` leaves a permit when nobody waits, so a push or
            // a wake between the check and here is not missed.
            notified.as_mut().poll(cx)
        })
        .await;
    }

    /// Wakes the drainer for something other than a frame (a close, a
    /// health-check tick, a shutdown): one signal for everything keeps a
    /// dozing connection down to one waiter.
    pub(crate) fn wake(&self) {
        self.ready.notify_one();
    }

    /// Gives the queue's memory back if it is empty (the connection is idle).
    pub(crate) fn release(&self) {
        let frames = &mut self.queue.lock().frames;
        if frames.is_empty() && frames.capacity() > 0 {
            *frames = VecDeque::new();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.lock().frames.is_empty()
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

    /// Counts the wake-ups of the task it stands for.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl futures_util::task::ArcWake for Wakes {
        fn wake_by_ref(this: &std::sync::Arc<Self>) {
            this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Wakes {
        fn count(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn a_frame_queued_and_drained_in_the_drainers_poll_wakes_nobody() {
        let outbox = Outbox::new(8);
        let wakes = std::sync::Arc::new(Wakes::default());
        let waker = futures_util::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut batch = VecDeque::new();
        // The reader answers, the writer drains, then waits for more: one
        // poll of the connection task.
        let mut task = pin!(outbox.drive(async {
            outbox
                .try_push(Bytes::from_static(b"answer"))
                .expect("room");
            outbox.take(&mut batch, 8);
            outbox.woken().await;
        }));
        assert!(task.as_mut().poll(&mut cx).is_pending());
        assert_eq!(wakes.count(), 0, "no wake-up for a frame already written");
        // A frame from elsewhere, between polls, wakes the task.
        outbox.try_push(Bytes::from_static(b"push")).expect("room");
        assert_eq!(wakes.count(), 1);
        assert!(task.as_mut().poll(&mut cx).is_ready(), "the writer sees it");
    }

    #[test]
    fn a_frame_queued_after_the_writer_looked_wakes_the_task_when_its_poll_ends() {
        let outbox = Outbox::new(8);
        let wakes = std::sync::Arc::new(Wakes::default());
        let waker = futures_util::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut writer_waits = pin!(outbox.woken());
        // The writer waits; then, still inside this poll, a frame is queued
        // (another thread's push, or a reader polled after the writer).
        {
            let mut task = pin!(outbox.drive(std::future::poll_fn(|cx| {
                assert!(writer_waits.as_mut().poll(cx).is_pending());
                outbox.try_push(Bytes::from_static(b"late")).expect("room");
                Poll::<()>::Pending
            })));
            assert!(task.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(wakes.count(), 1, "the frame left in the queue is not lost");
        assert!(
            writer_waits.as_mut().poll(&mut cx).is_ready(),
            "and the writer's wait ends"
        );
    }
}
