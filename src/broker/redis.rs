//! Redis PUBSUB broker (R-RED): one connection per configured Redis carries every channel
//! subscription and the liveness PINGs. The connection is never re-established: when it is lost
//! the server shuts down (R-RED-5), so clients reconnect to another instance.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubSink;

use super::{BoxFuture, Broker, Connected, Incoming};
use crate::config::RedisConfig;

/// How long connecting (and the first PING) may take before startup fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RedisBroker {
    label: String,
    prefix: String,
    sink: PubSubSink,
    /// A second, ordinary connection for PUBLISH (a subscriber connection cannot publish); only
    /// opened when the HTTP publish API is on.
    publisher: Option<redis::aio::MultiplexedConnection>,
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
    let at = format!("{label}: {}:{}", cfg.host, cfg.port.0);
    let pubsub = within(&at, client.get_async_pubsub()).await?;
    let (mut sink, stream) = pubsub.split();
    let publisher = if publish {
        Some(within(&at, client.get_multiplexed_async_connection()).await?)
    } else {
        None
    };
    tokio::time::timeout(CONNECT_TIMEOUT, sink.ping::<redis::Value>())
        .await
        .map_err(|_| format!("{label}: PING timed out"))?
        .map_err(|e| {
            format!("{label}: PING in subscriber mode failed (Redis >= 3.2 required): {e}")
        })?;
    let ping = if cfg.ping_interval.is_zero() || cfg.ping_timeout.is_zero() {
        None
    } else {
        Some((cfg.ping_interval.duration(), cfg.ping_timeout.duration()))
    };
    let broker = Arc::new(RedisBroker {
        label: label.to_owned(),
        prefix: cfg.channel_prefix.clone(),
        sink,
        publisher,
        ping,
    });
    let messages = stream
        .map(|msg| Incoming {
            channel: msg.get_channel_name().to_owned(),
            payload: msg.get_payload_bytes().to_vec(),
        })
        .boxed();
    Ok(Connected { broker, messages })
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
        let mut sink = self.sink.clone();
        let channel = channel.to_owned();
        issue_now(async move { sink.subscribe(&channel).await.map_err(|e| e.to_string()) })
    }

    fn unsubscribe(&self, channel: &str) {
        let mut sink = self.sink.clone();
        let channel = channel.to_owned();
        // Queued now; the confirmation is not awaited.
        drop(issue_now(async move {
            let _ = sink.unsubscribe(&channel).await;
        }));
    }

    fn publish(&self, channel: &str, payload: Vec<u8>) -> BoxFuture<Result<(), String>> {
        let Some(mut conn) = self.publisher.clone() else {
            return Box::pin(std::future::ready(Err(
                "this broker was connected without a publisher".to_owned(),
            )));
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

    fn ping(&self) -> BoxFuture<Result<(), String>> {
        let mut sink = self.sink.clone();
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
}
