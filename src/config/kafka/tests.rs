//! Tests of `[kafka]`: routes from the file and the environment, every rule, and the conversion
//! into the ingest's configuration.

use super::KafkaRoute;
use crate::config::load::build;
use crate::config::test_support::{assert_names, env, load, valid};
use crate::config::Settings;

/// A valid configuration with the ingest on and one route owned through `owner`.
fn with_kafka(owner: (&str, &str)) -> Settings {
    let mut settings = valid();
    settings.redis.url = "redis://127.0.0.1:6379".into();
    settings.kafka.brokers = vec!["kafka-0:9092".into(), "10.0.0.7:9093".into()];
    let mut route = KafkaRoute {
        topic: "huleedu.essay.lifecycle.essay.slot.assigned.v1".into(),
        event_type: String::new(),
        event: "essay.slot.assigned".into(),
        fields: vec!["batch_id".into()],
        user_pointer: String::new(),
        owner_redis_key: String::new(),
        owner_http_url: String::new(),
    };
    match owner.0 {
        "user_pointer" => route.user_pointer = owner.1.into(),
        "owner_redis_key" => route.owner_redis_key = owner.1.into(),
        _ => route.owner_http_url = owner.1.into(),
    }
    settings.kafka.routes = vec![route];
    settings
}

#[test]
fn kafka_routes_load_from_the_file_and_from_the_environment() {
    let text = r#"
[kafka]
brokers = ["127.0.0.1:9092"]
dead_letter_topic = "ws.dlq"
required = true
properties = { "socket.keepalive.enable" = "true" }

[[kafka.routes]]
topic = "huleedu.essay.lifecycle.essay.slot.assigned.v1"
event_type = "huleedu.essay.slot.assigned.v1"
event = "essay.slot.assigned"
fields = ["batch_id", "essay_id", "file_upload_id", "text_storage_id"]
owner_redis_key = "batch_owner:{batch_id}"

[[kafka.routes]]
topic = "platform.other.v1"
event = "other"
user_pointer = "/metadata/user_id"
"#;
    let settings = load(text, &[("WS__REDIS__URL", "redis://r:6379")]).unwrap();
    settings.validate(true).unwrap();
    let kafka = &settings.kafka;
    assert!(kafka.enabled() && kafka.required);
    assert_eq!(kafka.brokers, ["127.0.0.1:9092"]);
    assert_eq!(kafka.routes.len(), 2);
    assert_eq!(kafka.routes[0].owner_redis_key, "batch_owner:{batch_id}");
    assert_eq!(kafka.routes[0].fields.len(), 4);
    assert_eq!(kafka.routes[1].user_pointer, "/metadata/user_id");
    assert_eq!(kafka.routes[1].event_type, "", "any type on the topic");
    assert_eq!(kafka.properties["socket.keepalive.enable"], "true");
    assert_eq!(
        kafka.group_id, "websocket-service",
        "untouched keys keep defaults"
    );

    let routes =
        r#"[{"topic":"t.v1","event":"e","owner_http_url":"http://owners:8080/b/{batch_id}"}]"#;
    let settings = build(
        None,
        env(&[
            ("WS__KAFKA__BROKERS", "a:9092,b:9092"),
            ("WS__KAFKA__ROUTES", routes),
            (
                "WS__KAFKA__PROPERTIES",
                r#"{"security.protocol":"sasl_plaintext"}"#,
            ),
            ("WS__KAFKA__DEDUPE_WINDOW_S", "60"),
        ]),
    )
    .unwrap();
    assert_eq!(settings.kafka.brokers, ["a:9092", "b:9092"]);
    assert_eq!(
        settings.kafka.routes[0].owner_http_url,
        "http://owners:8080/b/{batch_id}"
    );
    assert_eq!(
        settings.kafka.properties["security.protocol"],
        "sasl_plaintext"
    );
    assert_eq!(settings.kafka.dedupe_window_s, 60);
    let error = build(None, env(&[("WS__KAFKA__ROUTES", "[{")])).unwrap_err();
    assert_names(&error, "kafka.routes");
    let error = load(
        "[[kafka.routes]]\ntopic = \"t\"\nevent = \"e\"\nuser = \"x\"\n",
        &[],
    )
    .unwrap_err();
    assert!(error.to_string().contains("user"), "{error}");
}

