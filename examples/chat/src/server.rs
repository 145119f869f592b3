//! The chat server: methods, the `chat:*` room rule and the join/leave
//! announcements.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use helios::protocol::ErrorCode;
use helios::{
    Access, Context, Helios, MethodError, MethodOptions, Next, RoomAction, RoomEvent,
    RoomEventKind, RoomRequest, RoomRule,
};
use serde_json::Value;

use crate::events::{
    ChatEvent, JoinArgs, Joined, MAX_TEXT, SendArgs, Sent, check_nick, check_room, room_topic,
};

/// Connection data key: the nickname set by `chat:join`.
const NICK: &str = "chat.nick";
/// Connection data key: the rooms `chat:join` admitted this connection to.
const ADMITTED: &str = "chat.rooms";

/// The chat server, ready to [`serve`](Helios::serve).
///
/// Methods: `chat:join {room, nick}` and `chat:send {room, text}` (see the
/// crate docs); rooms `chat:<room>` keep 100 messages of history and list
/// their members with `helios:presence`.
pub fn app() -> Helios {
    // The hooks announce joins and leaves with `Helios::broadcast`, but a
    // room event carries only the connection, so they reach the server
    // through this cell, filled once the server is built. The cell makes a
    // reference cycle (server -> hook -> server): the server lives as long
    // as the process, which is what a chat binary wants.
    let server: Arc<OnceLock<Helios>> = Arc::new(OnceLock::new());
    let hook_server = Arc::clone(&server);
    let helios = Helios::builder()
        .room(
            "chat:*",
            RoomRule::new()
                .publish(Access::Nobody)
                .history(100)
                .validator(admitted),
        )
        .method_with("chat:join", join, MethodOptions::new().ordered())
        .middleware("chat:send", require_nick)
        .method_with("chat:send", send, MethodOptions::new().ordered())
        .on_room_event(move |event| announce(Arc::clone(&hook_server), event))
        .build();
    // Cannot fail: the cell is new and filled only here.
    let _ = server.set(helios.clone());
    helios
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn invalid(message: String) -> MethodError {
    MethodError::new(ErrorCode::INVALID_PAYLOAD, message)
}

/// `chat:join {room, nick}`: admits the connection to the room under the
/// nickname it claimed with `helios:identify`.
async fn join(ctx: Context<JoinArgs>) -> Result<Joined, MethodError> {
    let conn = ctx.connection().clone();
    let JoinArgs { room, nick } = ctx.payload;
    check_room(&room).map_err(invalid)?;
    check_nick(&nick).map_err(invalid)?;
    if conn.name().as_deref() != Some(nick.as_str()) {
        return Err(MethodError::new(
            ErrorCode::FORBIDDEN,
            format!("claim the nickname first: helios:identify {{\"name\": {nick:?}}}"),
        ));
    }
    let topic = room_topic(&room);
    let mut admitted: Vec<String> = conn.get_as(ADMITTED).unwrap_or_default();
    if !admitted.contains(&topic) {
        admitted.push(topic.clone());
    }
    conn.set(ADMITTED, &admitted);
    conn.set(NICK, &nick);
    Ok(Joined { topic, nick })
}

/// Room validator of `chat:*`: only connections `chat:join` admitted to the
/// room may subscribe (publishing is closed to clients by the rule).
async fn admitted(req: RoomRequest) -> bool {
    req.action == RoomAction::Subscribe
        && req
            .connection
            .get_as::<Vec<String>>(ADMITTED)
            .is_some_and(|rooms| rooms.contains(&req.topic))
}

/// Middleware of `chat:send`: the sender must have a nickname.
async fn require_nick(ctx: Context<Value>, next: Next) -> Result<Value, MethodError> {
    if ctx.connection().get(NICK).is_none() {
        return Err(MethodError::new(
            ErrorCode::FORBIDDEN,
            "join a room with chat:join first",
        ));
    }
    next.run(ctx).await
}

/// `chat:send {room, text}`: broadcasts `{type: "message", from, text, at}`
/// to a room the sender is in.
async fn send(ctx: Context<SendArgs>) -> Result<Sent, MethodError> {
    let conn = ctx.connection().clone();
    let helios = ctx.helios().clone();
    let SendArgs { room, text } = ctx.payload;
    check_room(&room).map_err(invalid)?;
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_TEXT {
        return Err(invalid(format!("messages are 1 to {MAX_TEXT} characters")));
    }
    let topic = room_topic(&room);
    if !conn.rooms().contains(&topic) {
        return Err(MethodError::new(
            ErrorCode::FORBIDDEN,
            format!("you are not in {room:?}"),
        ));
    }
    let from: String = conn.get_as(NICK).unwrap_or_default();
    let at = now_ms();
    let event = ChatEvent::Message {
        from,
        text: text.to_owned(),
        at,
    };
    let published = helios
        .broadcast(&topic, serde_json::to_value(event)?)
        .await
        .map_err(|e| MethodError::new(ErrorCode::BROKER_UNAVAILABLE, e.to_string()))?;
    Ok(Sent {
        offset: published.position.offset,
        at,
    })
}

/// The `room:subscribed` / `room:unsubscribed` hook: announces joins and
/// leaves (disconnects included) to the room.
async fn announce(server: Arc<OnceLock<Helios>>, event: RoomEvent) {
    if !event.topic.starts_with("chat:") {
        return;
    }
    let Some(nick) = event.connection.get_as::<String>(NICK) else {
        return;
    };
    let at = now_ms();
    let note = match event.kind {
        RoomEventKind::Subscribed => ChatEvent::Join { nick, at },
        RoomEventKind::Unsubscribed => ChatEvent::Leave { nick, at },
    };
    let Some(helios) = server.get() else { return };
    let data = match serde_json::to_value(&note) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a chat event");
            return;
        }
    };
    tracing::info!(topic = %event.topic, event = %data, "chat");
    if let Err(e) = helios.broadcast(&event.topic, data).await {
        tracing::warn!(topic = %event.topic, error = %e, "cannot announce");
    }
}
