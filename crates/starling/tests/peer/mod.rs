//! A hand-driven Helios server for tests: it accepts one WebSocket on
//! 127.0.0.1, sends the frames a test writes by hand, and hands back what the
//! client sends, so tests assert on the wire.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use helios_protocol::{Codec, Encoding, Message, ParseMode};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_websockets::{CloseCode, Message as WsMessage, ServerBuilder, WebSocketStream};

/// How long a test waits for any single frame.
pub const FRAME_WAIT: Duration = Duration::from_secs(5);

pub struct Peer {
    pub ws: WebSocketStream<TcpStream>,
    /// The `Sec-WebSocket-Protocol` the client offered.
    pub offered: Option<String>,
    pub encoding: Encoding,
}

/// Binds 127.0.0.1:0 and returns the URL plus a future that accepts one
/// client, answers the upgrade (selecting `encoding`'s subprotocol) and sends
/// the welcome.
pub async fn listen(encoding: Encoding) -> (String, impl std::future::Future<Output = Peer>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let accept = async move {
        let (stream, _) = listener.accept().await.unwrap();
        let builder = ServerBuilder::new()
            .add_header(
                http::header::SEC_WEBSOCKET_PROTOCOL,
                http::HeaderValue::from_static(encoding.subprotocol()),
            )
            .unwrap();
        let (request, ws) = builder.accept(stream).await.unwrap();
        let offered = request
            .headers()
            .get(http::header::SEC_WEBSOCKET_PROTOCOL)
            .map(|v| v.to_str().unwrap().to_owned());
        let mut peer = Peer {
            ws,
            offered,
            encoding,
        };
        peer.send(welcome("star-1")).await;
        peer
    };
    (url, accept)
}

/// Connects a client built by `build` to a fresh JSON peer.
pub async fn pair(
    build: impl FnOnce(starling::ClientBuilder) -> starling::ClientBuilder,
) -> (starling::Client, Peer) {
    pair_with(Encoding::Json, build).await
}

pub async fn pair_with(
    encoding: Encoding,
    build: impl FnOnce(starling::ClientBuilder) -> starling::ClientBuilder,
) -> (starling::Client, Peer) {
    let (url, accept) = listen(encoding).await;
    let connect = build(starling::Client::builder(url).encoding(encoding)).connect();
    let (client, peer) = tokio::join!(connect, accept);
    (client.unwrap(), peer)
}

impl Peer {
    /// Sends one message given as its JSON form, in the peer's encoding.
    pub async fn send(&mut self, msg: Value) {
        let frame = match self.encoding {
            Encoding::Json => WsMessage::text(msg.to_string()),
            Encoding::MsgPack => {
                // Round-trip through the shared codec to get a MessagePack frame.
                let text = msg.to_string();
                let parsed = Encoding::Json
                    .decode(text.as_bytes(), ParseMode::Permissive)
                    .unwrap();
                WsMessage::binary(Encoding::MsgPack.encode(&parsed).unwrap())
            }
        };
        self.ws.send(frame).await.unwrap();
    }

    pub async fn send_raw(&mut self, frame: WsMessage) {
        self.ws.send(frame).await.unwrap();
    }

    /// The next data frame from the client, as raw WebSocket message (control
    /// frames other than close are skipped). `None` when the socket ended.
    pub async fn next_frame(&mut self) -> Option<WsMessage> {
        loop {
            let item = tokio::time::timeout(FRAME_WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame from the client");
            match item {
                Some(Ok(m)) if m.is_ping() || m.is_pong() => continue,
                Some(Ok(m)) => return Some(m),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next message from the client, as JSON (decoded with the shared
    /// codec and re-encoded as JSON for MessagePack frames).
    pub async fn recv(&mut self) -> Value {
        let frame = self.next_frame().await.expect("client closed the socket");
        assert!(!frame.is_close(), "expected a message, got a close frame");
        if let Some(text) = frame.as_text() {
            assert_eq!(
                self.encoding,
                Encoding::Json,
                "text frame on a msgpack link"
            );
            return serde_json::from_str(text).unwrap();
        }
        assert!(frame.is_binary());
        assert_eq!(
            self.encoding,
            Encoding::MsgPack,
            "binary frame on a json link"
        );
        let msg: Message = Encoding::MsgPack
            .decode(frame.as_payload(), ParseMode::Permissive)
            .unwrap();
        serde_json::from_slice(&Encoding::Json.encode(&msg).unwrap()).unwrap()
    }

    /// Expects a request for `method` and returns it.
    pub async fn expect_request(&mut self, method: &str) -> Value {
        let msg = self.recv().await;
        assert_eq!(msg["type"], "request", "got {msg}");
        assert_eq!(msg["method"], method, "got {msg}");
        msg
    }

    /// Expects a `helios:cancel` and returns the request id it names.
    pub async fn expect_cancel(&mut self) -> String {
        let msg = self.recv().await;
        assert_eq!(msg["type"], "notification", "got {msg}");
        assert_eq!(msg["notification"]["topic"], "helios:cancel", "got {msg}");
        msg["notification"]["data"]["requestId"]
            .as_str()
            .expect("cancel names a requestId")
            .to_owned()
    }

    /// Expects a response to `id` and returns it.
    pub async fn expect_response(&mut self, id: &str) -> Value {
        let msg = self.recv().await;
        assert_eq!(msg["type"], "response", "got {msg}");
        assert_eq!(msg["requestId"], id, "got {msg}");
        msg
    }

    pub async fn close(&mut self, code: u16, reason: &str) {
        let code = CloseCode::try_from(code).unwrap();
        self.ws
            .send(WsMessage::close(Some(code), reason))
            .await
            .unwrap();
    }
}

// ------------------------------------------------------------ hand-written frames

fn base(ty: &str) -> Value {
    json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1_700_000_000_000u64, "type": ty})
}

fn with(mut v: Value, extra: Value) -> Value {
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    v
}

pub fn welcome(id: &str) -> Value {
    notification(
        "helios:welcome",
        json!({"starlingId": id, "recovered": false, "serverTime": 1_700_000_000_000u64}),
    )
}

pub fn notification(topic: &str, data: Value) -> Value {
    with(
        base("notification"),
        json!({"notification": {"topic": topic, "data": data}}),
    )
}

pub fn room_delivery(topic: &str, data: Value, offset: u64, epoch: &str) -> Value {
    with(
        base("notification"),
        json!({"notification": {"topic": topic, "data": data, "offset": offset, "epoch": epoch}}),
    )
}

pub fn cancel(id: &str) -> Value {
    notification("helios:cancel", json!({"requestId": id}))
}

pub fn ok(id: &Value, data: Value) -> Value {
    with(
        base("response"),
        json!({"requestId": id, "success": true, "data": data}),
    )
}

pub fn error(id: &Value, code: &str, message: &str, details: Option<Value>) -> Value {
    let mut err = json!({"code": code, "message": message});
    if let Some(d) = details {
        err["details"] = d;
    }
    with(
        base("response"),
        json!({"requestId": id, "success": false, "error": err}),
    )
}

pub fn request(id: &str, method: &str, payload: Value) -> Value {
    with(
        base("request"),
        json!({"requestId": id, "method": method, "payload": payload}),
    )
}
