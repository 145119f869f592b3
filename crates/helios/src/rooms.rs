//! Rooms: who is subscribed where on this node, the rules that decide who
//! may join or publish, and fan-out of publications.
//!
//! The registry is sharded by topic (like centrifuge's hub) so joins and
//! deliveries on different rooms do not contend. A publication is encoded
//! once per encoding in use and the same bytes are queued to every member.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use helios_protocol::{Codec, Encoding, Message, Notification};
use parking_lot::RwLock;
use serde_json::Value;

use helios_protocol::{ErrorBody, ErrorCode};

use crate::broker::{BrokerError, BrokerHandler, Publication, PublishOptions, PublishResult};
use crate::connection::Connection;
use crate::error::MethodError;
use crate::glob::Pattern;
use crate::helios::Helios;

const SHARDS: usize = 32;

/// Longest room name accepted.
pub const MAX_TOPIC_LEN: usize = 256;

/// Who may do something in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Any connection.
    Anyone,
    /// Connections with a user id (set by authentication).
    Authenticated,
    /// Only members of the room (for publishing).
    Members,
    /// No client; only the server (`helios.broadcast`).
    Nobody,
    /// Connections whose credential lists a room pattern that matches
    /// (see [`Auth::rooms`](crate::Auth::rooms)).
    Claimed,
}

/// What a client asked to do, for validators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomAction {
    /// `helios:subscribe`.
    Subscribe,
    /// `helios:publish`.
    Publish,
}

/// What a room validator gets.
#[derive(Debug, Clone)]
pub struct RoomRequest {
    /// The asking connection.
    pub connection: Connection,
    /// The room.
    pub topic: String,
    /// What the pattern's wildcards matched, in order.
    pub captures: Vec<String>,
    /// The `data` of the subscribe request (or the published data).
    pub data: Value,
    /// Subscribe or publish.
    pub action: RoomAction,
}

type Validator = Arc<dyn Fn(RoomRequest) -> BoxFuture<'static, bool> + Send + Sync>;

/// The rules of the rooms matching a pattern.
///
/// ```
/// use helios::{Access, RoomRule};
/// let rule = RoomRule::new()
///     .publish(Access::Members)
///     .history(500)
///     .validator(|req| async move { req.captures.first().is_some_and(|id| id != "secret") });
/// # drop(rule);
/// ```
#[derive(Clone)]
pub struct RoomRule {
    pub(crate) subscribe: Access,
    pub(crate) publish: Access,
    pub(crate) presence: bool,
    pub(crate) history_size: usize,
    pub(crate) history_ttl: Duration,
    pub(crate) max_subscribers: Option<usize>,
    pub(crate) validator: Option<Validator>,
}

impl Default for RoomRule {
    fn default() -> Self {
        Self::new()
    }
}

impl RoomRule {
    /// Anyone subscribes and publishes, presence on, 100 publications of
    /// history kept 5 minutes, no cap on subscribers.
    pub fn new() -> Self {
        Self {
            subscribe: Access::Anyone,
            publish: Access::Anyone,
            presence: true,
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            max_subscribers: None,
            validator: None,
        }
    }

    /// A rule that refuses every client (server-side use only).
    pub fn closed() -> Self {
        Self::new()
            .subscribe(Access::Nobody)
            .publish(Access::Nobody)
    }

    /// Who may subscribe.
    #[must_use]
    pub fn subscribe(mut self, access: Access) -> Self {
        self.subscribe = access;
        self
    }

    /// Who may publish.
    #[must_use]
    pub fn publish(mut self, access: Access) -> Self {
        self.publish = access;
        self
    }

    /// Whether `helios:presence` lists the members.
    #[must_use]
    pub fn presence(mut self, on: bool) -> Self {
        self.presence = on;
        self
    }

    /// How many publications are kept for recovery (0 = none).
    #[must_use]
    pub fn history(mut self, size: usize) -> Self {
        self.history_size = size;
        self
    }

    /// How long publications are kept for recovery.
    #[must_use]
    pub fn history_ttl(mut self, ttl: Duration) -> Self {
        self.history_ttl = ttl;
        self
    }

    /// Caps the members of each matching room.
    #[must_use]
    pub fn max_subscribers(mut self, max: usize) -> Self {
        self.max_subscribers = Some(max);
        self
    }

    /// An async check run for every subscribe and publish after the access
    /// rules; `false` refuses with `FORBIDDEN`.
    #[must_use]
    pub fn validator<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(RoomRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.validator = Some(Arc::new(move |r| Box::pin(f(r))));
        self
    }
}

