//! Hardening regression tests: auth_abuse.
//!
//! Validly signed tokens that abuse the JWT format (an `exp` at the end of time, a `crit` header
//! naming extensions the server does not understand) and an upgrade request over HTTP/1.0: each
//! must get the contract's answer on the wire, never a panic, and leave other clients alone.
//! And the user-id hash in traces must be keyed, so that it cannot be reversed by guessing ids.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::{
    base64url, now, publish_api_until_received, token, token_expiring, wait_until, HttpReply,
    Server, TestSettings, WsClient, DEADLINE, SECRET,
};

/// `exp` values at the end of the u64 range: 2^63 and 2^64 − 1, and 2^62, which is still a
/// representable `SystemTime` but ~1.5e11 years away.
const FAR_FUTURE_EXPS: [u64; 3] = [1 << 63, u64::MAX, 1 << 62];

/// A token whose header is `header` verbatim (a JSON object text), signed HS256 with [`SECRET`].
fn signed_with_header(header: &str, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        base64url(header.as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256)
        .expect("HS256 signs");
    format!("{signing_input}.{signature}")
}

/// Connects with `?token=`; panics with the server's view when the handshake fails.
async fn connect_or_explain(server: &Server, token: &str, what: &str) -> WsClient {
    match WsClient::try_connect(&server.ws_url(token), None, None).await {
        Ok(client) => client,
        Err(error) => panic!("{what}: the upgrade failed ({error})"),
    }
}

/// A validly signed token whose `exp` is 2^63, 2^64 − 1 or 2^62 is accepted like any other: the
/// socket receives what is published to its user, and a client connected before is unaffected.
/// (Before the fix, the upgrade panicked on "overflow when adding duration to instant" and the
/// client's handshake failed.)
#[actix_web::test]
async fn a_far_future_exp_is_accepted_and_never_panics() {
    let server = Server::start(TestSettings::new().set("auth.leeway_s", 30)).await;
    let mut bystander = server.connect(&token("bystander")).await;
    publish_api_until_received(&server, "bystander", &mut bystander).await;

    for (i, exp) in FAR_FUTURE_EXPS.into_iter().enumerate() {
        let user = format!("far-future-{i}");
        let what = format!("exp = {exp}");
        let mut client = connect_or_explain(&server, &token_expiring(&user, exp), &what).await;
        publish_api_until_received(&server, &user, &mut client).await;
        publish_api_until_received(&server, "bystander", &mut bystander).await;
    }
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// A JWT whose header carries `crit` is refused 1008 AUTHENTICATION_ERROR (RFC 7515 §4.1.11:
/// the server understands no extension), whatever `crit` holds; the same token without `crit`
/// is accepted, so the refusal is the `crit` header's doing. (Before the fix, the tokens whose
/// `crit` is an array or null were accepted.)
#[actix_web::test]
async fn a_crit_header_is_refused_1008() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let claims = json!({ "sub": "crit-user", "exp": now() + 3600 });

    let plain = signed_with_header(r#"{"alg":"HS256","typ":"JWT"}"#, &claims);
    let mut accepted = connect_or_explain(&server, &plain, "no crit").await;
    publish_api_until_received(&server, "crit-user", &mut accepted).await;

    for header in [
        r#"{"alg":"HS256","typ":"JWT","crit":["urn:example:ext"],"urn:example:ext":true}"#,
        r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
        r#"{"alg":"HS256","crit":["exp"]}"#,
        r#"{"alg":"HS256","crit":[]}"#,
        r#"{"alg":"HS256","crit":null}"#,
        r#"{"alg":"HS256","crit":"urn:example:ext"}"#,
    ] {
        let token = signed_with_header(header, &claims);
        let mut refused = connect_or_explain(&server, &token, header).await;
        let closed = refused
            .expect_close_with(1008, "AUTHENTICATION_ERROR")
            .await;
        assert!(
            !closed.reason.contains(&token),
            "the close reason echoes the token: {}",
            closed.reason
        );
    }
}

/// Sends `request` on a fresh connection and reads until the server hangs up, the answer's head
/// is complete (`head_only`) or [`DEADLINE`] passes: what a client speaking raw HTTP sees.
async fn raw_exchange(server: &Server, request: &str, head_only: bool) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut received = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while !(head_only && received.windows(4).any(|w| w == b"\r\n\r\n")) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(DEADLINE, read).await;
    received
}

