//! The two wire dialects the load generator speaks, as cheap text builders
//! and scanners.
//!
//! The generator must never be the bottleneck, so it does not build
//! `serde_json::Value`s or parse whole frames on the hot path: requests are
//! formatted from a template and responses are scanned for the one field that
//! matters (the correlation id). Every correlation id carries the request's
//! intended send time, so a reader needs no shared state with its writer.

use std::fmt::Write as _;
use std::sync::LazyLock;

use memchr::memmem::Finder;

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
                // 12 bits of connection index). Written by hand, not with
                // `write!`: formatting was a fifth of the generator's
                // instructions per request.
                let t = id_ns & 0x0fff_ffff_ffff_ffff;
                out.push_str(&HELIOS_REQUEST_HEAD);
                out.push_str(itoa::Buffer::new().format(now_ms()));
                out.push_str(",\"type\":\"request\",\"requestId\":\"");
                push_hex(out, t >> 28, 8);
                out.push('-');
                push_hex(out, (t >> 12) & 0xffff, 4);
                out.push_str("-4");
                push_hex(out, t & 0xfff, 3);
                out.push_str("-8");
                push_hex(out, u64::from(conn & 0xfff), 3);
                out.push_str("-000000000000\",\"method\":\"");
                out.push_str(method.helios_name());
                out.push_str("\",\"payload\":");
                out.push_str(payload);
                out.push('}');
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

/// The start of every Helios request, up to the timestamp's digits.
static HELIOS_REQUEST_HEAD: LazyLock<String> = LazyLock::new(|| {
    format!("{{\"protocol\":\"{PROTOCOL}\",\"version\":\"{VERSION}\",\"timestamp\":")
});

/// Appends the `width` low hex digits of `v` (lowercase, zero-padded).
fn push_hex(out: &mut String, v: u64, width: u32) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..width).rev() {
        out.push(char::from(DIGITS[((v >> (shift * 4)) & 0xf) as usize]));
    }
}

// Searchers built once: a `str::find` per field and frame (building a
// two-way searcher each time) was a fifth of the generator's instructions
// per request.
static REQUEST_ID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"requestId\":\""));
static SUCCESS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"success\":"));
static HB: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"hb\":["));

/// The index just past the first occurrence of `finder`'s needle in `hay`.
fn end_of(finder: &Finder<'_>, hay: &str) -> Option<usize> {
    finder
        .find(hay.as_bytes())
        .map(|i| i + finder.needle().len())
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
    let at = end_of(&HB, frame)?;
    let rest = &frame[at..];
    let (seq, n) = leading_u64(rest)?;
    let rest = rest[n..].strip_prefix(',')?;
    let (t, _) = leading_u64(rest)?;
    Some((seq, t))
}

fn scan_helios(frame: &str) -> Incoming {
    // Only responses carry `success`; requests from the server carry a
    // `requestId` too, so both must be there.
    if let Some(at) = end_of(&REQUEST_ID, frame)
        && let Some(ok_at) = end_of(&SUCCESS, frame)
    {
        let id = frame.get(at..at + 36).unwrap_or("");
        let t = (|| {
            let hi = parse_hex(id.get(0..8)?)?;
            let mid = parse_hex(id.get(9..13)?)?;
            let lo = parse_hex(id.get(15..18)?)?;
            Some((hi << 28) | (mid << 12) | lo)
        })();
        let ok = frame[ok_at..].starts_with("true");
        return match t {
            Some(id_ns) => Incoming::Response { id_ns, ok },
            None => Incoming::Other,
        };
    }
    if let Some((seq, t_ns)) = scan_hb(frame)
        && frame.contains("\"type\":\"notification\"")
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
    fn failures_and_server_requests_are_told_apart() {
        let mut out = String::new();
        Proto::Helios.request(&mut out, Method::Echo, 99, 1, "{}");
        let id = &out[out.find("\"requestId\":\"").expect("id") + 13..][..36];
        let failed = format!(
            "{{\"type\":\"response\",\"requestId\":\"{id}\",\"success\":false,\"error\":{{\"code\":\"X\"}}}}"
        );
        assert_eq!(
            Proto::Helios.scan(&failed),
            Incoming::Response {
                id_ns: 99,
                ok: false
            }
        );
        // A request from the server has a requestId but no `success`.
        let from_server = format!(
            "{{\"type\":\"request\",\"requestId\":\"{id}\",\"method\":\"a:b\",\"payload\":{{}}}}"
        );
        assert_eq!(Proto::Helios.scan(&from_server), Incoming::Other);
        // Ids written by hand match the `{:08x}-{:04x}-4{:03x}-8{:03x}` layout.
        let t: u64 = 0x0123_4567_89ab_cdef & 0x0fff_ffff_ffff_ffff;
        Proto::Helios.request(&mut out, Method::Echo, t, 0xabc, "{}");
        let expect = format!(
            "\"requestId\":\"{:08x}-{:04x}-4{:03x}-8abc-000000000000\"",
            t >> 28,
            (t >> 12) & 0xffff,
            t & 0xfff
        );
        assert!(out.contains(&expect), "{out}");
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
