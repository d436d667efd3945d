//! Integration-test harness for socketshark.
//!
//! Use from a test file with `mod common;` and `use common::*;`. Tests run concurrently, each with
//! its own Redis process, mock service and server:
//!
//! ```ignore
//! mod common;
//! use common::*;
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn publish_reaches_anonymous_subscriber() {
//!     let env = TestEnv::start().await;                 // Redis + mock services + server (§21 config)
//!     let mut c = env.client().await;
//!     let r = c.request(&json!({"event": "subscribe", "subscription": "simple.topic"})).await;
//!     assert_eq!(r, json!({"event": "subscribe", "status": "ok", "subscription": "simple.topic"}));
//!     env.redis.wait_channels(&["simple.topic"], secs(5.0)).await;
//!     env.redis.publish_json("simple.topic", &json!({"subscription": "simple.topic", "data": {"baz": "foo"}})).await;
//!     let m = c.recv().await;
//!     assert_eq!(m["data"], json!({"baz": "foo"}));
//!     assert_iso_utc_value(&m["sent_at"]);
//! }
//! ```
//!
//! Pieces: [`Redis`] (own `redis-server`), [`MockService`] + [`Reply`] (scripted HTTP callbacks),
//! [`Config`] + [`base_config`] (TOML), [`Server`] (the real binary, JSON logs collected),
//! [`Client`] (WebSocket), [`TestEnv`] (all of them), and small helpers in `util`.
//! Set `SOCKETSHARK_TEST_LOG=1` to echo the server's log lines live.

#![allow(dead_code, unused_imports, unused_macros)]

pub mod client;
pub mod config;
pub mod mock_service;
pub mod raw;
pub mod redis_cluster;
pub mod redis_server;
pub mod server;
pub mod util;

pub use client::{Client, DataFrame, RECV_TIMEOUT};
pub use config::{Config, base_config, base_config_for};
pub use mock_service::{MockService, Reply, Request};
pub use redis_cluster::RedisCluster;
pub use redis_server::Redis;
pub use serde_json::{Value, json};
pub use server::{METRICS_EVENT, READY_EVENT, Server, is_event, server_bin};
pub use std::time::Duration;
pub use util::{
    HttpResponse, TempDir, assert_iso_utc, assert_iso_utc_value, free_port, http_get,
    http_get_with, http_request, iso_utc_micros, ms, now_micros, parse_http_response, prom_value,
    secs, sleep_ms, tcp_exchange, unreachable_port, unreachable_url, wait_until, within,
};

/// Subscribes (with `recover` when given) and expects `ok`; returns the reply (history tests).
pub async fn subscribe_recovering(c: &mut Client, name: &str, recover: Option<Value>) -> Value {
    let mut cmd = json!({"event": "subscribe", "subscription": name});
    if let Some(r) = recover {
        cmd["recover"] = r;
    }
    let r = c.request(&cmd).await;
    assert_eq!(r["status"], "ok", "{r}");
    r
}

/// Receives `n` messages and returns their `(offset, data)` (history tests).
pub async fn recv_offsets(c: &mut Client, n: usize) -> Vec<(u64, Value)> {
    c.recv_n(n)
        .await
        .into_iter()
        .map(|m| {
            assert_eq!(m["event"], "message", "{m}");
            let offset = m["offset"].as_u64();
            (
                offset.unwrap_or_else(|| panic!("no offset: {m}")),
                m["data"].clone(),
            )
        })
        .collect()
}

/// Publishes `data` on `name` through the API on `port` (200 expected); returns the offset the
/// message got (a service with history).
pub async fn publish_with_offset(port: u16, name: &str, data: Value) -> u64 {
    let body = json!({"subscription": name, "data": data}).to_string();
    let r = http_request(port, "POST", "/publish", &[], body.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v["offsets"][0]
        .as_u64()
        .unwrap_or_else(|| panic!("no offset: {v}"))
}

/// The history scenario of issues 14 and 16, for any broker: on `nodes[0]` and `nodes[1]`
/// (both with the publish API and a service `hist` with history of at least 125), a client
/// misses 100 messages published through both nodes, comes back to the other node with
/// `recover` and gets exactly those, then the live ones (some published while it recovers), in
/// order, once each. The nodes are stopped at the end.
pub async fn recover_100_missed_on_the_other_node(nodes: Vec<Server>) {
    let (port_a, port_b) = (nodes[0].api_port().await, nodes[1].api_port().await);
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let r = subscribe_recovering(&mut c, "hist.room", None).await;
    assert_eq!(r["offset"], 0, "{r}");
    let epoch = r["epoch"].as_str().expect("an epoch").to_owned();
    // The epoch told before the first message is the one the messages carry.
    for i in 1..=5u64 {
        assert_eq!(publish_with_offset(port_a, "hist.room", json!(i)).await, i);
    }
    for (i, m) in c.recv_n(5).await.iter().enumerate() {
        assert_eq!(m["offset"], i as u64 + 1, "{m}");
        assert_eq!(m["epoch"], epoch.as_str(), "{m}");
        assert_eq!(m["data"], i as u64 + 1, "{m}");
    }
    c.close().await;

    // Missed while away, published through both nodes (one history in the broker).
    for i in 6..=105u64 {
        let port = if i % 2 == 0 { port_a } else { port_b };
        assert_eq!(publish_with_offset(port, "hist.room", json!(i)).await, i);
    }
    // Live messages keep coming while the client recovers on node B.
    let live = tokio::spawn(async move {
        for i in 106..=125u64 {
            publish_with_offset(port_a, "hist.room", json!(i)).await;
            sleep_ms(5).await;
        }
    });
    let mut c = Client::connect(&nodes[1].ws_url()).await;
    let started = std::time::Instant::now();
    let r = subscribe_recovering(
        &mut c,
        "hist.room",
        Some(json!({"offset": 5, "epoch": epoch})),
    )
    .await;
    eprintln!(
        "subscribe recovering 100 messages: {:.1} ms to the reply",
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(
        (r["offset"].clone(), r["epoch"].clone()),
        (json!(5), json!(epoch))
    );
    live.await.unwrap();
    let got = recv_offsets(&mut c, 120).await;
    let want: Vec<(u64, Value)> = (6..=125u64).map(|i| (i, json!(i))).collect();
    assert_eq!(
        got, want,
        "every missed message once, in order, then the live ones"
    );
    c.expect_silence(ms(300)).await;
    for n in nodes {
        n.stop(secs(10.0)).await;
    }
}

/// The ticket-validation answer of the §21 configuration's default session.
pub const SESSION_ID: &str = "sess_123";

/// Redis + mock service + server started with [`base_config`], the mock's `/auth` answering
/// `{"status": "ok", "session_id": "sess_123"}` by default.
pub struct TestEnv {
    pub redis: Redis,
    pub svc: MockService,
    pub server: Server,
}

impl TestEnv {
    /// Everything with the unmodified §21 configuration.
    pub async fn start() -> TestEnv {
        TestEnv::start_with(|_| {}).await
    }

    /// Lets the test adjust the configuration before the server starts, e.g.
    /// `TestEnv::start_with(|c| { c.set("ws.ping", json!({"interval": 0.1, "timeout": 0.1})); })`.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestEnv {
        let redis = Redis::start().await;
        let svc = MockService::start().await;
        svc.set("/auth", Reply::auth_ok(SESSION_ID));
        let mut cfg = base_config(&redis, &svc);
        edit(&mut cfg);
        let server = Server::start_config(&cfg).await;
        TestEnv { redis, svc, server }
    }

    /// Like [`TestEnv::start_with`] with access to the Redis and mock service while editing (e.g.
    /// to point `[redis_alt]` at the same Redis).
    pub async fn start_with_env(edit: impl FnOnce(&mut Config, &Redis, &MockService)) -> TestEnv {
        let redis = Redis::start().await;
        let svc = MockService::start().await;
        svc.set("/auth", Reply::auth_ok(SESSION_ID));
        let mut cfg = base_config(&redis, &svc);
        edit(&mut cfg, &redis, &svc);
        let server = Server::start_config(&cfg).await;
        TestEnv { redis, svc, server }
    }

    /// A new WebSocket client connected to the server.
    pub async fn client(&self) -> Client {
        Client::connect(&self.server.ws_url()).await
    }

    /// A new client that has authenticated with ticket `"valid_ticket"` (asserts the ok reply).
    pub async fn auth_client(&self) -> Client {
        let mut c = self.client().await;
        authenticate(&mut c).await;
        c
    }
}

/// Sends `{"event": "auth", "ticket": "valid_ticket"}` and asserts the ok reply.
pub async fn authenticate(c: &mut Client) {
    let r = c
        .request(&json!({"event": "auth", "ticket": "valid_ticket"}))
        .await;
    assert_eq!(r, json!({"event": "auth", "status": "ok"}), "auth failed");
}

/// Subscribes and asserts `{"event": "subscribe", "status": "ok", "subscription": name}`
/// (exact, so only for services without extra fields/data in the reply).
pub async fn subscribe_ok(c: &mut Client, name: &str) {
    let r = c
        .request(&json!({"event": "subscribe", "subscription": name}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "subscription": name}),
        "subscribe {name} failed"
    );
}

/// `{"event": "message", "subscription": ..., "data": ...}` frame as a publisher payload.
pub fn service_message(subscription: &str, data: Value) -> Value {
    json!({"subscription": subscription, "data": data})
}

/// Removes the keys that vary between deliveries (`sent_at`, `received_at`, `queue_size`)
/// after checking their shapes (timestamps ISO UTC, `queue_size` a non-negative integer), so the
/// rest can be compared with `assert_eq!`.
pub fn strip_delivery_meta(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if let Some(t) = o.shift_remove("sent_at") {
            assert_iso_utc_value(&t);
        }
        if let Some(t) = o.shift_remove("received_at") {
            assert_iso_utc_value(&t);
        }
        if let Some(q) = o.shift_remove("queue_size") {
            assert!(
                q.as_u64().is_some(),
                "queue_size is not a non-negative integer: {q}"
            );
        }
    }
    v
}
