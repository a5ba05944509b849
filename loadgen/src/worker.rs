//! A worker process (`loadgen --worker`): opens its slice of sockets with bounded connect
//! concurrency, each bound to one of the source addresses, reads every message, times it,
//! tracks per-socket sequence numbers, and reports to the parent over stdout (JSON lines).
//!
//! It reads its [`WorkerSpec`] and then [`Command`]s from stdin; when stdin closes (the parent
//! is gone) or its own deadline passes it stops at once, so it can never outlive a run.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use futures_util::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::LocalSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::hist::{self, Hist};
use crate::protocol::{
    BinReport, Command, ConnectReport, Event, LossReport, Tick, WorkerFinal, WorkerSpec,
};
use crate::token::Minter;
use crate::util::{emit_line, now_us, WsUrl};

/// How often a worker reports its counters.
const TICK: Duration = Duration::from_millis(100);
/// Longest failure reason kept (the failure map must stay small).
const REASON_MAX: usize = 96;

/// Per-socket bookkeeping.
#[derive(Default)]
struct SocketState {
    /// Global user index.
    user: u64,
    /// Bit `seq` set once seq was received.
    seen: Vec<u64>,
    dups: u64,
    out_of_order: u64,
    max_seq: Option<u64>,
    connected: bool,
    closed: bool,
}

impl SocketState {
    /// Marks `seq` seen; false when it already was.
    fn mark(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        let fresh = self.seen[word] & bit == 0;
        self.seen[word] |= bit;
        fresh
    }

    /// Distinct seqs received below `limit`.
    fn received_below(&self, limit: u64) -> u64 {
        let full = (limit / 64) as usize;
        let mut n: u64 = self
            .seen
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rem = limit % 64;
        if rem > 0 {
            if let Some(w) = self.seen.get(full) {
                n += u64::from((w & ((1u64 << rem) - 1)).count_ones());
            }
        }
        n
    }
}

#[derive(Default)]
struct Bin {
    delivered: u64,
    closes: u64,
    latency: Option<Hist>,
}

/// Everything the worker's tasks share (one thread: `Rc<RefCell<_>>`, never borrowed across
/// an await).
struct State {
    spec: WorkerSpec,
    sockets: Vec<SocketState>,
    connect: ConnectReport,
    handshake: Hist,
    tried: u64,
    open: u64,
    closed: u64,
    delivered: u64,
    unparsed: u64,
    latency: Hist,
    first_timed_us: u64,
    last_timed_us: u64,
    bins: Vec<Bin>,
    close_codes: BTreeMap<String, u64>,
    close_times: Hist,
}

impl State {
    fn bin(&mut self, at_us: u64) -> &mut Bin {
        let index = (at_us.saturating_sub(self.spec.epoch_us) / self.spec.bin_us.max(1)) as usize;
        if index >= self.bins.len() {
            self.bins.resize_with(index + 1, Bin::default);
        }
        &mut self.bins[index]
    }

    fn connect_started(&mut self, at: u64) {
        if self.connect.first_start_us == 0 || at < self.connect.first_start_us {
            self.connect.first_start_us = at;
        }
    }

    fn connect_finished(&mut self, idx: usize, started: u64, result: Result<(), String>) {
        let now = now_us();
        self.tried += 1;
        self.connect.last_done_us = self.connect.last_done_us.max(now);
        match result {
            Ok(()) => {
                self.connect.ok += 1;
                self.open += 1;
                self.sockets[idx].connected = true;
                self.handshake
                    .saturating_record(now.saturating_sub(started).max(1));
            }
            Err(reason) => {
                self.connect.failed += 1;
                *self.connect.failures.entry(reason).or_default() += 1;
            }
        }
    }

    fn on_message(&mut self, idx: usize, body: &[u8]) {
        let now = now_us();
        self.delivered += 1;
        let Some((seq, ts)) = crate::payload::parse(body) else {
            self.unparsed += 1;
            self.bin(now).delivered += 1;
            return;
        };
        let socket = &mut self.sockets[idx];
        if !socket.mark(seq) {
            socket.dups += 1;
        } else if socket.max_seq.is_some_and(|m| seq < m) {
            socket.out_of_order += 1;
        }
        socket.max_seq = Some(socket.max_seq.map_or(seq, |m| m.max(seq)));
        let timed = seq >= self.spec.latency_from_seq;
        let latency = now.saturating_sub(ts).max(1);
        if timed {
            self.latency.saturating_record(latency);
            if self.first_timed_us == 0 {
                self.first_timed_us = now;
            }
            self.last_timed_us = now;
        }
        let bin = self.bin(now);
        bin.delivered += 1;
        if timed {
            if bin.latency.is_none() {
                bin.latency = hist::coarse().ok();
            }
            if let Some(h) = bin.latency.as_mut() {
                h.saturating_record(latency);
            }
        }
    }

