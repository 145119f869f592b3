//! The JSON decoder's fast path: reads the envelope of a frame in one pass
//! over its bytes, without going through serde's derive.
//!
//! serde_json's derived `Deserialize` for the envelope cost ~4,700
//! instructions per `system:echo`, more than a third of the server's work
//! (docs/benchmarks.md): a visitor call per key, a string match per key name,
//! an `Option` wrapper and a move of the whole struct per field. The
//! envelope has a fixed, flat shape, so most of that is not needed.
//!
//! [`envelope`] reads the common form of a frame: an object whose keys have
//! no escapes and appear at most once, string fields without escapes,
//! integers written as plain digits. Values of any other shape (`payload`,
//! `data`, `peer`, `error`, `notification`, unknown keys) are handed to
//! serde_json as one value each, which checks their syntax exactly as the
//! full parse does. Anything else — an escape, a duplicate key, a float
//! where an integer goes, a syntax error — makes it give up (`None`), and
//! the frame goes through the full serde parse, which either reads it or
//! names what is wrong. So the fast path never has to produce an error and
//! never decides alone what a frame means: on every frame it accepts, it
//! must build what serde builds, which the tests check on many mutated
//! frames.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::codec::{Text, WireIn};
use crate::payload::Payload;

/// The frame's envelope, when it has the common form; `None` sends the frame
/// through the full serde parse.
pub(crate) fn envelope(frame: &str) -> Option<WireIn<'_>> {
    let mut s = Scanner { text: frame, at: 0 };
    let mut wire = WireIn::default();
    let mut seen = 0u16;
    s.skip_ws();
    s.eat(b'{')?;
    s.skip_ws();
    if s.peek() == Some(b'}') {
        s.at += 1;
    } else {
        loop {
            s.eat(b'"')?;
            let field = s.key()?;
            s.skip_ws();
            s.eat(b':')?;
            s.skip_ws();
            match field {
                Some(field) => {
                    let bit = 1 << field as u16;
                    if seen & bit != 0 {
                        return None; // serde: "duplicate field"
                    }
                    seen |= bit;
                    s.field(field, &mut wire)?;
                }
                // Unknown keys are ignored, but must hold valid JSON.
                None => drop(s.raw()?),
            }
            s.skip_ws();
            match s.next()? {
                b',' => s.skip_ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.skip_ws();
    (s.at == frame.len()).then_some(wire)
}

/// The envelope's fields; the discriminant is the field's bit in the set
/// of fields seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Protocol,
    Version,
    Timestamp,
    Type,
    RequestId,
    Method,
    Payload,
    Success,
    Data,
    Error,
    Notification,
    Peer,
    Timeout,
}

/// The known key `rest` starts with (its closing quote included) and its
/// length. Literal comparisons: the compiler makes them a few word
/// compares, where a table of names would call `memcmp` per candidate.
fn known_key(rest: &[u8]) -> Option<(Field, usize)> {
    let hit = match rest.first()? {
        b'p' if rest.starts_with(b"protocol\"") => (Field::Protocol, 9),
        b'p' if rest.starts_with(b"payload\"") => (Field::Payload, 8),
        b'p' if rest.starts_with(b"peer\"") => (Field::Peer, 5),
        b't' if rest.starts_with(b"timestamp\"") => (Field::Timestamp, 10),
        b't' if rest.starts_with(b"type\"") => (Field::Type, 5),
        b't' if rest.starts_with(b"timeout\"") => (Field::Timeout, 8),
        b'v' if rest.starts_with(b"version\"") => (Field::Version, 8),
        b'r' if rest.starts_with(b"requestId\"") => (Field::RequestId, 10),
        b'm' if rest.starts_with(b"method\"") => (Field::Method, 7),
        b's' if rest.starts_with(b"success\"") => (Field::Success, 8),
        b'd' if rest.starts_with(b"data\"") => (Field::Data, 5),
        b'e' if rest.starts_with(b"error\"") => (Field::Error, 6),
        b'n' if rest.starts_with(b"notification\"") => (Field::Notification, 13),
        _ => return None,
    };
    Some(hit)
}

/// The value the protocol's constant fields nearly always have, when
/// `rest` starts with it and its closing quote: compared in place instead
/// of scanned.
fn usual_value(field: Field, rest: &[u8]) -> Option<&'static str> {
    let usual = match field {
        Field::Protocol if rest.starts_with(b"helios-starling\"") => "helios-starling",
        Field::Version if rest.starts_with(b"1.0.0\"") => "1.0.0",
        Field::Type if rest.starts_with(b"request\"") => "request",
        Field::Type if rest.starts_with(b"response\"") => "response",
        Field::Type if rest.starts_with(b"notification\"") => "notification",
        _ => return None,
    };
    Some(usual)
}

