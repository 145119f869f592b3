//! Rooms, presence, slow consumers and server-side room operations, end to
//! end over real sockets, with hand-written JSON and with `starling`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Raw, Server};
use helios::{Access, Context, Helios, MethodError, RoomEventKind, RoomRule};
use serde_json::{Value, json};

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// The next room delivery on `topic`, skipping other frames.
async fn delivery(c: &mut Raw, topic: &str) -> Value {
    loop {
        let v = c.next_json().await;
        if v["type"] == "notification" && v["notification"]["topic"] == topic {
            return v;
        }
    }
}

#[tokio::test]
async fn subscribe_publish_unsubscribe_with_raw_json() {
    let s = Server::start(Helios::builder().build()).await;
    let mut a = Raw::connect(&s.url()).await;
    let mut b = Raw::connect(&s.url()).await;
    let v = a
        .call("helios:subscribe", json!({"topic": "chat:lobby"}))
        .await;
    assert_eq!(v["data"]["topic"], "chat:lobby", "{v}");
    assert_eq!(v["data"]["subscribed"], true, "{v}");
    assert_eq!(v["data"]["offset"], 0, "the room's position: nothing yet");
    assert!(v["data"]["epoch"].is_string(), "{v}");
    // Subscribing twice is harmless.
    assert_eq!(
        a.call("helios:subscribe", json!({"topic": "chat:lobby"}))
            .await["success"],
        true
    );

    let v = b
        .call(
            "helios:publish",
            json!({"topic": "chat:lobby", "data": {"text": "hi"}}),
        )
        .await;
    assert_eq!(v["data"]["topic"], "chat:lobby");
    assert_eq!(v["data"]["delivered"], 1, "{v}");
    let offset = v["data"]["offset"].as_u64().expect("offset");

    let d = delivery(&mut a, "chat:lobby").await;
    assert_eq!(d["notification"]["data"]["text"], "hi");
    assert_eq!(d["notification"]["offset"], offset);
    assert!(d["notification"]["epoch"].is_string());

    let v = a
        .call("helios:unsubscribe", json!({"topic": "chat:lobby"}))
        .await;
    assert_eq!(
        v["data"],
        json!({"topic": "chat:lobby", "subscribed": false})
    );
    let v = b
        .call("helios:publish", json!({"topic": "chat:lobby", "data": 2}))
        .await;
    assert_eq!(v["data"]["delivered"], 0);

    for bad in [
        json!({}),
        json!({"topic": ""}),
        json!({"topic": "has space"}),
        json!({"topic": "a:*"}),
        json!({"topic": 5}),
    ] {
        let v = a.call("helios:subscribe", bad.clone()).await;
        assert_eq!(v["error"]["code"], "INVALID_PAYLOAD", "{bad}: {v}");
    }
}

#[tokio::test]
async fn fifty_subscribers_over_raw_and_starling_connections_get_one_publication() {
    let s = Server::start(Helios::builder().build()).await;
    let mut raws = Vec::new();
    for _ in 0..25 {
        let mut c = Raw::connect(&s.url()).await;
        assert_eq!(
            c.call("helios:subscribe", json!({"topic": "news:all"}))
                .await["success"],
            true
        );
        raws.push(c);
    }
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for _ in 0..25 {
        let c = starling::Client::connect(s.url()).await.expect("connect");
        subs.push(c.subscribe("news:all").await.expect("subscribe"));
        clients.push(c);
    }
    assert_eq!(s.helios.room_size("news:all"), 50);
    let publisher = starling::Client::connect(s.url()).await.expect("connect");
    let out = publisher
        .publish("news:all", json!({"n": 1}))
        .await
        .expect("publish");
    assert_eq!(out.delivered, 50);
    for c in &mut raws {
        assert_eq!(
            delivery(c, "news:all").await["notification"]["data"]["n"],
            1
        );
    }
    for sub in &mut subs {
        let n = tokio::time::timeout(common::WAIT, sub.recv())
            .await
            .expect("in time")
            .expect("delivery");
        assert_eq!(n.data["n"], 1);
        assert_eq!(n.topic.as_deref(), Some("news:all"));
    }
}

