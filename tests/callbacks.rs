//! Service callbacks over real sockets: authorizer and complex-service callbacks (§21 T-26..T-30,
//! T-34..T-41, T-52), reply/response rules (R-MSG-4, R-RESP-1..6, R-BODY-1), HTTP behaviour
//! (R-HTTP-1..8, T-49), session end (R-END-2, R-DEF-4) and command ordering (R-ORD-1/3/4/6).
//!
//! Every test starts its own Redis, mock service and server. Callback URLs of the §21
//! configuration are `/<service>/<callback>` on the mock service.
mod common;
use common::*;

use std::time::Instant;

/// Generous timeout for things that must happen.
const LONG: Duration = Duration::from_secs(10);
/// Short window for things that must not happen.
const QUIET: Duration = Duration::from_millis(300);

// ------------------------------------------------------------------------------------------
// Local helpers
// ------------------------------------------------------------------------------------------

fn subscribe(name: &str) -> Value {
    json!({"event": "subscribe", "subscription": name})
}

fn subscribe_extra(name: &str, extra: &str) -> Value {
    json!({"event": "subscribe", "subscription": name, "extra": extra})
}

fn unsubscribe(name: &str) -> Value {
    json!({"event": "unsubscribe", "subscription": name})
}

fn ok_reply(event: &str, name: &str) -> Value {
    json!({"event": event, "status": "ok", "subscription": name})
}

fn ok_reply_extra(event: &str, name: &str, extra: &str) -> Value {
    json!({"event": event, "status": "ok", "extra": extra, "subscription": name})
}

fn err_reply(event: &str, name: &str, error: Value) -> Value {
    json!({"event": event, "status": "error", "error": error, "subscription": name})
}

fn err_reply_extra(event: &str, name: &str, error: Value, extra: &str) -> Value {
    json!({"event": event, "status": "error", "error": error, "extra": extra, "subscription": name})
}

/// Sends a ping and asserts that the very next frame is its pong: proves that the previous
/// command produced no (further) reply (R-ORD-1/2).
async fn expect_pong_next(c: &mut Client, tag: &str) {
    let r = c.request(&json!({"event": "ping", "data": tag})).await;
    assert_eq!(
        r,
        json!({"event": "pong", "data": tag}),
        "expected only the pong (no other reply) [{tag}]"
    );
}

/// Sends `cmd` and returns the reply and the time it took.
async fn timed_request(c: &mut Client, cmd: &Value) -> (Value, f64) {
    let t0 = Instant::now();
    let r = c.request(cmd).await;
    (r, t0.elapsed().as_secs_f64())
}

/// Seconds between two mock requests' arrivals.
fn gap(a: &Request, b: &Request) -> f64 {
    b.at.saturating_duration_since(a.at).as_secs_f64()
}

/// The `subscription` of a callback body ("" if none).
fn body_sub(r: &Request) -> String {
    r.body
        .get("subscription")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Paths of every request whose body names `sub`, in arrival order.
fn trace_for(svc: &MockService, sub: &str) -> Vec<String> {
    svc.all_requests()
        .into_iter()
        .filter(|r| body_sub(r) == sub)
        .map(|r| r.path)
        .collect()
}

/// Requests to `path` whose body names `sub`.
fn requests_for(svc: &MockService, path: &str, sub: &str) -> Vec<Request> {
    svc.requests(path)
        .into_iter()
        .filter(|r| body_sub(r) == sub)
        .collect()
}

/// (path, subscription) of every request to an `*unsubscribe` path, in arrival order.
fn unsub_trace(svc: &MockService) -> Vec<(String, String)> {
    svc.all_requests()
        .into_iter()
        .filter(|r| r.path.ends_with("unsubscribe"))
        .map(|r| {
            let s = body_sub(&r);
            (r.path, s)
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Waits until at least `n` requests to `path` name `sub`.
async fn wait_sub_calls(svc: &MockService, path: &str, sub: &str, n: usize) {
    let what = format!("{n} request(s) to {path} for {sub}");
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        if requests_for(svc, path, sub).len() >= n {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}; requests:\n{}", svc.dump());
        }
        sleep_ms(10).await;
    }
}

/// Waits until the mock has received at least `n` requests in total.
async fn wait_total(svc: &MockService, n: usize) {
    let deadline = tokio::time::Instant::now() + LONG;
    while svc.total_calls() < n {
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out waiting for {n} request(s); requests:\n{}",
                svc.dump()
            );
        }
        sleep_ms(10).await;
    }
}

/// 200 answers with a JSON content type whose body is unusable (R-RESP-6).
fn unusable_replies() -> Vec<(&'static str, Reply)> {
    vec![
        ("empty body", Reply::raw("application/json", "")),
        (
            "invalid JSON",
            Reply::raw("application/json", "{\"status\": \"ok\""),
        ),
        (
            "array",
            Reply::raw("application/json", "[{\"status\": \"ok\"}]"),
        ),
        ("string", Reply::raw("application/json", "\"ok\"")),
        ("null", Reply::raw("application/json", "null")),
    ]
}

/// Asserts the R-RESP-6 ending: the given error reply, then a close frame with code 1000.
async fn expect_unhandled_then_close(c: &mut Client, want: Value, what: &str) {
    let r = c.recv().await;
    assert_eq!(r, want, "unusable answer ({what}): error reply");
    let code = c.recv_close(LONG).await;
    assert_eq!(
        code,
        Some(1000),
        "unusable answer ({what}): close code after the error reply"
    );
}

/// `socketshark_connection_count` from the Prometheus endpoint.
async fn connection_gauge(port: u16) -> f64 {
    let resp = http_get(port, "/metrics").await;
    prom_value(&resp.body, "socketshark_connection_count")
        .unwrap_or_else(|| panic!("no socketshark_connection_count in:\n{}", resp.body))
}

async fn wait_gauge(port: u16, want: f64) {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let v = connection_gauge(port).await;
        if v == want {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("socketshark_connection_count stayed {v}, expected {want}");
        }
        sleep_ms(20).await;
    }
}

fn sbs(topic: &str) -> String {
    format!("simple_before_subscribe.{topic}")
}

const SBS_PATH: &str = "/simple_before_subscribe/before_subscribe";

// ------------------------------------------------------------------------------------------
// Authorizer (T-26..T-30)
// ------------------------------------------------------------------------------------------

/// T-26 (R-SUB-2, R-EXT-2): an unauthenticated subscribe to a service with an authorizer is
/// refused before the authorizer is called; the reply echoes the command's extra fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t26_authorizer_requires_authentication() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let r = c.request(&subscribe("authorizer.topic")).await;
    assert_eq!(
        r,
        err_reply(
            "subscribe",
            "authorizer.topic",
            json!("Authentication required.")
        )
    );
    let r = c.request(&subscribe_extra("authorizer.topic", "foo")).await;
    assert_eq!(
        r,
        err_reply_extra(
            "subscribe",
            "authorizer.topic",
            json!("Authentication required."),
            "foo"
        )
    );
    env.svc
        .expect_no_more_calls("/authorizer/authorizer", 0, QUIET)
        .await;
    assert_eq!(
        env.svc.total_calls(),
        0,
        "no callback at all:\n{}",
        env.svc.dump()
    );
}

/// T-27 (R-SUB-5, R-HTTP-8): an unreachable authorizer gives `Service unavailable.`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t27_authorizer_unreachable() {
    let env = TestEnv::start_with(|c| {
        c.set("services.authorizer.authorizer", unreachable_url("/authz"));
    })
    .await;
    let mut c = env.auth_client().await;
    let r = c.request(&subscribe_extra("authorizer.topic", "foo")).await;
    assert_eq!(
        r,
        err_reply_extra(
            "subscribe",
            "authorizer.topic",
            json!("Service unavailable."),
            "foo"
        )
    );
    // The refused subscription left nothing behind (R-DEF-1): the same name can be retried.
    let r = c.request(&subscribe("authorizer.topic")).await;
    assert_eq!(
        r,
        err_reply(
            "subscribe",
            "authorizer.topic",
            json!("Service unavailable.")
        )
    );
    env.redis.wait_channels(&[], LONG).await;
}

/// T-28 (R-SUB-5, R-RESP-2): authorizer errors: default `Unauthorized.`, else the given text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_authorizer_error_replies() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    env.svc.set("/authorizer/authorizer", Reply::error());
    let r = c.request(&subscribe("authorizer.topic")).await;
    assert_eq!(
        r,
        err_reply("subscribe", "authorizer.topic", json!("Unauthorized."))
    );
    env.svc
        .set("/authorizer/authorizer", Reply::error_text("test error"));
    let r = c.request(&subscribe("authorizer.topic")).await;
    assert_eq!(
        r,
        err_reply("subscribe", "authorizer.topic", json!("test error"))
    );
    // With a truthy `data` the error reply carries it (R-SUB-5, R-RESP-3).
    env.svc.set(
        "/authorizer/authorizer",
        Reply::json(json!({"status": "error", "error": "nope", "data": {"why": 1}})),
    );
    let r = c.request(&subscribe_extra("authorizer.topic", "e")).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "error", "error": "nope", "extra": "e",
               "data": {"why": 1}, "subscription": "authorizer.topic"})
    );
    assert_eq!(env.svc.calls("/authorizer/authorizer"), 3);
    env.redis.wait_channels(&[], LONG).await;
}

/// T-29 (R-EXT-1, R-BODY-1): an ok authorizer answer gives an ok reply echoing only the
/// configured extra field; the authorizer body is `{subscription, session_id}` (+ `extra`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t29_authorizer_ok_echoes_extra_fields() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    let r = c
        .request(
            &json!({"event": "subscribe", "subscription": "authorizer.topic",
                         "extra": "foo", "other": "bar"}),
        )
        .await;
    assert_eq!(r, ok_reply_extra("subscribe", "authorizer.topic", "foo"));
    // Authorizer `data` is not part of the subscribe reply (R-RESP-5, R-SUB-9).
    env.svc.set(
        "/authorizer/authorizer",
        Reply::json(json!({"status": "ok", "data": {"not": "forwarded"}})),
    );
    let r = c.request(&subscribe("authorizer.topic2")).await;
    assert_eq!(r, ok_reply("subscribe", "authorizer.topic2"));
    assert_eq!(
        env.svc.bodies("/authorizer/authorizer"),
        vec![
            json!({"subscription": "authorizer.topic", "session_id": "sess_123", "extra": "foo"}),
            json!({"subscription": "authorizer.topic2", "session_id": "sess_123"}),
        ]
    );
}

