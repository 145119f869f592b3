//! A room subscription: the room's deliveries, and leaving the room.

use helios_protocol::Notification;
use serde_json::json;
use tokio::sync::broadcast;

use crate::client::Client;
use crate::error::ClientError;
use crate::frame;
use crate::notifications::{RecvError, recv};

/// The method that joins a room.
pub(crate) const SUBSCRIBE: &str = "helios:subscribe";
/// The method that leaves a room.
pub(crate) const UNSUBSCRIBE: &str = "helios:unsubscribe";

/// The notifications of one room (those whose `topic` is the room), from
/// [`Client::subscribe`].
///
/// Several `Subscription`s to the same room share one server subscription;
/// the room is left at the server when the last of them is
/// [unsubscribed](Self::unsubscribe) or dropped. Deliveries carry the room's
/// `offset` and `epoch`. The lag policy is the one of
/// [`Notifications`](crate::Notifications).
///
/// ```no_run
/// # async fn demo() -> Result<(), starling::ClientError> {
/// let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
/// let mut lobby = client.subscribe("chat:lobby").await?;
/// if let Ok(msg) = lobby.recv().await {
///     println!("#{:?} {}", msg.offset, msg.data);
/// }
/// lobby.unsubscribe().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Subscription {
    topic: String,
    rx: broadcast::Receiver<Notification>,
    client: Client,
    /// Cleared once the room was left explicitly.
    joined: bool,
}

impl Subscription {
    pub(crate) fn new(
        topic: String,
        rx: broadcast::Receiver<Notification>,
        client: Client,
    ) -> Self {
        Self {
            topic,
            rx,
            client,
            joined: true,
        }
    }

    /// The room's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Waits for the room's next notification.
    ///
    /// # Errors
    /// [`RecvError::Lagged`] when this subscription missed some;
    /// [`RecvError::Closed`] once the connection has ended.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self) -> Result<Notification, RecvError> {
        recv(&mut self.rx).await
    }

    /// Leaves the room, and waits for the server to confirm when this was
    /// the last subscription to it.
    ///
    /// # Errors
    /// Whatever the `helios:unsubscribe` call fails with.
    pub async fn unsubscribe(mut self) -> Result<(), ClientError> {
        self.joined = false;
        if self.client.shared().leave_room(&self.topic) {
            self.client
                .request(UNSUBSCRIBE, json!({ "topic": self.topic }))
                .await?;
        }
        Ok(())
    }

    /// Forgets the room locally without telling the server (the subscribe
    /// call failed, so there is nothing to leave).
    pub(crate) fn abandon(mut self) {
        self.joined = false;
        self.client.shared().leave_room(&self.topic);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.joined && self.client.shared().leave_room(&self.topic) {
            // Fire and forget: nobody waits for the answer, and a late
            // response to an unknown id is ignored by the connection.
            let link = self.client.link();
            match frame::request(link.encoding, UNSUBSCRIBE, json!({ "topic": self.topic })) {
                Ok(frame) => link.send_now(frame),
                Err(e) => tracing::error!(error = %e, "cannot encode helios:unsubscribe"),
            }
        }
    }
}
