//! Latency summaries and process accounting from `/proc`.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency histogram in nanoseconds, 1 µs .. 60 s, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    // The bounds are constants that `new_with_bounds` accepts.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

/// Records a latency, clamping it into the histogram's range.
pub(crate) fn record(h: &mut Histogram<u64>, ns: u64) {
    let _ = h.record(ns.clamp(1_000, 60_000_000_000));
}

/// Percentiles in microseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) mean: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let us = |v: u64| (v as f64 / 1_000.0 * 10.0).round() / 10.0;
        Self {
            count: h.len(),
            mean: (h.mean() / 1_000.0 * 10.0).round() / 10.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// CPU time (user + system) of a process in clock ticks, from
/// `/proc/PID/stat`.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ... utime is field 14 overall, index 11 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Measures a process's CPU use over an interval, in percent of one core.
pub(crate) struct CpuMeter {
    pid: String,
    start_ticks: Option<u64>,
    start: Instant,
}

/// Clock ticks per second; Linux reports `/proc` times in USER_HZ = 100.
const TICKS_PER_SEC: f64 = 100.0;

impl CpuMeter {
    /// Starts measuring `pid` (`"self"` for this process).
    pub(crate) fn start(pid: impl Into<String>) -> Self {
        let pid = pid.into();
        Self {
            start_ticks: cpu_ticks(&pid),
            pid,
            start: Instant::now(),
        }
    }

    /// CPU percent of one core since [`start`](Self::start).
    pub(crate) fn percent(&self) -> Option<f64> {
        let end = cpu_ticks(&self.pid)?;
        let secs = self.start.elapsed().as_secs_f64();
        let used = (end - self.start_ticks?) as f64 / TICKS_PER_SEC;
        (secs > 0.0).then(|| (used / secs * 1000.0).round() / 10.0)
    }
}

/// A process's resident set size in KiB (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
