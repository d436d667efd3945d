//! Issue 16, the NATS broker: two socketshark nodes on one `nats-server` (started by the test);
//! every message reaches every subscribed client on every node exactly once, whether published
//! through a node's API or straight to NATS; after the NATS server is restarted the clients, still
//! connected, receive again.

mod common;
use common::*;

use std::process::{Child, Command, Stdio};

struct Nats {
    port: u16,
    child: Option<Child>,
}

impl Nats {
    fn start(port: u16) -> Nats {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}): apt-get install -y nats-server")
            });
        Nats {
            port,
            child: Some(child),
        }
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

async fn api_port(server: &Server) -> u16 {
    server.wait_event("publish API listening", secs(10.0)).await["port"]
        .as_u64()
        .unwrap() as u16
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
    let port_a = api_port(&a).await;
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
    let nats = Nats::start(port);
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
