//! `--dev`: a zero-setup run. The in-process broker, a random JWT secret, publish API key and
//! console admin key for this run only, and a banner with a ready-to-use demo token, the
//! WebSocket URL, a publish command to copy, and the console's address and key.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use crate::auth;
use crate::config::{LogFormat, Settings};

/// How long the demo token stays valid.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The demo user.
pub const DEMO_USER: &str = "demo-user";

/// Fills in what `--dev` provides: random secret and API key, the in-process broker, the
/// console (with a random admin key unless one is set) and its demo tokens.
pub fn prepare(settings: &mut Settings) {
    if settings.auth.jwt_secret.is_empty() && settings.auth.jwt_public_key_file.is_empty() {
        settings.auth.jwt_secret = random_hex();
    }
    if settings.api.publish_api_key.is_empty() {
        settings.api.publish_api_key = random_hex();
    }
    settings.console.enabled = true;
    settings.console.demo_tokens = true;
    if settings.console.admin_key.is_empty() {
        settings.console.admin_key = random_hex();
    }
    settings.redis.url.clear();
    settings.redis.cluster_nodes.clear();
    settings.telemetry.log_format = LogFormat::Pretty;
}

fn random_hex() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Prints the banner: token, URL, publish command.
pub fn print_banner(settings: &Settings, addr: SocketAddr) {
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let token = match auth::mint_hs256(&settings.auth.jwt_secret, DEMO_USER, DEMO_TOKEN_TTL) {
        Ok(token) => token,
        Err(error) => {
            eprintln!("dev mode: cannot mint a demo token ({error}); is auth.jwt_secret set?");
            return;
        }
    };
    let key = &settings.api.publish_api_key;
    let admin_key = &settings.console.admin_key;
    let ws_path = &settings.server.ws_path;
    let banner = format!(
        "\n=== websocket-service dev mode (in-process broker; secret and key are random per run) ===\n\
         demo user:  {DEMO_USER}\n\
         demo token: {token}\n\
         WebSocket:  ws://{host}{ws_path}?token={token}\n\
         publish:    curl -s -X POST http://{host}/api/v1/publish -H 'X-API-Key: {key}' \
         -H 'Content-Type: application/json' -d '{{\"user_ids\":[\"{DEMO_USER}\"],\"data\":{{\"hello\":\"world\"}}}}'\n\
         console:    http://{host}/console  (admin key: {admin_key})\n\
         try it:     http://{host}/console/try  (sign in with the admin key; a socket as {DEMO_USER})\n\
         ===\n"
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes());
    let _ = out.flush();
}
