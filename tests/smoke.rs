//! A quick end-to-end check of the harness and the server: subscribe, publish, shutdown.
mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_authorizer_fields_reach_callbacks() {
    let env = TestEnv::start().await;
    env.svc.set(
        "/complex/authorizer",
        Reply::json(json!({"status": "ok", "capabilities": "foo", "plan_type": "bar"})),
    );
    let mut c = env.auth_client().await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "complex.topic"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "subscription": "complex.topic"})
    );
    env.redis.wait_channels(&["complex.topic"], secs(5.0)).await;
    env.redis
        .publish_json(
            "complex.topic",
            &json!({"subscription": "complex.topic", "data": {"n": 1}}),
        )
        .await;
    let m = c.recv().await;
    assert_eq!(
        strip_delivery_meta(m),
        json!({"event": "message", "subscription": "complex.topic", "data": {"n": 1}})
    );
    env.server.stop(secs(10.0)).await;
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
}
