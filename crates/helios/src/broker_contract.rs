//! The one contract every [`Broker`] passes, written once and run against
//! each implementation (memory here, Redis in `helios-redis`, NATS in
//! `helios-nats`), like centrifuge's `map_broker_shared_test.go`.
//!
//! Compiled only with the `broker-contract` feature, so it costs nothing in
//! a normal build. A broker crate runs it from its tests:
//!
//! ```ignore
//! helios::broker_contract_tests!(my_factory());
//! ```
//!
//! which expands to one `#[tokio::test]` per case, or calls
//! [`run_all`] from a single test.
//!
//! Every case asks the factory for a fresh namespace (a key or subject
//! prefix unique to the case), so cases run in parallel and repeated runs
//! never see each other's data; the factory cleans the namespace up after.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::broker::{Broker, BrokerHandler, Publication, PublishOptions, StreamPosition};

/// Longest a case waits for one expected event.
pub const WAIT: Duration = Duration::from_secs(10);

/// Makes brokers for the contract cases.
pub trait BrokerFactory: Send + Sync {
    /// Whether two brokers made for the same namespace share one backend
    /// (so they behave as two nodes of one cluster). `false` for the
    /// in-memory broker, which skips only the cross-node case.
    fn shared_backend(&self) -> bool;

    /// A namespace never used before (e.g. a random key prefix).
    fn namespace(&self) -> String {
        format!("hc{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
    }

    /// A new, not yet started broker in `namespace`.
    fn make<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Arc<dyn Broker>>;

    /// Removes whatever the namespace left in the backend.
    fn cleanup<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, ()>;
}

/// A [`BrokerHandler`] that records every delivery.
#[derive(Default)]
pub struct Recorder {
    got: Mutex<Vec<(String, Publication)>>,
    notify: tokio::sync::Notify,
}

impl Recorder {
    /// A new, empty recorder.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Everything delivered so far.
    pub fn all(&self) -> Vec<(String, Publication)> {
        self.got.lock().clone()
    }

    /// The publications delivered for a topic, in delivery order.
    pub fn of(&self, topic: &str) -> Vec<Publication> {
        self.got
            .lock()
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Waits (at most `within`) until `topic` has `n` deliveries; returns
    /// them, or panics naming what arrived.
    pub async fn wait_for(&self, topic: &str, n: usize, within: Duration) -> Vec<Publication> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.notify.notified();
            let got = self.of(topic);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.of(topic);
                assert!(
                    got.len() >= n,
                    "waited {within:?} for {n} deliveries on {topic:?}, got {}: {:?}",
                    got.len(),
                    got.iter().map(|p| p.offset).collect::<Vec<_>>()
                );
                return got;
            }
        }
    }
}

impl BrokerHandler for Recorder {
    fn on_publication(&self, topic: &str, publication: &Publication) -> usize {
        self.got
            .lock()
            .push((topic.to_owned(), publication.clone()));
        self.notify.notify_waiters();
        1
    }
}

/// History options used by the cases: `size` publications for a minute.
pub fn opts(size: usize) -> PublishOptions {
    PublishOptions {
        history_size: size,
        history_ttl: Duration::from_secs(60),
    }
}

async fn node(f: &dyn BrokerFactory, ns: &str) -> (Arc<dyn Broker>, Arc<Recorder>) {
    let broker = f.make(ns).await;
    let rec = Recorder::new();
    let handler: Arc<dyn BrokerHandler> = rec.clone();
    broker
        .start(handler)
        .await
        .unwrap_or_else(|e| panic!("broker start failed: {e}"));
    (broker, rec)
}

fn offsets(pubs: &[Publication]) -> Vec<u64> {
    pubs.iter().map(|p| p.offset).collect()
}

/// Publishes `n` messages `{"i": 0..n}` and returns their positions.
async fn publish_n(b: &dyn Broker, topic: &str, n: usize, size: usize) -> Vec<StreamPosition> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let r = b
            .publish(topic, json!({ "i": i }), opts(size))
            .await
            .unwrap_or_else(|e| panic!("publish {i} to {topic:?} failed: {e}"));
        out.push(r.position);
    }
    out
}

