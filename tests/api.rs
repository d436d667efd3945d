//! The HTTP publish API, the embedded broker and running several nodes on one Redis (issue
//! "Runs anywhere, scales out").
//!
//! Covered:
//! * `broker = "memory"` + `[api]`: `POST /publish` delivers with the normal frame (R-PUB-7,
//!   R-PUB-9), arrays in order (R-PUB-5 per message, R-ORD-5), filter fields (R-FLT-1), order
//!   (R-OOO-4) and throttle (R-THR-3/6) exactly as with Redis; messages nobody holds go nowhere.
//! * API errors: 400 (bad JSON, bad shape, R-PUB-3/R-PUB-5 refusals, `message i:` in arrays,
//!   all-or-nothing batches), 413 over `api.max_body_size`, 405, 404.
//! * `api.api_key`: 401 without/with a wrong key, `Authorization: Bearer` and `X-Api-Key`
//!   accepted; a non-loopback `api.host` without a key is a configuration error (exit 2).
//! * Redis + API: the message is PUBLISHed on `channel_prefix + subscription` (R-PUB-1).
//! * No configuration file: `Config::embedded()` on 127.0.0.1:9000/9001, service `demo`.
//! * Two nodes on one Redis: fan-out exactly once per client on both nodes, via Redis and via
//!   either node's API; a 200-message burst stays complete and ordered; a node's death does not
//!   affect the other.
//! * Throughput of the publish API (printed, never asserted).
//!
//! Only `t05_no_config_runs_embedded` uses the fixed ports 9000/9001.

mod common;
use common::*;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The log line carrying the actual port of the publish API.
const API_EVENT: &str = "publish API listening";

// ------------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------------

/// The memory-broker configuration used by most tests: WebSocket and API on free ports, and the
/// §21 `simple` service (anonymous, `extra_fields = [extra]`, `filter_fields = [session_id,
/// extra]`).
fn memory_config() -> Config {
    Config::from_json(json!({
        "broker": "memory",
        "ws": {"host": "127.0.0.1", "port": 0, "ping": {"interval": 0}},
        "log": {"level": "DEBUG", "format": "json"},
        "api": {"port": 0},
        "services": {
            "simple": {
                "require_authentication": false,
                "extra_fields": ["extra"],
                "filter_fields": ["session_id", "extra"],
            },
        },
    }))
}

/// `POST /publish` with raw body bytes.
async fn post_raw(port: u16, body: &[u8]) -> HttpResponse {
    http_request(port, "POST", "/publish", &[], body).await
}

/// `POST /publish` with a JSON body.
async fn post(port: u16, body: &Value) -> HttpResponse {
    post_raw(port, body.to_string().as_bytes()).await
}

/// The response body as JSON (panics if it is not JSON).
fn body_json(r: &HttpResponse) -> Value {
    serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", r.body))
}

/// Asserts `200 {"status": "ok", "published": n}` with a JSON content type.
fn assert_published(r: &HttpResponse, n: usize) {
    assert_eq!(r.status, 200, "expected 200, got {r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "200 answer without a JSON content type: {r:?}"
    );
    assert_eq!(body_json(r), json!({"status": "ok", "published": n}));
}

/// Asserts `<status> {"status": "error", "error": "..."}` and returns the error text.
fn assert_api_error(r: &HttpResponse, status: u16) -> String {
    assert_eq!(r.status, status, "expected {status}, got {r:?}");
    let v = body_json(r);
    assert_eq!(v["status"], json!("error"), "{v}");
    let e = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no `error` string in {v}"))
        .to_string();
    assert!(!e.is_empty(), "{v}");
    e
}

/// Asserts a delivered frame: `event`, `subscription`, `data`, then `received_at` and
/// `queue_size` (live delivery, R-PUB-9) and `sent_at` last (R-PUB-7); returns the frame without
/// those three keys.
fn assert_live_frame(m: &Value) -> Value {
    let obj = m
        .as_object()
        .unwrap_or_else(|| panic!("frame is not an object: {m}"));
    assert!(obj.contains_key("received_at"), "no received_at: {m}");
    assert!(obj.contains_key("queue_size"), "no queue_size: {m}");
    assert_eq!(
        obj.keys().next_back().map(String::as_str),
        Some("sent_at"),
        "sent_at is not the last key: {m}"
    );
    let received = iso_utc_micros(m["received_at"].as_str().unwrap()).unwrap();
    let sent = iso_utc_micros(m["sent_at"].as_str().unwrap()).unwrap();
    assert!(received <= sent, "received_at > sent_at: {m}");
    strip_delivery_meta(m.clone())
}

fn msg_frame(subscription: &str, data: Value) -> Value {
    json!({"event": "message", "subscription": subscription, "data": data})
}

/// A keep-alive HTTP/1.1 connection (hand-rolled: one request at a time, `Content-Length`
/// responses).
struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    port: u16,
}