/// T-30 (R-BODY-3, R-SHUT-1, R-END-2, R-SUB-13): authorizer fields reach every later callback;
/// at shutdown `before_unsubscribe` then `on_unsubscribe` are called once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_authorizer_fields_in_callback_bodies() {
    let env = TestEnv::start().await;
    env.svc.set(
        "/complex/authorizer",
        Reply::json(json!({"status": "ok", "capabilities": "foo", "plan_type": "bar"})),
    );
    let mut c = env.auth_client().await;
    let r = c.request(&subscribe("complex.topic")).await;
    assert_eq!(r, ok_reply("subscribe", "complex.topic"));
    expect_pong_next(&mut c, "after subscribe").await;
    env.server.stop(LONG).await;
    assert_eq!(
        env.svc.bodies("/complex/authorizer"),
        vec![json!({"subscription": "complex.topic", "session_id": "sess_123"})]
    );
    let want =
        json!({"subscription": "complex.topic", "session_id": "sess_123", "capabilities": "foo"});
    for cb in [
        "before_subscribe",
        "on_subscribe",
        "before_unsubscribe",
        "on_unsubscribe",
    ] {
        assert_eq!(
            env.svc.bodies(&format!("/complex/{cb}")),
            vec![want.clone()],
            "{cb}"
        );
    }
    assert_eq!(
        env.svc.paths(),
        vec![
            "/auth",
            "/complex/authorizer",
            "/complex/before_subscribe",
            "/complex/on_subscribe",
            "/complex/before_unsubscribe",
            "/complex/on_unsubscribe",
        ]
    );
}

/// R-BODY-1: body precedence: auth fields beat authorizer fields beat extra fields; the
/// subscribe-time authorizer call carries no authorizer fields (R-BODY-3); `on_message`'s `data`
/// is the command's. The same keys appear as extra, authorizer and auth fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_body_1_field_precedence() {
    let env = TestEnv::start_with_env(|cfg, _, svc| {
        let u = |cb: &str| svc.url(&format!("/prec/{cb}"));
        cfg.set(
            "services.prec",
            json!({
                "require_authentication": true,
                "authorizer": u("authorizer"),
                "authorizer_fields": ["session_id", "capabilities"],
                "extra_fields": ["session_id", "capabilities", "extra"],
                "before_subscribe": u("before_subscribe"),
                "on_subscribe": u("on_subscribe"),
                "on_message": u("on_message"),
                "before_unsubscribe": u("before_unsubscribe"),
                "on_unsubscribe": u("on_unsubscribe"),
            }),
        );
    })
    .await;
    env.svc.set(
        "/prec/authorizer",
        Reply::json(json!({"status": "ok", "session_id": "from_authorizer",
                           "capabilities": "from_authorizer", "other": "ignored"})),
    );
    let mut c = env.auth_client().await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "prec.topic",
                         "session_id": "from_client", "capabilities": "from_client",
                         "extra": "from_client", "unlisted": "x"}))
        .await;
    // The reply carries the stored extra fields verbatim (R-RPL-3, R-EXT-2).
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "session_id": "from_client",
               "capabilities": "from_client", "extra": "from_client",
               "subscription": "prec.topic"})
    );
    c.send(&json!({"event": "message", "subscription": "prec.topic", "data": {"n": 5}}))
        .await;
    expect_pong_next(&mut c, "after message").await;
    let r = c.request(&unsubscribe("prec.topic")).await;
    assert_eq!(
        r,
        json!({"event": "unsubscribe", "status": "ok", "session_id": "from_client",
               "capabilities": "from_client", "extra": "from_client",
               "subscription": "prec.topic"})
    );
    expect_pong_next(&mut c, "after unsubscribe").await;

    assert_eq!(
        env.svc.bodies("/prec/authorizer"),
        vec![
            json!({"subscription": "prec.topic", "session_id": "sess_123",
                    "capabilities": "from_client", "extra": "from_client"})
        ],
        "authorizer: auth field beats extra field; no authorizer fields yet"
    );
    let later = json!({"subscription": "prec.topic", "session_id": "sess_123",
                       "capabilities": "from_authorizer", "extra": "from_client"});
    for cb in [
        "before_subscribe",
        "on_subscribe",
        "before_unsubscribe",
        "on_unsubscribe",
    ] {
        assert_eq!(
            env.svc.bodies(&format!("/prec/{cb}")),
            vec![later.clone()],
            "{cb}: auth > authorizer > extra"
        );
    }
    let mut with_data = later.clone();
    with_data["data"] = json!({"n": 5});
    assert_eq!(env.svc.bodies("/prec/on_message"), vec![with_data]);
}

/// R-AUTH-5, R-RESP-1..3: ticket-validation errors: default `Authentication failed.` (also for
/// `"OK"` and a missing status), `error` forwarded verbatim (even `null` or a number), never any
/// `data`; a failed auth leaves the session unauthenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_auth_5_validation_error_replies() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "error",
            json!({"status": "error", "session_id": "x", "foo": "y"}),
            json!("Authentication failed."),
        ),
        (
            "status OK",
            json!({"status": "OK", "session_id": "x"}),
            json!("Authentication failed."),
        ),
        (
            "missing status",
            json!({"session_id": "x"}),
            json!("Authentication failed."),
        ),
        (
            "error null",
            json!({"status": "error", "error": null}),
            Value::Null,
        ),
        (
            "error 42",
            json!({"status": "error", "error": 42}),
            json!(42),
        ),
        (
            "error with data",
            json!({"status": "error", "error": "bad ticket", "data": {"a": 1}}),
            json!("bad ticket"),
        ),
    ];
    for (what, answer, error) in cases {
        env.svc.set("/auth", Reply::json(answer));
        let r = c
            .request(&json!({"event": "auth", "ticket": "some_ticket"}))
            .await;
        assert_eq!(
            r,
            json!({"event": "auth", "status": "error", "error": error}),
            "{what}"
        );
        let r = c.request(&subscribe("complex.topic")).await;
        assert_eq!(
            r,
            err_reply(
                "subscribe",
                "complex.topic",
                json!("Authentication required.")
            ),
            "{what}: still unauthenticated"
        );
    }
    assert_eq!(env.svc.total_calls(), 6, "{}", env.svc.dump());
}

// ------------------------------------------------------------------------------------------
// Complex service callbacks (T-34..T-41)
// ------------------------------------------------------------------------------------------

/// T-34 (R-SUB-7, R-RESP-2, R-DEF-1): `before_subscribe` errors; bodies of the authorizer and
/// `before_subscribe` are `{session_id, subscription}`; a refused subscribe can be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t34_before_subscribe_errors() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    env.svc.set("/complex/before_subscribe", Reply::error());
    let r = c.request(&subscribe("complex.topic")).await;
    assert_eq!(
        r,
        err_reply("subscribe", "complex.topic", json!("Unhandled exception."))
    );
    env.svc.set(
        "/complex/before_subscribe",
        Reply::error_text("before subscribe error"),
    );
    let r = c.request(&subscribe("complex.topic")).await;
    assert_eq!(
        r,
        err_reply(
            "subscribe",
            "complex.topic",
            json!("before subscribe error")
        )
    );
    let want = json!({"session_id": "sess_123", "subscription": "complex.topic"});
    assert_eq!(
        env.svc.bodies("/complex/authorizer"),
        vec![want.clone(), want.clone()]
    );
    assert_eq!(
        env.svc.bodies("/complex/before_subscribe"),
        vec![want.clone(), want.clone()]
    );
    assert_eq!(env.svc.calls("/complex/on_subscribe"), 0);
    // Nothing was registered: the channel is released and a retry succeeds.
    env.redis.wait_channels(&[], LONG).await;
    env.svc.set("/complex/before_subscribe", Reply::ok());
    let r = c.request(&subscribe("complex.topic")).await;
    assert_eq!(r, ok_reply("subscribe", "complex.topic"));
    env.svc.wait_calls("/complex/on_subscribe", 1, LONG).await;
}

/// T-35 (R-SUB-12, R-BODY-1): extra fields reach the authorizer, `before_subscribe` and
/// `on_subscribe`; `on_subscribe` answers (no status, error, HTTP failure) are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t35_subscribe_extra_fields_and_ignored_on_subscribe() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    env.svc
        .push("/complex/on_subscribe", Reply::json(json!({"foo": "bar"})));
    env.svc
        .push("/complex/on_subscribe", Reply::error_text("x"));
    env.svc
        .push("/complex/on_subscribe", Reply::error().status(500));
    for topic in ["complex.one", "complex.two", "complex.three"] {
        let r = c.request(&subscribe_extra(topic, "hello")).await;
        assert_eq!(r, ok_reply_extra("subscribe", topic, "hello"));
        expect_pong_next(&mut c, topic).await;
    }
    for cb in ["authorizer", "before_subscribe", "on_subscribe"] {
        let bodies = env.svc.bodies(&format!("/complex/{cb}"));
        let want: Vec<Value> = ["complex.one", "complex.two", "complex.three"]
            .iter()
            .map(|t| json!({"subscription": t, "extra": "hello", "session_id": "sess_123"}))
            .collect();
        assert_eq!(bodies, want, "{cb}");
    }
    assert_eq!(env.svc.queued("/complex/on_subscribe"), 0);
}

