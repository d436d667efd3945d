//! Subscriptions and publishing over real sockets and a real Redis: SPEC.md §21 T-12..T-25,
//! anonymous `message`/`unsubscribe` (R-AUTH-10), the delivered frame (R-PUB-3/7/8/9), routing (R-PUB-4), malformed publisher messages
//! (R-PUB-5), the channel lifecycle (R-PUB-1/2, R-END-3, R-DEF-1), buffering during
//! `before_subscribe` (R-SUB-10), `before_subscribe` answers (R-SUB-9), extra fields (R-EXT),
//! filter equality (R-FLT), `[redis_alt]` (R-RED-3, T-50) and ordering (R-ORD-4/5).
mod common;
use common::*;

use std::collections::BTreeSet;
use std::time::Instant;

// ------------------------------------------------------------------------------------------
// Local helpers
// ------------------------------------------------------------------------------------------

/// Generous timeout for positive waits.
const WAIT: Duration = Duration::from_secs(10);
/// Short window for negative checks.
const QUIET: Duration = Duration::from_millis(300);

fn sub_cmd(name: &str) -> Value {
    json!({"event": "subscribe", "subscription": name})
}

fn ok_reply(event: &str, name: &str) -> Value {
    json!({"event": event, "status": "ok", "subscription": name})
}

fn err_reply(event: &str, name: &str, error: &str) -> Value {
    json!({"event": event, "status": "error", "error": error, "subscription": name})
}

/// The sorted key set of a JSON object.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn key_set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Receives the next frame and asserts it is a published message of `subscription` with `data`.
async fn expect_msg(c: &mut Client, subscription: &str, data: &Value) -> Value {
    let m = within(WAIT, "a published message", c.recv()).await;
    assert_eq!(m["event"], json!("message"), "not a message frame: {m}");
    assert_eq!(
        m["subscription"],
        json!(subscription),
        "wrong subscription in {m}"
    );
    assert_eq!(&m["data"], data, "wrong data in {m}");
    m
}

/// `ping` round trip: since commands are processed in order and the pong is a reply, the next
/// frame must be the pong (nothing else pending).
async fn expect_pong_next(c: &mut Client) {
    let r = c
        .request(&json!({"event": "ping", "data": "barrier"}))
        .await;
    assert_eq!(r, json!({"event": "pong", "data": "barrier"}));
}

/// Adds `[services.NAME]`.
fn add_service(cfg: &mut Config, name: &str, table: Value) {
    cfg.set_path(&["services", name], table);
}

/// Waits for a log line with this event and level (and matching `extra`), from `mark` on.
async fn wait_warning(env: &TestEnv, mark: usize, event: &str, pred: impl Fn(&Value) -> bool) {
    env.server
        .wait_log_since(
            mark,
            |l| is_event(l, event) && l["level"] == json!("warning") && pred(l),
            WAIT,
        )
        .await;
}

// ------------------------------------------------------------------------------------------
// T-12..T-16: subscription validation
// ------------------------------------------------------------------------------------------

/// T-12 (R-NAME-1, R-NAME-4): missing or falsy `subscription` → `Invalid subscription format.`
/// without a `subscription` key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_subscribe_without_subscription_is_invalid_format() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let want =
        json!({"event": "subscribe", "status": "error", "error": "Invalid subscription format."});
    assert_eq!(c.request(&json!({"event": "subscribe"})).await, want);
    for falsy in [
        json!(null),
        json!(""),
        json!(0),
        json!(false),
        json!([]),
        json!({}),
    ] {
        let r = c
            .request(&json!({"event": "subscribe", "subscription": falsy}))
            .await;
        assert_eq!(r, want, "subscription {falsy}");
    }
    // The same check for message and unsubscribe (R-NAME-4).
    for ev in ["message", "unsubscribe"] {
        let r = c.request(&json!({"event": ev})).await;
        assert_eq!(
            r,
            json!({"event": ev, "status": "error", "error": "Invalid subscription format."})
        );
    }
    env.redis.wait_channels(&[], WAIT).await;
}

/// T-13 (R-NAME-2): a name without `.` (or with an empty part) → `Invalid subscription format.`
/// with the name echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_subscription_without_dot_is_invalid_format() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    for name in ["invalid", ".topic", "simple.", "."] {
        let r = c.request(&sub_cmd(name)).await;
        assert_eq!(
            r,
            err_reply("subscribe", name, "Invalid subscription format."),
            "{name}"
        );
    }
}

/// T-14 (R-NAME-3): unknown service → `Invalid service.` with the name echoed, no extra fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t14_unknown_service_is_invalid_service() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let r = c.request(&sub_cmd("invalid.topic")).await;
    assert_eq!(
        r,
        err_reply("subscribe", "invalid.topic", "Invalid service.")
    );
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "invalid.topic", "extra": "x"}))
        .await;
    assert_eq!(
        r,
        err_reply("subscribe", "invalid.topic", "Invalid service.")
    );
    // Case-sensitive service names.
    let r = c.request(&sub_cmd("Simple.topic")).await;
    assert_eq!(
        r,
        err_reply("subscribe", "Simple.topic", "Invalid service.")
    );
}

/// T-15 (R-SUB-2): anonymous subscribe to a service with the default `require_authentication`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t15_anonymous_subscribe_to_default_service_requires_auth() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let r = c.request(&sub_cmd("empty.topic")).await;
    assert_eq!(
        r,
        err_reply("subscribe", "empty.topic", "Authentication required.")
    );
    expect_pong_next(&mut c).await;
    env.redis.wait_channels(&[], WAIT).await;
}

/// T-16 (R-SUB-3, R-MSG-2, R-UNS-2): duplicate subscribe, message/unsubscribe of a name not
/// subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t16_already_subscribed_and_missing_subscription_errors() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    let r = c.request(&sub_cmd("simple.topic")).await;
    assert_eq!(
        r,
        err_reply("subscribe", "simple.topic", "Already subscribed.")
    );
    let r = c
        .request(&json!({"event": "message", "subscription": "simple.invalid", "data": {"a": 1}}))
        .await;
    assert_eq!(
        r,
        err_reply("message", "simple.invalid", "Subscription does not exist.")
    );
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": "simple.invalid"}))
        .await;
    assert_eq!(
        r,
        err_reply(
            "unsubscribe",
            "simple.invalid",
            "Subscription does not exist."
        )
    );
    // The original subscription is untouched.
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    env.redis
        .publish_json("simple.topic", &service_message("simple.topic", json!(1)))
        .await;
    expect_msg(&mut c, "simple.topic", &json!(1)).await;
}

/// R-AUTH-10 (with R-MSG-2, R-UNS-2): `message` and `unsubscribe` never check authentication:
/// an anonymous session gets `Subscription does not exist.` (not `Authentication required.`)
/// for `empty.x` and `complex.x` (services requiring authentication), no callback is called,
/// and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_auth_10_message_and_unsubscribe_never_check_authentication() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    for name in ["empty.x", "complex.x"] {
        let r = c
            .request(&json!({"event": "message", "subscription": name, "data": {"a": 1}}))
            .await;
        assert_eq!(
            r,
            err_reply("message", name, "Subscription does not exist.")
        );
        let r = c
            .request(&json!({"event": "unsubscribe", "subscription": name}))
            .await;
        assert_eq!(
            r,
            err_reply("unsubscribe", name, "Subscription does not exist.")
        );
    }
    // Subscribing is what checks it (R-SUB-2).
    let r = c.request(&sub_cmd("empty.x")).await;
    assert_eq!(
        r,
        err_reply("subscribe", "empty.x", "Authentication required.")
    );
    expect_pong_next(&mut c).await;
    assert_eq!(env.svc.total_calls(), 0, "calls:\n{}", env.svc.dump());
}

// ------------------------------------------------------------------------------------------
// T-17..T-25: subscribe, publish, unsubscribe without callbacks
// ------------------------------------------------------------------------------------------

/// T-17 (R-SUB-6, R-MSG-3): the channel is held after an anonymous subscribe; `message` without
/// `on_message` gets no reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t17_anonymous_subscribe_holds_channel_and_message_gets_no_reply() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    assert_eq!(env.redis.numsub("simple.topic").await, 1);
    c.send(&json!({"event": "message", "subscription": "simple.topic", "data": {"foo": "bar"}}))
        .await;
    c.expect_silence(QUIET).await;
    expect_pong_next(&mut c).await;
    assert_eq!(env.svc.total_calls(), 0, "no callback configured");
}

/// T-18 (R-PUB-7, R-PUB-9): the delivered frame of a live message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t18_published_message_is_delivered_with_metadata() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    let n = env
        .redis
        .publish_json(
            "simple.topic",
            &json!({"subscription": "simple.topic", "data": {"baz": "foo"}}),
        )
        .await;
    assert_eq!(n, 1, "one Redis subscriber");
    let m = c.recv().await;
    assert_eq!(
        keys(&m),
        key_set(&[
            "event",
            "subscription",
            "data",
            "received_at",
            "queue_size",
            "sent_at"
        ]),
        "{m}"
    );
    assert_eq!(
        strip_delivery_meta(m),
        json!({"event": "message", "subscription": "simple.topic", "data": {"baz": "foo"}})
    );
    c.expect_silence(QUIET).await;
}

/// The Redis subscriber connection (ours, `broker::subscriber`) reads a message far larger than
/// one socket read (2 MiB, taken over many reads) whole, and the small messages published right
/// behind it in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_published_message_and_the_next_ones_arrive_whole_and_in_order() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    let big = json!("x".repeat(2 << 20));
    let ch = "simple.topic";
    env.redis
        .publish_json(ch, &service_message(ch, big.clone()))
        .await;
    for i in 0..50 {
        env.redis
            .publish_json(ch, &service_message(ch, json!(i)))
            .await;
    }
    expect_msg(&mut c, ch, &big).await;
    for i in 0..50 {
        expect_msg(&mut c, ch, &json!(i)).await;
    }
}

