//! Auto-reconnect, session recovery and reliable delivery against the real
//! server library, in-process, through a TCP proxy that can cut or freeze
//! the connection.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Proxy, SECRET, Server, WAIT, bounded, quick_policy, wait_event};
use helios::{Context, Helios, MethodError, RecoveryConfig, RoomRule};
use serde_json::{Value, json};
use starling::{Client, ClientError, ClientEvent, RequestOptions, Retry, Subscription};

fn recovering(ttl: Duration) -> helios::Builder {
    Helios::builder()
        .recovery(RecoveryConfig::new(SECRET, ttl).unwrap())
        .room("feed:*", RoomRule::new().history(20_000))
}

async fn client(url: String) -> Client {
    Client::builder(url)
        .reconnect(quick_policy())
        .room_capacity(20_000)
        .connect()
        .await
        .unwrap()
}

fn publisher(helios: Helios, topic: &'static str, n: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..n {
            helios.broadcast(topic, json!({ "i": i })).await.unwrap();
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    })
}

/// Reads the room until `last`, pushing every `i`; calls `at` once when
/// `trigger` arrives.
async fn read_until(sub: &mut Subscription, last: u64, seen: &mut Vec<u64>) {
    while seen.last() != Some(&last) {
        let n = tokio::time::timeout(WAIT, sub.recv())
            .await
            .unwrap_or_else(|_| panic!("stalled after {:?}", seen.last()))
            .unwrap();
        seen.push(n.data["i"].as_u64().unwrap());
    }
}

fn assert_complete(seen: &[u64], n: u64) {
    if seen.len() as u64 != n || seen.iter().zip(0..).any(|(a, b)| *a != b) {
        let first_bad = seen.iter().zip(0..).find(|(a, b)| **a != *b);
        panic!(
            "got {} of {n} messages; first mismatch (value, index): {first_bad:?}",
            seen.len()
        );
    }
}

fn is_token(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::TokenRefreshed { .. })
}

