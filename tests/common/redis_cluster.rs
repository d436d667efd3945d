//! A private Redis Cluster per test (issue 16): `redis-server --cluster-enabled yes` processes on
//! free ports (client and bus port each chosen free), joined by `redis-cli --cluster create`.
//! Every process is SIGKILLed on Drop.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use super::util::{TempDir, free_port};

const NOT_FOUND: &str =
    "redis-server / redis-cli not found: install them (apt-get install -y redis-server)";

struct Node {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

pub struct RedisCluster {
    nodes: Mutex<Vec<Node>>,
    conn: tokio::sync::Mutex<Option<ClusterConnection>>,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each; returns once every node reports
    /// `cluster_state:ok` and knows every other node. Fails over within a few seconds
    /// (`cluster-node-timeout` 1000 ms).
    pub async fn start(masters: usize, replicas: usize) -> RedisCluster {
        let total = masters * (1 + replicas);
        let nodes: Vec<Node> = (0..total).map(|_| spawn_node()).collect();
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let cluster = RedisCluster {
            nodes: Mutex::new(nodes),
            conn: tokio::sync::Mutex::new(None),
        };
        for &port in &ports {
            wait_ping(port).await;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || create.output())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{NOT_FOUND}: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok(&ports, Duration::from_secs(20)).await;
        cluster
    }

