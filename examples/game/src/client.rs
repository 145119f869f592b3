//! The client side, on `starling`.

use starling::{Client, ClientError, RecvError, Subscription};

use crate::server::STATE_ROOM;
use crate::world::{Joined, Move, Snapshot};

/// A player: subscribed to the state, then joined.
///
/// ```no_run
/// # async fn demo() -> Result<(), starling::ClientError> {
/// let mut ada = example_game::GameClient::join("ws://127.0.0.1:7702/ws", "ada").await?;
/// ada.move_to(10.0, 20.0).await?;
/// while let Ok(state) = ada.next_state().await {
///     println!("tick {}: {} players", state.tick, state.players.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GameClient {
    client: Client,
    state: Subscription,
    player_id: u64,
}

impl GameClient {
    /// Connects, subscribes to `game:state` (first, so no tick after the
    /// join is missed) and joins as `name`.
    ///
    /// # Errors
    /// Connection and request errors; `INVALID_PAYLOAD` for a bad name.
    pub async fn join(url: &str, name: &str) -> Result<Self, ClientError> {
        let client = Client::connect(url).await?;
        let state = client.subscribe(STATE_ROOM).await?;
        let joined: Joined = client
            .call("game:join", &serde_json::json!({ "name": name }))
            .await?;
        Ok(Self {
            client,
            state,
            player_id: joined.player_id,
        })
    }

    /// This player's id.
    pub fn player_id(&self) -> u64 {
        self.player_id
    }

    /// The underlying `starling` client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Moves; returns the position the server kept (clamped to the world).
    ///
    /// # Errors
    /// Request errors.
    pub async fn move_to(&self, x: f64, y: f64) -> Result<Move, ClientError> {
        self.client.call("player:move", &Move { x, y }).await
    }

    /// The next state broadcast. Broadcasts this reader fell behind on are
    /// skipped (the state is whole each time, so the newest is enough).
    ///
    /// # Errors
    /// [`RecvError::Closed`] when the connection ended.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn next_state(&mut self) -> Result<Snapshot, RecvError> {
        loop {
            match self.state.recv().await {
                Ok(note) => match serde_json::from_value(note.data) {
                    Ok(snapshot) => return Ok(snapshot),
                    Err(e) => tracing::debug!(error = %e, "skipping a bad state"),
                },
                Err(RecvError::Lagged(n)) => tracing::debug!(skipped = n, "state reader lagged"),
                Err(e) => return Err(e),
            }
        }
    }

    /// Leaves the game by closing the connection.
    pub async fn close(&self) {
        self.client.close().await;
    }
}
