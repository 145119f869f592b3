//! The game state, with no I/O: players, their positions and the tick.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One player, as the state broadcast shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Player {
    /// The id `game:join` returned.
    pub id: u64,
    /// The name it joined with.
    pub name: String,
    /// Position, `0..=world size`.
    pub x: f64,
    /// Position, `0..=world size`.
    pub y: f64,
}

/// The whole state, broadcast to `game:state` every tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Tick number; grows by one per broadcast.
    pub tick: u64,
    /// Every player, by id.
    pub players: Vec<Player>,
}

impl Snapshot {
    /// The player with this id, if listed.
    pub fn player(&self, id: u64) -> Option<&Player> {
        self.players.iter().find(|p| p.id == id)
    }
}

/// Result of `game:join`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    /// The new player's id.
    pub player_id: u64,
    /// The tick at the time of the join.
    pub tick: u64,
}

/// Payload and result of `player:move`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Move {
    /// Target x.
    pub x: f64,
    /// Target y.
    pub y: f64,
}

/// Players by connection id, and the tick counter.
#[derive(Debug, Default)]
pub(crate) struct World {
    size: f64,
    players: HashMap<String, Player>,
    next_id: u64,
    tick: u64,
    /// Whether a tick loop is running (there is at most one).
    pub(crate) ticking: bool,
}

impl World {
    pub(crate) fn new(size: f64) -> Self {
        Self {
            size,
            ..Self::default()
        }
    }

    /// Adds the connection as a player (again: renames it, same id).
    pub(crate) fn join(&mut self, conn: &str, name: String) -> Joined {
        let tick = self.tick;
        if let Some(p) = self.players.get_mut(conn) {
            p.name = name;
            return Joined {
                player_id: p.id,
                tick,
            };
        }
        self.next_id += 1;
        let centre = self.size / 2.0;
        let player = Player {
            id: self.next_id,
            name,
            x: centre,
            y: centre,
        };
        self.players.insert(conn.to_owned(), player);
        Joined {
            player_id: self.next_id,
            tick,
        }
    }

    /// Moves the connection's player, clamped to the world; `None` when it
    /// is not a player.
    pub(crate) fn move_to(&mut self, conn: &str, to: Move) -> Option<Move> {
        let size = self.size;
        let p = self.players.get_mut(conn)?;
        p.x = to.x.clamp(0.0, size);
        p.y = to.y.clamp(0.0, size);
        Some(Move { x: p.x, y: p.y })
    }

    /// Removes the connection's player.
    pub(crate) fn leave(&mut self, conn: &str) -> Option<Player> {
        self.players.remove(conn)
    }

    /// Advances one tick and returns the state to broadcast, or `None`
    /// (and stops ticking) when there is nobody left.
    pub(crate) fn advance(&mut self) -> Option<Snapshot> {
        if self.players.is_empty() {
            self.ticking = false;
            return None;
        }
        self.tick += 1;
        let mut players: Vec<Player> = self.players.values().cloned().collect();
        players.sort_by_key(|p| p.id);
        Some(Snapshot {
            tick: self.tick,
            players,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn players_join_move_and_leave() {
        let mut w = World::new(100.0);
        assert_eq!(w.join("c1", "ada".into()).player_id, 1);
        assert_eq!(w.join("c2", "bob".into()).player_id, 2);
        assert_eq!(w.join("c1", "ada2".into()).player_id, 1);
        assert_eq!(
            w.move_to("c2", Move { x: 500.0, y: -3.0 }),
            Some(Move { x: 100.0, y: 0.0 })
        );
        assert_eq!(w.move_to("c3", Move { x: 1.0, y: 1.0 }), None);
        let s = w.advance().expect("players");
        assert_eq!(s.tick, 1);
        assert_eq!(s.players.len(), 2);
        assert_eq!(s.player(1).map(|p| p.name.as_str()), Some("ada2"));
        w.leave("c1");
        w.leave("c2");
        w.ticking = true;
        assert!(w.advance().is_none());
        assert!(!w.ticking);
        w.join("c3", "cy".into());
        assert_eq!(w.advance().map(|s| s.tick), Some(2));
    }
}
