//! Peer names claimed with `helios:identify`, for `peer: {name}` relay.
//!
//! First come, first served: a name held by a live connection is refused
//! to others with `NAME_TAKEN` until its holder disconnects or claims
//! another name.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Longest peer name accepted.
pub const MAX_NAME_LEN: usize = 128;

#[derive(Default)]
pub(crate) struct NameRegistry {
    names: Mutex<HashMap<Arc<str>, Arc<str>>>,
}

pub(crate) enum Claim {
    Claimed,
    Taken,
}

impl NameRegistry {
    /// Claims `name` for `conn_id`, releasing the connection's previous name.
    pub(crate) fn claim(
        &self,
        name: &str,
        conn_id: &Arc<str>,
        previous: Option<&Arc<str>>,
    ) -> Claim {
        let mut names = self.names.lock();
        match names.get(name) {
            Some(holder) if holder != conn_id => return Claim::Taken,
            Some(_) => return Claim::Claimed,
            None => {}
        }
        if let Some(p) = previous
            && names.get(p) == Some(conn_id)
        {
            names.remove(p);
        }
        names.insert(Arc::from(name), conn_id.clone());
        Claim::Claimed
    }

    /// Releases `name` if `conn_id` holds it.
    pub(crate) fn release(&self, name: &str, conn_id: &str) {
        let mut names = self.names.lock();
        if names.get(name).is_some_and(|h| &**h == conn_id) {
            names.remove(name);
        }
    }

    pub(crate) fn resolve(&self, name: &str) -> Option<Arc<str>> {
        self.names.lock().get(name).cloned()
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("name must be 1 to {MAX_NAME_LEN} bytes"));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("name contains the character {c:?}"));
    }
    Ok(())
}

impl crate::helios::Helios {
    /// Claims a peer name for a connection: on this node, and cluster-wide
    /// when the server is a cluster node (first wins on every node). On
    /// success the connection's previous name is released.
    pub(crate) async fn claim_name(
        &self,
        conn: &crate::connection::Connection,
        name: &str,
    ) -> Result<Claim, crate::BrokerError> {
        let previous = conn.name().map(Arc::<str>::from);
        let id = conn.id_arc();
        if let Some(cluster) = self.cluster() {
            if self.names().resolve(name).is_some_and(|h| h != id) {
                return Ok(Claim::Taken);
            }
            if !cluster.directory.claim_name(name, &id).await? {
                return Ok(Claim::Taken);
            }
        }
        let claim = self.names().claim(name, &id, previous.as_ref());
        match claim {
            Claim::Claimed => {
                if let (Some(cluster), Some(p)) = (self.cluster(), &previous)
                    && &**p != name
                    && let Err(e) = cluster.directory.release_name(p, &id).await
                {
                    tracing::warn!(name = %p, error = %e, "previous name not released in the directory");
                }
                conn.set_name(Some(Arc::from(name)));
                self.refresh_presence(conn).await;
            }
            Claim::Taken => {
                // Lost a race on this node after winning the directory.
                if let Some(cluster) = self.cluster() {
                    let _ = cluster.directory.release_name(name, &id).await;
                }
            }
        }
        Ok(claim)
    }

    /// Releases a connection's name, here and in the directory.
    pub(crate) async fn release_name(&self, name: &str, conn_id: &str) {
        self.names().release(name, conn_id);
        if let Some(cluster) = self.cluster()
            && let Err(e) = cluster.directory.release_name(name, conn_id).await
        {
            tracing::warn!(%name, error = %e, "name not released in the directory (it expires with the node)");
        }
    }
}
