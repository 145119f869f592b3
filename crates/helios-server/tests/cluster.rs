//! Three real `helios` processes on loopback ports sharing one Redis, and
//! again one NATS: a publication on node A reaches subscribers on B and C,
//! all of them, in the publisher's order, with contiguous offsets; presence,
//! peer relay (by id and name), names and session recovery work across
//! nodes; a SIGKILLed node's entries expire within the node TTL; a broker
//! restart is survived.
//!
//! Redis (127.0.0.1:6379) and NATS with JetStream (127.0.0.1:4222) run on
//! every dev machine and in CI (`scripts/install-test-deps.sh`); these tests
//! fail, never skip, when they are down. Every run uses its own key/subject
//! prefix.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use starling::Client;
use tokio::process::{Child, Command};

const MESSAGES: u64 = 1000;

/// A `helios serve` child process, killed on drop.
struct Node {
    url: String,
    _child: Child,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

async fn start_node(broker: &str, prefix: &str) -> Node {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_helios"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .args([
            "--broker",
            broker,
            "--broker-prefix",
            prefix,
            "--log-level",
            "warn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn helios");
    let url = format!("ws://127.0.0.1:{port}/ws");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(2), Client::connect(&url)).await
        {
            c.close().await;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "helios on port {port} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Node { url, _child: child }
}

async fn connect(node: &Node) -> Client {
    tokio::time::timeout(Duration::from_secs(5), Client::connect(&node.url))
        .await
        .expect("connect timed out")
        .expect("connect")
}

fn prefix() -> String {
    format!("hcl{}", &uuid_like()[..10])
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!("{:016x}", RandomState::new().hash_one(std::process::id()))
}

