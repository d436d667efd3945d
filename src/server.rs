//! The process: startup (R-CFG-6), the WebSocket listener, each connection's IO loop, server
//! pings (R-WS-7/8), TLS (R-WS-9) and shutdown (R-SHUT).
//!
//! Each connection is one task (`serve`): one `select!` loop reads frames (decoded by
//! [`crate::wire::read`]) and queues client messages, runs the session's commands one at a time
//! (R-ORD-1) while it keeps reading (so pongs and closes are seen during a slow callback), drives
//! the ping timers, and writes (a `Writer` drains the session's outbox, every frame that is
//! ready with one vectored write, [`crate::wire`]). Everything the server sends, including the
//! answers to client pings and closes, goes through the outbox.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::ready;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::stream::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

use crate::app::App;
use crate::broker::{self, Broker, Incoming};
use crate::config::{BrokerKind, CompressionConfig, Config, EventRatePolicy};
use crate::hub::Hub;
use crate::metrics::{self, Metrics};
use crate::service::ServiceClient;
use crate::session::{ClientFrame, Out, Session};
use crate::wire::deflate::{self, Agreed};
use crate::wire::read::{Frame, FrameReader, ReadFail, read_frames};
use crate::wire::{self, Batch};

/// Largest accepted handshake request head.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How long the server waits for the client's close frame (R-WS-10).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The WebSocket library keepalive of the reference (R-WS-8).
const KEEPALIVE: Duration = Duration::from_secs(20);

/// Why the server shuts down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    BrokerClosed,
    BrokerPingTimeout,
}

