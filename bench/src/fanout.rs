//! `fanout`: C clients subscribed to T topics, a Redis publisher at R messages/s; delivered
//! rate, end-to-end latency and loss. `--search` finds the highest sustainable rate; `--smoke`
//! is the CI check (exact delivery count, no timing assertion).
//!
//! Several nodes (`--url` repeated): the subscribers of each topic are spread over them, so a
//! message reaches every node. The publisher is one Redis (`PUBLISH`), a Redis Cluster
//! (`SPUBLISH`, routed to the slot's master) or NATS (`--publisher`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::client::{self, Conn, Errors, Frame, Kind, Target, now_us};
use crate::cpu::{CpuMeter, QuietArgs, wait_quiet};
use crate::deflate_ws::Negotiation;
use crate::hist::Histogram;

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// WebSocket URL of the server; repeat it (or give several, comma-separated; alias --urls)
    /// for several nodes: the k-th subscriber (k = i / topics) of topic t = i % topics, client
    /// i, connects to url[(t + k) % n], so each topic's subscribers are spread over the nodes
    /// and every node gets the same share (client i -> url[i % n] when topics >= clients).
    #[arg(
        long = "url",
        alias = "urls",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:9000/"
    )]
    pub url: Vec<String>,
    /// How messages are published: `redis` (pipelined PUBLISH on --redis; each must reach as
    /// many subscribers as nodes have subscribed clients of its topic), `cluster` (SPUBLISH
    /// through a Redis Cluster connection to --cluster, routed to each channel's master; same
    /// check), `nats` (core NATS publish to --nats, subject = --channel-prefix + subscription
    /// name, one flush per tick; no receiver count, so no such check).
    #[arg(long, value_enum, default_value_t = PublisherKind::Redis)]
    pub publisher: PublisherKind,
    /// Redis URL the server listens to (--publisher redis).
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis: String,
    /// Redis Cluster seed nodes, host:port, comma-separated or repeated (--publisher cluster).
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// NATS server URL (--publisher nats).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Number of clients (default 1000; 50 with --smoke).
    #[arg(long)]
    pub clients: Option<u64>,
    /// Number of topics; client i subscribes to `<service>.t{i % topics}` (default 10; 5 with --smoke).
    #[arg(long)]
    pub topics: Option<u64>,
    /// Published messages per second (round-robin over the topics).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of publishing (one step).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Publish exactly this many messages (at --rate) instead of --duration seconds.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Search the highest rate with p99 < --p99-limit-ms, zero loss and no errors
    /// (doubling from --search-start, then bisecting), --step-duration seconds per step.
    #[arg(long)]
    pub search: bool,
    #[arg(long, default_value_t = 100.0)]
    pub search_start: f64,
    #[arg(long, default_value_t = 1_000_000.0)]
    pub search_max: f64,
    #[arg(long, default_value_t = 3.0)]
    pub step_duration: f64,
    /// Bisection steps after the doubling phase (stops early within 5 %).
    #[arg(long, default_value_t = 4)]
    pub bisect: u32,
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
    /// A failing search step is repeated up to this many times (a noisy machine); the rate
    /// passes if any attempt passes.
    #[arg(long, default_value_t = 1)]
    pub retries: u32,
    /// Seconds of publishing at the first rate before measuring (discarded).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// CI smoke check: 50 clients, 5 topics, 200 messages (unless overridden); exits 1 unless
    /// every expected message arrived exactly once and nothing failed. No timing assertion.
    #[arg(long)]
    pub smoke: bool,
    /// Service name of the subscriptions (a service without callbacks or authentication).
    #[arg(long, default_value = "bench")]
    pub service: String,
    /// The server's `redis.channel_prefix`.
    #[arg(long, default_value = "")]
    pub channel_prefix: String,
    #[command(flatten)]
    pub quiet: QuietArgs,
    /// PID of the server, to report its CPU use per step (optional); repeated or
    /// comma-separated for several nodes (`cpu_cores.servers`, `servers_total`).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// PIDs of the broker processes (redis-server, the cluster's masters, nats-server), to
    /// report their CPU use per step (`cpu_cores.broker`, `broker_total`; optional).
    #[arg(long, value_delimiter = ',')]
    pub broker_pid: Vec<u32>,
    /// Connections being opened (connect + subscribe) at the same time.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// A step's drain ends when nothing arrived for this many seconds.
    #[arg(long, default_value_t = 2.0)]
    pub drain_idle: f64,
    /// Browser-like clients: each offers `permessage-deflate; client_max_window_bits` and
    /// inflates what the server compresses (the bench's own client, deflate_ws.rs, instead of
    /// tungstenite). Adds what was negotiated and the wire bytes per delivered message.
    #[arg(long)]
    pub deflate: bool,
    /// A step's drain ends at the latest this many seconds after publishing stopped.
    #[arg(long, default_value_t = 30.0)]
    pub drain_max: f64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherKind {
    Redis,
    Cluster,
    Nats,
}

