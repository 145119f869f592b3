//! Codecs: [`Message`] ⇄ bytes, with validation of every rule of the spec.
//!
//! Decoding a JSON frame takes a fast path first: one pass over the bytes into
//! a borrowed wire struct ([`crate::scan`]), or, for a frame of an unusual
//! form, one `serde` pass; then the protocol checks. Only when the serde pass
//! fails is the frame parsed a second time, as a generic value, to name the
//! offending field and recover the `requestId` for the error response. Bad
//! input is the rare case; it pays for the good error message.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{DecodeError, ErrorBody, ErrorCode};
use crate::message::{
    Message, Notification, PROTOCOL, PeerRef, Request, RequestId, Response, VERSION,
};
use crate::method::ParseMode;
use crate::payload::Payload;
use crate::short_str::ShortStr;

/// Whether a codec's frames travel as WebSocket text or binary frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// UTF-8 text frames (JSON).
    Text,
    /// Binary frames (MessagePack).
    Binary,
}

/// Turns messages into frames and frames into validated messages.
///
/// Implemented by [`Encoding`], which picks JSON or MessagePack; a new wire
/// encoding is a new implementation of this trait plus a variant there.
pub trait Codec {
    /// Encodes a message into one frame.
    ///
    /// # Errors
    /// [`EncodeError`] when a value cannot be represented (never for values
    /// built from `serde_json::Value`).
    fn encode(&self, msg: &Message) -> Result<Bytes, EncodeError>;

    /// Decodes and validates one frame.
    ///
    /// # Errors
    /// [`DecodeError`] naming the broken rule, with the `requestId` when it
    /// could be read.
    fn decode(&self, frame: &[u8], mode: ParseMode) -> Result<Message, DecodeError>;

    /// The WebSocket frame type this codec produces and expects.
    fn frame_type(&self) -> FrameType;
}

/// Room a thread's JSON scratch buffer starts with, and the most it keeps
/// after encoding a large message.
const SCRATCH_START: usize = 256;
const SCRATCH_KEPT: usize = 64 * 1024;

thread_local! {
    /// Where JSON frames are written before being copied out at their size.
    static SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(SCRATCH_START));
}

/// An encoding failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode message: {0}")]
pub struct EncodeError(String);

/// The encodings Helios speaks, chosen per connection by WebSocket
/// subprotocol.
///
/// ```
/// use helios_protocol::{Codec, Encoding, Message, ParseMode, Request};
/// let enc = Encoding::from_subprotocol("helios-starling.v1.msgpack").unwrap();
/// let msg = Message::Request(Request::new("user:get", serde_json::json!({"id": 1})));
/// let bytes = enc.encode(&msg).unwrap();
/// assert_eq!(enc.decode(&bytes, ParseMode::Strict).unwrap(), msg);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    /// JSON text frames (the default).
    #[default]
    Json,
    /// MessagePack binary frames.
    MsgPack,
}

/// Subprotocol name selecting JSON.
pub const SUBPROTOCOL_JSON: &str = "helios-starling.v1.json";
/// Subprotocol name selecting MessagePack.
pub const SUBPROTOCOL_MSGPACK: &str = "helios-starling.v1.msgpack";

impl Encoding {
    /// The encoding a subprotocol name selects, if any.
    pub fn from_subprotocol(name: &str) -> Option<Self> {
        match name.trim() {
            SUBPROTOCOL_JSON => Some(Self::Json),
            SUBPROTOCOL_MSGPACK => Some(Self::MsgPack),
            _ => None,
        }
    }

    /// The subprotocol name of this encoding.
    pub const fn subprotocol(self) -> &'static str {
        match self {
            Self::Json => SUBPROTOCOL_JSON,
            Self::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }

    /// Picks the first supported encoding from a `Sec-WebSocket-Protocol`
    /// header value (comma-separated offers).
    pub fn negotiate(offers: &str) -> Option<Self> {
        offers.split(',').find_map(Self::from_subprotocol)
    }
}

impl Codec for Encoding {
    fn encode(&self, msg: &Message) -> Result<Bytes, EncodeError> {
        let wire = WireOut::from(msg);
        match self {
            Self::Json => SCRATCH.with_borrow_mut(|out| {
                out.clear();
                let written = wire.write_json(out);
                // One exact-size allocation: a `Bytes` made from a `Vec`
                // with spare room allocates a second block to track it.
                let frame = written.map(|()| Bytes::copy_from_slice(out));
                if out.capacity() > SCRATCH_KEPT {
                    *out = Vec::with_capacity(SCRATCH_START);
                }
                frame.map_err(|e| EncodeError(e.to_string()))
            }),
            Self::MsgPack => rmp_serde::to_vec_named(&wire)
                .map(Bytes::from)
                .map_err(|e| EncodeError(e.to_string())),
        }
    }

