//! Redis PUBSUB broker (R-RED): one connection per configured Redis carries every channel
//! subscription and the liveness PINGs. With `on_loss = "shutdown"` (the default, R-RED-5) the
//! connection is never re-established: when it is lost the server shuts down, so clients
//! reconnect to another instance. With `on_loss = "reconnect"` the server's feed
//! ([`crate::feed`]) drops it ([`Broker::lost`]), opens a new one ([`Broker::reconnect`]) and
//! subscribes every held channel again ([`Broker::resubscribe`]); meanwhile subscriptions wait.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use tokio::sync::watch;

use super::subscriber::{self, Handle};
use super::{BoxFuture, Broker, Connected, History, Incoming};
use crate::config::{OnLoss, RedisConfig};

/// How long connecting (and the first PING) may take before startup fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// With `on_loss = "reconnect"`: how long a subscription waits for a lost broker to return
/// before it fails (the client then gets the usual failed-subscription answer).
pub const OUTAGE_WAIT: Duration = Duration::from_secs(10);

/// Publishes with history, atomically (issue 14). KEYS: the channel's list of messages and its
/// meta hash (`offset`, `epoch`); ARGV: payload, size, ttl (seconds), an epoch for a new
/// history, the channel. The offset is assigned here, in Redis, so every node sees the same.
/// Services that PUBLISH to Redis themselves run this script (docs/CONFIG.md).
pub const PUBLISH_SCRIPT: &str = include_str!("history_publish.lua");

/// Reads a channel's position and the messages after an offset. KEYS as above; ARGV: the offset
/// (`-1`: position only), an epoch for a new history, ttl. Returns `[epoch, top, messages...]`.
const READ_SCRIPT: &str = include_str!("history_read.lua");

/// Adds or refreshes presence members (issue 14). KEYS: the channel's member hash and expiry
/// set; ARGV: expiry (unix seconds), key ttl, then member id / info pairs.
const PRESENCE_ADD_SCRIPT: &str = include_str!("presence_add.lua");

/// A channel's present members, dropping expired ones. ARGV: now (unix seconds).
const PRESENCE_READ_SCRIPT: &str = include_str!("presence_read.lua");

/// The keys of a channel's presence (in the channel's Redis Cluster slot, like its history's).
fn presence_keys(channel: &str) -> [String; 2] {
    [
        slot_key("socketshark:presence:", channel),
        slot_key("socketshark:presence-exp:", channel),
    ]
}

/// The keys of a channel's history. Both live in the channel's Redis Cluster slot, so the
/// publishing script may (S)PUBLISH to the channel.
fn history_keys(channel: &str) -> [String; 2] {
    [
        slot_key("socketshark:history:", channel),
        slot_key("socketshark:history-meta:", channel),
    ]
}

/// `kind` + the channel, hashing to the channel's Redis Cluster slot: the channel in braces
/// (a hash tag: `socketshark:history:{chat.room1}`), or, when the channel has a hash tag of its
/// own (`chat.{room}1`), the channel as it is, so that its tag decides (a tag cannot hold `}`).
fn slot_key(kind: &str, channel: &str) -> String {
    if has_hash_tag(channel) {
        format!("{kind}{channel}")
    } else {
        format!("{kind}{{{channel}}}")
    }
}

/// Whether Redis Cluster hashes `name` by a tag: a `{` followed later by a `}` with at least
/// one byte between the first `{` and the first `}` after it.
fn has_hash_tag(name: &str) -> bool {
    let Some(open) = name.find('{') else {
        return false;
    };
    name[open + 1..].find('}').is_some_and(|close| close > 0)
}

/// Channels per SUBSCRIBE command when subscribing every held channel again.
const RESUBSCRIBE_BATCH: usize = 1000;

