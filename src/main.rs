//! The `socketshark` binary: command line, configuration, logging, runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use socketshark::config::Config;

/// A WebSocket message router: browsers subscribe over WebSocket, services answer HTTP
/// callbacks and publish through Redis or the HTTP publish API. Wire-compatible with
/// SocketShark 0.5.
///
/// Without a configuration file it runs on the embedded broker: WebSocket on 127.0.0.1:9000,
/// `POST http://127.0.0.1:9001/publish`, and one service, `demo`, open to anonymous clients.
#[derive(Parser, Debug)]
#[command(name = "socketshark", version, about)]
struct Cli {
    /// The TOML configuration file (see docs/CONFIG.md).
    #[arg(short = 'c', long = "config", value_name = "FILE.toml")]
    config: Option<PathBuf>,

    /// Validate the configuration and exit (0 = valid, 2 = invalid).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match &cli.config {
        None if cli.check_config => {
            eprintln!("--check-config needs a file: socketshark --check-config -c FILE.toml");
            return ExitCode::from(2);
        }
        None => Config::embedded(),
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
    };
    if let (Some(path), true) = (&cli.config, cli.check_config) {
        println!("{}: configuration is valid", path.display());
        return ExitCode::SUCCESS;
    }
    socketshark::logging::init(&cfg.log);
    return_large_allocations_to_the_system();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(socketshark::compat::pyjson::WORKER_STACK)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(socketshark::server::run(cfg, cli.config.clone()));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code as u8)
}

/// glibc's malloc raises its mmap threshold each time a large block is freed, after which blocks
/// of that size come from the heap and stay in the process once freed: 200 connections that
/// each received one 500 KB message kept 166 KiB each (VmRSS 8.7 -> 41.1 MiB). A fixed threshold
/// (which also turns that adjustment off) keeps every block of 128 KiB or more in its own
/// mapping, returned to the system when the message is done (same test: 8.4 -> 8.7 MiB).
fn return_large_allocations_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
