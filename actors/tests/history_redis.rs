//! `RedisHistory` and its Redis Function library against a real `redis-server` started by the
//! test: dense offsets under concurrency, trimming, expiry, lost meta records, reads past the
//! top, the durable channel's messages, idempotency, the Kafka ingest's `ws_publish_once`
//! (dedupe and append in one step), reloading after `FUNCTION FLUSH`, and the Lua derivation of
//! a user's key names matching `UserKeys` in Rust.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use redis::aio::MultiplexedConnection;
use support::{wait_until, RedisServer};
use ws_actors::broker::keys::{slot, UserKeys};
use ws_actors::broker::{channel_name, BrokerError};
use ws_actors::history::{
    library_source, parse_durable, History, HistoryConfig, HistoryRead, Position, RedisHistory,
};
use ws_actors::UserId;

const PREFIX: &str = "ws:";
/// The longest wait for anything Redis does on its own (expiry, delivery).
const DEADLINE: Duration = Duration::from_secs(10);

fn config(size: usize, ttl: Duration) -> HistoryConfig {
    HistoryConfig { size, ttl }
}

async fn history(redis: &RedisServer, size: usize, ttl: Duration) -> RedisHistory {
    RedisHistory::new(redis.manager().await, PREFIX, &config(size, ttl))
}

fn user(id: &str) -> UserId {
    UserId::new(id)
}

fn keys(id: &str) -> UserKeys {
    UserKeys::of_user(PREFIX, &user(id))
}

async fn publish(history: &RedisHistory, id: &str, payload: &[u8]) -> Position {
    let positions = history
        .publish(vec![user(id)], Bytes::copy_from_slice(payload), None)
        .await
        .expect("publish");
    positions.into_iter().next().expect("one position")
}

async fn read(history: &RedisHistory, id: &str, after: u64, max: usize) -> HistoryRead {
    history.read(user(id), after, max).await.expect("read")
}

fn offsets(read: &HistoryRead) -> Vec<u64> {
    read.entries.iter().map(|entry| entry.offset).collect()
}

async fn exists(conn: &mut MultiplexedConnection, key: Vec<u8>) -> bool {
    let count: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(conn)
        .await
        .expect("EXISTS");
    count == 1
}

/// `calls` of `command` (lowercase) since the last `CONFIG RESETSTAT`, from INFO commandstats.
async fn calls(conn: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_get_dense_unique_offsets() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 2000, Duration::from_secs(60)).await;
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let history = history.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for m in 0..200 {
                    got.push(publish(&history, "alice", format!("{p}/{m}").as_bytes()).await);
                }
                got
            })
        })
        .collect();
    let mut positions = Vec::new();
    for publisher in publishers {
        positions.extend(publisher.await.expect("publisher task"));
    }
    let epoch = positions[0].epoch.clone();
    assert!(positions.iter().all(|position| position.epoch == epoch));
    let mut got: Vec<u64> = positions.iter().map(|position| position.offset).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=1600).collect::<Vec<u64>>());
    let all = read(&history, "alice", 0, 5000).await;
    assert_eq!((all.epoch.clone(), all.top), (epoch, 1600));
    assert_eq!(offsets(&all), (1..=1600).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_trimmed_history_keeps_the_last_size_entries() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 5, Duration::from_secs(60)).await;
    for m in 1..=12 {
        publish(&history, "alice", format!("m{m}").as_bytes()).await;
    }
    let kept = read(&history, "alice", 0, 100).await;
    assert_eq!(kept.top, 12);
    assert_eq!(
        offsets(&kept),
        [8, 9, 10, 11, 12],
        "a resume from 0 sees the gap"
    );
    assert_eq!(kept.entries[0].payload, Bytes::from_static(b"m8"));
    assert!(kept.entries[0].time_ms > 0);
    let limited = read(&history, "alice", 9, 2).await;
    assert_eq!(offsets(&limited), [10, 11]);
}