#[derive(Default)]
struct Shared {
    hist: Histogram,
    received: AtomicU64,
    stale: AtomicU64,
    dups: AtomicU64,
    wrong_topic: AtomicU64,
    last_rx_us: AtomicU64,
    step_start_seq: AtomicU64,
    ready_ok: AtomicU64,
    ready_fail: AtomicU64,
    /// Subscribed clients per topic (the expected deliveries of a message).
    ready_per_topic: Vec<AtomicU64>,
    /// Subscribed clients per (topic, node): `topic * nodes + node`.
    ready_per_topic_node: Vec<AtomicU64>,
    nodes: usize,
    shutting_down: AtomicBool,
    errors: Errors,
    /// --deflate: browser-like clients.
    deflate: bool,
    /// --deflate: bytes on the wire (frame headers + payloads) of the counted deliveries, how
    /// many of them were compressed, and what the clients negotiated.
    wire_bytes: AtomicU64,
    compressed: AtomicU64,
    negotiation: Negotiation,
}

async fn client_task(
    target: Arc<Target>,
    shared: Arc<Shared>,
    sem: Arc<Semaphore>,
    name: String,
    topic: u64,
    topics: u64,
    node: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let permit = sem.acquire_owned().await;
    let mut ws = match target.connect_any(shared.deflate).await {
        Ok(ws) => ws,
        Err(e) => {
            shared.errors.add(Kind::Connect, || e);
            shared.ready_fail.fetch_add(1, Relaxed);
            return;
        }
    };
    if let Err((kind, e)) = client::subscribe(&mut ws, &name, Duration::from_secs(60)).await {
        shared.errors.add(kind, || format!("{name}: {e}"));
        shared.ready_fail.fetch_add(1, Relaxed);
        return;
    }
    drop(permit);
    if let Some(d) = ws.as_deflate() {
        shared.negotiation.record(d);
    }
    shared.ready_per_topic[topic as usize].fetch_add(1, Relaxed);
    shared.ready_per_topic_node[topic as usize * shared.nodes + node].fetch_add(1, Relaxed);
    shared.ready_ok.fetch_add(1, Relaxed);
    let mut last: Option<u64> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                ws.close().await;
                return;
            }
            frame = ws.next_frame() => match frame {
                Frame::Delivery { seq, ts } => {
                    let now = now_us();
                    if seq < shared.step_start_seq.load(Relaxed) {
                        shared.stale.fetch_add(1, Relaxed);
                    } else if seq % topics != topic {
                        shared.wrong_topic.fetch_add(1, Relaxed);
                        shared.errors.add(Kind::Unexpected, || format!("{name} got seq {seq}"));
                    } else if last.is_some_and(|l| seq <= l) {
                        shared.dups.fetch_add(1, Relaxed);
                    } else {
                        last = Some(seq);
                        shared.received.fetch_add(1, Relaxed);
                        shared.hist.record(now.saturating_sub(ts));
                        shared.last_rx_us.fetch_max(now, Relaxed);
                        if let Some(m) = ws.last_message() {
                            shared.wire_bytes.fetch_add(m.wire_bytes, Relaxed);
                            shared.compressed.fetch_add(u64::from(m.compressed), Relaxed);
                        }
                    }
                }
                Frame::Other(v) => {
                    shared.errors.add(Kind::Unexpected, || format!("{name}: unexpected frame {v}"));
                }
                Frame::Closed(why) => {
                    if !shared.shutting_down.load(Relaxed) {
                        shared.errors.add(Kind::Disconnect, || format!("{name}: {why}"));
                    }
                    return;
                }
            }
        }
    }
}

