//! Redis Cluster broker (`[redis] cluster = ["host:port", ...]`, issue 16): sharded PUB/SUB, so
//! a channel's messages travel only through the shard that owns its slot and the cluster's
//! throughput grows with its masters, where classic PUBLISH is broadcast to every node.
//!
//! One redis-rs cluster connection (RESP3) carries everything: `SSUBSCRIBE` / `SUNSUBSCRIBE` per
//! channel (each routed to the master of the channel's slot), `SPUBLISH` for the HTTP publish
//! API, and the history and presence scripts (their keys share the channel's slot, see
//! `redis::history_keys`). Messages arrive as RESP3 pushes on one queue.
//!
//! redis-rs follows the cluster by itself: it reconnects to a node that dropped, refreshes the
//! slot map on MOVED or a failed request, and subscribes each tracked channel again on the
//! node that now owns its slot after it refreshed. A resharding is different: the old owner
//! sends a `sunsubscribe` push for each channel of the moved slot, and redis-rs forgets the
//! channel; the broker tells that push from the confirmation of its own SUNSUBSCRIBEs and
//! subscribes the channel again (its SSUBSCRIBE meets a MOVED, redis-rs follows it to the new
//! owner). If that fails for 10 s the message stream ends: a loss. It keeps the set of channels
//! the hub holds, so that neither that re-subscription nor redis-rs's own (after a slot map
//! refresh, from its tracker) leaves a channel subscribed on Redis that the hub let go meanwhile
//! (tests/cluster.rs, `a_channel_left_while_its_slot_moves_is_not_left_subscribed`: 2-3 of 30
//! rounds leaked without). Above that, the broker
//! keeps the single-Redis liveness checks and loss policy (`crate::feed`):
//!
//! - every `ping_interval`, a PING to every master must be answered within `ping_timeout`;
//! - a dropped node connection is checked at once: the message stream ends (a loss) unless
//!   every master still answers a PING (a replica that left, a connection redis-rs already
//!   replaced);
//! - `on_loss = "shutdown"` then shuts the server down (clients close with 1000);
//!   `on_loss = "reconnect"` keeps the sessions, waits until every master answers (the failover
//!   done and redis-rs on the new topology), subscribes every held channel again (a repeated
//!   SSUBSCRIBE is harmless) and recovers the gap from history where there is one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{FutureExt, Shared};
use futures_util::stream::BoxStream;
use redis::Value;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{PushInfo, PushKind};
use tokio::sync::{mpsc, watch};

use super::redis::{OUTAGE_WAIT, Scripts, issue_now, or_after_recovery, recovery_after};
use super::{BoxFuture, Broker, Connected, History, Incoming};
use crate::config::{OnLoss, RedisConfig};

/// How long connecting to the cluster (and the first PING of every master) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One attempt of a request on one node; redis-rs retries past it on another topology.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

type Pushes = mpsc::UnboundedReceiver<PushInfo>;

/// The completion of an SUNSUBSCRIBE.
type Unsubscribing = Shared<BoxFuture<()>>;

pub struct ClusterBroker {
    label: String,
    prefix: String,
    /// `label: host:port, ...`, for errors.
    at: String,
    conn: ClusterConnection,
    scripts: Scripts,
    on_loss: OnLoss,
    /// The push queue, while no message stream holds it (the stream gives it back when
    /// dropped, so a reconnection goes on with the messages queued meanwhile).
    pushes: Arc<Mutex<Option<Pushes>>>,
    /// Channels with an SUNSUBSCRIBE of ours not yet confirmed (how many): any other
    /// `sunsubscribe` push is the cluster's, when the channel's slot moved to another master.
    unsubscribing: Mutex<HashMap<String, u32>>,
    /// Channels with an SUNSUBSCRIBE in flight: its id and its completion, which a new
    /// SSUBSCRIBE of the channel waits for (`ordered_ssubscribe`).
    inflight: Arc<Mutex<HashMap<String, (u64, Unsubscribing)>>>,
    next_id: AtomicU64,
    /// The channels the hub holds (its subscribes in, its unsubscribes out, in its call
    /// order). A `sunsubscribe` push cannot say whether it confirms ours or tells of a move
    /// (a move during an unsubscribe of ours brings two), so a moved channel is subscribed
    /// again only while the hub holds it, and undone if the hub let it go meanwhile.
    held: Mutex<HashSet<String>>,
    /// Channels being subscribed again after their slot moved (one task each), and whether
    /// another move came meanwhile (then the task subscribes once more).
    moving: Mutex<HashMap<String, bool>>,
    /// Set when a moved channel could not be subscribed again: ends the message stream.
    moved_failed: watch::Sender<bool>,
    /// Set by [`Broker::lost`], cleared by [`Broker::recovered`].
    lost: AtomicBool,
    /// Counts recoveries, as the single-Redis broker does.
    recoveries: watch::Sender<u64>,
    ping: Option<(Duration, Duration)>,
}

