//! Streams end to end: uploads and downloads through the Rust client
//! (JSON and MessagePack), and the wire rules with hand-written frames:
//! the credit window, refused and aborted streams, streams for no request,
//! malformed frames.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Raw, Server, notification, request, uuid};
use helios::{Context, Helios, MethodError, MethodOptions, StreamError, StreamInfo};
use helios_protocol::{Encoding, MAX_CHUNK_BYTES, STREAM_WINDOW};
use serde_json::{Value, json};

/// Bytes that differ at every position, so a lost, repeated or reordered
/// chunk changes the checksum.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().enumerate().fold(0u64, |acc, (i, &b)| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b) ^ (i as u64))
    })
}

fn server() -> Helios {
    server_builder().build()
}

fn server_builder() -> helios::Builder {
    Helios::builder()
        .method("files:upload", |ctx: Context| async move {
            let file = ctx.stream().await?;
            let (name, size) = (file.name().map(str::to_owned), file.size());
            let bytes = file.read_to_end(8 << 20).await?;
            Ok::<_, MethodError>(json!({
                "name": name, "size": size, "bytes": bytes.len(), "sum": checksum(&bytes)
            }))
        })
        .method("files:download", |ctx: Context| async move {
            let n = ctx.payload["bytes"].as_u64().unwrap_or(0);
            let data = pattern(usize::try_from(n).unwrap_or(0));
            let mut out = ctx.open_stream(StreamInfo::file("data.bin", n)).await?;
            out.write(&data).await?;
            out.end().await?;
            Ok::<_, MethodError>(json!({ "sum": checksum(&data) }))
        })
        .method("files:late", |ctx: Context| async move {
            // Takes the stream, reads nothing for a while.
            let mut file = ctx.stream().await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut n = 0;
            while let Some(chunk) = file.next().await? {
                n += chunk.len();
            }
            Ok::<_, MethodError>(json!(n))
        })
        .method("files:refuse", |ctx: Context| async move {
            let mut file = ctx.stream().await?;
            file.stop("no thanks").await;
            Ok::<_, MethodError>(json!(true))
        })
        .method("files:none", |_ctx: Context| async move {
            Ok::<_, MethodError>(json!("no stream"))
        })
        .method_with(
            "files:ordered",
            |ctx: Context| async move {
                // Runs in the reader: no stream can arrive; fails at once.
                ctx.stream().await?;
                Ok::<_, MethodError>(json!("unreachable"))
            },
            MethodOptions::new().ordered(),
        )
}

async fn client(s: &Server, encoding: Encoding) -> starling::Client {
    starling::Client::builder(s.url())
        .encoding(encoding)
        .connect()
        .await
        .expect("client")
}

#[tokio::test]
async fn a_file_goes_up_whole_and_in_order_in_json_and_msgpack() {
    let s = Server::start(server()).await;
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        let c = client(&s, encoding).await;
        let body = pattern(MAX_CHUNK_BYTES * 25 + 7);
        let (call, mut upload) = c
            .request_streaming(
                "files:upload",
                json!({}),
                StreamInfo::file("big.bin", body.len() as u64),
            )
            .await
            .expect("open");
        // Writes of odd sizes: the stream cuts them into chunks.
        for piece in body.chunks(100_003) {
            upload.write(piece).await.expect("write");
        }
        upload.end().await.expect("end");
        let answer = call.await.expect("answer");
        assert_eq!(answer["name"], "big.bin", "{encoding:?}");
        assert_eq!(answer["size"], body.len(), "{encoding:?}");
        assert_eq!(answer["bytes"], body.len(), "{encoding:?}");
        assert_eq!(answer["sum"], checksum(&body), "{encoding:?}");
    }
}

#[tokio::test]
async fn a_file_comes_down_whole_and_in_order() {
    let s = Server::start(server()).await;
    let c = client(&s, Encoding::Json).await;
    let n = MAX_CHUNK_BYTES * 40 + 1;
    let call = c
        .send_request("files:download", json!({ "bytes": n }), Default::default())
        .await
        .expect("send");
    let file = c.incoming_stream(call.id()).await.expect("stream");
    assert_eq!(file.name(), Some("data.bin"));
    assert_eq!(file.size(), Some(n as u64));
    let bytes = file.read_to_end(8 << 20).await.expect("read");
    assert_eq!(bytes, pattern(n));
    let answer = call.await.expect("answer");
    assert_eq!(answer["sum"], checksum(&bytes));
}