enum Sink {
    Redis(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
    Nats(async_nats::Client),
}

impl Sink {
    async fn connect(args: &FanoutArgs) -> Result<Sink, String> {
        match args.publisher {
            PublisherKind::Redis => {
                let client = redis::Client::open(args.redis.as_str()).map_err(|e| e.to_string())?;
                let conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("redis {}: {e}", args.redis))?;
                Ok(Sink::Redis(conn))
            }
            PublisherKind::Cluster => {
                if args.cluster.is_empty() {
                    return Err("--publisher cluster needs --cluster host:port,...".into());
                }
                let nodes: Vec<String> = args
                    .cluster
                    .iter()
                    .map(|n| format!("redis://{n}/"))
                    .collect();
                let client = redis::cluster::ClusterClient::new(nodes)
                    .map_err(|e| format!("redis cluster: {e}"))?;
                let conn = client
                    .get_async_connection()
                    .await
                    .map_err(|e| format!("redis cluster {:?}: {e}", args.cluster))?;
                Ok(Sink::Cluster(conn))
            }
            PublisherKind::Nats => {
                let client = tokio::time::timeout(
                    Duration::from_secs(10),
                    async_nats::connect(args.nats.as_str()),
                )
                .await
                .map_err(|_| format!("nats {}: connecting timed out", args.nats))?
                .map_err(|e| format!("nats {}: {e}", args.nats))?;
                Ok(Sink::Nats(client))
            }
        }
    }

    /// Publishes one tick's `(channel, payload)` batch; per message, the number of receivers
    /// the broker reports (`None`: it does not tell, NATS) or the error.
    async fn send(&mut self, batch: Vec<(String, String)>) -> Vec<Result<Option<i64>, String>> {
        let n = batch.len();
        match self {
            Sink::Redis(conn) => {
                let mut pipe = redis::pipe();
                for (channel, payload) in batch {
                    pipe.cmd("PUBLISH").arg(channel).arg(payload);
                }
                match pipe.query_async::<Vec<i64>>(conn).await {
                    Ok(receivers) if receivers.len() == n => {
                        receivers.into_iter().map(|r| Ok(Some(r))).collect()
                    }
                    Ok(r) => vec![Err(format!("PUBLISH: {} replies for {n}", r.len())); n],
                    Err(e) => vec![Err(format!("PUBLISH failed: {e}")); n],
                }
            }
            // A cluster pipeline must stay within one slot: one command each. Different
            // channels are in flight at once; one channel's messages go one after the other
            // (redis-rs's cluster connection may reorder concurrent requests, and a topic can
            // appear several times in a batch that caught up after a stall).
            Sink::Cluster(conn) => {
                let mut per_channel: Vec<(String, Vec<(usize, String)>)> = Vec::new();
                let mut index: std::collections::HashMap<String, usize> =
                    std::collections::HashMap::new();
                for (i, (channel, payload)) in batch.into_iter().enumerate() {
                    let slot = *index.entry(channel.clone()).or_insert_with(|| {
                        per_channel.push((channel, Vec::new()));
                        per_channel.len() - 1
                    });
                    per_channel[slot].1.push((i, payload));
                }
                let sends = per_channel.into_iter().map(|(channel, payloads)| {
                    let mut conn = conn.clone();
                    async move {
                        let mut out = Vec::with_capacity(payloads.len());
                        for (i, payload) in payloads {
                            let r = redis::cmd("SPUBLISH")
                                .arg(&channel)
                                .arg(payload)
                                .query_async::<i64>(&mut conn)
                                .await
                                .map(Some)
                                .map_err(|e| format!("SPUBLISH failed: {e}"));
                            out.push((i, r));
                        }
                        out
                    }
                });
                let mut results: Vec<Option<Result<Option<i64>, String>>> = vec![None; n];
                for (i, r) in futures_util::future::join_all(sends)
                    .await
                    .into_iter()
                    .flatten()
                {
                    results[i] = Some(r);
                }
                results.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
            }
            Sink::Nats(client) => {
                let mut out = Vec::with_capacity(n);
                for (subject, payload) in batch {
                    out.push(
                        client
                            .publish(subject, payload.into())
                            .await
                            .map(|()| None)
                            .map_err(|e| format!("NATS publish failed: {e}")),
                    );
                }
                if let Err(e) = client.flush().await {
                    // Handed over already: they may arrive, so they stay expected.
                    out.push(Err(format!("NATS flush failed: {e}")));
                }
                out
            }
        }
    }
}

struct Publisher {
    sink: Sink,
    service: String,
    channel_prefix: String,
    topics: u64,
    subs_per_topic: Vec<u64>,
    /// Nodes with a subscribed client of the topic: the receivers PUBLISH/SPUBLISH must report.
    nodes_per_topic: Vec<u64>,
    next_seq: u64,
}

