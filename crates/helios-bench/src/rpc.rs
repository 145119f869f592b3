//! `helios-bench rpc`: request/response throughput and latency.
//!
//! Closed loop (default): every connection keeps `depth` requests in flight
//! and sends a new one as each answer arrives; latency is from the actual
//! send. Open loop (`--rate`): requests leave on a fixed schedule whatever
//! the server does, and latency is from the intended send time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::SplitStream;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_websockets::Message;

use crate::Common;
use crate::client::{self, BoxError, Next, Target, Ws, loopback_sources, next_frame};
use crate::pacer::{self, Lane, LaneState, Pacing, Schedule};
use crate::proto::{Incoming, Method, Proto, echo_payload};
use crate::stats::{CpuMeter, Latency, histogram, record};

/// Options of `rpc`.
#[derive(Debug, clap::Args)]
pub(crate) struct RpcArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    pub(crate) connections: usize,
    /// Requests in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    pub(crate) depth: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) duration_secs: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup_secs: f64,
    /// Open loop: total requests per second on a fixed schedule.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Open loop: how the schedule is kept (`spin` writes on time from one
    /// busy task; `sleep` uses a sleeping pacer thread, see `pacer.rs`).
    #[arg(long, value_enum, default_value = "spin")]
    pub(crate) pacing: Pacing,
    /// Approximate size of the echo payload in bytes.
    #[arg(long, default_value_t = 64)]
    pub(crate) payload_bytes: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct RpcReport {
    mode: &'static str,
    proto: Proto,
    url: String,
    connections: usize,
    depth: Option<usize>,
    rate: Option<f64>,
    /// Open loop: how the schedule was kept.
    pacing: Option<Pacing>,
    duration_secs: f64,
    payload_bytes: usize,
    /// Successful responses to requests sent inside the measured window.
    requests: u64,
    /// Failed responses (`success:false` / error acks) in the window.
    errors: u64,
    /// Requests of the window still unanswered when the run ended.
    unanswered: u64,
    /// Open loop: requests of the window never written (a full ticket
    /// queue with `--pacing sleep`, a failed connection, or a socket still
    /// full when the run gave up). `requests + errors + unanswered +
    /// generator_dropped` is the window's schedule.
    generator_dropped: u64,
    throughput_rps: f64,
    latency_us: Latency,
    /// Open loop: how late requests left versus their schedule.
    schedule_lag_us: Option<Latency>,
    client_cpu_pct: Option<f64>,
    server_cpu_pct: Option<f64>,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    sent: u64,
}

/// The run's clock: ns since `start`; requests stamped inside
/// `from_ns..until_ns` are measured.
pub(crate) struct Window {
    pub(crate) start: Instant,
    pub(crate) from_ns: u64,
    pub(crate) until_ns: u64,
}

impl Window {
    pub(crate) fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    pub(crate) fn contains(&self, t: u64) -> bool {
        (self.from_ns..self.until_ns).contains(&t)
    }
}

/// How long to wait for the last answers after the window closes.
const DRAIN: Duration = Duration::from_secs(3);

