//! Tests of loading: the layers, environment values, and errors naming the key and its origin.

use std::collections::HashMap;
use std::path::Path;

use super::build;
use crate::config::test_support::{assert_names, env, load};
use crate::config::{LogFormat, Settings, SettingsError};

#[test]
fn the_file_overrides_defaults() {
    let settings = load(
        "[server]\nbind = \"127.0.0.1:9000\"\nallowed_origins = [\"https://a.example\"]\n\
         [limits]\nmax_connections = 7\n[telemetry]\nlog_format = \"pretty\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(settings.server.bind, "127.0.0.1:9000");
    assert_eq!(settings.server.allowed_origins, ["https://a.example"]);
    assert_eq!(settings.limits.max_connections, 7);
    assert_eq!(
        settings.limits.max_connections_per_user, 10,
        "untouched key keeps its default"
    );
    assert_eq!(settings.telemetry.log_format, LogFormat::Pretty);
}

#[test]
fn the_environment_overrides_the_file() {
    let settings = load(
        "[limits]\nmax_connections = 7\n[redis]\nurl = \"redis://file:6379\"\n",
        &[
            ("WS__LIMITS__MAX_CONNECTIONS", "5"),
            ("ws__redis__url", ""),
            ("WS__AUTH__CLOSE_ON_EXPIRY", "false"),
            ("OTHER__LIMITS__MAX_CONNECTIONS", "9"),
        ],
    )
    .unwrap();
    assert_eq!(settings.limits.max_connections, 5);
    assert_eq!(settings.redis.url, "", "an empty variable clears the value");
    assert!(!settings.auth.close_on_expiry);
}

#[test]
fn environment_lists_are_comma_separated() {
    let settings = build(
        None,
        env(&[
            (
                "WS__SERVER__ALLOWED_ORIGINS",
                "https://a.example, https://b.example:8443",
            ),
            ("WS__AUTH__ALGORITHMS", "RS256"),
        ]),
    )
    .unwrap();
    assert_eq!(
        settings.server.allowed_origins,
        ["https://a.example", "https://b.example:8443"]
    );
    assert_eq!(settings.auth.algorithms, ["RS256"]);
}

#[test]
fn environment_strings_are_kept_verbatim() {
    let vars = [
        ("WS__AUTH__JWT_SECRET", "00012345678901234567890"),
        ("WS__API__PUBLISH_API_KEY", "1e3"),
        ("WS__AUTH__ISSUER", "true"),
    ];
    let settings = build(None, env(&vars)).unwrap();
    assert_eq!(settings.auth.jwt_secret, "00012345678901234567890");
    assert_eq!(settings.api.publish_api_key, "1e3");
    assert_eq!(settings.auth.issuer, "true");
}

#[test]
fn a_bad_integer_in_the_environment_names_the_key_and_variable() {
    let error = build(None, env(&[("WS__LIMITS__MAX_CONNECTIONS", "abc")])).unwrap_err();
    let text = assert_names(&error, "limits.max_connections");
    assert_eq!(error.key(), Some("limits.max_connections"));
    assert!(
        text.starts_with("invalid setting limits.max_connections: expected an unsigned integer"),
        "{text}"
    );
    assert!(
        text.contains("\"abc\"") && text.contains("WS__LIMITS__MAX_CONNECTIONS"),
        "{text}"
    );
}

#[test]
fn a_bad_value_in_the_file_names_the_key_and_file() {
    let error = load("[limits]\nidle_timeout_s = -1\n", &[]).unwrap_err();
    let text = assert_names(&error, "limits.idle_timeout_s");
    assert!(text.contains("settings.toml"), "{text}");
    let error = load("[telemetry]\nlog_format = \"xml\"\n", &[]).unwrap_err();
    let text = assert_names(&error, "telemetry.log_format");
    assert!(text.contains("\"json\" or \"pretty\""), "{text}");
    let error = load("[auth]\njwt_secret = [\"x\"]\n", &[]).unwrap_err();
    assert_names(&error, "auth.jwt_secret");
}

#[test]
fn unknown_keys_are_errors_naming_them() {
    let error = load("[auth]\njwt_secre = \"x\"\n", &[]).unwrap_err();
    let text = assert_names(&error, "unknown setting auth.jwt_secre");
    assert!(text.contains("jwt_secret"), "lists the valid keys: {text}");
    let error = load("[serverr]\nbind = \"x\"\n", &[]).unwrap_err();
    assert_eq!(error.key(), Some("serverr"));
    let error = build(None, env(&[("WS__SERVER__BINDD", "x")])).unwrap_err();
    let text = assert_names(&error, "server.bindd");
    assert!(text.contains("WS__SERVER__BINDD"), "{text}");
}

#[test]
fn file_errors_name_the_file() {
    let error =
        Settings::load_from(Some(Path::new("/nonexistent/x.toml")), HashMap::new()).unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("cannot read config file \"/nonexistent/x.toml\": "),
        "{text}"
    );
    let error = load("[server\nbind = 1\n", &[]).unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, SettingsError::Syntax { .. }), "{text}");
    assert!(
        text.contains("settings.toml") && text.contains("line 1"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text:?}");
}
