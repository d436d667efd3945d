//! The process: startup (R-CFG-6), the WebSocket listener, the handshakes (TLS, R-WS-9; the
//! HTTP upgrade, R-WS-1/2, R-WS-6a) and shutdown (R-SHUT).
//!
//! Each accepted connection is one task, [`crate::connection::Task`]: the handshakes here
//! (boxed, freed once done), then the connection itself, driven by [`crate::connection`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;

use crate::app::{App, ConnectionSlot};
use crate::broker::{self, Broker};
use crate::config::{BrokerKind, CompressionConfig, Config};
use crate::connection::{Accepted, Task};
use crate::feed;
use crate::hub::Hub;
use crate::metrics::{self, Metrics};
use crate::service::ServiceClient;
use crate::wire::deflate::{self, Agreed};

/// Largest accepted handshake request head.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Why the server shuts down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    BrokerClosed,
    BrokerPingTimeout,
}

fn bind_host(host: &str) -> &str {
    if host.is_empty() { "0.0.0.0" } else { host }
}

/// Runs the server until it shuts down. Returns the process exit status. `config_path` is the
/// file `cfg` came from, read again on a reload.
pub async fn run(cfg: Config, config_path: Option<std::path::PathBuf>) -> i32 {
    // Installed first, so that a signal arriving during startup is not fatal: it is handled
    // once the server is up (R-CFG-7: orderly shutdown, exit 0).
    let signals = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(term), Ok(int), Ok(hup)) => (term, int, hup),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
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
        BrokerKind::Nats => vec![broker::nats::connect(&cfg.nats, metrics.clone()).await],
        BrokerKind::Redis => {
            let publish = cfg.api.is_some() || cfg.has_history();
            let labels = ["redis", "redis_alt"];
            let connecting =
                cfg.redis_connections()
                    .into_iter()
                    .zip(labels)
                    .map(|(rc, label)| async move {
                        if rc.cluster.is_empty() {
                            broker::redis::connect(rc, label, publish).await
                        } else {
                            broker::cluster::connect(rc, label).await
                        }
                    });
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
                let event = if cfg.broker == BrokerKind::Nats {
                    "could not connect to nats"
                } else {
                    "could not connect to redis"
                };
                tracing::error!(error = e.as_str(), "{event}");
                return 1;
            }
        }
    }
    let compression = Some(cfg.ws.compression.clone()).filter(|c| c.enabled);
    let hub = Hub::new(brokers.clone(), compression);
    let jwt = match &cfg.authentication.jwt {
        None => None,
        Some(j) => match crate::jwt::Verifier::new(j, Some(http.client())) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(error = e.as_str(), "unhandled exception");
                return 1;
            }
        },
    };
    let app = Arc::new(App::new(
        cfg.clone(),
        config_path,
        http,
        jwt,
        hub,
        metrics.clone(),
    ));

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
        if cfg.ws.demo {
            let host = if api_cfg.host.is_empty() || api_cfg.host == "0.0.0.0" {
                "127.0.0.1"
            } else {
                api_cfg.host.as_str()
            };
            let _ = app.demo.set(crate::demo::Demo::new(Some(&format!(
                "http://{host}:{port}/publish"
            ))));
        }
        tokio::spawn(crate::api::serve(app.clone(), api_cfg.clone(), listener));
    }
    if cfg.ws.demo && app.demo.get().is_none() {
        // No [api]: the page shows messages but cannot publish.
        let _ = app.demo.set(crate::demo::Demo::new(None));
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
    let signals = tokio::spawn(watch_signals(signals, trigger_tx.clone(), app.clone()));
    let mut background = Vec::new();
    for (index, (b, messages)) in brokers.iter().zip(streams).enumerate() {
        let tx = trigger_tx.clone();
        let app2 = app.clone();
        let b = b.clone();
        background.push(tokio::spawn(async move {
            let loss = feed::run(app2.clone(), index, b, messages).await;
            if loss == feed::Loss::Closed {
                app2.metrics.set_ready(false);
            }
            // Without `on_loss = "reconnect"` a lost broker ends the process (R-RED-4/5).
            let _ = tx.send(match loss {
                feed::Loss::Closed => Trigger::BrokerClosed,
                feed::Loss::PingTimeout => Trigger::BrokerPingTimeout,
            });
        }));
    }

    let app2 = app.clone();
    background.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let bytes = app2.queued_bytes();
            app2.metrics.set_outbound_queue_bytes(bytes as i64);
            app2.hub.release_idle_streams(std::time::Instant::now());
            let (received, delivered) = (app2.hub.received(), app2.metrics.delivered());
            app2.rates
                .lock()
                .unwrap()
                .sample(std::time::Instant::now(), received, delivered);
            app2.metrics
                .set_compression_streams(app2.hub.compressors() as i64);
        }
    }));

    // Presence entries live `presence_ttl` without a refresh: refresh them every third of the
    // shortest one.
    let presence_ttl = cfg
        .services
        .values()
        .filter(|s| s.presence)
        .map(|s| s.presence_ttl.duration())
        .min();
    if let Some(ttl) = presence_ttl {
        let app2 = app.clone();
        background.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                refresh_presence(&app2).await;
            }
        }));
    }

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
                    let slot = ConnectionSlot::new(app.clone());
                    match &tls {
                        None => {
                            let handshake = accept_plain(app.clone(), stream, remote);
                            tokio::spawn(Task::new(Box::pin(handshake), slot))
                        }
                        Some(a) => {
                            let handshake = accept_tls(app.clone(), stream, remote, a.clone());
                            tokio::spawn(Task::new(Box::pin(handshake), slot))
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

/// SIGTERM and SIGINT start the shutdown; later ones are only logged (R-SHUT-2). SIGHUP reloads
/// the configuration (`crate::reload`).
async fn watch_signals(
    (mut term, mut int, mut hup): (Signal, Signal, Signal),
    tx: mpsc::UnboundedSender<Trigger>,
    app: Arc<App>,
) {
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {
                tracing::info!("reload requested");
                let _ = crate::reload::reload(&app);
                continue;
            }
        }
        tracing::info!("stop requested");
        let _ = tx.send(Trigger::Signal);
    }
}