/// A subscribed node gets every publication of the room, in order, with
/// offsets 1, 2, 3, ... in one epoch, matching what `publish` returned.
pub async fn publish_delivers_in_order(f: &dyn BrokerFactory) {
    let ns = f.namespace();
    let (b, rec) = node(f, &ns).await;
    b.subscribe("chat:order").await.expect("subscribe");
    let positions = publish_n(&*b, "chat:order", 50, 100).await;
    let got = rec.wait_for("chat:order", 50, WAIT).await;
    assert_eq!(offsets(&got), (1..=50).collect::<Vec<u64>>());
    assert_eq!(
        positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<u64>>()
    );
    let epoch = &positions[0].epoch;
    assert!(!epoch.is_empty(), "an epoch is never empty");
    assert!(got.iter().all(|p| &p.epoch == epoch));
    assert!(positions.iter().all(|p| &p.epoch == epoch));
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.data, json!({ "i": i }));
        assert!(p.timestamp > 0);
    }
    // Rooms are independent streams.
    let other = b
        .publish("chat:other", json!("x"), opts(10))
        .await
        .expect("publish");
    assert_eq!(other.position.offset, 1);
    f.cleanup(&ns).await;
}

/// Nothing arrives for a room the node did not subscribe to, or after it
/// unsubscribed.
pub async fn interest_only(f: &dyn BrokerFactory) {
    let ns = f.namespace();
    let (b, rec) = node(f, &ns).await;
    b.subscribe("room:a").await.expect("subscribe");
    b.publish("room:b", json!("not for us"), opts(10))
        .await
        .expect("publish b");
    b.publish("room:a", json!(1), opts(10))
        .await
        .expect("publish a");
    rec.wait_for("room:a", 1, WAIT).await;
    b.unsubscribe("room:a").await.expect("unsubscribe");
    b.publish("room:a", json!(2), opts(10))
        .await
        .expect("publish a");
    // A marker on a room still subscribed proves later traffic was
    // processed (deliveries per node are processed in order per room; we
    // also wait a little for the unsubscribed room).
    b.subscribe("room:marker").await.expect("subscribe marker");
    b.publish("room:marker", json!("m"), opts(10))
        .await
        .expect("publish marker");
    rec.wait_for("room:marker", 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        offsets(&rec.of("room:a")),
        vec![1],
        "delivered after unsubscribe"
    );
    assert!(rec.of("room:b").is_empty(), "delivered without interest");
    f.cleanup(&ns).await;
}

/// `history` returns the publications after a position, in order, at most
/// `limit`, plus the current position; `None` returns only the position.
pub async fn history_since(f: &dyn BrokerFactory) {
    let ns = f.namespace();
    let (b, _rec) = node(f, &ns).await;
    let empty = b.history("hist:none", None, 10).await.expect("history");
    assert_eq!(empty.position.offset, 0);
    assert!(empty.publications.is_empty());
    assert!(empty.complete);

    let positions = publish_n(&*b, "hist:a", 10, 100).await;
    let epoch = positions[0].epoch.clone();
    let now = b.history("hist:a", None, 100).await.expect("history");
    assert_eq!(now.position, positions[9]);
    assert!(now.publications.is_empty());
    assert!(now.complete);

    let since = StreamPosition {
        offset: 4,
        epoch: epoch.clone(),
    };
    let h = b
        .history("hist:a", Some(since.clone()), 100)
        .await
        .expect("history");
    assert!(h.complete);
    assert_eq!(offsets(&h.publications), (5..=10).collect::<Vec<u64>>());
    assert_eq!(h.publications[0].data, json!({ "i": 4 }));
    assert_eq!(h.position.offset, 10);

    let limited = b.history("hist:a", Some(since), 3).await.expect("history");
    assert_eq!(offsets(&limited.publications), vec![5, 6, 7]);
    assert!(limited.complete, "a limit is not a gap");

    let up_to_date = b
        .history(
            "hist:a",
            Some(StreamPosition {
                offset: 10,
                epoch: epoch.clone(),
            }),
            100,
        )
        .await
        .expect("history");
    assert!(up_to_date.complete);
    assert!(up_to_date.publications.is_empty());

    let from_start = b
        .history("hist:a", Some(StreamPosition { offset: 0, epoch }), 100)
        .await
        .expect("history");
    assert!(from_start.complete);
    assert_eq!(
        offsets(&from_start.publications),
        (1..=10).collect::<Vec<u64>>()
    );
    f.cleanup(&ns).await;
}