pub struct RedisBroker {
    label: String,
    prefix: String,
    /// For the command connection.
    client: redis::Client,
    /// The subscriber connection's address and database.
    host: String,
    port: u16,
    db: i64,
    /// `label: host:port`, for errors.
    at: String,
    /// Whether to open a command connection (the HTTP publish API or history is on).
    publish: bool,
    scripts: Scripts,
    on_loss: OnLoss,
    /// The current subscriber connection (ours: `broker::subscriber`); `None` while it is lost
    /// (`on_loss = "reconnect"`).
    link: Mutex<Option<Handle>>,
    /// A second, ordinary connection for PUBLISH and history (a subscriber connection cannot
    /// run commands); only opened when the HTTP publish API or history is on. Kept while the
    /// subscriber connection is lost (a dead one fails on its own); replaced on reconnection.
    publisher: Mutex<Option<MultiplexedConnection>>,
    /// Counts recoveries: bumped when every held channel is subscribed again after a loss.
    recoveries: watch::Sender<u64>,
    ping: Option<(Duration, Duration)>,
}

/// Connects, checks that Redis supports PING in subscriber mode (Redis >= 3.2) and selects the
/// database (R-RED-1): the subscriber connection is ours (`broker::subscriber`); the command
/// connection, when there is one, redis-rs's. (With `cluster` set, `broker::cluster::connect`
/// is used instead.)
pub async fn connect(cfg: &RedisConfig, label: &str, publish: bool) -> Result<Connected, String> {
    let host = if cfg.host.contains(':') && !cfg.host.starts_with('[') {
        format!("[{}]", cfg.host)
    } else {
        cfg.host.clone()
    };
    let url = format!("redis://{}:{}/{}", host, cfg.port.0, cfg.db);
    let client = redis::Client::open(url.as_str()).map_err(|e| format!("{label}: {e}"))?;
    let ping = if cfg.ping_interval.is_zero() || cfg.ping_timeout.is_zero() {
        None
    } else {
        Some((cfg.ping_interval.duration(), cfg.ping_timeout.duration()))
    };
    let broker = Arc::new(RedisBroker {
        label: label.to_owned(),
        prefix: cfg.channel_prefix.clone(),
        client,
        host: cfg.host.clone(),
        port: cfg.port.0,
        db: cfg.db,
        at: format!("{label}: {}:{}", cfg.host, cfg.port.0),
        publish,
        on_loss: cfg.on_loss,
        scripts: Scripts::new(),
        link: Mutex::new(None),
        publisher: Mutex::new(None),
        recoveries: watch::Sender::new(0),
        ping,
    });
    let messages = broker.open().await?;
    Ok(Connected { broker, messages })
}

impl RedisBroker {
    /// Opens a connection (and the publisher), checks PING in subscriber mode, installs it and
    /// returns its message stream.
    async fn open(&self) -> Result<BoxStream<'static, Incoming>, String> {
        let at = &self.at;
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let (handle, messages) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            subscriber::connect(host, self.port, self.db),
        )
        .await
        .map_err(|_| format!("{at}: connecting timed out"))?
        .map_err(|e| format!("{at}: {e}"))?;
        let publisher = if self.publish {
            Some(within(at, self.client.get_multiplexed_async_connection()).await?)
        } else {
            None
        };
        *self.link.lock().unwrap() = Some(handle);
        if publisher.is_some() {
            *self.publisher.lock().unwrap() = publisher;
        }
        Ok(messages.boxed())
    }

    /// The command connection, or why there is none.
    fn commands(&self) -> Result<MultiplexedConnection, String> {
        self.publisher
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| "this broker was connected without a publisher".to_owned())
    }

    fn sink(&self) -> Option<Handle> {
        self.link.lock().unwrap().clone()
    }
}

/// Connecting, bounded by [`CONNECT_TIMEOUT`], with errors that say where (`at`).
async fn within<T>(
    at: &str,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Err(_) => Err(format!("{at}: connecting timed out")),
        Ok(r) => r.map_err(|e| format!("{at}: {e}")),
    }
}

