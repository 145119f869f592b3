//! Session recovery and health checks, end to end over real sockets: an
//! abrupt cut while 10,000 messages are published, the ping-timeout path,
//! refused tokens, held sessions and history gaps.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::{Raw, Server};
use helios::{Context, HealthEventKind, Helios, MethodError, RecoveryConfig, RoomRule};
use serde_json::{Value, json};

const SECRET: &str = "test-recovery-secret-0123456789abcdef";

fn recovering_server() -> helios::Builder {
    Helios::builder()
        .recovery(RecoveryConfig::new(SECRET, Duration::from_secs(60)).expect("secret"))
        .room("feed:*", RoomRule::new().history(20_000))
        .room("small:*", RoomRule::new().history(10))
        .method("app:set", |ctx: Context| async move {
            let Context { payload, .. } = &ctx;
            ctx.connection().set("k", payload);
            Ok::<_, MethodError>(true)
        })
        .method("app:get", |ctx: Context| async move {
            Ok::<_, MethodError>(ctx.connection().get("k"))
        })
}

async fn token(c: &mut Raw) -> String {
    let v = c.call("starling:getToken", json!({})).await;
    assert_eq!(v["data"]["expiresIn"], 60, "{v}");
    v["data"]["token"].as_str().expect("token").to_owned()
}

fn recover_url(s: &Server, token: &str, since: Option<Value>) -> String {
    let mut url = format!("{}?recover={token}", s.url());
    if let Some(since) = since {
        let enc: String = url_escape(&since.to_string());
        url.push_str(&format!("&since={enc}"));
    }
    url
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reconnects with the token until the server has let go of the old
/// connection (a reconnect that races the server's close is told the
/// session is held, and retries, as the clients do).
async fn reconnect(s: &Server, token: &str, since: Option<Value>) -> Raw {
    for _ in 0..100 {
        let c = Raw::connect(&recover_url(s, token, since.clone())).await;
        if c.welcome["recovered"] == true {
            return c;
        }
        assert_eq!(
            c.welcome["reason"], "the session is still held by a live connection",
            "{}",
            c.welcome
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never recovered");
}

/// Reads room deliveries until `last` arrives; returns the `i`s in order.
async fn read_until(
    c: &mut Raw,
    topic: &str,
    last: u64,
    seen: &mut Vec<u64>,
    pos: &mut (u64, String),
) {
    while seen.last() != Some(&last) {
        let v = c.next_json().await;
        if v["notification"]["topic"] != topic {
            continue;
        }
        seen.push(v["notification"]["data"]["i"].as_u64().expect("i"));
        pos.0 = v["notification"]["offset"].as_u64().expect("offset");
        pos.1 = v["notification"]["epoch"]
            .as_str()
            .expect("epoch")
            .to_owned();
    }
}

fn assert_complete(seen: &[u64], n: u64) {
    let expected: Vec<u64> = (0..n).collect();
    if seen != expected.as_slice() {
        let dups = seen.len() as i64 - n as i64;
        let first_bad = seen
            .iter()
            .zip(0..)
            .find(|(a, b)| **a != *b)
            .map(|(a, b)| (b, *a));
        panic!(
            "got {} messages ({dups:+}); first mismatch (index, value): {first_bad:?}",
            seen.len()
        );
    }
}

fn publisher(helios: Helios, topic: &'static str, n: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..n {
            helios
                .broadcast(topic, json!({ "i": i }))
                .await
                .expect("broadcast");
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    })
}

#[tokio::test]
async fn abrupt_cut_during_ten_thousand_publications_loses_nothing() {
    let s = Server::start(recovering_server().build()).await;
    let mut c = Raw::connect(&s.url()).await;
    let id = c.welcome["starlingId"].clone();
    c.call("helios:subscribe", json!({"topic": "feed:1"})).await;
    c.call("app:set", json!({"user": "ada"})).await;
    let token = token(&mut c).await;

    let publishing = publisher(s.helios.clone(), "feed:1", 10_000);
    let mut seen = Vec::new();
    let mut pos = (0, String::new());
    read_until(&mut c, "feed:1", 1_500, &mut seen, &mut pos).await;
    drop(c); // abrupt: no close frame; frames in flight are lost

    let since = json!({ "feed:1": { "offset": pos.0, "epoch": pos.1 } });
    let mut c = reconnect(&s, &token, Some(since)).await;
    assert_eq!(c.welcome["starlingId"], id, "same starlingId");
    assert_eq!(c.welcome["missed"], false);
    assert_eq!(c.welcome["rooms"], json!(["feed:1"]));
    read_until(&mut c, "feed:1", 9_999, &mut seen, &mut pos).await;
    publishing.await.expect("publisher");
    assert_complete(&seen, 10_000);
    // Connection data came back too.
    assert_eq!(
        c.call("app:get", json!({})).await["data"],
        json!({"user": "ada"})
    );
}

#[tokio::test]
async fn ping_timeout_path_then_recovery_loses_nothing() {
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let ev = events.clone();
    let helios = recovering_server()
        // Pings queue behind deliveries on the same socket; the interval
        // leaves a busy (debug-build) reader time to get to them.
        .health_check(Some(Duration::from_millis(500)), 2)
        .on_health_event(move |e| {
            let ev = ev.clone();
            async move { ev.lock().push(e.kind) }
        })
        .build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    let id = c.welcome["starlingId"].as_str().expect("id").to_owned();
    c.call("helios:subscribe", json!({"topic": "feed:2"})).await;
    let token = token(&mut c).await;

    let publishing = publisher(s.helios.clone(), "feed:2", 10_000);
    let mut seen = Vec::new();
    let mut pos = (0, String::new());
    read_until(&mut c, "feed:2", 999, &mut seen, &mut pos).await;
    // The client freezes: it stops reading, so it answers no pings.
    let frozen = c;
    for _ in 0..300 {
        if s.helios.connection(&id).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        s.helios.connection(&id).is_none(),
        "closed by the health check"
    );
    let kinds = events.lock().clone();
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, HealthEventKind::PingMissed { missed: 1 })),
        "{kinds:?}"
    );
    assert!(kinds.contains(&HealthEventKind::PingTimeout), "{kinds:?}");
    drop(frozen);

    let since = json!({ "feed:2": { "offset": pos.0, "epoch": pos.1 } });
    let mut c = reconnect(&s, &token, Some(since)).await;
    assert_eq!(c.welcome["starlingId"], id.as_str());
    read_until(&mut c, "feed:2", 9_999, &mut seen, &mut pos).await;
    publishing.await.expect("publisher");
    assert_complete(&seen, 10_000);
}

