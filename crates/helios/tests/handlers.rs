//! Handlers, middleware, timeouts, cancellation, hooks and server→client
//! requests, end to end over real sockets.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Raw, Server, notification, request, uuid};
use helios::{Context, Helios, MethodError, MethodOptions, Next, RegisterError};
use helios_protocol::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// Sets its flag when dropped: proves a handler future was really dropped.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[tokio::test]
async fn typed_payloads_errors_and_panics() {
    let helios = Helios::builder()
        .method("math:add", |ctx: Context<Add>| async move {
            Ok::<_, MethodError>(ctx.payload.a + ctx.payload.b)
        })
        .method("app:fail", |_: Context| async {
            Err::<(), _>(MethodError::new(ErrorCode::FORBIDDEN, "not you"))
        })
        .method("app:oops", |_: Context| async {
            Err::<(), _>("plain failure")
        })
        .method("app:panic", |_: Context| async {
            if true {
                panic!("handler exploded");
            }
            Ok::<(), MethodError>(())
        })
        .build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;

    assert_eq!(
        c.call("math:add", json!({"a": 2, "b": 40})).await["data"],
        42
    );
    let v = c.call("math:add", json!({"a": "two"})).await;
    assert_eq!(v["error"]["code"], "INVALID_PAYLOAD", "{v}");
    let v = c.call("app:fail", json!({})).await;
    assert_eq!(v["error"]["code"], "FORBIDDEN");
    assert_eq!(v["error"]["message"], "not you");
    let v = c.call("app:oops", json!({})).await;
    assert_eq!(v["error"]["code"], "METHOD_ERROR");
    let v = c.call("app:panic", json!({})).await;
    assert_eq!(v["error"]["code"], "METHOD_ERROR");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("handler exploded")
    );
    // Both the connection and the server live on.
    assert_eq!(c.call("math:add", json!({"a": 1, "b": 1})).await["data"], 2);
    let mut d = Raw::connect(&s.url()).await;
    assert_eq!(d.call("system:ping", json!({})).await["success"], true);
}

