//! Issue 16, the NATS broker: two socketshark nodes on one `nats-server` (started by the test);
//! every message reaches every subscribed client on every node exactly once, whether published
//! through a node's API or straight to NATS; after the NATS server is restarted the clients, still
//! connected, receive again. With `nats-server -js`: history (recovery on another node,
//! concurrent publishes from two nodes, the window, the `history` command, a NATS restart, a
//! deleted stream) and presence (join/leave, a dead node's members expire).

mod common;
use common::*;

use std::process::{Child, Command, Stdio};

struct Nats {
    port: u16,
    child: Option<Child>,
    /// JetStream's store (`-js -sd`), when enabled; kept across a restart.
    store: Option<std::path::PathBuf>,
}

impl Nats {
    fn start(port: u16) -> Nats {
        Nats::spawn(port, None)
    }

    /// With JetStream, its store in `store`.
    fn start_js(port: u16, store: &TempDir) -> Nats {
        Nats::spawn(port, Some(store.path().to_owned()))
    }

    fn spawn(port: u16, store: Option<std::path::PathBuf>) -> Nats {
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(dir) = &store {
            cmd.arg("-js").arg("-sd").arg(dir);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}): apt-get install -y nats-server")
            });
        Nats {
            port,
            child: Some(child),
            store,
        }
    }

    /// Stopped and started again on the same port (with the same JetStream store).
    fn restart(&mut self) {
        self.stop();
        let port = self.port;
        *self = Nats::spawn(port, self.store.take());
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn wait_ready(&self) {
        wait_until(secs(10.0), "nats-server listening", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        })
        .await;
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

fn node_config(nats_port: u16) -> Config {
    Config::from_json(json!({
        "broker": "nats",
        "nats": {"servers": [format!("nats://127.0.0.1:{nats_port}")]},
        "ws": {"host": "127.0.0.1", "port": 0, "ping": {"interval": 0}},
        "log": {"level": "INFO", "format": "json"},
        "api": {"port": 0},
        "services": {"chat": {"require_authentication": false}},
    }))
}

async fn publish(port: u16, name: &str, data: Value) {
    let body = json!({"subscription": name, "data": data}).to_string();
    let r = http_request(port, "POST", "/publish", &[], body.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
}

async fn expect(clients: &mut [&mut Client], name: &str, data: Value) {
    for (i, c) in clients.iter_mut().enumerate() {
        let m = c.recv().await;
        assert_eq!(
            (m["subscription"].clone(), m["data"].clone()),
            (json!(name), data.clone()),
            "client {i}: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_nats_deliver_once_and_ride_out_a_nats_restart() {
    let mut nats = Nats::start(free_port());
    nats.wait_ready().await;
    let cfg = node_config(nats.port);
    let (a, b) = (
        Server::start_config(&cfg).await,
        Server::start_config(&cfg).await,
    );
    let port_a = a.api_port().await;
    let mut ca = Client::connect(&a.ws_url()).await;
    let mut cb = Client::connect(&b.ws_url()).await;
    for c in [&mut ca, &mut cb] {
        subscribe_ok(c, "chat.room").await;
        subscribe_ok(c, "chat.a b*").await;
    }

    // Through node A's API: both nodes' clients, once each.
    publish(port_a, "chat.room", json!(1)).await;
    expect(&mut [&mut ca, &mut cb], "chat.room", json!(1)).await;
    // A name with characters NATS does not allow in subjects.
    publish(port_a, "chat.a b*", json!(2)).await;
    expect(&mut [&mut ca, &mut cb], "chat.a b*", json!(2)).await;
    // Straight to NATS, as a service would.
    let service = async_nats::connect(format!("nats://127.0.0.1:{}", nats.port))
        .await
        .unwrap();
    let payload = json!({"subscription": "chat.room", "data": 3}).to_string();
    service
        .publish("chat.room", payload.into_bytes().into())
        .await
        .unwrap();
    service.flush().await.unwrap();
    expect(&mut [&mut ca, &mut cb], "chat.room", json!(3)).await;
    for c in [&mut ca, &mut cb] {
        c.expect_silence(ms(200)).await;
    }

    // NATS restarted on the same port: the nodes reconnect and resubscribe by themselves.
    nats.stop();
    a.wait_log(
        |l| is_event(l, "nats disconnected: reconnecting"),
        secs(5.0),
    )
    .await;
    let port = nats.port;
    let nats = Nats::spawn(port, None);
    nats.wait_ready().await;
    let back = |s: &Server| {
        s.find_logs("nats connected").len() >= 2 // the first connect, then the reconnect
    };
    wait_until(secs(15.0), "both nodes reconnected", || {
        back(&a) && back(&b)
    })
    .await;
    // Delivery again (retrying: a resubscription may still be on its way).
    let mut n = 10;
    loop {
        publish(port_a, "chat.room", json!(n)).await;
        if let Some(m) = ca.recv_timeout(ms(500)).await {
            assert_eq!(m["subscription"], "chat.room", "{m}");
            break;
        }
        n += 1;
        assert!(n < 40, "node A's client deaf after the NATS restart");
    }
    let m = cb.recv().await;
    assert_eq!(m["data"], json!(n), "node B's client: {m}");
    assert!(!ca.is_closed() && !cb.is_closed(), "no client disconnected");
    a.stop(secs(10.0)).await;
    b.stop(secs(10.0)).await;
}

// History on JetStream (issue 16): the scenarios of tests/history.rs, on NATS.

fn history_config(nats_port: u16, size: usize) -> Config {
    Config::from_json(json!({
        "broker": "nats",
        "nats": {"servers": [format!("nats://127.0.0.1:{nats_port}")]},
        "ws": {"host": "127.0.0.1", "port": 0, "ping": {"interval": 0}},
        "log": {"level": "INFO", "format": "json"},
        "api": {"port": 0},
        "services": {
            "hist": {"require_authentication": false, "history_size": size, "history_ttl": 60},
            "chat": {"require_authentication": false},
        },
    }))
}

/// A `nats-server -js` (its store a temp dir) and `nodes` socketshark nodes on it.
async fn js_nodes(nodes: usize, size: usize) -> (Nats, TempDir, Vec<Server>) {
    let store = TempDir::new("nats-js");
    let nats = Nats::start_js(free_port(), &store);
    nats.wait_ready().await;
    let cfg = history_config(nats.port, size);
    let mut servers = Vec::new();
    for _ in 0..nodes {
        servers.push(Server::start_config(&cfg).await);
    }
    (nats, store, servers)
}

/// A client on node B misses 100 messages published through both nodes, comes back to node B
/// with `recover` and gets exactly those, then the live ones (some published while it
/// recovers), in order, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_history_recovers_missed_messages_on_another_node() {
    let (_nats, _store, nodes) = js_nodes(2, 1000).await;
    recover_100_missed_on_the_other_node(nodes).await;
}

/// Both nodes publish to one channel at once (their first publishes also race to create the
/// stream): every offset is handed out once, 1..=N, and a subscriber gets them in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_concurrent_publishes_get_unique_consecutive_offsets() {
    let (_nats, _store, nodes) = js_nodes(2, 1000).await;
    let ports = [nodes[0].api_port().await, nodes[1].api_port().await];
    // Subscribed on another service first: the history stream does not exist yet.
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    const TASKS: usize = 8;
    const EACH: usize = 25;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let port = ports[t % 2];
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                got.push(publish_with_offset(port, "hist.race", json!([t, i])).await);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    let n = (TASKS * EACH) as u64;
    assert_eq!(
        all,
        (1..=n).collect::<Vec<_>>(),
        "unique, consecutive offsets"
    );
    eprintln!(
        "{n} concurrent publishes with history from 2 nodes: {:.0} ms",
        elapsed.as_secs_f64() * 1000.0
    );
    // The whole history, read back in offset order.
    let r = subscribe_recovering(
        &mut c,
        "hist.race",
        Some(json!({"offset": 0, "epoch": "unknown"})),
    )
    .await;
    assert_eq!(
        (r["recovered"].clone(), r["offset"].clone()),
        (json!(false), json!(n))
    );
    let epoch = r["epoch"].as_str().unwrap().to_owned();
    let mut c2 = Client::connect(&nodes[1].ws_url()).await;
    let r = subscribe_recovering(
        &mut c2,
        "hist.race",
        Some(json!({"offset": 0, "epoch": epoch})),
    )
    .await;
    assert_eq!(r["recovered"], true, "{r}");
    let got: Vec<u64> = recv_offsets(&mut c2, n as usize)
        .await
        .iter()
        .map(|g| g.0)
        .collect();
    assert_eq!(got, (1..=n).collect::<Vec<_>>());
    for n in nodes {
        n.stop(secs(10.0)).await;
    }
}

/// Recovery is refused when the window (history_size 10) no longer holds every missed message,
/// with another epoch, or ahead of the channel; within the window it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_recovery_refused_beyond_the_window() {
    let (_nats, _store, nodes) = js_nodes(1, 10).await;
    let port = nodes[0].api_port().await;
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let r = subscribe_recovering(&mut c, "hist.room", None).await;
    let epoch = r["epoch"].as_str().unwrap().to_owned();
    for i in 1..=30u64 {
        publish_with_offset(port, "hist.room", json!(i)).await;
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
    ] {
        let mut c = Client::connect(&nodes[0].ws_url()).await;
        let r = subscribe_recovering(&mut c, "hist.room", Some(recover)).await;
        assert_eq!(r["recovered"], false, "{what}: {r}");
        assert_eq!(r["offset"], top, "{what}: {r}");
        c.expect_silence(ms(200)).await;
        let next = publish_with_offset(port, "hist.room", json!("live")).await;
        assert_eq!(
            recv_offsets(&mut c, 1).await,
            vec![(next, json!("live"))],
            "{what}"
        );
        top = next;
        c.close().await;
    }
    assert_eq!(top, 33);
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let r = subscribe_recovering(
        &mut c,
        "hist.room",
        Some(json!({"offset": 24, "epoch": epoch})),
    )
    .await;
    assert_eq!(r["recovered"], true, "the last 10 are kept: {r}");
    let got: Vec<u64> = recv_offsets(&mut c, 9).await.iter().map(|g| g.0).collect();
    assert_eq!(got, (25..=33).collect::<Vec<_>>());
    nodes[0].stop(secs(10.0)).await;
}

/// The `history` command on NATS; a service without history and a raw NATS publish on a
/// history service deliver as before (no offset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_history_command_and_messages_without_history() {
    let (nats, _store, nodes) = js_nodes(1, 4).await;
    let port = nodes[0].api_port().await;
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let r = subscribe_recovering(&mut c, "hist.room", None).await;
    let epoch = r["epoch"].as_str().unwrap().to_owned();
    for i in 1..=6u64 {
        publish_with_offset(port, "hist.room", json!(i)).await;
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
        .map(|m| (m["offset"].clone(), m["data"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!(4), json!(4)),
            (json!(5), json!(5)),
            (json!(6), json!(6))
        ]
    );
    let r = c
        .request(&json!({"event": "history", "subscription": "hist.room"}))
        .await;
    assert_eq!(
        r["messages"].as_array().unwrap().len(),
        4,
        "the window: {r}"
    );

    // Straight to NATS, as a service would: delivered, no history.
    let service = async_nats::connect(format!("nats://127.0.0.1:{}", nats.port))
        .await
        .unwrap();
    let payload = json!({"subscription": "hist.room", "data": "raw"}).to_string();
    service
        .publish("hist.room", payload.into_bytes().into())
        .await
        .unwrap();
    service.flush().await.unwrap();
    let m = strip_delivery_meta(c.recv().await);
    assert_eq!(
        m,
        json!({"event": "message", "subscription": "hist.room", "data": "raw"})
    );
    subscribe_recovering(&mut c, "chat.plain", None).await;
    publish(port, "chat.plain", json!(1)).await;
    let m = strip_delivery_meta(c.recv().await);
    assert_eq!(
        m,
        json!({"event": "message", "subscription": "chat.plain", "data": 1})
    );
    assert_eq!(
        publish_with_offset(port, "hist.room", json!(7)).await,
        7,
        "the raw message took no offset"
    );
    nodes[0].stop(secs(10.0)).await;
}

/// The history lives in JetStream's file store: it survives a NATS restart. A stream deleted by
/// hand is created again by the next history read or publish, with new epochs: a client then
/// gets `recovered: false`, never messages of the lost history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_history_survives_a_nats_restart_and_a_deleted_stream_means_a_new_epoch() {
    let (mut nats, _store, nodes) = js_nodes(1, 100).await;
    let port = nodes[0].api_port().await;
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let r = subscribe_recovering(&mut c, "hist.room", None).await;
    let epoch = r["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3u64 {
        assert_eq!(publish_with_offset(port, "hist.room", json!(i)).await, i);
    }
    recv_offsets(&mut c, 3).await;
    c.close().await;

    nats.restart();
    nats.wait_ready().await;
    wait_until(secs(15.0), "the node reconnected", || {
        nodes[0].find_logs("nats connected").len() >= 2
    })
    .await;
    // JetStream may need a moment after the restart: retry the first publish.
    let body = json!({"subscription": "hist.room", "data": 4}).to_string();
    let deadline = std::time::Instant::now() + secs(10.0);
    loop {
        let r = http_request(port, "POST", "/publish", &[], body.as_bytes()).await;
        if r.status == 200 {
            assert!(r.body.contains("\"offsets\":[4]"), "{r:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "publish after restart: {r:?}"
        );
        sleep_ms(100).await;
    }
    let mut c = Client::connect(&nodes[0].ws_url()).await;
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
    c.close().await;

    // The stream deleted by hand: a history read creates it again, with a new epoch.
    let js = async_nats::jetstream::new(
        async_nats::connect(format!("nats://127.0.0.1:{}", nats.port))
            .await
            .unwrap(),
    );
    js.delete_stream("socketshark-history-hist").await.unwrap();
    let mut c = Client::connect(&nodes[0].ws_url()).await;
    let r = subscribe_recovering(
        &mut c,
        "hist.room",
        Some(json!({"offset": 4, "epoch": epoch})),
    )
    .await;
    assert_eq!(
        (r["recovered"].clone(), r["offset"].clone()),
        (json!(false), json!(0)),
        "{r}"
    );
    let epoch2 = r["epoch"].as_str().unwrap().to_owned();
    assert_ne!(epoch2, epoch);
    assert_eq!(publish_with_offset(port, "hist.room", json!("a")).await, 1);
    let m = c.recv().await;
    assert_eq!(
        (m["offset"].clone(), m["epoch"].clone()),
        (json!(1), json!(epoch2)),
        "{m}"
    );
    // Deleted again: the next publish creates it.
    js.delete_stream("socketshark-history-hist").await.unwrap();
    assert_eq!(publish_with_offset(port, "hist.room", json!("b")).await, 1);
    let m = c.recv().await;
    assert_eq!(m["offset"], 1, "{m}");
    assert_ne!(m["epoch"], json!(epoch2), "{m}");
    nodes[0].stop(secs(10.0)).await;
}

/// Without JetStream (`nats-server` without `-js`), a service with history fails at once and
/// says why (its subscribers get no position, its publishes 503); the others work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jetstream_history_fails_quickly_and_other_services_work() {
    let nats = Nats::start(free_port());
    nats.wait_ready().await;
    let node = Server::start_config(&history_config(nats.port, 10)).await;
    let port = node.api_port().await;
    let mut c = Client::connect(&node.ws_url()).await;
    let started = std::time::Instant::now();
    // Subscribed without a position (as when Redis cannot be read), the reason logged.
    let r = subscribe_recovering(&mut c, "hist.room", None).await;
    assert_eq!(r.get("epoch"), None, "{r}");
    let log = node.wait_event("history unavailable", secs(5.0)).await;
    assert!(
        log["error"].as_str().unwrap().contains("nats-server -js"),
        "{log}"
    );
    let body = json!({"subscription": "hist.room", "data": 1}).to_string();
    let r = http_request(port, "POST", "/publish", &[], body.as_bytes()).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("jetstream"), "{r:?}");
    assert!(started.elapsed() < secs(3.0), "{:?}", started.elapsed());
    subscribe_recovering(&mut c, "chat.room", None).await;
    publish(port, "chat.room", json!(1)).await;
    assert_eq!(c.recv().await["data"], 1);
    node.stop(secs(10.0)).await;
}