#[tokio::test]
async fn an_expired_history_comes_back_under_a_new_epoch() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(1)).await;
    let first = publish(&history, "alice", b"m").await;
    let mut conn = redis.conn().await;
    let meta = keys("alice").meta();
    wait_until(DEADLINE, "the meta record expires", || {
        let (mut conn, meta) = (conn.clone(), meta.clone());
        async move { !exists(&mut conn, meta).await }
    })
    .await;
    assert!(!exists(&mut conn, keys("alice").stream()).await);
    let after = read(&history, "alice", 0, 10).await;
    assert_ne!(after.epoch, first.epoch);
    assert_eq!((after.top, after.entries.len()), (0, 0));
    let next = publish(&history, "alice", b"m").await;
    assert_eq!((next.epoch, next.offset), (after.epoch, 1));
}

#[tokio::test]
async fn a_deleted_meta_record_starts_a_new_epoch() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    for _ in 0..3 {
        publish(&history, "alice", b"m").await;
    }
    let before = read(&history, "alice", 0, 10).await;
    let mut conn = redis.conn().await;
    let _: i64 = redis::cmd("DEL")
        .arg(keys("alice").meta())
        .query_async(&mut conn)
        .await
        .expect("DEL meta");
    let next = publish(&history, "alice", b"new").await;
    assert_ne!(next.epoch, before.epoch);
    assert_eq!(next.offset, 1);
    let after = read(&history, "alice", 0, 10).await;
    assert_eq!(
        offsets(&after),
        [1],
        "the old stream went with the old epoch"
    );
}

#[tokio::test]
async fn a_read_creates_the_epoch_the_next_publish_uses() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    let empty = read(&history, "alice", 0, 10).await;
    assert_eq!((empty.top, empty.entries.len()), (0, 0));
    let first = publish(&history, "alice", b"m").await;
    assert_eq!((first.epoch, first.offset), (empty.epoch, 1));
}

#[tokio::test]
async fn reading_past_the_top_returns_no_entries() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    for _ in 0..3 {
        publish(&history, "alice", b"m").await;
    }
    let past = read(&history, "alice", 13, 10).await;
    assert_eq!((past.top, past.entries.len()), (3, 0));
    assert!(past.top < 13);
    let far = read(&history, "alice", u64::MAX, usize::MAX).await;
    assert_eq!((far.top, far.entries.len()), (3, 0));
    let none = read(&history, "alice", 0, 0).await;
    assert_eq!((none.top, none.entries.len()), (3, 0));
}

#[tokio::test]
async fn the_durable_channel_carries_epoch_offset_and_payload() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    let mut pubsub = redis.client().get_async_pubsub().await.expect("pubsub");
    for id in ["alice", "a}b"] {
        pubsub
            .subscribe(keys(id).durable_channel())
            .await
            .expect("SUBSCRIBE");
    }
    let mut messages = pubsub.on_message();
    for id in ["alice", "a}b"] {
        let payload = b"{\"a\":\"b:c\"}\xff\x00";
        let position = publish(&history, id, payload).await;
        let message = tokio::time::timeout(DEADLINE, messages.next())
            .await
            .expect("a message within the deadline")
            .expect("pubsub open");
        let durable = keys(id).durable_channel();
        assert_eq!(message.get_channel_name().as_bytes(), durable.as_slice());
        let body = Bytes::copy_from_slice(message.get_payload_bytes());
        let mut want = format!("{}:{}:", position.epoch, position.offset).into_bytes();
        want.extend_from_slice(payload);
        assert_eq!(body.as_ref(), want.as_slice());
        let (parsed, data) = parse_durable(body).expect("parses");
        assert_eq!((parsed, data.as_ref()), (position, &payload[..]));
    }
}

