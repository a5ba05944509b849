//! Tests of `[auth]`: each auth setup error is reported under the setting it is about.

use crate::config::test_support::{assert_names, toml_file, valid};
use crate::config::Settings;

#[test]
fn a_missing_secret_is_an_error_unless_dev() {
    let settings = Settings::default();
    let error = settings.validate(false).unwrap_err();
    assert_eq!(
        error.to_string(),
        "missing setting auth.jwt_secret: set it (or auth.jwt_public_key_file), or run with --dev"
    );
    settings.validate(true).unwrap();
    valid().validate(false).unwrap();
}

#[test]
fn mixed_algorithm_families_are_refused() {
    let mut settings = valid();
    settings.auth.algorithms = vec!["HS256".into(), "RS256".into()];
    let error = settings.validate(true).unwrap_err();
    assert_names(&error, "auth.algorithms");
}

#[test]
fn an_unreadable_key_file_is_named() {
    let mut settings = valid();
    settings.auth.algorithms = vec!["RS256".into()];
    settings.auth.jwt_public_key_file = "/nonexistent/key.pem".into();
    let error = settings.validate(false).unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot read auth.jwt_public_key_file \"/nonexistent/key.pem\": No such file or directory"
    );
}

/// What is wrong with a key file (or its absence) is reported under the key file setting.
#[test]
fn a_bad_or_absent_key_file_is_named() {
    let mut settings = valid();
    settings.auth.algorithms = vec!["RS256".into()];
    for content in ["not a key", include_str!("../../testdata/ec_public.pem")] {
        let (_dir, path) = toml_file(content);
        settings.auth.jwt_public_key_file = path.to_string_lossy().into_owned();
        let error = settings.validate(false).unwrap_err();
        assert_eq!(error.key(), Some("auth.jwt_public_key_file"), "{error}");
        assert_names(&error, "auth.jwt_public_key_file");
    }
    settings.auth.jwt_public_key_file.clear();
    let error = settings.validate(false).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("missing setting auth.jwt_public_key_file"),
        "{error}"
    );
}
