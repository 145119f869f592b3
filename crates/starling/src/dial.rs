//! Opening one socket: TCP, the WebSocket upgrade, and the server's welcome.

use std::time::Duration;

use futures_util::StreamExt;
use helios_protocol::{Encoding, Message, SUBPROTOCOL_JSON};
use http::header::{AUTHORIZATION, HeaderName, HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use tokio::net::TcpStream;
use tokio_websockets::{MaybeTlsStream, Message as WsMessage, WebSocketStream};

use crate::error::ConnectError;
use crate::frame;
use crate::session::{WELCOME_TOPIC, Welcome};

/// The socket type of a client connection.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Most frames kept when something other than the welcome comes first.
const EARLY_FRAMES: usize = 1024;

/// Everything needed to open a socket again.
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) max_message_size: usize,
    pub(crate) connect_timeout: Duration,
}

/// An open socket whose welcome has arrived.
pub(crate) struct Dialed {
    pub(crate) ws: Ws,
    pub(crate) encoding: Encoding,
    pub(crate) welcome: Welcome,
    /// Frames that arrived before the welcome, to process in order.
    pub(crate) early: Vec<WsMessage>,
}

impl Dialer {
    /// Connects to `url` (the base URL, or one with recovery parameters)
    /// offering `encoding`, and waits for the welcome, all within the
    /// connect timeout. `auth` is a credential that replaces the builder's
    /// (`Client::refresh_auth`), sent as `Authorization: Bearer`.
    pub(crate) async fn dial(
        &self,
        url: &str,
        encoding: Encoding,
        auth: Option<&str>,
    ) -> Result<Dialed, ConnectError> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let builder = self.ws_builder(url, encoding, auth)?;
        let (mut ws, response) = tokio::time::timeout_at(deadline, builder.connect())
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(|e| ConnectError::Handshake(e.to_string()))?;
        let encoding = match response.headers().get(SEC_WEBSOCKET_PROTOCOL) {
            // No subprotocol selected: the server speaks the default.
            None => Encoding::Json,
            Some(value) => {
                let value = value.to_str().unwrap_or_default();
                Encoding::from_subprotocol(value)
                    .ok_or_else(|| ConnectError::Subprotocol(value.to_owned()))?
            }
        };
        let (welcome, early) = tokio::time::timeout_at(deadline, read_welcome(&mut ws))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        Ok(Dialed {
            ws,
            encoding,
            welcome,
            early,
        })
    }

    /// Checks the URL and headers without connecting.
    pub(crate) fn check(&self) -> Result<(), ConnectError> {
        self.ws_builder(&self.url, Encoding::Json, None).map(|_| ())
    }

    fn ws_builder(
        &self,
        url: &str,
        encoding: Encoding,
        auth: Option<&str>,
    ) -> Result<tokio_websockets::ClientBuilder<'static>, ConnectError> {
        let invalid = |reason: String| ConnectError::InvalidUrl {
            url: self.url.clone(),
            reason,
        };
        let mut builder = tokio_websockets::ClientBuilder::new()
            .uri(url)
            .map_err(|e| invalid(e.to_string()))?
            .limits(
                tokio_websockets::Limits::default().max_payload_len(Some(self.max_message_size)),
            );
        let offer = match encoding {
            Encoding::Json => SUBPROTOCOL_JSON.to_owned(),
            Encoding::MsgPack => {
                format!("{}, {}", Encoding::MsgPack.subprotocol(), SUBPROTOCOL_JSON)
            }
        };
        let mut headers = vec![(SEC_WEBSOCKET_PROTOCOL, offer)];
        for (name, value) in &self.headers {
            let name = HeaderName::try_from(name.as_str()).map_err(|e| {
                ConnectError::Handshake(format!("invalid header name {name:?}: {e}"))
            })?;
            if auth.is_some() && name == AUTHORIZATION {
                continue; // replaced by the refreshed credential
            }
            headers.push((name, value.clone()));
        }
        if let Some(token) = auth {
            headers.push((AUTHORIZATION, format!("Bearer {token}")));
        }
        for (name, value) in headers {
            let value = HeaderValue::try_from(value.as_str()).map_err(|e| {
                ConnectError::Handshake(format!("invalid value for header {name}: {e}"))
            })?;
            builder = builder
                .add_header(name.clone(), value)
                .map_err(|e| ConnectError::Handshake(format!("header {name}: {e}")))?;
        }
        Ok(builder)
    }
}

/// Reads until the `helios:welcome`; other data frames are kept for later.
async fn read_welcome(ws: &mut Ws) -> Result<(Welcome, Vec<WsMessage>), ConnectError> {
    let mut early = Vec::new();
    loop {
        let frame = match ws.next().await {
            None => return Err(ConnectError::NoWelcome(String::new())),
            Some(Err(e)) => return Err(ConnectError::NoWelcome(e.to_string())),
            Some(Ok(frame)) => frame,
        };
        if let Some((_, reason)) = frame.as_close() {
            return Err(ConnectError::NoWelcome(reason.to_owned()));
        }
        match frame::decode(&frame) {
            None => {} // ping or pong
            Some(Ok(Message::Notification(n))) if n.topic.as_deref() == Some(WELCOME_TOPIC) => {
                let welcome = serde_json::from_value(n.data).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "unreadable helios:welcome data");
                    Welcome::default()
                });
                return Ok((welcome, early));
            }
            Some(_) => {
                if early.len() < EARLY_FRAMES {
                    early.push(frame);
                } else {
                    tracing::warn!("frame before the welcome dropped (too many)");
                }
            }
        }
    }
}

/// Appends `?recover=TOKEN&since=POSITIONS` to a URL.
pub(crate) fn recover_url(base: &str, token: &str, since: &serde_json::Value) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut url = format!("{base}{sep}recover={}", escape(token));
    if since.as_object().is_some_and(|m| !m.is_empty()) {
        url.push_str("&since=");
        url.push_str(&escape(&since.to_string()));
    }
    url
}

/// Percent-encodes everything but the unreserved characters (RFC 3986).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recover_url_escapes_token_and_positions() {
        let since = serde_json::json!({"chat:a b": {"offset": 3, "epoch": "e"}});
        let url = recover_url("ws://h/ws", "a.b_c-", &since);
        assert!(
            url.starts_with("ws://h/ws?recover=a.b_c-&since=%7B%22chat%3Aa%20b%22%3A%7B"),
            "{url}"
        );
        assert!(url.contains("%22offset%22%3A3"), "{url}");
        assert_eq!(
            recover_url("ws://h/ws?token=x", "t", &serde_json::json!({})),
            "ws://h/ws?token=x&recover=t"
        );
    }
}