/// A burst of subscribes, which the subscriber connection writes to Redis together: each is
/// confirmed, and each channel is live when its client is told `ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_subscribes_is_confirmed_and_live() {
    let env = TestEnv::start().await;
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(env.client().await);
    }
    let replies =
        futures_util::future::join_all(clients.iter_mut().enumerate().map(|(i, c)| async move {
            c.request(&json!({"event": "subscribe", "subscription": format!("simple.t{i}")}))
                .await
        }))
        .await;
    for r in &replies {
        assert_eq!(r["status"], json!("ok"), "{r}");
    }
    for i in 0..40 {
        let ch = format!("simple.t{i}");
        let n = env
            .redis
            .publish_json(&ch, &service_message(&ch, json!(i)))
            .await;
        assert_eq!(n, 1, "{ch}: one Redis subscriber");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        expect_msg(c, &format!("simple.t{i}"), &json!(i)).await;
    }
}

/// T-19 (R-PUB-4, R-PUB-5): a message for another subscription on the channel is not delivered;
/// a non-JSON payload is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t19_other_subscription_and_non_json_payload_are_dropped() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    env.redis
        .publish_json(
            "simple.topic",
            &service_message("simple.othertopic", json!({"n": 1})),
        )
        .await;
    env.redis.publish("simple.topic", "{").await;
    c.expect_silence(QUIET).await;
    env.redis
        .publish_json(
            "simple.topic",
            &service_message("simple.topic", json!({"n": 2})),
        )
        .await;
    expect_msg(&mut c, "simple.topic", &json!({"n": 2})).await;
    c.expect_silence(QUIET).await;
}

/// T-20 (R-FLT-1, R-FLT-2): `session_id: null` reaches the anonymous session, `sess_123` not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_null_filter_reaches_anonymous_session_only() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    env.redis
        .publish_json(
            "simple.topic",
            &json!({"subscription": "simple.topic", "data": "null-filter", "session_id": null}),
        )
        .await;
    let m = expect_msg(&mut c, "simple.topic", &json!("null-filter")).await;
    assert!(m.get("session_id").is_none(), "filter key forwarded: {m}");
    env.redis
        .publish_json(
            "simple.topic",
            &json!({"subscription": "simple.topic", "data": "sess", "session_id": SESSION_ID}),
        )
        .await;
    env.redis
        .publish_json(
            "simple.topic",
            &service_message("simple.topic", json!("marker")),
        )
        .await;
    expect_msg(&mut c, "simple.topic", &json!("marker")).await;
    c.expect_silence(QUIET).await;
}

/// T-21 (R-UNS-4/5, R-PUB-2): unsubscribe reply; the channel is released; nothing more arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_unsubscribe_releases_channel() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": "simple.topic"}))
        .await;
    assert_eq!(r, ok_reply("unsubscribe", "simple.topic"));
    env.redis.wait_channels(&[], WAIT).await;
    let n = env
        .redis
        .publish_json("simple.topic", &service_message("simple.topic", json!(1)))
        .await;
    assert_eq!(n, 0);
    c.expect_silence(QUIET).await;
    // Gone for message/unsubscribe too.
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": "simple.topic"}))
        .await;
    assert_eq!(
        r,
        err_reply(
            "unsubscribe",
            "simple.topic",
            "Subscription does not exist."
        )
    );
}

/// T-22 (R-SUB-2, R-FLT-1): `simple_auth` needs authentication; `session_id` filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t22_simple_auth_requires_auth_and_filters_by_session_id() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let r = c.request(&sub_cmd("simple_auth.topic")).await;
    assert_eq!(
        r,
        err_reply("subscribe", "simple_auth.topic", "Authentication required.")
    );
    authenticate(&mut c).await;
    subscribe_ok(&mut c, "simple_auth.topic").await;
    env.redis.wait_channels(&["simple_auth.topic"], WAIT).await;
    let ch = "simple_auth.topic";
    env.redis
        .publish_json(ch, &service_message(ch, json!("unfiltered")))
        .await;
    expect_msg(&mut c, ch, &json!("unfiltered")).await;
    env.redis
        .publish_json(
            ch,
            &json!({"subscription": ch, "data": "invalid", "session_id": "sess_invalid"}),
        )
        .await;
    env.redis
        .publish_json(
            ch,
            &json!({"subscription": ch, "data": "mine", "session_id": SESSION_ID}),
        )
        .await;
    let m = expect_msg(&mut c, ch, &json!("mine")).await;
    assert!(m.get("session_id").is_none(), "filter key forwarded: {m}");
    c.expect_silence(QUIET).await;
}

/// T-23 (R-EXT, R-FLT-1, R-PUB-7): extra field echoed, used as filter, carried by messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t23_extra_field_is_echoed_filters_and_is_carried() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple.topic", "extra": "bar"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "extra": "bar", "subscription": "simple.topic"})
    );
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    env.redis
        .publish_json(
            "simple.topic",
            &json!({"subscription": "simple.topic", "data": "foo", "extra": "foo"}),
        )
        .await;
    env.redis
        .publish_json(
            "simple.topic",
            &json!({"subscription": "simple.topic", "data": "bar", "extra": "bar"}),
        )
        .await;
    let m = expect_msg(&mut c, "simple.topic", &json!("bar")).await;
    assert_eq!(m["extra"], json!("bar"));
    // Unfiltered messages also carry the extra field.
    env.redis
        .publish_json(
            "simple.topic",
            &service_message("simple.topic", json!("plain")),
        )
        .await;
    let m = expect_msg(&mut c, "simple.topic", &json!("plain")).await;
    assert_eq!(m["extra"], json!("bar"));
    c.expect_silence(QUIET).await;
}

/// T-24 (R-PUB-5, R-LOG-3): a service event lacking `subscription` or `data` is dropped with
/// warning `invalid service event` (`data` = the event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t24_service_event_without_subscription_or_data_is_logged_and_dropped() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    for event in [
        json!({"data": {"a": 1}}),
        json!({"subscription": "simple.topic"}),
        json!({"subscription": "simple.topic", "foo": "bar"}),
    ] {
        let mark = env.server.log_mark();
        env.redis.publish_json("simple.topic", &event).await;
        wait_warning(&env, mark, "invalid service event", |l| l["data"] == event).await;
    }
    env.redis
        .publish_json(
            "simple.topic",
            &service_message("simple.topic", json!("ok")),
        )
        .await;
    expect_msg(&mut c, "simple.topic", &json!("ok")).await;
    c.expect_silence(QUIET).await;
}

/// T-25 (R-PUB-8): unparseable `published_at` → warning, delivered without `published_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t25_invalid_published_at_is_logged_and_omitted() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    let mark = env.server.log_mark();
    env.redis
        .publish_json(
            "simple.topic",
            &json!({"subscription": "simple.topic", "data": "x", "published_at": "not-a-date"}),
        )
        .await;
    let m = expect_msg(&mut c, "simple.topic", &json!("x")).await;
    assert!(m.get("published_at").is_none(), "{m}");
    wait_warning(&env, mark, "invalid published_at format", |l| {
        l["published_at"] == json!("not-a-date")
    })
    .await;
}

// ------------------------------------------------------------------------------------------
// Delivered frame shape (R-PUB-3, R-PUB-7, R-PUB-8, R-PUB-9)
// ------------------------------------------------------------------------------------------

/// R-PUB-3, R-FRM-6: `data` of any JSON type is forwarded as the same JSON value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_data_of_any_json_type_is_forwarded() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    let values = [
        json!(null),
        json!(0),
        json!(-17),
        json!(1.5),
        json!(true),
        json!(false),
        json!(""),
        json!("text with \"quotes\" and ünïcödé ✓"),
        json!([]),
        json!([1, "a", null, [2.5, {"x": false}]]),
        json!({}),
        json!({"b": 1, "a": {"c": [true, null]}}),
    ];
    for v in &values {
        env.redis
            .publish_json("simple.topic", &service_message("simple.topic", v.clone()))
            .await;
    }
    for v in &values {
        let m = expect_msg(&mut c, "simple.topic", v).await;
        assert_eq!(
            keys(&m),
            key_set(&[
                "event",
                "subscription",
                "data",
                "received_at",
                "queue_size",
                "sent_at"
            ]),
            "{m}"
        );
    }
    // Object key order and integer precision are kept (R-FRM-6); raw payloads so that nothing
    // in the test normalises them.
    env.redis
        .publish(
            "simple.topic",
            r#"{"subscription": "simple.topic", "data": {"z": 1, "a": 2, "m": 123456789012345678901234567890, "f": 1.0}}"#,
        )
        .await;
    let m = c.recv().await;
    let data = m["data"].as_object().expect("object data");
    assert_eq!(
        data.keys().cloned().collect::<Vec<_>>(),
        vec!["z", "a", "m", "f"],
        "key order not preserved: {m}"
    );
    assert_eq!(data["m"].to_string(), "123456789012345678901234567890");
    assert_eq!(data["f"].to_string(), "1.0", "float 1.0 must stay a float");
    c.expect_silence(QUIET).await;
}

