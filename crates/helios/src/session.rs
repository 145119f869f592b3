//! Session recovery: recovery tokens (HS256 JWTs), the snapshot a dropped
//! connection leaves behind, and where snapshots are kept.
//!
//! A client asks `starling:getToken`, and after a dropped network reconnects
//! with `?recover=TOKEN` (and, to lose nothing, `&since=` its last room
//! positions). Within the TTL it gets its `starlingId`, data, name and rooms
//! back, and the room messages it missed are replayed before live traffic.
//! See `docs/recovery.md` for the guarantees and their limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::broker::{BrokerError, StreamPosition};

/// Shortest accepted recovery secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Recovery settings: the token secret and how long a dropped session is
/// kept.
///
/// ```
/// use std::time::Duration;
/// let ok = helios::RecoveryConfig::new("0123456789abcdef0123456789abcdef", Duration::from_secs(300));
/// assert!(ok.is_ok());
/// let short = helios::RecoveryConfig::new("too short", Duration::from_secs(300));
/// assert!(short.is_err());
/// ```
#[derive(Clone)]
pub struct RecoveryConfig {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// How long a dropped session is kept, and how long a token is valid.
    pub ttl: Duration,
}

impl std::fmt::Debug for RecoveryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryConfig")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A recovery secret shorter than [`MIN_SECRET_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the recovery secret must be at least {MIN_SECRET_LEN} bytes (got {0})")]
pub struct SecretTooShort(pub usize);

impl RecoveryConfig {
    /// Recovery with a secret of at least 32 bytes.
    ///
    /// # Errors
    /// [`SecretTooShort`] for a shorter secret.
    pub fn new(secret: impl AsRef<[u8]>, ttl: Duration) -> Result<Self, SecretTooShort> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(SecretTooShort(secret.len()));
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl,
        })
    }

    /// Issues a token for a connection (spec §5.2 claims plus `exp`).
    pub(crate) fn issue(&self, starling_id: &str) -> Result<String, String> {
        let now = helios_protocol::now_ms();
        let claims = TokenClaims {
            starling_id: starling_id.to_owned(),
            timestamp: now,
            state: Value::Object(Default::default()),
            iat: now / 1000,
            exp: now / 1000 + self.ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    /// Verifies a token: HS256 only (so `alg: none` and every other
    /// algorithm are refused), a valid signature, not expired.
    pub(crate) fn verify(&self, token: &str) -> Result<TokenClaims, String> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<TokenClaims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }
}

/// The claims of a recovery token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TokenClaims {
    #[serde(rename = "starlingId")]
    pub(crate) starling_id: String,
    pub(crate) timestamp: u64,
    pub(crate) state: Value,
    pub(crate) iat: u64,
    pub(crate) exp: u64,
}

/// What a dropped connection leaves behind for its recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// The connection's id, kept across recovery.
    pub starling_id: String,
    /// Its data map.
    pub data: HashMap<String, Value>,
    /// Its rooms, each with the room's position when the connection dropped
    /// (the replay starts there when the client does not say `since`).
    pub rooms: Vec<(String, StreamPosition)>,
    /// Its peer name.
    pub name: Option<String>,
    /// Its user (from the handshake's credential or set by the app).
    pub user: Option<String>,
    /// The user of the handshake's credential (JWT, auth hook), kept apart
    /// from `user`, which the app may change: such a session is only given
    /// back to a connection authenticated as the same user.
    #[serde(default)]
    pub auth_user: Option<String>,
    /// Its opaque token.
    pub token: Option<String>,
}

impl SessionSnapshot {
    /// Whether a connection that authenticated as `user` (or not at all)
    /// may take this session over. A recovery token is a bearer credential
    /// for the session, not for the identity: the handshake's credential
    /// wins, so a token cannot make one user another, and a session
    /// authenticated at its handshake needs the same user again.
    ///
    /// ```
    /// # use helios::SessionSnapshot;
    /// # use std::collections::HashMap;
    /// let alice = SessionSnapshot {
    ///     starling_id: "c1".into(),
    ///     data: HashMap::new(),
    ///     rooms: vec![],
    ///     name: None,
    ///     user: Some("alice".into()),
    ///     auth_user: Some("alice".into()),
    ///     token: None,
    /// };
    /// assert!(alice.may_be_taken_by(Some("alice")));
    /// assert!(!alice.may_be_taken_by(Some("bob")));
    /// assert!(!alice.may_be_taken_by(None));
    /// ```
    #[must_use]
    pub fn may_be_taken_by(&self, user: Option<&str>) -> bool {
        match (self.auth_user.as_deref(), user) {
            (Some(owner), now) => Some(owner) == now,
            (None, Some(now)) => self.user.as_deref().is_none_or(|saved| saved == now),
            (None, None) => true,
        }
    }
}