/// Resolves once the broker recovered after `seen` recoveries (`recoveries` counts them).
pub(super) fn recovery_after(
    recoveries: &watch::Sender<u64>,
    seen: u64,
) -> BoxFuture<Result<(), String>> {
    let mut rx = recoveries.subscribe();
    Box::pin(async move {
        rx.wait_for(|n| *n > seen)
            .await
            .map(|_| ())
            .map_err(|_| "the broker is stopped".to_owned())
    })
}

/// With `on_loss = "reconnect"`: a subscription `issued` now (`None` while the connection is
/// lost) that fails, or could not be issued, succeeds once the broker `recovered` (every held
/// channel is subscribed again then), waiting at most [`OUTAGE_WAIT`].
pub(super) fn or_after_recovery(
    issued: Option<BoxFuture<Result<(), String>>>,
    recovered: BoxFuture<Result<(), String>>,
    what: &'static str,
) -> BoxFuture<Result<(), String>> {
    Box::pin(async move {
        let outcome = tokio::time::timeout(OUTAGE_WAIT, async move {
            let Some(issued) = issued else {
                return recovered.await;
            };
            tokio::pin!(recovered);
            tokio::select! {
                r = issued => match r {
                    Ok(()) => Ok(()),
                    Err(_) => recovered.await,
                },
                r = &mut recovered => r,
            }
        })
        .await;
        outcome.unwrap_or_else(|_| {
            Err(format!(
                "{what} unavailable: not back within {} s",
                OUTAGE_WAIT.as_secs()
            ))
        })
    })
}

/// Polls a request future once so that the request is queued on the connection now, in call
/// order, and returns the rest of it. redis-rs enqueues a request on its first poll.
pub(super) fn issue_now<F>(fut: F) -> BoxFuture<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Box::pin(std::future::ready(out)),
        Poll::Pending => fut,
    }
}

