//! Configuring and opening a connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use helios_protocol::Encoding;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::connection::TaskConfig;
use crate::dial::Dialer;
use crate::error::{ClientError, MethodError};
use crate::events::ClientEvent;
use crate::methods::Methods;
use crate::reconnect::{ReconnectPolicy, Supervisor};
use crate::request::Link;
use crate::shared::Shared;

/// Settings for a [`Client`], with the handlers it serves; finish with
/// [`connect`](Self::connect).
///
/// Every limit has a documented default and every queue is bounded.
///
/// ```no_run
/// use std::time::Duration;
/// use starling::{Client, Encoding, MethodError};
///
/// # async fn demo() -> Result<(), starling::ClientError> {
/// let client = Client::builder("ws://127.0.0.1:7700/ws")
///     .encoding(Encoding::MsgPack)
///     .request_timeout(Duration::from_secs(5))
///     .method("client:add", |(a, b): (i64, i64)| async move { Ok::<_, MethodError>(a + b) })
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a ClientBuilder does nothing until `connect` is called"]
pub struct ClientBuilder {
    url: String,
    encoding: Encoding,
    request_timeout: Duration,
    connect_timeout: Duration,
    close_timeout: Duration,
    send_queue: usize,
    notification_capacity: usize,
    room_capacity: usize,
    max_message_size: usize,
    max_inflight_handlers: usize,
    headers: Vec<(String, String)>,
    methods: Methods,
    reconnect: Option<ReconnectPolicy>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("encoding", &self.encoding)
            .field("request_timeout", &self.request_timeout)
            .field("methods", &self.methods.len())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A builder for the given `ws://` or `wss://` URL, with the defaults
    /// listed on each setter. Same as [`Client::builder`].
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            encoding: Encoding::Json,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            send_queue: 1024,
            notification_capacity: 1024,
            room_capacity: 256,
            max_message_size: 16 * 1024 * 1024,
            max_inflight_handlers: 1024,
            headers: Vec::new(),
            methods: Methods::default(),
            reconnect: None,
        }
    }

    /// The encoding to ask for (default JSON). MessagePack is offered with
    /// JSON as fallback; the server's choice wins and is reported by
    /// [`Client::encoding`].
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Default time to wait for a response (default 30 s); per call with
    /// [`RequestOptions::timeout`](crate::RequestOptions::timeout).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Time allowed for TCP connect, upgrade and welcome together
    /// (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long [`Client::close`] waits for the server to answer the close
    /// (default 5 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Capacity of the outbound queue, in messages (default 1024). Senders
    /// wait when it is full.
    pub fn send_queue(mut self, capacity: usize) -> Self {
        self.send_queue = capacity.max(1);
        self
    }

    /// Ring size of each [`Notifications`](crate::Notifications) receiver
    /// (default 1024); see its lag policy.
    pub fn notification_capacity(mut self, capacity: usize) -> Self {
        self.notification_capacity = capacity.max(1);
        self
    }

    /// Ring size of each room's [`Subscription`](crate::Subscription)s
    /// (default 256).
    pub fn room_capacity(mut self, capacity: usize) -> Self {
        self.room_capacity = capacity.max(1);
        self
    }

    /// Largest message accepted from the server, in bytes (default 16 MiB);
    /// a larger one ends the connection.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Most server → client requests handled at once (default 1024); more
    /// are answered `TOO_MANY_REQUESTS`.
    pub fn max_inflight_handlers(mut self, n: usize) -> Self {
        self.max_inflight_handlers = n.max(1);
        self
    }

    /// Adds an HTTP header to the upgrade request (for example
    /// `Authorization`). Invalid names or values fail at
    /// [`connect`](Self::connect).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Turns on auto-reconnect with session recovery (off by default).
    ///
    /// After an unexpected loss of the socket (no close frame, or close
    /// codes 1001, 1006, 1011–1014, 4008, 4100–4199) the client reconnects
    /// by itself with this backoff, never after [`Client::close`] nor after
    /// a deliberate close (1000, 1008, 1009, 4000–4099 other than 4008).
    /// While it is away, requests and notifications are queued; handles,
    /// subscriptions and receivers stay valid.
    ///
    /// With it on, the client keeps a recovery token (`starling:getToken`
    /// after each connect, refreshed at two thirds of `expiresIn`) and
    /// tracks the last `offset`/`epoch` per room, and reconnects with
    /// `?recover=TOKEN&since=POSITIONS`: the server restores the session
    /// (same `starlingId`, rooms, name) and replays the missed room
    /// messages first. Without a usable token it starts a fresh session and
    /// re-joins its rooms and re-claims its `identify` name. See
    /// [`ClientEvent`](crate::ClientEvent) for what is reported, and
    /// [`RequestOptions::retry_safe`](crate::RequestOptions::retry_safe) for
    /// requests in flight at the loss.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use starling::{Client, ReconnectPolicy};
    ///
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// let client = Client::builder("ws://127.0.0.1:7700/ws")
    ///     .reconnect(ReconnectPolicy {
    ///         initial: Duration::from_millis(200),
    ///         max_attempts: Some(20),
    ///         ..ReconnectPolicy::default()
    ///     })
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// Turns auto-reconnect off again (the default): the first loss of the
    /// socket ends the client.
    pub fn no_reconnect(mut self) -> Self {
        self.reconnect = None;
        self
    }

    /// Registers a handler for server → client requests to `name`.
    ///
    /// The payload is deserialized into `P` (a mismatch answers
    /// `INVALID_PAYLOAD`); the result is serialized as the response `data`.
    /// An `Err` answers with its code; a panic answers `METHOD_ERROR`. A
    /// `helios:cancel` from the server aborts the handler's task. Requests
    /// for unregistered methods are answered `METHOD_NOT_FOUND`.
    ///
    /// # Panics
    /// When `name` is registered twice (a setup bug).
    ///
    /// ```no_run
    /// use serde_json::{json, Value};
    /// use starling::{Client, ErrorCode, MethodError};
    ///
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// let client = Client::builder("ws://127.0.0.1:7700/ws")
    ///     .method("client:info", |_: Value| async move {
    ///         Ok::<_, MethodError>(json!({"os": "linux"}))
    ///     })
    ///     .method("files:read", |path: String| async move {
    ///         if path.starts_with("/etc") {
    ///             return Err(MethodError::new(ErrorCode::FORBIDDEN, "no"));
    ///         }
    ///         Ok(json!({"path": path, "bytes": 0}))
    ///     })
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn method<P, R, E, F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<MethodError> + Send + 'static,
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let name = name.into();
        if !self.methods.insert(name.clone(), handler) {
            panic!("starling: method {name:?} is registered twice");
        }
        self
    }

    /// Opens the connection: TCP, the WebSocket upgrade (offering the
    /// encoding's subprotocol), then waits for the server's
    /// `helios:welcome`.
    ///
    /// # Errors
    /// [`ClientError::Connect`] with the step that failed.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), starling::ClientError> {
    /// let client = starling::Client::builder("ws://127.0.0.1:7700/ws").connect().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self) -> Result<Client, ClientError> {
        let dialer = Dialer {
            url: self.url.clone(),
            headers: self.headers.clone(),
            max_message_size: self.max_message_size,
            connect_timeout: self.connect_timeout,
        };
        dialer.check()?;
        let first = dialer.dial(&self.url, self.encoding, None).await?;
        let encoding = first.encoding;

        let shared = Shared::new(self.notification_capacity, self.room_capacity);
        let (commands_tx, commands_rx) = mpsc::channel(self.send_queue);
        shared.emit(ClientEvent::Connected {
            starling_id: first.welcome.starling_id.clone(),
            recovered: first.welcome.recovered,
        });
        let supervisor = Supervisor {
            dialer,
            policy: self.reconnect,
            shared: Arc::clone(&shared),
            methods: Arc::new(self.methods),
            config: TaskConfig {
                encoding,
                close_timeout: self.close_timeout,
                max_inflight_handlers: self.max_inflight_handlers,
                request_timeout: self.request_timeout,
            },
        };
        // The welcome is known before `connect` returns.
        shared.set_welcome(first.welcome.clone());
        tokio::spawn(supervisor.run(first, commands_rx));

        let _ = shared
            .stream_link
            .set(Arc::new(crate::streams::StreamSender {
                commands: commands_tx.downgrade(),
                encoding,
            }));
        let link = Link {
            shared,
            commands: commands_tx,
            encoding,
        };
        Ok(Client::from_link(link, self.request_timeout))
    }
}
