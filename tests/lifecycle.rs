//! Integration tests for the time-driven and fault behaviour of socketshark, over real sockets:
//! out-of-order filtering (R-OOO, R-PUB-6), throttling (R-THR), periodic reauthorization
//! (R-REAUTH, R-DEF-2, R-DEF-6), heartbeats (R-HB), server pings (R-WS-7), shutdown (R-SHUT) and
//! frames arriving while a session closes (R-WS-12), Redis connections, pings and faults (R-RED,
//! R-DEF-5) and TLS (R-WS-9).
//!
//! Timing assertions use short periods (0.1–0.5 s) with tolerant windows: lower bounds are taken
//! from causal facts (a timer cannot fire before it was armed), upper bounds are generous.

mod common;
use common::*;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;

// ------------------------------------------------------------------------------------------
// Local helpers
// ------------------------------------------------------------------------------------------

/// The URL of callback `cb` of service `service` on the mock.
fn cb(svc: &MockService, service: &str, cb: &str) -> String {
    svc.url(&format!("/{service}/{cb}"))
}

/// A publisher message with options.
fn opt_msg(sub: &str, data: Value, options: Value) -> Value {
    json!({"subscription": sub, "data": data, "options": options})
}

/// Publishes on the channel named after the subscription.
async fn publish(env: &TestEnv, sub: &str, msg: Value) {
    env.redis.publish_json(sub, &msg).await;
}

const MARKER: &str = "__end_marker__";

/// Publishes an unordered, unthrottled marker message and returns every message received before
/// it (the marker itself is consumed). Works as a barrier: Redis delivers in order (R-ORD-5).
async fn drain_until_marker(env: &TestEnv, c: &mut Client, sub: &str) -> Vec<Value> {
    publish(env, sub, json!({"subscription": sub, "data": MARKER})).await;
    let mut out = Vec::new();
    loop {
        let m = c.recv().await;
        if m["data"] == json!(MARKER) {
            return out;
        }
        out.push(m);
    }
}

fn datas(msgs: &[Value]) -> Vec<Value> {
    msgs.iter().map(|m| m["data"].clone()).collect()
}

/// A live delivery carries `received_at` and `queue_size` (R-PUB-9).
fn assert_live(m: &Value) {
    assert_eq!(m["event"], "message", "not a message: {m}");
    assert_iso_utc_value(&m["received_at"]);
    assert!(
        m["queue_size"].as_u64().is_some(),
        "live delivery without queue_size: {m}"
    );
    assert_iso_utc_value(&m["sent_at"]);
}

/// A buffered (R-SUB-10) or trailing throttled (R-THR-4) delivery has `sent_at` but neither
/// `received_at` nor `queue_size` (R-PUB-9).
fn assert_not_live(m: &Value) {
    assert_eq!(m["event"], "message", "not a message: {m}");
    assert!(
        m.get("received_at").is_none() && m.get("queue_size").is_none(),
        "expected no received_at/queue_size: {m}"
    );
    assert_iso_utc_value(&m["sent_at"]);
}

fn subscribe_cmd(name: &str) -> Value {
    json!({"event": "subscribe", "subscription": name})
}

fn unsubscribe_cmd(name: &str) -> Value {
    json!({"event": "unsubscribe", "subscription": name})
}

fn elapsed_s(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

fn gap_s(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64()
}

/// Index of the first log line with this event.
fn log_index(server: &Server, event: &str) -> Option<usize> {
    server.logs().iter().position(|l| is_event(l, event))
}

/// A service with periodic reauthorization and both unsubscribe callbacks (R-DEF-2).
fn reauth_cb_service(svc: &MockService) -> Value {
    json!({
        "require_authentication": true,
        "authorizer": cb(svc, "reauth_cb", "authorizer"),
        "authorizer_fields": ["capabilities"],
        "extra_fields": ["extra"],
        "authorization_renewal_period": 0.2,
        "before_unsubscribe": cb(svc, "reauth_cb", "before_unsubscribe"),
        "on_unsubscribe": cb(svc, "reauth_cb", "on_unsubscribe"),
    })
}

async fn start_with_reauth_cb() -> TestEnv {
    TestEnv::start_with_env(|cfg, _, svc| {
        cfg.set_path(&["services", "reauth_cb"], reauth_cb_service(svc));
    })
    .await
}

// ------------------------------------------------------------------------------------------
// 1. Out-of-order filtering (R-OOO)
// ------------------------------------------------------------------------------------------

/// T-42: before_subscribe seeds the default order key with 2 (R-OOO-6); orders 1, 2 dropped,
/// 3 and 5 delivered, 4 and 5 dropped, 6 delivered; key `other` is independent: 1.1, 1.3
/// delivered, 1.2 dropped (R-OOO-4, R-OOO-5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t42_order_seeded_by_before_subscribe() {
    let env = TestEnv::start().await;
    let sub = "simple_before_subscribe.topic";
    env.svc.set(
        "/simple_before_subscribe/before_subscribe",
        Reply::json(json!({"status": "ok", "options": {"order": 2}, "data": {"msg": 1}})),
    );
    let mut c = env.client().await;
    let r = c.request(&subscribe_cmd(sub)).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "data": {"msg": 1}, "subscription": sub})
    );
    for (label, order) in [
        ("o1", json!(1)),
        ("o2", json!(2)),
        ("o3", json!(3)),
        ("o5", json!(5)),
        ("o4", json!(4)),
        ("o5b", json!(5)),
        ("o6", json!(6)),
    ] {
        publish(
            &env,
            sub,
            opt_msg(sub, json!(label), json!({"order": order})),
        )
        .await;
    }
    for (label, order) in [("k1.1", 1.1), ("k1.3", 1.3), ("k1.2", 1.2)] {
        publish(
            &env,
            sub,
            opt_msg(
                sub,
                json!(label),
                json!({"order": order, "order_key": "other"}),
            ),
        )
        .await;
    }
    let got = drain_until_marker(&env, &mut c, sub).await;
    assert_eq!(
        datas(&got),
        vec![
            json!("o3"),
            json!("o5"),
            json!("o6"),
            json!("k1.1"),
            json!("k1.3")
        ]
    );
    for m in &got {
        assert_live(m);
    }
}

/// T-43: an invalid order makes the message unordered (delivered, state untouched) (R-OOO-1,
/// R-OOO-5); `null`, arrays and objects as order too; an unhashable order_key is ignored when
/// the order is invalid, but drops the message when the order is valid (R-PUB-5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t43_invalid_order_is_unordered() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    let msgs = [
        ("a", json!({"order": 5})),
        ("b", json!({"order": "invalid"})),
        ("c", json!({})),
        ("d", json!({"order": 4})),
        ("e", json!({"order": null})),
        ("f", json!({"order": [1]})),
        ("g", json!({"order": {"x": 1}})),
        ("h", json!({"order": "invalid", "order_key": [1]})),
        ("i", json!({"order": 7, "order_key": [1]})),
        ("j", json!({"order": 5})),
        ("k", json!({"order": 6})),
    ];
    for (label, options) in msgs {
        publish(&env, sub, opt_msg(sub, json!(label), options)).await;
    }
    // A plain message without any options after an invalid-order one.
    publish(&env, sub, json!({"subscription": sub, "data": "l"})).await;
    let got = drain_until_marker(&env, &mut c, sub).await;
    assert_eq!(
        datas(&got),
        ["a", "b", "c", "e", "f", "g", "h", "k", "l"]
            .iter()
            .map(|s| json!(s))
            .collect::<Vec<_>>()
    );
}

/// R-OOO-2: order keys follow Python dict semantics: `1`, `1.0` and `true` are one key, `"1"`
/// another; absent and `null` are the same default key. Equal orders are dropped (R-OOO-4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ooo2_numeric_and_boolean_order_keys_are_one_key() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    let msgs = [
        ("k1", json!({"order": 5, "order_key": 1})),
        ("k1.0", json!({"order": 5, "order_key": 1.0})),
        ("ktrue", json!({"order": 4, "order_key": true})),
        ("ktrue6", json!({"order": 6, "order_key": true})),
        ("k1-6", json!({"order": 6, "order_key": 1})),
        ("kstr", json!({"order": 1, "order_key": "1"})),
        ("def1", json!({"order": 1})),
        ("null1", json!({"order": 1, "order_key": null})),
        ("null1.5", json!({"order": 1.5, "order_key": null})),
        ("def1.5", json!({"order": 1.5})),
    ];
    for (label, options) in msgs {
        publish(&env, sub, opt_msg(sub, json!(label), options)).await;
    }
    let got = drain_until_marker(&env, &mut c, sub).await;
    assert_eq!(
        datas(&got),
        ["k1", "ktrue6", "kstr", "def1", "null1.5"]
            .iter()
            .map(|s| json!(s))
            .collect::<Vec<_>>()
    );
}

/// R-OOO-1: string orders accepted by Python `float()` (`"2"`, `" 2.5 "`, `"1e3"`, `"1_000"`,
/// `"inf"`, `"nan"`) and boolean orders (`true` = 1, `false` = 0); equal orders dropped
/// (R-OOO-4); a NaN order passes and the next order passes too (R-OOO-4 quirk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ooo1_string_and_boolean_orders() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    let s = |order: Value| json!({"order": order, "order_key": "s"});
    let b = |order: Value| json!({"order": order, "order_key": "b"});
    let n = |order: Value| json!({"order": order, "order_key": "n"});
    let msgs = [
        ("s2", s(json!("2"))),
        ("s2.5", s(json!(" 2.5 "))),
        ("s2.5dup", s(json!("2.5"))),
        ("s1e3", s(json!("1e3"))),
        ("s999", s(json!(999))),
        ("s1_000", s(json!("1_000"))),
        ("s1000.5", s(json!(1000.5))),
        ("sinf", s(json!("inf"))),
        ("s1e308", s(json!(1e308))),
        ("btrue", b(json!(true))),
        ("bfalse", b(json!(false))),
        ("b1", b(json!(1))),
        ("b1.5", b(json!(1.5))),
        ("bfalse2", b(json!(false))),
        ("n5", n(json!(5))),
        ("nnan", n(json!("nan"))),
        ("n1", n(json!(1))),
    ];
    for (label, options) in msgs {
        publish(&env, sub, opt_msg(sub, json!(label), options)).await;
    }
    let got = drain_until_marker(&env, &mut c, sub).await;
    assert_eq!(
        datas(&got),
        [
            "s2", "s2.5", "s1e3", "s1000.5", "sinf", "btrue", "b1.5", "n5", "nnan", "n1"
        ]
        .iter()
        .map(|s| json!(s))
        .collect::<Vec<_>>()
    );
}

/// R-OOO-3: the order state belongs to the subscription instance; a new subscribe after an
/// unsubscribe starts with an empty state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ooo3_resubscribe_starts_with_empty_order_state() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("first5"), json!({"order": 5})),
    )
    .await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("first3"), json!({"order": 3})),
    )
    .await;
    let got = drain_until_marker(&env, &mut c, sub).await;
    assert_eq!(datas(&got), vec![json!("first5")]);
    let r = c.request(&unsubscribe_cmd(sub)).await;
    assert_eq!(
        r,
        json!({"event": "unsubscribe", "status": "ok", "subscription": sub})
    );
    subscribe_ok(&mut c, sub).await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("second1"), json!({"order": 1})),
    )
    .await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("second1dup"), json!({"order": 1})),
    )
    .await;
    let got = drain_until_marker(&env, &mut c, sub).await;
    assert_eq!(datas(&got), vec![json!("second1")]);
}

/// R-OOO-6 + R-SUB-10: messages published while a delayed before_subscribe is in progress are
/// buffered, then filtered against the seeded order state; the survivors follow the ok reply,
/// in order, without received_at/queue_size (R-PUB-9). Later live messages are filtered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ooo6_before_subscribe_seed_filters_buffered_messages() {
    let env = TestEnv::start().await;
    let sub = "simple_before_subscribe.topic";
    env.svc.set(
        "/simple_before_subscribe/before_subscribe",
        Reply::json(json!({"status": "ok", "options": {"order": 2}, "data": "seeded"}))
            .delay(secs(1.0)),
    );
    let mut c = env.client().await;
    c.send(&subscribe_cmd(sub)).await;
    // The channel is subscribed before before_subscribe is called (R-SUB-6).
    env.svc
        .wait_calls("/simple_before_subscribe/before_subscribe", 1, secs(5.0))
        .await;
    env.redis.wait_channels(&[sub], secs(5.0)).await;
    for (label, order) in [("b1", 1), ("b2", 2), ("b3", 3), ("b2.again", 2)] {
        publish(
            &env,
            sub,
            opt_msg(sub, json!(label), json!({"order": order})),
        )
        .await;
    }
    publish(&env, sub, json!({"subscription": sub, "data": "bu"})).await;
    let r = c.recv().await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "data": "seeded", "subscription": sub}),
        "the ok reply must precede the buffered messages"
    );
    let buffered = c.recv_n(2).await;
    assert_eq!(datas(&buffered), vec![json!("b3"), json!("bu")]);
    for m in &buffered {
        assert_not_live(m);
    }
    publish(&env, sub, opt_msg(sub, json!("l3"), json!({"order": 3}))).await;
    publish(&env, sub, opt_msg(sub, json!("l4"), json!({"order": 4}))).await;
    let got = drain_until_marker(&env, &mut c, sub).await;
    assert_eq!(datas(&got), vec![json!("l4")]);
    assert_live(&got[0]);
}

