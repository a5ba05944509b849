//! Unit tests of the pipeline's rules, without a broker: a scripted [`IngestIo`] answers the
//! lookups, the broker's health, the publishes and the dead letters, records every effect in
//! order, and returns from `sleep` at once (recording the delay and the ingest's health then).
//! Delivery, pauses and retries here; what is rejected and dead-lettered in `dead_letters`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::*;
use crate::ingest::route::RouteConfig;
use crate::ingest::{DedupeConfig, LookupConfig, OwnerSource};

mod dead_letters;

const CAP: Duration = Duration::from_secs(2);
const RESUME_DELAY: Duration = Duration::from_millis(750);
const TOPIC: &str = "events";

/// An effect of the pipeline on the world, in order.
#[derive(Clone, Debug, PartialEq)]
enum Effect {
    Lookup(LookupKey),
    Publish(UserId),
    DeadLetter {
        reason: &'static str,
        error: String,
    },
    StoreOffset(i64),
    Sleep {
        delay: Duration,
        health: BrokerHealth,
    },
}

/// Scripted answers (each queue is popped per call; empty: the happy answer) and the log.
#[derive(Default)]
struct Script {
    owners: VecDeque<Result<Option<UserId>, LookupError>>,
    broker: VecDeque<BrokerHealth>,
    publishes: VecDeque<Result<bool, PublishError>>,
    dead_letters: VecDeque<Result<(), std::io::Error>>,
}

struct FakeIo {
    script: Mutex<Script>,
    dead_letter_topic: Option<String>,
    effects: Mutex<Vec<Effect>>,
    health: watch::Receiver<BrokerHealth>,
}

impl FakeIo {
    fn log(&self, effect: Effect) {
        self.effects.lock().unwrap().push(effect);
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }
}

impl IngestIo for FakeIo {
    type SendError = std::io::Error;

    async fn owner(&self, key: &LookupKey) -> Result<Option<UserId>, LookupError> {
        self.log(Effect::Lookup(key.clone()));
        let scripted = self.script().owners.pop_front();
        scripted.unwrap_or_else(|| Ok(Some(UserId::new("owner-1"))))
    }

    fn broker_health(&self) -> BrokerHealth {
        self.script().broker.pop_front().unwrap_or(BrokerHealth::Up)
    }

    async fn publish_once(&self, _: Uuid, user: &UserId, _: &Bytes) -> Result<bool, PublishError> {
        self.log(Effect::Publish(user.clone()));
        self.script().publishes.pop_front().unwrap_or(Ok(true))
    }

    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    async fn dead_letter(
        &self,
        _: &Record<'_>,
        rejection: &Rejection,
    ) -> Result<(), std::io::Error> {
        self.log(Effect::DeadLetter {
            reason: rejection.label(),
            error: rejection.to_string(),
        });
        self.script().dead_letters.pop_front().unwrap_or(Ok(()))
    }

    fn store_offset(&self, record: &Record<'_>) {
        self.log(Effect::StoreOffset(record.offset));
    }

    async fn sleep(&self, delay: Duration) {
        let health = self.health.borrow().clone();
        self.log(Effect::Sleep { delay, health });
    }
}

/// A pipeline over `routes` with `script`, Kafka connected, and its metrics.
fn pipeline(
    routes: &[RouteConfig],
    script: Script,
    give_up: Option<Duration>,
) -> (Pipeline<FakeIo>, IngestMetrics) {
    let metrics = IngestMetrics::unregistered();
    let (status, health) = Status::new(metrics.clone());
    status.kafka(None);
    let io = FakeIo {
        script: Mutex::new(script),
        dead_letter_topic: Some("dead-letters".into()),
        effects: Mutex::default(),
        health,
    };
    let config = config(routes, give_up);
    let routes = Routes::new(routes).unwrap();
    let pipeline = Pipeline::new(io, routes, &config, metrics.clone(), status, None);
    (pipeline, metrics)
}

