//! Reliable delivery and reconnect decisions at the wire level, against a
//! hand-driven peer.

#![allow(missing_docs, clippy::unwrap_used)]

mod peer;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use starling::{ClientEvent, MethodError, RecvError};

use peer::pair;

const TEST_LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test took too long");
}

#[tokio::test]
async fn reliable_notifications_are_acked_every_time_and_delivered_once() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let mut notes = client.notifications();
        let mut n = peer::notification("order:shipped", json!({"id": 7}));
        n["notification"]["ackId"] = json!("a-1");
        for _ in 0..3 {
            peer.send(n.clone()).await; // resent: the ack was "lost"
            let ack = peer.recv().await;
            assert_eq!(ack["notification"]["topic"], "helios:ack", "{ack}");
            assert_eq!(ack["notification"]["data"], json!({"ackId": "a-1"}));
        }
        peer.send(peer::notification("marker", json!(null))).await;
        assert_eq!(notes.recv().await.unwrap().data, json!({"id": 7}));
        assert_eq!(
            notes.recv().await.unwrap().topic.as_deref(),
            Some("marker"),
            "the copies were dropped"
        );
    })
    .await;
}

#[tokio::test]
async fn a_resent_server_request_is_ignored_while_running_and_answered_again_after() {
    bounded(async {
        let release = Arc::new(tokio::sync::Notify::new());
        let r = release.clone();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let (client, mut peer) = pair(move |b| {
            b.method("slow:op", move |_: serde_json::Value| {
                let r = r.clone();
                let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    r.notified().await;
                    Ok::<_, MethodError>(json!({ "run": n }))
                }
            })
        })
        .await;
        let req = peer::request("srv-1", "slow:op", json!({}));
        peer.send(req.clone()).await;
        peer.send(req.clone()).await; // resent while the handler runs: ignored
        // A round trip proves both copies were read before the release.
        let ping = tokio::spawn({
            let client = client.clone();
            async move { client.request("system:ping", json!({})).await }
        });
        let p = peer.expect_request("system:ping").await;
        peer.send(peer::ok(&p["requestId"], json!({"pong": true})))
            .await;
        ping.await.unwrap().unwrap();
        release.notify_one();
        let first = peer.expect_response("srv-1").await;
        assert_eq!(first["data"], json!({"run": 0}));
        peer.send(req).await; // resent after the answer: the same answer
        let again = peer.expect_response("srv-1").await;
        assert_eq!(again["data"], json!({"run": 0}));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn replayed_room_deliveries_are_deduplicated_by_epoch_and_offset() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let sub = tokio::spawn({
            let client = client.clone();
            async move { client.subscribe("feed:1").await }
        });
        let req = peer.expect_request("helios:subscribe").await;
        peer.send(peer::ok(
            &req["requestId"],
            json!({"topic": "feed:1", "subscribed": true}),
        ))
        .await;
        let mut sub = sub.await.unwrap().unwrap();
        for (offset, epoch) in [
            (1, "e1"),
            (2, "e1"),
            (3, "e1"),
            (2, "e1"),
            (3, "e1"),
            (4, "e1"),
            (1, "e2"),
        ] {
            peer.send(peer::room_delivery(
                "feed:1",
                json!(format!("{epoch}/{offset}")),
                offset,
                epoch,
            ))
            .await;
        }
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(sub.recv().await.unwrap().data);
        }
        assert_eq!(got, ["e1/1", "e1/2", "e1/3", "e1/4", "e2/1"]);
    })
    .await;
}

#[tokio::test]
async fn close_codes_4000_to_4099_end_the_client_even_with_reconnect_on() {
    bounded(async {
        let (client, mut peer) = pair(|b| b.reconnect(starling::ReconnectPolicy::default())).await;
        let mut events = client.events();
        // With reconnect on, the client asks for a recovery token first.
        let req = peer.expect_request("starling:getToken").await;
        peer.send(peer::error(
            &req["requestId"],
            "METHOD_NOT_FOUND",
            "no",
            None,
        ))
        .await;
        peer.close(4003, "forbidden").await;
        let info = client.closed().await;
        assert_eq!(info.code, Some(4003));
        let mut seen = Vec::new();
        loop {
            match events.recv().await {
                Ok(e) => seen.push(e),
                Err(RecvError::Closed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            matches!(
                seen[0],
                ClientEvent::Connected {
                    recovered: false,
                    ..
                }
            ),
            "{seen:?}"
        );
        assert_eq!(seen[1], ClientEvent::RecoveryUnavailable, "{seen:?}");
        assert!(
            matches!(&seen[2], ClientEvent::Closed(i) if i.code == Some(4003)),
            "{seen:?}"
        );
        assert_eq!(seen.len(), 3, "no reconnect: {seen:?}");
    })
    .await;
}
