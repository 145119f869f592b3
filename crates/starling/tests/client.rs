//! End-to-end tests of the client against a hand-driven WebSocket peer on
//! 127.0.0.1: hand-written frames in, assertions on the frames that come out.

#![allow(missing_docs, clippy::unwrap_used)]

mod peer;

use std::collections::HashMap;
use std::time::Duration;

use helios_protocol::{Encoding, ErrorCode, PeerRef};
use serde_json::{Value, json};
use starling::{ClientError, MethodError, RecvError, RequestOptions};
use tokio::sync::mpsc;

use peer::{pair, pair_with};

/// Every test body runs under this bound.
const TEST_LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test took too long");
}

#[tokio::test]
async fn connect_waits_for_welcome_and_offers_json() {
    bounded(async {
        let (client, peer) = pair(|b| b).await;
        assert_eq!(client.starling_id(), "star-1");
        assert!(!client.welcome().recovered);
        assert_eq!(client.encoding(), Encoding::Json);
        assert_eq!(peer.offered.as_deref(), Some("helios-starling.v1.json"));
    })
    .await;
}

#[tokio::test]
async fn connect_times_out_without_welcome() {
    bounded(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        // Upgrade, then stay silent.
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (_, ws) = tokio_websockets::ServerBuilder::new()
                .accept(stream)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(ws);
        });
        let err = starling::Client::builder(url)
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Connect(starling::ConnectError::Timeout)),
            "{err:?}"
        );
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn many_concurrent_requests_are_correlated() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        // More than one write batch (64): regression for a command lost at the
        // batch boundary.
        const N: usize = 200;
        let mut calls = Vec::new();
        for n in 0..N {
            let client = client.clone();
            calls.push(tokio::spawn(async move {
                let v = client.request("math:double", json!({ "n": n })).await;
                (n, v)
            }));
        }
        // Collect every request, then answer in reverse order.
        let mut seen = Vec::new();
        for _ in 0..N {
            let req = peer.expect_request("math:double").await;
            assert_eq!(req["protocol"], "helios-starling");
            assert_eq!(req["version"], "1.0.0");
            assert!(req["timeout"].is_u64(), "timeout hint sent: {req}");
            let id = req["requestId"].as_str().unwrap();
            assert_eq!(id.len(), 36, "UUID request id");
            seen.push(req);
        }
        let ids: std::collections::HashSet<_> =
            seen.iter().map(|r| r["requestId"].clone()).collect();
        assert_eq!(ids.len(), N, "request ids are unique");
        for req in seen.iter().rev() {
            let n = req["payload"]["n"].as_u64().unwrap();
            peer.send(peer::ok(&req["requestId"], json!({ "doubled": n * 2 })))
                .await;
        }
        for call in calls {
            let (n, v) = call.await.unwrap();
            assert_eq!(v.unwrap(), json!({ "doubled": n * 2 }));
        }
    })
    .await;
}

#[tokio::test]
async fn timeout_fails_locally_and_sends_cancel() {
    bounded(async {
        let (client, mut peer) = pair(|b| b.request_timeout(Duration::from_millis(200))).await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request("slow:op", json!({})).await }
        });
        let req = peer.expect_request("slow:op").await;
        assert_eq!(req["timeout"], 200);
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Timeout), "{err:?}");
        assert_eq!(err.code(), Some(ErrorCode::REQUEST_TIMEOUT));
        assert_eq!(
            peer.expect_cancel().await,
            req["requestId"].as_str().unwrap()
        );

        // A late answer is ignored and the link keeps working.
        peer.send(peer::ok(&req["requestId"], json!("late"))).await;
        let next = tokio::spawn({
            let client = client.clone();
            async move { client.request("fast:op", json!({})).await }
        });
        let req = peer.expect_request("fast:op").await;
        peer.send(peer::ok(&req["requestId"], json!("fresh"))).await;
        assert_eq!(next.await.unwrap().unwrap(), json!("fresh"));
    })
    .await;
}