impl Broker for RedisBroker {
    fn label(&self) -> &str {
        &self.label
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn subscribe(&self, channel: &str) -> BoxFuture<Result<(), String>> {
        let seen = *self.recoveries.borrow();
        let issued = self
            .sink()
            .map(|sink| sink.subscribe(vec![channel.to_owned()]));
        if self.on_loss == OnLoss::Shutdown {
            return issued.unwrap_or_else(|| Box::pin(std::future::ready(Err(lost()))));
        }
        // Reconnecting: a channel held in the hub is subscribed again on the next connection,
        // so a request that fails with the connection, or cannot be sent while it is down,
        // succeeds when the broker has recovered.
        or_after_recovery(issued, recovery_after(&self.recoveries, seen), "redis")
    }

    fn unsubscribe(&self, channel: &str) {
        // Lost: the next connection subscribes only the channels still held.
        if let Some(sink) = self.sink() {
            // Queued now; the confirmation is not awaited.
            sink.unsubscribe(channel.to_owned());
        }
    }

    fn publish(&self, channel: &str, payload: Vec<u8>) -> BoxFuture<Result<(), String>> {
        let conn = match self.commands() {
            Ok(c) => c,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        Scripts::publish(conn, "PUBLISH", channel, payload)
    }

    fn publish_with_history(
        &self,
        channel: &str,
        payload: Vec<u8>,
        size: usize,
        ttl: Duration,
    ) -> BoxFuture<Result<u64, String>> {
        match self.commands() {
            Ok(conn) => self
                .scripts
                .publish_with_history(conn, "PUBLISH", channel, payload, size, ttl),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        ttl: Duration,
    ) -> BoxFuture<Result<History, String>> {
        match self.commands() {
            Ok(conn) => self.scripts.history(conn, channel, since, ttl),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn presence_add(
        &self,
        channel: &str,
        members: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> BoxFuture<Result<(), String>> {
        match self.commands() {
            Ok(conn) => self.scripts.presence_add(conn, channel, members, ttl),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn presence_remove(&self, channel: &str, member: &str) -> BoxFuture<Result<(), String>> {
        match self.commands() {
            Ok(conn) => Scripts::presence_remove(conn, channel, member),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn presence(&self, channel: &str) -> BoxFuture<Result<Vec<Vec<u8>>, String>> {
        match self.commands() {
            Ok(conn) => self.scripts.presence(conn, channel),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn ping(&self) -> BoxFuture<Result<(), String>> {
        match self.sink() {
            Some(sink) => sink.ping(),
            None => Box::pin(std::future::ready(Err(lost()))),
        }
    }

    fn ping_settings(&self) -> Option<(Duration, Duration)> {
        self.ping
    }

    fn reconnects(&self) -> bool {
        self.on_loss == OnLoss::Reconnect
    }

    fn lost(&self) {
        // Dropping the handle here or the stream in the feed ends the connection's task,
        // which fails every request still waiting on it. The publisher stays: if Redis is
        // gone it fails by itself, and if only the subscriber connection was lost it still works.
        self.link.lock().unwrap().take();
    }

    fn reconnect(self: Arc<Self>) -> BoxFuture<Result<BoxStream<'static, Incoming>, String>> {
        Box::pin(async move { self.open().await })
    }

    fn resubscribe(&self, channels: Vec<String>) -> BoxFuture<Result<(), String>> {
        let Some(sink) = self.sink() else {
            return Box::pin(std::future::ready(Err(lost())));
        };
        let batches: Vec<_> = channels
            .chunks(RESUBSCRIBE_BATCH)
            .map(|batch| sink.subscribe(batch.to_vec()))
            .collect();
        Box::pin(async move {
            for b in batches {
                b.await?;
            }
            Ok(())
        })
    }

    fn recovered(&self) {
        self.recoveries.send_modify(|n| *n += 1);
    }
}

/// The history and presence scripts (issue 14), run on a single Redis's command connection or
/// on a Redis Cluster connection (which routes each call by its keys: every key of one call is
/// in the channel's slot).
pub(super) struct Scripts {
    publish: Arc<redis::Script>,
    read: Arc<redis::Script>,
    presence_add: Arc<redis::Script>,
    presence_read: Arc<redis::Script>,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            publish: Arc::new(redis::Script::new(PUBLISH_SCRIPT)),
            read: Arc::new(redis::Script::new(READ_SCRIPT)),
            presence_add: Arc::new(redis::Script::new(PRESENCE_ADD_SCRIPT)),
            presence_read: Arc::new(redis::Script::new(PRESENCE_READ_SCRIPT)),
        }
    }

    /// See [`Broker::publish`]: `command` is `PUBLISH`, or `SPUBLISH` on a cluster.
    pub(super) fn publish<C: ConnectionLike + Send + 'static>(
        mut conn: C,
        command: &'static str,
        channel: &str,
        payload: Vec<u8>,
    ) -> BoxFuture<Result<(), String>> {
        let channel = channel.to_owned();
        Box::pin(async move {
            redis::cmd(command)
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    /// See [`Broker::publish_with_history`]; `command` publishes: `PUBLISH`, or `SPUBLISH` on
    /// a cluster.
    pub(super) fn publish_with_history<C: ConnectionLike + Send + 'static>(
        &self,
        mut conn: C,
        command: &'static str,
        channel: &str,
        payload: Vec<u8>,
        size: usize,
        ttl: Duration,
    ) -> BoxFuture<Result<u64, String>> {
        let [list, meta] = history_keys(channel);
        let (script, channel) = (self.publish.clone(), channel.to_owned());
        Box::pin(async move {
            let mut call = script.key(list);
            call.key(meta)
                .arg(payload)
                .arg(size)
                .arg(ttl.as_secs().max(1))
                .arg(super::memory::new_epoch())
                .arg(channel)
                .arg(command);
            call.invoke_async::<u64>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
    }

    /// See [`Broker::history`].
    pub(super) fn history<C: ConnectionLike + Send + 'static>(
        &self,
        mut conn: C,
        channel: &str,
        since: Option<u64>,
        ttl: Duration,
    ) -> BoxFuture<Result<History, String>> {
        let [list, meta] = history_keys(channel);
        let script = self.read.clone();
        Box::pin(async move {
            let mut call = script.key(list);
            call.key(meta)
                .arg(since.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX)))
                .arg(super::memory::new_epoch())
                .arg(ttl.as_secs().max(1));
            let reply: Vec<redis::Value> = call
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let mut items = reply.into_iter();
            let (Some(epoch), Some(top)) = (items.next(), items.next()) else {
                return Err("history: short reply".to_owned());
            };
            let epoch: String = redis::from_redis_value(epoch).map_err(|e| e.to_string())?;
            let top: u64 = redis::from_redis_value(top).map_err(|e| e.to_string())?;
            let messages = items
                .map(redis::from_redis_value::<Vec<u8>>)
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            Ok(History {
                epoch,
                top,
                messages,
            })
        })
    }

    /// See [`Broker::presence_add`].
    pub(super) fn presence_add<C: ConnectionLike + Send + 'static>(
        &self,
        mut conn: C,
        channel: &str,
        members: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> BoxFuture<Result<(), String>> {
        let [hash, expiry] = presence_keys(channel);
        let script = self.presence_add.clone();
        let expires = (super::unix_now() + ttl.as_secs_f64()).ceil() as u64;
        Box::pin(async move {
            let mut call = script.key(hash);
            call.key(expiry).arg(expires).arg(ttl.as_secs().max(1) * 2);
            for (id, info) in members {
                call.arg(id).arg(info);
            }
            call.invoke_async::<i64>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    /// See [`Broker::presence_remove`].
    pub(super) fn presence_remove<C: ConnectionLike + Send + 'static>(
        mut conn: C,
        channel: &str,
        member: &str,
    ) -> BoxFuture<Result<(), String>> {
        let [hash, expiry] = presence_keys(channel);
        let member = member.to_owned();
        Box::pin(async move {
            redis::pipe()
                .cmd("HDEL")
                .arg(&hash)
                .arg(&member)
                .ignore()
                .cmd("ZREM")
                .arg(&expiry)
                .arg(&member)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
    }

    /// See [`Broker::presence`].
    pub(super) fn presence<C: ConnectionLike + Send + 'static>(
        &self,
        mut conn: C,
        channel: &str,
    ) -> BoxFuture<Result<Vec<Vec<u8>>, String>> {
        let [hash, expiry] = presence_keys(channel);
        let script = self.presence_read.clone();
        Box::pin(async move {
            let mut call = script.key(hash);
            call.key(expiry).arg(super::unix_now().floor() as u64);
            call.invoke_async::<Vec<Vec<u8>>>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The error of a request made while the connection is lost.
fn lost() -> String {
    "redis unavailable: reconnecting".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster's key slot: CRC16/XMODEM of the hash tag (or the whole key) mod 16384.
    fn cluster_slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let hashed = match key.find('{') {
            Some(open) => match key[open + 1..].find('}') {
                Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
                _ => bytes,
            },
            None => bytes,
        };
        let mut crc: u16 = 0;
        for &b in hashed {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    #[test]
    fn keys_share_the_channel_slot() {
        assert_eq!(cluster_slot("123456789"), 0x31C3); // 0x31C3 < 16384: CRC16 of the check string
        assert_eq!(
            history_keys("chat.room1"),
            [
                "socketshark:history:{chat.room1}",
                "socketshark:history-meta:{chat.room1}"
            ]
        );
        // The channel's own tag decides its slot, so the keys keep it.
        assert_eq!(
            presence_keys("chat.{room}1")[0],
            "socketshark:presence:chat.{room}1"
        );
        assert!(has_hash_tag("a{b}"));
        assert!(!has_hash_tag("a{}b}"));
        assert!(!has_hash_tag("a}b{"));
        assert!(!has_hash_tag("plain"));
        // (A channel holding a `}` but no tag cannot share a slot with any key: documented.)
        for channel in ["chat.room1", "chat.{room}1", "x{y", "chat.a b*"] {
            let slot = cluster_slot(channel);
            for key in history_keys(channel).iter().chain(&presence_keys(channel)) {
                assert_eq!(cluster_slot(key), slot, "{key}");
            }
        }
    }
}