    fn decode(&self, frame: &[u8], mode: ParseMode) -> Result<Message, DecodeError> {
        let parsed: Result<WireIn<'_>, String> = match self {
            Self::Json => match std::str::from_utf8(frame) {
                Ok(text) => return self.decode_text(text, mode),
                Err(_) => serde_json::from_slice(frame).map_err(|e| e.to_string()),
            },
            Self::MsgPack => rmp_serde::from_slice(frame).map_err(|e| e.to_string()),
        };
        self.finish(parsed, frame, mode)
    }

    fn frame_type(&self) -> FrameType {
        match self {
            Self::Json => FrameType::Text,
            Self::MsgPack => FrameType::Binary,
        }
    }
}

impl Encoding {
    /// Decodes a frame already known to be UTF-8 (a WebSocket text frame,
    /// validated by the WebSocket layer): JSON then skips a second UTF-8
    /// check of every string. Same result as [`Codec::decode`].
    ///
    /// # Errors
    /// As [`Codec::decode`].
    pub fn decode_text(&self, frame: &str, mode: ParseMode) -> Result<Message, DecodeError> {
        match self {
            Self::Json => {
                let parsed = match crate::scan::envelope(frame) {
                    Some(wire) => Ok(wire),
                    None => serde_json::from_str(frame).map_err(|e| e.to_string()),
                };
                self.finish(parsed, frame.as_bytes(), mode)
            }
            Self::MsgPack => self.decode(frame.as_bytes(), mode),
        }
    }

    pub(crate) fn finish(
        &self,
        parsed: Result<WireIn<'_>, String>,
        frame: &[u8],
        mode: ParseMode,
    ) -> Result<Message, DecodeError> {
        match parsed {
            Ok(wire) => {
                // Kept borrowed: only a failure needs the id as a String.
                let id = wire.request_id.as_ref().map(|t| t.0.clone());
                wire.into_message(mode)
                    .map_err(|e| e.with_request_id(id.map(Cow::into_owned)))
            }
            Err(serde_msg) => Err(self.explain(frame, serde_msg)),
        }
    }