/// Where snapshots wait for their connection to come back. One node keeps
/// them in memory; a cluster shares them (Redis, NATS KV) so a client may
/// recover on another node.
pub trait SessionStore: Send + Sync + 'static {
    /// Keeps a snapshot for `ttl`.
    fn save(
        &self,
        snapshot: SessionSnapshot,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Takes a snapshot out (at most one taker gets it).
    fn take<'a>(
        &'a self,
        starling_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SessionSnapshot>, BrokerError>>;
}

/// Snapshots in this process's memory, dropped after their TTL.
#[derive(Default)]
pub struct MemorySessionStore {
    sessions: Mutex<HashMap<String, (Instant, SessionSnapshot)>>,
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

impl SessionStore for MemorySessionStore {
    fn save(
        &self,
        snapshot: SessionSnapshot,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let mut sessions = self.sessions.lock();
        let now = Instant::now();
        sessions.retain(|_, (until, _)| *until > now);
        sessions.insert(snapshot.starling_id.clone(), (now + ttl, snapshot));
        Box::pin(async { Ok(()) })
    }

    fn take<'a>(
        &'a self,
        starling_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SessionSnapshot>, BrokerError>> {
        let taken = self
            .sessions
            .lock()
            .remove(starling_id)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, s)| s);
        Box::pin(async move { Ok(taken) })
    }
}

/// Why a recovery attempt did not restore the session (sent in the
/// welcome's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotRecovered {
    Disabled,
    InvalidToken,
    SessionHeld,
    SessionExpired,
    StoreUnavailable,
    OtherUser,
}

impl NotRecovered {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "recovery is not enabled on this server",
            Self::InvalidToken => "invalid or expired recovery token",
            Self::SessionHeld => "the session is still held by a live connection",
            Self::SessionExpired => "the session expired or was already recovered",
            Self::StoreUnavailable => "the session store is unavailable",
            Self::OtherUser => "the session belongs to another user",
        }
    }
}

/// What a reconnecting client asked for: `?recover=TOKEN&since=POSITIONS`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecoverRequest {
    pub(crate) token: String,
    /// The client's last received position per room.
    pub(crate) since: HashMap<String, StreamPosition>,
}

impl RecoverRequest {
    /// Reads `recover` and `since` from a query string; `since` is a JSON
    /// object `{"room": {"offset": n, "epoch": "..."}}`.
    pub(crate) fn from_query(query: &HashMap<String, String>) -> Option<Self> {
        let token = query.get("recover")?.clone();
        let since = query
            .get("since")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        Some(Self { token, since })
    }
}

/// How a recovery went, for the welcome.
pub(crate) struct Recovered {
    pub(crate) snapshot: SessionSnapshot,
}

