//! Who is connected: a sharded map from `starlingId` to [`Connection`].
//!
//! Sharded so that connects and disconnects on many cores do not contend on
//! one lock (the `Hub` of centrifuge does the same).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::connection::Connection;

/// How many shards the registry has (the health clock walks one per step).
pub(crate) const SHARDS: usize = 16;

pub(crate) struct ConnectionRegistry {
    shards: [RwLock<HashMap<Arc<str>, Connection>>; SHARDS],
    hasher: RandomState,
}

impl ConnectionRegistry {
    pub(crate) fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, id: &str) -> &RwLock<HashMap<Arc<str>, Connection>> {
        let i = self.hasher.hash_one(id) as usize % SHARDS;
        &self.shards[i]
    }

    pub(crate) fn insert(&self, conn: Connection) {
        self.shard(conn.id()).write().insert(conn.id_arc(), conn);
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Connection> {
        self.shard(id).write().remove(id)
    }

    pub(crate) fn get(&self, id: &str) -> Option<Connection> {
        self.shard(id).read().get(id).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Calls `f` on every connection of one shard (`shard < SHARDS`).
    pub(crate) fn for_each_in_shard(&self, shard: usize, f: impl FnMut(&Connection)) {
        if let Some(s) = self.shards.get(shard) {
            s.read().values().for_each(f);
        }
    }

    pub(crate) fn all(&self) -> Vec<Connection> {
        self.shards
            .iter()
            .flat_map(|s| s.read().values().cloned().collect::<Vec<_>>())
            .collect()
    }
}