/// T-36 (R-MSG-4, R-EXT-2, R-RESP-1..4): every `on_message` answer variant. Each command is
/// followed by a ping whose pong must be the next frame (so "no reply" is exact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t36_on_message_replies() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    let name = "complex.topic";
    let r = c.request(&subscribe_extra(name, "hello")).await;
    assert_eq!(r, ok_reply_extra("subscribe", name, "hello"));

    let ok = |data: Option<Value>| {
        let mut v = json!({"event": "message", "status": "ok", "extra": "hello"});
        if let Some(d) = data {
            v["data"] = d;
        }
        v["subscription"] = json!(name);
        v
    };
    let err = |error: Value, data: Option<Value>| {
        let mut v = json!({"event": "message", "status": "error", "error": error,
                           "extra": "hello"});
        if let Some(d) = data {
            v["data"] = d;
        }
        v["subscription"] = json!(name);
        v
    };
    let unhandled = || json!("Unhandled exception.");
    let cases: Vec<(&str, Reply, Option<Value>)> = vec![
        // R-MSG-4: ok without a data key → no reply.
        ("ok without data", Reply::ok(), None),
        (
            "ok with other keys",
            Reply::json(json!({"status": "ok", "foo": 1})),
            None,
        ),
        // error → error reply with the subscription's extra (command's "irrelevant" ignored).
        ("error", Reply::error(), Some(err(unhandled(), None))),
        (
            "error with text",
            Reply::error_text("on message error"),
            Some(err(json!("on message error"), None)),
        ),
        (
            "error with data",
            Reply::json(json!({"status": "error", "data": {"foo": "bar"}})),
            Some(err(unhandled(), Some(json!({"foo": "bar"})))),
        ),
        // ok with data null → bare ok; ok with data → ok with data.
        (
            "ok with data null",
            Reply::ok_data(Value::Null),
            Some(ok(None)),
        ),
        (
            "ok with data",
            Reply::ok_data(json!({"foo": "bar"})),
            Some(ok(Some(json!({"foo": "bar"})))),
        ),
        // R-RESP-4 / R-MSG-4: any non-null data is attached, falsy included.
        (
            "ok with data 0",
            Reply::ok_data(json!(0)),
            Some(ok(Some(json!(0)))),
        ),
        (
            "ok with data false",
            Reply::ok_data(json!(false)),
            Some(ok(Some(json!(false)))),
        ),
        (
            "ok with data \"\"",
            Reply::ok_data(json!("")),
            Some(ok(Some(json!("")))),
        ),
        (
            "ok with data []",
            Reply::ok_data(json!([])),
            Some(ok(Some(json!([])))),
        ),
        (
            "ok with data {}",
            Reply::ok_data(json!({})),
            Some(ok(Some(json!({})))),
        ),
        // R-RESP-1: "OK" or a missing status is an error.
        (
            "status OK",
            Reply::json(json!({"status": "OK", "data": "x"})),
            Some(err(unhandled(), Some(json!("x")))),
        ),
        (
            "missing status",
            Reply::json(json!({"data": "x"})),
            Some(err(unhandled(), Some(json!("x")))),
        ),
        (
            "status true",
            Reply::json(json!({"status": true})),
            Some(err(unhandled(), None)),
        ),
        // R-RESP-2: error null forwarded as null; numbers and objects verbatim.
        (
            "error null",
            Reply::json(json!({"status": "error", "error": null})),
            Some(err(Value::Null, None)),
        ),
        (
            "error 42",
            Reply::json(json!({"status": "error", "error": 42})),
            Some(err(json!(42), None)),
        ),
        (
            "error object",
            Reply::json(json!({"status": "error", "error": {"code": 7}})),
            Some(err(json!({"code": 7}), None)),
        ),
        // R-RESP-3: falsy data omitted from error replies, truthy attached.
        (
            "error data {}",
            Reply::json(json!({"status": "error", "data": {}})),
            Some(err(unhandled(), None)),
        ),
        (
            "error data []",
            Reply::json(json!({"status": "error", "data": []})),
            Some(err(unhandled(), None)),
        ),
        (
            "error data 0",
            Reply::json(json!({"status": "error", "data": 0})),
            Some(err(unhandled(), None)),
        ),
        (
            "error data 0.0",
            Reply::json(json!({"status": "error", "data": 0.0})),
            Some(err(unhandled(), None)),
        ),
        (
            "error data \"\"",
            Reply::json(json!({"status": "error", "data": ""})),
            Some(err(unhandled(), None)),
        ),
        (
            "error data null",
            Reply::json(json!({"status": "error", "data": null})),
            Some(err(unhandled(), None)),
        ),
        (
            "error data false",
            Reply::json(json!({"status": "error", "data": false})),
            Some(err(unhandled(), None)),
        ),
        (
            "error data 1",
            Reply::json(json!({"status": "error", "error": "e", "data": 1})),
            Some(err(json!("e"), Some(json!(1)))),
        ),
        (
            "error data [0]",
            Reply::json(json!({"status": "error", "data": [0]})),
            Some(err(unhandled(), Some(json!([0])))),
        ),
        (
            "error data true",
            Reply::json(json!({"status": "error", "data": true})),
            Some(err(unhandled(), Some(json!(true)))),
        ),
        (
            "error data \"0\"",
            Reply::json(json!({"status": "error", "data": "0"})),
            Some(err(unhandled(), Some(json!("0")))),
        ),
        // HTTP failure (base config: tries = 1).
        (
            "HTTP 500",
            Reply::ok_data(json!("x")).status(500),
            Some(err(json!("Service unavailable."), None)),
        ),
    ];
    for (what, reply, want) in cases {
        env.svc.set("/complex/on_message", reply);
        c.send(
            &json!({"event": "message", "subscription": name, "extra": "irrelevant",
                       "data": {"q": what}}),
        )
        .await;
        if let Some(want) = want {
            let r = c.recv().await;
            assert_eq!(r, want, "on_message answer: {what}");
        }
        expect_pong_next(&mut c, what).await;
    }
}

/// T-37 (R-MSG-4, R-BODY-1, R-FRM-6): `on_message` bodies: `data` null when absent, else the
/// command's data unchanged (any JSON type), plus extra, session_id, subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_on_message_bodies() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    let name = "complex.topic";
    let r = c.request(&subscribe_extra(name, "hello")).await;
    assert_eq!(r, ok_reply_extra("subscribe", name, "hello"));
    let datas = vec![
        None,
        Some(json!({"foo": "bar", "a": [1, 2]})),
        Some(json!(null)),
        Some(json!([1, "two", null])),
        Some(json!("text")),
        Some(json!(1.5)),
        Some(serde_json::from_str::<Value>("123456789012345678901234567890").unwrap()),
        Some(json!(false)),
    ];
    for d in &datas {
        let mut cmd = json!({"event": "message", "subscription": name, "extra": "ignored"});
        if let Some(d) = d {
            cmd["data"] = d.clone();
        }
        c.send(&cmd).await;
        expect_pong_next(&mut c, "after message").await;
    }
    let bodies = env.svc.bodies("/complex/on_message");
    let want: Vec<Value> = datas
        .iter()
        .map(|d| {
            json!({"subscription": name, "extra": "hello", "session_id": "sess_123",
                   "data": d.clone().unwrap_or(Value::Null)})
        })
        .collect();
    assert_eq!(bodies, want);
    let raws: Vec<String> = env
        .svc
        .requests("/complex/on_message")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.raw_body).to_string())
        .collect();
    assert!(
        raws[6].contains("123456789012345678901234567890"),
        "big integer kept exactly: {}",
        raws[6]
    );
    assert!(
        bodies[5]["data"].is_f64(),
        "a float stays a float: {}",
        raws[5]
    );
}

/// T-38 (R-PUB-7): a message published to `complex.topic` is delivered with the stored extra.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t38_published_message_carries_extra() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    let r = c.request(&subscribe_extra("complex.topic", "hello")).await;
    assert_eq!(r, ok_reply_extra("subscribe", "complex.topic", "hello"));
    expect_pong_next(&mut c, "barrier").await;
    env.redis.wait_channels(&["complex.topic"], LONG).await;
    env.redis
        .publish_json(
            "complex.topic",
            &service_message("complex.topic", json!({"foo": "bar"})),
        )
        .await;
    let m = strip_delivery_meta(c.recv().await);
    assert_eq!(
        m,
        json!({"event": "message", "subscription": "complex.topic", "data": {"foo": "bar"},
               "extra": "hello"})
    );
}

/// T-39 (R-UNS-3..6): `before_unsubscribe` errors keep the subscription; ok unsubscribes with
/// the stored extra; before/on_unsubscribe bodies include `extra`; `on_unsubscribe`'s answer is
/// ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t39_before_unsubscribe_and_on_unsubscribe() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    let name = "complex.topic";
    let r = c.request(&subscribe_extra(name, "hello")).await;
    assert_eq!(r, ok_reply_extra("subscribe", name, "hello"));
    expect_pong_next(&mut c, "after subscribe").await;
    env.redis.wait_channels(&[name], LONG).await;
    let unsub = json!({"event": "unsubscribe", "subscription": name, "extra": "irrelevant"});

    let failures: Vec<(Reply, Value)> = vec![
        (
            Reply::error(),
            err_reply_extra("unsubscribe", name, json!("Unhandled exception."), "hello"),
        ),
        (
            Reply::error_text("before unsubscribe error"),
            err_reply_extra(
                "unsubscribe",
                name,
                json!("before unsubscribe error"),
                "hello",
            ),
        ),
        (
            Reply::json(json!({"status": "error", "data": {"x": 1}})),
            json!({"event": "unsubscribe", "status": "error", "error": "Unhandled exception.",
                   "extra": "hello", "data": {"x": 1}, "subscription": name}),
        ),
        (
            Reply::ok().status(500),
            err_reply_extra("unsubscribe", name, json!("Service unavailable."), "hello"),
        ),
    ];
    let n_fail = failures.len();
    for (i, (reply, want)) in failures.into_iter().enumerate() {
        env.svc.set("/complex/before_unsubscribe", reply);
        let r = c.request(&unsub).await;
        assert_eq!(r, want, "before_unsubscribe failure #{i}");
        expect_pong_next(&mut c, "after failed unsubscribe").await;
    }
    assert_eq!(env.svc.calls("/complex/on_unsubscribe"), 0);
    // Still fully active: published messages are delivered.
    env.redis
        .publish_json(name, &service_message(name, json!("still here")))
        .await;
    let m = strip_delivery_meta(c.recv().await);
    assert_eq!(
        m,
        json!({"event": "message", "subscription": name, "data": "still here", "extra": "hello"})
    );

    env.svc.set("/complex/before_unsubscribe", Reply::ok());
    env.svc
        .set("/complex/on_unsubscribe", Reply::error_text("ignored"));
    let r = c.request(&unsub).await;
    assert_eq!(r, ok_reply_extra("unsubscribe", name, "hello"));
    expect_pong_next(&mut c, "after unsubscribe").await;
    env.redis.wait_channels(&[], LONG).await;
    // Gone now: the error echoes the command's own extra field (R-EXT-2).
    let r = c.request(&unsub).await;
    assert_eq!(
        r,
        err_reply_extra(
            "unsubscribe",
            name,
            json!("Subscription does not exist."),
            "irrelevant"
        )
    );
    let want = json!({"subscription": name, "extra": "hello", "session_id": "sess_123"});
    assert_eq!(
        env.svc.bodies("/complex/before_unsubscribe"),
        vec![want.clone(); n_fail + 1]
    );
    assert_eq!(env.svc.bodies("/complex/on_unsubscribe"), vec![want]);
}

