//! Middleware: async fns around method handlers, chosen by glob pattern.

use std::future::Future;
use std::sync::Arc;

use helios_protocol::Payload;
use serde_json::Value;

use crate::context::Context;
use crate::handler::{BoxFuture, ErasedMethod, Outcome, Reply, payload_misfit, result_value};

/// Middleware wraps the handlers whose method names match its pattern. It
/// may inspect or change the context, call `next.run(ctx)` to go on, or
/// return an error to stop the call there.
///
/// ```
/// use helios::{Context, Helios, MethodError, Next};
/// use helios_protocol::ErrorCode;
///
/// async fn require_user(ctx: Context, next: Next) -> Result<serde_json::Value, MethodError> {
///     if ctx.connection().get("user").is_none() {
///         return Err(MethodError::new(ErrorCode::UNAUTHORIZED, "log in first"));
///     }
///     next.run(ctx).await
/// }
/// let helios = Helios::builder().middleware("admin:**", require_user);
/// # drop(helios);
/// ```
pub trait Middleware: Send + Sync + 'static {
    /// Runs the middleware.
    fn call(&self, ctx: Context<Value>, next: Next) -> BoxFuture<Reply>;
}

impl<F, Fut> Middleware for F
where
    F: Fn(Context<Value>, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    fn call(&self, ctx: Context<Value>, next: Next) -> BoxFuture<Reply> {
        Box::pin(self(ctx, next))
    }
}

/// The rest of the chain: the remaining middleware, then the handler.
pub struct Next {
    chain: Arc<[Arc<dyn Middleware>]>,
    index: usize,
    endpoint: ErasedMethod,
}

impl Next {
    pub(crate) fn new(chain: Arc<[Arc<dyn Middleware>]>, endpoint: ErasedMethod) -> Self {
        Self {
            chain,
            index: 0,
            endpoint,
        }
    }

    /// Runs the rest of the chain.
    pub async fn run(self, ctx: Context<Value>) -> Reply {
        match self.chain.get(self.index).cloned() {
            Some(mw) => {
                let next = Self {
                    chain: self.chain,
                    index: self.index + 1,
                    endpoint: self.endpoint,
                };
                mw.call(ctx, next).await
            }
            None => result_value((self.endpoint)(ctx.map(Payload::Value)).await?),
        }
    }

    /// Runs the chain on a payload as it came: straight to the handler when
    /// no middleware wraps it (the payload and the result stay as they
    /// are), else through the middleware, which sees `Value`s.
    pub(crate) async fn run_payload(self, ctx: Context<Payload>) -> Outcome {
        if self.index >= self.chain.len() {
            return (self.endpoint)(ctx).await;
        }
        let Context { payload, meta } = ctx;
        let payload = payload
            .into_value()
            .map_err(|e| payload_misfit(&meta.name, e))?;
        // Boxed: only routes with middleware take this path.
        Box::pin(self.run(Context { payload, meta }))
            .await
            .map(Payload::Value)
    }
}
