//! Peer relay: a request or notification with `peer: {id}` or
//! `peer: {name}` goes to that connection, and the answer comes back to the
//! caller under the caller's own `requestId`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use helios_protocol::{ErrorBody, ErrorCode, Notification, Payload, PeerRef, Request};
use serde_json::Value;

use crate::connection::Connection;
use crate::error::MethodError;
use crate::handler::{Outcome, Reply, payload_misfit};
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

/// What goes to a peer on another node.
enum RemoteMessage<'a> {
    Request(&'a Request),
    Notification(&'a Notification),
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

    /// Where a peer not on this node lives, through the cluster directory.
    async fn locate_remote(&self, peer: &PeerRef) -> Result<(String, String), MethodError> {
        let Some(cluster) = self.cluster() else {
            return Err(not_found(peer));
        };
        let unavailable =
            |e: crate::BrokerError| MethodError::new(ErrorCode::BROKER_UNAVAILABLE, e.to_string());
        let found = match peer {
            PeerRef::Id(id) => cluster
                .directory
                .locate(id)
                .await
                .map_err(unavailable)?
                .map(|node| (id.clone(), node)),
            PeerRef::Name(name) => cluster
                .directory
                .resolve_name(name)
                .await
                .map_err(unavailable)?
                .map(|l| (l.conn_id, l.node_id)),
        };
        match found {
            // An entry naming this node for a connection it does not have
            // is stale (the connection just ended).
            Some((_, node)) if node == cluster.directory.node_id() => Err(not_found(peer)),
            Some(found) => Ok(found),
            None => Err(not_found(peer)),
        }
    }

    /// Relays to a peer on another node over the node bus; the answer (or
    /// the peer's error, unchanged) comes back the same way. Dropping the
    /// future before the answer forwards a cancel to the peer's node.
    async fn relay_remote(
        &self,
        from: &Connection,
        target: &PeerRef,
        msg: RemoteMessage<'_>,
        timeout: Duration,
    ) -> Reply {
        let (conn_id, node) = self.locate_remote(target).await?;
        let Some(cluster) = self.cluster() else {
            return Err(not_found(target));
        };
        let relay = uuid::Uuid::new_v4().simple().to_string();
        let body = match msg {
            RemoteMessage::Request(req) => serde_json::json!({
                "kind": "request",
                "relay": relay,
                "to": conn_id,
                "from": from.id(),
                "method": req.method,
                "payload": req.payload,
                "timeoutMs": timeout.as_millis() as u64,
            }),
            RemoteMessage::Notification(n) => serde_json::json!({
                "kind": "notify",
                "to": conn_id,
                "from": from.id(),
                "topic": n.topic,
                "data": n.data,
            }),
        };
        let mut cancel = crate::cluster::RemoteCancel {
            bus: cluster.bus.clone(),
            node: node.clone(),
            relay: matches!(msg, RemoteMessage::Request(_)).then_some(relay),
        };
        // The peer's node answers REQUEST_TIMEOUT itself at `timeout`; the
        // margin covers the trip.
        let answer = cluster
            .bus
            .request(&node, body, timeout + Duration::from_secs(1))
            .await;
        cancel.relay = None;
        match answer {
            Ok(v) => {
                if let Some(e) = v.get("error") {
                    let body: ErrorBody = serde_json::from_value(e.clone()).unwrap_or_else(|_| {
                        ErrorBody::new(ErrorCode::METHOD_ERROR, "malformed answer from a node")
                    });
                    Err(MethodError::from(body))
                } else {
                    Ok(v.get("ok").cloned().unwrap_or(Value::Null))
                }
            }
            Err(crate::BusError::NoSuchNode) => Err(not_found(target)),
            Err(crate::BusError::Timeout) => Err(MethodError::new(
                ErrorCode::REQUEST_TIMEOUT,
                format!("no response within {} ms", timeout.as_millis()),
            )),
            Err(crate::BusError::Broker(e)) => Err(MethodError::new(
                ErrorCode::BROKER_UNAVAILABLE,
                e.to_string(),
            )),
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
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let helios = self.clone();
        async move {
            // The hook sees a `Value`: parsed only when there is a hook.
            if helios.relay_hook().is_some() {
                let payload = match req.payload.clone().map(Payload::into_value) {
                    Some(Ok(v)) => v,
                    None => Value::Null,
                    Some(Err(e)) => return Err(payload_misfit(&req.method, e)),
                };
                let decision = helios
                    .relay_decision(RelayRequest {
                        from: from.clone(),
                        target: target.clone(),
                        method: Some(req.method.to_string()),
                        topic: None,
                        payload,
                    })
                    .await;
                match decision {
                    RelayDecision::Forward => {}
                    RelayDecision::Reply(v) => return Ok(Payload::Value(v)),
                    RelayDecision::Deny(e) => return Err(e),
                }
            }
            let Some(peer) = helios.resolve_peer(&target) else {
                return helios
                    .relay_remote(&from, &target, RemoteMessage::Request(&req), timeout)
                    .await
                    .map(Payload::Value);
            };
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
        let Some(peer) = self.resolve_peer(&target) else {
            let timeout = self.config().request_timeout;
            return self
                .relay_remote(from, &target, RemoteMessage::Notification(&n), timeout)
                .await
                .map(|_| ())
                .map_err(MethodError::into_body);
        };
        peer.notify_from(n.topic, n.data, PeerRef::Id(from.id().to_owned()))
            .await
            .map_err(|_| not_found(&target).into_body())
    }
}
