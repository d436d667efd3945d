//! The embedded broker (`broker = "memory"`): no external server. Messages published through
//! the HTTP publish API go straight into this process's receive loop, with the same delivery
//! semantics as Redis messages. It serves one node only. Channels of services with history keep
//! a bounded ring of their last messages here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{BoxFuture, Broker, Connected, History, Incoming};
use crate::publish::Position;

pub struct MemoryBroker {
    tx: mpsc::UnboundedSender<Incoming>,
    histories: Mutex<Histories>,
    presence: Mutex<HashMap<String, Present>>,
}

/// A channel's presence: member id -> (info, expiry).
type Present = HashMap<String, (Vec<u8>, Instant)>;

#[derive(Default)]
struct Histories {
    rings: HashMap<String, Ring>,
    /// Publishes since the last sweep of expired rings.
    since_sweep: usize,
}

/// One channel's history.
struct Ring {
    epoch: String,
    /// Offset of the last message.
    top: u64,
    /// The last messages, stamped, oldest first: offsets `top - len + 1 ..= top`.
    entries: VecDeque<Vec<u8>>,
    expires: Instant,
}

impl Ring {
    fn new(now: Instant, ttl: Duration) -> Ring {
        Ring {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            expires: now + ttl,
        }
    }
}

/// A fresh epoch: 8 random alphanumerics.
pub fn new_epoch() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(8)
        .map(char::from)
        .collect()
}

impl Histories {
    /// The channel's ring, a new one if it has none or it expired.
    fn ring(&mut self, channel: &str, now: Instant, ttl: Duration) -> &mut Ring {
        let ring = self
            .rings
            .entry(channel.to_owned())
            .or_insert_with(|| Ring::new(now, ttl));
        if ring.expires <= now {
            *ring = Ring::new(now, ttl);
        }
        ring
    }
}

