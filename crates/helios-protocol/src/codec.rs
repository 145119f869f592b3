//! Codecs: [`Message`] ⇄ bytes, with validation of every rule of the spec.
//!
//! Decoding takes a fast path first: one `serde` pass into a borrowed wire
//! struct, then the protocol checks. Only when that pass fails is the frame
//! parsed a second time, as a generic value, to name the offending field and
//! recover the `requestId` for the error response. Bad input is the rare case;
//! it pays for the good error message.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{DecodeError, ErrorBody, ErrorCode};
use crate::message::{
    Message, Notification, PROTOCOL, PeerRef, Request, RequestId, Response, VERSION,
};
use crate::method::ParseMode;

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
        let bytes = match self {
            Self::Json => serde_json::to_vec(&wire).map_err(|e| EncodeError(e.to_string()))?,
            Self::MsgPack => {
                rmp_serde::to_vec_named(&wire).map_err(|e| EncodeError(e.to_string()))?
            }
        };
        Ok(Bytes::from(bytes))
    }

    fn decode(&self, frame: &[u8], mode: ParseMode) -> Result<Message, DecodeError> {
        let parsed: Result<WireIn<'_>, String> = match self {
            Self::Json => serde_json::from_slice(frame).map_err(|e| e.to_string()),
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
                let parsed = serde_json::from_str(frame).map_err(|e| e.to_string());
                self.finish(parsed, frame.as_bytes(), mode)
            }
            Self::MsgPack => self.decode(frame.as_bytes(), mode),
        }
    }

    fn finish(
        &self,
        parsed: Result<WireIn<'_>, String>,
        frame: &[u8],
        mode: ParseMode,
    ) -> Result<Message, DecodeError> {
        match parsed {
            Ok(wire) => {
                let id = wire.request_id.as_deref().map(str::to_owned);
                wire.into_message(mode).map_err(|e| e.with_request_id(id))
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
    payload: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    success: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
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

#[derive(Deserialize)]
struct WireIn<'a> {
    #[serde(borrow)]
    protocol: Option<Cow<'a, str>>,
    #[serde(borrow)]
    version: Option<Cow<'a, str>>,
    timestamp: Option<u64>,
    #[serde(rename = "type", borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(rename = "requestId", borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    payload: Option<Value>,
    success: Option<bool>,
    data: Option<Value>,
    error: Option<ErrorIn>,
    notification: Option<NotificationIn>,
    peer: Option<PeerRef>,
    timeout: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorIn {
    code: String,
    message: String,
    details: Option<Value>,
}

#[derive(Deserialize)]
struct NotificationIn {
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
                    DecodeError::violation(format!("invalid method name {method:?}: {e}"))
                })?;
                Ok(Message::Request(Request {
                    timestamp,
                    id,
                    method: method.into_owned(),
                    payload: self.payload,
                    peer: self.peer,
                    timeout_ms: self.timeout,
                }))
            }
            "response" => {
                let id = check_request_id(self.request_id.as_deref(), mode)?;
                let success = self.success.ok_or_else(|| missing("success"))?;
                let result = if success {
                    Ok(self.data.unwrap_or(Value::Null))
                } else {
                    let e = self.error.ok_or_else(|| {
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
                let n = self.notification.ok_or_else(|| missing("notification"))?;
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
    let core = v.split(['-', '+']).next().unwrap_or(v);
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric {
        return Err(DecodeError::violation(format!(
            "field `version` must be a semantic version like \"1.0.0\", got {v:?}"
        )));
    }
    if parts[0] != "1" {
        return Err(DecodeError::violation(format!(
            "unsupported protocol version {v:?}: this server speaks 1.x"
        )));
    }
    Ok(())
}

/// Strict mode requires a UUID v4 (spec §3.2); permissive mode accepts any
/// non-empty id up to 128 bytes.
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