/// R-PUB-6: the filter-fields step runs before the order and throttle steps, and a message it
/// drops is not seen by them. On `simple` (filter fields `session_id` and `extra`, anonymous
/// subscriber without `extra`): order 5 with a non-matching `extra` and order 6 with a
/// non-matching `session_id` are dropped, so order 3 (matching) is still delivered; the order
/// state did move to 3 (a second 3 is dropped, 4 is delivered). A filtered message with
/// `throttle` starts no throttle window: the next matching throttled message goes out at once
/// (live) and nothing trails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_pub_6_filtered_message_does_not_advance_order_or_throttle() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    let msgs = [
        json!({"subscription": sub, "data": "f5", "extra": "other",
               "options": {"order": 5}}),
        json!({"subscription": sub, "data": "f6", "session_id": SESSION_ID,
               "options": {"order": 6}}),
        opt_msg(sub, json!("o3"), json!({"order": 3})),
        opt_msg(sub, json!("o3b"), json!({"order": 3})),
        opt_msg(sub, json!("o4"), json!({"order": 4})),
        json!({"subscription": sub, "data": "tf", "extra": "other",
               "options": {"throttle": 0.5, "throttle_key": "t"}}),
        opt_msg(
            sub,
            json!("t1"),
            json!({"throttle": 0.5, "throttle_key": "t"}),
        ),
    ];
    for m in msgs {
        publish(&env, sub, m).await;
    }
    let got = drain_until_marker(&env, &mut c, sub).await;
    assert_eq!(datas(&got), vec![json!("o3"), json!("o4"), json!("t1")]);
    for m in &got {
        assert_live(m);
    }
    // Had the filtered `tf` opened the window, `t1` would have been held and sent trailing.
    c.expect_silence(ms(800)).await;
}

// ------------------------------------------------------------------------------------------
// 2. Throttling (R-THR)
// ------------------------------------------------------------------------------------------

/// T-44, T-45, T-46: throttle 0.2: first message immediate; throttle 1 on key `other` also
/// immediate; `throttle: "invalid"` and unthrottled messages immediate; 2nd and 3rd
/// 0.2-throttled messages withheld; ~0.2 s later only the third arrives, with `sent_at` but no
/// `received_at`/`queue_size` (R-THR-1..4, R-PUB-9). After a quiet period >= T the next
/// throttled message goes out at once (R-THR-3/6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t44_t45_t46_throttle_basics() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    let t0 = Instant::now();
    let msgs = [
        ("m1", json!({"throttle": 0.2})),
        ("m2", json!({"throttle": 1, "throttle_key": "other"})),
        ("m3", json!({"throttle": "invalid"})),
        ("m4", json!({})),
        ("m5", json!({"throttle": 0.2})),
        ("m6", json!({"throttle": 0.2})),
    ];
    for (label, options) in msgs {
        publish(&env, sub, opt_msg(sub, json!(label), options)).await;
    }
    // T-44: the first four arrive at once, as live deliveries.
    let first = c.recv_n(4).await;
    assert_eq!(
        datas(&first),
        vec![json!("m1"), json!("m2"), json!("m3"), json!("m4")]
    );
    for m in &first {
        assert_live(m);
    }
    // T-45: only the newest pending message, ~0.2 s after the first send.
    let trailing = c.recv().await;
    let at = elapsed_s(t0);
    assert_eq!(trailing["data"], "m6", "trailing send: {trailing}");
    assert_not_live(&trailing);
    assert!(
        (0.18..1.5).contains(&at),
        "trailing send arrived {at:.3} s after the first publish (expected ~0.2 s)"
    );
    c.expect_silence(ms(500)).await; // m5 never arrives

    // T-46: quiet for >= T, the next throttled message is sent immediately (a live frame), and
    // the window restarts from that send.
    let t1 = Instant::now();
    publish(
        &env,
        sub,
        opt_msg(sub, json!("m7"), json!({"throttle": 0.2})),
    )
    .await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("m8"), json!({"throttle": 0.2})),
    )
    .await;
    let m7 = c.recv().await;
    assert_eq!(m7["data"], "m7");
    assert_live(&m7);
    let m8 = c.recv().await;
    let at = elapsed_s(t1);
    assert_eq!(m8["data"], "m8");
    assert_not_live(&m8);
    assert!(
        (0.18..1.5).contains(&at),
        "m8 arrived {at:.3} s after m7 was published (expected ~0.2 s)"
    );
}

/// R-PUB-9 / R-THR-4: the trailing frame carries the subscription's extra fields and `sent_at`
/// only: no `received_at`, `queue_size` (nor `published_at`: "sent_at only").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thr4_trailing_frame_shape() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": sub, "extra": "bar"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "extra": "bar", "subscription": sub})
    );
    let published_at = "2024-01-01T00:00:00Z";
    for label in ["a", "b"] {
        publish(
            &env,
            sub,
            json!({"subscription": sub, "data": {"n": label}, "options": {"throttle": 0.2},
                   "published_at": published_at}),
        )
        .await;
    }
    let a = c.recv().await;
    assert_live(&a);
    assert_eq!(a["published_at"], "2024-01-01T00:00:00+00:00");
    assert_eq!(a["extra"], "bar");
    let b = c.recv().await;
    let sent_at = b["sent_at"].clone();
    assert_iso_utc_value(&sent_at);
    assert_eq!(
        b,
        json!({"event": "message", "subscription": sub, "data": {"n": "b"}, "extra": "bar",
               "sent_at": sent_at}),
        "trailing frame must carry extra fields and sent_at only"
    );
}

/// R-THR-5: the due time is fixed when the trailing send is scheduled: T=0.2 sent at 0,
/// T=1.0 at 0.05 (scheduled for 1.0), T=0.01 at 0.1 (replaces the pending one) → the third
/// message arrives at ≈1.0 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thr5_due_time_fixed_when_scheduled() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("t0.2"), json!({"throttle": 0.2})),
    )
    .await;
    let first = c.recv().await;
    let t_first = Instant::now();
    assert_eq!(first["data"], "t0.2");
    assert_live(&first);
    sleep_ms(50).await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("t1.0"), json!({"throttle": 1.0})),
    )
    .await;
    sleep_ms(50).await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("t0.01"), json!({"throttle": 0.01})),
    )
    .await;
    let third = c.recv_timeout(secs(4.0)).await.expect("no trailing send");
    let at = elapsed_s(t_first);
    assert_eq!(third["data"], "t0.01");
    assert_not_live(&third);
    assert!(
        (0.85..2.5).contains(&at),
        "the trailing send came {at:.3} s after the first message (expected ≈1.0 s)"
    );
    c.expect_silence(ms(300)).await;
}

/// R-THR-4 (the observable part of T-48): the trailing send sets `last := now`, so a message
/// arriving shortly after it is scheduled at (trailing send) + T, not sent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thr4_window_restarts_at_trailing_send() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("a"), json!({"throttle": 0.3})),
    )
    .await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("b"), json!({"throttle": 0.3})),
    )
    .await;
    let a = c.recv().await;
    assert_eq!(a["data"], "a");
    let b = c.recv().await;
    let t_b = Instant::now();
    assert_eq!(b["data"], "b");
    assert_not_live(&b);
    // Within T of the trailing send: delayed to (trailing send) + T.
    publish(
        &env,
        sub,
        opt_msg(sub, json!("c"), json!({"throttle": 0.3})),
    )
    .await;
    let c3 = c.recv().await;
    let at = elapsed_s(t_b);
    assert_eq!(c3["data"], "c");
    assert_not_live(&c3);
    assert!(
        (0.2..1.5).contains(&at),
        "c arrived {at:.3} s after the trailing send (expected ≈0.3 s)"
    );
}

/// R-THR-2: throttle keys follow R-OOO-2 (`1`, `1.0`, `true` are one key) and different keys are
/// independent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thr2_throttle_keys_independent_and_python_semantics() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    let msgs = [
        ("k1", json!({"throttle": 0.3, "throttle_key": 1})),
        ("k1.0", json!({"throttle": 0.3, "throttle_key": 1.0})),
        ("ktrue", json!({"throttle": 0.3, "throttle_key": true})),
        ("kx", json!({"throttle": 0.3, "throttle_key": "x"})),
        ("kstr1", json!({"throttle": 0.3, "throttle_key": "1"})),
        ("kdefault", json!({"throttle": 0.3})),
    ];
    for (label, options) in msgs {
        publish(&env, sub, opt_msg(sub, json!(label), options)).await;
    }
    let immediate = c.recv_n(4).await;
    assert_eq!(
        datas(&immediate),
        vec![json!("k1"), json!("kx"), json!("kstr1"), json!("kdefault")]
    );
    for m in &immediate {
        assert_live(m);
    }
    let trailing = c.recv().await;
    assert_eq!(trailing["data"], "ktrue");
    assert_not_live(&trailing);
    c.expect_silence(ms(500)).await;
}

/// R-OOO-7: the order step runs before the throttle step: a message that becomes pending and is
/// then replaced by a newer pending message still advanced the last order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ooo7_order_runs_before_throttle() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    let msgs = [
        ("m1", json!({"order": 1, "throttle": 0.3})), // sent, last order 1
        ("m2", json!({"order": 5, "throttle": 0.3})), // pending, last order 5
        ("m3", json!({"throttle": 0.3})),             // replaces m2 (unordered)
        ("m4", json!({"order": 4})),                  // dropped: 4 <= 5
        ("m5", json!({"order": 6})),                  // delivered at once
        ("m6", json!({"order": 2, "throttle": 0.3})), // dropped by order, never pending
    ];
    for (label, options) in msgs {
        publish(&env, sub, opt_msg(sub, json!(label), options)).await;
    }
    let got = c.recv_n(3).await;
    assert_eq!(datas(&got), vec![json!("m1"), json!("m5"), json!("m3")]);
    assert_live(&got[0]);
    assert_live(&got[1]);
    assert_not_live(&got[2]);
    c.expect_silence(ms(500)).await;
}

/// R-THR-8: `options.throttle` in the before_subscribe response starts the throttle window of
/// that key at subscribe time; other keys are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thr8_before_subscribe_throttle_starts_window() {
    let env = TestEnv::start().await;
    let sub = "simple_before_subscribe.topic";
    env.svc.set(
        "/simple_before_subscribe/before_subscribe",
        Reply::json(json!({"status": "ok", "options": {"throttle": 0.5, "throttle_key": "k"}})),
    );
    let mut c = env.client().await;
    let t_send = Instant::now();
    subscribe_ok(&mut c, sub).await;
    publish(
        &env,
        sub,
        opt_msg(
            sub,
            json!("k"),
            json!({"throttle": 0.5, "throttle_key": "k"}),
        ),
    )
    .await;
    publish(
        &env,
        sub,
        opt_msg(
            sub,
            json!("j"),
            json!({"throttle": 0.5, "throttle_key": "j"}),
        ),
    )
    .await;
    let j = c.recv().await;
    assert_eq!(j["data"], "j", "key j must not be delayed");
    assert_live(&j);
    let k = c.recv().await;
    let at = elapsed_s(t_send);
    assert_eq!(k["data"], "k");
    assert_not_live(&k);
    assert!(
        (0.48..2.5).contains(&at),
        "key k arrived {at:.3} s after the subscribe was sent (expected subscribe + 0.5 s)"
    );
}

