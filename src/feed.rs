//! The feed of one broker connection: hands its messages to the hub, checks its liveness with
//! PINGs (R-RED-4), and decides what a lost connection does (`[redis] on_loss`):
//!
//! - `shutdown` (the original's behaviour, R-RED-5): [`run`] returns the loss and the server
//!   shuts down.
//! - `reconnect`: the sessions stay open. The lost connection is dropped, a new one is opened
//!   with capped exponential backoff and jitter, every channel the hub holds is subscribed
//!   again in pipelined batches, and only then do subscriptions waiting for the broker resolve
//!   and the feed goes on. Messages published meanwhile are delivered from history where the
//!   channel keeps one ([`catch_up`]), else lost.
//!
//! A broker that reconnects by itself (NATS: its message stream goes on across an outage)
//! reports its [`Link`]: the receive loop holds messages while it is down and catches up from
//! history once it is back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::stream::{BoxStream, StreamExt};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::app::App;
use crate::broker::{Broker, Incoming, Link};
use crate::publish::Position;

/// How a broker connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The connection closed (or failed).
    Closed,
    /// A PING was not answered within `ping_timeout` (a frozen broker).
    PingTimeout,
}

/// First reconnection delay; doubled after each failed attempt...
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// ... up to this. Each delay is drawn uniformly from its upper half (jitter), so nodes that
/// lost the same Redis do not reconnect in step.
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Feeds broker `index`'s messages to the hub until the connection is lost for good: with
/// `on_loss = "shutdown"` the first loss ends it; with `reconnect` it never returns.
pub async fn run(
    app: Arc<App>,
    index: usize,
    b: Arc<dyn Broker>,
    mut messages: BoxStream<'static, Incoming>,
) -> Loss {
    loop {
        let loss = tokio::select! {
            () = receive(app.clone(), index, messages, b.link()) => Loss::Closed,
            () = unanswered_ping(b.clone()) => Loss::PingTimeout,
        };
        let label = b.label();
        if loss == Loss::Closed {
            tracing::error!(broker = label, "redis unexpectedly closed");
        }
        app.metrics.set_broker_connected(label, false);
        if !b.reconnects() {
            return loss;
        }
        b.lost();
        let since = Instant::now();
        tracing::warn!(
            broker = label,
            channels = app.hub.channel_count(),
            "redis connection lost: sessions stay open, reconnecting"
        );
        let channels;
        (messages, channels) = reconnect(&app, index, &b).await;
        let outage = since.elapsed().as_secs_f64();
        b.recovered();
        app.metrics.set_broker_connected(label, true);
        app.metrics.broker_outage(label, outage);
        tracing::warn!(broker = label, outage, channels, "redis reconnected");
        if index == 0 {
            // Before the new connection's messages: history lives on the first broker.
            catch_up(&app, index).await;
        }
    }
}

/// After an outage: every held channel with history gets the messages published since the
/// last one it dispatched, read from its history, in order; the live copies that follow are
/// then dropped by the hub as already delivered. Where the history no longer holds them all,
/// the channel's sessions are told (`Hub::unrecovered`).
async fn catch_up(app: &App, index: usize) {
    let Some(b) = app.hub.brokers().get(index) else {
        return;
    };
    let (mut recovered, mut unrecovered, mut messages) = (0usize, 0usize, 0usize);
    for (name, last) in app.hub.positions() {
        let ttl = app
            .cfg()
            .service_for(&name)
            .and_then(|svc| svc.history())
            .map(|(_, ttl)| ttl);
        let Some(ttl) = ttl else {
            continue;
        };
        let read = async |since: u64| app.hub.history(&name, Some(since), ttl).await;
        let gap = match read(last.offset).await {
            Ok(h) if h.epoch == last.epoch => {
                let complete =
                    last.offset <= h.top && h.messages.len() as u64 == h.top - last.offset;
                Ok((h, complete))
            }
            // A new epoch (Redis restarted empty, or the history expired): every message of
            // it came after the last one dispatched; recoverable while the window holds all.
            Ok(_) => read(0).await.map(|h| {
                let complete = h.messages.len() as u64 == h.top;
                (h, complete)
            }),
            Err(e) => Err(e),
        };
        match gap {
            Ok((h, true)) => {
                recovered += 1;
                messages += h.messages.len();
                let channel = format!("{}{}", b.prefix(), name);
                for (i, payload) in h.messages.iter().enumerate() {
                    app.hub
                        .dispatch(index, &channel, payload, h.messages.len() - i - 1);
                }
            }
            Ok((h, false)) => {
                unrecovered += 1;
                tracing::warn!(
                    subscription = name.as_str(),
                    offset = last.offset,
                    top = h.top,
                    "messages lost in the outage are no longer in the history"
                );
                app.hub.unrecovered(
                    &name,
                    Position {
                        offset: h.top,
                        epoch: h.epoch,
                    },
                );
            }
            Err(e) => {
                unrecovered += 1;
                tracing::warn!(
                    subscription = name.as_str(),
                    error = e.as_str(),
                    "history unavailable: messages lost in the outage are not recovered"
                );
            }
        }
    }
    if recovered + unrecovered > 0 {
        tracing::info!(
            broker = b.label(),
            recovered,
            messages,
            unrecovered,
            "history gap recovery"
        );
    }
}