/// R-PUB-8: `published_at` is normalised like Python `datetime.fromisoformat(..).isoformat()`;
/// `null` is omitted; unparseable strings are omitted (with a warning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_published_at_is_normalised() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    let cases = [
        ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00+00:00"),
        ("2024-01-01", "2024-01-01T00:00:00"),
        (
            "2024-01-01T12:00:00.000000+00:00",
            "2024-01-01T12:00:00+00:00",
        ),
        ("2024-01-01T12:00:00+0000", "2024-01-01T12:00:00+00:00"),
        ("2024-01-01T12:00:00-00:00", "2024-01-01T12:00:00+00:00"),
        ("2024-01-01T12:00:00", "2024-01-01T12:00:00"),
        (
            "2024-01-01T12:00:00.5+05:30",
            "2024-01-01T12:00:00.500000+05:30",
        ),
        ("2024-01-01T12:00:00,25", "2024-01-01T12:00:00.250000"),
        (
            "2024-01-01T12:30:45.123456789",
            "2024-01-01T12:30:45.123456",
        ),
        ("2024-W01-1", "2024-01-01T00:00:00"),
        ("20240101T120000Z", "2024-01-01T12:00:00+00:00"),
    ];
    for (i, (input, _)) in cases.iter().enumerate() {
        env.redis
            .publish_json(
                "simple.topic",
                &json!({"subscription": "simple.topic", "data": i, "published_at": input}),
            )
            .await;
    }
    let mut failures = Vec::new();
    for (i, (input, want)) in cases.iter().enumerate() {
        let m = expect_msg(&mut c, "simple.topic", &json!(i)).await;
        if m.get("published_at") != Some(&json!(want)) {
            failures.push(format!(
                "{input:?} → expected {want:?}, got {:?}",
                m.get("published_at")
            ));
        }
    }
    assert!(failures.is_empty(), "published_at: {failures:#?}");
    // null → omitted, without a warning.
    let mark = env.server.log_mark();
    env.redis
        .publish_json(
            "simple.topic",
            &json!({"subscription": "simple.topic", "data": "null", "published_at": null}),
        )
        .await;
    let m = expect_msg(&mut c, "simple.topic", &json!("null")).await;
    assert!(m.get("published_at").is_none(), "{m}");
    // Unparseable → omitted, warning.
    for bad in ["", "yesterday", "2024-13-01", "2024-01-01T25:00:00"] {
        env.redis
            .publish_json(
                "simple.topic",
                &json!({"subscription": "simple.topic", "data": bad, "published_at": bad}),
            )
            .await;
        let m = expect_msg(&mut c, "simple.topic", &json!(bad)).await;
        assert!(m.get("published_at").is_none(), "{bad:?}: {m}");
        wait_warning(&env, mark, "invalid published_at format", |l| {
            l["published_at"] == json!(bad)
        })
        .await;
    }
    assert!(
        !env.server
            .logs_since(mark)
            .iter()
            .any(|l| is_event(l, "invalid published_at format")
                && l["published_at"] == json!(null)),
        "null published_at must not be logged as invalid"
    );
}

/// R-PUB-9: `received_at`/`sent_at` are ISO UTC with `+00:00`, `received_at <= sent_at`, close to
/// now; `queue_size` an integer >= 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_metadata_timestamps_and_queue_size() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    for i in 0..20 {
        let before = now_micros();
        env.redis
            .publish_json("simple.topic", &service_message("simple.topic", json!(i)))
            .await;
        let m = expect_msg(&mut c, "simple.topic", &json!(i)).await;
        let after = now_micros();
        let received = m["received_at"]
            .as_str()
            .unwrap_or_else(|| panic!("received_at missing: {m}"));
        let sent = m["sent_at"]
            .as_str()
            .unwrap_or_else(|| panic!("sent_at missing: {m}"));
        assert!(
            received.ends_with("+00:00") && sent.ends_with("+00:00"),
            "{m}"
        );
        let r = iso_utc_micros(received).unwrap_or_else(|| panic!("bad received_at: {m}"));
        let s = iso_utc_micros(sent).unwrap_or_else(|| panic!("bad sent_at: {m}"));
        assert!(r <= s, "received_at > sent_at: {m}");
        // Same clock; a generous second of slack either side.
        assert!(
            r >= before - 1_000_000 && s <= after + 1_000_000,
            "timestamps far from now: {m}"
        );
        assert!(
            m["queue_size"].as_u64().is_some(),
            "queue_size not a non-negative integer: {m}"
        );
    }
}

/// R-PUB-7: extra fields are in the frame; `options`, filter keys and other publisher keys are
/// never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_carries_extra_fields_but_no_publisher_keys() {
    let env = TestEnv::start().await;
    let mut with_extra = env.client().await;
    let r = with_extra
        .request(&json!({"event": "subscribe", "subscription": "simple.topic", "extra": "bar", "other": 1}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "extra": "bar", "subscription": "simple.topic"})
    );
    let mut plain = env.client().await;
    subscribe_ok(&mut plain, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    // Passes both sessions' filters: session_id null (anonymous), no `extra` key.
    env.redis
        .publish_json(
            "simple.topic",
            &json!({
                "subscription": "simple.topic",
                "data": {"d": 1},
                "options": {"order": 1, "order_key": "k", "throttle": 0, "throttle_key": "t"},
                "session_id": null,
                "foo": "bar",
                "other": 2,
                "event": "spoofed",
                "received_at": "spoofed",
                "published_at": "2024-01-01T00:00:00Z",
            }),
        )
        .await;
    for (c, extra) in [(&mut with_extra, true), (&mut plain, false)] {
        let m = expect_msg(c, "simple.topic", &json!({"d": 1})).await;
        let mut want = vec![
            "event",
            "subscription",
            "data",
            "published_at",
            "received_at",
            "queue_size",
            "sent_at",
        ];
        if extra {
            want.push("extra");
        }
        assert_eq!(keys(&m), key_set(&want), "{m}");
        assert_eq!(m["event"], json!("message"));
        assert_eq!(m["published_at"], json!("2024-01-01T00:00:00+00:00"));
        assert_iso_utc_value(&m["received_at"]);
        if extra {
            assert_eq!(m["extra"], json!("bar"));
        }
    }
    // A message matching the extra filter only reaches the session with that extra value.
    env.redis
        .publish_json(
            "simple.topic",
            &json!({"subscription": "simple.topic", "data": "x", "extra": "bar"}),
        )
        .await;
    let m = expect_msg(&mut with_extra, "simple.topic", &json!("x")).await;
    assert_eq!(m["extra"], json!("bar"));
    plain.expect_silence(QUIET).await;
}

// ------------------------------------------------------------------------------------------
// R-PUB-4: routing by the message's own `subscription`
// ------------------------------------------------------------------------------------------

/// R-PUB-4 [quirk]: a message on channel `simple.a` whose `subscription` is `simple.b` reaches
/// the sessions holding both, as a `simple.b` message, and not sessions holding only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_pub_4_message_is_routed_by_its_own_subscription() {
    let env = TestEnv::start().await;
    let mut both = env.client().await;
    subscribe_ok(&mut both, "simple.a").await;
    let r = both
        .request(&json!({"event": "subscribe", "subscription": "simple.b", "extra": "eb"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "extra": "eb", "subscription": "simple.b"})
    );
    let mut only_a = env.client().await;
    subscribe_ok(&mut only_a, "simple.a").await;
    let mut only_b = env.client().await;
    subscribe_ok(&mut only_b, "simple.b").await;
    env.redis
        .wait_channels(&["simple.a", "simple.b"], WAIT)
        .await;
    env.redis
        .publish_json("simple.a", &service_message("simple.b", json!("quirk")))
        .await;
    let m = expect_msg(&mut both, "simple.b", &json!("quirk")).await;
    // Delivered as a simple.b message: with simple.b's extra fields.
    assert_eq!(m["extra"], json!("eb"), "{m}");
    only_a.expect_silence(QUIET).await;
    only_b.expect_silence(QUIET).await;
    // Ordinary routing still works for everybody.
    env.redis
        .publish_json("simple.a", &service_message("simple.a", json!("a")))
        .await;
    expect_msg(&mut both, "simple.a", &json!("a")).await;
    expect_msg(&mut only_a, "simple.a", &json!("a")).await;
    env.redis
        .publish_json("simple.b", &service_message("simple.b", json!("b")))
        .await;
    expect_msg(&mut both, "simple.b", &json!("b")).await;
    expect_msg(&mut only_b, "simple.b", &json!("b")).await;
    both.expect_silence(QUIET).await;
    only_a.expect_silence(QUIET).await;
    only_b.expect_silence(QUIET).await;
}

// ------------------------------------------------------------------------------------------
// R-PUB-5: malformed publisher messages
// ------------------------------------------------------------------------------------------

