//! The merge at the heart of a resume: given where a socket stands (the `since` of a reconnect,
//! or its last offset when it catches up after a broker outage), a consistent snapshot of the
//! user's history, and the live messages buffered while that snapshot was read, decide what
//! the socket is sent — with no window, no duplicate and no false `recovered:true`.
//!
//! The live buffer starts *after* the subscription was acknowledged and before the history was
//! read, so every message published after the snapshot is in it; messages in both are dropped
//! from the buffer by offset. Pure functions only: the session actor does the I/O.

use crate::history::{HistoryEntry, HistoryRead, Position};
use crate::payload::Published;

/// One frame a v2 socket is sent, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A message read from the history.
    History(HistoryEntry),
    /// A message received live (durable or plain), as buffered.
    Live(Published),
    /// The user's history changed epoch while the socket was live: refetch, then messages
    /// continue after this position.
    Reset(Position),
}

/// What a resume or catch-up sends, and where the socket then stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The user's position at the snapshot: the welcome's (or a reset's) epoch and offset.
    pub snapshot: Position,
    /// Whether every message after the socket's position is among `items` (in order, before
    /// any newer one). `false` means the history could not fill the gap: the client refetches.
    pub recovered: bool,
    /// The frames to send, in order.
    pub items: Vec<Item>,
    /// The socket's position after `items`.
    pub last: Position,
    /// Live messages from the first gap on (a live offset skipped), to be merged again after a
    /// fresh read; empty when the buffer was contiguous.
    pub pending: Vec<Published>,
}

/// Whether `entries` hold exactly offsets `after+1 ..= top`, in order.
fn fills(entries: &[HistoryEntry], after: u64, top: u64) -> bool {
    let wanted = entries
        .iter()
        .filter(|entry| entry.offset > after && entry.offset <= top);
    let mut expected = after + 1;
    for entry in wanted {
        if entry.offset != expected {
            return false;
        }
        expected += 1;
    }
    expected == top + 1
}

/// How a read compares with where the socket stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything after the position is in the history: replayed.
    Recovered,
    /// A fresh socket without a position: it starts at the top.
    Fresh,
    /// The position is of another epoch (the history was lost or renewed).
    Epoch,
    /// The position is beyond the top (the history lost entries the socket had).
    Ahead,
    /// More than `max_replay` messages are missing.
    TooFar,
    /// The messages after the position were trimmed or expired.
    Trimmed,
}

impl Outcome {
    /// The metric label: `recovered`, `fresh`, `epoch`, `ahead`, `too_far`, `trimmed`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Recovered => "recovered",
            Outcome::Fresh => "fresh",
            Outcome::Epoch => "epoch",
            Outcome::Ahead => "ahead",
            Outcome::TooFar => "too_far",
            Outcome::Trimmed => "trimmed",
        }
    }
}

/// Compares a read with the socket's position `from`.
pub fn outcome(from: Option<&Position>, read: &HistoryRead, max_replay: usize) -> Outcome {
    let Some(from) = from else {
        return Outcome::Fresh;
    };
    if from.epoch != read.epoch {
        Outcome::Epoch
    } else if from.offset > read.top {
        Outcome::Ahead
    } else if read.top - from.offset > max_replay as u64 {
        Outcome::TooFar
    } else if !fills(&read.entries, from.offset, read.top) {
        Outcome::Trimmed
    } else {
        Outcome::Recovered
    }
}

/// Merges a snapshot `read` with the live messages buffered since the subscription was
/// acknowledged, for a socket standing at `from` (`None`: a fresh v2 socket, which starts at
/// the snapshot's top). At most `max_replay` history messages are replayed; more is
/// `recovered: false`.
pub fn merge(
    from: Option<&Position>,
    read: HistoryRead,
    live: Vec<Published>,
    max_replay: usize,
) -> Merged {
    let snapshot = Position {
        epoch: read.epoch.clone(),
        offset: read.top,
    };
    let recovered = outcome(from, &read, max_replay) == Outcome::Recovered;
    let mut items: Vec<Item> = Vec::new();
    if let (true, Some(from)) = (recovered, from) {
        items.extend(
            read.entries
                .into_iter()
                .filter(|entry| entry.offset > from.offset && entry.offset <= read.top)
                .map(Item::History),
        );
    }
    let (last, pending) = append_live(&mut items, snapshot.clone(), live);
    Merged {
        snapshot,
        recovered,
        items,
        last,
        pending,
    }
}

/// Appends the live messages after position `at`: plain ones as they come, durable ones once
/// each and contiguously. An epoch change becomes a reset first. Stops at the first gap and
/// returns the rest as pending.
fn append_live(
    items: &mut Vec<Item>,
    mut at: Position,
    live: Vec<Published>,
) -> (Position, Vec<Published>) {
    let mut live = live.into_iter();
    while let Some(message) = live.next() {
        match next_step(&at, &message) {
            Step::Send => {}
            Step::Skip => continue,
            Step::Gap => {
                let mut pending = vec![message];
                pending.extend(live);
                return (at, pending);
            }
            Step::NewEpoch(reset) => {
                items.push(Item::Reset(reset.clone()));
                at = reset;
            }
        }
        if let Some(position) = &message.position {
            at = position.clone();
        }
        items.push(Item::Live(message));
    }
    (at, Vec::new())
}

/// What a live socket standing at `at` does with `message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send it (plain, or the next offset).
    Send,
    /// Already sent (offset at or below `at` in the same epoch): drop it.
    Skip,
    /// Offsets were skipped: read the history before sending it.
    Gap,
    /// Another epoch: send this reset first, then the message.
    NewEpoch(Position),
}

/// Decides what a socket at `at` does with a live `message`.
pub fn next_step(at: &Position, message: &Published) -> Step {
    let Some(position) = &message.position else {
        return Step::Send;
    };
    if position.epoch != at.epoch {
        return Step::NewEpoch(Position {
            epoch: position.epoch.clone(),
            offset: position.offset.saturating_sub(1),
        });
    }
    match position.offset {
        n if n <= at.offset => Step::Skip,
        n if n == at.offset + 1 => Step::Send,
        _ => Step::Gap,
    }
}

#[cfg(test)]
mod tests;
