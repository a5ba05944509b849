//! What a worker knows about its sockets: per-socket sequence tracking (loss, duplicates,
//! order), connect outcomes, delivery latency, closes, and the per-interval bins; turned into
//! the ticks and the final report sent to the parent.

use std::collections::BTreeMap;

use crate::hist::{self, Hist};
use crate::protocol::{BinReport, ConnectReport, LossReport, Tick, WorkerFinal, WorkerSpec};
use crate::util::now_us;

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

/// One series bin of this worker.
#[derive(Default)]
struct Bin {
    delivered: u64,
    closes: u64,
    latency: Option<Hist>,
}

/// Everything the worker's tasks share (one thread: `Rc<RefCell<_>>`, never borrowed across
/// an await).
pub(super) struct State {
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
    /// Nothing connected yet: one entry per socket of `spec`'s slice.
    pub(super) fn new(spec: WorkerSpec) -> anyhow::Result<Self> {
        let users = spec.user_end.saturating_sub(spec.user_start);
        let total = users * spec.sockets_per_user;
        Ok(Self {
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
            spec,
        })
    }

    /// The series bin of `at_us`, created if needed.
    fn bin(&mut self, at_us: u64) -> &mut Bin {
        let index = (at_us.saturating_sub(self.spec.epoch_us) / self.spec.bin_us.max(1)) as usize;
        if index >= self.bins.len() {
            self.bins.resize_with(index + 1, Bin::default);
        }
        &mut self.bins[index]
    }

    pub(super) fn connect_started(&mut self, at: u64) {
        if self.connect.first_start_us == 0 || at < self.connect.first_start_us {
            self.connect.first_start_us = at;
        }
    }

    pub(super) fn connect_finished(
        &mut self,
        idx: usize,
        started: u64,
        result: Result<(), String>,
    ) {
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

    pub(super) fn on_message(&mut self, idx: usize, body: &[u8]) {
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

    pub(super) fn on_close(&mut self, idx: usize, code: String) {
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

    pub(super) fn tick(&self) -> Tick {
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
    pub(super) fn complete(&self, published: u64, users: u64) -> bool {
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

    pub(super) fn report(&self, published: Option<(u64, u64)>) -> anyhow::Result<WorkerFinal> {
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
