//! The game server: methods, the `game:state` room and the tick loop.

use std::sync::Arc;
use std::time::Duration;

use helios::protocol::ErrorCode;
use helios::{Access, Context, Helios, MethodError, MethodOptions, RoomRule};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::time::MissedTickBehavior;

use crate::world::{Joined, Move, World};

/// The room the state is broadcast to.
pub const STATE_ROOM: &str = "game:state";

/// Longest player name, in characters.
const MAX_NAME: usize = 32;

/// Settings of the game server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GameConfig {
    /// State broadcasts per second (default 20).
    pub tick_hz: u32,
    /// The world is `0..=size` on both axes (default 1000).
    pub world_size: f64,
}

impl Default for GameConfig {
    fn default() -> Self {
        Self {
            tick_hz: 20,
            world_size: 1000.0,
        }
    }
}

impl GameConfig {
    fn period(&self) -> Duration {
        Duration::from_secs(1) / self.tick_hz.max(1)
    }
}

/// The game server with the default settings.
pub fn app() -> Helios {
    app_with(GameConfig::default())
}

/// The game server, ready to [`serve`](Helios::serve).
pub fn app_with(config: GameConfig) -> Helios {
    let game = Arc::new(Game {
        world: Mutex::new(World::new(config.world_size)),
        period: config.period(),
    });
    let (on_join, on_move, on_leave) = (game.clone(), game.clone(), game);
    Helios::builder()
        // State comes from the server only; one snapshot of history is
        // enough for a recovering client to catch up.
        .room(
            STATE_ROOM,
            RoomRule::new().publish(Access::Nobody).history(1),
        )
        .method_with(
            "game:join",
            move |ctx: Context<JoinArgs>| join(on_join.clone(), ctx),
            MethodOptions::new().ordered(),
        )
        .method_with(
            "player:move",
            move |ctx: Context<Move>| move_player(on_move.clone(), ctx),
            MethodOptions::new().ordered(),
        )
        .on_disconnect(move |conn| {
            let game = on_leave.clone();
            async move {
                if let Some(p) = game.world.lock().leave(conn.id()) {
                    tracing::info!(id = p.id, name = %p.name, "player left");
                }
            }
        })
        .build()
}

/// Shared by the handlers and the tick loop. The lock is a short critical
/// section with no `.await` inside.
struct Game {
    world: Mutex<World>,
    period: Duration,
}

#[derive(Deserialize)]
struct JoinArgs {
    name: String,
}

async fn join(game: Arc<Game>, ctx: Context<JoinArgs>) -> Result<Joined, MethodError> {
    let name = ctx.payload.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(MethodError::new(
            ErrorCode::INVALID_PAYLOAD,
            format!("names are 1 to {MAX_NAME} characters"),
        ));
    }
    let (joined, start_ticking) = {
        let mut world = game.world.lock();
        let joined = world.join(ctx.connection().id(), name.clone());
        let start = !world.ticking;
        world.ticking = true;
        (joined, start)
    };
    tracing::info!(id = joined.player_id, %name, "player joined");
    if start_ticking {
        tokio::spawn(tick_loop(game, ctx.helios().clone()));
    }
    Ok(joined)
}

async fn move_player(game: Arc<Game>, ctx: Context<Move>) -> Result<Move, MethodError> {
    let to = ctx.payload;
    if !to.x.is_finite() || !to.y.is_finite() {
        return Err(MethodError::new(
            ErrorCode::INVALID_PAYLOAD,
            "coordinates must be finite numbers",
        ));
    }
    game.world
        .lock()
        .move_to(ctx.connection().id(), to)
        .ok_or_else(|| MethodError::new(ErrorCode::FORBIDDEN, "join the game first (game:join)"))
}

/// Broadcasts the state every period while there are players.
async fn tick_loop(game: Arc<Game>, helios: Helios) {
    let mut interval = tokio::time::interval(game.period);
    // A late tick is skipped, not replayed in a burst.
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        if helios.is_shutting_down() {
            game.world.lock().ticking = false;
            return;
        }
        let Some(snapshot) = game.world.lock().advance() else {
            tracing::debug!("no players left, tick loop stops");
            return;
        };
        let data = match serde_json::to_value(&snapshot) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the state");
                continue;
            }
        };
        if let Err(e) = helios.broadcast(STATE_ROOM, data).await {
            tracing::warn!(error = %e, tick = snapshot.tick, "state broadcast failed");
        }
    }
}
