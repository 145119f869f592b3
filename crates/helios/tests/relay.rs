//! Peer relay, names and direct sends, end to end over real sockets, with
//! hand-written JSON and with `starling`.

mod common;

use std::time::Duration;

use common::{Raw, Server, notification, request, uuid};
use helios::{Context, Helios, MethodError, RelayDecision};
use helios_protocol::{ErrorCode, PeerRef};
use serde_json::{Value, json};

fn response(id: &Value, result: Result<Value, (&str, &str)>) -> Value {
    let mut v = json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
        "type": "response", "requestId": id});
    match result {
        Ok(data) => {
            v["success"] = json!(true);
            v["data"] = data;
        }
        Err((code, message)) => {
            v["success"] = json!(false);
            v["error"] = json!({"code": code, "message": message});
        }
    }
    v
}

/// Within one node a relayed request's payload and the peer's answer go
/// through as the text each side wrote (a float would round this number).
#[tokio::test]
async fn relayed_json_text_arrives_as_written() {
    let s = Server::start(Helios::builder().build()).await;
    let mut caller = Raw::connect(&s.url()).await;
    let mut peer = Raw::connect(&s.url()).await;
    let peer_id = peer.welcome["starlingId"].as_str().expect("id").to_owned();
    let id = uuid();
    let payload = r#"{"n": 123456789012345678901234567890}"#;
    caller
        .send_text(&format!(
            r#"{{"protocol":"helios-starling","version":"1.0.0","timestamp":1,"type":"request","requestId":"{id}","method":"calc:big","payload":{payload},"peer":{{"id":"{peer_id}"}}}}"#
        ))
        .await;
    let got = peer.next_text().await;
    assert!(got.contains(&format!(r#""payload":{payload}"#)), "{got}");
    let got: Value = serde_json::from_str(&got).expect("JSON");
    let data = "[98765432109876543210987654321, 0.1000000000000000000001]";
    peer.send_text(&format!(
        r#"{{"protocol":"helios-starling","version":"1.0.0","timestamp":1,"type":"response","requestId":{},"success":true,"data":{data}}}"#,
        got["requestId"]
    ))
    .await;
    let answer = caller.next_text().await;
    assert!(answer.contains(&format!(r#""data":{data}"#)), "{answer}");
    assert!(answer.contains(&id), "{answer}");
}

#[tokio::test]
async fn relay_by_id_and_by_name_with_raw_json() {
    let s = Server::start(Helios::builder().build()).await;
    let mut caller = Raw::connect(&s.url()).await;
    let mut peer = Raw::connect(&s.url()).await;
    let peer_id = peer.welcome["starlingId"].as_str().expect("id").to_owned();
    let caller_id = caller.welcome["starlingId"]
        .as_str()
        .expect("id")
        .to_owned();

    // By id: the peer sees the request with the caller as `peer`, under a new id.
    let id = uuid();
    let mut req = request(&id, "calc:add", json!([2, 3]));
    req["peer"] = json!({"id": peer_id});
    caller.send_json(&req).await;
    let got = peer.next_json().await;
    assert_eq!(got["type"], "request");
    assert_eq!(got["method"], "calc:add");
    assert_eq!(got["payload"], json!([2, 3]));
    assert_eq!(got["peer"], json!({"id": caller_id}));
    assert_ne!(
        got["requestId"],
        id.as_str(),
        "the peer gets its own request id"
    );
    peer.send_json(&response(&got["requestId"], Ok(json!(5))))
        .await;
    let answer = caller.response_for(&id).await;
    assert_eq!(answer["data"], 5, "{answer}");

    // By name, and the peer's own error code comes back unchanged.
    let v = peer
        .call("helios:identify", json!({"name": "calculator"}))
        .await;
    assert_eq!(v["data"]["name"], "calculator");
    let id = uuid();
    let mut req = request(&id, "calc:div", json!([1, 0]));
    req["peer"] = json!({"name": "calculator"});
    caller.send_json(&req).await;
    let got = peer.next_json().await;
    peer.send_json(&response(
        &got["requestId"],
        Err(("DIVISION_BY_ZERO", "no")),
    ))
    .await;
    let answer = caller.response_for(&id).await;
    assert_eq!(answer["error"]["code"], "DIVISION_BY_ZERO");

    // Notifications are relayed too.
    let mut n = notification("calc:hello", json!({"hi": 1}));
    n["peer"] = json!({"name": "calculator"});
    caller.send_json(&n).await;
    let got = peer.next_json().await;
    assert_eq!(got["notification"]["topic"], "calc:hello");
    assert_eq!(got["peer"], json!({"id": caller_id}));
}

#[tokio::test]
async fn unknown_departed_and_silent_peers() {
    let s = Server::start(
        Helios::builder()
            .request_timeout(Duration::from_millis(300))
            .build(),
    )
    .await;
    let mut caller = Raw::connect(&s.url()).await;

    for peer in [json!({"id": "no-such-id"}), json!({"name": "nobody"})] {
        let id = uuid();
        let mut req = request(&id, "svc:do", json!({}));
        req["peer"] = peer.clone();
        caller.send_json(&req).await;
        assert_eq!(
            caller.response_for(&id).await["error"]["code"],
            "PEER_NOT_FOUND",
            "{peer}"
        );
    }
    let mut n = notification("svc:ping", json!({}));
    n["peer"] = json!({"name": "nobody"});
    caller.send_json(&n).await;
    let v = caller.next_json().await;
    assert_eq!(v["notification"]["topic"], "helios:error");
    assert_eq!(v["notification"]["data"]["code"], "PEER_NOT_FOUND");

    // A silent peer: REQUEST_TIMEOUT for the caller, a cancel for the peer.
    let mut silent = Raw::connect(&s.url()).await;
    silent
        .call("helios:identify", json!({"name": "sleepy"}))
        .await;
    let id = uuid();
    let mut req = request(&id, "svc:do", json!({}));
    req["peer"] = json!({"name": "sleepy"});
    caller.send_json(&req).await;
    let got = silent.next_json().await;
    assert_eq!(
        caller.response_for(&id).await["error"]["code"],
        "REQUEST_TIMEOUT"
    );
    let cancel = silent.next_json().await;
    assert_eq!(cancel["notification"]["topic"], "helios:cancel");
    assert_eq!(
        cancel["notification"]["data"]["requestId"],
        got["requestId"]
    );

    // A peer that leaves before answering: PEER_NOT_FOUND, and its name is free again.
    let id = uuid();
    let mut req = request(&id, "svc:do", json!({}));
    req["peer"] = json!({"name": "sleepy"});
    caller.send_json(&req).await;
    let _ = silent.next_json().await;
    drop(silent);
    assert_eq!(
        caller.response_for(&id).await["error"]["code"],
        "PEER_NOT_FOUND"
    );
    let mut again = Raw::connect(&s.url()).await;
    let v = again
        .call("helios:identify", json!({"name": "sleepy"}))
        .await;
    assert_eq!(v["success"], true, "name released at disconnect: {v}");
}

#[tokio::test]
async fn names_first_come_first_served() {
    let s = Server::start(Helios::builder().build()).await;
    let mut a = Raw::connect(&s.url()).await;
    let mut b = Raw::connect(&s.url()).await;
    assert_eq!(
        a.call("helios:identify", json!({"name": "billing"})).await["success"],
        true
    );
    assert_eq!(
        a.call("helios:identify", json!({"name": "billing"})).await["success"],
        true,
        "idempotent"
    );
    let v = b.call("helios:identify", json!({"name": "billing"})).await;
    assert_eq!(v["error"]["code"], "NAME_TAKEN");
    // Claiming another name releases the first.
    assert_eq!(
        a.call("helios:identify", json!({"name": "invoices"})).await["success"],
        true
    );
    assert_eq!(
        b.call("helios:identify", json!({"name": "billing"})).await["success"],
        true
    );
    for bad in [json!({"name": ""}), json!({"name": "two words"}), json!({})] {
        assert_eq!(
            b.call("helios:identify", bad.clone()).await["error"]["code"],
            "INVALID_PAYLOAD",
            "{bad}"
        );
    }
}

#[tokio::test]
async fn relay_hook_forwards_replies_or_denies() {
    let helios = Helios::builder()
        .relay_hook(|req| async move {
            match req.method.as_deref() {
                Some("admin:reset") => RelayDecision::Deny(MethodError::new(
                    ErrorCode::FORBIDDEN,
                    "not through the relay",
                )),
                Some("svc:cached") => {
                    RelayDecision::Reply(json!({"cached": true, "from": req.from.id()}))
                }
                _ => RelayDecision::Forward,
            }
        })
        .build();
    let s = Server::start(helios).await;
    let service = starling::Client::builder(s.url())
        .method("svc:echo", |v: Value| async move {
            Ok::<_, starling::MethodError>(v)
        })
        .connect()
        .await
        .expect("service");
    service.identify("svc").await.expect("identify");
    let client = starling::Client::connect(s.url()).await.expect("client");
    let to_svc = || starling::RequestOptions::new().peer(PeerRef::Name("svc".into()));

    let v = client
        .request_with("svc:echo", json!({"x": 1}), to_svc())
        .await
        .expect("forwarded");
    assert_eq!(v, json!({"x": 1}));
    let v = client
        .request_with("svc:cached", json!({}), to_svc())
        .await
        .expect("replied by the hook");
    assert_eq!(v["cached"], true);
    assert_eq!(v["from"], client.starling_id());
    let err = client
        .request_with("admin:reset", json!({}), to_svc())
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));
    // A method the service does not have: its METHOD_NOT_FOUND comes back.
    let err = client
        .request_with("svc:nothere", json!({}), to_svc())
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Some(ErrorCode::METHOD_NOT_FOUND));
}

#[tokio::test]
async fn direct_sends_and_the_connection_token() {
    let helios = Helios::builder()
        .method("auth:login", |ctx: Context<String>| async move {
            ctx.connection().set_token(format!("tok-{}", ctx.payload));
            Ok::<_, MethodError>(true)
        })
        .method("auth:whoami", |ctx: Context| async move {
            Ok::<_, MethodError>(ctx.connection().token())
        })
        .build();
    let s = Server::start(helios.clone()).await;
    let client = starling::Client::builder(s.url())
        .method("client:confirm", |v: Value| async move {
            Ok::<_, starling::MethodError>(json!({"confirmed": v}))
        })
        .connect()
        .await
        .expect("client");
    let mut notes = client.notifications();
    client
        .request("auth:login", json!("ada"))
        .await
        .expect("login");
    assert_eq!(
        client
            .request("auth:whoami", json!({}))
            .await
            .expect("whoami"),
        json!("tok-ada")
    );

    // From anywhere in the app: a handle by id, then notify and request.
    let conn = helios.connection(&client.starling_id()).expect("live");
    assert_eq!(conn.token().as_deref(), Some("tok-ada"));
    conn.notify("news:flash", json!({"n": 1}))
        .await
        .expect("notify");
    let n = tokio::time::timeout(common::WAIT, notes.recv())
        .await
        .expect("in time")
        .expect("note");
    assert_eq!(n.topic.as_deref(), Some("news:flash"));
    let answer = conn
        .request("client:confirm", json!(42))
        .await
        .expect("answer");
    assert_eq!(answer, json!({"confirmed": 42}));
}