    /// The slow path: parse as a generic value to name what is wrong.
    fn explain(&self, frame: &[u8], serde_msg: String) -> DecodeError {
        let value: Result<Value, String> = match self {
            Self::Json => serde_json::from_slice(frame).map_err(|e| e.to_string()),
            Self::MsgPack => rmp_serde::from_slice(frame).map_err(|e| e.to_string()),
        };
        let what = match self {
            Self::Json => "JSON",
            Self::MsgPack => "MessagePack",
        };
        let value = match value {
            Ok(v) => v,
            Err(e) => return DecodeError::malformed(format!("frame is not valid {what}: {e}")),
        };
        let Value::Object(map) = &value else {
            return DecodeError::malformed(format!(
                "message must be a {what} object, got {}",
                kind_of(&value)
            ));
        };
        let request_id = map
            .get("requestId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        // (field, what it must be, the check)
        type FieldRule<'a> = (&'a str, &'a str, fn(&Value) -> bool);
        let expected: [FieldRule<'_>; 10] = [
            ("protocol", "a string", Value::is_string),
            ("version", "a string", Value::is_string),
            ("timestamp", "a non-negative integer", Value::is_u64),
            ("type", "a string", Value::is_string),
            ("requestId", "a string", Value::is_string),
            ("method", "a string", Value::is_string),
            ("success", "a boolean", Value::is_boolean),
            ("notification", "an object", Value::is_object),
            ("peer", "an object {id} or {name}", Value::is_object),
            ("timeout", "a non-negative integer", Value::is_u64),
        ];
        let message = expected
            .iter()
            .find_map(|(key, want, ok)| match map.get(*key) {
                Some(v) if !v.is_null() && !ok(v) => {
                    Some(format!("field `{key}` must be {want}, got {}", kind_of(v)))
                }
                _ => None,
            })
            .unwrap_or(serde_msg);
        DecodeError::violation(message).with_request_id(request_id)
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------- encoding

#[derive(Serialize)]
struct WireOut<'a> {
    protocol: &'static str,
    version: &'static str,
    timestamp: u64,
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    success: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification: Option<NotificationOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<&'a PeerRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<u64>,
}

#[derive(Serialize)]
struct NotificationOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    data: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    #[serde(rename = "ackId", skip_serializing_if = "Option::is_none")]
    ack_id: Option<&'a str>,
}

impl<'a> WireOut<'a> {
    fn base(timestamp: u64, ty: &'static str) -> Self {
        Self {
            protocol: PROTOCOL,
            version: VERSION,
            timestamp,
            ty,
            request_id: None,
            method: None,
            payload: None,
            success: None,
            data: None,
            error: None,
            notification: None,
            peer: None,
            timeout: None,
        }
    }
}

impl WireOut<'_> {
    /// The JSON text of this message, byte for byte what serde would write
    /// for it, with the envelope written by hand: its keys and constant
    /// values need no escaping, and serde_json escape-scans every key and
    /// string it writes (about 3,000 of the 20,000 instructions of a
    /// `system:echo`). Ids, names and values still go through serde_json.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        fn field(out: &mut Vec<u8>, key: &str) {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
        }
        fn raw_str(out: &mut Vec<u8>, s: &str) {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        // Ids and method names rarely need escapes: written as they are
        // when they need none (serde_json escape-scans byte by byte).
        fn text(out: &mut Vec<u8>, key: &str, s: Option<&str>) -> serde_json::Result<()> {
            match s {
                Some(s) if crate::scan::needs_no_escape(s) => {
                    field(out, key);
                    raw_str(out, s);
                    Ok(())
                }
                _ => value(out, key, s),
            }
        }
        fn value<T: Serialize + ?Sized>(
            out: &mut Vec<u8>,
            key: &str,
            v: Option<&T>,
        ) -> serde_json::Result<()> {
            if let Some(v) = v {
                field(out, key);
                serde_json::to_writer(&mut *out, v)?;
            }
            Ok(())
        }
        out.extend_from_slice(b"{\"protocol\":");
        raw_str(out, self.protocol);
        field(out, "version");
        raw_str(out, self.version);
        field(out, "timestamp");
        out.extend_from_slice(itoa::Buffer::new().format(self.timestamp).as_bytes());
        field(out, "type");
        raw_str(out, self.ty);
        text(out, "requestId", self.request_id)?;
        text(out, "method", self.method)?;
        value(out, "payload", self.payload)?;
        value(out, "success", self.success.as_ref())?;
        value(out, "data", self.data)?;
        value(out, "error", self.error)?;
        value(out, "notification", self.notification.as_ref())?;
        value(out, "peer", self.peer)?;
        value(out, "timeout", self.timeout.as_ref())?;
        out.push(b'}');
        Ok(())
    }
}

impl<'a> From<&'a Message> for WireOut<'a> {
    fn from(msg: &'a Message) -> Self {
        match msg {
            Message::Request(r) => Self {
                request_id: Some(r.id.as_str()),
                method: Some(&r.method),
                payload: r.payload.as_ref(),
                peer: r.peer.as_ref(),
                timeout: r.timeout_ms,
                ..Self::base(r.timestamp, "request")
            },
            Message::Response(r) => {
                let (data, error) = match &r.result {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(e)),
                };
                Self {
                    request_id: Some(r.id.as_str()),
                    success: Some(error.is_none()),
                    data,
                    error,
                    peer: r.peer.as_ref(),
                    ..Self::base(r.timestamp, "response")
                }
            }
            Message::Notification(n) => Self {
                notification: Some(NotificationOut {
                    topic: n.topic.as_deref(),
                    data: &n.data,
                    offset: n.offset,
                    epoch: n.epoch.as_deref(),
                    ack_id: n.ack_id.as_deref(),
                }),
                peer: n.peer.as_ref(),
                ..Self::base(n.timestamp, "notification")
            },
        }
    }
}

// ---------------------------------------------------------------- decoding

/// A frame's envelope, strings borrowed from the frame: what both the fast
/// path ([`crate::scan`]) and serde read a frame into.
#[derive(Deserialize, Default)]
pub(crate) struct WireIn<'a> {
    #[serde(borrow)]
    pub(crate) protocol: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) version: Option<Text<'a>>,
    pub(crate) timestamp: Option<u64>,
    #[serde(rename = "type", borrow)]
    pub(crate) ty: Option<Text<'a>>,
    #[serde(rename = "requestId", borrow)]
    pub(crate) request_id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) method: Option<Text<'a>>,
    pub(crate) payload: Option<Payload>,
    pub(crate) success: Option<bool>,
    pub(crate) data: Option<Payload>,
    // Boxed: a request never carries them, and a smaller `WireIn` is
    // cheaper to move through serde's calls (a memcpy per move).
    pub(crate) error: Option<Box<ErrorIn>>,
    pub(crate) notification: Option<Box<NotificationIn>>,
    pub(crate) peer: Option<PeerRef>,
    pub(crate) timeout: Option<u64>,
}