/// Connects to the cluster through its seed nodes and checks that every master answers.
pub async fn connect(cfg: &RedisConfig, label: &str) -> Result<Connected, String> {
    let at = format!("{label}: {}", cfg.cluster.join(", "));
    let nodes: Vec<String> = cfg
        .cluster
        .iter()
        .map(|node| format!("redis://{node}/"))
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let client = redis::cluster::ClusterClientBuilder::new(nodes)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .connection_timeout(RESPONSE_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(OUTAGE_WAIT))
        .build()
        .map_err(|e| format!("{at}: {e}"))?;
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_connection()).await {
        Err(_) => return Err(format!("{at}: connecting timed out")),
        Ok(r) => r.map_err(|e| format!("{at}: {e}"))?,
    };
    let ping = if cfg.ping_interval.is_zero() || cfg.ping_timeout.is_zero() {
        None
    } else {
        Some((cfg.ping_interval.duration(), cfg.ping_timeout.duration()))
    };
    let broker = Arc::new(ClusterBroker {
        label: label.to_owned(),
        prefix: cfg.channel_prefix.clone(),
        at: at.clone(),
        conn,
        scripts: Scripts::new(),
        on_loss: cfg.on_loss,
        pushes: Arc::new(Mutex::new(Some(rx))),
        unsubscribing: Mutex::new(HashMap::new()),
        moved_failed: watch::Sender::new(false),
        inflight: Arc::new(Mutex::new(HashMap::new())),
        next_id: AtomicU64::new(0),
        held: Mutex::new(HashSet::new()),
        moving: Mutex::new(HashMap::new()),
        lost: AtomicBool::new(false),
        recoveries: watch::Sender::new(0),
        ping,
    });
    tokio::time::timeout(CONNECT_TIMEOUT, broker.ping_masters())
        .await
        .map_err(|_| format!("{at}: PING timed out"))?
        .map_err(|e| format!("{at}: PING failed: {e}"))?;
    let mut conn = broker.conn.clone();
    let info = conn
        .route_command(
            redis::cmd("INFO").arg("server").to_owned(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await
        .map_err(|e| format!("{at}: INFO failed: {e}"))?;
    let info: String = redis::from_redis_value(info).unwrap_or_default();
    check_version(&info).map_err(|e| format!("{at}: {e}"))?;
    let messages = broker.messages();
    Ok(Connected { broker, messages })
}

/// Holds the push queue while a message stream reads it, and gives it back when dropped.
struct Borrowed {
    rx: Option<Pushes>,
    home: Arc<Mutex<Option<Pushes>>>,
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            *self.home.lock().unwrap() = Some(rx);
        }
    }
}

/// A channel message from a push, or `None` for every other push (subscription
/// confirmations, ...).
fn message(push: PushInfo) -> Option<Incoming> {
    if !matches!(push.kind, PushKind::SMessage | PushKind::Message) {
        return None;
    }
    let mut data = push.data.into_iter();
    let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
        return None;
    };
    let channel = redis::from_redis_value::<Vec<u8>>(channel).ok()?;
    let payload = redis::from_redis_value::<Vec<u8>>(payload).ok()?;
    Some(Incoming::new(channel, payload))
}

