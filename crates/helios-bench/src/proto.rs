//! The two wire dialects the load generator speaks, as cheap text builders
//! and scanners.
//!
//! The generator must never be the bottleneck, so it does not build
//! `serde_json::Value`s or parse whole frames on the hot path: requests are
//! formatted from a template and responses are scanned for the one field that
//! matters (the correlation id). Every correlation id carries the request's
//! intended send time, so a reader needs no shared state with its writer.

use std::fmt::Write as _;

use clap::ValueEnum;
use helios_protocol::{PROTOCOL, VERSION, now_ms};

/// Which protocol a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Proto {
    /// Helios-Starling JSON text frames (Helios and the `bench/` peers).
    Helios,
    /// Socket.IO v4 (Engine.IO 4 over a raw WebSocket) with acks.
    Socketio,
}

/// What a received frame turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// An answer to one of our requests: its id and whether it succeeded.
    Response { id_ns: u64, ok: bool },
    /// A room delivery of a benchmark message `{"hb":[seq,t]}`.
    Delivery { seq: u64, t_ns: u64 },
    /// Engine.IO ping: must be answered with a pong (`3`).
    Ping,
    /// Anything else (welcome, other notifications, Socket.IO connect ack).
    Other,
}

impl Proto {
    /// Appends the frame for a request to `out`. `id_ns` is the intended
    /// send time in ns since the run's start (unique per connection); `conn`
    /// is the connection index, to keep Helios request ids unique.
    pub(crate) fn request(
        self,
        out: &mut String,
        method: Method,
        id_ns: u64,
        conn: u32,
        payload: &str,
    ) {
        out.clear();
        match self {
            Self::Helios => {
                // A valid UUID v4 whose hex digits carry the time:
                // tttttttt-tttt-4ttt-8ccc-000000000000 (60 bits of time,
                // 12 bits of connection index).
                let t = id_ns & 0x0fff_ffff_ffff_ffff;
                let _ = write!(
                    out,
                    "{{\"protocol\":\"{PROTOCOL}\",\"version\":\"{VERSION}\",\"timestamp\":{},\
                     \"type\":\"request\",\"requestId\":\"{:08x}-{:04x}-4{:03x}-8{:03x}-000000000000\",\
                     \"method\":\"{}\",\"payload\":{payload}}}",
                    now_ms(),
                    t >> 28,
                    (t >> 12) & 0xffff,
                    t & 0xfff,
                    conn & 0xfff,
                    method.helios_name(),
                );
            }
            Self::Socketio => {
                let _ = write!(out, "42{id_ns}[\"{}\",{payload}]", method.socketio_event());
            }
        }
    }

    /// Classifies one received text frame.
    pub(crate) fn scan(self, frame: &str) -> Incoming {
        match self {
            Self::Helios => scan_helios(frame),
            Self::Socketio => scan_socketio(frame),
        }
    }
}

/// The methods the generator calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Echo,
    Subscribe,
    Publish,
}

impl Method {
    const fn helios_name(self) -> &'static str {
        match self {
            Self::Echo => "system:echo",
            Self::Subscribe => "helios:subscribe",
            Self::Publish => "helios:publish",
        }
    }

    const fn socketio_event(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
        }
    }
}

