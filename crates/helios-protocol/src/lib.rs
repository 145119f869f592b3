//! The Helios-Starling wire protocol: message types, validation and codecs.
//!
//! This crate does no I/O: bytes in, [`Message`] out, and back. The server
//! (`helios`) and the Rust client (`starling`) share it, so there is one
//! encoder and one validator.
//!
//! ```
//! use helios_protocol::{Codec, Encoding, Message, ParseMode};
//!
//! let frame = br#"{"protocol":"helios-starling","version":"1.0.0","timestamp":1,
//!     "type":"request","requestId":"9b2f7c1e-5d3a-4f6b-8c9d-0e1f2a3b4c5d",
//!     "method":"user:get","payload":{"id":7}}"#;
//! let msg = Encoding::Json.decode(frame, ParseMode::Strict).unwrap();
//! let Message::Request(req) = msg else { panic!("a request") };
//! assert_eq!(req.method, "user:get");
//!
//! // A frame that breaks a rule yields an error that still carries the id.
//! let bad = br#"{"protocol":"helios-starling","version":"1.0.0","timestamp":1,
//!     "type":"request","requestId":"9b2f7c1e-5d3a-4f6b-8c9d-0e1f2a3b4c5d",
//!     "method":"1bad"}"#;
//! let err = Encoding::Json.decode(bad, ParseMode::Strict).unwrap_err();
//! assert_eq!(err.code().as_str(), "INVALID_MESSAGE_FORMAT");
//! assert!(err.request_id.is_some());
//! ```

mod codec;
mod error;
mod message;
mod method;
mod payload;
mod reliable;
mod scan;
mod short_str;
mod stream;

/// Topics of the notifications the protocol itself uses.
pub mod topic {
    /// The first notification after the upgrade.
    pub const WELCOME: &str = "helios:welcome";
    /// An error not tied to a readable request.
    pub const ERROR: &str = "helios:error";
    /// Cancels an in-flight request, both ways.
    pub const CANCEL: &str = "helios:cancel";
    /// Acknowledges a reliable notification, both ways.
    pub const ACK: &str = "helios:ack";
}

pub use codec::{Codec, EncodeError, Encoding, FrameType, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};
pub use error::{CloseCode, DecodeError, DecodeErrorKind, ErrorBody, ErrorCode};
pub use message::{
    Message, Notification, PROTOCOL, PeerRef, Request, RequestId, Response, VERSION, now_ms,
};
pub use method::{
    MAX_METHOD_LEN, MethodNameError, ParseMode, RESERVED_NAMESPACES, is_reserved, namespace_of,
};
pub use payload::Payload;
pub use reliable::{Retry, SeenIds};
pub use short_str::ShortStr;
pub use stream::{
    IncomingStream, MAX_CHUNK_BYTES, STREAM_ABORT, STREAM_CHUNK, STREAM_CREDIT, STREAM_END,
    STREAM_OPEN, STREAM_STOP, STREAM_WINDOW, StreamError, StreamFrame, StreamInfo, StreamLink,
    StreamWriter, Streams,
};
