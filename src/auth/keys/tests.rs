//! Unit tests of key loading: each key family with its file, the algorithm-confusion guard,
//! what a bad key file reports.

use jsonwebtoken::{Algorithm, EncodingKey};

use super::super::test_support::*;
use super::super::{AuthError, SetupError, TokenValidator, ValidatorOptions};

#[test]
fn rs256_is_accepted_with_the_public_key_file() {
    let token = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_der(&der(RSA_PRIVATE)),
        &claims("user-rsa", now() + 600),
    );
    for public in [RSA_PUBLIC, RSA_PUBLIC_PKCS1] {
        let (_dir, auth) = key_options("RS256", public);
        assert_eq!(
            validator(&auth).validate(&token).unwrap().user_id,
            "user-rsa"
        );
    }
    let (_dir, auth) = key_options("PS256", RSA_PUBLIC);
    let pss = sign(
        Algorithm::PS256,
        &EncodingKey::from_rsa_der(&der(RSA_PRIVATE)),
        &claims("user-pss", now() + 600),
    );
    assert_eq!(validator(&auth).validate(&pss).unwrap().user_id, "user-pss");
    assert_eq!(
        validator(&auth).validate(&token),
        Err(AuthError::AlgorithmNotAllowed)
    );
}

#[test]
fn es256_is_accepted_with_the_ec_public_key_file() {
    let (_dir, auth) = key_options("ES256", EC_PUBLIC);
    let token = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_der(&der(EC_PRIVATE)),
        &claims("user-ec", now() + 600),
    );
    assert_eq!(
        validator(&auth).validate(&token).unwrap().user_id,
        "user-ec"
    );
    let forged = hs256(&claims("user-ec", now() + 600));
    assert_eq!(
        validator(&auth).validate(&forged),
        Err(AuthError::AlgorithmNotAllowed)
    );
}

#[test]
fn eddsa_is_accepted_with_the_ed25519_public_key_file() {
    let (_dir, auth) = key_options("EdDSA", ED_PUBLIC);
    let token = sign(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_der(&der(ED_PRIVATE)),
        &claims("user-ed", now() + 600),
    );
    assert_eq!(
        validator(&auth).validate(&token).unwrap().user_id,
        "user-ed"
    );
}

#[test]
fn algorithm_confusion_is_refused() {
    let (_dir, auth) = key_options("RS256", RSA_PUBLIC);
    for secret in [RSA_PUBLIC.as_bytes().to_vec(), der(RSA_PUBLIC)] {
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&secret),
            &claims("admin", now() + 600),
        );
        assert_eq!(
            validator(&auth).validate(&forged),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }
    let mixed = ValidatorOptions {
        algorithms: vec!["RS256".into(), "HS256".into()],
        secret: SECRET.into(),
        ..auth
    };
    let error = TokenValidator::new(&mixed).unwrap_err();
    assert!(matches!(error, SetupError::MixedKeyTypes { .. }), "{error}");
}

/// Each way a key file can be wrong has its own error, on one line (`config` names the
/// setting: `auth.jwt_public_key_file`).
#[test]
fn key_file_errors_say_what_is_wrong() {
    let (_dir, options) = key_options("RS256", EC_PUBLIC);
    let error = TokenValidator::new(&options).unwrap_err();
    assert!(matches!(error, SetupError::WrongKeyType { .. }), "{error}");
    assert!(error.to_string().contains("holds an EC key"), "{error}");
    let (_dir, options) = key_options("ES384", EC_PUBLIC);
    let error = TokenValidator::new(&options).unwrap_err();
    assert!(error.to_string().contains("not a valid ES384"), "{error}");
    for pem in [
        RSA_PRIVATE,
        EC_PRIVATE,
        "not a key",
        "-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n",
    ] {
        let (_dir, options) = key_options("RS256", pem);
        let error = TokenValidator::new(&options).unwrap_err();
        assert!(matches!(error, SetupError::BadKeyFile { .. }), "{error}");
        assert!(!error.to_string().contains('\n'), "{error}");
    }
    let (_dir, mut options) = key_options("RS256", RSA_PUBLIC);
    options.public_key_file = "/nonexistent/key.pem".into();
    let error = TokenValidator::new(&options).unwrap_err();
    assert!(matches!(error, SetupError::ReadKeyFile { .. }), "{error}");
    options.public_key_file.clear();
    let error = TokenValidator::new(&options).unwrap_err();
    assert!(matches!(error, SetupError::NoKeyFile { .. }), "{error}");
}