/// T-47 / R-THR-7: unsubscribing while a throttled message is pending discards it; nothing
/// arrives after the unsubscribe reply, and a new subscription starts with an empty throttle
/// state (its first throttled message is live) and never sees the old pending message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t47_unsubscribe_discards_pending_throttled() {
    let env = TestEnv::start().await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("p1"), json!({"throttle": 1.0})),
    )
    .await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("p2"), json!({"throttle": 1.0})),
    )
    .await;
    let p1 = c.recv().await;
    assert_eq!(p1["data"], "p1");
    let r = c.request(&unsubscribe_cmd(sub)).await;
    assert_eq!(
        r,
        json!({"event": "unsubscribe", "status": "ok", "subscription": sub})
    );
    // Re-subscribe at once: the old timer (due ~1 s after p1) must not deliver into it.
    subscribe_ok(&mut c, sub).await;
    c.expect_silence(ms(1400)).await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("p3"), json!({"throttle": 1.0})),
    )
    .await;
    let p3 = c.recv().await;
    assert_eq!(p3["data"], "p3");
    assert_live(&p3);
    let r = c.request(&unsubscribe_cmd(sub)).await;
    assert_eq!(r["status"], "ok");
    publish(
        &env,
        sub,
        opt_msg(sub, json!("p4"), json!({"throttle": 1.0})),
    )
    .await;
    c.expect_silence(ms(500)).await;
}

/// R-THR-7: a disconnect discards pending trailing sends (no send attempt on the closed socket,
/// no error), and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thr7_disconnect_discards_pending_throttled() {
    let env = TestEnv::start().await;
    let sub = "ws_test.throttle";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("q1"), json!({"throttle": 0.4})),
    )
    .await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("q2"), json!({"throttle": 0.4})),
    )
    .await;
    let q1 = c.recv().await;
    assert_eq!(q1["data"], "q1");
    c.abort().await;
    env.svc
        .wait_calls("/ws_test/on_unsubscribe", 1, secs(5.0))
        .await;
    sleep_ms(800).await; // past the due time of q2
    for bad in [
        "attempted to send to closed socket",
        "unhandled exception when sending throttled message",
    ] {
        assert!(
            !env.server.has_log(bad),
            "unexpected `{bad}` log:\n{}",
            env.server.log_dump()
        );
    }
    let mut c2 = env.client().await;
    let r = c2.request(&json!({"event": "ping", "data": "x"})).await;
    assert_eq!(r, json!({"event": "pong", "data": "x"}));
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), 1);
}

// ------------------------------------------------------------------------------------------
// 3. Periodic reauthorization (R-REAUTH)
// ------------------------------------------------------------------------------------------

/// T-31: two subscriptions (period 0.2); the renewals fail with `{"status": "error"}` →
/// `Unauthorized.` and with `error: "no longer authorized"`; each gets the push
/// `{"event": "unsubscribe", "subscription", "error"}` (no `status`) one period after its
/// subscribe (R-REAUTH-2, R-REAUTH-4); the renewals stop afterwards (R-HB-4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t31_renewal_failure_unsubscribes() {
    let env = TestEnv::start().await;
    let path = "/periodic_authorizer/authorizer";
    env.svc.push(path, Reply::ok());
    env.svc.push(path, Reply::ok());
    env.svc.push(path, Reply::error());
    env.svc
        .push(path, Reply::error_text("no longer authorized"));
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, "periodic_authorizer.topic").await;
    subscribe_ok(&mut c, "periodic_authorizer.topic2").await;
    let pushes = c.recv_n(2).await;
    let reqs = env.svc.requests(path);
    assert_eq!(reqs.len(), 4, "authorizer calls:\n{}", env.svc.dump());
    // Which renewal got which answer is decided by arrival order at the mock.
    let mut expected = vec![
        json!({"event": "unsubscribe", "subscription": reqs[2].body["subscription"],
               "error": "Unauthorized."}),
        json!({"event": "unsubscribe", "subscription": reqs[3].body["subscription"],
               "error": "no longer authorized"}),
    ];
    let mut got = pushes;
    let key = |v: &Value| v["subscription"].as_str().unwrap_or("").to_owned();
    expected.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, expected);
    // Bodies: subscription + auth fields (R-BODY-1); both names renewed once.
    let mut renewed: Vec<Value> = reqs[2..].iter().map(|r| r.body.clone()).collect();
    renewed.sort_by_key(key);
    assert_eq!(
        renewed,
        vec![
            json!({"subscription": "periodic_authorizer.topic", "session_id": SESSION_ID}),
            json!({"subscription": "periodic_authorizer.topic2", "session_id": SESSION_ID}),
        ]
    );
    // Nothing before one period: each renewal is >= 0.2 s after that subscription's initial
    // authorization.
    for renewal in &reqs[2..] {
        let initial = reqs[..2]
            .iter()
            .find(|r| r.body["subscription"] == renewal.body["subscription"])
            .expect("initial authorization");
        let gap = gap_s(initial.at, renewal.at);
        assert!(
            (0.19..1.5).contains(&gap),
            "renewal {} s after the initial authorization (period 0.2)",
            gap
        );
    }
    env.svc.expect_no_more_calls(path, 4, ms(700)).await;
    c.expect_silence(ms(100)).await;
    for name in ["periodic_authorizer.topic", "periodic_authorizer.topic2"] {
        let r = c
            .request(&json!({"event": "message", "subscription": name}))
            .await;
        assert_eq!(
            r,
            json!({"event": "message", "status": "error", "error": "Subscription does not exist.",
                   "subscription": name})
        );
    }
}

/// T-32: authorizer fields change `foo` → `bar` at renewal → `on_authorization_change` called
/// once with `capabilities: "bar"`; `on_subscribe` had `foo`; renewals carry the previous fields
/// (R-BODY-3); unchanged fields later → no further call (R-REAUTH-5); nothing is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t32_authorizer_fields_change() {
    let env = TestEnv::start().await;
    let svc_name = "periodic_authorizer_with_fields";
    let sub = "periodic_authorizer_with_fields.topic";
    let authz = format!("/{svc_name}/authorizer");
    env.svc.push(
        &authz,
        Reply::json(json!({"status": "ok", "capabilities": "foo"})),
    );
    env.svc.set(
        &authz,
        Reply::json(json!({"status": "ok", "capabilities": "bar", "other": 1})),
    );
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, sub).await;
    env.svc.wait_calls(&authz, 4, secs(5.0)).await;
    c.expect_silence(ms(200)).await;
    let change = env
        .svc
        .bodies(&format!("/{svc_name}/on_authorization_change"));
    assert_eq!(
        change,
        vec![json!({"subscription": sub, "capabilities": "bar", "session_id": SESSION_ID})]
    );
    assert_eq!(
        env.svc.bodies(&format!("/{svc_name}/on_subscribe")),
        vec![json!({"subscription": sub, "capabilities": "foo", "session_id": SESSION_ID})]
    );
    let bodies = env.svc.bodies(&authz);
    assert_eq!(
        bodies[0],
        json!({"subscription": sub, "session_id": SESSION_ID})
    );
    assert_eq!(
        bodies[1],
        json!({"subscription": sub, "capabilities": "foo", "session_id": SESSION_ID})
    );
    for b in &bodies[2..] {
        assert_eq!(
            *b,
            json!({"subscription": sub, "capabilities": "bar", "session_id": SESSION_ID})
        );
    }
    // Still subscribed.
    publish(&env, sub, json!({"subscription": sub, "data": 1})).await;
    let m = c.recv().await;
    assert_eq!(m["data"], 1);
}

/// R-DEF-2 / R-REAUTH-4: a service with a renewal period AND before_unsubscribe/on_unsubscribe.
/// On renewal failure: removal (channel released), before_unsubscribe then on_unsubscribe (once
/// each), then the push with `error`, `data` from before_unsubscribe, the extra fields, no
/// `status`. Afterwards `message`/`unsubscribe` get `Subscription does not exist.`, renewals
/// stop, and the client can subscribe again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn def2_renewal_failure_runs_unsubscribe_callbacks() {
    let env = start_with_reauth_cb().await;
    let sub = "reauth_cb.topic";
    let authz = "/reauth_cb/authorizer";
    env.svc.push(
        authz,
        Reply::json(json!({"status": "ok", "capabilities": "c1"})),
    );
    env.svc.set(
        authz,
        Reply::json(json!({"status": "error", "error": "revoked", "data": {"ignored": 1}})),
    );
    env.svc.set(
        "/reauth_cb/before_unsubscribe",
        Reply::ok_data(json!({"bye": 1})),
    );
    let mut c = env.auth_client().await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": sub, "extra": "e"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "extra": "e", "subscription": sub})
    );
    let push = c.recv().await;
    // The push is sent after both callbacks (R-REAUTH-4 step order).
    let paths = env.svc.paths();
    assert_eq!(
        paths,
        vec![
            "/auth",
            authz,
            authz,
            "/reauth_cb/before_unsubscribe",
            "/reauth_cb/on_unsubscribe"
        ],
        "callback sequence"
    );
    assert_eq!(
        push,
        json!({"event": "unsubscribe", "subscription": sub, "data": {"bye": 1},
               "error": "revoked", "extra": "e"})
    );
    let body = json!({"subscription": sub, "extra": "e", "capabilities": "c1",
                      "session_id": SESSION_ID});
    assert_eq!(env.svc.bodies(authz)[1], body, "renewal body");
    assert_eq!(
        env.svc.bodies("/reauth_cb/before_unsubscribe"),
        vec![body.clone()]
    );
    assert_eq!(env.svc.bodies("/reauth_cb/on_unsubscribe"), vec![body]);
    env.redis.wait_channels(&[], secs(5.0)).await;
    for ev in ["message", "unsubscribe"] {
        let r = c.request(&json!({"event": ev, "subscription": sub})).await;
        assert_eq!(
            r,
            json!({"event": ev, "status": "error", "error": "Subscription does not exist.",
                   "subscription": sub})
        );
    }
    env.svc.expect_no_more_calls(authz, 2, ms(600)).await;
    assert_eq!(env.svc.calls("/reauth_cb/on_unsubscribe"), 1);
    assert_eq!(env.svc.calls("/reauth_cb/before_unsubscribe"), 1);
    // Subscribe again.
    env.svc.set(authz, Reply::ok());
    let r = c.request(&subscribe_cmd(sub)).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "subscription": sub})
    );
    env.redis.wait_channels(&[sub], secs(5.0)).await;
    publish(&env, sub, json!({"subscription": sub, "data": "again"})).await;
    let m = c.recv().await;
    assert_eq!(m["data"], "again");
}

/// R-REAUTH-4: an authorizer that cannot be reached at renewal ends the subscription with
/// `Service unavailable.`; before_unsubscribe answering ok without data → no `data` in the push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth4_authorizer_unreachable_on_renewal() {
    let env = start_with_reauth_cb().await;
    let sub = "reauth_cb.topic";
    let authz = "/reauth_cb/authorizer";
    env.svc.push(authz, Reply::ok());
    env.svc.set(authz, Reply::close());
    let mut c = env.auth_client().await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": sub, "extra": "e"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let push = c.recv().await;
    assert_eq!(
        push,
        json!({"event": "unsubscribe", "subscription": sub, "error": "Service unavailable.",
               "extra": "e"})
    );
    assert_eq!(env.svc.calls("/reauth_cb/before_unsubscribe"), 1);
    assert_eq!(env.svc.calls("/reauth_cb/on_unsubscribe"), 1);
    env.svc.expect_no_more_calls(authz, 2, ms(600)).await;
}

/// R-REAUTH-4: an `on_authorization_change` error ends the subscription with its error text,
/// default `Unhandled exception.`; the subscription can be made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth4_on_authorization_change_error_unsubscribes() {
    let env = TestEnv::start().await;
    let sub = "periodic_authorizer_with_fields.topic";
    let authz = "/periodic_authorizer_with_fields/authorizer";
    let change = "/periodic_authorizer_with_fields/on_authorization_change";
    env.svc.push(
        authz,
        Reply::json(json!({"status": "ok", "capabilities": "foo"})),
    );
    env.svc.set(
        authz,
        Reply::json(json!({"status": "ok", "capabilities": "bar"})),
    );
    env.svc.push(change, Reply::error());
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, sub).await;
    let push = c.recv().await;
    assert_eq!(
        push,
        json!({"event": "unsubscribe", "subscription": sub, "error": "Unhandled exception."})
    );
    assert_eq!(env.svc.calls(change), 1);
    env.svc.expect_no_more_calls(authz, 2, ms(600)).await;

    // Second round: the error text is forwarded.
    env.svc.push(
        authz,
        Reply::json(json!({"status": "ok", "capabilities": "baz"})),
    );
    env.svc.push(change, Reply::error_text("change refused"));
    subscribe_ok(&mut c, sub).await;
    let push = c.recv().await;
    assert_eq!(
        push,
        json!({"event": "unsubscribe", "subscription": sub, "error": "change refused"})
    );
    assert_eq!(
        env.svc.bodies(change)[1],
        json!({"subscription": sub, "capabilities": "bar", "session_id": SESSION_ID})
    );
}

