//! The shared cluster contract (`helios::broker_contract`, cluster cases:
//! presence, names, directory, node bus, sessions, node expiry) against a
//! real NATS with JetStream on 127.0.0.1:4222. Each case uses its own
//! random prefix and deletes its KV buckets after.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use helios::broker_contract::ClusterFactory;
use helios_nats::NatsCluster;

const URL: &str = "nats://127.0.0.1:4222";

struct NatsClusterFactory;

impl ClusterFactory for NatsClusterFactory {
    fn make<'a>(
        &'a self,
        namespace: &'a str,
        node_ttl: Duration,
    ) -> BoxFuture<'a, Arc<dyn helios::Cluster>> {
        Box::pin(async move {
            let c = NatsCluster::new(URL)
                .expect("valid url")
                .with_prefix(namespace)
                .with_node_ttl(node_ttl);
            Arc::new(c) as Arc<dyn helios::Cluster>
        })
    }

    fn cleanup<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(client) = async_nats::connect(URL).await {
                let js = async_nats::jetstream::new(client);
                for b in ["nodes", "presence", "conns", "names", "sessions"] {
                    let _ = js.delete_stream(format!("KV_{namespace}_{b}")).await;
                }
            }
        })
    }
}

helios::cluster_contract_tests!(NatsClusterFactory);
