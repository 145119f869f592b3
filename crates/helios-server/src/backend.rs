//! The HTTP backend: methods this server does not know are POSTed to it as
//! JSON, and optional hooks let it allow or deny connections and
//! subscriptions. The wire format is in `docs/backend.md`.

use std::time::Duration;

use bytes::Bytes;
use helios::{Context, Helios, MethodError};
use helios_protocol::ErrorCode;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Largest backend answer read (bytes).
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// A client of the backend, cheap to clone.
#[derive(Clone)]
pub(crate) struct Backend {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Option<String>,
    timeout: Duration,
}

/// Why a backend call did not produce an answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Timeout, refused connection, 5xx, or an answer that is not JSON.
    Unavailable(String),
    /// The backend answered `{error: {code, message}}`.
    Error(MethodError),
}

impl Backend {
    pub(crate) fn new(url: Option<String>, timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(http);
        Self {
            client,
            url,
            timeout,
        }
    }

    /// A hook is a full URL or a path on the backend's origin
    /// (`http://host:port`).
    pub(crate) fn hook_url(&self, hook: &str) -> String {
        let origin = self.url.as_deref().and_then(|u| {
            let uri: http::Uri = u.parse().ok()?;
            Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
        });
        match (origin, hook.starts_with('/')) {
            (Some(origin), true) => format!("{origin}{hook}"),
            _ => hook.to_owned(),
        }
    }

    /// POSTs `body` to `url` and reads `{data}` or `{error}`.
    pub(crate) async fn post(&self, url: &str, body: &Value) -> Result<Value, CallError> {
        let unavailable = |m: String| CallError::Unavailable(m);
        let req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("helios/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| unavailable(format!("bad backend URL {url:?}: {e}")))?;
        let call = async {
            let resp =
                self.client.request(req).await.map_err(|e| {
                    unavailable(format!("backend unreachable: {}", error_chain(&e)))
                })?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| unavailable(format!("backend answer could not be read: {e}")))?
                .to_bytes();
            Ok::<_, CallError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                unavailable(format!(
                    "backend did not answer within {} ms",
                    self.timeout.as_millis()
                ))
            })??;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if let Some(err) = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .filter(|e| !e.is_null())
        {
            let code = err
                .get("code")
                .and_then(Value::as_str)
                .map_or(ErrorCode::METHOD_ERROR, |c| ErrorCode::from(c.to_owned()));
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("backend error")
                .to_owned();
            let mut e = MethodError::new(code, message);
            e.details = err.get("details").cloned();
            return Err(CallError::Error(e));
        }
        if status.is_server_error() {
            return Err(unavailable(format!("backend answered HTTP {status}")));
        }
        if !status.is_success() {
            return Err(unavailable(format!(
                "backend answered HTTP {status} without an error body"
            )));
        }
        match parsed {
            Some(v) => Ok(v),
            None => Err(unavailable("backend answer is not JSON".to_owned())),
        }
    }
}

/// The whole chain of an error (hyper's top-level message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// The fallback handler: forwards a method call to the backend.
pub(crate) fn proxy(
    backend: Backend,
) -> impl Fn(Context<Value>) -> futures_like::Fut + Send + Sync + 'static {
    move |ctx: Context<Value>| {
        let backend = backend.clone();
        Box::pin(async move {
            let Some(url) = backend.url.clone() else {
                return Err(MethodError::new(
                    ErrorCode::METHOD_NOT_FOUND,
                    format!("no method {:?}", ctx.method()),
                ));
            };
            let conn = ctx.connection();
            let body = json!({
                "method": ctx.method(),
                "payload": ctx.payload,
                "starlingId": conn.id(),
                "user": conn.user_id(),
                "meta": {
                    "requestId": ctx.request_id().map(|id| id.to_string()),
                    "timestamp": ctx.timestamp(),
                    "name": conn.name(),
                    "data": conn.data(),
                },
            });
            let result = backend.post(&url, &body).await;
            metrics(
                ctx.helios(),
                result.is_ok() || matches!(result, Err(CallError::Error(_))),
            );
            match result {
                Ok(v) => Ok(v.get("data").cloned().unwrap_or(Value::Null)),
                Err(CallError::Error(e)) => Err(e),
                Err(CallError::Unavailable(reason)) => {
                    tracing::warn!(method = %ctx.method(), %reason, "backend call failed");
                    Err(MethodError::new(ErrorCode::METHOD_ERROR, reason))
                }
            }
        })
    }
}

fn metrics(helios: &Helios, ok: bool) {
    helios.metrics().backend_call(ok);
}

/// Asks a hook whether to allow something: `{allow: bool, reason?}`.
/// Anything else (unreachable, timeout, not JSON) denies: hooks fail closed.
pub(crate) async fn ask(backend: &Backend, hook: &str, body: Value) -> Result<Value, String> {
    let url = backend.hook_url(hook);
    match backend.post(&url, &body).await {
        Ok(v) if v.get("allow").and_then(Value::as_bool) == Some(true) => Ok(v),
        Ok(v) => Err(v
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("denied by the backend")
            .to_owned()),
        Err(CallError::Error(e)) => Err(e.message),
        Err(CallError::Unavailable(reason)) => Err(reason),
    }
}

pub(crate) mod futures_like {
    //! The boxed future type of the proxy handler.
    use std::future::Future;
    use std::pin::Pin;

    use helios::MethodError;
    use serde_json::Value;

    pub(crate) type Fut = Pin<Box<dyn Future<Output = Result<Value, MethodError>> + Send>>;
}