/// T-40 (R-SUB-9, R-UNS-5, R-RESP-4): success data of before_subscribe/before_unsubscribe is
/// attached to the ok replies when non-null (falsy values included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_callback_data_in_ok_replies() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    env.svc.set(
        "/complex/before_subscribe",
        Reply::ok_data(json!({"foo": "subscribe"})),
    );
    env.svc.set(
        "/complex/before_unsubscribe",
        Reply::ok_data(json!({"foo": "unsubscribe"})),
    );
    let r = c.request(&subscribe("complex.topic")).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "data": {"foo": "subscribe"},
               "subscription": "complex.topic"})
    );
    let r = c.request(&unsubscribe("complex.topic")).await;
    assert_eq!(
        r,
        json!({"event": "unsubscribe", "status": "ok", "data": {"foo": "unsubscribe"},
               "subscription": "complex.topic"})
    );
    for (i, data) in [json!(null), json!(0), json!(false), json!(""), json!([])]
        .into_iter()
        .enumerate()
    {
        let name = format!("complex.t{i}");
        env.svc
            .set("/complex/before_subscribe", Reply::ok_data(data.clone()));
        env.svc
            .set("/complex/before_unsubscribe", Reply::ok_data(data.clone()));
        let mut want_sub = json!({"event": "subscribe", "status": "ok"});
        let mut want_uns = json!({"event": "unsubscribe", "status": "ok"});
        if !data.is_null() {
            want_sub["data"] = data.clone();
            want_uns["data"] = data.clone();
        }
        want_sub["subscription"] = json!(name);
        want_uns["subscription"] = json!(name);
        let r = c.request(&subscribe(&name)).await;
        assert_eq!(r, want_sub, "before_subscribe data {data}");
        let r = c.request(&unsubscribe(&name)).await;
        assert_eq!(r, want_uns, "before_unsubscribe data {data}");
    }
}

/// T-41 (R-END-2, R-HTTP-8): closing a session whose `complex` unsubscribe callbacks are
/// unreachable still removes every subscription (the others' callbacks run, channels released).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t41_session_end_with_unreachable_callbacks() {
    let env = TestEnv::start_with(|c| {
        c.set("http.tries", 2);
        c.set("http.wait", 0.05);
        c.set(
            "services.complex.before_unsubscribe",
            unreachable_url("/complex/before_unsubscribe"),
        );
        c.set(
            "services.complex.on_unsubscribe",
            unreachable_url("/complex/on_unsubscribe"),
        );
    })
    .await;
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, "ws_test.first").await;
    subscribe_ok(&mut c, "simple.topic").await;
    subscribe_ok(&mut c, "complex.topic").await;
    expect_pong_next(&mut c, "barrier").await;
    env.redis
        .wait_channels(&["ws_test.first", "simple.topic", "complex.topic"], LONG)
        .await;
    c.close().await;
    // ws_test.first was subscribed first, so it is removed last: its callback proves that the
    // unreachable callbacks of complex.topic did not stop the session end.
    env.svc.wait_calls("/ws_test/on_unsubscribe", 1, LONG).await;
    assert_eq!(
        env.svc.bodies("/ws_test/on_unsubscribe"),
        vec![json!({"subscription": "ws_test.first", "session_id": "sess_123"})]
    );
    env.redis.wait_channels(&[], LONG).await;
    env.server
        .wait_log(|l| is_event(l, "connection closed"), LONG)
        .await;
    assert!(
        !env.server.has_log("unhandled event processing exception"),
        "no unhandled exception expected"
    );
    // A new session can use the same names again.
    let mut c2 = env.client().await;
    subscribe_ok(&mut c2, "simple.topic").await;
    env.server.stop(LONG).await;
}

/// T-52 (R-END-2): `ws_test.hello`, client disconnects → `on_unsubscribe` called exactly once
/// with `{"subscription": "ws_test.hello"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t52_ws_test_on_unsubscribe_once_on_disconnect() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.hello").await;
    expect_pong_next(&mut c, "barrier").await;
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), 0);
    c.close().await;
    let bodies = env.svc.wait_calls("/ws_test/on_unsubscribe", 1, LONG).await;
    assert_eq!(bodies, vec![json!({"subscription": "ws_test.hello"})]);
    env.svc
        .expect_no_more_calls("/ws_test/on_unsubscribe", 1, QUIET)
        .await;
}

// ------------------------------------------------------------------------------------------
// Callback order (R-SUB-13, R-UNS-6)
// ------------------------------------------------------------------------------------------

/// R-SUB-13: authorizer → before_subscribe → reply → on_subscribe. The reply waits for
/// `before_subscribe` but not for `on_subscribe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_sub_13_subscribe_callback_order() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    env.svc.clear();
    env.svc
        .set("/complex/before_subscribe", Reply::ok().delay(ms(300)));
    env.svc
        .set("/complex/on_subscribe", Reply::ok().delay(ms(1500)));
    let (r, t) = timed_request(&mut c, &subscribe("complex.topic")).await;
    assert_eq!(r, ok_reply("subscribe", "complex.topic"));
    assert!(
        (0.25..1.2).contains(&t),
        "the subscribe reply came after {t:.3}s: it must wait for before_subscribe (0.3 s) \
         but not for on_subscribe (1.5 s)"
    );
    env.svc.wait_calls("/complex/on_subscribe", 1, LONG).await;
    assert_eq!(
        env.svc.paths(),
        vec![
            "/complex/authorizer",
            "/complex/before_subscribe",
            "/complex/on_subscribe"
        ]
    );
    let reqs = env.svc.all_requests();
    assert!(
        gap(&reqs[1], &reqs[2]) >= 0.25,
        "on_subscribe must be called after before_subscribe answered"
    );
}

/// R-UNS-6: before_unsubscribe → reply → on_unsubscribe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_uns_6_unsubscribe_callback_order() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, "complex.topic").await;
    expect_pong_next(&mut c, "barrier").await;
    env.svc.clear();
    env.svc
        .set("/complex/before_unsubscribe", Reply::ok().delay(ms(300)));
    env.svc
        .set("/complex/on_unsubscribe", Reply::ok().delay(ms(1500)));
    let (r, t) = timed_request(&mut c, &unsubscribe("complex.topic")).await;
    assert_eq!(r, ok_reply("unsubscribe", "complex.topic"));
    assert!(
        (0.25..1.2).contains(&t),
        "the unsubscribe reply came after {t:.3}s: it must wait for before_unsubscribe (0.3 s) \
         but not for on_unsubscribe (1.5 s)"
    );
    env.svc.wait_calls("/complex/on_unsubscribe", 1, LONG).await;
    assert_eq!(
        env.svc.paths(),
        vec!["/complex/before_unsubscribe", "/complex/on_unsubscribe"]
    );
    let reqs = env.svc.all_requests();
    assert!(gap(&reqs[0], &reqs[1]) >= 0.25);
}

// ------------------------------------------------------------------------------------------
// R-RESP-6: unusable answers
// ------------------------------------------------------------------------------------------

/// R-RESP-6 (R-AUTH-6): an unusable ticket-validation answer → `Unhandled exception.` for
/// `auth`, then close 1000; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_resp_6_unusable_ticket_validation() {
    let env = TestEnv::start().await;
    for (what, reply) in unusable_replies() {
        env.svc.set("/auth", reply);
        let mut c = env.client().await;
        c.send(&json!({"event": "auth", "ticket": "valid_ticket"}))
            .await;
        expect_unhandled_then_close(
            &mut c,
            json!({"event": "auth", "status": "error", "error": "Unhandled exception."}),
            what,
        )
        .await;
    }
    env.svc.set("/auth", Reply::auth_ok(SESSION_ID));
    let mut c = env.auth_client().await;
    expect_pong_next(&mut c, "still serving").await;
    env.server.stop(LONG).await;
}

/// R-RESP-6: unusable authorizer answer → `Unhandled exception.` (subscription + extra), close
/// 1000; nothing was registered, so no other callback runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_resp_6_unusable_authorizer() {
    let env = TestEnv::start().await;
    for (i, (what, reply)) in unusable_replies().into_iter().enumerate() {
        env.svc.set("/complex/authorizer", reply);
        let name = format!("complex.t{i}");
        let mut c = env.auth_client().await;
        c.send(&subscribe_extra(&name, "x")).await;
        expect_unhandled_then_close(
            &mut c,
            err_reply_extra("subscribe", &name, json!("Unhandled exception."), "x"),
            what,
        )
        .await;
        sleep_ms(200).await;
        assert_eq!(
            trace_for(&env.svc, &name),
            vec!["/complex/authorizer"],
            "{what}"
        );
    }
    env.redis.wait_channels(&[], LONG).await;
    env.server.stop(LONG).await;
}

/// R-RESP-6, R-DEF-1: unusable `before_subscribe` answer → `Unhandled exception.`, close 1000;
/// no on_subscribe, no unsubscribe callbacks, channel released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_resp_6_unusable_before_subscribe() {
    let env = TestEnv::start().await;
    for (i, (what, reply)) in unusable_replies().into_iter().enumerate() {
        env.svc.set("/complex/before_subscribe", reply);
        let name = format!("complex.t{i}");
        let mut c = env.auth_client().await;
        c.send(&subscribe_extra(&name, "x")).await;
        expect_unhandled_then_close(
            &mut c,
            err_reply_extra("subscribe", &name, json!("Unhandled exception."), "x"),
            what,
        )
        .await;
        sleep_ms(200).await;
        assert_eq!(
            trace_for(&env.svc, &name),
            vec!["/complex/authorizer", "/complex/before_subscribe"],
            "{what}"
        );
    }
    env.redis.wait_channels(&[], LONG).await;
    env.server.stop(LONG).await;
}