/// Writes this node's presence members to the broker again, so they do not expire.
async fn refresh_presence(app: &App) {
    let Some(b) = app.hub.brokers().first() else {
        return;
    };
    for (name, members) in app.presence.snapshot() {
        let ttl = app
            .cfg()
            .service_for(&name)
            .map(|s| s.presence_ttl.duration());
        let Some(ttl) = ttl else { continue };
        let channel = format!("{}{}", b.prefix(), name);
        if let Err(e) = b.presence_add(&channel, members, ttl).await {
            tracing::debug!(
                subscription = name.as_str(),
                error = e.as_str(),
                "presence refresh failed"
            );
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

/// The handshake of a plain TCP connection (the connection's task then serves it:
/// [`crate::connection::Task`]).
async fn accept_plain(
    app: Arc<App>,
    stream: TcpStream,
    remote: SocketAddr,
) -> Option<Accepted<TcpStream>> {
    let _ = stream.set_nodelay(true);
    accept_handshake(app, stream, remote).await
}

/// The handshakes of a TLS connection: TLS, then the WebSocket handshake.
async fn accept_tls(
    app: Arc<App>,
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
) -> Option<Accepted<tokio_rustls::server::TlsStream<TcpStream>>> {
    let _ = stream.set_nodelay(true);
    let handshake_timeout = app.cfg().limits.handshake_timeout.duration();
    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => accept_handshake(app, s, remote).await,
        Ok(Err(e)) => {
            tracing::debug!(remote = %remote, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(remote = %remote, "TLS handshake timed out");
            None
        }
    }
}

/// The WebSocket handshake within `limits.handshake_timeout`; the stream, the bytes the
/// client sent after its request and the agreed compression, or `None` if the connection is not
/// to be served.
async fn accept_handshake<S: Io>(
    app: Arc<App>,
    mut stream: S,
    remote: SocketAddr,
) -> Option<Accepted<S>> {
    let (handshake_timeout, compression) = {
        let cfg = app.cfg();
        let c = cfg.ws.compression.clone();
        (cfg.limits.handshake_timeout.duration(), c)
    };
    let handshake = handshake(&mut stream, &compression, app.demo.get());
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
    Some(Accepted {
        app,
        io: stream,
        leftover,
        deflate,
        remote,
    })
}

/// A connection's byte stream: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Reads the HTTP upgrade request and answers it (R-WS-1/2, R-WS-6a). Returns the bytes read
/// past the request head and the agreed compression.
async fn handshake<S>(
    stream: &mut S,
    compression: &CompressionConfig,
    demo: Option<&crate::demo::Demo>,
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
        /// The demo page or the JS client (`ws.demo`).
        Page(&'static str, String),
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
                    Err(refusal) => {
                        let page = demo
                            .filter(|_| req.method == Some("GET"))
                            .and_then(|d| d.get(req.path.unwrap_or("")));
                        match page {
                            Some((content_type, body)) => Step::Page(content_type, body.to_owned()),
                            None => Step::Refuse(refusal, refusal.2.trim_end().to_owned()),
                        }
                    }
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
            Step::Page(content_type, body) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
                return Err("served the demo page".into());
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
