//! Unit tests of token validation: the header, the signature, the claims, minting.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::super::test_support::*;
use super::*;

fn unsigned_token(header: &str, claims: &Value) -> String {
    let header = base64url(header.as_bytes());
    let claims = base64url(claims.to_string().as_bytes());
    format!("{header}.{claims}.")
}

#[test]
fn a_valid_hs256_token_is_accepted() {
    let exp = now() + 600;
    let verified = validator(&hmac_options())
        .validate(&hs256(&claims("user-1", exp)))
        .unwrap();
    assert_eq!(
        verified,
        VerifiedToken {
            user_id: "user-1".into(),
            expires_at: exp
        }
    );
}

#[test]
fn missing_and_malformed_tokens_are_refused() {
    let v = validator(&hmac_options());
    assert_eq!(v.validate(""), Err(AuthError::Missing));
    for garbage in ["abc", "a.b.c", "...", "eyJhbGciOiJIUzI1NiJ9", "é.é.é"] {
        assert_eq!(v.validate(garbage), Err(AuthError::Malformed), "{garbage}");
    }
    let huge = format!("{}.e30.x", "a".repeat(MAX_TOKEN_BYTES));
    assert_eq!(v.validate(&huge), Err(AuthError::Malformed));
    let not_an_object = format!("{}.{}.", base64url(br#"{"alg":"HS256"}"#), base64url(b"42"));
    assert!(v.validate(&not_an_object).is_err());
}

#[test]
fn alg_none_is_refused() {
    let v = validator(&hmac_options());
    let body = claims("user-1", now() + 600);
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
        r#"{"alg":"NONE"}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        let token = unsigned_token(header, &body);
        let refusal = v.validate(&token).unwrap_err();
        assert!(
            matches!(
                refusal,
                AuthError::Malformed | AuthError::AlgorithmNotAllowed
            ),
            "{header}: {refusal:?}"
        );
    }
    let empty_signature = unsigned_token(r#"{"alg":"HS256","typ":"JWT"}"#, &body);
    assert!(v.validate(&empty_signature).is_err());
}

#[test]
fn a_wrong_secret_is_a_bad_signature() {
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-0123456789"),
        &claims("user-1", now() + 600),
    );
    assert_eq!(
        validator(&hmac_options()).validate(&token),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn expiry_honours_the_leeway() {
    let token = hs256(&claims("user-1", now() - 5));
    assert_eq!(
        validator(&hmac_options()).validate(&token),
        Err(AuthError::Expired)
    );
    let lenient = ValidatorOptions {
        leeway_s: 30,
        ..hmac_options()
    };
    let verified = validator(&lenient).validate(&token).unwrap();
    assert!(verified.expires_at > now(), "deadline includes the leeway");
}

#[test]
fn exp_and_sub_are_required() {
    let v = validator(&hmac_options());
    let no_exp = hs256(&json!({ "sub": "user-1" }));
    assert_eq!(v.validate(&no_exp), Err(AuthError::MissingClaim("exp")));
    let no_sub = hs256(&json!({ "exp": now() + 600 }));
    assert_eq!(v.validate(&no_sub), Err(AuthError::MissingClaim("sub")));
    let numeric_sub = hs256(&json!({ "sub": 42, "exp": now() + 600 }));
    assert_eq!(
        v.validate(&numeric_sub),
        Err(AuthError::MissingClaim("sub"))
    );
    let text_exp = hs256(&json!({ "sub": "u", "exp": "soon" }));
    assert!(v.validate(&text_exp).is_err());
}

/// An HS256 token whose claims are `claims` verbatim (JSON text that `Value` cannot hold).
fn hs256_raw(claims: &str) -> String {
    hs256_parts(r#"{"alg":"HS256","typ":"JWT"}"#, claims)
}

/// An HS256 token whose header is `header` verbatim.
fn hs256_with_header(header: &str, claims: &Value) -> String {
    hs256_parts(header, &claims.to_string())
}

/// An HS256 token of `header` and `claims`, both JSON texts taken verbatim.
fn hs256_parts(header: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        base64url(header.as_bytes()),
        base64url(claims.as_bytes())
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256);
    format!("{input}.{}", signature.unwrap())
}

#[test]
fn any_crit_header_is_refused() {
    let v = validator(&hmac_options());
    let body = claims("user-1", now() + 600);
    let plain = hs256_with_header(r#"{"alg":"HS256","typ":"JWT"}"#, &body);
    assert!(v.validate(&plain).is_ok(), "the helper signs valid tokens");
    for header in [
        r#"{"alg":"HS256","crit":["urn:example:ext"],"urn:example:ext":1}"#,
        r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
        r#"{"alg":"HS256","crit":[]}"#,
        r#"{"alg":"HS256","crit":null}"#,
        r#"{"crit":["exp"],"alg":"HS256","typ":"JWT"}"#,
    ] {
        let token = hs256_with_header(header, &body);
        assert_eq!(
            v.validate(&token),
            Err(AuthError::CriticalExtension),
            "{header}"
        );
    }
    let malformed = hs256_with_header(r#"{"alg":"HS256","crit":"b64"}"#, &body);
    assert!(v.validate(&malformed).is_err());
}

#[test]
fn base64url_decodes_jws_segments_only() {
    assert_eq!(header_json("-_8").unwrap(), [0xfb, 0xff]);
    assert_eq!(header_json("eyJ9").unwrap(), b"{\"}");
    for not_url in ["+/8", "eyJ9=", "ey J9", "e*"] {
        assert!(header_json(not_url).is_none(), "{not_url}");
    }
}

#[test]
fn far_future_exps_are_accepted_and_saturate() {
    let lenient = validator(&ValidatorOptions {
        leeway_s: 30,
        ..hmac_options()
    });
    for exp in [1u64 << 63, u64::MAX - 1, u64::MAX] {
        let verified = lenient.validate(&hs256(&claims("u", exp))).unwrap();
        assert_eq!(verified.expires_at, exp.saturating_add(30), "exp {exp}");
    }
    let float = hs256_raw(r#"{"sub":"u","exp":1.8e19}"#);
    assert_eq!(
        lenient.validate(&float).unwrap().expires_at,
        18_000_000_000_000_000_030
    );
    let exp = now() + 600;
    let fraction = hs256(&json!({ "sub": "u", "exp": exp as f64 + 0.4 }));
    assert_eq!(lenient.validate(&fraction).unwrap().expires_at, exp + 30);
}

#[test]
fn exps_outside_the_numeric_date_range_are_refused() {
    let v = validator(&hmac_options());
    for exp in [
        "-1",
        "-1.5",
        "-9223372036854775809",
        "18446744073709551616",
        "1e20",
        "1e400",
        "-1e400",
        "123456789012345678901234567890",
        "true",
        "null",
        "[1]",
    ] {
        let token = hs256_raw(&format!(r#"{{"sub":"u","exp":{exp}}}"#));
        let refusal = v.validate(&token).unwrap_err();
        assert!(
            matches!(
                refusal,
                AuthError::Malformed | AuthError::MissingClaim("exp")
            ),
            "exp {exp}: {refusal:?}"
        );
    }
}

#[test]
fn a_future_nbf_is_not_yet_valid() {
    let token = hs256(&json!({ "sub": "u", "exp": now() + 600, "nbf": now() + 300 }));
    assert_eq!(
        validator(&hmac_options()).validate(&token),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn an_algorithm_outside_the_list_is_refused() {
    let token = sign(
        Algorithm::HS384,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &claims("user-1", now() + 600),
    );
    assert_eq!(
        validator(&hmac_options()).validate(&token),
        Err(AuthError::AlgorithmNotAllowed)
    );
    let both = ValidatorOptions {
        algorithms: vec!["HS256".into(), "HS384".into()],
        ..hmac_options()
    };
    assert!(validator(&both).validate(&token).is_ok());
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let strict = ValidatorOptions {
        issuer: "https://issuer.example".into(),
        audience: "websocket".into(),
        ..hmac_options()
    };
    let v = validator(&strict);
    let exp = now() + 600;
    let token = |iss: Value, aud: Value| {
        let mut body = claims("u", exp);
        body["iss"] = iss;
        body["aud"] = aud;
        hs256(&body)
    };
    let good = token(
        json!("https://issuer.example"),
        json!(["other", "websocket"]),
    );
    assert!(v.validate(&good).is_ok());
    let bad_iss = token(json!("https://evil.example"), json!("websocket"));
    assert_eq!(v.validate(&bad_iss), Err(AuthError::InvalidIssuer));
    let bad_aud = token(json!("https://issuer.example"), json!("other"));
    assert_eq!(v.validate(&bad_aud), Err(AuthError::InvalidAudience));
    let no_iss = hs256(&json!({ "sub": "u", "exp": exp, "aud": "websocket" }));
    assert_eq!(v.validate(&no_iss), Err(AuthError::MissingClaim("iss")));
    let no_aud = hs256(&json!({ "sub": "u", "exp": exp, "iss": "https://issuer.example" }));
    assert_eq!(v.validate(&no_aud), Err(AuthError::MissingClaim("aud")));
    let lax = validator(&hmac_options());
    assert!(
        lax.validate(&bad_aud).is_ok(),
        "aud is ignored when not configured"
    );
}

#[test]
fn subjects_are_taken_verbatim_or_refused() {
    let v = validator(&hmac_options());
    let exp = now() + 600;
    let odd = "ws:*?[:é] user";
    assert_eq!(v.validate(&hs256(&claims(odd, exp))).unwrap().user_id, odd);
    let longest = "u".repeat(MAX_SUBJECT_BYTES);
    assert!(v.validate(&hs256(&claims(&longest, exp))).is_ok());
    for bad in ["", "user\n1", "user\u{7f}", "user\u{85}", &"u".repeat(300)] {
        let token = hs256(&claims(bad, exp));
        assert_eq!(
            v.validate(&token),
            Err(AuthError::InvalidSubject),
            "{bad:?}"
        );
    }
}

#[test]
fn public_messages_fit_the_close_reason() {
    let all = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::AlgorithmNotAllowed,
        AuthError::BadSignature,
        AuthError::Expired,
        AuthError::MissingClaim("exp"),
        AuthError::MissingClaim("sub"),
        AuthError::MissingClaim("iss"),
        AuthError::MissingClaim("aud"),
        AuthError::MissingClaim("nbf"),
        AuthError::MissingClaim("other"),
        AuthError::InvalidIssuer,
        AuthError::InvalidAudience,
        AuthError::InvalidSubject,
        AuthError::NotYetValid,
        AuthError::CriticalExtension,
    ];
    for error in all {
        let message = error.public_message();
        assert!(!message.is_empty() && message.len() <= 16, "{message:?}");
    }
}

#[test]
fn mint_hs256_round_trips() {
    let token = mint_hs256(SECRET, "demo-user", Duration::from_secs(60)).unwrap();
    let verified = validator(&hmac_options()).validate(&token).unwrap();
    assert_eq!(verified.user_id, "demo-user");
    assert!(verified.expires_at >= now() + 59);
    assert!(mint_hs256("", "demo-user", Duration::from_secs(60)).is_err());
}

#[test]
fn debug_does_not_show_the_secret() {
    let text = format!("{:?}", validator(&hmac_options()));
    assert!(!text.contains(SECRET) && text.contains("HS256"), "{text}");
}

proptest! {
    #[test]
    fn any_token_is_handled(token in "\\PC{0,64}", parts in proptest::collection::vec("[A-Za-z0-9_-]{0,40}", 0..5)) {
        let v = validator(&hmac_options());
        prop_assert!(v.validate(&token).is_err());
        prop_assert!(v.validate(&parts.join(".")).is_err());
    }
}
