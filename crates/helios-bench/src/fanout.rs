//! `helios-bench fanout`: one publisher, N subscribers of one room.
//!
//! The publisher publishes `{"hb":[seq, t]}` on a fixed schedule, `t` being
//! the intended publish time (ns since the run's start, shared by every
//! connection of this process). Each subscriber records the delivery latency
//! from `t` and which sequence numbers arrived, so missing, duplicated and
//! out-of-order deliveries are counted exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_websockets::Message;

use crate::client::{self, BoxError, Next, Target, Ws, loopback_sources, next_frame};
use crate::proto::{Incoming, Method, Proto, publish_payload};
use crate::stats::{CpuMeter, Latency, histogram, record};
use crate::{Common, pacer};

/// Options of `fanout`.
#[derive(Debug, clap::Args)]
pub(crate) struct FanoutArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    pub(crate) subscribers: usize,
    /// Publishes per second.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) duration_secs: f64,
    /// The room.
    #[arg(long, default_value = "bench:room")]
    pub(crate) topic: String,
    /// Padding added to each published message, in bytes.
    #[arg(long, default_value_t = 32)]
    pub(crate) payload_bytes: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct FanoutReport {
    mode: &'static str,
    proto: Proto,
    url: String,
    subscribers: usize,
    rate: f64,
    duration_secs: f64,
    topic: String,
    published: u64,
    publish_acks: u64,
    publish_errors: u64,
    /// Sum of `delivered` in the publish answers (what the server says).
    delivered_reported: u64,
    /// `published × subscribers`.
    expected_deliveries: u64,
    deliveries: u64,
    /// Deliveries over the time from the first publish to the last delivery
    /// (at least the publishing time): a server that falls behind and
    /// catches up in the drain period gets no credit for the drain.
    deliveries_per_sec: f64,
    /// Seconds from the first publish to the last delivery.
    last_delivery_secs: f64,
    missing: u64,
    duplicates: u64,
    out_of_order: u64,
    latency_us: Latency,
    publish_ack_latency_us: Latency,
    client_cpu_pct: Option<f64>,
    server_cpu_pct: Option<f64>,
}

/// How long subscribers wait for stragglers after the last publish.
const DRAIN: Duration = Duration::from_secs(3);

pub(crate) async fn run(args: FanoutArgs) -> Result<FanoutReport, BoxError> {
    let target = Target::new(&args.common.url, args.common.proto)?;
    let proto = target.proto();
    let sources = loopback_sources(args.common.source_addrs);
    let setup = Instant::now();
    let mut subs = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let mut ws = target.connect(Some(sources[i % sources.len()])).await?;
        subscribe(&mut ws, proto, i as u32, &args.topic, setup).await?;
        subs.push(ws);
    }
    let publisher = target.connect(Some(sources[0])).await?;

    let start = Instant::now();
    let until_ns = (args.duration_secs * 1e9) as u64;
    let published = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let hard_end = start + Duration::from_nanos(until_ns) + DRAIN;

    let mut tasks = Vec::new();
    for ws in subs {
        let (published, done) = (published.clone(), done.clone());
        tasks.push(tokio::spawn(subscriber(
            ws, proto, start, hard_end, published, done,
        )));
    }
    let client_cpu = CpuMeter::start("self");
    let server_cpu = args
        .common
        .server_pid
        .map(|p| CpuMeter::start(p.to_string()));

    let (tx, rx) = mpsc::channel(pacer::TICKET_QUEUE);
    let pacer = pacer::spawn(start, args.rate, 0, until_ns, vec![tx]);
    let pad: String = "x".repeat(args.payload_bytes);
    let pub_task = tokio::spawn(publish_loop(
        publisher,
        proto,
        rx,
        start,
        hard_end,
        args.topic.clone(),
        pad,
        published.clone(),
    ));
    let (acks, errors, delivered_reported, ack_hist) = pub_task.await??;
    done.store(true, Ordering::Release);
    let client_cpu_pct = client_cpu.percent();
    let server_cpu_pct = server_cpu.and_then(|s| s.percent());
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;

    let total = published.load(Ordering::Acquire);
    let mut hist = histogram();
    let (mut deliveries, mut missing, mut dups, mut ooo) = (0, 0, 0, 0);
    let mut last_ns = 0;
    for t in tasks {
        let s = t.await?;
        hist.add(&s.hist)?;
        deliveries += s.unique;
        missing += total.saturating_sub(s.unique);
        dups += s.duplicates;
        ooo += s.out_of_order;
        last_ns = last_ns.max(s.last_ns);
    }
    let span = (last_ns as f64 / 1e9).max(args.duration_secs);
    Ok(FanoutReport {
        mode: "fanout",
        proto,
        url: args.common.url,
        subscribers: args.subscribers,
        rate: args.rate,
        duration_secs: args.duration_secs,
        topic: args.topic,
        published: total,
        publish_acks: acks,
        publish_errors: errors,
        delivered_reported,
        expected_deliveries: total * args.subscribers as u64,
        deliveries,
        deliveries_per_sec: (deliveries as f64 / span).round(),
        last_delivery_secs: (last_ns as f64 / 1e7).round() / 100.0,
        missing,
        duplicates: dups,
        out_of_order: ooo,
        latency_us: Latency::of(&hist),
        publish_ack_latency_us: Latency::of(&ack_hist),
        client_cpu_pct,
        server_cpu_pct,
    })
}

