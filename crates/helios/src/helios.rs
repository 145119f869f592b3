//! [`Builder`] wires methods, events, middleware and hooks; [`Helios`] is the
//! running server's cheap-clone handle.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use helios_protocol::ParseMode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Auth, AuthHook, AuthRejection, HandshakeRequest};
use crate::broker::{Broker, BrokerError};
use crate::builtins;
use crate::cluster::{Cluster, ClusterParts, HeliosNodeHandler};
use crate::config::Config;
use crate::connection::Connection;
use crate::cork::Cork;
use crate::error::RegisterError;
use crate::glob::Pattern;
use crate::handler::{BoxFuture, EventHandler, MethodHandler, erase_event, erase_method};
use crate::health::{HealthClock, HealthEvent};
use crate::memory_broker::MemoryBroker;
use crate::metrics::{Gauges, Metrics};
use crate::middleware::Middleware;
use crate::names::NameRegistry;
use crate::registry::ConnectionRegistry;
use crate::relay::{RelayDecision, RelayHook, RelayRequest};
use crate::rooms::{RoomEvent, RoomRegistry, RoomRule, RoomRules};
use crate::router::{MethodOptions, RouteTable};
use crate::session::{MemorySessionStore, RecoveryConfig, SessionStore};

type ConnectHook = Arc<dyn Fn(Connection) -> BoxFuture<()> + Send + Sync>;
pub(crate) type RoomHook = Arc<dyn Fn(RoomEvent) -> BoxFuture<()> + Send + Sync>;
type HealthHook = Arc<dyn Fn(HealthEvent) -> BoxFuture<()> + Send + Sync>;

/// Builds a [`Helios`] server.
///
/// ```
/// use helios::{Context, Helios, MethodError};
///
/// async fn hello(ctx: Context<String>) -> Result<String, MethodError> {
///     Ok(format!("hello, {}", ctx.payload))
/// }
///
/// let helios = Helios::builder()
///     .request_timeout(std::time::Duration::from_secs(2))
///     .method("greet:hello", hello)
///     .on("chat:typing", |ctx: Context| async move { println!("{} types", ctx.connection().id()) })
///     .build();
/// assert_eq!(helios.connection_count(), 0);
/// ```
#[must_use = "a Builder does nothing until `build()`"]
pub struct Builder {
    config: Config,
    routes: RouteTable,
    on_connect: Vec<ConnectHook>,
    on_disconnect: Vec<ConnectHook>,
    on_room_event: Vec<RoomHook>,
    rules: RoomRules,
    broker: Option<Arc<dyn Broker>>,
    relay_hook: Option<RelayHook>,
    sessions: Option<Arc<dyn SessionStore>>,
    cluster: Option<ClusterParts>,
    on_health: Vec<HealthHook>,
    auth: Option<AuthHook>,
}

impl Builder {
    fn new() -> Self {
        Self {
            config: Config::default(),
            routes: RouteTable::default(),
            on_connect: Vec::new(),
            on_disconnect: Vec::new(),
            on_room_event: Vec::new(),
            rules: RoomRules::default(),
            broker: None,
            relay_hook: None,
            auth: None,
            sessions: None,
            cluster: None,
            on_health: Vec::new(),
        }
    }

    /// Makes this server one node of a cluster: presence lists the members
    /// of every node, peer relay and names reach every node, and sessions
    /// are kept in the cluster's store so a client may recover on any node
    /// (see `docs/cluster.md`). Without it the server is one node on its
    /// own. A later [`session_store`](Self::session_store) overrides the
    /// session part.
    pub fn cluster<C: Cluster>(mut self, cluster: Arc<C>) -> Self {
        self.sessions = Some(cluster.clone());
        self.cluster = Some(ClusterParts::new(cluster));
        self
    }

    /// Turns on session recovery (`starling:getToken`, `?recover=TOKEN`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let recovery = helios::RecoveryConfig::new(b"a-secret-of-at-least-32-bytes!!!", Duration::from_secs(300))?;
    /// let helios = helios::Helios::builder().recovery(recovery).build();
    /// # drop(helios);
    /// # Ok::<(), helios::SecretTooShort>(())
    /// ```
    pub fn recovery(mut self, recovery: RecoveryConfig) -> Self {
        self.config.recovery = Some(recovery);
        self
    }

