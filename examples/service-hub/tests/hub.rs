//! End to end over real sockets on 127.0.0.1: the hub in-process, services
//! and callers on `starling`.

use std::time::Duration;

use example_service_hub::{ServiceBuilder, ServiceInfo, call_service};
use serde_json::{Value, json};
use starling::{Client, ErrorCode, MethodError};

/// Every test body runs under this bound.
const TEST_LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test took too long");
}

/// Starts the hub on an ephemeral port; returns its URL.
async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(example_service_hub::app().serve(listener, std::future::pending()));
    format!("ws://{addr}/ws")
}

/// A `billing` service that serves `billing:charge` (and declines zero
/// amounts with its own error code).
async fn billing(url: &str) -> Client {
    ServiceBuilder::new(url, "billing")
        .method("billing:charge", |p: Value| async move {
            let amount = p["amount"].as_u64().unwrap_or(0);
            if amount == 0 {
                return Err(MethodError::new(
                    ErrorCode::from("DECLINED"),
                    "nothing to charge",
                ));
            }
            Ok(json!({ "receipt": format!("r-{amount}"), "charged": amount }))
        })
        .connect()
        .await
        .expect("billing registers")
}

async fn services(client: &Client) -> Vec<ServiceInfo> {
    client
        .call("hub:services", &json!({}))
        .await
        .expect("hub:services")
}

#[tokio::test]
async fn a_client_calls_a_registered_service_by_name() {
    bounded(async {
        let url = start().await;
        let service = billing(&url).await;
        let caller = Client::connect(&url).await.expect("caller");

        // The hub fetched the manifest with service:manifest.
        let listed = services(&caller).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "billing");
        assert_eq!(listed[0].methods, ["billing:charge"]);
        assert_eq!(listed[0].starling_id, service.starling_id());

        let receipt = call_service(&caller, "billing", "billing:charge", json!({"amount": 42}))
            .await
            .expect("relayed call");
        assert_eq!(receipt, json!({"receipt": "r-42", "charged": 42}));

        // The service's own error code reaches the caller unchanged.
        let err = call_service(&caller, "billing", "billing:charge", json!({"amount": 0}))
            .await
            .expect_err("declined");
        assert_eq!(err.code(), Some(ErrorCode::from("DECLINED")));
    })
    .await;
}

#[tokio::test]
async fn the_manifest_is_enforced() {
    bounded(async {
        let url = start().await;
        // This service answers two methods but declares only one.
        let service = Client::builder(url.as_str())
            .method("vault:read", |_: Value| async move {
                Ok::<_, MethodError>(json!("public"))
            })
            .method("vault:secret", |_: Value| async move {
                Ok::<_, MethodError>(json!("the secret"))
            })
            .connect()
            .await
            .expect("service");
        service.identify("vault").await.expect("identify");
        service
            .request(
                "hub:register",
                json!({"name": "vault", "methods": ["vault:read"]}),
            )
            .await
            .expect("register");

        let caller = Client::connect(&url).await.expect("caller");
        let read = call_service(&caller, "vault", "vault:read", Value::Null)
            .await
            .expect("declared method");
        assert_eq!(read, json!("public"));
        let err = call_service(&caller, "vault", "vault:secret", Value::Null)
            .await
            .expect_err("undeclared method");
        assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));
    })
    .await;
}

#[tokio::test]
async fn unknown_services_are_peer_not_found() {
    bounded(async {
        let url = start().await;
        let _service = billing(&url).await;
        let caller = Client::connect(&url).await.expect("caller");
        let err = call_service(&caller, "shipping", "shipping:quote", Value::Null)
            .await
            .expect_err("no such service");
        assert_eq!(err.code(), Some(ErrorCode::PEER_NOT_FOUND));

        // A connection that merely identified, without registering, is not
        // a service either.
        let bystander = Client::connect(&url).await.expect("bystander");
        bystander.identify("shipping").await.expect("identify");
        let err = call_service(&caller, "shipping", "shipping:quote", Value::Null)
            .await
            .expect_err("not registered");
        assert_eq!(err.code(), Some(ErrorCode::PEER_NOT_FOUND));
    })
    .await;
}

#[tokio::test]
async fn a_departed_service_is_peer_not_found() {
    bounded(async {
        let url = start().await;
        let service = billing(&url).await;
        let caller = Client::connect(&url).await.expect("caller");
        call_service(&caller, "billing", "billing:charge", json!({"amount": 1}))
            .await
            .expect("service up");

        service.close().await;
        // The hub drops it once it sees the connection end.
        while !services(&caller).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = call_service(&caller, "billing", "billing:charge", json!({"amount": 1}))
            .await
            .expect_err("service gone");
        assert_eq!(err.code(), Some(ErrorCode::PEER_NOT_FOUND));

        // The name is free again: a new instance takes over.
        let _again = billing(&url).await;
        call_service(&caller, "billing", "billing:charge", json!({"amount": 2}))
            .await
            .expect("new instance");
    })
    .await;
}

#[tokio::test]
async fn registration_is_checked() {
    bounded(async {
        let url = start().await;
        let _billing = billing(&url).await;

        // Someone else cannot take a live service's name.
        let err = ServiceBuilder::new(url.as_str(), "billing")
            .method("billing:charge", |_: Value| async move {
                Ok::<_, MethodError>(Value::Null)
            })
            .connect()
            .await
            .expect_err("name taken");
        assert_eq!(err.code(), Some(ErrorCode::NAME_TAKEN));

        let raw = Client::connect(&url).await.expect("raw");
        // Registering a name the connection did not claim.
        let err = raw
            .request("hub:register", json!({"name": "billing", "methods": []}))
            .await
            .expect_err("not identified");
        assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));

        raw.identify("tools").await.expect("identify");
        // Reserved namespaces and bad names are refused.
        for bad in ["helios:subscribe", "hub:services", "no spaces allowed"] {
            let err = raw
                .request("hub:register", json!({"name": "tools", "methods": [bad]}))
                .await
                .expect_err("bad method");
            assert_eq!(err.code(), Some(ErrorCode::INVALID_PAYLOAD), "{bad}");
        }
        // Without `methods` the hub asks for the manifest, which this
        // client does not serve.
        let err = raw
            .request("hub:register", json!({"name": "tools"}))
            .await
            .expect_err("no manifest");
        assert_eq!(err.code(), Some(ErrorCode::METHOD_NOT_FOUND));
        assert_eq!(services(&raw).await.len(), 1);
    })
    .await;
}
