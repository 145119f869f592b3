//! Built-in methods every Helios server answers (DESIGN.md §2).

use helios_protocol::{ErrorCode, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::Context;
use crate::error::MethodError;
use crate::handler::erase_method;
use crate::names::{Claim, check_name};
use crate::router::{MethodOptions, RouteTable};

async fn ping(_: Context<Value>) -> Result<Value, MethodError> {
    Ok(json!({ "pong": true, "timestamp": now_ms() }))
}

async fn echo(ctx: Context<Value>) -> Result<Value, MethodError> {
    Ok(ctx.payload)
}

#[derive(Deserialize)]
struct TopicArgs {
    topic: String,
    #[serde(default)]
    data: Value,
}

async fn subscribe(ctx: Context<TopicArgs>) -> Result<Value, MethodError> {
    let TopicArgs { topic, data } = ctx.payload;
    ctx.meta
        .helios
        .client_subscribe(&ctx.meta.connection, &topic, data)
        .await?;
    Ok(json!({ "topic": topic, "subscribed": true }))
}

async fn unsubscribe(ctx: Context<TopicArgs>) -> Result<Value, MethodError> {
    let topic = ctx.payload.topic;
    ctx.meta
        .helios
        .leave_room(&ctx.meta.connection, &topic)
        .await;
    Ok(json!({ "topic": topic, "subscribed": false }))
}

async fn publish(ctx: Context<TopicArgs>) -> Result<Value, MethodError> {
    let TopicArgs { topic, data } = ctx.payload;
    let r = ctx
        .meta
        .helios
        .client_publish(&ctx.meta.connection, &topic, data)
        .await?;
    Ok(json!({
        "topic": topic,
        "delivered": r.delivered,
        "offset": r.position.offset,
        "epoch": r.position.epoch,
    }))
}

async fn presence(ctx: Context<TopicArgs>) -> Result<Value, MethodError> {
    let topic = ctx.payload.topic;
    let (rule, _) = ctx.meta.helios.rules().rule_for(&topic);
    if !rule.presence {
        return Err(MethodError::new(
            ErrorCode::FORBIDDEN,
            format!("presence is off for {topic:?}"),
        ));
    }
    let members = ctx.meta.helios.presence(&topic);
    Ok(json!({ "topic": topic, "count": members.len(), "members": members }))
}

#[derive(Deserialize)]
struct IdentifyArgs {
    name: String,
}

async fn identify(ctx: Context<IdentifyArgs>) -> Result<Value, MethodError> {
    let name = ctx.payload.name;
    check_name(&name).map_err(|m| MethodError::new(ErrorCode::INVALID_PAYLOAD, m))?;
    let conn = &ctx.meta.connection;
    let previous = conn.name().map(std::sync::Arc::<str>::from);
    match ctx
        .meta
        .helios
        .names()
        .claim(&name, &conn.id_arc(), previous.as_ref())
    {
        Claim::Taken => Err(MethodError::new(
            ErrorCode::NAME_TAKEN,
            format!("the name {name:?} is held by another connection"),
        )),
        Claim::Claimed => {
            conn.set_name(Some(std::sync::Arc::from(name.as_str())));
            Ok(json!({ "name": name, "starlingId": conn.id() }))
        }
    }
}

pub(crate) fn register(routes: &mut RouteTable) {
    let builtins = [
        ("system:ping", erase_method(ping)),
        ("system:echo", erase_method(echo)),
        ("helios:subscribe", erase_method(subscribe)),
        ("helios:unsubscribe", erase_method(unsubscribe)),
        ("helios:publish", erase_method(publish)),
        ("helios:presence", erase_method(presence)),
        ("helios:identify", erase_method(identify)),
    ];
    for (name, handler) in builtins {
        // Built-in names are fixed and registered first: a clash is our bug.
        if let Err(e) = routes.add_builtin(name, handler, MethodOptions::new()) {
            tracing::error!("built-in {name} not registered: {e}");
        }
    }
}