/// Starts the embedded broker.
pub fn start() -> Connected {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let messages = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
    Connected {
        broker: Arc::new(MemoryBroker {
            tx,
            histories: Mutex::default(),
            presence: Mutex::default(),
        }),
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
        let sent = self.tx.send(Incoming::new(channel.to_owned(), payload));
        Box::pin(std::future::ready(
            sent.map_err(|_| "the broker is stopped".to_owned()),
        ))
    }

    fn publish_with_history(
        &self,
        channel: &str,
        payload: Vec<u8>,
        size: usize,
        ttl: Duration,
    ) -> BoxFuture<Result<u64, String>> {
        let now = Instant::now();
        let mut h = self.histories.lock().unwrap();
        h.since_sweep += 1;
        if h.since_sweep >= 1024 {
            h.since_sweep = 0;
            h.rings.retain(|_, r| r.expires > now);
        }
        let ring = h.ring(channel, now, ttl);
        let position = Position {
            offset: ring.top + 1,
            epoch: ring.epoch.clone(),
        };
        let Some(stamped) = position.stamp(&payload) else {
            return Box::pin(std::future::ready(Err(
                "the message must be a non-empty JSON object".to_owned(),
            )));
        };
        ring.top = position.offset;
        ring.entries.push_back(stamped.clone());
        while ring.entries.len() > size {
            ring.entries.pop_front();
        }
        ring.expires = now + ttl;
        // Sent under the lock: offsets reach the receive loop in order.
        let sent = self.tx.send(Incoming::new(channel.to_owned(), stamped));
        Box::pin(std::future::ready(
            sent.map(|_| position.offset)
                .map_err(|_| "the broker is stopped".to_owned()),
        ))
    }

    fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        ttl: Duration,
    ) -> BoxFuture<Result<History, String>> {
        let mut h = self.histories.lock().unwrap();
        let ring = h.ring(channel, Instant::now(), ttl);
        let first = ring.top + 1 - ring.entries.len() as u64;
        let messages = match since {
            Some(s) if s < ring.top => {
                let skip = (s + 1).saturating_sub(first) as usize;
                ring.entries.iter().skip(skip).cloned().collect()
            }
            _ => Vec::new(),
        };
        Box::pin(std::future::ready(Ok(History {
            epoch: ring.epoch.clone(),
            top: ring.top,
            messages,
        })))
    }

    fn presence_add(
        &self,
        channel: &str,
        members: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> BoxFuture<Result<(), String>> {
        let expires = Instant::now() + ttl;
        let mut p = self.presence.lock().unwrap();
        let ch = p.entry(channel.to_owned()).or_default();
        for (id, info) in members {
            ch.insert(id, (info, expires));
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn presence_remove(&self, channel: &str, member: &str) -> BoxFuture<Result<(), String>> {
        let mut p = self.presence.lock().unwrap();
        if let Some(ch) = p.get_mut(channel) {
            ch.remove(member);
            if ch.is_empty() {
                p.remove(channel);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn presence(&self, channel: &str) -> BoxFuture<Result<Vec<Vec<u8>>, String>> {
        let now = Instant::now();
        let mut p = self.presence.lock().unwrap();
        let members = match p.get_mut(channel) {
            None => Vec::new(),
            Some(ch) => {
                ch.retain(|_, (_, expires)| *expires > now);
                ch.values().map(|(info, _)| info.clone()).collect()
            }
        };
        Box::pin(std::future::ready(Ok(members)))
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

    #[tokio::test]
    async fn history_keeps_the_last_messages_with_their_offsets() {
        let Connected {
            broker,
            mut messages,
        } = start();
        let ttl = Duration::from_secs(60);
        let empty = broker.history("a.b", None, ttl).await.unwrap();
        assert_eq!(empty.top, 0);
        assert_eq!(empty.epoch.len(), 8);
        for i in 1..=5u64 {
            let payload = format!(r#"{{"subscription":"a.b","data":{i}}}"#).into_bytes();
            assert_eq!(
                broker.publish_with_history("a.b", payload, 3, ttl).await,
                Ok(i)
            );
            let m = messages.next().await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(v["_history"]["offset"], i);
            assert_eq!(v["_history"]["epoch"], empty.epoch.as_str());
            assert_eq!(v["data"], i);
        }
        let h = broker.history("a.b", Some(3), ttl).await.unwrap();
        assert_eq!((h.epoch.as_str(), h.top), (empty.epoch.as_str(), 5));
        let data: Vec<serde_json::Value> = h
            .messages
            .iter()
            .map(|p| serde_json::from_slice::<serde_json::Value>(p).unwrap()["data"].clone())
            .collect();
        assert_eq!(data, vec![serde_json::json!(4), serde_json::json!(5)]);
        // Offset 1 fell out of the window (size 3): what is left starts at 3.
        let h = broker.history("a.b", Some(1), ttl).await.unwrap();
        assert_eq!(h.messages.len(), 3);
        assert!(
            broker
                .history("a.b", Some(5), ttl)
                .await
                .unwrap()
                .messages
                .is_empty()
        );
        let bad = broker
            .publish_with_history("a.b", b"{ }".to_vec(), 3, ttl)
            .await;
        assert!(bad.is_err());
    }

    #[tokio::test]
    async fn an_expired_history_starts_a_new_epoch() {
        let Connected {
            broker,
            messages: _kept,
        } = start();
        let ttl = Duration::from_millis(20);
        let payload = br#"{"subscription":"a.b","data":1}"#.to_vec();
        broker
            .publish_with_history("a.b", payload, 3, ttl)
            .await
            .unwrap();
        let before = broker.history("a.b", Some(0), ttl).await.unwrap();
        assert_eq!(before.top, 1);
        std::thread::sleep(Duration::from_millis(30));
        let after = broker.history("a.b", Some(0), ttl).await.unwrap();
        assert_eq!(after.top, 0);
        assert_ne!(after.epoch, before.epoch);
    }
}