/// R-RESP-6: unusable `on_subscribe` answer: the ok reply was already sent; then
/// `Unhandled exception.` and close 1000; the registered subscription is ended by the session
/// end (before_unsubscribe, on_unsubscribe). The command is not counted (R-MET-6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_resp_6_unusable_on_subscribe() {
    let env = TestEnv::start_with(|c| {
        c.set("metrics.log", json!({}));
    })
    .await;
    for (i, (what, reply)) in unusable_replies().into_iter().enumerate() {
        env.svc.set("/complex/on_subscribe", reply);
        let name = format!("complex.t{i}");
        let mut c = env.auth_client().await;
        let r = c.request(&subscribe_extra(&name, "x")).await;
        assert_eq!(r, ok_reply_extra("subscribe", &name, "x"), "{what}");
        expect_unhandled_then_close(
            &mut c,
            err_reply_extra("subscribe", &name, json!("Unhandled exception."), "x"),
            what,
        )
        .await;
        wait_sub_calls(&env.svc, "/complex/on_unsubscribe", &name, 1).await;
        sleep_ms(100).await;
        assert_eq!(
            trace_for(&env.svc, &name),
            vec![
                "/complex/authorizer",
                "/complex/before_subscribe",
                "/complex/on_subscribe",
                "/complex/before_unsubscribe",
                "/complex/on_unsubscribe",
            ],
            "{what}"
        );
    }
    env.redis.wait_channels(&[], LONG).await;
    wait_until(LONG, "5 sessions closed (log)", || {
        env.server.count_log("connection closed") >= 5
    })
    .await;
    let counted: Vec<Value> = env
        .server
        .find_logs("metrics")
        .into_iter()
        .filter(|l| l.get("evt") == Some(&json!("subscribe")))
        .collect();
    assert!(
        counted.is_empty(),
        "a command ending on the R-RESP-6 path is not counted: {counted:?}"
    );
    env.server.stop(LONG).await;
}

/// R-RESP-6: unusable `on_message` answer → `Unhandled exception.` with the subscription's
/// extra, close 1000, session end runs the unsubscribe callbacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_resp_6_unusable_on_message() {
    let env = TestEnv::start().await;
    for (i, (what, reply)) in unusable_replies().into_iter().enumerate() {
        env.svc.set("/complex/on_message", reply);
        let name = format!("complex.t{i}");
        let mut c = env.auth_client().await;
        let r = c.request(&subscribe_extra(&name, "x")).await;
        assert_eq!(r, ok_reply_extra("subscribe", &name, "x"), "{what}");
        c.send(&json!({"event": "message", "subscription": name, "data": 1}))
            .await;
        expect_unhandled_then_close(
            &mut c,
            err_reply_extra("message", &name, json!("Unhandled exception."), "x"),
            what,
        )
        .await;
        wait_sub_calls(&env.svc, "/complex/on_unsubscribe", &name, 1).await;
        sleep_ms(100).await;
        assert_eq!(
            trace_for(&env.svc, &name),
            vec![
                "/complex/authorizer",
                "/complex/before_subscribe",
                "/complex/on_subscribe",
                "/complex/on_message",
                "/complex/before_unsubscribe",
                "/complex/on_unsubscribe",
            ],
            "{what}"
        );
    }
    env.server.stop(LONG).await;
}

/// R-RESP-6, R-DEF-4: unusable `before_unsubscribe` answer to a client `unsubscribe` →
/// `Unhandled exception.`, close 1000. The subscription was not removed, so the session end
/// calls `before_unsubscribe` again (unusable again: logged and ignored) and `on_unsubscribe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_resp_6_unusable_before_unsubscribe() {
    let env = TestEnv::start().await;
    for (i, (what, reply)) in unusable_replies().into_iter().enumerate() {
        env.svc.set("/complex/before_unsubscribe", reply);
        let name = format!("complex.t{i}");
        let mut c = env.auth_client().await;
        let r = c.request(&subscribe_extra(&name, "x")).await;
        assert_eq!(r, ok_reply_extra("subscribe", &name, "x"), "{what}");
        c.send(&unsubscribe(&name)).await;
        expect_unhandled_then_close(
            &mut c,
            err_reply_extra("unsubscribe", &name, json!("Unhandled exception."), "x"),
            what,
        )
        .await;
        wait_sub_calls(&env.svc, "/complex/on_unsubscribe", &name, 1).await;
        sleep_ms(100).await;
        assert_eq!(
            trace_for(&env.svc, &name),
            vec![
                "/complex/authorizer",
                "/complex/before_subscribe",
                "/complex/on_subscribe",
                "/complex/before_unsubscribe",
                "/complex/before_unsubscribe",
                "/complex/on_unsubscribe",
            ],
            "{what}"
        );
    }
    env.redis.wait_channels(&[], LONG).await;
    env.server.stop(LONG).await;
}

/// R-RESP-6: unusable `on_unsubscribe` answer: ok reply, then `Unhandled exception.`, close
/// 1000; the subscription is already gone, so nothing more is called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_resp_6_unusable_on_unsubscribe() {
    let env = TestEnv::start().await;
    for (i, (what, reply)) in unusable_replies().into_iter().enumerate() {
        env.svc.set("/complex/on_unsubscribe", reply);
        let name = format!("complex.t{i}");
        let mut c = env.auth_client().await;
        let r = c.request(&subscribe_extra(&name, "x")).await;
        assert_eq!(r, ok_reply_extra("subscribe", &name, "x"), "{what}");
        // The command carries the same extra value, so the expected error reply does not
        // depend on whether the removed subscription's or the command's extra is used.
        let r = c
            .request(&json!({"event": "unsubscribe", "subscription": name, "extra": "x"}))
            .await;
        assert_eq!(r, ok_reply_extra("unsubscribe", &name, "x"), "{what}");
        expect_unhandled_then_close(
            &mut c,
            err_reply_extra("unsubscribe", &name, json!("Unhandled exception."), "x"),
            what,
        )
        .await;
        sleep_ms(300).await;
        assert_eq!(
            trace_for(&env.svc, &name),
            vec![
                "/complex/authorizer",
                "/complex/before_subscribe",
                "/complex/on_subscribe",
                "/complex/before_unsubscribe",
                "/complex/on_unsubscribe",
            ],
            "{what}"
        );
    }
    env.redis.wait_channels(&[], LONG).await;
    env.server.stop(LONG).await;
}

// ------------------------------------------------------------------------------------------
// HTTP behaviour (R-HTTP, T-49)
// ------------------------------------------------------------------------------------------

/// Shared T-49 scenario: a 429 carrying `header: 0.2` then an ok answer with `data: {}`;
/// returns the gap between the two attempts.
async fn rate_limited_subscribe(env: &TestEnv, header: &str) -> f64 {
    env.svc.push(
        SBS_PATH,
        Reply::json(json!({"status": "error"}))
            .status(429)
            .header(header, "0.2"),
    );
    env.svc.set(SBS_PATH, Reply::ok_data(json!({})));
    let mut c = env.client().await;
    let name = sbs("topic");
    let r = c.request(&subscribe(&name)).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "data": {}, "subscription": name})
    );
    let reqs = env.svc.requests(SBS_PATH);
    assert_eq!(reqs.len(), 2, "one 429, one retry:\n{}", env.svc.dump());
    gap(&reqs[0], &reqs[1])
}

/// T-49 (R-HTTP-7): `X-Rate-Limit-Reset: 0.2` (default header list) → retried after ~0.2 s,
/// not after `http.wait` = 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t49_rate_limit_reset_default_header() {
    let env = TestEnv::start_with(|c| {
        c.set("http", json!({"tries": 3, "wait": 1, "timeout": 5}));
    })
    .await;
    let g = rate_limited_subscribe(&env, "X-Rate-Limit-Reset").await;
    assert!(
        (0.15..0.9).contains(&g),
        "retry gap {g:.3}s, expected ~0.2s"
    );
}

/// T-49 (R-HTTP-7): `Retry-After` honoured when listed in `rate_limit_reset_header_names`
/// (after a listed header that is absent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t49_rate_limit_reset_header_list() {
    let env = TestEnv::start_with(|c| {
        c.set(
            "http",
            json!({"tries": 3, "wait": 1, "timeout": 5,
                   "rate_limit_reset_header_names": ["X-Not-There", "Retry-After"]}),
        );
    })
    .await;
    let g = rate_limited_subscribe(&env, "Retry-After").await;
    assert!(
        (0.15..0.9).contains(&g),
        "retry gap {g:.3}s, expected ~0.2s"
    );
}

/// T-49 (R-HTTP-7, R-CFG-4): the deprecated single `rate_limit_reset_header_name` is used when
/// the list is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t49_rate_limit_reset_deprecated_single_name() {
    let env = TestEnv::start_with(|c| {
        c.set(
            "http",
            json!({"tries": 3, "wait": 1, "timeout": 5,
                   "rate_limit_reset_header_name": "Retry-After"}),
        );
    })
    .await;
    let g = rate_limited_subscribe(&env, "Retry-After").await;
    assert!(
        (0.15..0.9).contains(&g),
        "retry gap {g:.3}s, expected ~0.2s"
    );
}

/// R-HTTP-7: a header not in the configured list is ignored → `http.wait` (1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t49_rate_limit_header_not_listed_is_ignored() {
    let env = TestEnv::start_with(|c| {
        c.set(
            "http",
            json!({"tries": 3, "wait": 1, "timeout": 5,
                   "rate_limit_reset_header_names": ["Retry-After"]}),
        );
    })
    .await;
    let g = rate_limited_subscribe(&env, "X-Rate-Limit-Reset").await;
    assert!(
        (0.95..3.0).contains(&g),
        "retry gap {g:.3}s, expected http.wait = 1s"
    );
}

