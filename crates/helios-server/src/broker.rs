//! The backplane named by `--broker` / `HELIOS_BROKER`: nothing (or
//! `memory`) for one node, `redis://…` or `nats://…` for a cluster whose
//! nodes share rooms. A URL of another scheme is refused at start, naming
//! the key.
//!
//! A cluster backplane brings the broker (rooms) and the cluster
//! capabilities (presence, peer directory and relay, shared sessions) on
//! the same backend and prefix. `HELIOS_NODE_TTL_SECS` (default 10) sets
//! how long a killed node's presence entries, names and connections stay
//! visible.

use std::sync::Arc;
use std::time::Duration;

/// Puts the broker and the cluster capabilities on a builder.
pub(crate) type Backplane = Box<dyn FnOnce(helios::Builder) -> helios::Builder>;

/// The node TTL from `HELIOS_NODE_TTL_SECS`.
fn node_ttl() -> Result<Duration, String> {
    match std::env::var("HELIOS_NODE_TTL_SECS") {
        Err(_) => Ok(helios::DEFAULT_NODE_TTL),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
            _ => Err(format!(
                "invalid HELIOS_NODE_TTL_SECS {v:?}: expected seconds, 1 to 3600"
            )),
        },
    }
}

/// The backplane for a `--broker` value; `None` keeps the in-memory
/// default (one node).
///
/// # Errors
/// A message naming the key, for an unknown scheme or a malformed URL.
pub(crate) fn from_url(url: Option<&str>, prefix: &str) -> Result<Option<Backplane>, String> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let bad = |msg: String| {
        format!("invalid configuration: broker (--broker / HELIOS_BROKER) {url:?}: {msg}")
    };
    if url == "memory" {
        return Ok(None);
    }
    if prefix.is_empty()
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "invalid configuration: broker_prefix (--broker-prefix / HELIOS_BROKER_PREFIX) {prefix:?}: use letters, digits, - and _"
        ));
    }
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("redis" | "rediss" | "redis+unix") => {
            let b = helios_redis::RedisBroker::new(url)
                .map_err(|e| bad(e.to_string()))?
                .with_prefix(prefix);
            let c = helios_redis::RedisCluster::new(url)
                .map_err(|e| bad(e.to_string()))?
                .with_prefix(prefix)
                .with_node_ttl(node_ttl()?);
            Ok(Some(Box::new(move |builder: helios::Builder| {
                builder.broker(Arc::new(b)).cluster(Arc::new(c))
            })))
        }
        Some("nats" | "tls") => {
            let b = helios_nats::NatsBroker::new(url)
                .map_err(|e| bad(e.to_string()))?
                .with_prefix(prefix);
            let c = helios_nats::NatsCluster::new(url)
                .map_err(|e| bad(e.to_string()))?
                .with_prefix(prefix)
                .with_node_ttl(node_ttl()?);
            Ok(Some(Box::new(move |builder: helios::Builder| {
                builder.broker(Arc::new(b)).cluster(Arc::new(c))
            })))
        }
        _ => Err(bad(
            "expected memory, redis://host:port or nats://host:port".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::from_url;

    #[test]
    fn schemes() {
        assert!(from_url(None, "helios").expect("none").is_none());
        assert!(
            from_url(Some("memory"), "helios")
                .expect("memory")
                .is_none()
        );
        assert!(
            from_url(Some("redis://127.0.0.1:6379"), "helios")
                .expect("redis")
                .is_some()
        );
        assert!(
            from_url(Some("nats://127.0.0.1:4222"), "helios")
                .expect("nats")
                .is_some()
        );
        let e = from_url(Some("kafka://127.0.0.1:9092"), "helios")
            .err()
            .expect("refused");
        assert!(e.contains("--broker") && e.contains("HELIOS_BROKER"), "{e}");
        let e = from_url(Some("redis://127.0.0.1:6379"), "a.b")
            .err()
            .expect("refused");
        assert!(e.contains("HELIOS_BROKER_PREFIX"), "{e}");
    }
}