fn find(hay: &str, needle: &str) -> Option<usize> {
    hay.find(needle).map(|i| i + needle.len())
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// Leading decimal digits of `s`.
fn leading_u64(s: &str) -> Option<(u64, usize)> {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    s[..end].parse().ok().map(|v| (v, end))
}

fn scan_hb(frame: &str) -> Option<(u64, u64)> {
    let at = find(frame, "\"hb\":[")?;
    let rest = &frame[at..];
    let (seq, n) = leading_u64(rest)?;
    let rest = rest[n..].strip_prefix(',')?;
    let (t, _) = leading_u64(rest)?;
    Some((seq, t))
}

fn scan_helios(frame: &str) -> Incoming {
    if let Some(at) = find(frame, "\"requestId\":\"")
        && frame.contains("\"type\":\"response\"")
    {
        let id = frame.get(at..at + 36).unwrap_or("");
        let t = (|| {
            let hi = parse_hex(id.get(0..8)?)?;
            let mid = parse_hex(id.get(9..13)?)?;
            let lo = parse_hex(id.get(15..18)?)?;
            Some((hi << 28) | (mid << 12) | lo)
        })();
        let ok = frame.contains("\"success\":true");
        return match t {
            Some(id_ns) => Incoming::Response { id_ns, ok },
            None => Incoming::Other,
        };
    }
    if frame.contains("\"type\":\"notification\"")
        && let Some((seq, t_ns)) = scan_hb(frame)
    {
        return Incoming::Delivery { seq, t_ns };
    }
    Incoming::Other
}

fn scan_socketio(frame: &str) -> Incoming {
    if frame == "2" {
        return Incoming::Ping;
    }
    if let Some(rest) = frame.strip_prefix("43")
        && let Some((id_ns, _)) = leading_u64(rest)
    {
        // A failed call acks `[{"error":...}]` in the peer servers.
        let ok = !rest.contains("\"error\"");
        return Incoming::Response { id_ns, ok };
    }
    if frame.starts_with("42")
        && let Some((seq, t_ns)) = scan_hb(frame)
    {
        return Incoming::Delivery { seq, t_ns };
    }
    Incoming::Other
}

/// A JSON payload of about `bytes` bytes: `{"p":"xxx…"}`.
pub(crate) fn echo_payload(bytes: usize) -> String {
    let pad = bytes.saturating_sub(8).max(1);
    format!("{{\"p\":\"{}\"}}", "x".repeat(pad))
}

/// The publish payload carrying a sequence number and a send time.
pub(crate) fn publish_payload(out: &mut String, topic: &str, seq: u64, t_ns: u64, pad: &str) {
    out.clear();
    let _ = write!(
        out,
        "{{\"topic\":\"{topic}\",\"data\":{{\"hb\":[{seq},{t_ns}],\"p\":\"{pad}\"}}}}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use helios_protocol::{Codec, Encoding, Message, ParseMode};

    #[test]
    fn helios_request_is_valid_and_round_trips_the_time() {
        let mut out = String::new();
        let t = 123_456_789_012_345;
        Proto::Helios.request(&mut out, Method::Echo, t, 7, "{\"a\":1}");
        let msg = Encoding::Json
            .decode(out.as_bytes(), ParseMode::Strict)
            .expect("valid request");
        let Message::Request(req) = msg else {
            panic!("a request")
        };
        assert_eq!(req.method, "system:echo");
        let resp = format!(
            "{{\"protocol\":\"helios-starling\",\"version\":\"1.0.0\",\"timestamp\":1,\"type\":\"response\",\"requestId\":\"{}\",\"success\":true,\"data\":{{}}}}",
            req.id
        );
        assert_eq!(
            Proto::Helios.scan(&resp),
            Incoming::Response { id_ns: t, ok: true }
        );
    }

    #[test]
    fn deliveries_and_socketio() {
        let n = r#"{"protocol":"helios-starling","version":"1.0.0","timestamp":1,"type":"notification","notification":{"topic":"t","data":{"hb":[5,99],"p":"x"},"offset":5}}"#;
        assert_eq!(
            Proto::Helios.scan(n),
            Incoming::Delivery { seq: 5, t_ns: 99 }
        );
        let mut out = String::new();
        Proto::Socketio.request(&mut out, Method::Echo, 42, 0, "{}");
        assert_eq!(out, "4242[\"echo\",{}]");
        assert_eq!(
            Proto::Socketio.scan("4342[{}]"),
            Incoming::Response {
                id_ns: 42,
                ok: true
            }
        );
        assert_eq!(Proto::Socketio.scan("2"), Incoming::Ping);
        assert_eq!(
            Proto::Socketio.scan(r#"42["message",{"topic":"t","data":{"hb":[1,2]}}]"#),
            Incoming::Delivery { seq: 1, t_ns: 2 }
        );
    }
}