/// R-REAUTH-5: an authorizer error with a configured `on_authorization_change` does not call it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth5_authorizer_error_skips_on_authorization_change() {
    let env = TestEnv::start().await;
    let sub = "periodic_authorizer_with_fields.topic";
    let authz = "/periodic_authorizer_with_fields/authorizer";
    env.svc.push(
        authz,
        Reply::json(json!({"status": "ok", "capabilities": "foo"})),
    );
    env.svc.set(
        authz,
        Reply::json(json!({"status": "error", "error": "nope", "capabilities": "bar"})),
    );
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, sub).await;
    let push = c.recv().await;
    assert_eq!(
        push,
        json!({"event": "unsubscribe", "subscription": sub, "error": "nope"})
    );
    sleep_ms(300).await;
    assert_eq!(
        env.svc
            .calls("/periodic_authorizer_with_fields/on_authorization_change"),
        0
    );
}

/// R-REAUTH-3 / R-CFG-3: a renewal period without authorizer renews trivially and never
/// unsubscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth3_renewal_without_authorizer_never_unsubscribes() {
    let env = TestEnv::start_with_env(|cfg, _, svc| {
        cfg.set_path(
            &["services", "renew_noauth"],
            json!({
                "require_authentication": false,
                "authorization_renewal_period": 0.1,
                "on_unsubscribe": cb(svc, "renew_noauth", "on_unsubscribe"),
            }),
        );
    })
    .await;
    let sub = "renew_noauth.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    c.expect_silence(ms(900)).await;
    publish(
        &env,
        sub,
        json!({"subscription": sub, "data": "still here"}),
    )
    .await;
    let m = c.recv().await;
    assert_eq!(m["data"], "still here");
    assert_eq!(env.svc.total_calls(), 0, "{}", env.svc.dump());
}

/// R-UNS-4 / R-HB-4: the renewal stops when the subscription ends (client unsubscribe or
/// disconnect): no more authorizer calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth_stops_after_unsubscribe_and_disconnect() {
    let env = TestEnv::start().await;
    let sub = "periodic_authorizer.topic";
    let authz = "/periodic_authorizer/authorizer";
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, sub).await;
    env.svc.wait_calls(authz, 2, secs(5.0)).await; // one renewal happened
    let r = c.request(&unsubscribe_cmd(sub)).await;
    assert_eq!(r["status"], "ok", "{r}");
    sleep_ms(100).await;
    let n = env.svc.calls(authz);
    env.svc.expect_no_more_calls(authz, n, ms(700)).await;

    // Disconnect.
    let mut c2 = env.auth_client().await;
    subscribe_ok(&mut c2, sub).await;
    env.svc.wait_calls(authz, n + 2, secs(5.0)).await;
    c2.abort().await;
    sleep_ms(200).await;
    let n2 = env.svc.calls(authz);
    env.svc.expect_no_more_calls(authz, n2, ms(700)).await;
    c.expect_silence(ms(10)).await;
}

/// R-REAUTH-2: each renewal sleep is `period − U × jitter`: with period 0.5 and jitter 0.4 the
/// gaps between renewals lie in (0.1, 0.5] + request time, averaging ≈0.3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth2_jitter_shortens_sleeps() {
    let env = TestEnv::start_with_env(|cfg, _, svc| {
        cfg.set_path(
            &["services", "jitter"],
            json!({
                "require_authentication": false,
                "authorizer": cb(svc, "jitter", "authorizer"),
                "authorization_renewal_period": 0.5,
                "authorization_renewal_jitter": 0.4,
            }),
        );
    })
    .await;
    let authz = "/jitter/authorizer";
    let mut c = env.client().await;
    subscribe_ok(&mut c, "jitter.topic").await;
    env.svc.wait_calls(authz, 10, secs(10.0)).await;
    let reqs = env.svc.requests(authz);
    let gaps: Vec<f64> = reqs[..10]
        .windows(2)
        .map(|w| gap_s(w[0].at, w[1].at))
        .collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    for g in &gaps {
        assert!(
            (0.09..1.0).contains(g),
            "renewal gap {g:.3} s outside (0.1, 0.5] + slack: {gaps:?}"
        );
    }
    assert!(
        mean < 0.45,
        "mean renewal gap {mean:.3} s: the jitter does not shorten the sleeps ({gaps:?})"
    );
    c.expect_silence(ms(10)).await;
}

/// R-REAUTH-2: the next sleep starts after the renewal finished (a slow authorizer stretches the
/// interval to period + request time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth2_next_sleep_starts_after_renewal() {
    let env = TestEnv::start().await;
    let authz = "/periodic_authorizer/authorizer";
    env.svc.set(authz, Reply::ok().delay(ms(250)));
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, "periodic_authorizer.topic").await;
    env.svc.wait_calls(authz, 4, secs(10.0)).await;
    let reqs = env.svc.requests(authz);
    for w in reqs[..4].windows(2) {
        let gap = gap_s(w[0].at, w[1].at);
        assert!(
            (0.43..1.5).contains(&gap),
            "renewal gap {gap:.3} s (expected 0.25 s request + 0.2 s sleep)"
        );
    }
    c.expect_silence(ms(10)).await;
}

/// R-REAUTH-4 step 1 / R-THR-7 / R-HB-4: a renewal failure discards the pending throttled send
/// and stops the subscription's heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth4_failure_stops_heartbeat_and_discards_throttled() {
    let env = TestEnv::start_with_env(|cfg, _, svc| {
        cfg.set_path(
            &["services", "reauth_hb"],
            json!({
                "require_authentication": true,
                "authorizer": cb(svc, "reauth_hb", "authorizer"),
                "authorization_renewal_period": 0.4,
                "heartbeat_period": 0.1,
                "on_heartbeat": cb(svc, "reauth_hb", "on_heartbeat"),
            }),
        );
    })
    .await;
    let sub = "reauth_hb.topic";
    let authz = "/reauth_hb/authorizer";
    let hb = "/reauth_hb/on_heartbeat";
    env.svc.push(authz, Reply::ok());
    env.svc.set(authz, Reply::error_text("gone"));
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, sub).await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("r1"), json!({"throttle": 2.0})),
    )
    .await;
    publish(
        &env,
        sub,
        opt_msg(sub, json!("r2"), json!({"throttle": 2.0})),
    )
    .await;
    let r1 = c.recv().await;
    assert_eq!(r1["data"], "r1");
    let push = c.recv().await;
    assert_eq!(
        push,
        json!({"event": "unsubscribe", "subscription": sub, "error": "gone"})
    );
    assert!(env.svc.calls(hb) >= 1, "no heartbeat before the failure");
    sleep_ms(100).await;
    let n = env.svc.calls(hb);
    // r2 was due 2 s after r1: it must never come.
    c.expect_silence(ms(2300)).await;
    assert_eq!(
        env.svc.calls(hb),
        n,
        "heartbeats went on after the renewal failure"
    );
}

/// R-DEF-6: a client unsubscribe waiting on a slow before_unsubscribe while a renewal fails:
/// whichever removal comes first wins; on_unsubscribe is called exactly once, the client's
/// unsubscribe gets ok or `Subscription does not exist.`, and the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn def6_renewal_failure_races_client_unsubscribe() {
    let env = start_with_reauth_cb().await;
    let sub = "reauth_cb.topic";
    let authz = "/reauth_cb/authorizer";
    let before = "/reauth_cb/before_unsubscribe";
    env.svc.push(authz, Reply::ok());
    env.svc.set(authz, Reply::error());
    env.svc.push(
        before,
        Reply::ok_data(json!({"who": "first"})).delay(secs(1.0)),
    );
    env.svc
        .set(before, Reply::ok_data(json!({"who": "second"})));
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, sub).await;
    c.send(&unsubscribe_cmd(sub)).await;
    let msgs = c.recv_n(2).await;
    let push = msgs
        .iter()
        .find(|m| m.get("status").is_none())
        .unwrap_or_else(|| panic!("no unsubscribe push among {msgs:?}"));
    let reply = msgs
        .iter()
        .find(|m| m.get("status").is_some())
        .unwrap_or_else(|| panic!("no unsubscribe reply among {msgs:?}"));
    assert_eq!(push["event"], "unsubscribe");
    assert_eq!(push["subscription"], sub);
    assert_eq!(push["error"], "Unauthorized.");
    let ok = json!({"event": "unsubscribe", "status": "ok", "data": {"who": "first"},
                    "subscription": sub});
    let gone = json!({"event": "unsubscribe", "status": "error",
                      "error": "Subscription does not exist.", "subscription": sub});
    assert!(
        *reply == ok || *reply == gone,
        "unexpected unsubscribe reply {reply}"
    );
    // The renewal failed while the client's before_unsubscribe was pending.
    let renewal = &env.svc.requests(authz)[1];
    let first_before = &env.svc.requests(before)[0];
    assert!(
        gap_s(first_before.at, renewal.at) < 0.95,
        "test setup: the renewal did not overlap the slow before_unsubscribe"
    );
    sleep_ms(500).await;
    assert_eq!(
        env.svc.calls("/reauth_cb/on_unsubscribe"),
        1,
        "{}",
        env.svc.dump()
    );
    let r = c.request(&json!({"event": "ping", "data": "alive"})).await;
    assert_eq!(r, json!({"event": "pong", "data": "alive"}));
    assert!(
        !env.server.has_log("unhandled event processing exception"),
        "{}",
        env.server.log_dump()
    );
}

// ------------------------------------------------------------------------------------------
// 4. Heartbeat (R-HB)
// ------------------------------------------------------------------------------------------

/// T-33: heartbeat period 0.2: the first call within a period of the subscribe (random offset
/// U × period), then one every period + request time (R-HB-2). Body: `{"subscription"}`
/// (anonymous, R-BODY-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t33_heartbeat_timing() {
    let env = TestEnv::start().await;
    let sub = "periodic_heartbeat.topic";
    let hb = "/periodic_heartbeat/on_heartbeat";
    let mut c = env.client().await;
    let t_send = Instant::now();
    subscribe_ok(&mut c, sub).await;
    let bodies = env.svc.wait_calls(hb, 3, secs(5.0)).await;
    let reqs = env.svc.requests(hb);
    let first = gap_s(t_send, reqs[0].at);
    assert!(
        first < 0.6,
        "first heartbeat {first:.3} s after the subscribe (expected < 0.2 s)"
    );
    for w in reqs.windows(2) {
        let gap = gap_s(w[0].at, w[1].at);
        assert!(
            (0.19..1.0).contains(&gap),
            "heartbeat interval {gap:.3} s (expected ≈0.2 s)"
        );
    }
    let by = gap_s(t_send, reqs[1].at);
    assert!(by < 1.0, "second heartbeat only after {by:.3} s");
    for b in bodies {
        assert_eq!(b, json!({"subscription": sub}));
    }
    c.expect_silence(ms(10)).await;
}

/// T-33 / R-HB-2, over 16 subscriptions of one session (period 0.2): for each, no second call
/// before 0.2 s after its subscribe was sent (exact: the second call follows the first by a full
/// period), the first call within 0.2 s of the reply and the second by 0.4 s (plus a tolerance
/// for a loaded machine). "No call at subscribe": the first calls come at a random offset
/// U × period, so their offsets from the subscribes spread over the period instead of all
/// being ≈0 (16 uniform offsets span less than 0.05 s with probability below 1e-7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t33_first_heartbeats_at_random_offsets_within_the_period() {
    const N: usize = 16;
    const TOLERANCE: f64 = 0.4;
    let env = TestEnv::start().await;
    let hb = "/periodic_heartbeat/on_heartbeat";
    let mut c = env.client().await;
    let mut sent = Vec::with_capacity(N);
    for i in 0..N {
        let t_send = Instant::now();
        subscribe_ok(&mut c, &format!("periodic_heartbeat.t{i}")).await;
        sent.push((t_send, Instant::now()));
    }
    wait_until(secs(10.0), "two heartbeats for every subscription", || {
        let reqs = env.svc.requests(hb);
        (0..N).all(|i| {
            let name = format!("periodic_heartbeat.t{i}");
            reqs.iter()
                .filter(|r| r.body["subscription"] == json!(name))
                .count()
                >= 2
        })
    })
    .await;
    let reqs = env.svc.requests(hb);
    let mut offsets = Vec::with_capacity(N);
    for (i, (t_send, t_reply)) in sent.iter().enumerate() {
        let name = format!("periodic_heartbeat.t{i}");
        let at: Vec<Instant> = reqs
            .iter()
            .filter(|r| r.body["subscription"] == json!(name))
            .map(|r| r.at)
            .collect();
        let early = at.iter().filter(|a| gap_s(*t_send, **a) < 0.2).count();
        assert!(
            early <= 1,
            "{name}: {early} heartbeats within 0.2 s of the subscribe"
        );
        let first = gap_s(*t_reply, at[0]);
        let second = gap_s(*t_reply, at[1]);
        assert!(
            first < 0.2 + TOLERANCE,
            "{name}: first heartbeat {first:.3} s after the subscribe reply"
        );
        assert!(
            second < 0.4 + TOLERANCE,
            "{name}: second heartbeat {second:.3} s after the subscribe reply"
        );
        offsets.push(gap_s(*t_send, at[0]));
    }
    let min = offsets.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = offsets.iter().cloned().fold(0.0, f64::max);
    assert!(
        max - min >= 0.05,
        "first-heartbeat offsets do not spread over the period (U × period): {offsets:.3?}"
    );
}

