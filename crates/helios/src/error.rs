//! Errors of the server library: what a handler returns, and what a bad
//! registration is refused with.

use std::fmt;

use helios_protocol::{ErrorBody, ErrorCode, MethodNameError};
use serde_json::Value;

/// The error a method handler (or middleware) returns; it becomes an error
/// response with its code.
///
/// ```
/// use helios::MethodError;
/// use helios_protocol::ErrorCode;
///
/// let e = MethodError::new(ErrorCode::FORBIDDEN, "admins only");
/// assert_eq!(e.code, ErrorCode::FORBIDDEN);
/// let e: MethodError = "database is down".into();
/// assert_eq!(e.code, ErrorCode::METHOD_ERROR);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MethodError {
    /// The `code` of the error response.
    pub code: ErrorCode,
    /// The `message` of the error response.
    pub message: String,
    /// Optional structured details.
    pub details: Option<Value>,
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

    /// A `METHOD_ERROR` with a message; for failures without a code of their own.
    pub fn internal(message: impl fmt::Display) -> Self {
        Self::new(ErrorCode::METHOD_ERROR, message.to_string())
    }

    /// Adds structured details.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The wire form.
    pub fn into_body(self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message,
            details: self.details,
        }
    }
}

impl fmt::Display for MethodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<ErrorBody> for MethodError {
    fn from(e: ErrorBody) -> Self {
        Self {
            code: e.code,
            message: e.message,
            details: e.details,
        }
    }
}

impl From<&str> for MethodError {
    fn from(message: &str) -> Self {
        Self::internal(message)
    }
}

impl From<String> for MethodError {
    fn from(message: String) -> Self {
        Self::new(ErrorCode::METHOD_ERROR, message)
    }
}

impl From<serde_json::Error> for MethodError {
    fn from(e: serde_json::Error) -> Self {
        Self::internal(e)
    }
}

/// A stream that did not complete fails the request with `STREAM_ERROR`
/// (docs/protocol.md), so a handler can use `?` on stream calls.
impl From<helios_protocol::StreamError> for MethodError {
    fn from(e: helios_protocol::StreamError) -> Self {
        Self::new(ErrorCode::from("STREAM_ERROR"), e.to_string())
    }
}

/// Why a method, event or pattern was refused at registration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name lies in a namespace reserved for built-ins.
    #[error("method {0:?} uses a reserved namespace (system, internal, stream, helios)")]
    Reserved(String),
    /// The name breaks the method-name rules of the configured parse mode.
    #[error("invalid method name {name:?}: {reason}")]
    InvalidName {
        /// The refused name.
        name: String,
        /// The broken rule.
        reason: MethodNameError,
    },
    /// A handler is already registered under this name.
    #[error("method {0:?} is already registered")]
    Duplicate(String),
    /// A glob pattern is malformed.
    #[error("invalid pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The refused pattern.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
