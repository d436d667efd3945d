//! Redis faults: SIGKILL + restart during a fan-out (this driver plays the supervisor), and
//! SIGSTOP for 5 s (ping timeout detection).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::procs::metric;
use super::{Ctx, Row, ServerSetup, ms, progress};
use crate::client::{self, Frame, Target, now_us};

pub(super) const NOT_SET: u64 = u64::MAX;

/// One client's counters (it keeps them across reconnections).
#[derive(Default)]
pub(super) struct ClientStat {
    pub(super) after_mark: AtomicU64,
    pub(super) last_seq: AtomicU64,
    has_last: AtomicBool,
    pub(super) dups: AtomicU64,
}

/// Clients that reconnect and resubscribe whenever the server closes them.
pub(super) struct Fleet {
    topics: u64,
    /// The first seq published after recovery (`NOT_SET` before).
    pub(super) mark: Arc<AtomicU64>,
    pub(super) subscribed_now: AtomicU64,
    /// (generation, how the connection ended) -> clients.
    closes: Mutex<BTreeMap<(u64, String), u64>>,
    /// now_us of the first delivery received on a reconnected session.
    first_rx_reconnected_us: AtomicU64,
    pub(super) wrong_topic: AtomicU64,
    unexpected: AtomicU64,
    pub(super) failures: Mutex<Vec<String>>,
    pub(super) stats: Vec<ClientStat>,
}

impl Fleet {
    fn note(&self, what: String) {
        let mut f = self.failures.lock().unwrap();
        if f.len() < 5 {
            f.push(what);
        }
    }
}