/// R-PUB-5: every malformed message is dropped and a following good message is delivered;
/// `options` that is a string or an array counts as no options.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_pub_5_malformed_messages_are_dropped_without_side_effects() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    let ch = "simple.topic";
    enum Log {
        Decode,
        Invalid(Value),
        Any,
    }
    let bad: Vec<(Vec<u8>, Log)> = vec![
        (b"{".to_vec(), Log::Decode),
        (b"".to_vec(), Log::Decode),
        (b"not json".to_vec(), Log::Decode),
        (
            b"{\"subscription\": \"simple.topic\", \"data\": \"\xff\xfe\"}".to_vec(),
            Log::Decode,
        ),
        (b"[1, 2]".to_vec(), Log::Invalid(json!([1, 2]))),
        (b"\"simple.topic\"".to_vec(), Log::Invalid(json!("simple.topic"))),
        (b"null".to_vec(), Log::Invalid(json!(null))),
        (b"42".to_vec(), Log::Invalid(json!(42))),
        (
            br#"{"data": 1}"#.to_vec(),
            Log::Invalid(json!({"data": 1})),
        ),
        (
            br#"{"subscription": "simple.topic"}"#.to_vec(),
            Log::Invalid(json!({"subscription": "simple.topic"})),
        ),
        (br#"{"subscription": 5, "data": 1}"#.to_vec(), Log::Any),
        (br#"{"subscription": null, "data": 1}"#.to_vec(), Log::Any),
        (
            br#"{"subscription": ["simple.topic"], "data": 1}"#.to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": {"simple.topic": 1}, "data": 1}"#.to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "options": null}"#.to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "options": 5}"#.to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "options": 0.5}"#.to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "options": true}"#.to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "options": false}"#.to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "options": {"order": 1, "order_key": [1]}}"#
                .to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "options": {"order": "2", "order_key": {"a": 1}}}"#
                .to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "options": {"throttle": 0.1, "throttle_key": []}}"#
                .to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "options": {"throttle": 1, "throttle_key": {}}}"#
                .to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "published_at": 5}"#.to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "published_at": true}"#.to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "published_at": ["2024-01-01"]}"#
                .to_vec(),
            Log::Any,
        ),
        (
            br#"{"subscription": "simple.topic", "data": 1, "published_at": {}}"#.to_vec(),
            Log::Any,
        ),
    ];
    for (i, (payload, log)) in bad.iter().enumerate() {
        let mark = env.server.log_mark();
        env.redis.publish_bytes(ch, payload).await;
        env.redis
            .publish_json(ch, &service_message(ch, json!({"good": i})))
            .await;
        let m = within(WAIT, "the good message", c.recv()).await;
        assert_eq!(
            m["data"],
            json!({"good": i}),
            "after malformed payload {:?} the next frame should be the good message, got {m}",
            String::from_utf8_lossy(payload)
        );
        match log {
            Log::Decode => {
                env.server
                    .wait_log_since(
                        mark,
                        |l| {
                            (is_event(l, "JSONDecodeError")
                                || is_event(l, "unhandled exception in receiver"))
                                && l["level"] == json!("error")
                        },
                        WAIT,
                    )
                    .await;
            }
            Log::Invalid(event) => {
                wait_warning(&env, mark, "invalid service event", |l| &l["data"] == event).await;
            }
            Log::Any => {}
        }
    }
    // Delivered: options that are a string or an array are no options; an invalid order makes the
    // message unordered and its (unhashable) order_key is ignored (R-OOO-1).
    let delivered = [
        json!({"subscription": ch, "data": "s", "options": "order"}),
        json!({"subscription": ch, "data": "a", "options": [1, 2]}),
        json!({"subscription": ch, "data": "o", "options": {}}),
        json!({"subscription": ch, "data": "k", "options": {"order": "invalid", "order_key": [1]}}),
        json!({"subscription": ch, "data": "t", "options": {"throttle": null, "throttle_key": {}}}),
        json!({"subscription": ch, "data": null}),
    ];
    for msg in &delivered {
        env.redis.publish_json(ch, msg).await;
        let m = expect_msg(&mut c, ch, &msg["data"]).await;
        assert!(m.get("options").is_none(), "{m}");
    }
    c.expect_silence(QUIET).await;
    expect_pong_next(&mut c).await;
    // Other sessions and new subscriptions are unaffected.
    let mut c2 = env.client().await;
    subscribe_ok(&mut c2, ch).await;
    env.redis
        .publish_json(ch, &service_message(ch, json!("end")))
        .await;
    expect_msg(&mut c, ch, &json!("end")).await;
    expect_msg(&mut c2, ch, &json!("end")).await;
}

// ------------------------------------------------------------------------------------------
// Channel lifecycle (R-PUB-1, R-PUB-2, R-END-3, R-DEF-1, R-PUB-10)
// ------------------------------------------------------------------------------------------

/// R-PUB-2, R-PUB-10, R-END-3: one channel per name however many sessions hold it; every holder
/// receives; it goes away only when the last holder lets go (unsubscribe or disconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_one_per_name_until_last_holder_leaves() {
    let env = TestEnv::start().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = env.client().await;
        subscribe_ok(&mut c, "simple.topic").await;
        clients.push(c);
    }
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    assert_eq!(env.redis.numsub("simple.topic").await, 1);
    let n = env
        .redis
        .publish_json("simple.topic", &service_message("simple.topic", json!(1)))
        .await;
    assert_eq!(n, 1, "one Redis subscription for three sessions");
    for c in clients.iter_mut() {
        expect_msg(c, "simple.topic", &json!(1)).await;
    }
    let mut c3 = clients.pop().unwrap();
    let mut c2 = clients.pop().unwrap();
    let mut c1 = clients.pop().unwrap();
    // 1: unsubscribes.
    let r = c1
        .request(&json!({"event": "unsubscribe", "subscription": "simple.topic"}))
        .await;
    assert_eq!(r, ok_reply("unsubscribe", "simple.topic"));
    expect_pong_next(&mut c1).await;
    assert_eq!(env.redis.pubsub_channels().await, vec!["simple.topic"]);
    // 2: closes.
    c2.close().await;
    env.redis
        .publish_json("simple.topic", &service_message("simple.topic", json!(2)))
        .await;
    expect_msg(&mut c3, "simple.topic", &json!(2)).await;
    c1.expect_silence(QUIET).await;
    assert_eq!(env.redis.pubsub_channels().await, vec!["simple.topic"]);
    // 3: the last holder disconnects abruptly → released.
    c3.abort().await;
    env.redis.wait_channels(&[], WAIT).await;
}

/// R-PUB-2, R-END-3: a session that disconnects releases its channels only where it was the
/// last holder; the others keep receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_released_on_disconnect_only_when_last() {
    let env = TestEnv::start().await;
    let mut a = env.client().await;
    subscribe_ok(&mut a, "simple.shared").await;
    subscribe_ok(&mut a, "simple.mine").await;
    let mut b = env.client().await;
    subscribe_ok(&mut b, "simple.shared").await;
    env.redis
        .wait_channels(&["simple.mine", "simple.shared"], WAIT)
        .await;
    a.close().await;
    env.redis.wait_channels(&["simple.shared"], WAIT).await;
    env.redis
        .publish_json(
            "simple.shared",
            &service_message("simple.shared", json!("still")),
        )
        .await;
    expect_msg(&mut b, "simple.shared", &json!("still")).await;
    b.abort().await;
    env.redis.wait_channels(&[], WAIT).await;
}

/// R-DEF-1, R-PUB-2: refused subscribes (authorizer error, `before_subscribe` error, unusable
/// `before_subscribe` answer) leave no channel and no holder behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_not_held_after_refused_subscribe() {
    let env = TestEnv::start().await;
    // Authorizer refusal.
    env.svc.set("/authorizer/authorizer", Reply::error());
    let mut c = env.auth_client().await;
    let r = c.request(&sub_cmd("authorizer.topic")).await;
    assert_eq!(
        r,
        err_reply("subscribe", "authorizer.topic", "Unauthorized.")
    );
    expect_pong_next(&mut c).await;
    env.redis.wait_channels(&[], WAIT).await;

    // before_subscribe refusal.
    let bs = "/simple_before_subscribe/before_subscribe";
    let name = "simple_before_subscribe.topic";
    env.svc.push(bs, Reply::error_text("nope"));
    let r = c.request(&sub_cmd(name)).await;
    assert_eq!(r, err_reply("subscribe", name, "nope"));
    env.redis.wait_channels(&[], WAIT).await;
    // The refused session is not a holder: another session's unsubscribe releases the channel.
    let mut other = env.client().await;
    subscribe_ok(&mut other, name).await;
    env.redis.wait_channels(&[name], WAIT).await;
    let r = other
        .request(&json!({"event": "unsubscribe", "subscription": name}))
        .await;
    assert_eq!(r, ok_reply("unsubscribe", name));
    env.redis.wait_channels(&[], WAIT).await;

    // before_subscribe unreachable (Service unavailable.): same.
    env.svc.push(bs, Reply::close());
    let r = c.request(&sub_cmd(name)).await;
    assert_eq!(r, err_reply("subscribe", name, "Service unavailable."));
    env.redis.wait_channels(&[], WAIT).await;

    // Unusable before_subscribe answer (R-RESP-6): error reply, connection closed, no channel.
    env.svc.push(bs, Reply::raw("application/json", "[1]"));
    let r = c.request(&sub_cmd(name)).await;
    assert_eq!(r, err_reply("subscribe", name, "Unhandled exception."));
    let code = c.recv_close(WAIT).await;
    assert_eq!(code, Some(1000));
    env.redis.wait_channels(&[], WAIT).await;
}

/// R-PUB-1: `channel_prefix = "app1:"` → channel `app1:simple.topic`; publishes on the
/// unprefixed channel do not arrive; the message's `subscription` is the unprefixed name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_prefix_is_prepended() {
    let env = TestEnv::start_with(|cfg| {
        cfg.set("redis.channel_prefix", "app1:");
    })
    .await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["app1:simple.topic"], WAIT).await;
    let n = env
        .redis
        .publish_json(
            "simple.topic",
            &service_message("simple.topic", json!("bare")),
        )
        .await;
    assert_eq!(n, 0);
    env.redis
        .publish_json(
            "app1:simple.topic",
            &service_message("app1:simple.topic", json!("prefixed-sub")),
        )
        .await;
    c.expect_silence(QUIET).await;
    env.redis
        .publish_json(
            "app1:simple.topic",
            &service_message("simple.topic", json!("ok")),
        )
        .await;
    let m = expect_msg(&mut c, "simple.topic", &json!("ok")).await;
    assert_eq!(m["subscription"], json!("simple.topic"));
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": "simple.topic"}))
        .await;
    assert_eq!(r, ok_reply("unsubscribe", "simple.topic"));
    env.redis.wait_channels(&[], WAIT).await;
}

/// R-PUB-2: rapid unsubscribe/subscribe cycles keep the channel state consistent (UNSUBSCRIBE and
/// SUBSCRIBE reach Redis in decision order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_resubscribe_cycles_stay_consistent() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    for _ in 0..25 {
        subscribe_ok(&mut c, "simple.topic").await;
        let r = c
            .request(&json!({"event": "unsubscribe", "subscription": "simple.topic"}))
            .await;
        assert_eq!(r, ok_reply("unsubscribe", "simple.topic"));
    }
    env.redis.wait_channels(&[], WAIT).await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    // Stays subscribed (no late UNSUBSCRIBE).
    sleep_ms(200).await;
    assert_eq!(env.redis.pubsub_channels().await, vec!["simple.topic"]);
    env.redis
        .publish_json("simple.topic", &service_message("simple.topic", json!("x")))
        .await;
    expect_msg(&mut c, "simple.topic", &json!("x")).await;
}

