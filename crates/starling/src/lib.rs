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
//! Not yet implemented: automatic reconnect with session recovery
//! (`?recover=TOKEN`). The socket task is independent of the shared state
//! (pending requests, rooms, receivers) so a supervisor can add it later.

mod builder;
mod client;
mod connection;
mod error;
mod frame;
mod methods;
mod notifications;
mod request;
mod session;
mod shared;
mod subscription;

pub use builder::ClientBuilder;
pub use client::{Client, Published, RecoveryToken};
pub use error::{ClientError, ConnectError, MethodError};
pub use notifications::{Notifications, RecvError};
pub use request::{PendingRequest, RequestOptions};
pub use session::{CloseInfo, Welcome};
pub use subscription::Subscription;

pub use helios_protocol::{Encoding, ErrorBody, ErrorCode, Notification, PeerRef, RequestId};

/// The wire protocol crate this client speaks, re-exported.
pub use helios_protocol as protocol;