/// A string field borrowed from the frame when it has no escapes.
///
/// `#[serde(borrow)]` on an `Option<Cow<str>>` field does not borrow: serde
/// goes through `Cow`'s own `Deserialize`, which always allocates. Inside a
/// newtype the derive uses its borrowing path, which saves five allocations
/// per message (protocol, version, type, requestId, method).
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct Text<'a>(#[serde(borrow)] pub(crate) Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

#[derive(Deserialize)]
pub(crate) struct ErrorIn {
    code: String,
    message: String,
    details: Option<Value>,
}

#[derive(Deserialize)]
pub(crate) struct NotificationIn {
    topic: Option<String>,
    data: Option<Value>,
    offset: Option<u64>,
    epoch: Option<String>,
    #[serde(rename = "ackId")]
    ack_id: Option<String>,
}

/// Longest accepted `requestId`.
const MAX_REQUEST_ID_LEN: usize = 128;

impl WireIn<'_> {
    fn into_message(self, mode: ParseMode) -> Result<Message, DecodeError> {
        let missing = |field: &str| DecodeError::violation(format!("missing field `{field}`"));
        match self.protocol.as_deref() {
            Some(PROTOCOL) => {}
            Some(other) => {
                return Err(DecodeError::violation(format!(
                    "field `protocol` must be \"{PROTOCOL}\", got {other:?}"
                )));
            }
            None => return Err(missing("protocol")),
        }
        check_version(self.version.as_deref().ok_or_else(|| missing("version"))?)?;
        let timestamp = self.timestamp.ok_or_else(|| missing("timestamp"))?;
        let ty = self.ty.as_deref().ok_or_else(|| missing("type"))?;
        match ty {
            "request" => {
                let id = check_request_id(self.request_id.as_deref(), mode)?;
                let method = self.method.ok_or_else(|| missing("method"))?;
                mode.check_method(&method).map_err(|e| {
                    DecodeError::violation(format!("invalid method name {:?}: {e}", &*method))
                })?;
                Ok(Message::Request(Request {
                    timestamp,
                    id,
                    method: ShortStr::from(method.0),
                    payload: self.payload,
                    peer: self.peer,
                    timeout_ms: self.timeout,
                }))
            }
            "response" => {
                let id = check_request_id(self.request_id.as_deref(), mode)?;
                let success = self.success.ok_or_else(|| missing("success"))?;
                let result = if success {
                    Ok(self.data.unwrap_or_default())
                } else {
                    let e = *self.error.ok_or_else(|| {
                        DecodeError::violation("a failed response must carry `error`")
                    })?;
                    Err(ErrorBody {
                        code: ErrorCode::from(e.code),
                        message: e.message,
                        details: e.details,
                    })
                };
                Ok(Message::Response(Response {
                    timestamp,
                    id,
                    result,
                    peer: self.peer,
                }))
            }
            "notification" => {
                let n = *self.notification.ok_or_else(|| missing("notification"))?;
                Ok(Message::Notification(Notification {
                    timestamp,
                    topic: n.topic,
                    data: n.data.unwrap_or(Value::Null),
                    peer: self.peer,
                    offset: n.offset,
                    epoch: n.epoch,
                    ack_id: n.ack_id,
                }))
            }
            other => Err(DecodeError::violation(format!(
                "unknown message type {other:?} (expected request, response or notification)"
            ))),
        }
    }
}

fn check_version(v: &str) -> Result<(), DecodeError> {
    if v == VERSION {
        return Ok(());
    }
    let core = v.split(['-', '+']).next().unwrap_or(v);
    let numeric = core.split('.').count() == 3
        && core
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric {
        return Err(DecodeError::violation(format!(
            "field `version` must be a semantic version like \"1.0.0\", got {v:?}"
        )));
    }
    if core.split('.').next() != Some("1") {
        return Err(DecodeError::violation(format!(
            "unsupported protocol version {v:?}: this server speaks 1.x"
        )));
    }
    Ok(())
}

