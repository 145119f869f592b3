//! Test helpers: the real `helios` binary on 127.0.0.1:0, a WebSocket
//! client that speaks JSON, raw HTTP, and HS256/ES256 tokens.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

/// A running `helios serve`.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    pub fn start(args: &[&str]) -> Node {
        Self::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Node {
        match Self::try_start(args, env) {
            Ok(n) => n,
            Err(e) => panic!("helios did not start: {e}"),
        }
    }

    /// Starts the binary allowed to run on one CPU only (`taskset -c 0`).
    pub fn start_on_one_cpu(args: &[&str]) -> Node {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0", env!("CARGO_BIN_EXE_helios")]);
        match Self::spawn(cmd, args, &[]) {
            Ok(n) => n,
            Err(e) => panic!("helios did not start under taskset: {e}"),
        }
    }

    /// Starts the binary; `Err(stderr)` when it exits before listening.
    pub fn try_start(args: &[&str], env: &[(&str, &str)]) -> Result<Node, String> {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_helios")), args, env)
    }

    fn spawn(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Result<Node, String> {
        cmd.arg("serve")
            .args(["--bind", "127.0.0.1:0", "--log-format", "text"])
            .args(args)
            .env("NO_COLOR", "1")
            // The harness reads the info-level listening line.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn helios");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Logged before the address is announced, so a test that
                // starts reading the log once the node listens sees the line.
                let addr = listening_addr(&line);
                log2.lock().expect("log").push(line);
                if let Some(addr) = addr {
                    let _ = tx.send(Some(addr));
                }
            }
            let _ = tx.send(None);
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(addr)) => Ok(Node { child, addr, log }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                Err(log.lock().expect("log").join("\n"))
            }
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let i = line.find("WebSocket at ")?;
    let rest = &line[i + "WebSocket at ".len()..];
    let rest = rest
        .strip_prefix("wss://")
        .or_else(|| rest.strip_prefix("ws://"))?;
    let end = rest.find('/')?;
    rest[..end].parse().ok()
}

/// Starts tests/support/backend.py; returns the process and its base URL.
pub struct PyBackend {
    pub child: Child,
    pub url: String,
}

impl PyBackend {
    pub fn start() -> PyBackend {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/backend.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("backend port");
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .expect("backend printed its port");
        PyBackend {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for PyBackend {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn uuid() -> String {
    format!("{:032x}", rand_u128())
        .chars()
        .enumerate()
        .fold(String::new(), |mut s, (i, c)| {
            if [8, 12, 16, 20].contains(&i) {
                s.push('-');
            }
            s.push(match i {
                12 => '4',
                16 => '8',
                _ => c,
            });
            s
        })
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::time::SystemTime::now());
    let b = RandomState::new().hash_one(a);
    (u128::from(a) << 64) | u128::from(b)
}

pub fn request(id: &str, method: &str, payload: Value) -> Value {
    json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
           "type": "request", "requestId": id, "method": method, "payload": payload})
}

/// A JSON WebSocket client over any stream.
pub struct Client<S> {
    pub ws: WebSocketStream<S>,
    pub welcome: Value,
}

pub type TcpClient = Client<MaybeTlsStream<TcpStream>>;

pub async fn connect(url: &str) -> TcpClient {
    try_connect(url, &[]).await.expect("connect")
}

pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<TcpClient, String> {
    let mut b = ClientBuilder::new().uri(url).map_err(|e| e.to_string())?;
    for (k, v) in headers {
        b = b
            .add_header(
                http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?,
                http::HeaderValue::from_str(v).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
    }
    let (ws, _) = tokio::time::timeout(WAIT, b.connect())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Client::welcome(ws).await
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub async fn welcome(ws: WebSocketStream<S>) -> Result<Self, String> {
        let mut c = Client {
            ws,
            welcome: Value::Null,
        };
        let w = c.next_json().await;
        if w["notification"]["topic"] != "helios:welcome" {
            return Err(format!("expected the welcome, got {w}"));
        }
        c.welcome = w["notification"]["data"].clone();
        Ok(c)
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn next_json(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("websocket error");
            if let Some(text) = msg.as_text() {
                return serde_json::from_str(text).expect("invalid JSON");
            }
            assert!(!msg.is_close(), "unexpected close: {:?}", msg.as_close());
        }
    }

    pub async fn call(&mut self, method: &str, payload: Value) -> Value {
        let id = uuid();
        self.send_json(&request(&id, method, payload)).await;
        loop {
            let v = self.next_json().await;
            if v["type"] == "response" && v["requestId"] == id.as_str() {
                return v;
            }
        }
    }

    /// Waits for the close frame; its code, or None on a plain EOF.
    pub async fn closed(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("timed out waiting for the close");
            match next {
                None | Some(Err(_)) => return None,
                Some(Ok(m)) => {
                    if let Some((code, _)) = m.as_close() {
                        return Some(u16::from(code));
                    }
                }
            }
        }
    }
}

/// One HTTP/1.1 request over a fresh connection; `(status, body)`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("tcp connect");
    http_on(&mut s, addr, method, path, headers).await
}

pub async fn http_on<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    http_with_body(s, addr, method, path, headers, "").await
}

/// A POST of a JSON body over a fresh connection; `(status, body)`.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("tcp connect");
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    http_with_body(&mut s, addr, "POST", path, &all, body).await
}

async fn http_with_body<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Headers of a WebSocket upgrade request (for raw handshakes).
pub const UPGRADE: [(&str, &str); 4] = [
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub const SECRET: &str = "a-test-secret-of-32-bytes-long!!";

pub fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

pub fn write_temp(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "helios-server-test-{}-{}",
        std::process::id(),
        uuid()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write temp");
    p
}
