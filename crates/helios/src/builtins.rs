//! Built-in methods every Helios server answers (DESIGN.md §2).

use helios_protocol::now_ms;
use serde_json::{Value, json};

use crate::context::Context;
use crate::error::MethodError;
use crate::handler::erase_method;
use crate::router::{MethodOptions, RouteTable};

async fn ping(_: Context<Value>) -> Result<Value, MethodError> {
    Ok(json!({ "pong": true, "timestamp": now_ms() }))
}

async fn echo(ctx: Context<Value>) -> Result<Value, MethodError> {
    Ok(ctx.payload)
}

pub(crate) fn register(routes: &mut RouteTable) {
    let builtins = [
        ("system:ping", erase_method(ping)),
        ("system:echo", erase_method(echo)),
    ];
    for (name, handler) in builtins {
        // Built-in names are fixed and registered first: a clash is our bug.
        if let Err(e) = routes.add_builtin(name, handler, MethodOptions::new()) {
            tracing::error!("built-in {name} not registered: {e}");
        }
    }
}
