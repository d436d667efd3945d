//! Issue 14, history and recovery: messages published through `POST /publish` on a service
//! with `history_size` get an offset and an epoch in Redis (or the embedded broker); a client
//! that reconnects, to the same node or another, subscribes with `recover` and gets what it
//! missed, in order, exactly once, before live messages.

mod common;
use common::*;

fn history_service(size: usize) -> Value {
    json!({"require_authentication": false, "history_size": size, "history_ttl": 60})
}

/// Redis, and `nodes` servers sharing it, each with the publish API.
async fn redis_nodes(nodes: usize, size: usize) -> (Redis, MockService, Vec<Server>) {
    let redis = Redis::start().await;
    let svc = MockService::start().await;
    let mut cfg = base_config(&redis, &svc);
    cfg.set("api", json!({"port": 0}));
    cfg.set("services.hist", history_service(size));
    let mut narrowed = history_service(size);
    narrowed["before_subscribe"] = json!(svc.url("/narrowed/before_subscribe"));
    cfg.set("services.narrowed", narrowed);
    let mut servers = Vec::new();
    for _ in 0..nodes {
        servers.push(Server::start_config(&cfg).await);
    }
    (redis, svc, servers)
}

/// Publishes `data` on `name` through the API; returns the offset it got.
async fn publish(port: u16, name: &str, data: Value) -> Option<u64> {
    let body = json!({"subscription": name, "data": data}).to_string();
    let r = http_request(port, "POST", "/publish", &[], body.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v.get("offsets").map(|o| o[0].as_u64().expect("an offset"))
}

/// Subscribes without `recover`; returns the channel's epoch from the reply.
async fn epoch_of(c: &mut Client, name: &str) -> String {
    let r = subscribe_recovering(c, name, None).await;
    r["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch: {r}"))
        .to_owned()
}

/// The test: a client that missed 100 messages reconnects to the other node and gets
/// all 100 in order, then live ones (some published while it recovers), no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_the_other_node_after_missing_100_messages() {
    let (_redis, _svc, nodes) = redis_nodes(2, 1000).await;
    recover_100_missed_on_the_other_node(nodes).await;
}

/// Recovery is refused when the window no longer holds every missed message, and when the
/// epoch is not the channel's; the client then gets only live messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_refused_after_the_window_or_with_another_epoch() {
    let (_redis, _svc, nodes) = redis_nodes(1, 10).await;
    let port = nodes[0].api_port().await;
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let epoch = epoch_of(&mut c, "hist.room").await;
    for i in 1..=30u64 {
        publish(port, "hist.room", json!(i)).await;
    }
    recv_offsets(&mut c, 30).await;
    c.close().await;

    let mut top = 30;
    for (recover, what) in [
        (
            json!({"offset": 5, "epoch": epoch}),
            "out of the window (10)",
        ),
        (json!({"offset": 25, "epoch": "other"}), "another epoch"),
        (
            json!({"offset": 1000, "epoch": epoch}),
            "ahead of the channel",
        ),
        (json!({"offset": "x"}), "malformed"),
    ] {
        let mut c = Client::connect(&nodes[0].ws_url()).await;
        let r = subscribe_recovering(&mut c, "hist.room", Some(recover)).await;
        assert_eq!(r["recovered"], false, "{what}: {r}");
        assert_eq!(r["offset"], top, "{what}: {r}");
        c.expect_silence(ms(200)).await;
        let next = publish(port, "hist.room", json!("live")).await.unwrap();
        let got = recv_offsets(&mut c, 1).await;
        assert_eq!(got, vec![(next, json!("live"))], "{what}");
        top = next;
        c.close().await;
    }
    // Within the window it works: the last 10 are kept.
    assert_eq!(top, 34);
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let r = subscribe_recovering(
        &mut c,
        "hist.room",
        Some(json!({"offset": 30, "epoch": epoch})),
    )
    .await;
    assert_eq!(r["recovered"], true, "{r}");
    let got = recv_offsets(&mut c, 4).await;
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![31, 32, 33, 34]
    );
    nodes[0].stop(secs(10.0)).await;
}

/// A service without history, and a raw Redis PUBLISH on a service with history: frames as
/// before, no offset, and no `offsets` in the API answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_frames_are_unchanged() {
    let (redis, _svc, nodes) = redis_nodes(1, 10).await;
    let port = nodes[0].api_port().await;
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let r = subscribe_recovering(&mut c, "simple.room", None).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "subscription": "simple.room"})
    );
    assert_eq!(publish(port, "simple.room", json!(1)).await, None);
    let m = strip_delivery_meta(c.recv().await);
    assert_eq!(
        m,
        json!({"event": "message", "subscription": "simple.room", "data": 1})
    );
    subscribe_recovering(&mut c, "hist.raw", None).await;
    redis
        .publish_json("hist.raw", &service_message("hist.raw", json!(2)))
        .await;
    let m = strip_delivery_meta(c.recv().await);
    assert_eq!(
        m,
        json!({"event": "message", "subscription": "hist.raw", "data": 2})
    );
    nodes[0].stop(secs(10.0)).await;
}