#[tokio::test]
async fn a_hundred_publications_arrive_complete_and_in_order() {
    let s = Server::start(Helios::builder().build()).await;
    let mut raw = Raw::connect(&s.url()).await;
    raw.call("helios:subscribe", json!({"topic": "seq:1"}))
        .await;
    let client = starling::Client::connect(s.url()).await.expect("connect");
    let mut sub = client.subscribe("seq:1").await.expect("subscribe");
    let publisher = starling::Client::connect(s.url()).await.expect("connect");
    // Pipelined: all 100 in flight at once, each publisher call awaited in order of sending.
    let sends: Vec<_> = (0..100)
        .map(|i| publisher.publish("seq:1", json!(i)))
        .collect();
    for r in futures_util::future::join_all(sends).await {
        r.expect("published");
    }
    let mut last_offset = 0;
    for i in 0..100 {
        let d = delivery(&mut raw, "seq:1").await;
        let off = d["notification"]["offset"].as_u64().expect("offset");
        assert!(off > last_offset, "offsets increase");
        last_offset = off;
        let n = tokio::time::timeout(common::WAIT, sub.recv())
            .await
            .expect("in time")
            .expect("delivery");
        assert_eq!(n.offset, Some(off), "both subscribers see the same offsets");
        assert_eq!(d["notification"]["data"], n.data);
        assert_eq!(
            d["notification"]["data"],
            json!(i),
            "pipelined publications keep their order"
        );
    }
    // Order per publisher: a sequential publisher's messages come in its order.
    for i in 0..100 {
        publisher
            .publish("seq:1", json!({"seq": i}))
            .await
            .expect("publish");
    }
    for i in 0..100 {
        assert_eq!(
            delivery(&mut raw, "seq:1").await["notification"]["data"]["seq"],
            i
        );
    }
}

#[tokio::test]
async fn room_rules_validators_and_captures() {
    let helios = Helios::builder()
        .room("news:*", RoomRule::new().publish(Access::Nobody))
        .room(
            "team:*",
            RoomRule::new().publish(Access::Members).presence(false),
        )
        .room("vip:*", RoomRule::new().max_subscribers(2))
        .room("auth:*", RoomRule::new().subscribe(Access::Authenticated))
        .room(
            "user:*",
            RoomRule::new().validator(|req| async move {
                req.connection.get("uid") == req.captures.first().map(|c| json!(c))
            }),
        )
        .method("app:login", |ctx: Context<String>| async move {
            ctx.connection().set("uid", &ctx.payload);
            ctx.connection().set_user_id(ctx.payload.clone());
            Ok::<_, MethodError>(true)
        })
        .build();
    let s = Server::start(helios.clone()).await;
    let mut c = Raw::connect(&s.url()).await;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("ok").to_owned();

    assert_eq!(
        code(
            &c.call("helios:subscribe", json!({"topic": "news:eu"}))
                .await
        ),
        "ok"
    );
    assert_eq!(
        code(
            &c.call("helios:publish", json!({"topic": "news:eu", "data": 1}))
                .await
        ),
        "FORBIDDEN"
    );
    helios
        .broadcast("news:eu", json!("from server"))
        .await
        .expect("server may");
    assert_eq!(
        delivery(&mut c, "news:eu").await["notification"]["data"],
        "from server"
    );

    assert_eq!(
        code(
            &c.call("helios:publish", json!({"topic": "team:x", "data": 1}))
                .await
        ),
        "FORBIDDEN"
    );
    c.call("helios:subscribe", json!({"topic": "team:x"})).await;
    assert_eq!(
        code(
            &c.call("helios:publish", json!({"topic": "team:x", "data": 1}))
                .await
        ),
        "ok"
    );
    assert_eq!(
        code(&c.call("helios:presence", json!({"topic": "team:x"})).await),
        "FORBIDDEN"
    );

    assert_eq!(
        code(
            &c.call("helios:subscribe", json!({"topic": "user:ada"}))
                .await
        ),
        "FORBIDDEN"
    );
    assert_eq!(
        code(&c.call("helios:subscribe", json!({"topic": "auth:x"})).await),
        "UNAUTHORIZED"
    );
    c.call("app:login", json!("ada")).await;
    assert_eq!(
        code(
            &c.call("helios:subscribe", json!({"topic": "user:ada"}))
                .await
        ),
        "ok"
    );
    assert_eq!(
        code(
            &c.call("helios:subscribe", json!({"topic": "user:bob"}))
                .await
        ),
        "FORBIDDEN"
    );
    assert_eq!(
        code(&c.call("helios:subscribe", json!({"topic": "auth:x"})).await),
        "ok"
    );

    let mut d = Raw::connect(&s.url()).await;
    let mut e = Raw::connect(&s.url()).await;
    assert_eq!(
        code(&c.call("helios:subscribe", json!({"topic": "vip:1"})).await),
        "ok"
    );
    assert_eq!(
        code(&d.call("helios:subscribe", json!({"topic": "vip:1"})).await),
        "ok"
    );
    let v = e.call("helios:subscribe", json!({"topic": "vip:1"})).await;
    assert_eq!(code(&v), "FORBIDDEN");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("full")
    );
}

