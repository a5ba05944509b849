//! Tests of validation: every rule has a failing case, and the boundaries pass.

use super::MAX_SECONDS;
use crate::config::test_support::{assert_names, valid};
use crate::config::Settings;

#[test]
fn every_rule_has_a_failing_case() {
    type Mutation = fn(&mut Settings);
    let cases: [(&str, Mutation); 30] = [
        ("server.bind", |s| s.server.bind = "8080".into()),
        ("server.bind", |s| s.server.bind = "host name:80".into()),
        ("server.bind", |s| s.server.bind = "localhost:99999".into()),
        ("server.ws_path", |s| s.server.ws_path = "ws".into()),
        ("server.max_frame_bytes", |s| {
            s.server.max_frame_bytes = 1023
        }),
        ("server.allowed_origins", |s| {
            s.server.allowed_origins = vec!["https://a.example/".into()]
        }),
        ("server.allowed_origins", |s| {
            s.server.allowed_origins = vec!["a.example".into()]
        }),
        ("server.allowed_origins", |s| {
            s.server.allowed_origins = vec!["https://a.example:x".into()]
        }),
        ("auth.algorithms", |s| s.auth.algorithms.clear()),
        ("auth.algorithms", |s| {
            s.auth.algorithms = vec!["none".into()]
        }),
        ("auth.algorithms", |s| {
            s.auth.algorithms = vec!["hs256".into()]
        }),
        ("auth.algorithms", |s| {
            s.auth.algorithms = vec!["RS256".into(), "ES256".into()]
        }),
        ("auth.jwt_secret", |s| s.auth.jwt_secret = "short".into()),
        ("auth.jwt_public_key_file", |s| {
            s.auth.algorithms = vec!["ES256".into()]
        }),
        ("auth.algorithms", |s| {
            s.auth.jwt_secret.clear();
            s.auth.jwt_public_key_file = "/k.pem".into();
        }),
        ("auth.leeway_s", |s| s.auth.leeway_s = 3601),
        ("redis.url", |s| {
            s.redis.url = "http://localhost:6379".into()
        }),
        ("redis.url", |s| s.redis.url = "redis://".into()),
        ("redis.channel_prefix", |s| s.redis.channel_prefix.clear()),
        ("limits.max_connections_per_user", |s| {
            s.limits.max_connections_per_user = 0
        }),
        ("limits.max_connections", |s| s.limits.max_connections = 0),
        ("limits.idle_timeout_s", |s| s.limits.idle_timeout_s = 0),
        ("limits.idle_timeout_s", |s| {
            s.limits.idle_timeout_s = u64::MAX
        }),
        ("limits.heartbeat_interval_s", |s| {
            s.limits.heartbeat_interval_s = 0
        }),
        ("limits.heartbeat_timeout_s", |s| {
            s.limits.heartbeat_timeout_s = 0
        }),
        ("limits.send_queue_max", |s| s.limits.send_queue_max = 0),
        ("shutdown.drain_timeout_s", |s| {
            s.shutdown.drain_timeout_s = 0
        }),
        ("telemetry.service_name", |s| {
            s.telemetry.service_name = " ".into()
        }),
        ("telemetry.otlp_endpoint", |s| {
            s.telemetry.otlp_endpoint = "collector:4317".into()
        }),
        ("auth.jwt_secret", |s| {
            s.auth.jwt_secret = "0123456789abcde".into()
        }),
    ];
    for (key, mutate) in cases {
        let mut settings = valid();
        mutate(&mut settings);
        let error = settings.validate(true).unwrap_err();
        assert_eq!(error.key(), Some(key), "{error}");
        assert_names(&error, key);
    }
}

#[test]
fn a_zero_body_timeout_is_refused() {
    let mut settings = valid();
    settings.api.body_timeout_s = 0;
    let error = settings.validate(true).unwrap_err();
    assert_eq!(error.key(), Some("api.body_timeout_s"), "{error}");
}

#[test]
fn boundary_values_are_accepted() {
    let mut settings = valid();
    settings.server.bind = "[::1]:0".into();
    settings.server.max_frame_bytes = 1024;
    settings.server.allowed_origins = vec![
        "https://app.example".into(),
        "http://localhost:3000".into(),
        "http://[::1]:8080".into(),
    ];
    settings.auth.jwt_secret = "0123456789abcdef".into();
    settings.auth.leeway_s = 3600;
    settings.redis.url = "rediss://user:pw@redis.example:6380/2".into();
    settings.limits.idle_timeout_s = MAX_SECONDS;
    settings.telemetry.otlp_endpoint = "http://collector:4317".into();
    settings.validate(false).unwrap();
    settings.server.bind = "localhost:8080".into();
    settings.validate(false).unwrap();
}