struct Published {
    messages: u64,
    expected: u64,
    elapsed: Duration,
}

impl Publisher {
    /// Publishes at `rate` for `duration` (or `limit` messages), one pipeline per 1 ms tick.
    async fn run(
        &mut self,
        rate: f64,
        duration: Duration,
        limit: Option<u64>,
        errors: &Errors,
    ) -> Published {
        let total = limit.unwrap_or((rate * duration.as_secs_f64()).round() as u64);
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut sent, mut expected) = (0u64, 0u64);
        while sent < total {
            tick.tick().await;
            let due = ((rate * start.elapsed().as_secs_f64()) as u64).min(total);
            if due <= sent {
                continue;
            }
            let mut batch = Vec::with_capacity((due - sent) as usize);
            let mut topics = Vec::with_capacity((due - sent) as usize);
            for _ in sent..due {
                let seq = self.next_seq;
                self.next_seq += 1;
                let topic = seq % self.topics;
                let sub = format!("{}.t{topic}", self.service);
                let payload = format!(
                    r#"{{"subscription": "{sub}", "data": {{"seq": {seq}, "ts": {}}}}}"#,
                    now_us()
                );
                batch.push((format!("{}{sub}", self.channel_prefix), payload));
                topics.push(topic);
            }
            let results = self.sink.send(batch).await;
            for (i, result) in results.into_iter().enumerate() {
                let Some(&topic) = topics.get(i) else {
                    // An error about the whole batch (the NATS flush).
                    if let Err(e) = result {
                        errors.add(Kind::Publish, || e);
                    }
                    continue;
                };
                match result {
                    Ok(receivers) => {
                        expected += self.subs_per_topic[topic as usize];
                        let nodes = self.nodes_per_topic[topic as usize];
                        if let Some(n) = receivers
                            && n < nodes as i64
                        {
                            errors.add(Kind::Publish, || {
                                format!("publish to topic t{topic} reached {n} of {nodes} nodes")
                            });
                        }
                    }
                    Err(e) => errors.add(Kind::Publish, || e),
                }
            }
            sent = due;
        }
        Published {
            messages: sent,
            expected,
            elapsed: start.elapsed(),
        }
    }
}

struct StepResult {
    json: Value,
    pass: bool,
    delivered_per_s: f64,
}

