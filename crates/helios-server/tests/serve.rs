//! End-to-end tests of the `helios` binary: configuration layering, JWT
//! auth, room rules, the HTTP backend, TLS, limits, metrics, the console's
//! endpoints and SIGTERM drain. Every test runs the real binary on
//! 127.0.0.1:0.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn check(file: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_helios"))
        .args(["config", "check"])
        .arg(file)
        .output()
        .expect("run helios config check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn config_check_accepts_a_full_file() {
    let file = write_temp(
        "ok.toml",
        br#"
bind = "127.0.0.1:7800"
request_timeout_ms = 2000
[auth]
jwt_secret = "0123456789abcdef0123"
[backend]
url = "http://127.0.0.1:9"
subscribe_hook = "/subscribe"
[limits]
max_connections = 100
messages_per_second = 20
allowed_origins = ["https://app.example"]
[[rooms]]
pattern = "chat:*"
subscribe = "authenticated"
publish = "members"
history = 50
[[rooms]]
pattern = "user:*"
subscribe = "claim"
[rooms_default]
subscribe = "nobody"
[api]
key = "0123456789abcdef"
"#,
    );
    let (ok, text) = check(&file);
    assert!(ok, "{text}");
    assert!(text.contains("ok"), "{text}");
}

#[test]
fn config_check_names_the_bad_key() {
    for (toml, key) in [
        ("bind = \"not-an-address\"", "bind"),
        ("[limits]\nmax_connections = 0", "limits.max_connections"),
        ("[[rooms]]\npattern = \"chat:*x\"", "rooms[0].pattern"),
        ("[auth]\njwt_secret = \"short\"", "auth.jwt_secret"),
        ("[api]\nkey = \"short\"", "api.key"),
        ("broker = \"kafka://127.0.0.1:9092\"", "broker"),
        ("[[rooms]]\npattern = \"chat room:*\"", "rooms[0].pattern"),
        ("[backend]\nurl = \"ftp://x\"", "backend.url"),
        ("reqest_timeout_ms = 5", "reqest_timeout_ms"),
        ("request_timeout_ms = \"fast\"", "request_timeout_ms"),
    ] {
        let file = write_temp("bad.toml", toml.as_bytes());
        let (ok, text) = check(&file);
        assert!(!ok, "{toml} should be refused");
        assert!(
            text.contains(key),
            "message for {toml:?} does not name {key}: {text}"
        );
    }
}

#[test]
fn a_bad_value_stops_the_start() {
    let file = write_temp("bad.toml", b"[limits]\nhandshake_timeout_ms = 1\n");
    let err = Node::try_start(&["--config", file.to_str().expect("utf8")], &[])
        .err()
        .expect("must not start");
    assert!(err.contains("limits.handshake_timeout_ms"), "{err}");
    let err = Node::try_start(&["--rate-limit", "0"], &[])
        .err()
        .expect("must not start");
    assert!(err.contains("limits.messages_per_second"), "{err}");
}

/// flag > env > file: the message size limit decides whether a 2 KB
/// message passes.
#[tokio::test]
async fn flags_beat_env_beat_file() {
    let file = write_temp("limits.toml", b"[limits]\nmax_message_bytes = 300\n");
    let path = file.to_str().expect("utf8");
    let big = json!({"blob": "x".repeat(2000)});

    // file alone: 300 bytes -> closed with 1009
    let node = Node::start(&["--config", path]);
    let mut c = connect(&node.ws_url()).await;
    c.send_json(&request(&uuid(), "system:echo", big.clone()))
        .await;
    assert_eq!(c.closed(WAIT).await, Some(1009));
    drop(node);

    // env beats the file
    let node = Node::start_env(
        &["--config", path],
        &[("HELIOS_MAX_MESSAGE_BYTES", "100000")],
    );
    let mut c = connect(&node.ws_url()).await;
    let r = c.call("system:echo", big.clone()).await;
    assert_eq!(r["success"], true, "{r}");
    drop(node);

    // the flag beats the env
    let node = Node::start_env(
        &["--config", path, "--max-message-bytes", "300"],
        &[("HELIOS_MAX_MESSAGE_BYTES", "100000")],
    );
    let mut c = connect(&node.ws_url()).await;
    c.send_json(&request(&uuid(), "system:echo", big)).await;
    assert_eq!(c.closed(WAIT).await, Some(1009));
}