#[tokio::test]
async fn an_idempotency_key_publishes_once_per_user() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    history.load_library().await.expect("load");
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .expect("CONFIG RESETSTAT");
    let once = |users: &[&str]| {
        let users = users.iter().map(|id| user(id)).collect();
        history.publish(users, Bytes::from_static(b"m"), Some("k1".to_owned()))
    };
    let first = once(&["alice"]).await.expect("publish");
    let again = once(&["alice"]).await.expect("publish again");
    assert_eq!(again, first);
    assert_eq!(
        (
            calls(&mut conn, "xadd").await,
            calls(&mut conn, "publish").await
        ),
        (1, 1)
    );
    let both = once(&["alice", "bob"]).await.expect("publish to both");
    assert_eq!(both[0], first[0], "alice was done already");
    assert_eq!(both[1].offset, 1, "bob is published now");
    assert_eq!(
        (
            calls(&mut conn, "xadd").await,
            calls(&mut conn, "publish").await
        ),
        (2, 2)
    );
    let other_key = history
        .publish(
            vec![user("alice")],
            Bytes::from_static(b"m"),
            Some("k2".into()),
        )
        .await
        .expect("publish under another key");
    assert_eq!(other_key[0].offset, 2);
    let record = keys("alice").idempotency("k1");
    let ttl: i64 = redis::cmd("TTL")
        .arg(record)
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!((1..=300).contains(&ttl), "kept for the window: {ttl}");
}

/// `history.publish_once` of `dedupe_id` to `id` with a 60 s window.
async fn publish_once(history: &RedisHistory, id: &str, dedupe_id: &str) -> (Position, bool) {
    let window = Duration::from_secs(60);
    history
        .publish_once(&user(id), b"m", dedupe_id, window)
        .await
        .expect("publish_once")
}

#[tokio::test]
async fn a_dedupe_id_publishes_once_and_answers_the_same_position() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    history.load_library().await.expect("load");
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .expect("CONFIG RESETSTAT");
    let (first, new) = publish_once(&history, "alice", "ev-1").await;
    assert!(new, "a new id is published");
    assert_eq!(first.offset, 1);
    assert_eq!(
        publish_once(&history, "alice", "ev-1").await,
        (first.clone(), false)
    );
    let stats = (
        calls(&mut conn, "xadd").await,
        calls(&mut conn, "publish").await,
    );
    assert_eq!(
        stats,
        (1, 1),
        "the duplicate appended and published nothing"
    );
    let (next, new) = publish_once(&history, "alice", "ev-2").await;
    assert_eq!((next.offset, new), (2, true));
    let (bob, new) = publish_once(&history, "bob", "ev-1").await;
    assert_eq!((bob.offset, new), (1, true), "the records are per user");
    assert_eq!(read(&history, "alice", 0, 10).await.top, 2);
    let ttl: i64 = redis::cmd("TTL")
        .arg(keys("alice").dedupe("ev-1"))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!((1..=60).contains(&ttl), "kept for the window: {ttl}");
    let idempotency = history
        .publish(
            vec![user("alice")],
            Bytes::from_static(b"m"),
            Some("ev-1".into()),
        )
        .await
        .expect("publish with an idempotency key equal to a dedupe id");
    assert_eq!(
        idempotency[0].offset, 3,
        "dedupe and idempotency records are apart"
    );

    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("FUNCTION FLUSH");
    assert_eq!(
        publish_once(&history, "alice", "ev-1").await,
        (first, false),
        "reloaded, and the record outlives the functions"
    );
}

#[tokio::test]
async fn publish_once_keeps_every_key_in_the_channel_slot() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    let mut conn = redis.conn().await;
    for id in TRICKY_IDS {
        publish_once(&history, id, "ev}{").await;
        let want = slot(&channel_name(PREFIX, &user(id)));
        let keys = keys(id);
        for key in [keys.stream(), keys.meta(), keys.dedupe("ev}{")] {
            let shown = String::from_utf8_lossy(&key).into_owned();
            assert_eq!(
                slot(&key),
                want,
                "{shown} of {id:?} is in the channel's slot"
            );
            assert!(exists(&mut conn, key).await, "{shown} of {id:?}");
        }
    }
    let all: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert_eq!(all.len(), 3 * TRICKY_IDS.len(), "no other key was written");
}