    fn on_close(&mut self, idx: usize, code: String) {
        let socket = &mut self.sockets[idx];
        if socket.closed {
            return;
        }
        socket.closed = true;
        let now = now_us();
        self.open = self.open.saturating_sub(1);
        self.closed += 1;
        *self.close_codes.entry(code).or_default() += 1;
        self.close_times
            .saturating_record(now.saturating_sub(self.spec.epoch_us).max(1));
        self.bin(now).closes += 1;
    }

    fn tick(&self) -> Tick {
        Tick {
            connected: self.connect.ok,
            failed: self.connect.failed,
            connect_done: self.tried >= self.connect.attempted,
            open: self.open,
            delivered: self.delivered,
            closed: self.closed,
        }
    }

    /// Expected messages of global user `user` when `published` went round robin over `users`.
    fn expected(user: u64, published: u64, users: u64) -> u64 {
        if users == 0 {
            return 0;
        }
        published / users + u64::from(user < published % users)
    }

    /// Whether every open socket has everything it should have.
    fn complete(&self, published: u64, users: u64) -> bool {
        self.sockets
            .iter()
            .filter(|s| s.connected && !s.closed)
            .all(|s| {
                let expected = Self::expected(s.user, published, users);
                s.received_below(expected) >= expected
            })
    }

    fn loss(&self, published: u64, users: u64) -> LossReport {
        let mut r = LossReport::default();
        for s in self.sockets.iter().filter(|s| s.connected) {
            let expected = Self::expected(s.user, published, users);
            let received = s.received_below(expected);
            let lost = expected.saturating_sub(received);
            r.sockets += 1;
            r.expected += expected;
            r.received += received;
            r.lost += lost;
            r.sockets_with_loss += u64::from(lost > 0);
            r.max_lost_per_socket = r.max_lost_per_socket.max(lost);
            r.duplicates += s.dups;
            r.sockets_with_duplicates += u64::from(s.dups > 0);
            r.out_of_order += s.out_of_order;
            r.closed_early += u64::from(s.closed);
        }
        r
    }

    fn report(&self, published: Option<(u64, u64)>) -> anyhow::Result<WorkerFinal> {
        let mut connect = self.connect.clone();
        connect.handshake_hist = hist::encode(&self.handshake)?;
        let mut bins = Vec::with_capacity(self.bins.len());
        for (i, b) in self.bins.iter().enumerate() {
            if b.delivered == 0 && b.closes == 0 {
                continue;
            }
            bins.push(BinReport {
                bin: i as u64,
                delivered: b.delivered,
                closes: b.closes,
                latency_hist: match &b.latency {
                    Some(h) => hist::encode(h)?,
                    None => String::new(),
                },
            });
        }
        Ok(WorkerFinal {
            id: self.spec.id,
            connect,
            delivered: self.delivered,
            unparsed: self.unparsed,
            latency_hist: hist::encode(&self.latency)?,
            first_timed_us: self.first_timed_us,
            last_timed_us: self.last_timed_us,
            loss: published.map(|(p, u)| self.loss(p, u)),
            close_codes: self.close_codes.clone(),
            close_hist: hist::encode(&self.close_times)?,
            bins,
            open_at_end: self.open,
        })
    }
}

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