    /// Where dropped sessions wait for recovery (default: in memory).
    pub fn session_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.sessions = Some(store);
        self
    }

    /// Health check: ping every `interval` (`None`: off), close with 4100
    /// after `max_missed` unanswered pings. Default 30 s and 2.
    pub fn health_check(mut self, interval: Option<Duration>, max_missed: u32) -> Self {
        self.config.ping_interval = interval;
        self.config.max_missed_pongs = max_missed.max(1);
        self
    }

    /// Runs on health-check events (`ping-missed`, `ping-timeout`,
    /// `pong-received`).
    pub fn on_health_event<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(HealthEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_health.push(Arc::new(move |e| Box::pin(hook(e))));
        self
    }

    /// Declares the rule of the rooms matching a pattern (`*` one segment,
    /// `**` any); the first declared match wins.
    ///
    /// ```
    /// use helios::{Access, Helios, RoomRule};
    /// let helios = Helios::builder()
    ///     .room("news:*", RoomRule::new().publish(Access::Nobody))
    ///     .room("user:*", RoomRule::new().validator(|req| async move {
    ///         req.connection.user_id().as_deref() == req.captures.first().map(String::as_str)
    ///     }))
    ///     .build();
    /// # drop(helios);
    /// ```
    ///
    /// # Panics
    /// When the pattern is malformed.
    #[track_caller]
    pub fn room(mut self, pattern: &str, rule: RoomRule) -> Self {
        match Pattern::new(pattern) {
            Ok(p) => self.rules.declare(p, rule),
            Err(e) => panic!("{e}"),
        }
        self
    }

    /// The rule for rooms no pattern declares (default: [`RoomRule::new`],
    /// open to anyone).
    pub fn undeclared_rooms(mut self, rule: RoomRule) -> Self {
        self.rules.undeclared = rule;
        self
    }

    /// The broker that carries publications (default: in memory, one node).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Decides every relayed request and notification (`peer` field):
    /// forward it, answer it here, or deny it.
    ///
    /// ```
    /// use helios::{Helios, RelayDecision};
    /// use helios_protocol::ErrorCode;
    /// let helios = Helios::builder()
    ///     .relay_hook(|req| async move {
    ///         if req.method.as_deref() == Some("admin:reset") {
    ///             RelayDecision::Deny(helios::MethodError::new(ErrorCode::FORBIDDEN, "no"))
    ///         } else {
    ///             RelayDecision::Forward
    ///         }
    ///     })
    ///     .build();
    /// # drop(helios);
    /// ```
    pub fn relay_hook<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(RelayRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RelayDecision> + Send + 'static,
    {
        self.relay_hook = Some(Arc::new(move |r| Box::pin(hook(r))));
        self
    }

    /// Authenticates every WebSocket handshake before the `101`: `Ok(Some)`
    /// admits an authenticated connection (its user id and claims are set
    /// before the welcome), `Ok(None)` an anonymous one, `Err` answers the
    /// HTTP request with the rejection's status (401, 403, 503). With a hook
    /// set, the built-in `helios:refresh {token}` re-runs it to extend a live
    /// connection; one whose [`Auth::expires_at`] passes is closed with 4001.
    ///
    /// ```
    /// use helios::{Auth, AuthRejection, Helios};
    /// let helios = Helios::builder()
    ///     .authenticate(|req| async move {
    ///         match req.token().as_deref() {
    ///             Some("let-me-in") => Ok(Some(Auth::user("ada").rooms(["chat:*"]))),
    ///             Some(_) => Err(AuthRejection::Unauthorized("bad token".into())),
    ///             None => Ok(None),
    ///         }
    ///     })
    ///     .build();
    /// # drop(helios);
    /// ```
    pub fn authenticate<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(HandshakeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Auth>, AuthRejection>> + Send + 'static,
    {
        self.auth = Some(Arc::new(move |r| Box::pin(hook(r))));
        self
    }

    /// Runs when a connection joins or leaves a room.
    pub fn on_room_event<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(RoomEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_room_event
            .push(Arc::new(move |e| Box::pin(hook(e))));
        self
    }

    /// Handles requests for methods nobody registered (after middleware);
    /// the binary uses it to forward them to an HTTP backend.
    pub fn fallback<H: MethodHandler<serde_json::Value>>(mut self, handler: H) -> Self {
        self.routes.set_fallback(erase_method(handler));
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Default method timeout (5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Largest accepted message in bytes (1 MiB).
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.config.max_message_bytes = max;
        self
    }

    /// Method-name rules (strict). Set before registering methods.
    pub fn parse_mode(mut self, mode: ParseMode) -> Self {
        self.config.parse_mode = mode;
        self
    }

    /// Registers a method handler. A name with `*` segments is a pattern
    /// (`*` one segment, `**` any): `gateway:**` answers every method under
    /// `gateway:` that has no handler of its own ([`Context::method`] is
    /// the name called). Patterns are tried in registration order.
    ///
    /// ```
    /// use helios::{Context, Helios, MethodError};
    /// let helios = Helios::builder()
    ///     .method("gateway:**", |ctx: Context| async move {
    ///         Ok::<_, MethodError>(format!("would route {}", ctx.method()))
    ///     })
    ///     .build();
    /// # drop(helios);
    /// ```
    ///
    /// # Panics
    /// When the name is reserved, invalid, or already taken; use
    /// [`try_method`](Self::try_method) to get the error instead.
    #[track_caller]
    pub fn method<T, H: MethodHandler<T>>(self, name: &str, handler: H) -> Self {
        self.method_with(name, handler, MethodOptions::new())
    }

    /// Registers a method handler with options (e.g. its own timeout).
    ///
    /// # Panics
    /// As [`method`](Self::method).
    #[track_caller]
    pub fn method_with<T, H: MethodHandler<T>>(
        self,
        name: &str,
        handler: H,
        opts: MethodOptions,
    ) -> Self {
        match self.try_method_with(name, handler, opts) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        }
    }

    /// Registers a method handler, or says why it cannot be.
    ///
    /// # Errors
    /// [`RegisterError`] for a reserved namespace, a bad name or a duplicate.
    pub fn try_method<T, H: MethodHandler<T>>(
        self,
        name: &str,
        handler: H,
    ) -> Result<Self, RegisterError> {
        self.try_method_with(name, handler, MethodOptions::new())
    }

    /// [`try_method`](Self::try_method) with options.
    ///
    /// # Errors
    /// As [`try_method`](Self::try_method).
    pub fn try_method_with<T, H: MethodHandler<T>>(
        mut self,
        name: &str,
        handler: H,
        opts: MethodOptions,
    ) -> Result<Self, RegisterError> {
        let mode = self.config.parse_mode;
        self.routes
            .add_method(name, erase_method(handler), opts, mode)?;
        Ok(self)
    }

    /// Registers a handler for client notifications on a topic (exact or
    /// glob pattern).
    ///
    /// # Panics
    /// When the pattern is malformed.
    #[track_caller]
    pub fn on<T, H: EventHandler<T>>(mut self, topic: &str, handler: H) -> Self {
        if let Err(e) = self.routes.add_event(topic, erase_event(handler)) {
            panic!("{e}");
        }
        self
    }

    /// Adds middleware for the methods matching a glob pattern (`*` one
    /// segment, `**` any). Middleware runs in registration order.
    ///
    /// # Panics
    /// When the pattern is malformed.
    #[track_caller]
    pub fn middleware(mut self, pattern: &str, mw: impl Middleware) -> Self {
        if let Err(e) = self.routes.add_middleware(pattern, Arc::new(mw)) {
            panic!("{e}");
        }
        self
    }

    /// Groups methods and middleware under a namespace prefix: inside,
    /// `method("list", h)` registers `api:list` and `middleware("**", m)`
    /// covers `api:**`.
    ///
    /// ```
    /// use helios::{Context, Helios, MethodError};
    /// let helios = Helios::builder()
    ///     .namespace("api", |ns| ns.method("users", |_: Context| async { Ok::<_, MethodError>(vec!["ada"]) }))
    ///     .build();
    /// # drop(helios);
    /// ```
    pub fn namespace(self, prefix: &str, f: impl FnOnce(Namespace) -> Namespace) -> Self {
        f(Namespace {
            builder: self,
            prefix: prefix.to_owned(),
        })
        .builder
    }

    /// Runs for every new connection, after the welcome, beside the
    /// connection's first messages (so a hook may call the client with
    /// `conn.request` and get its answer). Setup that must happen before
    /// any message is handled belongs in `authenticate`.
    pub fn on_connect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connect.push(Arc::new(move |c| Box::pin(hook(c))));
        self
    }

    /// Runs when a connection has ended.
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect
            .push(Arc::new(move |c| Box::pin(hook(c))));
        self
    }

    /// Finishes the server.
    pub fn build(mut self) -> Helios {
        let dotted = self.config.parse_mode == ParseMode::Permissive;
        builtins::register(&mut self.routes, self.config.recovery.is_some(), dotted);
        if self.auth.is_some() {
            builtins::register_refresh(&mut self.routes, dotted);
        }
        self.routes.finish();
        Helios {
            inner: Arc::new(Inner {
                config: self.config,
                routes: self.routes,
                registry: ConnectionRegistry::new(),
                rooms: Arc::new(RoomRegistry::new()),
                rules: self.rules,
                broker: self.broker.unwrap_or_else(|| Arc::new(MemoryBroker::new())),
                broker_started: tokio::sync::OnceCell::new(),
                names: NameRegistry::default(),
                relay_hook: self.relay_hook,
                auth: self.auth,
                metrics: Metrics::new(),
                sessions: self.sessions.unwrap_or_else(|| MemorySessionStore::new()),
                cluster: self.cluster,
                on_health: self.on_health,
                on_connect: self.on_connect,
                on_disconnect: self.on_disconnect,
                on_room_event: self.on_room_event,
                shutdown: CancellationToken::new(),
                shutting_down: AtomicBool::new(false),
                tracker: TaskTracker::new(),
                health_clock: HealthClock::default(),
                cork: Cork::default(),
            }),
        }
    }
}

