//! NATS broker (`broker = "nats"`, issue 16): core NATS subjects carry the messages, so several
//! socketshark nodes (and services) share a NATS server or cluster instead of one Redis.
//!
//! Subjects: `[nats] subject_prefix` + the subscription name, with every byte outside
//! `A-Z a-z 0-9 _ - . :` written `%XX` (so `*`, `>`, spaces and `%` never reach NATS) and dots
//! kept as NATS token separators (`chat.room1` -> `chat.room1`, `chat.a b` -> `chat.a%20b`). A
//! service publishes a message to that subject with the same JSON as on Redis.
//!
//! The connection is async-nats's: it reconnects by itself and subscribes its subjects again,
//! so sessions stay open through a NATS restart; `socketshark_broker_connected{broker="nats"}`
//! and [`Broker::link`] follow its events. Messages published meanwhile are lost, as with core
//! NATS everywhere, except on channels with history: the feed holds what arrives while the link
//! is down and, once it is up, reads the gap from JetStream (`crate::feed`).
//!
//! ## History on JetStream
//!
//! A service with `history_size > 0` keeps its channels' history in a JetStream stream
//! (`nats-server -js`), one stream per service: `socketshark-history-<prefix+service>` (the
//! subject prefix and service name escaped as in subjects, `.` written `%2E`), capturing
//! `socketshark-history.<live subject>`. A message published with history is *stored* there,
//! never published to its live subject directly; the stream republishes each message it stored
//! (JetStream `republish`) to the live subject, so ordinary core subscribers (every node) get it
//! once stored, in stream order, and a refused store reaches nobody. A service publishing to the
//! live subject itself is delivered as before, without history.
//!
//! - **Offsets** are consecutive per channel and assigned by optimistic concurrency: the node
//!   reads the subject's last stored message (its offset and epoch are in the headers
//!   `Socketshark-Offset` / `Socketshark-Epoch`) and stores offset + 1 with
//!   `Nats-Expected-Last-Subject-Sequence` = that message's stream sequence. If another node
//!   stored one meanwhile, JetStream refuses it (wrong last sequence) and the node reads again
//!   and retries; two nodes can never store the same offset. The last message of a channel is
//!   remembered per node, so a node publishing alone needs no read (a stale guess is refused
//!   like a conflict).
//! - **Epoch**: a random string chosen by whoever stores a channel's first message while the
//!   subject holds nothing (never used, expired, purged, stream deleted or JetStream's store
//!   lost), so a lost history always means a new epoch and clients get `recovered: false`. A
//!   history read of an empty channel stores an *epoch marker* (empty body, offset 0, same
//!   expected-sequence rule) so the position told to a subscriber stays valid; markers reach the
//!   live subject too and are dropped by every node (an empty payload is never a message).
//! - **Size**: the stream's `max_msgs_per_subject` is the service's `history_size`, so each
//!   channel keeps its last `history_size` messages. Created by a history read before any
//!   publish, the stream has no per-subject limit until the first publish sets it; a node whose
//!   `history_size` or `history_ttl` differs from the stream's updates it (after a reload or a
//!   rolling change, the last node to publish wins).
//! - **TTL**: the stream's `max_age` = `history_ttl`. Unlike Redis (the whole history expires
//!   `ttl` after the last message), each message expires `ttl` after it was stored; a client
//!   whose oldest missed message expired gets `recovered: false`.
//! - **Creation** is create-or-get: a node looks the stream up, creates it if missing, and uses
//!   the existing one if another node created it first; it never deletes or resets a stream. A
//!   stream found gone is opened (created) again once per operation.
//! - **Reading**: the last message by subject (`STREAM.MSG.GET`, answered by the stream leader);
//!   the messages after an offset come from an ephemeral pull consumer filtered on the subject
//!   (memory storage, no acks, deleted afterwards), reading from the subject's first message
//!   (at most `history_size` of them) up to the last one read before.
//!
//! ## Presence on JetStream
//!
//! A service with `presence = true` keeps its members in a key-value bucket per service,
//! `socketshark-presence-<prefix+service>` (bytes outside `A-Z a-z 0-9 -` written `_XX`), in
//! memory, `max_age` = `presence_ttl` (so a member not refreshed expires, as with Redis). Key:
//! the channel and the member id, each one token (bytes outside `A-Z a-z 0-9 - _ /` written
//! `=XX`): `<channel>.<member>`. Members are read with an ephemeral consumer filtered on
//! `<channel>.*`, last value per key, deleted keys left out. The bucket's stream (`KV_<bucket>`)
//! is created here, not with async-nats's `create_key_value`, whose reply parsing fails on
//! nats-server 2.9.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::{BoxFuture, Broker, Connected, History, Incoming, Link};
use crate::config::NatsConfig;
use crate::metrics::Metrics;

mod history;
mod presence;

/// Reads the messages of `stream` on `filter` with a short-lived pull consumer (deleted
/// afterwards): `each` gets them in order until it returns false or every message that was
/// pending when the consumer was created has come. `what` names the read in errors.
async fn read_filtered(
    stream: &async_nats::jetstream::stream::Stream<()>,
    filter: String,
    deliver_policy: async_nats::jetstream::consumer::DeliverPolicy,
    what: &str,
    mut each: impl FnMut(&async_nats::jetstream::Message) -> bool,
) -> Result<(), String> {
    use async_nats::jetstream::consumer;
    let err = |e: &dyn std::fmt::Display| format!("jetstream: {what}: {e}");
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter,
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| err(&e))?;
    let name = consumer.cached_info().name.clone();
    let pending = consumer.cached_info().num_pending as usize;
    let result = async {
        if pending == 0 {
            return Ok(());
        }
        let mut batch = consumer
            .batch()
            .max_messages(pending)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| err(&e))?;
        let mut seen = 0;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| err(&e))?;
            seen += 1;
            if !each(&m) || seen >= pending {
                break;
            }
        }
        Ok(())
    }
    .await;
    let stream = stream.clone();
    tokio::spawn(async move {
        let _ = stream.delete_consumer(&name).await;
    });
    result
}