#[tokio::test]
async fn presence_names_and_leaving_every_room_at_close() {
    let s = Server::start(Helios::builder().build()).await;
    let mut a = Raw::connect(&s.url()).await;
    let mut b = Raw::connect(&s.url()).await;
    a.call("helios:identify", json!({"name": "alice"})).await;
    for t in ["room:1", "room:2", "room:3"] {
        a.call("helios:subscribe", json!({"topic": t})).await;
    }
    b.call("helios:subscribe", json!({"topic": "room:1"})).await;
    let v = b.call("helios:presence", json!({"topic": "room:1"})).await;
    assert_eq!(v["data"]["count"], 2, "{v}");
    let members = v["data"]["members"].as_array().expect("members");
    let alice = members
        .iter()
        .find(|m| m["name"] == "alice")
        .expect("alice listed");
    assert_eq!(alice["starlingId"], a.welcome["starlingId"]);
    assert_eq!(s.helios.room_count(), 3);

    drop(a);
    eventually("alice left all rooms", || {
        s.helios.room_size("room:1") == 1 && s.helios.room_count() == 1
    })
    .await;
    let v = b.call("helios:presence", json!({"topic": "room:1"})).await;
    assert_eq!(v["data"]["count"], 1);
    assert_eq!(
        v["data"]["members"][0]["starlingId"],
        b.welcome["starlingId"]
    );
}

#[tokio::test]
async fn server_side_subscribe_copy_and_room_events() {
    let events = Arc::new(parking_lot::Mutex::new(
        Vec::<(RoomEventKind, String)>::new(),
    ));
    let ev = events.clone();
    let helios = Helios::builder()
        .on_room_event(move |e| {
            let ev = ev.clone();
            async move { ev.lock().push((e.kind, e.topic)) }
        })
        .build();
    let s = Server::start(helios.clone()).await;
    let mut a = Raw::connect(&s.url()).await;
    let conn = helios
        .connection(a.welcome["starlingId"].as_str().expect("id"))
        .expect("conn");
    conn.subscribe("ops:alerts")
        .await
        .expect("server-side subscribe");
    assert_eq!(conn.rooms(), vec!["ops:alerts".to_string()]);
    helios
        .broadcast("ops:alerts", json!("disk full"))
        .await
        .expect("broadcast");
    assert_eq!(
        delivery(&mut a, "ops:alerts").await["notification"]["data"],
        "disk full"
    );

    let mut b = Raw::connect(&s.url()).await;
    b.call("helios:subscribe", json!({"topic": "ops:alerts"}))
        .await;
    assert_eq!(
        helios.copy_subscriptions("ops:alerts", "ops:pager").await,
        2
    );
    assert_eq!(helios.room_size("ops:pager"), 2);
    helios
        .broadcast("ops:pager", json!("wake up"))
        .await
        .expect("broadcast");
    assert_eq!(
        delivery(&mut a, "ops:pager").await["notification"]["data"],
        "wake up"
    );
    assert_eq!(
        delivery(&mut b, "ops:pager").await["notification"]["data"],
        "wake up"
    );

    conn.unsubscribe("ops:pager").await;
    eventually("events recorded", || events.lock().len() == 5).await;
    let got = events.lock().clone();
    assert_eq!(
        got[0],
        (RoomEventKind::Subscribed, "ops:alerts".to_string())
    );
    assert_eq!(
        got[4],
        (RoomEventKind::Unsubscribed, "ops:pager".to_string())
    );
}