#[tokio::test]
async fn per_call_timeout_and_peer_relay_are_sent() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let call = tokio::spawn({
            let client = client.clone();
            async move {
                let opts = RequestOptions::new()
                    .timeout(Duration::from_millis(1500))
                    .peer(PeerRef::Name("svc".into()));
                client.request_with("svc:do", json!({"x": 1}), opts).await
            }
        });
        let req = peer.expect_request("svc:do").await;
        assert_eq!(req["peer"], json!({"name": "svc"}));
        assert_eq!(req["timeout"], 1500);
        peer.send(peer::ok(&req["requestId"], json!({"done": true})))
            .await;
        assert_eq!(call.await.unwrap().unwrap(), json!({"done": true}));

        client
            .notify_peer(PeerRef::Id("star-9".into()), "chat:dm", json!({"t": "hi"}))
            .await
            .unwrap();
        let note = peer.recv().await;
        assert_eq!(note["type"], "notification");
        assert_eq!(note["peer"], json!({"id": "star-9"}));
        assert_eq!(note["notification"]["topic"], "chat:dm");
        assert_eq!(note["notification"]["data"], json!({"t": "hi"}));
    })
    .await;
}

#[tokio::test]
async fn dropping_a_request_future_sends_cancel() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let (sent_tx, mut sent_rx) = mpsc::channel(1);
        let call = tokio::spawn({
            let client = client.clone();
            async move {
                let pending = client
                    .send_request("slow:op", json!({}), RequestOptions::new())
                    .await
                    .unwrap();
                sent_tx.send(()).await.unwrap();
                pending.await
            }
        });
        let req = peer.expect_request("slow:op").await;
        sent_rx.recv().await.unwrap();
        call.abort(); // drops the in-flight future
        assert!(call.await.unwrap_err().is_cancelled());
        assert_eq!(
            peer.expect_cancel().await,
            req["requestId"].as_str().unwrap()
        );

        // The same through `select!`, the everyday way to drop a future.
        let req = tokio::select! {
            _ = client.request("slow:two", json!({})) => panic!("no answer was sent"),
            req = peer.expect_request("slow:two") => req,
        };
        // The request future was dropped when `select!` finished.
        assert_eq!(
            peer.expect_cancel().await,
            req["requestId"].as_str().unwrap()
        );
    })
    .await;
}

#[tokio::test]
async fn explicit_cancel_sends_cancel_and_resolves_cancelled() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;

        // PendingRequest::cancel
        let pending = client
            .send_request("slow:a", json!({}), RequestOptions::new())
            .await
            .unwrap();
        let id = pending.id().to_string();
        let req = peer.expect_request("slow:a").await;
        assert_eq!(req["requestId"], id);
        pending.cancel().await;
        assert_eq!(peer.expect_cancel().await, id);

        // Client::cancel from elsewhere while the call is awaited.
        let pending = client
            .send_request("slow:b", json!({}), RequestOptions::new())
            .await
            .unwrap();
        let id = pending.id().clone();
        let waiter = tokio::spawn(pending);
        peer.expect_request("slow:b").await;
        assert!(client.cancel(&id).await);
        let err = waiter.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Cancelled), "{err:?}");
        assert_eq!(peer.expect_cancel().await, id.as_str());
        assert!(!client.cancel(&id).await, "already gone");
    })
    .await;
}