/// A mask of the bytes of `v` that end a plain string (`"`), start an
/// escape (`\\`) or are control characters. A byte's flag can be wrong only
/// above (after) a right one, so the lowest flag is always right.
fn string_specials(v: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    zero_bytes(v ^ (ONES * u64::from(b'"')))
        | zero_bytes(v ^ (ONES * u64::from(b'\\')))
        | (v.wrapping_sub(ONES * 0x20) & !v & HIGH)
}

/// Whether `s` can be written as a JSON string as it is: no byte needs an
/// escape. Eight bytes at a time.
pub(crate) fn needs_no_escape(s: &str) -> bool {
    let mut chunks = s.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        if string_specials(u64::from_le_bytes(word)) != 0 {
            return false;
        }
    }
    !chunks
        .remainder()
        .iter()
        .any(|&b| b == b'"' || b == b'\\' || b < 0x20)
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// After a key's opening quote: which field it names (`None`: a key
    /// the envelope does not have).
    fn key(&mut self) -> Option<Option<Field>> {
        let rest = self.text.as_bytes().get(self.at..)?;
        if let Some((field, len)) = known_key(rest) {
            self.at += len;
            return Some(Some(field));
        }
        self.plain_string()?;
        Some(None)
    }

    /// Reads one known field's value into `wire`. Every field is optional
    /// in the wire struct, so `null` leaves it unset, as serde does.
    fn field(&mut self, field: Field, wire: &mut WireIn<'a>) -> Option<()> {
        if self.text.as_bytes().get(self.at..self.at + 4) == Some(b"null") {
            self.at += 4;
            return Some(());
        }
        let text = |s: &mut Self| s.string(field).map(|t| Some(Text(Cow::Borrowed(t))));
        match field {
            Field::Protocol => wire.protocol = text(self)?,
            Field::Version => wire.version = text(self)?,
            Field::Type => wire.ty = text(self)?,
            Field::RequestId => wire.request_id = text(self)?,
            Field::Method => wire.method = text(self)?,
            Field::Timestamp => wire.timestamp = Some(self.integer()?),
            Field::Timeout => wire.timeout = Some(self.integer()?),
            Field::Success => wire.success = Some(self.boolean()?),
            Field::Payload => wire.payload = Some(Payload::Raw(self.raw()?.to_owned())),
            Field::Data => wire.data = Some(Payload::Raw(self.raw()?.to_owned())),
            // Rare (relays, failed responses, notifications): their own
            // serde parse, of their own text only.
            Field::Peer => wire.peer = Some(serde_json::from_str(self.raw()?.get()).ok()?),
            Field::Error => wire.error = Some(serde_json::from_str(self.raw()?.get()).ok()?),
            Field::Notification => {
                wire.notification = Some(serde_json::from_str(self.raw()?.get()).ok()?);
            }
        }
        Some(())
    }

    /// A string value without escapes or control characters, borrowed.
    fn string(&mut self, field: Field) -> Option<&'a str> {
        self.eat(b'"')?;
        let rest = self.text.as_bytes().get(self.at..)?;
        if let Some(usual) = usual_value(field, rest) {
            self.at += usual.len() + 1;
            return Some(usual);
        }
        self.plain_string()
    }

    /// After an opening quote: the string up to the closing one, when it
    /// has no escapes and no control characters. Eight bytes at a time.
    fn plain_string(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut end = start;
        loop {
            if let Some(chunk) = bytes.get(end..end + 8) {
                let word = u64::from_le_bytes(chunk.try_into().ok()?);
                let specials = string_specials(word);
                if specials == 0 {
                    end += 8;
                    continue;
                }
                end += specials.trailing_zeros() as usize / 8;
                break;
            }
            // The last few bytes, one at a time.
            match bytes.get(end)? {
                b'"' | b'\\' | 0..=0x1f => break,
                _ => end += 1,
            }
        }
        if bytes[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        self.text.get(start..end)
    }

    /// A non-negative integer in plain digits that fits a `u64`.
    fn integer(&mut self) -> Option<u64> {
        let start = self.at;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        // A leading zero is not JSON; a fraction or an exponent is not an
        // integer field (serde rejects both).
        if digits == 0 || (digits > 1 && self.text.as_bytes()[start] == b'0') {
            return None;
        }
        match self.peek() {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(n),
        }
    }

    fn boolean(&mut self) -> Option<bool> {
        let rest = self.text.as_bytes().get(self.at..)?;
        if rest.starts_with(b"true") {
            self.at += 4;
            Some(true)
        } else if rest.starts_with(b"false") {
            self.at += 5;
            Some(false)
        } else {
            None
        }
    }

    /// One JSON value of any shape, checked by serde_json, as the text it
    /// was written as.
    fn raw(&mut self) -> Option<&'a RawValue> {
        let rest = self.text.get(self.at..)?;
        let raw = <&RawValue>::deserialize(&mut serde_json::Deserializer::from_str(rest)).ok()?;
        let start = raw.get().as_ptr() as usize - rest.as_ptr() as usize;
        self.at += start + raw.get().len();
        Some(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoding;
    use crate::method::ParseMode;

    const REQUEST: &str = r#"{"protocol":"helios-starling","version":"1.0.0","timestamp":1700000000000,"type":"request","requestId":"9b2f7c1e-5d3a-4f6b-8c9d-0e1f2a3b4c5d","method":"user:get","payload":{"id":7,"tags":["a","b"],"n":1.5e3}}"#;

    /// Frames of every message type and field; the mutation test starts
    /// from these.
    const SEEDS: &[&str] = &[
        REQUEST,
        r#" { "protocol" : "helios-starling" , "version":"1.0.0","timestamp":0,"type":"request","requestId":"r1","method":"a:b","timeout":5000,"peer":{"name":"bob"},"payload":null } "#,
        r#"{"protocol":"helios-starling","version":"1.0.0","timestamp":2,"type":"response","requestId":"r2","success":true,"data":[1,{"x":"y"}],"peer":{"id":"c1"}}"#,
        r#"{"protocol":"helios-starling","version":"1.0.0","timestamp":3,"type":"response","requestId":"r3","success":false,"error":{"code":"E","message":"no","details":{"k":1}}}"#,
        r#"{"protocol":"helios-starling","version":"1.0.0","timestamp":4,"type":"notification","notification":{"topic":"room:1","data":{"hb":[1,2]},"offset":3,"epoch":"e","ackId":"k"},"extra":[true,false,null]}"#,
        r#"{"type":"request","method":"x","requestId":"r","payload":"text","version":"1.2.3","protocol":"helios-starling","timestamp":18446744073709551615}"#,
    ];

    fn serde_only(frame: &str) -> String {
        let parsed = serde_json::from_str::<WireIn<'_>>(frame).map_err(|e| e.to_string());
        format!(
            "{:?}",
            Encoding::Json.finish(parsed, frame.as_bytes(), ParseMode::Permissive)
        )
    }

    fn with_fast_path(frame: &str) -> String {
        format!(
            "{:?}",
            Encoding::Json.decode_text(frame, ParseMode::Permissive)
        )
    }

    #[test]
    fn reads_the_common_forms_of_every_message_type() {
        for frame in SEEDS {
            assert!(envelope(frame).is_some(), "fast path gave up on {frame}");
            assert_eq!(with_fast_path(frame), serde_only(frame), "{frame}");
        }
        let wire = envelope(REQUEST).expect("reads");
        assert!(matches!(wire.method, Some(Text(Cow::Borrowed("user:get")))));
        let Some(Payload::Raw(raw)) = wire.payload else {
            panic!("raw payload")
        };
        assert_eq!(raw.get(), r#"{"id":7,"tags":["a","b"],"n":1.5e3}"#);
    }

    #[test]
    fn gives_up_where_serde_must_decide() {
        let give_up = [
            // an escape in a string, or in a key
            REQUEST.replace("user:get", r"user:g\u0065t"),
            REQUEST.replace("\"method\"", r#""m\u0065thod""#),
            // a duplicate known key
            REQUEST.replace(
                "\"type\":\"request\"",
                "\"type\":\"request\",\"type\":\"request\"",
            ),
            // numbers that are not plain u64 digits
            REQUEST.replace("1700000000000", "1.7e12"),
            REQUEST.replace("1700000000000", "-1"),
            REQUEST.replace("1700000000000", "017"),
            REQUEST.replace("1700000000000", "18446744073709551616"),
            // syntax errors, trailing data, not an object
            REQUEST.replace("\"payload\":{", "\"payload\":{,"),
            format!("{REQUEST}x"),
            "[1]".to_owned(),
            String::new(),
            // a field of the wrong kind
            REQUEST.replace("\"user:get\"", "7"),
            REQUEST.replace("\"version\":\"1.0.0\"", "\"version\":1"),
            REQUEST.replace(
                "\"type\":\"request\"",
                "\"type\":\"request\",\"peer\":{\"nick\":1}",
            ),
        ];
        for frame in &give_up {
            assert!(envelope(frame).is_none(), "fast path read {frame}");
            // The full parse still decides, as before.
            assert_eq!(with_fast_path(frame), serde_only(frame), "{frame}");
        }
    }

    /// The word-at-a-time checks against serde_json, for every length up to
    /// 24 and every position of each byte that matters.
    #[test]
    fn plain_strings_are_found_at_every_offset() {
        let specials = [
            "\"", "\\", "\n", "\u{1}", "\u{1f}", " ", "\u{7f}", "é", "😀", "a",
        ];
        for len in 0..24 {
            for at in 0..len {
                for special in specials {
                    let mut body = "x".repeat(at);
                    body.push_str(special);
                    body.push_str(&"y".repeat(len - at - 1));
                    let serde = serde_json::to_string(&body).expect("writes");
                    let plain = serde == format!("\"{body}\"");
                    assert_eq!(needs_no_escape(&body), plain, "{body:?}");
                    // As a value in a frame: read in place only when plain.
                    let frame = format!("{{\"method\":{serde}}}");
                    let mut s = Scanner {
                        text: &frame,
                        at: 11,
                    };
                    let read = s.plain_string();
                    assert_eq!(read.is_some(), plain, "{frame}");
                    if plain {
                        assert_eq!(read, Some(body.as_str()));
                        assert_eq!(s.at, frame.len() - 1);
                    }
                }
            }
        }
    }

    /// Random edits of the seeds: wherever the fast path reads a frame, the
    /// result (message or error, to the text of the payload) is what serde
    /// alone gives.
    #[test]
    fn agrees_with_serde_on_mutated_frames() {
        const ALPHABET: &[u8] = b"{}[]:,\" \\0123456789.eE-+tfnulrsaxy\t\n";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut read, mut total) = (0, 0);
        for seed in SEEDS {
            for _ in 0..4000 {
                let mut bytes = seed.as_bytes().to_vec();
                for _ in 0..1 + rand(3) {
                    let at = rand(bytes.len() + 1);
                    let c = ALPHABET[rand(ALPHABET.len())];
                    match rand(3) {
                        0 if at < bytes.len() => bytes[at] = c,
                        1 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        _ => bytes.insert(at, c),
                    }
                }
                let Ok(frame) = String::from_utf8(bytes) else {
                    continue;
                };
                total += 1;
                if envelope(&frame).is_some() {
                    read += 1;
                }
                assert_eq!(with_fast_path(&frame), serde_only(&frame), "{frame}");
            }
        }
        // The test means something only if both paths were taken often.
        assert!(
            read > total / 10 && read < total * 9 / 10,
            "{read} of {total}"
        );
    }
}
