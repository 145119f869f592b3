//! The shared cluster contract (`helios::broker_contract`, cluster cases:
//! presence, names, directory, node bus, sessions, node expiry) against a
//! real Redis on 127.0.0.1:6379. Each case uses its own random prefix and
//! deletes its keys after.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use helios::broker_contract::ClusterFactory;
use helios_redis::RedisCluster;

const URL: &str = "redis://127.0.0.1:6379";

struct RedisClusterFactory;

impl ClusterFactory for RedisClusterFactory {
    fn make<'a>(
        &'a self,
        namespace: &'a str,
        node_ttl: Duration,
    ) -> BoxFuture<'a, Arc<dyn helios::Cluster>> {
        Box::pin(async move {
            let c = RedisCluster::new(URL)
                .expect("valid url")
                .with_prefix(namespace)
                .with_node_ttl(node_ttl);
            Arc::new(c) as Arc<dyn helios::Cluster>
        })
    }

    fn cleanup<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(client) = redis::Client::open(URL) else {
                return;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{namespace}:*"))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
            }
        })
    }
}

helios::cluster_contract_tests!(RedisClusterFactory);
