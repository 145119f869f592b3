//! Counters of a running server, rendered in the Prometheus text format.
//!
//! Everything is a relaxed atomic bumped with one call at the place the
//! event happens; gauges that the server already knows (connections, rooms,
//! subscriptions) are read when the page is rendered, not tracked twice.
//! `docs/operations.md` lists every series.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use helios_protocol::{CloseCode, ErrorCode};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Upper bounds (seconds) of the request-latency histogram buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Distinct error codes tracked; past that they count as `other` (a
/// handler may invent codes, and labels must stay bounded).
const MAX_ERROR_CODES: usize = 64;

/// The kind of a protocol message, for the in/out counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// A `request`.
    Request,
    /// A `response`.
    Response,
    /// A `notification` (room deliveries included).
    Notification,
    /// A frame that was not a valid message (inbound only).
    Invalid,
}

impl MessageKind {
    const ALL: [Self; 4] = [
        Self::Request,
        Self::Response,
        Self::Notification,
        Self::Invalid,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
            Self::Notification => "notification",
            Self::Invalid => "invalid",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Why a connection attempt was refused before it became a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// Authentication failed (HTTP 401).
    Unauthorized,
    /// Authenticated but refused, or a disallowed Origin (HTTP 403).
    Forbidden,
    /// Over the connection caps (HTTP 503).
    Capacity,
    /// The TLS or HTTP handshake did not finish in time, or failed.
    Handshake,
}

impl Rejection {
    const ALL: [Self; 4] = [
        Self::Unauthorized,
        Self::Forbidden,
        Self::Capacity,
        Self::Handshake,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Capacity => "capacity",
            Self::Handshake => "handshake",
        }
    }
}

const CLOSE_CODES: [CloseCode; 11] = [
    CloseCode::Normal,
    CloseCode::GoingAway,
    CloseCode::PolicyViolation,
    CloseCode::MessageTooBig,
    CloseCode::InternalError,
    CloseCode::Unauthorized,
    CloseCode::Forbidden,
    CloseCode::SlowConsumer,
    CloseCode::RateLimited,
    CloseCode::PingTimeout,
    CloseCode::SessionReplaced,
];