/// Declared room patterns, first match wins, and the rule for the rest.
#[derive(Clone, Default)]
pub(crate) struct RoomRules {
    declared: Vec<(Pattern, RoomRule)>,
    pub(crate) undeclared: RoomRule,
}

impl RoomRules {
    pub(crate) fn declare(&mut self, pattern: Pattern, rule: RoomRule) {
        self.declared.push((pattern, rule));
    }

    /// The rule for a topic and the pattern's captures.
    pub(crate) fn rule_for(&self, topic: &str) -> (&RoomRule, Vec<String>) {
        self.declared
            .iter()
            .find_map(|(p, r)| p.captures(topic).map(|c| (r, c)))
            .unwrap_or((&self.undeclared, Vec::new()))
    }
}

/// Checks a room name: 1 to 256 printable characters without spaces or `*`.
///
/// ```
/// assert!(helios::check_topic("chat:lobby").is_ok());
/// assert!(helios::check_topic("two words").is_err());
/// ```
///
/// # Errors
/// What is wrong with the name.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(format!("topic must be 1 to {MAX_TOPIC_LEN} bytes"));
    }
    if let Some(c) = topic.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("topic contains the character {c:?}"));
    }
    if topic.contains('*') {
        return Err("topic may not contain `*`".to_owned());
    }
    Ok(())
}

/// Members of the rooms on this node.
pub(crate) struct RoomRegistry {
    shards: [RwLock<HashMap<Arc<str>, Members>>; SHARDS],
    hasher: RandomState,
}

type Members = HashMap<Arc<str>, Connection>;

/// Whether a join changed anything, and whether it was the node's first
/// member of the room (then the node must subscribe at the broker).
pub(crate) struct Joined {
    pub(crate) new_member: bool,
    pub(crate) first_on_node: bool,
}

