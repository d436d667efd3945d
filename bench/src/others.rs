//! The `connect`, `idle` and `echo` scenarios and the bench's own HTTP service.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::client::{self, Errors, Kind, Target};
use crate::cpu::{CpuMeter, QuietArgs, wait_quiet};
use crate::deflate_ws::Negotiation;
use crate::hist::Histogram;

const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens `n` clients with at most `concurrency` being set up at once; `setup(i)` connects and
/// prepares client i. Returns the clients that made it and the wall time of the whole phase.
async fn open_clients<T, F, Fut>(n: u64, concurrency: usize, setup: F) -> (Vec<T>, f64)
where
    T: Send + 'static,
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<T>> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let sem = sem.clone();
            let setup = setup.clone();
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                setup(i).await
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(n as usize);
    for t in tasks {
        if let Ok(Some(ws)) = t.await {
            conns.push(ws);
        }
    }
    (conns, start.elapsed().as_secs_f64())
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------------------------

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    #[arg(long, default_value = "ws://127.0.0.1:9000/")]
    pub url: String,
    #[arg(long, default_value_t = 2000)]
    pub clients: u64,
    /// Distinct topics (`<service>.c{i % topics}`); default: one per client.
    #[arg(long)]
    pub topics: Option<u64>,
    /// Clients connecting + subscribing at the same time.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    #[arg(long, default_value = "bench")]
    pub service: String,
    #[command(flatten)]
    pub quiet: QuietArgs,
    /// PID of the server, to report its CPU use (optional).
    #[arg(long)]
    pub server_pid: Option<u32>,
}

pub async fn connect(args: ConnectArgs) -> Result<Value, String> {
    let target = Arc::new(Target::resolve(&args.url).await?);
    let errors = Arc::new(Errors::default());
    let conn_hist = Arc::new(Histogram::new());
    let sub_hist = Arc::new(Histogram::new());
    let topics = args.topics.unwrap_or(args.clients).max(1);
    let service = args.service.clone();
    let (e, ch, sh) = (errors.clone(), conn_hist.clone(), sub_hist.clone());
    let machine = wait_quiet(&args.quiet).await;
    let cpu = CpuMeter::start(args.server_pid);
    let (conns, wall) = open_clients(args.clients, args.concurrency, move |i| {
        let (target, errors, ch, sh) = (target.clone(), e.clone(), ch.clone(), sh.clone());
        let name = format!("{service}.c{}", i % topics);
        async move {
            let t0 = Instant::now();
            let mut ws = match target.connect().await {
                Ok(ws) => ws,
                Err(err) => {
                    errors.add(Kind::Connect, || err);
                    return None;
                }
            };
            let t1 = Instant::now();
            if let Err((kind, err)) = client::subscribe(&mut ws, &name, REPLY_TIMEOUT).await {
                errors.add(kind, || format!("{name}: {err}"));
                return None;
            }
            ch.record((t1 - t0).as_micros() as u64);
            sh.record(t1.elapsed().as_micros() as u64);
            Some(ws)
        }
    })
    .await;
    let ok = conns.len() as u64;
    let cpu = cpu.json();
    client::close_all(conns).await;
    Ok(json!({
        "cpu_cores": cpu,
        "machine_before": machine,
        "scenario": "connect",
        "url": args.url,
        "clients": args.clients,
        "topics": topics,
        "concurrency": args.concurrency,
        "connected": ok,
        "wall_s": round3(wall),
        "connects_per_s": (ok as f64 / wall).round(),
        "connect_latency": conn_hist.take().summary_ms(),
        "subscribe_latency": sub_hist.take().summary_ms(),
        "errors": errors.to_json(),
    }))
}

// ---------------------------------------------------------------------------------------------

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    #[arg(long, default_value = "ws://127.0.0.1:9000/")]
    pub url: String,
    #[arg(long, default_value_t = 2000)]
    pub clients: u64,
    /// Subscriptions per client (`<service>.i{client}_{k}`, all distinct).
    #[arg(long, default_value_t = 1)]
    pub subs: u64,
    #[command(flatten)]
    pub quiet: QuietArgs,
    /// PID of the server process, whose VmRSS is read from /proc/PID/status.
    #[arg(long)]
    pub server_pid: u32,
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Seconds to wait after the last subscribe (and after closing) before reading RSS.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    #[arg(long, default_value = "bench")]
    pub service: String,
    /// Browser-like clients: offer `permessage-deflate; client_max_window_bits` (the bench's own
    /// client instead of tungstenite) and report what was negotiated.
    #[arg(long)]
    pub deflate: bool,
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS"))
}

