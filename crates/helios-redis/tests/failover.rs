//! A private `redis-server` on a spare loopback port, killed and started
//! again: while it is down `publish` fails with `Unavailable` (never a
//! silent loss); once it is back the broker reconnects and resubscribes by
//! itself and deliveries resume.

use std::sync::Arc;
use std::time::Duration;

use helios::broker_contract::{Recorder, opts};
use helios::{Broker, BrokerError, BrokerHandler};
use helios_redis::RedisBroker;
use serde_json::json;
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

async fn redis_server(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is installed (scripts/install-test-deps.sh)");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reconnects_resubscribes_and_never_loses_silently() {
    tokio::time::timeout(Duration::from_secs(60), scenario())
        .await
        .expect("scenario timed out");
}

async fn scenario() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut server = redis_server(port).await;

    let a = RedisBroker::new(&url).expect("url");
    let b = RedisBroker::new(&url).expect("url");
    let rec = Recorder::new();
    let handler: Arc<dyn BrokerHandler> = rec.clone();
    a.start(handler).await.expect("start a");
    b.start(Recorder::new()).await.expect("start b");
    a.subscribe("ops:room").await.expect("subscribe");
    b.publish("ops:room", json!("before"), opts(10))
        .await
        .expect("publish before");
    rec.wait_for("ops:room", 1, Duration::from_secs(5)).await;

    server.kill().await.expect("kill redis");
    let _ = server.wait().await;

    let down = tokio::time::timeout(
        Duration::from_secs(10),
        b.publish("ops:room", json!("while down"), opts(10)),
    )
    .await
    .expect("publish while down answers in bounded time");
    assert!(
        matches!(down, Err(BrokerError::Unavailable(_))),
        "publish while down: {down:?}"
    );
    let sub_down = a.subscribe("ops:other").await;
    assert!(
        matches!(sub_down, Err(BrokerError::Unavailable(_))),
        "{sub_down:?}"
    );

    let _server = redis_server(port).await;
    // Publish until the publisher's connection is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match b.publish("ops:room", json!("after"), opts(10)).await {
            Ok(_) => break,
            Err(BrokerError::Unavailable(_)) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "redis never came back"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // The subscriber resubscribed by itself: a publication after it is
    // back arrives (retry a few times: its reconnect may lag the
    // publisher's by a backoff step).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if rec.of("ops:room").iter().any(|p| p.data == json!("after")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery after restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = b.publish("ops:room", json!("after"), opts(10)).await;
    }
    assert!(
        rec.of("ops:room")
            .iter()
            .all(|p| p.data != json!("while down")),
        "a publish reported as failed was delivered"
    );
}
