//! Open-loop pacing: requests leave on a fixed schedule, each stamped with
//! its *intended* send time, whatever the server does.
//!
//! Latency is measured from the intended time, so a server (or generator)
//! that falls behind is charged for the whole wait (no coordinated
//! omission); how late requests went out is reported apart as the schedule
//! lag. Two ways to keep the schedule:
//!
//! - [`Pacing::Spin`] (default): one task owns every connection's send side,
//!   reads the clock between polls and writes what is due. Its core is busy
//!   all the time, but it never sleeps, so no request waits for a thread to
//!   be woken: at 60,000 req/s its schedule lag p99 is ~30 µs where the
//!   sleeping pacer's is 0.4-1 ms (`docs/benchmarks.md`).
//! - [`Pacing::Sleep`]: a dedicated OS thread sleeps until each ticket is due
//!   (tokio's timer ticks in milliseconds, `nanosleep` wakes within tens of
//!   microseconds) and hands it to the connection's writer task. The
//!   generator's CPU use then says how loaded it is; each request costs a
//!   sleep and a wake-up or two.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{FutureExt, SinkExt};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_websockets::Message;

use crate::client::Ws;
use crate::proto::{Method, Proto};
use crate::rpc::{Window, next_id};
use crate::stats::{histogram, record};

/// How the open loop keeps its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Pacing {
    /// One task checks the clock between polls and writes what is due.
    Spin,
    /// A pacer thread sleeps until each request is due.
    Sleep,
}

/// Queue of tickets per connection (intended send times, ns since start).
pub(crate) const TICKET_QUEUE: usize = 1 << 16;

/// What every open-loop request shares.
#[derive(Clone)]
pub(crate) struct Schedule {
    pub(crate) proto: Proto,
    /// Requests per second over all connections (round robin).
    pub(crate) rate: f64,
    pub(crate) win: Arc<Window>,
    pub(crate) payload: Arc<str>,
}

impl Schedule {
    fn interval_ns(&self) -> f64 {
        1e9 / self.rate.max(1e-3)
    }
}

/// One connection's send side.
pub(crate) struct Lane {
    conn: u32,
    pub(crate) sink: SplitSink<Ws, Message>,
    /// Intended send times not written yet.
    backlog: VecDeque<u64>,
    unflushed: bool,
    failed: bool,
    /// Requests of the measured window written so far (the reader stops
    /// once it has that many answers).
    sent: Arc<AtomicU64>,
    last_id: u64,
}

impl Lane {
    pub(crate) fn new(conn: u32, sink: SplitSink<Ws, Message>, sent: Arc<AtomicU64>) -> Self {
        Self {
            conn,
            sink,
            backlog: VecDeque::new(),
            unflushed: false,
            failed: false,
            sent,
            last_id: 0,
        }
    }

