//! HTTPS callbacks with `http.ssl_cafile` (R-HTTP-3) and the WebSocket library keepalive
//! (R-WS-8), over real sockets.

mod common;
use common::*;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// A self-signed certificate for `localhost` written as PEM files.
struct Cert {
    _dir: TempDir,
    cert_pem: PathBuf,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn cert() -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let dir = TempDir::new("https-cb");
    let cert_pem = dir.write("ca.pem", ck.cert.pem());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    Cert {
        cert: ck.cert.der().clone(),
        key,
        cert_pem,
        _dir: dir,
    }
}

/// A minimal HTTPS service answering every POST with `answer`; counts the requests it got.
struct HttpsService {
    port: u16,
    requests: Arc<AtomicUsize>,
}

async fn https_service(cert: &Cert, answer: &'static str) -> HttpsService {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.clone()], cert.key.clone_key())
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return; // the client refused our certificate
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and the Content-Length body.
                loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())
                                    .flatten()
                            })
                            .unwrap_or(0);
                        if buf.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    HttpsService { port, requests }
}

async fn auth_reply(server: &Server) -> Value {
    let mut c = Client::connect(&server.ws_url()).await;
    c.request(&json!({"event": "auth", "ticket": "t"})).await
}

/// R-HTTP-3: with `http.ssl_cafile` only the CAs in that file are trusted: a service whose
/// certificate chains to it is called over HTTPS; without the file (system trust store) the
/// same self-signed certificate fails verification, which is an attempt failure
/// (`Service unavailable.`), and no request reaches the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_3_ssl_cafile_is_the_trust_store() {
    let c = cert();
    let svc = https_service(&c, r#"{"status": "ok", "session_id": "s1"}"#).await;
    let redis = Redis::start().await;
    let mock = MockService::start().await;
    let url = format!("https://localhost:{}/auth", svc.port);

    let mut cfg = base_config(&redis, &mock);
    cfg.set("authentication.ticket.validation_url", url.as_str());
    cfg.set("http.ssl_cafile", c.cert_pem.to_string_lossy().to_string());
    let server = Server::start_config(&cfg).await;
    assert_eq!(
        auth_reply(&server).await,
        json!({"event": "auth", "status": "ok"})
    );
    assert_eq!(svc.requests.load(Ordering::SeqCst), 1);
    drop(server);

    // System trust store: the self-signed certificate is refused.
    let mut cfg = base_config(&redis, &mock);
    cfg.set("authentication.ticket.validation_url", url.as_str());
    let server = Server::start_config(&cfg).await;
    assert_eq!(
        auth_reply(&server).await,
        json!({"event": "auth", "status": "error", "error": "Service unavailable."})
    );
    assert_eq!(
        svc.requests.load(Ordering::SeqCst),
        1,
        "no request may get through"
    );
    drop(server);

    // A CA file with another certificate: refused as well.
    let other = cert();
    let mut cfg = base_config(&redis, &mock);
    cfg.set("authentication.ticket.validation_url", url.as_str());
    cfg.set(
        "http.ssl_cafile",
        other.cert_pem.to_string_lossy().to_string(),
    );
    let server = Server::start_config(&cfg).await;
    assert_eq!(
        auth_reply(&server).await,
        json!({"event": "auth", "status": "error", "error": "Service unavailable."})
    );
    assert_eq!(svc.requests.load(Ordering::SeqCst), 1);
}

/// An unreadable `http.ssl_cafile` is a startup failure (non-zero exit, no ready line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_3_missing_ssl_cafile_fails_startup() {
    let redis = Redis::start().await;
    let mock = MockService::start().await;
    let mut cfg = base_config(&redis, &mock);
    cfg.set("http.ssl_cafile", "/nonexistent/ca.pem");
    let (status, stderr) = Server::start_expect_failure(&cfg.toml(), secs(10.0)).await;
    assert!(!status.success(), "{status}");
    assert!(stderr.contains("http.ssl_cafile"), "{stderr}");
    assert!(!stderr.contains("🦈"), "{stderr}");
}

/// R-WS-8: independently of `ws.ping` (disabled here), the library keepalive pings every 20 s
/// and closes a connection whose pong does not come within 20 s with code 1011
/// `keepalive ping timeout`; a client that answers stays. (About 45 s: the periods are fixed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ws_8_library_keepalive_closes_unresponsive_clients() {
    let env = TestEnv::start().await;
    let mut responsive = env.client().await;
    let mut silent = env.client().await;
    subscribe_ok(&mut silent, "ws_test.keepalive").await;
    silent.pause_reading();
    // The responsive client sees the first keepalive ping after ~20 s and answers it.
    responsive.wait_pings(1, secs(25.0)).await;
    let first = responsive.pings()[0].0;
    // The silent one is closed 20 s after its (unanswered) ping.
    sleep_ms(21_000).await;
    silent.resume_reading();
    let (code, _) = silent.recv_close_skipping_data(secs(5.0)).await;
    assert_eq!(code, Some(1011));
    assert_eq!(
        silent.close_frame().map(|(_, r)| r),
        Some("keepalive ping timeout".to_string())
    );
    env.svc
        .wait_calls("/ws_test/on_unsubscribe", 1, secs(5.0))
        .await;
    // The responsive one is still served.
    assert!(first.elapsed() > secs(20.0));
    let r = responsive
        .request(&json!({"event": "ping", "data": "alive"}))
        .await;
    assert_eq!(r, json!({"event": "pong", "data": "alive"}));
}

/// R-CFG-6: when the Prometheus listener cannot bind, the server still starts (and serves
/// WebSocket clients) without a metrics endpoint, logging the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_cfg_6_metrics_port_taken_is_not_fatal() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let env = TestEnv::start_with(|cfg| {
        cfg.set("metrics.prometheus.host", "127.0.0.1");
        cfg.set("metrics.prometheus.port", port);
    })
    .await;
    env.server
        .wait_event("could not start the metrics endpoint", secs(5.0))
        .await;
    let mut c = env.client().await;
    let r = c.request(&json!({"event": "ping", "data": "up"})).await;
    assert_eq!(r, json!({"event": "pong", "data": "up"}));
    drop(taken);
}
