//! Error codes carried in responses, decode failures, and WebSocket close codes.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `code` of an error response.
///
/// The five codes of the spec and the project's own are associated constants;
/// any other string (a peer's or a backend's own code) is carried unchanged.
///
/// ```
/// use helios_protocol::ErrorCode;
/// assert_eq!(ErrorCode::METHOD_NOT_FOUND.as_str(), "METHOD_NOT_FOUND");
/// assert_eq!(ErrorCode::from("MY_APP_ERROR").as_str(), "MY_APP_ERROR");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(Cow<'static, str>);

impl ErrorCode {
    /// The message does not conform to the protocol.
    pub const INVALID_MESSAGE_FORMAT: Self = Self::new_static("INVALID_MESSAGE_FORMAT");
    /// No handler is registered for the method.
    pub const METHOD_NOT_FOUND: Self = Self::new_static("METHOD_NOT_FOUND");
    /// The handler failed (returned an error without a code, or panicked).
    pub const METHOD_ERROR: Self = Self::new_static("METHOD_ERROR");
    /// The request did not complete within its timeout.
    pub const REQUEST_TIMEOUT: Self = Self::new_static("REQUEST_TIMEOUT");
    /// The request was cancelled by its caller or by the server.
    pub const REQUEST_CANCELLED: Self = Self::new_static("REQUEST_CANCELLED");
    /// The connection is not authenticated.
    pub const UNAUTHORIZED: Self = Self::new_static("UNAUTHORIZED");
    /// The connection is authenticated but not allowed to do this.
    pub const FORBIDDEN: Self = Self::new_static("FORBIDDEN");
    /// The relay target (`peer`) is not connected.
    pub const PEER_NOT_FOUND: Self = Self::new_static("PEER_NOT_FOUND");
    /// The connection sends faster than its rate limit.
    pub const RATE_LIMITED: Self = Self::new_static("RATE_LIMITED");
    /// The frame is larger than the configured maximum.
    pub const PAYLOAD_TOO_LARGE: Self = Self::new_static("PAYLOAD_TOO_LARGE");
    /// The connection has too many requests in flight.
    pub const TOO_MANY_REQUESTS: Self = Self::new_static("TOO_MANY_REQUESTS");
    /// A payload did not match the type the handler asked for.
    pub const INVALID_PAYLOAD: Self = Self::new_static("INVALID_PAYLOAD");
    /// The server is shutting down and accepts no new requests.
    pub const SHUTTING_DOWN: Self = Self::new_static("SHUTTING_DOWN");
    /// The peer name is already claimed by another connection.
    pub const NAME_TAKEN: Self = Self::new_static("NAME_TAKEN");
    /// The message broker (cluster backplane) is unavailable.
    pub const BROKER_UNAVAILABLE: Self = Self::new_static("BROKER_UNAVAILABLE");

    const fn new_static(code: &'static str) -> Self {
        Self(Cow::Borrowed(code))
    }

    /// The code as a string, e.g. for metric labels.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&'static str> for ErrorCode {
    fn from(code: &'static str) -> Self {
        Self(Cow::Borrowed(code))
    }
}

impl From<String> for ErrorCode {
    fn from(code: String) -> Self {
        Self(Cow::Owned(code))
    }
}

/// The `error` object of a failed response.
///
/// ```
/// use helios_protocol::{ErrorBody, ErrorCode};
/// let err = ErrorBody::new(ErrorCode::FORBIDDEN, "not your room");
/// assert_eq!(err.code, ErrorCode::FORBIDDEN);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable description.
    pub message: String,
    /// Optional structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ErrorBody {
    /// An error with a code and a message and no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Adds structured details.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// Why a frame could not be decoded into a [`Message`](crate::Message).
///
/// Sorted by fault, after rustls: the bytes are not a message at all
/// ([`Malformed`](DecodeErrorKind::Malformed)), the message breaks a protocol
/// rule ([`Violation`](DecodeErrorKind::Violation)), or it is too large
/// ([`LimitExceeded`](DecodeErrorKind::LimitExceeded)).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct DecodeError {
    /// What kind of failure this is.
    pub kind: DecodeErrorKind,
    /// A human-readable explanation naming the offending field.
    pub message: String,
    /// The `requestId` of the offending message, when it could be read, so
    /// the error response can be correlated by the sender.
    pub request_id: Option<String>,
}

impl DecodeError {
    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        Self {
            kind: DecodeErrorKind::Malformed,
            message: message.into(),
            request_id: None,
        }
    }

    pub(crate) fn violation(message: impl Into<String>) -> Self {
        Self {
            kind: DecodeErrorKind::Violation,
            message: message.into(),
            request_id: None,
        }
    }

    /// A frame of `len` bytes exceeds the limit of `max` bytes.
    pub fn too_large(len: usize, max: usize) -> Self {
        Self {
            kind: DecodeErrorKind::LimitExceeded { len, max },
            message: format!("frame of {len} bytes exceeds the limit of {max} bytes"),
            request_id: None,
        }
    }

    pub(crate) fn with_request_id(mut self, id: Option<String>) -> Self {
        self.request_id = id;
        self
    }

    /// The error code an error response for this failure carries.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            DecodeErrorKind::LimitExceeded { .. } => ErrorCode::PAYLOAD_TOO_LARGE,
            _ => ErrorCode::INVALID_MESSAGE_FORMAT,
        }
    }

    /// The error body to send back.
    pub fn to_error_body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.message.clone())
    }
}

/// The kinds of [`DecodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Not parseable as a message object at all (not JSON, not an object).
    Malformed,
    /// A message object that breaks a protocol rule (missing or mistyped
    /// field, wrong protocol, unknown type, bad method name).
    Violation,
    /// The frame is larger than allowed.
    LimitExceeded {
        /// Size of the frame.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

impl DecodeErrorKind {
    /// A short stable label for logs and metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Violation => "violation",
            Self::LimitExceeded { .. } => "limit_exceeded",
        }
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes used by Helios (documented in `docs/protocol.md`).
///
/// 4000–4099 are terminal (do not reconnect with the same credentials);
/// 4100–4199 are transient (reconnect, with recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1008: policy violation (too many invalid messages).
    PolicyViolation,
    /// 1009: a frame exceeded the maximum message size.
    MessageTooBig,
    /// 1011: an internal error.
    InternalError,
    /// 4001: authentication failed or expired.
    Unauthorized,
    /// 4003: forbidden.
    Forbidden,
    /// 4008: the connection could not keep up with its outbound traffic.
    SlowConsumer,
    /// 4029: the message rate limit was exceeded repeatedly.
    RateLimited,
    /// 4100: the health check saw no pong in time.
    PingTimeout,
    /// 4101: the session was taken over by a newer connection.
    SessionReplaced,
}

impl CloseCode {
    /// The numeric close code.
    pub const fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::PolicyViolation => 1008,
            Self::MessageTooBig => 1009,
            Self::InternalError => 1011,
            Self::Unauthorized => 4001,
            Self::Forbidden => 4003,
            Self::SlowConsumer => 4008,
            Self::RateLimited => 4029,
            Self::PingTimeout => 4100,
            Self::SessionReplaced => 4101,
        }
    }

    /// The close reason sent with the code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal closure",
            Self::GoingAway => "server shutting down",
            Self::PolicyViolation => "too many invalid messages",
            Self::MessageTooBig => "message too big",
            Self::InternalError => "internal error",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::SlowConsumer => "slow consumer",
            Self::RateLimited => "rate limit exceeded",
            Self::PingTimeout => "ping timeout",
            Self::SessionReplaced => "session replaced",
        }
    }
}
