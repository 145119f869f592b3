//! Handlers are plain async fns; these traits erase their types so the
//! router can store them side by side.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use helios_protocol::ErrorCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::context::Context;
use crate::error::MethodError;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The outcome of a method: the `data` of the response, or its `error`.
pub type Reply = Result<Value, MethodError>;

/// What a method handler may return: `Result<R, E>` with a serialisable `R`
/// and an error convertible to [`MethodError`].
pub trait IntoReply {
    /// Converts into the response outcome.
    fn into_reply(self) -> Reply;
}

impl<R: Serialize, E: Into<MethodError>> IntoReply for Result<R, E> {
    fn into_reply(self) -> Reply {
        match self {
            Ok(r) => serde_json::to_value(r).map_err(|e| {
                MethodError::internal(format!("handler result is not serialisable: {e}"))
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// A method handler: any `async fn(Context<T>) -> Result<R, E>` (or closure)
/// where `T` is deserialisable from the payload.
///
/// A payload that does not fit `T` is answered with `INVALID_PAYLOAD` before
/// the handler runs.
pub trait MethodHandler<T>: Send + Sync + 'static {
    /// Runs the handler on a context with a raw payload.
    fn call(&self, ctx: Context<Value>) -> BoxFuture<Reply>;
}

impl<F, Fut, T> MethodHandler<T> for F
where
    F: Fn(Context<T>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoReply,
    T: DeserializeOwned + Send + 'static,
{
    fn call(&self, ctx: Context<Value>) -> BoxFuture<Reply> {
        match deserialize_payload::<T>(ctx) {
            Ok(ctx) => {
                let fut = self(ctx);
                Box::pin(async move { fut.await.into_reply() })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

fn deserialize_payload<T: DeserializeOwned>(
    ctx: Context<Value>,
) -> Result<Context<T>, MethodError> {
    let Context { payload, meta } = ctx;
    match serde_json::from_value::<T>(payload) {
        Ok(payload) => Ok(Context { payload, meta }),
        Err(e) => Err(MethodError::new(
            ErrorCode::INVALID_PAYLOAD,
            format!("payload does not fit {}: {e}", meta.name),
        )),
    }
}

/// What a notification handler may return: `()` or `Result<(), E>` (an
/// error is logged).
pub trait IntoEventOutcome {
    /// `Err` with a description when the handler failed.
    fn into_outcome(self) -> Result<(), String>;
}

impl IntoEventOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> IntoEventOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// A notification handler: any `async fn(Context<T>)`.
pub trait EventHandler<T>: Send + Sync + 'static {
    /// Runs the handler.
    fn call(&self, ctx: Context<Value>) -> BoxFuture<Result<(), String>>;
}

impl<F, Fut, T> EventHandler<T> for F
where
    F: Fn(Context<T>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoEventOutcome,
    T: DeserializeOwned + Send + 'static,
{
    fn call(&self, ctx: Context<Value>) -> BoxFuture<Result<(), String>> {
        match deserialize_payload::<T>(ctx) {
            Ok(ctx) => {
                let fut = self(ctx);
                Box::pin(async move { fut.await.into_outcome() })
            }
            Err(e) => Box::pin(std::future::ready(Err(e.message))),
        }
    }
}

pub(crate) type ErasedMethod = Arc<dyn Fn(Context<Value>) -> BoxFuture<Reply> + Send + Sync>;
pub(crate) type ErasedEvent =
    Arc<dyn Fn(Context<Value>) -> BoxFuture<Result<(), String>> + Send + Sync>;

pub(crate) fn erase_method<T, H: MethodHandler<T>>(h: H) -> ErasedMethod {
    Arc::new(move |ctx| h.call(ctx))
}

pub(crate) fn erase_event<T, H: EventHandler<T>>(h: H) -> ErasedEvent {
    Arc::new(move |ctx| h.call(ctx))
}
