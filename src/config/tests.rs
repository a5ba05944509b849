//! Tests of the whole: the defaults, the repository's `settings.toml`, and `Debug` of secrets.

use std::collections::HashMap;

use super::load::build;
use super::test_support::{toml_file, valid, SECRET};
use super::{LogFormat, Settings};

#[test]
fn defaults_load_without_file_or_environment() {
    let settings = build(None, HashMap::new()).unwrap();
    assert_eq!(settings, Settings::default());
    assert_eq!(settings.server.bind, "0.0.0.0:8080");
    assert_eq!(settings.server.ws_path, "/ws");
    assert_eq!(settings.auth.algorithms, ["HS256"]);
    assert!(settings.auth.close_on_expiry);
    assert_eq!(settings.redis.channel_prefix, "ws:");
    assert_eq!(settings.limits.max_connections, 100_000);
    assert_eq!(settings.shutdown.drain_timeout_s, 30);
    assert_eq!(settings.api.body_timeout_s, 10);
    assert_eq!(settings.telemetry.log_format, LogFormat::Json);
}

#[test]
fn the_repository_settings_file_holds_the_defaults() {
    let (_dir, path) = toml_file(include_str!("../../settings.toml"));
    let settings = Settings::load_from(Some(&path), HashMap::new()).unwrap();
    assert_eq!(settings, Settings::default());
    settings.validate(true).unwrap();
}

#[test]
fn debug_hides_secrets() {
    let mut settings = valid();
    settings.api.publish_api_key = "publish-key-value".into();
    settings.telemetry.trace_user_id_key = "trace-key-value-0123".into();
    let text = format!("{settings:?}");
    assert!(
        !text.contains(SECRET)
            && !text.contains("publish-key-value")
            && !text.contains("trace-key-value"),
        "{text}"
    );
    assert!(text.contains("[redacted]"), "{text}");
    let text = format!("{:?}", Settings::default());
    assert!(
        !text.contains("[redacted]"),
        "unset secrets print as empty: {text}"
    );
}