fn check_request_id(id: Option<&str>, mode: ParseMode) -> Result<RequestId, DecodeError> {
    let id = id.ok_or_else(|| DecodeError::violation("missing field `requestId`"))?;
    let ok = match mode {
        ParseMode::Strict => uuid::Uuid::try_parse(id)
            .map(|u| u.get_version_num() == 4)
            .unwrap_or(false),
        ParseMode::Permissive => !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN,
    };
    if ok {
        Ok(RequestId::from(id))
    } else if mode == ParseMode::Strict {
        Err(DecodeError::violation(format!(
            "field `requestId` must be a UUID v4, got {id:?}"
        )))
    } else {
        Err(DecodeError::violation(format!(
            "field `requestId` must be 1 to {MAX_REQUEST_ID_LEN} bytes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_exact_copies_and_a_large_one_does_not_stay_in_the_scratch() {
        let big = Request::new("a:b", serde_json::json!({ "blob": "x".repeat(200_000) }));
        let small = Request::new("a:b", serde_json::json!({ "n": 1 }));
        for req in [&big, &small, &big] {
            let msg = Message::Request(req.clone());
            let frame = Encoding::Json.encode(&msg).expect("encodes");
            // Nothing of an earlier, longer frame is left in a later one.
            assert_eq!(
                frame.len(),
                serde_json::to_vec(&WireOut::from(&msg))
                    .expect("serde")
                    .len()
            );
            let back = Encoding::Json
                .decode(&frame, ParseMode::Strict)
                .expect("decodes");
            assert_eq!(back, msg);
            let kept = SCRATCH.with_borrow(Vec::capacity);
            assert!(kept <= SCRATCH_KEPT, "scratch keeps {kept} bytes");
        }
    }

    #[test]
    fn envelope_strings_are_borrowed_from_the_frame_unless_escaped() {
        let frame = r#"{"protocol":"helios-starling","version":"1.0.0","timestamp":1,"type":"request","requestId":"a\u0062c","method":"x:y","payload":{}}"#;
        let json: WireIn<'_> = serde_json::from_str(frame).expect("parses");
        let msgpack_bytes =
            rmp_serde::to_vec_named(&serde_json::from_str::<Value>(frame).expect("value"))
                .expect("msgpack");
        let msgpack: WireIn<'_> = rmp_serde::from_slice(&msgpack_bytes).expect("parses");
        for wire in [&json, &msgpack] {
            let borrowed = |t: &Option<Text<'_>>| matches!(t, Some(Text(Cow::Borrowed(_))));
            assert!(borrowed(&wire.protocol));
            assert!(borrowed(&wire.version));
            assert!(borrowed(&wire.ty));
            assert!(borrowed(&wire.method));
        }
        // An escaped string cannot point into the frame: owned, and decoded.
        assert!(matches!(&json.request_id, Some(Text(Cow::Owned(s))) if s == "abc"));
    }

    #[test]
    fn hand_written_json_is_what_serde_writes() {
        use crate::message::PeerRef;
        let mut req = Request::new(
            "chat:send",
            serde_json::json!({"text": "a \"quoted\" \u{1F600}\n", "n": [1, 2.5, null]}),
        );
        req.peer = Some(PeerRef::Name("bob".into()));
        req.timeout_ms = Some(5000);
        let bare = Request {
            payload: None,
            ..Request::new("a:b", Value::Null)
        };
        let ok = Response {
            timestamp: 7,
            id: RequestId::new(),
            result: Ok(serde_json::json!("x").into()),
            peer: None,
        };
        let failed = Response {
            timestamp: 8,
            id: RequestId::new(),
            result: Err(ErrorBody {
                code: ErrorCode::from("METHOD_NOT_FOUND".to_owned()),
                message: "no \"such\" method".into(),
                details: Some(serde_json::json!({"m": "x:y"})),
            }),
            peer: Some(PeerRef::Id("c1".into())),
        };
        let note = Notification {
            timestamp: 9,
            topic: Some("room:1".into()),
            data: serde_json::json!({"hb": [1, 2]}),
            peer: None,
            offset: Some(3),
            epoch: Some("e".into()),
            ack_id: Some("k".into()),
        };
        let event = Notification {
            topic: None,
            offset: None,
            epoch: None,
            ack_id: None,
            ..note.clone()
        };
        for msg in [
            Message::Request(req),
            Message::Request(bare),
            Message::Response(ok),
            Message::Response(failed),
            Message::Notification(note),
            Message::Notification(event),
        ] {
            let wire = WireOut::from(&msg);
            let mut ours = Vec::new();
            wire.write_json(&mut ours).expect("writes");
            let serde = serde_json::to_vec(&wire).expect("serializes");
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&serde)
            );
        }
    }

    #[test]
    fn versions_other_than_ours_are_still_checked() {
        assert!(check_version(VERSION).is_ok());
        assert!(check_version("1.7.2-beta+x").is_ok());
        assert!(check_version("2.0.0").is_err());
        assert!(check_version("1.0").is_err());
        assert!(check_version("1..0").is_err());
        assert!(check_version("v1.0.0").is_err());
    }
}