/// R-ORD-6, R-END-2, R-PUB-2: a client that disconnects while its subscribe waits for
/// `before_subscribe` leaves no channel behind once the command completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_released_when_client_leaves_during_subscribe() {
    let env = TestEnv::start().await;
    let bs = "/simple_before_subscribe/before_subscribe";
    let name = "simple_before_subscribe.topic";
    env.svc.push(bs, Reply::ok().delay(ms(500)));
    let mut c = env.client().await;
    c.send(&sub_cmd(name)).await;
    env.svc.wait_calls(bs, 1, WAIT).await;
    env.redis.wait_channels(&[name], WAIT).await;
    c.abort().await;
    env.redis.wait_channels(&[], WAIT).await;
}

/// R-PUB-2, R-END-2/3: 200 sessions × 5 subscriptions (250 distinct channels) subscribe, then
/// disconnect — half with a close frame, half abruptly — without leaking a Redis channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_no_leak_with_many_sessions() {
    let env = TestEnv::start().await;
    let url = env.server.ws_url();
    let names = |i: usize| -> Vec<String> {
        (0..5)
            .map(|j| format!("simple.t{}_{}", i % 50, j))
            .collect()
    };
    let connect = (0..200).map(|i| {
        let url = url.clone();
        let names = names(i);
        async move {
            let mut c = Client::connect(&url).await;
            for n in &names {
                let r = within(WAIT, "subscribe reply", c.request(&sub_cmd(n))).await;
                assert_eq!(r, ok_reply("subscribe", n), "session {i}");
            }
            c
        }
    });
    let clients = futures_util::future::join_all(connect).await;
    let mut all: Vec<String> = (0..50).flat_map(names).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 250);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    env.redis.wait_channels(&refs, secs(20.0)).await;
    let disconnect = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| async move {
            if i % 2 == 0 {
                c.close().await;
            } else {
                c.abort().await;
            }
        });
    futures_util::future::join_all(disconnect).await;
    env.redis.wait_channels(&[], secs(30.0)).await;
    // The server is still fine.
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.t0_0").await;
    env.redis.wait_channels(&["simple.t0_0"], WAIT).await;
}

// ------------------------------------------------------------------------------------------
// R-SUB-10 / R-DEF-1: buffering while before_subscribe runs
// ------------------------------------------------------------------------------------------

/// R-SUB-10, R-PUB-9: a message published while `before_subscribe` runs is delivered right
/// after the ok reply, without `received_at`/`queue_size` but with `sent_at`; a message
/// published before the subscribe started is never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_sub_10_message_published_during_before_subscribe_follows_the_reply() {
    let env = TestEnv::start().await;
    let bs = "/simple_before_subscribe/before_subscribe";
    let name = "simple_before_subscribe.topic";
    // Another session already holds the channel, so the early message does reach the server.
    let mut holder = env.client().await;
    subscribe_ok(&mut holder, name).await;
    env.redis.wait_channels(&[name], WAIT).await;
    env.redis
        .publish_json(name, &service_message(name, json!("before")))
        .await;
    expect_msg(&mut holder, name, &json!("before")).await;

    env.svc.push(bs, Reply::ok().delay(ms(600)));
    let mut c = env.client().await;
    c.send(&sub_cmd(name)).await;
    env.svc.wait_calls(bs, 2, WAIT).await;
    env.redis
        .publish_json(
            name,
            &json!({"subscription": name, "data": "during", "published_at": "2024-01-01"}),
        )
        .await;
    expect_msg(&mut holder, name, &json!("during")).await;
    let r = within(WAIT, "subscribe reply", c.recv()).await;
    assert_eq!(r, ok_reply("subscribe", name), "the reply comes first");
    let m = expect_msg(&mut c, name, &json!("during")).await;
    // Assumption: buffered deliveries go through the normal frame (R-PUB-7), so `published_at`
    // is kept; only received_at/queue_size are absent (R-PUB-9).
    assert_eq!(
        keys(&m),
        key_set(&["event", "subscription", "data", "published_at", "sent_at"]),
        "{m}"
    );
    assert_eq!(m["published_at"], json!("2024-01-01T00:00:00"));
    assert_iso_utc_value(&m["sent_at"]);
    // Later messages are live again.
    env.redis
        .publish_json(name, &service_message(name, json!("after")))
        .await;
    let m = expect_msg(&mut c, name, &json!("after")).await;
    assert!(
        m.get("received_at").is_some() && m.get("queue_size").is_some(),
        "{m}"
    );
    c.expect_silence(QUIET).await;
}

/// R-SUB-10: several buffered messages are delivered in arrival order after the reply, and the
/// per-message pipeline (filters) applies to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_sub_10_buffered_messages_keep_order_and_are_filtered() {
    let env = TestEnv::start_with_env(|cfg, _, svc| {
        add_service(
            cfg,
            "filtered_bs",
            json!({
                "require_authentication": false,
                "filter_fields": ["session_id"],
                "before_subscribe": svc.url("/filtered_bs/before_subscribe"),
            }),
        );
    })
    .await;
    let bs = "/filtered_bs/before_subscribe";
    let name = "filtered_bs.topic";
    env.svc.push(bs, Reply::ok().delay(ms(500)));
    let mut c = env.client().await;
    c.send(&sub_cmd(name)).await;
    env.svc.wait_calls(bs, 1, WAIT).await;
    for i in 0..5 {
        env.redis
            .publish_json(name, &service_message(name, json!(i)))
            .await;
        env.redis
            .publish_json(
                name,
                &json!({"subscription": name, "data": "filtered", "session_id": "someone"}),
            )
            .await;
    }
    let r = within(WAIT, "subscribe reply", c.recv()).await;
    assert_eq!(r, ok_reply("subscribe", name));
    for i in 0..5 {
        let m = expect_msg(&mut c, name, &json!(i)).await;
        assert!(m.get("received_at").is_none(), "{m}");
    }
    c.expect_silence(QUIET).await;
}

/// R-DEF-1: when `before_subscribe` refuses (after a delay during which messages are
/// published), those messages are never delivered — not after a later successful subscribe of
/// the same name, nor of another name (a buffered message whose `subscription` names it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_def_1_refused_subscribe_discards_buffered_messages() {
    let env = TestEnv::start().await;
    let bs = "/simple_before_subscribe/before_subscribe";
    let x = "simple_before_subscribe.x";
    let y = "simple_before_subscribe.y";
    env.svc.push(
        bs,
        Reply::error_text("before subscribe error").delay(ms(500)),
    );
    let mut c = env.client().await;
    c.send(&sub_cmd(x)).await;
    env.svc.wait_calls(bs, 1, WAIT).await;
    env.redis.wait_channels(&[x], WAIT).await;
    env.redis
        .publish_json(x, &service_message(x, json!("lost-x")))
        .await;
    env.redis
        .publish_json(x, &service_message(y, json!("lost-y")))
        .await;
    let r = within(WAIT, "subscribe reply", c.recv()).await;
    assert_eq!(r, err_reply("subscribe", x, "before subscribe error"));
    env.redis.wait_channels(&[], WAIT).await;
    c.expect_silence(QUIET).await;

    // Another name whose messages were buffered under x's channel (R-PUB-4 quirk).
    let r = c.request(&sub_cmd(y)).await;
    assert_eq!(r, ok_reply("subscribe", y));
    c.expect_silence(QUIET).await;
    // The same name.
    let r = c.request(&sub_cmd(x)).await;
    assert_eq!(r, ok_reply("subscribe", x));
    c.expect_silence(QUIET).await;
    // Live messages work.
    env.redis.wait_channels(&[x, y], WAIT).await;
    env.redis
        .publish_json(x, &service_message(x, json!("live-x")))
        .await;
    expect_msg(&mut c, x, &json!("live-x")).await;
    env.redis
        .publish_json(x, &service_message(y, json!("live-y")))
        .await;
    expect_msg(&mut c, y, &json!("live-y")).await;
    c.expect_silence(QUIET).await;
}

// ------------------------------------------------------------------------------------------
// R-SUB-9: the before_subscribe answer
// ------------------------------------------------------------------------------------------

/// R-SUB-9: `data` of any non-null value is carried by the ok reply; `null` → no data key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_sub_9_before_subscribe_data_is_carried_by_the_reply() {
    let env = TestEnv::start().await;
    let bs = "/simple_before_subscribe/before_subscribe";
    let values = [
        json!(0),
        json!(""),
        json!([]),
        json!({}),
        json!(false),
        json!("text"),
        json!([1, {"a": null}]),
        json!({"foo": "subscribe"}),
    ];
    let mut c = env.client().await;
    for (i, v) in values.iter().enumerate() {
        let name = format!("simple_before_subscribe.d{i}");
        env.svc.push(bs, Reply::ok_data(v.clone()));
        let r = c.request(&sub_cmd(&name)).await;
        assert_eq!(
            r,
            json!({"event": "subscribe", "status": "ok", "data": v, "subscription": name}),
            "data {v}"
        );
    }
    env.svc.push(bs, Reply::ok_data(json!(null)));
    let r = c.request(&sub_cmd("simple_before_subscribe.null")).await;
    assert_eq!(r, ok_reply("subscribe", "simple_before_subscribe.null"));
}