pub async fn idle(args: IdleArgs) -> Result<Value, String> {
    let target = Arc::new(Target::resolve(&args.url).await?);
    let errors = Arc::new(Errors::default());
    let machine = wait_quiet(&args.quiet).await;
    let before = rss_kib(args.server_pid)?;
    let (service, subs, e) = (args.service.clone(), args.subs, errors.clone());
    let negotiation = Arc::new(Negotiation::default());
    let (deflate, neg) = (args.deflate, negotiation.clone());
    let (conns, wall) = open_clients(args.clients, args.concurrency, move |i| {
        let (target, errors, service) = (target.clone(), e.clone(), service.clone());
        let neg = neg.clone();
        async move {
            let mut ws = match target.connect_any(deflate).await {
                Ok(ws) => ws,
                Err(err) => {
                    errors.add(Kind::Connect, || err);
                    return None;
                }
            };
            if let Some(d) = ws.as_deflate() {
                neg.record(d);
            }
            for k in 0..subs {
                let name = format!("{service}.i{i}_{k}");
                if let Err((kind, err)) = client::subscribe(&mut ws, &name, REPLY_TIMEOUT).await {
                    errors.add(kind, || format!("{name}: {err}"));
                    return None;
                }
            }
            Some(ws)
        }
    })
    .await;
    let ok = conns.len() as u64;
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after = rss_kib(args.server_pid)?;
    client::close_all(conns).await;
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after_close = rss_kib(args.server_pid).ok();
    let per_conn = if ok > 0 {
        (after.saturating_sub(before) * 1024) as f64 / ok as f64
    } else {
        0.0
    };
    let mut out = json!({
        "scenario": "idle",
        "machine_before": machine,
        "url": args.url,
        "clients": args.clients,
        "subs_per_client": subs,
        "connected": ok,
        "setup_s": round3(wall),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_after_close_kib": after_close,
        "rss_per_conn_bytes": per_conn.round(),
        "rss_per_conn_kib": round3(per_conn / 1024.0),
        "errors": errors.to_json(),
    });
    if args.deflate {
        out["client"] = "deflate_ws".into();
        out["deflate"] = negotiation.to_json();
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------

/// The bench's service: `POST /echo` answers `{"status": "ok", "data": <the request's data>}`.
/// Returns the bound port and the call counter.
pub async fn start_service(port: u16) -> Result<(u16, Arc<AtomicU64>), String> {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let app = Router::new().route(
        "/echo",
        post(move |body: Bytes| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Relaxed);
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let data = req.get("data").cloned().unwrap_or(Value::Null);
                (
                    [(CONTENT_TYPE, "application/json")],
                    json!({"status": "ok", "data": data}).to_string(),
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("service port {port}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("service: {e}");
        }
    });
    eprintln!(
        "{}",
        json!({"event": "service listening", "url": format!("http://127.0.0.1:{port}/echo"), "port": port})
    );
    Ok((port, calls))
}

#[derive(clap::Args, Debug, Clone)]
pub struct EchoArgs {
    #[arg(long, default_value = "ws://127.0.0.1:9000/")]
    pub url: String,
    #[arg(long, default_value_t = 50)]
    pub clients: u64,
    /// Seconds measured (after --warmup).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Port of the bench's HTTP service (the server's `on_message` must be
    /// `http://127.0.0.1:PORT/echo`); 0 picks one and prints it on stderr.
    #[arg(long, default_value_t = 0)]
    pub service_port: u16,
    /// Service whose `on_message` points at the bench's service.
    #[arg(long, default_value = "echo")]
    pub service: String,
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    #[command(flatten)]
    pub quiet: QuietArgs,
    /// PID of the server, to report its CPU use (optional).
    #[arg(long)]
    pub server_pid: Option<u32>,
}

pub async fn echo(args: EchoArgs) -> Result<Value, String> {
    let (port, calls) = start_service(args.service_port).await?;
    let target = Arc::new(Target::resolve(&args.url).await?);
    let errors = Arc::new(Errors::default());
    let (service, e) = (args.service.clone(), errors.clone());
    let (conns, _) = open_clients(args.clients, args.concurrency, move |i| {
        let (target, errors, service) = (target.clone(), e.clone(), service.clone());
        async move {
            let mut ws = match target.connect().await {
                Ok(ws) => ws,
                Err(err) => {
                    errors.add(Kind::Connect, || err);
                    return None;
                }
            };
            let name = format!("{service}.e{i}");
            match client::subscribe(&mut ws, &name, REPLY_TIMEOUT).await {
                Ok(()) => Some(ws),
                Err((kind, err)) => {
                    errors.add(kind, || format!("{name}: {err}"));
                    None
                }
            }
        }
    })
    .await;
    let connected = conns.len() as u64;
    let machine = wait_quiet(&args.quiet).await;
    let hist = Arc::new(Histogram::new());
    let count = Arc::new(AtomicU64::new(0));
    let calls_before = calls.load(Relaxed);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let (hist, count, errors) = (hist.clone(), count.clone(), errors.clone());
            let name = format!("{}.e{i}", args.service);
            tokio::spawn(async move {
                let mut seq = 0u64;
                while Instant::now() < end {
                    seq += 1;
                    let cmd =
                        json!({"event": "message", "subscription": name, "data": {"seq": seq}});
                    let t0 = Instant::now();
                    match client::request(&mut ws, &cmd, "message", Some(&name), REPLY_TIMEOUT)
                        .await
                    {
                        Ok(reply) => {
                            let t1 = Instant::now();
                            if reply.pointer("/data/seq").and_then(Value::as_u64) != Some(seq) {
                                errors.add(Kind::Unexpected, || format!("bad echo: {reply}"));
                            } else if t0 >= measure_from && t1 <= end {
                                hist.record((t1 - t0).as_micros() as u64);
                                count.fetch_add(1, Relaxed);
                            }
                        }
                        Err((kind, err)) => {
                            errors.add(kind, || format!("{name}: {err}"));
                            if matches!(kind, Kind::Disconnect | Kind::Timeout) {
                                return;
                            }
                        }
                    }
                }
                client::close(ws).await;
            })
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu = CpuMeter::start(args.server_pid);
    tokio::time::sleep_until(end.into()).await;
    let cpu = cpu.json();
    for t in tasks {
        let _ = t.await;
    }
    let n = count.load(Relaxed);
    Ok(json!({
        "scenario": "echo",
        "machine_before": machine,
        "url": args.url,
        "clients": args.clients,
        "connected": connected,
        "service_port": port,
        "duration_s": args.duration,
        "round_trips": n,
        "round_trips_per_s": (n as f64 / args.duration).round(),
        "latency": hist.take().summary_ms(),
        "cpu_cores": cpu,
        "service_calls": calls.load(Relaxed) - calls_before,
        "errors": errors.to_json(),
    }))
}