#[tokio::test]
async fn server_error_code_is_passed_through() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        for (code, details) in [
            ("FORBIDDEN", None),
            ("MY_APP_ERROR", Some(json!({"field": "name"}))),
            ("REQUEST_CANCELLED", None),
        ] {
            let call = tokio::spawn({
                let client = client.clone();
                async move { client.request("user:get", json!({"id": 7})).await }
            });
            let req = peer.expect_request("user:get").await;
            peer.send(peer::error(
                &req["requestId"],
                code,
                "nope",
                details.clone(),
            ))
            .await;
            match call.await.unwrap() {
                Err(ClientError::Server(body)) => {
                    assert_eq!(body.code.as_str(), code);
                    assert_eq!(body.message, "nope");
                    assert_eq!(body.details, details);
                }
                other => panic!("expected a server error, got {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn typed_call_round_trips_and_reports_decode_errors() {
    #[derive(serde::Serialize)]
    struct GetUser {
        id: u64,
    }
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct User {
        name: String,
    }
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.call::<_, User>("user:get", &GetUser { id: 7 }).await }
        });
        let req = peer.expect_request("user:get").await;
        assert_eq!(req["payload"], json!({"id": 7}));
        peer.send(peer::ok(&req["requestId"], json!({"name": "ada"})))
            .await;
        assert_eq!(call.await.unwrap().unwrap(), User { name: "ada".into() });

        let call = tokio::spawn({
            let client = client.clone();
            async move { client.call::<_, User>("user:get", &GetUser { id: 8 }).await }
        });
        let req = peer.expect_request("user:get").await;
        peer.send(peer::ok(&req["requestId"], json!(42))).await;
        assert!(matches!(call.await.unwrap(), Err(ClientError::Decode(_))));
    })
    .await;
}

fn with_methods(b: starling::ClientBuilder) -> starling::ClientBuilder {
    b.method("client:info", |_: Value| async move {
        Ok::<_, MethodError>(json!({"os": "linux"}))
    })
    .method("client:add", |(a, b): (i64, i64)| async move {
        Ok::<_, MethodError>(a + b)
    })
    .method("client:deny", |_: Value| async move {
        Err::<Value, _>(MethodError::new(ErrorCode::FORBIDDEN, "not for you"))
    })
    .method("client:boom", |_: Value| async move {
        if true {
            panic!("handler bug");
        }
        Ok::<Value, MethodError>(Value::Null)
    })
}

#[tokio::test]
async fn server_to_client_requests_are_answered() {
    bounded(async {
        let (_client, mut peer) = pair(with_methods).await;

        peer.send(peer::request("r-1", "client:info", json!({})))
            .await;
        let res = peer.expect_response("r-1").await;
        assert_eq!(res["success"], true);
        assert_eq!(res["data"], json!({"os": "linux"}));

        peer.send(peer::request("r-2", "client:add", json!([2, 3])))
            .await;
        let res = peer.expect_response("r-2").await;
        assert_eq!(res["data"], 5);

        peer.send(peer::request("r-3", "client:nope", json!({})))
            .await;
        let res = peer.expect_response("r-3").await;
        assert_eq!(res["success"], false);
        assert_eq!(res["error"]["code"], "METHOD_NOT_FOUND");

        peer.send(peer::request("r-4", "client:deny", json!({})))
            .await;
        let res = peer.expect_response("r-4").await;
        assert_eq!(res["error"]["code"], "FORBIDDEN");
        assert_eq!(res["error"]["message"], "not for you");

        peer.send(peer::request("r-5", "client:boom", json!({})))
            .await;
        let res = peer.expect_response("r-5").await;
        assert_eq!(res["error"]["code"], "METHOD_ERROR");

        peer.send(peer::request("r-6", "client:add", json!({"a": 1})))
            .await;
        let res = peer.expect_response("r-6").await;
        assert_eq!(res["error"]["code"], "INVALID_PAYLOAD");

        // A relayed request (carrying the sender as `peer`) is served the same.
        let mut relayed = peer::request("r-7", "client:info", json!({}));
        relayed["peer"] = json!({"id": "star-2"});
        peer.send(relayed).await;
        let res = peer.expect_response("r-7").await;
        assert_eq!(res["data"], json!({"os": "linux"}));
    })
    .await;
}