/// Counts a connection from accept to the end of its session (`limits.max_connections`).
struct ConnectionSlot(Arc<App>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// Client events a session may start (`limits.max_events_per_second`, `max_event_burst`).
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is there (nothing is taken then).
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

fn bind_host(host: &str) -> &str {
    if host.is_empty() { "0.0.0.0" } else { host }
}

/// Runs the server until it shuts down. Returns the process exit status.
pub async fn run(cfg: Config) -> i32 {
    // Installed first, so that a signal arriving during startup is not fatal: it is handled
    // once the server is up (R-CFG-7: orderly shutdown, exit 0).
    let signals = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return 1;
        }
    };
    let cfg = Arc::new(cfg);
    // The reference's first trace line (R-LOG-4): shows that trace logging is on.
    tracing::trace!("trace");
    if cfg.embedded {
        tracing::info!(
            ws = "ws://127.0.0.1:9000/",
            publish = "http://127.0.0.1:9001/publish",
            service = "demo",
            "no configuration file: running on the embedded broker (no Redis) with the WebSocket \
             listener on 127.0.0.1:9000, the publish API on 127.0.0.1:9001 and one service, \
             `demo`, open to anonymous clients"
        );
    }
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let metrics = Arc::new(Metrics::new(cfg.metrics.log.is_some()));
    start_metrics(&cfg, &metrics).await;

    let http = match ServiceClient::new(&cfg.http, metrics.clone()) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = e.as_str(), "unhandled exception");
            return 1;
        }
    };

    // Brokers: the embedded one, or Redis (and Redis-alt) connected in parallel (R-RED-1).
    let mut brokers: Vec<Arc<dyn Broker>> = Vec::new();
    let mut streams = Vec::new();
    let connected = match cfg.broker {
        BrokerKind::Memory => vec![Ok(broker::memory::start())],
        BrokerKind::Redis => {
            let publish = cfg.api.is_some();
            let labels = ["redis", "redis_alt"];
            let connecting = cfg
                .redis_connections()
                .into_iter()
                .zip(labels)
                .map(|(rc, label)| broker::redis::connect(rc, label, publish));
            futures_util::future::join_all(connecting).await
        }
    };
    for result in connected {
        match result {
            Ok(c) => {
                metrics.set_broker_connected(c.broker.label(), true);
                brokers.push(c.broker);
                streams.push(c.messages);
            }
            Err(e) => {
                tracing::error!(error = e.as_str(), "could not connect to redis");
                return 1;
            }
        }
    }
    let compression = Some(cfg.ws.compression.clone()).filter(|c| c.enabled);
    let hub = Hub::new(brokers.clone(), compression);
    let app = Arc::new(App::new(cfg.clone(), http, hub, metrics.clone()));

    let host = bind_host(&cfg.ws.host);
    let listener = match TcpListener::bind((host, cfg.ws.port.0)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                error = %format!("cannot listen on {}:{}: {e}", cfg.ws.host, cfg.ws.port.0),
                "unhandled exception"
            );
            return 1;
        }
    };
    if let Some(api_cfg) = &cfg.api {
        let listener = match TcpListener::bind((bind_host(&api_cfg.host), api_cfg.port.0)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(
                    error = %format!("cannot listen on {}:{}: {e}", api_cfg.host, api_cfg.port.0),
                    "unhandled exception"
                );
                return 1;
            }
        };
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(api_cfg.port.0);
        tracing::info!(host = api_cfg.host.as_str(), port, "publish API listening");
        tokio::spawn(crate::api::serve(app.clone(), api_cfg.clone(), listener));
    }
    let tls = match cfg.tls_files() {
        None => None,
        Some((cert, key)) => match crate::tls::acceptor(cert, key) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(error = e.as_str(), "unhandled exception");
                return 1;
            }
        },
    };
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(cfg.ws.port.0);
    tracing::info!(
        host = cfg.ws.host.as_str(),
        port,
        secure = tls.is_some(),
        "🦈  ready"
    );
    metrics.set_ready(true);

    let (trigger_tx, mut trigger_rx) = mpsc::unbounded_channel::<Trigger>();
    let signals = tokio::spawn(watch_signals(signals, trigger_tx.clone()));
    let mut background = Vec::new();
    for (index, (b, messages)) in brokers.iter().zip(streams).enumerate() {
        let tx = trigger_tx.clone();
        let app2 = app.clone();
        let label = b.label().to_owned();
        background.push(tokio::spawn(async move {
            receive(app2.clone(), index, messages).await;
            tracing::error!(broker = label.as_str(), "redis unexpectedly closed");
            app2.metrics.set_broker_connected(&label, false);
            app2.metrics.set_ready(false);
            let _ = tx.send(Trigger::BrokerClosed);
        }));
        if let Some((interval, timeout)) = b.ping_settings() {
            let tx = trigger_tx.clone();
            let b = b.clone();
            let metrics = app.metrics.clone();
            background.push(tokio::spawn(async move {
                if ping_broker(b.clone(), interval, timeout).await {
                    // An unanswered PING counts as a lost connection (R-RED-4).
                    metrics.set_broker_connected(b.label(), false);
                    let _ = tx.send(Trigger::BrokerPingTimeout);
                }
            }));
        }
    }

    let app2 = app.clone();
    background.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let bytes = app2.queued_bytes();
            app2.metrics.set_outbound_queue_bytes(bytes as i64);
            app2.hub.release_idle_streams(std::time::Instant::now());
            app2.metrics
                .set_compression_streams(app2.hub.compressors() as i64);
        }
    }));

    let max_connections = cfg.limits.max_connections;
    let trigger = loop {
        tokio::select! {
            t = trigger_rx.recv() => break t.unwrap_or(Trigger::Signal),
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    if max_connections > 0 && app.connections() >= max_connections {
                        tokio::spawn(refuse(stream, remote));
                        continue;
                    }
                    app.connection_opened();
                    let slot = ConnectionSlot(app.clone());
                    match &tls {
                        None => tokio::spawn(accept_plain(app.clone(), stream, remote, slot)),
                        Some(a) => {
                            tokio::spawn(accept_tls(app.clone(), stream, remote, a.clone(), slot))
                        }
                    };
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    };

    // Shutdown (R-SHUT-1).
    tracing::info!(reason = ?trigger, "shutting down");
    app.begin_shutdown();
    metrics.set_draining();
    drop(listener);
    for s in app.sessions() {
        s.close(1000, "");
    }
    loop {
        let n = app.session_count();
        if n == 0 {
            break;
        }
        tracing::info!(n_sessions = n, "waiting for sessions to close");
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while app.session_count() > 0 {
                app.session_ended.notified().await;
            }
        })
        .await;
    }
    for t in background {
        t.abort();
    }
    signals.abort();
    tracing::info!("done");
    metrics.set_ready(false);
    0
}

async fn start_metrics(cfg: &Config, metrics: &Arc<Metrics>) {
    if cfg.metrics.log.is_some() {
        tracing::info!(provider = "log", "initializing metrics");
    }
    let Some(p) = &cfg.metrics.prometheus else {
        return;
    };
    tracing::info!(provider = "prometheus", "initializing metrics");
    // The reference keeps running without a metrics endpoint when it cannot bind (R-CFG-6).
    match TcpListener::bind((bind_host(&p.host), p.port.0)).await {
        Ok(l) => {
            let port = l.local_addr().map(|a| a.port()).unwrap_or(p.port.0);
            tracing::info!(host = p.host.as_str(), port, "metrics listening");
            tokio::spawn(metrics::serve(metrics.clone(), l));
        }
        Err(e) => {
            tracing::error!(
                error = %format!("cannot listen on {}:{}: {e}", p.host, p.port.0),
                "could not start the metrics endpoint"
            );
        }
    }
}