impl HttpConn {
    async fn connect(port: u16) -> HttpConn {
        let stream = tokio::time::timeout(secs(5.0), TcpStream::connect(("127.0.0.1", port)))
            .await
            .unwrap_or_else(|_| panic!("connect to 127.0.0.1:{port} timed out"))
            .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
        let _ = stream.set_nodelay(true);
        HttpConn {
            stream,
            buf: Vec::with_capacity(4096),
            port,
        }
    }

    /// `POST /publish`; returns (status, body).
    async fn post(&mut self, body: &[u8]) -> (u16, Vec<u8>) {
        let mut req = format!(
            "POST /publish HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.port,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.stream
            .write_all(&req)
            .await
            .unwrap_or_else(|e| panic!("keep-alive write failed: {e}"));
        tokio::time::timeout(secs(10.0), self.read_response())
            .await
            .expect("no HTTP response within 10 s on a keep-alive connection")
    }

    async fn read_response(&mut self) -> (u16, Vec<u8>) {
        loop {
            let parsed = {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf) {
                    Ok(httparse::Status::Complete(head)) => {
                        let len = resp
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok())
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .expect("keep-alive response without Content-Length");
                        Some((resp.code.unwrap_or(0), head, len))
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(e) => panic!(
                        "bad HTTP response ({e}): {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                }
            };
            if let Some((status, head, len)) = parsed {
                if self.buf.len() >= head + len {
                    let body = self.buf[head..head + len].to_vec();
                    self.buf.drain(..head + len);
                    return (status, body);
                }
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .unwrap_or_else(|e| panic!("keep-alive read failed: {e}"));
            assert!(n > 0, "the API closed a keep-alive connection");
        }
    }
}

/// Subscribes `c` to `name` (anonymous `simple` service) and asserts the ok reply.
async fn sub(c: &mut Client, name: &str) {
    subscribe_ok(c, name).await;
}

/// Asserts that `c` receives exactly one frame equal (without metadata) to `want`, and nothing
/// more within `quiet`.
async fn expect_once(c: &mut Client, want: &Value, quiet: Duration, who: &str) {
    let m = c
        .recv_timeout(secs(10.0))
        .await
        .unwrap_or_else(|| panic!("{who}: no delivery within 10 s (want {want})"));
    assert_eq!(&strip_delivery_meta(m), want, "{who}");
    if let Some(extra) = c.recv_timeout(quiet).await {
        panic!("{who}: duplicate or unexpected delivery within {quiet:?}: {extra}");
    }
}

/// Polls `PUBSUB NUMSUB channel` until it equals `n`.
async fn wait_numsub(redis: &Redis, channel: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + secs(10.0);
    loop {
        let got = redis.numsub(channel).await;
        if got == n {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("PUBSUB NUMSUB {channel}: expected {n} within 10 s, got {got}");
        }
        sleep_ms(10).await;
    }
}

// ------------------------------------------------------------------------------------------------
// 1. memory broker + API
// ------------------------------------------------------------------------------------------------

/// Issue item "broker = memory" + "POST /publish": one message, an array, filter fields, order,
/// throttle and messages nobody holds — all with the Redis delivery rules (R-PUB-4…9, R-FLT-1,
/// R-OOO-4, R-THR-3/6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t01_memory_broker_api_delivers() {
    let server = Server::start_config(&memory_config()).await;
    let port = server.api_port().await;
    let mut c = Client::connect(&server.ws_url()).await;
    sub(&mut c, "simple.topic").await;

    // One message: the normal live frame (R-PUB-7, R-PUB-9).
    let r = post(
        port,
        &json!({"subscription": "simple.topic", "data": {"n": 1, "f": 1.5, "s": "é"}}),
    )
    .await;
    assert_published(&r, 1);
    let m = c.recv_timeout(secs(10.0)).await.expect("no delivery");
    assert_eq!(
        assert_live_frame(&m),
        msg_frame("simple.topic", json!({"n": 1, "f": 1.5, "s": "é"}))
    );
    assert_eq!(
        m.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![
            "event",
            "subscription",
            "data",
            "received_at",
            "queue_size",
            "sent_at"
        ],
        "frame keys: {m}"
    );

    // An array of 3: published and delivered in order; `published_at` normalised (R-PUB-8);
    // `options` and unknown publisher keys are never forwarded.
    let r = post(
        port,
        &json!([
            {"subscription": "simple.topic", "data": "a"},
            {"subscription": "simple.topic", "data": "b", "published_at": "2024-01-01T00:00:00Z",
             "other": 1},
            {"subscription": "simple.topic", "data": "c", "options": {"order": 1}},
        ]),
    )
    .await;
    assert_published(&r, 3);
    let got = c.recv_n(3).await;
    let got: Vec<Value> = got.iter().map(assert_live_frame).collect();
    let mut b = msg_frame("simple.topic", json!("b"));
    b["published_at"] = json!("2024-01-01T00:00:00+00:00");
    assert_eq!(
        got,
        vec![
            msg_frame("simple.topic", json!("a")),
            b,
            msg_frame("simple.topic", json!("c")),
        ]
    );
    c.expect_silence(ms(300)).await;

    // Filter fields (R-FLT-1): the subscription's extra value and the (absent) session_id.
    let mut f = Client::connect(&server.ws_url()).await;
    let r = f
        .request(&json!({"event": "subscribe", "subscription": "simple.f", "extra": "x"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "subscription": "simple.f", "extra": "x"})
    );
    let r = post(
        port,
        &json!([
            {"subscription": "simple.f", "data": 1, "extra": "y"},
            {"subscription": "simple.f", "data": 2, "extra": "x"},
            {"subscription": "simple.f", "data": 3, "session_id": "sess_123"},
            {"subscription": "simple.f", "data": 4, "session_id": null},
            {"subscription": "simple.f", "data": 5},
        ]),
    )
    .await;
    assert_published(&r, 5);
    let got: Vec<Value> = f.recv_n(3).await.iter().map(assert_live_frame).collect();
    let want: Vec<Value> = [2, 4, 5]
        .iter()
        .map(|n| json!({"event": "message", "subscription": "simple.f", "data": n, "extra": "x"}))
        .collect();
    assert_eq!(got, want, "filter fields (R-FLT-1)");
    f.expect_silence(ms(300)).await;

    // Order (R-OOO-4/5): equal and lower orders dropped, unordered messages pass.
    let mut o = Client::connect(&server.ws_url()).await;
    sub(&mut o, "simple.o").await;
    let r = post(
        port,
        &json!([
            {"subscription": "simple.o", "data": "a", "options": {"order": 1}},
            {"subscription": "simple.o", "data": "b", "options": {"order": 1}},
            {"subscription": "simple.o", "data": "c", "options": {"order": 0.5}},
            {"subscription": "simple.o", "data": "d"},
            {"subscription": "simple.o", "data": "e", "options": {"order": "2"}},
            {"subscription": "simple.o", "data": "f", "options": {"order": 1, "order_key": "k"}},
        ]),
    )
    .await;
    assert_published(&r, 6);
    let got: Vec<Value> = o
        .recv_n(4)
        .await
        .iter()
        .map(|m| assert_live_frame(m)["data"].clone())
        .collect();
    assert_eq!(got, vec![json!("a"), json!("d"), json!("e"), json!("f")]);
    o.expect_silence(ms(300)).await;

    // Throttle (R-THR-6): three at once with T = 0.2 → #1 now, #2 never, #3 trailing at +0.2 s
    // without received_at/queue_size (R-PUB-9).
    let mut t = Client::connect(&server.ws_url()).await;
    sub(&mut t, "simple.t").await;
    let opts = json!({"throttle": 0.2, "throttle_key": "k"});
    let r = post(
        port,
        &json!([
            {"subscription": "simple.t", "data": 1, "options": opts},
            {"subscription": "simple.t", "data": 2, "options": opts},
            {"subscription": "simple.t", "data": 3, "options": opts},
        ]),
    )
    .await;
    assert_published(&r, 3);
    let first = t.recv_timeout(secs(10.0)).await.expect("no first message");
    let t_first = Instant::now();
    assert_eq!(assert_live_frame(&first)["data"], json!(1));
    let third = t
        .recv_timeout(secs(5.0))
        .await
        .expect("no trailing message");
    let gap = t_first.elapsed();
    assert_eq!(
        third
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        vec!["event", "subscription", "data", "sent_at"],
        "trailing throttled frame: {third}"
    );
    assert_eq!(third["data"], json!(3), "{third}");
    assert!(
        gap >= ms(100),
        "trailing message after only {gap:?} (T = 0.2 s)"
    );
    t.expect_silence(ms(400)).await;

    // Subscriptions nobody holds: accepted, delivered nowhere.
    let r = post(port, &json!({"subscription": "simple.nobody", "data": 1})).await;
    assert_published(&r, 1);
    let r = post(
        port,
        &json!([{"subscription": "nosuch.service", "data": 1}, {"subscription": "simple", "data": 2}]),
    )
    .await;
    assert_published(&r, 2);
    for cl in [&mut c, &mut f, &mut o, &mut t] {
        cl.expect_silence(ms(300)).await;
    }

    // Still alive and delivering afterwards.
    let r = post(
        port,
        &json!({"subscription": "simple.topic", "data": "end"}),
    )
    .await;
    assert_published(&r, 1);
    let m = c.recv_timeout(secs(10.0)).await.expect("no delivery");
    assert_eq!(
        assert_live_frame(&m),
        msg_frame("simple.topic", json!("end"))
    );
    server.stop(secs(10.0)).await;
}

// ------------------------------------------------------------------------------------------------
// 2. API errors
// ------------------------------------------------------------------------------------------------

/// Issue item "400 names `message i:`", "413", "405", "404"; refusals follow R-PUB-3/R-PUB-5;
/// a failed batch publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t02_api_errors() {
    let cfg = memory_config().with("api.max_body_size", 2048);
    let server = Server::start_config(&cfg).await;
    let port = server.api_port().await;
    let mut c = Client::connect(&server.ws_url()).await;
    sub(&mut c, "simple.topic").await;
    let ok = json!({"subscription": "simple.topic", "data": "must not arrive"});

    // Body not JSON (and not UTF-8).
    for body in [
        &b"not json"[..],
        b"{\"subscription\": \"simple.topic\", \"data\": 1",
        b"",
        b"\xff\xfe",
    ] {
        let r = post_raw(port, body).await;
        assert_api_error(&r, 400);
    }
    // JSON that is neither an object nor an array.
    for body in [json!("simple.topic"), json!(5), json!(null), json!(true)] {
        let r = post(port, &body).await;
        assert_api_error(&r, 400);
    }
    // Missing or non-string `subscription`, missing `data` (R-PUB-3).
    let e = assert_api_error(&post(port, &json!({"data": 1})).await, 400);
    assert!(e.contains("subscription"), "{e}");
    for s in [
        json!(5),
        json!(null),
        json!(["simple.topic"]),
        json!({"a": 1}),
    ] {
        let e = assert_api_error(
            &post(port, &json!({"subscription": s, "data": 1})).await,
            400,
        );
        assert!(e.contains("subscription"), "{e}");
    }
    let e = assert_api_error(
        &post(port, &json!({"subscription": "simple.topic"})).await,
        400,
    );
    assert!(e.contains("data"), "{e}");
    // `options: null` (and a number / a boolean) is dropped by the delivery rules (R-PUB-5),
    // so the API refuses it; so is a non-string `published_at` and an unhashable order key.
    for bad in [
        json!({"subscription": "simple.topic", "data": 1, "options": null}),
        json!({"subscription": "simple.topic", "data": 1, "options": 3}),
        json!({"subscription": "simple.topic", "data": 1, "options": false}),
    ] {
        let e = assert_api_error(&post(port, &bad).await, 400);
        assert!(e.contains("options"), "{bad}: {e}");
    }
    for bad in [
        json!({"subscription": "simple.topic", "data": 1, "published_at": 5}),
        json!({"subscription": "simple.topic", "data": 1,
               "options": {"order": 1, "order_key": [1]}}),
    ] {
        assert_api_error(&post(port, &bad).await, 400);
    }
    // Arrays: the error names the message; nothing of a failed batch is published.
    let e = assert_api_error(&post(port, &json!([ok, 1])).await, 400);
    assert!(e.starts_with("message 1"), "{e}");
    let e = assert_api_error(&post(port, &json!([ok, ok, {"data": 1}])).await, 400);
    assert!(e.starts_with("message 2"), "{e}");
    assert!(e.contains("subscription"), "{e}");
    let e = assert_api_error(
        &post(
            port,
            &json!([ok, {"subscription": "simple.topic", "data": 1, "options": null}]),
        )
        .await,
        400,
    );
    assert!(e.starts_with("message 1") && e.contains("options"), "{e}");
    let e = assert_api_error(&post(port, &json!([[ok]])).await, 400);
    assert!(e.starts_with("message 0"), "{e}");

    // Body over max_body_size: 413, with Content-Length and chunked.
    let big = json!({"subscription": "simple.topic", "data": "x".repeat(3000)}).to_string();
    let r = post_raw(port, big.as_bytes()).await;
    assert_eq!(r.status, 413, "{r:?}");
    let mut chunked = format!(
        "POST /publish HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        big.len()
    )
    .into_bytes();
    chunked.extend_from_slice(big.as_bytes());
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let raw = tcp_exchange(port, chunked, secs(10.0)).await;
    let r = parse_http_response(&raw).expect("no HTTP answer to a chunked body");
    assert_eq!(r.status, 413, "chunked body over the limit: {r:?}");

    // Method and path.
    let r = http_request(port, "GET", "/publish", &[], b"").await;
    assert_eq!(r.status, 405, "GET /publish: {r:?}");
    let r = http_request(port, "POST", "/other", &[], ok.to_string().as_bytes()).await;
    assert_api_error(&r, 404);
    let r = http_request(port, "GET", "/", &[], b"").await;
    assert_eq!(r.status, 404, "GET /: {r:?}");

    // None of the above published anything.
    c.expect_silence(ms(300)).await;

    // A body of exactly max_body_size bytes is accepted.
    let mut exact = json!({"subscription": "simple.topic", "data": ""});
    let pad = 2048 - exact.to_string().len();
    exact["data"] = json!("y".repeat(pad));
    let body = exact.to_string();
    assert_eq!(body.len(), 2048);
    assert_published(&post_raw(port, body.as_bytes()).await, 1);
    let m = c.recv_timeout(secs(10.0)).await.expect("no delivery");
    assert_eq!(m["data"], json!("y".repeat(pad)));
    c.expect_silence(ms(200)).await;
    server.stop(secs(10.0)).await;
}

// ------------------------------------------------------------------------------------------------
// 3. API key
// ------------------------------------------------------------------------------------------------

/// Issue item "`api_key` … accepted as `Authorization: Bearer <key>` or `X-Api-Key: <key>`";
/// the API here listens on 0.0.0.0 (allowed because a key is set) and is reached on 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t03_api_key() {
    let cfg = memory_config()
        .with("api.host", "0.0.0.0")
        .with("api.api_key", "k");
    let server = Server::start_config(&cfg).await;
    let port = server.api_port().await;
    let mut c = Client::connect(&server.ws_url()).await;
    sub(&mut c, "simple.topic").await;
    let body = |d: &str| json!({"subscription": "simple.topic", "data": d}).to_string();