#[tokio::test]
async fn timeouts_drop_the_handler() {
    let dropped = Arc::new(AtomicBool::new(false));
    let dropped_slow = Arc::new(AtomicBool::new(false));
    let (d1, d2) = (dropped.clone(), dropped_slow.clone());
    let helios = Helios::builder()
        .request_timeout(Duration::from_millis(200))
        .method("app:hang", move |_: Context| {
            let flag = DropFlag(d1.clone());
            async move {
                let _flag = flag;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<(), MethodError>(())
            }
        })
        .method_with(
            "app:slow",
            move |_: Context| {
                let flag = DropFlag(d2.clone());
                async move {
                    let _flag = flag;
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    Ok::<_, MethodError>("finished")
                }
            },
            MethodOptions::new().timeout(Duration::from_secs(2)),
        )
        .build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    let v = c.call("app:hang", json!({})).await;
    assert_eq!(v["error"]["code"], "REQUEST_TIMEOUT", "{v}");
    eventually("timed-out handler dropped", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    // The per-method timeout overrides the default.
    let v = c.call("app:slow", json!({})).await;
    assert_eq!(v["data"], "finished", "{v}");
    // The caller's own `timeout` field shortens it.
    let id = uuid();
    let mut r = request(&id, "app:slow", json!({}));
    r["timeout"] = json!(50);
    c.send_json(&r).await;
    assert_eq!(
        c.response_for(&id).await["error"]["code"],
        "REQUEST_TIMEOUT"
    );
}

#[tokio::test]
async fn client_cancel_answers_cancelled_and_drops_the_handler() {
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let helios = Helios::builder()
        .method("app:hang", move |_: Context| {
            let flag = DropFlag(d.clone());
            async move {
                let _flag = flag;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<(), MethodError>(())
            }
        })
        .build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    let id = uuid();
    c.send_json(&request(&id, "app:hang", json!({}))).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send_json(&notification("helios:cancel", json!({"requestId": id})))
        .await;
    let v = c.response_for(&id).await;
    assert_eq!(v["error"]["code"], "REQUEST_CANCELLED", "{v}");
    eventually("cancelled handler dropped", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    // Exactly one response: the next frame answers the next request.
    let v = c.call("system:ping", json!({})).await;
    assert_eq!(v["success"], true);
}

/// A server whose `app:slow` answers "slow" after `slow_ms`, a client, and
/// the id of the `app:slow` request it has just sent.
async fn with_a_slow_request(config: helios::Config, slow_ms: u64) -> (Server, Raw, String) {
    let helios = Helios::builder()
        .config(config)
        .method("app:slow", move |_: Context| async move {
            tokio::time::sleep(Duration::from_millis(slow_ms)).await;
            Ok::<_, MethodError>("slow")
        })
        .build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    let slow = uuid();
    c.send_json(&request(&slow, "app:slow", json!({}))).await;
    (s, c, slow)
}

#[tokio::test]
async fn a_slow_handler_does_not_block_the_next_request() {
    let (_s, mut c, slow) = with_a_slow_request(helios::Config::default(), 1500).await;
    let fast = uuid();
    c.send_json(&request(&fast, "system:echo", json!("fast")))
        .await;
    let first = c.next_json().await;
    assert_eq!(
        first["requestId"],
        fast.as_str(),
        "the fast answer comes first"
    );
    assert_eq!(c.response_for(&slow).await["data"], "slow");
}

/// The socket goes to sleep between health-check ticks while a slow
/// handler runs (the writer puts it to sleep, registering for the next read
/// itself). A request arriving then is still read and answered at once, not
/// after the slow handler.
#[tokio::test]
async fn a_request_reaches_a_socket_put_to_sleep_while_a_handler_runs() {
    let mut config = helios::Config::default();
    config.ping_interval = Some(Duration::from_millis(40));
    config.max_missed_pongs = 1000;
    let (_s, mut c, slow) = with_a_slow_request(config, 2000).await;
    // Several ticks with no message: the socket sleeps.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fast = uuid();
    let sent = std::time::Instant::now();
    c.send_json(&request(&fast, "system:echo", json!("fast")))
        .await;
    let first = c.next_json().await;
    assert_eq!(first["requestId"], fast.as_str(), "{first}");
    assert!(
        sent.elapsed() < Duration::from_millis(1000),
        "answered after {:?}, not before the slow handler ended",
        sent.elapsed()
    );
    assert_eq!(c.response_for(&slow).await["data"], "slow");
}

#[tokio::test]
async fn middleware_by_pattern_and_namespaces() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let helios = Helios::builder()
        .middleware("**", move |ctx: Context, next: Next| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                next.run(ctx).await
            }
        })
        .namespace("admin", |ns| {
            ns.middleware("**", |ctx: Context, next: Next| async move {
                if ctx.connection().get("role") != Some(json!("admin")) {
                    return Err(MethodError::new(ErrorCode::UNAUTHORIZED, "admins only"));
                }
                next.run(ctx).await
            })
            .method("stats", |_: Context| async {
                Ok::<_, MethodError>(json!({"users": 3}))
            })
        })
        .method("auth:login", |ctx: Context<String>| async move {
            ctx.connection().set("role", &ctx.payload);
            Ok::<_, MethodError>(true)
        })
        .method("user:whoami", |ctx: Context| async move {
            // Middleware can change the payload on its way in.
            Ok::<_, MethodError>(
                json!({"role": ctx.connection().get("role"), "payload": ctx.payload}),
            )
        })
        .middleware("user:*", |mut ctx: Context, next: Next| async move {
            ctx.payload = json!("rewritten");
            next.run(ctx).await
        })
        .build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    let v = c.call("admin:stats", json!({})).await;
    assert_eq!(v["error"]["code"], "UNAUTHORIZED", "{v}");
    assert_eq!(c.call("auth:login", json!("admin")).await["data"], true);
    assert_eq!(c.call("admin:stats", json!({})).await["data"]["users"], 3);
    let v = c.call("user:whoami", json!("original")).await;
    assert_eq!(v["data"]["payload"], "rewritten");
    assert_eq!(v["data"]["role"], "admin");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "global middleware ran once per user call"
    );
    c.call("system:ping", json!({})).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4, "built-ins are not wrapped");
}

