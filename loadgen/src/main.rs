//! `loadgen`: the load tool of websocket-service. Mints JWTs from the shared secret, opens
//! users × sockets (legacy or protocol v2) over several source addresses and worker processes,
//! publishes through Redis (plain PUBLISH or durably with FCALL ws_publish) at a fixed rate or
//! flat out, and reports connect rate, server RSS per socket, delivered/s, loss, duplicates,
//! v2 offsets and latency percentiles as JSON plus an SVG plot; it can also drop and resume
//! every socket, or cut the server's subscriber link to Redis mid-run. `loadgen stuck-reader`
//! measures a socket that never reads; `loadgen report` summarises a bench directory. Every run
//! is bounded in count and time.

mod hist;
mod payload;
mod procfs;
mod protocol;
mod publisher;
mod rawws;
mod redis_info;
mod report;
mod run;
mod stuck;
mod summary;
mod svg;
mod token;
mod util;
mod v2frame;
mod worker;

use std::process::ExitCode;

fn usage() -> String {
    format!(
        "{}\n\n{}\n\n{}\n\n(internal) loadgen --worker: one slice of sockets, driven over stdin/stdout by the parent",
        run::USAGE,
        stuck::USAGE,
        summary::USAGE
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("-h" | "--help") => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Some("--worker") => runtime.block_on(worker::main()),
        Some("stuck-reader") => runtime.block_on(stuck::main(&args[1..])),
        Some("report") => summary::main(&args[1..]),
        _ => runtime.block_on(tokio::task::LocalSet::new().run_until(run::main(&args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