/// A subscriber that stops reading for a while, with replies and other
/// frames queued between its deliveries, still gets every delivery once,
/// in order, and every reply. (Any way of writing deliveries that skips the
/// connection's queue, as tried on 2026-11-24, must keep this.)
#[tokio::test]
async fn deliveries_keep_their_order_while_the_socket_fills_and_drains() {
    fill_and_drain().await;
}

/// The same with the server's tasks and the cork's flushers on two worker
/// threads, so the flusher and the connection's writer run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_keep_their_order_across_worker_threads() {
    for _ in 0..3 {
        fill_and_drain().await;
    }
}

async fn fill_and_drain() {
    let helios = Helios::builder().build();
    let s = Server::start(helios.clone()).await;
    let mut sub = Raw::connect(&s.url()).await;
    sub.call("helios:subscribe", json!({"topic": "fill:1"}))
        .await;
    let conn = helios
        .connection(sub.welcome["starlingId"].as_str().expect("id"))
        .expect("connected");

    // A frame queued just before (its writer has not run yet) goes first.
    for i in 0..20 {
        conn.notify("queued:first", json!(i)).await.expect("queued");
        helios
            .broadcast("fill:1", json!({"after": i}))
            .await
            .expect("broadcast");
    }
    for i in 0..20 {
        let v = sub.next_json().await;
        assert_eq!(v["notification"]["topic"], "queued:first", "{v}");
        assert_eq!(v["notification"]["data"], i);
        let v = sub.next_json().await;
        assert_eq!(v["notification"]["data"]["after"], i, "{v}");
    }

    let pad = "p".repeat(3000);
    let (n, every) = (600u64, 50u64);
    for i in 0..n {
        if i % every == 0 {
            // A reply queued between deliveries, not read yet.
            sub.send_json(&common::request(
                &format!("echo-{i}"),
                "system:echo",
                json!(i),
            ))
            .await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        helios
            .broadcast("fill:1", json!({"i": i, "pad": pad}))
            .await
            .expect("broadcast");
    }
    // About 1.8 MB unread: past the kernel's buffers, under the byte cap.
    let (mut next, mut replies) = (0u64, 0u64);
    while next < n || replies < n / every {
        let v = sub.next_json().await;
        match v["type"].as_str() {
            Some("notification") => {
                assert_eq!(
                    v["notification"]["data"]["i"], next,
                    "in order, none missing"
                );
                next += 1;
            }
            Some("response") => {
                assert_eq!(v["requestId"], format!("echo-{}", replies * every));
                replies += 1;
            }
            other => panic!("unexpected frame {other:?}: {v}"),
        }
    }
    // One frame larger than the kernel's buffers (under the 4 MiB cap), the
    // last one sent: the writer sends its rest as the client reads.
    let big = "b".repeat(3 * 1024 * 1024);
    helios
        .broadcast("fill:1", json!({"big": big}))
        .await
        .expect("broadcast");
    let v = sub.next_json().await;
    assert_eq!(
        v["notification"]["data"]["big"].as_str().map(str::len),
        Some(big.len())
    );
    assert!(conn.is_open());
}

/// A delivery larger than what a fresh socket takes at once: the cork's
/// flusher writes what fits, and the connection's writer sends the rest as
/// the client reads.
#[tokio::test]
async fn a_large_delivery_to_a_fresh_socket_arrives_whole() {
    let helios = Helios::builder().build();
    let s = Server::start(helios.clone()).await;
    let mut sub = Raw::connect(&s.url()).await;
    sub.call("helios:subscribe", json!({"topic": "large:1"}))
        .await;
    let big = "b".repeat(3 * 1024 * 1024);
    helios
        .broadcast("large:1", json!({"big": big}))
        .await
        .expect("broadcast");
    // Not read until the flusher has run and written what it could.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let v = delivery(&mut sub, "large:1").await;
    assert_eq!(
        v["notification"]["data"]["big"].as_str().map(str::len),
        Some(big.len())
    );
}

/// Serves `helios` on a fresh loopback port from the current runtime.
async fn serve_here(helios: Helios) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { helios.serve(listener, std::future::pending()).await });
    format!("ws://{addr}/ws")
}

