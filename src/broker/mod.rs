//! Brokers: where published messages come from.
//!
//! The hub talks to brokers only through [`Broker`]: subscribe a channel, unsubscribe it, ping.
//! Each broker also yields a stream of [`Incoming`] messages, which the server's receive loop
//! hands to the hub. Delivery semantics (filter fields, order, throttle) live above this trait,
//! in the hub and the session, so every broker gets them unchanged.

pub mod cluster;
pub mod memory;
pub mod nats;
pub mod redis;
pub mod subscriber;

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::BoxStream;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The answer of a broker without `what` (history, presence).
fn unsupported<T: Send + 'static>(what: &str) -> BoxFuture<Result<T, String>> {
    Box::pin(std::future::ready(Err(format!(
        "this broker keeps no {what}"
    ))))
}

/// Unix time in seconds (presence expiry).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A message as received from a broker: the channel (prefix included) and the raw payload.
/// Both may be slices of one buffer shared by many messages (the Redis subscriber connection's
/// read), so that a message costs no allocation of its own.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub channel: Bytes,
    pub payload: Bytes,
}

impl Incoming {
    pub fn new(channel: impl Into<Bytes>, payload: impl Into<Bytes>) -> Incoming {
        Incoming {
            channel: channel.into(),
            payload: payload.into(),
        }
    }

    /// The channel's name (invalid UTF-8 replaced: no such channel is ever subscribed).
    pub fn channel_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.channel)
    }
}

/// A channel's history position, and the messages after a given offset (issue 14).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The history's epoch: offsets compare only within one epoch.
    pub epoch: String,
    /// The offset of the channel's last message (0 before the first).
    pub top: u64,
    /// The stored payloads after the asked offset, oldest first, each stamped with its
    /// position. When the window no longer holds all of them, the oldest are missing: compare
    /// the first one's offset with the asked one.
    pub messages: Vec<Vec<u8>>,
}

/// One broker connection.
pub trait Broker: Send + Sync + 'static {
    /// A short name for logs: `redis`, `redis_alt`.
    fn label(&self) -> &str;

    /// Prepended to subscription names to form channel names (R-PUB-1).
    fn prefix(&self) -> &str;

    /// Subscribes to `channel`. The request is issued before this returns, so requests are
    /// sent in call order; the future resolves once the broker confirmed it.
    fn subscribe(&self, channel: &str) -> BoxFuture<Result<(), String>>;

    /// Unsubscribes from `channel`. Issued before this returns (ordered with `subscribe`); never
    /// waits for the broker, so a frozen broker cannot stall a session's end (R-DEF-5).
    fn unsubscribe(&self, channel: &str);

    /// Publishes `payload` on `channel` (prefix included), for the HTTP publish API. With
    /// Redis this is a PUBLISH, so every node subscribed to the channel delivers it.
    fn publish(&self, channel: &str, payload: Vec<u8>) -> BoxFuture<Result<(), String>>;

    /// Publishes `payload` (a JSON object) on `channel` with history: the broker gives it the
    /// channel's next offset, stamps the position into it (`publish::HISTORY_KEY`), keeps the
    /// last `size` messages for `ttl` after the last one, and publishes the stamped message.
    /// Resolves to the offset.
    fn publish_with_history(
        &self,
        channel: &str,
        payload: Vec<u8>,
        size: usize,
        ttl: Duration,
    ) -> BoxFuture<Result<u64, String>> {
        let _ = (channel, payload, size, ttl);
        unsupported("history")
    }

    /// The channel's position and, with `since`, the stored messages after that offset. A
    /// channel without history gets an epoch now (kept for `ttl`), so that the position a
    /// subscriber is told stays valid for the messages that follow.
    fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        ttl: Duration,
    ) -> BoxFuture<Result<History, String>> {
        let _ = (channel, since, ttl);
        unsupported("history")
    }

    /// Adds or refreshes presence members of `channel` (issue 14): `(member id, info JSON)`
    /// pairs, each valid until `ttl` from now unless refreshed again.
    fn presence_add(
        &self,
        channel: &str,
        members: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> BoxFuture<Result<(), String>> {
        let _ = (channel, members, ttl);
        unsupported("presence")
    }

    /// Removes a presence member of `channel`.
    fn presence_remove(&self, channel: &str, member: &str) -> BoxFuture<Result<(), String>> {
        let _ = (channel, member);
        unsupported("presence")
    }

    /// The info JSON of `channel`'s present members (expired ones dropped).
    fn presence(&self, channel: &str) -> BoxFuture<Result<Vec<Vec<u8>>, String>> {
        let _ = channel;
        unsupported("presence")
    }

    /// Round-trips a ping; used for the liveness check (R-RED-4).
    fn ping(&self) -> BoxFuture<Result<(), String>>;

    /// `(interval, timeout)` of liveness pings, or `None` when disabled.
    fn ping_settings(&self) -> Option<(Duration, Duration)>;

    /// For a broker that reconnects by itself (its message stream goes on across an outage):
    /// its connection state. The feed holds messages while it is down and, once it is back,
    /// recovers from history what was published meanwhile before going on.
    fn link(&self) -> Option<tokio::sync::watch::Receiver<Link>> {
        None
    }

    /// Whether a failed PING means the connection is lost. By default it does not: the
    /// message stream ends with the connection and reports the loss.
    fn ping_error_is_loss(&self) -> bool {
        false
    }

    /// Whether a lost connection is re-established (`on_loss = "reconnect"`) instead of
    /// shutting the server down.
    fn reconnects(&self) -> bool {
        false
    }

    /// The connection was lost or froze: drop it. Until [`Broker::reconnect`] succeeds,
    /// `subscribe` waits for the broker to return, `unsubscribe` does nothing (the new
    /// connection subscribes only the channels still held), `publish` and `ping` fail.
    fn lost(&self) {}

    /// Opens a new connection and installs it; returns its message stream.
    fn reconnect(
        self: std::sync::Arc<Self>,
    ) -> BoxFuture<Result<BoxStream<'static, Incoming>, String>> {
        Box::pin(std::future::ready(Err(
            "this broker does not reconnect".to_owned()
        )))
    }

    /// Subscribes these channels (prefix included) on the current connection, pipelined in
    /// batches; issued before this returns. Resolves when every one is confirmed.
    fn resubscribe(&self, channels: Vec<String>) -> BoxFuture<Result<(), String>> {
        drop(channels);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Every held channel is subscribed again: subscriptions waiting for the broker to return
    /// resolve.
    fn recovered(&self) {}
}

/// The state of a broker that reconnects by itself (NATS): whether it is connected, and how many
/// times it connected again after losing its connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub reconnections: u64,
}

/// A connected broker and the stream of its messages. The stream ends when the connection is
/// lost.
pub struct Connected {
    pub broker: std::sync::Arc<dyn Broker>,
    pub messages: BoxStream<'static, Incoming>,
}
