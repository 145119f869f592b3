//! Reliable delivery end to end: resends until acknowledged, duplicates
//! dropped by id, both directions.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Raw, Server};
use helios::{Context, Helios, Retry};
use serde_json::json;

fn quick() -> Retry {
    Retry {
        first_delay: Duration::from_millis(100),
        max_attempts: 4,
        max_delay: Duration::from_millis(400),
    }
}

#[tokio::test]
async fn server_notification_is_resent_until_acked() {
    let s = Server::start(Helios::builder().build()).await;
    let mut c = Raw::connect(&s.url()).await;
    let conn = s
        .helios
        .connection(c.welcome["starlingId"].as_str().expect("id"))
        .expect("conn");
    let sending = tokio::spawn(async move {
        conn.notify_reliable("order:shipped", json!({"id": 7}), quick())
            .await
    });
    // The client "loses" the first two copies, then acknowledges the third.
    let mut ack_id = None;
    for copy in 0..3 {
        let v = c.next_json().await;
        assert_eq!(v["notification"]["topic"], "order:shipped");
        assert_eq!(v["notification"]["data"]["id"], 7);
        let id = v["notification"]["ackId"]
            .as_str()
            .expect("ackId")
            .to_owned();
        if let Some(prev) = &ack_id {
            assert_eq!(prev, &id, "copy {copy} keeps the same ackId");
        }
        ack_id = Some(id);
    }
    c.send_json(&common::notification(
        "helios:ack",
        json!({"ackId": ack_id}),
    ))
    .await;
    assert_eq!(sending.await.expect("join"), Ok(()));
}

#[tokio::test]
async fn an_unacknowledged_notification_fails_after_its_attempts() {
    let s = Server::start(Helios::builder().build()).await;
    let mut c = Raw::connect(&s.url()).await;
    let conn = s
        .helios
        .connection(c.welcome["starlingId"].as_str().expect("id"))
        .expect("conn");
    let err = conn
        .notify_reliable("x:y", json!(1), quick())
        .await
        .expect_err("no ack");
    assert_eq!(err.code.as_str(), "REQUEST_TIMEOUT");
    assert!(err.message.contains("4 attempts"), "{}", err.message);
    for _ in 0..4 {
        assert_eq!(c.next_json().await["notification"]["topic"], "x:y");
    }
}

#[tokio::test]
async fn client_reliable_notifications_are_acked_and_deduplicated() {
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let helios = Helios::builder()
        .on("metrics:report", move |_: Context| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    let mut n = common::notification("metrics:report", json!({"cpu": 3}));
    n["notification"]["ackId"] = json!("a-1");
    for _ in 0..3 {
        c.send_json(&n).await; // a resend after a lost ack
        let ack = c.next_json().await;
        assert_eq!(ack["notification"]["topic"], "helios:ack");
        assert_eq!(ack["notification"]["data"]["ackId"], "a-1");
    }
    assert_eq!(c.call("system:ping", json!({})).await["success"], true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(handled.load(Ordering::SeqCst), 1, "handled once");
}

#[tokio::test]
async fn server_request_is_resent_with_the_same_id() {
    let s = Server::start(Helios::builder().build()).await;
    let mut c = Raw::connect(&s.url()).await;
    let conn = s
        .helios
        .connection(c.welcome["starlingId"].as_str().expect("id"))
        .expect("conn");
    let asking = tokio::spawn(async move {
        conn.request_reliable("client:info", json!({}), quick(), Duration::from_secs(5))
            .await
    });
    let first = c.next_json().await;
    let second = c.next_json().await;
    assert_eq!(first["type"], "request");
    assert_eq!(
        first["requestId"], second["requestId"],
        "resent under the same id"
    );
    c.send_json(
        &json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
        "type": "response", "requestId": second["requestId"], "success": true, "data": "ok"}),
    )
    .await;
    assert_eq!(asking.await.expect("join"), Ok(json!("ok")));
    // The client answers the first copy too, late: accepted quietly.
    c.send_json(
        &json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
        "type": "response", "requestId": first["requestId"], "success": true, "data": "ok"}),
    )
    .await;
    let ping = common::uuid();
    c.send_json(&common::request(&ping, "system:ping", json!({})))
        .await;
    let next = c.next_json().await;
    assert_eq!(
        next["requestId"],
        ping.as_str(),
        "no helios:error for the late copy: {next}"
    );
}