async fn run(
    spec: WorkerSpec,
    mut lines: tokio::io::Lines<BufReader<tokio::io::Stdin>>,
) -> anyhow::Result<()> {
    let url = WsUrl::parse(&spec.url)?;
    let target = url.resolve().await?;
    let src_addrs: Vec<IpAddr> = spec
        .src_addrs
        .iter()
        .map(|a| a.parse().with_context(|| format!("source address {a:?}")))
        .collect::<anyhow::Result<_>>()?;
    let minter = Minter::new(&spec.secret, spec.token_ttl_s);
    let users = spec.user_end.saturating_sub(spec.user_start);
    let total = users * spec.sockets_per_user;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(spec.max_run_ms);
    let state = Rc::new(RefCell::new(State {
        sockets: (0..total)
            .map(|i| SocketState {
                user: spec.user_start + i / spec.sockets_per_user.max(1),
                ..SocketState::default()
            })
            .collect(),
        connect: ConnectReport {
            attempted: total,
            ..ConnectReport::default()
        },
        handshake: hist::precise()?,
        tried: 0,
        open: 0,
        closed: 0,
        delivered: 0,
        unparsed: 0,
        latency: hist::precise()?,
        first_timed_us: 0,
        last_timed_us: 0,
        bins: Vec::new(),
        close_codes: BTreeMap::new(),
        close_times: hist::precise()?,
        spec: spec.clone(),
    }));

    // Ticks to the parent.
    {
        let state = state.clone();
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

    // Sockets.
    let gate = Rc::new(Semaphore::new(spec.connect_concurrency.max(1)));
    let timeout = Duration::from_millis(spec.connect_timeout_ms);
    for user in spec.user_start..spec.user_end {
        let user_id = format!("{}-{user}", spec.user_prefix);
        let request = url.with_token(&minter.mint(&user_id)?);
        for k in 0..spec.sockets_per_user {
            let idx = ((user - spec.user_start) * spec.sockets_per_user + k) as usize;
            let global = spec.socket_offset + idx as u64;
            let src = (!src_addrs.is_empty())
                .then(|| src_addrs[(global % src_addrs.len() as u64) as usize]);
            tokio::task::spawn_local(socket_task(
                state.clone(),
                idx,
                gate.clone(),
                target,
                src,
                request.clone(),
                timeout,
            ));
        }
    }

    // Commands from the parent.
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
    let Command::Finish {
        published,
        users,
        wait_ms,
    } = serde_json::from_str(&line).with_context(|| format!("bad command {line:?}"))?;
    if let Some(published) = published {
        let until = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        while tokio::time::Instant::now() < until.min(deadline)
            && !state.borrow().complete(published, users)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let report = state.borrow().report(published.map(|p| (p, users)))?;
    emit_line(&Event::Final(Box::new(report)))?;
    Ok(())
}

type Ws = WebSocketStream<TcpStream>;

async fn open(target: SocketAddr, src: Option<IpAddr>, request: String) -> Result<Ws, String> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = src {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    // Closed with a reset when the run ends (the worker exits with its sockets open): a normal
    // close would leave every socket in TIME_WAIT on the client side for a minute, holding its
    // source port, and the next scenario's explicit binds would crawl through the few free ones.
    socket
        .set_zero_linger()
        .map_err(|e| format!("SO_LINGER: {e}"))?;
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    // Small buffers: thousands of sockets per process, small messages.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    format!("upgrade refused: HTTP {}", response.status())
                }
                other => format!("handshake: {other}"),
            })?;
    Ok(ws)
}

async fn socket_task(
    state: Rc<RefCell<State>>,
    idx: usize,
    gate: Rc<Semaphore>,
    target: SocketAddr,
    src: Option<IpAddr>,
    request: String,
    timeout: Duration,
) {
    let permit = gate.acquire().await;
    let started = now_us();
    state.borrow_mut().connect_started(started);
    let opened = match tokio::time::timeout(timeout, open(target, src, request)).await {
        Err(_) => Err(format!("timeout after {timeout:?}")),
        Ok(result) => result,
    };
    drop(permit);
    let mut ws = match opened {
        Ok(ws) => {
            state.borrow_mut().connect_finished(idx, started, Ok(()));
            ws
        }
        Err(mut reason) => {
            reason.truncate(REASON_MAX);
            state
                .borrow_mut()
                .connect_finished(idx, started, Err(reason));
            return;
        }
    };
    let mut code = None;
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(text)) => state.borrow_mut().on_message(idx, text.as_bytes()),
            Ok(Message::Binary(bytes)) => state.borrow_mut().on_message(idx, &bytes),
            Ok(Message::Close(frame)) => {
                let c = frame.map_or_else(|| "1005".to_owned(), |f| u16::from(f.code).to_string());
                // Record at the moment the close frame arrives; keep reading so that the
                // close handshake completes.
                state.borrow_mut().on_close(idx, c.clone());
                code = Some(c);
            }
            Ok(_) => {}
            Err(error) => {
                if code.is_none() {
                    let mut reason = format!("error: {error}");
                    reason.truncate(REASON_MAX);
                    code = Some(reason);
                }
                break;
            }
        }
    }
    state
        .borrow_mut()
        .on_close(idx, code.unwrap_or_else(|| "eof".to_owned()));
}
