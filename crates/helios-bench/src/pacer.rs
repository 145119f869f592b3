//! Open-loop pacing: a dedicated OS thread hands out send tickets at a fixed
//! rate, each stamped with its *intended* send time.
//!
//! Tokio's timer ticks in milliseconds, too coarse for sub-millisecond
//! latencies; a thread sleeping with `nanosleep` wakes within tens of
//! microseconds. Latency is then measured from the intended time, so a
//! server (or generator) that falls behind is charged for the whole wait
//! (no coordinated omission); how late tickets went out is reported apart
//! as the schedule lag.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Queue of tickets per connection (intended send times, ns since start).
pub(crate) const TICKET_QUEUE: usize = 1 << 16;

/// Starts pacing `rate` tickets per second over all `sinks` (round robin)
/// from `from_ns` until `until_ns` (ns since `start`). Returns how many
/// tickets were dropped because a connection's queue was full.
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
