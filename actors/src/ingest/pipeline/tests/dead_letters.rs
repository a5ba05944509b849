//! Unit tests of the dead-letter rules: each reason a record is rejected for, the copy sent to
//! the dead-letter topic, a dead-letter outage, and rejects without a dead-letter topic.

use super::*;
use crate::ingest::metrics::DEAD_LETTER_REASONS;

fn dead_lettered(metrics: &IngestMetrics, reason: &str) -> u64 {
    metrics.dead_lettered.with_label_values(&[reason]).get()
}

/// A record that cannot become a notification, and what its dead letter says.
struct Rejected {
    reason: &'static str,
    value: Vec<u8>,
    script: Script,
    give_up: Option<Duration>,
    error_start: &'static str,
}

/// Each kind of record that cannot become a notification is dead-lettered with its reason and
/// committed, never published.
#[tokio::test]
async fn rejected_records_are_dead_lettered_by_reason() {
    let owner_key = LookupKey::Redis("owner:b1".into());
    let http_refused = || LookupError::HttpRefused {
        url: "http://h/b1".into(),
        status: reqwest::StatusCode::FORBIDDEN,
    };
    let case = |reason, value, owners: Vec<_>, give_up, error_start| Rejected {
        reason,
        value,
        script: Script {
            owners: VecDeque::from(owners),
            ..Script::default()
        },
        give_up,
        error_start,
    };
    let cases = [
        case(
            "malformed",
            b"{not json".to_vec(),
            vec![],
            None,
            "not a JSON document",
        ),
        case(
            "unknown_event_type",
            envelope("other", json!({})),
            vec![],
            None,
            "no route for event type \"other\" on topic events",
        ),
        case(
            "missing_user",
            envelope("by_pointer", json!({})),
            vec![],
            None,
            "no user id at /metadata/user_id",
        ),
        case(
            "owner_not_found",
            envelope("by_lookup", json!({})),
            vec![Ok(None)],
            None,
            "no owner: redis key owner:b1 not set",
        ),
        case(
            "lookup_failed",
            envelope("by_lookup", json!({})),
            vec![Err(http_refused())],
            None,
            "GET http://h/b1: HTTP 403 Forbidden",
        ),
        case(
            "lookup_unavailable",
            envelope("by_lookup", json!({})),
            vec![Err(LookupError::RedisDown(redis_down()))],
            Some(Duration::ZERO),
            "redis: ",
        ),
    ];
    for Rejected {
        reason,
        value,
        script,
        give_up,
        error_start,
    } in cases
    {
        let (pipeline, metrics) = pipeline(&routes(), script, give_up);
        pipeline.process(&record(&value)).await;
        let effects = effects(&pipeline);
        let lookups =
            usize::from(matches!(effects.first(), Some(Effect::Lookup(k)) if *k == owner_key));
        let [Effect::DeadLetter { reason: got, error }, Effect::StoreOffset(42)] =
            &effects[lookups..]
        else {
            panic!("{reason}: {effects:?}");
        };
        assert_eq!(*got, reason);
        assert!(
            DEAD_LETTER_REASONS.contains(&reason),
            "{reason} is pre-registered"
        );
        assert!(error.starts_with(error_start), "{reason}: {error}");
        assert_eq!(dead_lettered(&metrics, reason), 1, "{reason}");
        assert_eq!(metrics.notifications_published.get(), 0, "{reason}");
    }
}

/// While the dead-letter topic refuses the copy the record waits with backoff; then it is
/// committed.
#[tokio::test]
async fn dead_letter_outage_pauses_until_the_copy_is_taken() {
    let refused = || Err(std::io::Error::other("queue full"));
    let script = Script {
        dead_letters: VecDeque::from([refused(), refused()]),
        ..Script::default()
    };
    let (pipeline, _) = pipeline(&routes(), script, None);
    pipeline.process(&record(b"[]")).await;
    let effects = effects(&pipeline);
    let sleeps = backoff_sleeps(&effects);
    assert_eq!(sleeps.len(), 2);
    assert_paused_with_backoff(&sleeps, "dead-letter topic");
    let dead_letters = effects
        .iter()
        .filter(|e| matches!(e, Effect::DeadLetter { .. }))
        .count();
    assert_eq!(dead_letters, 3);
    assert_eq!(effects.last(), Some(&Effect::StoreOffset(42)));
    assert_eq!(*pipeline.io().health.borrow(), BrokerHealth::Up);
}

/// Without a dead-letter topic a rejected record is counted and committed, not copied.
#[tokio::test]
async fn without_a_dead_letter_topic_rejects_are_only_counted() {
    let (mut pipeline, metrics) = pipeline(&routes(), Script::default(), None);
    pipeline.io.dead_letter_topic = None;
    pipeline.process(&record(b"[]")).await;
    assert_eq!(effects(&pipeline), [Effect::StoreOffset(42)]);
    assert_eq!(dead_lettered(&metrics, "malformed"), 1);
}
