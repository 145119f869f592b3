//! End to end over real sockets with hand-written frames: the built-ins and
//! every kind of bad input the spec implies.

mod common;

use common::{Raw, Server, WAIT, notification, request, uuid};
use futures_util::{SinkExt, StreamExt};
use helios::{Context, Helios, MethodError};
use serde_json::{Value, json};

async fn server() -> Server {
    Server::start(Helios::builder().build()).await
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["type"], "response", "{v}");
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

#[tokio::test]
async fn welcome_ping_and_echo() {
    let s = server().await;
    let mut c = Raw::connect(&s.url()).await;
    let id = c.welcome["starlingId"].as_str().expect("starlingId");
    assert_eq!(id.len(), 36);
    assert_eq!(c.welcome["recovered"], false);
    assert!(
        c.welcome["serverTime"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000_000)
    );

    let pong = c.call("system:ping", json!({})).await;
    assert_eq!(pong["success"], true);
    assert_eq!(pong["data"]["pong"], true);
    assert!(pong["data"]["timestamp"].is_u64());
    assert_eq!(pong["protocol"], "helios-starling");
    assert_eq!(pong["version"], "1.0.0");

    let payload = json!({"nested": [1, "two", {"three": null}], "unicode": "héliös ✨"});
    let echo = c.call("system:echo", payload.clone()).await;
    assert_eq!(echo["data"], payload);

    // Also served on "/".
    let mut root = Raw::connect(&format!("ws://{}/", s.addr)).await;
    assert_eq!(root.call("system:ping", Value::Null).await["success"], true);
}

/// A JSON payload comes back as the client wrote it: a number beyond what
/// a float holds, escapes and spacing are not rewritten on the way.
#[tokio::test]
async fn echo_gives_json_text_back_as_written() {
    let s = server().await;
    let mut c = Raw::connect(&s.url()).await;
    let id = uuid();
    let payload = r#"{"big": 123456789012345678901234567890, "pi":3.14159265358979323846264338, "s":"\u00e9\n"}"#;
    c.send_text(&format!(
        r#"{{"protocol":"helios-starling","version":"1.0.0","timestamp":1,"type":"request","requestId":"{id}","method":"system:echo","payload":{payload}}}"#
    ))
    .await;
    let text = c.next_text().await;
    assert!(text.contains(&format!(r#""data":{payload}"#)), "{text}");
    let v: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["requestId"], id.as_str());
    assert_eq!(v["success"], true);
}

/// After each bad frame the connection must still answer a ping.
async fn still_usable(c: &mut Raw) {
    let v = c.call("system:ping", json!({})).await;
    assert_eq!(
        v["success"], true,
        "connection not usable after bad input: {v}"
    );
}

async fn expect_error_note(c: &mut Raw, code: &str, needle: &str) -> Value {
    let v = c.next_json().await;
    assert_eq!(v["type"], "notification", "{v}");
    assert_eq!(v["notification"]["topic"], "helios:error", "{v}");
    assert_eq!(v["notification"]["data"]["code"], code, "{v}");
    let msg = v["notification"]["data"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    v
}

#[tokio::test]
async fn frames_that_are_not_messages() {
    let s = server().await;
    let mut c = Raw::connect(&s.url()).await;
    c.send_text("this is not json").await;
    expect_error_note(&mut c, "INVALID_MESSAGE_FORMAT", "not valid JSON").await;
    still_usable(&mut c).await;

    for frame in ["[1,2,3]", "42", "\"text\"", "null", "true"] {
        c.send_text(frame).await;
        expect_error_note(&mut c, "INVALID_MESSAGE_FORMAT", "object").await;
    }
    still_usable(&mut c).await;

    c.send_text("{\"protocol\": \"helios-starling\", ").await; // truncated
    expect_error_note(&mut c, "INVALID_MESSAGE_FORMAT", "not valid JSON").await;
    still_usable(&mut c).await;
}

#[tokio::test]
async fn protocol_rule_violations_answer_with_the_request_id() {
    let s = server().await;
    let mut c = Raw::connect(&s.url()).await;
    // (how to break a valid request, what the error message must say)
    type Mutation = Box<dyn Fn(&mut serde_json::Map<String, Value>)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|m| {
                m.insert("protocol".into(), json!("socket.io"));
            }),
            "protocol",
        ),
        (
            Box::new(|m| {
                m.remove("protocol");
            }),
            "missing field `protocol`",
        ),
        (
            Box::new(|m| {
                m.remove("version");
            }),
            "missing field `version`",
        ),
        (
            Box::new(|m| {
                m.insert("version".into(), json!("2.0.0"));
            }),
            "unsupported",
        ),
        (
            Box::new(|m| {
                m.remove("timestamp");
            }),
            "missing field `timestamp`",
        ),
        (
            Box::new(|m| {
                m.insert("timestamp".into(), json!("now"));
            }),
            "timestamp",
        ),
        (
            Box::new(|m| {
                m.insert("type".into(), json!("event"));
            }),
            "unknown message type",
        ),
        (
            Box::new(|m| {
                m.remove("type");
            }),
            "missing field `type`",
        ),
        (
            Box::new(|m| {
                m.remove("method");
            }),
            "missing field `method`",
        ),
        (
            Box::new(|m| {
                m.insert("method".into(), json!(12));
            }),
            "`method` must be a string",
        ),
        (
            Box::new(|m| {
                m.insert("method".into(), json!("9abc:x"));
            }),
            "start with a letter",
        ),
        (
            Box::new(|m| {
                m.insert("method".into(), json!("ab"));
            }),
            "at least 3",
        ),
        (
            Box::new(|m| {
                m.insert("method".into(), json!("user.get"));
            }),
            "'.'",
        ),
        (
            Box::new(|m| {
                m.insert("method".into(), json!("nonamespace"));
            }),
            "namespace:action",
        ),
    ];
    for (mutate, needle) in cases {
        let id = uuid();
        let mut v = request(&id, "system:ping", json!({}));
        let m = v.as_object_mut().expect("object");
        mutate(m);
        c.send_json(&v).await;
        let resp = c.response_for(&id).await;
        assert_error(&resp, "INVALID_MESSAGE_FORMAT");
        let msg = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
    still_usable(&mut c).await;

    // A request id that is not a UUID v4 is refused, and still echoed.
    c.send_json(&request("req-1", "system:ping", json!({})))
        .await;
    let resp = c.response_for("req-1").await;
    assert_error(&resp, "INVALID_MESSAGE_FORMAT");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("UUID v4")
    );

    // A notification without its object: no id to answer, so an error notification.
    let mut n = notification("chat:x", json!(1));
    n.as_object_mut().expect("object").remove("notification");
    c.send_json(&n).await;
    expect_error_note(&mut c, "INVALID_MESSAGE_FORMAT", "notification").await;
    still_usable(&mut c).await;
}

