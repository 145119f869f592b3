//! Handlers are plain async fns; these traits erase their types so the
//! router can store them side by side.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use helios_protocol::{ErrorCode, Payload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::context::Context;
use crate::error::MethodError;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The outcome of a method: the `data` of the response, or its `error`.
pub type Reply = Result<Value, MethodError>;

/// A method's outcome on its way to the response: `data` kept as it is
/// ([`Payload`]), raw JSON text included.
pub(crate) type Outcome = Result<Payload, MethodError>;

/// What a method handler may return: `Result<R, E>` with a serialisable `R`
/// and an error convertible to [`MethodError`].
pub trait IntoReply {
    /// Converts into the response outcome.
    fn into_reply(self) -> Reply;

    /// Converts into the response's `data` as it will be sent: a
    /// [`Payload`] result (raw JSON text, say) is kept as it is.
    #[doc(hidden)]
    fn into_payload(self) -> Result<Payload, MethodError>
    where
        Self: Sized,
    {
        self.into_reply().map(Payload::Value)
    }
}

impl<R: Serialize + 'static, E: Into<MethodError>> IntoReply for Result<R, E> {
    fn into_reply(self) -> Reply {
        result_value(self.into_payload()?)
    }

    fn into_payload(self) -> Outcome {
        let r = self.map_err(Into::into)?;
        let r = match moved_as::<R, Payload>(r) {
            Ok(payload) => return Ok(payload),
            Err(r) => r,
        };
        match moved_as::<R, Value>(r) {
            Ok(value) => Ok(Payload::Value(value)),
            Err(r) => serde_json::to_value(r).map(Payload::Value).map_err(|e| {
                MethodError::internal(format!("handler result is not serialisable: {e}"))
            }),
        }
    }
}

/// `from` as a `To` when the two are the same type, else `from` back.
///
/// Handlers that take or return a `serde_json::Value` skip the serde round
/// trip, which for a `Value` is a deep copy (about 1,500 instructions of a
/// 64-byte `system:echo`).
fn moved_as<From: 'static, To: 'static>(from: From) -> Result<To, From> {
    let mut slot = Some(from);
    let moved = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<To>>()
        .and_then(Option::take);
    match (moved, slot) {
        (Some(to), _) => Ok(to),
        (None, Some(from)) => Err(from),
        // Unreachable: the slot is only emptied by a successful downcast.
        (None, None) => unreachable!("moved_as: slot emptied without a downcast"),
    }
}

/// A method handler: any `async fn(Context<T>) -> Result<R, E>` (or closure)
/// where `T` is deserialisable from the payload.
///
/// A payload that does not fit `T` is answered with `INVALID_PAYLOAD` before
/// the handler runs. A JSON payload is read into `T` straight from its text;
/// `T` = [`Payload`] takes it as it came, and returning a `Payload` sends it
/// back as it is (that is how `system:echo` answers).
pub trait MethodHandler<T>: Send + Sync + 'static {
    /// Runs the handler on a context with the payload as it came.
    fn call(&self, ctx: Context<Payload>) -> BoxFuture<Result<Payload, MethodError>>;
}

impl<F, Fut, T> MethodHandler<T> for F
where
    F: Fn(Context<T>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoReply,
    T: DeserializeOwned + Send + 'static,
{
    fn call(&self, ctx: Context<Payload>) -> BoxFuture<Outcome> {
        match deserialize_payload::<T>(ctx) {
            Ok(ctx) => {
                let fut = self(ctx);
                Box::pin(async move { fut.await.into_payload() })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// The payload as the handler's `T`, moved when it already is one.
fn deserialize_payload<T: DeserializeOwned + 'static>(
    ctx: Context<Payload>,
) -> Result<Context<T>, MethodError> {
    let Context { payload, meta } = ctx;
    let payload = match moved_as::<Payload, T>(payload) {
        Ok(payload) => return Ok(Context { payload, meta }),
        Err(payload) => payload,
    };
    let read = match payload {
        Payload::Value(v) => match moved_as::<Value, T>(v) {
            Ok(payload) => return Ok(Context { payload, meta }),
            Err(v) => serde_json::from_value::<T>(v),
        },
        Payload::Raw(raw) => serde_json::from_str::<T>(raw.get()),
    };
    match read {
        Ok(payload) => Ok(Context { payload, meta }),
        Err(e) => Err(payload_misfit(&meta.name, e)),
    }
}

/// `INVALID_PAYLOAD`: the payload does not fit what `name`'s handler (or
/// its middleware, or the relay hook) takes.
pub(crate) fn payload_misfit(name: &str, e: impl std::fmt::Display) -> MethodError {
    MethodError::new(
        ErrorCode::INVALID_PAYLOAD,
        format!("payload does not fit {name}: {e}"),
    )
}

/// A handler's result as a `Value` (for middleware and `IntoReply`).
pub(crate) fn result_value(data: Payload) -> Reply {
    data.into_value()
        .map_err(|e| MethodError::internal(format!("handler result is not a JSON value: {e}")))
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
        match deserialize_payload::<T>(ctx.map(Payload::Value)) {
            Ok(ctx) => {
                let fut = self(ctx);
                Box::pin(async move { fut.await.into_outcome() })
            }
            Err(e) => Box::pin(std::future::ready(Err(e.message))),
        }
    }
}

pub(crate) type ErasedMethod = Arc<dyn Fn(Context<Payload>) -> BoxFuture<Outcome> + Send + Sync>;
pub(crate) type ErasedEvent =
    Arc<dyn Fn(Context<Value>) -> BoxFuture<Result<(), String>> + Send + Sync>;

pub(crate) fn erase_method<T, H: MethodHandler<T>>(h: H) -> ErasedMethod {
    Arc::new(move |ctx| h.call(ctx))
}

pub(crate) fn erase_event<T, H: EventHandler<T>>(h: H) -> ErasedEvent {
    Arc::new(move |ctx| h.call(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_move_without_a_round_trip_and_other_types_come_back() {
        let v = serde_json::json!({"a": [1, 2]});
        assert_eq!(moved_as::<Value, Value>(v.clone()), Ok(v.clone()));
        assert_eq!(moved_as::<Value, String>(v.clone()), Err(v));
        assert_eq!(moved_as::<u8, Value>(3), Err(3));
    }

    #[test]
    fn typed_and_value_handlers_reply_the_same() {
        #[derive(serde::Serialize)]
        struct Typed {
            a: Vec<u8>,
        }
        let typed: Result<Typed, MethodError> = Ok(Typed { a: vec![1, 2] });
        let value: Result<Value, MethodError> = Ok(serde_json::json!({"a": [1, 2]}));
        assert_eq!(typed.into_reply().ok(), value.into_reply().ok());
    }
}