/// R-HB-3 / R-BODY-1: heartbeat bodies carry subscription, extra fields, authorizer fields and
/// auth fields, with auth fields beating authorizer fields beating extra fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hb3_heartbeat_body_precedence() {
    let env = TestEnv::start_with_env(|cfg, _, svc| {
        cfg.set_path(
            &["services", "hb_full"],
            json!({
                "require_authentication": true,
                "authorizer": cb(svc, "hb_full", "authorizer"),
                "authorizer_fields": ["capabilities", "session_id"],
                "extra_fields": ["extra", "capabilities"],
                "heartbeat_period": 0.2,
                "on_heartbeat": cb(svc, "hb_full", "on_heartbeat"),
            }),
        );
    })
    .await;
    env.svc.set(
        "/hb_full/authorizer",
        Reply::json(json!({"status": "ok", "capabilities": "from_authz",
                           "session_id": "from_authz", "plan": "x"})),
    );
    let sub = "hb_full.topic";
    let mut c = env.auth_client().await;
    let r = c
        .request(
            &json!({"event": "subscribe", "subscription": sub, "extra": "e",
                         "capabilities": "from_client", "other": 1}),
        )
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let bodies = env
        .svc
        .wait_calls("/hb_full/on_heartbeat", 2, secs(5.0))
        .await;
    for b in bodies {
        assert_eq!(
            b,
            json!({"subscription": sub, "extra": "e", "capabilities": "from_authz",
                   "session_id": SESSION_ID})
        );
    }
}

/// R-HB-3: an error answer (or an unreachable service) only logs the warning
/// `error sending heartbeat to service`; heartbeats go on and the subscription is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hb3_heartbeat_error_only_logs_warning() {
    let env = TestEnv::start().await;
    let sub = "periodic_heartbeat.topic";
    let hb = "/periodic_heartbeat/on_heartbeat";
    env.svc.push(hb, Reply::error_text("hb broken"));
    env.svc.push(hb, Reply::close());
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    let line = env
        .server
        .wait_log(
            |l| is_event(l, "error sending heartbeat to service"),
            secs(5.0),
        )
        .await;
    assert_eq!(line["level"], "warning", "{line}");
    assert_eq!(line["subscription"], sub, "{line}");
    assert!(
        line["error"].to_string().contains("hb broken"),
        "warning without the error text: {line}"
    );
    env.svc.wait_calls(hb, 4, secs(5.0)).await;
    assert!(
        env.server.count_log("error sending heartbeat to service") >= 2,
        "the unreachable service must also only log a warning:\n{}",
        env.server.log_dump()
    );
    c.expect_silence(ms(10)).await;
    publish(&env, sub, json!({"subscription": sub, "data": "ok"})).await;
    let m = c.recv().await;
    assert_eq!(m["data"], "ok");
}

/// R-HB-2: after each heartbeat completes, sleep `period`: a slow service stretches the interval
/// to period + request time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hb2_interval_includes_request_time() {
    let env = TestEnv::start().await;
    let hb = "/periodic_heartbeat/on_heartbeat";
    env.svc.set(hb, Reply::ok().delay(ms(250)));
    let mut c = env.client().await;
    subscribe_ok(&mut c, "periodic_heartbeat.topic").await;
    env.svc.wait_calls(hb, 4, secs(10.0)).await;
    let reqs = env.svc.requests(hb);
    for w in reqs[..4].windows(2) {
        let gap = gap_s(w[0].at, w[1].at);
        assert!(
            (0.43..1.5).contains(&gap),
            "heartbeat gap {gap:.3} s (expected 0.25 s request + 0.2 s sleep)"
        );
    }
    c.expect_silence(ms(10)).await;
}

/// R-HB-1 / R-SUB-11: heartbeats and renewals start before `on_subscribe` is called, so they run
/// while a slow on_subscribe is in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hb1_periodic_tasks_start_before_on_subscribe() {
    let env = TestEnv::start_with_env(|cfg, _, svc| {
        cfg.set_path(
            &["services", "slow_onsub"],
            json!({
                "require_authentication": false,
                "authorizer": cb(svc, "slow_onsub", "authorizer"),
                "authorization_renewal_period": 0.2,
                "heartbeat_period": 0.1,
                "on_heartbeat": cb(svc, "slow_onsub", "on_heartbeat"),
                "on_subscribe": cb(svc, "slow_onsub", "on_subscribe"),
            }),
        );
    })
    .await;
    env.svc
        .set("/slow_onsub/on_subscribe", Reply::ok().delay(secs(1.0)));
    let mut c = env.client().await;
    subscribe_ok(&mut c, "slow_onsub.topic").await;
    // The next command waits for on_subscribe (R-ORD-1).
    let r = c.request(&json!({"event": "ping"})).await;
    assert_eq!(r["event"], "pong");
    let onsub = env.svc.requests("/slow_onsub/on_subscribe")[0].at;
    let done = onsub + secs(0.95);
    let hb_during = env
        .svc
        .requests("/slow_onsub/on_heartbeat")
        .iter()
        .filter(|r| r.at < done)
        .count();
    let renew_during = env
        .svc
        .requests("/slow_onsub/authorizer")
        .iter()
        .skip(1)
        .filter(|r| r.at < done)
        .count();
    assert!(hb_during >= 2, "{hb_during} heartbeats during on_subscribe");
    assert!(
        renew_during >= 2,
        "{renew_during} renewals during on_subscribe"
    );
}

/// R-LOG-3: the `error` context of `authorization expired` and of
/// `error sending heartbeat to service` is the service's error text (as the reference logs the
/// Python string), not its JSON serialisation with embedded quotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log3_periodic_task_error_fields_are_plain_text() {
    let env = TestEnv::start().await;
    env.svc.push("/periodic_authorizer/authorizer", Reply::ok());
    env.svc.set(
        "/periodic_authorizer/authorizer",
        Reply::error_text("no longer authorized"),
    );
    env.svc.set(
        "/periodic_heartbeat/on_heartbeat",
        Reply::error_text("hb broken"),
    );
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, "periodic_authorizer.topic").await;
    subscribe_ok(&mut c, "periodic_heartbeat.topic").await;
    let expired = env
        .server
        .wait_log(|l| is_event(l, "authorization expired"), secs(5.0))
        .await;
    assert_eq!(expired["level"], "info", "{expired}");
    assert_eq!(expired["subscription"], "periodic_authorizer.topic");
    let hb = env
        .server
        .wait_log(
            |l| is_event(l, "error sending heartbeat to service"),
            secs(5.0),
        )
        .await;
    assert_eq!(
        (expired["error"].clone(), hb["error"].clone()),
        (json!("no longer authorized"), json!("hb broken")),
        "error fields: {expired} / {hb}"
    );
}

/// R-HB-4: heartbeats stop after unsubscribe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hb4_heartbeats_stop_after_unsubscribe() {
    let env = TestEnv::start().await;
    let sub = "periodic_heartbeat.topic";
    let hb = "/periodic_heartbeat/on_heartbeat";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    env.svc.wait_calls(hb, 2, secs(5.0)).await;
    let r = c.request(&unsubscribe_cmd(sub)).await;
    assert_eq!(r["status"], "ok", "{r}");
    sleep_ms(100).await;
    let n = env.svc.calls(hb);
    env.svc.expect_no_more_calls(hb, n, ms(800)).await;

    // Session end (disconnect) stops them too.
    let mut c2 = env.client().await;
    subscribe_ok(&mut c2, "periodic_heartbeat.topic").await;
    env.svc.wait_calls(hb, n + 2, secs(5.0)).await;
    c2.abort().await;
    sleep_ms(200).await;
    let n2 = env.svc.calls(hb);
    env.svc.expect_no_more_calls(hb, n2, ms(800)).await;
}

// ------------------------------------------------------------------------------------------
// 5. Server pings (R-WS-7)
// ------------------------------------------------------------------------------------------

async fn start_with_pings() -> TestEnv {
    TestEnv::start_with(|cfg| {
        cfg.set("ws.ping", json!({"interval": 0.2, "timeout": 0.2}));
    })
    .await
}

/// T-55 (first half): a client answering pings stays connected for > 1 s and receives pings
/// with a 4-byte payload roughly every 0.2 s (ping to ping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t55_responsive_client_stays_connected() {
    let env = start_with_pings().await;
    let mut c = env.client().await;
    let t0 = Instant::now();
    sleep_ms(1300).await;
    let r = c.request(&json!({"event": "ping", "data": "still"})).await;
    assert_eq!(r, json!({"event": "pong", "data": "still"}));
    let pings = c.pings();
    assert!(
        pings.len() >= 3,
        "only {} pings in {:.2} s",
        pings.len(),
        elapsed_s(t0)
    );
    for (_, p) in &pings {
        assert_eq!(p.len(), 4, "ping payload must be 4 bytes");
    }
    let first = gap_s(t0, pings[0].0);
    assert!(
        (0.15..0.8).contains(&first),
        "first ping {first:.3} s after connecting (expected ≈0.2 s)"
    );
    for w in pings.windows(2) {
        let gap = gap_s(w[0].0, w[1].0);
        assert!(
            (0.05..0.8).contains(&gap),
            "ping gap {gap:.3} s (expected ≈0.2 s)"
        );
    }
    let avg = gap_s(pings[0].0, pings[pings.len() - 1].0) / (pings.len() - 1) as f64;
    assert!(
        (0.15..0.5).contains(&avg),
        "average ping interval {avg:.3} s"
    );
    assert!(!env.server.has_log("ping timeout"));
}

/// T-55 (second half) / R-WS-7: a client that stops answering pings is closed with code 1000
/// after interval + timeout, with a `ping timeout` warning, and its session end runs
/// (on_unsubscribe of the ws_test subscription). The late pong does not save it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t55_unresponsive_client_is_closed() {
    let env = start_with_pings().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.hello").await;
    let t0 = Instant::now();
    c.pause_reading();
    let line = env
        .server
        .wait_log(|l| is_event(l, "ping timeout"), secs(5.0))
        .await;
    let at = elapsed_s(t0);
    assert_eq!(line["level"], "warning", "{line}");
    assert!(at < 3.0, "ping timeout only after {at:.2} s");
    let bodies = env
        .svc
        .wait_calls("/ws_test/on_unsubscribe", 1, secs(5.0))
        .await;
    assert_eq!(bodies, vec![json!({"subscription": "ws_test.hello"})]);
    c.resume_reading();
    let code = c.recv_close(secs(5.0)).await;
    assert_eq!(code, Some(1000), "close frame: {:?}", c.close_frame());
    assert_eq!(c.close_frame(), Some((1000, String::new())));
    sleep_ms(200).await;
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), 1);
}

/// T-56: after one connection timed out (a message published meanwhile), a new connection
/// subscribes and receives newly published messages (R-WS-7, R-PUB-10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t56_new_connection_after_ping_timeout() {
    let env = start_with_pings().await;
    let sub = "simple.topic";
    let mut a = env.client().await;
    subscribe_ok(&mut a, sub).await;
    a.pause_reading();
    publish(&env, sub, json!({"subscription": sub, "data": "meanwhile"})).await;
    env.server
        .wait_log(|l| is_event(l, "ping timeout"), secs(5.0))
        .await;
    let mut b = env.client().await;
    subscribe_ok(&mut b, sub).await;
    publish(&env, sub, json!({"subscription": sub, "data": "new"})).await;
    let m = b.recv().await;
    assert_eq!(m["data"], "new");
    assert_live(&m);
    a.resume_reading();
    let (code, skipped) = a.recv_close_skipping_data(secs(5.0)).await;
    assert_eq!(code, Some(1000));
    assert!(
        datas(&skipped).iter().all(|d| *d == json!("meanwhile")),
        "the timed-out connection got {skipped:?}"
    );
    // The second client keeps answering pings and stays.
    sleep_ms(600).await;
    let r = b.request(&json!({"event": "ping"})).await;
    assert_eq!(r, json!({"event": "pong", "data": null}));
}

