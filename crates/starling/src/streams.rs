//! Streams on the client's side: how the client sends stream frames (the
//! wire format and the stream table are `helios_protocol`'s, shared with
//! the server).

use std::future::Future;
use std::pin::Pin;

use helios_protocol::{Encoding, Message, Notification, StreamFrame, StreamLink};
use tokio::sync::mpsc;
use tokio_websockets::Message as WsMessage;

use crate::connection::Command;

/// Sends stream frames through the connection task's queue. It holds the
/// queue weakly, so streams never keep a dropped client's socket open.
pub(crate) struct StreamSender {
    pub(crate) commands: mpsc::WeakSender<Command>,
    pub(crate) encoding: Encoding,
}

/// A stream frame as a notification frame of the connection's encoding.
pub(crate) fn encode(encoding: Encoding, frame: &StreamFrame) -> Option<WsMessage> {
    let (topic, data) = frame.to_notification();
    let note = Notification::new(Some(topic.to_owned()), data);
    crate::frame::encode(encoding, &Message::Notification(note)).ok()
}

impl StreamLink for StreamSender {
    fn send(&self, frame: StreamFrame) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            match (self.commands.upgrade(), encode(self.encoding, &frame)) {
                (Some(commands), Some(ws)) => commands.send(Command::Send(ws)).await.is_ok(),
                _ => false,
            }
        })
    }

    fn send_now(&self, frame: StreamFrame) -> bool {
        let (Some(commands), Some(ws)) = (self.commands.upgrade(), encode(self.encoding, &frame))
        else {
            return false;
        };
        match commands.try_send(Command::Send(ws)) {
            Ok(()) => true,
            // A stop or abort from a `Drop` must not be lost to a full
            // queue: a short task waits for room.
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move {
                            let _ = commands.send(cmd).await;
                        });
                        true
                    }
                    Err(_) => false,
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
