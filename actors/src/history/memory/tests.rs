//! Unit tests of the in-process history, on an injected clock: dense offsets, routing in
//! offset order, trimming, expiry, idempotency, epoch renewal and the bound on users.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;

use super::*;

/// One routed message: user, payload bytes, position.
type Routed = (String, Bytes, Option<Position>);

/// Records what the history routes.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Routed>>>);

impl RouteSink for Recorder {
    fn route_all(&self, routes: Vec<(RouteUser, Published)>) {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (user, published) in routes {
            let bytes = match published.payload {
                Payload::Text(text) => text.into_bytes(),
                Payload::Binary(bytes) => bytes,
            };
            seen.push((user.as_str().to_owned(), bytes, published.position));
        }
    }

    fn channels_live(&self, _: Vec<UserId>, _: bool) {}
}

impl Recorder {
    fn taken(&self) -> Vec<Routed> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

const TTL: Duration = Duration::from_secs(60);

fn history(size: usize) -> (MemoryHistory, Recorder) {
    let recorder = Recorder::default();
    let config = HistoryConfig { size, ttl: TTL };
    (
        MemoryHistory::new(config, Box::new(recorder.clone())),
        recorder,
    )
}

fn user(id: &str) -> UserId {
    UserId::new(id)
}

fn offsets(read: &HistoryRead) -> Vec<u64> {
    read.entries.iter().map(|entry| entry.offset).collect()
}

fn publish(
    history: &MemoryHistory,
    users: &[&str],
    payload: &'static str,
    now: Instant,
) -> Vec<u64> {
    let users = users.iter().map(|id| user(id)).collect();
    let payload = Bytes::from_static(payload.as_bytes());
    let positions = history.publish_at(users, payload, None, now);
    positions
        .into_iter()
        .map(|position| position.offset)
        .collect()
}

#[test]
fn offsets_are_dense_per_user_and_routed_in_order() {
    let (history, recorder) = history(10);
    let now = Instant::now();
    assert_eq!(publish(&history, &["a", "b"], "one", now), [1, 1]);
    assert_eq!(publish(&history, &["a"], "two", now), [2]);
    assert_eq!(publish(&history, &["a", "b"], "three", now), [3, 2]);
    let routed: Vec<(String, u64)> = recorder
        .taken()
        .into_iter()
        .filter_map(|(user, _, position)| Some((user, position?.offset)))
        .collect();
    let want = [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)];
    let want: Vec<(String, u64)> = want.iter().map(|(u, o)| ((*u).to_owned(), *o)).collect();
    assert_eq!(routed, want);
    let read = history.read_at(&user("a"), 1, 10, now);
    assert_eq!((read.top, offsets(&read)), (3, vec![2, 3]));
    assert_eq!(read.entries[0].payload, Bytes::from_static(b"two"));
}

#[test]
fn the_epoch_read_first_is_the_one_publishing_uses() {
    let (history, _) = history(10);
    let now = Instant::now();
    let read = history.read_at(&user("a"), 0, 10, now);
    assert_eq!((read.top, read.entries.len()), (0, 0));
    let users = vec![user("a")];
    let positions = history.publish_at(users, Bytes::from_static(b"x"), None, now);
    assert_eq!(positions[0].epoch, read.epoch);
    assert_eq!(positions[0].offset, 1);
}

#[test]
fn only_the_last_size_entries_are_kept() {
    let (history, _) = history(3);
    let now = Instant::now();
    for _ in 0..5 {
        publish(&history, &["a"], "m", now);
    }
    let read = history.read_at(&user("a"), 0, 100, now);
    assert_eq!((read.top, offsets(&read)), (5, vec![3, 4, 5]));
    let limited = history.read_at(&user("a"), 0, 2, now);
    assert_eq!(offsets(&limited), [3, 4]);
    let beyond = history.read_at(&user("a"), 15, 100, now);
    assert_eq!((beyond.top, beyond.entries.len()), (5, 0));
}

#[test]
fn a_quiet_history_expires_under_a_new_epoch() {
    let (history, _) = history(10);
    let start = Instant::now();
    publish(&history, &["a"], "m", start);
    let before = history.read_at(&user("a"), 0, 10, start + TTL / 2);
    assert_eq!(before.top, 1);
    publish(&history, &["a"], "m", start + TTL / 2);
    let still = history.read_at(&user("a"), 0, 10, start + TTL);
    assert_eq!((still.epoch.clone(), still.top), (before.epoch.clone(), 2));
    let after = history.read_at(&user("a"), 0, 10, start + TTL / 2 + TTL);
    assert_ne!(after.epoch, before.epoch);
    assert_eq!((after.top, after.entries.len()), (0, 0));
}