/// `complete` is `false` when publications after the position were dropped
/// (history smaller than the gap), and when the epoch is not the room's.
pub async fn history_gaps(f: &dyn BrokerFactory) {
    let ns = f.namespace();
    let (b, _rec) = node(f, &ns).await;
    let positions = publish_n(&*b, "gap:a", 10, 3).await;
    let epoch = positions[0].epoch.clone();
    let h = b
        .history(
            "gap:a",
            Some(StreamPosition {
                offset: 2,
                epoch: epoch.clone(),
            }),
            100,
        )
        .await
        .expect("history");
    assert!(!h.complete, "history of 3 cannot cover offsets 3..=10");
    assert_eq!(h.position.offset, 10);
    assert!(
        h.publications.iter().all(|p| p.offset > 7),
        "only the last 3 are kept: {:?}",
        offsets(&h.publications)
    );

    let covered = b
        .history(
            "gap:a",
            Some(StreamPosition {
                offset: 7,
                epoch: epoch.clone(),
            }),
            100,
        )
        .await
        .expect("history");
    assert!(covered.complete);
    assert_eq!(offsets(&covered.publications), vec![8, 9, 10]);

    let wrong = b
        .history(
            "gap:a",
            Some(StreamPosition {
                offset: 9,
                epoch: format!("{epoch}-not"),
            }),
            100,
        )
        .await
        .expect("history");
    assert!(!wrong.complete, "another epoch is a gap");
    assert_eq!(wrong.position, positions[9]);

    // No history kept at all: anything behind the head is a gap.
    let none = publish_n(&*b, "gap:none", 2, 0).await;
    let h = b
        .history(
            "gap:none",
            Some(StreamPosition {
                offset: 1,
                epoch: none[0].epoch.clone(),
            }),
            100,
        )
        .await
        .expect("history");
    assert!(!h.complete);
    assert!(h.publications.is_empty());
    assert_eq!(h.position.offset, 2);
    f.cleanup(&ns).await;
}

/// A position taken before a room's first publication (offset 0, no epoch)
/// covers what comes after it; a publication older than its history TTL is
/// never returned, and a position behind it is a gap.
pub async fn history_from_the_start_and_expiry(f: &dyn BrokerFactory) {
    let ns = f.namespace();
    let (b, _rec) = node(f, &ns).await;
    let start = b.history("ttl:a", None, 0).await.expect("history").position;
    assert_eq!(start, StreamPosition::default(), "no publication yet");
    publish_n(&*b, "ttl:a", 3, 10).await;
    let h = b
        .history("ttl:a", Some(start.clone()), 100)
        .await
        .expect("history");
    assert!(h.complete, "offset 0 is covered by offsets 1..=3");
    assert_eq!(offsets(&h.publications), vec![1, 2, 3]);

    let short = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_millis(300),
    };
    b.publish("ttl:b", json!({"i": 0}), short)
        .await
        .expect("publish");
    let fresh = b
        .history("ttl:b", Some(start.clone()), 100)
        .await
        .expect("history");
    assert_eq!(offsets(&fresh.publications), vec![1]);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let h = b.history("ttl:b", Some(start), 100).await.expect("history");
    assert!(
        h.publications.is_empty(),
        "expired: {:?}",
        offsets(&h.publications)
    );
    assert!(!h.complete, "an expired publication is a gap");
    f.cleanup(&ns).await;
}

/// Two brokers on one backend are two nodes: each sees the other's
/// publications, both in the same order, and offsets stay contiguous when
/// both publish to one room at once.
pub async fn two_nodes_one_order(f: &dyn BrokerFactory) {
    if !f.shared_backend() {
        return;
    }
    let ns = f.namespace();
    let (a, rec_a) = node(f, &ns).await;
    let (b, rec_b) = node(f, &ns).await;
    a.subscribe("team:x").await.expect("subscribe a");
    b.subscribe("team:x").await.expect("subscribe b");
    let (pa, pb) = tokio::join!(
        publish_tagged(&*a, "team:x", "a", 100),
        publish_tagged(&*b, "team:x", "b", 100)
    );
    let mut all: Vec<u64> = pa.iter().chain(pb.iter()).map(|p| p.offset).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=200).collect::<Vec<u64>>(),
        "offsets assigned once each"
    );
    let got_a = rec_a.wait_for("team:x", 200, WAIT).await;
    let got_b = rec_b.wait_for("team:x", 200, WAIT).await;
    assert_eq!(offsets(&got_a), (1..=200).collect::<Vec<u64>>());
    assert_eq!(offsets(&got_b), (1..=200).collect::<Vec<u64>>());
    assert_eq!(data_of(&got_a), data_of(&got_b), "both nodes see one order");
    for tag in ["a", "b"] {
        let seq: Vec<u64> = got_a
            .iter()
            .filter(|p| p.data["from"] == tag)
            .filter_map(|p| p.data["i"].as_u64())
            .collect();
        assert_eq!(seq, (0..100).collect::<Vec<u64>>(), "per-publisher order");
    }
    // History written by one node is read by the other.
    let h = b
        .history(
            "team:x",
            Some(StreamPosition {
                offset: 190,
                epoch: got_a[0].epoch.clone(),
            }),
            100,
        )
        .await
        .expect("history");
    assert!(h.complete);
    assert_eq!(offsets(&h.publications), (191..=200).collect::<Vec<u64>>());
    // Interest is per node: after b unsubscribes only a gets new ones.
    b.unsubscribe("team:x").await.expect("unsubscribe");
    a.publish("team:x", json!("late"), opts(100))
        .await
        .expect("publish");
    rec_a.wait_for("team:x", 201, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rec_b.of("team:x").len(), 200);
    f.cleanup(&ns).await;
}

