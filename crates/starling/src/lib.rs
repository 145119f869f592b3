//! `starling`: the Rust client for Helios.
//!
//! One WebSocket to a Helios server carries requests in both directions,
//! one-way notifications, pub/sub rooms and requests relayed to other peers.
//! Messages use the shared codec of [`helios_protocol`] (JSON text frames,
//! or MessagePack when negotiated).
//!
//! ```no_run
//! use serde_json::json;
//! use starling::{Client, MethodError};
//!
//! # async fn demo() -> Result<(), starling::ClientError> {
//! // Connect, serving one method the server may call on us.
//! let client = Client::builder("ws://127.0.0.1:7700/ws")
//!     .method("client:info", |_: serde_json::Value| async move {
//!         Ok::<_, MethodError>(json!({"os": "linux"}))
//!     })
//!     .connect()
//!     .await?;
//!
//! // Request/response.
//! let echoed = client.request("system:echo", json!({"a": 1})).await?;
//!
//! // Rooms.
//! let mut lobby = client.subscribe("chat:lobby").await?;
//! client.publish("chat:lobby", json!({"text": "hello"})).await?;
//! let delivery = lobby.recv().await;
//!
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! One task owns the socket: it reads
//! frames, writes what the handles queue on a bounded channel, routes
//! responses to the pending request (a map of request id → one-shot),
//! runs server → client requests as tasks, and fans notifications out to
//! bounded receivers. Dropping a request future before its answer sends
//! `helios:cancel`; so does a request timeout.
//!
//! # Reconnect and session recovery
//!
//! Opt in with [`ClientBuilder::reconnect`]: after an unexpected loss of
//! the socket a supervisor task dials again with jittered exponential
//! backoff ([`ReconnectPolicy`]) and the same shared state (rooms,
//! receivers, pending requests). With a recovery token (fetched with
//! `starling:getToken` after every connect and refreshed at two thirds of its
//! lifetime) it reconnects with `?recover=TOKEN&since=POSITIONS`, so the
//! server restores the session and replays the missed room messages; without
//! one it starts a fresh session and re-joins rooms and its name itself.
//! Requests in flight at the loss are re-sent when retry-safe
//! ([`RequestOptions::retry_safe`]) and fail with
//! [`ClientError::ConnectionLost`] otherwise. [`Client::events`] reports
//! every step ([`ClientEvent`]).
//!
//! # Reliable delivery
//!
//! Notifications carrying an `ackId` are acknowledged (`helios:ack`) and
//! delivered once; a server request resent under the same `requestId` is
//! not run twice. [`Client::notify_reliable`] resends until the server
//! acknowledges.

mod builder;
mod client;
mod connection;
mod dial;
mod error;
mod events;
mod frame;
mod methods;
mod notifications;
mod reconnect;
mod reliable;
mod request;
mod session;
mod shared;
mod streams;
mod subscription;

pub use builder::ClientBuilder;
pub use client::{Client, Published, RecoveryToken};
pub use error::{ClientError, ConnectError, MethodError};
pub use events::{ClientEvent, Events};
pub use notifications::{Notifications, RecvError};
pub use reconnect::ReconnectPolicy;
pub use reliable::Retry;
pub use request::{PendingRequest, RequestOptions};
pub use session::{CloseInfo, Welcome};
pub use subscription::Subscription;

pub use helios_protocol::{
    Encoding, ErrorBody, ErrorCode, IncomingStream, Notification, PeerRef, RequestId, StreamError,
    StreamInfo, StreamWriter,
};

/// The wire protocol crate this client speaks, re-exported.
pub use helios_protocol as protocol;
