//! Health checks: a WebSocket ping every interval, and a close (4100)
//! after too many pings go unanswered. The events let an application watch.

use std::time::Duration;

use crate::connection::Connection;

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
