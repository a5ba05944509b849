//! Tests of `[telemetry]`: the user-id setting and its secret key.

use super::{TelemetrySettings, TraceUserId};
use crate::config::test_support::{assert_names, load};

#[test]
fn trace_user_id_is_hash_or_omit() {
    let settings = load("[telemetry]\ntrace_user_id = \"omit\"\n", &[]).unwrap();
    assert_eq!(settings.telemetry.trace_user_id, TraceUserId::Omit);
    assert_eq!(
        TelemetrySettings::default().trace_user_id,
        TraceUserId::Hash
    );
    assert!(load("[telemetry]\ntrace_user_id = \"plain\"\n", &[]).is_err());
}

#[test]
fn trace_user_id_key_is_a_secret_setting() {
    let key = "0123456789abcdef-trace";
    let vars = [("WS__TELEMETRY__TRACE_USER_ID_KEY", key)];
    let settings = load("", &vars).unwrap();
    assert_eq!(settings.telemetry.trace_user_id_key, key);
    assert!(settings.telemetry.validate().is_ok());
    let short = load("[telemetry]\ntrace_user_id_key = \"short-key\"\n", &[]).unwrap();
    let error = short.telemetry.validate().unwrap_err();
    let text = assert_names(&error, "telemetry.trace_user_id_key");
    assert!(!text.contains("short-key"), "{text}");
}