    /// `host:port` of every node, for `[redis] cluster`.
    pub fn seeds(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    fn ports(&self) -> Vec<u16> {
        self.nodes.lock().unwrap().iter().map(|n| n.port).collect()
    }

    /// Waits until every live node reports `cluster_state:ok`, and every replica is in sync
    /// with its master (so that it can take over).
    async fn wait_ok(&self, ports: &[u16], timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut ok = true;
            for &port in ports {
                let info = node_query(port, &["CLUSTER", "INFO"]).await;
                ok &= info.is_some_and(|i| i.contains("cluster_state:ok"));
                let info = node_query(port, &["INFO", "replication"]).await;
                ok &= info.is_some_and(|i| {
                    !i.contains("role:slave") || i.contains("master_link_status:up")
                });
            }
            if ok {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Redis Cluster did not reach cluster_state:ok in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The port of the master that serves `channel`'s slot (asked to a live node).
    pub async fn master_of(&self, channel: &str) -> u16 {
        self.try_master_of(channel)
            .await
            .unwrap_or_else(|| panic!("no live node knows the master of {channel:?}"))
    }

    /// The port of the master that serves `channel`'s slot, if a live node knows one that is
    /// not failing.
    pub async fn try_master_of(&self, channel: &str) -> Option<u16> {
        for port in self.live_ports() {
            let Some(slot) = node_query(port, &["CLUSTER", "KEYSLOT", channel]).await else {
                continue;
            };
            let slot: u16 = slot.trim().parse().unwrap();
            let Some(nodes) = node_query(port, &["CLUSTER", "NODES"]).await else {
                continue;
            };
            for line in nodes.lines() {
                let f: Vec<&str> = line.split(' ').collect();
                if !f[2].contains("master") || f[2].contains("fail") {
                    continue;
                }
                for range in &f[8..] {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) else {
                        continue;
                    };
                    if (lo..=hi).contains(&slot) {
                        let addr = f[1].split('@').next().unwrap();
                        return addr.rsplit_once(':').unwrap().1.parse().ok();
                    }
                }
            }
        }
        None
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&self, port: u16) {
        let mut nodes = self.nodes.lock().unwrap();
        let node = nodes.iter_mut().find(|n| n.port == port).unwrap();
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until a live node serves `channel`'s slot from another master than `old`, and every
    /// live node reports `cluster_state:ok` (the failover is done).
    pub async fn wait_failover(&self, channel: &str, old: u16, timeout: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let master = self.try_master_of(channel).await;
            if let Some(master) = master.filter(|m| *m != old) {
                let ports = self.live_ports();
                self.wait_ok(&ports, deadline - tokio::time::Instant::now())
                    .await;
                return master;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no failover of {channel:?} away from port {old} in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Moves `channel`'s slot (holding no keys) to the master on `to`, as a resharding does:
    /// IMPORTING / MIGRATING, then the new owner announced to every live node.
    pub async fn migrate_slot(&self, channel: &str, to: u16) {
        self.migrate_slot_racing(channel, to, async {}).await;
    }

    /// [`RedisCluster::migrate_slot`], with `race` run at the same time as the step that makes
    /// the old owner let the slot go (it then pushes `sunsubscribe` to the channel's
    /// subscribers). Returns what `race` returned.
    pub async fn migrate_slot_racing<T>(
        &self,
        channel: &str,
        to: u16,
        race: impl std::future::Future<Output = T>,
    ) -> T {
        let from = self.master_of(channel).await;
        let slot = node_query(from, &["CLUSTER", "KEYSLOT", channel])
            .await
            .unwrap();
        let slot = slot.trim();
        let id = |port| async move { node_query(port, &["CLUSTER", "MYID"]).await.unwrap() };
        let (from_id, to_id) = (id(from).await, id(to).await);
        setslot(to, slot, "IMPORTING", &from_id).await;
        setslot(from, slot, "MIGRATING", &to_id).await;
        setslot(to, slot, "NODE", &to_id).await;
        let ((), out) = tokio::join!(setslot(from, slot, "NODE", &to_id), race);
        for port in self.live_ports() {
            if port != from && port != to {
                setslot(port, slot, "NODE", &to_id).await;
            }
        }
        let ports = self.live_ports();
        self.wait_ok(&ports, Duration::from_secs(10)).await;
        out
    }

    /// `PUBSUB SHARDNUMSUB channel` on every live master: (port, subscribers) where the
    /// cluster keeps subscribers for the channel.
    pub async fn shard_subscribers(&self, channel: &str) -> Vec<(u16, i64)> {
        let mut n = Vec::new();
        for port in self.master_ports().await {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let r: Vec<redis::Value> = redis::cmd("PUBSUB")
                .arg("SHARDNUMSUB")
                .arg(channel)
                .query_async(&mut c)
                .await
                .unwrap();
            if let Some(redis::Value::Int(k)) = r.get(1).filter(|k| **k != redis::Value::Int(0)) {
                n.push((port, *k));
            }
        }
        n
    }

    /// The ports of the masters, as a live node sees them.
    pub async fn master_ports(&self) -> Vec<u16> {
        for port in self.live_ports() {
            let Some(nodes) = node_query(port, &["CLUSTER", "NODES"]).await else {
                continue;
            };
            let mut masters: Vec<u16> = nodes
                .lines()
                .filter(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("master")))
                .filter_map(|l| {
                    let addr = l.split(' ').nth(1)?.split('@').next()?;
                    addr.rsplit_once(':')?.1.parse().ok()
                })
                .collect();
            masters.sort();
            return masters;
        }
        panic!("no live node");
    }

    /// SPUBLISH, as a service publishes to a cluster; returns the number of receivers.
    pub async fn spublish(&self, channel: &str, payload: &str) -> i64 {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let seeds: Vec<String> = self
                .seeds()
                .iter()
                .map(|s| format!("redis://{s}/"))
                .collect();
            let client = ClusterClient::new(seeds).unwrap();
            *guard = Some(client.get_async_connection().await.unwrap());
        }
        redis::cmd("SPUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(guard.as_mut().unwrap())
            .await
            .unwrap_or_else(|e| panic!("SPUBLISH {channel}: {e}"))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in self.nodes.lock().unwrap().iter_mut() {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn spawn_node() -> Node {
    let dir = TempDir::new("redis-cluster");
    let (port, bus) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("redis.log")).expect("cannot create redis.log");
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--cluster-port",
        &bus.to_string(),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        // Replicas sync at once (a replica that never synced cannot take over).
        "--repl-diskless-sync-delay",
        "0",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .current_dir(dir.path())
    .stdin(Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log);
    let child = super::server::spawn_child(cmd).unwrap_or_else(|e| panic!("{NOT_FOUND}: {e}"));
    Node {
        port,
        dir,
        child: Some(child),
    }
}

/// One command on a fresh connection to one node; `None` if it does not answer.
async fn node_query(port: u16, args: &[&str]) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut conn = tokio::time::timeout(
        Duration::from_millis(500),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let v: redis::Value =
        tokio::time::timeout(Duration::from_millis(500), cmd.query_async(&mut conn))
            .await
            .ok()?
            .ok()?;
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        redis::Value::VerbatimString { text, .. } => Some(text),
        redis::Value::Int(n) => Some(n.to_string()),
        redis::Value::SimpleString(s) => Some(s),
        redis::Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

/// `CLUSTER SETSLOT slot how id` on one node.
async fn setslot(port: u16, slot: &str, how: &str, id: &str) {
    let args = ["CLUSTER", "SETSLOT", slot, how, id];
    assert!(
        node_query(port, &args).await.is_some(),
        "{args:?} on {port}"
    );
}

async fn wait_ping(port: u16) {
    for _ in 0..200 {
        if node_query(port, &["PING"]).await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server on port {port} did not answer PING");
}
