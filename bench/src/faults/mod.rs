//! `faults`: the fault-injection suite (issue #13). Each row starts its own redis-server and
//! server (the binary under test, `--server`), puts it under load with real WebSocket clients,
//! a Redis publisher and an HTTP service, injects one fault and checks the documented outcome.
//! See bench/README.md ("Fault injection") and bench/faults.sh.

mod churn;
mod hostile;
mod procs;
mod redis_faults;
mod redis_reconnect;
mod service;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use procs::{Redis, Server, free_port};

#[derive(clap::Args, Debug, Clone)]
pub struct FaultsArgs {
    /// The server binary under test.
    #[arg(long)]
    pub server: String,
    /// CI form: small loads, outcomes and zero loss checked, timings reported but not asserted.
    #[arg(long)]
    pub short: bool,
    /// Comma-separated rows to run: redis-kill, redis-stop, service, churn, hostile (default all).
    #[arg(long)]
    pub only: Option<String>,
    /// CPU list the server is pinned to (taskset -c); empty = not pinned.
    #[arg(long, default_value = "")]
    pub server_cpu: String,
    /// CPU list redis-server is pinned to; empty = not pinned (it inherits this tool's affinity).
    #[arg(long, default_value = "")]
    pub load_cpu: String,
    /// Directory for configs and logs (created; default: a new /tmp directory).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Writes the Markdown table of the rows to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

/// What a row measured and whether its outcome was the documented one.
pub struct Row {
    pub fault: String,
    pub load: String,
    pub outcome: String,
    pub figure: String,
    /// Wrong outcomes (always fatal).
    pub failures: Vec<String>,
    /// Missed timing targets (fatal in the full form only).
    pub timing: Vec<String>,
    pub json: Value,
}

impl Row {
    pub fn new(fault: &str, load: String) -> Row {
        Row {
            fault: fault.into(),
            load,
            outcome: String::new(),
            figure: String::new(),
            failures: Vec::new(),
            timing: Vec::new(),
            json: json!({}),
        }
    }

    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }

    pub fn timing(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.timing.push(what());
        }
    }
}

/// Shared by every row: where things go and what to start.
pub struct Ctx {
    pub args: FaultsArgs,
    pub work: PathBuf,
    pub short: bool,
}

impl Ctx {
    pub fn server_cpu(&self) -> Option<String> {
        Some(self.args.server_cpu.clone()).filter(|s| !s.is_empty())
    }

    pub fn load_cpu(&self) -> Option<String> {
        Some(self.args.load_cpu.clone()).filter(|s| !s.is_empty())
    }

    pub async fn redis(&self) -> Result<Redis, String> {
        let mut r = Redis::new(free_port()?, self.load_cpu(), &self.work);
        r.start().await?;
        Ok(r)
    }
}

/// The ports and file of one server configuration.
pub struct ServerSetup {
    pub config: PathBuf,
    pub log: PathBuf,
    pub ws_port: u16,
    pub metrics_port: u16,
}

impl ServerSetup {
    /// Writes `NAME.toml`: fixed WebSocket and metrics ports (so restarts keep the URL), server
    /// pings off, JSON logs at INFO, `[redis]` on `redis_port` plus `redis_extra`, `[limits]`
    /// without the event rate limit plus `limits_extra`, then `tail` (service tables).
    pub fn write(
        ctx: &Ctx,
        name: &str,
        redis_port: u16,
        redis_extra: &str,
        limits_extra: &str,
        tail: &str,
    ) -> Result<ServerSetup, String> {
        let ws_port = free_port()?;
        let metrics_port = free_port()?;
        let config = ctx.work.join(format!("{name}.toml"));
        let text = format!(
            r#"[ws]
host = "127.0.0.1"
port = {ws_port}
[ws.ping]
interval = 0
[log]
level = "INFO"
format = "json"
[redis]
host = "127.0.0.1"
port = {redis_port}
channel_prefix = ""
{redis_extra}
[metrics.prometheus]
host = "127.0.0.1"
port = {metrics_port}
[limits]
max_events_per_second = 0
{limits_extra}
{tail}
"#
        );
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        Ok(ServerSetup {
            config,
            log: ctx.work.join(format!("{name}.server.log")),
            ws_port,
            metrics_port,
        })
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.ws_port)
    }

    /// Starts the server and waits for its ready line (30 s).
    pub async fn start(&self, ctx: &Ctx) -> Result<Server, String> {
        let s = Server::start(&ctx.args.server, &self.config, &ctx.server_cpu(), &self.log)?;
        let port = s.wait_ready(Duration::from_secs(30)).await?;
        if port != self.ws_port {
            return Err(format!(
                "the server listens on {port}, not on {}",
                self.ws_port
            ));
        }
        Ok(s)
    }
}

