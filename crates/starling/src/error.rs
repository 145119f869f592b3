//! The ways a client call can fail, and the error a method handler returns.

use helios_protocol::{ErrorBody, ErrorCode};

/// Why a [`Client`](crate::Client) operation failed.
///
/// Sorted by who is at fault: the network or handshake
/// ([`Connect`](Self::Connect), [`Closed`](Self::Closed)), the clock
/// ([`Timeout`](Self::Timeout)), the caller ([`Cancelled`](Self::Cancelled),
/// [`Encode`](Self::Encode)), the server's answer ([`Server`](Self::Server),
/// [`Decode`](Self::Decode)) or a broken peer ([`Protocol`](Self::Protocol)).
///
/// ```
/// use starling::{ClientError, ErrorBody, ErrorCode};
/// let err = ClientError::Server(ErrorBody::new(ErrorCode::FORBIDDEN, "no"));
/// assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));
/// assert_eq!(ClientError::Timeout.code(), Some(ErrorCode::REQUEST_TIMEOUT));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection could not be established.
    #[error("cannot connect: {0}")]
    Connect(#[from] ConnectError),
    /// No response arrived within the request timeout. The client has sent
    /// `helios:cancel` so the server can drop the handler.
    ///
    /// The timeout is also sent as the request's `timeout` hint, so a server
    /// that enforces it may answer `REQUEST_TIMEOUT` first, which arrives as
    /// [`Server`](Self::Server). Match on [`code()`](Self::code) ==
    /// `REQUEST_TIMEOUT` to catch both.
    #[error("request timed out")]
    Timeout,
    /// The request was cancelled on this side (see
    /// [`PendingRequest::cancel`](crate::PendingRequest::cancel) and
    /// [`Client::cancel`](crate::Client::cancel)).
    #[error("request cancelled")]
    Cancelled,
    /// The server (or the relayed peer) answered with an error; its code is
    /// carried unchanged.
    #[error("server error {0}")]
    Server(ErrorBody),
    /// The connection is closed or closing; nothing more can be sent.
    #[error("connection closed")]
    Closed,
    /// The socket was lost while this request was in flight and the request
    /// is not safe to send again (see
    /// [`RequestOptions::retry_safe`](crate::RequestOptions::retry_safe)):
    /// the server may or may not have run it. Only with reconnect on; the
    /// client itself lives on.
    #[error("connection lost while the request was in flight")]
    ConnectionLost,
    /// A reliable notification was not acknowledged after every attempt.
    #[error("not acknowledged after {0} attempts")]
    NotAcknowledged(u32),
    /// The peer sent something that breaks the protocol (for example an
    /// undecodable response to this request).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A value could not be turned into JSON for sending.
    #[error("cannot encode payload: {0}")]
    Encode(#[source] serde_json::Error),
    /// A response could not be turned into the type the caller asked for.
    #[error("cannot decode response: {0}")]
    Decode(#[source] serde_json::Error),
}

impl ClientError {
    /// The protocol error code this failure corresponds to: the server's code
    /// for [`Server`](Self::Server), `REQUEST_TIMEOUT` for
    /// [`Timeout`](Self::Timeout), `REQUEST_CANCELLED` for
    /// [`Cancelled`](Self::Cancelled), `None` otherwise.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server(body) => Some(body.code.clone()),
            Self::Timeout => Some(ErrorCode::REQUEST_TIMEOUT),
            Self::Cancelled => Some(ErrorCode::REQUEST_CANCELLED),
            _ => None,
        }
    }
}

/// Why [`ClientBuilder::connect`](crate::ClientBuilder::connect) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not a valid `ws://` or `wss://` URL.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP connect, TLS or the HTTP upgrade failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The server selected a subprotocol this client did not offer.
    #[error("server selected unknown subprotocol {0:?}")]
    Subprotocol(String),
    /// The handshake or the welcome did not complete within the connect
    /// timeout.
    #[error("timed out")]
    Timeout,
    /// The server closed the connection before sending `helios:welcome`.
    #[error("connection closed before the welcome: {0}")]
    NoWelcome(String),
}

/// The error a method handler registered with
/// [`ClientBuilder::method`](crate::ClientBuilder::method) returns; it
/// becomes the `error` of the response.
///
/// ```
/// use starling::{ErrorCode, MethodError};
/// let e = MethodError::new(ErrorCode::FORBIDDEN, "not yours");
/// assert_eq!(e.code, ErrorCode::FORBIDDEN);
/// // Anything displayable converts with code METHOD_ERROR.
/// let e = MethodError::from_display("disk full");
/// assert_eq!(e.code, ErrorCode::METHOD_ERROR);
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MethodError {
    /// The code sent to the caller.
    pub code: ErrorCode,
    /// The human-readable message sent to the caller.
    pub message: String,
    /// Optional structured details.
    pub details: Option<serde_json::Value>,
}

impl MethodError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// A `METHOD_ERROR` carrying the text of any displayable error.
    pub fn from_display(err: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::METHOD_ERROR, err.to_string())
    }

    /// Adds structured details.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The wire form of this error.
    pub fn into_body(self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message,
            details: self.details,
        }
    }
}

impl From<ErrorBody> for MethodError {
    fn from(body: ErrorBody) -> Self {
        Self {
            code: body.code,
            message: body.message,
            details: body.details,
        }
    }
}

impl From<MethodError> for ErrorBody {
    fn from(err: MethodError) -> Self {
        err.into_body()
    }
}

/// A handler that calls the server and fails with the server's error passes
/// that error on unchanged; other client failures become `METHOD_ERROR`.
impl From<ClientError> for MethodError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Server(body) => body.into(),
            other => Self::from_display(other),
        }
    }
}

impl From<serde_json::Error> for MethodError {
    fn from(err: serde_json::Error) -> Self {
        Self::new(ErrorCode::INVALID_PAYLOAD, err.to_string())
    }
}