fn auth_args() -> Vec<&'static str> {
    vec!["--auth-jwt-secret", SECRET]
}

#[tokio::test]
async fn jwt_in_query_or_header_sets_the_user() {
    let node = Node::start(&auth_args());
    let token = hs256(&json!({"sub": "ada", "exp": now_secs() + 600}));
    let mut c = connect(&format!("{}?token={token}", node.ws_url())).await;
    c.call("helios:subscribe", json!({"topic": "lobby"})).await;
    let p = c.call("helios:presence", json!({"topic": "lobby"})).await;
    assert_eq!(p["data"]["members"][0]["user"], "ada", "{p}");

    let bearer = format!("Bearer {}", hs256(&json!({"sub": "bob"})));
    let mut c = try_connect(&node.ws_url(), &[("authorization", &bearer)])
        .await
        .expect("bearer accepted");
    c.call("helios:subscribe", json!({"topic": "lobby"})).await;
    let p = c.call("helios:presence", json!({"topic": "lobby"})).await;
    let users: Vec<&Value> = p["data"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| &m["user"])
        .collect();
    assert!(users.contains(&&json!("bob")), "{p}");
}

#[tokio::test]
async fn bad_tokens_get_401_at_the_handshake() {
    let node = Node::start(&auth_args());
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "eve"}),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-entirely-0123456789"),
    )
    .expect("sign");
    let expired = hs256(&json!({"sub": "ada", "exp": now_secs() - 30}));
    // alg: none, hand-made: header {"alg":"none","typ":"JWT"}, payload {"sub":"eve"}
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJldmUifQ.";
    for (what, token) in [
        ("wrong key", wrong_key.as_str()),
        ("expired", &expired),
        ("alg none", none),
        ("garbage", "abc"),
    ] {
        let (status, body) = http(node.addr, "GET", &format!("/ws?token={token}"), &UPGRADE).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
    let (status, body) = http(node.addr, "GET", "/ws", &UPGRADE).await;
    assert_eq!(status, 401, "no token: {body}");
    assert!(body.contains("missing token"), "{body}");
    let m = http(node.addr, "GET", "/metrics", &[]).await.1;
    assert!(
        m.contains("helios_connections_rejected_total{reason=\"unauthorized\"} 5"),
        "{m}"
    );
}

#[tokio::test]
async fn an_expiring_token_closes_with_4001_unless_refreshed() {
    let node = Node::start(&auth_args());
    // Without a refresh: closed with 4001 at expiry.
    let short = hs256(&json!({"sub": "ada", "exp": now_secs() + 2}));
    let mut c = connect(&format!("{}?token={short}", node.ws_url())).await;
    assert_eq!(c.closed(Duration::from_secs(6)).await, Some(4001));

    // With a refresh: still open after the first expiry.
    let short = hs256(&json!({"sub": "ada", "exp": now_secs() + 2}));
    let mut c = connect(&format!("{}?token={short}", node.ws_url())).await;
    let fresh = hs256(&json!({"sub": "ada", "exp": now_secs() + 600}));
    let r = c.call("helios:refresh", json!({"token": fresh})).await;
    assert_eq!(r["success"], true, "{r}");
    // A token for someone else is refused.
    let other = hs256(&json!({"sub": "mallory", "exp": now_secs() + 600}));
    let r = c.call("helios:refresh", json!({"token": other})).await;
    assert_eq!(r["error"]["code"], "FORBIDDEN", "{r}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = c.call("system:ping", json!({})).await;
    assert_eq!(r["success"], true, "{r}");
}

#[tokio::test]
async fn es256_public_key() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let public = write_temp("es256.pub.pem", key.public_key_pem().as_bytes());
    let node = Node::start(&[
        "--auth-jwt-public-key",
        public.to_str().expect("utf8"),
        "--auth-jwt-algorithm",
        "ES256",
    ]);
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &json!({"sub": "ada"}),
        &jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("ec key"),
    )
    .expect("sign");
    let c = try_connect(&format!("{}?token={token}", node.ws_url()), &[]).await;
    assert!(c.is_ok(), "{:?}", c.err());
    let hs = hs256(&json!({"sub": "ada"}));
    let (status, _) = http(node.addr, "GET", &format!("/ws?token={hs}"), &UPGRADE).await;
    assert_eq!(status, 401, "an HS256 token must not pass an ES256 server");
}