/// An HTTP service that answers every callback `{"status": "ok"}` and counts them.
pub async fn counting_service() -> Result<(u16, Arc<AtomicU64>), String> {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/{cb}",
        axum::routing::post(move || {
            c.fetch_add(1, Ordering::Relaxed);
            async {
                (
                    [("content-type", "application/json")],
                    r#"{"status": "ok"}"#,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("counting service: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((port, calls))
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

pub fn progress(what: impl std::fmt::Display) {
    eprintln!("faults: {what}");
}

fn markdown(rows: &[Row], short: bool) -> String {
    let mut s =
        String::from("| fault | load | outcome | figure | verdict |\n|---|---|---|---|---|\n");
    for r in rows {
        let verdict = if !r.failures.is_empty() {
            format!("**FAIL**: {}", r.failures.join("; "))
        } else if !r.timing.is_empty() {
            let what = r.timing.join("; ");
            if short {
                format!("ok (timing not asserted: {what})")
            } else {
                format!("**FAIL** (timing): {what}")
            }
        } else {
            "ok".into()
        };
        let cell = |t: &str| t.replace('|', "\\|").replace('\n', " ");
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cell(&r.fault),
            cell(&r.load),
            cell(&r.outcome),
            cell(&r.figure),
            cell(&verdict)
        ));
    }
    s
}

pub async fn run(args: FaultsArgs) -> Result<(Value, bool), String> {
    if !Path::new(&args.server).is_file() {
        return Err(format!("server binary not found: {}", args.server));
    }
    let work = match &args.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("socketshark-faults.{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let only: Vec<String> = args
        .only
        .as_deref()
        .unwrap_or(
            "redis-kill,redis-stop,redis-kill-reconnect,redis-stop-reconnect,service,churn,hostile",
        )
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let known = [
        "redis-kill",
        "redis-stop",
        "redis-kill-reconnect",
        "redis-stop-reconnect",
        "service",
        "churn",
        "hostile",
    ];
    if let Some(bad) = only.iter().find(|r| !known.contains(&r.as_str())) {
        return Err(format!("unknown row {bad}; rows: {}", known.join(", ")));
    }
    let ctx = Ctx {
        short: args.short,
        work: work.clone(),
        args: args.clone(),
    };
    progress(format!(
        "{} form, server {}, work directory {}",
        if ctx.short { "short" } else { "full" },
        args.server,
        work.display()
    ));
    let mut rows: Vec<Row> = Vec::new();
    for name in &only {
        progress(format!("row {name}: starting"));
        let result = match name.as_str() {
            "redis-kill" => redis_faults::kill(&ctx).await,
            "redis-stop" => redis_faults::stop(&ctx).await,
            "redis-kill-reconnect" => {
                redis_reconnect::run(&ctx, redis_reconnect::Fault::Kill).await
            }
            "redis-stop-reconnect" => {
                redis_reconnect::run(&ctx, redis_reconnect::Fault::Stop).await
            }
            "service" => service::run(&ctx).await,
            "churn" => churn::run(&ctx).await,
            _ => hostile::run(&ctx).await,
        };
        match result {
            Ok(rs) => {
                for r in rs {
                    let verdict = if r.failures.is_empty() { "ok" } else { "FAIL" };
                    progress(format!(
                        "row {name}: {}: {verdict}: {} | {}{}",
                        r.fault,
                        r.outcome,
                        r.figure,
                        if r.failures.is_empty() {
                            String::new()
                        } else {
                            format!(" | failures: {}", r.failures.join("; "))
                        }
                    ));
                    let mut j = r.json.clone();
                    j["row"] = name.as_str().into();
                    j["fault"] = r.fault.as_str().into();
                    j["failures"] = json!(r.failures);
                    j["timing_misses"] = json!(r.timing);
                    println!("{j}");
                    rows.push(r);
                }
            }
            Err(e) => {
                progress(format!("row {name}: setup error: {e}"));
                let mut r = Row::new(name, "-".into());
                r.outcome = "setup error".into();
                r.failures.push(e);
                rows.push(r);
            }
        }
    }
    let md = markdown(&rows, ctx.short);
    if let Some(path) = &args.markdown {
        std::fs::write(path, &md).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    eprintln!("{md}");
    let failed: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.failures.is_empty() || (!ctx.short && !r.timing.is_empty()))
        .collect();
    let ok = failed.is_empty();
    Ok((
        json!({
            "scenario": "faults",
            "form": if ctx.short { "short" } else { "full" },
            "rows": rows.len(),
            "failed": failed.iter().map(|r| r.fault.clone()).collect::<Vec<_>>(),
            "ok": ok,
        }),
        ok,
    ))
}