/// R-SUB-9 [quirk]: a `before_subscribe` answer whose filter field mismatches suppresses the
/// reply, yet the subscription is active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_sub_9_filter_mismatch_in_before_subscribe_answer_suppresses_reply() {
    let env = TestEnv::start_with_env(|cfg, _, svc| {
        add_service(
            cfg,
            "filtered_bs",
            json!({
                "require_authentication": false,
                "extra_fields": ["extra"],
                "filter_fields": ["session_id", "extra"],
                "before_subscribe": svc.url("/filtered_bs/before_subscribe"),
            }),
        );
    })
    .await;
    let bs = "/filtered_bs/before_subscribe";
    let mut c = env.client().await;

    // Auth-field mismatch (anonymous session: session_id is null).
    let name = "filtered_bs.topic";
    env.svc.push(
        bs,
        Reply::json(json!({"status": "ok", "session_id": "someone", "data": {"x": 1}})),
    );
    c.send(&sub_cmd(name)).await;
    c.expect_silence(QUIET).await;
    expect_pong_next(&mut c).await;
    assert_eq!(env.svc.calls(bs), 1);
    let r = c.request(&sub_cmd(name)).await;
    assert_eq!(r, err_reply("subscribe", name, "Already subscribed."));
    assert_eq!(env.svc.calls(bs), 1, "no second before_subscribe");
    env.redis.wait_channels(&[name], WAIT).await;
    env.redis
        .publish_json(name, &service_message(name, json!("delivered")))
        .await;
    expect_msg(&mut c, name, &json!("delivered")).await;
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": name}))
        .await;
    assert_eq!(r, ok_reply("unsubscribe", name));

    // Extra-field mismatch.
    let name = "filtered_bs.extra";
    env.svc
        .push(bs, Reply::json(json!({"status": "ok", "extra": "other"})));
    c.send(&json!({"event": "subscribe", "subscription": name, "extra": "mine"}))
        .await;
    c.expect_silence(QUIET).await;
    expect_pong_next(&mut c).await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": name, "extra": "changed"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "error", "error": "Already subscribed.", "extra": "mine", "subscription": name})
    );

    // Matching filter fields → normal reply with data.
    let name = "filtered_bs.match";
    env.svc.push(
        bs,
        Reply::json(json!({"status": "ok", "session_id": null, "extra": "mine", "data": 7})),
    );
    let r = c
        .request(&json!({"event": "subscribe", "subscription": name, "extra": "mine"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "extra": "mine", "data": 7, "subscription": name})
    );
}

// ------------------------------------------------------------------------------------------
// R-EXT: extra fields
// ------------------------------------------------------------------------------------------

/// R-EXT-1, R-EXT-3: only listed extra fields are captured, stored and sent with messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ext_1_only_listed_extra_fields_are_captured() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple.topic", "extra": {"k": [1, 2]}, "other": "x", "session_id": "s"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "extra": {"k": [1, 2]}, "subscription": "simple.topic"})
    );
    // Services without extra_fields never echo any.
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple_before_subscribe.t", "extra": "x"}))
        .await;
    assert_eq!(r, ok_reply("subscribe", "simple_before_subscribe.t"));
    env.redis
        .wait_channels(&["simple.topic", "simple_before_subscribe.t"], WAIT)
        .await;
    env.redis
        .publish_json("simple.topic", &service_message("simple.topic", json!(1)))
        .await;
    let m = expect_msg(&mut c, "simple.topic", &json!(1)).await;
    assert_eq!(m["extra"], json!({"k": [1, 2]}));
    assert!(
        m.get("other").is_none() && m.get("session_id").is_none(),
        "{m}"
    );
    // Extra value null is captured too (key present).
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple.null", "extra": null}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "extra": null, "subscription": "simple.null"})
    );
}

/// R-EXT-2: stored extra fields win over values sent with later `message`, `unsubscribe` or a
/// duplicate `subscribe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ext_2_stored_extra_fields_win() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    let name = "complex.topic";
    let r = c
        .request(&json!({"event": "subscribe", "subscription": name, "extra": "hello"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "extra": "hello", "subscription": name})
    );
    let r = c
        .request(&json!({"event": "subscribe", "subscription": name, "extra": "again"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "error", "error": "Already subscribed.", "extra": "hello", "subscription": name})
    );
    env.svc
        .push("/complex/on_message", Reply::error_text("msg error"));
    let r = c
        .request(
            &json!({"event": "message", "subscription": name, "extra": "irrelevant", "data": 1}),
        )
        .await;
    assert_eq!(
        r,
        json!({"event": "message", "status": "error", "error": "msg error", "extra": "hello", "subscription": name})
    );
    assert_eq!(
        env.svc.bodies("/complex/on_message"),
        vec![json!({"subscription": name, "extra": "hello", "session_id": SESSION_ID, "data": 1})]
    );
    // A published message carries the stored value.
    env.redis.wait_channels(&[name], WAIT).await;
    env.redis
        .publish_json(name, &service_message(name, json!("m")))
        .await;
    let m = expect_msg(&mut c, name, &json!("m")).await;
    assert_eq!(m["extra"], json!("hello"));
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": name, "extra": "bye"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "unsubscribe", "status": "ok", "extra": "hello", "subscription": name})
    );
    env.svc.wait_calls("/complex/on_unsubscribe", 1, WAIT).await;
    assert_eq!(
        env.svc.bodies("/complex/before_unsubscribe")[0]["extra"],
        json!("hello")
    );
}

/// R-EXT-2, R-RPL-4: error replies for a name without an active subscription echo the
/// command's own configured extra fields (`Authentication required.`,
/// `Subscription does not exist.`); format/service errors carry none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ext_2_error_replies_echo_the_commands_own_extra_fields() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "authorizer.topic", "extra": "e1", "other": "o"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "error", "error": "Authentication required.", "extra": "e1", "subscription": "authorizer.topic"})
    );
    assert_eq!(env.svc.calls("/authorizer/authorizer"), 0);
    // A service without extra_fields echoes none.
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "empty.topic", "extra": "e1"}))
        .await;
    assert_eq!(
        r,
        err_reply("subscribe", "empty.topic", "Authentication required.")
    );
    for ev in ["message", "unsubscribe"] {
        let r = c
            .request(
                &json!({"event": ev, "subscription": "simple.topic", "extra": [ev], "other": 1}),
            )
            .await;
        assert_eq!(
            r,
            json!({"event": ev, "status": "error", "error": "Subscription does not exist.", "extra": [ev], "subscription": "simple.topic"})
        );
    }
    // After an unsubscribe the name is no longer active: the command's own value again.
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple.topic", "extra": "stored"}))
        .await;
    assert_eq!(r["status"], json!("ok"));
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": "simple.topic", "extra": "x"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "unsubscribe", "status": "ok", "extra": "stored", "subscription": "simple.topic"})
    );
    let r = c
        .request(&json!({"event": "message", "subscription": "simple.topic", "extra": "own"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "message", "status": "error", "error": "Subscription does not exist.", "extra": "own", "subscription": "simple.topic"})
    );
    // Without the key, no extra field.
    let r = c
        .request(&json!({"event": "message", "subscription": "simple.topic"}))
        .await;
    assert_eq!(
        r,
        err_reply("message", "simple.topic", "Subscription does not exist.")
    );
    // Format and service errors never carry extra fields.
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple", "extra": "x"}))
        .await;
    assert_eq!(
        r,
        err_reply("subscribe", "simple", "Invalid subscription format.")
    );
}

// ------------------------------------------------------------------------------------------
// R-FLT: filter equality
// ------------------------------------------------------------------------------------------

/// Authenticates with a one-shot validation answer `{"status": "ok", "session_id": v}`.
async fn auth_client_with_session(env: &TestEnv, v: Value) -> Client {
    env.svc.push(
        "/auth",
        Reply::json(json!({"status": "ok", "session_id": v})),
    );
    env.auth_client().await
}

/// R-FLT-2: numbers compare by value, `true == 1`, `false == 0`, objects compare
/// order-independently, strings exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_flt_2_python_equality_of_filter_values() {
    let env = TestEnv::start().await;
    let ch = "simple_auth.topic";
    let mut float_one = auth_client_with_session(&env, json!(1.0)).await;
    let mut true_one = auth_client_with_session(&env, json!(true)).await;
    let mut int_one = auth_client_with_session(&env, json!(1)).await;
    let mut zero = auth_client_with_session(&env, json!(false)).await;
    let mut dict = auth_client_with_session(&env, json!({"a": 1, "b": [2, "x"]})).await;
    for c in [
        &mut float_one,
        &mut true_one,
        &mut int_one,
        &mut zero,
        &mut dict,
    ] {
        subscribe_ok(c, ch).await;
    }
    env.redis.wait_channels(&[ch], WAIT).await;
    let publish = |sid: Value, data: &'static str| {
        let msg = json!({"subscription": ch, "data": data, "session_id": sid});
        let redis = &env.redis;
        async move {
            redis.publish_json(ch, &msg).await;
        }
    };
    publish(json!(1), "int").await;
    publish(json!(1.0), "float").await;
    publish(json!(true), "true").await;
    publish(json!("1"), "string").await;
    publish(json!(2), "two").await;
    publish(json!(0), "zero").await;
    publish(json!(0.0), "zero-float").await;
    publish(json!({"b": [2, "x"], "a": 1}), "dict-reordered").await;
    publish(json!({"a": 1.0, "b": [2.0, "x"]}), "dict-floats").await;
    publish(json!({"a": 1, "b": [2, "y"]}), "dict-other").await;
    publish(json!({"a": 1}), "dict-partial").await;
    publish(json!(null), "null").await;
    env.redis
        .publish_json(ch, &service_message(ch, json!("marker")))
        .await;
    let ones = ["int", "float", "true", "marker"];
    for (c, want) in [
        (&mut float_one, &ones[..]),
        (&mut true_one, &ones[..]),
        (&mut int_one, &ones[..]),
        (&mut zero, &["zero", "zero-float", "marker"][..]),
        (&mut dict, &["dict-reordered", "dict-floats", "marker"][..]),
    ] {
        let mut got = Vec::new();
        loop {
            let m = within(WAIT, "filtered messages", c.recv()).await;
            let d = m["data"].as_str().unwrap_or_default().to_string();
            got.push(d.clone());
            if d == "marker" {
                break;
            }
        }
        assert_eq!(got, want, "deliveries");
        c.expect_silence(QUIET).await;
    }
}