    let refused: [&[(&str, &str)]; 6] = [
        &[],
        &[("Authorization", "Bearer wrong")],
        &[("Authorization", "Bearer kk")],
        &[("Authorization", "k")],
        &[("X-Api-Key", "wrong")],
        &[("X-Api-Key", "")],
    ];
    for headers in refused {
        let r = http_request(port, "POST", "/publish", headers, body("no").as_bytes()).await;
        assert_api_error(&r, 401);
    }
    c.expect_silence(ms(300)).await;

    let r = http_request(
        port,
        "POST",
        "/publish",
        &[("Authorization", "Bearer k")],
        body("bearer").as_bytes(),
    )
    .await;
    assert_published(&r, 1);
    let r = http_request(
        port,
        "POST",
        "/publish",
        &[("X-Api-Key", "k")],
        body("x-api-key").as_bytes(),
    )
    .await;
    assert_published(&r, 1);
    let got: Vec<Value> = c
        .recv_n(2)
        .await
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(got, vec![json!("bearer"), json!("x-api-key")]);
    c.expect_silence(ms(200)).await;
    server.stop(secs(10.0)).await;
}

/// Issue item "`api_key` required when host is not loopback": exit status 2, one line naming
/// `api.api_key` (R-CFG error format).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t03_non_loopback_api_without_key_is_a_config_error() {
    for api in [
        json!({"host": "0.0.0.0", "port": 0}),
        json!({"host": "0.0.0.0", "port": 0, "api_key": ""}),
    ] {
        let cfg = memory_config().with("api", api.clone());
        let (status, stderr) = Server::start_expect_failure(&cfg.toml(), secs(10.0)).await;
        assert_eq!(status.code(), Some(2), "{api}: {status}\n{stderr}");
        assert!(
            stderr.lines().any(|l| l.contains("api.api_key")),
            "{api}: no line naming api.api_key:\n{stderr}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// 4. Redis broker + API
// ------------------------------------------------------------------------------------------------

/// Issue item "With Redis it PUBLISHes": the message goes through Redis on
/// `channel_prefix + subscription` (R-PUB-1) and reaches the server's client exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t04_redis_api_publishes_through_redis() {
    let env = TestEnv::start_with(|c| {
        c.set("redis.channel_prefix", "app1:");
        c.set("api", json!({"port": 0}));
    })
    .await;
    let port = env.server.api_port().await;
    let mut c = env.client().await;
    sub(&mut c, "simple.topic").await;
    env.redis
        .wait_channels(&["app1:simple.topic"], secs(5.0))
        .await;

    // A raw Redis subscriber on the prefixed and the unprefixed channel.
    let client = redis::Client::open(env.redis.url()).unwrap();
    let mut ps = client.get_async_pubsub().await.expect("redis pubsub");
    ps.subscribe("app1:simple.topic").await.unwrap();
    ps.subscribe("simple.topic").await.unwrap();
    env.redis
        .wait_channels(&["app1:simple.topic", "simple.topic"], secs(5.0))
        .await;
    wait_numsub(&env.redis, "app1:simple.topic", 2).await;

    let msg = json!({"subscription": "simple.topic", "data": {"via": "api"}, "extra": null});
    assert_published(&post(port, &msg).await, 1);

    let mut raw = ps.on_message();
    let got = tokio::time::timeout(secs(10.0), raw.next())
        .await
        .expect("nothing PUBLISHed on Redis within 10 s")
        .expect("pubsub stream ended");
    assert_eq!(got.get_channel_name(), "app1:simple.topic");
    let payload: Value = serde_json::from_slice(got.get_payload_bytes()).expect("payload JSON");
    assert_eq!(payload, msg, "PUBLISHed payload");
    if let Ok(Some(more)) = tokio::time::timeout(ms(300), raw.next()).await {
        panic!(
            "a second PUBLISH (channel {}): {:?}",
            more.get_channel_name(),
            String::from_utf8_lossy(more.get_payload_bytes())
        );
    }
    drop(raw);

    expect_once(
        &mut c,
        &msg_frame("simple.topic", json!({"via": "api"})),
        ms(300),
        "client",
    )
    .await;
    env.server.stop(secs(10.0)).await;
}

/// Issue item "`503` when the broker refuses": Redis refuses PUBLISH (ACL `-publish` on the
/// default user, which the server's connections use) → 503 with the JSON error shape, nothing
/// delivered, the server keeps running; once PUBLISH is allowed again the API works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t04_redis_refusing_publish_is_503() {
    let env = TestEnv::start_with(|c| {
        c.set("api", json!({"port": 0}));
    })
    .await;
    let port = env.server.api_port().await;
    let mut c = env.client().await;
    sub(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], secs(5.0)).await;

    let _: String = env
        .redis
        .query(&["ACL", "SETUSER", "default", "-publish"])
        .await;
    let r = post(port, &json!({"subscription": "simple.topic", "data": 1})).await;
    assert_api_error(&r, 503);
    assert_eq!(
        body_json(&r)["published"],
        json!(0),
        "none of the batch went out"
    );
    c.expect_silence(ms(300)).await;
    assert!(env.server.is_running(), "server died on a refused PUBLISH");

    let _: String = env
        .redis
        .query(&["ACL", "SETUSER", "default", "+publish"])
        .await;
    let r = post(port, &json!({"subscription": "simple.topic", "data": 2})).await;
    assert_published(&r, 1);
    expect_once(
        &mut c,
        &msg_frame("simple.topic", json!(2)),
        ms(300),
        "client",
    )
    .await;
    env.server.stop(secs(10.0)).await;
}