impl ClusterBroker {
    /// The message stream: it ends when a node connection dropped and a master no longer
    /// answers (module documentation).
    fn messages(self: &Arc<Self>) -> BoxStream<'static, Incoming> {
        let Some(rx) = self.pushes.lock().unwrap().take() else {
            // Never: the previous stream was dropped before a reconnection.
            return futures_util::stream::empty().boxed();
        };
        let borrowed = Borrowed {
            rx: Some(rx),
            home: self.pushes.clone(),
        };
        let broker = Arc::downgrade(self);
        self.moved_failed.send_replace(false);
        let failed = self.moved_failed.subscribe();
        let state = (borrowed, broker, failed);
        futures_util::stream::unfold(state, |(mut b, broker, mut failed)| async move {
            loop {
                let push = tokio::select! {
                    push = b.rx.as_mut()?.recv() => push?,
                    // A moved channel could not be subscribed again: a loss.
                    _ = failed.wait_for(|f| *f) => return None,
                };
                if push.kind == PushKind::Disconnection {
                    let broker = broker.upgrade()?;
                    let timeout = broker.ping.map_or(RESPONSE_TIMEOUT, |(_, t)| t);
                    match tokio::time::timeout(timeout, broker.ping_masters()).await {
                        Ok(Ok(())) => {
                            tracing::info!(
                                broker = broker.label.as_str(),
                                "redis cluster: a node connection dropped, every master answers"
                            );
                            continue;
                        }
                        Ok(Err(e)) => tracing::error!(
                            broker = broker.label.as_str(),
                            error = e.as_str(),
                            "redis cluster: a node connection dropped and a master is unreachable"
                        ),
                        Err(_) => tracing::error!(
                            broker = broker.label.as_str(),
                            "redis cluster: a node connection dropped and a master does not answer"
                        ),
                    }
                    return None;
                }
                if push.kind == PushKind::SUnsubscribe {
                    if let (Some(broker), Some(channel)) = (broker.upgrade(), push_channel(&push)) {
                        broker.unsubscribed(channel);
                    }
                    continue;
                }
                if push.kind == PushKind::SSubscribe {
                    if let (Some(broker), Some(channel)) = (broker.upgrade(), push_channel(&push)) {
                        broker.subscribed(&channel);
                    }
                    continue;
                }
                if let Some(m) = message(push) {
                    return Some((m, (b, broker, failed)));
                }
            }
        })
        .boxed()
    }

    /// PINGs every master the cluster names (`CLUSTER SLOTS`, asked to any connected node) on
    /// the connection redis-rs holds to it; fails unless every one answers. (redis-rs's own
    /// all-masters routing skips a node it is not connected to, which would hide a lost one.)
    fn ping_masters(&self) -> BoxFuture<Result<(), String>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let slots = conn
                .route_command(
                    redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                )
                .await
                .map_err(|e| format!("CLUSTER SLOTS: {e}"))?;
            let masters = masters(slots)?;
            let pings = masters.into_iter().map(|(host, port)| {
                let mut conn = conn.clone();
                async move {
                    let at = format!("{host}:{port}");
                    conn.route_command(
                        redis::cmd("PING"),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port }),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("master {at}: {e}"))
                }
            });
            for r in futures_util::future::join_all(pings).await {
                r?;
            }
            Ok(())
        })
    }

    /// A `sunsubscribe` push for `channel`: the confirmation of ours, or the cluster's when the
    /// channel's slot moved (a resharding): then the channel is subscribed again, which
    /// reaches its new owner (redis-rs follows the MOVED and refreshes its slot map).
    fn unsubscribed(self: Arc<Self>, channel: String) {
        {
            let mut pending = self.unsubscribing.lock().unwrap();
            if let Some(n) = pending.get_mut(&channel) {
                *n -= 1;
                if *n == 0 {
                    pending.remove(&channel);
                }
                return;
            }
        }
        tracing::info!(
            broker = self.label.as_str(),
            channel = channel.as_str(),
            "redis cluster: a channel's slot moved, subscribing it again"
        );
        {
            let mut moving = self.moving.lock().unwrap();
            if let Some(again) = moving.get_mut(&channel) {
                // Its task is still at work: it subscribes once more when done.
                *again = true;
                return;
            }
            moving.insert(channel.clone(), false);
        }
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            let since = tokio::time::Instant::now();
            let mut tried = false;
            loop {
                {
                    let held = self.held.lock().unwrap();
                    let mut moving = self.moving.lock().unwrap();
                    if !held.contains(&channel) {
                        // The hub does not hold the channel (any more): nothing to subscribe
                        // again, and a failed attempt that may still have reached the node
                        // after the hub's SUNSUBSCRIBE is undone.
                        moving.remove(&channel);
                        if tried {
                            self.sunsubscribe(&channel);
                        }
                        return;
                    }
                    if let Some(again) = moving.get_mut(&channel) {
                        *again = false;
                    }
                }
                tried = true;
                match self.ssubscribe(&channel).await {
                    Ok(()) => {
                        // Under the lock of the hub's set, so that a subscribe of the hub that
                        // follows waits for the SUNSUBSCRIBE issued here.
                        let held = self.held.lock().unwrap();
                        let mut moving = self.moving.lock().unwrap();
                        let held = held.contains(&channel);
                        if held && moving.get(&channel) == Some(&true) {
                            continue;
                        }
                        moving.remove(&channel);
                        if !held {
                            // The hub let it go while the SSUBSCRIBE was under way, which may
                            // have reached the node after the hub's SUNSUBSCRIBE: undone.
                            self.sunsubscribe(&channel);
                        }
                        return;
                    }
                    Err(e) if since.elapsed() >= OUTAGE_WAIT => {
                        self.moving.lock().unwrap().remove(&channel);
                        // Deaf on this channel: a loss, so that the feed subscribes every held
                        // channel again (or shuts down, as configured).
                        tracing::error!(
                            broker = self.label.as_str(),
                            channel = channel.as_str(),
                            error = e.as_str(),
                            "redis cluster: subscribing a moved channel again failed"
                        );
                        self.moved_failed.send_replace(true);
                        return;
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                    }
                }
            }
        });
    }

    /// An `ssubscribe` push: a confirmation. One for a channel the hub does not hold comes from
    /// redis-rs, which after refreshing its slot map subscribes every channel it tracks again,
    /// and can do so after the hub's SUNSUBSCRIBE of a channel that just moved: undone, else
    /// the node would keep it until the connection closes.
    /// Also the confirmation of a subscribe the hub undid before this push was read: then
    /// the SUNSUBSCRIBE is one more, harmless.
    fn subscribed(&self, channel: &str) {
        let held = self.held.lock().unwrap();
        if !held.contains(channel) {
            tracing::debug!(
                broker = self.label.as_str(),
                channel,
                "redis cluster: a channel nobody holds was subscribed again, unsubscribing it"
            );
            // Under the lock, so that a subscribe of the hub that follows waits for it.
            self.sunsubscribe(channel);
        }
    }

    /// SUNSUBSCRIBEs one channel, queued now; a later SSUBSCRIBE of it waits for this one
    /// (`ordered_ssubscribe`), and its confirmation push is not taken for a move.
    fn sunsubscribe(&self, channel: &str) {
        *self
            .unsubscribing
            .lock()
            .unwrap()
            .entry(channel.to_owned())
            .or_insert(0) += 1;
        let (mut conn, name) = (self.conn.clone(), channel.to_owned());
        let done = issue_now(async move {
            let _ = conn.sunsubscribe(&name).await;
        })
        .shared();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.inflight
            .lock()
            .unwrap()
            .insert(channel.to_owned(), (id, done.clone()));
        // Driven to its end here (a subscribe of the channel may be waiting for it); queued
        // already unless redis-rs's request queue was full, then it waits its turn.
        let (inflight, channel) = (self.inflight.clone(), channel.to_owned());
        tokio::spawn(async move {
            done.await;
            let mut inflight = inflight.lock().unwrap();
            if inflight.get(&channel).is_some_and(|(i, _)| *i == id) {
                inflight.remove(&channel);
            }
        });
    }

    /// SSUBSCRIBEs one channel, queued now (in call order with unsubscribes).
    fn ssubscribe(&self, channel: &str) -> BoxFuture<Result<(), String>> {
        let (mut conn, channel) = (self.conn.clone(), channel.to_owned());
        issue_now(async move { conn.ssubscribe(&channel).await.map_err(|e| e.to_string()) })
    }

    /// SSUBSCRIBEs a channel after the SUNSUBSCRIBE of it still in flight, if any. redis-rs
    /// may reorder two requests (for one channel they go to one node, but each first looks up
    /// its connection), and an unsubscribe overtaking the subscribe that follows it would
    /// leave the channel deaf.
    fn ordered_ssubscribe(&self, channel: &str) -> BoxFuture<Result<(), String>> {
        let before = self
            .inflight
            .lock()
            .unwrap()
            .get(channel)
            .map(|(_, done)| done.clone());
        match before {
            None => self.ssubscribe(channel),
            Some(done) => {
                let (mut conn, channel) = (self.conn.clone(), channel.to_owned());
                Box::pin(async move {
                    done.await;
                    conn.ssubscribe(&channel).await.map_err(|e| e.to_string())
                })
            }
        }
    }
}

