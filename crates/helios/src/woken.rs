//! A future polled only when its own waker fired.
//!
//! A connection's task runs its reader and its writer as branches of one
//! `select!`, which polls every branch at every wake-up. At a room delivery
//! only the writer has work, yet the reader would be polled too: through the
//! WebSocket stream and its codec down to the socket's read readiness, on
//! memory gone cold since. [`Woken`] gives a branch a waker of its own and
//! skips the branch while that waker has not fired (−21 % instructions per
//! delivery, docs/benchmarks.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// A future with a waker of its own; see the module docs.
///
/// ```ignore
/// let mut reading = Woken::new(std::pin::pin!(reader));
/// std::future::poll_fn(|cx| reading.poll_if_woken(cx, false)).await;
/// ```
pub(crate) struct Woken<F> {
    future: F,
    signal: Arc<Signal>,
    /// Made once: the future's resources see the same waker at every poll
    /// and keep it without cloning.
    waker: Waker,
}

struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> Woken<F> {
    pub(crate) fn new(future: F) -> Self {
        let signal = Arc::new(Signal {
            // The first poll always runs.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(signal.clone());
        Self {
            future,
            signal,
            waker,
        }
    }

    /// Polls the future if its waker fired since its last poll, or if
    /// `anyway` (the caller knows it may wait on something registered with
    /// another waker); `Pending` otherwise. The task behind `cx` is woken
    /// whenever the future's waker fires.
    pub(crate) fn poll_if_woken(&mut self, cx: &mut Context<'_>, anyway: bool) -> Poll<F::Output> {
        // Registered before the flag is read: a wake in between is seen now
        // or wakes the task again.
        self.signal.task.register(cx.waker());
        if !self.signal.woken.swap(false, Ordering::AcqRel) && !anyway {
            return Poll::Pending;
        }
        Pin::new(&mut self.future).poll(&mut Context::from_waker(&self.waker))
    }
}

/// A future that signals a condition (a close, a shutdown), polled again
/// only when the task's waker changed since it registered: polling a
/// registered tokio `Notified` takes its notifier's lock each time, and the
/// reader would do that at every frame. The condition itself is read at
/// every poll; it must turn true before the future's waker is woken.
///
/// ```ignore
/// let mut closed = Registered::new(std::pin::pin!(conn.closed()));
/// std::future::poll_fn(|cx| closed.poll_until(cx, !conn.is_open())).await;
/// ```
pub(crate) struct Registered<F> {
    future: F,
    waker: Option<Waker>,
}

impl<F: Future + Unpin> Registered<F> {
    pub(crate) fn new(future: F) -> Self {
        Self {
            future,
            waker: None,
        }
    }

    /// Ready once `done`; otherwise polls the future if the waker changed.
    pub(crate) fn poll_until(&mut self, cx: &mut Context<'_>, done: bool) -> Poll<()> {
        if done {
            return Poll::Ready(());
        }
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        match Pin::new(&mut self.future).poll(cx) {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; pending until told otherwise, keeping the last
    /// waker it was given.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: parking_lot::Mutex<Option<Waker>>,
    }

    struct ProbeFuture(Arc<Probe>);

    impl Future for ProbeFuture {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            *self.0.waker.lock() = Some(cx.waker().clone());
            if self.0.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    /// A task waker that counts its wake-ups.
    #[derive(Default)]
    struct TaskWaker(AtomicUsize);

    impl Wake for TaskWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A probe wrapped in `Woken`, and the task waker it is polled with.
    fn woken_probe() -> (Arc<Probe>, Arc<TaskWaker>, Waker, Woken<ProbeFuture>) {
        let probe = Arc::new(Probe::default());
        let task = Arc::new(TaskWaker::default());
        let task_waker = Waker::from(task.clone());
        let woken = Woken::new(ProbeFuture(probe.clone()));
        (probe, task, task_waker, woken)
    }

    #[test]
    fn polls_the_first_time_then_only_when_its_waker_fired() {
        let (probe, task, task_waker, mut woken) = woken_probe();
        let mut cx = Context::from_waker(&task_waker);

        assert!(woken.poll_if_woken(&mut cx, false).is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1, "first poll runs");

        // The task woke for something else: the future is skipped.
        assert!(woken.poll_if_woken(&mut cx, false).is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1);

        // Its own waker fires: the task is woken and the future polled.
        probe.waker.lock().take().expect("registered").wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(woken.poll_if_woken(&mut cx, false).is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);

        // `anyway` polls it without a wake; then it finishes.
        probe.ready.store(true, Ordering::SeqCst);
        assert!(woken.poll_if_woken(&mut cx, false).is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
        assert!(woken.poll_if_woken(&mut cx, true).is_ready());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_wake_before_the_task_polls_again_is_not_lost() {
        let (probe, _task, task_waker, mut woken) = woken_probe();
        let mut cx = Context::from_waker(&task_waker);
        assert!(woken.poll_if_woken(&mut cx, false).is_pending());
        // Woken twice between polls: one poll follows, then none.
        let inner = probe.waker.lock().clone().expect("registered");
        inner.wake_by_ref();
        inner.wake_by_ref();
        probe.ready.store(true, Ordering::SeqCst);
        assert!(woken.poll_if_woken(&mut cx, false).is_ready());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_registered_future_is_polled_again_only_for_a_new_waker() {
        let probe = Arc::new(Probe::default());
        let first = Arc::new(TaskWaker::default());
        let second = Arc::new(TaskWaker::default());
        let (w1, w2) = (Waker::from(first.clone()), Waker::from(second.clone()));
        let mut registered = Registered::new(ProbeFuture(probe.clone()));

        assert!(
            registered
                .poll_until(&mut Context::from_waker(&w1), false)
                .is_pending()
        );
        assert!(
            registered
                .poll_until(&mut Context::from_waker(&w1), false)
                .is_pending()
        );
        assert_eq!(
            probe.polls.load(Ordering::SeqCst),
            1,
            "same waker: not polled"
        );
        // A new waker is handed to the future.
        assert!(
            registered
                .poll_until(&mut Context::from_waker(&w2), false)
                .is_pending()
        );
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
        probe.waker.lock().take().expect("registered").wake();
        assert_eq!(
            second.0.load(Ordering::SeqCst),
            1,
            "the current waker is woken"
        );
        // The condition ends it, without a poll.
        assert!(
            registered
                .poll_until(&mut Context::from_waker(&w2), true)
                .is_ready()
        );
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
    }
}