fn config(routes: &[RouteConfig], give_up_after: Option<Duration>) -> IngestConfig {
    IngestConfig {
        brokers: vec!["localhost:9092".into()],
        group_id: "group".into(),
        client_id: "client".into(),
        dead_letter_topic: Some("dead-letters".into()),
        auto_offset_reset: "earliest".into(),
        commit_interval: Duration::from_secs(1),
        session_timeout: Duration::from_secs(10),
        properties: vec![],
        routes: routes.to_vec(),
        dedupe: DedupeConfig {
            window: Duration::from_secs(60),
            redis: None,
            key_prefix: "seen:".into(),
            channel_prefix: "user:".into(),
            cache_size: 10,
        },
        lookup: LookupConfig {
            redis_url: None,
            cache_ttl: Duration::from_secs(60),
            cache_size: 10,
            timeout: Duration::from_secs(1),
            give_up_after,
        },
        backoff_max: CAP,
        resume_delay: RESUME_DELAY,
    }
}

fn route(event_type: &str, owner: OwnerSource) -> RouteConfig {
    RouteConfig {
        topic: TOPIC.into(),
        event_type: Some(event_type.into()),
        event: "slot.assigned".into(),
        fields: vec![],
        owner,
    }
}

/// Routes `by_pointer` (user at `/metadata/user_id`) and `by_lookup` (Redis key `owner:{b}`).
fn routes() -> Vec<RouteConfig> {
    vec![
        route(
            "by_pointer",
            OwnerSource::Pointer("/metadata/user_id".into()),
        ),
        route("by_lookup", OwnerSource::RedisKey("owner:{b}".into())),
    ]
}

fn envelope(event_type: &str, metadata: Value) -> Vec<u8> {
    json!({
        "event_id": "0b6f6a1c-3d7e-4a53-9a63-2f1c1d5e8a01",
        "event_type": event_type,
        "event_timestamp": "2026-03-01T10:00:00Z",
        "source_service": "s",
        "correlation_id": "c-1",
        "data": {"b": "b1"},
        "metadata": metadata,
    })
    .to_string()
    .into_bytes()
}

fn record(value: &[u8]) -> Record<'_> {
    Record {
        topic: TOPIC,
        partition: 0,
        offset: 42,
        key: None,
        value: Some(value),
        headers: vec![],
    }
}

fn effects(pipeline: &Pipeline<FakeIo>) -> Vec<Effect> {
    pipeline.io().effects.lock().unwrap().clone()
}

fn down(reason: &str) -> BrokerHealth {
    BrokerHealth::Down {
        reason: reason.into(),
    }
}

fn redis_down() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "connection refused"))
}

