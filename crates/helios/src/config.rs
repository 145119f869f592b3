//! Server settings with their documented defaults.

use std::time::Duration;

use helios_protocol::ParseMode;

use crate::session::RecoveryConfig;

/// Settings of a Helios server. Every field has a default (see
/// `docs/configuration.md`); set them through [`Builder`](crate::Builder).
///
/// ```
/// let cfg = helios::Config::default();
/// assert_eq!(cfg.request_timeout, std::time::Duration::from_secs(5));
/// assert_eq!(cfg.max_message_bytes, 1024 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// How long a method may run before it is answered `REQUEST_TIMEOUT`
    /// and dropped; also the default wait of server→client requests.
    pub request_timeout: Duration,
    /// Largest WebSocket message accepted; a larger one closes the
    /// connection with 1009.
    pub max_message_bytes: usize,
    /// Method-name rules.
    pub parse_mode: ParseMode,
    /// Requests (and notification handlers) running at once per connection;
    /// at the cap the server stops reading that socket until one finishes.
    pub max_inflight_per_connection: usize,
    /// Frames queued for one connection's writer; a full queue is a slow
    /// consumer (see `docs/architecture.md`).
    pub outbound_queue_frames: usize,
    /// Bytes queued for one connection above which a room delivery closes
    /// it as a slow consumer (4008).
    pub outbound_queue_bytes: usize,
    /// Invalid messages tolerated per connection per minute before it is
    /// closed with 1008.
    pub max_invalid_per_minute: u32,
    /// How long a shutdown waits for in-flight requests before closing
    /// connections with 1001.
    pub shutdown_grace: Duration,
    /// Per-connection message rate limit; off unless set.
    pub rate_limit: Option<crate::ratelimit::RateLimit>,
    /// Session recovery (`starling:getToken`, `?recover=`); off unless set.
    pub recovery: Option<RecoveryConfig>,
    /// WebSocket ping interval of the health check; `None` turns it off.
    pub ping_interval: Option<Duration>,
    /// Pings left unanswered before the connection is closed (4100).
    pub max_missed_pongs: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            max_message_bytes: 1024 * 1024,
            parse_mode: ParseMode::Strict,
            max_inflight_per_connection: 256,
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            max_invalid_per_minute: 100,
            shutdown_grace: Duration::from_secs(10),
            rate_limit: None,
            recovery: None,
            ping_interval: Some(Duration::from_secs(30)),
            max_missed_pongs: 2,
        }
    }
}