// ------------------------------------------------------------------------------------------------
// 5. No configuration file
// ------------------------------------------------------------------------------------------------

/// The binary started without arguments, its stderr lines collected; SIGKILLed on drop.
struct Bare {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Bare {
    fn spawn() -> Bare {
        let dir = std::env::temp_dir();
        let mut cmd = Command::new(server_bin());
        cmd.env_remove("RUST_LOG")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = common::server::spawn_child(cmd).expect("cannot spawn socketshark");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                match line {
                    Ok(l) => sink.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
        });
        Bare {
            child: Some(child),
            lines,
        }
    }

    fn json_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| json!({"raw": l})))
            .collect()
    }

    fn dump(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    async fn wait_event(&mut self, event: &str) -> Value {
        let deadline = tokio::time::Instant::now() + secs(10.0);
        loop {
            if let Some(l) = self.json_lines().into_iter().find(|l| is_event(l, event)) {
                return l;
            }
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "socketshark exited ({s}) before {event:?}:\n{}",
                    self.dump()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("no {event:?} line within 10 s:\n{}", self.dump());
            }
            sleep_ms(10).await;
        }
    }

    async fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + secs(10.0);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("no exit within 10 s of SIGTERM:\n{}", self.dump());
            }
            sleep_ms(10).await;
        }
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("---- socketshark (no config) stderr ----\n{}", self.dump());
        }
    }
}

