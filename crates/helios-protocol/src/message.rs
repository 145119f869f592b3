//! The three message types of the protocol, as Rust values.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorBody, ErrorCode};
use crate::payload::Payload;
use crate::short_str::ShortStr;

/// The `protocol` field every message carries.
pub const PROTOCOL: &str = "helios-starling";
/// The protocol version this crate speaks.
pub const VERSION: &str = "1.0.0";

/// Milliseconds since the Unix epoch, for `timestamp` fields.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A request identifier: a UUID v4 in its hyphenated text form.
///
/// Kept in place, not allocated ([`ShortStr`]): every request carries one,
/// and a UUID fits. A clone copies its 48 bytes (a long id is shared).
///
/// ```
/// let id = helios_protocol::RequestId::new();
/// assert_eq!(id.as_str().len(), 36);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(ShortStr);

impl RequestId {
    /// A fresh random (v4) identifier.
    pub fn new() -> Self {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        Self(ShortStr::from(
            &*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text),
        ))
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for RequestId {
    fn from(id: String) -> Self {
        Self(ShortStr::from(id))
    }
}

impl From<&str> for RequestId {
    fn from(id: &str) -> Self {
        Self(ShortStr::from(id))
    }
}

/// The `peer` field: the connection a relayed message is for (client →
/// server) or came from (server → client).
///
/// ```
/// use helios_protocol::PeerRef;
/// let p: PeerRef = serde_json::from_str(r#"{"name":"billing"}"#).unwrap();
/// assert_eq!(p, PeerRef::Name("billing".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerRef {
    /// A connection's `starlingId`.
    #[serde(rename = "id")]
    Id(String),
    /// A name claimed with `helios:identify`.
    #[serde(rename = "name")]
    Name(String),
}

/// A message of any of the three types.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Calls a method; expects exactly one [`Response`].
    Request(Request),
    /// Answers a [`Request`].
    Response(Response),
    /// One-way message.
    Notification(Notification),
}

impl Message {
    /// The wire name of this message's type.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::Request(_) => "request",
            Self::Response(_) => "response",
            Self::Notification(_) => "notification",
        }
    }
}

impl From<Request> for Message {
    fn from(r: Request) -> Self {
        Self::Request(r)
    }
}
impl From<Response> for Message {
    fn from(r: Response) -> Self {
        Self::Response(r)
    }
}
impl From<Notification> for Message {
    fn from(n: Notification) -> Self {
        Self::Notification(n)
    }
}

/// A `request` message.
///
/// ```
/// use helios_protocol::Request;
/// let req = Request::new("user:get", serde_json::json!({"id": 7}));
/// assert_eq!(req.method, "user:get");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Milliseconds since the epoch when the message was made.
    pub timestamp: u64,
    /// Correlates the response.
    pub id: RequestId,
    /// The method to call.
    pub method: ShortStr,
    /// The argument; `None` when the field was absent.
    pub payload: Option<Payload>,
    /// Relay target (client → server) or origin (server → client).
    pub peer: Option<PeerRef>,
    /// How long the caller waits, in milliseconds (a hint to the callee).
    pub timeout_ms: Option<u64>,
}

impl Request {
    /// A request with a fresh id.
    pub fn new(method: impl Into<ShortStr>, payload: Value) -> Self {
        Self {
            timestamp: now_ms(),
            id: RequestId::new(),
            method: method.into(),
            payload: Some(Payload::Value(payload)),
            peer: None,
            timeout_ms: None,
        }
    }
}

/// A `response` message.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Milliseconds since the epoch when the message was made.
    pub timestamp: u64,
    /// The id of the request this answers.
    pub id: RequestId,
    /// `data` on success, `error` on failure.
    pub result: Result<Payload, ErrorBody>,
    /// The peer that answered, for relayed requests.
    pub peer: Option<PeerRef>,
}

impl Response {
    /// A successful response.
    ///
    /// ```
    /// use helios_protocol::{RequestId, Response};
    /// let r = Response::ok(RequestId::new(), serde_json::json!(1));
    /// assert!(r.result.is_ok());
    /// ```
    pub fn ok(id: RequestId, data: impl Into<Payload>) -> Self {
        Self {
            timestamp: now_ms(),
            id,
            result: Ok(data.into()),
            peer: None,
        }
    }

    /// The outcome with `data` as a `Value`.
    ///
    /// # Errors
    /// The `error` the response carried, or `INVALID_MESSAGE_FORMAT` when
    /// `data` is JSON text nested deeper than a `Value` may be.
    pub fn into_result(self) -> Result<Value, ErrorBody> {
        self.result?.into_value().map_err(|e| {
            ErrorBody::new(
                ErrorCode::INVALID_MESSAGE_FORMAT,
                format!("response data is not a usable JSON value: {e}"),
            )
        })
    }

    /// A failed response.
    pub fn err(id: RequestId, error: ErrorBody) -> Self {
        Self {
            timestamp: now_ms(),
            id,
            result: Err(error),
            peer: None,
        }
    }

    /// A failed response with a code and a message.
    pub fn error(id: RequestId, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::err(id, ErrorBody::new(code, message))
    }
}

/// A `notification` message.
///
/// ```
/// use helios_protocol::Notification;
/// let n = Notification::new(Some("chat:lobby".into()), serde_json::json!({"text": "hi"}));
/// assert_eq!(n.topic.as_deref(), Some("chat:lobby"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Milliseconds since the epoch when the message was made.
    pub timestamp: u64,
    /// Routing topic: the room for room deliveries, the event name otherwise.
    pub topic: Option<String>,
    /// The content.
    pub data: Value,
    /// Relay target (client → server) or origin (server → client).
    pub peer: Option<PeerRef>,
    /// Position of this delivery in its room's history (room deliveries).
    pub offset: Option<u64>,
    /// Identifies the room's history generation; offsets compare only
    /// within one epoch.
    pub epoch: Option<String>,
    /// Set when the sender wants an acknowledgement (reliable delivery):
    /// the receiver acks this id and drops later copies with the same id.
    pub ack_id: Option<String>,
}

impl Notification {
    /// A plain notification.
    pub fn new(topic: Option<String>, data: Value) -> Self {
        Self {
            timestamp: now_ms(),
            topic,
            data,
            peer: None,
            offset: None,
            epoch: None,
            ack_id: None,
        }
    }
}