pub(crate) async fn run(args: RpcArgs) -> Result<RpcReport, BoxError> {
    let target = Target::new(&args.common.url, args.common.proto)?;
    let sources = loopback_sources(args.common.source_addrs);
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        conns.push(target.connect(Some(sources[i % sources.len()])).await?);
    }
    let payload: Arc<str> = echo_payload(args.payload_bytes).into();
    let win = Arc::new(Window {
        start: Instant::now(),
        from_ns: (args.warmup_secs * 1e9).round() as u64,
        until_ns: ((args.warmup_secs + args.duration_secs) * 1e9).round() as u64,
    });
    // CPU is sampled over the measured window only.
    let cpu_probe = {
        let win = win.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_nanos(win.from_ns)).await;
            let c = CpuMeter::start("self");
            let s = args
                .common
                .server_pid
                .map(|p| CpuMeter::start(p.to_string()));
            tokio::time::sleep(Duration::from_nanos(win.until_ns - win.from_ns)).await;
            (c.percent(), s.and_then(|s| s.percent()))
        })
    };

    let mut hist = histogram();
    let mut lag = histogram();
    let mut tally = Tally::default();
    let mut dropped = 0;
    match args.rate {
        None => {
            let mut tasks = Vec::new();
            for (i, ws) in conns.into_iter().enumerate() {
                let (win, payload) = (win.clone(), payload.clone());
                let (proto, depth) = (target.proto(), args.depth.max(1));
                tasks.push(tokio::spawn(closed_loop(
                    ws, i as u32, proto, depth, win, payload,
                )));
            }
            for t in tasks {
                let (h, t) = t.await?;
                hist.add(&h)?;
                tally.ok += t.ok;
                tally.errors += t.errors;
                tally.sent += t.sent;
            }
        }
        Some(rate) => {
            let done = Arc::new(AtomicBool::new(false));
            let mut lanes = Vec::with_capacity(conns.len());
            let mut readers = Vec::with_capacity(conns.len());
            let mut states = Vec::with_capacity(conns.len());
            for (i, ws) in conns.into_iter().enumerate() {
                let (sink, stream) = ws.split();
                let state = Arc::new(LaneState::default());
                readers.push(tokio::spawn(read_answers(
                    stream,
                    target.proto(),
                    state.clone(),
                    done.clone(),
                    win.clone(),
                )));
                lanes.push(Lane::new(i as u32, sink, state.clone()));
                states.push(state);
            }
            let schedule = Schedule {
                proto: target.proto(),
                rate,
                win: win.clone(),
                payload: payload.clone(),
            };
            let give_up = win.until_ns + DRAIN.as_nanos() as u64;
            let pacing = tokio::spawn(pacer::run(args.pacing, lanes, schedule, give_up));
            let sent = pacing.await?;
            done.store(true, Ordering::Release);
            lag.add(&sent.lag)?;
            dropped = sent.unsent;
            // Counted once the sender is done: a reader can end first.
            tally.sent = states.iter().map(|s| s.sent.load(Ordering::Acquire)).sum();
            let mut closing = Vec::with_capacity(readers.len());
            for (reader, lane) in readers.into_iter().zip(sent.lanes) {
                let (stream, h, t) = reader.await?;
                hist.add(&h)?;
                tally.ok += t.ok;
                tally.errors += t.errors;
                if let Some(ws) = lane.and_then(|lane| stream.reunite(lane.sink).ok()) {
                    closing.push(client::close(ws));
                }
            }
            futures_util::future::join_all(closing).await;
        }
    }
    let (client_cpu_pct, server_cpu_pct) = cpu_probe.await?;
    Ok(RpcReport {
        mode: if args.rate.is_some() {
            "rpc-open-loop"
        } else {
            "rpc-closed-loop"
        },
        proto: target.proto(),
        url: args.common.url,
        connections: args.connections,
        depth: args.rate.is_none().then_some(args.depth),
        rate: args.rate,
        pacing: args.rate.map(|_| args.pacing),
        duration_secs: args.duration_secs,
        payload_bytes: payload.len(),
        requests: tally.ok,
        errors: tally.errors,
        unanswered: tally.sent.saturating_sub(tally.ok + tally.errors),
        generator_dropped: dropped,
        throughput_rps: (tally.ok as f64 / args.duration_secs).round(),
        latency_us: Latency::of(&hist),
        schedule_lag_us: args.rate.map(|_| Latency::of(&lag)),
        client_cpu_pct,
        server_cpu_pct,
    })
}

/// Ids must be unique per connection: strictly increasing send times.
fn next_id(last: &mut u64, now: u64) -> u64 {
    *last = now.max(*last + 1);
    *last
}