/// Issue item "`socketshark` with NO `-c` runs `Config::embedded()`". The only test using the
/// fixed ports 9000 (WebSocket) and 9001 (API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t05_no_config_runs_embedded() {
    for port in [9000u16, 9001] {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            panic!(
                "port {port} on 127.0.0.1 is taken ({e}): this test needs 9000 and 9001 free to \
                 run `socketshark` without a configuration file"
            );
        }
    }
    let mut s = Bare::spawn();
    s.wait_event(READY_EVENT).await;
    let lines = s.json_lines();
    let first = &lines[0];
    let event = first["event"].as_str().unwrap_or_else(|| {
        panic!(
            "first stderr line is not a JSON log line with an event: {first}\n{}",
            s.dump()
        )
    });
    assert!(
        event.contains("embedded broker"),
        "first line does not mention the embedded broker: {first}"
    );
    let ready = lines.iter().find(|l| is_event(l, READY_EVENT)).unwrap();
    assert_eq!(ready["port"], json!(9000), "{ready}");
    let api = lines
        .iter()
        .find(|l| is_event(l, API_EVENT))
        .unwrap_or_else(|| panic!("no {API_EVENT:?} line:\n{}", s.dump()));
    assert_eq!(api["port"], json!(9001), "{api}");
    assert_eq!(api["host"], json!("127.0.0.1"), "{api}");

    let mut c = Client::connect("ws://127.0.0.1:9000/").await;
    sub(&mut c, "demo.hello").await;
    let r = post(
        9001,
        &json!({"subscription": "demo.hello", "data": {"hi": 1}}),
    )
    .await;
    assert_published(&r, 1);
    let m = c.recv_timeout(secs(10.0)).await.expect("no delivery");
    assert_eq!(
        assert_live_frame(&m),
        msg_frame("demo.hello", json!({"hi": 1}))
    );
    // Only `demo` is configured.
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "other.x"}))
        .await;
    assert_eq!(r["status"], json!("error"), "{r}");

    let status = s.terminate().await;
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
}

