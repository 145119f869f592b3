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