/// R-WS-7 / R-ORD-1: pings are sent and pongs are seen while a command waits for a slow
/// callback; the connection is not timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws7_pings_continue_during_slow_callback() {
    let env = start_with_pings().await;
    env.svc.set(
        "/simple_before_subscribe/before_subscribe",
        Reply::ok().delay(secs(1.2)),
    );
    let mut c = env.client().await;
    let t0 = Instant::now();
    subscribe_ok(&mut c, "simple_before_subscribe.topic").await;
    assert!(elapsed_s(t0) >= 1.1);
    assert!(
        c.pings_received() >= 3,
        "only {} pings during a 1.2 s callback",
        c.pings_received()
    );
    assert!(
        !env.server.has_log("ping timeout"),
        "{}",
        env.server.log_dump()
    );
    let r = c.request(&json!({"event": "ping"})).await;
    assert_eq!(r["event"], "pong");
}

/// R-CFG-3 / R-WS-7: `ws.ping.interval = 0` disables server pings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws7_ping_interval_zero_sends_no_pings() {
    let env = TestEnv::start_with(|cfg| {
        cfg.set("ws.ping", json!({"interval": 0, "timeout": 0.2}));
    })
    .await;
    let mut c = env.client().await;
    sleep_ms(1000).await;
    let r = c.request(&json!({"event": "ping"})).await;
    assert_eq!(r["event"], "pong");
    assert_eq!(c.pings_received(), 0);
}

// ------------------------------------------------------------------------------------------
// 6. Shutdown (R-SHUT)
// ------------------------------------------------------------------------------------------

/// T-1 / R-SHUT-1/2, R-CFG-7: an idle server stops promptly on SIGTERM with exit status 0,
/// logging `stop requested`, `shutting down`, `done` in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t1_idle_server_sigterm() {
    let env = TestEnv::start().await;
    // Let the server settle: the race of a SIGTERM arriving right after the ready line is
    // tested separately (cfg7_sigterm_right_after_ready_exits_0).
    sleep_ms(200).await;
    let t0 = Instant::now();
    env.server.signal(libc::SIGTERM);
    let status = env.server.wait_exit(secs(10.0)).await;
    let took = elapsed_s(t0);
    eprintln!("t1: idle shutdown took {took:.3} s");
    assert!(status.success(), "exit status {status}");
    assert!(took < 2.0, "idle shutdown took {took:.3} s");
    let stop = log_index(&env.server, "stop requested").expect("stop requested");
    let shutting = log_index(&env.server, "shutting down").expect("shutting down");
    let done = log_index(&env.server, "done").expect("done");
    assert!(stop < shutting && shutting < done, "log order");
    for ev in ["stop requested", "shutting down", "done"] {
        assert_eq!(env.server.find_logs(ev)[0]["level"], "info", "{ev}");
    }
    assert_eq!(env.server.stdout_text(), "");
}

/// R-CFG-7 / R-SHUT-1: a SIGTERM sent as soon as the ready line is logged (what a supervisor
/// or an orchestrator may do) must still give an orderly shutdown with exit status 0, not death
/// by the default signal action. Repeated a few times because it is a race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cfg7_sigterm_right_after_ready_exits_0() {
    let redis = Redis::start().await;
    let svc = MockService::start().await;
    let cfg = base_config(&redis, &svc);
    for attempt in 1..=20 {
        let server = Server::start_config(&cfg).await;
        server.signal(libc::SIGTERM);
        let status = server.wait_exit(secs(10.0)).await;
        assert!(
            status.success(),
            "attempt {attempt}: SIGTERM right after the ready line gave exit status {status} \
             (signal handlers not installed yet?). log:\n{}",
            server.log_dump()
        );
        assert!(server.has_log("stop requested"), "attempt {attempt}");
        assert!(server.has_log("done"), "attempt {attempt}");
    }
}

/// R-SHUT-1: SIGINT triggers the same orderly shutdown (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shut1_sigint_also_stops() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    sleep_ms(200).await; // see cfg7_sigterm_right_after_ready_exits_0 for the startup race
    env.server.signal(libc::SIGINT);
    let code = c.recv_close(secs(5.0)).await;
    assert_eq!(code, Some(1000));
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
    assert!(env.server.has_log("stop requested"));
    assert!(env.server.has_log("shutting down"));
    assert!(env.server.has_log("done"));
}

/// R-SHUT-1 / R-WS-10: a session whose end is instantaneous (no subscriptions) still receives
/// its close frame (1000) before the process exits. The server must not exit while a close
/// frame is still unwritten; repeated because it is a race (single-session servers, where the
/// exit follows the last session end immediately, are the most sensitive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shut1_idle_client_receives_close_frame_before_exit() {
    let redis = Redis::start().await;
    let svc = MockService::start().await;
    svc.set("/auth", Reply::auth_ok(SESSION_ID));
    let cfg = base_config(&redis, &svc);
    for attempt in 1..=20 {
        let server = Server::start_config(&cfg).await;
        let mut c = Client::connect(&server.ws_url()).await;
        let r = c.request(&json!({"event": "ping"})).await;
        assert_eq!(r["event"], "pong");
        sleep_ms(100).await; // see cfg7_sigterm_right_after_ready_exits_0
        server.signal(libc::SIGTERM);
        let code = c.recv_close(secs(10.0)).await;
        let status = server.wait_exit(secs(10.0)).await;
        assert!(status.success(), "attempt {attempt}: exit status {status}");
        assert_eq!(
            code,
            Some(1000),
            "attempt {attempt}: no close frame before the process exited. log:\n{}",
            server.log_dump()
        );
    }
}

/// T-53: shutdown while a client is subscribed → the client receives close 1000 (empty
/// reason), on_unsubscribe is called once, exit status 0 (R-SHUT-1, R-WS-10, R-CFG-7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t53_shutdown_closes_subscribed_client() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.hello").await;
    env.server.signal(libc::SIGTERM);
    let code = c.recv_close(secs(5.0)).await;
    assert_eq!(code, Some(1000));
    assert_eq!(c.close_frame(), Some((1000, String::new())));
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        env.svc.bodies("/ws_test/on_unsubscribe"),
        vec![json!({"subscription": "ws_test.hello"})]
    );
}

/// T-54: during a shutdown held up by a slow on_unsubscribe, new connection attempts fail
/// (R-SHUT-1: stop listening); the server logs `waiting for sessions to close` with
/// `n_sessions` and still exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t54_no_new_connections_during_shutdown() {
    let env = TestEnv::start().await;
    env.svc
        .set("/ws_test/on_unsubscribe", Reply::ok().delay(secs(2.0)));
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.hello").await;
    env.server.signal(libc::SIGTERM);
    env.server.wait_event("shutting down", secs(5.0)).await;
    env.svc
        .wait_calls("/ws_test/on_unsubscribe", 1, secs(5.0))
        .await;
    sleep_ms(100).await;
    let attempt = Client::try_connect(&env.server.ws_url()).await;
    assert!(
        attempt.is_err(),
        "a connection was accepted during shutdown"
    );
    assert!(env.server.is_running(), "shutdown should still be waiting");
    let code = c.recv_close(secs(5.0)).await;
    assert_eq!(code, Some(1000));
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
    let waiting = env.server.find_logs("waiting for sessions to close");
    assert!(
        !waiting.is_empty(),
        "no `waiting for sessions to close` log"
    );
    assert_eq!(waiting[0]["n_sessions"], 1, "{}", waiting[0]);
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), 1);
}

/// R-SHUT-1 / R-END-2: SIGINT with a subscribed client runs the session end like SIGTERM:
/// `before_unsubscribe` then `on_unsubscribe`, each exactly once with the R-BODY body; the
/// client gets close 1000; exit status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shut1_sigint_runs_unsubscribe_callbacks_once() {
    let env = TestEnv::start_with_env(|cfg, _, svc| {
        cfg.set_path(
            &["services", "unsub_cb"],
            json!({
                "require_authentication": false,
                "before_unsubscribe": cb(svc, "unsub_cb", "before_unsubscribe"),
                "on_unsubscribe": cb(svc, "unsub_cb", "on_unsubscribe"),
            }),
        );
    })
    .await;
    let sub = "unsub_cb.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    sleep_ms(100).await; // see cfg7_sigterm_right_after_ready_exits_0 for the startup race
    env.server.signal(libc::SIGINT);
    assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
    assert!(env.server.has_log("stop requested"));
    assert!(env.server.has_log("done"));
    assert_eq!(
        env.svc.paths(),
        vec![
            "/unsub_cb/before_unsubscribe".to_string(),
            "/unsub_cb/on_unsubscribe".to_string()
        ],
        "callbacks:\n{}",
        env.svc.dump()
    );
    for path in ["/unsub_cb/before_unsubscribe", "/unsub_cb/on_unsubscribe"] {
        assert_eq!(env.svc.bodies(path), vec![json!({"subscription": sub})]);
    }
}

/// R-WS-12 / R-ORD-6: frames arriving while the server closes a session whose command is still
/// in progress (shutdown during a slow before_subscribe) are ignored without reply, each with
/// the warning `inactive client event ignored` carrying the frame as `data`; the command's own
/// reply is dropped too, so the client sees nothing but the close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ws_12_frames_during_a_closing_command_are_ignored() {
    let env = TestEnv::start().await;
    let bs = "/simple_before_subscribe/before_subscribe";
    env.svc.set(bs, Reply::ok().delay(secs(1.5)));
    let mut c = env.client().await;
    c.send(&subscribe_cmd("simple_before_subscribe.topic"))
        .await;
    env.svc.wait_calls(bs, 1, secs(5.0)).await;
    // Not reading: the close frame stays unread, so the client may still send.
    c.pause_reading();
    let mark = env.server.log_mark();
    env.server.signal(libc::SIGTERM);
    env.server
        .wait_log_since(
            mark,
            |l| is_event(l, "waiting for sessions to close"),
            secs(5.0),
        )
        .await;
    let late = [
        json!({"event": "ping", "data": "late"}),
        json!({"event": "subscribe", "subscription": "simple.late"}),
    ];
    for f in &late {
        c.send(f).await;
    }
    for f in &late {
        let line = env
            .server
            .wait_log_since(
                mark,
                |l| is_event(l, "inactive client event ignored") && l["data"] == *f,
                secs(5.0),
            )
            .await;
        assert_eq!(line["level"], "warning", "{line}");
        assert!(line["session"].is_u64(), "{line}");
    }
    c.resume_reading();
    assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        !env.server
            .logs_since(mark)
            .iter()
            .any(|l| is_event(l, "client event") && (l["data"] == late[0] || l["data"] == late[1])),
        "an ignored frame was processed:\n{}",
        env.server.log_dump()
    );
}

/// R-WS-12: frames arriving after the server started closing a session, while its end runs
/// (shutdown with a slow on_unsubscribe), get no reply and are logged as the warning
/// `inactive client event ignored`; the client sees only the close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ws_12_frames_during_session_end_are_ignored() {
    let env = TestEnv::start().await;
    let unsub = "/ws_test/on_unsubscribe";
    env.svc.set(unsub, Reply::ok().delay(secs(1.0)));
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.hello").await;
    c.pause_reading();
    let mark = env.server.log_mark();
    env.server.signal(libc::SIGTERM);
    env.svc.wait_calls(unsub, 1, secs(5.0)).await;
    c.send(&json!({"event": "ping", "data": "late"})).await;
    c.send(&json!({"event": "unsubscribe", "subscription": "ws_test.hello"}))
        .await;
    wait_until(
        secs(5.0),
        "two `inactive client event ignored` warnings",
        || {
            env.server
                .logs_since(mark)
                .iter()
                .filter(|l| is_event(l, "inactive client event ignored"))
                .count()
                >= 2
        },
    )
    .await;
    let ignored: Vec<Value> = env
        .server
        .logs_since(mark)
        .into_iter()
        .filter(|l| is_event(l, "inactive client event ignored"))
        .collect();
    for line in &ignored {
        assert_eq!(line["level"], "warning", "{line}");
    }
    let data: Vec<&Value> = ignored.iter().map(|l| &l["data"]).collect();
    assert_eq!(
        data,
        [
            &json!({"event": "ping", "data": "late"}),
            &json!({"event": "unsubscribe", "subscription": "ws_test.hello"})
        ],
        "R-LOG-3: the warning carries the ignored frame as `data`"
    );
    c.resume_reading();
    assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(env.svc.calls(unsub), 1);
}

