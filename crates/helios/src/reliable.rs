//! Reliable delivery (the first Helios' acks and retries, done right): the
//! sender resends with backoff until the receiver acknowledges, and the
//! receiver drops copies it has already seen.
//!
//! - A notification carries `notification.ackId`; the receiver answers with
//!   a `helios:ack {ackId}` notification.
//! - A server→client request is its own acknowledgement: its response. It is
//!   resent with the same `requestId`; the client answers a copy it already
//!   answered with the same response and ignores a copy it is still working on.

use std::time::Duration;

pub use helios_protocol::Retry;
pub(crate) use helios_protocol::SeenIds;
use helios_protocol::{ErrorBody, ErrorCode, Message, Notification, Request};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::connection::Connection;

/// Topic of the acknowledgement of a reliable notification.
pub const ACK_TOPIC: &str = helios_protocol::topic::ACK;

pub(crate) fn ack_for(ack_id: &str) -> Notification {
    Notification::new(Some(ACK_TOPIC.to_owned()), json!({ "ackId": ack_id }))
}

impl Connection {
    /// Sends a notification until the client acknowledges it, resending
    /// with backoff; the client drops duplicates by `ackId`.
    ///
    /// ```no_run
    /// # async fn demo(conn: helios::Connection) -> Result<(), helios_protocol::ErrorBody> {
    /// conn.notify_reliable("order:shipped", serde_json::json!({"id": 7}), helios::Retry::default()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `REQUEST_TIMEOUT` when no acknowledgement came after every attempt,
    /// `CONNECTION_CLOSED` when the connection ended first.
    pub async fn notify_reliable(
        &self,
        topic: &str,
        data: Value,
        retry: Retry,
    ) -> Result<(), ErrorBody> {
        let ack_id = uuid::Uuid::new_v4().to_string();
        let mut n = Notification::new(Some(topic.to_owned()), data);
        n.ack_id = Some(ack_id.clone());
        let Some(frame) = self.encode(&Message::Notification(n)) else {
            return Err(ErrorBody::new(ErrorCode::METHOD_ERROR, "cannot encode"));
        };
        let (tx, mut rx) = oneshot::channel();
        self.expect_ack(ack_id.clone(), tx);
        let result = async {
            for attempt in 0..retry.max_attempts.max(1) {
                if self.send_frame(frame.clone()).await.is_err() {
                    return Err(closed());
                }
                match tokio::time::timeout(retry.delay(attempt), &mut rx).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(_)) => return Err(closed()),
                    Err(_) => continue,
                }
            }
            Err(ErrorBody::new(
                ErrorCode::REQUEST_TIMEOUT,
                format!("not acknowledged after {} attempts", retry.max_attempts),
            ))
        }
        .await;
        self.forget_ack(&ack_id);
        result
    }

    /// Calls a method on the client, resending the same request (same
    /// `requestId`) with backoff until an answer comes or `timeout` passes.
    ///
    /// # Errors
    /// As [`request`](Connection::request).
    pub async fn request_reliable(
        &self,
        method: &str,
        payload: Value,
        retry: Retry,
        timeout: Duration,
    ) -> Result<Value, ErrorBody> {
        let mut req = Request::new(method, payload);
        req.timeout_ms = Some(timeout.as_millis() as u64);
        self.send_request_retrying(req, timeout, Some(retry))
            .await
            .into_result()
    }
}

fn closed() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::from("CONNECTION_CLOSED"),
        "the connection closed before the acknowledgement",
    )
}
