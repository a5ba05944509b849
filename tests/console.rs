//! End-to-end tests of the operator console and its admin API (`/api/v1/admin/…`) against real
//! servers (and a real `redis-server` where replicas meet): 404 with the console off, 401 with
//! the error JSON without the admin key, the session cookie and its CSRF token, the security
//! headers of the page, and what each endpoint answers: replicas, a user's sockets (this node's
//! hubs and other replicas' leases), a test publish that reaches the socket, a disconnect that
//! closes it 4003, refusals counted by reason.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use redis::AsyncCommands as _;
use serde_json::{json, Value};
use ws_actors::broker::keys::UserKeys;
use ws_actors::UserId;

/// The admin key of every console-on test server.
const ADMIN_KEY: &str = "console-admin-key-0123456789";

fn console_on() -> TestSettings {
    TestSettings::new()
        .set("console.enabled", true)
        .set("console.admin_key", ADMIN_KEY)
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// `GET path` with the admin key; asserts 200 and returns the JSON.
async fn admin_get(server: &Server, path: &str) -> Value {
    let auth = bearer(ADMIN_KEY);
    let reply = server.get_with(path, &[("Authorization", &auth)]).await;
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
    reply.json()
}

/// `POST path` with the admin key and a JSON body.
async fn admin_post(server: &Server, path: &str, body: Value) -> HttpReply {
    let auth = bearer(ADMIN_KEY);
    server
        .post(
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &body.to_string(),
        )
        .await
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// With the console off (the default), the page and every admin endpoint answer 404 with the
/// error JSON, whatever the credentials.
#[actix_web::test]
async fn console_off_answers_404() {
    let server = Server::start_in_process(TestSettings::new()).await;
    server.get("/console").await.assert_error(404, "NOT_FOUND");
    server
        .get("/console/assets/app.js")
        .await
        .assert_error(404, "NOT_FOUND");
    let auth = bearer(ADMIN_KEY);
    for path in ["/api/v1/admin/nodes", "/api/v1/admin/users/u"] {
        let reply = server.get_with(path, &[("Authorization", &auth)]).await;
        reply.assert_error(404, "NOT_FOUND");
    }
    let login = json!({ "key": ADMIN_KEY }).to_string();
    server
        .post(
            "/api/v1/admin/login",
            &[("Content-Type", "application/json")],
            &login,
        )
        .await
        .assert_error(404, "NOT_FOUND");
}

/// Without the admin key, or with a wrong one, every endpoint answers 401 AUTHENTICATION_ERROR
/// with the error JSON; a publish is refused before its body is read.
#[actix_web::test]
async fn a_missing_or_wrong_key_is_401_with_the_error_json() {
    let server = Server::start_in_process(console_on()).await;
    let wrong = bearer("not-the-admin-key-at-all");
    for path in [
        "/api/v1/admin/nodes",
        "/api/v1/admin/overview",
        "/api/v1/admin/refusals",
        "/api/v1/admin/users/alice",
        "/api/v1/admin/session",
    ] {
        server
            .get(path)
            .await
            .assert_error(401, "AUTHENTICATION_ERROR");
        let reply = server.get_with(path, &[("Authorization", &wrong)]).await;
        reply.assert_error(401, "AUTHENTICATION_ERROR");
    }
    for path in ["/api/v1/admin/publish", "/api/v1/admin/disconnect"] {
        let body = json!({ "user_id": "alice", "data": "x" }).to_string();
        let reply = server
            .post(
                path,
                &[
                    ("Authorization", &wrong),
                    ("Content-Type", "application/json"),
                ],
                &body,
            )
            .await;
        reply.assert_error(401, "AUTHENTICATION_ERROR");
        assert_eq!(
            reply.header("connection"),
            Some("close"),
            "body left unread"
        );
    }
    let login = json!({ "key": "wrong-key-0123456789" }).to_string();
    let reply = server
        .post(
            "/api/v1/admin/login",
            &[("Content-Type", "application/json")],
            &login,
        )
        .await;
    reply.assert_error(401, "AUTHENTICATION_ERROR");
    assert!(reply.header("set-cookie").is_none());
}

/// The page and its assets come from the binary with a strict policy: no inline script, no
/// framing, no sniffing, nothing cached; every asset it names is served.
#[actix_web::test]
async fn the_page_is_embedded_and_served_with_strict_headers() {
    let server = Server::start_in_process(console_on()).await;
    let page = server.get("/console").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    let csp = page.header("content-security-policy").unwrap_or("");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let html = page.text();
    let assets: Vec<&str> = html
        .split("/console/assets/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(assets.contains(&"app.js") && assets.contains(&"console.css"));
    for name in assets
        .iter()
        .chain(&["api.js", "views.js", "dom.js", "try.js"])
    {
        let asset = server.get(&format!("/console/assets/{name}")).await;
        assert_eq!(asset.status, 200, "{name}");
        assert_eq!(asset.header("x-content-type-options"), Some("nosniff"));
    }
    let script = server.get("/console/assets/app.js").await;
    assert!(script
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/javascript"));
    assert_eq!(server.get("/console/try").await.status, 200);
    server
        .get("/console/assets/nope.js")
        .await
        .assert_error(404, "NOT_FOUND");
    let auth = bearer(ADMIN_KEY);
    let unknown = server
        .get_with("/api/v1/admin/nope", &[("Authorization", &auth)])
        .await;
    unknown.assert_error(404, "NOT_FOUND");
}

/// Login posts the key once and gets an HttpOnly, SameSite=Strict session cookie (not
/// `Secure` on plain-HTTP loopback) and a CSRF token; with the cookie, reads work, and a state
/// change without the token (or with a wrong one) is 403 while with it it succeeds.
#[actix_web::test]
async fn the_session_cookie_needs_its_csrf_token_for_actions() {
    let server = Server::start_in_process(console_on()).await;
    let login = json!({ "key": ADMIN_KEY }).to_string();
    let reply = server
        .post(
            "/api/v1/admin/login",
            &[("Content-Type", "application/json")],
            &login,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let set_cookie = reply
        .header("set-cookie")
        .expect("a session cookie")
        .to_owned();
    assert!(set_cookie.contains("; HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("; SameSite=Strict"), "{set_cookie}");
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP on loopback: {set_cookie}"
    );
    assert!(!set_cookie.contains(ADMIN_KEY), "the key is not the cookie");
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    let csrf = reply.json()["csrf_token"]
        .as_str()
        .expect("csrf_token")
        .to_owned();

    let session = server
        .get_with("/api/v1/admin/session", &[("Cookie", &cookie)])
        .await;
    assert_eq!(session.status, 200, "{}", session.text());
    assert_eq!(session.json()["csrf_token"], csrf.as_str());
    let nodes = server
        .get_with("/api/v1/admin/nodes", &[("Cookie", &cookie)])
        .await;
    assert_eq!(nodes.status, 200);

    let body = json!({ "user_id": "alice", "data": {"test": true} }).to_string();
    let json_type = ("Content-Type", "application/json");
    for csrf_header in [None, Some("wrong-token")] {
        let mut headers = vec![("Cookie", cookie.as_str()), json_type];
        if let Some(token) = csrf_header {
            headers.push(("X-CSRF-Token", token));
        }
        let refused = server.post("/api/v1/admin/publish", &headers, &body).await;
        let error = refused.assert_error(403, "AUTHENTICATION_ERROR");
        assert!(error["message"].as_str().unwrap_or("").contains("CSRF"));
    }
    let headers = [
        ("Cookie", cookie.as_str()),
        json_type,
        ("X-CSRF-Token", csrf.as_str()),
    ];
    let published = server.post("/api/v1/admin/publish", &headers, &body).await;
    assert_eq!(published.status, 200, "{}", published.text());

    let logout = server.post("/api/v1/admin/logout", &headers, "").await;
    assert_eq!(logout.status, 200, "{}", logout.text());
    let cleared = logout.header("set-cookie").unwrap_or("");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

/// On one node without Redis: the node lists itself and counts a new socket, the lookup shows
/// the user online with that socket, a test publish reaches it byte for byte, and a disconnect
/// closes it 4003 AUTHENTICATION_ERROR with the reason; the user is then offline.
#[actix_web::test]
async fn one_node_lists_looks_up_publishes_and_disconnects() {
    let server = Server::start_in_process(console_on()).await;
    let before = now_ms();
    let mut socket = server.connect(&token("teacher-1")).await;

    let nodes = wait_for(DEADLINE, "the node to count the socket", || async {
        let nodes = admin_get(&server, "/api/v1/admin/nodes").await;
        (nodes["nodes"][0]["connections"] == 1).then_some(nodes)
    })
    .await;
    let node = &nodes["nodes"][0];
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(1));
    assert_eq!(node["this_node"], true);
    assert_eq!(node["users"], 1);
    assert_eq!(node["draining"], false);
    assert_eq!(node["broker"]["kind"], "memory");
    for field in ["id", "version", "started_at", "messages_per_s"] {
        assert!(!node[field].is_null(), "{field} in {node}");
    }

    let user = wait_for(DEADLINE, "the lookup to show the socket", || async {
        let user = admin_get(&server, "/api/v1/admin/users/teacher-1").await;
        (user["online"] == true).then_some(user)
    })
    .await;
    assert_eq!(user["user_id"], "teacher-1");
    let connection = &user["connections"][0];
    assert_eq!(connection["node"], node["id"]);
    assert_eq!(connection["protocol"], "legacy");
    let since = connection["since_ms"].as_u64().expect("since_ms");
    assert!(since >= before - 1000 && since <= now_ms(), "{since}");
    assert_eq!(
        user["history"],
        json!([]),
        "history on, nothing published yet"
    );

    let published = admin_post(
        &server,
        "/api/v1/admin/publish",
        json!({ "user_id": "teacher-1", "data": {"type": "console.test", "n": 1} }),
    )
    .await;
    assert_eq!(published.status, 200, "{}", published.text());
    assert_eq!(published.json()["published"]["user_id"], "teacher-1");
    assert_eq!(
        socket.recv_text(DEADLINE).await,
        r#"{"type":"console.test","n":1}"#
    );
    // The test message is durable: the lookup shows it in the user's history, with its offset.
    let user = admin_get(&server, "/api/v1/admin/users/teacher-1").await;
    assert_eq!(user["history"][0]["offset"], 1, "{user}");
    assert_eq!(user["position"]["offset"], 1, "{user}");
    let epoch = user["position"]["epoch"].as_str().unwrap_or_default();
    assert_eq!(
        user["connections"][0]["last_position"],
        format!("{epoch}:1")
    );

    let done = admin_post(
        &server,
        "/api/v1/admin/disconnect",
        json!({ "user_id": "teacher-1", "reason": "account locked" }),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["disconnected"], 1);
    assert_eq!(done.json()["close_code"], 4003);
    let closed = socket.expect_close_with(4003, "AUTHENTICATION_ERROR").await;
    assert_eq!(closed.json["message"], "account locked");

    wait_until(DEADLINE, "the user to be offline", || async {
        admin_get(&server, "/api/v1/admin/users/teacher-1").await["online"] == false
    })
    .await;
    assert_eq!(
        server
            .metric(r#"ws_connections_closed_total{code="4003"}"#)
            .await,
        Some(1.0)
    );
}

/// Bad requests to the actions are 400 with the error JSON: a malformed body, an empty user id.
#[actix_web::test]
async fn malformed_actions_are_400() {
    let server = Server::start_in_process(console_on()).await;
    let auth = bearer(ADMIN_KEY);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    for (path, body) in [
        ("/api/v1/admin/publish", "not json"),
        ("/api/v1/admin/publish", r#"{"user_id":"","data":1}"#),
        ("/api/v1/admin/publish", r#"{"user_id":"u"}"#),
        ("/api/v1/admin/disconnect", r#"{"reason":"x"}"#),
    ] {
        let reply = server.post(path, &headers, body).await;
        reply.assert_error(400, "VALIDATION_ERROR");
    }
}

/// Two replicas sharing a Redis see each other through their heartbeats; a user's sockets on
/// other replicas come from the leases in Redis (expired ones ignored, this node's own from its
/// hubs); a test publish from one replica reaches a socket on the other.
#[actix_web::test]
async fn replicas_sharing_a_redis_see_each_other() {
    let redis = RedisServer::start().await;
    let a = Server::start_in_process(console_on().set("redis.url", redis.url())).await;
    let b = Server::start_in_process(console_on().set("redis.url", redis.url())).await;
    let mut socket = b.connect(&token("teacher-2")).await;
    redis.wait_subscribed("teacher-2", 1).await;

    let nodes = wait_for(DEADLINE, "A to see both replicas", || async {
        let nodes = admin_get(&a, "/api/v1/admin/nodes").await;
        let list = nodes["nodes"].as_array().cloned().unwrap_or_default();
        let b_counts = list
            .iter()
            .any(|n| n["this_node"] == false && n["connections"] == 1);
        (list.len() == 2 && b_counts).then_some(nodes)
    })
    .await;
    assert_eq!(nodes["cluster"]["source"], "redis");
    let b_id = nodes["nodes"]
        .as_array()
        .and_then(|list| list.iter().find(|n| n["this_node"] == false))
        .map(|n| n["id"].clone())
        .expect("B in A's list");
    let overview = admin_get(&a, "/api/v1/admin/overview").await;
    assert_eq!(overview["totals"]["nodes"], 2);
    assert_eq!(overview["totals"]["connections"], 1);

    // B's socket has its real lease; beside it, an expired lease and a lease naming A itself (A
    // answers for itself from its hubs, which hold nothing for this user): both ignored.
    let keys = UserKeys::of_user(PREFIX, &UserId::new("teacher-2"));
    let a_id = admin_get(&a, "/api/v1/admin/session").await["node"].clone();
    let live = now_ms() + 30_000;
    let mut conn = redis.conn().await;
    let leases: Vec<(u64, String)> = vec![
        (now_ms() - 1_000, "gone-node/1".to_owned()),
        (live, format!("{}/99", a_id.as_str().unwrap_or(""))),
    ];
    let _: () = conn
        .zadd_multiple(keys.leases(), &leases)
        .await
        .expect("ZADD");
    for (_, member) in &leases {
        let (node, conn_id) = member.split_once('/').expect("node/conn");
        let info = json!({"node": node, "conn": conn_id.parse::<u64>().unwrap_or(0),
                          "since_ms": 1_700_000_000_000u64, "protocol": "legacy"});
        let _: () = conn
            .hset(keys.lease_info(), member, info.to_string())
            .await
            .expect("HSET");
    }
    let user = admin_get(&a, "/api/v1/admin/users/teacher-2").await;
    assert_eq!(user["online"], true, "{user}");
    assert_eq!(user["cluster"]["source"], "redis");
    let connections = user["connections"].as_array().cloned().unwrap_or_default();
    assert_eq!(connections.len(), 1, "{user}");
    assert_eq!(connections[0]["node"], b_id);
    assert_eq!(connections[0]["protocol"], "legacy");
    assert_eq!(connections[0]["this_node"], false);

    let published = admin_post(
        &a,
        "/api/v1/admin/publish",
        json!({ "user_id": "teacher-2", "data": "across replicas" }),
    )
    .await;
    assert_eq!(published.status, 200, "{}", published.text());
    assert_eq!(socket.recv_text(DEADLINE).await, "across replicas");
}

/// Refused upgrades are counted per minute by reason: two bad tokens show as `auth_failed` in
/// the refusals window (sampled from the counters every 2 s).
#[actix_web::test]
async fn refusals_are_counted_by_reason() {
    let server = Server::start_in_process(console_on()).await;
    for _ in 0..2 {
        let mut refused = server.connect(&wrong_secret_token("mallory")).await;
        refused
            .expect_close_with(1008, "AUTHENTICATION_ERROR")
            .await;
    }
    let refusals = wait_for(
        Duration::from_secs(8),
        "two auth refusals in the window",
        || async {
            let refusals = admin_get(&server, "/api/v1/admin/refusals").await;
            (refusals["totals"]["auth_failed"] == 2).then_some(refusals)
        },
    )
    .await;
    assert_eq!(refusals["window_minutes"], 15);
    assert_eq!(refusals["minutes"].as_array().map(Vec::len), Some(15));
    assert_eq!(refusals["totals"]["quota_user"], 0);
    let last_minutes: u64 = refusals["minutes"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .take(2)
        .map(|m| m["counts"]["auth_failed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        last_minutes, 2,
        "counted in the current (or previous) minute"
    );
}

/// `--dev` turns the console on with a random admin key and prints the console's URL and key
/// beside the demo token; that key signs in, and the "try it" page may mint a demo token.
#[actix_web::test]
async fn dev_mode_prints_the_console_url_and_a_working_key() {
    let server = Server::start(
        TestSettings::new()
            .unset("auth.jwt_secret")
            .set("api.publish_api_key", "")
            .dev(),
    )
    .await;
    let log = server.log();
    let line = log
        .lines()
        .find(|line| line.trim_start().starts_with("console:"))
        .unwrap_or_else(|| panic!("no console line printed:\n{log}"));
    assert!(
        line.contains(&format!("http://127.0.0.1:{}/console", server.port())),
        "{line}"
    );
    let key = line
        .split("admin key: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .filter(|key| key.len() >= 16)
        .unwrap_or_else(|| panic!("no admin key printed: {line}"))
        .to_owned();
    let auth = bearer(&key);
    let session = server
        .get_with("/api/v1/admin/session", &[("Authorization", &auth)])
        .await;
    assert_eq!(session.status, 200, "{}", session.text());
    assert_eq!(session.json()["demo_user"], "demo-user");
    let demo = server
        .post("/api/v1/admin/demo-token", &[("Authorization", &auth)], "")
        .await;
    assert_eq!(demo.status, 200, "{}", demo.text());
    let demo_token = demo.json()["token"].as_str().expect("token").to_owned();
    let mut socket = WsClient::connect_via(&server, &demo_token, TokenVia::Subprotocol).await;
    wait_until(DEADLINE, "the demo user to be online", || async {
        let user = server
            .get_with("/api/v1/admin/users/demo-user", &[("Authorization", &auth)])
            .await;
        user.status == 200 && user.json()["online"] == true
    })
    .await;
    let published = server
        .post(
            "/api/v1/admin/publish",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &json!({"user_id": "demo-user", "data": "hello from dev"}).to_string(),
        )
        .await;
    assert_eq!(published.status, 200, "{}", published.text());
    assert_eq!(socket.recv_text(DEADLINE).await, "hello from dev");
}

/// Outside `--dev` the demo-token endpoint does not exist: the console never mints tokens for
/// real users.
#[actix_web::test]
async fn demo_tokens_exist_only_in_dev_mode() {
    let server = Server::start_in_process(console_on()).await;
    let auth = bearer(ADMIN_KEY);
    server
        .post("/api/v1/admin/demo-token", &[("Authorization", &auth)], "")
        .await
        .assert_error(404, "NOT_FOUND");
}
