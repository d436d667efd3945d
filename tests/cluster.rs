//! Issue 16, the Redis Cluster broker: two socketshark nodes on a 3-master Redis Cluster (started
//! by the test). Every message reaches every subscribed client on every node exactly once,
//! whether published through a node's API (SPUBLISH) or by a service with SPUBLISH; when a
//! master is killed mid-run (a node's API publishing on every topic meanwhile), with `on_loss =
//! "reconnect"` the clients stay connected, get no message twice and receive every topic again
//! once its replica took over; with `on_loss = "shutdown"` they are closed with 1000.
//! History and presence keep a channel's keys in the channel's slot.

mod common;
use common::*;

use std::collections::HashMap;

/// Channels spread over every master's slots.
const TOPICS: usize = 30;

fn topic(i: usize) -> String {
    format!("chat.t{i}")
}

fn node_config(cluster: &RedisCluster, on_loss: &str) -> Config {
    Config::from_json(json!({
        "redis": {
            "cluster": cluster.seeds(),
            "on_loss": on_loss,
            "ping_interval": 0.5,
            "ping_timeout": 1.0,
        },
        "ws": {"host": "127.0.0.1", "port": 0, "ping": {"interval": 0}},
        "log": {"level": "INFO", "format": "json"},
        "api": {"port": 0},
        "services": {
            "chat": {"require_authentication": false},
            "hist": {"require_authentication": false, "history_size": 100, "history_ttl": 60},
            "room": {"require_authentication": false, "presence": true},
        },
    }))
}

/// Publishes through the API; `None` when the API answered an error (during a failover).
async fn publish(port: u16, name: &str, data: Value) -> Option<Value> {
    let body = json!({"subscription": name, "data": data}).to_string();
    let r = http_request(port, "POST", "/publish", &[], body.as_bytes()).await;
    (r.status == 200).then(|| serde_json::from_str(&r.body).unwrap())
}