/// R-HTTP-4, R-HTTP-7, R-HTTP-8: the wait after a 429 is kept across a connection error, reset
/// to `http.wait` by any other HTTP answer; a 429 on the last attempt is not followed by a sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_4_wait_state_across_attempts() {
    let env = TestEnv::start_with(|c| {
        c.set("http", json!({"tries": 3, "wait": 1, "timeout": 5}));
    })
    .await;
    let mut c = env.client().await;
    let limited = || {
        Reply::json(json!({"status": "error"}))
            .status(429)
            .header("X-Rate-Limit-Reset", "0.2")
    };

    // 429 (0.2) → connection closed without answer (wait unchanged: 0.2) → ok.
    env.svc.push(SBS_PATH, limited());
    env.svc.push(SBS_PATH, Reply::close());
    env.svc.push(SBS_PATH, Reply::ok_data(json!("a")));
    let r = c.request(&subscribe(&sbs("a"))).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "data": "a", "subscription": sbs("a")})
    );
    let reqs = requests_for(&env.svc, SBS_PATH, &sbs("a"));
    assert_eq!(reqs.len(), 3, "{}", env.svc.dump());
    let (g1, g2) = (gap(&reqs[0], &reqs[1]), gap(&reqs[1], &reqs[2]));
    assert!((0.15..0.9).contains(&g1), "gap after 429: {g1:.3}s");
    assert!(
        (0.15..0.9).contains(&g2),
        "gap after a connection error keeps the 429 wait: {g2:.3}s"
    );

    // 429 (0.2) → 500 (wait back to 1 s) → ok.
    env.svc.push(SBS_PATH, limited());
    env.svc.push(SBS_PATH, Reply::error().status(500));
    env.svc.push(SBS_PATH, Reply::ok_data(json!("b")));
    let r = c.request(&subscribe(&sbs("b"))).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "data": "b", "subscription": sbs("b")})
    );
    let reqs = requests_for(&env.svc, SBS_PATH, &sbs("b"));
    assert_eq!(reqs.len(), 3, "{}", env.svc.dump());
    let (g1, g2) = (gap(&reqs[0], &reqs[1]), gap(&reqs[1], &reqs[2]));
    assert!((0.15..0.9).contains(&g1), "gap after 429: {g1:.3}s");
    assert!(
        (0.95..3.0).contains(&g2),
        "gap after a 500 is http.wait again: {g2:.3}s"
    );

    // Three 429s with a long reset: the last one is not followed by a sleep.
    for _ in 0..3 {
        env.svc.push(
            SBS_PATH,
            Reply::json(json!({"status": "error"}))
                .status(429)
                .header("X-Rate-Limit-Reset", "0.3"),
        );
    }
    let (r, t) = timed_request(&mut c, &subscribe(&sbs("c"))).await;
    assert_eq!(
        r,
        err_reply("subscribe", &sbs("c"), json!("Service unavailable."))
    );
    assert!(
        (0.5..1.5).contains(&t),
        "two sleeps of 0.3 s, none after the last attempt: took {t:.3}s"
    );
}

/// R-HTTP-4, R-HTTP-8: `http.tries = 3` with a 500 answer → exactly 3 attempts, then
/// `Service unavailable.`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_4_tries_are_counted() {
    let env = TestEnv::start_with(|c| {
        c.set("http", json!({"tries": 3, "wait": 0.05, "timeout": 5}));
    })
    .await;
    env.svc.set(SBS_PATH, Reply::ok().status(500));
    let mut c = env.client().await;
    let r = c.request(&subscribe(&sbs("topic"))).await;
    assert_eq!(
        r,
        err_reply("subscribe", &sbs("topic"), json!("Service unavailable."))
    );
    assert_eq!(env.svc.calls(SBS_PATH), 3);
    env.svc.expect_no_more_calls(SBS_PATH, 3, QUIET).await;
    let reqs = env.svc.requests(SBS_PATH);
    for w in reqs.windows(2) {
        let g = gap(&w[0], &w[1]);
        assert!((0.04..0.8).contains(&g), "gap {g:.3}s, expected ~0.05s");
    }
}

/// R-HTTP-8: `http.tries = 0` → `Service unavailable.` without any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_8_zero_tries_never_calls() {
    let env = TestEnv::start_with(|c| {
        c.set("http.tries", 0);
    })
    .await;
    let mut c = env.client().await;
    let r = c
        .request(&json!({"event": "auth", "ticket": "valid_ticket"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "auth", "status": "error", "error": "Service unavailable."})
    );
    let r = c.request(&subscribe(&sbs("topic"))).await;
    assert_eq!(
        r,
        err_reply("subscribe", &sbs("topic"), json!("Service unavailable."))
    );
    // ws_test has only on_unsubscribe (ignored): subscribing works without any call.
    subscribe_ok(&mut c, "ws_test.x").await;
    let r = c.request(&unsubscribe("ws_test.x")).await;
    assert_eq!(r, ok_reply("unsubscribe", "ws_test.x"));
    expect_pong_next(&mut c, "barrier").await;
    assert_eq!(env.svc.total_calls(), 0, "{}", env.svc.dump());
}

/// R-HTTP-6: error statuses, non-JSON content types and dropped connections are attempt
/// failures and are retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_6_failed_attempts_are_retried() {
    let env = TestEnv::start_with(|c| {
        c.set("http", json!({"tries": 2, "wait": 0.05, "timeout": 5}));
    })
    .await;
    env.svc.set(SBS_PATH, Reply::ok_data(json!("good")));
    let bad = json!({"status": "ok", "data": "bad"}).to_string();
    let cases: Vec<(&str, Reply)> = vec![
        ("400", Reply::ok_data(json!("bad")).status(400)),
        ("404", Reply::ok_data(json!("bad")).status(404)),
        ("500", Reply::ok_data(json!("bad")).status(500)),
        ("503", Reply::ok_data(json!("bad")).status(503)),
        ("text/plain 200", Reply::raw("text/plain", bad.clone())),
        ("no content type", Reply::raw("", bad.clone())),
        ("text/json", Reply::raw("text/json", bad.clone())),
        (
            "text/html",
            Reply::raw("text/html; charset=utf-8", bad.clone()),
        ),
        ("closed without answer", Reply::close()),
        (
            "429 without reset header",
            Reply::ok_data(json!("bad")).status(429),
        ),
    ];
    let mut c = env.client().await;
    for (i, (what, reply)) in cases.into_iter().enumerate() {
        let name = sbs(&format!("t{i}"));
        env.svc.push(SBS_PATH, reply);
        let r = c.request(&subscribe(&name)).await;
        assert_eq!(
            r,
            json!({"event": "subscribe", "status": "ok", "data": "good", "subscription": name}),
            "{what}"
        );
        assert_eq!(
            requests_for(&env.svc, SBS_PATH, &name).len(),
            2,
            "{what}: one failed attempt, one retry"
        );
    }
    // With every attempt failing the result is `Service unavailable.`.
    env.svc.set(SBS_PATH, Reply::raw("text/plain", bad.clone()));
    let r = c.request(&subscribe(&sbs("last"))).await;
    assert_eq!(
        r,
        err_reply("subscribe", &sbs("last"), json!("Service unavailable."))
    );
    assert_eq!(requests_for(&env.svc, SBS_PATH, &sbs("last")).len(), 2);
}

/// R-HTTP-6: JSON content types (`application/json` with parameters, `application/<x>+json`)
/// and other statuses below 400 are accepted at the first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_6_json_content_types_accepted() {
    let env = TestEnv::start_with(|c| {
        c.set("http", json!({"tries": 2, "wait": 0.05, "timeout": 5}));
    })
    .await;
    let body = |d: &str| json!({"status": "ok", "data": d}).to_string();
    let cases: Vec<(&str, Reply)> = vec![
        (
            "application/vnd.x+json",
            Reply::raw("application/vnd.x+json", body("vnd")),
        ),
        (
            "application/json; charset=utf-8",
            Reply::raw("application/json; charset=utf-8", body("charset")),
        ),
        (
            "201",
            Reply::raw("application/json", body("created")).status(201),
        ),
    ];
    let mut c = env.client().await;
    for (i, (what, reply)) in cases.into_iter().enumerate() {
        let name = sbs(&format!("t{i}"));
        let want: Value = serde_json::from_slice::<Value>(&reply.body).unwrap()["data"].clone();
        env.svc.push(SBS_PATH, reply);
        env.svc
            .set(SBS_PATH, Reply::ok_data(json!("second attempt")));
        let r = c.request(&subscribe(&name)).await;
        assert_eq!(
            r,
            json!({"event": "subscribe", "status": "ok", "data": want, "subscription": name}),
            "{what}"
        );
        assert_eq!(requests_for(&env.svc, SBS_PATH, &name).len(), 1, "{what}");
    }
}

/// R-HTTP-5: an attempt slower than `http.timeout` (0.3 s) fails; with one try the result is
/// `Service unavailable.` after ~0.3 s; with two tries the second answer is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_5_timeout_is_a_failure() {
    let env = TestEnv::start_with(|c| {
        c.set("http", json!({"tries": 1, "wait": 0.05, "timeout": 0.3}));
    })
    .await;
    env.svc
        .set(SBS_PATH, Reply::ok_data(json!("late")).delay(ms(1500)));
    let mut c = env.client().await;
    let (r, t) = timed_request(&mut c, &subscribe(&sbs("topic"))).await;
    assert_eq!(
        r,
        err_reply("subscribe", &sbs("topic"), json!("Service unavailable."))
    );
    assert!(
        (0.25..1.2).contains(&t),
        "timeout after {t:.3}s, expected ~0.3s"
    );
    env.server.wait_event("timeout in http_post", LONG).await;
}

/// R-HTTP-5, R-HTTP-4: a timed-out attempt is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_5_timeout_then_retry() {
    let env = TestEnv::start_with(|c| {
        c.set("http", json!({"tries": 2, "wait": 0.05, "timeout": 0.3}));
    })
    .await;
    env.svc
        .push(SBS_PATH, Reply::ok_data(json!("late")).delay(ms(1500)));
    env.svc.set(SBS_PATH, Reply::ok_data(json!("second")));
    let mut c = env.client().await;
    let (r, t) = timed_request(&mut c, &subscribe(&sbs("topic"))).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "data": "second",
               "subscription": sbs("topic")})
    );
    assert!((0.3..1.4).contains(&t), "took {t:.3}s");
    assert_eq!(env.svc.calls(SBS_PATH), 2);
}