#[tokio::test]
async fn registration_errors() {
    let h = |_: Context| async { Ok::<_, MethodError>(()) };
    for name in [
        "system:mine",
        "internal:x",
        "stream:open",
        "helios:subscribe",
    ] {
        let err = Helios::builder().try_method(name, h).err();
        assert!(
            matches!(err, Some(RegisterError::Reserved(_))),
            "{name}: {err:?}"
        );
    }
    let err = Helios::builder().try_method("bad name", h).err();
    assert!(
        matches!(err, Some(RegisterError::InvalidName { .. })),
        "{err:?}"
    );
    let err = Helios::builder().try_method("user.get", h).err();
    assert!(
        matches!(err, Some(RegisterError::InvalidName { .. })),
        "strict mode: {err:?}"
    );
    let ok = Helios::builder()
        .parse_mode(helios_protocol::ParseMode::Permissive)
        .try_method("user.get", h);
    assert!(ok.is_ok());
    let err = Helios::builder()
        .method("a:b", h)
        .try_method("a:b", h)
        .err();
    assert!(matches!(err, Some(RegisterError::Duplicate(_))), "{err:?}");
    let panicked = std::panic::catch_unwind(|| Helios::builder().method("system:x", h));
    assert!(panicked.is_err(), "method() panics on a reserved name");
}

#[tokio::test]
async fn notification_handlers_hooks_and_direct_sends() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<Value>::new()));
    let gone = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let (seen2, gone2) = (seen.clone(), gone.clone());
    let helios = Helios::builder()
        .on("chat:message", move |ctx: Context| {
            let seen = seen2.clone();
            async move { seen.lock().push(ctx.payload) }
        })
        .on_connect(|conn| async move { conn.set("greeted", true) })
        .on_disconnect(move |conn| {
            let gone = gone2.clone();
            async move { gone.lock().push(conn.id().to_owned()) }
        })
        .method("app:greeted", |ctx: Context| async move {
            Ok::<_, MethodError>(ctx.connection().get("greeted"))
        })
        .build();
    let s = Server::start(helios.clone()).await;
    let mut c = Raw::connect(&s.url()).await;
    let id = c.welcome["starlingId"].as_str().expect("id").to_owned();
    // The connect hook runs beside the first messages: it has run soon.
    let mut greeted = Value::Null;
    for _ in 0..100 {
        greeted = c.call("app:greeted", json!({})).await["data"].clone();
        if greeted == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(greeted, true);
    c.send_json(&notification("chat:message", json!({"text": "hi"})))
        .await;
    eventually("notification handled", || seen.lock().len() == 1).await;
    assert_eq!(seen.lock()[0]["text"], "hi");

    let conn = helios.connection(&id).expect("registered");
    conn.notify("news:flash", json!({"breaking": true}))
        .await
        .expect("notify");
    let v = c.next_json().await;
    assert_eq!(v["notification"]["topic"], "news:flash");
    assert_eq!(v["notification"]["data"]["breaking"], true);

    drop(c);
    eventually("disconnect hook ran", || gone.lock().contains(&id)).await;
    assert!(helios.connection(&id).is_none(), "left the registry");
}

