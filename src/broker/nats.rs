//! NATS broker (`broker = "nats"`, issue 16): core NATS subjects carry the messages, so several
//! socketshark nodes (and services) share a NATS server or cluster instead of one Redis.
//!
//! Subjects: `[nats] subject_prefix` + the subscription name, with every byte outside
//! `A-Z a-z 0-9 _ - . :` written `%XX` (so `*`, `>`, spaces and `%` never reach NATS) and dots
//! kept as NATS token separators (`chat.room1` -> `chat.room1`, `chat.a b` -> `chat.a%20b`). A
//! service publishes a message to that subject with the same JSON as on Redis.
//!
//! The connection is async-nats's: it reconnects by itself and subscribes its subjects again,
//! so sessions stay open through a NATS restart (messages published meanwhile are lost, as with
//! core NATS everywhere); `socketshark_broker_connected{broker="nats"}` follows its events.
//! History and presence are not available on NATS yet (JetStream is the way; not done).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{BoxFuture, Broker, Connected, Incoming};
use crate::config::NatsConfig;
use crate::metrics::Metrics;

pub struct NatsBroker {
    client: async_nats::Client,
    subject_prefix: String,
    tx: mpsc::UnboundedSender<Incoming>,
    subs: Arc<Mutex<Subjects>>,
    next_gen: std::sync::atomic::AtomicU64,
}

/// subject -> the subscription's generation and its forwarding task, once subscribed.
type Subjects = HashMap<String, (u64, Option<tokio::task::AbortHandle>)>;

/// The NATS subject of a channel (see the module documentation).
pub fn subject(prefix: &str, channel: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + channel.len());
    s.push_str(prefix);
    for b in channel.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Connects (within 10 s).
pub async fn connect(cfg: &NatsConfig, metrics: Arc<Metrics>) -> Result<Connected, String> {
    let events = metrics.clone();
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(10))
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let metrics = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::warn!(broker = "nats", "nats connected");
                        metrics.set_broker_connected("nats", true);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(broker = "nats", "nats disconnected: reconnecting");
                        metrics.set_broker_connected("nats", false);
                    }
                    other => tracing::info!(broker = "nats", event = %other, "nats event"),
                }
            }
        });
    let servers: Vec<String> = cfg.servers.clone();
    let client = tokio::time::timeout(Duration::from_secs(10), options.connect(servers))
        .await
        .map_err(|_| format!("nats: {:?}: connecting timed out", cfg.servers))?
        .map_err(|e| format!("nats: {:?}: {e}", cfg.servers))?;
    tokio::time::timeout(Duration::from_secs(10), client.flush())
        .await
        .map_err(|_| "nats: the first PING timed out".to_owned())?
        .map_err(|e| format!("nats: {e}"))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let messages = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
    Ok(Connected {
        broker: Arc::new(NatsBroker {
            client,
            subject_prefix: cfg.subject_prefix.clone(),
            tx,
            subs: Arc::default(),
            next_gen: Default::default(),
        }),
        messages,
    })
}

impl Broker for NatsBroker {
    fn label(&self) -> &str {
        "nats"
    }

    fn prefix(&self) -> &str {
        ""
    }

    fn subscribe(&self, channel: &str) -> BoxFuture<Result<(), String>> {
        let subject = subject(&self.subject_prefix, channel);
        let generation = self
            .next_gen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.subs
            .lock()
            .unwrap()
            .insert(subject.clone(), (generation, None));
        let (client, tx, subs) = (self.client.clone(), self.tx.clone(), self.subs.clone());
        let channel = channel.to_owned();
        Box::pin(async move {
            let mut subscriber = client
                .subscribe(subject.clone())
                .await
                .map_err(|e| format!("nats subscribe {subject}: {e}"))?;
            let forward = tokio::spawn(async move {
                while let Some(m) = subscriber.next().await {
                    let _ = tx.send(Incoming {
                        channel: channel.clone(),
                        payload: m.payload.to_vec(),
                    });
                }
            });
            {
                let mut subs = subs.lock().unwrap();
                match subs.get_mut(&subject) {
                    Some((g, handle)) if *g == generation => *handle = Some(forward.abort_handle()),
                    // Unsubscribed (or subscribed again) meanwhile: this one is not wanted.
                    _ => forward.abort(),
                }
            }
            // The server has the subscription once it answered a PING sent after it.
            client.flush().await.map_err(|e| format!("nats: {e}"))
        })
    }

    fn unsubscribe(&self, channel: &str) {
        let subject = subject(&self.subject_prefix, channel);
        if let Some((_, Some(handle))) = self.subs.lock().unwrap().remove(&subject) {
            // Dropping the subscriber (with its task) unsubscribes it.
            handle.abort();
        }
    }

    fn publish(&self, channel: &str, payload: Vec<u8>) -> BoxFuture<Result<(), String>> {
        let client = self.client.clone();
        let subject = subject(&self.subject_prefix, channel);
        Box::pin(async move {
            client
                .publish(subject, payload.into())
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn ping(&self) -> BoxFuture<Result<(), String>> {
        let client = self.client.clone();
        Box::pin(async move { client.flush().await.map_err(|e| e.to_string()) })
    }

    /// async-nats pings the server itself and reconnects on its own (module documentation).
    fn ping_settings(&self) -> Option<(Duration, Duration)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_keep_dots_and_escape_the_rest() {
        assert_eq!(subject("", "chat.room1"), "chat.room1");
        assert_eq!(subject("app.", "chat.a b*>%"), "app.chat.a%20b%2A%3E%25");
        assert_eq!(subject("", "s.é"), "s.%C3%A9");
    }
}