async fn fleet_client(fleet: Arc<Fleet>, target: Arc<Target>, i: usize) {
    let topic = i as u64 % fleet.topics;
    let name = format!("f.t{topic}");
    let stat = &fleet.stats[i];
    let mut generation = 0u64;
    loop {
        let mut ws = match target.connect().await {
            Ok(ws) => ws,
            Err(_) => {
                // Server down (being restarted): retry.
                tokio::time::sleep(Duration::from_millis(50 + (i as u64 % 50))).await;
                continue;
            }
        };
        if let Err((_, e)) = client::subscribe(&mut ws, &name, Duration::from_secs(30)).await {
            fleet.note(format!(
                "client {i} generation {generation}: subscribe: {e}"
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        fleet.subscribed_now.fetch_add(1, Relaxed);
        let mut first = generation > 0;
        let how = loop {
            match ws.next().await {
                None => break "EOF (no close frame)".to_string(),
                Some(Err(e)) => break format!("error: {e}"),
                Some(Ok(Message::Close(Some(cf)))) => {
                    break format!("close {}", u16::from(cf.code));
                }
                Some(Ok(Message::Close(None))) => break "close without code".to_string(),
                Some(Ok(Message::Text(t))) => match client::classify(t.as_str()) {
                    Frame::Delivery { seq, .. } => {
                        if first {
                            first = false;
                            fleet.first_rx_reconnected_us.fetch_min(now_us(), Relaxed);
                        }
                        if seq % fleet.topics != topic {
                            fleet.wrong_topic.fetch_add(1, Relaxed);
                        }
                        if stat.has_last.load(Relaxed) && seq <= stat.last_seq.load(Relaxed) {
                            stat.dups.fetch_add(1, Relaxed);
                            continue;
                        }
                        stat.has_last.store(true, Relaxed);
                        stat.last_seq.store(seq, Relaxed);
                        if seq >= fleet.mark.load(Relaxed) {
                            stat.after_mark.fetch_add(1, Relaxed);
                        }
                    }
                    _ => {
                        fleet.unexpected.fetch_add(1, Relaxed);
                        fleet.note(format!("client {i}: unexpected frame {t}"));
                    }
                },
                Some(Ok(_)) => {}
            }
        };
        fleet.subscribed_now.fetch_sub(1, Relaxed);
        *fleet
            .closes
            .lock()
            .unwrap()
            .entry((generation, how))
            .or_insert(0) += 1;
        generation += 1;
    }
}

/// A Redis publisher at a fixed rate that survives Redis going away (it reconnects), counting
/// per topic the messages acknowledged by Redis with a seq at or after the mark.
pub(super) struct Publisher {
    redis_url: String,
    topics: u64,
    rate: f64,
    mark: Arc<AtomicU64>,
    pub(super) next_seq: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) after_mark: Vec<AtomicU64>,
    pub(super) no_receiver_after_mark: AtomicU64,
    /// PUBLISHes Redis acknowledged with no subscriber, whenever.
    pub(super) no_receiver: AtomicU64,
    pub(super) stop: AtomicBool,
}

pub(super) fn payload(topic: u64, seq: u64) -> (String, String) {
    let sub = format!("f.t{topic}");
    let p = format!(
        r#"{{"subscription": "{sub}", "data": {{"seq": {seq}, "ts": {}}}}}"#,
        now_us()
    );
    (sub, p)
}

pub(super) async fn connect_redis(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).ok()?;
    tokio::time::timeout(
        Duration::from_millis(500),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()
}

impl Publisher {
    fn new(redis_url: String, topics: u64, rate: f64, mark: Arc<AtomicU64>) -> Publisher {
        Publisher {
            redis_url,
            topics,
            rate,
            mark,
            next_seq: AtomicU64::new(0),
            published: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            after_mark: (0..topics).map(|_| AtomicU64::new(0)).collect(),
            no_receiver_after_mark: AtomicU64::new(0),
            no_receiver: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    async fn run(self: Arc<Self>) {
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        let start = Instant::now();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !self.stop.load(Relaxed) {
            tick.tick().await;
            let due = (self.rate * start.elapsed().as_secs_f64()) as u64;
            if due <= sent {
                continue;
            }
            let n = due - sent;
            sent = due;
            if conn.is_none() {
                conn = connect_redis(&self.redis_url).await;
                if conn.is_none() {
                    self.failed.fetch_add(n, Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
            let mut pipe = redis::pipe();
            let mut seqs = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let seq = self.next_seq.fetch_add(1, Relaxed);
                let (sub, p) = payload(seq % self.topics, seq);
                pipe.cmd("PUBLISH").arg(sub).arg(p);
                seqs.push(seq);
            }
            let c = conn.as_mut().unwrap();
            match tokio::time::timeout(Duration::from_millis(500), pipe.query_async::<Vec<i64>>(c))
                .await
            {
                Ok(Ok(receivers)) => {
                    self.published.fetch_add(n, Relaxed);
                    let mark = self.mark.load(Relaxed);
                    for (seq, r) in seqs.iter().zip(receivers) {
                        if r < 1 {
                            self.no_receiver.fetch_add(1, Relaxed);
                        }
                        if *seq >= mark {
                            self.after_mark[(*seq % self.topics) as usize].fetch_add(1, Relaxed);
                            if r < 1 {
                                self.no_receiver_after_mark.fetch_add(1, Relaxed);
                            }
                        }
                    }
                }
                _ => {
                    self.failed.fetch_add(n, Relaxed);
                    conn = None;
                }
            }
        }
    }
}

pub(super) struct Running {
    pub(super) fleet: Arc<Fleet>,
    tasks: Vec<JoinHandle<()>>,
    pub(super) publisher: Arc<Publisher>,
    pub(super) pub_task: JoinHandle<()>,
}

pub(super) async fn start_load(
    url: &str,
    redis_url: String,
    clients: usize,
    topics: u64,
    rate: f64,
) -> Result<Running, String> {
    let target = Arc::new(Target::resolve(url).await?);
    let mark = Arc::new(AtomicU64::new(NOT_SET));
    let fleet = Arc::new(Fleet {
        topics,
        mark: mark.clone(),
        subscribed_now: AtomicU64::new(0),
        closes: Mutex::new(BTreeMap::new()),
        first_rx_reconnected_us: AtomicU64::new(NOT_SET),
        wrong_topic: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        stats: (0..clients).map(|_| ClientStat::default()).collect(),
    });
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        tasks.push(tokio::spawn(fleet_client(fleet.clone(), target.clone(), i)));
        if i % 100 == 99 {
            // Let the first ones connect (bounded burst of handshakes).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_subscribed(&fleet, clients as u64, Duration::from_secs(60)).await?;
    let publisher = Arc::new(Publisher::new(redis_url, topics, rate, mark));
    let pub_task = tokio::spawn(publisher.clone().run());
    Ok(Running {
        fleet,
        tasks,
        publisher,
        pub_task,
    })
}

async fn wait_subscribed(fleet: &Fleet, n: u64, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while fleet.subscribed_now.load(Relaxed) < n {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {n} clients subscribed within {timeout:?}; first problems: {:?}",
                fleet.subscribed_now.load(Relaxed),
                fleet.failures.lock().unwrap()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

impl Running {
    pub(super) fn stop(&self) {
        self.publisher.stop.store(true, Relaxed);
        self.pub_task.abort();
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Close outcomes of a generation, e.g. {"close 1000": 1000}.
    pub(super) fn closes(&self, generation: u64) -> BTreeMap<String, u64> {
        self.fleet
            .closes
            .lock()
            .unwrap()
            .iter()
            .filter(|((g, _), _)| *g == generation)
            .map(|((_, how), n)| (how.clone(), *n))
            .collect()
    }

    pub(super) fn received_after_mark(&self) -> u64 {
        self.fleet
            .stats
            .iter()
            .map(|s| s.after_mark.load(Relaxed))
            .sum()
    }

    pub(super) fn expected_after_mark(&self) -> u64 {
        (0..self.fleet.stats.len())
            .map(|i| self.publisher.after_mark[i % self.fleet.topics as usize].load(Relaxed))
            .sum()
    }

    /// Waits until every expected delivery arrived, or nothing arrived for 2 s (30 s at most).
    pub(super) async fn drain(&self) {
        let start = Instant::now();
        let (mut last, mut since) = (self.received_after_mark(), Instant::now());
        while self.received_after_mark() < self.expected_after_mark()
            && since.elapsed() < Duration::from_secs(2)
            && start.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = self.received_after_mark();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
    }
}

pub(super) fn close_summary(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{v} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn kill(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let (clients, topics, rate, pre, post) = if ctx.short {
        (100usize, 10u64, 1000.0, 1.0, 1.0)
    } else {
        (1000, 100, 10_000.0, 3.0, 5.0)
    };
    let mut row = Row::new(
        "Redis SIGKILL + restart (driver restarts Redis and the server, clients reconnect)",
        format!(
            "{rate:.0} msgs/s fan-out, {clients} clients on {topics} channels ({} deliveries/s)",
            (rate * clients as f64 / topics as f64) as u64
        ),
    );
    let mut redis = ctx.redis().await?;
    let (svc_port, callbacks) = super::counting_service().await?;
    let setup = ServerSetup::write(
        ctx,
        "kill",
        redis.port,
        "",
        "",
        &format!(
            "[services.f]\nrequire_authentication = false\non_subscribe = \"http://127.0.0.1:{svc_port}/on_subscribe\"\n"
        ),
    )?;
    let server = setup.start(ctx).await?;
    progress(format!("redis-kill: {clients} clients subscribing"));
    let run = start_load(&setup.url(), redis.url(), clients, topics, rate).await?;
    tokio::time::sleep(Duration::from_secs_f64(pre)).await;
    let published_before = run.publisher.published.load(Relaxed);
    progress(format!(
        "redis-kill: {published_before} published; SIGKILL redis-server (pid {:?})",
        redis.pid()
    ));
    let callbacks_before = callbacks.load(Relaxed);
    let t_kill = Instant::now();
    redis.kill();
    let detect = server
        .wait_log("redis unexpectedly closed", Duration::from_secs(30))
        .await;
    let exit = server.wait_exit(Duration::from_secs(60)).await;
    let panics_first = server.panics();
    row.check(detect.is_some(), || {
        "no `redis unexpectedly closed` log line within 30 s".into()
    });
    row.check(matches!(exit, Some((_, Some(0)))), || {
        format!("the server did not exit 0 within 60 s of the kill: {exit:?}")
    });
    if exit.is_none() {
        server.stop(Duration::from_secs(5)).await;
    }
    // Give the clients a moment to record how they were closed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closes = run.closes(0);
    let code_1000 = closes.get("close 1000").copied().unwrap_or(0);
    row.check(code_1000 == clients as u64, || {
        format!(
            "{clients} clients should see close 1000: {}",
            close_summary(&closes)
        )
    });
    // Supervisor: Redis back, then the server.
    let t_restart = Instant::now();
    let t_restart_us = now_us();
    progress("redis-kill: server gone; restarting redis-server and the server");
    redis.start().await?;
    let t_redis_up = Instant::now();
    drop(server);
    let server = setup.start(ctx).await?;
    let t_ready = Instant::now();
    let resub = wait_subscribed(&run.fleet, clients as u64, Duration::from_secs(60)).await;
    let t_resub = Instant::now();
    row.check(resub.is_ok(), || format!("{resub:?}"));
    // Recovery: the server is ready again and every client has its subscription back.
    run.fleet
        .mark
        .store(run.publisher.next_seq.load(Relaxed), Relaxed);
    progress(format!(
        "redis-kill: recovered ({} ms after the restart); publishing {post} s more",
        ms(t_resub - t_restart)
    ));
    tokio::time::sleep(Duration::from_secs_f64(post)).await;
    let Tally {
        deaf_topics,
        deaf_publish,
        expected,
        received,
        lost,
        dups,
        wrong,
    } = probe(&run, &redis.url(), &mut row).await;
    let first_rx = run.fleet.first_rx_reconnected_us.load(Relaxed);
    let first_rx_ms =
        (first_rx != NOT_SET).then(|| (first_rx.saturating_sub(t_restart_us)) as f64 / 1000.0);
    let closes_after = run.closes(1);
    let callbacks_after = callbacks.load(Relaxed) - callbacks_before;
    run.stop();
    let panics = [panics_first, server.panics()].concat();
    let exit2 = server.stop(Duration::from_secs(30)).await;
    row.check(lost == 0, || {
        format!("{lost} deliveries published after recovery were lost")
    });
    row.check(deaf_topics.is_empty() && deaf_publish == 0, || {
        format!("deaf channels after recovery: {deaf_topics:?} (PUBLISH reached no subscriber: {deaf_publish})")
    });
    row.check(dups == 0 && wrong == 0, || {
        format!("{dups} duplicates, {wrong} wrong-topic deliveries")
    });
    row.check(
        run.publisher.no_receiver_after_mark.load(Relaxed) == 0,
        || "a PUBLISH after recovery reached no subscriber".into(),
    );
    row.check(closes_after.is_empty(), || {
        format!(
            "clients closed after recovery: {}",
            close_summary(&closes_after)
        )
    });
    row.check(first_rx_ms.is_some(), || {
        "no reconnected client received a message".into()
    });
    row.check(panics.is_empty(), || format!("server panicked: {panics:?}"));
    row.check(exit2 == Some(0), || {
        format!("restarted server: exit {exit2:?} on SIGTERM")
    });
    let detect_ms = detect.map(|t| ms(t - t_kill));
    let exit_ms = exit.map(|(t, _)| ms(t - t_kill));
    row.outcome = format!(
        "clients: {}; server logged `redis unexpectedly closed`, exit {}; after restart {} clients resubscribed, lost after recovery {lost}, deaf channels {} of {topics}; callbacks in the recovery {callbacks_after} (on_subscribe, one per client)",
        close_summary(&closes),
        exit.and_then(|e| e.1)
            .map_or("none".into(), |c| c.to_string()),
        run.fleet
            .subscribed_now
            .load(Relaxed)
            .max(clients as u64 * resub.is_ok() as u64),
        deaf_topics.len() + deaf_publish as usize,
    );
    row.figure = format!(
        "detection {} ms, exit {} ms after the kill; Redis restart → server ready {} ms, → first message on a reconnected client {} ms, → all {clients} resubscribed {} ms; {expected} deliveries expected after recovery, {received} received",
        fmt_opt(detect_ms),
        fmt_opt(exit_ms),
        ms(t_ready - t_restart),
        fmt_opt(first_rx_ms.map(|v| (v * 10.0).round() / 10.0)),
        ms(t_resub - t_restart),
    );
    row.json = json!({
        "clients": clients, "topics": topics, "rate": rate,
        "published_before_kill": published_before,
        "close_codes": closes,
        "detection_ms": detect_ms, "exit_ms": exit_ms, "exit_code": exit.and_then(|e| e.1),
        "redis_up_ms": ms(t_redis_up - t_restart),
        "server_ready_ms": ms(t_ready - t_restart),
        "first_message_after_restart_ms": first_rx_ms,
        "all_resubscribed_ms": ms(t_resub - t_restart),
        "expected_after_recovery": expected, "received_after_recovery": received,
        "lost_after_recovery": lost, "deaf_channels": deaf_topics.len() as u64 + deaf_publish,
        "duplicates": dups, "wrong_topic": wrong,
        "callbacks_after_outage": callbacks_after,
        "publish_failed_during_outage": run.publisher.failed.load(Relaxed),
        "client_problems": *run.fleet.failures.lock().unwrap(),
        "panics": panics,
    });
    Ok(vec![row])
}

/// What the fleet received after the mark, once every channel was probed.
pub(super) struct Tally {
    pub(super) deaf_topics: Vec<u64>,
    pub(super) deaf_publish: u64,
    pub(super) expected: u64,
    pub(super) received: u64,
    pub(super) lost: u64,
    pub(super) dups: u64,
    pub(super) wrong: u64,
}

/// Stops the publisher, PUBLISHes one message on every channel (a seq of that channel), waits
/// for the deliveries and counts what arrived after the mark.
pub(super) async fn probe(run: &Running, redis_url: &str, row: &mut Row) -> Tally {
    let topics = run.fleet.topics;
    run.publisher.stop.store(true, Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    run.pub_task.abort();
    // Probe: one message on every channel, with a seq that belongs to that channel.
    let mut next = run.publisher.next_seq.load(Relaxed);
    next = next.div_ceil(topics) * topics;
    let mut deaf_publish = 0u64;
    let probe_conn = connect_redis(redis_url).await;
    let mut probe_seq = vec![0u64; topics as usize];
    if let Some(mut c) = probe_conn {
        for k in 0..topics {
            let seq = next + k;
            probe_seq[k as usize] = seq;
            let (sub, p) = payload(k, seq);
            match redis::cmd("PUBLISH")
                .arg(sub)
                .arg(p)
                .query_async::<i64>(&mut c)
                .await
            {
                Ok(n) => {
                    run.publisher.after_mark[k as usize].fetch_add(1, Relaxed);
                    if n < 1 {
                        deaf_publish += 1;
                    }
                }
                Err(_) => deaf_publish += 1,
            }
        }
    } else {
        row.check(false, || "cannot connect to Redis for the probe".into());
    }
    run.drain().await;
    let deaf_topics: Vec<u64> = (0..topics)
        .filter(|k| {
            run.fleet.stats.iter().enumerate().any(|(i, s)| {
                i as u64 % topics == *k && s.last_seq.load(Relaxed) < probe_seq[*k as usize]
            })
        })
        .collect();
    let expected = run.expected_after_mark();
    let received = run.received_after_mark();
    let lost: u64 = run
        .fleet
        .stats
        .iter()
        .enumerate()
        .map(|(i, s)| {
            run.publisher.after_mark[i % topics as usize]
                .load(Relaxed)
                .saturating_sub(s.after_mark.load(Relaxed))
        })
        .sum();
    let dups: u64 = run.fleet.stats.iter().map(|s| s.dups.load(Relaxed)).sum();
    let wrong = run.fleet.wrong_topic.load(Relaxed);
    Tally {
        deaf_topics,
        deaf_publish,
        expected,
        received,
        lost,
        dups,
        wrong,
    }
}

pub(super) fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| v.to_string())
}

pub async fn stop(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let (clients, topics, rate) = if ctx.short {
        (50usize, 5u64, 200.0)
    } else {
        (200, 10, 1000.0)
    };
    let (interval, timeout) = (1.0, 1.0);
    let pause = 5.0;
    let mut row = Row::new(
        "Redis SIGSTOP 5 s, then SIGCONT",
        format!(
            "{rate:.0} msgs/s to {clients} clients on {topics} channels; redis.ping_interval = {interval}, ping_timeout = {timeout}"
        ),
    );
    let redis = ctx.redis().await?;
    let setup = ServerSetup::write(
        ctx,
        "stop",
        redis.port,
        &format!("ping_interval = {interval}\nping_timeout = {timeout}"),
        "",
        "[services.f]\nrequire_authentication = false\n",
    )?;
    let server = setup.start(ctx).await?;
    let run = start_load(&setup.url(), redis.url(), clients, topics, rate).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = super::procs::scrape(setup.metrics_port)
        .await
        .unwrap_or_default();
    row.check(
        metric(&before, "socketshark_broker_connected") >= 1.0,
        || "broker_connected was not 1 before the pause".into(),
    );
    progress(format!("redis-stop: SIGSTOP redis-server for {pause} s"));
    let t_stop = Instant::now();
    redis.signal(libc::SIGSTOP);
    let warn = server
        .wait_log("redis ping timeout", Duration::from_secs_f64(pause))
        .await;
    let exit_before_cont = server
        .wait_exit(
            (t_stop + Duration::from_secs_f64(pause)).saturating_duration_since(Instant::now()),
        )
        .await;
    tokio::time::sleep_until((t_stop + Duration::from_secs_f64(pause)).into()).await;
    redis.signal(libc::SIGCONT);
    let t_cont = Instant::now();
    progress("redis-stop: SIGCONT");
    let exit = match exit_before_cont {
        Some(e) => Some(e),
        None => server.wait_exit(Duration::from_secs(30)).await,
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closes = run.closes(0);
    run.stop();
    let pong = redis.query::<String>(&redis::cmd("PING")).await;
    let panics = server.panics();
    if exit.is_none() {
        server.stop(Duration::from_secs(5)).await;
    }
    let detect_ms = warn.map(|t| ms(t - t_stop));
    let exit_ms = exit.map(|(t, _)| ms(t - t_stop));
    row.check(warn.is_some(), || {
        format!("no `redis ping timeout` warning within {pause} s")
    });
    row.check(matches!(exit, Some((_, Some(0)))), || {
        format!("server exit: {exit:?}")
    });
    let n1000 = closes.get("close 1000").copied().unwrap_or(0);
    row.check(n1000 == clients as u64, || {
        format!(
            "{clients} clients should see close 1000: {}",
            close_summary(&closes)
        )
    });
    row.check(pong.is_ok(), || format!("Redis after SIGCONT: {pong:?}"));
    row.check(panics.is_empty(), || format!("server panicked: {panics:?}"));
    let limit_ms = (interval + timeout) * 1000.0 + 250.0;
    row.timing(detect_ms.is_some_and(|d| d <= limit_ms), || {
        format!(
            "detection {} ms > ping_interval + ping_timeout + 250 ms",
            fmt_opt(detect_ms)
        )
    });
    let exit_before = exit.is_some_and(|(t, _)| t < t_cont);
    row.outcome = format!(
        "warning `redis ping timeout`, exit {} {} SIGCONT; clients: {}",
        exit.and_then(|e| e.1)
            .map_or("none".into(), |c| c.to_string()),
        if exit_before { "before" } else { "after" },
        close_summary(&closes)
    );
    row.figure = format!(
        "detection {} ms after SIGSTOP (ping_timeout {} ms, worst case interval + timeout {} ms); exit {} ms after SIGSTOP",
        fmt_opt(detect_ms),
        timeout * 1000.0,
        (interval + timeout) * 1000.0,
        fmt_opt(exit_ms)
    );
    row.json = json!({
        "clients": clients, "topics": topics, "rate": rate,
        "ping_interval": interval, "ping_timeout": timeout, "pause_s": pause,
        "detection_ms": detect_ms, "exit_ms": exit_ms, "exit_code": exit.and_then(|e| e.1),
        "exit_before_sigcont": exit_before,
        "close_codes": closes, "panics": panics,
    });
    Ok(vec![row])
}