impl crate::helios::Helios {
    /// Checks the token and takes the session snapshot out of the store,
    /// for a connection that authenticated as `user` at its handshake (a
    /// session of another user goes back to the store untouched).
    pub(crate) async fn take_session(
        &self,
        req: &RecoverRequest,
        user: Option<&str>,
    ) -> Result<Recovered, NotRecovered> {
        let recovery = self
            .config()
            .recovery
            .as_ref()
            .ok_or(NotRecovered::Disabled)?;
        let claims = recovery.verify(&req.token).map_err(|e| {
            tracing::debug!(error = %e, "recovery token refused");
            NotRecovered::InvalidToken
        })?;
        if self.connection(&claims.starling_id).is_some() {
            return Err(NotRecovered::SessionHeld);
        }
        // Held by a live connection on another node (the directory entry is
        // removed after the snapshot is saved, and expires with its node).
        if let Some(cluster) = self.cluster() {
            match cluster.directory.locate(&claims.starling_id).await {
                Ok(Some(_)) => return Err(NotRecovered::SessionHeld),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "peer directory unavailable");
                    return Err(NotRecovered::StoreUnavailable);
                }
            }
        }
        match self.sessions().take(&claims.starling_id).await {
            Ok(Some(snapshot)) if !snapshot.may_be_taken_by(user) => {
                tracing::info!(conn = %claims.starling_id, "recovery refused: the session belongs to another user");
                if let Err(e) = self.sessions().save(snapshot, recovery.ttl).await {
                    tracing::warn!(error = %e, "session not put back after a refused recovery");
                }
                Err(NotRecovered::OtherUser)
            }
            Ok(Some(snapshot)) => Ok(Recovered { snapshot }),
            Ok(None) => Err(NotRecovered::SessionExpired),
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable");
                Err(NotRecovered::StoreUnavailable)
            }
        }
    }

    /// Keeps what a closing connection needs for its recovery.
    pub(crate) async fn save_session(&self, conn: &crate::connection::Connection) {
        let Some(recovery) = self.config().recovery.as_ref() else {
            return;
        };
        // Only a client that holds a token for this id can come back:
        // nothing to keep for the others.
        if !conn.is_recoverable() {
            return;
        }
        let mut rooms = Vec::new();
        for topic in conn.rooms() {
            // Where the room stands now: the replay starts after it unless
            // the client says `since` (which also covers frames lost in
            // flight).
            let position = match self.broker().history(&topic, None, 0).await {
                Ok(h) => h.position,
                Err(_) => StreamPosition {
                    offset: 0,
                    epoch: String::new(),
                },
            };
            rooms.push((topic, position));
        }
        let snapshot = SessionSnapshot {
            starling_id: conn.id().to_owned(),
            data: conn.data(),
            rooms,
            name: conn.name(),
            user: conn.user_id(),
            auth_user: conn.auth().and_then(|a| a.user_id().map(str::to_owned)),
            token: conn.token(),
        };
        if let Err(e) = self.sessions().save(snapshot, recovery.ttl).await {
            tracing::warn!(conn = %conn.id(), error = %e, "session not saved for recovery");
        }
    }

    /// Puts a recovered session back on a new connection and replays what
    /// it missed. Returns the rooms whose history no longer covered the gap.
    pub(crate) async fn restore_session(
        &self,
        conn: &crate::connection::Connection,
        snapshot: SessionSnapshot,
        since: &HashMap<String, StreamPosition>,
    ) -> (
        Vec<String>,
        Vec<helios_protocol::Message>,
        HashMap<String, u64>,
    ) {
        for (k, v) in snapshot.data {
            conn.set(k, v);
        }
        // The handshake's user stays (take_session checked they agree).
        if let Some(user) = snapshot.user
            && conn.user_id().is_none()
        {
            conn.set_user_id(user);
        }
        if let Some(token) = snapshot.token {
            conn.set_token(token);
        }
        if let Some(name) = snapshot.name
            && !matches!(
                self.claim_name(conn, &name).await,
                Ok(crate::names::Claim::Claimed)
            )
        {
            tracing::debug!(conn = %conn.id(), %name, "recovered name held by another connection");
        }
        conn.mark_recoverable();
        conn.mark_recovered();
        conn.begin_recovery();
        let mut missed = Vec::new();
        let mut replay = Vec::new();
        let mut last = HashMap::new();
        for (topic, saved) in snapshot.rooms {
            if self.join_room(conn, &topic, None).await.is_err() {
                missed.push(topic);
                continue;
            }
            let from = since.get(&topic).cloned().unwrap_or(saved);
            match self.broker().history(&topic, Some(from), usize::MAX).await {
                Ok(h) => {
                    if !h.complete {
                        missed.push(topic.clone());
                    }
                    let mut top = h.position.offset;
                    for p in &h.publications {
                        replay.push(helios_protocol::Message::Notification(
                            crate::rooms::delivery(&topic, p),
                        ));
                        top = top.max(p.offset);
                    }
                    last.insert(topic, top);
                }
                Err(_) => missed.push(topic),
            }
        }
        (missed, replay, last)
    }
}