/// A namespace being filled; see [`Builder::namespace`].
#[must_use]
pub struct Namespace {
    builder: Builder,
    prefix: String,
}

impl Namespace {
    fn full(&self, name: &str) -> String {
        format!("{}:{}", self.prefix, name)
    }

    /// Registers `prefix:name`.
    ///
    /// # Panics
    /// As [`Builder::method`].
    #[track_caller]
    pub fn method<T, H: MethodHandler<T>>(mut self, name: &str, handler: H) -> Self {
        let full = self.full(name);
        self.builder = self.builder.method(&full, handler);
        self
    }

    /// Adds middleware for `prefix:pattern`.
    ///
    /// # Panics
    /// As [`Builder::middleware`].
    #[track_caller]
    pub fn middleware(mut self, pattern: &str, mw: impl Middleware) -> Self {
        let full = self.full(pattern);
        self.builder = self.builder.middleware(&full, mw);
        self
    }
}

/// A Helios server: the handle that serves connections and reaches them.
///
/// Cheap to clone; every clone is the same server.
#[derive(Clone)]
pub struct Helios {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    routes: RouteTable,
    registry: ConnectionRegistry,
    rooms: Arc<RoomRegistry>,
    rules: RoomRules,
    broker: Arc<dyn Broker>,
    broker_started: tokio::sync::OnceCell<()>,
    names: NameRegistry,
    relay_hook: Option<RelayHook>,
    auth: Option<AuthHook>,
    metrics: Metrics,
    sessions: Arc<dyn SessionStore>,
    cluster: Option<ClusterParts>,
    on_health: Vec<HealthHook>,
    on_connect: Vec<ConnectHook>,
    on_disconnect: Vec<ConnectHook>,
    on_room_event: Vec<RoomHook>,
    shutdown: CancellationToken,
    /// Set with `shutdown`: read on every request, and the token's own
    /// `is_cancelled` takes a mutex.
    shutting_down: AtomicBool,
    tracker: TaskTracker,
    health_clock: HealthClock,
    cork: Cork,
}

