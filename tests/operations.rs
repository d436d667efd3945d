//! Operations (issue "Operations and hardening", items 1–3), over real sockets against the real
//! binary: the extra metrics (deliveries, drops by reason, callback latency, build info, broker
//! state), `/healthz` and `/readyz` through a shutdown and a Redis loss, and the log lines an
//! operator searches for (session start and end, failed callbacks with their context and
//! duration; never a ticket).
mod common;
use common::*;

const LONG: Duration = Duration::from_secs(10);

fn with_metrics(c: &mut Config) {
    c.set(
        "metrics.prometheus",
        json!({"host": "127.0.0.1", "port": 0}),
    );
}

async fn metrics_text(port: u16) -> String {
    let r = http_get(port, "/metrics").await;
    assert_eq!(r.status, 200, "GET /metrics: {r:?}");
    r.body
}

/// Polls /metrics until `sample` satisfies `pred` (10 s); returns its value.
async fn wait_sample(port: u16, sample: &str, pred: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let text = metrics_text(port).await;
        if let Some(v) = prom_value(&text, sample).filter(|v| pred(*v)) {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {sample}; /metrics:\n{text}");
        }
        sleep_ms(20).await;
    }
}

async fn status_of(port: u16, path: &str) -> u16 {
    http_get(port, path).await.status
}

fn dropped(reason: &str) -> String {
    format!("socketshark_messages_dropped_total{{reason=\"{reason}\"}}")
}

const DELIVERED: &str = "socketshark_messages_delivered_total";

/// Item 1: every push written counts as delivered; messages stopped by filter fields, by the
/// order filter and throttled messages superseded by a newer one count as dropped with that
/// reason; each callback attempt lands in the latency histogram under its service and callback;
/// build info and broker state are exposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_extra_metrics_count_deliveries_drops_and_callbacks() {
    let env = TestEnv::start_with(with_metrics).await;
    let port = env.server.metrics_port().await.expect("metrics port");
    let text = metrics_text(port).await;
    for sample in [
        &format!(
            "socketshark_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ),
        "socketshark_broker_connected{broker=\"redis\"}",
    ] {
        assert_eq!(prom_value(&text, sample), Some(1.0), "{sample}:\n{text}");
    }
    assert_eq!(prom_value(&text, DELIVERED), Some(0.0), "{text}");

    let mut c = env.client().await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple.m", "extra": "a"}))
        .await;
    assert_eq!(r["status"], json!("ok"), "{r}");
    env.redis.wait_channels(&["simple.m"], LONG).await;
    let publish = |data: Value, more: Value| {
        let mut m = json!({"subscription": "simple.m", "data": data});
        for (k, v) in more.as_object().unwrap() {
            m[k] = v.clone();
        }
        m
    };
    for m in [
        publish(json!(1), json!({})),
        publish(json!("other extra"), json!({"extra": "b"})),
        publish(json!("o5"), json!({"options": {"order": 5}})),
        publish(json!("o3"), json!({"options": {"order": 3}})),
        publish(json!("t1"), json!({"options": {"throttle": 0.3}})),
        publish(json!("t2"), json!({"options": {"throttle": 0.3}})),
        publish(json!("t3"), json!({"options": {"throttle": 0.3}})),
    ] {
        env.redis.publish_json("simple.m", &m).await;
    }
    let got: Vec<Value> = c
        .recv_n(4)
        .await
        .into_iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(got, [json!(1), json!("o5"), json!("t1"), json!("t3")]);
    wait_sample(port, DELIVERED, |v| v == 4.0).await;
    wait_sample(port, &dropped("fields"), |v| v == 1.0).await;
    wait_sample(port, &dropped("order"), |v| v == 1.0).await;
    wait_sample(port, &dropped("throttle"), |v| v == 1.0).await;

    // Callback latency: ticket validation (service ""), the authorizer, before_subscribe.
    let mut a = env.auth_client().await;
    let r = a
        .request(&json!({"event": "subscribe", "subscription": "complex.x"}))
        .await;
    assert_eq!(r["status"], json!("ok"), "{r}");
    let text = metrics_text(port).await;
    for (service, callback) in [
        ("", "ticket"),
        ("complex", "authorizer"),
        ("complex", "before_subscribe"),
    ] {
        let sample = format!(
            "socketshark_callback_duration_seconds_count{{callback=\"{callback}\",service=\"{service}\"}}"
        );
        assert_eq!(prom_value(&text, &sample), Some(1.0), "{sample}:\n{text}");
        let inf = format!(
            "socketshark_callback_duration_seconds_bucket{{callback=\"{callback}\",le=\"+Inf\",service=\"{service}\"}}"
        );
        assert_eq!(prom_value(&text, &inf), Some(1.0), "{inf}:\n{text}");
    }
    env.server.stop(LONG).await;
}