/// R-FLT-1/2: `null` only matches an absent or null field; an authenticated session whose
/// `session_id` is null is matched by `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_flt_2_null_matches_only_absent_or_null() {
    let env = TestEnv::start().await;
    let ch = "simple.topic";
    let mut anon = env.client().await;
    subscribe_ok(&mut anon, ch).await;
    let mut authed = env.auth_client().await;
    subscribe_ok(&mut authed, ch).await;
    let mut null_sid = auth_client_with_session(&env, json!(null)).await;
    // Authenticated (non-empty auth map) even though the value is null (R-AUTH-7).
    subscribe_ok(&mut null_sid, "simple_auth.topic").await;
    subscribe_ok(&mut null_sid, ch).await;
    env.redis
        .wait_channels(&[ch, "simple_auth.topic"], WAIT)
        .await;
    for (sid, data) in [
        (json!(null), "null"),
        (json!(SESSION_ID), "sess"),
        (json!(""), "empty"),
        (json!(0), "zero"),
        (json!(false), "false"),
    ] {
        env.redis
            .publish_json(
                ch,
                &json!({"subscription": ch, "data": data, "session_id": sid}),
            )
            .await;
    }
    env.redis
        .publish_json(ch, &service_message(ch, json!("marker")))
        .await;
    for (c, want) in [
        (&mut anon, vec!["null", "marker"]),
        (&mut authed, vec!["sess", "marker"]),
        (&mut null_sid, vec!["null", "marker"]),
    ] {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let m = within(WAIT, "filtered messages", c.recv()).await;
            got.push(m["data"].as_str().unwrap_or_default().to_string());
        }
        assert_eq!(got, want);
        c.expect_silence(QUIET).await;
    }
}

/// R-FLT-1: a filter field that is also an extra field compares with the subscription's extra
/// value (`null` when the client did not supply it), never with the auth field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_flt_1_filter_field_that_is_an_extra_field_uses_the_extra_value() {
    let env = TestEnv::start_with(|cfg| {
        add_service(
            cfg,
            "extra_sid",
            json!({
                "require_authentication": true,
                "extra_fields": ["session_id"],
                "filter_fields": ["session_id"],
            }),
        );
    })
    .await;
    // `simple`: extra is both an extra field and a filter field.
    let ch = "simple.topic";
    let mut no_extra = env.client().await;
    subscribe_ok(&mut no_extra, ch).await;
    let mut bar = env.client().await;
    let r = bar
        .request(&json!({"event": "subscribe", "subscription": ch, "extra": "bar"}))
        .await;
    assert_eq!(r["status"], json!("ok"));
    env.redis.wait_channels(&[ch], WAIT).await;
    for (extra, data) in [
        (json!(null), "null"),
        (json!("bar"), "bar"),
        (json!("foo"), "foo"),
    ] {
        env.redis
            .publish_json(
                ch,
                &json!({"subscription": ch, "data": data, "extra": extra}),
            )
            .await;
    }
    env.redis
        .publish_json(ch, &service_message(ch, json!("marker")))
        .await;
    for (c, want) in [
        (&mut no_extra, vec!["null", "marker"]),
        (&mut bar, vec!["bar", "marker"]),
    ] {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let m = within(WAIT, "filtered messages", c.recv()).await;
            got.push(m["data"].as_str().unwrap_or_default().to_string());
        }
        assert_eq!(got, want);
        c.expect_silence(QUIET).await;
    }

    // `extra_sid`: session_id is an auth field AND an extra field: the extra value decides.
    let ch = "extra_sid.topic";
    let mut unset = env.auth_client().await;
    subscribe_ok(&mut unset, ch).await;
    let mut mine = env.auth_client().await;
    let r = mine
        .request(&json!({"event": "subscribe", "subscription": ch, "session_id": "mine"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "session_id": "mine", "subscription": ch})
    );
    env.redis.wait_channels(&["simple.topic", ch], WAIT).await;
    for (sid, data) in [
        (json!(SESSION_ID), "auth-value"),
        (json!("mine"), "mine"),
        (json!(null), "null"),
    ] {
        env.redis
            .publish_json(
                ch,
                &json!({"subscription": ch, "data": data, "session_id": sid}),
            )
            .await;
    }
    env.redis
        .publish_json(ch, &service_message(ch, json!("marker")))
        .await;
    for (c, want) in [
        (&mut unset, vec!["null", "marker"]),
        (&mut mine, vec!["mine", "marker"]),
    ] {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let m = within(WAIT, "filtered messages", c.recv()).await;
            got.push(m["data"].as_str().unwrap_or_default().to_string());
        }
        assert_eq!(got, want);
        c.expect_silence(QUIET).await;
    }
}

// ------------------------------------------------------------------------------------------
// R-RED-3 / T-50: [redis_alt]
// ------------------------------------------------------------------------------------------

/// T-50 (R-RED-3, R-PUB-1, R-ORD-5): with `[redis_alt]` on the same Redis (prefix `alt:`), both
/// channels are subscribed, messages on both are delivered in order, without de-duplication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_redis_alt_delivers_from_both_channels() {
    let env = TestEnv::start_with_env(|cfg, redis, _| {
        cfg.set(
            "redis_alt",
            json!({
                "host": "127.0.0.1",
                "port": redis.port(),
                "channel_prefix": "alt:",
                "ping_interval": 10,
                "ping_timeout": 5,
            }),
        );
    })
    .await;
    let ch = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, ch).await;
    env.redis
        .wait_channels(&["alt:simple.topic", "simple.topic"], WAIT)
        .await;
    assert_eq!(env.redis.numsub("simple.topic").await, 1);
    assert_eq!(env.redis.numsub("alt:simple.topic").await, 1);
    // T-50: one on each, in order.
    env.redis
        .publish_json("simple.topic", &service_message(ch, json!(1)))
        .await;
    expect_msg(&mut c, ch, &json!(1)).await;
    env.redis
        .publish_json("alt:simple.topic", &service_message(ch, json!(2)))
        .await;
    expect_msg(&mut c, ch, &json!(2)).await;
    // No de-duplication: the same message on both arrives twice.
    let same = json!({"subscription": ch, "data": "dup"});
    env.redis.publish_json("simple.topic", &same).await;
    env.redis.publish_json("alt:simple.topic", &same).await;
    expect_msg(&mut c, ch, &json!("dup")).await;
    expect_msg(&mut c, ch, &json!("dup")).await;
    // Per-connection order is kept when both are interleaved (R-ORD-5).
    for i in 0..20 {
        env.redis
            .publish_json("simple.topic", &service_message(ch, json!(["main", i])))
            .await;
        env.redis
            .publish_json("alt:simple.topic", &service_message(ch, json!(["alt", i])))
            .await;
    }
    let got = c.recv_n(40).await;
    for src in ["main", "alt"] {
        let seq: Vec<i64> = got
            .iter()
            .filter(|m| m["data"][0] == json!(src))
            .map(|m| m["data"][1].as_i64().unwrap())
            .collect();
        assert_eq!(seq, (0..20).collect::<Vec<_>>(), "{src} order");
    }
    c.expect_silence(QUIET).await;
    // Unsubscribe releases both.
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": ch}))
        .await;
    assert_eq!(r, ok_reply("unsubscribe", ch));
    env.redis.wait_channels(&[], WAIT).await;
}

// ------------------------------------------------------------------------------------------
// R-ORD-4/5
// ------------------------------------------------------------------------------------------

/// R-ORD-4: a push is delivered while a command of the same session waits for its callback,
/// i.e. before that command's reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ord_4_pushes_interleave_with_pending_reply() {
    let env = TestEnv::start().await;
    let bs = "/simple_before_subscribe/before_subscribe";
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    env.svc.push(bs, Reply::ok().delay(ms(800)));
    c.send(&sub_cmd("simple_before_subscribe.slow")).await;
    env.svc.wait_calls(bs, 1, WAIT).await;
    env.redis
        .publish_json(
            "simple.topic",
            &service_message("simple.topic", json!("push")),
        )
        .await;
    let first = within(WAIT, "first frame", c.recv()).await;
    assert_eq!(first["event"], json!("message"), "push first: {first}");
    assert_eq!(first["data"], json!("push"));
    let second = within(WAIT, "subscribe reply", c.recv()).await;
    assert_eq!(
        second,
        ok_reply("subscribe", "simple_before_subscribe.slow")
    );
}

/// R-ORD-5: 1000 messages published in one burst arrive in publish order, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ord_5_thousand_messages_arrive_in_order() {
    let env = TestEnv::start().await;
    let ch = "simple.topic";
    let mut c = env.client().await;
    subscribe_ok(&mut c, ch).await;
    env.redis.wait_channels(&[ch], WAIT).await;
    let client = redis::Client::open(env.redis.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("PUBLISH")
            .arg(ch)
            .arg(service_message(ch, json!({"n": i})).to_string())
            .ignore();
    }
    let () = pipe
        .query_async(&mut conn)
        .await
        .expect("pipelined PUBLISH");
    for i in 0..1000 {
        let m = within(WAIT, "message", c.recv()).await;
        assert_eq!(m["data"], json!({"n": i}), "message #{i} out of order");
        assert!(m["queue_size"].as_u64().is_some(), "{m}");
    }
    c.expect_silence(QUIET).await;
}

// ------------------------------------------------------------------------------------------
// Additional frame / lifecycle corner cases
// ------------------------------------------------------------------------------------------

