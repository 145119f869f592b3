//! Peer relay: a request or notification with `peer: {id}` or
//! `peer: {name}` goes to that connection, and the answer comes back to the
//! caller under the caller's own `requestId`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use helios_protocol::{ErrorBody, ErrorCode, Notification, PeerRef, Request};
use serde_json::Value;

use crate::connection::Connection;
use crate::error::MethodError;
use crate::handler::Reply;
use crate::helios::Helios;

/// A message about to be relayed, for the relay hook.
#[derive(Debug, Clone)]
pub struct RelayRequest {
    /// The sending connection.
    pub from: Connection,
    /// The `peer` it named.
    pub target: PeerRef,
    /// The method, for requests.
    pub method: Option<String>,
    /// The topic, for notifications.
    pub topic: Option<String>,
    /// The payload (requests) or data (notifications).
    pub payload: Value,
}

/// What the relay hook decided (the `forward/reply/deny` of the first
/// Helios' `useProxy`).
#[derive(Debug, Clone)]
pub enum RelayDecision {
    /// Relay to the named peer.
    Forward,
    /// Answer the caller with this data instead (requests only).
    Reply(Value),
    /// Refuse with this error.
    Deny(MethodError),
}

pub(crate) type RelayHook =
    Arc<dyn Fn(RelayRequest) -> BoxFuture<'static, RelayDecision> + Send + Sync>;

fn not_found(peer: &PeerRef) -> MethodError {
    let what = match peer {
        PeerRef::Id(id) => format!("no connection with id {id:?}"),
        PeerRef::Name(n) => format!("no connection named {n:?}"),
    };
    MethodError::new(ErrorCode::PEER_NOT_FOUND, what)
}

impl Helios {
    /// The live connection a peer reference names.
    pub fn resolve_peer(&self, peer: &PeerRef) -> Option<Connection> {
        match peer {
            PeerRef::Id(id) => self.connection(id),
            PeerRef::Name(name) => self
                .names()
                .resolve(name)
                .and_then(|id| self.connection(&id)),
        }
    }

    async fn relay_decision(&self, req: RelayRequest) -> RelayDecision {
        match self.relay_hook() {
            Some(hook) => hook(req).await,
            None => RelayDecision::Forward,
        }
    }

    /// Relays a request and returns the peer's answer (its error code
    /// unchanged), `PEER_NOT_FOUND` or `REQUEST_TIMEOUT`.
    pub(crate) fn relay_request(
        &self,
        from: Connection,
        req: Request,
        target: PeerRef,
        timeout: Duration,
    ) -> impl Future<Output = Reply> + Send + 'static {
        let helios = self.clone();
        async move {
            let decision = helios
                .relay_decision(RelayRequest {
                    from: from.clone(),
                    target: target.clone(),
                    method: Some(req.method.clone()),
                    topic: None,
                    payload: req.payload.clone().unwrap_or(Value::Null),
                })
                .await;
            match decision {
                RelayDecision::Forward => {}
                RelayDecision::Reply(v) => return Ok(v),
                RelayDecision::Deny(e) => return Err(e),
            }
            let peer = helios
                .resolve_peer(&target)
                .ok_or_else(|| not_found(&target))?;
            let mut fwd = Request::new(req.method, Value::Null);
            fwd.payload = req.payload;
            fwd.peer = Some(PeerRef::Id(from.id().to_owned()));
            fwd.timeout_ms = Some(timeout.as_millis() as u64);
            let resp = peer.send_request(fwd, timeout).await;
            resp.result.map_err(|e| {
                if e.code.as_str() == "CONNECTION_CLOSED" {
                    MethodError::new(
                        ErrorCode::PEER_NOT_FOUND,
                        "the peer disconnected before answering",
                    )
                } else {
                    MethodError::from(e)
                }
            })
        }
    }

    /// Relays a notification.
    pub(crate) async fn relay_notification(
        &self,
        from: &Connection,
        n: Notification,
        target: PeerRef,
    ) -> Result<(), ErrorBody> {
        let decision = self
            .relay_decision(RelayRequest {
                from: from.clone(),
                target: target.clone(),
                method: None,
                topic: n.topic.clone(),
                payload: n.data.clone(),
            })
            .await;
        match decision {
            RelayDecision::Forward | RelayDecision::Reply(_) => {}
            RelayDecision::Deny(e) => return Err(e.into_body()),
        }
        let peer = self
            .resolve_peer(&target)
            .ok_or_else(|| not_found(&target).into_body())?;
        peer.notify_from(n.topic, n.data, PeerRef::Id(from.id().to_owned()))
            .await
            .map_err(|_| not_found(&target).into_body())
    }
}