impl RoomRegistry {
    pub(crate) fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, topic: &str) -> &RwLock<HashMap<Arc<str>, Members>> {
        &self.shards[self.hasher.hash_one(topic) as usize % SHARDS]
    }

    /// Adds a member unless the room is at `max` members.
    pub(crate) fn join(
        &self,
        topic: &str,
        conn: &Connection,
        max: Option<usize>,
    ) -> Result<Joined, usize> {
        let mut shard = self.shard(topic).write();
        let first_on_node = !shard.contains_key(topic);
        let members = shard.entry(Arc::from(topic)).or_default();
        if members.contains_key(conn.id()) {
            return Ok(Joined {
                new_member: false,
                first_on_node: false,
            });
        }
        if let Some(max) = max
            && members.len() >= max
        {
            if members.is_empty() {
                shard.remove(topic);
            }
            return Err(max);
        }
        members.insert(conn.id_arc(), conn.clone());
        Ok(Joined {
            new_member: true,
            first_on_node,
        })
    }

    /// Removes a member; returns `(was_member, room_now_empty_on_node)`.
    pub(crate) fn leave(&self, topic: &str, conn_id: &str) -> (bool, bool) {
        let mut shard = self.shard(topic).write();
        let Some(members) = shard.get_mut(topic) else {
            return (false, false);
        };
        let was = members.remove(conn_id).is_some();
        let empty = members.is_empty();
        if empty {
            shard.remove(topic);
        }
        (was, was && empty)
    }

    pub(crate) fn members(&self, topic: &str) -> Vec<Connection> {
        self.shard(topic)
            .read()
            .get(topic)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn member_count(&self, topic: &str) -> usize {
        self.shard(topic).read().get(topic).map_or(0, HashMap::len)
    }

    pub(crate) fn room_count(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Every room on this node with its member count.
    pub(crate) fn rooms(&self) -> Vec<(String, usize)> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .iter()
                    .map(|(t, m)| (t.to_string(), m.len()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The delivery notification of a publication.
pub(crate) fn delivery(topic: &str, p: &Publication) -> Notification {
    let mut n = Notification::new(Some(topic.to_owned()), p.data.clone());
    n.timestamp = p.timestamp;
    n.offset = Some(p.offset);
    n.epoch = Some(p.epoch.clone());
    n
}

/// Encodes a message at most once per encoding.
pub(crate) struct EncodeOnce<'a> {
    msg: &'a Message,
    json: Option<Bytes>,
    msgpack: Option<Bytes>,
}

impl<'a> EncodeOnce<'a> {
    pub(crate) fn new(msg: &'a Message) -> Self {
        Self {
            msg,
            json: None,
            msgpack: None,
        }
    }

    pub(crate) fn get(&mut self, enc: Encoding) -> Option<Bytes> {
        let slot = match enc {
            Encoding::Json => &mut self.json,
            Encoding::MsgPack => &mut self.msgpack,
        };
        if slot.is_none() {
            *slot = enc.encode(self.msg).ok();
        }
        slot.clone()
    }
}

impl BrokerHandler for RoomRegistry {
    fn on_publication(&self, topic: &str, publication: &Publication) -> usize {
        let msg = Message::Notification(delivery(topic, publication));
        let mut frames = EncodeOnce::new(&msg);
        let shard = self.shard(topic).read();
        let Some(members) = shard.get(topic) else {
            return 0;
        };
        let mut delivered = 0;
        for conn in members.values() {
            if let Some(frame) = frames.get(conn.encoding())
                && conn.deliver(topic, publication.offset, frame).is_ok()
            {
                delivered += 1;
            }
        }
        delivered
    }
}

/// A connection joined or left a room.
#[derive(Debug, Clone)]
pub struct RoomEvent {
    /// Joined or left.
    pub kind: RoomEventKind,
    /// The room.
    pub topic: String,
    /// The connection.
    pub connection: Connection,
}

/// The kinds of [`RoomEvent`] (`room:subscribed`, `room:unsubscribed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomEventKind {
    /// `room:subscribed`.
    Subscribed,
    /// `room:unsubscribed`.
    Unsubscribed,
}

fn forbidden(msg: impl Into<String>) -> MethodError {
    MethodError::new(ErrorCode::FORBIDDEN, msg)
}

fn check_access(
    access: Access,
    conn: &Connection,
    member: impl FnOnce() -> bool,
    what: &str,
    topic: &str,
) -> Result<(), MethodError> {
    match access {
        Access::Anyone => Ok(()),
        Access::Authenticated if conn.user_id().is_some() => Ok(()),
        Access::Authenticated => Err(MethodError::new(
            ErrorCode::UNAUTHORIZED,
            format!("only authenticated connections may {what} {topic:?}"),
        )),
        Access::Members if member() => Ok(()),
        Access::Members => Err(forbidden(format!(
            "only members of {topic:?} may {what} it"
        ))),
        Access::Nobody => Err(forbidden(format!("clients may not {what} {topic:?}"))),
        Access::Claimed if conn.auth().is_some_and(|a| a.may_use_room(topic)) => Ok(()),
        Access::Claimed if conn.user_id().is_none() => Err(MethodError::new(
            ErrorCode::UNAUTHORIZED,
            format!("only authenticated connections may {what} {topic:?}"),
        )),
        Access::Claimed => Err(forbidden(format!("your token does not grant {topic:?}"))),
    }
}

fn broker_error(e: BrokerError) -> MethodError {
    MethodError::new(ErrorCode::BROKER_UNAVAILABLE, e.to_string())
}

impl Helios {
    /// A client asks to join a room: access rules, validator, then join.
    pub(crate) async fn client_subscribe(
        &self,
        conn: &Connection,
        topic: &str,
        data: Value,
    ) -> Result<(), MethodError> {
        check_topic(topic).map_err(|m| MethodError::new(ErrorCode::INVALID_PAYLOAD, m))?;
        let (rule, captures) = self.rules().rule_for(topic);
        check_access(rule.subscribe, conn, || false, "subscribe to", topic)?;
        if let Some(validator) = &rule.validator {
            let req = RoomRequest {
                connection: conn.clone(),
                topic: topic.to_owned(),
                captures,
                data,
                action: RoomAction::Subscribe,
            };
            if !validator(req).await {
                return Err(forbidden(format!("subscription to {topic:?} refused")));
            }
        }
        let max = rule.max_subscribers;
        self.join_room(conn, topic, max)
            .await
            .map_err(MethodError::from)
    }

    /// Adds a connection to a room (no access rules), subscribing this node
    /// at the broker when it is the node's first member.
    pub(crate) async fn join_room(
        &self,
        conn: &Connection,
        topic: &str,
        max: Option<usize>,
    ) -> Result<(), ErrorBody> {
        let joined = self.rooms().join(topic, conn, max).map_err(|max| {
            ErrorBody::new(
                ErrorCode::FORBIDDEN,
                format!("room {topic:?} is full ({max} members)"),
            )
        })?;
        if joined.first_on_node
            && let Err(e) = self.broker().subscribe(topic).await
        {
            self.rooms().leave(topic, conn.id());
            return Err(ErrorBody::new(ErrorCode::BROKER_UNAVAILABLE, e.to_string()));
        }
        if joined.new_member && conn.add_room(topic) {
            if let Some(cluster) = self.cluster()
                && let Err(e) = cluster
                    .presence
                    .add(topic, conn.id(), crate::cluster::member_of(conn))
                    .await
            {
                tracing::warn!(%topic, error = %e, "presence entry not written");
            }
            self.run_room_hooks(RoomEvent {
                kind: RoomEventKind::Subscribed,
                topic: topic.to_owned(),
                connection: conn.clone(),
            })
            .await;
        }
        Ok(())
    }

    /// Removes a connection from a room.
    pub(crate) async fn leave_room(&self, conn: &Connection, topic: &str) -> bool {
        conn.remove_room(topic);
        self.leave_registry(conn, topic).await
    }

    async fn leave_registry(&self, conn: &Connection, topic: &str) -> bool {
        let (was, empty) = self.rooms().leave(topic, conn.id());
        if empty && let Err(e) = self.broker().unsubscribe(topic).await {
            tracing::warn!(%topic, error = %e, "broker unsubscribe failed");
        }
        if was {
            if let Some(cluster) = self.cluster()
                && let Err(e) = cluster.presence.remove(topic, conn.id()).await
            {
                tracing::warn!(%topic, error = %e, "presence entry not removed (it expires with the node)");
            }
            self.run_room_hooks(RoomEvent {
                kind: RoomEventKind::Unsubscribed,
                topic: topic.to_owned(),
                connection: conn.clone(),
            })
            .await;
        }
        was
    }

    /// Removes a closed connection from every room at once.
    pub(crate) async fn leave_all_rooms(&self, conn: &Connection) {
        for topic in conn.take_rooms() {
            self.leave_registry(conn, &topic).await;
        }
    }

    /// A client publishes: access rules, validator, then broadcast.
    pub(crate) async fn client_publish(
        &self,
        conn: &Connection,
        topic: &str,
        data: Value,
    ) -> Result<PublishResult, MethodError> {
        check_topic(topic).map_err(|m| MethodError::new(ErrorCode::INVALID_PAYLOAD, m))?;
        let (rule, captures) = self.rules().rule_for(topic);
        let member = || conn.rooms().iter().any(|r| r == topic);
        check_access(rule.publish, conn, member, "publish to", topic)?;
        if let Some(validator) = &rule.validator {
            let req = RoomRequest {
                connection: conn.clone(),
                topic: topic.to_owned(),
                captures,
                data: data.clone(),
                action: RoomAction::Publish,
            };
            if !validator(req).await {
                return Err(forbidden(format!("publication to {topic:?} refused")));
            }
        }
        self.broadcast(topic, data).await.map_err(broker_error)
    }

    /// Publishes to a room from the server: every member (on every node)
    /// gets a notification whose topic is the room. No access rules apply.
    ///
    /// ```no_run
    /// # async fn demo(helios: helios::Helios) -> Result<(), helios::BrokerError> {
    /// let r = helios.broadcast("news:flash", serde_json::json!({"text": "hi"})).await?;
    /// println!("offset {}, delivered to {}", r.position.offset, r.delivered);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`BrokerError`] when the broker cannot take the publication.
    pub async fn broadcast(&self, topic: &str, data: Value) -> Result<PublishResult, BrokerError> {
        let (rule, _) = self.rules().rule_for(topic);
        let opts = PublishOptions {
            history_size: rule.history_size,
            history_ttl: rule.history_ttl,
        };
        let published = self.broker().publish(topic, data, opts).await;
        if let Ok(r) = &published {
            self.metrics().publication(r.delivered);
        }
        published
    }

    /// Makes every member of `from` a member of `to` as well (WSBroker's
    /// `copySubscriptions`); returns how many joined.
    pub async fn copy_subscriptions(&self, from: &str, to: &str) -> usize {
        let mut n = 0;
        for conn in self.rooms().members(from) {
            if !conn.rooms().iter().any(|r| r == to)
                && self.join_room(&conn, to, None).await.is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// The members of a room on this node: `starlingId`, and `name` and
    /// `user` when set. [`cluster_presence`](Self::cluster_presence) lists
    /// every node's.
    pub fn presence(&self, topic: &str) -> Vec<Value> {
        self.rooms()
            .members(topic)
            .iter()
            .map(crate::cluster::member_of)
            .collect()
    }

    /// How many rooms have members on this node.
    pub fn room_count(&self) -> usize {
        self.rooms().room_count()
    }

    /// Every room with members on this node, with its member count.
    pub fn room_list(&self) -> Vec<(String, usize)> {
        self.rooms().rooms()
    }

    /// How many members a room has on this node.
    pub fn room_size(&self, topic: &str) -> usize {
        self.rooms().member_count(topic)
    }
}
