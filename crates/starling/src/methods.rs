//! Server → client requests: the handler registry and the in-flight table.
//!
//! Each request runs in its own task so a slow handler never blocks the
//! socket. The connection task keeps an abort handle per in-flight request:
//! a `helios:cancel` aborts the task and answers `REQUEST_CANCELLED`; the
//! task's own answer, if it still comes, finds no entry and is dropped, so
//! each request gets exactly one response.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use helios_protocol::{
    Encoding, ErrorBody, ErrorCode, Message, Payload, Request, RequestId, Response,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_websockets::Message as WsMessage;

use crate::error::MethodError;
use crate::frame;
use crate::reliable::Recent;

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, MethodError>> + Send>>;
type Handler = Arc<dyn Fn(Value) -> HandlerFuture + Send + Sync>;

/// The handlers registered on the builder, by method name.
#[derive(Default, Clone)]
pub(crate) struct Methods {
    map: HashMap<String, Handler>,
}

impl Methods {
    /// Registers a handler; `false` if the name was taken.
    pub(crate) fn insert<P, R, E, F, Fut>(&mut self, name: String, f: F) -> bool
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<MethodError> + Send + 'static,
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        if self.map.contains_key(&name) {
            return false;
        }
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |payload: Value| {
            let f = Arc::clone(&f);
            Box::pin(async move {
                let args: P = serde_json::from_value(payload).map_err(MethodError::from)?;
                let out = f(args).await.map_err(Into::into)?;
                serde_json::to_value(out).map_err(MethodError::from_display)
            })
        });
        self.map.insert(name, handler);
        true
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Handler> {
        self.map.get(name)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// A finished handler's answer, on its way to the connection task.
pub(crate) type Reply = (RequestId, WsMessage);

/// How many answers are remembered for resent server requests.
const ANSWERED: usize = 256;

/// Runs server → client requests and tracks the ones in flight.
pub(crate) struct Dispatcher {
    methods: Arc<Methods>,
    inflight: HashMap<RequestId, AbortHandle>,
    /// Answers already sent, replayed when the server resends a request
    /// (reliable delivery: same `requestId`).
    answered: Recent<RequestId, WsMessage>,
    replies: mpsc::Sender<Reply>,
    encoding: Encoding,
    max_inflight: usize,
}

impl Dispatcher {
    pub(crate) fn new(
        methods: Arc<Methods>,
        encoding: Encoding,
        max_inflight: usize,
        replies: mpsc::Sender<Reply>,
    ) -> Self {
        Self {
            methods,
            inflight: HashMap::new(),
            answered: Recent::new(ANSWERED),
            replies,
            encoding,
            max_inflight,
        }
    }

    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Starts the handler for a request. Returns a frame to send at once
    /// when the request is answered without running anything.
    ///
    /// A request resent under an id already answered gets the same answer
    /// again; one whose handler is still running is ignored (its answer
    /// will come).
    pub(crate) fn dispatch(&mut self, req: Request) -> Option<WsMessage> {
        if let Some(answer) = self.answered.get(&req.id) {
            tracing::debug!(request_id = %req.id, "resent request answered again");
            return Some(answer.clone());
        }
        if self.inflight.contains_key(&req.id) {
            tracing::debug!(request_id = %req.id, "resent request still running, ignored");
            return None;
        }
        let Some(handler) = self.methods.get(&req.method) else {
            return self.answer(Response::error(
                req.id,
                ErrorCode::METHOD_NOT_FOUND,
                format!("method {:?} is not registered on this client", req.method),
            ));
        };
        if self.inflight.len() >= self.max_inflight {
            return self.answer(Response::error(
                req.id,
                ErrorCode::TOO_MANY_REQUESTS,
                "too many requests in flight on this client",
            ));
        }
        let handler = Arc::clone(handler);
        let id = req.id.clone();
        let encoding = self.encoding;
        let replies = self.replies.clone();
        let limit = req.timeout_ms.map(Duration::from_millis);
        let payload = req.payload.map_or(Ok(Value::Null), Payload::into_value);
        let task_id = id.clone();
        let task = tokio::spawn(async move {
            let result = match payload {
                Ok(payload) => run(handler, payload, limit).await,
                Err(e) => Err(ErrorBody::new(
                    ErrorCode::INVALID_PAYLOAD,
                    format!("payload is not a usable JSON value: {e}"),
                )),
            };
            let response = match result {
                Ok(data) => Response::ok(task_id.clone(), data),
                Err(err) => Response::err(task_id.clone(), err),
            };
            match frame::encode(encoding, &Message::Response(response)) {
                Ok(frame) => {
                    // The connection may be gone; then nobody wants the answer.
                    let _ = replies.send((task_id, frame)).await;
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a handler's response"),
            }
        });
        self.inflight.insert(id, task.abort_handle());
        None
    }

    /// A handler's answer arrived; `true` if it should be sent (the request
    /// was not cancelled meanwhile). It is remembered for resends.
    pub(crate) fn finish(&mut self, id: &RequestId, frame: &WsMessage) -> bool {
        if self.inflight.remove(id).is_some() {
            self.answered.insert(id.clone(), frame.clone());
            true
        } else {
            false
        }
    }

    /// Cancels an in-flight request. Returns the `REQUEST_CANCELLED` answer,
    /// or `None` if the id is unknown (finished already, or never seen).
    pub(crate) fn cancel(&mut self, id: &RequestId) -> Option<WsMessage> {
        let task = self.inflight.remove(id)?;
        task.abort();
        self.answer(Response::error(
            id.clone(),
            ErrorCode::REQUEST_CANCELLED,
            "request cancelled by the caller",
        ))
    }

    /// Stops every running handler (the connection is gone).
    pub(crate) fn abort_all(&mut self) {
        for (_, task) in self.inflight.drain() {
            task.abort();
        }
    }

    fn answer(&self, response: Response) -> Option<WsMessage> {
        match frame::encode(self.encoding, &Message::Response(response)) {
            Ok(frame) => Some(frame),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a response");
                None
            }
        }
    }
}

/// Runs one handler, turning a panic or an overrun into an error body.
async fn run(
    handler: Handler,
    payload: Value,
    limit: Option<Duration>,
) -> Result<Value, ErrorBody> {
    // Calling the handler happens inside the guarded future, so a panic in
    // its synchronous part is caught too.
    let call = AssertUnwindSafe(async move { handler(payload).await }).catch_unwind();
    let outcome = match limit {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                return Err(ErrorBody::new(
                    ErrorCode::REQUEST_TIMEOUT,
                    "handler did not finish within the request's timeout",
                ));
            }
        },
        None => call.await,
    };
    match outcome {
        Ok(Ok(data)) => Ok(data),
        Ok(Err(err)) => Err(err.into_body()),
        Err(_panic) => Err(ErrorBody::new(
            ErrorCode::METHOD_ERROR,
            "the handler panicked",
        )),
    }
}