/// RS256 with a public-key file. The key pair in tests/support is a test
/// fixture made with `openssl genpkey -algorithm RSA` (ring cannot generate
/// RSA keys, so it is not made at test time); it protects nothing.
#[tokio::test]
async fn rs256_public_key() {
    let support = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support");
    let node = Node::start(&[
        "--auth-jwt-public-key",
        &format!("{support}/rs256-test.pub.pem"),
        "--auth-jwt-algorithm",
        "RS256",
    ]);
    let private = std::fs::read(format!("{support}/rs256-test.key.pem")).expect("test key");
    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(&private).expect("rsa key"),
        )
        .expect("sign")
    };
    let token = sign(json!({"sub": "ada", "exp": now_secs() + 60}));
    let c = try_connect(&format!("{}?token={token}", node.ws_url()), &[]).await;
    assert!(c.is_ok(), "{:?}", c.err());
    let expired = sign(json!({"sub": "ada", "exp": now_secs() - 60}));
    let (status, _) = http(node.addr, "GET", &format!("/ws?token={expired}"), &UPGRADE).await;
    assert_eq!(status, 401, "an expired RS256 token is refused");
    let hs = hs256(&json!({"sub": "ada"}));
    let (status, _) = http(node.addr, "GET", &format!("/ws?token={hs}"), &UPGRADE).await;
    assert_eq!(status, 401, "an HS256 token must not pass an RS256 server");
}