#[tokio::test]
async fn a_reading_client_answers_pings_and_stays() {
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let ev = events.clone();
    let helios = Helios::builder()
        .health_check(Some(Duration::from_millis(50)), 2)
        .on_health_event(move |e| {
            let ev = ev.clone();
            async move { ev.lock().push(e.kind) }
        })
        .build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(c.call("system:ping", json!({})).await["success"], true);
    }
    let kinds = events.lock().clone();
    assert!(kinds.iter().any(|k| matches!(k, HealthEventKind::PongReceived { latency } if *latency < Duration::from_secs(5))), "{kinds:?}");
    assert!(!kinds.contains(&HealthEventKind::PingTimeout), "{kinds:?}");
}

#[tokio::test]
async fn the_ping_timeout_close_code_is_4100() {
    let s = Server::start(
        recovering_server()
            .health_check(Some(Duration::from_millis(50)), 2)
            .build(),
    )
    .await;
    let mut c = Raw::connect(&s.url()).await;
    // Not polling the socket means no pongs; then read what arrived.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(c.closed().await, Some(4100));
}

#[tokio::test]
async fn refused_tokens_start_a_fresh_session() {
    let s = Server::start(recovering_server().build()).await;
    let mut c = Raw::connect(&s.url()).await;
    let old_id = c.welcome["starlingId"].as_str().expect("id").to_owned();
    let good = token(&mut c).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = good.split('.').collect();
    let claims: Value =
        serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("claims");
    let mut tampered_claims = claims.clone();
    tampered_claims["exp"] = json!(claims["exp"].as_u64().unwrap_or(0) + 3600);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(tampered_claims.to_string()),
        parts[2]
    );
    let alg_none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let mut expired_claims = claims.clone();
    expired_claims["exp"] = json!(claims["iat"].as_u64().unwrap_or(0) - 10);
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let expired = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &expired_claims, &key)
        .expect("sign");
    let other_key = jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-xx!");
    let wrong_key =
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &other_key).expect("sign");
    let mut bad_sig = good.clone();
    bad_sig.pop();
    bad_sig.push(if good.ends_with('A') { 'B' } else { 'A' });

    for (what, t) in [
        ("tampered", tampered),
        ("alg none", alg_none),
        ("expired", expired),
        ("wrong key", wrong_key),
        ("bad signature", bad_sig),
        ("garbage", "x.y.z".into()),
    ] {
        let c = Raw::connect(&recover_url(&s, &t, None)).await;
        assert_eq!(c.welcome["recovered"], false, "{what}");
        assert_eq!(
            c.welcome["reason"], "invalid or expired recovery token",
            "{what}"
        );
        assert_ne!(
            c.welcome["starlingId"],
            old_id.as_str(),
            "{what}: a fresh id"
        );
    }
    // The real token still works afterwards: refused attempts did not consume the session.
    let c = reconnect(&s, &good, None).await;
    assert_eq!(c.welcome["starlingId"], old_id.as_str());
    // And only once.
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = reconnect(&s, &good, None).await;
    assert_eq!(
        c.welcome["recovered"], true,
        "the new connection left a session of its own"
    );
}

