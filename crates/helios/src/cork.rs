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
//! with its own list; connections are spread over them. A shard whose
//! flusher stopped (its runtime ended, say) takes no connections: their
//! writers are woken instead, until a new connection restarts it in place.

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
    listed: Mutex<Listed>,
    flusher: AtomicWaker,
}

#[derive(Default)]
struct Listed {
    conns: Vec<Connection>,
    /// A flusher task runs (or is about to) for this shard.
    flushing: bool,
}

impl Cork {
    /// The shard for a new connection. Starts the flushers (one per worker
    /// of the current runtime) the first time, and restarts, in place, any
    /// that stopped: connections keep their shard for life.
    pub(crate) fn shard(&self) -> Arc<CorkShard> {
        let mut shards = self.shards.lock();
        if shards.is_empty() {
            let workers = tokio::runtime::Handle::current()
                .metrics()
                .num_workers()
                .max(1);
            for _ in 0..workers {
                let shard = Arc::new(CorkShard::default());
                let task = start(&shard);
                shards.push((shard, task));
            }
        }
        for (shard, task) in shards.iter_mut() {
            if task.is_finished() {
                *task = start(shard);
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
    /// Lists a connection whose queue just got its first frame. False if
    /// no flusher runs for this shard: the caller wakes the connection's
    /// writer instead.
    pub(crate) fn add(&self, conn: Connection) -> bool {
        let first = {
            let mut listed = self.listed.lock();
            if !listed.flushing {
                return false;
            }
            listed.conns.push(conn);
            listed.conns.len() == 1
        };
        // Later ones find the flusher woken (or still working through the
        // list: it looks at the list again before it waits).
        if first {
            self.flusher.wake();
        }
        true
    }
}

/// Spawns a shard's flusher on the current runtime.
fn start(shard: &Arc<CorkShard>) -> JoinHandle<()> {
    // Set before the task exists, so a connection listed before its first
    // poll is written; cleared by `Stopped` however the task ends.
    shard.listed.lock().flushing = true;
    tokio::spawn(flush(Stopped(shard.clone())))
}

/// A shard's flusher: when it ends (its task aborted, its runtime gone,
/// even before its first poll), the shard stops taking connections and
/// the ones listed are handed to their writers.
struct Stopped(Arc<CorkShard>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let listed = {
            let mut listed = self.0.listed.lock();
            listed.flushing = false;
            std::mem::take(&mut listed.conns)
        };
        for conn in listed {
            conn.wake_writer();
        }
    }
}

/// Writes the listed connections' queues, for as long as the server lives.
async fn flush(stopped: Stopped) {
    let shard = &stopped.0;
    let mut batch = Vec::new();
    loop {
        poll_fn(|cx| {
            shard.flusher.register(cx.waker());
            // Looked at after registering: an `add` in between is seen here
            // or wakes this task.
            if shard.listed.lock().conns.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        std::mem::swap(&mut shard.listed.lock().conns, &mut batch);
        for conn in batch.drain(..) {
            conn.flush_queued();
        }
        // Publishers on other threads may refill the list at once: let the
        // runtime's other tasks run in between.
        tokio::task::consume_budget().await;
    }
}
