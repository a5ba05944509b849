//! A v2 session's place in its user's history: how it gets from "just connected" (or "the
//! broker link was down") to live without a window, a duplicate or a false `recovered`.
//!
//! The order is always: the user's channel subscription acknowledged (the hub says so), then
//! the history read, live messages buffered from the acknowledgement on, then the merge
//! (`crate::resume::merge`), then live. A live session that sees an offset skipped, or is told
//! the broker link came back, reads again from its last offset the same way (a catch-up), and
//! when the history cannot fill the gap it sends a `reset` instead. This file holds the state
//! and the decisions; the session actor (`super`) does the I/O it asks for.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::OpCode;
use bytestring::ByteString;
use rand::Rng;
use tokio::sync::Semaphore;

use super::{Deliver, Phase, Session, SessionParams};
use crate::backoff::full_jitter;
use crate::broker::BrokerError;
use crate::close::CloseCode;
use crate::history::{Epoch, History, HistoryRead, Position};
use crate::payload::{Payload, Published};
use crate::resume::{self, next_step, Item, Merged, Outcome, Step};
use crate::v2::{self, Protocol};
use crate::wire::OutFrame;

/// What a v2 session needs of the history, shared by every session of the node.
#[derive(Clone)]
pub struct HistoryAccess {
    /// The store (Redis or in process).
    pub store: Arc<dyn History>,
    /// Most history messages replayed on one resume (`history.max_replay`).
    pub max_replay: usize,
    /// Bounds the history reads in flight on this node, so that a catch-up of every socket
    /// after a broker outage is a steady stream of reads, not a stampede.
    pub reads: Arc<Semaphore>,
    /// Catch-ups after a broker outage are spread uniformly over this window.
    pub catch_up_spread: Duration,
    /// Test aid: a delay between the acknowledgement and the read, and between the read and
    /// the merge, to widen the race windows the merge must close.
    pub debug_delays: (Duration, Duration),
}

impl HistoryAccess {
    /// The access for `store` with the defaults for everything but `max_replay`.
    pub fn new(store: Arc<dyn History>, max_replay: usize) -> Self {
        Self {
            store,
            max_replay,
            reads: Arc::new(Semaphore::new(READS_IN_FLIGHT)),
            catch_up_spread: Duration::from_secs(2),
            debug_delays: (Duration::ZERO, Duration::ZERO),
        }
    }
}

/// History reads in flight per node.
pub const READS_IN_FLIGHT: usize = 64;

/// Where a v2 session stands.
#[derive(Debug)]
pub(super) enum SyncState {
    /// Waiting for the user's channel subscription to be acknowledged; buffering.
    Subscribing {
        since: Option<Position>,
        buffer: Vec<Published>,
    },
    /// A history read is in flight (or about to be); buffering.
    Reading(Reading),
    /// Delivering live, after `at`.
    Live { at: Position },
    /// History is off: plain v2 frames, no positions.
    Unpositioned,
}

/// A read in flight and what arrived meanwhile.
#[derive(Debug)]
pub(super) struct Reading {
    /// The position the read is from (`None`: a fresh socket without `since`).
    pub(super) from: Option<Position>,
    /// Live messages since the acknowledgement (or since the gap).
    pub(super) buffer: Vec<Published>,
    /// Whether this is the first sync (it ends with the welcome frame) or a catch-up.
    pub(super) first: bool,
    /// The resume asked for a position (the welcome then says whether it was recovered).
    pub(super) resumed: bool,
    /// The buffer overflowed after the read started: its answer is discarded and the history
    /// read again (the history holds what the buffer dropped).
    pub(super) stale: bool,
    /// Reads made for this sync, for the retry backoff.
    pub(super) attempt: u32,
    /// `websocket.resume` (first sync) or `websocket.catch_up`, from the read to the merge.
    pub(super) span: tracing::Span,
}

/// The target of the spans exported over OTLP (the server's `telemetry::SPAN_TARGET`).
const SPAN_TARGET: &str = "websocket";

fn resume_span() -> tracing::Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "websocket.resume",
        outcome = tracing::field::Empty,
        replayed = tracing::field::Empty,
        attempts = tracing::field::Empty,
    )
}

fn catch_up_span() -> tracing::Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "websocket.catch_up",
        outcome = tracing::field::Empty,
        replayed = tracing::field::Empty,
        attempts = tracing::field::Empty,
    )
}

