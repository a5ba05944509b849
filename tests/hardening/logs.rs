//! Hardening regression tests: logs (issue #11, defect 5). Whatever a client puts in a query
//! string, the server's log (every level, every span) never shows a query value that could be a
//! credential: only the names of the parameters and the values of a short allow-list survive.

use serde_json::json;

use crate::common::{Server, TestSettings, WsClient, API_KEY, DEADLINE};

const SECRETS: [&str; 7] = [
    "secret-access-token-4d1f0b",
    "secret-api-key-9e27c3",
    "secret-health-key-71ab5e",
    "secret-publish-key-c0f2d8",
    "secret-mixed-case-3b8e61",
    "secret-bare-value-5a0c97",
    "secret-password-e4d219",
];

/// Requests carrying a secret in the query string through every HTTP path: a WebSocket upgrade,
/// a plain GET, the publish API and an unknown route.
async fn make_requests_with_secrets_in_queries(server: &Server) {
    let [access_token, api_key, health_key, publish_key, mixed, bare, password] = SECRETS;
    let url = format!(
        "{}?access_token={access_token}&api_key={api_key}",
        server.ws_base()
    );
    let mut refused = WsClient::try_connect(&url, None, None)
        .await
        .expect("the upgrade completes and is closed with the reason");
    refused
        .expect_close_with(1008, "AUTHENTICATION_ERROR")
        .await;
    let health = server.get(&format!("/healthz?api_key={health_key}")).await;
    assert_eq!(health.status, 200);
    let allowed = server
        .get(&format!("/healthz?v=2&Api_Key={mixed}&{bare}"))
        .await;
    assert_eq!(allowed.status, 200);
    let body = json!({"user_ids": ["nobody"], "data": "x"}).to_string();
    let headers = [("X-API-Key", API_KEY), ("Content-Type", "application/json")];
    let published = server
        .post(
            &format!("/api/v1/publish?key={publish_key}"),
            &headers,
            &body,
        )
        .await;
    assert_eq!(published.status, 200, "{}", published.text());
    let missing = server.get(&format!("/nowhere?password={password}")).await;
    assert_eq!(missing.status, 404);
}

/// At trace level, the log of requests with credentials in their query strings holds none of
/// them, and shows each request target with the values replaced by `[redacted]`.
#[actix_web::test]
async fn query_values_that_may_be_credentials_never_reach_the_log() {
    let mut server = Server::start(TestSettings::new().env("RUST_LOG", "trace")).await;
    make_requests_with_secrets_in_queries(&server).await;
    server.sigterm();
    assert!(server.wait_exit(DEADLINE * 2).await.success());
    let log = server.log();
    for secret in SECRETS {
        assert!(!log.contains(secret), "the log leaks {secret}:\n{log}");
    }
    for target in [
        "/ws?access_token=[redacted]&api_key=[redacted]",
        "/healthz?api_key=[redacted]",
        "/healthz?v=2&Api_Key=[redacted]&[redacted]",
        "/api/v1/publish?key=[redacted]",
        "/nowhere?password=[redacted]",
    ] {
        assert!(log.contains(target), "no {target} in the log:\n{log}");
    }
}