/// R-PUB-7 [quirk]: extra fields overwrite same-named frame keys (`event`, `data`,
/// `published_at`, `queue_size`), except `sent_at`, which is always last and real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_extra_fields_overwrite_frame_keys_except_sent_at() {
    let env = TestEnv::start_with(|cfg| {
        add_service(
            cfg,
            "collide",
            json!({
                "require_authentication": false,
                "extra_fields": ["event", "data", "published_at", "queue_size", "sent_at"],
            }),
        );
    })
    .await;
    let ch = "collide.topic";
    let mut c = env.client().await;
    let r = c
        .request(&json!({
            "event": "subscribe",
            "subscription": ch,
            "data": "extra-data",
            "published_at": "extra-pub",
            "queue_size": "extra-q",
            "sent_at": "extra-sent",
        }))
        .await;
    assert_eq!(r["status"], json!("ok"), "{r}");
    env.redis.wait_channels(&[ch], WAIT).await;
    env.redis
        .publish_json(
            ch,
            &json!({"subscription": ch, "data": "real", "published_at": "2024-01-01"}),
        )
        .await;
    let m = within(WAIT, "message", c.recv()).await;
    // The subscribe command's own `event` value was captured as an extra field.
    assert_eq!(m["event"], json!("subscribe"), "{m}");
    assert_eq!(m["subscription"], json!(ch), "{m}");
    assert_eq!(m["data"], json!("extra-data"), "{m}");
    assert_eq!(m["published_at"], json!("extra-pub"), "{m}");
    assert_eq!(m["queue_size"], json!("extra-q"), "{m}");
    assert_iso_utc_value(&m["sent_at"]);
    assert_iso_utc_value(&m["received_at"]);
}

/// R-FRM-6, R-PUB-3: duplicate keys in a published message resolve to the last occurrence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_duplicate_publisher_keys_resolve_to_last() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "simple.topic").await;
    env.redis.wait_channels(&["simple.topic"], WAIT).await;
    env.redis
        .publish(
            "simple.topic",
            r#"{"subscription": "simple.other", "data": 1, "subscription": "simple.topic", "data": {"k": 1, "k": 2}}"#,
        )
        .await;
    expect_msg(&mut c, "simple.topic", &json!({"k": 2})).await;
}

/// R-NAME-2, R-PUB-1: names are opaque (dots in the topic, non-ASCII, spaces, long names); the
/// channel is exactly the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_names_are_opaque() {
    let env = TestEnv::start().await;
    let long = format!("simple.{}", "x".repeat(5000));
    let names = [
        "simple.a.b.c".to_string(),
        "simple.tópico ✓ with spaces".to_string(),
        "simple.*".to_string(),
        long,
    ];
    let mut c = env.client().await;
    for n in &names {
        subscribe_ok(&mut c, n).await;
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.redis.wait_channels(&refs, WAIT).await;
    for n in &names {
        let got = env
            .redis
            .publish_json(n, &service_message(n, json!("hi")))
            .await;
        assert_eq!(got, 1, "{n}");
        expect_msg(&mut c, n, &json!("hi")).await;
    }
    // A pattern-like name is a plain channel (no PSUBSCRIBE): publishing elsewhere does not match.
    env.redis
        .publish_json("simple.abc", &service_message("simple.*", json!("no")))
        .await;
    c.expect_silence(QUIET).await;
    c.close().await;
    env.redis.wait_channels(&[], WAIT).await;
}

/// R-PUB-2, R-DEF-1: the channel stays while any session holds OR is acquiring the name: a
/// holder leaving during another session's `before_subscribe` does not drop it, and a refused
/// acquirer does not drop it while another session holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_kept_while_another_session_holds_or_acquires() {
    let env = TestEnv::start().await;
    let bs = "/simple_before_subscribe/before_subscribe";
    let name = "simple_before_subscribe.topic";

    // Holder leaves while the acquirer waits for before_subscribe.
    let mut holder = env.client().await;
    subscribe_ok(&mut holder, name).await;
    env.svc.push(bs, Reply::ok().delay(ms(600)));
    let mut acquirer = env.client().await;
    acquirer.send(&sub_cmd(name)).await;
    env.svc.wait_calls(bs, 2, WAIT).await;
    let r = holder
        .request(&json!({"event": "unsubscribe", "subscription": name}))
        .await;
    assert_eq!(r, ok_reply("unsubscribe", name));
    expect_pong_next(&mut holder).await;
    assert_eq!(env.redis.pubsub_channels().await, vec![name]);
    env.redis
        .publish_json(name, &service_message(name, json!("buffered")))
        .await;
    let r = within(WAIT, "subscribe reply", acquirer.recv()).await;
    assert_eq!(r, ok_reply("subscribe", name));
    expect_msg(&mut acquirer, name, &json!("buffered")).await;
    env.redis
        .publish_json(name, &service_message(name, json!("live")))
        .await;
    expect_msg(&mut acquirer, name, &json!("live")).await;
    holder.expect_silence(QUIET).await;

    // A refused acquirer leaves while another session holds the channel.
    env.svc.push(bs, Reply::error().delay(ms(300)));
    let mut refused = env.client().await;
    refused.send(&sub_cmd(name)).await;
    env.svc.wait_calls(bs, 3, WAIT).await;
    let r = within(WAIT, "subscribe reply", refused.recv()).await;
    assert_eq!(r, err_reply("subscribe", name, "Unhandled exception."));
    expect_pong_next(&mut refused).await;
    assert_eq!(env.redis.pubsub_channels().await, vec![name]);
    env.redis
        .publish_json(name, &service_message(name, json!("still")))
        .await;
    expect_msg(&mut acquirer, name, &json!("still")).await;
    refused.expect_silence(QUIET).await;
    acquirer.abort().await;
    env.redis.wait_channels(&[], WAIT).await;
}

// ------------------------------------------------------------------------------------------
// ws.write_coalesce (not in the reference: fewer, larger socket writes under load)
// ------------------------------------------------------------------------------------------

/// `ws.write_coalesce`: the first push after a pause is written at once; pushes that follow
/// within the window wait for its end and go out together, in order; a reply ends the wait
/// and comes after the pushes queued before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_coalesce_batches_pushes_but_never_delays_replies() {
    let env = TestEnv::start_with(|c| {
        c.set("ws.write_coalesce", 1.0);
    })
    .await;
    let name = "simple.co";
    let mut c = env.client().await;
    subscribe_ok(&mut c, name).await;
    env.redis.wait_channels(&[name], WAIT).await;
    // The subscribe reply opened a window: let it pass.
    sleep_ms(1200).await;

    let t0 = Instant::now();
    env.redis
        .publish_json(name, &service_message(name, json!("a")))
        .await;
    expect_msg(&mut c, name, &json!("a")).await;
    let first = t0.elapsed();
    assert!(
        first < ms(500),
        "the first push after a pause took {first:?}"
    );

    // Within the window: held until it ends (about 1 s after "a" was written).
    let t1 = Instant::now();
    for d in ["b", "c"] {
        env.redis
            .publish_json(name, &service_message(name, json!(d)))
            .await;
    }
    c.expect_silence(ms(400)).await;
    expect_msg(&mut c, name, &json!("b")).await;
    expect_msg(&mut c, name, &json!("c")).await;
    let held = t1.elapsed();
    assert!(
        held >= ms(500) && held < secs(3.0),
        "coalesced pushes arrived after {held:?}"
    );

    // A new window is open: a push waits, a reply ends the wait and follows it.
    env.redis
        .publish_json(name, &service_message(name, json!("d")))
        .await;
    c.expect_silence(ms(300)).await;
    let t2 = Instant::now();
    c.send(&json!({"event": "ping", "data": "now"})).await;
    expect_msg(&mut c, name, &json!("d")).await;
    let r = within(WAIT, "pong", c.recv()).await;
    assert_eq!(r, json!({"event": "pong", "data": "now"}));
    let replied = t2.elapsed();
    assert!(replied < ms(500), "the reply waited {replied:?}");
}

/// `ws.write_coalesce`: a backlog of 16 KiB is written without waiting for the window's end, so
/// a burst is not held back (and cannot push a reading client over the slow-consumer limit);
/// only its tail, under 16 KiB, waits for the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_coalesce_does_not_hold_back_a_burst() {
    let env = TestEnv::start_with(|c| {
        c.set("ws.write_coalesce", 5.0);
    })
    .await;
    let name = "simple.burst";
    let mut c = env.client().await;
    subscribe_ok(&mut c, name).await;
    env.redis.wait_channels(&[name], WAIT).await;
    // The subscribe reply opened a 5 s window; 64 messages of ~1 KiB are 4 times the backlog
    // that ends it.
    let t = Instant::now();
    let pad = "x".repeat(1000);
    for i in 0..64 {
        env.redis
            .publish_json(name, &service_message(name, json!({"i": i, "pad": pad})))
            .await;
    }
    // At most 16 KiB (13 of these frames) is held: the first 48 come at once.
    for i in 0..48 {
        let m = within(WAIT, "a burst message", c.recv()).await;
        assert_eq!(m["data"]["i"], json!(i), "{m}");
    }
    let took = t.elapsed();
    assert!(took < secs(2.5), "the burst was held back for {took:?}");
    // The tail follows when the window ends, 5 s after the last batch was taken: longer than
    // `recv`'s own 5 s timeout from the moment the head was read (a CI run lost that race).
    for i in 48..64 {
        let m = c
            .recv_timeout(secs(10.0))
            .await
            .unwrap_or_else(|| panic!("the burst's tail: message {i} not within 10 s"));
        assert_eq!(m["data"]["i"], json!(i), "{m}");
    }
}

/// `ws.write_coalesce = 0` writes every batch at once (the behaviour without the setting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_coalesce_zero_writes_at_once() {
    let env = TestEnv::start_with(|c| {
        c.set("ws.write_coalesce", 0);
    })
    .await;
    let name = "simple.nco";
    let mut c = env.client().await;
    subscribe_ok(&mut c, name).await;
    env.redis.wait_channels(&[name], WAIT).await;
    for d in 0..20 {
        let t = Instant::now();
        env.redis
            .publish_json(name, &service_message(name, json!(d)))
            .await;
        expect_msg(&mut c, name, &json!(d)).await;
        assert!(t.elapsed() < ms(500), "push {d} took {:?}", t.elapsed());
    }
}
