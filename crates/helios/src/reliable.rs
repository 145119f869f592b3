//! Reliable delivery (the first Helios' acks and retries, done right): the
//! sender resends with backoff until the receiver acknowledges, and the
//! receiver drops copies it has already seen.
//!
//! - A notification carries `notification.ackId`; the receiver answers with
//!   a `helios:ack {ackId}` notification.
//! - A server→client request is its own acknowledgement: its response. It is
//!   resent with the same `requestId`; the client answers a copy it already
//!   answered with the same response and ignores a copy it is still working on.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use helios_protocol::{ErrorBody, ErrorCode, Message, Notification, Request};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::connection::Connection;

/// Topic of the acknowledgement of a reliable notification.
pub const ACK_TOPIC: &str = "helios:ack";

/// When to resend: after `first_delay`, then twice as long each time, at
/// most `max_attempts` sends in all.
///
/// ```
/// let r = helios::Retry::default();
/// assert_eq!(r.max_attempts, 5);
/// assert_eq!(r.delay(0), std::time::Duration::from_millis(500));
/// assert_eq!(r.delay(2), std::time::Duration::from_millis(2000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait before the first resend.
    pub first_delay: Duration,
    /// Sends in all, the first included.
    pub max_attempts: u32,
    /// Longest wait between two sends.
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(500),
            max_attempts: 5,
            max_delay: Duration::from_secs(8),
        }
    }
}

impl Retry {
    /// The wait after send number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Ids recently seen by a receiver, to drop duplicates (bounded).
pub(crate) struct SeenIds {
    order: VecDeque<String>,
    set: HashSet<String>,
    cap: usize,
}

impl SeenIds {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            order: VecDeque::new(),
            set: HashSet::new(),
            cap,
        }
    }

    /// `true` the first time an id is seen.
    pub(crate) fn first_time(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

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
            .result
    }
}

fn closed() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::from("CONNECTION_CLOSED"),
        "the connection closed before the acknowledgement",
    )
}
