//! What the parent and its worker processes say to each other, one JSON object per line: the
//! parent writes a [`WorkerSpec`] and later [`Command`]s to a worker's stdin; the worker writes
//! [`Event`]s to its stdout (ticks ten times a second, then one final report).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything a worker needs to open and watch its slice of sockets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Worker number (0-based).
    pub id: usize,
    /// `ws://host:port/path` of the server.
    pub url: String,
    /// HMAC secret to mint tokens with (sent over the pipe, never on a command line).
    pub secret: String,
    /// Token lifetime, seconds.
    pub token_ttl_s: u64,
    /// User ids are `{user_prefix}-{index}`.
    pub user_prefix: String,
    /// First user index of this slice.
    pub user_start: u64,
    /// One past the last user index of this slice.
    pub user_end: u64,
    /// Sockets opened per user.
    pub sockets_per_user: u64,
    /// Global index of this worker's first socket (spreads source addresses evenly).
    pub socket_offset: u64,
    /// Connects in flight at once in this worker.
    pub connect_concurrency: usize,
    /// Deadline of one connect + handshake, ms.
    pub connect_timeout_ms: u64,
    /// Source addresses to bind client sockets to, round robin (empty: let the OS choose).
    pub src_addrs: Vec<String>,
    /// Time zero of the run (µs since the Unix epoch); series bins count from here.
    pub epoch_us: u64,
    /// Width of a series bin, µs.
    pub bin_us: u64,
    /// Messages with a lower `seq` (the verification round) are counted but not timed.
    pub latency_from_seq: u64,
    /// The worker gives up (reports and exits) after this long, ms.
    pub max_run_ms: u64,
    /// Sockets opt in to client protocol v2 (`v=2`): JSON frames with positions, checked per
    /// socket, and a reconnect resumes with `since`.
    #[serde(default)]
    pub v2: bool,
}

/// Parent → worker, after the spec.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Every open socket drops its connection (a reset, as a client losing its network would)
    /// and stays away until [`Command::Reconnect`].
    Disconnect,
    /// Every socket that was dropped connects again; a v2 socket resumes with
    /// `since=<epoch>:<offset>`, the position of the last message it received.
    Reconnect,
    /// Publishing is over: `published` messages went round robin over `users` users (message
    /// `i` to user `i % users` with seq `i / users`), or `None` when nothing was published.
    /// Wait up to `wait_ms` for the expected messages, then report and exit.
    Finish {
        /// Messages published in total, if any.
        published: Option<u64>,
        /// Users of the whole run.
        users: u64,
        /// Longest wait for stragglers, ms.
        wait_ms: u64,
    },
}

/// Worker → parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Counters so far.
    Tick(Tick),
    /// The last line of a worker.
    Final(Box<WorkerFinal>),
    /// The worker cannot go on.
    Fatal {
        /// Why.
        error: String,
    },
}

/// Running counters of one worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tick {
    /// Handshakes completed.
    pub connected: u64,
    /// Connects that failed.
    pub failed: u64,
    /// Every socket has been tried.
    pub connect_done: bool,
    /// Sockets open now.
    pub open: u64,
    /// Messages received (duplicates included).
    pub delivered: u64,
    /// Sockets closed so far.
    pub closed: u64,
    /// Sockets dropped by a [`Command::Disconnect`] and not reconnected yet.
    #[serde(default)]
    pub away: u64,
    /// Reconnects finished (ok or failed) since the last [`Command::Reconnect`].
    #[serde(default)]
    pub reconnects_done: u64,
}

/// Connect phase of one worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    /// Sockets tried.
    pub attempted: u64,
    /// Handshakes that completed with 101.
    pub ok: u64,
    /// Failures.
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// First connect started, µs since the Unix epoch.
    pub first_start_us: u64,
    /// Last connect finished, µs since the Unix epoch.
    pub last_done_us: u64,
    /// TCP connect + HTTP upgrade time, µs (base64 V2 histogram).
    pub handshake_hist: String,
}

