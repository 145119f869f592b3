//! Streams on the server's side: how a connection sends stream frames, and
//! what a handler calls to read the caller's stream or send its own. The
//! wire format and the stream table are `helios_protocol`'s (shared with
//! the clients); see `docs/protocol.md` ("Streams").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use helios_protocol::{
    IncomingStream, Message, Notification, StreamError, StreamFrame, StreamInfo, StreamLink,
    StreamWriter,
};

use crate::connection::Connection;
use crate::context::Context;

/// Sends stream frames as notifications on the connection's queue.
pub(crate) struct ConnectionLink(pub(crate) Connection);

fn notification(frame: &StreamFrame) -> Message {
    let (topic, data) = frame.to_notification();
    Notification::new(Some(topic.to_owned()), data).into()
}

impl StreamLink for ConnectionLink {
    fn send(&self, frame: StreamFrame) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            if matches!(frame, StreamFrame::Chunk { .. }) {
                // Chunks wait for room by bytes too: downloads to a slow
                // reader must not push the queue past its byte cap (4008).
                self.0.wait_for_half_empty_queue().await;
            }
            self.0.send_message(&notification(&frame)).await.is_ok()
        })
    }

    fn send_now(&self, frame: StreamFrame) -> bool {
        // A full queue is not the client's fault here: no 4008 for it.
        self.0
            .encode(&notification(&frame))
            .is_some_and(|f| self.0.offer_frame(f))
    }
}

impl Connection {
    pub(crate) fn stream_link(&self) -> Arc<dyn StreamLink> {
        Arc::new(ConnectionLink(self.clone()))
    }
}

impl<T> Context<T> {
    /// The stream the caller opened for this request (an upload, a file):
    /// waits for its `stream:open`, within the request's timeout.
    ///
    /// # Errors
    /// [`StreamError::NotARequest`] in a notification handler,
    /// [`StreamError::NoStream`] at once in an
    /// [ordered](crate::MethodOptions::ordered) method (the connection reads
    /// nothing else while it runs), [`StreamError::Closed`] when the
    /// connection closed.
    ///
    /// ```
    /// use helios::{Context, MethodError};
    /// async fn upload(ctx: Context) -> Result<serde_json::Value, MethodError> {
    ///     let mut file = ctx.stream().await?;
    ///     let mut bytes = 0;
    ///     while let Some(chunk) = file.next().await? {
    ///         bytes += chunk.len();
    ///     }
    ///     Ok(serde_json::json!({ "name": file.name(), "bytes": bytes }))
    /// }
    /// # let _ = helios::Helios::builder().method("files:upload", upload);
    /// ```
    pub async fn stream(&self) -> Result<IncomingStream, StreamError> {
        let id = self.request_id().ok_or(StreamError::NotARequest)?;
        let may_come = !self.meta.in_reader;
        self.connection()
            .streams()
            .take_incoming(id, || may_come)
            .await
    }

    /// Opens a stream to the caller for this request (a download): write
    /// to it, then `end()` it; writes wait for the caller's credit.
    ///
    /// # Errors
    /// [`StreamError::NotARequest`] in a notification handler,
    /// [`StreamError::Closed`] when the connection closed.
    ///
    /// ```
    /// use helios::{Context, MethodError, StreamInfo};
    /// async fn download(ctx: Context) -> Result<bool, MethodError> {
    ///     let body = b"id,name\n1,ada\n";
    ///     let mut out = ctx
    ///         .open_stream(StreamInfo::file("users.csv", body.len() as u64))
    ///         .await?;
    ///     out.write(body).await?;
    ///     out.end().await?;
    ///     Ok(true)
    /// }
    /// # let _ = helios::Helios::builder().method("files:download", download);
    /// ```
    pub async fn open_stream(&self, info: StreamInfo) -> Result<StreamWriter, StreamError> {
        let id = self.request_id().ok_or(StreamError::NotARequest)?;
        let conn = self.connection();
        conn.streams().open(conn.stream_link(), id, info).await
    }
}
