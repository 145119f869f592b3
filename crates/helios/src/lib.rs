//! Helios: a real-time messaging server library.
//!
//! One WebSocket per client carries requests both ways, notifications,
//! room deliveries and relayed peer messages, in the Helios-Starling
//! protocol (see `docs/protocol.md`).
//!
//! ```no_run
//! use helios::{Context, Helios, MethodError};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct NewUser { name: String }
//!
//! async fn create_user(ctx: Context<NewUser>) -> Result<serde_json::Value, MethodError> {
//!     Ok(serde_json::json!({ "id": 1, "name": ctx.payload.name }))
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let helios = Helios::builder().method("user:create", create_user).build();
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:7700").await?;
//!     helios.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! }
//! ```

mod auth;
mod broker;
#[cfg(feature = "broker-contract")]
pub mod broker_contract;
mod builtins;
mod cluster;
mod config;
mod connection;
mod context;
mod cork;
mod error;
mod glob;
mod handler;
mod health;
mod helios;
mod hibernate;
mod listener;
mod memory_broker;
mod metrics;
mod middleware;
mod names;
mod outbox;
mod ratelimit;
mod registry;
mod relay;
mod reliable;
mod rooms;
mod router;
mod server;
mod session;
mod socket;
mod streams;
mod tls;
mod woken;

pub use auth::{Auth, AuthRejection, HandshakeRequest};
pub use broker::{
    Broker, BrokerError, BrokerHandler, History, Publication, PublishOptions, PublishResult,
    StreamPosition,
};
pub use cluster::{
    BusError, Cluster, DEFAULT_NODE_TTL, MemoryCluster, MemoryNode, NodeBus, NodeHandler,
    PeerDirectory, PeerLocation, PresenceStore,
};
pub use config::Config;
pub use connection::{CANCEL_TOPIC, Connection, ERROR_TOPIC, SendError, WELCOME_TOPIC};
pub use context::Context;
pub use error::{MethodError, RegisterError};
pub use glob::Pattern;
pub use handler::{EventHandler, IntoEventOutcome, IntoReply, MethodHandler, Reply};
pub use health::{HealthEvent, HealthEventKind};
pub use helios::{Builder, Helios, Namespace};
pub use helios_protocol::{IncomingStream, StreamError, StreamInfo, StreamWriter};
pub use hibernate::{HibernatingSocket, SocketReader, SocketWriter};
pub use listener::ServeOptions;
pub use memory_broker::{DEFAULT_POSITION_TTL, MemoryBroker};
pub use metrics::{MessageKind, Metrics, Rejection};
pub use middleware::{Middleware, Next};
pub use names::MAX_NAME_LEN;
pub use ratelimit::RateLimit;
pub use relay::{RelayDecision, RelayRequest};
pub use reliable::{ACK_TOPIC, Retry};
pub use rooms::{
    Access, MAX_TOPIC_LEN, RoomAction, RoomEvent, RoomEventKind, RoomRequest, RoomRule, check_topic,
};
pub use router::MethodOptions;
pub use server::{UpgradeRejection, accept_key, websocket_builder};
pub use session::{
    MIN_SECRET_LEN, MemorySessionStore, RecoveryConfig, SecretTooShort, SessionSnapshot,
    SessionStore,
};
pub use tls::{TlsConfig, TlsError};

/// The wire protocol crate, re-exported.
pub use helios_protocol as protocol;