/// A recovery token is a credential for the session, not for a user: a
/// session authenticated at its handshake goes back only to the same user,
/// and a refused attempt leaves it in the store for its owner.
#[tokio::test]
async fn a_session_goes_back_only_to_its_own_user() {
    let s = Server::start(
        recovering_server()
            .authenticate(|req| async move { Ok(req.query_param("as").map(helios::Auth::user)) })
            .method("app:whoami", |ctx: Context| async move {
                Ok::<_, MethodError>(ctx.connection().user_id())
            })
            .build(),
    )
    .await;
    let mut alice = Raw::connect(&format!("{}?as=alice", s.url())).await;
    let alice_id = alice.welcome["starlingId"].as_str().expect("id").to_owned();
    assert_eq!(
        alice.call("app:set", json!("alice's")).await["success"],
        true
    );
    let t = token(&mut alice).await;
    drop(alice);
    tokio::time::sleep(Duration::from_millis(100)).await;

    for (who, query) in [("bob", "&as=bob"), ("an anonymous client", "")] {
        let mut c = Raw::connect(&format!("{}{query}", recover_url(&s, &t, None))).await;
        assert_eq!(c.welcome["recovered"], false, "{who}: {}", c.welcome);
        assert_eq!(
            c.welcome["reason"], "the session belongs to another user",
            "{who}"
        );
        assert_ne!(c.welcome["starlingId"], alice_id.as_str(), "{who}");
        assert_eq!(
            c.call("app:get", json!({})).await["data"],
            Value::Null,
            "{who}"
        );
    }

    let mut back = Raw::connect(&format!("{}&as=alice", recover_url(&s, &t, None))).await;
    assert_eq!(back.welcome["recovered"], true, "{}", back.welcome);
    assert_eq!(back.welcome["starlingId"], alice_id.as_str());
    assert_eq!(back.call("app:get", json!({})).await["data"], "alice's");
    assert_eq!(back.call("app:whoami", json!({})).await["data"], "alice");
}

/// A user the app set itself (no handshake credential) comes back with an
/// anonymous recovery, but a client that authenticated as someone else
/// keeps its own identity and does not get the session.
#[tokio::test]
async fn an_app_set_user_comes_back_but_never_over_an_authenticated_one() {
    let s = Server::start(
        recovering_server()
            .authenticate(|req| async move { Ok(req.query_param("as").map(helios::Auth::user)) })
            .method("app:login", |ctx: Context| async move {
                let user: String = serde_json::from_value(ctx.payload.clone()).unwrap_or_default();
                ctx.connection().set_user_id(user);
                Ok::<_, MethodError>(true)
            })
            .method("app:whoami", |ctx: Context| async move {
                Ok::<_, MethodError>(ctx.connection().user_id())
            })
            .build(),
    )
    .await;
    let mut c = Raw::connect(&s.url()).await;
    assert_eq!(c.call("app:login", json!("carol")).await["success"], true);
    let t = token(&mut c).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut mallory = Raw::connect(&format!("{}&as=mallory", recover_url(&s, &t, None))).await;
    assert_eq!(mallory.welcome["recovered"], false, "{}", mallory.welcome);
    assert_eq!(
        mallory.call("app:whoami", json!({})).await["data"],
        "mallory"
    );

    let mut back = reconnect(&s, &t, None).await;
    assert_eq!(back.call("app:whoami", json!({})).await["data"], "carol");
}

#[tokio::test]
async fn a_session_held_by_a_live_connection_is_not_recovered() {
    let s = Server::start(recovering_server().build()).await;
    let mut a = Raw::connect(&s.url()).await;
    let t = token(&mut a).await;
    let b = Raw::connect(&recover_url(&s, &t, None)).await;
    assert_eq!(b.welcome["recovered"], false);
    assert_eq!(
        b.welcome["reason"],
        "the session is still held by a live connection"
    );
    assert_ne!(b.welcome["starlingId"], a.welcome["starlingId"]);
    // The live connection keeps working: the old one wins.
    assert_eq!(a.call("system:ping", json!({})).await["success"], true);
}