/// Subscribers on B and C, publisher on A: every message arrives at both,
/// in order, offsets 1..=1000 in one epoch.
async fn cross_node_order(broker: &str) {
    let prefix = prefix();
    let a = start_node(broker, &prefix).await;
    let b = start_node(broker, &prefix).await;
    let c = start_node(broker, &prefix).await;
    let topic = "cluster:order";

    let mut readers = Vec::new();
    for node in [&b, &c] {
        let client = connect(node).await;
        let mut sub = client.subscribe(topic).await.expect("subscribe");
        readers.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(MESSAGES as usize);
            while (got.len() as u64) < MESSAGES {
                let n = tokio::time::timeout(Duration::from_secs(20), sub.recv())
                    .await
                    .unwrap_or_else(|_| panic!("stalled after {} deliveries", got.len()))
                    .expect("subscription open");
                got.push((n.offset, n.epoch, n.data));
            }
            drop(client);
            got
        }));
    }

    let publisher = connect(&a).await;
    for i in 0..MESSAGES {
        tokio::time::timeout(
            Duration::from_secs(5),
            publisher.publish(topic, json!({ "i": i })),
        )
        .await
        .expect("publish timed out")
        .unwrap_or_else(|e| panic!("publish {i}: {e}"));
    }

    for r in readers {
        let got = tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .expect("reader timed out")
            .expect("reader");
        let is: Vec<u64> = got.iter().filter_map(|(_, _, d)| d["i"].as_u64()).collect();
        assert_eq!(
            is,
            (0..MESSAGES).collect::<Vec<_>>(),
            "publisher order kept"
        );
        let offsets: Vec<u64> = got.iter().filter_map(|(o, _, _)| *o).collect();
        assert_eq!(
            offsets,
            (1..=MESSAGES).collect::<Vec<_>>(),
            "contiguous offsets"
        );
        let epoch = &got[0].1;
        assert!(epoch.is_some());
        assert!(got.iter().all(|(_, e, _)| e == epoch), "one epoch");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_redis() {
    cross_node_order("redis://127.0.0.1:6379").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_nats() {
    cross_node_order("nats://127.0.0.1:4222").await;
}

#[tokio::test]
async fn unknown_broker_scheme_is_refused_naming_the_key() {
    for (args, env) in [
        (vec!["--broker", "kafka://127.0.0.1:9092"], None),
        (vec![], Some("mqtt://127.0.0.1:1883")),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_helios"));
        cmd.args(["serve", "--bind", "127.0.0.1:0"]).args(&args);
        cmd.env_remove("HELIOS_BROKER");
        if let Some(v) = env {
            cmd.env("HELIOS_BROKER", v);
        }
        let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
            .await
            .expect("helios exits")
            .expect("run helios");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("HELIOS_BROKER") && err.contains("--broker"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------
// Presence, relay, names, recovery, node kill, broker restart
// ---------------------------------------------------------------------------

const REDIS: &str = "redis://127.0.0.1:6379";
const NATS: &str = "nats://127.0.0.1:4222";
const SECRET: &str = "0123456789abcdef0123456789abcdef";
/// The node TTL the cluster tests run with (`HELIOS_NODE_TTL_SECS`).
const NODE_TTL: Duration = Duration::from_secs(3);

fn cluster_node(broker: &str, prefix: &str) -> support::Node {
    support::Node::start_env(
        &[
            "--broker",
            broker,
            "--broker-prefix",
            prefix,
            "--recovery-ttl-secs",
            "60",
        ],
        &[
            ("HELIOS_NODE_TTL_SECS", "3"),
            ("HELIOS_RECOVERY_SECRET", SECRET),
        ],
    )
}

fn unique_prefix(tag: &str) -> String {
    format!("hc{tag}{}", &support::uuid()[..8])
}

async fn raw(node: &support::Node) -> support::TcpClient {
    support::connect(&node.ws_url()).await
}

fn id_of(c: &support::TcpClient) -> String {
    c.welcome["starlingId"]
        .as_str()
        .expect("starlingId")
        .to_owned()
}

/// Reads frames until one matches (bounded by the support timeout).
async fn expect_frame(
    c: &mut support::TcpClient,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no frame matching {what}"
        );
        let v = c.next_json().await;
        if pred(&v) {
            return v;
        }
    }
}

/// Sends a request (optionally relayed) and returns its id.
async fn send_req(
    c: &mut support::TcpClient,
    method: &str,
    payload: Value,
    peer: Option<Value>,
    timeout_ms: Option<u64>,
) -> String {
    let id = support::uuid();
    let mut r = support::request(&id, method, payload);
    if let Some(p) = peer {
        r["peer"] = p;
    }
    if let Some(t) = timeout_ms {
        r["timeout"] = json!(t);
    }
    c.send_json(&r).await;
    id
}

async fn response(c: &mut support::TcpClient, id: &str) -> Value {
    expect_frame(c, &format!("response {id}"), |v| {
        v["type"] == "response" && v["requestId"] == id
    })
    .await
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn presence_ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["data"]["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["starlingId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn notification(topic: &str, data: Value, peer: Option<Value>) -> Value {
    let mut n = json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
        "type": "notification", "notification": {"topic": topic, "data": data}});
    if let Some(p) = peer {
        n["peer"] = p;
    }
    n
}

/// Presence across three nodes, relay by id and by name (answer, the
/// peer's own error code, PEER_NOT_FOUND, REQUEST_TIMEOUT, cancel), names
/// first-wins across nodes and released on disconnect.
async fn presence_relay_and_names(broker: &str) {
    let prefix = unique_prefix("p");
    let a = cluster_node(broker, &prefix);
    let b = cluster_node(broker, &prefix);
    let c = cluster_node(broker, &prefix);
    let room = "team:ops";

    let mut alice = raw(&a).await;
    let mut bob = raw(&b).await;
    let mut carol = raw(&c).await;
    let (alice_id, bob_id, carol_id) = (id_of(&alice), id_of(&bob), id_of(&carol));
    for (cl, name) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let r = cl.call("helios:subscribe", json!({ "topic": room })).await;
        assert_eq!(r["success"], true, "{r}");
        let r = cl.call("helios:identify", json!({ "name": name })).await;
        assert_eq!(r["success"], true, "{r}");
    }

    // Presence on C lists the members of A and B.
    let p = carol
        .call("helios:presence", json!({ "topic": room }))
        .await;
    let mut want = vec![alice_id.clone(), bob_id.clone()];
    want.sort();
    assert_eq!(presence_ids(&p), want, "{p}");
    assert_eq!(p["data"]["count"], 2, "{p}");
    let names: Vec<&str> = p["data"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(names.contains(&"alice") && names.contains(&"bob"), "{p}");

    // Names are cluster-wide: first wins.
    let r = carol
        .call("helios:identify", json!({ "name": "alice" }))
        .await;
    assert_eq!(error_code(&r), "NAME_TAKEN", "{r}");

    // Relay by name, C → bob on B: the answer comes back under C's id.
    let id = send_req(
        &mut carol,
        "calc:add",
        json!({"x": 1}),
        Some(json!({"name": "bob"})),
        None,
    )
    .await;
    let req = expect_frame(&mut bob, "relayed request", |v| v["type"] == "request").await;
    assert_eq!(req["method"], "calc:add");
    assert_eq!(req["payload"], json!({"x": 1}));
    assert_eq!(req["peer"]["id"], carol_id.as_str(), "{req}");
    let rid = req["requestId"].as_str().expect("requestId").to_owned();
    bob.send_json(
        &json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
        "type": "response", "requestId": rid, "success": true, "data": {"sum": 2}}),
    )
    .await;
    let r = response(&mut carol, &id).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["data"], json!({"sum": 2}));

    // Relay by id, C → alice on A: her error code passes through.
    let id = send_req(
        &mut carol,
        "calc:div",
        json!({}),
        Some(json!({"id": alice_id})),
        None,
    )
    .await;
    let req = expect_frame(&mut alice, "relayed request", |v| v["type"] == "request").await;
    let rid = req["requestId"].as_str().expect("requestId").to_owned();
    alice
        .send_json(
            &json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
            "type": "response", "requestId": rid, "success": false,
            "error": {"code": "DIVISION_BY_ZERO", "message": "no"}}),
        )
        .await;
    let r = response(&mut carol, &id).await;
    assert_eq!(error_code(&r), "DIVISION_BY_ZERO", "{r}");

    // Unknown peers, checked across the cluster.
    for peer in [json!({"name": "nobody"}), json!({"id": support::uuid()})] {
        let id = send_req(&mut carol, "calc:add", json!({}), Some(peer), None).await;
        let r = response(&mut carol, &id).await;
        assert_eq!(error_code(&r), "PEER_NOT_FOUND", "{r}");
    }

    // A silent peer: REQUEST_TIMEOUT, and the peer is told to cancel.
    let id = send_req(
        &mut carol,
        "calc:slow",
        json!({}),
        Some(json!({"name": "bob"})),
        Some(800),
    )
    .await;
    let req = expect_frame(&mut bob, "relayed request", |v| v["type"] == "request").await;
    let rid = req["requestId"].as_str().expect("requestId").to_owned();
    let r = response(&mut carol, &id).await;
    assert_eq!(error_code(&r), "REQUEST_TIMEOUT", "{r}");
    let cancel = expect_frame(&mut bob, "cancel after timeout", |v| {
        v["notification"]["topic"] == "helios:cancel"
    })
    .await;
    assert_eq!(cancel["notification"]["data"]["requestId"], rid.as_str());

    // The caller cancels: REQUEST_CANCELLED, and the cancel reaches bob.
    let id = send_req(
        &mut carol,
        "calc:slow",
        json!({}),
        Some(json!({"name": "bob"})),
        Some(5000),
    )
    .await;
    let req = expect_frame(&mut bob, "relayed request", |v| v["type"] == "request").await;
    let rid = req["requestId"].as_str().expect("requestId").to_owned();
    carol
        .send_json(&notification(
            "helios:cancel",
            json!({ "requestId": id }),
            None,
        ))
        .await;
    let r = response(&mut carol, &id).await;
    assert_eq!(error_code(&r), "REQUEST_CANCELLED", "{r}");
    let cancel = expect_frame(&mut bob, "forwarded cancel", |v| {
        v["notification"]["topic"] == "helios:cancel"
    })
    .await;
    assert_eq!(cancel["notification"]["data"]["requestId"], rid.as_str());

    // A relayed notification by name, C → alice.
    carol
        .send_json(&notification(
            "chat:ping",
            json!({"hi": 1}),
            Some(json!({"name": "alice"})),
        ))
        .await;
    let n = expect_frame(&mut alice, "relayed notification", |v| {
        v["notification"]["topic"] == "chat:ping"
    })
    .await;
    assert_eq!(n["notification"]["data"], json!({"hi": 1}));
    assert_eq!(n["peer"]["id"], carol_id.as_str(), "{n}");

    // Alice leaves: her name is free on every node, presence drops her.
    drop(alice);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = carol
            .call("helios:identify", json!({ "name": "alice" }))
            .await;
        if r["success"] == true {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "name not released: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = carol
        .call("helios:presence", json!({ "topic": room }))
        .await;
    assert_eq!(presence_ids(&p), vec![bob_id.clone()], "{p}");
    // The name moved to carol: relay by name now reaches her from B.
    let id = send_req(
        &mut bob,
        "calc:who",
        json!({}),
        Some(json!({"name": "alice"})),
        None,
    )
    .await;
    let req = expect_frame(&mut carol, "relayed request", |v| v["type"] == "request").await;
    let rid = req["requestId"].as_str().expect("requestId").to_owned();
    carol
        .send_json(
            &json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
            "type": "response", "requestId": rid, "success": true, "data": "carol"}),
        )
        .await;
    let r = response(&mut bob, &id).await;
    assert_eq!(r["data"], "carol", "{r}");
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A client subscribed on A is cut; C publishes during the gap; it
/// recovers on B with its token: same id, rooms, name, and every missed
/// message in order, then live ones. A token whose session is still held
/// by a live connection on another node is refused.
async fn recovery_on_another_node(broker: &str) {
    let prefix = unique_prefix("r");
    let a = cluster_node(broker, &prefix);
    let b = cluster_node(broker, &prefix);
    let c = cluster_node(broker, &prefix);
    let room = "news:live";

    let mut x = raw(&a).await;
    let x_id = id_of(&x);
    assert_eq!(
        x.call("helios:subscribe", json!({ "topic": room })).await["success"],
        true
    );
    assert_eq!(
        x.call("helios:identify", json!({ "name": "rex" })).await["success"],
        true
    );
    let token = x.call("starling:getToken", json!({})).await["data"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let mut publisher = raw(&c).await;
    for i in 0..2 {
        let r = publisher
            .call("helios:publish", json!({ "topic": room, "data": {"i": i} }))
            .await;
        assert_eq!(r["success"], true, "{r}");
    }
    let mut last = Value::Null;
    for _ in 0..2 {
        last = expect_frame(&mut x, "delivery", |v| v["notification"]["topic"] == room).await;
    }
    assert_eq!(last["notification"]["data"]["i"], 1);
    let since = json!({ room: {
        "offset": last["notification"]["offset"],
        "epoch": last["notification"]["epoch"],
    }});
    drop(x); // cut

    for i in 2..7 {
        let r = publisher
            .call("helios:publish", json!({ "topic": room, "data": {"i": i} }))
            .await;
        assert_eq!(r["success"], true, "{r}");
    }

    let url = format!(
        "{}?recover={token}&since={}",
        b.ws_url(),
        pct(&since.to_string())
    );
    let mut recovered = None;
    for _ in 0..100 {
        let c = support::connect(&url).await;
        if c.welcome["recovered"] == true {
            recovered = Some(c);
            break;
        }
        // Held until A has saved the snapshot and left the directory.
        assert_eq!(
            c.welcome["reason"], "the session is still held by a live connection",
            "{}",
            c.welcome
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut y = recovered.expect("recovered on B");
    assert_eq!(y.welcome["starlingId"], x_id.as_str());
    assert_eq!(y.welcome["rooms"], json!([room]));
    assert_eq!(y.welcome["missed"], false, "{}", y.welcome);
    let mut got = Vec::new();
    while got.len() < 5 {
        let v = expect_frame(&mut y, "replay", |v| v["notification"]["topic"] == room).await;
        got.push(v["notification"]["data"]["i"].as_u64().expect("i"));
    }
    assert_eq!(got, vec![2, 3, 4, 5, 6], "missed messages, in order");
    let r = publisher
        .call("helios:publish", json!({ "topic": room, "data": {"i": 7} }))
        .await;
    assert_eq!(r["success"], true);
    let v = expect_frame(&mut y, "live", |v| v["notification"]["topic"] == room).await;
    assert_eq!(v["notification"]["data"]["i"], 7);

    // Its name came back with it: reachable by name from C.
    let id = send_req(
        &mut publisher,
        "calc:who",
        json!({}),
        Some(json!({"name": "rex"})),
        None,
    )
    .await;
    let req = expect_frame(&mut y, "relayed request", |v| v["type"] == "request").await;
    let rid = req["requestId"].as_str().expect("requestId").to_owned();
    y.send_json(
        &json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
        "type": "response", "requestId": rid, "success": true, "data": "rex"}),
    )
    .await;
    assert_eq!(response(&mut publisher, &id).await["data"], "rex");

    // A token of a session still live on A is refused on B.
    let mut z = raw(&a).await;
    let token = z.call("starling:getToken", json!({})).await["data"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let w = support::connect(&format!("{}?recover={token}", b.ws_url())).await;
    assert_eq!(w.welcome["recovered"], false);
    assert_eq!(
        w.welcome["reason"],
        "the session is still held by a live connection"
    );
    drop(z);
}

/// SIGKILL a node: its presence entries and names vanish within the node
/// TTL; relaying to its peers is PEER_NOT_FOUND.
async fn node_kill(broker: &str) {
    let prefix = unique_prefix("k");
    let a = cluster_node(broker, &prefix);
    let mut b = cluster_node(broker, &prefix);
    let room = "team:k";
    let mut kate = raw(&b).await;
    let kate_id = id_of(&kate);
    assert_eq!(
        kate.call("helios:subscribe", json!({ "topic": room }))
            .await["success"],
        true
    );
    assert_eq!(
        kate.call("helios:identify", json!({ "name": "kate" }))
            .await["success"],
        true
    );
    let mut watcher = raw(&a).await;
    let p = watcher
        .call("helios:presence", json!({ "topic": room }))
        .await;
    assert_eq!(presence_ids(&p), vec![kate_id.clone()], "{p}");

    b.child.kill().expect("SIGKILL node B");
    let _ = b.child.wait();
    let killed = tokio::time::Instant::now();
    let limit = NODE_TTL + Duration::from_secs(3);
    loop {
        let p = watcher
            .call("helios:presence", json!({ "topic": room }))
            .await;
        let r = watcher
            .call("helios:identify", json!({ "name": "kate" }))
            .await;
        if presence_ids(&p).is_empty() && r["success"] == true {
            break;
        }
        assert!(
            killed.elapsed() < limit,
            "entries of the killed node still there after {:?}: {p} {r}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = send_req(
        &mut watcher,
        "calc:x",
        json!({}),
        Some(json!({"id": kate_id})),
        None,
    )
    .await;
    assert_eq!(
        error_code(&response(&mut watcher, &id).await),
        "PEER_NOT_FOUND"
    );
}

fn redis_bin() -> &'static str {
    if std::path::Path::new("/usr/bin/redis-server").exists() {
        "/usr/bin/redis-server"
    } else {
        "redis-server"
    }
}

fn nats_bin() -> &'static str {
    if std::path::Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    }
}

