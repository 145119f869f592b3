//! The accept loop behind [`Helios::serve_with`]: connection caps (total and
//! per IP), optional TLS, a handshake timeout, and graceful drain.
//!
//! Like mini-redis's `server.rs`, each accepted connection takes a permit and
//! the permit moves into the task that serves it. Because a WebSocket
//! outlives the HTTP exchange that upgraded it, the permit also rides along
//! in the request's extensions, and the upgrade path moves a clone into the
//! socket's task: the slot is free only once both are gone.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::helios::Helios;
use crate::metrics::Rejection;
use crate::tls::TlsConfig;

/// Open connections per client address.
type PerIpCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// How [`Helios::serve_with`] listens.
///
/// ```
/// use std::time::Duration;
/// let opts = helios::ServeOptions::new()
///     .max_connections(10_000)
///     .max_connections_per_ip(100)
///     .handshake_timeout(Duration::from_secs(5));
/// # drop(opts);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ServeOptions {
    tls: Option<TlsConfig>,
    handshake_timeout: Duration,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ServeOptions {
    /// Plain TCP, no caps, a 10 s handshake timeout.
    pub fn new() -> Self {
        Self {
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            max_connections: None,
            max_connections_per_ip: None,
        }
    }

    /// Serves TLS (`wss://`, `https://`).
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long a client has to finish the TLS handshake and send its HTTP
    /// request head (10 s); a slower one is dropped.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Caps the TCP connections open at once (HTTP and WebSocket); over the
    /// cap a client gets HTTP 503.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Caps the TCP connections open at once from one IP address.
    pub fn max_connections_per_ip(mut self, max: usize) -> Self {
        self.max_connections_per_ip = Some(max);
        self
    }
}

/// A connection's slot under the caps; freed when the last clone drops.
#[derive(Clone)]
pub(crate) struct ConnectionPermit {
    _inner: Arc<PermitInner>,
}

struct PermitInner {
    _total: Option<OwnedSemaphorePermit>,
    ip: Option<(IpAddr, PerIpCounts)>,
}

impl Drop for PermitInner {
    fn drop(&mut self) {
        if let Some((ip, map)) = self.ip.take() {
            let mut map = map.lock();
            if let Some(n) = map.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

struct Limiter {
    total: Option<Arc<Semaphore>>,
    per_ip: Option<usize>,
    ips: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Limiter {
    fn admit(&self, ip: IpAddr) -> Option<ConnectionPermit> {
        let total = match &self.total {
            Some(s) => Some(s.clone().try_acquire_owned().ok()?),
            None => None,
        };
        let ip = match self.per_ip {
            Some(max) => {
                let mut map = self.ips.lock();
                let n = map.entry(ip).or_insert(0);
                if *n >= max {
                    return None; // `total` drops here and frees its slot
                }
                *n += 1;
                Some((ip, self.ips.clone()))
            }
            None => None,
        };
        Some(ConnectionPermit {
            _inner: Arc::new(PermitInner { _total: total, ip }),
        })
    }
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 26\r\nconnection: close\r\n\r\ntoo many connections, retry";

impl Helios {
    /// Serves TLS on `listener` (`wss://host/ws`) until `shutdown` resolves;
    /// [`serve_with`](Self::serve_with) with default options otherwise.
    ///
    /// # Errors
    /// I/O errors of the listener, or a broker that cannot start.
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: TlsConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        self.serve_with(listener, router, ServeOptions::new().tls(tls), shutdown)
            .await
    }

    /// Serves `router` on `listener` with connection caps, optional TLS and
    /// a handshake timeout, until `shutdown` resolves; then drains like
    /// [`serve`](Self::serve). Handlers can read the client's address with
    /// `axum::extract::ConnectInfo<SocketAddr>`.
    ///
    /// # Errors
    /// I/O errors of the listener, or a broker that cannot start.
    pub async fn serve_with(
        self,
        listener: TcpListener,
        router: Router,
        opts: ServeOptions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.start()
            .await
            .map_err(|e| std::io::Error::other(format!("broker: {e}")))?;
        let limiter = Arc::new(Limiter {
            total: opts.max_connections.map(|n| Arc::new(Semaphore::new(n))),
            per_ip: opts.max_connections_per_ip,
            ips: Arc::new(Mutex::new(HashMap::new())),
        });
        let acceptor = opts.tls.as_ref().map(TlsConfig::acceptor);
        let stop = CancellationToken::new();
        let http_tasks = TaskTracker::new();
        let token = self.shutdown_token().clone();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                _ = token.cancelled() => break,
                a = listener.accept() => a,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning or dying.
                    tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let permit = limiter.admit(addr.ip());
            let helios = self.clone();
            let router = router.clone();
            let acceptor = acceptor.clone();
            let stop = stop.clone();
            let timeout = opts.handshake_timeout;
            http_tasks.spawn(async move {
                match acceptor {
                    None => serve_conn(helios, tcp, addr, permit, router, timeout, stop).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                serve_conn(helios, tls, addr, permit, router, timeout, stop).await;
                            }
                            Ok(Err(e)) => {
                                helios.metrics().rejected(Rejection::Handshake);
                                tracing::debug!(%addr, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                helios.metrics().rejected(Rejection::Handshake);
                                tracing::debug!(%addr, "TLS handshake timed out");
                            }
                        }
                    }
                }
            });
        }
        drop(listener);
        self.shutdown();
        stop.cancel();
        http_tasks.close();
        let grace = self.config().shutdown_grace + Duration::from_secs(5);
        if tokio::time::timeout(grace, http_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("HTTP connections did not close within {grace:?}");
        }
        self.tracker().close();
        if tokio::time::timeout(grace, self.tracker().wait())
            .await
            .is_err()
        {
            tracing::warn!("connections did not close within {grace:?}");
        }
        Ok(())
    }
}

async fn serve_conn<IO>(
    helios: Helios,
    mut io: IO,
    addr: SocketAddr,
    permit: Option<ConnectionPermit>,
    router: Router,
    timeout: Duration,
    stop: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(permit) = permit else {
        helios.metrics().rejected(Rejection::Capacity);
        tracing::debug!(%addr, "over the connection caps, refusing");
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = io.write_all(BUSY).await;
            let _ = io.shutdown().await;
        })
        .await;
        return;
    };
    let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        req.extensions_mut().insert(permit.clone());
        let mut router = router.clone();
        async move {
            let resp = tower_service::Service::call(&mut router, req).await;
            Ok::<_, Infallible>(resp.unwrap_or_else(|never| match never {}))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%addr, error = %e, "HTTP connection ended with an error");
    }
}
