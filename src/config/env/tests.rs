//! Tests of the variable ↔ key mapping.

use super::{is_override, setting_of, var_of};

#[test]
fn variable_and_key_names_map_both_ways() {
    assert_eq!(
        setting_of("WS__LIMITS__MAX_CONNECTIONS"),
        "limits.max_connections"
    );
    assert_eq!(
        var_of("server.allowed_origins[1]"),
        "WS__SERVER__ALLOWED_ORIGINS"
    );
    assert!(is_override("ws__redis__url") && !is_override("WS_REDIS") && !is_override("W"));
}
