//! What a worker knows about its sockets: per-socket sequence tracking (loss, duplicates,
//! order), for v2 sockets their position (each durable offset must follow the previous one),
//! connect and reconnect outcomes, delivery latency, closes, and the per-interval bins; turned
//! into the ticks and the final report sent to the parent.

use std::collections::BTreeMap;

use crate::hist::{self, Hist};
use crate::protocol::{
    BinReport, ConnectReport, LossReport, Tick, V2Report, WorkerFinal, WorkerSpec,
};
use crate::util::now_us;
use crate::v2frame::{self, Frame, Position};

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
    /// Dropped by a disconnect command, not reconnected yet.
    away: bool,
    /// When the last new (not duplicate) message arrived, µs since the Unix epoch.
    last_fresh_us: u64,
    /// v2: the position of the last durable message, or the one a welcome or reset gave.
    position: Option<(String, u64)>,
    /// v2: offsets skipped.
    gaps: u64,
    /// v2: durable messages at or before the position.
    repeats: u64,
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
    /// Receive time of the last frame of any kind, µs since the Unix epoch.
    last_message_us: u64,
    /// Sockets dropped by a disconnect command and not reconnected yet.
    away: u64,
    /// The reconnect round, once the parent asked for one.
    reconnect: Option<ConnectReport>,
    reconnect_handshake: Hist,
    reconnects_done: u64,
    /// v2 frames and position checks.
    v2: V2Report,
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
            last_message_us: 0,
            away: 0,
            reconnect: None,
            reconnect_handshake: hist::precise()?,
            reconnects_done: 0,
            v2: V2Report::default(),
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

    /// A text or binary frame of socket `idx`: a v2 frame is checked and unwrapped first.
    pub(super) fn on_frame(&mut self, idx: usize, body: &[u8]) {
        self.last_message_us = now_us();
        if !self.spec.v2 {
            return self.on_message(idx, body);
        }
        match v2frame::parse(body) {
            Some(Frame::Message { position, data }) => {
                match position {
                    Some(position) => self.check_position(idx, &position),
                    None => self.v2.plain += 1,
                }
                self.on_message(idx, &data);
            }
            Some(Frame::Welcome {
                position,
                recovered,
            }) => self.on_welcome(idx, position, recovered),
            Some(Frame::Reset { position }) => {
                self.v2.resets += 1;
                self.sockets[idx].position = Some((position.epoch.into_owned(), position.offset));
            }
            None => {
                self.v2.malformed += 1;
                self.on_message(idx, body);
            }
        }
    }

    /// A welcome: the position messages continue from, unless it answers a recovered
    /// `since` (then the replay follows from the socket's own position).
    fn on_welcome(&mut self, idx: usize, position: Option<Position<'_>>, recovered: Option<bool>) {
        self.v2.welcomes += 1;
        match recovered {
            Some(true) => self.v2.recovered += 1,
            Some(false) => self.v2.not_recovered += 1,
            None => {}
        }
        let socket = &mut self.sockets[idx];
        if recovered != Some(true) || socket.position.is_none() {
            socket.position = position.map(|p| (p.epoch.into_owned(), p.offset));
        }
    }

    /// A durable message must be the one after the socket's position, in the same epoch.
    fn check_position(&mut self, idx: usize, position: &Position<'_>) {
        self.v2.positioned += 1;
        let socket = &mut self.sockets[idx];
        match &mut socket.position {
            Some((epoch, offset)) if *epoch == position.epoch => {
                if position.offset <= *offset {
                    socket.repeats += 1;
                    return;
                }
                socket.gaps += position.offset - *offset - 1;
                *offset = position.offset;
            }
            other => {
                if other.is_some() {
                    self.v2.epoch_changes += 1;
                }
                *other = Some((position.epoch.to_string(), position.offset));
            }
        }
    }

    /// `<epoch>:<offset>` of socket `idx`'s position, for a resume.
    pub(super) fn since(&self, idx: usize) -> Option<String> {
        self.sockets[idx]
            .position
            .as_ref()
            .map(|(epoch, offset)| format!("{epoch}:{offset}"))
    }

    /// A message (the payload, unwrapped from its v2 frame if need be).
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
        } else {
            socket.last_fresh_us = now;
            if socket.max_seq.is_some_and(|m| seq < m) {
                socket.out_of_order += 1;
            }
        }
        socket.max_seq = Some(socket.max_seq.map_or(seq, |m| m.max(seq)));
        // ts 0: published untimed (a resume's backlog, sent while the socket was away).
        let timed = seq >= self.spec.latency_from_seq && ts > 0;
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

    /// Socket `idx` dropped its connection on the parent's command.
    pub(super) fn on_away(&mut self, idx: usize) {
        self.sockets[idx].away = true;
        self.open = self.open.saturating_sub(1);
        self.away += 1;
    }

    /// The parent asked every away socket to reconnect: a new reconnect round.
    pub(super) fn start_reconnects(&mut self) {
        self.reconnect = Some(ConnectReport {
            attempted: self.away,
            ..ConnectReport::default()
        });
        self.reconnects_done = 0;
    }

    pub(super) fn reconnect_started(&mut self, at: u64) {
        if let Some(r) = self.reconnect.as_mut() {
            if r.first_start_us == 0 || at < r.first_start_us {
                r.first_start_us = at;
            }
        }
    }

    /// Socket `idx` reconnected (or could not: it is then closed for good).
    pub(super) fn reconnect_finished(
        &mut self,
        idx: usize,
        started: u64,
        result: Result<(), String>,
    ) {
        let now = now_us();
        self.reconnects_done += 1;
        self.away = self.away.saturating_sub(1);
        self.sockets[idx].away = false;
        let Some(r) = self.reconnect.as_mut() else {
            return;
        };
        r.last_done_us = r.last_done_us.max(now);
        match result {
            Ok(()) => {
                r.ok += 1;
                self.open += 1;
                self.reconnect_handshake
                    .saturating_record(now.saturating_sub(started).max(1));
            }
            Err(reason) => {
                r.failed += 1;
                *r.failures.entry(reason).or_default() += 1;
                self.open += 1; // on_close takes it off again
                self.on_close(idx, "reconnect failed".to_owned());
            }
        }
    }

    pub(super) fn tick(&self) -> Tick {
        Tick {
            connected: self.connect.ok,
            failed: self.connect.failed,
            connect_done: self.tried >= self.connect.attempted,
            open: self.open,
            delivered: self.delivered,
            closed: self.closed,
            away: self.away,
            reconnects_done: self.reconnects_done,
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
            .filter(|s| s.connected && !s.closed && !s.away)
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

    /// The v2 report with the per-socket position checks added up.
    fn v2_report(&self) -> V2Report {
        let mut r = self.v2.clone();
        for s in &self.sockets {
            r.offset_gaps += s.gaps;
            r.sockets_with_gaps += u64::from(s.gaps > 0);
            r.offset_repeats += s.repeats;
            r.sockets_with_repeats += u64::from(s.repeats > 0);
        }
        r
    }

    /// When each socket received its last new message, µs since the run's epoch.
    fn last_messages(&self) -> anyhow::Result<Hist> {
        let mut h = hist::precise()?;
        for s in self.sockets.iter().filter(|s| s.last_fresh_us > 0) {
            h.saturating_record(s.last_fresh_us.saturating_sub(self.spec.epoch_us).max(1));
        }
        Ok(h)
    }

    pub(super) fn report(&self, published: Option<(u64, u64)>) -> anyhow::Result<WorkerFinal> {
        let mut connect = self.connect.clone();
        connect.handshake_hist = hist::encode(&self.handshake)?;
        let reconnect = match &self.reconnect {
            Some(r) => Some(ConnectReport {
                handshake_hist: hist::encode(&self.reconnect_handshake)?,
                ..r.clone()
            }),
            None => None,
        };
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
            last_message_hist: hist::encode(&self.last_messages()?)?,
            last_message_us: self.last_message_us,
            reconnect,
            v2: self.spec.v2.then(|| self.v2_report()),
        })
    }
}