// ------------------------------------------------------------------------------------------------
// 6. Two nodes on one Redis
// ------------------------------------------------------------------------------------------------

/// The issue's centrepiece: two processes on one Redis, each with its own WebSocket and API
/// port. Every client of a subscription on both nodes gets each message exactly once, whether
/// published on Redis or through either node's API (R-PUB-2/4/10); others get nothing; a burst
/// stays complete and ordered across nodes (R-ORD-5); one node's death does not disturb the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t06_two_nodes_one_redis() {
    let redis = Redis::start().await;
    let svc = MockService::start().await;
    let node_cfg = || base_config(&redis, &svc).with("api", json!({"port": 0}));
    let a = Server::start_config(&node_cfg()).await;
    let b = Server::start_config(&node_cfg()).await;
    let a_api = a.api_port().await;
    let b_api = b.api_port().await;
    assert_ne!(a.port(), b.port());
    assert_ne!(a_api, b_api);

    let mut a_clients = Vec::new();
    let mut b_clients = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&a.ws_url()).await;
        sub(&mut c, "simple.topic").await;
        a_clients.push(c);
        let mut c = Client::connect(&b.ws_url()).await;
        sub(&mut c, "simple.topic").await;
        b_clients.push(c);
    }
    let mut a_other = Client::connect(&a.ws_url()).await;
    sub(&mut a_other, "simple.other").await;
    let mut b_other = Client::connect(&b.ws_url()).await;
    sub(&mut b_other, "simple.other").await;
    // One Redis subscription per channel per node (R-PUB-2).
    wait_numsub(&redis, "simple.topic", 2).await;
    wait_numsub(&redis, "simple.other", 2).await;

    // Once via Redis: PUBLISH reaches both nodes, each client gets it once.
    let n = redis
        .publish_json(
            "simple.topic",
            &json!({"subscription": "simple.topic", "data": "via redis"}),
        )
        .await;
    assert_eq!(n, 2, "PUBLISH receivers");
    let want = msg_frame("simple.topic", json!("via redis"));
    for (i, c) in a_clients.iter_mut().enumerate() {
        expect_once(c, &want, ms(300), &format!("node A client {i}")).await;
    }
    for (i, c) in b_clients.iter_mut().enumerate() {
        expect_once(c, &want, ms(300), &format!("node B client {i}")).await;
    }
    a_other.expect_silence(ms(100)).await;
    b_other.expect_silence(ms(100)).await;

    // Once via node A's API: the same on both nodes.
    let r = post(
        a_api,
        &json!({"subscription": "simple.topic", "data": "via A"}),
    )
    .await;
    assert_published(&r, 1);
    let want = msg_frame("simple.topic", json!("via A"));
    for (i, c) in a_clients.iter_mut().enumerate() {
        expect_once(c, &want, ms(300), &format!("node A client {i}")).await;
    }
    for (i, c) in b_clients.iter_mut().enumerate() {
        expect_once(c, &want, ms(300), &format!("node B client {i}")).await;
    }
    a_other.expect_silence(ms(100)).await;
    b_other.expect_silence(ms(100)).await;

    // A burst of 200 single-message POSTs to node A's API (one keep-alive connection, each
    // POST answered before the next): complete and in order on every client of both nodes.
    let mut conn = HttpConn::connect(a_api).await;
    for i in 0..200 {
        let body = json!({"subscription": "simple.topic", "data": i}).to_string();
        let (status, resp) = conn.post(body.as_bytes()).await;
        assert_eq!(
            status,
            200,
            "burst POST {i}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    drop(conn);
    let want: Vec<Value> = (0..200).map(|i| json!(i)).collect();
    for (node, clients) in [("A", &mut a_clients), ("B", &mut b_clients)] {
        for (i, c) in clients.iter_mut().enumerate() {
            let mut got = Vec::with_capacity(200);
            while got.len() < 200 {
                match c.recv_timeout(secs(10.0)).await {
                    Some(m) => got.push(m["data"].clone()),
                    None => panic!(
                        "node {node} client {i}: burst incomplete, {} of 200 within 10 s each",
                        got.len()
                    ),
                }
            }
            assert_eq!(got, want, "node {node} client {i}: burst out of order");
        }
    }
    for (node, clients) in [("A", &mut a_clients), ("B", &mut b_clients)] {
        for (i, c) in clients.iter_mut().enumerate() {
            if let Some(m) = c.recv_timeout(ms(300)).await {
                panic!("node {node} client {i}: delivery after the burst: {m}");
            }
        }
    }
    a_other.expect_silence(ms(100)).await;
    b_other.expect_silence(ms(100)).await;

    // Node A dies (SIGKILL): Redis drops its subscriptions, node B keeps delivering.
    a.kill();
    wait_numsub(&redis, "simple.topic", 1).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", a_api)).is_err(),
        "node A's API still accepts connections after SIGKILL"
    );
    let n = redis
        .publish_json(
            "simple.topic",
            &json!({"subscription": "simple.topic", "data": "after kill, via redis"}),
        )
        .await;
    assert_eq!(n, 1, "PUBLISH receivers after node A died");
    let want = msg_frame("simple.topic", json!("after kill, via redis"));
    for (i, c) in b_clients.iter_mut().enumerate() {
        expect_once(c, &want, ms(300), &format!("node B client {i}")).await;
    }
    let r = post(
        b_api,
        &json!({"subscription": "simple.topic", "data": "after kill, via B"}),
    )
    .await;
    assert_published(&r, 1);
    let want = msg_frame("simple.topic", json!("after kill, via B"));
    for (i, c) in b_clients.iter_mut().enumerate() {
        expect_once(c, &want, ms(300), &format!("node B client {i}")).await;
    }
    b_other.expect_silence(ms(100)).await;
    // Node A's clients were disconnected, not fed.
    for (i, c) in a_clients.iter_mut().enumerate() {
        let (_, data) = c.recv_close_skipping_data(secs(10.0)).await;
        assert!(
            data.is_empty(),
            "node A client {i} got data after A died: {data:?}"
        );
    }
    assert!(b.is_running());
    b.stop(secs(10.0)).await;
}