#[tokio::test]
async fn asking_for_a_stream_the_answer_came_without_fails_at_once() {
    let s = Server::start(server()).await;
    let c = client(&s, Encoding::Json).await;
    let call = c
        .send_request("files:none", json!({}), Default::default())
        .await
        .expect("send");
    let id = call.id().clone();
    assert_eq!(call.await.expect("answer"), "no stream");
    let got = tokio::time::timeout(Duration::from_secs(2), c.incoming_stream(&id))
        .await
        .expect("does not hang");
    assert_eq!(got.err(), Some(StreamError::NoStream));

    // An ordered method cannot get a stream: it says so at once instead of
    // waiting for its timeout.
    let started = std::time::Instant::now();
    let err = c
        .request("files:ordered", json!({}))
        .await
        .expect_err("no stream");
    let starling::ClientError::Server(body) = err else {
        panic!("a server error: {err:?}")
    };
    assert_eq!(body.code.as_str(), "STREAM_ERROR");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not the 5 s timeout"
    );
}

#[tokio::test]
async fn a_refused_upload_stops_the_writer_and_an_aborted_one_fails_the_handler() {
    let s = Server::start(server()).await;
    let c = client(&s, Encoding::Json).await;
    let (call, mut upload) = c
        .request_streaming("files:refuse", json!({}), StreamInfo::new())
        .await
        .expect("open");
    let chunk = pattern(MAX_CHUNK_BYTES);
    let mut refused = None;
    // The window lets at most STREAM_WINDOW chunks go before the refusal.
    for _ in 0..(STREAM_WINDOW * 4) {
        if let Err(e) = upload.write(&chunk).await {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused, Some(StreamError::Stopped("no thanks".into())));
    assert_eq!(call.await.expect("answer"), true);

    let (call, mut upload) = c
        .request_streaming("files:upload", json!({}), StreamInfo::new())
        .await
        .expect("open");
    upload.write(b"half a file").await.expect("write");
    upload.abort("changed my mind").await;
    let err = call.await.expect_err("the handler fails");
    let starling::ClientError::Server(body) = err else {
        panic!("a server error: {err:?}")
    };
    assert_eq!(body.code.as_str(), "STREAM_ERROR");
    assert!(body.message.contains("changed my mind"), "{}", body.message);
}

/// A stream frame as the raw client sends it.
fn frame(topic: &str, data: Value) -> Value {
    notification(topic, data)
}

/// The next frame within `within`, if any.
async fn next_within(c: &mut Raw, within: Duration) -> Option<Value> {
    tokio::time::timeout(within, c.next_json()).await.ok()
}

#[tokio::test]
async fn the_server_sends_no_more_than_the_window_without_credit() {
    let s = Server::start(server()).await;
    let mut c = Raw::connect(&s.url()).await;
    let id = uuid();
    let total = STREAM_WINDOW as usize * 3;
    c.send_json(&request(
        &id,
        "files:download",
        json!({ "bytes": total * MAX_CHUNK_BYTES }),
    ))
    .await;
    let open = c.next_json().await;
    assert_eq!(open["notification"]["topic"], "stream:open", "{open}");
    assert_eq!(open["notification"]["data"]["requestId"], id.as_str());
    let stream_id = open["notification"]["data"]["streamId"].clone();
    let mut data = Vec::new();
    let read = |v: &Value, data: &mut Vec<u8>| {
        assert_eq!(v["notification"]["topic"], "stream:chunk", "{v}");
        let text = v["notification"]["data"]["data"].as_str().expect("data");
        data.extend(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64"),
        );
    };
    let mut got = 0;
    while let Some(v) = next_within(&mut c, Duration::from_millis(400)).await {
        read(&v, &mut data);
        got += 1;
    }
    assert_eq!(got, STREAM_WINDOW as usize, "a full window, then a wait");
    c.send_json(&frame(
        "stream:credit",
        json!({ "streamId": stream_id, "chunks": 4 }),
    ))
    .await;
    for _ in 0..4 {
        let v = c.next_json().await;
        read(&v, &mut data);
    }
    assert!(
        next_within(&mut c, Duration::from_millis(300))
            .await
            .is_none(),
        "4 credits, 4 chunks"
    );
    c.send_json(&frame(
        "stream:credit",
        json!({ "streamId": stream_id, "chunks": 1000 }),
    ))
    .await;
    loop {
        let v = c.next_json().await;
        if v["notification"]["topic"] == "stream:end" {
            break;
        }
        read(&v, &mut data);
    }
    assert_eq!(data, pattern(total * MAX_CHUNK_BYTES));
    let answer = c.response_for(&id).await;
    assert_eq!(answer["success"], true, "{answer}");
}

#[tokio::test]
async fn chunks_past_the_window_are_refused() {
    let s = Server::start(server()).await;
    let mut c = Raw::connect(&s.url()).await;
    let id = uuid();
    c.send_json(&request(&id, "files:late", json!({}))).await;
    c.send_json(&frame(
        "stream:open",
        json!({ "streamId": "up", "requestId": id }),
    ))
    .await;
    for seq in 0..=STREAM_WINDOW {
        c.send_json(&frame(
            "stream:chunk",
            json!({ "streamId": "up", "seq": seq, "data": "AAAA" }),
        ))
        .await;
    }
    let stop = c.next_json().await;
    assert_eq!(stop["notification"]["topic"], "stream:stop", "{stop}");
    let reason = stop["notification"]["data"]["reason"]
        .as_str()
        .expect("reason");
    assert!(reason.contains("flow control"), "{reason}");
    let answer = c.response_for(&id).await;
    assert_eq!(answer["error"]["code"], "STREAM_ERROR", "{answer}");
}

#[tokio::test]
async fn bad_stream_frames_get_clear_answers() {
    let s = Server::start(server()).await;
    let mut c = Raw::connect(&s.url()).await;
    // A stream for no request in flight.
    c.send_json(&frame(
        "stream:open",
        json!({ "streamId": "s1", "requestId": uuid() }),
    ))
    .await;
    let v = c.next_json().await;
    assert_eq!(v["notification"]["topic"], "stream:stop", "{v}");
    assert_eq!(v["notification"]["data"]["streamId"], "s1");
    assert!(
        v["notification"]["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no request")),
        "{v}"
    );
    // A chunk of a stream never opened.
    c.send_json(&frame(
        "stream:chunk",
        json!({ "streamId": "s2", "seq": 0, "data": "" }),
    ))
    .await;
    let v = c.next_json().await;
    assert_eq!(v["notification"]["topic"], "stream:stop", "{v}");
    // Malformed frames: no seq, not base64, an unknown stream frame.
    for (data, topic, says) in [
        (
            json!({ "streamId": "s3", "data": "" }),
            "stream:chunk",
            "seq",
        ),
        (
            json!({ "streamId": "s3", "seq": 0, "data": "%%%" }),
            "stream:chunk",
            "base64",
        ),
        (json!({ "streamId": "s3" }), "stream:rewind", "unknown"),
    ] {
        c.send_json(&frame(topic, data)).await;
        let v = c.next_json().await;
        assert_eq!(v["notification"]["topic"], "helios:error", "{v}");
        assert_eq!(
            v["notification"]["data"]["code"], "INVALID_MESSAGE_FORMAT",
            "{v}"
        );
        let message = v["notification"]["data"]["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{message}");
    }
    // The connection is still fine.
    assert_eq!(c.call("system:ping", json!({})).await["success"], true);
}