/// SIGTERM and SIGINT start the shutdown; later ones are only logged (R-SHUT-2).
async fn watch_signals((mut term, mut int): (Signal, Signal), tx: mpsc::UnboundedSender<Trigger>) {
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stop requested");
        let _ = tx.send(Trigger::Signal);
    }
}

/// The receive loop yields to the sessions' writers after this many messages...
const YIELD_MESSAGES: usize = 64;
/// ... or this many payload bytes, whichever comes first.
const YIELD_BYTES: usize = 64 * 1024;

/// Hands each broker message to the hub, in order. `queue_size` is the number of messages
/// already received from the broker and still waiting behind the current one (R-PUB-9).
async fn receive(
    app: Arc<App>,
    index: usize,
    mut messages: futures_util::stream::BoxStream<'static, Incoming>,
) {
    let mut batch: VecDeque<Incoming> = VecDeque::new();
    loop {
        let Some(first) = messages.next().await else {
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
        let (mut messages_since_yield, mut bytes_since_yield) = (0, 0);
        while let Some(m) = batch.pop_front() {
            app.hub.dispatch(index, &m.channel, &m.payload, batch.len());
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

/// Pings the broker until a ping is not answered in time (returns true) or fails (false: the
/// connection is gone, which the receive loop reports).
async fn ping_broker(b: Arc<dyn Broker>, interval: Duration, timeout: Duration) -> bool {
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
            Ok(Err(_)) => return false,
            Err(_) => {
                tracing::warn!(broker = b.label(), "redis ping timeout");
                return true;
            }
        }
    }
}

/// Answers a connection over `limits.max_connections` with a 503 and closes it.
async fn refuse(mut stream: TcpStream, remote: SocketAddr) {
    tracing::warn!(remote = %remote, "too many connections: refusing");
    let body = "Too many connections; try again later.\n";
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        respond(
            &mut stream,
            "503 Service Unavailable",
            "Retry-After: 1\r\n",
            body,
        ),
    )
    .await;
}

/// One plain TCP connection: the WebSocket handshake, then the session. Spawned as its own
/// task so that its future has the plain layout (TLS state is large; idle memory matters).
async fn accept_plain(app: Arc<App>, stream: TcpStream, remote: SocketAddr, _slot: ConnectionSlot) {
    let _ = stream.set_nodelay(true);
    handshake_and_serve(app, stream, remote).await;
}

/// One TLS connection: the TLS handshake, the WebSocket handshake, then the session.
async fn accept_tls(
    app: Arc<App>,
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    _slot: ConnectionSlot,
) {
    let _ = stream.set_nodelay(true);
    let handshake_timeout = app.cfg.limits.handshake_timeout.duration();
    let tls_accept = Box::pin(acceptor.accept(stream));
    match tokio::time::timeout(handshake_timeout, tls_accept).await {
        Ok(Ok(s)) => Box::pin(handshake_and_serve(app, s, remote)).await,
        Ok(Err(e)) => tracing::debug!(remote = %remote, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(remote = %remote, "TLS handshake timed out"),
    }
}

async fn handshake_and_serve<S: SplitIo>(app: Arc<App>, stream: S, remote: SocketAddr) {
    // Boxed: the handshake's state is freed once it is done instead of staying in the
    // connection's future for its lifetime (it made that future 2,840 bytes instead of 1,280).
    let Some((stream, leftover, deflate)) = Box::pin(accept_handshake(&app, stream, remote)).await
    else {
        return;
    };
    let (read, write) = stream.split_io();
    serve(app, read, write, leftover, deflate, remote).await;
}

/// The WebSocket handshake within `limits.handshake_timeout`; the stream, the bytes the
/// client sent after its request and the agreed compression, or `None` if the connection is not
/// to be served.
async fn accept_handshake<S: SplitIo>(
    app: &App,
    mut stream: S,
    remote: SocketAddr,
) -> Option<(S, Vec<u8>, Option<Agreed>)> {
    let handshake_timeout = app.cfg.limits.handshake_timeout.duration();
    let compression = &app.cfg.ws.compression;
    let handshake = handshake(&mut stream, compression);
    let (leftover, deflate) = match tokio::time::timeout(handshake_timeout, handshake).await {
        Ok(Ok(rest)) => rest,
        Ok(Err(e)) => {
            tracing::debug!(remote = %remote, error = e.as_str(), "handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(remote = %remote, "handshake timed out");
            return None;
        }
    };
    if app.is_shutting_down() {
        tracing::warn!(remote = %remote, "dropped connection");
        return None;
    }
    Some((stream, leftover, deflate))
}

/// A connection split into the halves that the reader and the writer own. Plain TCP splits
/// without a lock; TLS needs `tokio::io::split` (a lock around each read and write).
trait SplitIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type R: AsyncRead + Unpin + Send + 'static;
    type W: AsyncWrite + Unpin + Send + 'static;
    fn split_io(self) -> (Self::R, Self::W);
}

impl SplitIo for TcpStream {
    type R = tokio::net::tcp::OwnedReadHalf;
    type W = tokio::net::tcp::OwnedWriteHalf;
    fn split_io(self) -> (Self::R, Self::W) {
        self.into_split()
    }
}

impl SplitIo for tokio_rustls::server::TlsStream<TcpStream> {
    type R = tokio::io::ReadHalf<Self>;
    type W = tokio::io::WriteHalf<Self>;
    fn split_io(self) -> (Self::R, Self::W) {
        tokio::io::split(self)
    }
}

/// Reads the HTTP upgrade request and answers it (R-WS-1/2, R-WS-6a). Returns the bytes read
/// past the request head and the agreed compression.
async fn handshake<S>(
    stream: &mut S,
    compression: &CompressionConfig,
) -> Result<(Vec<u8>, Option<Agreed>), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// What to do with the request read so far. Parsing is done before any `.await`, so the
    /// parser's header array never lives in the connection's future.
    enum Step {
        ReadMore,
        Accept(String, usize, Option<Agreed>),
        Refuse(Refusal, String),
    }
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(1024);
        }
        let n = stream.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed during the handshake".into());
        }
        let step = {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST_HEAD => Step::Refuse(
                    (
                        "431 Request Header Fields Too Large",
                        "",
                        "Request headers too large.\n",
                    ),
                    "request head too large".into(),
                ),
                Ok(httparse::Status::Partial) => Step::ReadMore,
                Err(e) => Step::Refuse(
                    (
                        "400 Bad Request",
                        "",
                        "Failed to open a WebSocket connection: invalid HTTP request.\n",
                    ),
                    format!("invalid HTTP request: {e}"),
                ),
                Ok(httparse::Status::Complete(head_len)) => match check_upgrade(&req) {
                    Ok(key) => Step::Accept(
                        tungstenite::handshake::derive_accept_key(key.as_bytes()),
                        head_len,
                        deflate::negotiate(
                            req.headers
                                .iter()
                                .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
                                .filter_map(|h| std::str::from_utf8(h.value).ok()),
                            compression,
                        ),
                    ),
                    Err(refusal) => Step::Refuse(refusal, refusal.2.trim_end().to_owned()),
                },
            }
        };
        match step {
            Step::ReadMore => {}
            Step::Accept(accept, head_len, deflate) => {
                let extensions = deflate
                    .map(|a| format!("Sec-WebSocket-Extensions: {}\r\n", a.response()))
                    .unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extensions}\r\n"
                );
                stream
                    .write_all(response.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok((buf.split_off(head_len), deflate));
            }
            Step::Refuse((status, headers, body), why) => {
                let _ = respond(stream, status, headers, body).await;
                return Err(why);
            }
        }
    }
}