#[tokio::test]
async fn server_to_client_requests() {
    let helios = Helios::builder()
        .request_timeout(Duration::from_millis(300))
        .build();
    let s = Server::start(helios.clone()).await;
    let mut c = Raw::connect(&s.url()).await;
    let conn = helios
        .connection(c.welcome["starlingId"].as_str().expect("id"))
        .expect("conn");

    // The client answers successfully.
    let ask = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.request("client:info", json!({"q": 1})).await })
    };
    let req = c.next_json().await;
    assert_eq!(req["type"], "request");
    assert_eq!(req["method"], "client:info");
    assert_eq!(req["payload"]["q"], 1);
    let rid = req["requestId"].as_str().expect("id").to_owned();
    assert!(uuid::Uuid::parse_str(&rid).is_ok());
    c.send_json(
        &json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
        "type": "response", "requestId": rid, "success": true, "data": {"os": "linux"}}),
    )
    .await;
    assert_eq!(ask.await.expect("join"), Ok(json!({"os": "linux"})));

    // The client's error code comes back unchanged.
    let ask = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.request("client:info", json!({})).await })
    };
    let rid = c.next_json().await["requestId"]
        .as_str()
        .expect("id")
        .to_owned();
    c.send_json(
        &json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
        "type": "response", "requestId": rid, "success": false,
        "error": {"code": "NOPE", "message": "will not"}}),
    )
    .await;
    let err = ask.await.expect("join").expect_err("an error");
    assert_eq!(err.code.as_str(), "NOPE");

    // Silence: REQUEST_TIMEOUT for the server, and a cancel for the client.
    let err = conn
        .request("client:info", json!({}))
        .await
        .expect_err("timeout");
    assert_eq!(err.code, ErrorCode::REQUEST_TIMEOUT);
    let req = c.next_json().await;
    let rid = req["requestId"].clone();
    let cancel = c.next_json().await;
    assert_eq!(cancel["notification"]["topic"], "helios:cancel");
    assert_eq!(cancel["notification"]["data"]["requestId"], rid);
    // The client's late REQUEST_CANCELLED answer crosses the cancel: accepted quietly.
    c.send_json(
        &json!({"protocol": "helios-starling", "version": "1.0.0", "timestamp": 1,
        "type": "response", "requestId": rid, "success": false,
        "error": {"code": "REQUEST_CANCELLED", "message": "cancelled"}}),
    )
    .await;
    let ping = uuid();
    c.send_json(&request(&ping, "system:ping", json!({}))).await;
    let next = c.next_json().await;
    assert_eq!(
        next["requestId"],
        ping.as_str(),
        "no helios:error for the late answer: {next}"
    );

    // The connection goes away: waiting requests fail at once.
    let ask = {
        let conn = conn.clone();
        tokio::spawn(async move {
            conn.request_with("client:info", json!({}), Duration::from_secs(30))
                .await
        })
    };
    let _ = c.next_json().await;
    drop(c);
    let err = tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .expect("not hung")
        .expect("join")
        .expect_err("closed");
    assert_eq!(err.code.as_str(), "CONNECTION_CLOSED");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_then_closes_1001() {
    let helios = Helios::builder()
        .method("app:work", |_: Context| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, MethodError>("done")
        })
        .build();
    let mut s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    let id = uuid();
    c.send_json(&request(&id, "app:work", json!({}))).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.stop();
    let v = c.response_for(&id).await;
    assert_eq!(v["data"], "done", "in-flight request finished: {v}");
    assert_eq!(c.closed().await, Some(1001));
    let res = tokio::time::timeout(Duration::from_secs(10), s.task)
        .await
        .expect("serve returned");
    assert!(res.expect("join").is_ok());
}

/// An idle connection dozes (its task waits on its outbox only): the
/// shutdown must still reach it and close it with 1001.
#[tokio::test]
async fn graceful_shutdown_closes_idle_connections_1001() {
    let mut s = Server::start(Helios::builder().build()).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(Raw::connect(&s.url()).await);
    }
    // Long enough for every connection to fall asleep after its welcome.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.stop();
    for c in &mut idle {
        assert_eq!(c.closed().await, Some(1001));
    }
    let res = tokio::time::timeout(Duration::from_secs(10), s.task)
        .await
        .expect("serve returned");
    assert!(res.expect("join").is_ok());
}

