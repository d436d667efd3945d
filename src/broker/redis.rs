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
use redis::aio::{MultiplexedConnection, PubSubSink};
use tokio::sync::watch;

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

/// The keys of a channel's presence (hash-tagged like the history's).
fn presence_keys(channel: &str) -> [String; 2] {
    [
        format!("socketshark:presence:{{{channel}}}"),
        format!("socketshark:presence-exp:{{{channel}}}"),
    ]
}

/// The keys of a channel's history. The channel in braces is a Redis Cluster hash tag: both
/// keys live in the channel's slot.
fn history_keys(channel: &str) -> [String; 2] {
    [
        format!("socketshark:history:{{{channel}}}"),
        format!("socketshark:history-meta:{{{channel}}}"),
    ]
}

/// Channels per SUBSCRIBE command when subscribing every held channel again.
const RESUBSCRIBE_BATCH: usize = 1000;

pub struct RedisBroker {
    label: String,
    prefix: String,
    client: redis::Client,
    /// `label: host:port`, for errors.
    at: String,
    /// Whether to open a command connection (the HTTP publish API or history is on).
    publish: bool,
    publish_script: Arc<redis::Script>,
    read_script: Arc<redis::Script>,
    presence_add_script: Arc<redis::Script>,
    presence_read_script: Arc<redis::Script>,
    on_loss: OnLoss,
    /// The current subscriber connection; `None` while it is lost (`on_loss = "reconnect"`).
    link: Mutex<Option<PubSubSink>>,
    /// A second, ordinary connection for PUBLISH and history (a subscriber connection cannot
    /// run commands); only opened when the HTTP publish API or history is on. Kept while the
    /// subscriber connection is lost (a dead one fails on its own); replaced on reconnection.
    publisher: Mutex<Option<MultiplexedConnection>>,
    /// Counts recoveries: bumped when every held channel is subscribed again after a loss.
    recoveries: watch::Sender<u64>,
    ping: Option<(Duration, Duration)>,
}