impl Broker for ClusterBroker {
    fn label(&self) -> &str {
        &self.label
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn subscribe(&self, channel: &str) -> BoxFuture<Result<(), String>> {
        self.held.lock().unwrap().insert(channel.to_owned());
        let seen = *self.recoveries.borrow();
        let lost = self.lost.load(Ordering::SeqCst);
        if self.on_loss == OnLoss::Shutdown {
            return self.ordered_ssubscribe(channel);
        }
        // Reconnecting: as with one Redis, a held channel is subscribed again after an
        // outage, so a request made during one succeeds when the broker has recovered.
        let issued = (!lost).then(|| self.ordered_ssubscribe(channel));
        or_after_recovery(
            issued,
            recovery_after(&self.recoveries, seen),
            "redis cluster",
        )
    }

    fn unsubscribe(&self, channel: &str) {
        self.held.lock().unwrap().remove(channel);
        self.sunsubscribe(channel);
    }

    fn publish(&self, channel: &str, payload: Vec<u8>) -> BoxFuture<Result<(), String>> {
        Scripts::publish(self.conn.clone(), "SPUBLISH", channel, payload)
    }

    fn publish_with_history(
        &self,
        channel: &str,
        payload: Vec<u8>,
        size: usize,
        ttl: Duration,
    ) -> BoxFuture<Result<u64, String>> {
        let conn = self.conn.clone();
        self.scripts
            .publish_with_history(conn, "SPUBLISH", channel, payload, size, ttl)
    }

    fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        ttl: Duration,
    ) -> BoxFuture<Result<History, String>> {
        self.scripts.history(self.conn.clone(), channel, since, ttl)
    }