type Refusal = (&'static str, &'static str, &'static str);

/// Checks an upgrade request; returns its `Sec-WebSocket-Key`.
fn check_upgrade<'a>(req: &httparse::Request<'_, 'a>) -> Result<&'a str, Refusal> {
    let header = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .collect::<Vec<_>>()
    };
    let has_token = |name: &str, token: &str| {
        header(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    if req.method != Some("GET") {
        return Err((
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "Failed to open a WebSocket connection: the method must be GET.\n",
        ));
    }
    if !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
        return Err((
            "426 Upgrade Required",
            UPGRADE,
            "Failed to open a WebSocket connection: this is a WebSocket endpoint; send a WebSocket upgrade request.\n",
        ));
    }
    if header("Sec-WebSocket-Version").first().map(|v| v.trim()) != Some("13") {
        return Err((
            "426 Upgrade Required",
            "Sec-WebSocket-Version: 13\r\n",
            "Failed to open a WebSocket connection: unsupported Sec-WebSocket-Version (13 is required).\n",
        ));
    }
    let key = header("Sec-WebSocket-Key")
        .first()
        .map(|k| k.trim())
        .unwrap_or("");
    if key.len() != 24 || !key.ends_with("==") {
        return Err((
            "400 Bad Request",
            "",
            "Failed to open a WebSocket connection: missing or invalid Sec-WebSocket-Key.\n",
        ));
    }
    Ok(key)
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    headers: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// One ping schedule: the configured `ws.ping` (R-WS-7) or the library keepalive (R-WS-8).
struct Pinger {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    /// The payload of the ping awaiting its pong, and when it was sent.
    outstanding: Option<([u8; 4], Instant)>,
    close: (u16, &'static str),
    log: &'static str,
}

enum PingAction {
    Nothing,
    Send(Bytes),
    TimedOut,
}

impl Pinger {
    fn new(
        interval: Duration,
        timeout: Duration,
        close: (u16, &'static str),
        log: &'static str,
    ) -> Option<Pinger> {
        if interval.is_zero() {
            return None;
        }
        Some(Pinger {
            interval,
            timeout,
            next_ping: Instant::now() + interval,
            outstanding: None,
            close,
            log,
        })
    }

    fn deadline(&self) -> Instant {
        match &self.outstanding {
            Some((_, sent)) => *sent + self.timeout,
            None => self.next_ping,
        }
    }

    fn on_timer(&mut self, now: Instant) -> PingAction {
        match &self.outstanding {
            Some((_, sent)) if now >= *sent + self.timeout => PingAction::TimedOut,
            Some(_) => PingAction::Nothing,
            None if now >= self.next_ping => {
                let payload = rand::random::<[u8; 4]>();
                self.outstanding = Some((payload, now));
                PingAction::Send(Bytes::copy_from_slice(&payload))
            }
            None => PingAction::Nothing,
        }
    }

    fn on_pong(&mut self, payload: &[u8], now: Instant) {
        if let Some((expected, sent)) = &self.outstanding {
            if &expected[..] == payload {
                let rtt = now.saturating_duration_since(*sent);
                tracing::trace!(latency = rtt.as_secs_f64(), "pong");
                self.next_ping = now + self.interval.saturating_sub(rtt);
                self.outstanding = None;
            }
        }
    }
}

type CommandFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs one WebSocket connection until it ends, then ends its session (R-END).
/// `leftover`: bytes the client sent right after its handshake request.
async fn serve<R, W>(
    app: Arc<App>,
    mut stream: R,
    sink: W,
    leftover: Vec<u8>,
    deflate: Option<Agreed>,
    remote: SocketAddr,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let id = app.next_session_id();
    let session = Session::new(app.clone(), id, remote.to_string());
    if let Some(agreed) = deflate {
        session.set_deflate(agreed.mode(&app.cfg.ws.compression));
    }
    app.register(session.clone());
    if app.is_shutting_down() {
        // Shutdown began after the check in `handshake_and_serve` and may already have closed
        // the sessions it saw: this one would never be closed, and shutdown would wait for it
        // forever (R-SHUT-3).
        app.unregister(id);
        tracing::warn!(remote = %remote, "dropped connection");
        return;
    }
    app.metrics.connection_opened();
    let started = Instant::now();
    tracing::debug!(session = id, remote = %remote, "new session");
    tracing::info!(session = id, remote = %remote, "connection open");
    let mut writer = Writer::new(sink, session.write_coalesce());

    let ping_cfg = &app.cfg.ws.ping;
    // Inline rather than in a `Vec`: no allocation per connection (538 bytes, massif).
    let mut pingers: [Option<Pinger>; 2] = [
        Pinger::new(
            ping_cfg.interval.duration(),
            ping_cfg.timeout.duration(),
            (1000, ""),
            "ping timeout",
        ),
        Pinger::new(
            KEEPALIVE,
            KEEPALIVE,
            (1011, "keepalive ping timeout"),
            "keepalive ping timeout",
        ),
    ];

    let limits = &app.cfg.limits;
    let mut decoder = FrameReader::new(limits.max_message_size);
    decoder.set_inflate(deflate.is_some());
    let mut bucket = TokenBucket::new(limits.max_events_per_second, limits.max_event_burst);
    let delay_over_rate = limits.event_rate_policy == EventRatePolicy::Delay;
    let max_pending = limits.max_pending_events;
    let mut queue: VecDeque<ClientFrame> = VecDeque::new();
    let mut current: Option<CommandFuture> = None;
    // Set while the session waits for its event budget (`event_rate_policy = "delay"`): the
    // next event is not started and the socket is not read until then.
    let mut rate_wait: Option<Instant> = None;
    // Whether the frame at the head of the queue was already counted as delayed.
    let mut waited = false;
    let mut reading = true;
    // The one timer of the connection (rate wait and pings), armed below.
    let timer = tokio::time::sleep_until(Instant::now() + KEEPALIVE);
    tokio::pin!(timer);
    // Frames completed by the latest read (first: by the bytes that came with the handshake).
    let mut frames = Vec::new();
    let first = decoder.feed(&leftover, &mut frames);
    drop(leftover);
    let done = std::mem::take(&mut frames);
    on_frames(&session, done, &mut queue, &mut pingers, &mut reading);
    if let Err(e) = first {
        read_failed(&session, ReadFail::Protocol(e), &mut reading);
    }
    loop {
        if current.is_none() && rate_wait.is_none() && !session.is_closing() {
            if let Some(frame) = queue.pop_front() {
                if queue.is_empty() {
                    // An idle connection holds no queue (152 bytes, massif).
                    queue = VecDeque::new();
                }
                let now = Instant::now();
                match bucket.take(now) {
                    Ok(()) => {
                        waited = false;
                        current = Some(Box::pin(session.clone().process(frame, false)));
                    }
                    Err(wait) if delay_over_rate => {
                        if !waited {
                            app.metrics.rate_delayed();
                            waited = true;
                        }
                        queue.push_front(frame);
                        rate_wait = Some(now + wait);
                    }
                    Err(_) => current = Some(Box::pin(session.clone().process(frame, true))),
                }
            }
        }
        if current.is_none() {
            if session.is_closing() {
                for frame in queue.drain(..) {
                    ignored(&session, &frame);
                }
                break;
            }
            if !reading && queue.is_empty() {
                break;
            }
        }
        // One timer for the rate wait and the pings (a timer is ~100 bytes of every
        // connection's future).
        let ping_deadline = if session.is_closing() {
            None
        } else {
            pingers.iter().flatten().map(Pinger::deadline).min()
        };
        let deadline = rate_wait.into_iter().chain(ping_deadline).min();
        // The timer is kept across iterations and moved only when the deadline changes: a
        // new timer per wake-up costs a timer-wheel insert and removal per message.
        if let Some(d) = deadline {
            if timer.deadline() != d {
                timer.as_mut().reset(d);
            }
        }
        tokio::select! {
            _ = async { current.as_mut().expect("guarded").await }, if current.is_some() => {
                current = None;
            }
            _ = writer.step(&session), if !writer.done => {}
            // At most `max_pending` events wait behind the running one; beyond that the socket
            // is not read (TCP back-pressure on a client that floods). One read may complete
            // several frames, so the queue can pass that bound by one read's worth (64 KiB).
            r = read_frames(&mut stream, &mut decoder, &mut frames),
                if reading && rate_wait.is_none() && queue.len() < max_pending =>
            {
                let done = std::mem::take(&mut frames);
                on_frames(&session, done, &mut queue, &mut pingers, &mut reading);
                if let Err(fail) = r {
                    read_failed(&session, fail, &mut reading);
                }
            }
            _ = &mut timer, if deadline.is_some() => {
                let now = Instant::now();
                if rate_wait.is_some_and(|t| t <= now) {
                    rate_wait = None;
                }
                let pings_due = ping_deadline.is_some_and(|t| t <= now);
                for p in pingers.iter_mut().flatten().filter(|_| pings_due) {
                    match p.on_timer(now) {
                        PingAction::Nothing => {}
                        PingAction::Send(payload) => {
                            tracing::trace!(session = id, "ping");
                            session.send_ping(payload);
                        }
                        PingAction::TimedOut => {
                            tracing::warn!(session = id, "{}", p.log);
                            session.close(p.close.0, p.close.1);
                            break;
                        }
                    }
                }
            }
            _ = session.close_requested() => {}
        }
    }

    // Boxed: the end's futures would otherwise be part of every connection's (long-lived)
    // future.
    let end = Ended {
        app,
        session,
        remote,
        started,
        reading,
    };
    Box::pin(end.finish(stream, decoder, writer)).await;
}

/// What the end of a connection needs of it.
struct Ended {
    app: Arc<App>,
    session: Arc<Session>,
    remote: SocketAddr,
    started: Instant,
    /// The client has not closed its side.
    reading: bool,
}

impl Ended {
    /// Ends the session (R-END-2: once no command is in progress), then the closing handshake,
    /// while the writer goes on writing.
    async fn finish<R, W>(self, mut stream: R, mut decoder: FrameReader, mut writer: Writer<W>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let Ended {
            app,
            session,
            remote,
            started,
            reading,
        } = self;
        let id = session.id;
        let server_closed = session.is_closing();
        while_writing(&mut writer, &session, Box::pin(session.end()), None).await;
        if server_closed {
            // Let the close frame reach the client before the session counts as ended
            // (shutdown waits for sessions, then the process exits).
            let flushed = session.close_flushed();
            while_writing(&mut writer, &session, flushed, Some(Duration::from_secs(2))).await;
        }
        app.metrics.connection_closed();
        app.unregister(id);
        tracing::info!(
            session = id,
            remote = %remote,
            duration = started.elapsed().as_secs_f64(),
            "connection closed"
        );

        // Wait (bounded) for the client's close frame after a server-initiated close, then let
        // the writer flush what it has and close.
        if server_closed && reading {
            let client_close = async {
                let mut frames = Vec::new();
                loop {
                    let r = read_frames(&mut stream, &mut decoder, &mut frames).await;
                    for frame in frames.drain(..) {
                        match frame {
                            Frame::Text(t) => ignored(&session, &ClientFrame::Text(t)),
                            Frame::Binary(b) => ignored(&session, &ClientFrame::Binary(b)),
                            Frame::Close(_) => return,
                            Frame::Ping(_) | Frame::Pong(_) => {}
                        }
                    }
                    if r.is_err() {
                        return;
                    }
                }
            };
            while_writing(&mut writer, &session, client_close, Some(CLOSE_TIMEOUT)).await;
        }
        session.outbox_finish();
        let finished = async {
            while !writer.done {
                writer.step(&session).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), finished).await;
        // What the writer could not write (it was stuck on a client that does not read).
        session.dropped_pushes(session.outbox().discard());
    }
}

fn ignored(session: &Session, frame: &ClientFrame) {
    let data = match frame {
        ClientFrame::Text(t) => t.as_str().to_owned(),
        ClientFrame::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    };
    tracing::warn!(
        session = session.id,
        data = data.as_str(),
        "inactive client event ignored"
    );
}

/// Hands the frames of one read to the session: messages to the command queue (or ignored when
/// the session is closing, R-WS-12), pings answered, pongs to the ping timers, the client's
/// close answered (the closing handshake, echoing its code) and reading stopped.
fn on_frames(
    session: &Session,
    frames: Vec<Frame>,
    queue: &mut VecDeque<ClientFrame>,
    pingers: &mut [Option<Pinger>],
    reading: &mut bool,
) {
    for frame in frames {
        let message = match frame {
            Frame::Text(t) => ClientFrame::Text(t),
            Frame::Binary(b) => ClientFrame::Binary(b),
            Frame::Pong(p) => {
                let now = Instant::now();
                for pinger in pingers.iter_mut().flatten() {
                    pinger.on_pong(&p, now);
                }
                continue;
            }
            Frame::Ping(p) => {
                session.send_pong(p);
                continue;
            }
            Frame::Close(close) => {
                let (code, reason) = match close {
                    None => (None, String::new()),
                    Some((code, reason)) => (Some(code), reason),
                };
                session.reply_close(code, reason);
                *reading = false;
                continue;
            }
        };
        if session.is_closing() {
            ignored(session, &message);
        } else {
            queue.push_back(message);
        }
    }
}

/// The end of reading: the client went away, or broke the protocol (closed with 1002, 1007 or
/// 1009: R-WS-4, R-WS-5).
fn read_failed(session: &Session, fail: ReadFail, reading: &mut bool) {
    *reading = false;
    match fail {
        ReadFail::Protocol(e) => {
            tracing::info!(session = session.id, error = %e, "closing connection");
            session.close(e.close_code(), "");
        }
        ReadFail::Gone(e) => {
            let error = e
                .map(|e| e.to_string())
                .unwrap_or_else(|| "end of stream".into());
            tracing::debug!(session = session.id, error, "connection lost");
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The connection's writer: drains the session's outbox into the socket, one vectored write per
/// batch of ready frames; while pushes keep coming, at most one batch per `ws.write_coalesce`
/// (fewer, larger writes: the kernel's cost is per write, not per byte). It runs inside the
/// connection's task: [`Writer::step`] is one branch of the connection's `select!`, and keeps
/// all its progress in `self`, so it can be dropped between polls and resumed.
struct Writer<W> {
    sink: W,
    coalesce: Duration,
    coalesce_until: Option<Instant>,
    /// The frames of the batch being written (empty between batches: nothing is kept).
    frames: Batch,
    /// A batch was taken from the outbox and is not finished yet.
    busy: bool,
    /// Pushes in the batch, and pushes that will never be written.
    pushed: u64,
    /// Pushes taken compressed (a counter's pending increment).
    compressed: u64,
    unsent: u64,
    /// The batch holds the server's close frame / the `Finish` marker.
    close_sent: bool,
    finish: bool,
    /// A close frame was queued: later frames are not sent.
    closed: bool,
    /// A write failed: nothing more is written.
    broken: bool,
    /// The socket was shut down (after `Finish`).
    done: bool,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn new(sink: W, coalesce: Duration) -> Writer<W> {
        Writer {
            sink,
            coalesce,
            coalesce_until: None,
            frames: Batch::default(),
            busy: false,
            pushed: 0,
            compressed: 0,
            unsent: 0,
            close_sent: false,
            finish: false,
            closed: false,
            broken: false,
            done: false,
        }
    }

    /// Waits for frames in the outbox and writes them (one batch). Cancel-safe.
    async fn step(&mut self, session: &Session) {
        if !self.busy {
            let batch = session.outbox().next_batch(self.coalesce_until).await;
            self.take(session, batch);
        }
        if self.broken {
            self.frames = Batch::default();
        } else if !self.frames.is_empty() {
            let written = poll_fn(|cx| {
                ready!(self.frames.poll_write_all(cx, &mut self.sink))?;
                Pin::new(&mut self.sink).poll_flush(cx)
            })
            .await;
            if written.is_err() {
                self.broken = true;
                self.frames = Batch::default();
                (self.pushed, self.unsent) = (0, self.unsent + self.pushed);
            }
        }
        if self.finish {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.sink.shutdown()).await;
        }
        self.batch_done(session);
    }

    /// Encodes a batch taken from the outbox.
    fn take(&mut self, session: &Session, batch: VecDeque<Out>) {
        let outbox = session.outbox();
        if !self.coalesce.is_zero() {
            self.coalesce_until = Some(Instant::now() + self.coalesce);
        }
        outbox.set_writer_busy(true);
        self.busy = true;
        for out in batch {
            let (text, is_push, compressed) = match out {
                Out::Text(text) => (text, false, None),
                Out::Push(text) => (text, true, None),
                Out::PushCompressed(text, compressed) => (text, true, Some(compressed)),
                Out::Ping(p) => {
                    if !self.closed {
                        self.frames.frame(wire::OP_PING, p);
                    }
                    continue;
                }
                Out::Pong(p) => {
                    if !self.closed {
                        self.frames.frame(wire::OP_PONG, p);
                    }
                    continue;
                }
                Out::Close(code, reason) => {
                    if !self.closed {
                        self.frames.close(Some(code), reason);
                    }
                    self.closed = true;
                    self.close_sent = true;
                    continue;
                }
                Out::CloseReply(code, reason) => {
                    if !self.closed {
                        self.frames.close(code, &reason);
                    }
                    self.closed = true;
                    continue;
                }
                Out::Finish => {
                    self.finish = true;
                    break;
                }
            };
            outbox.written(compressed.as_ref().map_or(text.len(), Bytes::len));
            if self.closed || self.broken {
                tracing::warn!(session = session.id, "attempted to send to closed socket");
                self.unsent += u64::from(is_push);
                continue;
            }
            if tracing::enabled!(tracing::Level::DEBUG) {
                tracing::debug!(session = session.id, data = text.as_str(), "client send");
            }
            self.pushed += u64::from(is_push);
            match compressed {
                Some(c) => {
                    self.compressed += 1;
                    self.frames.frame(wire::OP_TEXT | wire::RSV1, c)
                }
                None => self.frames.frame(wire::OP_TEXT, text.into()),
            }
        }
    }

    /// The batch is written (or could not be).
    fn batch_done(&mut self, session: &Session) {
        if self.close_sent {
            session.set_close_flushed();
            self.close_sent = false;
        }
        session.outbox().set_writer_busy(false);
        session.delivered_pushes(std::mem::take(&mut self.pushed));
        let compressed = std::mem::take(&mut self.compressed);
        if compressed > 0 {
            session.compressed_pushes(compressed);
        }
        session.dropped_pushes(std::mem::take(&mut self.unsent));
        self.busy = false;
        self.done = self.finish;
    }
}

/// Runs `fut` while the writer goes on writing, for at most `limit`; `None` if the time ran out.
async fn while_writing<W, F>(
    writer: &mut Writer<W>,
    session: &Session,
    fut: F,
    limit: Option<Duration>,
) -> Option<F::Output>
where
    W: AsyncWrite + Unpin,
    F: Future,
{
    let deadline = limit.map(|l| Instant::now() + l);
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = writer.step(session), if !writer.done => {}
            _ = sleep_until_opt(deadline), if deadline.is_some() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_burst_then_rate_then_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0);
        b.last = t0;
        for _ in 0..3 {
            assert_eq!(b.take(t0), Ok(()));
        }
        // Empty: one token comes after 1/10 s.
        let wait = b.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Nothing was taken by the refusal: after the wait there is exactly one.
        let later = t0 + wait;
        assert_eq!(b.take(later), Ok(()));
        assert!(b.take(later).is_err());
        // Refills up to the burst, not beyond.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(much_later), Ok(()));
        }
        assert!(b.take(much_later).is_err());
    }

    #[test]
    fn token_bucket_rate_zero_is_unlimited() {
        let mut b = TokenBucket::new(0.0, 1.0);
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(b.take(now), Ok(()));
        }
    }
}