async fn service_state(port: u16) -> Option<f64> {
    let r = http_get(port, "/metrics").await;
    assert_eq!(r.status, 200);
    prom_value(&r.body, "socketshark_service_state")
}

async fn start_with_metrics_and_slow_unsubscribe() -> (TestEnv, u16, Client) {
    let env = TestEnv::start_with(|cfg| {
        cfg.set(
            "metrics.prometheus",
            json!({"host": "127.0.0.1", "port": 0}),
        );
    })
    .await;
    env.svc
        .set("/ws_test/on_unsubscribe", Reply::ok().delay(secs(1.5)));
    let port = env.server.metrics_port().await.expect("metrics port");
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.hello").await;
    assert_eq!(service_state(port).await, Some(1.0));
    (env, port, c)
}

/// R-SHUT-4 / R-MET-3: during a signal-initiated shutdown the service-state gauge stays 1 until
/// the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shut4_service_state_stays_1_during_signal_shutdown() {
    let (env, port, mut c) = start_with_metrics_and_slow_unsubscribe().await;
    env.server.signal(libc::SIGTERM);
    env.svc
        .wait_calls("/ws_test/on_unsubscribe", 1, secs(5.0))
        .await;
    assert!(env.server.is_running());
    assert_eq!(service_state(port).await, Some(1.0));
    assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
}

/// R-RED-5 / R-MET-3: on Redis connection loss the service-state gauge drops to 0 immediately,
/// while the shutdown is still waiting for sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red5_service_state_0_immediately_on_redis_loss() {
    let (env, port, mut c) = start_with_metrics_and_slow_unsubscribe().await;
    env.redis.stop();
    env.svc
        .wait_calls("/ws_test/on_unsubscribe", 1, secs(5.0))
        .await;
    assert!(env.server.is_running());
    assert_eq!(service_state(port).await, Some(0.0));
    assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
}

/// R-SHUT-1 / R-WS-10: a client that stopped reading does not hold up the shutdown beyond the
/// bounded close handshake (10 s); its session end runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shut1_unresponsive_client_does_not_block_shutdown() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.hello").await;
    c.pause_reading();
    let t0 = Instant::now();
    env.server.signal(libc::SIGTERM);
    let status = env.server.wait_exit(secs(15.0)).await;
    let took = elapsed_s(t0);
    eprintln!("shutdown with a non-reading client took {took:.3} s");
    assert!(status.success(), "exit status {status}");
    assert!(took < 12.0, "shutdown took {took:.3} s");
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), 1);
    c.resume_reading();
}

/// R-CB-2 / R-SHUT-1 / R-REAUTH-4: a SIGTERM while a renewal failure is still running its
/// unsubscribe callbacks (slow before_unsubscribe): the shutdown must not cut them short;
/// on_unsubscribe is called exactly once for that subscription before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cb2_shutdown_during_renewal_failure_callbacks() {
    let env = start_with_reauth_cb().await;
    let sub = "reauth_cb.topic";
    let authz = "/reauth_cb/authorizer";
    env.svc.push(authz, Reply::ok());
    env.svc.set(authz, Reply::error());
    env.svc.set(
        "/reauth_cb/before_unsubscribe",
        Reply::ok().delay(secs(1.0)),
    );
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, sub).await;
    env.svc
        .wait_calls("/reauth_cb/before_unsubscribe", 1, secs(5.0))
        .await;
    env.server.signal(libc::SIGTERM);
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        env.svc.calls("/reauth_cb/on_unsubscribe"),
        1,
        "on_unsubscribe of the subscription ended by the renewal failure. calls:\n{}",
        env.svc.dump()
    );
    assert_eq!(env.svc.calls("/reauth_cb/before_unsubscribe"), 1);
}

/// R-SHUT-2: a second SIGTERM during shutdown is ignored (it only logs `stop requested`); the
/// shutdown completes once with exit status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shut2_second_sigterm_ignored() {
    let env = TestEnv::start().await;
    env.svc
        .set("/ws_test/on_unsubscribe", Reply::ok().delay(secs(1.0)));
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.hello").await;
    env.server.signal(libc::SIGTERM);
    env.server.wait_event("shutting down", secs(5.0)).await;
    env.svc
        .wait_calls("/ws_test/on_unsubscribe", 1, secs(5.0))
        .await;
    env.server.signal(libc::SIGTERM);
    wait_until(secs(5.0), "a second `stop requested`", || {
        env.server.count_log("stop requested") >= 2
    })
    .await;
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(env.server.count_log("stop requested"), 2);
    assert_eq!(env.server.count_log("shutting down"), 1);
    assert_eq!(env.server.count_log("done"), 1);
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), 1);
    let _ = c.recv_close(secs(5.0)).await;
}

/// R-SHUT-1 at scale: 500 connected sessions with one subscription each; SIGTERM → every client
/// gets a close frame (1000), every subscription gets on_unsubscribe, exit 0 within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shut1_500_sessions_shutdown() {
    const N: usize = 500;
    let env = TestEnv::start().await;
    let url = env.server.ws_url();
    let mut clients: Vec<Client> = Vec::with_capacity(N);
    for chunk_start in (0..N).step_by(50) {
        let batch = join_all((chunk_start..chunk_start + 50).map(|i| {
            let url = url.clone();
            async move {
                let mut c = Client::connect(&url).await;
                subscribe_ok(&mut c, &format!("ws_test.s{i}")).await;
                c
            }
        }))
        .await;
        clients.extend(batch);
    }
    let t0 = Instant::now();
    env.server.signal(libc::SIGTERM);
    let closes = join_all(clients.iter_mut().map(|c| c.recv_close(secs(20.0))));
    let (codes, status) = tokio::join!(closes, env.server.wait_exit(secs(30.0)));
    let took = elapsed_s(t0);
    eprintln!("shut1_500_sessions_shutdown: SIGTERM → exit took {took:.3} s");
    assert!(status.success(), "exit status {status}");
    let not_1000 = codes.iter().filter(|c| **c != Some(1000)).count();
    assert_eq!(not_1000, 0, "{not_1000} clients without close 1000");
    assert!(took < 10.0, "shutdown of {N} sessions took {took:.3} s");
    let mut subs: Vec<String> = env
        .svc
        .bodies("/ws_test/on_unsubscribe")
        .iter()
        .map(|b| b["subscription"].as_str().unwrap_or("").to_owned())
        .collect();
    subs.sort();
    subs.dedup();
    assert_eq!(subs.len(), N);
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), N);
}

// ------------------------------------------------------------------------------------------
// 7. Redis faults (R-RED)
// ------------------------------------------------------------------------------------------

/// T-57 / R-RED-5: losing Redis closes every client (subscribed or not) with code 1000, logs
/// the error `redis unexpectedly closed`, runs the session ends, and exits 0 (R-CFG-7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t57_redis_loss_closes_everyone() {
    let env = TestEnv::start().await;
    let mut bare = env.client().await;
    let mut authed = env.auth_client().await;
    let mut simple = env.client().await;
    subscribe_ok(&mut simple, "simple.topic").await;
    let mut ws = env.client().await;
    subscribe_ok(&mut ws, "ws_test.hello").await;
    env.redis.stop();
    for (name, c) in [
        ("bare", &mut bare),
        ("authed", &mut authed),
        ("simple", &mut simple),
        ("ws_test", &mut ws),
    ] {
        let code = c.recv_close(secs(5.0)).await;
        assert_eq!(code, Some(1000), "{name} client");
    }
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
    let line = env
        .server
        .find_logs("redis unexpectedly closed")
        .into_iter()
        .next()
        .expect("no `redis unexpectedly closed` log");
    assert_eq!(line["level"], "error", "{line}");
    assert!(env.server.has_log("done"));
    assert_eq!(
        env.svc.bodies("/ws_test/on_unsubscribe"),
        vec![json!({"subscription": "ws_test.hello"})]
    );
}

/// T-51 / R-RED-4 / R-DEF-5: with ping_interval 0.2 / ping_timeout 0.2, a frozen Redis causes
/// the warning `redis ping timeout` and a shutdown that completes (exit 0) within a few seconds
/// although Redis never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t51_redis_ping_timeout_shuts_down() {
    let env = TestEnv::start_with(|cfg| {
        cfg.merge("redis", json!({"ping_interval": 0.2, "ping_timeout": 0.2}));
    })
    .await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.hello").await;
    let mut idle = env.client().await;
    // Healthy pings do not trigger anything.
    sleep_ms(700).await;
    assert!(env.server.is_running());
    assert!(!env.server.has_log("redis ping timeout"));
    let t0 = Instant::now();
    env.redis.freeze();
    let line = env
        .server
        .wait_log(|l| is_event(l, "redis ping timeout"), secs(5.0))
        .await;
    assert_eq!(line["level"], "warning", "{line}");
    assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
    assert_eq!(idle.recv_close(secs(5.0)).await, Some(1000));
    let status = env.server.wait_exit(secs(8.0)).await;
    let took = elapsed_s(t0);
    env.redis.unfreeze();
    eprintln!("t51: freeze → exit took {took:.3} s");
    assert!(status.success(), "exit status {status}");
    assert!(took < 6.0, "exit {took:.3} s after the freeze");
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), 1);
}

fn alt_on_same(cfg: &mut Config, redis: &Redis) {
    cfg.set(
        "redis_alt",
        json!({"host": "127.0.0.1", "port": redis.port(), "channel_prefix": "alt:"}),
    );
}

/// R-RED-3 / R-RED-5: with `[redis_alt]` on the same server (prefix `alt:`), both channels are
/// subscribed; losing Redis shuts the server down (clients closed, exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red3_redis_alt_same_server_loss_shuts_down() {
    let env = TestEnv::start_with_env(|cfg, redis, _| alt_on_same(cfg, redis)).await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    env.redis
        .wait_channels(&["alt:simple.topic", sub], secs(5.0))
        .await;
    env.redis.stop();
    assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
    assert!(env.server.has_log("redis unexpectedly closed"));
}

/// R-RED-3: loss of only the `[redis_alt]` connection (a separate Redis) shuts the server down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red3_redis_alt_loss_alone_shuts_down() {
    let alt = Redis::start().await;
    let alt_port = alt.port();
    let env = TestEnv::start_with(|cfg| {
        cfg.set(
            "redis_alt",
            json!({"host": "127.0.0.1", "port": alt_port, "channel_prefix": "alt:"}),
        );
    })
    .await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    alt.wait_channels(&["alt:simple.topic"], secs(5.0)).await;
    env.redis.wait_channels(&[sub], secs(5.0)).await;
    alt.publish_json(
        "alt:simple.topic",
        &json!({"subscription": sub, "data": "via alt"}),
    )
    .await;
    assert_eq!(c.recv().await["data"], "via alt");
    alt.stop();
    assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
    let status = env.server.wait_exit(secs(10.0)).await;
    assert!(status.success(), "exit status {status}");
    assert!(env.server.has_log("redis unexpectedly closed"));
}

/// R-RED-3 / R-RED-4 / R-DEF-5: a frozen `[redis_alt]` (separate Redis, pings configured) times
/// out and shuts the server down, exit 0, although that Redis never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red4_redis_alt_ping_timeout_shuts_down() {
    let alt = Redis::start().await;
    let alt_port = alt.port();
    let env = TestEnv::start_with(|cfg| {
        cfg.set(
            "redis_alt",
            json!({"host": "127.0.0.1", "port": alt_port, "channel_prefix": "alt:",
                   "ping_interval": 0.2, "ping_timeout": 0.2}),
        );
    })
    .await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.hello").await;
    let t0 = Instant::now();
    alt.freeze();
    env.server
        .wait_log(|l| is_event(l, "redis ping timeout"), secs(5.0))
        .await;
    assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
    let status = env.server.wait_exit(secs(8.0)).await;
    let took = elapsed_s(t0);
    alt.unfreeze();
    assert!(status.success(), "exit status {status}");
    assert!(took < 6.0, "exit {took:.3} s after the freeze");
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), 1);
}

/// `calls` of `cmdstat_ping` in `INFO commandstats`: the PINGs this Redis has received from any
/// client (the harness itself sends none).
async fn redis_ping_calls(redis: &Redis) -> u64 {
    let info: String = redis.query(&["INFO", "commandstats"]).await;
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
        .and_then(|rest| rest.split(',').next())
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("bad cmdstat_ping line: {info}"))
        })
        .unwrap_or(0)
}