/// The first Helios' pattern: ask each new client for its manifest from the
/// connect hook.
#[tokio::test]
async fn a_connect_hook_can_call_the_client() {
    let manifests = Arc::new(parking_lot::Mutex::new(Vec::<Value>::new()));
    let m = manifests.clone();
    let helios = Helios::builder()
        .on_connect(move |conn| {
            let m = m.clone();
            async move {
                if let Ok(manifest) = conn.request("client:manifest", json!({})).await {
                    m.lock().push(manifest);
                }
            }
        })
        .build();
    let s = Server::start(helios).await;
    let _client = starling::Client::builder(s.url())
        .method("client:manifest", |_: Value| async move {
            Ok::<_, starling::MethodError>(
                json!({"name": "billing", "methods": ["billing:charge"]}),
            )
        })
        .connect()
        .await
        .expect("connect");
    eventually("manifest received", || manifests.lock().len() == 1).await;
    assert_eq!(manifests.lock()[0]["name"], "billing");
}

/// Ids and method names longer than what `ShortStr` keeps in place (40
/// bytes) take its shared form; they must arrive and come back unchanged,
/// as short ones do.
#[tokio::test]
async fn long_and_short_ids_and_method_names_come_back_unchanged() {
    let long_method = format!("svc:{}", "m".repeat(60));
    let helios = Helios::builder()
        .parse_mode(helios_protocol::ParseMode::Permissive)
        .method(&long_method, |ctx: Context| async move {
            Ok::<_, MethodError>(json!({
                "method": ctx.method(),
                "id": ctx.request_id().map(|id| id.as_str().to_owned()),
            }))
        })
        .method("svc:short", |ctx: Context| async move {
            Ok::<_, MethodError>(json!({ "method": ctx.method() }))
        })
        .build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    for (id, method) in [
        ("i".repeat(128), long_method.as_str()),
        ("7".to_owned(), long_method.as_str()),
        ("x".repeat(41), "svc:short"),
        ("y".repeat(40), "svc:short"),
    ] {
        c.send_json(&request(&id, method, json!(null))).await;
        let v = c.response_for(&id).await;
        assert_eq!(v["success"], true, "{v}");
        assert_eq!(v["data"]["method"], method, "{v}");
        if method == long_method {
            assert_eq!(v["data"]["id"], id.as_str(), "{v}");
        }
    }
}

/// A method registered under a pattern answers every name it matches that
/// has no handler of its own, behind the middleware matching the name
/// called; built-ins and exact names come first.
#[tokio::test]
async fn pattern_methods_answer_what_has_no_exact_route() {
    let helios = Helios::builder()
        .middleware(
            "gateway:secret:*",
            |_ctx: Context, _next: Next| async move {
                Err::<Value, _>(MethodError::new(ErrorCode::FORBIDDEN, "not this one"))
            },
        )
        .method("gateway:**", |ctx: Context| async move {
            Ok::<_, MethodError>(json!({ "routed": ctx.method(), "payload": ctx.payload }))
        })
        .method("gateway:status", |_ctx: Context| async move {
            Ok::<_, MethodError>(json!("exact"))
        })
        .build();
    let s = Server::start(helios).await;
    let mut c = Raw::connect(&s.url()).await;
    let r = c.call("gateway:users:list", json!({"page": 2})).await;
    assert_eq!(
        r["data"],
        json!({"routed": "gateway:users:list", "payload": {"page": 2}}),
        "{r}"
    );
    assert_eq!(c.call("gateway:status", json!({})).await["data"], "exact");
    let r = c.call("gateway:secret:key", json!({})).await;
    assert_eq!(
        r["error"]["code"], "FORBIDDEN",
        "middleware of the called name: {r}"
    );
    let r = c.call("other:thing", json!({})).await;
    assert_eq!(r["error"]["code"], "METHOD_NOT_FOUND", "{r}");
    assert_eq!(c.call("system:ping", json!({})).await["success"], true);

    for (name, what) in [("system:**", "reserved"), ("gate*:x", "pattern")] {
        let err = Helios::builder()
            .try_method(name, |_ctx: Context| async move { Ok::<_, MethodError>(1) })
            .err()
            .unwrap_or_else(|| panic!("{name} must be refused"));
        assert!(
            err.to_string().to_lowercase().contains(what),
            "{name}: {err}"
        );
    }
}