    fn presence_add(
        &self,
        channel: &str,
        members: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> BoxFuture<Result<(), String>> {
        self.scripts
            .presence_add(self.conn.clone(), channel, members, ttl)
    }

    fn presence_remove(&self, channel: &str, member: &str) -> BoxFuture<Result<(), String>> {
        Scripts::presence_remove(self.conn.clone(), channel, member)
    }

    fn presence(&self, channel: &str) -> BoxFuture<Result<Vec<Vec<u8>>, String>> {
        self.scripts.presence(self.conn.clone(), channel)
    }

    fn ping(&self) -> BoxFuture<Result<(), String>> {
        self.ping_masters()
    }

    fn ping_settings(&self) -> Option<(Duration, Duration)> {
        self.ping
    }

    /// A failed PING is a loss here: the message stream does not end by itself when a
    /// master stops answering.
    fn ping_error_is_loss(&self) -> bool {
        true
    }

    fn reconnects(&self) -> bool {
        self.on_loss == OnLoss::Reconnect
    }

    fn lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    fn reconnect(self: Arc<Self>) -> BoxFuture<Result<BoxStream<'static, Incoming>, String>> {
        Box::pin(async move {
            let timeout = self.ping.map_or(RESPONSE_TIMEOUT, |(_, t)| t);
            match tokio::time::timeout(timeout.max(RESPONSE_TIMEOUT), self.ping_masters()).await {
                Ok(Ok(())) => Ok(self.messages()),
                Ok(Err(e)) => Err(format!("{}: {e}", self.at)),
                Err(_) => Err(format!("{}: a master does not answer", self.at)),
            }
        })
    }

    fn resubscribe(&self, channels: Vec<String>) -> BoxFuture<Result<(), String>> {
        let issued: Vec<_> = channels.iter().map(|c| self.ssubscribe(c)).collect();
        Box::pin(async move {
            for r in futures_util::future::join_all(issued).await {
                r?;
            }
            Ok(())
        })
    }