#[tokio::test]
async fn abrupt_cut_during_ten_thousand_publications_loses_nothing() {
    bounded(async {
        let s = Server::start(recovering(Duration::from_secs(60)).build()).await;
        let proxy = Proxy::start(s.addr).await;
        let client = client(proxy.url()).await;
        let mut events = client.events();
        let mut seen_events = Vec::new();
        let id = client.starling_id();
        let first = wait_event(&mut events, &mut seen_events, |_| true).await;
        assert_eq!(
            first,
            ClientEvent::Connected {
                starling_id: id.clone(),
                recovered: false
            }
        );
        let mut sub = client.subscribe("feed:1").await.unwrap();
        wait_event(&mut events, &mut seen_events, is_token).await;

        let publishing = publisher(s.helios.clone(), "feed:1", 10_000);
        let mut seen = Vec::new();
        read_until(&mut sub, 1_500, &mut seen).await;
        proxy.cut(); // abrupt: no close frame, frames in flight lost

        read_until(&mut sub, 9_999, &mut seen).await;
        publishing.await.unwrap();
        assert_complete(&seen, 10_000);

        // Disconnected (no close code) → Reconnecting → Connected (recovered) → Recovered.
        let e = wait_event(&mut events, &mut seen_events, |e| {
            matches!(e, ClientEvent::Recovered { .. })
        })
        .await;
        assert_eq!(
            e,
            ClientEvent::Recovered {
                starling_id: id.clone(),
                missed_rooms: vec![]
            }
        );
        let kinds: Vec<&ClientEvent> = seen_events.iter().filter(|e| !is_token(e)).collect();
        assert!(
            matches!(kinds[1], ClientEvent::Disconnected { code: None, .. }),
            "{seen_events:#?}"
        );
        assert!(
            matches!(kinds[2], ClientEvent::Reconnecting { attempt: 1, .. }),
            "{seen_events:#?}"
        );
        assert!(
            seen_events.contains(&ClientEvent::Connected {
                starling_id: id.clone(),
                recovered: true
            }),
            "{seen_events:#?}"
        );
        assert_eq!(client.starling_id(), id, "same starlingId");
        assert!(client.welcome().recovered);
        assert!(client.is_connected());
        // The link works as before.
        client.ping().await.unwrap();
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn ping_timeout_4100_then_recovery_loses_nothing() {
    bounded(async {
        let helios = recovering(Duration::from_secs(60))
            // Pings queue behind deliveries on the same socket; the interval
            // leaves a busy (debug-build) reader time to get to them.
            .health_check(Some(Duration::from_millis(500)), 2)
            .build();
        let s = Server::start(helios).await;
        let proxy = Proxy::start(s.addr).await;
        let client = client(proxy.url()).await;
        let id = client.starling_id();
        let mut events = client.events();
        let mut seen_events = Vec::new();
        let mut sub = client.subscribe("feed:2").await.unwrap();
        wait_event(&mut events, &mut seen_events, is_token).await;

        let publishing = publisher(s.helios.clone(), "feed:2", 5_000);
        let mut seen = Vec::new();
        read_until(&mut sub, 500, &mut seen).await;
        // Pongs stop reaching the server; deliveries keep coming.
        proxy.freeze_upstream();
        let e = wait_event(&mut events, &mut seen_events, |e| {
            matches!(e, ClientEvent::Disconnected { .. })
        })
        .await;
        assert!(
            matches!(
                &e,
                ClientEvent::Disconnected {
                    code: Some(4100),
                    ..
                }
            ),
            "{e:?}"
        );
        read_until(&mut sub, 4_999, &mut seen).await;
        publishing.await.unwrap();
        assert_complete(&seen, 5_000);
        wait_event(&mut events, &mut seen_events, |e| {
            matches!(e, ClientEvent::Recovered { .. })
        })
        .await;
        assert_eq!(client.starling_id(), id);
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn the_token_is_refreshed_and_the_fresh_one_recovers() {
    bounded(async {
        // A 2 s token is refreshed every ~1.3 s.
        let s = Server::start(recovering(Duration::from_secs(2)).build()).await;
        let proxy = Proxy::start(s.addr).await;
        let client = client(proxy.url()).await;
        let id = client.starling_id();
        let mut events = client.events();
        let mut seen_events = Vec::new();
        let mut sub = client.subscribe("feed:3").await.unwrap();
        let started = tokio::time::Instant::now();
        for _ in 0..3 {
            let e = wait_event(&mut events, &mut seen_events, is_token).await;
            assert_eq!(
                e,
                ClientEvent::TokenRefreshed {
                    expires_in: Duration::from_secs(2)
                }
            );
        }
        // The first token has expired by now: only a refreshed one recovers.
        assert!(started.elapsed() > Duration::from_secs(2));
        proxy.cut();
        wait_event(&mut events, &mut seen_events, |e| {
            matches!(e, ClientEvent::Recovered { .. })
        })
        .await;
        assert_eq!(client.starling_id(), id);
        s.helios.broadcast("feed:3", json!({"i": 0})).await.unwrap();
        let n = tokio::time::timeout(WAIT, sub.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n.data["i"], 0);
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn without_recovery_a_fresh_session_rejoins_rooms_and_reclaims_the_name() {
    bounded(async {
        let s = Server::start(Helios::builder().build()).await;
        let proxy = Proxy::start(s.addr).await;
        let client = client(proxy.url()).await;
        let old_id = client.starling_id();
        let mut events = client.events();
        let mut seen_events = Vec::new();
        wait_event(&mut events, &mut seen_events, |e| {
            *e == ClientEvent::RecoveryUnavailable
        })
        .await;
        let mut sub = client.subscribe("chat:lobby").await.unwrap();
        client.identify("phoenix").await.unwrap();

        proxy.cut();
        let e = wait_event(&mut events, &mut seen_events, |e| {
            matches!(e, ClientEvent::SessionReset { .. })
        })
        .await;
        let ClientEvent::SessionReset {
            previous_id,
            starling_id,
            reason,
        } = e
        else {
            unreachable!()
        };
        assert_eq!(previous_id, old_id);
        assert_ne!(starling_id, old_id);
        assert_eq!(reason, None, "no token: no recovery was asked");
        assert_eq!(client.starling_id(), starling_id);

        // Built-ins run in order: by the time presence answers, the
        // re-subscribe and re-identify sent first have run.
        let p = client.presence("chat:lobby").await.unwrap();
        assert_eq!(p["count"], 1, "{p}");
        assert_eq!(p["members"][0]["starlingId"], starling_id.as_str(), "{p}");
        assert_eq!(p["members"][0]["name"], "phoenix", "{p}");
        s.helios
            .broadcast("chat:lobby", json!("after"))
            .await
            .unwrap();
        let n = tokio::time::timeout(WAIT, sub.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n.data, "after");
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn retry_safe_requests_are_reissued_and_others_fail_with_connection_lost() {
    bounded(async {
        let calls = Arc::new(AtomicUsize::new(0));
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<String>();
        let c = calls.clone();
        let tx = started_tx.clone();
        let helios = recovering(Duration::from_secs(60))
            .method("app:get", move |ctx: Context| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                async move {
                    let _ = tx.send(format!("get-{n}"));
                    if n == 0 {
                        // The first call never answers: the cut comes first.
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, MethodError>(json!({ "call": n, "arg": ctx.payload }))
                }
            })
            .method("app:charge", move |_: Context| {
                let tx = started_tx.clone();
                async move {
                    let _ = tx.send("charge".to_owned());
                    std::future::pending::<()>().await;
                    Ok::<_, MethodError>(Value::Null)
                }
            })
            .build();
        let s = Server::start(helios).await;
        let proxy = Proxy::start(s.addr).await;
        let client = client(proxy.url()).await;
        let mut events = client.events();
        let mut seen_events = Vec::new();
        wait_event(&mut events, &mut seen_events, is_token).await;

        let get = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .request_with("app:get", json!(7), RequestOptions::new().retry_safe())
                    .await
            }
        });
        let charge = tokio::spawn({
            let client = client.clone();
            async move { client.request("app:charge", json!({})).await }
        });
        let mut running = Vec::new();
        for _ in 0..2 {
            running.push(
                tokio::time::timeout(WAIT, started.recv())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        running.sort();
        assert_eq!(running, ["charge", "get-0"]);

        proxy.cut();
        let err = charge.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::ConnectionLost), "{err:?}");
        let v = get.await.unwrap().unwrap();
        assert_eq!(
            v,
            json!({"call": 1, "arg": 7}),
            "answered by the re-issued call"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn reliable_notifications_both_ways() {
    bounded(async {
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
        let client = client(format!("ws://{}/ws", s.addr)).await;

        // Client → server: acknowledged, handled once.
        client
            .notify_reliable("metrics:report", json!({"cpu": 3}), Retry::default())
            .await
            .unwrap();
        client.ping().await.unwrap();
        assert_eq!(handled.load(Ordering::SeqCst), 1);

        // Server → client: the client acknowledges (the server's call
        // returns Ok) and the application sees it once.
        let mut notes = client.notifications();
        let conn = s.helios.connection(&client.starling_id()).unwrap();
        let retry = helios::Retry {
            first_delay: Duration::from_millis(100),
            max_attempts: 5,
            max_delay: Duration::from_millis(400),
        };
        conn.notify_reliable("order:shipped", json!({"id": 7}), retry)
            .await
            .unwrap();
        let n = tokio::time::timeout(WAIT, notes.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n.topic.as_deref(), Some("order:shipped"));
        assert_eq!(n.data, json!({"id": 7}));
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn close_during_reconnect_ends_the_client() {
    bounded(async {
        let s = Server::start(recovering(Duration::from_secs(60)).build()).await;
        let proxy = Proxy::start(s.addr).await;
        let client = Client::builder(proxy.url())
            .reconnect(starling::ReconnectPolicy {
                initial: Duration::from_secs(30),
                max: Duration::from_secs(30),
                ..quick_policy()
            })
            .connect()
            .await
            .unwrap();
        let mut events = client.events();
        let mut seen_events = Vec::new();
        proxy.cut();
        wait_event(&mut events, &mut seen_events, |e| {
            matches!(e, ClientEvent::Reconnecting { .. })
        })
        .await;
        assert!(!client.is_connected());
        client.close().await;
        let e = wait_event(&mut events, &mut seen_events, |e| {
            matches!(e, ClientEvent::Closed(_))
        })
        .await;
        let ClientEvent::Closed(info) = e else {
            unreachable!()
        };
        assert!(info.by_client, "{info:?}");
        assert!(matches!(
            client.request("system:ping", json!({})).await,
            Err(ClientError::Closed)
        ));
    })
    .await;
}
