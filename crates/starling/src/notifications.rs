//! Receiving notifications: every one, or one room's.

use futures_util::Stream;
use helios_protocol::Notification;
use tokio::sync::broadcast;

/// Why a notification receiver returned no notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// This receiver fell behind and missed this many notifications; the
    /// next call returns the oldest one still buffered.
    #[error("receiver lagged, {0} notifications dropped")]
    Lagged(u64),
    /// The connection ended and everything buffered has been read.
    #[error("connection closed")]
    Closed,
}

pub(crate) async fn recv(
    rx: &mut broadcast::Receiver<Notification>,
) -> Result<Notification, RecvError> {
    match rx.recv().await {
        Ok(n) => Ok(n),
        Err(broadcast::error::RecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
        Err(broadcast::error::RecvError::Closed) => Err(RecvError::Closed),
    }
}

/// Every notification the server sends this client (room deliveries,
/// events, relayed peer notifications), from the moment it was created.
/// Returned by [`Client::notifications`](crate::Client::notifications).
/// `helios:welcome` and `helios:cancel` are handled by the client and not
/// delivered here.
///
/// # Lag policy
///
/// Each receiver reads from a bounded ring (sizes set with
/// [`ClientBuilder::notification_capacity`](crate::ClientBuilder::notification_capacity)
/// and [`ClientBuilder::room_capacity`](crate::ClientBuilder::room_capacity)).
/// The connection never waits for a slow receiver: when a receiver falls a
/// full ring behind, the oldest notifications are dropped *for that
/// receiver*, and its next `recv` returns [`RecvError::Lagged`] with the
/// number it missed; the one after returns the oldest still kept. Other
/// receivers and requests are unaffected.
///
/// ```no_run
/// # async fn demo() -> Result<(), starling::ClientError> {
/// let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
/// let mut notes = client.notifications();
/// while let Ok(note) = notes.recv().await {
///     println!("{:?}: {}", note.topic, note.data);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Notifications {
    rx: broadcast::Receiver<Notification>,
}

impl Notifications {
    pub(crate) fn new(rx: broadcast::Receiver<Notification>) -> Self {
        Self { rx }
    }

    /// Waits for the next notification.
    ///
    /// # Errors
    /// [`RecvError::Lagged`] when this receiver missed some;
    /// [`RecvError::Closed`] once the connection has ended and the buffer is
    /// empty.
    ///
    /// # Cancel safety
    /// Cancel safe: a notification is never lost by dropping this future.
    pub async fn recv(&mut self) -> Result<Notification, RecvError> {
        recv(&mut self.rx).await
    }

    /// A [`Stream`] of notifications. Lag is reported as an `Err` item; the
    /// stream ends when the connection does.
    pub fn into_stream(self) -> impl Stream<Item = Result<Notification, RecvError>> + Send {
        futures_util::stream::unfold(self, |mut me| async move {
            match me.recv().await {
                Err(RecvError::Closed) => None,
                item => Some((item, me)),
            }
        })
    }
}
