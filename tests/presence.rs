//! Issue 14, presence: who is subscribed to a channel, across two nodes sharing Redis; join and
//! leave frames; `presence_stats`; `GET /presence`; a killed node's members expire.

mod common;
use common::*;

async fn two_nodes() -> (Redis, MockService, Server, Server) {
    let redis = Redis::start().await;
    let svc = MockService::start().await;
    svc.set("/auth", Reply::auth_ok(SESSION_ID));
    let mut cfg = base_config(&redis, &svc);
    cfg.set("api", json!({"port": 0}));
    cfg.set(
        "services.room",
        json!({"require_authentication": false, "presence": true, "join_leave": true,
               "presence_ttl": 2, "extra_fields": ["device"]}),
    );
    let a = Server::start_config(&cfg).await;
    let b = Server::start_config(&cfg).await;
    (redis, svc, a, b)
}

fn clients_of(members: &Value) -> Vec<String> {
    let mut ids: Vec<String> = members
        .as_array()
        .unwrap_or_else(|| panic!("members: {members}"))
        .iter()
        .map(|m| m["client"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn presence(c: &mut Client, name: &str) -> Value {
    let r = c
        .request(&json!({"event": "presence", "subscription": name}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    r["members"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_across_two_nodes_with_join_leave_and_expiry() {
    let (_redis, _svc, node_a, node_b) = two_nodes().await;
    let mut a = Client::connect(&node_a.ws_url()).await;
    authenticate(&mut a).await;
    let r = a
        .request(&json!({"event": "subscribe", "subscription": "room.r1", "device": "phone"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let join_a = a.recv().await;
    assert_eq!(join_a["event"], "join", "{join_a}");
    assert_eq!(join_a["info"]["auth"], json!({"session_id": SESSION_ID}));
    assert_eq!(join_a["info"]["info"], json!({"device": "phone"}));
    let id_a = join_a["info"]["client"].as_str().unwrap().to_owned();

    let mut b = Client::connect(&node_b.ws_url()).await;
    subscribe_ok(&mut b, "room.r1").await;
    let join_b = a.recv().await;
    assert_eq!(
        (join_b["event"].as_str(), join_b["subscription"].as_str()),
        (Some("join"), Some("room.r1")),
        "{join_b}"
    );
    let id_b = join_b["info"]["client"].as_str().unwrap().to_owned();
    assert_ne!(id_a, id_b);
    assert_eq!(b.recv().await["event"], "join", "B sees its own join");

    let mut both = vec![id_a.clone(), id_b.clone()];
    both.sort();
    assert_eq!(clients_of(&presence(&mut a, "room.r1").await), both);
    assert_eq!(clients_of(&presence(&mut b, "room.r1").await), both);
    let r = a
        .request(&json!({"event": "presence_stats", "subscription": "room.r1"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "presence_stats", "status": "ok", "device": "phone", "num_clients": 2, "num_users": 1, "subscription": "room.r1"})
    );
    let port = node_a.wait_event("publish API listening", secs(10.0)).await["port"]
        .as_u64()
        .unwrap() as u16;
    let api = http_get(port, "/presence?subscription=room.r1").await;
    assert_eq!(api.status, 200, "{api:?}");
    let api: Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(clients_of(&api["members"]), both);

    // Leaving is announced and the member goes.
    let r = b
        .request(&json!({"event": "unsubscribe", "subscription": "room.r1"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let leave = a.recv().await;
    assert_eq!(leave["event"], "leave", "{leave}");
    assert_eq!(leave["info"]["client"], id_b.as_str());
    assert_eq!(
        clients_of(&presence(&mut a, "room.r1").await),
        vec![id_a.clone()]
    );

    // A node that dies does not say goodbye: its members expire (presence_ttl 2 s).
    subscribe_ok(&mut b, "room.r1").await;
    let join = a.recv().await;
    assert_eq!(join["event"], "join", "{join}");
    assert_eq!(
        presence(&mut a, "room.r1").await.as_array().unwrap().len(),
        2
    );
    node_b.kill();
    let t0 = std::time::Instant::now();
    loop {
        let members = presence(&mut a, "room.r1").await;
        if clients_of(&members) == vec![id_a.clone()] {
            break;
        }
        assert!(
            t0.elapsed() < secs(6.0),
            "the dead node's member is still there: {members}"
        );
        sleep_ms(200).await;
    }
    eprintln!(
        "dead node's member gone after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // A's own entry is refreshed and stays.
    sleep_ms(2500).await;
    assert_eq!(clients_of(&presence(&mut a, "room.r1").await), vec![id_a]);
    node_a.stop(secs(10.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_errors() {
    let (_redis, _svc, node_a, _node_b) = two_nodes().await;
    let mut c = Client::connect(&node_a.ws_url()).await;
    let r = c
        .request(&json!({"event": "presence", "subscription": "room.r1"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "presence", "status": "error", "error": "Subscription does not exist.", "subscription": "room.r1"})
    );
    subscribe_ok(&mut c, "simple.t").await;
    let r = c
        .request(&json!({"event": "presence_stats", "subscription": "simple.t"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "presence_stats", "status": "error", "error": "Presence is not enabled.", "subscription": "simple.t"})
    );
    let port = node_a.wait_event("publish API listening", secs(10.0)).await["port"]
        .as_u64()
        .unwrap() as u16;
    assert_eq!(
        http_get(port, "/presence?subscription=simple.t")
            .await
            .status,
        400
    );
    assert_eq!(http_get(port, "/presence").await.status, 400);
    node_a.stop(secs(10.0)).await;
}
