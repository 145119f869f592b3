//! Round trips and every rejection the spec implies, for both encodings.

use helios_protocol::{
    Codec, DecodeErrorKind, Encoding, ErrorBody, ErrorCode, Message, Notification, ParseMode,
    PeerRef, Request, RequestId, Response,
};
use serde_json::{Value, json};

const ID: &str = "9b2f7c1e-5d3a-4f6b-8c9d-0e1f2a3b4c5d";

fn base(ty: &str) -> serde_json::Map<String, Value> {
    let v = json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1_700_000_000_000u64, "type": ty});
    v.as_object().cloned().unwrap_or_default()
}

fn decode(v: Value) -> Result<Message, helios_protocol::DecodeError> {
    Encoding::Json.decode(v.to_string().as_bytes(), ParseMode::Strict)
}

fn samples() -> Vec<Message> {
    let mut req = Request::new(
        "user:create",
        json!({"name": "ada", "tags": [1, 2.5, null]}),
    );
    req.peer = Some(PeerRef::Name("billing".into()));
    req.timeout_ms = Some(2500);
    let mut note = Notification::new(Some("chat:lobby".into()), json!("hi"));
    note.offset = Some(42);
    note.epoch = Some("e1".into());
    note.ack_id = Some("a-1".into());
    note.peer = Some(PeerRef::Id("abc".into()));
    vec![
        req.into(),
        Request {
            payload: None,
            ..Request::new("a:b", Value::Null)
        }
        .into(),
        Response::ok(RequestId::new(), json!({"ok": true})).into(),
        Response::ok(RequestId::new(), Value::Null).into(),
        Response::err(
            RequestId::new(),
            ErrorBody::new(ErrorCode::from("CUSTOM".to_string()), "boom")
                .with_details(json!({"retry": false})),
        )
        .into(),
        note.into(),
        Notification::new(None, json!([1, 2, 3])).into(),
    ]
}

#[test]
fn round_trip_json_and_msgpack() {
    for enc in [Encoding::Json, Encoding::MsgPack] {
        for msg in samples() {
            let bytes = enc.encode(&msg).expect("encode");
            let back = enc.decode(&bytes, ParseMode::Strict).expect("decode");
            assert_eq!(back, msg, "{enc:?}");
        }
    }
}

#[test]
fn json_wire_shape_matches_spec() {
    let id = RequestId::new();
    let bytes = Encoding::Json
        .encode(&Response::error(id.clone(), ErrorCode::METHOD_NOT_FOUND, "nope").into())
        .expect("encode");
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(v["protocol"], "helios-starling");
    assert_eq!(v["version"], "1.0.0");
    assert_eq!(v["type"], "response");
    assert_eq!(v["requestId"], id.as_str());
    assert_eq!(v["success"], false);
    assert_eq!(v["error"]["code"], "METHOD_NOT_FOUND");
    assert!(v.get("data").is_none());
    assert!(v["timestamp"].is_u64());

    let ok = Encoding::Json
        .encode(&Response::ok(id, Value::Null).into())
        .expect("encode");
    let v: Value = serde_json::from_slice(&ok).expect("json");
    assert_eq!(v["success"], true);
    assert!(
        v.as_object().is_some_and(|o| o.contains_key("data")),
        "data present even when null"
    );
}

#[test]
fn rejects_not_json_and_not_object() {
    let e = Encoding::Json
        .decode(b"hello", ParseMode::Strict)
        .expect_err("must be refused");
    assert_eq!(e.kind, DecodeErrorKind::Malformed);
    assert_eq!(e.code(), ErrorCode::INVALID_MESSAGE_FORMAT);
    for frame in ["[1,2]", "42", "\"str\"", "null"] {
        let e = Encoding::Json
            .decode(frame.as_bytes(), ParseMode::Strict)
            .expect_err("must be refused");
        assert_eq!(e.kind, DecodeErrorKind::Malformed, "{frame}");
        assert!(e.message.contains("object"), "{}", e.message);
    }
    let e = Encoding::MsgPack
        .decode(&[0xc1], ParseMode::Strict)
        .expect_err("must be refused");
    assert_eq!(e.kind, DecodeErrorKind::Malformed);
}

