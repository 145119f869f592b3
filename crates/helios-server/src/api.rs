//! The server HTTP API: what a backend in any language calls to publish to
//! rooms (including rooms no client may publish to), as Centrifugo's server
//! API does. On only with a key (`--api-key`, `HELIOS_API_KEY`, `[api]
//! key`); every call carries `Authorization: apikey KEY` (or `Bearer KEY`).
//!
//! - `POST /api/publish` `{topic, data}` → `{topic, offset, epoch, delivered}`
//! - `POST /api/broadcast` `{topics, data}` → `{results: [{topic, offset,
//!   epoch, delivered} | {topic, error}]}`
//! - `POST /api/presence` `{topic}` → `{topic, count, members}`
//!
//! Errors are JSON `{error: {code, message}}`: 401 `UNAUTHORIZED`, 400
//! `INVALID_PAYLOAD`, 503 `BROKER_UNAVAILABLE`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use helios::Helios;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Shortest accepted API key, in bytes.
pub(crate) const MIN_KEY_LEN: usize = 16;
/// Most topics in one `/api/broadcast`.
const MAX_TOPICS: usize = 1000;

#[derive(Clone)]
struct Api {
    helios: Helios,
    key: String,
}

/// The `/api/*` routes.
pub(crate) fn routes(helios: Helios, key: String) -> Router {
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/broadcast", post(broadcast))
        .route("/api/presence", post(presence))
        .with_state(Api { helios, key })
}

/// Why a call failed: status, code, message.
type Refusal = (StatusCode, &'static str, String);

fn error((status, code, message): Refusal) -> Response {
    let body = json!({ "error": { "code": code, "message": message } });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The key check and the body, or the answer that refuses them.
fn accept<T: DeserializeOwned>(api: &Api, headers: &HeaderMap, body: &[u8]) -> Result<T, Refusal> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("apikey ")
                .or_else(|| v.strip_prefix("Bearer "))
        })
        .unwrap_or("");
    if !same(given.as_bytes(), api.key.as_bytes()) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or wrong API key (Authorization: apikey KEY)".to_owned(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, "INVALID_PAYLOAD", e.to_string()))
}

/// Compares in time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    topic: String,
    data: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Broadcast {
    topics: Vec<String>,
    data: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Presence {
    topic: String,
}

/// One publication, as the API answers it.
async fn publish_one(helios: &Helios, topic: &str, data: Value) -> Result<Value, Refusal> {
    helios::check_topic(topic).map_err(|e| (StatusCode::BAD_REQUEST, "INVALID_PAYLOAD", e))?;
    let r = helios.broadcast(topic, data).await.map_err(|e| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "BROKER_UNAVAILABLE",
            e.to_string(),
        )
    })?;
    Ok(json!({
        "topic": topic,
        "offset": r.position.offset,
        "epoch": r.position.epoch,
        "delivered": r.delivered,
    }))
}

async fn publish(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    let p: Publish = match accept(&api, &headers, &body) {
        Ok(p) => p,
        Err(refused) => return error(refused),
    };
    match publish_one(&api.helios, &p.topic, p.data).await {
        Ok(answer) => ok(&answer),
        Err(refused) => error(refused),
    }
}

async fn broadcast(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    let b: Broadcast = match accept(&api, &headers, &body) {
        Ok(b) => b,
        Err(refused) => return error(refused),
    };
    if b.topics.is_empty() || b.topics.len() > MAX_TOPICS {
        return error((
            StatusCode::BAD_REQUEST,
            "INVALID_PAYLOAD",
            format!("topics must hold 1 to {MAX_TOPICS} rooms"),
        ));
    }
    let mut results = Vec::with_capacity(b.topics.len());
    for topic in &b.topics {
        results.push(
            match publish_one(&api.helios, topic, b.data.clone()).await {
                Ok(answer) => answer,
                Err((_, code, message)) => {
                    json!({ "topic": topic, "error": { "code": code, "message": message } })
                }
            },
        );
    }
    ok(&json!({ "results": results }))
}

async fn presence(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    let p: Presence = match accept(&api, &headers, &body) {
        Ok(p) => p,
        Err(refused) => return error(refused),
    };
    if let Err(e) = helios::check_topic(&p.topic) {
        return error((StatusCode::BAD_REQUEST, "INVALID_PAYLOAD", e));
    }
    let members = api.helios.cluster_presence(&p.topic).await;
    ok(&json!({ "topic": p.topic, "count": members.len(), "members": members }))
}