#[tokio::test]
async fn unknown_method_stray_response_and_unhandled_notification() {
    let s = server().await;
    let mut c = Raw::connect(&s.url()).await;
    let v = c.call("user:nothere", json!({})).await;
    assert_error(&v, "METHOD_NOT_FOUND");

    let stray = uuid();
    c.send_json(
        &json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
        "type": "response", "requestId": stray, "success": true, "data": 1}),
    )
    .await;
    let note = expect_error_note(&mut c, "INVALID_MESSAGE_FORMAT", "unknown requestId").await;
    assert_eq!(note["notification"]["data"]["requestId"], stray.as_str());

    c.send_json(&notification("nobody:listens", json!({})))
        .await;
    expect_error_note(&mut c, "METHOD_NOT_FOUND", "nobody:listens").await;
    still_usable(&mut c).await;
}

#[tokio::test]
async fn binary_frame_in_json_mode_is_refused() {
    let s = server().await;
    let mut c = Raw::connect(&s.url()).await;
    let body = request(&uuid(), "system:ping", json!({})).to_string();
    c.ws.send(tokio_websockets::Message::binary(body.into_bytes()))
        .await
        .expect("send");
    expect_error_note(&mut c, "INVALID_MESSAGE_FORMAT", "binary frames").await;
    still_usable(&mut c).await;
}

#[tokio::test]
async fn oversize_frame_closes_with_1009() {
    let helios = Helios::builder().max_message_bytes(4096).build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    still_usable(&mut c).await;
    let big = request(&uuid(), "system:echo", json!("x".repeat(10_000)));
    c.send_json(&big).await;
    assert_eq!(c.closed().await, Some(1009));
    // The server lives on.
    let mut d = Raw::connect(&s.url()).await;
    still_usable(&mut d).await;
}