    fn recovered(&self) {
        self.lost.store(false, Ordering::SeqCst);
        self.recoveries.send_modify(|n| *n += 1);
    }
}

/// Sharded PUB/SUB needs Redis >= 7 (`INFO server`'s `redis_version`).
fn check_version(info: &str) -> Result<(), String> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("unknown");
    match version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
    {
        Some(major) if major >= 7 => Ok(()),
        _ => Err(format!(
            "Redis {version}: sharded pub/sub (SSUBSCRIBE) needs Redis >= 7"
        )),
    }
}

/// The channel of a `sunsubscribe` push.
fn push_channel(push: &PushInfo) -> Option<String> {
    let channel = redis::from_redis_value::<Vec<u8>>(push.data.first()?.clone()).ok()?;
    Some(String::from_utf8_lossy(&channel).into_owned())
}

/// The distinct masters of a `CLUSTER SLOTS` reply: each entry is `[first slot, last slot,
/// [master host, port, ...], replicas...]`.
fn masters(slots: Value) -> Result<Vec<(String, u16)>, String> {
    let bad = || format!("CLUSTER SLOTS: unexpected reply {slots:?}");
    let Value::Array(ranges) = &slots else {
        return Err(bad());
    };
    let mut out: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad());
        };
        let Some(Value::Array(master)) = fields.get(2) else {
            return Err(bad());
        };
        let (Some(host), Some(port)) = (master.first(), master.get(1)) else {
            return Err(bad());
        };
        let host: String = redis::from_redis_value(host.clone()).map_err(|_| bad())?;
        let port: u16 = redis::from_redis_value(port.clone()).map_err(|_| bad())?;
        if !out.iter().any(|(h, p)| *h == host && *p == port) {
            out.push((host, port));
        }
    }
    if out.is_empty() {
        return Err("CLUSTER SLOTS: no slot is served".to_owned());
    }
    Ok(out)
}

/// Whether `push` carries no channel message (used by the tests of the stream).
#[cfg(test)]
fn ignored(push: PushInfo) -> bool {
    message(push).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_to_messages() {
        let push = |kind, data: Vec<&str>| PushInfo {
            kind,
            data: data
                .into_iter()
                .map(|d| Value::BulkString(d.as_bytes().to_vec()))
                .collect(),
        };
        let m = message(push(PushKind::SMessage, vec!["chat.a", "{\"x\":1}"])).unwrap();
        assert_eq!(
            (&*m.channel_str(), &m.payload[..]),
            ("chat.a", &b"{\"x\":1}"[..])
        );
        assert!(ignored(push(PushKind::SSubscribe, vec!["chat.a"])));
        assert!(ignored(push(PushKind::Disconnection, vec![])));
        assert!(ignored(push(PushKind::SMessage, vec!["chat.a"])));
    }

    #[test]
    fn version_check() {
        assert!(check_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_version("redis_version:8.2.1").is_ok());
        let e = check_version("redis_version:6.2.14\r\n").unwrap_err();
        assert_eq!(
            e,
            "Redis 6.2.14: sharded pub/sub (SSUBSCRIBE) needs Redis >= 7"
        );
        assert!(check_version("").is_err());
    }

    #[test]
    fn masters_of_cluster_slots() {
        let node = |port| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |lo, hi, master, replica| {
            Value::Array(vec![
                Value::Int(lo),
                Value::Int(hi),
                node(master),
                node(replica),
            ])
        };
        let reply = Value::Array(vec![
            range(0, 5460, 7000, 7003),
            range(5461, 10922, 7001, 7004),
            range(10923, 16000, 7002, 7005),
            range(16001, 16383, 7000, 7003),
        ]);
        assert_eq!(
            masters(reply).unwrap(),
            [
                ("127.0.0.1".to_owned(), 7000),
                ("127.0.0.1".to_owned(), 7001),
                ("127.0.0.1".to_owned(), 7002)
            ]
        );
        assert!(masters(Value::Array(vec![])).is_err());
        assert!(masters(Value::Nil).is_err());
    }
}