/// Connects, selects the database, and checks that Redis supports PING in subscriber mode
/// (Redis >= 3.2) (R-RED-1).
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
        at: format!("{label}: {}:{}", cfg.host, cfg.port.0),
        publish,
        on_loss: cfg.on_loss,
        publish_script: Arc::new(redis::Script::new(PUBLISH_SCRIPT)),
        read_script: Arc::new(redis::Script::new(READ_SCRIPT)),
        presence_add_script: Arc::new(redis::Script::new(PRESENCE_ADD_SCRIPT)),
        presence_read_script: Arc::new(redis::Script::new(PRESENCE_READ_SCRIPT)),
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
        let (label, at) = (&self.label, &self.at);
        let pubsub = within(at, self.client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        let publisher = if self.publish {
            Some(within(at, self.client.get_multiplexed_async_connection()).await?)
        } else {
            None
        };
        tokio::time::timeout(CONNECT_TIMEOUT, sink.ping::<redis::Value>())
            .await
            .map_err(|_| format!("{label}: PING timed out"))?
            .map_err(|e| {
                format!("{label}: PING in subscriber mode failed (Redis >= 3.2 required): {e}")
            })?;
        *self.link.lock().unwrap() = Some(sink);
        if publisher.is_some() {
            *self.publisher.lock().unwrap() = publisher;
        }
        Ok(stream
            .map(|msg| Incoming {
                channel: msg.get_channel_name().to_owned(),
                payload: msg.get_payload_bytes().to_vec(),
            })
            .boxed())
    }

    /// The command connection, or why there is none.
    fn commands(&self) -> Result<MultiplexedConnection, String> {
        self.publisher
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| "this broker was connected without a publisher".to_owned())
    }

    fn sink(&self) -> Option<PubSubSink> {
        self.link.lock().unwrap().clone()
    }

    /// Resolves once the broker recovered after `seen` recoveries.
    fn recovery_after(&self, seen: u64) -> impl Future<Output = Result<(), String>> + use<> {
        let mut rx = self.recoveries.subscribe();
        async move {
            rx.wait_for(|n| *n > seen)
                .await
                .map(|_| ())
                .map_err(|_| "the broker is stopped".to_owned())
        }
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

/// Polls a request future once so that the request is queued on the connection now, in call
/// order, and returns the rest of it. redis-rs enqueues a request on its first poll.
fn issue_now<F>(fut: F) -> BoxFuture<F::Output>
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
        let issued = self.sink().map(|mut sink| {
            let channel = channel.to_owned();
            issue_now(async move { sink.subscribe(&channel).await.map_err(|e| e.to_string()) })
        });
        if self.on_loss == OnLoss::Shutdown {
            return issued.unwrap_or_else(|| Box::pin(std::future::ready(Err(lost()))));
        }
        // Reconnecting: a channel held in the hub is subscribed again on the next connection,
        // so a request that fails with the connection, or cannot be sent while it is down,
        // succeeds when the broker has recovered.
        let recovered = self.recovery_after(seen);
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
                    "redis unavailable: not back within {} s",
                    OUTAGE_WAIT.as_secs()
                ))
            })
        })
    }

    fn unsubscribe(&self, channel: &str) {
        let Some(mut sink) = self.sink() else {
            // Lost: the next connection subscribes only the channels still held.
            return;
        };
        let channel = channel.to_owned();
        // Queued now; the confirmation is not awaited.
        drop(issue_now(async move {
            let _ = sink.unsubscribe(&channel).await;
        }));
    }

    fn publish(&self, channel: &str, payload: Vec<u8>) -> BoxFuture<Result<(), String>> {
        let mut conn = match self.commands() {
            Ok(c) => c,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let channel = channel.to_owned();
        Box::pin(async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
                .map(|_| ())
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
        let mut conn = match self.commands() {
            Ok(c) => c,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let [list, meta] = history_keys(channel);
        let (script, channel) = (self.publish_script.clone(), channel.to_owned());
        Box::pin(async move {
            let mut call = script.key(list);
            call.key(meta)
                .arg(payload)
                .arg(size)
                .arg(ttl.as_secs().max(1))
                .arg(super::memory::new_epoch())
                .arg(channel);
            call.invoke_async::<u64>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        ttl: Duration,
    ) -> BoxFuture<Result<History, String>> {
        let mut conn = match self.commands() {
            Ok(c) => c,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let [list, meta] = history_keys(channel);
        let script = self.read_script.clone();
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

    fn presence_add(
        &self,
        channel: &str,
        members: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> BoxFuture<Result<(), String>> {
        let mut conn = match self.commands() {
            Ok(c) => c,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let [hash, expiry] = presence_keys(channel);
        let script = self.presence_add_script.clone();
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

    fn presence_remove(&self, channel: &str, member: &str) -> BoxFuture<Result<(), String>> {
        let mut conn = match self.commands() {
            Ok(c) => c,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
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

    fn presence(&self, channel: &str) -> BoxFuture<Result<Vec<Vec<u8>>, String>> {
        let mut conn = match self.commands() {
            Ok(c) => c,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let [hash, expiry] = presence_keys(channel);
        let script = self.presence_read_script.clone();
        Box::pin(async move {
            let mut call = script.key(hash);
            call.key(expiry).arg(super::unix_now().floor() as u64);
            call.invoke_async::<Vec<Vec<u8>>>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn ping(&self) -> BoxFuture<Result<(), String>> {
        let Some(mut sink) = self.sink() else {
            return Box::pin(std::future::ready(Err(lost())));
        };
        issue_now(async move {
            sink.ping::<redis::Value>()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn ping_settings(&self) -> Option<(Duration, Duration)> {
        self.ping
    }

    fn reconnects(&self) -> bool {
        self.on_loss == OnLoss::Reconnect
    }

    fn lost(&self) {
        // Dropping the sink here and the stream in the feed ends the connection's driver task,
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
            .map(|batch| {
                let (mut sink, batch) = (sink.clone(), batch.to_vec());
                issue_now(async move { sink.subscribe(batch).await.map_err(|e| e.to_string()) })
            })
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

/// The error of a request made while the connection is lost.
fn lost() -> String {
    "redis unavailable: reconnecting".to_owned()
}
