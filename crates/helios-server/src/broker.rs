//! The backplane named by `--broker` / `HELIOS_BROKER`: nothing (or
//! `memory`) for one node, `redis://…` or `nats://…` for a cluster whose
//! nodes share rooms. A URL of another scheme is refused at start, naming
//! the key.

use std::sync::Arc;

use helios::Broker;

/// The broker for a `--broker` value; `None` keeps the in-memory default.
///
/// # Errors
/// A message naming the key, for an unknown scheme or a malformed URL.
pub(crate) fn from_url(url: Option<&str>, prefix: &str) -> Result<Option<Arc<dyn Broker>>, String> {
    let bad = |msg: String| format!("invalid --broker / HELIOS_BROKER {url:?}: {msg}");
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
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
            "invalid --broker-prefix / HELIOS_BROKER_PREFIX {prefix:?}: use letters, digits, - and _"
        ));
    }
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("redis" | "rediss" | "redis+unix") => {
            let b = helios_redis::RedisBroker::new(url)
                .map_err(|e| bad(e.to_string()))?
                .with_prefix(prefix);
            Ok(Some(Arc::new(b)))
        }
        Some("nats" | "tls") => {
            let b = helios_nats::NatsBroker::new(url)
                .map_err(|e| bad(e.to_string()))?
                .with_prefix(prefix);
            Ok(Some(Arc::new(b)))
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