/// Item 1 and R-PUB-10: messages routed to a session the server is closing are not sent; they
/// count as dropped with reason `closed`, never as delivered. (A shutdown closes the session
/// while its `message` command waits for a slow `on_message`, so the subscription stays active
/// until the command completes, R-ORD-6. The answer comes after 10 s, within an `http.timeout`
/// of 20 s: the base config's 5 s timeout would end the command first, which left too short a
/// window on a loaded machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_pushes_to_a_closing_session_count_as_dropped_closed() {
    let env = TestEnv::start_with(|c| {
        with_metrics(c);
        c.set_path(&["http", "timeout"], json!(20));
    })
    .await;
    let port = env.server.metrics_port().await.expect("metrics port");
    env.svc
        .set("/complex/on_message", Reply::ok().delay(secs(10.0)));
    let mut c = env.auth_client().await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "complex.t"}))
        .await;
    assert_eq!(r["status"], json!("ok"), "{r}");
    env.redis.wait_channels(&["complex.t"], LONG).await;
    c.send(&json!({"event": "message", "subscription": "complex.t", "data": 1}))
        .await;
    env.svc.wait_calls("/complex/on_message", 1, LONG).await;
    env.server.signal(libc::SIGTERM);
    // Logged once every session was told to close (`shutting down` comes before that: a
    // message published in between is still delivered).
    env.server
        .wait_event("waiting for sessions to close", LONG)
        .await;
    for i in 0..5 {
        env.redis
            .publish_json("complex.t", &service_message("complex.t", json!(i)))
            .await;
    }
    wait_sample(port, &dropped("closed"), |v| v == 5.0).await;
    assert_eq!(
        prom_value(&metrics_text(port).await, DELIVERED),
        Some(0.0),
        "nothing was written to the closing session"
    );
    assert!(env.server.wait_exit(secs(20.0)).await.success());
}

/// Items 1 and 4 (slow consumers): a client that stops reading is closed with 1008, and what is
/// routed to it afterwards counts as dropped with reason `slow_consumer`, never as delivered.
/// (Its `message` command waits for a slow `on_message`, so its subscription stays active after
/// the close until the command completes, R-ORD-6; the 10 s answer delay is a margin for a
/// loaded machine, the test takes about that long.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_pushes_to_a_slow_consumer_count_as_dropped_slow_consumer() {
    let env = TestEnv::start_with(|c| {
        with_metrics(c);
        c.set("limits", json!({"max_outbound_bytes": 65536}));
        c.set("log.level", "INFO");
    })
    .await;
    let port = env.server.metrics_port().await.expect("metrics port");
    env.svc
        .set("/complex/on_message", Reply::ok().delay(secs(10.0)));
    let mut c = env.auth_client().await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "complex.s"}))
        .await;
    assert_eq!(r["status"], json!("ok"), "{r}");
    env.redis.wait_channels(&["complex.s"], LONG).await;
    c.send(&json!({"event": "message", "subscription": "complex.s", "data": 1}))
        .await;
    env.svc.wait_calls("/complex/on_message", 1, LONG).await;
    c.pause_reading();
    let pad = "x".repeat(4096);
    let slow = "socketshark_slow_consumer_disconnects_total";
    let mut published = 0;
    while prom_value(&metrics_text(port).await, slow) != Some(1.0) {
        assert!(
            published < 20_000,
            "not closed after {published} messages of 4 KiB"
        );
        for _ in 0..50 {
            env.redis
                .publish_json("complex.s", &service_message("complex.s", json!(pad)))
                .await;
        }
        published += 50;
    }
    let before = prom_value(&metrics_text(port).await, &dropped("slow_consumer")).unwrap_or(0.0);
    for i in 0..5 {
        env.redis
            .publish_json("complex.s", &service_message("complex.s", json!(i)))
            .await;
    }
    wait_sample(port, &dropped("slow_consumer"), |v| v >= before + 5.0).await;
    c.resume_reading();
    let (code, _) = c.recv_close_skipping_data(LONG).await;
    assert_eq!(code, Some(1008));
    env.server.stop(secs(20.0)).await;
}