async fn publish_tagged(b: &dyn Broker, topic: &str, tag: &str, n: usize) -> Vec<StreamPosition> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let r = b
            .publish(topic, json!({ "from": tag, "i": i }), opts(1000))
            .await
            .unwrap_or_else(|e| panic!("publish {tag}{i} failed: {e}"));
        out.push(r.position);
    }
    out
}

fn data_of(pubs: &[Publication]) -> Vec<Value> {
    pubs.iter().map(|p| p.data.clone()).collect()
}

/// Every case, one after the other.
pub async fn run_all(f: &dyn BrokerFactory) {
    publish_delivers_in_order(f).await;
    interest_only(f).await;
    history_since(f).await;
    history_gaps(f).await;
    history_from_the_start_and_expiry(f).await;
    two_nodes_one_order(f).await;
}

/// One `#[tokio::test]` per contract case for a factory expression.
///
/// The calling crate needs `tokio` (with `macros` and `rt-multi-thread`) as
/// a dev-dependency.
#[macro_export]
macro_rules! broker_contract_tests {
    ($factory:expr) => {
        $crate::broker_contract_tests!(@case $factory,
            publish_delivers_in_order, interest_only, history_since,
            history_gaps, history_from_the_start_and_expiry, two_nodes_one_order);
    };
    (@case $factory:expr, $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let factory = $factory;
                tokio::time::timeout(
                    std::time::Duration::from_secs(60),
                    $crate::broker_contract::$case(&factory),
                )
                .await
                .expect(concat!("contract case ", stringify!($case), " timed out"));
            }
        )*
    };
}

// ---------------------------------------------------------------------------
// The cluster capabilities: presence, directory, names, node bus, sessions
// ---------------------------------------------------------------------------

/// Makes cluster nodes for the cluster contract. Two nodes made with the
/// same namespace share one backend.
pub trait ClusterFactory: Send + Sync {
    /// A new, not yet started node in `namespace`.
    fn make<'a>(
        &'a self,
        namespace: &'a str,
        node_ttl: Duration,
    ) -> BoxFuture<'a, Arc<dyn crate::Cluster>>;
    /// Removes what the namespace left behind.
    fn cleanup<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, ()>;
}

/// Answers `{"echo": body}`, or sleeps `body.sleep` ms first.
struct Echo;

impl crate::NodeHandler for Echo {
    fn handle(&self, body: serde_json::Value) -> BoxFuture<'static, serde_json::Value> {
        Box::pin(async move {
            if let Some(ms) = body.get("sleep").and_then(serde_json::Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            json!({ "echo": body })
        })
    }
}

