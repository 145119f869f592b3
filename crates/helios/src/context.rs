//! What a handler receives: the payload, the connection and the request's
//! metadata.

use helios_protocol::{PeerRef, RequestId, ShortStr};

use crate::connection::Connection;
use crate::helios::Helios;

/// The context of one request or notification.
///
/// `T` is the payload type the handler asked for; middleware sees
/// `Context<serde_json::Value>`.
///
/// ```
/// use helios::{Context, MethodError};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Create { name: String }
///
/// async fn create(ctx: Context<Create>) -> Result<String, MethodError> {
///     ctx.connection().set("last", &ctx.payload.name);
///     Ok(format!("created {}", ctx.payload.name))
/// }
/// # let _ = helios::Helios::builder().method("user:create", create);
/// ```
pub struct Context<T = serde_json::Value> {
    /// The payload, deserialised to the handler's type.
    pub payload: T,
    pub(crate) meta: Meta,
}

/// Everything about a call except its payload.
#[derive(Clone)]
pub(crate) struct Meta {
    pub(crate) connection: Connection,
    pub(crate) helios: Helios,
    /// Method name (requests) or topic (notifications).
    pub(crate) name: ShortStr,
    pub(crate) request_id: Option<RequestId>,
    pub(crate) peer: Option<PeerRef>,
    pub(crate) timestamp: u64,
    /// Runs in the connection's reader (an ordered method): nothing else
    /// is read meanwhile, so no stream can arrive for it.
    pub(crate) in_reader: bool,
}

impl<T> Context<T> {
    /// The connection that sent the request.
    pub fn connection(&self) -> &Connection {
        &self.meta.connection
    }

    /// The server, for broadcasts and direct sends from a handler.
    pub fn helios(&self) -> &Helios {
        &self.meta.helios
    }

    /// The method name (for requests) or the topic (for notifications).
    pub fn method(&self) -> &str {
        &self.meta.name
    }

    /// The request id; `None` for notifications.
    pub fn request_id(&self) -> Option<&RequestId> {
        self.meta.request_id.as_ref()
    }

    /// For relayed messages: the connection that sent it.
    pub fn peer(&self) -> Option<&PeerRef> {
        self.meta.peer.as_ref()
    }

    /// The sender's `timestamp` (ms since the epoch).
    pub fn timestamp(&self) -> u64 {
        self.meta.timestamp
    }

    /// Replaces the payload, keeping the metadata.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Context<U> {
        Context {
            payload: f(self.payload),
            meta: self.meta,
        }
    }
}