#[tokio::test]
async fn server_cancel_aborts_the_handler_and_answers_cancelled() {
    bounded(async {
        let (started_tx, mut started_rx) = mpsc::channel::<()>(1);
        let (dropped_tx, mut dropped_rx) = mpsc::channel::<()>(1);
        struct OnDrop(mpsc::Sender<()>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                let _ = self.0.try_send(());
            }
        }
        let (_client, mut peer) = pair(move |b| {
            with_methods(b).method("client:slow", move |_: Value| {
                let started = started_tx.clone();
                let guard = OnDrop(dropped_tx.clone());
                async move {
                    let _guard = guard;
                    started.send(()).await.unwrap();
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok::<_, MethodError>(json!("finished"))
                }
            })
        })
        .await;

        peer.send(peer::request("slow-1", "client:slow", json!({})))
            .await;
        started_rx.recv().await.unwrap();
        peer.send(peer::cancel("slow-1")).await;
        let res = peer.expect_response("slow-1").await;
        assert_eq!(res["success"], false);
        assert_eq!(res["error"]["code"], "REQUEST_CANCELLED");
        // The handler task was aborted (its state dropped), not left running.
        tokio::time::timeout(Duration::from_secs(2), dropped_rx.recv())
            .await
            .expect("handler was aborted")
            .unwrap();

        // A cancel for an unknown request changes nothing; the next frame the
        // client sends is the answer to the next request (no stray response).
        peer.send(peer::cancel("slow-1")).await;
        peer.send(peer::request("r-9", "client:info", json!({})))
            .await;
        let res = peer.expect_response("r-9").await;
        assert_eq!(res["success"], true);
    })
    .await;
}

#[tokio::test]
async fn handler_overrunning_its_timeout_answers_request_timeout() {
    bounded(async {
        let (_client, mut peer) = pair(|b| {
            b.method("client:slow", |_: Value| async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, MethodError>(Value::Null)
            })
        })
        .await;
        let mut req = peer::request("t-1", "client:slow", json!({}));
        req["timeout"] = json!(100);
        peer.send(req).await;
        let res = peer.expect_response("t-1").await;
        assert_eq!(res["error"]["code"], "REQUEST_TIMEOUT");
    })
    .await;
}

#[tokio::test]
async fn notifications_reach_every_receiver() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let mut a = client.notifications();
        let mut b = client.notifications();
        peer.send(peer::notification("news:flash", json!({"n": 1})))
            .await;
        let mut relayed = peer::notification("chat:dm", json!({"t": "hi"}));
        relayed["peer"] = json!({"id": "star-2"});
        peer.send(relayed).await;
        for rx in [&mut a, &mut b] {
            let n = rx.recv().await.unwrap();
            assert_eq!(n.topic.as_deref(), Some("news:flash"));
            assert_eq!(n.data, json!({"n": 1}));
            let n = rx.recv().await.unwrap();
            assert_eq!(n.peer, Some(PeerRef::Id("star-2".into())));
        }

        // Outgoing notification shape.
        client
            .notify("chat:message", json!({"text": "yo"}))
            .await
            .unwrap();
        let note = peer.recv().await;
        assert_eq!(note["type"], "notification");
        assert_eq!(note["notification"]["topic"], "chat:message");
        assert_eq!(note["notification"]["data"], json!({"text": "yo"}));
    })
    .await;
}

#[tokio::test]
async fn slow_notification_receiver_is_told_it_lagged() {
    bounded(async {
        let (client, mut peer) = pair(|b| b.notification_capacity(4)).await;
        let mut slow = client.notifications();
        for n in 0..10 {
            peer.send(peer::notification("tick", json!(n))).await;
        }
        // Prove all ten were processed: a request sent after them is answered
        // only once the connection task has routed the ticks.
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request("sync:barrier", json!({})).await }
        });
        let req = peer.expect_request("sync:barrier").await;
        peer.send(peer::ok(&req["requestId"], json!(null))).await;
        call.await.unwrap().unwrap();

        assert_eq!(slow.recv().await, Err(RecvError::Lagged(6)));
        let rest: Vec<Value> = [
            slow.recv().await.unwrap(),
            slow.recv().await.unwrap(),
            slow.recv().await.unwrap(),
            slow.recv().await.unwrap(),
        ]
        .into_iter()
        .map(|n| n.data)
        .collect();
        assert_eq!(rest, vec![json!(6), json!(7), json!(8), json!(9)]);
    })
    .await;
}

