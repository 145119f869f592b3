//! A microservice hub on Helios peer relay, and services and callers on
//! `starling`.
//!
//! Services are ordinary WebSocket clients of the hub:
//!
//! 1. a service claims its name with `helios:identify {name}`;
//! 2. it calls `hub:register {name}`; the hub then asks it for its manifest
//!    with a server → client request, `service:manifest` →
//!    `{name, methods}` (a service may also pass `methods` to
//!    `hub:register` itself and skip the round trip).
//!
//! Callers reach a service through the hub with `peer: {name}` on a
//! request (`RequestOptions::new().peer(PeerRef::Name("billing".into()))`).
//! The hub's relay hook checks every relayed request against the registry:
//!
//! - a name that no registered, live service holds: `PEER_NOT_FOUND`;
//! - a method the service's manifest does not list: `FORBIDDEN`, even if
//!   the service would answer it;
//! - otherwise the request is forwarded, and the service's answer (or its
//!   error code, unchanged) comes back to the caller.
//!
//! `hub:services` lists the registered services. A service that
//! disconnects is dropped from the registry.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7703").await?;
//! example_service_hub::app()
//!     .serve(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

mod client;
mod hub;
mod manifest;

pub use client::{ServiceBuilder, call_service};
pub use hub::app;
pub use manifest::{MANIFEST_METHOD, Manifest, Registration, ServiceInfo};