/// Item 2: `/healthz` answers 200 while the process is up; `/readyz` 200 once ready, 503 as
/// soon as a shutdown starts (while sessions are still closing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_readyz_503_while_shutting_down() {
    let env = TestEnv::start_with(with_metrics).await;
    let port = env.server.metrics_port().await.expect("metrics port");
    let deadline = tokio::time::Instant::now() + LONG;
    while status_of(port, "/readyz").await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        sleep_ms(20).await;
    }
    assert_eq!(http_get(port, "/healthz").await.body.trim(), "ok");
    env.svc
        .set("/ws_test/on_unsubscribe", Reply::ok().delay(secs(4.0)));
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.t").await;
    env.server.signal(libc::SIGTERM);
    env.server
        .wait_event("waiting for sessions to close", LONG)
        .await;
    assert!(env.server.is_running());
    assert_eq!(
        status_of(port, "/readyz").await,
        503,
        "readyz while draining"
    );
    assert_eq!(
        status_of(port, "/healthz").await,
        200,
        "healthz while draining"
    );
    let text = metrics_text(port).await;
    assert_eq!(
        prom_value(&text, "socketshark_service_state"),
        Some(1.0),
        "R-SHUT-4: the service state stays 1 during a signal shutdown"
    );
    assert!(env.server.wait_exit(LONG).await.success());
}

/// Item 2 with R-RED-5 and R-RED-4: after losing Redis, or after a Redis PING went unanswered,
/// `/readyz` answers 503 and `socketshark_broker_connected{broker="redis"}` is 0 while the
/// sessions close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_readyz_503_and_broker_down_after_redis_loss_or_ping_timeout() {
    for freeze in [false, true] {
        let env = TestEnv::start_with(|c| {
            with_metrics(c);
            c.set("redis.ping_interval", 0.2);
            c.set("redis.ping_timeout", 0.3);
        })
        .await;
        let port = env.server.metrics_port().await.expect("metrics port");
        wait_sample(
            port,
            "socketshark_broker_connected{broker=\"redis\"}",
            |v| v == 1.0,
        )
        .await;
        env.svc
            .set("/ws_test/on_unsubscribe", Reply::ok().delay(secs(4.0)));
        let mut c = env.client().await;
        subscribe_ok(&mut c, "ws_test.t").await;
        assert_eq!(status_of(port, "/readyz").await, 200);
        if freeze {
            env.redis.freeze();
            env.server.wait_event("redis ping timeout", LONG).await;
        } else {
            env.redis.stop();
            env.server
                .wait_event("redis unexpectedly closed", LONG)
                .await;
        }
        wait_sample(
            port,
            "socketshark_broker_connected{broker=\"redis\"}",
            |v| v == 0.0,
        )
        .await;
        assert!(env.server.is_running(), "still closing its sessions");
        assert_eq!(status_of(port, "/readyz").await, 503, "freeze={freeze}");
        assert_eq!(status_of(port, "/healthz").await, 200, "freeze={freeze}");
        assert!(env.server.wait_exit(LONG).await.success());
        if freeze {
            env.redis.unfreeze();
        }
    }
}

fn log_has(line: &Value, key: &str) -> bool {
    line.get(key).is_some_and(|v| !v.is_null())
}

/// Item 3: one info line when a session starts (`connection open`: session, remote) and one when
/// it ends (`connection closed`: session, remote, duration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_logs_session_start_and_end() {
    let env = TestEnv::start_with(|c| {
        c.set("log.level", "INFO");
    })
    .await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.log").await;
    sleep_ms(100).await;
    c.close().await;
    let closed = env.server.wait_event("connection closed", LONG).await;
    let open = env.server.find_logs("connection open");
    assert_eq!(open.len(), 1, "{open:?}");
    let open = &open[0];
    assert_eq!(open["level"], json!("info"), "{open}");
    assert_eq!(closed["level"], json!("info"), "{closed}");
    assert!(open["session"].is_u64(), "{open}");
    assert_eq!(open["session"], closed["session"]);
    assert!(
        open["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{open}"
    );
    assert_eq!(open["remote"], closed["remote"]);
    let d = closed["duration"].as_f64().expect("duration");
    assert!((0.1..10.0).contains(&d), "{closed}");
    assert!(
        env.server.find_logs("new session").is_empty(),
        "`new session` stays a debug line (R-LOG-3)"
    );
    env.server.stop(LONG).await;
}