#[tokio::test]
async fn subscription_gets_room_deliveries_and_leaves_on_drop() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let sub = tokio::spawn({
            let client = client.clone();
            async move { client.subscribe("chat:lobby").await }
        });
        let req = peer.expect_request("helios:subscribe").await;
        assert_eq!(req["payload"], json!({"topic": "chat:lobby"}));
        peer.send(peer::ok(
            &req["requestId"],
            json!({"topic": "chat:lobby", "subscribed": true}),
        ))
        .await;
        let mut sub = sub.await.unwrap().unwrap();
        assert_eq!(sub.topic(), "chat:lobby");
        assert_eq!(client.rooms(), vec!["chat:lobby".to_owned()]);

        peer.send(peer::notification("other:room", json!("not mine")))
            .await;
        peer.send(peer::room_delivery(
            "chat:lobby",
            json!({"text": "hi"}),
            41,
            "e1",
        ))
        .await;
        let n = sub.recv().await.unwrap();
        assert_eq!(n.data, json!({"text": "hi"}));
        assert_eq!(n.offset, Some(41));
        assert_eq!(n.epoch.as_deref(), Some("e1"));

        // A second subscription to the same room needs no server call.
        let second = client.subscribe("chat:lobby").await.unwrap();
        drop(sub);
        drop(second);
        let req = peer.expect_request("helios:unsubscribe").await;
        assert_eq!(req["payload"], json!({"topic": "chat:lobby"}));
        assert!(client.rooms().is_empty());
    })
    .await;
}

#[tokio::test]
async fn refused_subscription_returns_the_server_error() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let sub = tokio::spawn({
            let client = client.clone();
            async move { client.subscribe("admin:secrets").await }
        });
        let req = peer.expect_request("helios:subscribe").await;
        peer.send(peer::error(&req["requestId"], "FORBIDDEN", "no", None))
            .await;
        let err = sub.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));
        assert!(client.rooms().is_empty());
    })
    .await;
}

#[tokio::test]
async fn publish_and_identify_wrap_the_builtins() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.publish("chat:lobby", json!({"text": "hi"})).await }
        });
        let req = peer.expect_request("helios:publish").await;
        assert_eq!(
            req["payload"],
            json!({"topic": "chat:lobby", "data": {"text": "hi"}})
        );
        peer.send(peer::ok(
            &req["requestId"],
            json!({"topic": "chat:lobby", "delivered": 3}),
        ))
        .await;
        let published = call.await.unwrap().unwrap();
        assert_eq!(published.delivered, 3);

        let call = tokio::spawn({
            let client = client.clone();
            async move { client.identify("billing").await }
        });
        let req = peer.expect_request("helios:identify").await;
        assert_eq!(req["payload"], json!({"name": "billing"}));
        peer.send(peer::error(&req["requestId"], "NAME_TAKEN", "taken", None))
            .await;
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NAME_TAKEN));
    })
    .await;
}

#[tokio::test]
async fn close_sends_1000_and_waits_for_the_socket() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let closer = tokio::spawn({
            let client = client.clone();
            async move { client.close().await }
        });
        let frame = peer.next_frame().await.expect("a close frame");
        let (code, _) = frame.as_close().expect("a close frame");
        assert_eq!(u16::from(code), 1000);
        // Reading on lets tokio-websockets echo the close; then it ends.
        assert!(peer.next_frame().await.is_none());
        closer.await.unwrap();
        assert!(client.is_closed());
        let info = client.closed().await;
        assert_eq!(info.code, Some(1000));
        assert!(info.by_client);
        let err = client.request("system:ping", json!({})).await.unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err:?}");
        assert!(matches!(
            client.notify("x:y", json!(1)).await,
            Err(ClientError::Closed)
        ));
    })
    .await;
}

#[tokio::test]
async fn server_close_fails_pending_requests_and_ends_receivers() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let mut notes = client.notifications();
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request("slow:op", json!({})).await }
        });
        peer.expect_request("slow:op").await;
        peer.close(4001, "unauthorized").await;
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err:?}");
        let info = client.closed().await;
        assert_eq!(info.code, Some(4001));
        assert_eq!(info.reason, "unauthorized");
        assert!(!info.by_client);
        assert_eq!(notes.recv().await, Err(RecvError::Closed));
    })
    .await;
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        drop(client);
        let frame = peer.next_frame().await.expect("a close frame");
        assert_eq!(frame.as_close().map(|(c, _)| u16::from(c)), Some(1000));
    })
    .await;
}

