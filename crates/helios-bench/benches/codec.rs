//! Codec micro-benchmarks: JSON and MessagePack encode/decode of the
//! messages on the hot paths (an echo request, its response, a room
//! delivery).

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use helios_protocol::{Codec, Encoding, Message, Notification, ParseMode, Request, Response};
use serde_json::json;
use std::hint::black_box;

fn messages() -> Vec<(&'static str, Message)> {
    let req = Request::new("system:echo", json!({ "p": "x".repeat(56) }));
    let resp = Response::ok(req.id.clone(), json!({ "p": "x".repeat(56) }));
    let mut note = Notification::new(
        Some("chat:lobby".into()),
        json!({ "user": "ada", "text": "hello, world", "n": 42 }),
    );
    note.offset = Some(1234);
    note.epoch = Some("e1".into());
    vec![
        ("request", req.into()),
        ("response", resp.into()),
        ("delivery", note.into()),
    ]
}

fn codec(c: &mut Criterion) {
    for enc in [Encoding::Json, Encoding::MsgPack] {
        let name = match enc {
            Encoding::Json => "json",
            Encoding::MsgPack => "msgpack",
        };
        for (kind, msg) in messages() {
            let bytes = enc.encode(&msg).expect("encodes");
            let mut g = c.benchmark_group(format!("{name}/{kind}"));
            g.throughput(Throughput::Bytes(bytes.len() as u64));
            g.bench_function("encode", |b| b.iter(|| enc.encode(black_box(&msg))));
            g.bench_function("decode", |b| {
                b.iter(|| enc.decode(black_box(&bytes), ParseMode::Strict))
            });
            g.finish();
        }
    }
    // The error path: a frame that is not a message at all.
    let bad = br#"{"protocol":"helios-starling","version":"1.0.0","timestamp":1,"type":"request","requestId":"nope","method":"a:b"}"#;
    c.bench_function("json/invalid/decode", |b| {
        b.iter(|| Encoding::Json.decode(black_box(bad), ParseMode::Strict))
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