#[tokio::test]
async fn too_many_invalid_messages_close_with_1008() {
    let mut cfg = helios::Config::default();
    cfg.max_invalid_per_minute = 5;
    let s = Server::start(Helios::builder().config(cfg).build()).await;
    let mut c = Raw::connect(&s.url()).await;
    for _ in 0..6 {
        c.send_text("garbage").await;
    }
    assert_eq!(c.closed().await, Some(1008));
}

#[tokio::test]
async fn three_hundred_pipelined_requests_each_answered_under_its_id() {
    let helios = Helios::builder()
        .method("math:double", |ctx: Context<u64>| async move {
            // Later requests finish first for some: answers come out of order.
            tokio::time::sleep(std::time::Duration::from_millis(ctx.payload % 7)).await;
            Ok::<_, MethodError>(ctx.payload * 2)
        })
        .build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    let mut ids = std::collections::HashMap::new();
    for i in 0..300u64 {
        let id = uuid();
        c.send_json(&request(&id, "math:double", json!(i))).await;
        ids.insert(id, i);
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 300 {
        let v = c.next_json().await;
        let id = v["requestId"].as_str().expect("requestId").to_owned();
        let i = ids.get(&id).copied().expect("a known id");
        assert_eq!(v["data"], json!(i * 2), "{v}");
        assert!(seen.insert(id), "answered twice");
    }
}

#[tokio::test]
async fn msgpack_subprotocol() {
    use helios_protocol::{Codec, Encoding, Message, ParseMode, Request};
    let s = server().await;
    let mut c = Raw::connect_with(&s.url(), Some("helios-starling.v1.msgpack")).await;
    let enc = Encoding::MsgPack;
    let read = |m: tokio_websockets::Message| {
        assert!(m.is_binary(), "msgpack connections get binary frames");
        enc.decode(&m.into_payload(), ParseMode::Strict)
            .expect("decode")
    };
    use futures_util::StreamExt;
    let welcome = read(c.ws.next().await.expect("frame").expect("ok"));
    assert!(
        matches!(welcome, Message::Notification(ref n) if n.topic.as_deref() == Some("helios:welcome"))
    );
    let req = Request::new("system:echo", json!({"k": [1, 2]}));
    let id = req.id.clone();
    let bytes = enc.encode(&Message::Request(req)).expect("encode");
    c.ws.send(tokio_websockets::Message::binary(bytes))
        .await
        .expect("send");
    match read(c.ws.next().await.expect("frame").expect("ok")) {
        Message::Response(r) => {
            assert_eq!(r.id, id);
            assert_eq!(r.into_result(), Ok(json!({"k": [1, 2]})));
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_http_gets_426_and_healthz_answers() {
    let s = server().await;
    let stream = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(hyper_util::rt::TokioIo::new(stream))
    .await
    .expect("handshake");
    tokio::spawn(conn);
    let resp = send
        .send_request(
            http::Request::get("/ws")
                .header("host", "x")
                .body(Default::default())
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), 426);
    let resp = send
        .send_request(
            http::Request::get("/healthz")
                .header("host", "x")
                .body(Default::default())
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["status"], "ok");
}

/// A client that sends its first frame in the same packet as the upgrade
/// request (before it saw the 101): hyper has read that frame already, and
/// the server must still get it, first.
#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_not_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server().await;
    let mut stream = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let id = uuid();
    let text = request(&id, "system:echo", json!({"early": true})).to_string();
    let mut packet = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    // One masked text frame, 16-bit length (mask 0: the payload goes as it is).
    assert!(
        text.len() >= 126,
        "the 16-bit length form needs 126 bytes or more"
    );
    let len = u16::try_from(text.len()).expect("short frame");
    packet.extend_from_slice(&[0x81, 0x80 | 126]);
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0]);
    packet.extend_from_slice(text.as_bytes());
    stream.write_all(&packet).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(WAIT, stream.read_u8())
            .await
            .expect("101 in time")
            .expect("read");
        head.push(b);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut ws = tokio_websockets::ClientBuilder::new().take_over(stream);
    let mut answered = None;
    for _ in 0..3 {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        let v: Value = serde_json::from_str(msg.as_text().expect("text")).expect("json");
        if v["type"] == "response" {
            answered = Some(v);
            break;
        }
    }
    let v = answered.expect("the early request was answered");
    assert_eq!(v["requestId"], id.as_str());
    assert_eq!(v["data"], json!({"early": true}));
}
