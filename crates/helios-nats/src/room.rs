//! One room's core subscription on this node: a task that hands the
//! room's publications to the [`BrokerHandler`] in offset order, reading a
//! gap back from history (after a reconnect) and dropping duplicates.

use std::sync::Arc;

use futures_util::StreamExt;
use helios::{BrokerHandler, StreamPosition};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Reader, wire};

pub(crate) struct RoomSubscription {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RoomSubscription {
    pub(crate) fn start(
        topic: String,
        sub: async_nats::Subscriber,
        handler: Arc<dyn BrokerHandler>,
        reader: Arc<Reader>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(topic, sub, handler, reader, stopped));
        Self { stop, task }
    }

    /// Ends the subscription; once this returns the handler gets nothing
    /// more for the room from this subscription.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn run(
    topic: String,
    mut sub: async_nats::Subscriber,
    handler: Arc<dyn BrokerHandler>,
    reader: Arc<Reader>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut last: Option<StreamPosition> = None;
    loop {
        let msg = tokio::select! {
            _ = &mut stopped => break,
            msg = sub.next() => match msg {
                Some(m) => m,
                None => break,
            },
        };
        let Some(stored) = wire::decode(&msg.payload) else {
            tracing::warn!(%topic, "undecodable publication on nats live subject");
            continue;
        };
        let p = stored.publication;
        if let Some(l) = last.as_ref().filter(|l| l.epoch == p.epoch) {
            if p.offset <= l.offset {
                continue;
            }
            if p.offset > l.offset + 1 {
                let missing = usize::try_from(p.offset - l.offset - 1).unwrap_or(usize::MAX);
                match reader.read(&topic, l.clone(), missing).await {
                    Ok(h) => {
                        for g in h.publications.iter().filter(|g| g.offset < p.offset) {
                            handler.on_publication(&topic, g);
                        }
                        if !h.complete {
                            tracing::warn!(%topic, from = l.offset, to = p.offset,
                                "publications lost while disconnected (history too small)");
                        }
                    }
                    Err(e) => tracing::warn!(%topic, error = %e, "gap fill from history failed"),
                }
            }
        }
        handler.on_publication(&topic, &p);
        last = Some(StreamPosition {
            offset: p.offset,
            epoch: p.epoch,
        });
    }
    let _ = sub.unsubscribe().await;
}