/// Item 3: a failed callback logs every attempt (warning, with status and duration) and the final
/// failure (with the number of tries and the total duration), each with session, subscription,
/// service and callback; a 429 attempt says how long the next wait is; an unusable answer
/// (R-RESP-6) is logged with the same context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_logs_failed_callbacks_with_context_and_duration() {
    let env = TestEnv::start_with(|c| {
        c.set("log.level", "INFO");
        c.set("http.tries", 2);
        c.set("http.wait", 0.05);
    })
    .await;
    let mut c = env.auth_client().await;
    let path = "/authorizer/authorizer";
    env.svc.push(path, Reply::error().status(500));
    env.svc.push(
        path,
        Reply::error()
            .status(429)
            .header("X-Rate-Limit-Reset", "0.1"),
    );
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "authorizer.a"}))
        .await;
    assert_eq!(r["error"], json!("Service unavailable."), "{r}");
    // The lines precede the reply, but the log is read from the server's stderr separately.
    env.server
        .wait_event("callback failed: service unavailable", LONG)
        .await;
    let attempts = env.server.find_logs("callback attempt failed");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let finals = env.server.find_logs("callback failed: service unavailable");
    assert_eq!(finals.len(), 1, "{finals:?}");
    for line in attempts.iter().chain(&finals) {
        assert_eq!(line["level"], json!("warning"), "{line}");
        assert_eq!(line["service"], json!("authorizer"), "{line}");
        assert_eq!(line["callback"], json!("authorizer"), "{line}");
        assert_eq!(line["subscription"], json!("authorizer.a"), "{line}");
        assert!(line["session"].is_u64(), "{line}");
        assert!(line["duration"].as_f64().is_some(), "{line}");
        assert!(log_has(line, "url"), "{line}");
    }
    assert_eq!(attempts[0]["status"], json!(500));
    assert_eq!(attempts[1]["status"], json!(429));
    assert_eq!(attempts[1]["wait"], json!(0.1));
    assert_eq!(finals[0]["tries"], json!(2));
    assert!(
        finals[0]["duration"].as_f64().unwrap() >= 0.05,
        "{}",
        finals[0]
    );

    env.svc
        .set(path, Reply::raw("application/json", "not json"));
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "authorizer.b"}))
        .await;
    assert_eq!(r["error"], json!("Unhandled exception."), "{r}");
    let unusable = env
        .server
        .wait_event("unusable callback answer", LONG)
        .await;
    assert_eq!(unusable["level"], json!("error"), "{unusable}");
    assert_eq!(unusable["service"], json!("authorizer"), "{unusable}");
    assert_eq!(
        unusable["subscription"],
        json!("authorizer.b"),
        "{unusable}"
    );
    assert_eq!(unusable["status"], json!(200), "{unusable}");
    assert!(unusable["duration"].as_f64().is_some(), "{unusable}");
    env.server.stop(LONG).await;
}

/// Item 3: the ticket is a credential: it appears in no log line at any level, whatever the
/// command carrying it (auth, an unknown event, an invalid command) and whatever the validation
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_ticket_never_logged() {
    const SECRET: &str = "tkt-5ecret-0f-the-user";
    let env = TestEnv::start_with(|c| {
        c.set("log.level", "TRACE");
    })
    .await;
    let mut c = env.client().await;
    for cmd in [
        json!({"event": "auth", "ticket": SECRET}),
        json!({"event": "Auth", "ticket": SECRET}),
        json!({"event": 7, "ticket": SECRET}),
        json!({"event": "auth", "method": "x", "ticket": SECRET}),
        json!({"event": "ping", "data": "x", "ticket": SECRET}),
    ] {
        c.request(&cmd).await;
    }
    env.svc.set("/auth", Reply::error_text("bad ticket"));
    let r = c.request(&json!({"event": "auth", "ticket": SECRET})).await;
    assert_eq!(r["error"], json!("bad ticket"));
    env.svc.set("/auth", Reply::error().status(500));
    let r = c.request(&json!({"event": "auth", "ticket": SECRET})).await;
    assert_eq!(r["error"], json!("Service unavailable."));
    env.server.stop(LONG).await;
    let all = env.server.stderr_text();
    assert!(
        all.contains("client event") && all.contains("http request"),
        "the debug lines that could carry it were logged"
    );
    assert!(!all.contains(SECRET), "the ticket is in the log:\n{all}");
}