#[tokio::test]
async fn undecodable_response_fails_its_request_at_once() {
    bounded(async {
        let (client, mut peer) = pair(|b| b).await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request("x:y", json!({})).await }
        });
        let req = peer.expect_request("x:y").await;
        // A failed response without `error` breaks the protocol.
        let id = req["requestId"].as_str().unwrap();
        let bad = json!({"protocol": "helios-starling", "version": "1.0.0",
            "timestamp": 1, "type": "response", "requestId": id, "success": false});
        peer.send(bad).await;
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");

        // Garbage without an id is logged and ignored; the link lives on.
        peer.send_raw(tokio_websockets::Message::text("not json"))
            .await;
        let mut notes = client.notifications();
        peer.send(peer::notification("still:alive", json!(true)))
            .await;
        assert_eq!(notes.recv().await.unwrap().data, json!(true));
    })
    .await;
}

#[tokio::test]
async fn msgpack_is_negotiated_and_used_both_ways() {
    bounded(async {
        let (client, mut peer) = pair_with(Encoding::MsgPack, with_methods).await;
        assert_eq!(client.encoding(), Encoding::MsgPack);
        assert_eq!(client.starling_id(), "star-1");
        assert_eq!(
            peer.offered.as_deref(),
            Some("helios-starling.v1.msgpack, helios-starling.v1.json")
        );

        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request("system:echo", json!({"a": [1, 2]})).await }
        });
        // `recv` asserts the frame is binary on a msgpack link.
        let req = peer.expect_request("system:echo").await;
        peer.send(peer::ok(&req["requestId"], req["payload"].clone()))
            .await;
        assert_eq!(call.await.unwrap().unwrap(), json!({"a": [1, 2]}));

        peer.send(peer::request("m-1", "client:add", json!([20, 22])))
            .await;
        let res = peer.expect_response("m-1").await;
        assert_eq!(res["data"], 42);
    })
    .await;
}

#[tokio::test]
async fn requests_from_many_tasks_survive_a_burst_of_interleaved_traffic() {
    bounded(async {
        let (client, mut peer) = pair(with_methods).await;
        let mut notes = client.notifications();
        const N: usize = 32;
        let calls: Vec<_> = (0..N)
            .map(|n| {
                let client = client.clone();
                tokio::spawn(async move { (n, client.request("echo:n", json!(n)).await) })
            })
            .collect();
        // Interleave: answer each request, push a notification, and make a
        // server → client request, all on the same socket.
        let mut answers = HashMap::new();
        let mut got = 0;
        let mut expected_responses = 0;
        while got < N || expected_responses > 0 {
            let msg = peer.recv().await;
            match msg["type"].as_str().unwrap() {
                "request" => {
                    got += 1;
                    peer.send(peer::notification("tick", msg["payload"].clone()))
                        .await;
                    let id = format!("srv-{got}");
                    peer.send(peer::request(&id, "client:add", json!([got, 1])))
                        .await;
                    expected_responses += 1;
                    peer.send(peer::ok(&msg["requestId"], msg["payload"].clone()))
                        .await;
                }
                "response" => {
                    expected_responses -= 1;
                    let id = msg["requestId"].as_str().unwrap().to_owned();
                    answers.insert(id, msg["data"].clone());
                }
                other => panic!("unexpected {other}"),
            }
        }
        for call in calls {
            let (n, v) = call.await.unwrap();
            assert_eq!(v.unwrap(), json!(n));
        }
        for k in 1..=N {
            assert_eq!(answers[&format!("srv-{k}")], json!(k + 1));
        }
        for _ in 0..N {
            assert_eq!(notes.recv().await.unwrap().topic.as_deref(), Some("tick"));
        }
    })
    .await;
}