/// Subscribes and waits for the answer (other frames, like the welcome,
/// are skipped).
async fn subscribe(
    ws: &mut Ws,
    proto: Proto,
    conn: u32,
    topic: &str,
    clock: Instant,
) -> Result<(), BoxError> {
    let mut buf = String::new();
    let id = clock.elapsed().as_nanos() as u64;
    let payload = serde_json::json!({ "topic": topic }).to_string();
    proto.request(&mut buf, Method::Subscribe, id, conn, &payload);
    ws.send(Message::text(buf)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no answer to the subscribe request")?
            .ok_or("connection closed while subscribing")??;
        let Some(text) = msg.as_text() else { continue };
        match proto.scan(text) {
            Incoming::Response { id_ns, ok } if id_ns == id => {
                return if ok {
                    Ok(())
                } else {
                    Err(format!("subscribe to {topic:?} refused: {text}").into())
                };
            }
            Incoming::Ping => ws.send(Message::text("3".to_owned())).await?,
            _ => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn publish_loop(
    ws: Ws,
    proto: Proto,
    mut tickets: mpsc::Receiver<u64>,
    start: Instant,
    hard_end: Instant,
    topic: String,
    pad: String,
    published: Arc<AtomicU64>,
) -> Result<(u64, u64, u64, Histogram<u64>), BoxError> {
    let (mut sink, mut stream) = ws.split();
    let writer_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (published, writer_done) = (published.clone(), writer_done.clone());
        tokio::spawn(async move {
            let (mut frame, mut payload) = (String::new(), String::new());
            let mut batch = Vec::with_capacity(64);
            let mut seq = 0u64;
            let mut last = 0u64;
            while tickets.recv_many(&mut batch, 64).await > 0 {
                for due in batch.drain(..) {
                    publish_payload(&mut payload, &topic, seq, due, &pad);
                    last = due.max(last + 1);
                    proto.request(&mut frame, Method::Publish, last, 0, &payload);
                    let fed = sink.feed(Message::text(frame.clone()));
                    // A server that stops reading does not hold the run.
                    if !matches!(
                        tokio::time::timeout_at(hard_end.into(), fed).await,
                        Ok(Ok(()))
                    ) {
                        writer_done.store(true, Ordering::Release);
                        return sink;
                    }
                    seq += 1;
                    published.store(seq, Ordering::Release);
                }
                let flushed = tokio::time::timeout_at(hard_end.into(), sink.flush()).await;
                if !matches!(flushed, Ok(Ok(()))) {
                    break;
                }
            }
            writer_done.store(true, Ordering::Release);
            sink
        })
    };
    let (mut acks, mut errors, mut delivered) = (0u64, 0u64, 0u64);
    let mut hist = histogram();
    loop {
        if writer_done.load(Ordering::Acquire) && acks + errors >= published.load(Ordering::Acquire)
        {
            break;
        }
        let wait = tokio::time::timeout(Duration::from_millis(50), stream.next());
        let msg = match tokio::time::timeout_at(hard_end.into(), wait).await {
            Err(_) => break,
            Ok(Err(_)) => continue,
            Ok(Ok(Some(Ok(msg)))) => msg,
            Ok(Ok(_)) => break,
        };
        let Some(text) = msg.as_text() else { continue };
        if let Incoming::Response { id_ns, ok } = proto.scan(text) {
            if ok {
                acks += 1;
                record(
                    &mut hist,
                    (start.elapsed().as_nanos() as u64).saturating_sub(id_ns),
                );
                delivered += scan_delivered(text).unwrap_or(0);
            } else {
                errors += 1;
            }
        }
    }
    if let Ok(sink) = writer.await
        && let Ok(ws) = stream.reunite(sink)
    {
        client::close(ws).await;
    }
    Ok((acks, errors, delivered, hist))
}

fn scan_delivered(text: &str) -> Option<u64> {
    let at = text.find("\"delivered\":")? + "\"delivered\":".len();
    let rest = &text[at..];
    let end = rest
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

struct SubStats {
    hist: Histogram<u64>,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    last_ns: u64,
}

async fn subscriber(
    mut ws: Ws,
    proto: Proto,
    start: Instant,
    hard_end: Instant,
    published: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) -> SubStats {
    let mut seen: Vec<u64> = Vec::new();
    let mut s = SubStats {
        hist: histogram(),
        unique: 0,
        duplicates: 0,
        out_of_order: 0,
        last_ns: 0,
    };
    let mut max_seq: Option<u64> = None;
    loop {
        if done.load(Ordering::Acquire) && s.unique >= published.load(Ordering::Acquire) {
            break;
        }
        let msg = match next_frame(&mut ws, Duration::from_millis(100), hard_end).await {
            Next::Frame(msg) => msg,
            Next::Quiet => continue,
            Next::Done => break,
        };
        let Some(text) = msg.as_text() else { continue };
        match proto.scan(text) {
            Incoming::Delivery { seq, t_ns } => {
                let now = start.elapsed().as_nanos() as u64;
                let (word, bit) = ((seq / 64) as usize, seq % 64);
                if seen.len() <= word {
                    seen.resize(word + 1, 0);
                }
                if seen[word] & (1 << bit) != 0 {
                    s.duplicates += 1;
                    continue;
                }
                seen[word] |= 1 << bit;
                s.unique += 1;
                if max_seq.is_some_and(|m| seq < m) {
                    s.out_of_order += 1;
                }
                max_seq = Some(max_seq.map_or(seq, |m| m.max(seq)));
                s.last_ns = now;
                record(&mut s.hist, now.saturating_sub(t_ns));
            }
            Incoming::Ping => {
                let pong = ws.send(Message::text("3".to_owned()));
                let _ = tokio::time::timeout_at(hard_end.into(), pong).await;
            }
            _ => {}
        }
    }
    client::close(ws).await;
    s
}