/// A `key=value` field of a `CLIENT LIST` line.
fn client_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The `CLIENT LIST` lines of every connection to `redis` except the harness's own (the one
/// running the commands): with no other test client connected, the server's connections.
async fn server_redis_clients(redis: &Redis) -> Vec<String> {
    let me: i64 = redis.query(&["CLIENT", "ID"]).await;
    let me = me.to_string();
    let list: String = redis.query(&["CLIENT", "LIST"]).await;
    list.lines()
        .filter(|l| !l.trim().is_empty() && client_field(l, "id") != Some(me.as_str()))
        .map(str::to_owned)
        .collect()
}

/// R-RED-4: with `ping_interval` and `ping_timeout` both non-zero (0.1 / 1), the server PINGs
/// Redis about every `ping_interval`, as counted by Redis itself (`INFO commandstats`): at least
/// 4 in ~1 s, and never more than one per interval; nothing is logged while Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_red_4_redis_pinged_every_interval() {
    let env = TestEnv::start_with(|cfg| {
        cfg.merge("redis", json!({"ping_interval": 0.1, "ping_timeout": 1.0}));
    })
    .await;
    let before = redis_ping_calls(&env.redis).await;
    let t0 = Instant::now();
    sleep_ms(1000).await;
    let n = redis_ping_calls(&env.redis).await - before;
    let took = elapsed_s(t0);
    assert!(
        n >= 4,
        "only {n} PINGs in {took:.2} s with ping_interval 0.1"
    );
    assert!(
        (n as f64) <= took / 0.1 + 1.0,
        "{n} PINGs in {took:.2} s with ping_interval 0.1"
    );
    assert!(env.server.is_running());
    assert!(!env.server.has_log("redis ping timeout"));
}

/// R-RED-4 with pings disabled: the server sends Redis no PING after startup (counted by Redis,
/// `INFO commandstats`), and a Redis frozen for longer than `ping_interval + ping_timeout`
/// neither logs `redis ping timeout` nor shuts the server down; afterwards it still delivers.
async fn assert_redis_pings_disabled(ping_interval: f64, ping_timeout: f64) {
    let env = TestEnv::start_with(|cfg| {
        cfg.merge(
            "redis",
            json!({"ping_interval": ping_interval, "ping_timeout": ping_timeout}),
        );
    })
    .await;
    let sub = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, sub).await;
    env.redis.wait_channels(&[sub], secs(5.0)).await;
    let before = redis_ping_calls(&env.redis).await;
    sleep_ms(1000).await;
    let n = redis_ping_calls(&env.redis).await - before;
    assert_eq!(
        n, 0,
        "{n} Redis PINGs in 1 s with ping_interval {ping_interval}, ping_timeout {ping_timeout}"
    );
    env.redis.freeze();
    sleep_ms(1000).await;
    env.redis.unfreeze();
    assert!(env.server.is_running(), "{}", env.server.log_dump());
    assert!(!env.server.has_log("redis ping timeout"));
    let r = c.request(&json!({"event": "ping", "data": "up"})).await;
    assert_eq!(r, json!({"event": "pong", "data": "up"}));
    publish(&env, sub, json!({"subscription": sub, "data": "after"})).await;
    assert_eq!(c.recv().await["data"], "after");
    assert!(env.server.is_running());
}

/// R-RED-4 / R-CFG: `redis.ping_interval = 0` disables Redis PINGs (even with a non-zero
/// `ping_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_red_4_ping_interval_zero_disables_redis_pings() {
    assert_redis_pings_disabled(0.0, 0.2).await;
}

/// R-RED-4 / R-CFG: `redis.ping_timeout = 0` also disables Redis PINGs (even with a non-zero
/// `ping_interval`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_red_4_ping_timeout_zero_disables_redis_pings() {
    assert_redis_pings_disabled(0.1, 0.0).await;
}

/// R-RED-2: one Redis connection carries every channel subscription. Before any session and
/// with 30 sessions holding 5 subscriptions each over 60 distinct channels, Redis sees exactly
/// one connection from the server (besides the harness's own): the same one throughout, a
/// subscriber (`flags` with `P`) with `sub=60`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_red_2_one_redis_connection_carries_all_subscriptions() {
    let env = TestEnv::start().await;
    let idle = server_redis_clients(&env.redis).await;
    assert_eq!(idle.len(), 1, "server connections to Redis: {idle:#?}");
    assert_eq!(env.redis.client_count().await, 2);
    let id = client_field(&idle[0], "id").expect("id").to_owned();
    let url = env.server.ws_url();
    let clients = join_all((0..30).map(|i| {
        let url = url.clone();
        async move {
            let mut c = Client::connect(&url).await;
            for j in 0..5 {
                subscribe_ok(&mut c, &format!("simple.c{}", (i * 5 + j) % 60)).await;
            }
            c
        }
    }))
    .await;
    let names: Vec<String> = (0..60).map(|k| format!("simple.c{k}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.redis.wait_channels(&refs, secs(10.0)).await;
    let busy = server_redis_clients(&env.redis).await;
    assert_eq!(busy.len(), 1, "server connections to Redis: {busy:#?}");
    assert_eq!(env.redis.client_count().await, 2);
    let line = &busy[0];
    assert_eq!(client_field(line, "id"), Some(id.as_str()), "{line}");
    assert!(
        client_field(line, "flags").is_some_and(|f| f.contains('P')),
        "not a subscriber connection: {line}"
    );
    assert_eq!(client_field(line, "sub"), Some("60"), "{line}");
    drop(clients);
}

/// R-RED-2 / R-RED-3: with `[redis_alt]` on the same Redis (prefix `alt:`) there is exactly one
/// connection per configured Redis: two subscriber connections, each carrying all 20 channels
/// (`sub=20`) held by 10 sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_red_2_one_connection_per_configured_redis() {
    let env = TestEnv::start_with_env(|cfg, redis, _| alt_on_same(cfg, redis)).await;
    let url = env.server.ws_url();
    let clients = join_all((0..10).map(|i| {
        let url = url.clone();
        async move {
            let mut c = Client::connect(&url).await;
            for j in 0..3 {
                subscribe_ok(&mut c, &format!("simple.c{}", (i * 3 + j) % 20)).await;
            }
            c
        }
    }))
    .await;
    let names: Vec<String> = (0..20)
        .flat_map(|k| [format!("simple.c{k}"), format!("alt:simple.c{k}")])
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.redis.wait_channels(&refs, secs(10.0)).await;
    let conns = server_redis_clients(&env.redis).await;
    assert_eq!(conns.len(), 2, "server connections to Redis: {conns:#?}");
    for line in &conns {
        assert!(
            client_field(line, "flags").is_some_and(|f| f.contains('P')),
            "not a subscriber connection: {line}"
        );
        assert_eq!(client_field(line, "sub"), Some("20"), "{line}");
    }
    drop(clients);
}

// ------------------------------------------------------------------------------------------
// 8. TLS (R-WS-9)
// ------------------------------------------------------------------------------------------

struct TlsFiles {
    _dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
    der: tokio_rustls::rustls::pki_types::CertificateDer<'static>,
}

fn tls_files() -> TlsFiles {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".into()])
        .expect("rcgen");
    let dir = TempDir::new("tls");
    let cert = dir.write("cert.pem", ck.cert.pem());
    let key = dir.write("key.pem", ck.signing_key.serialize_pem());
    TlsFiles {
        der: ck.cert.der().clone(),
        _dir: dir,
        cert,
        key,
    }
}

async fn wss_connect(
    port: u16,
    der: &tokio_rustls::rustls::pki_types::CertificateDer<'static>,
) -> Result<Client, String> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = within(secs(5.0), "TLS handshake", connector.connect(name, tcp))
        .await
        .map_err(|e| e.to_string())?;
    Client::try_connect_stream(&format!("wss://localhost:{port}/"), tls).await
}

/// R-WS-9: with `[ws.ssl]` the server speaks `wss://` only: a TLS client (trusting the
/// self-signed certificate) can ping and subscribe; a plain `ws://` handshake fails; the ready
/// line says `secure: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws9_tls_listener() {
    let files = tls_files();
    let cert = files.cert.to_string_lossy().to_string();
    let key = files.key.to_string_lossy().to_string();
    let env = TestEnv::start_with(|cfg| {
        cfg.set("ws.ssl", json!({"cert": cert, "key": key}));
    })
    .await;
    assert!(env.server.secure(), "ready line must say secure: true");
    let ready = env.server.find_logs(READY_EVENT);
    assert_eq!(ready[0]["secure"], true, "{}", ready[0]);
    let port = env.server.port();

    let mut c = wss_connect(port, &files.der)
        .await
        .expect("wss:// connection failed");
    let r = c.request(&json!({"event": "ping", "data": "tls"})).await;
    assert_eq!(r, json!({"event": "pong", "data": "tls"}));
    c.send_ping(b"hi".to_vec()).await;
    c.wait_pongs(1, secs(5.0)).await;
    assert_eq!(c.pongs()[0].1, b"hi".to_vec());
    let sub = "simple.topic";
    subscribe_ok(&mut c, sub).await;
    publish(&env, sub, json!({"subscription": sub, "data": "secret"})).await;
    let m = c.recv().await;
    assert_eq!(m["data"], "secret");
    assert_live(&m);

    let plain = Client::try_connect(&format!("ws://127.0.0.1:{port}/")).await;
    assert!(
        plain.is_err(),
        "a plain ws:// handshake succeeded on the TLS port"
    );

    // The TLS client is unaffected.
    let r = c.request(&json!({"event": "ping", "data": "again"})).await;
    assert_eq!(r, json!({"event": "pong", "data": "again"}));
    env.server.stop(secs(10.0)).await;
}

/// R-WS-9 / R-CFG-5: a certificate path that cannot be read is a startup failure (non-zero exit,
/// no ready line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws9_bad_cert_path_fails_startup() {
    let redis = Redis::start().await;
    let svc = MockService::start().await;
    let files = tls_files();
    let mut cfg = base_config(&redis, &svc);
    cfg.set(
        "ws.ssl",
        json!({"cert": "/nonexistent/socketshark-test/cert.pem",
               "key": files.key.to_string_lossy()}),
    );
    let (status, text) = Server::start_expect_failure(&cfg.toml(), secs(10.0)).await;
    assert!(!status.success(), "exit status {status}\n{text}");
    assert!(!text.contains("  ready"), "ready line logged:\n{text}");
}

/// Issue 13 defect 2 / R-SHUT-1, R-END-2: shutdown waits for the answer of a slow
/// `on_unsubscribe` before the process exits, whatever the client does meanwhile: it answers the
/// close, drops the connection as soon as the close arrives, does not read, or has its
/// subscribe still in progress when the signal comes. Repeated in parallel, since the race it
/// guards against showed in 2 runs of 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shut5_exit_waits_for_slow_on_unsubscribe_answer() {
    async fn once(round: usize) {
        let env = TestEnv::start_with_env(|cfg, _, svc| {
            let url = cb(svc, "ws_test", "on_subscribe");
            cfg.set_path(&["services", "ws_test", "on_subscribe"], json!(url));
        })
        .await;
        let path = "/ws_test/on_unsubscribe";
        env.svc.set(path, Reply::ok().delay(secs(1.0)));
        let mut c = env.client().await;
        let mode = round % 4;
        if mode == 3 {
            // The signal arrives while the subscribe command is being processed.
            env.svc
                .set("/ws_test/on_subscribe", Reply::ok().delay(ms(300)));
            c.send(&subscribe_cmd("ws_test.hello")).await;
            env.svc
                .wait_calls("/ws_test/on_subscribe", 1, secs(5.0))
                .await;
        } else {
            subscribe_ok(&mut c, "ws_test.hello").await;
            sleep_ms(100).await; // see cfg7_sigterm_right_after_ready_exits_0
        }
        if mode == 2 {
            c.pause_reading();
        }
        env.server.signal(libc::SIGTERM);
        let mut client = Some(c);
        if mode == 1 {
            let mut c = client.take().unwrap();
            assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
            c.abort().await;
        }
        // Every callback that arrived before the exit was answered before it.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let requests = env.svc.requests(path);
            if !env.server.is_running() {
                assert!(
                    requests.iter().all(|r| r.answered.is_some()),
                    "round {round}: the process exited before on_unsubscribe answered. log:\n{}",
                    env.server.log_dump()
                );
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: no exit");
            sleep_ms(5).await;
        }
        let status = env.server.wait_exit(secs(1.0)).await;
        assert!(status.success(), "round {round}: exit status {status}");
        assert!(
            env.server.has_log("done"),
            "round {round}: no `done` log line"
        );
        if let Some(mut c) = client {
            c.resume_reading();
            let (code, _) = c.recv_close_skipping_data(secs(5.0)).await;
            assert_eq!(code, Some(1000), "round {round}");
        }
        assert_eq!(env.svc.calls(path), 1, "round {round}");
    }
    join_all((0..12).map(once)).await;
}