#[tokio::test]
async fn ws_publish_once_is_callable_directly_and_checks_its_arguments() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    history.load_library().await.expect("load");
    let mut conn = redis.conn().await;
    let fcall = |payload: &str, window: &str| {
        let mut call = redis::cmd("FCALL");
        call.arg("ws_publish_once")
            .arg(1)
            .arg("ws:alice")
            .arg(payload)
            .arg("ev-9")
            .arg(window);
        call
    };
    let (epoch, offset, new): (String, u64, i64) = fcall("{}", "30")
        .query_async(&mut conn)
        .await
        .expect("FCALL ws_publish_once");
    assert_eq!((offset, new), (1, 1));
    let again: (String, u64, i64) = fcall("{}", "30")
        .query_async(&mut conn)
        .await
        .expect("FCALL ws_publish_once again");
    assert_eq!(again, (epoch, 1, 0));
    for window in ["0", "-1", "1.5", "x"] {
        let refused = fcall("{}", window)
            .query_async::<redis::Value>(&mut conn)
            .await;
        assert!(refused.is_err(), "window {window:?}: {refused:?}");
    }
}

#[tokio::test]
async fn flushed_functions_are_reloaded_transparently() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    let first = publish(&history, "alice", b"m").await;
    let mut conn = redis.conn().await;
    let flush = || redis::cmd("FUNCTION").arg("FLUSH").clone();
    let _: () = flush()
        .query_async(&mut conn)
        .await
        .expect("FUNCTION FLUSH");
    let second = publish(&history, "alice", b"m").await;
    assert_eq!(
        (second.epoch.clone(), second.offset),
        (first.epoch.clone(), 2)
    );
    let _: () = flush()
        .query_async(&mut conn)
        .await
        .expect("FUNCTION FLUSH");
    let users = vec![user("alice"), user("bob")];
    let both = history
        .publish(users, Bytes::from_static(b"m"), None)
        .await
        .expect("multi-user publish after a flush");
    assert_eq!((both[0].offset, both[1].offset), (3, 1));
    let _: () = flush()
        .query_async(&mut conn)
        .await
        .expect("FUNCTION FLUSH");
    assert_eq!(read(&history, "alice", 0, 10).await.top, 3);
    let _: () = flush()
        .query_async(&mut conn)
        .await
        .expect("FUNCTION FLUSH");
    let (epoch, top) = history
        .renew_epoch(user("alice"), first.epoch.clone())
        .await
        .expect("renew after a flush");
    assert_ne!(epoch, first.epoch);
    assert_eq!(top, 3);
}

#[tokio::test]
async fn renewing_the_lost_epoch_keeps_offsets_increasing() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    for _ in 0..3 {
        publish(&history, "alice", b"m").await;
    }
    let lost = read(&history, "alice", 0, 10).await.epoch;
    let (epoch, top) = history
        .renew_epoch(user("alice"), lost.clone())
        .await
        .expect("renew");
    assert_ne!(epoch, lost);
    assert_eq!(top, 3);
    let renewed = read(&history, "alice", 0, 10).await;
    assert_eq!((renewed.epoch.clone(), renewed.top), (epoch.clone(), 3));
    assert!(
        renewed.entries.is_empty(),
        "the lost epoch's entries are gone"
    );
    let again = history
        .renew_epoch(user("alice"), lost.clone())
        .await
        .expect("renew again");
    assert_eq!(
        again,
        (epoch.clone(), 3),
        "an epoch other than the lost one stays"
    );
    let next = publish(&history, "alice", b"m").await;
    assert_eq!((next.epoch, next.offset), (epoch, 4));
    let (fresh, top) = history
        .renew_epoch(user("nobody"), lost.clone())
        .await
        .expect("renew a user without history");
    assert_ne!(fresh, lost);
    assert_eq!(top, 0);
}

/// User ids whose channel names exercise every branch of the tag rules.
const TRICKY_IDS: &[&str] = &[
    "alice", "a}b", "{x}y", "{}z", "}{", "{{x}y", "{x", "x}", "{", "}", "", "}}}", "{}{x}",
    "{x}{y}", "a{b}c}", "ü}ñ", "ws:{x}", "12345", "{0}", "a}b}c{",
];