// Presence on JetStream key-value buckets: tests/presence.rs's scenario on NATS.

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

async fn members(c: &mut Client, name: &str) -> Value {
    let r = c
        .request(&json!({"event": "presence", "subscription": name}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    r["members"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_presence_across_two_nodes_with_join_leave_and_expiry() {
    let store = TempDir::new("nats-js");
    let nats = Nats::start_js(free_port(), &store);
    nats.wait_ready().await;
    let mut cfg = history_config(nats.port, 10);
    cfg.set(
        "services.room",
        json!({"require_authentication": false, "presence": true, "join_leave": true,
               "presence_ttl": 2}),
    );
    let node_a = Server::start_config(&cfg).await;
    let node_b = Server::start_config(&cfg).await;
    let mut a = Client::connect(&node_a.ws_url()).await;
    // Nobody yet (no bucket yet either).
    subscribe_ok(&mut a, "chat.x").await;
    let r = a
        .request(&json!({"event": "presence", "subscription": "chat.x"}))
        .await;
    assert_eq!(r["status"], "error", "presence off for chat: {r}");
    subscribe_ok(&mut a, "room.r1").await;
    let join_a = a.recv().await;
    assert_eq!(join_a["event"], "join", "{join_a}");
    let id_a = join_a["info"]["client"].as_str().unwrap().to_owned();

    let mut b = Client::connect(&node_b.ws_url()).await;
    subscribe_ok(&mut b, "room.r1").await;
    let join_b = a.recv().await;
    assert_eq!(join_b["event"], "join", "{join_b}");
    let id_b = join_b["info"]["client"].as_str().unwrap().to_owned();
    assert_eq!(b.recv().await["event"], "join", "B sees its own join");
    let mut both = vec![id_a.clone(), id_b.clone()];
    both.sort();
    assert_eq!(clients_of(&members(&mut a, "room.r1").await), both);
    assert_eq!(clients_of(&members(&mut b, "room.r1").await), both);
    // Another channel of the service (a longer name sharing the prefix) is not mixed in.
    subscribe_ok(&mut b, "room.r1.sub").await;
    assert_eq!(b.recv().await["event"], "join");
    assert_eq!(clients_of(&members(&mut a, "room.r1").await), both);
    assert_eq!(
        members(&mut b, "room.r1.sub")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let r = b
        .request(&json!({"event": "unsubscribe", "subscription": "room.r1"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let leave = a.recv().await;
    assert_eq!(leave["event"], "leave", "{leave}");
    assert_eq!(leave["info"]["client"], id_b.as_str());
    assert_eq!(
        clients_of(&members(&mut a, "room.r1").await),
        vec![id_a.clone()]
    );

    // A node that dies does not say goodbye: its members expire (presence_ttl 2 s).
    subscribe_ok(&mut b, "room.r1").await;
    assert_eq!(a.recv().await["event"], "join");
    assert_eq!(
        members(&mut a, "room.r1").await.as_array().unwrap().len(),
        2
    );
    node_b.kill();
    let t0 = std::time::Instant::now();
    loop {
        let m = members(&mut a, "room.r1").await;
        if clients_of(&m) == vec![id_a.clone()] {
            break;
        }
        assert!(
            t0.elapsed() < secs(6.0),
            "the dead node's member is still there: {m}"
        );
        sleep_ms(200).await;
    }
    eprintln!(
        "dead node's member gone from the bucket after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // A's own entry is refreshed and stays.
    sleep_ms(2500).await;
    assert_eq!(clients_of(&members(&mut a, "room.r1").await), vec![id_a]);
    node_a.stop(secs(10.0)).await;
}

/// A TCP proxy to a port: `sever` drops every connection through it and refuses new ones
/// until `resume` (one node's link to NATS breaks while the others' stay).
struct Proxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(to: u16) -> Proxy {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, c) = (open.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(SeqCst) {
                    continue; // dropped: refused
                }
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { port, open, conns }
    }

    fn sever(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn resume(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Node B's link to NATS breaks while node A publishes with history: once B is connected again
/// it reads the gap from JetStream, and its client, which stayed connected, gets every missed
/// message in order, once, before the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_gap_of_a_node_outage_is_recovered_by_the_node() {
    let store = TempDir::new("nats-js");
    let nats = Nats::start_js(free_port(), &store);
    nats.wait_ready().await;
    let proxy = Proxy::start(nats.port).await;
    let a = Server::start_config(&history_config(nats.port, 1000)).await;
    let b = Server::start_config(&history_config(proxy.port, 1000)).await;
    let port_a = a.api_port().await;
    let mut c = Client::connect(&b.ws_url()).await;
    let r = subscribe_recovering(&mut c, "hist.room", None).await;
    assert_eq!(r["offset"], 0, "{r}");
    for i in 1..=3u64 {
        assert_eq!(publish_with_offset(port_a, "hist.room", json!(i)).await, i);
    }
    assert_eq!(recv_offsets(&mut c, 3).await.last().unwrap().0, 3);

    proxy.sever();
    b.wait_log(
        |l| is_event(l, "nats disconnected: reconnecting"),
        secs(10.0),
    )
    .await;
    for i in 4..=20u64 {
        assert_eq!(publish_with_offset(port_a, "hist.room", json!(i)).await, i);
    }
    proxy.resume();
    b.wait_log(|l| is_event(l, "history gap recovery"), secs(20.0))
        .await;
    for i in 21..=25u64 {
        assert_eq!(publish_with_offset(port_a, "hist.room", json!(i)).await, i);
    }
    let got = recv_offsets(&mut c, 22).await;
    let want: Vec<(u64, Value)> = (4..=25u64).map(|i| (i, json!(i))).collect();
    assert_eq!(
        got, want,
        "the gap from history, then the live ones, once each"
    );
    c.expect_silence(ms(300)).await;
    assert!(!c.is_closed());
    a.stop(secs(10.0)).await;
    b.stop(secs(10.0)).await;
}