/// Receives until `quiet` passes without a message; counts `(subscription, data)`.
async fn tally(c: &mut Client, quiet: Duration) -> HashMap<(String, Value), usize> {
    let mut seen = HashMap::new();
    for m in c.recv_all(quiet).await {
        assert_eq!(m["event"], "message", "{m}");
        let key = (
            m["subscription"].as_str().unwrap().to_owned(),
            m["data"].clone(),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

/// One round: `data` published on every topic through `port`; every client gets each once.
async fn round_exactly_once(port: u16, clients: &mut [&mut Client], data: Value) {
    for i in 0..TOPICS {
        assert!(
            publish(port, &topic(i), data.clone()).await.is_some(),
            "publish {}",
            topic(i)
        );
    }
    for (n, c) in clients.iter_mut().enumerate() {
        let seen = tally(c, ms(400)).await;
        for i in 0..TOPICS {
            assert_eq!(
                seen.get(&(topic(i), data.clone())),
                Some(&1),
                "client {n}, {}: {seen:?}",
                topic(i)
            );
        }
        assert_eq!(seen.len(), TOPICS, "client {n}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_a_cluster_deliver_once_and_ride_out_a_failover() {
    let cluster = RedisCluster::start(3, 1).await;
    let cfg = node_config(&cluster, "reconnect");
    let (a, b) = (
        Server::start_config(&cfg).await,
        Server::start_config(&cfg).await,
    );
    let (port_a, port_b) = (a.api_port().await, b.api_port().await);
    let mut ca = Client::connect(&a.ws_url()).await;
    let mut cb = Client::connect(&b.ws_url()).await;
    for c in [&mut ca, &mut cb] {
        for i in 0..TOPICS {
            subscribe_ok(c, &topic(i)).await;
        }
    }
    // The topics live on every master.
    let mut masters = std::collections::HashSet::new();
    for i in 0..TOPICS {
        masters.insert(cluster.master_of(&topic(i)).await);
    }
    assert_eq!(masters.len(), 3, "topics on every master");

    // Through either node's API, and straight from a service (SPUBLISH): once each.
    round_exactly_once(port_a, &mut [&mut ca, &mut cb], json!("a")).await;
    round_exactly_once(port_b, &mut [&mut ca, &mut cb], json!("b")).await;
    let payload = json!({"subscription": "chat.t0", "data": "service"}).to_string();
    assert_eq!(cluster.spublish("chat.t0", &payload).await, 2, "both nodes");
    for c in [&mut ca, &mut cb] {
        let m = c.recv().await;
        assert_eq!(m["data"], "service", "{m}");
        c.expect_silence(ms(200)).await;
    }

    // Kill the master of chat.t0 mid-run, while node B's API publishes on every topic; its
    // replica takes over.
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let counter = std::sync::Arc::new(AtomicU64::new(0));
    let background = {
        let (stop, counter) = (stop.clone(), counter.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            while !stop.load(SeqCst) {
                let n = counter.fetch_add(1, SeqCst);
                let name = topic((n % TOPICS as u64) as usize);
                if publish(port_b, &name, json!({"bg": n})).await.is_some() {
                    acknowledged.push((name, n));
                }
                sleep_ms(5).await;
            }
            acknowledged
        })
    };
    sleep_ms(300).await;
    let old = cluster.master_of("chat.t0").await;
    cluster.kill(old);
    a.wait_log(
        |l| is_event(l, "redis connection lost: sessions stay open, reconnecting"),
        secs(10.0),
    )
    .await;
    let new = cluster.wait_failover("chat.t0", old, secs(20.0)).await;
    assert_ne!(new, old);
    wait_until(secs(20.0), "both nodes reconnected", || {
        !a.find_logs("redis reconnected").is_empty() && !b.find_logs("redis reconnected").is_empty()
    })
    .await;
    let reconnected_at = counter.load(SeqCst);
    sleep_ms(500).await;
    stop.store(true, SeqCst);
    let acknowledged = background.await.unwrap();
    // Mid-run: no message twice; every topic's last acknowledged message (published after the
    // failover) arrived at both clients, so none was left deaf.
    let mut last_of: HashMap<String, u64> = HashMap::new();
    for (name, n) in &acknowledged {
        last_of.insert(name.clone(), *n);
    }
    assert_eq!(last_of.len(), TOPICS, "every topic published to");
    for (name, n) in &last_of {
        assert!(
            *n > reconnected_at,
            "{name}: nothing acknowledged after the nodes reconnected"
        );
    }
    for (i, c) in [&mut ca, &mut cb].into_iter().enumerate() {
        let seen = tally(c, ms(500)).await;
        for ((name, data), count) in &seen {
            assert_eq!(*count, 1, "client {i}: {name} {data} twice");
        }
        for (name, n) in &last_of {
            assert!(
                seen.contains_key(&(name.clone(), json!({"bg": n}))),
                "client {i}: {name}'s last message {n} missing after the failover"
            );
        }
    }
    // Every topic delivers again, on both nodes, exactly once; nobody was disconnected.
    round_exactly_once(port_a, &mut [&mut ca, &mut cb], json!("after")).await;
    round_exactly_once(port_b, &mut [&mut ca, &mut cb], json!("after b")).await;
    assert!(!ca.is_closed() && !cb.is_closed(), "no client disconnected");

    // History on the cluster: the client on node B recovers what it missed, from node A's
    // publishes (the list, its position and the SPUBLISH share the channel's slot).
    let r = cb
        .request(&json!({"event": "subscribe", "subscription": "hist.room"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let epoch = r["epoch"].as_str().expect("an epoch").to_owned();
    let start = r["offset"].as_u64().unwrap();
    let r = cb
        .request(&json!({"event": "unsubscribe", "subscription": "hist.room"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    for i in 1..=5u64 {
        let v = publish(port_a, "hist.room", json!(i))
            .await
            .expect("published");
        assert_eq!(v["offsets"][0], start + i, "{v}");
    }
    let r = cb
        .request(&json!({"event": "subscribe", "subscription": "hist.room",
            "recover": {"offset": start + 2, "epoch": epoch}}))
        .await;
    assert_eq!(r["recovered"], true, "{r}");
    let got: Vec<Value> = cb
        .recv_n(3)
        .await
        .into_iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(got, [json!(3), json!(4), json!(5)]);
    cb.expect_silence(ms(200)).await;

    // Presence on the cluster: one member per node, seen from either.
    subscribe_ok(&mut ca, "room.r1").await;
    subscribe_ok(&mut cb, "room.r1").await;
    let r = cb
        .request(&json!({"event": "presence", "subscription": "room.r1"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["members"].as_array().map(Vec::len), Some(2), "{r}");

    a.stop(secs(10.0)).await;
    b.stop(secs(10.0)).await;
}

/// A resharding moves a subscribed channel's slot to another master: the channel is
/// subscribed again on its new owner and keeps delivering, with no client involvement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_keeps_the_channel_delivering() {
    let cluster = RedisCluster::start(3, 0).await;
    let server = Server::start_config(&node_config(&cluster, "reconnect")).await;
    let port = server.api_port().await;
    let mut c = Client::connect(&server.ws_url()).await;
    for i in 0..TOPICS {
        subscribe_ok(&mut c, &topic(i)).await;
    }
    round_exactly_once(port, &mut [&mut c], json!("before")).await;
    // An unsubscribe of ours is not mistaken for the cluster moving the channel.
    let mut other = Client::connect(&server.ws_url()).await;
    subscribe_ok(&mut other, "chat.other").await;
    let r = other
        .request(&json!({"event": "unsubscribe", "subscription": "chat.other"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    // Churn on one channel (the last session leaves, a new one comes at once) ends subscribed.
    for _ in 0..50 {
        let r = other
            .request(&json!({"event": "subscribe", "subscription": "chat.churn"}))
            .await;
        assert_eq!(r["status"], "ok", "{r}");
        let r = other
            .request(&json!({"event": "unsubscribe", "subscription": "chat.churn"}))
            .await;
        assert_eq!(r["status"], "ok", "{r}");
    }
    subscribe_ok(&mut other, "chat.churn").await;
    assert!(
        publish(port, "chat.churn", json!("churned"))
            .await
            .is_some()
    );
    let m = other.recv().await;
    assert_eq!(m["data"], "churned", "{m}");
    let from = cluster.master_of("chat.t1").await;
    let to = *cluster
        .master_ports()
        .await
        .iter()
        .find(|p| **p != from)
        .unwrap();
    cluster.migrate_slot("chat.t1", to).await;
    assert_eq!(cluster.master_of("chat.t1").await, to);
    // The first publish may meet a MOVED (the server follows it); then every topic delivers.
    let mut n = 0;
    loop {
        assert!(publish(port, "chat.t1", json!(n)).await.is_some());
        if let Some(m) = c.recv_timeout(ms(500)).await {
            assert_eq!(m["subscription"], "chat.t1", "{m}");
            break;
        }
        n += 1;
        assert!(n < 20, "chat.t1 deaf after its slot moved");
    }
    round_exactly_once(port, &mut [&mut c], json!("after")).await;
    assert!(!c.is_closed());
    let moved = server.find_logs("redis cluster: a channel's slot moved, subscribing it again");
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0]["channel"], "chat.t1");
    server.stop(secs(10.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_master_with_on_loss_shutdown_closes_the_clients() {
    let cluster = RedisCluster::start(3, 0).await;
    let server = Server::start_config(&node_config(&cluster, "shutdown")).await;
    let mut c = Client::connect(&server.ws_url()).await;
    subscribe_ok(&mut c, "chat.t0").await;
    let master = cluster.master_of("chat.t0").await;
    cluster.kill(master);
    let (code, _) = c.recv_close_skipping_data(secs(10.0)).await;
    assert_eq!(code, Some(1000));
    // As on one Redis (R-RED-5): the server exits, after saying why.
    server.wait_exit(secs(10.0)).await;
    assert!(
        !server
            .find_logs("redis cluster: a node connection dropped and a master is unreachable")
            .is_empty()
            || !server.find_logs("redis ping failed").is_empty(),
        "the loss is logged"
    );
}

/// A session leaves a channel while its slot moves: the server, which subscribes a moved
/// channel again, must not leave it subscribed on the new owner once nobody holds it (a
/// leak Redis would keep until the connection closes). The unsubscribe is sent at the same
/// time as the old owner lets the slot go, in many rounds, to land in every order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_left_while_its_slot_moves_is_not_left_subscribed() {
    const ROUNDS: usize = 30;
    let cluster = RedisCluster::start(3, 0).await;
    let server = Server::start_config(&node_config(&cluster, "reconnect")).await;
    let mut c = Client::connect(&server.ws_url()).await;
    let masters = cluster.master_ports().await;
    let mut moves = Vec::new();
    for round in 0..ROUNDS {
        // A new channel each round, so each round starts from a channel held on its owner.
        let name = format!("chat.race{round}");
        subscribe_ok(&mut c, &name).await;
        let from = cluster.master_of(&name).await;
        let to = *masters.iter().find(|p| **p != from).unwrap();
        let unsubscribe = json!({"event": "unsubscribe", "subscription": name});
        moves.push((from, to));
        let delay = ms((round % 6) as u64);
        let r = cluster
            .migrate_slot_racing(&name, to, async {
                tokio::time::sleep(delay).await;
                c.request(&unsubscribe).await
            })
            .await;
        assert_eq!(r["status"], "ok", "{r}");
    }
    // Let every re-subscription and unsubscription finish.
    sleep_ms(1000).await;
    let mut leaked = Vec::new();
    for (round, fromto) in moves.iter().enumerate() {
        let name = format!("chat.race{round}");
        let n = cluster.shard_subscribers(&name).await;
        if !n.is_empty() {
            leaked.push((name, fromto, n));
        }
    }
    let moved = server.find_logs("redis cluster: a channel's slot moved, subscribing it again");
    eprintln!(
        "{} of {ROUNDS} rounds saw the move while still subscribed",
        moved.len()
    );
    assert!(
        leaked.is_empty(),
        "left subscribed on Redis ((channel, (from, to), [(port, subscribers)])): {leaked:?}"
    );
    assert!(!c.is_closed());
    server.stop(secs(10.0)).await;
}