impl Reading {
    pub(super) fn first(since: Option<Position>, buffer: Vec<Published>) -> Self {
        Self {
            resumed: since.is_some(),
            from: since,
            buffer,
            first: true,
            stale: false,
            attempt: 0,
            span: resume_span(),
        }
    }

    pub(super) fn catch_up(from: Position, buffer: Vec<Published>) -> Self {
        Self {
            from: Some(from),
            buffer,
            first: false,
            resumed: true,
            stale: false,
            attempt: 0,
            span: catch_up_span(),
        }
    }

    /// Buffers a live message; when the buffer is full it is emptied and the read marked
    /// stale: whatever it held was published before the next read and is in the history.
    pub(super) fn buffer(&mut self, message: Published, bound: usize) {
        if self.buffer.len() >= bound {
            self.buffer.clear();
            self.stale = true;
        }
        self.buffer.push(message);
    }
}

impl Session {
    /// The sync state a session starts in, for its protocol.
    pub(super) fn initial_sync(params: &SessionParams) -> Option<SyncState> {
        let Protocol::V2 { since } = &params.protocol else {
            return None;
        };
        Some(match params.history {
            Some(_) => SyncState::Subscribing {
                since: since.clone(),
                buffer: Vec::new(),
            },
            None => SyncState::Unpositioned,
        })
    }

    /// Largest number of live messages buffered while a sync reads the history.
    fn sync_buffer_max(&self) -> usize {
        self.params.config.send_queue_max.max(64)
    }

    /// A message from the hub, for a v2 session: buffered while syncing, else sent once and in
    /// order (a skipped offset starts a catch-up, another epoch a reset).
    pub(super) fn deliver_v2(&mut self, ctx: &mut Context<Self>, deliver: Deliver) {
        let bound = self.sync_buffer_max();
        let Deliver { message, v2_frame } = deliver;
        match self.sync.as_deref_mut() {
            Some(SyncState::Subscribing { buffer, .. }) => {
                if buffer.len() >= bound {
                    buffer.clear(); // durable ones are in the history the read will see
                }
                buffer.push(message);
            }
            Some(SyncState::Reading(reading)) => reading.buffer(message, bound),
            Some(SyncState::Live { at }) => match next_step(at, &message) {
                Step::Send => self.send_live(ctx, message, v2_frame),
                Step::Skip => self.count_dropped("duplicate", 1),
                Step::Gap => {
                    let from = at.clone();
                    self.params
                        .metrics
                        .catch_ups
                        .with_label_values(&["gap"])
                        .inc();
                    self.sync = Some(Box::new(SyncState::Reading(Reading::catch_up(
                        from,
                        vec![message],
                    ))));
                    self.start_read(ctx);
                }
                Step::NewEpoch(reset) => {
                    self.send_reset(ctx, &reset, "epoch");
                    self.send_live(ctx, message, v2_frame);
                }
            },
            Some(SyncState::Unpositioned) | None => self.send_live(ctx, message, v2_frame),
        }
    }

    /// Sends a live message's v2 frame and moves the session's position to it.
    fn send_live(
        &mut self,
        ctx: &mut Context<Self>,
        message: Published,
        frame: Option<ByteString>,
    ) {
        if let (Some(SyncState::Live { at }), Some(position)) =
            (self.sync.as_deref_mut(), &message.position)
        {
            *at = position.clone();
        }
        let frame =
            frame.unwrap_or_else(|| v2::message_of(message.position.as_ref(), &message.payload));
        self.enqueue(ctx, OutFrame::message(Payload::Text(frame)));
    }

    fn send_reset(&mut self, ctx: &mut Context<Self>, position: &Position, reason: &str) {
        self.params
            .metrics
            .resets
            .with_label_values(&[reason])
            .inc();
        self.send_control_text(ctx, v2::reset(position));
        if let Some(SyncState::Live { at }) = self.sync.as_deref_mut() {
            *at = position.clone();
        }
    }

    /// A v2 frame that is not a message (welcome, reset): sent, never counted as a message.
    fn send_control_text(&mut self, ctx: &mut Context<Self>, text: ByteString) {
        self.enqueue(ctx, OutFrame::frame(OpCode::Text, text.into_bytes()));
    }

    /// The welcome of a v2 session without history: no position to give.
    pub(super) fn welcome_unpositioned(&mut self, ctx: &mut Context<Self>) {
        let recovered = matches!(&self.params.protocol, Protocol::V2 { since: Some(_) });
        self.send_control_text(ctx, v2::welcome_unpositioned(recovered.then_some(false)));
    }