/// The backoff sleeps, in order (not the resume delay).
fn backoff_sleeps(effects: &[Effect]) -> Vec<(Duration, BrokerHealth)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Sleep { delay, health } if *delay != RESUME_DELAY => {
                Some((*delay, health.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Each backoff delay is jittered under `min(cap, 100 ms · 2^attempt)`, and the ingest was
/// down, paused by `dependency`, while it waited.
fn assert_paused_with_backoff(sleeps: &[(Duration, BrokerHealth)], dependency: &str) {
    for (attempt, (delay, health)) in sleeps.iter().enumerate() {
        let ceiling = Duration::from_millis(100 << attempt).min(CAP);
        assert!(
            *delay <= ceiling,
            "attempt {attempt}: {delay:?} > {ceiling:?}"
        );
        let BrokerHealth::Down { reason } = health else {
            panic!("attempt {attempt}: up while paused");
        };
        let expected = format!("consumption paused: {dependency} unavailable");
        assert!(reason.starts_with(&expected), "{reason}");
    }
}

/// A routed event is published to its user, and only then is its offset stored.
#[tokio::test]
async fn offset_is_stored_after_the_publish() {
    let (pipeline, metrics) = pipeline(&routes(), Script::default(), None);
    let value = envelope("by_pointer", json!({"user_id": "u-1"}));
    pipeline.process(&record(&value)).await;
    assert_eq!(
        effects(&pipeline),
        [Effect::Publish(UserId::new("u-1")), Effect::StoreOffset(42)]
    );
    assert_eq!(metrics.notifications_published.get(), 1);
}

/// While the broker is down the record waits with jittered backoff, the ingest is down; once
/// the broker is back it waits the resume delay, publishes, resumes and stores the offset.
#[tokio::test]
async fn broker_outage_pauses_with_backoff_then_resumes() {
    let script = Script {
        broker: VecDeque::from([down("redis gone"), down("redis gone"), down("redis gone")]),
        ..Script::default()
    };
    let (pipeline, metrics) = pipeline(&routes(), script, None);
    let value = envelope("by_pointer", json!({"user_id": "u-1"}));
    pipeline.process(&record(&value)).await;
    let effects = effects(&pipeline);
    let sleeps = backoff_sleeps(&effects);
    assert_eq!(sleeps.len(), 3);
    assert_paused_with_backoff(&sleeps, "broker");
    let tail = &effects[effects.len() - 3..];
    assert_eq!(
        tail,
        [
            Effect::Sleep {
                delay: RESUME_DELAY,
                health: down("consumption paused: broker unavailable: redis gone"),
            },
            Effect::Publish(UserId::new("u-1")),
            Effect::StoreOffset(42),
        ]
    );
    assert_eq!(*pipeline.io().health.borrow(), BrokerHealth::Up);
    assert_eq!(metrics.paused.get(), 0);
    assert_eq!(metrics.retries.with_label_values(&["broker"]).get(), 3);
}

/// A failed publish (Redis unreachable) is retried; the offset is stored once, after the
/// publish that went through.
#[tokio::test]
async fn failed_publish_is_retried_before_the_offset_is_stored() {
    let script = Script {
        publishes: VecDeque::from([
            Err(PublishError::Redis(redis_down())),
            Err(PublishError::Redis(redis_down())),
        ]),
        ..Script::default()
    };
    let (pipeline, metrics) = pipeline(&routes(), script, None);
    let value = envelope("by_pointer", json!({"user_id": "u-1"}));
    pipeline.process(&record(&value)).await;
    let effects = effects(&pipeline);
    let publishes: Vec<usize> = (0..effects.len())
        .filter(|&i| matches!(effects[i], Effect::Publish(_)))
        .collect();
    assert_eq!(publishes.len(), 3);
    let stores: Vec<usize> = (0..effects.len())
        .filter(|&i| matches!(effects[i], Effect::StoreOffset(_)))
        .collect();
    assert_eq!(stores, [effects.len() - 1]);
    assert!(publishes.iter().all(|&p| p < stores[0]));
    assert_paused_with_backoff(&backoff_sleeps(&effects), "broker");
    assert_eq!(metrics.notifications_published.get(), 1);
    assert_eq!(*pipeline.io().health.borrow(), BrokerHealth::Up);
}

/// A duplicate is not published again, and its offset is stored.
#[tokio::test]
async fn duplicate_is_suppressed_and_committed() {
    let script = Script {
        publishes: VecDeque::from([Ok(false)]),
        ..Script::default()
    };
    let (pipeline, metrics) = pipeline(&routes(), script, None);
    let value = envelope("by_pointer", json!({"user_id": "u-1"}));
    pipeline.process(&record(&value)).await;
    assert_eq!(effects(&pipeline).last(), Some(&Effect::StoreOffset(42)));
    assert_eq!(metrics.duplicates_suppressed.get(), 1);
    assert_eq!(metrics.notifications_published.get(), 0);
}

/// An unreachable owner lookup pauses consumption with backoff; when it answers, the
/// notification goes to the owner found.
#[tokio::test]
async fn lookup_outage_pauses_then_resumes() {
    let script = Script {
        owners: VecDeque::from([
            Err(LookupError::RedisDown(redis_down())),
            Err(LookupError::RedisDown(redis_down())),
        ]),
        ..Script::default()
    };
    let (pipeline, metrics) = pipeline(&routes(), script, None);
    let value = envelope("by_lookup", json!({}));
    pipeline.process(&record(&value)).await;
    let effects = effects(&pipeline);
    let sleeps = backoff_sleeps(&effects);
    assert_eq!(sleeps.len(), 2);
    assert_paused_with_backoff(&sleeps, "owner lookup");
    assert_eq!(
        effects[effects.len() - 2..],
        [
            Effect::Publish(UserId::new("owner-1")),
            Effect::StoreOffset(42)
        ]
    );
    assert_eq!(*pipeline.io().health.borrow(), BrokerHealth::Up);
    assert_eq!(
        metrics.retries.with_label_values(&["owner lookup"]).get(),
        2
    );
}