async fn publish(publisher: &mut Raw, topic: &str, data: Value) -> Value {
    publisher
        .call("helios:publish", json!({"topic": topic, "data": data}))
        .await
}

/// The cork's flushers start on the runtime of the first connection. When
/// that runtime ends, connections served by another one still get their
/// deliveries (their writers take over), and a new connection restarts the
/// flushers for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_outlive_the_runtime_that_ran_the_flushers() {
    let helios = Helios::builder().build();
    let (other, url_other) = {
        let helios = helios.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let url = rt.block_on(serve_here(helios));
            (rt, url)
        })
        .join()
        .expect("runtime thread")
    };
    let url = serve_here(helios.clone()).await;
    let first = Raw::connect(&url_other).await;
    let mut sub = Raw::connect(&url).await;
    sub.call("helios:subscribe", json!({"topic": "rt:1"})).await;
    let mut publisher = Raw::connect(&url).await;
    publish(&mut publisher, "rt:1", json!(1)).await;
    assert_eq!(delivery(&mut sub, "rt:1").await["notification"]["data"], 1);

    drop(first);
    std::thread::spawn(move || drop(other))
        .join()
        .expect("runtime dropped");
    for i in 2..5 {
        let v = publish(&mut publisher, "rt:1", json!(i)).await;
        assert_eq!(v["data"]["delivered"], 1, "{v}");
        assert_eq!(delivery(&mut sub, "rt:1").await["notification"]["data"], i);
    }

    let mut late = Raw::connect(&url).await;
    late.call("helios:subscribe", json!({"topic": "rt:1"}))
        .await;
    for i in 5..8 {
        publish(&mut publisher, "rt:1", json!(i)).await;
        assert_eq!(delivery(&mut sub, "rt:1").await["notification"]["data"], i);
        assert_eq!(delivery(&mut late, "rt:1").await["notification"]["data"], i);
    }
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_closed_without_stalling_anyone() {
    let mut cfg = helios::Config::default();
    cfg.outbound_queue_bytes = 2 * 1024 * 1024;
    let helios = Helios::builder().config(cfg).build();
    let s = Server::start(helios.clone()).await;

    // The stalled subscriber: subscribes, then never reads its socket again.
    let mut stalled = Raw::connect(&s.url()).await;
    stalled
        .call("helios:subscribe", json!({"topic": "firehose"}))
        .await;
    let stalled_id = stalled.welcome["starlingId"]
        .as_str()
        .expect("id")
        .to_owned();
    // A healthy subscriber that reads everything.
    let healthy = starling::Client::builder(s.url())
        .notification_capacity(4096)
        .room_capacity(4096)
        .connect()
        .await
        .expect("connect");
    let mut sub = healthy.subscribe("firehose").await.expect("subscribe");
    let reader = tokio::spawn(async move {
        let mut n = 0u64;
        while n < 400 {
            match tokio::time::timeout(Duration::from_secs(10), sub.recv()).await {
                Ok(Ok(d)) => {
                    assert_eq!(d.data["i"], n, "in order, none missing");
                    n += 1;
                }
                other => panic!("healthy subscriber stopped at {n}: {other:?}"),
            }
        }
        n
    });

    let chunk = "x".repeat(64 * 1024);
    for i in 0..400u64 {
        // The publisher is never blocked by the stalled subscriber.
        tokio::time::timeout(
            Duration::from_secs(5),
            helios.broadcast("firehose", json!({"i": i, "pad": chunk})),
        )
        .await
        .expect("publisher not stalled")
        .expect("broadcast");
        // A steady 64 KiB every millisecond: a reading client keeps up, a
        // stalled one fills its kernel buffers and then the byte cap.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .expect("in time")
            .expect("join"),
        400
    );
    eventually("stalled subscriber dropped", || {
        helios.connection(&stalled_id).is_none()
    })
    .await;
    assert!(
        !helios
            .presence("firehose")
            .iter()
            .any(|m| m["starlingId"] == stalled_id.as_str()),
        "the stalled subscriber left the room"
    );
    // What the stalled client sees when it finally reads: its deliveries, then close 4008.
    assert_eq!(stalled.closed().await, Some(4008));
}