async fn closed_loop(
    mut ws: Ws,
    conn: u32,
    proto: Proto,
    depth: usize,
    win: Arc<Window>,
    payload: Arc<str>,
) -> (Histogram<u64>, Tally) {
    let mut hist = histogram();
    let mut tally = Tally::default();
    let mut buf = String::new();
    let mut last = 0;
    let mut outstanding = 0usize;
    let hard_end = win.start + Duration::from_nanos(win.until_ns) + DRAIN;
    // Answers already buffered are all handled before the requests they
    // free are queued, and those go out in one write. (tokio-websockets
    // flushes queued frames whenever the stream is polled, so queueing a
    // request between two reads would cost one write syscall per request.)
    let mut due = depth;
    loop {
        for _ in 0..std::mem::take(&mut due) {
            let id = next_id(&mut last, win.now());
            proto.request(&mut buf, Method::Echo, id, conn, &payload);
            let fed = tokio::time::timeout_at(hard_end.into(), ws.feed(Message::text(buf.clone())));
            if !matches!(fed.await, Ok(Ok(()))) {
                return (hist, tally);
            }
            outstanding += 1;
            if win.contains(id) {
                tally.sent += 1;
            }
        }
        let flushed = tokio::time::timeout_at(hard_end.into(), ws.flush()).await;
        if !matches!(flushed, Ok(Ok(()))) || outstanding == 0 {
            break;
        }
        let mut next = match tokio::time::timeout_at(hard_end.into(), ws.next()).await {
            Ok(Some(Ok(msg))) => Some(msg),
            _ => break,
        };
        while let Some(msg) = next.take() {
            if let Some(text) = msg.as_text() {
                match proto.scan(text) {
                    Incoming::Response { id_ns, ok } => {
                        outstanding -= 1;
                        let now = win.now();
                        if win.contains(id_ns) {
                            if ok {
                                tally.ok += 1;
                                record(&mut hist, now.saturating_sub(id_ns));
                            } else {
                                tally.errors += 1;
                            }
                        }
                        if now < win.until_ns {
                            due += 1;
                        }
                    }
                    Incoming::Ping => {
                        let pong = ws.feed(Message::text("3".to_owned()));
                        if !matches!(
                            tokio::time::timeout_at(hard_end.into(), pong).await,
                            Ok(Ok(()))
                        ) {
                            return (hist, tally);
                        }
                    }
                    _ => {}
                }
            }
            next = match ws.next().now_or_never() {
                Some(Some(Ok(msg))) => Some(msg),
                Some(_) => return (hist, tally),
                None => None,
            };
        }
    }
    client::close(ws).await;
    (hist, tally)
}

/// An open-loop connection's receive side: answers until the sender is
/// done and every request it wrote in the window is answered (or the run's
/// hard end). A server's ping is passed to the sender, which owns the
/// socket's send side.
async fn read_answers(
    mut stream: SplitStream<Ws>,
    proto: Proto,
    state: Arc<LaneState>,
    done: Arc<AtomicBool>,
    win: Arc<Window>,
) -> (SplitStream<Ws>, Histogram<u64>, Tally) {
    let mut hist = histogram();
    let mut tally = Tally::default();
    let hard_end = win.start + Duration::from_nanos(win.until_ns) + DRAIN;
    loop {
        if done.load(Ordering::Acquire)
            && tally.ok + tally.errors >= state.sent.load(Ordering::Acquire)
        {
            break;
        }
        // The short poll notices the sender finishing.
        let msg = match next_frame(&mut stream, Duration::from_millis(50), hard_end).await {
            Next::Frame(msg) => msg,
            Next::Quiet => continue,
            Next::Done => break,
        };
        let Some(text) = msg.as_text() else { continue };
        match proto.scan(text) {
            Incoming::Response { id_ns, ok } if win.contains(id_ns) => {
                if ok {
                    tally.ok += 1;
                    record(&mut hist, win.now().saturating_sub(id_ns));
                } else {
                    tally.errors += 1;
                }
            }
            Incoming::Ping => state.pong_due.store(true, Ordering::Relaxed),
            _ => {}
        }
    }
    (stream, hist, tally)
}