/// R-HTTP-8: connection refused → `Service unavailable.` (before_subscribe and auth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_8_connection_refused() {
    let env = TestEnv::start_with(|c| {
        c.set("http", json!({"tries": 2, "wait": 0.05, "timeout": 5}));
        c.set(
            "services.simple_before_subscribe.before_subscribe",
            unreachable_url("/x"),
        );
        c.set(
            "authentication.ticket.validation_url",
            unreachable_url("/auth"),
        );
    })
    .await;
    let mut c = env.client().await;
    let r = c.request(&subscribe(&sbs("topic"))).await;
    assert_eq!(
        r,
        err_reply("subscribe", &sbs("topic"), json!("Service unavailable."))
    );
    let r = c
        .request(&json!({"event": "auth", "ticket": "valid_ticket"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "auth", "status": "error", "error": "Service unavailable."})
    );
    env.redis.wait_channels(&[], LONG).await;
}

/// R-HTTP-1: compressed (gzip, deflate) JSON answers are decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_1_compressed_answers_decoded() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    env.svc.push(
        SBS_PATH,
        Reply::gzip_json(json!({"status": "ok", "data": {"zipped": "gzip"}})),
    );
    let r = c.request(&subscribe(&sbs("a"))).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "data": {"zipped": "gzip"},
               "subscription": sbs("a")})
    );
    env.svc.push(
        SBS_PATH,
        Reply::deflate_json(json!({"status": "ok", "data": {"zipped": "deflate"}})),
    );
    let r = c.request(&subscribe(&sbs("b"))).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "data": {"zipped": "deflate"},
               "subscription": sbs("b")})
    );
}

/// R-HTTP-1, R-AUTH-4: callbacks are POSTs with `Content-Type: application/json` and the JSON
/// body; the ticket validation body is `{"ticket": ...}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_1_request_format() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, "complex.topic").await;
    expect_pong_next(&mut c, "barrier").await;
    let reqs = env.svc.all_requests();
    assert_eq!(reqs.len(), 4, "{}", env.svc.dump());
    for r in &reqs {
        assert_eq!(r.method, "POST", "{}", r.path);
        let ct = r.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "{}: Content-Type {ct:?}",
            r.path
        );
        assert_eq!(r.uri, r.path, "no query string");
        assert!(r.header("authorization").is_none());
        let parsed: Value = serde_json::from_slice(&r.raw_body).expect("JSON body");
        assert_eq!(parsed, r.body);
    }
    assert_eq!(reqs[0].body, json!({"ticket": "valid_ticket"}));
}

/// R-HTTP-2, R-LOG-6: `user:pass@` in a callback URL → `Authorization: Basic ...`; the
/// credentials are neither in the request target nor in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_http_2_basic_auth_from_url() {
    let env = TestEnv::start_with_env(|cfg, _, svc| {
        cfg.set(
            "services.simple_before_subscribe.before_subscribe",
            svc.url_with_userinfo("user:s3cr3tpw", SBS_PATH),
        );
        cfg.set(
            "authentication.ticket.validation_url",
            svc.url_with_userinfo("tick:t1ck3tpw", "/auth"),
        );
    })
    .await;
    let mut c = env.client().await;
    authenticate(&mut c).await;
    subscribe_ok(&mut c, &sbs("topic")).await;
    let r = &env.svc.requests(SBS_PATH)[0];
    // base64("user:s3cr3tpw")
    assert_eq!(
        r.header("authorization"),
        Some("Basic dXNlcjpzM2NyM3Rwdw==")
    );
    assert_eq!(r.uri, SBS_PATH);
    let a = &env.svc.requests("/auth")[0];
    // base64("tick:t1ck3tpw")
    assert_eq!(
        a.header("authorization"),
        Some("Basic dGljazp0MWNrM3Rwdw==")
    );
    assert_eq!(a.uri, "/auth");
    env.server.stop(LONG).await;
    let log = env.server.stderr_text();
    assert!(
        !log.contains("s3cr3tpw") && !log.contains("t1ck3tpw"),
        "a password appears in the log"
    );
}

// ------------------------------------------------------------------------------------------
// Session end (R-END-2, R-DEF-4)
// ------------------------------------------------------------------------------------------

async fn three_subscriptions(env: &TestEnv) -> Client {
    env.svc
        .set("/complex/before_unsubscribe", Reply::ok().delay(ms(100)));
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, "complex.one").await;
    subscribe_ok(&mut c, "ws_test.two").await;
    subscribe_ok(&mut c, "complex.three").await;
    expect_pong_next(&mut c, "barrier").await;
    assert!(unsub_trace(&env.svc).is_empty());
    c
}

fn check_reverse_order(env: &TestEnv) {
    let trace = unsub_trace(&env.svc);
    assert_eq!(
        trace,
        pairs(&[
            ("/complex/before_unsubscribe", "complex.three"),
            ("/complex/on_unsubscribe", "complex.three"),
            ("/ws_test/on_unsubscribe", "ws_test.two"),
            ("/complex/before_unsubscribe", "complex.one"),
            ("/complex/on_unsubscribe", "complex.one"),
        ]),
        "session end: reverse subscription order, before_unsubscribe then on_unsubscribe"
    );
    // One at a time: each on_unsubscribe starts after its before_unsubscribe (0.1 s) answered.
    let reqs: Vec<Request> = env
        .svc
        .all_requests()
        .into_iter()
        .filter(|r| r.path.ends_with("unsubscribe"))
        .collect();
    assert!(gap(&reqs[0], &reqs[1]) >= 0.09);
    assert!(gap(&reqs[3], &reqs[4]) >= 0.09);
}

/// R-END-2: on close, subscriptions are removed most recent first, each with
/// `before_unsubscribe` then `on_unsubscribe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_end_2_reverse_order_on_close() {
    let env = TestEnv::start().await;
    let mut c = three_subscriptions(&env).await;
    c.close().await;
    wait_sub_calls(&env.svc, "/complex/on_unsubscribe", "complex.one", 1).await;
    sleep_ms(100).await;
    check_reverse_order(&env);
    env.redis.wait_channels(&[], LONG).await;
}

/// R-END-1/2: an abrupt TCP drop (no close frame) also runs the session end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_end_2_reverse_order_on_abrupt_drop() {
    let env = TestEnv::start().await;
    let c = three_subscriptions(&env).await;
    c.abort().await;
    wait_sub_calls(&env.svc, "/complex/on_unsubscribe", "complex.one", 1).await;
    sleep_ms(100).await;
    check_reverse_order(&env);
    env.redis.wait_channels(&[], LONG).await;
}

/// R-DEF-4: unusable answers from `before_unsubscribe` (and `on_unsubscribe`) during the session
/// end do not stop the remaining callbacks; the connection gauge drops; SIGTERM exits 0
/// promptly even with such sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_def_4_unusable_answers_during_session_end() {
    let env = TestEnv::start_with(|c| {
        c.set(
            "metrics.prometheus",
            json!({"host": "127.0.0.1", "port": 0}),
        );
    })
    .await;
    let mport = env.server.metrics_port().await.expect("metrics port");
    env.svc.set(
        "/complex/before_unsubscribe",
        Reply::raw("application/json", "null"),
    );

    // 1. before_unsubscribe unusable.
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, "complex.a").await;
    subscribe_ok(&mut c, "complex.b").await;
    expect_pong_next(&mut c, "barrier").await;
    wait_gauge(mport, 1.0).await;
    c.close().await;
    wait_sub_calls(&env.svc, "/complex/on_unsubscribe", "complex.a", 1).await;
    assert_eq!(
        unsub_trace(&env.svc),
        pairs(&[
            ("/complex/before_unsubscribe", "complex.b"),
            ("/complex/on_unsubscribe", "complex.b"),
            ("/complex/before_unsubscribe", "complex.a"),
            ("/complex/on_unsubscribe", "complex.a"),
        ])
    );
    wait_gauge(mport, 0.0).await;
    env.redis.wait_channels(&[], LONG).await;

    // 2. Both unusable (invalid JSON and an array), abrupt drop.
    env.svc.clear();
    env.svc.set(
        "/complex/on_unsubscribe",
        Reply::raw("application/json", "[1]"),
    );
    env.svc.set(
        "/complex/before_unsubscribe",
        Reply::raw("application/json", "{"),
    );
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, "complex.c").await;
    subscribe_ok(&mut c, "ws_test.d").await;
    subscribe_ok(&mut c, "complex.e").await;
    expect_pong_next(&mut c, "barrier").await;
    c.abort().await;
    wait_sub_calls(&env.svc, "/complex/on_unsubscribe", "complex.c", 1).await;
    assert_eq!(
        unsub_trace(&env.svc),
        pairs(&[
            ("/complex/before_unsubscribe", "complex.e"),
            ("/complex/on_unsubscribe", "complex.e"),
            ("/ws_test/on_unsubscribe", "ws_test.d"),
            ("/complex/before_unsubscribe", "complex.c"),
            ("/complex/on_unsubscribe", "complex.c"),
        ])
    );
    wait_gauge(mport, 0.0).await;

    // 3. Shutdown with a subscribed session whose session-end answers are unusable.
    env.svc.clear();
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, "complex.f").await;
    subscribe_ok(&mut c, "complex.g").await;
    expect_pong_next(&mut c, "barrier").await;
    let t0 = Instant::now();
    env.server.stop(secs(5.0)).await;
    let took = t0.elapsed().as_secs_f64();
    assert!(took < 4.0, "shutdown took {took:.3}s");
    assert_eq!(
        unsub_trace(&env.svc),
        pairs(&[
            ("/complex/before_unsubscribe", "complex.g"),
            ("/complex/on_unsubscribe", "complex.g"),
            ("/complex/before_unsubscribe", "complex.f"),
            ("/complex/on_unsubscribe", "complex.f"),
        ])
    );
    assert_eq!(c.recv_close(LONG).await, Some(1000));
}

// ------------------------------------------------------------------------------------------
// Ordering (R-ORD-1, R-ORD-3, R-ORD-4, R-ORD-6)
// ------------------------------------------------------------------------------------------

