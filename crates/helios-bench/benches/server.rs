//! The server's own paths, in process over loopback: a request through
//! decode -> route -> handle -> encode, and a room publication fanned out to
//! every subscriber.
//!
//! End to end on purpose: the route table and the room registry are private
//! to the `helios` crate, so these go through its public API and a real
//! socket. They catch a regression in either and in everything around them.
//! `cargo bench -p helios-bench --bench server`.
#![allow(missing_docs)] // criterion_group! makes an undocumented pub fn

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{SinkExt, StreamExt};
use helios::{Context, Helios, MethodError, Next, RoomRule};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Requests in flight per connection while a batch is measured.
const DEPTH: u64 = 8;
/// Subscribers of the fanned-out room.
const SUBSCRIBERS: usize = 100;

/// Passes every call on; stands for an authorization check.
async fn pass(ctx: Context, next: Next) -> Result<Value, MethodError> {
    next.run(ctx).await
}

/// A server with 200 methods besides the built-ins, middleware on a glob
/// pattern, and an open room; the address it listens on.
async fn start() -> String {
    let mut builder = Helios::builder()
        .middleware("svc:**", pass)
        .room("bench:*", RoomRule::new());
    for i in 0..200 {
        builder = builder.method(
            &format!("svc:method{i}"),
            |ctx: Context<Value>| async move { Ok::<_, MethodError>(ctx.payload) },
        );
    }
    let helios = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(helios.serve(listener, std::future::pending()));
    format!("ws://{addr}/ws")
}

async fn connect(url: &str) -> Ws {
    let uri = url.parse().expect("url");
    let (mut ws, _) = ClientBuilder::from_uri(uri)
        .connect()
        .await
        .expect("connect");
    next_text(&mut ws).await; // the welcome
    ws
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("open")
            .expect("no error");
        if let Some(text) = msg.as_text() {
            return text.to_owned();
        }
    }
}

fn request(id: u64, method: &str, payload: &Value) -> Message {
    let v = json!({
        "protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
        "type": "request", "requestId": format!("00000000-0000-4000-8000-{id:012x}"), "method": method,
        "payload": payload,
    });
    Message::text(v.to_string())
}

/// `iters` requests, `DEPTH` in flight, answers checked to be successes.
async fn calls(ws: &mut Ws, method: &str, iters: u64) -> Duration {
    let payload = json!({ "p": "x".repeat(48) });
    let started = Instant::now();
    let (mut sent, mut answered) = (0, 0);
    while answered < iters {
        while sent < iters && sent - answered < DEPTH {
            ws.feed(request(sent, method, &payload))
                .await
                .expect("send");
            sent += 1;
        }
        ws.flush().await.expect("flush");
        let text = next_text(ws).await;
        assert!(text.contains(r#""success":true"#), "{text}");
        answered += 1;
    }
    started.elapsed()
}

fn rpc(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let url = rt.block_on(start());
    let mut ws = rt.block_on(connect(&url));
    let mut group = c.benchmark_group("rpc");
    group.throughput(Throughput::Elements(1));
    for (name, method) in [
        ("builtin_echo", "system:echo"),
        ("routed_with_middleware", "svc:method150"),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| rt.block_on(calls(&mut ws, method, iters)))
        });
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let url = rt.block_on(start());
    let (mut publisher, mut subscribers) = rt.block_on(async {
        let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
        for i in 0..SUBSCRIBERS {
            let mut ws = connect(&url).await;
            ws.send(request(
                i as u64,
                "helios:subscribe",
                &json!({ "topic": "bench:room" }),
            ))
            .await
            .expect("send");
            let text = next_text(&mut ws).await;
            assert!(text.contains(r#""success":true"#), "{text}");
            subscribers.push(ws);
        }
        (connect(&url).await, subscribers)
    });
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    group.bench_function("publish_to_100_subscribers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let data = json!({ "topic": "bench:room", "data": { "p": "x".repeat(48) } });
                let started = Instant::now();
                for i in 0..iters {
                    publisher
                        .send(request(i, "helios:publish", &data))
                        .await
                        .expect("send");
                    // Every subscriber has it before the next one goes out.
                    for ws in &mut subscribers {
                        let text = next_text(ws).await;
                        assert!(text.contains("bench:room"), "{text}");
                    }
                    let answer = next_text(&mut publisher).await;
                    assert!(answer.contains(r#""success":true"#), "{answer}");
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, rpc, fanout);
criterion_main!(benches);