#[tokio::test]
async fn lua_derives_the_same_names_as_rust() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    history.load_library().await.expect("load");
    let mut conn = redis.conn().await;
    for id in TRICKY_IDS {
        let channel = channel_name(PREFIX, &user(id));
        let names: Vec<Vec<u8>> = redis::cmd("FCALL_RO")
            .arg("ws_names")
            .arg(1)
            .arg(&channel)
            .arg("k}{")
            .query_async(&mut conn)
            .await
            .expect("ws_names");
        let keys = UserKeys::of_channel(&channel);
        let want = vec![
            keys.durable_channel(),
            keys.stream(),
            keys.meta(),
            keys.idempotency("k}{"),
        ];
        assert_eq!(names, want, "names of {id:?}");
    }
}

#[tokio::test]
async fn a_publish_writes_the_keys_rust_names() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    let mut conn = redis.conn().await;
    for id in TRICKY_IDS {
        let users = vec![user(id)];
        history
            .publish(users, Bytes::from_static(b"m"), Some("key".into()))
            .await
            .expect("publish");
        let keys = keys(id);
        for key in [keys.stream(), keys.meta(), keys.idempotency("key")] {
            let shown = String::from_utf8_lossy(&key).into_owned();
            assert!(exists(&mut conn, key).await, "{shown} of {id:?}");
        }
    }
    let all: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert_eq!(all.len(), 3 * TRICKY_IDS.len(), "no other key was written");
}

#[tokio::test]
async fn a_malformed_reply_is_an_error_not_a_panic() {
    let redis = RedisServer::start().await;
    let history = history(&redis, 10, Duration::from_secs(60)).await;
    history.load_library().await.expect("load");
    let impostor = "#!lua name=ws_history\n\
        redis.register_function('ws_publish', function() return {1, 2, 3} end)\n\
        redis.register_function('ws_read', function() return 'nope' end)\n\
        redis.register_function('ws_renew_epoch', function() return {'bad epoch!', 1} end)\n";
    let mut conn = redis.conn().await;
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(impostor)
        .query_async(&mut conn)
        .await
        .expect("load the impostor");
    let published = history
        .publish(vec![user("alice")], Bytes::from_static(b"m"), None)
        .await;
    assert!(
        matches!(published, Err(BrokerError::UnexpectedReply(_))),
        "{published:?}"
    );
    let read = history.read(user("alice"), 0, 10).await;
    assert!(
        matches!(read, Err(BrokerError::UnexpectedReply(_))),
        "{read:?}"
    );
    let renewed = history.renew_epoch(user("alice"), read_epoch()).await;
    assert!(
        matches!(renewed, Err(BrokerError::UnexpectedReply(_))),
        "{renewed:?}"
    );
}

fn read_epoch() -> ws_actors::history::Epoch {
    ws_actors::history::Epoch::parse("e1").expect("valid epoch")
}

#[tokio::test]
async fn the_library_source_loads_as_is_for_direct_fcall() {
    let redis = RedisServer::start().await;
    let mut conn = redis.conn().await;
    let source = library_source(&config(3, Duration::from_secs(60)), false);
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(source)
        .query_async(&mut conn)
        .await
        .expect("FUNCTION LOAD");
    assert_eq!(name, "ws_history");
    let mut epochs = Vec::new();
    for m in 1..=4u64 {
        let (epoch, offset): (String, u64) = redis::cmd("FCALL")
            .arg("ws_publish")
            .arg(1)
            .arg("ws:alice")
            .arg(format!("m{m}"))
            .query_async(&mut conn)
            .await
            .expect("FCALL ws_publish");
        assert_eq!(offset, m);
        epochs.push(epoch);
    }
    assert!(epochs.iter().all(|epoch| *epoch == epochs[0]));
    let reply: redis::Value = redis::cmd("FCALL")
        .arg("ws_read")
        .arg(1)
        .arg("ws:alice")
        .arg(0)
        .arg(10)
        .query_async(&mut conn)
        .await
        .expect("FCALL ws_read");
    let redis::Value::Array(items) = reply else {
        panic!("ws_read answers an array: {reply:?}");
    };
    assert_eq!(items.len(), 2 + 3 * 3, "epoch, top, then 3 kept entries");
    assert_eq!(items[1], redis::Value::Int(4));
    assert_eq!(items[2], redis::Value::Int(2));
}
