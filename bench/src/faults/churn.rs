//! Churn: many connect / subscribe / disconnect cycles (half closed cleanly, half dropped
//! without a close frame); the server's RSS, fds and threads, its connection gauge and Redis's
//! channel count must come back.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::procs::{metric, proc_stats, scrape};
use super::{Ctx, Row, ServerSetup, progress};
use crate::client::{self, Errors, Kind, Target, Ws};

/// Connects from 127.0.0.(2 + i % 250), so that 100 000 short connections do not exhaust the
/// ephemeral ports of one source address.
async fn connect_from(target: &Target, i: u64) -> Result<Ws, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    let src = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2 + (i % 250) as u8), 0));
    sock.bind(src).map_err(|e| format!("bind {src}: {e}"))?;
    let stream = sock
        .connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).ok();
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(target.url.as_str(), stream, Some(config))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

async fn cycles(target: Arc<Target>, from: u64, n: u64, concurrency: usize, errors: Arc<Errors>) {
    let sem = Arc::new(Semaphore::new(concurrency));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in from..from + n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (target, errors, done) = (target.clone(), errors.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            match connect_from(&target, i).await {
                Ok(mut ws) => {
                    let name = format!("f.churn{i}");
                    match client::subscribe(&mut ws, &name, Duration::from_secs(30)).await {
                        Ok(()) => {
                            if i % 2 == 0 {
                                client::close(ws).await;
                            } else {
                                drop(ws); // abrupt: TCP FIN without a close frame
                            }
                        }
                        Err((kind, e)) => errors.add(kind, || format!("{name}: {e}")),
                    }
                }
                Err(e) => errors.add(Kind::Connect, || e),
            }
            let d = done.fetch_add(1, Relaxed) + 1;
            if d % 10_000 == 0 {
                eprintln!(
                    "faults: churn: {d} cycles ({:.0}/s)",
                    d as f64 / start.elapsed().as_secs_f64()
                );
            }
        }));
        if tasks.len() >= 4096 {
            for t in tasks.drain(..) {
                let _ = t.await;
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

pub async fn run(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let (n, warmup, settle) = if ctx.short {
        (2_000u64, 200u64, 2.0)
    } else {
        (100_000, 1_000, 3.0)
    };
    let concurrency = 50;
    let redis = ctx.redis().await?;
    let setup = ServerSetup::write(
        ctx,
        "churn",
        redis.port,
        "",
        "",
        "[services.f]\nrequire_authentication = false\n",
    )?;
    let server = setup.start(ctx).await?;
    let target = Arc::new(Target::resolve(&setup.url()).await?);
    let errors = Arc::new(Errors::default());
    let fresh = proc_stats(server.pid)?;
    progress(format!("churn: {warmup} warm-up cycles"));
    cycles(target.clone(), 0, warmup, concurrency, errors.clone()).await;
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let before = proc_stats(server.pid)?;
    progress(format!("churn: {n} cycles, {concurrency} at a time"));
    let t0 = Instant::now();
    cycles(target.clone(), warmup, n, concurrency, errors.clone()).await;
    let wall = t0.elapsed().as_secs_f64();
    // Let the server end the sessions (abrupt drops) and the allocator settle.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (after, conns) = loop {
        tokio::time::sleep(Duration::from_secs_f64(settle)).await;
        let m = scrape(setup.metrics_port).await.unwrap_or_default();
        let conns = metric(&m, "socketshark_connection_count");
        let after = proc_stats(server.pid)?;
        if (conns == 0.0 && after.fds <= before.fds) || Instant::now() > deadline {
            break (after, conns);
        }
    };
    let channels: Vec<String> = redis
        .query(redis::cmd("PUBSUB").arg("CHANNELS").arg("f.churn*"))
        .await
        .unwrap_or_else(|e| vec![format!("error: {e}")]);
    let panics = server.panics();
    let code = server.stop(Duration::from_secs(30)).await;
    let mut row = Row::new(
        "churn: connect / subscribe / disconnect cycles",
        format!(
            "{n} cycles ({concurrency} concurrent), each a new connection subscribing to its own channel, half closed with a close frame, half dropped"
        ),
    );
    let errs = errors.total();
    row.check(errs == 0, || {
        format!("{errs} cycles failed: {}", errors.to_json()["samples"])
    });
    row.check(after.fds <= before.fds, || {
        format!("fd leak: {} fds after vs {} before", after.fds, before.fds)
    });
    row.check(conns == 0.0, || {
        format!("connection gauge {conns} after churn")
    });
    row.check(channels.is_empty(), || {
        format!(
            "{} channels still subscribed in Redis: {:?}",
            channels.len(),
            &channels[..channels.len().min(5)]
        )
    });
    row.check(panics.is_empty(), || format!("server panicked: {panics:?}"));
    row.check(code == Some(0), || {
        format!("server exit {code:?} on SIGTERM")
    });
    let growth = (after.rss_kib as f64 - before.rss_kib as f64) / before.rss_kib.max(1) as f64;
    row.timing(growth <= 0.10, || {
        format!(
            "RSS {} → {} KiB (+{:.1} %)",
            before.rss_kib,
            after.rss_kib,
            growth * 100.0
        )
    });
    row.outcome = format!(
        "{} of {n} cycles ok; afterwards connection gauge {conns}, {} Redis channels left, fds {} → {}",
        n + warmup - errs.min(n + warmup) - warmup,
        channels.len(),
        before.fds,
        after.fds
    );
    row.figure = format!(
        "RSS {} → {} KiB ({:+.1} %; fresh server {} KiB, before = after {warmup} warm-up cycles); threads {} → {}; {:.0} cycles/s",
        before.rss_kib,
        after.rss_kib,
        growth * 100.0,
        fresh.rss_kib,
        before.threads,
        after.threads,
        n as f64 / wall
    );
    row.json = json!({
        "cycles": n, "warmup": warmup, "concurrency": concurrency, "wall_s": wall,
        "fresh": fresh.to_json(), "before": before.to_json(), "after": after.to_json(),
        "rss_growth": growth, "connection_gauge_after": conns,
        "redis_channels_left": channels.len(), "errors": errors.to_json(), "panics": panics,
    });
    Ok(vec![row])
}
