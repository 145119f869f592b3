//! HTTP side: the WebSocket upgrade on `/ws` and `/`, `GET /healthz`, and
//! `serve` with graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use helios_protocol::Encoding;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_websockets::{Config as WsConfig, Limits, ServerBuilder};

use crate::auth::{Auth, AuthRejection, HandshakeRequest};
use crate::connection::Connection;
use crate::helios::Helios;
use crate::listener::ConnectionPermit;
use crate::metrics::Rejection;
use crate::session::RecoverRequest;
use crate::socket::{Recovery, drive, new_connection_id};

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request was refused (each answers with its own status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeRejection {
    /// Not a WebSocket upgrade (plain HTTP GET).
    #[error("this endpoint speaks WebSocket: send an Upgrade: websocket request")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported Sec-WebSocket-Version (only 13)")]
    BadVersion,
    /// `Sec-WebSocket-Key` is missing.
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    /// The client asked only for subprotocols Helios does not speak.
    #[error("no supported subprotocol (helios-starling.v1.json, helios-starling.v1.msgpack)")]
    BadSubprotocol,
    /// The connection cannot be upgraded (e.g. HTTP/2).
    #[error("connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let status = match self {
            Self::NotUpgrade => StatusCode::UPGRADE_REQUIRED,
            Self::BadVersion => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut resp = (status, self.to_string()).into_response();
        if status == StatusCode::UPGRADE_REQUIRED {
            resp.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            resp.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        resp
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The accepted parts of a WebSocket handshake.
pub(crate) struct Handshake {
    accept: String,
    encoding: Encoding,
    subprotocol: Option<&'static str>,
}

/// Checks a WebSocket upgrade request and returns the
/// `Sec-WebSocket-Accept` value to answer with.
///
/// # Errors
/// The [`UpgradeRejection`] that says what is wrong with the request.
pub fn accept_key(headers: &HeaderMap) -> Result<String, UpgradeRejection> {
    check_handshake(headers).map(|hs| hs.accept)
}

pub(crate) fn check_handshake(headers: &HeaderMap) -> Result<Handshake, UpgradeRejection> {
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(UpgradeRejection::NotUpgrade);
    }
    if header_str(headers, header::SEC_WEBSOCKET_VERSION) != Some("13") {
        return Err(UpgradeRejection::BadVersion);
    }
    let key = header_str(headers, header::SEC_WEBSOCKET_KEY).ok_or(UpgradeRejection::MissingKey)?;
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(WS_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes());
    let (encoding, subprotocol) = match header_str(headers, header::SEC_WEBSOCKET_PROTOCOL) {
        None => (Encoding::Json, None),
        Some(offers) => {
            let enc = Encoding::negotiate(offers).ok_or(UpgradeRejection::BadSubprotocol)?;
            (enc, Some(enc.subprotocol()))
        }
    };
    Ok(Handshake {
        accept,
        encoding,
        subprotocol,
    })
}

async fn upgrade(State(helios): State<Helios>, mut req: Request<Body>) -> Response {
    let hs = match check_handshake(req.headers()) {
        Ok(hs) => hs,
        Err(e) => return e.into_response(),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return UpgradeRejection::NotUpgradable.into_response();
    };
    if helios.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server is shutting down").into_response();
    }
    let auth = match helios.auth_hook() {
        Some(hook) => {
            let remote = req
                .extensions()
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0);
            let hs_req = HandshakeRequest::new(req.uri().clone(), req.headers().clone(), remote);
            match hook(hs_req).await {
                Ok(auth) => auth,
                Err(e) => {
                    helios.metrics().rejected(match e {
                        AuthRejection::Unauthorized(_) => Rejection::Unauthorized,
                        _ => Rejection::Forbidden,
                    });
                    return e.into_response();
                }
            }
        }
        None => None,
    };
    // The connection's slot under the listener's caps lives as long as the socket.
    let permit = req.extensions_mut().remove::<ConnectionPermit>();
    let opening = Box::new(Opening {
        encoding: hs.encoding,
        recover: Query::<HashMap<String, String>>::try_from_uri(req.uri())
            .ok()
            .and_then(|Query(q)| RecoverRequest::from_query(&q)),
        auth,
    });
    let task_helios = helios.clone();
    helios.tracker().spawn(async move {
        let _permit = permit;
        match on_upgrade.await {
            Ok(upgraded) => accept_socket(task_helios, TokioIo::new(upgraded), opening).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&hs.accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = hs.subprotocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    resp
}

/// The WebSocket settings every Helios socket uses (also the Autobahn
/// example's, so conformance is tested on the real configuration). The
/// frame size applies to what tokio-websockets writes itself (pings,
/// pongs, closes, and data the socket cannot write past it); data written
/// with `SocketWriter::poll_write_frames` goes as one frame per message.
pub fn websocket_builder(max_message_bytes: usize) -> ServerBuilder {
    ServerBuilder::new()
        .limits(Limits::default().max_payload_len(Some(max_message_bytes)))
        .config(WsConfig::default().frame_size(64 * 1024))
}

/// What the handshake decided about a connection. Boxed on its way into
/// the connection's task: it is used once, and every value a task holds
/// stays in its (resident) state for the task's whole life.
pub(crate) struct Opening {
    pub(crate) encoding: Encoding,
    pub(crate) recover: Option<RecoverRequest>,
    pub(crate) auth: Option<Auth>,
}

/// Takes over an upgraded stream and runs the connection to its end.
pub(crate) async fn accept_socket<S>(helios: Helios, io: S, opening: Box<Opening>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (conn, recovery) = Box::pin(prepare(&helios, opening)).await;
    let metrics_helios = helios.clone();
    let ended = conn.clone();
    metrics_helios.metrics().connection_opened();
    drive(helios, io, conn, recovery).await;
    metrics_helios
        .metrics()
        .connection_closed(ended.close_code());
}

/// The connection, and the session it recovers, if it asked to.
async fn prepare(helios: &Helios, opening: Box<Opening>) -> (Connection, Option<Box<Recovery>>) {
    let Opening {
        encoding,
        recover,
        auth,
    } = *opening;
    let user = auth.as_ref().and_then(|a| a.user_id());
    let recovery = match recover {
        Some(req) => Some(Box::new((helios.take_session(&req, user).await, req))),
        None => None,
    };
    let id = match recovery.as_deref() {
        Some((Ok(r), _)) => Arc::from(r.snapshot.starling_id.as_str()),
        _ => new_connection_id(),
    };
    let conn = Connection::new(id, encoding, helios);
    if let Some(auth) = auth {
        conn.set_auth(auth);
        crate::auth::close_at_expiry(conn.clone());
    }
    (conn, recovery)
}

async fn healthz(State(helios): State<Helios>) -> Response {
    let body = serde_json::json!({
        "status": if helios.is_shutting_down() { "draining" } else { "ok" },
        "connections": helios.connection_count(),
    });
    let status = if helios.is_shutting_down() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl Helios {
    /// The HTTP routes of the server (`/ws` and `/` upgrade, `GET /healthz`),
    /// to serve as is or merge into an application's axum router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ws", get(upgrade))
            .route("/", get(upgrade))
            .route("/healthz", get(healthz))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then drains: new
    /// requests are refused, in-flight ones finish within the grace period,
    /// and every connection closes with 1001.
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// let helios = helios::Helios::builder().build();
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:7700").await?;
    /// helios.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
    /// # }
    /// ```
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        self.serve_router(listener, router, shutdown).await
    }

    /// [`serve`](Self::serve) with a custom router (e.g. this server's
    /// routes merged with the application's own).
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn serve_router(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // One accept path for every way of serving (TCP_NODELAY, accept
        // back-off, drain): the one of `serve_with`.
        self.serve_with(listener, router, crate::ServeOptions::new(), shutdown)
            .await
    }
}