/// A non-owning handle to a [`Helios`], held by connections so they can
/// reach the server without keeping it alive.
#[derive(Clone)]
pub(crate) struct WeakHelios(Weak<Inner>);

impl WeakHelios {
    pub(crate) fn upgrade(&self) -> Option<Helios> {
        self.0.upgrade().map(|inner| Helios { inner })
    }
}

impl Helios {
    /// Starts building a server.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn downgrade(&self) -> WeakHelios {
        WeakHelios(Arc::downgrade(&self.inner))
    }

    /// Connects the broker (once); `serve` calls it before accepting.
    ///
    /// # Errors
    /// The broker's error when its backend cannot be reached.
    pub async fn start(&self) -> Result<(), BrokerError> {
        self.inner
            .broker_started
            .get_or_try_init(|| async {
                let handler: Arc<dyn crate::broker::BrokerHandler> = self.inner.rooms.clone();
                self.inner.broker.start(handler).await?;
                if let Some(cluster) = &self.inner.cluster {
                    let node = Arc::new(HeliosNodeHandler(self.downgrade()));
                    cluster.bus.start(node).await?;
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    pub(crate) fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    pub(crate) fn rooms(&self) -> &RoomRegistry {
        &self.inner.rooms
    }

    pub(crate) fn rules(&self) -> &RoomRules {
        &self.inner.rules
    }

    pub(crate) fn names(&self) -> &NameRegistry {
        &self.inner.names
    }

    pub(crate) fn relay_hook(&self) -> Option<&RelayHook> {
        self.inner.relay_hook.as_ref()
    }

    pub(crate) fn cluster(&self) -> Option<&ClusterParts> {
        self.inner.cluster.as_ref()
    }

    pub(crate) fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.inner.sessions
    }

    /// Runs the health hooks in their own task (the writer must not wait).
    pub(crate) fn emit_health(&self, event: HealthEvent) {
        if self.inner.on_health.is_empty() {
            return;
        }
        let hooks = self.inner.on_health.clone();
        tokio::spawn(async move {
            for hook in hooks {
                hook(event.clone()).await;
            }
        });
    }

    pub(crate) async fn run_room_hooks(&self, event: RoomEvent) {
        for hook in &self.inner.on_room_event {
            hook(event.clone()).await;
        }
    }

    /// The server's counters (see `docs/operations.md`).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Every counter and gauge in the Prometheus text format (what the
    /// binary serves at `GET /metrics`).
    pub fn render_metrics(&self) -> String {
        let rooms = self.room_list();
        self.inner.metrics.render(&Gauges {
            connections: self.connection_count(),
            rooms: rooms.len(),
            subscriptions: rooms.iter().map(|(_, n)| n).sum(),
        })
    }

    pub(crate) fn auth_hook(&self) -> Option<&AuthHook> {
        self.inner.auth.as_ref()
    }

    /// A handle to a live connection, by `starlingId`.
    pub fn connection(&self, id: &str) -> Option<Connection> {
        self.inner.registry.get(id)
    }

    /// Every live connection.
    pub fn connections(&self) -> Vec<Connection> {
        self.inner.registry.all()
    }

    /// How many connections are live.
    pub fn connection_count(&self) -> usize {
        self.inner.registry.len()
    }

    /// Starts a graceful shutdown: no new requests, in-flight ones finish
    /// (up to the grace period), then every connection closes with 1001.
    pub fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.shutdown.cancel();
        // Dozing connections wait on their outbox only: wake them to drain.
        for conn in self.inner.registry.all() {
            conn.outbox().wake();
        }
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub(crate) fn health_clock(&self) -> &HealthClock {
        &self.inner.health_clock
    }

    pub(crate) fn cork(&self) -> &Cork {
        &self.inner.cork
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    pub(crate) fn routes(&self) -> &RouteTable {
        &self.inner.routes
    }

    pub(crate) fn registry(&self) -> &ConnectionRegistry {
        &self.inner.registry
    }

    pub(crate) fn has_connect_hooks(&self) -> bool {
        !self.inner.on_connect.is_empty()
    }

    pub(crate) async fn run_connect_hooks(&self, conn: &Connection) {
        for hook in &self.inner.on_connect {
            hook(conn.clone()).await;
        }
    }

    pub(crate) async fn run_disconnect_hooks(&self, conn: &Connection) {
        for hook in &self.inner.on_disconnect {
            hook(conn.clone()).await;
        }
    }
}
