//! Health checks: a WebSocket ping every interval, and a close (4100)
//! after too many pings go unanswered. The events let an application watch.
//!
//! One [`HealthClock`] per server ticks every connection, instead of a
//! timer per connection: a timer is ~140 bytes a connection would carry
//! even while idle. The clock walks one shard of the connection registry
//! per step, so the connections' pings are spread over the interval rather
//! than sent all at once; each connection still gets one tick per interval.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::connection::Connection;
use crate::helios::{Helios, WeakHelios};
use crate::registry::SHARDS;

/// How often a connection without health checks is ticked: its socket
/// sleeps after a tick period with no message.
pub(crate) const IDLE_PERIOD: Duration = Duration::from_secs(30);

/// The server's one timer for every connection's health check.
#[derive(Default)]
pub(crate) struct HealthClock {
    task: Mutex<Option<JoinHandle<()>>>,
}

impl HealthClock {
    /// Starts the clock on the current runtime, unless it runs (a
    /// connection calls it as it opens; a clock whose runtime ended is
    /// started again).
    pub(crate) fn start(&self, helios: &Helios) {
        let mut task = self.task.lock();
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let period = helios.config().ping_interval.unwrap_or(IDLE_PERIOD);
        *task = Some(tokio::spawn(run_clock(helios.downgrade(), period)));
    }
}

impl Drop for HealthClock {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().take() {
            task.abort();
        }
    }
}

/// Ticks one registry shard per `period / SHARDS`, until the server is gone.
async fn run_clock(helios: WeakHelios, period: Duration) {
    let step = (period / SHARDS as u32).max(Duration::from_millis(1));
    let mut steps = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
    steps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for shard in (0..SHARDS).cycle() {
        steps.tick().await;
        let Some(helios) = helios.upgrade() else {
            return;
        };
        helios.registry().for_each_in_shard(shard, Connection::tick);
    }
}

/// What the health check saw on a connection.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    /// The connection.
    pub connection: Connection,
    /// What happened.
    pub kind: HealthEventKind,
}

/// The kinds of [`HealthEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthEventKind {
    /// `ping-missed`: a ping went unanswered for an interval; `missed`
    /// counts the unanswered pings so far.
    PingMissed {
        /// Unanswered pings.
        missed: u32,
    },
    /// `ping-timeout`: too many pings unanswered; the connection is closed
    /// with 4100.
    PingTimeout,
    /// `pong-received`: the round trip of the last ping.
    PongReceived {
        /// Time from ping to pong.
        latency: Duration,
    },
}

/// The payload of our pings: the send time, so a pong gives the latency.
pub(crate) fn ping_payload() -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&helios_protocol::now_ms().to_be_bytes())
}

/// The latency a pong's payload tells, when it is one of our pings.
pub(crate) fn pong_latency(payload: &[u8]) -> Option<Duration> {
    let sent = u64::from_be_bytes(payload.try_into().ok()?);
    Some(Duration::from_millis(
        helios_protocol::now_ms().saturating_sub(sent),
    ))
}
