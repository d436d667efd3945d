//! socketshark-bench: load generator for socketshark and the original SocketShark.
//!
//! Every scenario prints one JSON line of figures on stdout (progress and diagnostics go to
//! stderr). See bench/README.md.

mod client;
mod cpu;
mod deflate_ws;
mod fanout;
mod faults;
mod hist;
mod others;
mod wirebytes;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "socketshark-bench", version, about)]
struct Cli {
    /// Tokio worker threads (default: the CPUs this process may run on, e.g. 1 under `taskset -c 1`).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// C clients on T topics, a Redis publisher at R msgs/s: delivered rate, latency, loss.
    Fanout(fanout::FanoutArgs),
    /// C clients connect + subscribe as fast as possible (bounded concurrency).
    Connect(others::ConnectArgs),
    /// C idle clients x K subscriptions: server RSS per connection.
    Idle(others::IdleArgs),
    /// One client, one subscription, 1,000 CRM-like records via Redis: bytes on the wire per
    /// message, with (`--deflate`) or without the browser's permessage-deflate offer.
    Wirebytes(wirebytes::WirebytesArgs),
    /// Client `message` -> server -> bench `on_message` service -> confirmation, in a loop.
    Echo(others::EchoArgs),
    /// The fault-injection suite (issue #13): Redis killed/paused, failing services, churn,
    /// slow and hostile clients; see bench/faults.sh.
    Faults(faults::FaultsArgs),
    /// Run only the bench's echo service (POST /echo) until interrupted.
    Service {
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

/// Raises the soft file-descriptor limit to the hard limit.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

fn main() {
    let cli = Cli::parse();
    let nofile = raise_nofile();
    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // One runtime for everything; on one CPU a current-thread runtime avoids cross-thread
    // wake-ups (the coordinator and publisher would otherwise run on the main thread).
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let needed = match &cli.command {
        Command::Fanout(a) => a.clients.unwrap_or(1000),
        Command::Connect(a) => a.clients,
        Command::Idle(a) => a.clients,
        Command::Echo(a) => a.clients,
        Command::Wirebytes(_) => 1,
        Command::Service { .. } | Command::Faults(_) => 0,
    };
    if needed + 100 > nofile {
        eprintln!(
            "warning: {needed} clients but the file-descriptor limit is {nofile}; raise the hard limit (ulimit -Hn)"
        );
    }
    let main = async move {
        match cli.command {
            Command::Fanout(a) => fanout::run(a).await,
            Command::Connect(a) => others::connect(a).await.map(|v| (v, true)),
            Command::Idle(a) => others::idle(a).await.map(|v| (v, true)),
            Command::Echo(a) => others::echo(a).await.map(|v| (v, true)),
            Command::Faults(a) => faults::run(a).await,
            Command::Wirebytes(a) => wirebytes::run(a).await,
            Command::Service { port } => {
                others::start_service(port).await?;
                tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
                Ok((serde_json::json!({"scenario": "service"}), true))
            }
        }
    };
    // Spawned, so that with several workers the coordinator runs on a worker thread too.
    let result = rt
        .block_on(rt.spawn(main))
        .unwrap_or_else(|e| Err(format!("panic: {e}")));
    // Client tasks may still be closing; don't wait for them.
    rt.shutdown_background();
    match result {
        Ok((mut v, ok)) => {
            v["threads"] = threads.into();
            println!("{v}");
            if !ok {
                std::process::exit(1);
            }
        }
        Err(e) => {
            println!("{}", serde_json::json!({"error": e}));
            std::process::exit(2);
        }
    }
}