fn cluster_ns(case: &str) -> String {
    format!(
        "hc{case}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

async fn cluster_node(f: &dyn ClusterFactory, ns: &str, ttl: Duration) -> Arc<dyn crate::Cluster> {
    let c = f.make(ns, ttl).await;
    crate::NodeBus::start(&*c, Arc::new(Echo))
        .await
        .unwrap_or_else(|e| panic!("cluster node start failed: {e}"));
    c
}

fn ids(members: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = members
        .iter()
        .filter_map(|m| m["starlingId"].as_str().map(str::to_owned))
        .collect();
    v.sort();
    v
}

/// Presence entries of two nodes are seen by both; removal is seen.
pub async fn cluster_presence(f: &dyn ClusterFactory) {
    let ns = cluster_ns("p");
    let a = cluster_node(f, &ns, Duration::from_secs(10)).await;
    let b = cluster_node(f, &ns, Duration::from_secs(10)).await;
    a.add("room:1", "c1", json!({"starlingId": "c1"}))
        .await
        .expect("add");
    b.add("room:1", "c2", json!({"starlingId": "c2", "name": "n2"}))
        .await
        .expect("add");
    b.add("room:2", "c2", json!({"starlingId": "c2"}))
        .await
        .expect("add");
    for n in [&a, &b] {
        let m = n.members("room:1").await.expect("members");
        assert_eq!(ids(&m), vec!["c1", "c2"]);
    }
    a.remove("room:1", "c1").await.expect("remove");
    assert_eq!(
        ids(&b.members("room:1").await.expect("members")),
        vec!["c2"]
    );
    assert!(b.members("room:none").await.expect("members").is_empty());
    f.cleanup(&ns).await;
}

/// Names: first wins across nodes, the holder may claim again, release
/// frees it; the directory locates a connection's node.
pub async fn cluster_names_and_directory(f: &dyn ClusterFactory) {
    use crate::NodeBus;
    let ns = cluster_ns("n");
    let a = cluster_node(f, &ns, Duration::from_secs(10)).await;
    let b = cluster_node(f, &ns, Duration::from_secs(10)).await;
    assert!(a.claim_name("svc", "c1").await.expect("claim"));
    assert!(
        !b.claim_name("svc", "c2").await.expect("claim"),
        "first wins"
    );
    assert!(
        a.claim_name("svc", "c1").await.expect("claim"),
        "holder again"
    );
    let loc = b.resolve_name("svc").await.expect("resolve").expect("held");
    assert_eq!(loc.conn_id, "c1");
    assert_eq!(loc.node_id, NodeBus::node_id(&*a));
    a.release_name("svc", "c2").await.expect("release");
    assert!(
        b.resolve_name("svc").await.expect("resolve").is_some(),
        "not the holder"
    );
    a.release_name("svc", "c1").await.expect("release");
    assert!(b.resolve_name("svc").await.expect("resolve").is_none());
    assert!(b.claim_name("svc", "c2").await.expect("claim"));

    a.register("c1").await.expect("register");
    assert_eq!(
        b.locate("c1").await.expect("locate").as_deref(),
        Some(NodeBus::node_id(&*a))
    );
    assert_eq!(b.locate("c404").await.expect("locate"), None);
    a.unregister("c1").await.expect("unregister");
    assert_eq!(b.locate("c1").await.expect("locate"), None);
    f.cleanup(&ns).await;
}

/// Request/reply between nodes; an unknown node is `NoSuchNode`, a slow
/// answer `Timeout`.
pub async fn cluster_bus(f: &dyn ClusterFactory) {
    use crate::{BusError, NodeBus};
    let ns = cluster_ns("b");
    let a = cluster_node(f, &ns, Duration::from_secs(10)).await;
    let b = cluster_node(f, &ns, Duration::from_secs(10)).await;
    let to = NodeBus::node_id(&*b).to_owned();
    let v = a
        .request(&to, json!({"x": 1}), Duration::from_secs(3))
        .await
        .expect("request");
    assert_eq!(v, json!({"echo": {"x": 1}}));
    let e = a
        .request("nosuchnode", json!({}), Duration::from_secs(3))
        .await;
    assert_eq!(e, Err(BusError::NoSuchNode));
    let e = a
        .request(&to, json!({"sleep": 1500}), Duration::from_millis(300))
        .await;
    assert_eq!(e, Err(BusError::Timeout));
    a.send(&to, json!({"one": "way"})).await.expect("send");
    f.cleanup(&ns).await;
}

/// A snapshot saved on one node is taken on another, once; it expires.
pub async fn cluster_sessions(f: &dyn ClusterFactory) {
    use crate::session::SessionSnapshot;
    let ns = cluster_ns("s");
    let a = cluster_node(f, &ns, Duration::from_secs(10)).await;
    let b = cluster_node(f, &ns, Duration::from_secs(10)).await;
    let snap = |id: &str| SessionSnapshot {
        starling_id: id.to_owned(),
        data: [("k".to_owned(), json!(1))].into_iter().collect(),
        rooms: vec![(
            "room:1".to_owned(),
            StreamPosition {
                offset: 3,
                epoch: "e".into(),
            },
        )],
        name: Some("n".into()),
        user: Some("alice".into()),
        auth_user: Some("alice".into()),
        token: None,
    };
    a.save(snap("s1"), Duration::from_secs(60))
        .await
        .expect("save");
    assert_eq!(b.take("s1").await.expect("take"), Some(snap("s1")));
    assert_eq!(a.take("s1").await.expect("take"), None, "taken once");
    a.save(snap("s2"), Duration::from_millis(1000))
        .await
        .expect("save");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.take("s2").await.expect("take"), None, "expired");
    f.cleanup(&ns).await;
}

/// A node that stops (as a crash would) loses its presence entries, names
/// and directory entries within its node TTL.
pub async fn cluster_node_expiry(f: &dyn ClusterFactory) {
    use crate::NodeBus;
    let ns = cluster_ns("x");
    let ttl = Duration::from_secs(1);
    let a = cluster_node(f, &ns, ttl).await;
    let b = cluster_node(f, &ns, ttl).await;
    a.add("room:1", "c1", json!({"starlingId": "c1"}))
        .await
        .expect("add");
    a.register("c1").await.expect("register");
    assert!(a.claim_name("gone", "c1").await.expect("claim"));
    // Alive: heartbeats keep it past several TTLs.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(
        ids(&b.members("room:1").await.expect("members")),
        vec!["c1"]
    );
    NodeBus::stop(&*a);
    let start = tokio::time::Instant::now();
    loop {
        let m = b.members("room:1").await.expect("members");
        let loc = b.locate("c1").await.expect("locate");
        let name = b.resolve_name("gone").await.expect("resolve");
        if m.is_empty() && loc.is_none() && name.is_none() {
            break;
        }
        assert!(
            start.elapsed() < ttl + Duration::from_secs(3),
            "still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b.claim_name("gone", "c2").await.expect("claim"));
    let e = b
        .request(NodeBus::node_id(&*a), json!({}), Duration::from_millis(500))
        .await;
    assert!(e.is_err(), "a stopped node does not answer");
    f.cleanup(&ns).await;
}

/// One `#[tokio::test]` per cluster contract case for a factory expression.
#[macro_export]
macro_rules! cluster_contract_tests {
    ($factory:expr) => {
        $crate::broker_contract_tests!(@case $factory,
            cluster_presence, cluster_names_and_directory, cluster_bus,
            cluster_sessions, cluster_node_expiry);
    };
}

/// The in-memory broker passes the contract too (minus the cross-node
/// case: one `MemoryBroker` is one node).
#[cfg(test)]
mod memory {
    use super::BrokerFactory;
    use crate::broker::Broker;
    use crate::memory_broker::MemoryBroker;
    use futures_util::future::BoxFuture;
    use std::sync::Arc;

    struct MemoryFactory;

    impl BrokerFactory for MemoryFactory {
        fn shared_backend(&self) -> bool {
            false
        }

        fn make<'a>(&'a self, _namespace: &'a str) -> BoxFuture<'a, Arc<dyn Broker>> {
            Box::pin(async { Arc::new(MemoryBroker::new()) as Arc<dyn Broker> })
        }

        fn cleanup<'a>(&'a self, _namespace: &'a str) -> BoxFuture<'a, ()> {
            Box::pin(async {})
        }
    }

    crate::broker_contract_tests!(MemoryFactory);

    /// Nodes of one namespace share one `MemoryCluster`.
    #[derive(Default)]
    struct MemoryClusterFactory(
        parking_lot::Mutex<std::collections::HashMap<String, crate::MemoryCluster>>,
    );

    impl super::ClusterFactory for MemoryClusterFactory {
        fn make<'a>(
            &'a self,
            namespace: &'a str,
            _node_ttl: std::time::Duration,
        ) -> BoxFuture<'a, Arc<dyn crate::Cluster>> {
            let c = self
                .0
                .lock()
                .entry(namespace.to_owned())
                .or_default()
                .node();
            Box::pin(async move { c as Arc<dyn crate::Cluster> })
        }

        fn cleanup<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, ()> {
            self.0.lock().remove(namespace);
            Box::pin(async {})
        }
    }

    mod cluster {
        use super::MemoryClusterFactory;
        crate::cluster_contract_tests!(MemoryClusterFactory::default());
    }
}