#[test]
fn expired_users_are_swept_by_other_calls() {
    let (history, _) = history(10);
    let start = Instant::now();
    publish(&history, &["a", "b"], "m", start);
    publish(&history, &["c"], "m", start + TTL);
    let store = history.lock();
    assert_eq!(store.users.len(), 1);
    assert_eq!(store.by_age.len(), 1);
}

#[test]
fn an_idempotency_key_publishes_once_per_user() {
    let (history, recorder) = history(10);
    let now = Instant::now();
    let once = |users: &[&str], at: Instant| {
        let users = users.iter().map(|id| user(id)).collect();
        history.publish_at(users, Bytes::from_static(b"m"), Some("k1"), at)
    };
    let first = once(&["a"], now);
    assert_eq!(recorder.taken().len(), 1);
    let again = once(&["a", "b"], now + Duration::from_secs(1));
    assert_eq!(again[0], first[0]);
    assert_eq!(again[1].offset, 1);
    let routed = recorder.taken();
    assert_eq!(routed.len(), 1, "only b is published: {routed:?}");
    assert_eq!(routed[0].0, "b");
    let later = once(&["a"], now + IDEMPOTENCY_WINDOW + Duration::from_secs(1));
    assert_ne!(later[0], first[0], "the key is forgotten after the window");
    assert_eq!(recorder.taken().len(), 1, "and the message published again");
}

#[test]
fn renewing_the_lost_epoch_keeps_the_top_and_drops_the_entries() {
    let (history, _) = history(10);
    let now = Instant::now();
    publish(&history, &["a"], "m", now);
    publish(&history, &["a"], "m", now);
    let lost = history.read_at(&user("a"), 0, 10, now).epoch;
    let (epoch, top) = history.renew_at(&user("a"), &lost, now);
    assert_ne!(epoch, lost);
    assert_eq!(top, 2);
    let read = history.read_at(&user("a"), 0, 10, now);
    assert_eq!(
        (read.epoch.clone(), read.top, read.entries.len()),
        (epoch.clone(), 2, 0)
    );
    let unchanged = history.renew_at(&user("a"), &lost, now);
    assert_eq!(
        unchanged,
        (epoch.clone(), 2),
        "another epoch than the lost one stays"
    );
    assert_eq!(publish(&history, &["a"], "m", now), [3]);
    let (fresh, top) = history.renew_at(&user("nobody"), &lost, now);
    assert_ne!(fresh, lost);
    assert_eq!(top, 0);
}

#[test]
fn the_least_recently_appended_user_is_evicted_past_the_bound() {
    let recorder = Recorder::default();
    let config = HistoryConfig { size: 10, ttl: TTL };
    let history = MemoryHistory::with_limits(config, Box::new(recorder), 2, 10);
    let now = Instant::now();
    publish(&history, &["a"], "m", now);
    publish(&history, &["b"], "m", now);
    publish(&history, &["a"], "m", now);
    publish(&history, &["c"], "m", now);
    assert_eq!(history.read_at(&user("a"), 0, 10, now).top, 2);
    assert_eq!(history.lock().users.len(), 2);
    assert!(
        !history.lock().users.contains_key("b"),
        "b was the least recently appended"
    );
}

#[test]
fn idempotency_records_are_bounded() {
    let recorder = Recorder::default();
    let config = HistoryConfig { size: 10, ttl: TTL };
    let history = MemoryHistory::with_limits(config, Box::new(recorder), 10, 2);
    let now = Instant::now();
    for key in ["k1", "k2", "k3"] {
        let users = vec![user("a")];
        history.publish_at(users, Bytes::from_static(b"m"), Some(key), now);
    }
    let store = history.lock();
    assert_eq!(store.records.positions.len(), 2);
    assert!(store.records.get(&user("a"), "k1", now).is_none());
    assert!(store.records.get(&user("a"), "k3", now).is_some());
}

#[test]
fn the_trait_answers_at_once() {
    let (history, recorder) = history(10);
    let history: &dyn History = &history;
    let positions = history
        .publish(vec![user("a")], Bytes::from_static(b"{\"n\":1}"), None)
        .now_or_never()
        .expect("ready")
        .expect("published");
    let read = history
        .read(user("a"), 0, 10)
        .now_or_never()
        .expect("ready")
        .expect("read");
    assert_eq!(read.epoch, positions[0].epoch);
    assert_eq!(offsets(&read), [1]);
    let routed = recorder.taken();
    assert_eq!(routed[0].1, Bytes::from_static(b"{\"n\":1}"));
    assert_eq!(routed[0].2.as_ref(), Some(&positions[0]));
}