    /// Writes the backlog without waiting: a socket that is full keeps the
    /// rest for the next turn.
    fn pump(&mut self, s: &Schedule, lag: &mut Histogram<u64>, buf: &mut String) {
        if self.failed {
            self.backlog.clear();
            return;
        }
        let now = s.win.now();
        while let Some(&due) = self.backlog.front() {
            let id = next_id(&mut self.last_id, due);
            s.proto
                .request(buf, Method::Echo, id, self.conn, &s.payload);
            match self.sink.feed(Message::text(buf.clone())).now_or_never() {
                Some(Ok(())) => {}
                Some(Err(_)) => {
                    self.failed = true;
                    return;
                }
                None => break,
            }
            self.backlog.pop_front();
            self.unflushed = true;
            if s.win.contains(due) {
                record(lag, now.saturating_sub(due));
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.unflushed {
            match self.sink.flush().now_or_never() {
                Some(Ok(())) => self.unflushed = false,
                Some(Err(_)) => self.failed = true,
                None => {}
            }
        }
    }

    fn idle(&self) -> bool {
        self.failed || (self.backlog.is_empty() && !self.unflushed)
    }
}

/// Sends on every lane until the window closes and everything due is
/// written (or the connection failed, or `give_up_ns` passed). Returns the
/// schedule lag, the lanes, and the requests dropped (none: a lane that
/// cannot write keeps its backlog).
pub(crate) async fn run(
    pacing: Pacing,
    lanes: Vec<Lane>,
    s: Schedule,
    give_up_ns: u64,
) -> (Histogram<u64>, Vec<Lane>, u64) {
    match pacing {
        Pacing::Spin => {
            let (lag, lanes) = spin(lanes, &s, give_up_ns).await;
            (lag, lanes, 0)
        }
        Pacing::Sleep => sleep(lanes, s, give_up_ns).await,
    }
}

async fn spin(mut lanes: Vec<Lane>, s: &Schedule, give_up_ns: u64) -> (Histogram<u64>, Vec<Lane>) {
    let mut lag = histogram();
    let mut buf = String::new();
    let interval = s.interval_ns();
    let n = lanes.len().max(1);
    let mut k: u64 = 0;
    loop {
        let now = s.win.now();
        let mut due = (k as f64 * interval) as u64;
        while due <= now && due < s.win.until_ns {
            if let Some(lane) = lanes.get_mut(k as usize % n) {
                lane.backlog.push_back(due);
            }
            k += 1;
            due = (k as f64 * interval) as u64;
        }
        for lane in &mut lanes {
            lane.pump(s, &mut lag, &mut buf);
        }
        let finished = due >= s.win.until_ns && lanes.iter().all(Lane::idle);
        if finished || now > give_up_ns {
            return (lag, lanes);
        }
        // Lets the readers (and the I/O driver) run before the next look at
        // the clock.
        tokio::task::yield_now().await;
    }
}

async fn sleep(lanes: Vec<Lane>, s: Schedule, give_up_ns: u64) -> (Histogram<u64>, Vec<Lane>, u64) {
    let mut sinks = Vec::with_capacity(lanes.len());
    let mut writers = Vec::with_capacity(lanes.len());
    for lane in lanes {
        let (tx, rx) = mpsc::channel(TICKET_QUEUE);
        sinks.push(tx);
        writers.push(tokio::spawn(write_tickets(lane, rx, s.clone(), give_up_ns)));
    }
    let pacer = spawn(s.win.start, s.rate, s.win.until_ns, sinks);
    let mut lag = histogram();
    let mut lanes = Vec::with_capacity(writers.len());
    for w in writers {
        // A writer that panicked loses its connection's lag, not the run.
        if let Ok((l, lane)) = w.await {
            let _ = lag.add(&l);
            lanes.push(lane);
        }
    }
    let dropped = tokio::task::spawn_blocking(move || pacer.join().unwrap_or(0))
        .await
        .unwrap_or(0);
    (lag, lanes, dropped)
}

/// One connection's writer under the sleeping pacer.
async fn write_tickets(
    mut lane: Lane,
    mut tickets: mpsc::Receiver<u64>,
    s: Schedule,
    give_up_ns: u64,
) -> (Histogram<u64>, Lane) {
    let give_up = s.win.start + Duration::from_nanos(give_up_ns);
    let mut lag = histogram();
    let mut buf = String::new();
    let mut batch = Vec::with_capacity(64);
    while tickets.recv_many(&mut batch, 64).await > 0 {
        lane.backlog.extend(batch.drain(..));
        lane.pump(&s, &mut lag, &mut buf);
        while !lane.idle() {
            // The socket is full: wait until it takes more, but not for
            // a server that stopped reading.
            match tokio::time::timeout_at(give_up.into(), lane.sink.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => lane.failed = true,
            }
            lane.pump(&s, &mut lag, &mut buf);
        }
    }
    (lag, lane)
}

/// Starts a pacer thread: `rate` tickets per second to `sinks` (round
/// robin) until `until_ns` (ns since `start`). Returns how many tickets were
/// dropped because a connection's queue was full.
pub(crate) fn spawn(
    start: Instant,
    rate: f64,
    until_ns: u64,
    sinks: Vec<mpsc::Sender<u64>>,
) -> JoinHandle<u64> {
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let interval = 1e9 / rate.max(1e-3);
            let mut k: u64 = 0;
            let mut dropped = 0;
            let n = sinks.len().max(1);
            loop {
                let due = (k as f64 * interval) as u64;
                if due >= until_ns {
                    break;
                }
                let now = start.elapsed().as_nanos() as u64;
                if due > now {
                    std::thread::sleep(Duration::from_nanos(due - now));
                    continue;
                }
                if let Some(sink) = sinks.get(k as usize % n)
                    && sink.try_send(due).is_err()
                {
                    dropped += 1;
                }
                k += 1;
            }
            dropped
        })
        .unwrap_or_else(|e| panic!("cannot start the pacer thread: {e}"))
}
