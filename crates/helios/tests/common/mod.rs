//! Test helpers: a real server on 127.0.0.1:0 and a raw WebSocket client
//! that sends hand-written frames and reads JSON back.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use helios::Helios;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Server {
    pub addr: SocketAddr,
    pub helios: Helios,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    pub async fn start(helios: Helios) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let h = helios.clone();
        let task = tokio::spawn(async move {
            h.serve(listener, async move {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            addr,
            helios,
            task,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Triggers the graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub struct Raw {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

pub fn request(id: &str, method: &str, payload: Value) -> Value {
    json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
           "type": "request", "requestId": id, "method": method, "payload": payload})
}

pub fn notification(topic: &str, data: Value) -> Value {
    json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
           "type": "notification", "notification": {"topic": topic, "data": data}})
}

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Raw {
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, None).await
    }

    pub async fn connect_with(url: &str, subprotocol: Option<&str>) -> Self {
        let mut b = ClientBuilder::new().uri(url).expect("uri");
        if let Some(p) = subprotocol {
            b = b
                .add_header(
                    http::header::SEC_WEBSOCKET_PROTOCOL,
                    http::HeaderValue::from_str(p).expect("header"),
                )
                .expect("add header");
        }
        let (ws, _resp) = b.connect().await.expect("connect");
        let mut raw = Self {
            ws,
            welcome: Value::Null,
        };
        if subprotocol.is_none() || subprotocol == Some("helios-starling.v1.json") {
            let w = raw.next_json().await;
            assert_eq!(w["notification"]["topic"], "helios:welcome", "{w}");
            raw.welcome = w["notification"]["data"].clone();
        }
        raw
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next data frame, as JSON; panics on close or after WAIT.
    pub async fn next_json(&mut self) -> Value {
        let text = self.next_text().await;
        serde_json::from_str(&text).expect("server sent invalid JSON")
    }

    /// The next text frame as it was sent; panics on close or after WAIT.
    pub async fn next_text(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("websocket error");
            if let Some(text) = msg.as_text() {
                return text.to_owned();
            }
            assert!(!msg.is_close(), "unexpected close: {:?}", msg.as_close());
        }
    }

    /// Sends a request and returns its response (skipping other frames).
    pub async fn call(&mut self, method: &str, payload: Value) -> Value {
        let id = uuid();
        self.send_json(&request(&id, method, payload)).await;
        self.response_for(&id).await
    }

    pub async fn response_for(&mut self, id: &str) -> Value {
        loop {
            let v = self.next_json().await;
            if v["type"] == "response" && v["requestId"] == id {
                return v;
            }
        }
    }

    /// Waits for the close frame; returns its code. Panics after WAIT.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match next {
                None => return None,
                Some(Err(_)) => return None,
                Some(Ok(m)) => {
                    if let Some((code, _)) = m.as_close() {
                        return Some(u16::from(code));
                    }
                }
            }
        }
    }
}