/// The embedded broker keeps the ring itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_the_embedded_broker() {
    let cfg = Config::from_json(json!({
        "broker": "memory",
        "ws": {"host": "127.0.0.1", "port": 0, "ping": {"interval": 0}},
        "log": {"level": "DEBUG", "format": "json"},
        "api": {"port": 0},
        "services": {"hist": history_service(100)},
    }));
    let server = Server::start_config(&cfg).await;
    let port = server.api_port().await;
    let mut c = Client::connect(&server.ws_url()).await;
    let epoch = epoch_of(&mut c, "hist.room").await;
    publish(port, "hist.room", json!(1)).await;
    assert_eq!(recv_offsets(&mut c, 1).await, vec![(1, json!(1))]);
    c.close().await;
    for i in 2..=4u64 {
        assert_eq!(publish(port, "hist.room", json!(i)).await, Some(i));
    }
    let mut c = Client::connect(&server.ws_url()).await;
    let r = subscribe_recovering(
        &mut c,
        "hist.room",
        Some(json!({"offset": 1, "epoch": epoch})),
    )
    .await;
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(
        recv_offsets(&mut c, 3).await,
        vec![(2, json!(2)), (3, json!(3)), (4, json!(4))]
    );
    server.stop(secs(10.0)).await;
}

/// The `history` command: the last messages of a subscribed channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_command_returns_the_last_messages() {
    let cfg = Config::from_json(json!({
        "broker": "memory",
        "ws": {"host": "127.0.0.1", "port": 0, "ping": {"interval": 0}},
        "log": {"level": "DEBUG", "format": "json"},
        "api": {"port": 0},
        "services": {"hist": history_service(4), "plain": {"require_authentication": false}},
    }));
    let server = Server::start_config(&cfg).await;
    let port = server.api_port().await;
    let mut c = Client::connect(&server.ws_url()).await;
    let epoch = epoch_of(&mut c, "hist.room").await;
    for i in 1..=6u64 {
        publish(port, "hist.room", json!(i)).await;
    }
    assert_eq!(recv_offsets(&mut c, 6).await.len(), 6);
    let r = c
        .request(&json!({"event": "history", "subscription": "hist.room", "limit": 3}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(
        (r["offset"].clone(), r["epoch"].clone()),
        (json!(6), json!(epoch))
    );
    let got: Vec<(Value, Value)> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["event"], "message", "{m}");
            assert_eq!(m["subscription"], "hist.room", "{m}");
            (m["offset"].clone(), m["data"].clone())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (json!(4), json!(4)),
            (json!(5), json!(5)),
            (json!(6), json!(6))
        ]
    );
    // Without a limit: the whole window (history_size 4).
    let r = c
        .request(&json!({"event": "history", "subscription": "hist.room"}))
        .await;
    assert_eq!(r["messages"].as_array().unwrap().len(), 4, "{r}");
    let r = c
        .request(&json!({"event": "history", "subscription": "hist.other"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "history", "status": "error", "error": "Subscription does not exist.", "subscription": "hist.other"})
    );
    subscribe_recovering(&mut c, "plain.room", None).await;
    let r = c
        .request(&json!({"event": "history", "subscription": "plain.room"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "history", "status": "error", "error": "History is not enabled.", "subscription": "plain.room"})
    );
    server.stop(secs(10.0)).await;
}

/// `before_subscribe` may narrow a subscription's recovery window (`"options": {"history": N}`)
/// or turn history off for it (`{"history": false}`: no position, no recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_subscribe_options_narrow_or_turn_off_history() {
    let (_redis, svc, nodes) = redis_nodes(1, 100).await;
    let port = nodes[0].api_port().await;
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let epoch = epoch_of(&mut c, "narrowed.room").await;
    c.close().await;
    for i in 1..=5u64 {
        publish(port, "narrowed.room", json!(i)).await;
    }
    let recover = json!({"offset": 0, "epoch": epoch});
    svc.set(
        "/narrowed/before_subscribe",
        Reply::json(json!({"status": "ok", "options": {"history": 3}})),
    );
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let r = subscribe_recovering(&mut c, "narrowed.room", Some(recover.clone())).await;
    assert_eq!(r["recovered"], false, "5 missed, window 3: {r}");
    c.close().await;
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let r = subscribe_recovering(
        &mut c,
        "narrowed.room",
        Some(json!({"offset": 3, "epoch": epoch})),
    )
    .await;
    assert_eq!(r["recovered"], true, "2 missed, window 3: {r}");
    assert_eq!(recv_offsets(&mut c, 2).await.len(), 2);
    c.close().await;
    svc.set(
        "/narrowed/before_subscribe",
        Reply::json(json!({"status": "ok", "options": {"history": false}})),
    );
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let r = subscribe_recovering(&mut c, "narrowed.room", Some(recover)).await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "recovered": false, "subscription": "narrowed.room"})
    );
    c.expect_silence(ms(200)).await;
    nodes[0].stop(secs(10.0)).await;
}