/// Stream frames are not rate limited (a refused chunk would be a hole in
/// the file): an upload of many chunks passes a tight message rate whole.
#[tokio::test]
async fn uploads_pass_the_message_rate_limit_whole() {
    let mut config = helios::Config::default();
    config.rate_limit = Some(helios::RateLimit::new(2, 2, 1));
    let helios = server_builder().config(config).build();
    let s = Server::start(helios).await;
    let c = client(&s, Encoding::Json).await;
    let body = pattern(MAX_CHUNK_BYTES * 40);
    let (call, mut upload) = c
        .request_streaming("files:upload", json!({}), StreamInfo::new())
        .await
        .expect("open");
    upload.write(&body).await.expect("write");
    upload.end().await.expect("end");
    let answer = call.await.expect("answer");
    assert_eq!(answer["sum"], checksum(&body));
}

/// A malformed chunk in the middle ends the stream for both sides instead
/// of leaving a hole.
#[tokio::test]
async fn a_malformed_chunk_ends_the_stream() {
    let s = Server::start(server()).await;
    let mut c = Raw::connect(&s.url()).await;
    let id = uuid();
    c.send_json(&request(&id, "files:upload", json!({}))).await;
    c.send_json(&frame(
        "stream:open",
        json!({ "streamId": "up", "requestId": id }),
    ))
    .await;
    c.send_json(&frame(
        "stream:chunk",
        json!({ "streamId": "up", "seq": 0, "data": "AAAA" }),
    ))
    .await;
    c.send_json(&frame(
        "stream:chunk",
        json!({ "streamId": "up", "seq": 1, "data": "%%%" }),
    ))
    .await;
    let mut topics = Vec::new();
    let answer = loop {
        let v = c.next_json().await;
        if v["type"] == "response" {
            break v;
        }
        topics.push(v["notification"]["topic"].as_str().unwrap_or("").to_owned());
    };
    assert!(topics.contains(&"stream:stop".to_owned()), "{topics:?}");
    assert!(topics.contains(&"helios:error".to_owned()), "{topics:?}");
    assert_eq!(answer["error"]["code"], "STREAM_ERROR", "{answer}");
}
