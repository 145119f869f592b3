//! The shared broker contract (`helios::broker_contract`) against a real
//! NATS with JetStream on 127.0.0.1:4222 (started by
//! `scripts/install-test-deps.sh` and CI). Each case uses its own random
//! subject prefix and stream, and deletes the stream after.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use helios::Broker;
use helios::broker_contract::BrokerFactory;
use helios_nats::NatsBroker;

const URL: &str = "nats://127.0.0.1:4222";

struct NatsFactory;

impl BrokerFactory for NatsFactory {
    fn shared_backend(&self) -> bool {
        true
    }

    fn make<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Arc<dyn Broker>> {
        Box::pin(async move {
            let b = NatsBroker::new(URL)
                .expect("valid url")
                .with_prefix(namespace);
            Arc::new(b) as Arc<dyn Broker>
        })
    }

    fn cleanup<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(client) = async_nats::connect(URL).await {
                let js = async_nats::jetstream::new(client);
                let _ = js
                    .delete_stream(NatsBroker::stream_name_for(namespace))
                    .await;
            }
        })
    }
}

helios::broker_contract_tests!(NatsFactory);
