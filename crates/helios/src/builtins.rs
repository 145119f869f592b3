//! Built-in methods every Helios server answers (DESIGN.md §2).

use helios_protocol::{ErrorCode, Payload, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::Context;
use crate::error::MethodError;
use crate::handler::{ErasedMethod, erase_method};
use crate::names::{Claim, check_name};
use crate::router::{MethodOptions, RouteTable};

async fn ping(_: Context<Value>) -> Result<Value, MethodError> {
    Ok(json!({ "pong": true, "timestamp": now_ms() }))
}

/// The payload back as it came: JSON text is neither parsed into a tree nor
/// written out again.
async fn echo(ctx: Context<Payload>) -> Result<Payload, MethodError> {
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
    // The room's position once joined: a client that has received nothing
    // yet can recover from here (`since`).
    let mut answer = json!({ "topic": topic, "subscribed": true });
    if let Ok(h) = ctx.meta.helios.broker().history(&topic, None, 0).await {
        answer["offset"] = json!(h.position.offset);
        answer["epoch"] = json!(h.position.epoch);
    }
    Ok(answer)
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
    let members = ctx.meta.helios.cluster_presence(&topic).await;
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
    match ctx.meta.helios.claim_name(conn, &name).await {
        Ok(Claim::Taken) => Err(MethodError::new(
            ErrorCode::NAME_TAKEN,
            format!("the name {name:?} is held by another connection"),
        )),
        Ok(Claim::Claimed) => Ok(json!({ "name": name, "starlingId": conn.id() })),
        Err(e) => Err(MethodError::new(
            ErrorCode::BROKER_UNAVAILABLE,
            e.to_string(),
        )),
    }
}

async fn get_token(ctx: Context<Value>) -> Result<Value, MethodError> {
    let Some(recovery) = ctx.meta.helios.config().recovery.as_ref() else {
        return Err(MethodError::new(
            ErrorCode::METHOD_NOT_FOUND,
            "recovery is not enabled",
        ));
    };
    let token = recovery
        .issue(ctx.meta.connection.id())
        .map_err(MethodError::internal)?;
    ctx.meta.connection.mark_recoverable();
    Ok(json!({ "token": token, "expiresIn": recovery.ttl.as_secs() }))
}

/// Registers a built-in, and in permissive mode its dotted name too
/// (`helios.subscribe`, `system.ping`: the newer Bun Helios's names).
fn add(
    routes: &mut RouteTable,
    name: &str,
    handler: ErasedMethod,
    opts: MethodOptions,
    dotted: bool,
) {
    let alias = name.replace(':', ".");
    if dotted && let Err(e) = routes.add_builtin(&alias, handler.clone(), opts.clone()) {
        tracing::error!("built-in {alias} not registered: {e}");
    }
    // Built-in names are fixed and registered first: a clash is our bug.
    if let Err(e) = routes.add_builtin(name, handler, opts) {
        tracing::error!("built-in {name} not registered: {e}");
    }
}

pub(crate) fn register(routes: &mut RouteTable, recovery: bool, dotted: bool) {
    if recovery {
        add(
            routes,
            "starling:getToken",
            erase_method(get_token),
            MethodOptions::new(),
            dotted,
        );
    }
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
        // Built-ins are short and their order matters (subscribe before
        // publish, publications in order): they run in line.
        add(
            routes,
            name,
            handler,
            MethodOptions::new().ordered(),
            dotted,
        );
    }
}

#[derive(Deserialize)]
struct RefreshArgs {
    token: String,
}

/// `helios:refresh {token}`: re-runs the authentication hook on a new
/// credential and, when it names the same user, replaces the connection's
/// claims and expiry (registered only when authentication is on).
async fn refresh(ctx: Context<RefreshArgs>) -> Result<Value, MethodError> {
    let conn = &ctx.meta.connection;
    let Some(hook) = ctx.meta.helios.auth_hook() else {
        return Err(MethodError::new(
            ErrorCode::UNAUTHORIZED,
            "authentication is not configured",
        ));
    };
    let req = crate::auth::HandshakeRequest::for_refresh(&ctx.payload.token, None);
    let auth = hook(req)
        .await
        .map_err(|e| MethodError::new(ErrorCode::UNAUTHORIZED, e.to_string()))?
        .ok_or_else(|| MethodError::new(ErrorCode::UNAUTHORIZED, "a token is required"))?;
    if auth.user_id().is_none() || conn.user_id().as_deref() != auth.user_id() {
        return Err(MethodError::new(
            ErrorCode::FORBIDDEN,
            "the token is for another user than this connection's",
        ));
    }
    let expires_at = auth.expiry().map(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    conn.set_auth(auth);
    Ok(json!({ "user": conn.user_id(), "expiresAt": expires_at }))
}

pub(crate) fn register_refresh(routes: &mut RouteTable, dotted: bool) {
    add(
        routes,
        "helios:refresh",
        erase_method(refresh),
        MethodOptions::new(),
        dotted,
    );
}