#[tokio::test]
async fn a_gap_larger_than_the_history_is_reported() {
    let s = Server::start(recovering_server().build()).await;
    let mut c = Raw::connect(&s.url()).await;
    c.call("helios:subscribe", json!({"topic": "small:1"}))
        .await;
    c.call("helios:identify", json!({"name": "phoenix"})).await;
    let t = token(&mut c).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..50 {
        s.helios
            .broadcast("small:1", json!({ "i": i }))
            .await
            .expect("broadcast");
    }
    let mut c = reconnect(&s, &t, None).await;
    assert_eq!(c.welcome["missed"], true);
    assert_eq!(c.welcome["missedRooms"], json!(["small:1"]));
    // What history still has is replayed: the last 10.
    let mut got = Vec::new();
    for _ in 0..10 {
        let v = c.next_json().await;
        got.push(v["notification"]["data"]["i"].as_u64().expect("i"));
    }
    assert_eq!(got, (40..50).collect::<Vec<_>>());
    // The name came back with the session.
    let v = c.call("helios:presence", json!({"topic": "small:1"})).await;
    assert_eq!(v["data"]["members"][0]["name"], "phoenix", "{v}");
}

#[tokio::test]
async fn get_token_needs_recovery_and_a_long_secret() {
    let s = Server::start(Helios::builder().build()).await;
    let mut c = Raw::connect(&s.url()).await;
    assert_eq!(
        c.call("starling:getToken", json!({})).await["error"]["code"],
        "METHOD_NOT_FOUND"
    );
    let c2 = Raw::connect(&recover_url(&s, "whatever", None)).await;
    assert_eq!(
        c2.welcome["reason"],
        "recovery is not enabled on this server"
    );
    assert!(
        RecoveryConfig::new("31-bytes-long-secret-xxxxxxxxxx", Duration::from_secs(1)).is_err()
    );
    assert!(
        RecoveryConfig::new("32-bytes-long-secret-xxxxxxxxxxx", Duration::from_secs(1)).is_ok()
    );
}

/// Counts what the server keeps for recovery.
struct CountingStore {
    inner: Arc<helios::MemorySessionStore>,
    saved: Arc<std::sync::atomic::AtomicUsize>,
}

impl helios::SessionStore for CountingStore {
    fn save(
        &self,
        snapshot: helios::SessionSnapshot,
        ttl: Duration,
    ) -> futures_util::future::BoxFuture<'_, Result<(), helios::BrokerError>> {
        self.saved.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.save(snapshot, ttl)
    }

    fn take<'a>(
        &'a self,
        starling_id: &'a str,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Option<helios::SessionSnapshot>, helios::BrokerError>,
    > {
        self.inner.take(starling_id)
    }
}

#[tokio::test]
async fn only_connections_holding_a_token_leave_a_session() {
    let saved = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let store = CountingStore {
        inner: helios::MemorySessionStore::new(),
        saved: saved.clone(),
    };
    let s = Server::start(recovering_server().session_store(Arc::new(store)).build()).await;
    let mut plain = Raw::connect(&s.url()).await;
    plain
        .call("helios:subscribe", json!({"topic": "feed:x"}))
        .await;
    drop(plain);
    let mut holder = Raw::connect(&s.url()).await;
    let v = holder
        .call("helios:subscribe", json!({"topic": "feed:x"}))
        .await;
    // The subscribe answer carries the room's position, a first `since`.
    assert!(v["data"]["offset"].is_u64(), "{v}");
    assert!(v["data"]["epoch"].is_string(), "{v}");
    token(&mut holder).await;
    drop(holder);
    for _ in 0..100 {
        if saved.load(std::sync::atomic::Ordering::SeqCst) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        saved.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the token holder's session is kept"
    );
}

/// Hooks tell a recovered session from a new one, and how a connection
/// was closed.
#[tokio::test]
async fn hooks_see_recovery_and_the_close_code() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (on_open, on_close) = (seen.clone(), seen.clone());
    let s = Server::start(
        recovering_server()
            .on_connect(move |conn| {
                let seen = on_open.clone();
                async move {
                    seen.lock()
                        .push(format!("open recovered={}", conn.is_recovered()))
                }
            })
            .on_disconnect(move |conn| {
                let seen = on_close.clone();
                async move { seen.lock().push(format!("close {:?}", conn.close_code())) }
            })
            .method("app:kick", |ctx: Context| async move {
                ctx.connection()
                    .close(helios_protocol::CloseCode::PolicyViolation);
                Ok::<_, MethodError>(true)
            })
            .build(),
    )
    .await;
    let mut c = Raw::connect(&s.url()).await;
    let t = token(&mut c).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut back = reconnect(&s, &t, None).await;
    back.send_json(&common::request(&common::uuid(), "app:kick", json!({})))
        .await;
    assert_eq!(back.closed().await, Some(1008));
    drop(back);
    for _ in 0..100 {
        if seen.lock().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        *seen.lock(),
        vec![
            "open recovered=false".to_owned(),
            "close Normal".to_owned(),
            "open recovered=true".to_owned(),
            "close PolicyViolation".to_owned(),
        ]
    );
}
