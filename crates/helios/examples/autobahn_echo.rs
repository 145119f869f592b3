//! Echo server for the Autobahn TestSuite: every text or binary message is
//! sent back, over the same accept/upgrade path, WebSocket settings and
//! socket as `helios serve` (`helios::HibernatingSocket`, built with
//! `helios::websocket_builder`, behind hyper's upgrade).
//!
//! `cargo run --release -p helios --example autobahn_echo -- 127.0.0.1:9001`

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

async fn echo(mut req: Request<Body>) -> Response {
    let hs = match helios::accept_key(req.headers()) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        // The same settings as every Helios socket; Autobahn sends up to 16 MiB.
        // The socket Helios connections use: it sleeps (drops its read
        // buffer) whenever it is idle, so the suite's slow and fragmented
        // cases also test waking it mid-conversation.
        let socket = helios::HibernatingSocket::new(TokioIo::new(upgraded), 64 * 1024 * 1024);
        let (mut reader, mut writer) = (socket.reader(), socket.writer());
        let mut frames = std::collections::VecDeque::new();
        while let Some(Ok(msg)) = reader.next().await {
            if !(msg.is_text() || msg.is_binary()) {
                continue;
            }
            // Written as Helios writes its messages: framed by the socket
            // and written past the stream's queue.
            let text = msg.is_text();
            frames.push_back(bytes::Bytes::from(msg.into_payload()));
            let written =
                std::future::poll_fn(|cx| writer.poll_write_frames(cx, &mut frames, text, |_| {}))
                    .await;
            if written.is_err() || writer.flush().await.is_err() {
                break;
            }
            // Echoed messages count as use; let it sleep after each one.
            std::future::poll_fn(|cx| std::task::Poll::Ready(writer.settle(cx))).await;
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&hs) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("autobahn echo on ws://{}", listener.local_addr()?);
    axum::serve(
        listener,
        Router::new()
            .route("/", get(echo))
            .route("/{*path}", get(echo)),
    )
    .await
}