/// A raw HTTP/1.x answer as an [`HttpReply`] (status and body; no headers needed here).
fn parse_reply(response: &[u8]) -> HttpReply {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    assert!(head.starts_with("HTTP/1.1 "), "status line of {head:?}");
    HttpReply {
        status,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

fn upgrade_request(version: &str, token: &str) -> String {
    format!(
        "GET /ws?token={token} {version}\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// An upgrade request over HTTP/1.0 is answered 400 with the error JSON (RFC 6455 §4.1 needs
/// HTTP/1.1 or later); the same request over HTTP/1.1 is upgraded. (Before the fix, the
/// HTTP/1.0 request was upgraded: 101.)
#[actix_web::test]
async fn an_http_1_0_upgrade_is_answered_400() {
    let server = Server::start_in_process(TestSettings::new()).await;
    let token = token("old-client");

    let upgraded = raw_exchange(&server, &upgrade_request("HTTP/1.1", &token), true).await;
    assert_eq!(parse_reply(&upgraded).status, 101, "the HTTP/1.1 control");

    let refused = raw_exchange(&server, &upgrade_request("HTTP/1.0", &token), false).await;
    let error = parse_reply(&refused).assert_error(400, "VALIDATION_ERROR");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("HTTP/1.1"), "message: {message}");
    assert_eq!(
        server.get("/healthz").await.status,
        200,
        "the server still answers"
    );
}

/// HMAC-SHA256 of `message` under `key`, its first 8 bytes in hex: computed here, independently
/// of the server.
fn hmac_sha256_hex16(key: &[u8], message: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    let digest = mac.finalize().into_bytes();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// With `telemetry.trace_user_id = "hash"` (the default), the `user.hash` a connect span
/// carries is HMAC-SHA256 of the user id, truncated to 16 hex digits, keyed by
/// `telemetry.trace_user_id_key` (here from `WS__TELEMETRY__TRACE_USER_ID_KEY`) or, when that is
/// empty, by HMAC-SHA256 of a fixed label under `auth.jwt_secret`; the key is never logged.
/// (Before the fix, the hash was Rust's unkeyed `DefaultHasher`.)
#[actix_web::test]
async fn the_user_hash_in_spans_is_a_keyed_hmac() {
    const KEY: &str = "trace-key-for-the-test-0f3a9c";
    const LABEL: &[u8] = b"websocket-service telemetry.trace_user_id_key v1";
    let derived_key = {
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(LABEL);
        mac.finalize().into_bytes().to_vec()
    };
    let pretty_debug = || {
        TestSettings::new()
            .env("WS__TELEMETRY__LOG_FORMAT", "pretty")
            .env("RUST_LOG", "debug")
    };
    for (settings, key) in [
        (pretty_debug(), derived_key),
        (
            pretty_debug().env("WS__TELEMETRY__TRACE_USER_ID_KEY", KEY),
            KEY.as_bytes().to_vec(),
        ),
    ] {
        let server = Server::start(settings).await;
        let mut client = server.connect(&token("hashed-user")).await;
        publish_api_until_received(&server, "hashed-user", &mut client).await;
        let expected = hmac_sha256_hex16(&key, b"hashed-user");
        let what = format!("user.hash {expected} in the connect span's log lines");
        wait_until(DEADLINE, &what, || async {
            server.log().contains(&expected)
        })
        .await;
        assert!(!server.log().contains(KEY), "the key is logged");
    }
}
