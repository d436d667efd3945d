//! The embedded broker (`broker = "memory"`): no external server. Messages published through
//! the HTTP publish API go straight into this process's receive loop, with the same delivery
//! semantics as Redis messages. It serves one node only.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{BoxFuture, Broker, Connected, Incoming};

pub struct MemoryBroker {
    tx: mpsc::UnboundedSender<Incoming>,
}

/// Starts the embedded broker.
pub fn start() -> Connected {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let messages = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
    Connected {
        broker: Arc::new(MemoryBroker { tx }),
        messages,
    }
}

impl Broker for MemoryBroker {
    fn label(&self) -> &str {
        "memory"
    }

    fn prefix(&self) -> &str {
        ""
    }

    fn subscribe(&self, _channel: &str) -> BoxFuture<Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn unsubscribe(&self, _channel: &str) {}

    fn publish(&self, channel: &str, payload: Vec<u8>) -> BoxFuture<Result<(), String>> {
        let sent = self.tx.send(Incoming {
            channel: channel.to_owned(),
            payload,
        });
        Box::pin(std::future::ready(
            sent.map_err(|_| "the broker is stopped".to_owned()),
        ))
    }

    fn ping(&self) -> BoxFuture<Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn ping_settings(&self) -> Option<(Duration, Duration)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn published_messages_come_out_in_order() {
        let Connected {
            broker,
            mut messages,
        } = start();
        broker.subscribe("a.b").await.unwrap();
        for i in 0..3u8 {
            broker.publish("a.b", vec![b'0' + i]).await.unwrap();
        }
        for i in 0..3u8 {
            let m = messages.next().await.unwrap();
            assert_eq!(m.channel, "a.b");
            assert_eq!(m.payload, vec![b'0' + i]);
        }
    }
}
