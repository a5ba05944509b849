//! A worker process (`loadgen --worker`): opens its slice of sockets with bounded connect
//! concurrency, each bound to one of the source addresses, reads every message, times it,
//! tracks per-socket sequence numbers, and reports to the parent over stdout (JSON lines).
//!
//! It reads its [`WorkerSpec`] and then [`Command`]s from stdin (drop every connection,
//! reconnect, finish); when stdin closes (the parent is gone) or its own deadline passes it
//! stops at once, so it can never outlive a run.
//!
//! Layout: `state` (what the worker knows about its sockets, and its reports), `socket` (one
//! client socket's task).

mod socket;
mod state;

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines, Stdin};
use tokio::sync::{watch, Semaphore};
use tokio::task::LocalSet;
use tokio::time::Instant;

use self::socket::SocketPlan;
use self::state::State;
use crate::protocol::{Command, Event, WorkerSpec};
use crate::token::{self, Minter};
use crate::util::{emit_line, WsUrl};

/// How often a worker reports its counters.
const TICK: Duration = Duration::from_millis(100);

/// The parent's commands, one JSON line each.
type CommandLines = Lines<BufReader<Stdin>>;

/// Entry point of `loadgen --worker`.
pub async fn main() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let spec_line = lines
        .next_line()
        .await
        .context("reading the worker spec from stdin")?
        .ok_or_else(|| anyhow!("stdin closed before the worker spec"))?;
    let spec: WorkerSpec = serde_json::from_str(&spec_line).context("parsing the worker spec")?;
    let local = LocalSet::new();
    let result = local.run_until(run(spec, lines)).await;
    if let Err(error) = &result {
        let _ = emit_line(&Event::Fatal {
            error: format!("{error:#}"),
        });
    }
    result
}

/// Opens the sockets, ticks to the parent, and waits for its `Finish` (or the deadline).
async fn run(spec: WorkerSpec, lines: CommandLines) -> anyhow::Result<()> {
    let url = WsUrl::parse(&spec.url)?;
    let target = url.resolve().await?;
    let src_addrs = source_addresses(&spec)?;
    let deadline = Instant::now() + Duration::from_millis(spec.max_run_ms);
    let state = Rc::new(RefCell::new(State::new(spec.clone())?));
    spawn_ticks(state.clone());
    let (away, away_rx) = watch::channel(false);
    open_sockets(&spec, &url, target, &src_addrs, &state, &away_rx)?;
    commands(&state, &away, lines, deadline).await
}

/// The spec's source addresses, parsed.
fn source_addresses(spec: &WorkerSpec) -> anyhow::Result<Vec<IpAddr>> {
    spec.src_addrs
        .iter()
        .map(|a| a.parse().with_context(|| format!("source address {a:?}")))
        .collect()
}

/// Sends a tick to the parent every `TICK`; exits the process when the parent is gone.
fn spawn_ticks(state: Rc<RefCell<State>>) {
    tokio::task::spawn_local(async move {
        let mut interval = tokio::time::interval(TICK);
        loop {
            interval.tick().await;
            let tick = state.borrow().tick();
            if emit_line(&Event::Tick(tick)).is_err() {
                std::process::exit(1); // parent gone
            }
        }
    });
}

/// Starts one task per socket of the slice, at most `connect_concurrency` connecting at once;
/// socket `i` of the whole run binds source address `i % len`.
fn open_sockets(
    spec: &WorkerSpec,
    url: &WsUrl,
    target: SocketAddr,
    src_addrs: &[IpAddr],
    state: &Rc<RefCell<State>>,
    away: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let v2_url;
    let url = if spec.v2 {
        v2_url = url.with_param("v=2");
        &v2_url
    } else {
        url
    };
    let minter = Minter::new(&spec.secret, spec.token_ttl_s);
    let gate = Rc::new(Semaphore::new(spec.connect_concurrency.max(1)));
    let timeout = Duration::from_millis(spec.connect_timeout_ms);
    for user in spec.user_start..spec.user_end {
        let user_id = token::user_id(&spec.user_prefix, user);
        let request = url.with_token(&minter.mint(&user_id)?);
        for k in 0..spec.sockets_per_user {
            let idx = ((user - spec.user_start) * spec.sockets_per_user + k) as usize;
            let global = spec.socket_offset + idx as u64;
            let src = (!src_addrs.is_empty())
                .then(|| src_addrs[(global % src_addrs.len() as u64) as usize]);
            let plan = SocketPlan {
                idx,
                target,
                src,
                request: request.clone(),
                timeout,
            };
            tokio::task::spawn_local(socket::socket_task(
                state.clone(),
                gate.clone(),
                plan,
                away.clone(),
            ));
        }
    }
    Ok(())
}

/// Follows the parent's commands: drops and reconnects the sockets when told, and on `Finish`
/// waits up to its `wait_ms` for the expected messages and sends the final report. Without a
/// command (parent gone, or the deadline) it reports what there is at once.
async fn commands(
    state: &RefCell<State>,
    away: &watch::Sender<bool>,
    mut lines: CommandLines,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let command = tokio::select! {
            line = lines.next_line() => line.context("reading stdin")?,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(line) = command else {
            // Parent gone or deadline: report what there is and stop.
            let report = state.borrow().report(None)?;
            let _ = emit_line(&Event::Final(Box::new(report)));
            return Ok(());
        };
        match serde_json::from_str(&line).with_context(|| format!("bad command {line:?}"))? {
            Command::Disconnect => {
                away.send_replace(true);
            }
            Command::Reconnect => {
                state.borrow_mut().start_reconnects();
                away.send_replace(false);
            }
            Command::Finish {
                published,
                users,
                wait_ms,
            } => return finish(state, published, users, wait_ms, deadline).await,
        }
    }
}

/// Waits up to `wait_ms` (and the deadline) until every open socket has what was published to
/// it, then sends the final report.
async fn finish(
    state: &RefCell<State>,
    published: Option<u64>,
    users: u64,
    wait_ms: u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    if let Some(published) = published {
        let until = Instant::now() + Duration::from_millis(wait_ms);
        while Instant::now() < until.min(deadline) && !state.borrow().complete(published, users) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let report = state.borrow().report(published.map(|p| (p, users)))?;
    emit_line(&Event::Final(Box::new(report)))?;
    Ok(())
}