#[test]
fn every_kafka_rule_has_a_failing_case() {
    type Mutation = fn(&mut Settings);
    let cases: [(&str, Mutation); 22] = [
        ("kafka.brokers", |s| s.kafka.brokers = vec!["kafka".into()]),
        ("kafka.group_id", |s| s.kafka.group_id = " ".into()),
        ("kafka.client_id", |s| s.kafka.client_id.clear()),
        ("kafka.dead_letter_topic", |s| {
            s.kafka.dead_letter_topic = "dead letters".into()
        }),
        ("kafka.auto_offset_reset", |s| {
            s.kafka.auto_offset_reset = "smallest".into()
        }),
        ("kafka.commit_interval_ms", |s| {
            s.kafka.commit_interval_ms = 0
        }),
        ("kafka.session_timeout_ms", |s| {
            s.kafka.session_timeout_ms = 999
        }),
        ("kafka.dedupe_window_s", |s| s.kafka.dedupe_window_s = 0),
        ("kafka.dedupe_cache_size", |s| s.kafka.dedupe_cache_size = 0),
        ("kafka.lookup_cache_size", |s| s.kafka.lookup_cache_size = 0),
        ("kafka.lookup_timeout_ms", |s| s.kafka.lookup_timeout_ms = 0),
        ("kafka.backoff_max_ms", |s| s.kafka.backoff_max_ms = 0),
        ("kafka.owner_redis_url", |s| {
            s.kafka.owner_redis_url = "owners:6379".into()
        }),
        ("kafka.properties", |s| {
            s.kafka
                .properties
                .insert("enable.auto.offset.store".into(), "true".into());
        }),
        ("kafka.routes", |s| s.kafka.routes.clear()),
        ("kafka.routes[0].topic", |s| {
            s.kafka.routes[0].topic = "a/b".into()
        }),
        ("kafka.routes[0].event", |s| s.kafka.routes[0].event.clear()),
        ("kafka.routes[0].user_pointer", |s| {
            s.kafka.routes[0].user_pointer = "metadata.user_id".into()
        }),
        ("kafka.routes[0].user_pointer", |s| {
            s.kafka.routes[0].owner_redis_key = "k:{batch_id}".into()
        }),
        ("kafka.routes[0].event_type", |s| {
            let again = s.kafka.routes[0].clone();
            s.kafka.routes.push(again);
        }),
        ("kafka.routes[0].owner_redis_key", |s| {
            s.kafka.routes[0].user_pointer.clear();
            s.kafka.routes[0].owner_redis_key = "owner:{batch id}".into();
        }),
        ("kafka.routes[0].owner_http_url", |s| {
            s.kafka.routes[0].user_pointer.clear();
            s.kafka.routes[0].owner_http_url = "https://owners/{batch_id}".into();
        }),
    ];
    for (key, mutate) in cases {
        let mut settings = with_kafka(("user_pointer", "/metadata/user_id"));
        mutate(&mut settings);
        let error = settings.validate(true).unwrap_err();
        let expected = if key == "kafka.routes[0].event_type" {
            "kafka.routes[1].event_type"
        } else {
            key
        };
        assert_eq!(error.key(), Some(expected), "{error}");
        assert_names(&error, expected);
    }
    let mut settings = with_kafka(("owner_redis_key", "batch_owner:{batch_id}"));
    settings.redis.url.clear();
    let error = settings.validate(true).unwrap_err();
    assert_eq!(
        error.key(),
        Some("kafka.routes[0].owner_redis_key"),
        "{error}"
    );
    settings.kafka.owner_redis_url = "redis://owners:6379".into();
    settings.validate(true).unwrap();
    let mut off = valid();
    off.kafka.routes = with_kafka(("user_pointer", "")).kafka.routes;
    off.validate(true)
        .expect("nothing is checked while the ingest is off");
}

#[test]
fn valid_kafka_settings_pass_and_convert() {
    for owner in [
        ("user_pointer", "/metadata/user_id"),
        ("owner_redis_key", "batch_owner:{batch_id}"),
        (
            "owner_http_url",
            "http://owners:8080/batches/{batch_id}/owner",
        ),
    ] {
        with_kafka(owner).validate(false).unwrap();
    }
    let mut settings = with_kafka(("owner_redis_key", "batch_owner:{batch_id}"));
    settings.kafka.dead_letter_topic = "platform.websocket.dead-letters.v1".into();
    settings.kafka.lookup_cache_ttl_s = 0;
    settings.kafka.lookup_give_up_s = 0;
    settings.kafka.resume_delay_ms = 0;
    settings.validate(false).unwrap();
    #[cfg(feature = "kafka")]
    {
        let config = settings.kafka.ingest_config(&settings.redis);
        assert_eq!(config.brokers.len(), 2);
        assert_eq!(
            config.dead_letter_topic.as_deref(),
            Some("platform.websocket.dead-letters.v1")
        );
        assert_eq!(
            config.dedupe.redis,
            Some(ws_actors::broker::RedisTarget::Single(
                "redis://127.0.0.1:6379".into()
            ))
        );
        assert_eq!(config.dedupe.channel_prefix, "ws:");
        assert_eq!(
            config.lookup.redis_url.as_deref(),
            Some("redis://127.0.0.1:6379")
        );
        assert_eq!(config.lookup.give_up_after, None);
        assert_eq!(config.routes[0].event_type, None);
        assert_eq!(
            config.routes[0].owner,
            ws_actors::ingest::OwnerSource::RedisKey("batch_owner:{batch_id}".into())
        );
        settings.redis.url.clear();
        settings.kafka.owner_redis_url = "redis://owners:6379".into();
        let config = settings.kafka.ingest_config(&settings.redis);
        assert_eq!(config.dedupe.redis, None, "in-process dedupe");
        assert_eq!(
            config.lookup.redis_url.as_deref(),
            Some("redis://owners:6379")
        );
    }
}
