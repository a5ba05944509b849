//! The merge's contract, by example and by property: random interleavings of history and live
//! messages, with duplicates, gaps and reordering, give a contiguous run or a non-recovery,
//! never a duplicate, never a false `recovered`.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::history::Epoch;
use crate::payload::Payload;

fn epoch(name: &str) -> Epoch {
    Epoch::parse(name).expect("valid epoch")
}

fn at(e: &str, offset: u64) -> Position {
    Position {
        epoch: epoch(e),
        offset,
    }
}

fn entry(offset: u64) -> HistoryEntry {
    HistoryEntry {
        offset,
        payload: Bytes::from(format!("m{offset}")),
        time_ms: 0,
    }
}

fn durable(e: &str, offset: u64) -> Published {
    Published::durable(
        Payload::from_bytes(Bytes::from(format!("m{offset}"))),
        at(e, offset),
    )
}

fn plain() -> Published {
    Payload::from_bytes(Bytes::from_static(b"plain")).into()
}

fn read(e: &str, top: u64, kept: std::ops::RangeInclusive<u64>) -> HistoryRead {
    HistoryRead {
        epoch: epoch(e),
        top,
        entries: kept.map(entry).collect(),
    }
}

/// The durable offsets sent, in order (history and live alike).
fn offsets(items: &[Item]) -> Vec<u64> {
    items
        .iter()
        .filter_map(|item| match item {
            Item::History(entry) => Some(entry.offset),
            Item::Live(message) => message.position.as_ref().map(|p| p.offset),
            Item::Reset(_) => None,
        })
        .collect()
}

#[test]
fn a_resume_replays_the_gap_then_the_live_messages_once() {
    let live = vec![durable("e", 5), durable("e", 6), plain(), durable("e", 7)];
    let merged = merge(Some(&at("e", 3)), read("e", 6, 1..=6), live, 100);
    assert!(merged.recovered);
    assert_eq!(merged.snapshot, at("e", 6));
    assert_eq!(offsets(&merged.items), vec![4, 5, 6, 7]);
    assert_eq!(merged.items.len(), 5, "the plain message is kept");
    assert_eq!(merged.last, at("e", 7));
    assert!(merged.pending.is_empty());
}

#[test]
fn trimmed_expired_foreign_or_future_positions_are_not_recovered() {
    let trimmed = merge(Some(&at("e", 2)), read("e", 9, 5..=9), vec![], 100);
    let foreign = merge(Some(&at("old", 2)), read("e", 9, 1..=9), vec![], 100);
    let future = merge(Some(&at("e", 12)), read("e", 9, 1..=9), vec![], 100);
    let too_far = merge(Some(&at("e", 2)), read("e", 9, 1..=9), vec![], 3);
    for merged in [trimmed, foreign, future, too_far] {
        assert!(!merged.recovered);
        assert!(merged.items.is_empty());
        assert_eq!(merged.last, at("e", 9));
    }
}

#[test]
fn a_live_gap_stops_the_merge_and_an_epoch_change_is_announced() {
    let gap = merge(
        None,
        read("e", 2, 1..=2),
        vec![durable("e", 3), durable("e", 5)],
        10,
    );
    assert_eq!(offsets(&gap.items), vec![3]);
    assert_eq!(gap.pending, vec![durable("e", 5)]);
    let renewed = merge(None, read("e", 2, 1..=2), vec![durable("f", 1)], 10);
    assert_eq!(renewed.items[0], Item::Reset(at("f", 0)));
    assert_eq!(renewed.last, at("f", 1));
}

/// One generated case: a history of `top` messages of which the last `kept` are kept, a socket
/// at `since`, and the live buffer: offsets from `live_from` up to `top + extra`, shuffled a
/// little, some duplicated, some dropped, with plain messages among them.
#[derive(Debug, Clone)]
struct Case {
    top: u64,
    kept: u64,
    since: Option<(bool, u64)>,
    live: Vec<Option<u64>>,
    max_replay: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (0u64..30, 0u64..35, 0u64..12, 1usize..40).prop_flat_map(|(top, kept, extra, max_replay)| {
        let since = proptest::option::of((any::<bool>(), 0u64..top + 5));
        let live_from = top.saturating_sub(5) + 1;
        let offsets: Vec<u64> = (live_from..=top + extra).collect();
        let ops = proptest::collection::vec(0u8..10, offsets.len());
        (Just((top, kept, max_replay, offsets)), since, ops).prop_map(
            |((top, kept, max_replay, offsets), since, ops)| {
                let mut live: Vec<Option<u64>> = Vec::new();
                for (offset, op) in offsets.into_iter().zip(ops) {
                    match op {
                        0 => {}                                         // lost: a gap
                        1 => live.extend([Some(offset), Some(offset)]), // duplicated
                        2 => live.extend([None, Some(offset)]),         // a plain one first
                        3 if !live.is_empty() => {
                            // reordered
                            let last = live.len() - 1;
                            live.insert(last, Some(offset));
                        }
                        _ => live.push(Some(offset)),
                    }
                }
                Case {
                    top,
                    kept: kept.min(top),
                    since,
                    live,
                    max_replay,
                }
            },
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_a_duplicate_never_a_false_recovery(case in case()) {
        let history = read("e", case.top, case.top - case.kept + 1..=case.top);
        let since = case.since.map(|(same, offset)| at(if same { "e" } else { "x" }, offset));
        let live: Vec<Published> = case
            .live
            .iter()
            .map(|o| o.map_or_else(plain, |offset| durable("e", offset)))
            .collect();
        let merged = merge(since.as_ref(), history, live.clone(), case.max_replay);
        let sent = offsets(&merged.items);
        // Strictly increasing: no duplicate, no reordering on the socket.
        prop_assert!(sent.windows(2).all(|w| w[0] < w[1]), "{sent:?}");
        // Contiguous from where the client stands: since+1 when recovered, else the top+1.
        let start = match (&since, merged.recovered) {
            (Some(since), true) => since.offset,
            _ => case.top,
        };
        let expected: Vec<u64> = (start + 1..=merged.last.offset).collect();
        prop_assert_eq!(&sent, &expected);
        // Recovered only when the history really held everything after since.
        if merged.recovered {
            let since = since.as_ref().map(|s| s.offset).unwrap_or_default();
            prop_assert!(since >= case.top - case.kept);
            prop_assert!(case.top - since <= case.max_replay as u64);
        }
        // Nothing live above the snapshot is lost: either sent, or pending after a gap.
        if merged.pending.is_empty() {
            for offset in case.live.iter().flatten().filter(|&&o| o > case.top) {
                prop_assert!(sent.contains(offset), "live {offset} lost: {sent:?}");
            }
        } else {
            let first = merged.pending[0].position.as_ref().map(|p| p.offset);
            prop_assert!(first.is_some_and(|o| o > merged.last.offset + 1));
        }
    }
}