/// R-ORD-1: a second `subscribe` sent while the first waits on a slow `before_subscribe` gets
/// `Already subscribed.`; an `unsubscribe` sent meanwhile succeeds after it; a `ping` waits for
/// all of them (including the slow `on_subscribe`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ord_1_commands_wait_for_slow_subscribe() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    env.svc.clear();
    env.svc
        .push("/complex/before_subscribe", Reply::ok().delay(ms(500)));
    env.svc
        .push("/complex/on_subscribe", Reply::ok().delay(ms(500)));
    let name = "complex.topic";
    let t0 = Instant::now();
    c.send(&subscribe_extra(name, "first")).await;
    c.send(&subscribe_extra(name, "second")).await;
    c.send(&json!({"event": "unsubscribe", "subscription": name, "extra": "third"}))
        .await;
    c.send(&json!({"event": "ping", "data": "last"})).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push((c.recv().await, t0.elapsed().as_secs_f64()));
    }
    let replies: Vec<Value> = got.iter().map(|(v, _)| v.clone()).collect();
    assert_eq!(
        replies,
        vec![
            ok_reply_extra("subscribe", name, "first"),
            err_reply_extra("subscribe", name, json!("Already subscribed."), "first"),
            ok_reply_extra("unsubscribe", name, "first"),
            json!({"event": "pong", "data": "last"}),
        ]
    );
    assert!(got[0].1 >= 0.45, "subscribe reply after {:.3}s", got[0].1);
    assert!(
        got[1].1 >= 0.95,
        "the second subscribe is processed only after on_subscribe completed ({:.3}s)",
        got[1].1
    );
    expect_pong_next(&mut c, "end").await;
    assert_eq!(
        env.svc.paths(),
        vec![
            "/complex/authorizer",
            "/complex/before_subscribe",
            "/complex/on_subscribe",
            "/complex/before_unsubscribe",
            "/complex/on_unsubscribe",
        ]
    );
}

/// R-ORD-1, R-SUB-12, R-UNS-6: a `ping` sent right after `subscribe` is answered after the
/// subscribe reply and after the slow `on_subscribe` completed; same for `on_unsubscribe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ord_1_ping_waits_for_on_subscribe_and_on_unsubscribe() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    env.svc
        .set("/ws_test/on_unsubscribe", Reply::ok().delay(ms(800)));
    let t0 = Instant::now();
    c.send(&unsubscribe("ws_test.x")).await;
    let r = c.recv().await;
    assert_eq!(
        r,
        err_reply(
            "unsubscribe",
            "ws_test.x",
            json!("Subscription does not exist.")
        )
    );
    assert!(t0.elapsed().as_secs_f64() < 0.5);

    // on_unsubscribe.
    subscribe_ok(&mut c, "ws_test.x").await;
    let t0 = Instant::now();
    c.send(&unsubscribe("ws_test.x")).await;
    c.send(&json!({"event": "ping", "data": "p1"})).await;
    let r = c.recv().await;
    let t_reply = t0.elapsed().as_secs_f64();
    assert_eq!(r, ok_reply("unsubscribe", "ws_test.x"));
    let r = c.recv().await;
    let t_pong = t0.elapsed().as_secs_f64();
    assert_eq!(r, json!({"event": "pong", "data": "p1"}));
    assert!(
        t_reply < 0.6,
        "unsubscribe reply must not wait for on_unsubscribe: {t_reply:.3}s"
    );
    assert!(
        t_pong >= 0.75,
        "pong must wait for on_unsubscribe (0.8 s): {t_pong:.3}s"
    );

    // on_subscribe (complex service).
    env.svc
        .set("/complex/on_subscribe", Reply::ok().delay(ms(800)));
    authenticate(&mut c).await;
    let t0 = Instant::now();
    c.send(&subscribe("complex.topic")).await;
    c.send(&json!({"event": "ping", "data": "p2"})).await;
    let r = c.recv().await;
    let t_reply = t0.elapsed().as_secs_f64();
    assert_eq!(r, ok_reply("subscribe", "complex.topic"));
    let r = c.recv().await;
    let t_pong = t0.elapsed().as_secs_f64();
    assert_eq!(r, json!({"event": "pong", "data": "p2"}));
    assert!(
        t_reply < 0.6,
        "subscribe reply must not wait for on_subscribe: {t_reply:.3}s"
    );
    assert!(
        t_pong >= 0.75,
        "pong must wait for on_subscribe (0.8 s): {t_pong:.3}s"
    );
}

/// R-ORD-3, R-ORD-4: a slow callback of one session never delays another session's commands or
/// pushes; pushes to the waiting session itself are not delayed either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ord_3_sessions_are_independent() {
    let env = TestEnv::start().await;
    let mut a = env.client().await;
    let mut b = env.client().await;
    subscribe_ok(&mut a, "simple.a").await;
    subscribe_ok(&mut b, "simple.b").await;
    env.redis
        .wait_channels(&["simple.a", "simple.b"], LONG)
        .await;
    env.svc.push(SBS_PATH, Reply::ok().delay(ms(2500)));
    let t_a = Instant::now();
    a.send(&subscribe(&sbs("slow"))).await;
    a.send(&json!({"event": "ping", "data": "a"})).await;
    env.svc.wait_calls(SBS_PATH, 1, LONG).await;

    // Session B is served immediately: ping, auth (a callback), its own before_subscribe.
    let (r, t) = timed_request(&mut b, &json!({"event": "ping", "data": "b"})).await;
    assert_eq!(r, json!({"event": "pong", "data": "b"}));
    assert!(t < 0.5, "B's pong took {t:.3}s");
    let (r, t) = timed_request(&mut b, &json!({"event": "auth", "ticket": "t"})).await;
    assert_eq!(r, json!({"event": "auth", "status": "ok"}));
    assert!(t < 0.5, "B's auth took {t:.3}s");
    let (r, t) = timed_request(&mut b, &subscribe(&sbs("fast"))).await;
    assert_eq!(r, ok_reply("subscribe", &sbs("fast")));
    assert!(t < 0.5, "B's subscribe took {t:.3}s");
    // Pushes reach both sessions while A's command waits (R-ORD-4).
    for ch in ["simple.a", "simple.b"] {
        env.redis
            .publish_json(ch, &service_message(ch, json!("live")))
            .await;
    }
    let t0 = Instant::now();
    let m = strip_delivery_meta(b.recv().await);
    assert_eq!(
        m,
        json!({"event": "message", "subscription": "simple.b", "data": "live"})
    );
    let m = strip_delivery_meta(a.recv().await);
    assert_eq!(
        m,
        json!({"event": "message", "subscription": "simple.a", "data": "live"})
    );
    assert!(t0.elapsed().as_secs_f64() < 0.5);
    assert!(
        t_a.elapsed().as_secs_f64() < 2.3,
        "the checks above must run while A is still waiting"
    );

    // A's own replies come after its slow callback.
    let r = a.recv().await;
    assert_eq!(r, ok_reply("subscribe", &sbs("slow")));
    assert!(t_a.elapsed().as_secs_f64() >= 2.4);
    let r = a.recv().await;
    assert_eq!(r, json!({"event": "pong", "data": "a"}));
}

/// R-ORD-6, R-END-2: a client that disconnects (close frame or abrupt drop) while its subscribe
/// waits on `before_subscribe`: the command completes (on_subscribe called), then the session
/// end calls before_unsubscribe and on_unsubscribe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ord_6_disconnect_during_subscribe() {
    let env = TestEnv::start().await;
    env.svc
        .set("/complex/before_subscribe", Reply::ok().delay(ms(600)));
    let mut c1 = env.auth_client().await;
    let mut c2 = env.auth_client().await;
    c1.send(&subscribe_extra("complex.closed", "c")).await;
    c2.send(&subscribe_extra("complex.dropped", "d")).await;
    wait_sub_calls(&env.svc, "/complex/before_subscribe", "complex.closed", 1).await;
    wait_sub_calls(&env.svc, "/complex/before_subscribe", "complex.dropped", 1).await;
    c1.close().await;
    c2.abort().await;
    for (name, extra) in [("complex.closed", "c"), ("complex.dropped", "d")] {
        wait_sub_calls(&env.svc, "/complex/on_unsubscribe", name, 1).await;
        assert_eq!(
            trace_for(&env.svc, name),
            vec![
                "/complex/authorizer",
                "/complex/before_subscribe",
                "/complex/on_subscribe",
                "/complex/before_unsubscribe",
                "/complex/on_unsubscribe",
            ],
            "{name}"
        );
        let want = json!({"subscription": name, "extra": extra, "session_id": "sess_123"});
        assert_eq!(
            requests_for(&env.svc, "/complex/on_unsubscribe", name)[0].body,
            want
        );
    }
    env.redis.wait_channels(&[], LONG).await;
    wait_total(&env.svc, 2 + 2 * 5).await;
    sleep_ms(200).await;
    assert_eq!(env.svc.total_calls(), 12, "{}", env.svc.dump());
}

/// R-ORD-6, R-CB-2: a client that disconnects while its `unsubscribe` waits on
/// `before_unsubscribe`: the command completes (removal, on_unsubscribe), and the session end
/// finds nothing left: each callback is called exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ord_6_disconnect_during_unsubscribe() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    let name = "complex.topic";
    subscribe_ok(&mut c, name).await;
    expect_pong_next(&mut c, "barrier").await;
    env.svc
        .set("/complex/before_unsubscribe", Reply::ok().delay(ms(600)));
    c.send(&unsubscribe(name)).await;
    wait_sub_calls(&env.svc, "/complex/before_unsubscribe", name, 1).await;
    c.abort().await;
    wait_sub_calls(&env.svc, "/complex/on_unsubscribe", name, 1).await;
    env.server
        .wait_log(|l| is_event(l, "connection closed"), LONG)
        .await;
    sleep_ms(200).await;
    assert_eq!(
        trace_for(&env.svc, name),
        vec![
            "/complex/authorizer",
            "/complex/before_subscribe",
            "/complex/on_subscribe",
            "/complex/before_unsubscribe",
            "/complex/on_unsubscribe",
        ]
    );
    env.redis.wait_channels(&[], LONG).await;
}