/// A private broker process on a spare loopback port.
async fn private_broker(kind: &str, port: u16, dir: &std::path::Path) -> Child {
    let mut cmd = if kind == "redis" {
        let mut c = Command::new(redis_bin());
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir);
        c
    } else {
        let mut c = Command::new(nats_bin());
        c.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir);
        c
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("broker server is installed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind} server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// Kill the broker under two nodes: publishers get BROKER_UNAVAILABLE;
/// restart it: nodes resubscribe (deliveries resume) and write their
/// presence again.
async fn broker_restart(kind: &str) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("helios-cluster-{kind}-{port}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("{kind}://127.0.0.1:{port}");
    let mut server = private_broker(kind, port, &dir).await;
    let prefix = unique_prefix("b");
    let a = cluster_node(&url, &prefix);
    let b = cluster_node(&url, &prefix);
    let room = "feed:x";

    let mut sub = raw(&b).await;
    let sub_id = id_of(&sub);
    assert_eq!(
        sub.call("helios:subscribe", json!({ "topic": room })).await["success"],
        true
    );
    let mut publisher = raw(&a).await;
    let r = publisher
        .call("helios:publish", json!({ "topic": room, "data": 1 }))
        .await;
    assert_eq!(r["success"], true, "{r}");
    expect_frame(&mut sub, "delivery before", |v| {
        v["notification"]["topic"] == room
    })
    .await;

    server.kill().await.expect("kill broker");
    let down = tokio::time::Instant::now();
    loop {
        let r = publisher
            .call("helios:publish", json!({ "topic": room, "data": 2 }))
            .await;
        if error_code(&r) == "BROKER_UNAVAILABLE" {
            break;
        }
        assert!(
            down.elapsed() < Duration::from_secs(10),
            "publish did not fail: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let _server = private_broker(kind, port, &dir).await;
    let up = tokio::time::Instant::now();
    let mut n = 100;
    let delivered = loop {
        n += 1;
        let r = publisher
            .call("helios:publish", json!({ "topic": room, "data": n }))
            .await;
        if r["success"] == true {
            let got = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    let v = sub.next_json().await;
                    if v["notification"]["topic"] == room
                        && v["notification"]["data"].as_u64() >= Some(101)
                    {
                        return v;
                    }
                }
            })
            .await;
            if let Ok(v) = got {
                break v;
            }
        }
        assert!(
            up.elapsed() < Duration::from_secs(25),
            "deliveries did not resume: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(delivered["notification"]["data"].as_u64() > Some(100));
    // Presence is written again (Redis lost it; NATS kept it).
    loop {
        let p = publisher
            .call("helios:presence", json!({ "topic": room }))
            .await;
        if presence_ids(&p) == vec![sub_id.clone()] {
            break;
        }
        assert!(
            up.elapsed() < Duration::from_secs(25) + NODE_TTL,
            "presence not back: {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_relay_and_names_on_redis() {
    presence_relay_and_names(REDIS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_relay_and_names_on_nats() {
    presence_relay_and_names(NATS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_another_node_on_redis() {
    recovery_on_another_node(REDIS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_another_node_on_nats() {
    recovery_on_another_node(NATS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_expires_on_redis() {
    node_kill(REDIS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_expires_on_nats() {
    node_kill(NATS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_on_redis() {
    broker_restart("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_on_nats() {
    broker_restart("nats").await;
}
