//! Three real `helios` processes on loopback ports sharing one Redis, and
//! again one NATS: a publication on node A reaches subscribers on B and C,
//! all of them, in the publisher's order, with contiguous offsets.
//!
//! Redis (127.0.0.1:6379) and NATS with JetStream (127.0.0.1:4222) run on
//! every dev machine and in CI (`scripts/install-test-deps.sh`); these tests
//! fail, never skip, when they are down. Every run uses its own key/subject
//! prefix.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
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
