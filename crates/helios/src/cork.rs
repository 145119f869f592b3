//! The room fan-out's cork: deliveries written by a flusher, not by each
//! member's task.
//!
//! A publication queues its frame on every member's outbox. Waking each
//! member's task to write it costs a task wake-up and a poll per delivery,
//! more than the write's own user-space work. Instead the frame is queued
//! quietly and the member is listed here (once per empty-to-non-empty
//! change of its queue); a flusher task, woken once, then writes each listed
//! socket's whole queue ([`Connection::flush_queued`]).
//!
//! The flusher runs after the publisher's poll, so what piled up meanwhile
//! on one socket (several publications, while the server is busy) still
//! goes out in one write, as the member's own writer would send it. Writing
//! from the publishing call instead (one write per delivery) was tried and
//! lost that batching (docs/benchmarks.md, 2026-11-24).
//!
//! Whatever the flusher cannot write at once (the socket is asleep, in use,
//! full, or its writer holds frames) it leaves to the member's writer,
//! which it wakes: the cork only ever saves work, the writer stays the one
//! that always gets the frames out. One flusher per runtime worker, each
//! with its own list; connections are spread over them.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::connection::Connection;

/// The flushers of one server (see the module docs).
#[derive(Default)]
pub(crate) struct Cork {
    shards: Mutex<Vec<(Arc<CorkShard>, JoinHandle<()>)>>,
    next: AtomicUsize,
}

/// One flusher's list of connections with frames to write.
#[derive(Default)]
pub(crate) struct CorkShard {
    listed: Mutex<Vec<Connection>>,
    flusher: AtomicWaker,
}

impl Cork {
    /// The shard for a new connection; starts the flushers (one per worker
    /// of the current runtime) if they are not running.
    pub(crate) fn shard(&self) -> Arc<CorkShard> {
        let mut shards = self.shards.lock();
        if shards.is_empty() || shards.iter().any(|(_, task)| task.is_finished()) {
            for (_, task) in shards.drain(..) {
                task.abort();
            }
            let workers = tokio::runtime::Handle::current()
                .metrics()
                .num_workers()
                .max(1);
            for _ in 0..workers {
                let shard = Arc::new(CorkShard::default());
                let task = tokio::spawn(flush(shard.clone()));
                shards.push((shard, task));
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % shards.len();
        shards[i].0.clone()
    }
}

impl Drop for Cork {
    fn drop(&mut self) {
        for (_, task) in self.shards.get_mut().drain(..) {
            task.abort();
        }
    }
}

impl CorkShard {
    /// Lists a connection whose queue just got its first frame.
    pub(crate) fn add(&self, conn: Connection) {
        let first = {
            let mut listed = self.listed.lock();
            listed.push(conn);
            listed.len() == 1
        };
        // Later ones find the flusher woken (or still working through the
        // list: it looks at the list again before it waits).
        if first {
            self.flusher.wake();
        }
    }
}

/// Writes the listed connections' queues, for as long as the server lives.
async fn flush(shard: Arc<CorkShard>) {
    let mut batch = Vec::new();
    loop {
        poll_fn(|cx| {
            shard.flusher.register(cx.waker());
            // Looked at after registering: an `add` in between is seen here
            // or wakes this task.
            if shard.listed.lock().is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        std::mem::swap(&mut *shard.listed.lock(), &mut batch);
        for conn in batch.drain(..) {
            conn.flush_queued();
        }
        // Publishers on other threads may refill the list at once: let the
        // runtime's other tasks run in between.
        tokio::task::consume_budget().await;
    }
}
