//! The `websocket-service` binary: reads the command line and settings, sets up logging, binds
//! and runs the server, and turns SIGTERM and SIGINT into shutdown triggers (the first drains,
//! a second exits at once). Bad configuration exits 78 with one line naming the key.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use websocket_service::config::Settings;
use websocket_service::{dev, open_files, telemetry, Shutdown, ShutdownHandle};
use ws_actors::trace::ForwardTracer;

/// jemalloc instead of glibc's malloc: each message is allocated on the broker's thread and
/// freed on a socket's thread, which glibc's per-thread arenas handle poorly (malloc and free
/// were 15 % of the server's CPU in unicast). Measured in the README's performance section;
/// mimalloc was as fast but held 7.4 KiB per idle socket instead of 4.1.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for a usage error (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;
/// Exit code for bad configuration (sysexits EX_CONFIG).
const EX_CONFIG: u8 = 78;

const USAGE: &str = "usage: websocket-service [--config PATH] [--dev]

  --config PATH  settings file (default: ./settings.toml, then settings.toml beside the binary)
  --dev          zero-setup run: in-process broker, random secret and keys, prints a demo token
                 and the operator console's address and admin key
Every setting can be overridden as WS__SECTION__KEY, e.g. WS__REDIS__URL=redis://127.0.0.1:6379";

struct Args {
    config: Option<PathBuf>,
    dev: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        config: None,
        dev: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--dev" => args.dev = true,
            "--config" => {
                let path = argv.next().ok_or("--config needs a path")?;
                args.config = Some(PathBuf::from(path));
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(args))
}

fn load_settings(args: &Args) -> Result<Settings, String> {
    let mut settings = Settings::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    if args.dev {
        dev::prepare(&mut settings);
    }
    settings.validate(args.dev).map_err(|e| e.to_string())?;
    Ok(settings)
}

/// Triggers `shutdown` on SIGTERM and SIGINT, every time they arrive.
fn forward_signals(shutdown: ShutdownHandle) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    actix_web::rt::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            shutdown.trigger();
        }
    });
    Ok(())
}

/// Serves until a signal drains the server (inside an actix system).
async fn serve(
    settings: Settings,
    listener: TcpListener,
    tracer: Option<Arc<dyn ForwardTracer>>,
) -> anyhow::Result<()> {
    let (handle, shutdown) = Shutdown::new();
    forward_signals(handle)?;
    websocket_service::run_traced(settings, listener, shutdown, tracer).await
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let mut settings = match load_settings(&args) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let telemetry = match telemetry::init(&settings.telemetry) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    // Before anything is opened that counts against the limit, and once logging works.
    open_files::fit_connections_to_limit(&mut settings.limits);
    let listener = match TcpListener::bind(&settings.server.bind) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "error: cannot bind server.bind {:?}: {error}",
                settings.server.bind
            );
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        let broker = match settings.redis.target() {
            None => "memory",
            Some(target) if target.is_cluster() => "redis-cluster",
            Some(_) => "redis",
        };
        tracing::info!(%addr, broker, "listening");
        if args.dev {
            dev::print_banner(&settings, addr);
        }
    }
    let tracer = telemetry.forward_tracer();
    let result = actix_web::rt::System::new().block_on(serve(settings, listener, tracer));
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