/// Connects again until it works, then subscribes every held channel. Returns the new
/// connection's messages and the number of channels subscribed.
async fn reconnect(
    app: &App,
    index: usize,
    b: &Arc<dyn Broker>,
) -> (BoxStream<'static, Incoming>, usize) {
    let mut delay = BACKOFF_FIRST;
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        let wait = rand::rng().random_range(delay / 2..=delay);
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(BACKOFF_CAP);
        let failed = match b.clone().reconnect().await {
            Ok(messages) => {
                let (n, confirmed) = app.hub.resubscribe(index);
                match confirmed.await {
                    Ok(()) => return (messages, n),
                    Err(e) => format!("subscribing {n} channels again failed: {e}"),
                }
            }
            Err(e) => e,
        };
        b.lost();
        // A long outage logs its first attempts, then one line in ten.
        if attempt <= 3 || attempt % 10 == 0 {
            tracing::warn!(
                broker = b.label(),
                attempt,
                error = failed.as_str(),
                "redis reconnect failed"
            );
        }
    }
}

/// The receive loop yields to the sessions' writers after this many messages...
const YIELD_MESSAGES: usize = 64;
/// ... or this many payload bytes, whichever comes first.
const YIELD_BYTES: usize = 64 * 1024;

/// Hands each broker message to the hub, in order, until the stream ends. `queue_size` is the
/// number of messages already received from the broker and still waiting behind the current
/// one (R-PUB-9).
///
/// With a broker that reconnects by itself (`link`, NATS), messages received while it is down
/// are held, and once it is back the gap is read from history ([`catch_up`]) before they go
/// on: they may have been published after messages this node missed (the hub then drops the
/// copies it already delivered from history).
async fn receive(
    app: Arc<App>,
    index: usize,
    mut messages: BoxStream<'static, Incoming>,
    mut link: Option<watch::Receiver<Link>>,
) {
    let mut seen = link.as_ref().map_or(0, |l| l.borrow().reconnections);
    let mut batch: VecDeque<Incoming> = VecDeque::new();
    loop {
        let first = tokio::select! {
            m = messages.next() => m,
            () = reconnected(&mut link, seen) => {
                seen = link_back(&app, index, &mut link).await;
                continue;
            }
        };
        let Some(first) = first else {
            return;
        };
        batch.push_back(first);
        let mut ended = false;
        while batch.len() < 1024 {
            match messages.next().now_or_never() {
                Some(Some(m)) => batch.push_back(m),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        if link
            .as_ref()
            .is_some_and(|l| !l.borrow().up || l.borrow().reconnections > seen)
        {
            seen = link_back(&app, index, &mut link).await;
        }
        let (mut messages_since_yield, mut bytes_since_yield) = (0, 0);
        while let Some(m) = batch.pop_front() {
            app.hub
                .dispatch(index, &m.channel_str(), &m.payload, batch.len());
            messages_since_yield += 1;
            bytes_since_yield += m.payload.len();
            if messages_since_yield == YIELD_MESSAGES || bytes_since_yield >= YIELD_BYTES {
                // Let the sessions' writers drain what this batch queued: between two yields a
                // session's queue grows by at most about YIELD_BYTES, far below the slow-consumer
                // limit (4 x limits.max_outbound_bytes, which is at least 64 KiB).
                (messages_since_yield, bytes_since_yield) = (0, 0);
                tokio::task::yield_now().await;
            }
        }
        if ended {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Resolves when the broker connected again after `seen` reconnections (never without a link).
async fn reconnected(link: &mut Option<watch::Receiver<Link>>, seen: u64) {
    match link {
        Some(l) => {
            if l.wait_for(|k| k.up && k.reconnections > seen)
                .await
                .is_err()
            {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Waits until the broker is connected, then recovers from history what was published while
/// it was not; returns the reconnections seen.
async fn link_back(app: &App, index: usize, link: &mut Option<watch::Receiver<Link>>) -> u64 {
    let Some(l) = link else {
        return 0;
    };
    let Ok(now) = l.wait_for(|k| k.up).await.map(|k| *k) else {
        return 0;
    };
    if index == 0 {
        catch_up(app, index).await;
    }
    now.reconnections
}

/// Pings the broker every `ping_interval`; returns when a ping is not answered within
/// `ping_timeout` (or fails, where the broker says a failure is a loss). Never returns when
/// pings are disabled, or once a ping failed (the connection is gone: the receive loop
/// reports it).
async fn unanswered_ping(b: Arc<dyn Broker>) {
    let Some((interval, timeout)) = b.ping_settings() else {
        return std::future::pending().await;
    };
    let mut wait = interval;
    loop {
        tokio::time::sleep(wait).await;
        tracing::trace!(broker = b.label(), "redis ping");
        let sent = Instant::now();
        match tokio::time::timeout(timeout, b.ping()).await {
            Ok(Ok(())) => {
                let latency = sent.elapsed();
                tracing::trace!(
                    broker = b.label(),
                    latency = latency.as_secs_f64(),
                    "redis pong"
                );
                wait = interval.saturating_sub(latency);
            }
            Ok(Err(e)) if b.ping_error_is_loss() => {
                tracing::warn!(broker = b.label(), error = e.as_str(), "redis ping failed");
                return;
            }
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => {
                tracing::warn!(broker = b.label(), "redis ping timeout");
                return;
            }
        }
    }
}
