//! The shared broker contract (`helios::broker_contract`) against a real
//! Redis on 127.0.0.1:6379 (started by `scripts/install-test-deps.sh` and
//! CI). Each case uses its own random key prefix and deletes its keys after.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use helios::Broker;
use helios::broker_contract::BrokerFactory;
use helios_redis::RedisBroker;

const URL: &str = "redis://127.0.0.1:6379";

struct RedisFactory;

impl BrokerFactory for RedisFactory {
    fn shared_backend(&self) -> bool {
        true
    }

    fn make<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Arc<dyn Broker>> {
        Box::pin(async move {
            let b = RedisBroker::new(URL)
                .expect("valid url")
                .with_prefix(namespace);
            Arc::new(b) as Arc<dyn Broker>
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

helios::broker_contract_tests!(RedisFactory);