/// Loss and duplicates, judged per socket against what was published to its user.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LossReport {
    /// Sockets judged (every socket that connected).
    pub sockets: u64,
    /// Messages expected in total.
    pub expected: u64,
    /// Distinct expected messages received.
    pub received: u64,
    /// Expected messages never received.
    pub lost: u64,
    /// Sockets that missed at least one.
    pub sockets_with_loss: u64,
    /// Most messages missed by one socket.
    pub max_lost_per_socket: u64,
    /// Messages received more than once (extra copies).
    pub duplicates: u64,
    /// Sockets that saw a duplicate.
    pub sockets_with_duplicates: u64,
    /// Messages that arrived after a higher seq on the same socket.
    pub out_of_order: u64,
    /// Sockets closed before the end (their missing messages are counted as lost).
    pub closed_early: u64,
}

/// One interval of the time series.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BinReport {
    /// Bin index from the run's epoch.
    pub bin: u64,
    /// Messages received in the bin.
    pub delivered: u64,
    /// Sockets closed in the bin.
    pub closes: u64,
    /// Latency of the bin's timed messages, µs (base64 V2 histogram; empty when none).
    pub latency_hist: String,
}

/// Everything a worker measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerFinal {
    /// Worker number.
    pub id: usize,
    /// Connect phase.
    pub connect: ConnectReport,
    /// Messages received (duplicates included).
    pub delivered: u64,
    /// Messages received whose body was not a loadgen payload.
    pub unparsed: u64,
    /// Publish → receive latency of timed messages, µs (base64 V2 histogram).
    pub latency_hist: String,
    /// First timed message received, µs since the Unix epoch (0: none).
    pub first_timed_us: u64,
    /// Last timed message received, µs since the Unix epoch (0: none).
    pub last_timed_us: u64,
    /// Loss accounting, when the parent said what was published.
    pub loss: Option<LossReport>,
    /// Close codes seen ("1012", "eof", "error: …") and how often.
    pub close_codes: BTreeMap<String, u64>,
    /// Close times, µs since the run's epoch (base64 V2 histogram).
    pub close_hist: String,
    /// Time series.
    pub bins: Vec<BinReport>,
    /// Sockets still open when the worker reported.
    pub open_at_end: u64,
    /// When each socket received its last new message, µs since the run's epoch (base64 V2
    /// histogram; sockets that received nothing are left out).
    #[serde(default)]
    pub last_message_hist: String,
    /// Receive time of the last message of any kind, µs since the Unix epoch (0: none).
    #[serde(default)]
    pub last_message_us: u64,
    /// The reconnects of [`Command::Reconnect`] (None: there was none).
    #[serde(default)]
    pub reconnect: Option<ConnectReport>,
    /// Protocol v2 frames and positions, when the sockets spoke v2.
    #[serde(default)]
    pub v2: Option<V2Report>,
}

/// What the v2 sockets of a worker saw: frames by type, resume outcomes, and the per-socket
/// check of positions (each durable message's offset must be the previous one + 1 within an
/// epoch: a jump is a gap, a repeat or a step back a duplicate).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct V2Report {
    /// `welcome` frames (one per connect and reconnect).
    pub welcomes: u64,
    /// Welcomes answering a `since` with `"recovered":true`.
    pub recovered: u64,
    /// Welcomes answering a `since` with `"recovered":false`.
    pub not_recovered: u64,
    /// `reset` frames.
    pub resets: u64,
    /// Message frames with a position (durable).
    pub positioned: u64,
    /// Message frames without one (plain PUBLISH).
    pub plain: u64,
    /// Offsets skipped: a durable message more than one past the previous position.
    pub offset_gaps: u64,
    /// Sockets that saw a gap.
    pub sockets_with_gaps: u64,
    /// Durable messages at or before the previous position (a duplicate or reordering).
    pub offset_repeats: u64,
    /// Sockets that saw a repeat.
    pub sockets_with_repeats: u64,
    /// Durable messages of another epoch than the socket's (without a reset first).
    pub epoch_changes: u64,
    /// Frames that were not v2 JSON.
    pub malformed: u64,
}

impl V2Report {
    /// Adds `other` to this report.
    pub fn add(&mut self, other: &V2Report) {
        self.welcomes += other.welcomes;
        self.recovered += other.recovered;
        self.not_recovered += other.not_recovered;
        self.resets += other.resets;
        self.positioned += other.positioned;
        self.plain += other.plain;
        self.offset_gaps += other.offset_gaps;
        self.sockets_with_gaps += other.sockets_with_gaps;
        self.offset_repeats += other.offset_repeats;
        self.sockets_with_repeats += other.sockets_with_repeats;
        self.epoch_changes += other.epoch_changes;
        self.malformed += other.malformed;
    }
}