pub struct NatsBroker {
    client: async_nats::Client,
    history: Arc<history::JetStreamHistory>,
    presence: Arc<presence::JetStreamPresence>,
    subject_prefix: String,
    tx: mpsc::UnboundedSender<Incoming>,
    subs: Arc<Mutex<Subjects>>,
    next_gen: std::sync::atomic::AtomicU64,
    /// Connected or not, and reconnections: driven by async-nats's events.
    link: watch::Sender<Link>,
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
    let link = watch::Sender::new(Link::default());
    let link_events = link.clone();
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(10))
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let (metrics, link) = (events.clone(), link_events.clone());
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::warn!(broker = "nats", "nats connected");
                        metrics.set_broker_connected("nats", true);
                        link.send_modify(|l| {
                            if !l.up {
                                l.up = true;
                                l.reconnections += 1;
                            }
                        });
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(broker = "nats", "nats disconnected: reconnecting");
                        metrics.set_broker_connected("nats", false);
                        link.send_modify(|l| l.up = false);
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
    // Connected now, whether or not async-nats's first `Connected` event has been handled yet
    // (it is delivered asynchronously): the feed must not hold messages waiting for it. That
    // event then finds the link up and counts no reconnection.
    link.send_if_modified(|l| !std::mem::replace(&mut l.up, true));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let messages = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
    Ok(Connected {
        broker: Arc::new(NatsBroker {
            history: Arc::new(history::JetStreamHistory::new(
                client.clone(),
                &cfg.subject_prefix,
            )),
            presence: Arc::new(presence::JetStreamPresence::new(
                client.clone(),
                &cfg.subject_prefix,
            )),
            client,
            subject_prefix: cfg.subject_prefix.clone(),
            tx,
            subs: Arc::default(),
            next_gen: Default::default(),
            link,
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
        let channel = bytes::Bytes::from(channel.to_owned());
        Box::pin(async move {
            let mut subscriber = client
                .subscribe(subject.clone())
                .await
                .map_err(|e| format!("nats subscribe {subject}: {e}"))?;
            let forward = tokio::spawn(async move {
                while let Some(m) = subscriber.next().await {
                    if m.payload.is_empty() {
                        // A history's epoch marker, republished by its stream.
                        continue;
                    }
                    let _ = tx.send(Incoming::new(channel.clone(), m.payload));
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

    fn publish_with_history(
        &self,
        channel: &str,
        payload: Vec<u8>,
        size: usize,
        ttl: Duration,
    ) -> BoxFuture<Result<u64, String>> {
        let (history, channel) = (self.history.clone(), channel.to_owned());
        Box::pin(async move { history.publish(&channel, payload, size, ttl).await })
    }

    fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        ttl: Duration,
    ) -> BoxFuture<Result<History, String>> {
        let (history, channel) = (self.history.clone(), channel.to_owned());
        Box::pin(async move { history.history(&channel, since, ttl).await })
    }

    fn presence_add(
        &self,
        channel: &str,
        members: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> BoxFuture<Result<(), String>> {
        let (presence, channel) = (self.presence.clone(), channel.to_owned());
        Box::pin(async move { presence.add(&channel, members, ttl).await })
    }

    fn presence_remove(&self, channel: &str, member: &str) -> BoxFuture<Result<(), String>> {
        let (presence, channel, member) =
            (self.presence.clone(), channel.to_owned(), member.to_owned());
        Box::pin(async move { presence.remove(&channel, &member).await })
    }

    fn presence(&self, channel: &str) -> BoxFuture<Result<Vec<Vec<u8>>, String>> {
        let (presence, channel) = (self.presence.clone(), channel.to_owned());
        Box::pin(async move { presence.members(&channel).await })
    }

    fn ping(&self) -> BoxFuture<Result<(), String>> {
        let client = self.client.clone();
        Box::pin(async move { client.flush().await.map_err(|e| e.to_string()) })
    }

    /// async-nats pings the server itself and reconnects on its own (module documentation).
    fn ping_settings(&self) -> Option<(Duration, Duration)> {
        None
    }

    fn link(&self) -> Option<watch::Receiver<Link>> {
        Some(self.link.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_streams_are_named_after_the_escaped_prefix_and_service() {
        assert_eq!(history::stream_name("", "chat"), "socketshark-history-chat");
        assert_eq!(
            history::stream_name("app.", "a b"),
            "socketshark-history-app%2Ea%20b"
        );
    }

    #[test]
    fn presence_buckets_and_keys_keep_one_token_per_channel_and_member() {
        assert_eq!(
            presence::bucket_name("app.", "a_b"),
            "socketshark-presence-app_2Ea_5Fb"
        );
        assert_eq!(presence::key("room.r1", "N-1"), "room=2Er1.N-1");
        assert_eq!(presence::key("room.a b", "x.y"), "room=2Ea=20b.x=2Ey");
    }

    #[test]
    fn subjects_keep_dots_and_escape_the_rest() {
        assert_eq!(subject("", "chat.room1"), "chat.room1");
        assert_eq!(subject("app.", "chat.a b*>%"), "app.chat.a%20b%2A%3E%25");
        assert_eq!(subject("", "s.é"), "s.%C3%A9");
    }
}