#[test]
fn rejects_wrong_protocol_version_and_missing_base_fields() {
    for (field, bad, needle) in [
        ("protocol", json!("socket.io"), "protocol"),
        ("version", json!("2.0.0"), "unsupported"),
        ("version", json!("one"), "semantic"),
        ("protocol", Value::Null, "protocol"),
        ("timestamp", json!("yesterday"), "timestamp"),
        ("timestamp", json!(-5), "timestamp"),
        ("type", json!("event"), "unknown message type"),
        ("type", json!(5), "type"),
    ] {
        let mut m = base("notification");
        m.insert("notification".into(), json!({"data": 1}));
        if bad.is_null() {
            m.remove(field);
        } else {
            m.insert(field.into(), bad);
        }
        let e = decode(Value::Object(m)).expect_err("must be refused");
        assert!(e.message.contains(needle), "{field}: {}", e.message);
    }
    for field in ["version", "timestamp", "type"] {
        let mut m = base("notification");
        m.insert("notification".into(), json!({"data": 1}));
        m.remove(field);
        let e = decode(Value::Object(m)).expect_err("must be refused");
        assert_eq!(e.message, format!("missing field `{field}`"));
    }
}

#[test]
fn request_rules_carry_the_request_id() {
    let mut m = base("request");
    m.insert("requestId".into(), json!(ID));
    m.insert("method".into(), json!("9lives:x"));
    let e = decode(Value::Object(m.clone())).expect_err("must be refused");
    assert_eq!(e.request_id.as_deref(), Some(ID));
    assert!(e.message.contains("start with a letter"), "{}", e.message);

    m.remove("method");
    let e = decode(Value::Object(m.clone())).expect_err("must be refused");
    assert_eq!(e.message, "missing field `method`");
    assert_eq!(e.request_id.as_deref(), Some(ID));

    m.insert("method".into(), json!(17));
    let e = decode(Value::Object(m.clone())).expect_err("must be refused");
    assert_eq!(e.message, "field `method` must be a string, got a number");
    assert_eq!(
        e.request_id.as_deref(),
        Some(ID),
        "id recovered on the slow path"
    );

    m.insert("method".into(), json!("user:get"));
    m.insert("requestId".into(), json!("not-a-uuid"));
    let e = decode(Value::Object(m.clone())).expect_err("must be refused");
    assert!(e.message.contains("UUID v4"), "{}", e.message);
    let ok = Encoding::Json.decode(
        Value::Object(m.clone()).to_string().as_bytes(),
        ParseMode::Permissive,
    );
    assert!(ok.is_ok(), "permissive accepts any id");

    // UUID of another version is refused in strict mode
    m.insert(
        "requestId".into(),
        json!("9b2f7c1e-5d3a-1f6b-8c9d-0e1f2a3b4c5d"),
    );
    assert!(decode(Value::Object(m.clone())).is_err());

    m.remove("requestId");
    let e = decode(Value::Object(m)).expect_err("must be refused");
    assert_eq!(e.message, "missing field `requestId`");
}

#[test]
fn response_and_notification_rules() {
    let mut m = base("response");
    m.insert("requestId".into(), json!(ID));
    let e = decode(Value::Object(m.clone())).expect_err("must be refused");
    assert_eq!(e.message, "missing field `success`");
    m.insert("success".into(), json!(false));
    let e = decode(Value::Object(m.clone())).expect_err("must be refused");
    assert!(e.message.contains("error"), "{}", e.message);
    m.insert("error".into(), json!({"code": "X"}));
    assert!(
        decode(Value::Object(m.clone())).is_err(),
        "error.message required"
    );
    m.insert("error".into(), json!({"code": "X", "message": "y"}));
    assert!(decode(Value::Object(m)).is_ok());

    let m = base("notification");
    let e = decode(Value::Object(m.clone())).expect_err("must be refused");
    assert_eq!(e.message, "missing field `notification`");
    let mut m2 = m.clone();
    m2.insert("notification".into(), json!("text"));
    let e = decode(Value::Object(m2)).expect_err("must be refused");
    assert!(
        e.message.contains("`notification` must be an object"),
        "{}",
        e.message
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let mut m = base("notification");
    m.insert(
        "notification".into(),
        json!({"topic": "a:b", "data": 1, "future": true}),
    );
    m.insert("extension".into(), json!({"x": 1}));
    assert!(decode(Value::Object(m)).is_ok());
}

#[test]
fn subprotocol_negotiation() {
    assert_eq!(
        Encoding::negotiate("foo, helios-starling.v1.msgpack"),
        Some(Encoding::MsgPack)
    );
    assert_eq!(
        Encoding::negotiate("helios-starling.v1.json"),
        Some(Encoding::Json)
    );
    assert_eq!(Encoding::negotiate("mqtt"), None);
}

#[test]
fn decode_text_matches_decode() {
    for msg in samples() {
        let bytes = Encoding::Json.encode(&msg).expect("encode");
        let text = std::str::from_utf8(&bytes).expect("utf8");
        assert_eq!(
            Encoding::Json
                .decode_text(text, ParseMode::Strict)
                .expect("decode_text"),
            msg
        );
    }
    let bad = Encoding::Json
        .decode_text("[1]", ParseMode::Strict)
        .expect_err("must be refused");
    assert_eq!(bad.kind, DecodeErrorKind::Malformed);
}
