//! A multiplayer game server that broadcasts its whole state on a fixed
//! tick, and its client on `starling`.
//!
//! - `game:join {name}` → `{playerId, tick}`: the connection becomes a
//!   player, spawned in the middle of the world.
//! - `player:move {x, y}` → `{x, y}`: moves the player (clamped to the
//!   world; requests from one connection apply in order).
//! - Every tick (20 Hz by default) the server broadcasts
//!   `{tick, players: [{id, name, x, y}]}` to the room `game:state`, which
//!   anyone may subscribe to (spectators too) and no client may publish to.
//!   Tick numbers only grow.
//! - A player whose connection ends is removed; the next state no longer
//!   lists them.
//!
//! The tick loop runs while there are players: the first `game:join`
//! starts it, and it stops on its own when the last player has left (or
//! the server shuts down), so an idle server does no work.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7702").await?;
//! example_game::app()
//!     .serve(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

mod client;
mod server;
mod world;

pub use client::GameClient;
pub use server::{GameConfig, STATE_ROOM, app, app_with};
pub use world::{Joined, Move, Player, Snapshot};
