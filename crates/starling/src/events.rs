//! What happens to the connection over time: connects, losses, reconnects,
//! recoveries.

use std::time::Duration;

use helios_protocol::ErrorBody;
use tokio::sync::broadcast;

use crate::notifications::RecvError;
use crate::session::CloseInfo;

/// A change in the client's connection, from [`Client::events`](crate::Client::events).
///
/// A reconnect that recovers its session reads
/// `Disconnected` → `Reconnecting` (one per attempt) → `Connected` →
/// `Recovered`; one that gets a fresh session reads … `Connected` →
/// `SessionReset`. The client ends with `Closed`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A socket is up and the server's welcome arrived (the first
    /// connection, and every reconnect).
    Connected {
        /// The connection's id (the same as before after a recovery).
        starling_id: String,
        /// Whether the server restored the earlier session.
        recovered: bool,
    },
    /// The socket was lost unexpectedly; a reconnect follows when the close
    /// code allows it (see [`ReconnectPolicy`](crate::ReconnectPolicy)).
    Disconnected {
        /// The close code, when the server sent a close frame (`None`:
        /// abrupt loss).
        code: Option<u16>,
        /// The close reason, or what failed.
        reason: String,
    },
    /// Waiting `delay` before reconnect attempt `attempt` (1-based).
    Reconnecting {
        /// Attempt number, from 1.
        attempt: u32,
        /// The jittered backoff before it.
        delay: Duration,
    },
    /// The server restored the session: same `starlingId`, rooms, name and
    /// connection data; the room messages missed meanwhile are delivered
    /// first (duplicates dropped by room, epoch and offset).
    Recovered {
        /// The restored id.
        starling_id: String,
        /// Rooms whose history no longer covered the gap: some messages of
        /// these rooms are lost.
        missed_rooms: Vec<String>,
    },
    /// The session could not be recovered (no token yet, token expired or
    /// refused, session gone): the client started a fresh one and re-joined
    /// its rooms and re-claimed its `identify` name itself. Room messages
    /// published while away are not replayed.
    SessionReset {
        /// The id before the loss.
        previous_id: String,
        /// The new id.
        starling_id: String,
        /// Why the server refused recovery, when it said (`None`: the
        /// client had no valid token).
        reason: Option<String>,
    },
    /// Re-joining a room on a fresh session failed.
    ResubscribeFailed {
        /// The room.
        topic: String,
        /// What the server answered.
        error: ErrorBody,
    },
    /// Re-claiming the `identify` name on a fresh session failed (for
    /// example `NAME_TAKEN`).
    IdentifyFailed {
        /// The name.
        name: String,
        /// What the server answered.
        error: ErrorBody,
    },
    /// A fresh recovery token arrived (`starling:getToken`).
    TokenRefreshed {
        /// How long it is valid.
        expires_in: Duration,
    },
    /// The server has no session recovery (`starling:getToken` is
    /// `METHOD_NOT_FOUND`): reconnects will start fresh sessions.
    RecoveryUnavailable,
    /// The client is done: closed by the application, by a close code that
    /// forbids retrying, or after the last reconnect attempt. No event
    /// follows.
    Closed(CloseInfo),
}

/// A receiver of [`ClientEvent`]s (bounded ring of 256; a slow receiver gets
/// [`RecvError::Lagged`]). Ends after [`ClientEvent::Closed`].
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<ClientEvent>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<ClientEvent>) -> Self {
        Self { rx }
    }

    /// Waits for the next event.
    ///
    /// # Errors
    /// [`RecvError::Lagged`] when this receiver missed some;
    /// [`RecvError::Closed`] after the last event.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self) -> Result<ClientEvent, RecvError> {
        match self.rx.recv().await {
            Ok(e) => Ok(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Err(RecvError::Closed),
        }
    }
}
