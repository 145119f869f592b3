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
//!   be woken: at 60,000 req/s its schedule lag p99 was 10-180 µs where the
//!   sleeping pacer's was 0.4-1 ms (`docs/benchmarks.md`).
//! - [`Pacing::Sleep`]: a dedicated OS thread sleeps until each ticket is due
//!   (tokio's timer ticks in milliseconds, `nanosleep` wakes within tens of
//!   microseconds) and hands it to the connection's writer task. The
//!   generator's CPU use then says how loaded it is; each request costs a
//!   sleep and a wake-up or two.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{FutureExt, SinkExt};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_websockets::Message;

use crate::client::Ws;
use crate::proto::{Method, Proto};
use crate::rpc::Window;
use crate::stats::{histogram, record};

/// How the open loop keeps its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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

/// What a connection's sender and its reader share.
#[derive(Default)]
pub(crate) struct LaneState {
    /// Requests of the measured window written so far (the reader stops
    /// once it has that many answers).
    pub(crate) sent: AtomicU64,
    /// The server pinged (Socket.IO): the sender owes it a pong.
    pub(crate) pong_due: AtomicBool,
}

/// One connection's send side.
pub(crate) struct Lane {
    conn: u32,
    pub(crate) sink: SplitSink<Ws, Message>,
    /// Intended send times not written yet.
    backlog: VecDeque<u64>,
    unflushed: bool,
    failed: bool,
    state: Arc<LaneState>,
    /// The last request id written: ids are the intended send times, made
    /// strictly increasing per connection.
    last_id: u64,
    /// Requests of the window never written (the connection failed, or the
    /// run gave up on a socket that stayed full).
    unsent: u64,
}

impl Lane {
    pub(crate) fn new(conn: u32, sink: SplitSink<Ws, Message>, state: Arc<LaneState>) -> Self {
        Self {
            conn,
            sink,
            backlog: VecDeque::new(),
            unflushed: false,
            failed: false,
            state,
            last_id: 0,
            unsent: 0,
        }
    }

    /// Writes the backlog without waiting: a socket that is full keeps the
    /// rest for the next turn.
    fn pump(&mut self, s: &Schedule, lag: &mut Histogram<u64>, buf: &mut String) {
        if self.failed {
            self.give_up(s);
            return;
        }
        if self.state.pong_due.swap(false, Ordering::Relaxed) {
            match self.sink.feed(Message::text("3".to_owned())).now_or_never() {
                Some(Ok(())) => self.unflushed = true,
                Some(Err(_)) => self.failed = true,
                None => self.state.pong_due.store(true, Ordering::Relaxed),
            }
        }
        let now = s.win.now();
        while let Some(&due) = self.backlog.front() {
            let id = due.max(self.last_id + 1);
            s.proto
                .request(buf, Method::Echo, id, self.conn, &s.payload);
            match self.sink.feed(Message::text(buf.clone())).now_or_never() {
                Some(Ok(())) => {}
                Some(Err(_)) => {
                    self.failed = true;
                    self.give_up(s);
                    return;
                }
                None => break,
            }
            self.backlog.pop_front();
            self.last_id = id;
            self.unflushed = true;
            // Lag is counted when the request is handed to the socket's
            // writer, which writes it in this turn unless the socket is full.
            if s.win.contains(id) {
                record(lag, now.saturating_sub(due));
                self.state.sent.fetch_add(1, Ordering::Relaxed);
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

    /// Drops what was not written, counting the window's part of it.
    fn give_up(&mut self, s: &Schedule) {
        let unsent = self.backlog.drain(..).filter(|&due| s.win.contains(due));
        self.unsent += unsent.count() as u64;
    }
}

/// How the sending went.
pub(crate) struct Sent {
    /// How late requests were handed to their socket.
    pub(crate) lag: Histogram<u64>,
    /// Each connection's lane, in order (`None`: its writer task failed).
    pub(crate) lanes: Vec<Option<Lane>>,
    /// Requests of the window never written: a full ticket queue
    /// (`--pacing sleep`), a failed connection, or a socket still full
    /// when the run gave up.
    pub(crate) unsent: u64,
}

/// Sends on every lane until the window closes and everything due is
/// written (or the connection failed, or `give_up_ns` passed).
pub(crate) async fn run(pacing: Pacing, lanes: Vec<Lane>, s: Schedule, give_up_ns: u64) -> Sent {
    let (lag, lanes, dropped) = match pacing {
        Pacing::Spin => {
            // The spinner yields after every turn anyway; the budget would
            // only make it skip the lanes at the end of a long turn.
            let spun = tokio::task::coop::unconstrained(spin(lanes, &s, give_up_ns)).await;
            (spun.0, spun.1.into_iter().map(Some).collect(), 0)
        }
        Pacing::Sleep => run_sleeping(lanes, s, give_up_ns).await,
    };
    let unsent = dropped + lanes.iter().flatten().map(|l| l.unsent).sum::<u64>();
    Sent { lag, lanes, unsent }
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
            for lane in &mut lanes {
                lane.give_up(s);
            }
            return (lag, lanes);
        }
        // Lets the readers (and the I/O driver) run before the next look at
        // the clock.
        tokio::task::yield_now().await;
    }
}

async fn run_sleeping(
    lanes: Vec<Lane>,
    s: Schedule,
    give_up_ns: u64,
) -> (Histogram<u64>, Vec<Option<Lane>>, u64) {
    let mut sinks = Vec::with_capacity(lanes.len());
    let mut writers = Vec::with_capacity(lanes.len());
    for lane in lanes {
        let (tx, rx) = mpsc::channel(TICKET_QUEUE);
        sinks.push(tx);
        writers.push(tokio::spawn(write_tickets(lane, rx, s.clone(), give_up_ns)));
    }
    let pacer = spawn(s.win.start, s.rate, s.win.from_ns, s.win.until_ns, sinks);
    let mut lag = histogram();
    let mut lanes = Vec::with_capacity(writers.len());
    for w in writers {
        // A writer that panicked loses its connection's lag, not the run.
        lanes.push(w.await.ok().map(|(l, lane)| {
            let _ = lag.add(&l);
            lane
        }));
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
/// robin) until `until_ns` (ns since `start`). Returns how many tickets from
/// `from_ns` on were dropped because a connection's queue was full.
pub(crate) fn spawn(
    start: Instant,
    rate: f64,
    from_ns: u64,
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
                    && due >= from_ns
                {
                    dropped += 1;
                }
                k += 1;
            }
            dropped
        })
        .unwrap_or_else(|e| panic!("cannot start the pacer thread: {e}"))
}
