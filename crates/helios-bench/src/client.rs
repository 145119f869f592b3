//! Opening benchmark connections: TCP (optionally from a chosen source
//! address), the WebSocket upgrade, and the Socket.IO handshake.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, Stream, StreamExt};
use http::Uri;
use tokio::net::{TcpSocket, TcpStream};
use tokio_websockets::{ClientBuilder, Limits, Message, WebSocketStream};

use crate::proto::Proto;

/// One client WebSocket.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Boxed error for the setup paths (connect, handshake); the hot paths count
/// failures instead of returning them.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    uri: Uri,
    addr: SocketAddr,
    proto: Proto,
}

impl Target {
    /// Parses a `ws://host:port/path` URL. Only literal IP hosts and
    /// `localhost` are accepted: benchmarks run on loopback.
    pub(crate) fn new(url: &str, proto: Proto) -> Result<Self, BoxError> {
        let uri: Uri = url.parse()?;
        if uri.scheme_str() != Some("ws") {
            return Err(format!("only ws:// URLs are supported, got {url}").into());
        }
        let host = uri.host().ok_or("URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = if host == "localhost" {
            IpAddr::from([127, 0, 0, 1])
        } else {
            host.parse()
                .map_err(|_| format!("host must be an IP address or localhost, got {host}"))?
        };
        let port = uri.port_u16().unwrap_or(80);
        Ok(Self {
            uri,
            addr: SocketAddr::new(ip, port),
            proto,
        })
    }

    pub(crate) fn proto(&self) -> Proto {
        self.proto
    }

    /// Opens a connection, from `source` when given, and completes the
    /// WebSocket upgrade (and the Socket.IO connect for that protocol),
    /// within 10 s.
    pub(crate) async fn connect(&self, source: Option<IpAddr>) -> Result<Ws, BoxError> {
        tokio::time::timeout(Duration::from_secs(10), self.open(source))
            .await
            .map_err(|_| "connect and upgrade took more than 10 s")?
    }

    async fn open(&self, source: Option<IpAddr>) -> Result<Ws, BoxError> {
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (mut ws, _resp) = ClientBuilder::from_uri(self.uri.clone())
            .limits(Limits::unlimited())
            .connect_on(stream)
            .await?;
        if self.proto == Proto::Socketio {
            socketio_handshake(&mut ws).await?;
        }
        Ok(ws)
    }
}

/// Engine.IO 4: the server opens with `0{...}`; the client connects to the
/// default namespace with `40` and waits for the server's `40{...}`.
async fn socketio_handshake(ws: &mut Ws) -> Result<(), BoxError> {
    let deadline = Duration::from_secs(10);
    let mut sent_connect = false;
    loop {
        let msg = tokio::time::timeout(deadline, ws.next())
            .await
            .map_err(|_| "Socket.IO handshake timed out")?
            .ok_or("connection closed during the Socket.IO handshake")??;
        let Some(text) = msg.as_text() else { continue };
        if text.starts_with('0') && !sent_connect {
            ws.send(Message::text("40".to_owned())).await?;
            sent_connect = true;
        } else if text.starts_with("40") {
            return Ok(());
        } else if text == "2" {
            ws.send(Message::text("3".to_owned())).await?;
        } else if text.starts_with("44") {
            return Err(format!("Socket.IO connect refused: {text}").into());
        }
    }
}

/// Source addresses `127.0.0.1 ..= 127.0.0.k`, to get past the ephemeral
/// port range of one address (about 28,000 ports).
pub(crate) fn loopback_sources(k: u8) -> Vec<IpAddr> {
    (1..=k.max(1))
        .map(|i| IpAddr::from([127, 0, 0, i]))
        .collect()
}

/// Closes `ws` politely, but gives a server that stopped reading (and so
/// never takes the close frame) at most a second.
pub(crate) async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close()).await;
}

/// What [`next_frame`] found.
pub(crate) enum Next {
    /// A message.
    Frame(Message),
    /// Nothing within the poll interval: check the loop's exit condition.
    Quiet,
    /// The stream ended or failed, or the run's hard end passed.
    Done,
}

/// The next message of `stream`: at once when one is buffered, else waiting
/// at most `poll` (and never past `hard_end`). Timers are armed only when
/// nothing is buffered: two timer entries per message were a large part of
/// the generator's cost at 1M deliveries/s.
pub(crate) async fn next_frame<S>(
    stream: &mut S,
    poll: Duration,
    hard_end: std::time::Instant,
) -> Next
where
    S: Stream<Item = Result<Message, tokio_websockets::Error>> + Unpin,
{
    let ready = match stream.next().now_or_never() {
        Some(ready) => ready,
        None => {
            let wait = tokio::time::timeout(poll, stream.next());
            match tokio::time::timeout_at(hard_end.into(), wait).await {
                Err(_) => return Next::Done,
                Ok(Err(_)) => return Next::Quiet,
                Ok(Ok(ready)) => ready,
            }
        }
    };
    match ready {
        Some(Ok(msg)) => Next::Frame(msg),
        _ => Next::Done,
    }
}