/// In permissive mode the built-ins also answer to their dotted names, as
/// the newer Bun Helios called them; strict mode keeps the spec's names.
#[tokio::test]
async fn permissive_mode_answers_the_dotted_builtin_names() {
    let s = Server::start(
        Helios::builder()
            .parse_mode(helios_protocol::ParseMode::Permissive)
            .build(),
    )
    .await;
    let mut c = Raw::connect(&s.url()).await;
    assert_eq!(c.call("system.ping", json!({})).await["data"]["pong"], true);
    let r = c.call("helios.subscribe", json!({"topic": "chat:x"})).await;
    assert_eq!(r["data"]["subscribed"], true, "{r}");
    let r = c
        .call("helios.publish", json!({"topic": "chat:x", "data": 1}))
        .await;
    assert_eq!(r["success"], true, "{r}");

    let strict = Server::start(Helios::builder().build()).await;
    let mut c = Raw::connect(&strict.url()).await;
    let r = c.call("system.ping", json!({})).await;
    assert_eq!(r["error"]["code"], "INVALID_MESSAGE_FORMAT", "strict: {r}");
}

/// `refresh_auth` keeps a connection past its first credential's expiry
/// and sends the new one on reconnection (the old one is refused by then).
#[tokio::test]
async fn a_refreshed_credential_outlives_the_first_and_is_used_to_reconnect() {
    use std::time::SystemTime;
    let first_expires = SystemTime::now() + Duration::from_millis(800);
    let helios = Helios::builder()
        .authenticate(move |req| async move {
            match req.token().as_deref() {
                Some("first") if SystemTime::now() < first_expires => {
                    Ok(Some(helios::Auth::user("ada").expires_at(first_expires)))
                }
                Some("second") => Ok(Some(helios::Auth::user("ada"))),
                Some("bob") => Ok(Some(helios::Auth::user("bob"))),
                _ => Err(helios::AuthRejection::Unauthorized("bad token".into())),
            }
        })
        .build();
    let s = Server::start(helios).await;
    let client = starling::Client::builder(s.url())
        .header("authorization", "Bearer first")
        .reconnect(starling::ReconnectPolicy::default())
        .connect()
        .await
        .expect("connect");
    let mut events = client.events();
    let answer = client.refresh_auth("second").await.expect("refresh");
    assert_eq!(answer["user"], "ada", "{answer}");
    let err = client.refresh_auth("bob").await.expect_err("another user");
    assert!(
        matches!(&err, starling::ClientError::Server(e) if e.code.as_str() == "FORBIDDEN"),
        "{err:?}"
    );

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    client
        .ping()
        .await
        .expect("still connected past the first expiry");

    // The server goes away for this connection: the client reconnects with
    // the second credential (the first is refused by now).
    let id = client.starling_id();
    s.helios
        .connection(&id)
        .expect("connection")
        .close(helios_protocol::CloseCode::GoingAway);
    let reconnected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(starling::ClientEvent::Connected { .. }) => break true,
                Ok(_) => {}
                Err(_) => break false,
            }
        }
    })
    .await
    .expect("reconnected in time");
    assert!(reconnected);
    client.ping().await.expect("works after the reconnect");
}
