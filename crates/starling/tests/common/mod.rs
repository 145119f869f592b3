//! A real Helios server in-process on 127.0.0.1:0, and a TCP proxy between
//! it and the client that can cut or freeze the connections going through.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use helios::Helios;
use starling::{ClientEvent, Events, ReconnectPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Every test body runs under this bound.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How long a test waits for one event or message.
pub const WAIT: Duration = Duration::from_secs(15);

pub const SECRET: &str = "test-recovery-secret-0123456789abcdef";

pub async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test took too long");
}

pub struct Server {
    pub addr: SocketAddr,
    pub helios: Helios,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    pub async fn start(helios: Helios) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let h = helios.clone();
        tokio::spawn(async move {
            h.serve(listener, async move {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            addr,
            helios,
            _stop: stop,
        }
    }
}

/// Fast reconnects for tests.
pub fn quick_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        factor: 2.0,
        jitter: 0.5,
        max_attempts: Some(200),
    }
}

struct Pair {
    tasks: [JoinHandle<()>; 2],
    frozen: Arc<AtomicBool>,
}

/// A TCP proxy on 127.0.0.1:0 in front of `upstream`.
pub struct Proxy {
    pub addr: SocketAddr,
    pairs: Arc<Mutex<Vec<Pair>>>,
    accept: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pairs: Arc<Mutex<Vec<Pair>>> = Arc::default();
        let p = pairs.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let frozen = Arc::new(AtomicBool::new(false));
                let f = frozen.clone();
                // Client → server; a frozen pair swallows everything.
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if f.load(Ordering::SeqCst) {
                                    continue;
                                }
                                if sw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    // Keep the server side open while frozen: the server
                    // must find out by itself (ping timeout).
                    if f.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                });
                // Server → client; when the server ends, so does the client side.
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                });
                p.lock().unwrap().push(Pair {
                    tasks: [up, down],
                    frozen,
                });
            }
        });
        Self {
            addr,
            pairs,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Drops both sides of every connection through the proxy: no close
    /// frame, bytes in flight are lost.
    pub fn cut(&self) {
        for pair in self.pairs.lock().unwrap().drain(..) {
            for t in pair.tasks {
                t.abort();
            }
        }
    }

    /// Stops forwarding client → server on the current connections (the
    /// client's pongs and acks vanish); server → client keeps flowing. New
    /// connections are not frozen.
    pub fn freeze_upstream(&self) {
        for pair in self.pairs.lock().unwrap().iter() {
            pair.frozen.store(true, Ordering::SeqCst);
        }
    }
}

/// Waits for the first event matching `pred`, returning it; the events
/// before it are returned too, for assertions on the order.
pub async fn wait_event(
    events: &mut Events,
    seen: &mut Vec<ClientEvent>,
    pred: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    loop {
        let e = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no matching event; seen {seen:#?}"))
            .unwrap_or_else(|e| panic!("events ended: {e}; seen {seen:#?}"));
        seen.push(e.clone());
        if pred(&e) {
            return e;
        }
    }
}