    /// The hub says the user's channels are subscribed: the first sync reads the history. A
    /// session already past it (a repeated acknowledgement) keeps its state.
    pub(super) fn on_subscribed(&mut self, ctx: &mut Context<Self>) {
        match self.sync.take().map(|state| *state) {
            Some(SyncState::Subscribing { since, buffer }) => {
                self.sync = Some(Box::new(SyncState::Reading(Reading::first(since, buffer))));
                self.start_read(ctx);
            }
            other => self.sync = other.map(Box::new),
        }
    }

    /// The broker link came back: a live session catches up after a random delay within the
    /// spread, so that every socket of the node does not read at once.
    pub(super) fn on_catch_up(&mut self, ctx: &mut Context<Self>) {
        let Some(access) = &self.params.history else {
            return;
        };
        let spread = access.catch_up_spread.as_millis() as u64;
        let delay = Duration::from_millis(rand::rng().random_range(0..=spread));
        ctx.run_later(delay, |session, ctx| session.catch_up(ctx));
    }

    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        match self.sync.as_deref_mut() {
            Some(SyncState::Live { at }) => {
                let from = at.clone();
                self.params
                    .metrics
                    .catch_ups
                    .with_label_values(&["reconnect"])
                    .inc();
                self.sync = Some(Box::new(SyncState::Reading(Reading::catch_up(
                    from,
                    Vec::new(),
                ))));
                self.start_read(ctx);
            }
            // A read begun before the link came back may have missed messages: read again.
            Some(SyncState::Reading(reading)) => reading.stale = true,
            _ => {}
        }
    }

    /// Reads the history for the sync in progress (bounded by the node's read permits, after
    /// the test delays), then merges.
    fn start_read(&mut self, ctx: &mut Context<Self>) {
        let (Some(access), Some(SyncState::Reading(reading))) =
            (self.params.history.clone(), self.sync.as_deref())
        else {
            return;
        };
        let (after, max) = match &reading.from {
            Some(from) => (from.offset, access.max_replay),
            None => (0, 0),
        };
        let user = self.params.user.clone();
        let (before, after_read) = access.debug_delays;
        let read = async move {
            if !before.is_zero() {
                tokio::time::sleep(before).await;
            }
            let result = match access.reads.acquire().await {
                Ok(_permit) => access.store.read(user, after, max).await,
                Err(_) => Err(BrokerError::Closed),
            };
            if !after_read.is_zero() {
                tokio::time::sleep(after_read).await;
            }
            result
        };
        ctx.spawn(
            read.into_actor(self)
                .map(|result, session, ctx| session.on_read(ctx, result)),
        );
    }

    fn on_read(&mut self, ctx: &mut Context<Self>, result: Result<HistoryRead, BrokerError>) {
        if self.phase != Phase::Open {
            return;
        }
        let Some(SyncState::Reading(mut reading)) = self.sync.take().map(|state| *state) else {
            return;
        };
        let read = match result {
            Ok(read) if !reading.stale => read,
            Ok(_) => {
                reading.stale = false;
                self.sync = Some(Box::new(SyncState::Reading(reading)));
                self.start_read(ctx);
                return;
            }
            Err(error) => return self.retry_read(ctx, reading, &error),
        };
        if let Some(from) = reading
            .from
            .as_ref()
            .filter(|from| lost_entries(from, &read))
        {
            let lost = from.epoch.clone();
            self.sync = Some(Box::new(SyncState::Reading(reading)));
            return self.renew_epoch(ctx, lost);
        }
        self.apply_read(ctx, reading, read);
    }

    /// A failed read is retried with backoff; the first sync of a socket gives up after a
    /// while (the client gets 1011 and reconnects), a live socket's catch-up never does.
    fn retry_read(&mut self, ctx: &mut Context<Self>, mut reading: Reading, error: &BrokerError) {
        reading.attempt += 1;
        tracing::debug!(conn = self.params.conn.get(), %error, "history read failed");
        if reading.first && reading.attempt > FIRST_SYNC_ATTEMPTS {
            let message = "history unavailable";
            return self.close(ctx, CloseCode::ExternalService, message);
        }
        let delay = full_jitter(RETRY_BASE, RETRY_CAP, reading.attempt);
        self.sync = Some(Box::new(SyncState::Reading(reading)));
        ctx.run_later(delay, |session, ctx| session.start_read(ctx));
    }

    /// The history's top is below an offset this socket was given: entries were lost (a
    /// failover to a replica that lacked them). A new epoch is started, then read again.
    fn renew_epoch(&mut self, ctx: &mut Context<Self>, lost: Epoch) {
        let Some(access) = self.params.history.clone() else {
            return;
        };
        let user = self.params.user.clone();
        let renew = async move { access.store.renew_epoch(user, lost).await };
        ctx.spawn(renew.into_actor(self).map(|result, session, ctx| {
            if let Err(error) = result {
                tracing::warn!(%error, "could not renew a history epoch");
            }
            session.start_read(ctx);
        }));
    }

    /// Merges the read with the buffer and sends the outcome: the welcome (first sync) or a
    /// reset (a catch-up that could not be filled), then the messages; then live, or another
    /// read when the buffer had a gap.
    fn apply_read(&mut self, ctx: &mut Context<Self>, reading: Reading, read: HistoryRead) {
        let Some(access) = self.params.history.clone() else {
            return;
        };
        let outcome = resume::outcome(reading.from.as_ref(), &read, access.max_replay);
        let Reading {
            from,
            buffer,
            first,
            resumed,
            attempt,
            span,
            ..
        } = reading;
        let buffered = buffer.len();
        let merged = resume::merge(from.as_ref(), read, buffer, access.max_replay);
        let replayed = self.record_sync(first && resumed, outcome, &merged);
        span.record("outcome", outcome.label());
        span.record("replayed", replayed);
        span.record("attempts", attempt + 1);
        if first {
            let recovered = resumed.then_some(merged.recovered);
            self.send_control_text(ctx, v2::welcome(&merged.snapshot, recovered));
        } else if !merged.recovered {
            self.send_reset(ctx, &merged.snapshot, outcome.label());
        }
        let live_sent = self.send_items(ctx, merged.items, &merged.snapshot.epoch);
        self.count_dropped("duplicate", buffered - live_sent - merged.pending.len());
        self.sync = Some(Box::new(if merged.pending.is_empty() {
            SyncState::Live { at: merged.last }
        } else {
            SyncState::Reading(Reading::catch_up(merged.last, merged.pending))
        }));
        self.start_read(ctx);
    }

    /// Counts the resume and the messages it replays; answers how many.
    fn record_sync(&self, resume: bool, outcome: Outcome, merged: &Merged) -> u64 {
        let metrics = &self.params.metrics;
        if resume {
            metrics.resumes.with_label_values(&[outcome.label()]).inc();
        }
        let replayed = merged
            .items
            .iter()
            .filter(|item| matches!(item, Item::History(_)))
            .count();
        metrics.messages_replayed.inc_by(replayed as u64);
        replayed as u64
    }

    /// Sends merged items; answers how many of them were live (buffered) messages.
    fn send_items(&mut self, ctx: &mut Context<Self>, items: Vec<Item>, epoch: &Epoch) -> usize {
        let mut live = 0;
        for item in items {
            match item {
                Item::History(entry) => {
                    let position = Position {
                        epoch: epoch.clone(),
                        offset: entry.offset,
                    };
                    let frame = v2::message(Some(&position), &entry.payload);
                    self.enqueue(ctx, OutFrame::message(Payload::Text(frame)));
                }
                Item::Live(message) => {
                    live += 1;
                    let frame = v2::message_of(message.position.as_ref(), &message.payload);
                    self.enqueue(ctx, OutFrame::message(Payload::Text(frame)));
                }
                Item::Reset(position) => {
                    self.params
                        .metrics
                        .resets
                        .with_label_values(&["epoch"])
                        .inc();
                    self.send_control_text(ctx, v2::reset(&position));
                }
            }
        }
        live
    }

    fn count_dropped(&self, reason: &str, messages: usize) {
        if messages > 0 {
            self.params
                .metrics
                .messages_dropped
                .with_label_values(&[reason])
                .inc_by(messages as u64);
        }
    }
}

/// Whether `read` shows entries lost below `from`: same epoch, but a top under an offset the
/// socket already had.
fn lost_entries(from: &Position, read: &HistoryRead) -> bool {
    from.epoch == read.epoch && from.offset > read.top
}

/// Reads tried for a socket's first sync before it is closed 1011.
const FIRST_SYNC_ATTEMPTS: u32 = 8;
/// First retry delay of a failed history read.
const RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest retry delay of a failed history read.
const RETRY_CAP: Duration = Duration::from_secs(3);