async fn step(
    publisher: &mut Publisher,
    shared: &Shared,
    args: &FanoutArgs,
    rate: f64,
    duration: f64,
    limit: Option<u64>,
) -> StepResult {
    let machine = if args.smoke {
        Value::Null
    } else {
        wait_quiet(&args.quiet).await
    };
    shared.step_start_seq.store(publisher.next_seq, Relaxed);
    for c in [
        &shared.received,
        &shared.stale,
        &shared.dups,
        &shared.wrong_topic,
        &shared.last_rx_us,
        &shared.wire_bytes,
        &shared.compressed,
    ] {
        c.store(0, Relaxed);
    }
    shared.hist.take();
    let errors_before = shared.errors.total();
    let cpu = if let [pid] = args.server_pid[..] {
        CpuMeter::start(Some(pid))
    } else {
        CpuMeter::start(None).group("servers", &args.server_pid)
    }
    .group("broker", &args.broker_pid);
    let t0 = now_us();
    let publ = publisher
        .run(
            rate,
            Duration::from_secs_f64(duration),
            limit,
            &shared.errors,
        )
        .await;
    // Drain: until everything arrived, nothing arrived for `drain_idle`, or `drain_max`.
    let drain_start = Instant::now();
    let mut last_count = shared.received.load(Relaxed);
    let mut last_change = Instant::now();
    loop {
        let got = shared.received.load(Relaxed);
        if got >= publ.expected
            || last_change.elapsed().as_secs_f64() >= args.drain_idle
            || drain_start.elapsed().as_secs_f64() >= args.drain_max
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = shared.received.load(Relaxed);
        if now != last_count {
            last_count = now;
            last_change = Instant::now();
        }
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    let cpu = cpu.json();
    let delivered = shared.received.load(Relaxed);
    let snap = shared.hist.take();
    let lost = publ.expected.saturating_sub(delivered);
    let dups = shared.dups.load(Relaxed);
    let wrong = shared.wrong_topic.load(Relaxed);
    let step_errors = shared.errors.total() - errors_before;
    let last_rx = shared.last_rx_us.load(Relaxed);
    let span = (last_rx.saturating_sub(t0) as f64 / 1e6).max(publ.elapsed.as_secs_f64());
    let delivered_per_s = if span > 0.0 {
        delivered as f64 / span
    } else {
        0.0
    };
    let p99_ms = snap.quantile(0.99) as f64 / 1000.0;
    let pass = lost == 0
        && dups == 0
        && wrong == 0
        && step_errors == 0
        && delivered == publ.expected
        && p99_ms < args.p99_limit_ms;
    let mut json = json!({
        "rate": rate.round(),
        "published": publ.messages,
        "publish_rate": (publ.messages as f64 / publ.elapsed.as_secs_f64().max(1e-9)).round(),
        "expected": publ.expected,
        "delivered": delivered,
        "lost": lost,
        "duplicates": dups,
        "wrong_topic": wrong,
        "stale_from_previous_step": shared.stale.load(Relaxed),
        "step_errors": step_errors,
        "delivered_per_s": delivered_per_s.round(),
        "drain_s": (drain_s * 1000.0).round() / 1000.0,
        "latency": snap.summary_ms(),
        "cpu_cores": cpu,
        "machine_before": machine,
        "pass": pass,
    });
    if args.deflate {
        let wire = shared.wire_bytes.load(Relaxed);
        json["wire_bytes"] = wire.into();
        json["wire_bytes_per_message"] = if delivered > 0 {
            ((wire as f64 / delivered as f64) * 10.0).round() / 10.0
        } else {
            0.0
        }
        .into();
        json["compressed_messages"] = shared.compressed.load(Relaxed).into();
    }
    StepResult {
        json,
        pass,
        delivered_per_s,
    }
}

/// True (and notes it in `out`) when clients were disconnected: later steps would expect
/// deliveries to clients that are gone, so the search stops.
fn lost_clients(shared: &Shared, out: &mut Value) -> bool {
    let n = shared.errors.disconnects.load(Relaxed);
    if n > 0 {
        out["search_aborted"] = format!("{n} clients were disconnected").into();
    }
    n > 0
}

/// One search step at `rate`, repeated up to `--retries` times while it fails.
async fn search_step(
    publisher: &mut Publisher,
    shared: &Shared,
    args: &FanoutArgs,
    rate: f64,
    steps: &mut Vec<Value>,
) -> StepResult {
    let mut attempt = 0;
    loop {
        let r = step(publisher, shared, args, rate, args.step_duration, None).await;
        eprintln!("fanout search: {}", r.json);
        steps.push(r.json.clone());
        if r.pass || attempt >= args.retries {
            return r;
        }
        attempt += 1;
    }
}

pub async fn run(mut args: FanoutArgs) -> Result<(Value, bool), String> {
    let clients = args.clients.unwrap_or(if args.smoke { 50 } else { 1000 });
    let topics = args
        .topics
        .unwrap_or(if args.smoke { 5 } else { 10 })
        .max(1);
    if args.smoke && args.messages.is_none() {
        args.messages = Some(200);
    }
    if args.url.is_empty() {
        return Err("--url: at least one".into());
    }
    let mut targets = Vec::with_capacity(args.url.len());
    for url in &args.url {
        targets.push(Arc::new(Target::resolve(url).await?));
    }
    let nodes = targets.len();
    let sink = Sink::connect(&args).await?;
    let shared = Arc::new(Shared {
        ready_per_topic: (0..topics).map(|_| AtomicU64::new(0)).collect(),
        ready_per_topic_node: (0..topics as usize * nodes)
            .map(|_| AtomicU64::new(0))
            .collect(),
        nodes,
        deflate: args.deflate,
        ..Shared::default()
    });
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let setup_start = Instant::now();
    let mut tasks = Vec::with_capacity(clients as usize);
    for i in 0..clients {
        let topic = i % topics;
        // The k-th subscriber of a topic goes to node (topic + k) % nodes.
        let node = ((topic + i / topics) % nodes as u64) as usize;
        tasks.push(tokio::spawn(client_task(
            targets[node].clone(),
            shared.clone(),
            sem.clone(),
            format!("{}.t{topic}", args.service),
            topic,
            topics,
            node,
            shutdown_rx.clone(),
        )));
    }
    while shared.ready_ok.load(Relaxed) + shared.ready_fail.load(Relaxed) < clients {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    let connected = shared.ready_ok.load(Relaxed);
    // Expected deliveries count the clients that did subscribe (the others are errors already).
    let mut publisher = Publisher {
        sink,
        service: args.service.clone(),
        channel_prefix: args.channel_prefix.clone(),
        topics,
        subs_per_topic: shared
            .ready_per_topic
            .iter()
            .map(|n| n.load(Relaxed))
            .collect(),
        nodes_per_topic: shared
            .ready_per_topic_node
            .chunks(nodes)
            .map(|c| c.iter().filter(|n| n.load(Relaxed) > 0).count() as u64)
            .collect(),
        next_seq: 0,
    };

    let mut out = json!({
        "scenario": "fanout",
        "url": if nodes == 1 { args.url[0].clone().into() } else { json!(args.url) },
        "publisher": format!("{:?}", args.publisher).to_lowercase(),
        "clients": clients,
        "connected": connected,
        "topics": topics,
        "subscribers_per_topic": clients as f64 / topics as f64,
        "connected_per_node": (0..nodes)
            .map(|n| {
                (0..topics as usize)
                    .map(|t| shared.ready_per_topic_node[t * nodes + n].load(Relaxed))
                    .sum::<u64>()
            })
            .collect::<Vec<u64>>(),
        "setup_s": (setup_s * 1000.0).round() / 1000.0,
    });
    if args.deflate {
        out["client"] = "deflate_ws".into();
        out["deflate"] = shared.negotiation.to_json();
    }
    let mut ok = connected == clients;
    if connected > 0 {
        if args.warmup > 0.0 && !args.smoke {
            let rate = if args.search {
                args.search_start
            } else {
                args.rate
            };
            step(&mut publisher, &shared, &args, rate, args.warmup, None).await;
        }
        if args.search {
            let mut steps = Vec::new();
            let (mut lo, mut hi): (Option<(f64, StepResult)>, Option<f64>) = (None, None);
            let mut rate = args.search_start.max(1.0);
            loop {
                let r = search_step(&mut publisher, &shared, &args, rate, &mut steps).await;
                let pass = r.pass;
                if pass {
                    lo = Some((rate, r));
                } else {
                    hi = Some(rate);
                }
                if lost_clients(&shared, &mut out) {
                    break;
                }
                match (&lo, hi) {
                    (_, None) if rate < args.search_max => rate = (rate * 2.0).min(args.search_max),
                    (None, Some(_)) if rate > 1.0 => rate = (rate / 2.0).floor().max(1.0),
                    _ => break,
                }
            }
            for _ in 0..args.bisect {
                let (Some((l, _)), Some(h)) = (&lo, hi) else {
                    break;
                };
                if (h - l) / l < 0.05 {
                    break;
                }
                if lost_clients(&shared, &mut out) {
                    break;
                }
                rate = ((l + h) / 2.0).round();
                let r = search_step(&mut publisher, &shared, &args, rate, &mut steps).await;
                if r.pass {
                    lo = Some((rate, r));
                } else {
                    hi = Some(rate);
                }
            }
            out["mode"] = "search".into();
            out["p99_limit_ms"] = args.p99_limit_ms.into();
            match &lo {
                Some((rate, r)) => {
                    out["max_rate"] = rate.round().into();
                    out["max_delivered_per_s"] = r.delivered_per_s.round().into();
                    out["best"] = r.json.clone();
                }
                None => {
                    out["max_rate"] = Value::Null;
                    out["max_delivered_per_s"] = Value::Null;
                    ok = false;
                }
            }
            out["steps"] = steps.into();
        } else {
            let duration = args.duration;
            let r = step(
                &mut publisher,
                &shared,
                &args,
                args.rate,
                duration,
                args.messages,
            )
            .await;
            out["mode"] = if args.smoke { "smoke" } else { "fixed" }.into();
            if let Value::Object(m) = r.json {
                for (k, v) in m {
                    out[k] = v;
                }
            }
            if args.smoke {
                // No timing assertion: exact delivery and no errors only.
                ok = ok
                    && out["lost"] == 0
                    && out["duplicates"] == 0
                    && out["wrong_topic"] == 0
                    && out["step_errors"] == 0
                    && out["delivered"] == out["expected"]
                    && out["published"] == args.messages.unwrap_or(0);
            }
        }
    }

    shared.shutting_down.store(true, Relaxed);
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(tasks),
    )
    .await;
    out["errors"] = shared.errors.to_json();
    if args.smoke {
        ok = ok && shared.errors.total() == 0;
        out["ok"] = ok.into();
    }
    // Only the smoke check turns its verdict into the exit status.
    Ok((out, !args.smoke || ok))
}