// ------------------------------------------------------------------------------------------------
// 7. Throughput of the publish API
// ------------------------------------------------------------------------------------------------

/// Load: `WORKERS` keep-alive connections each POSTing single messages for `LOAD_SECS` against
/// the memory broker, one subscribed client counting deliveries. Prints requests/s and
/// deliveries/s (run with `--nocapture`); asserts only that every published message was
/// delivered, in order per connection. `SOCKETSHARK_BIN` selects another (e.g. release) binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t07_publish_api_throughput() {
    const WORKERS: usize = 8;
    const LOAD_SECS: f64 = 3.0;
    let cfg = memory_config().with("log.level", "INFO");
    let server = Server::start_config(&cfg).await;
    let port = server.api_port().await;
    let mut c = Client::connect(&server.ws_url()).await;
    sub(&mut c, "simple.load").await;

    let published = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..WORKERS {
        let published = published.clone();
        let finished = finished.clone();
        handles.push(tokio::spawn(async move {
            let mut conn = HttpConn::connect(port).await;
            let until = Instant::now() + Duration::from_secs_f64(LOAD_SECS);
            let mut i: u64 = 0;
            while Instant::now() < until {
                let body =
                    format!(r#"{{"subscription":"simple.load","data":{{"w":{w},"i":{i}}}}}"#);
                let (status, resp) = conn.post(body.as_bytes()).await;
                assert_eq!(
                    status,
                    200,
                    "worker {w} request {i}: {}",
                    String::from_utf8_lossy(&resp)
                );
                i += 1;
                published.fetch_add(1, Ordering::Relaxed);
            }
            finished.fetch_add(1, Ordering::SeqCst);
            (i, start.elapsed())
        }));
    }

    // Count deliveries while the load runs.
    let mut next = [0u64; WORKERS];
    let mut delivered: u64 = 0;
    let mut last_delivery = start;
    let mut idle_since = Instant::now();
    loop {
        match c.recv_timeout(ms(50)).await {
            Some(m) => {
                let w = m["data"]["w"].as_u64().expect("w") as usize;
                let i = m["data"]["i"].as_u64().expect("i");
                assert_eq!(i, next[w], "worker {w}: delivery out of order or lost: {m}");
                next[w] += 1;
                delivered += 1;
                last_delivery = Instant::now();
                idle_since = last_delivery;
            }
            None => {
                let done = finished.load(Ordering::SeqCst) == WORKERS;
                if done && delivered == published.load(Ordering::SeqCst) {
                    break;
                }
                if idle_since.elapsed() > secs(10.0) {
                    panic!(
                        "deliveries stalled: {delivered} delivered, {} published, {} of \
                         {WORKERS} workers done",
                        published.load(Ordering::SeqCst),
                        finished.load(Ordering::SeqCst)
                    );
                }
            }
        }
    }
    let mut requests = 0;
    let mut load_time = Duration::ZERO;
    for h in handles {
        let (n, t) = h.await.expect("worker panicked");
        requests += n;
        load_time = load_time.max(t);
    }
    assert_eq!(delivered, requests, "every published message delivered");
    for (w, n) in next.iter().enumerate() {
        assert!(*n > 0, "worker {w} published nothing");
    }
    let deliver_time = last_delivery.duration_since(start);
    eprintln!(
        "publish API throughput ({} binary, {WORKERS} keep-alive connections, single-message \
         POSTs, memory broker, 1 subscriber, {LOAD_SECS} s): {requests} requests in {:.2} s = \
         {:.0} requests/s; {delivered} deliveries in {:.2} s = {:.0} deliveries/s",
        server_bin().display(),
        load_time.as_secs_f64(),
        requests as f64 / load_time.as_secs_f64(),
        deliver_time.as_secs_f64(),
        delivered as f64 / deliver_time.as_secs_f64(),
    );
    c.expect_silence(ms(200)).await;
    server.stop(secs(10.0)).await;
}