#[tokio::test]
async fn room_rules_from_the_config_file() {
    let file = write_temp(
        "rooms.toml",
        format!(
            r#"
[auth]
jwt_secret = "{SECRET}"
optional = true
[[rooms]]
pattern = "team:*"
subscribe = "claim"
publish = "claim"
presence = false
[[rooms]]
pattern = "vip:*"
subscribe = "authenticated"
max_subscribers = 1
[[rooms]]
pattern = "news:*"
publish = "nobody"
"#
        )
        .as_bytes(),
    );
    let node = Node::start(&["--config", file.to_str().expect("utf8")]);
    let token = hs256(&json!({"sub": "ada", "rooms": ["team:red"]}));
    let mut ada = connect(&format!("{}?token={token}", node.ws_url())).await;
    let mut anon = connect(&node.ws_url()).await;

    let r = ada
        .call("helios:subscribe", json!({"topic": "team:red"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = ada
        .call("helios:subscribe", json!({"topic": "team:blue"}))
        .await;
    assert_eq!(r["error"]["code"], "FORBIDDEN", "{r}");
    let r = anon
        .call("helios:subscribe", json!({"topic": "team:red"}))
        .await;
    assert_eq!(r["error"]["code"], "UNAUTHORIZED", "{r}");
    let r = ada
        .call("helios:presence", json!({"topic": "team:red"}))
        .await;
    assert_eq!(r["error"]["code"], "FORBIDDEN", "presence off: {r}");

    let r = anon
        .call("helios:subscribe", json!({"topic": "vip:lounge"}))
        .await;
    assert_eq!(r["error"]["code"], "UNAUTHORIZED", "{r}");
    let r = ada
        .call("helios:subscribe", json!({"topic": "vip:lounge"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let token2 = hs256(&json!({"sub": "bob"}));
    let mut bob = connect(&format!("{}?token={token2}", node.ws_url())).await;
    let r = bob
        .call("helios:subscribe", json!({"topic": "vip:lounge"}))
        .await;
    assert_eq!(r["error"]["code"], "FORBIDDEN", "room full: {r}");

    let r = anon
        .call("helios:publish", json!({"topic": "news:today", "data": 1}))
        .await;
    assert_eq!(r["error"]["code"], "FORBIDDEN", "{r}");
}

#[tokio::test]
async fn unknown_methods_go_to_the_backend() {
    let backend = PyBackend::start();
    let node = Node::start(&[
        "--backend",
        &format!("{}/rpc", backend.url),
        "--backend-timeout-ms",
        "1000",
        "--request-timeout-ms",
        "4000",
    ]);
    let mut c = connect(&node.ws_url()).await;
    let r = c.call("order:create", json!({"sku": "w-1"})).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["data"]["id"], 42);
    assert_eq!(r["data"]["echo"], json!({"sku": "w-1"}));
    assert_eq!(r["data"]["starlingId"], c.welcome["starlingId"]);
    assert_eq!(r["data"]["hasRequestId"], true);

    let r = c.call("order:refuse", json!({})).await;
    assert_eq!(r["error"]["code"], "OUT_OF_STOCK", "{r}");
    assert_eq!(r["error"]["message"], "no more widgets");

    let r = c.call("order:crash", json!({})).await;
    assert_eq!(r["error"]["code"], "METHOD_ERROR", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("500")),
        "{r}"
    );

    let r = c.call("order:slow", json!({})).await;
    assert_eq!(r["error"]["code"], "METHOD_ERROR", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("within 1000 ms")),
        "{r}"
    );

    // built-ins are still answered here
    let r = c.call("system:ping", json!({})).await;
    assert_eq!(r["data"]["pong"], true);
}

#[tokio::test]
async fn a_refused_backend_is_a_method_error() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let node = Node::start(&["--backend", &format!("http://127.0.0.1:{port}/rpc")]);
    let mut c = connect(&node.ws_url()).await;
    let r = c.call("order:create", json!({})).await;
    assert_eq!(r["error"]["code"], "METHOD_ERROR", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unreachable")),
        "{r}"
    );
}

#[tokio::test]
async fn backend_connect_and_subscribe_hooks() {
    let backend = PyBackend::start();
    let node = Node::start(&[
        "--backend",
        &format!("{}/rpc", backend.url),
        "--backend-connect-hook",
        "/connect",
        "--backend-subscribe-hook",
        "/subscribe",
    ]);
    let (status, body) = http(node.addr, "GET", "/ws?please=deny", &UPGRADE).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("connect hook says no"), "{body}");

    let mut c = connect(&node.ws_url()).await;
    let r = c
        .call("helios:subscribe", json!({"topic": "chat:lobby"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = c
        .call("helios:subscribe", json!({"topic": "secret:plans"}))
        .await;
    assert_eq!(r["error"]["code"], "FORBIDDEN", "{r}");
}

#[tokio::test]
async fn origin_allow_list() {
    let node = Node::start(&[
        "--allowed-origins",
        "https://app.example,http://localhost:3000",
    ]);
    let mut h = UPGRADE.to_vec();
    h.push(("origin", "https://evil.example"));
    let (status, _) = http(node.addr, "GET", "/ws", &h).await;
    assert_eq!(status, 403);
    let ok = try_connect(&node.ws_url(), &[("origin", "https://app.example")]).await;
    assert!(ok.is_ok(), "{:?}", ok.err());
    let same = format!("http://{}", node.addr);
    let ok = try_connect(&node.ws_url(), &[("origin", &same)]).await;
    assert!(ok.is_ok(), "same origin: {:?}", ok.err());
    // no Origin (not a browser): allowed
    assert!(try_connect(&node.ws_url(), &[]).await.is_ok());
}

#[tokio::test]
async fn per_ip_connection_cap() {
    let node = Node::start(&["--max-connections-per-ip", "2"]);
    let _a = connect(&node.ws_url()).await;
    let _b = connect(&node.ws_url()).await;
    let (status, _) = http(node.addr, "GET", "/healthz", &[]).await;
    assert_eq!(status, 503);
    drop(_a);
    // the slot frees once the socket is gone
    let mut ok = false;
    for _ in 0..50 {
        if http(node.addr, "GET", "/healthz", &[]).await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "slot not freed");
}

#[tokio::test]
async fn handshake_timeout_drops_silent_clients() {
    use tokio::io::AsyncReadExt;
    let node = Node::start(&["--handshake-timeout-ms", "300"]);
    let mut s = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("tcp");
    let mut buf = [0u8; 64];
    let start = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("server must drop the silent client")
        .unwrap_or(0);
    let _ = n;
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn rate_limit_then_close_4029() {
    let node = Node::start(&["--rate-limit", "5", "--rate-burst", "5"]);
    let mut c = connect(&node.ws_url()).await;
    let ids: Vec<String> = (0..12).map(|_| uuid()).collect();
    for id in &ids {
        c.send_json(&request(id, "system:ping", json!({}))).await;
    }
    let mut limited = 0;
    let mut ok = 0;
    while ok + limited < 12 {
        let v = c.next_json().await;
        if v["type"] != "response" {
            continue;
        }
        if v["success"] == true {
            ok += 1;
        } else {
            assert_eq!(v["error"]["code"], "RATE_LIMITED", "{v}");
            limited += 1;
        }
    }
    assert!(ok >= 5 && limited >= 5, "ok {ok}, limited {limited}");
    // keep abusing: closed with 4029 (10 strikes a minute by default)
    for _ in 0..20 {
        c.send_json(&request(&uuid(), "system:ping", json!({})))
            .await;
    }
    assert_eq!(c.closed(WAIT).await, Some(4029));
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert = write_temp("cert.pem", ck.cert.pem().as_bytes());
    let key = write_temp("key.pem", ck.signing_key.serialize_pem().as_bytes());
    let node = Node::start(&[
        "--tls-cert",
        cert.to_str().expect("utf8"),
        "--tls-key",
        key.to_str().expect("utf8"),
    ]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");

    let tcp = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("tcp");
    let tls = connector
        .connect(name.clone(), tcp)
        .await
        .expect("TLS handshake");
    let (ws, _) = tokio_websockets::ClientBuilder::new()
        .uri(&format!("wss://localhost:{}/ws", node.addr.port()))
        .expect("uri")
        .connect_on(tls)
        .await
        .expect("wss upgrade");
    let mut c = Client::welcome(ws).await.expect("welcome");
    let r = c.call("system:echo", json!("over TLS")).await;
    assert_eq!(r["data"], "over TLS");

    let tcp = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("tcp");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (status, body) = http_on(&mut tls, node.addr, "GET", "/healthz", &[]).await;
    assert_eq!(status, 200, "{body}");

    // plain HTTP on the TLS port gets nowhere
    let (status, _) = http(node.addr, "GET", "/healthz", &[]).await;
    assert_ne!(status, 200);
}

#[tokio::test]
async fn metrics_in_prometheus_format() {
    let node = Node::start(&[]);
    let mut c = connect(&node.ws_url()).await;
    c.call("helios:subscribe", json!({"topic": "chat:lobby"}))
        .await;
    c.call(
        "helios:publish",
        json!({"topic": "chat:lobby", "data": "hi"}),
    )
    .await;
    c.call("nope:nothing", json!({})).await;
    let (status, m) = http(node.addr, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200);
    for needle in [
        "# TYPE helios_connections gauge",
        "helios_connections 1\n",
        "helios_rooms 1\n",
        "helios_subscriptions 1\n",
        "helios_messages_in_total{type=\"request\"} 3\n",
        "helios_publications_total 1\n",
        "helios_errors_total{code=\"METHOD_NOT_FOUND\"} 1\n",
        "# TYPE helios_request_duration_seconds histogram",
        "helios_request_duration_seconds_count 2\n",
        "helios_slow_consumer_drops_total 0\n",
    ] {
        assert!(m.contains(needle), "missing {needle:?} in\n{m}");
    }
    let out: u64 = m
        .lines()
        .find(|l| l.starts_with("helios_messages_out_total{type=\"response\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("responses out");
    assert!(out >= 3, "{m}");
}

#[tokio::test]
async fn console_page_and_stats() {
    let node = Node::start(&[]);
    let (status, page) = http(node.addr, "GET", "/console", &[]).await;
    assert_eq!(status, 200);
    assert!(page.contains("Helios console"));
    let mut c = connect(&node.ws_url()).await;
    c.call("helios:subscribe", json!({"topic": "chat:lobby"}))
        .await;
    let (status, body) = http(node.addr, "GET", "/console/api/stats", &[]).await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(stats["connectionCount"], 1);
    assert_eq!(
        stats["rooms"][0],
        json!({"topic": "chat:lobby", "subscribers": 1})
    );
    assert_eq!(stats["connections"][0]["rooms"], json!(["chat:lobby"]));

    let node = Node::start(&["--no-console"]);
    assert_eq!(http(node.addr, "GET", "/console", &[]).await.0, 404);
}

#[tokio::test]
async fn sigterm_drains_and_exits() {
    let mut node = Node::start(&["--shutdown-grace-secs", "2"]);
    let mut c = connect(&node.ws_url()).await;
    node.sigterm();
    assert_eq!(c.closed(WAIT).await, Some(1001));
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("helios exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let log = node.log.lock().expect("log").join("\n");
    assert!(log.contains("draining"), "{log}");
}

/// A process allowed one CPU runs on the current-thread scheduler: requests,
/// rooms and the SIGTERM drain work there as on the multi-thread one.
#[tokio::test]
async fn one_cpu_runs_on_the_current_thread_scheduler() {
    let mut node = Node::start_on_one_cpu(&["--shutdown-grace-secs", "2"]);
    let log = node.log.lock().expect("log").join("\n");
    assert!(log.contains("current-thread"), "{log}");
    let mut a = connect(&node.ws_url()).await;
    let mut b = connect(&node.ws_url()).await;
    let v = a.call("system:echo", json!({"n": 1})).await;
    assert_eq!(v["data"], json!({"n": 1}), "{v}");
    b.call("helios:subscribe", json!({"topic": "one:cpu"}))
        .await;
    a.call("helios:publish", json!({"topic": "one:cpu", "data": "hi"}))
        .await;
    let delivery = b.next_json().await;
    assert_eq!(delivery["notification"]["data"], "hi", "{delivery}");
    node.sigterm();
    assert_eq!(a.closed(WAIT).await, Some(1001));
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("helios exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// Recovery is on with HELIOS_RECOVERY_SECRET; a short secret is refused at
/// start, naming the key; a dropped client gets its session back.
#[tokio::test]
async fn recovery_from_the_environment() {
    let err = Node::try_start(&[], &[("HELIOS_RECOVERY_SECRET", "too-short")])
        .err()
        .expect("must not start");
    assert!(err.contains("recovery.secret"), "{err}");

    let node = Node::start_env(
        &["--recovery-ttl-secs", "60"],
        &[("HELIOS_RECOVERY_SECRET", "0123456789abcdef0123456789abcdef")],
    );
    let mut c = connect(&node.ws_url()).await;
    let id = c.welcome["starlingId"].clone();
    c.call("helios:subscribe", json!({"topic": "news:1"})).await;
    let v = c.call("starling:getToken", json!({})).await;
    assert_eq!(v["data"]["expiresIn"], 60, "{v}");
    let token = v["data"]["token"].as_str().expect("token").to_owned();
    drop(c);
    let url = format!("{}?recover={token}", node.ws_url());
    let mut recovered = None;
    for _ in 0..50 {
        let c = connect(&url).await;
        if c.welcome["recovered"] == true {
            recovered = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = recovered.expect("recovered");
    assert_eq!(c.welcome["starlingId"], id);
    assert_eq!(c.welcome["rooms"], json!(["news:1"]));
}

/// The server HTTP API publishes where clients may not, reports per room,
/// and refuses a wrong key or a bad body with a JSON error.
#[tokio::test]
async fn the_http_api_publishes_to_rooms_clients_may_not_publish_to() {
    const KEY: &str = "api-key-0123456789abcdef";
    let file = write_temp(
        "api.toml",
        b"[[rooms]]\npattern = \"news:*\"\npublish = \"nobody\"\n",
    );
    let node = Node::start(&["--config", file.to_str().expect("utf8"), "--api-key", KEY]);
    let mut reader = connect(&node.ws_url()).await;
    let r = reader
        .call("helios:subscribe", json!({"topic": "news:today"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = reader
        .call("helios:publish", json!({"topic": "news:today", "data": 0}))
        .await;
    assert_eq!(r["error"]["code"], "FORBIDDEN", "clients may not: {r}");

    let auth = [("authorization", "apikey api-key-0123456789abcdef")];
    let (status, body) = http_post(
        node.addr,
        "/api/publish",
        &auth,
        r#"{"topic": "news:today", "data": {"headline": "hi"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["offset"], 1, "{answer}");
    assert_eq!(answer["delivered"], 1, "{answer}");
    let got = reader.next_json().await;
    assert_eq!(got["notification"]["topic"], "news:today", "{got}");
    assert_eq!(got["notification"]["data"], json!({"headline": "hi"}));

    let (status, body) = http_post(
        node.addr,
        "/api/broadcast",
        &[("authorization", "Bearer api-key-0123456789abcdef")],
        r#"{"topics": ["news:today", "bad topic"], "data": 2}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["results"][0]["offset"], 2, "{answer}");
    assert_eq!(
        answer["results"][1]["error"]["code"], "INVALID_PAYLOAD",
        "{answer}"
    );
    assert_eq!(reader.next_json().await["notification"]["data"], 2);

    let (status, body) = http_post(
        node.addr,
        "/api/presence",
        &auth,
        r#"{"topic": "news:today"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["count"], 1, "{answer}");

    for (headers, body, want, code) in [
        (
            &[("authorization", "apikey wrong-key-0123456789")][..],
            r#"{"topic":"news:a","data":1}"#,
            401,
            "UNAUTHORIZED",
        ),
        (
            &[][..],
            r#"{"topic":"news:a","data":1}"#,
            401,
            "UNAUTHORIZED",
        ),
        (&auth[..], "not json", 400, "INVALID_PAYLOAD"),
        (&auth[..], r#"{"topic":"news:a"}"#, 400, "INVALID_PAYLOAD"),
        (
            &auth[..],
            r#"{"topic":"news:a","data":1,"extra":true}"#,
            400,
            "INVALID_PAYLOAD",
        ),
        (
            &auth[..],
            r#"{"topic":"","data":1}"#,
            400,
            "INVALID_PAYLOAD",
        ),
    ] {
        let (status, text) = http_post(node.addr, "/api/publish", headers, body).await;
        assert_eq!(status, want, "{body}: {text}");
        let answer: Value = serde_json::from_str(&text).expect("a JSON error");
        assert_eq!(answer["error"]["code"], code, "{body}: {text}");
    }

    // Without a key the API does not exist.
    let plain = Node::start(&[]);
    let (status, _) = http_post(
        plain.addr,
        "/api/publish",
        &auth,
        r#"{"topic":"a","data":1}"#,
    )
    .await;
    assert_eq!(status, 404);
}

/// The whole-server connection cap: over it, HTTP 503; a slot frees when a
/// socket goes.
#[tokio::test]
async fn global_connection_cap() {
    let node = Node::start(&["--max-connections", "2"]);
    let a = connect(&node.ws_url()).await;
    let _b = connect(&node.ws_url()).await;
    let (status, _) = http(node.addr, "GET", "/healthz", &[]).await;
    assert_eq!(status, 503, "a third connection is refused");
    drop(a);
    let mut freed = false;
    for _ in 0..50 {
        if http(node.addr, "GET", "/healthz", &[]).await.0 == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "slot not freed");
}

/// `auth.audience` and `auth.issuer` (file only) are required claims.
#[tokio::test]
async fn jwt_audience_and_issuer_are_checked() {
    let file = write_temp(
        "aud.toml",
        format!("[auth]\njwt_secret = \"{SECRET}\"\naudience = \"app\"\nissuer = \"idp\"\n")
            .as_bytes(),
    );
    let node = Node::start(&["--config", file.to_str().expect("utf8")]);
    for (claims, ok) in [
        (json!({"sub": "ada", "aud": "app", "iss": "idp"}), true),
        (json!({"sub": "ada", "aud": "other", "iss": "idp"}), false),
        (json!({"sub": "ada", "aud": "app", "iss": "someone"}), false),
        (json!({"sub": "ada"}), false),
    ] {
        let token = hs256(&claims);
        let (status, _) = http(node.addr, "GET", &format!("/ws?token={token}"), &UPGRADE).await;
        assert_eq!(status == 101, ok, "{claims}: HTTP {status}");
    }
}

/// `limits.rate_limit_strikes`: how many refusals a minute are tolerated
/// before the connection is closed with 4029 (the flag beats the file).
#[tokio::test]
async fn rate_limit_strikes_from_the_flag_over_the_file() {
    let file = write_temp(
        "strikes.toml",
        b"[limits]\nmessages_per_second = 1\nmessage_burst = 1\nrate_limit_strikes = 5\n",
    );
    let node = Node::start(&[
        "--config",
        file.to_str().expect("utf8"),
        "--rate-limit-strikes",
        "2",
    ]);
    let mut c = connect(&node.ws_url()).await;
    for _ in 0..4 {
        c.send_json(&request(&uuid(), "system:ping", json!({})))
            .await;
    }
    // 1 answered, 2 refused (the strikes tolerated), the 4th closes.
    let mut refused = 0;
    for _ in 0..3 {
        let v = c.next_json().await;
        if v["error"]["code"] == "RATE_LIMITED" {
            refused += 1;
        }
    }
    assert_eq!(refused, 2);
    assert_eq!(c.closed(WAIT).await, Some(4029));
}

/// `RUST_LOG` sets the log filter when no Helios setting does.
#[test]
fn rust_log_is_read_below_the_log_level_setting() {
    let err = Node::try_start(&[], &[("RUST_LOG", "helios=[")])
        .err()
        .expect("a bad RUST_LOG filter is refused");
    assert!(err.contains("log_level"), "{err}");
    let node = Node::try_start(&["--log-level", "info"], &[("RUST_LOG", "helios=[")]);
    assert!(node.is_ok(), "--log-level wins: {:?}", node.err());
}