/// The counters of one server. Reach them with
/// [`Helios::metrics`](crate::Helios::metrics).
#[derive(Debug)]
pub struct Metrics {
    connections_opened: AtomicU64,
    rejected: [AtomicU64; 4],
    closed: [AtomicU64; CLOSE_CODES.len()],
    messages_in: [AtomicU64; 4],
    messages_out: [AtomicU64; 4],
    publications: AtomicU64,
    deliveries: AtomicU64,
    rate_limited: AtomicU64,
    backend_calls: AtomicU64,
    backend_errors: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    errors: Mutex<HashMap<String, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Metrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Self {
            connections_opened: AtomicU64::new(0),
            rejected: Default::default(),
            closed: Default::default(),
            messages_in: Default::default(),
            messages_out: Default::default(),
            publications: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            backend_calls: AtomicU64::new(0),
            backend_errors: AtomicU64::new(0),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_micros: AtomicU64::new(0),
            errors: Mutex::new(HashMap::new()),
        }
    }

    /// A WebSocket connection was established.
    pub fn connection_opened(&self) {
        bump(&self.connections_opened);
    }

    /// A connection ended with `code`.
    pub fn connection_closed(&self, code: CloseCode) {
        if let Some(i) = CLOSE_CODES.iter().position(|c| *c == code) {
            bump(&self.closed[i]);
        }
    }

    /// A connection attempt was refused.
    pub fn rejected(&self, why: Rejection) {
        bump(&self.rejected[why as usize]);
    }

    /// A message came in.
    pub fn message_in(&self, kind: MessageKind) {
        bump(&self.messages_in[kind.index()]);
    }

    /// `n` messages went out.
    pub fn messages_out(&self, kind: MessageKind, n: u64) {
        self.messages_out[kind.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// A publication was made to a room, delivered to `delivered` local
    /// members.
    pub fn publication(&self, delivered: usize) {
        bump(&self.publications);
        self.deliveries
            .fetch_add(delivered as u64, Ordering::Relaxed);
        self.messages_out(MessageKind::Notification, delivered as u64);
    }

    /// A message was refused by the rate limit.
    pub fn rate_limited(&self) {
        bump(&self.rate_limited);
    }

    /// A call went to the HTTP backend; `ok` is false when it failed.
    pub fn backend_call(&self, ok: bool) {
        bump(&self.backend_calls);
        if !ok {
            bump(&self.backend_errors);
        }
    }

    /// A request was answered after `elapsed`.
    pub fn observe_latency(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            bump(&self.latency_buckets[i]);
        }
        bump(&self.latency_count);
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// An error response was sent with `code`.
    pub fn error(&self, code: &ErrorCode) {
        let mut errors = self.errors.lock();
        let key = if errors.len() < MAX_ERROR_CODES || errors.contains_key(code.as_str()) {
            code.as_str()
        } else {
            "other"
        };
        *errors.entry(key.to_owned()).or_insert(0) += 1;
    }

    /// Total messages in, all kinds.
    pub fn total_in(&self) -> u64 {
        self.messages_in.iter().map(get).sum()
    }

    /// Total messages out, all kinds.
    pub fn total_out(&self) -> u64 {
        self.messages_out.iter().map(get).sum()
    }

    /// Connections closed as slow consumers (4008).
    pub fn slow_consumer_drops(&self) -> u64 {
        CLOSE_CODES
            .iter()
            .position(|c| *c == CloseCode::SlowConsumer)
            .map_or(0, |i| get(&self.closed[i]))
    }

    /// The counters as JSON (for dashboards such as the web console).
    pub fn snapshot(&self) -> Value {
        let by_kind = |arr: &[AtomicU64; 4]| {
            let mut m = serde_json::Map::new();
            for k in MessageKind::ALL {
                m.insert(k.as_str().to_owned(), get(&arr[k.index()]).into());
            }
            Value::Object(m)
        };
        json!({
            "connectionsOpened": get(&self.connections_opened),
            "messagesIn": by_kind(&self.messages_in),
            "messagesOut": by_kind(&self.messages_out),
            "totalIn": self.total_in(),
            "totalOut": self.total_out(),
            "publications": get(&self.publications),
            "deliveries": get(&self.deliveries),
            "rateLimited": get(&self.rate_limited),
            "slowConsumerDrops": self.slow_consumer_drops(),
            "errors": self.errors.lock().clone(),
        })
    }

    /// The Prometheus text exposition, with the live gauges given.
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        gauge(
            &mut out,
            "helios_connections",
            "Open WebSocket connections.",
            gauges.connections,
        );
        gauge(
            &mut out,
            "helios_rooms",
            "Rooms with at least one member on this node.",
            gauges.rooms,
        );
        gauge(
            &mut out,
            "helios_subscriptions",
            "Room memberships on this node.",
            gauges.subscriptions,
        );
        counter(
            &mut out,
            "helios_connections_opened_total",
            "WebSocket connections established.",
            get(&self.connections_opened),
        );

        header(
            &mut out,
            "helios_connections_rejected_total",
            "counter",
            "Connection attempts refused, by reason.",
        );
        for r in Rejection::ALL {
            let _ = writeln!(
                out,
                "helios_connections_rejected_total{{reason=\"{}\"}} {}",
                r.as_str(),
                get(&self.rejected[r as usize])
            );
        }

        header(
            &mut out,
            "helios_connections_closed_total",
            "counter",
            "Connections ended, by close code.",
        );
        for (i, c) in CLOSE_CODES.iter().enumerate() {
            let _ = writeln!(
                out,
                "helios_connections_closed_total{{code=\"{}\"}} {}",
                c.code(),
                get(&self.closed[i])
            );
        }
        counter(
            &mut out,
            "helios_slow_consumer_drops_total",
            "Connections closed because they could not keep up (4008).",
            self.slow_consumer_drops(),
        );

        for (name, help, arr) in [
            (
                "helios_messages_in_total",
                "Messages received, by type.",
                &self.messages_in,
            ),
            (
                "helios_messages_out_total",
                "Messages sent, by type (room deliveries are notifications).",
                &self.messages_out,
            ),
        ] {
            header(&mut out, name, "counter", help);
            for k in MessageKind::ALL {
                if name == "helios_messages_out_total" && k == MessageKind::Invalid {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "{name}{{type=\"{}\"}} {}",
                    k.as_str(),
                    get(&arr[k.index()])
                );
            }
        }

        counter(
            &mut out,
            "helios_publications_total",
            "Publications to rooms.",
            get(&self.publications),
        );
        counter(
            &mut out,
            "helios_deliveries_total",
            "Room deliveries queued to local members.",
            get(&self.deliveries),
        );
        counter(
            &mut out,
            "helios_rate_limited_total",
            "Messages refused by the per-connection rate limit.",
            get(&self.rate_limited),
        );
        counter(
            &mut out,
            "helios_backend_calls_total",
            "Calls to the HTTP backend.",
            get(&self.backend_calls),
        );
        counter(
            &mut out,
            "helios_backend_errors_total",
            "Calls to the HTTP backend that failed (timeout, refused, 5xx, bad answer).",
            get(&self.backend_errors),
        );

        header(
            &mut out,
            "helios_errors_total",
            "counter",
            "Error responses sent, by code.",
        );
        let mut errors: Vec<(String, u64)> = self
            .errors
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        errors.sort();
        for (code, n) in errors {
            let _ = writeln!(
                out,
                "helios_errors_total{{code=\"{}\"}} {n}",
                escape_label(&code)
            );
        }

        let name = "helios_request_duration_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Time from a request's arrival to its response.",
        );
        let mut cumulative = 0;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += get(&self.latency_buckets[i]);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = get(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = get(&self.latency_sum_micros) as f64 / 1_000_000.0;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        out
    }
}

/// Values read from the server at render time.
pub(crate) struct Gauges {
    pub(crate) connections: usize,
    pub(crate) rooms: usize,
    pub(crate) subscriptions: usize,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: usize) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {v}");
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.message_in(MessageKind::Request);
        m.messages_out(MessageKind::Notification, 3);
        m.observe_latency(Duration::from_millis(3));
        m.error(&ErrorCode::METHOD_NOT_FOUND);
        m.connection_closed(CloseCode::SlowConsumer);
        let text = m.render(&Gauges {
            connections: 2,
            rooms: 1,
            subscriptions: 4,
        });
        assert!(text.contains("helios_connections 2\n"), "{text}");
        assert!(text.contains("helios_messages_in_total{type=\"request\"} 1\n"));
        assert!(text.contains("helios_messages_out_total{type=\"notification\"} 3\n"));
        assert!(text.contains("helios_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("helios_request_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("helios_request_duration_seconds_count 1\n"));
        assert!(text.contains("helios_errors_total{code=\"METHOD_NOT_FOUND\"} 1\n"));
        assert!(text.contains("helios_slow_consumer_drops_total 1\n"));
        assert_eq!(m.snapshot()["slowConsumerDrops"], 1);
    }
}
