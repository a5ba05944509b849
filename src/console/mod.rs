//! The operator console (`[console] enabled`): a web page at `/console` and the JSON admin API
//! at `/api/v1/admin/…` behind the admin key, so that support can answer "is this user
//! connected, where, since when", send a test message and cut a user's sockets.
//!
//! # Layout
//! - `auth` — the admin key, the session cookie and its CSRF token.
//! - `api` — the admin API handlers.
//! - `assets` — the page and its scripts and styles, embedded in the binary, with strict
//!   security headers.
//! - `cluster` — the Redis side: each replica's heartbeat, and the quota leases per user.
//! - `stats` — this node's message rate and refusals per minute, sampled from its counters.
//! - `users` — the user lookup: this node's hubs merged with the leases of the others.
//! - `actions` — publish and disconnect behind the [`ConsoleActions`] trait.
//!
//! [`start`] builds the console and starts its sampler (every [`cluster::HEARTBEAT_EVERY`]: the
//! rate and refusal counts, then the heartbeat into Redis when Redis is configured);
//! [`configure`] registers its routes. With the console off neither runs and every console
//! path answers 404.

mod actions;
mod api;
mod assets;
mod auth;
mod cluster;
mod stats;
mod users;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use actix_web::middleware::DefaultHeaders;
use actix_web::web;
use anyhow::Context as _;
use serde_json::{json, Value};
use ws_actors::BrokerHealth;

pub use self::actions::{ActionError, ConsoleActions, LocalActions, Published};
pub use self::auth::{AdminAuth, Operator, SESSION_TTL};
use self::cluster::{BrokerState, ClusterStore};
pub use self::cluster::{NodeRecord, HEARTBEAT_EVERY, RECORD_TTL};
use self::stats::{minute_of, refusals_json, LiveStats, Sampler};
use crate::config::Settings;
use crate::state::AppState;

/// This build's version, in heartbeats.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How long a demo token (`--dev`, the "try it" page) stays valid.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// `--dev` only: mints tokens for the demo user, so the "try it" page can open a socket.
pub struct Demo {
    secret: String,
    /// The user the tokens are for.
    pub user: String,
}

/// Everything the console's handlers share.
pub struct Console {
    auth: AdminAuth,
    started_at: SystemTime,
    /// Written by the sampler only; the lock is never held across an await.
    live: Mutex<LiveStats>,
    cluster: Option<ClusterStore>,
    actions: Arc<dyn ConsoleActions>,
    demo: Option<Demo>,
    /// Where WebSockets are accepted (`server.ws_path`), for the "try it" page.
    ws_path: String,
}

impl Console {
    fn live(&self) -> LiveStats {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What this node would write in its heartbeat now.
    pub fn local_record(&self, state: &AppState) -> NodeRecord {
        let live = self.live();
        let relay = &state.metrics.relay;
        let broker = match state.broker.health() {
            BrokerHealth::Up => "up",
            BrokerHealth::Down { .. } => "down",
        };
        NodeRecord {
            id: state.node.to_string(),
            version: VERSION.to_owned(),
            started_at: rfc3339(self.started_at),
            connections: relay.connections_active.get().max(0) as u64,
            users: relay.users_active.get().max(0) as u64,
            messages_per_s: (live.messages_per_s * 10.0).round() / 10.0,
            broker: BrokerState {
                kind: state.broker.kind().to_owned(),
                state: broker.to_owned(),
            },
            draining: state.drain.is_draining(),
            updated_at: rfc3339(SystemTime::now()),
            refusals: live.refusals.minutes(),
        }
    }

    /// Every replica (from the heartbeats in Redis, this node's own record live), and where
    /// the list came from.
    pub async fn nodes(&self, state: &AppState) -> (Vec<NodeRecord>, Value) {
        let local = self.local_record(state);
        let Some(cluster) = &self.cluster else {
            return (vec![local], json!({ "source": "local" }));
        };
        match cluster.nodes().await {
            Ok(mut nodes) => {
                nodes.retain(|node| node.id != local.id);
                nodes.push(local);
                nodes.sort_by(|a, b| a.id.cmp(&b.id));
                (nodes, json!({ "source": "redis" }))
            }
            Err(error) => {
                let error = format!("redis unreachable, this node only: {error}");
                (vec![local], json!({ "source": "local", "error": error }))
            }
        }
    }
}

/// A node as the API shows it: its record without the refusal log, and whether it answered.
fn node_json(node: &NodeRecord, this_node: &str) -> Value {
    let mut json = serde_json::to_value(node).unwrap_or_default();
    if let Some(fields) = json.as_object_mut() {
        fields.remove("refusals");
        fields.insert("this_node".into(), json!(node.id == this_node));
    }
    json
}

/// The refusals of every node in `nodes`, summed per minute over the window.
fn cluster_refusals(nodes: &[NodeRecord]) -> Value {
    let mut json = refusals_json(
        minute_of(SystemTime::now()),
        nodes.iter().map(|n| n.refusals.as_slice()),
    );
    json["nodes"] = json!(nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>());
    json
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Builds the console when `console.enabled` and starts its sampler (and heartbeat); `None`
/// with the console off. The task ends when the returned handle is aborted.
pub fn start(
    settings: &Settings,
    state: &web::Data<AppState>,
) -> anyhow::Result<Option<(web::Data<Console>, tokio::task::JoinHandle<()>)>> {
    if !settings.console.enabled {
        return Ok(None);
    }
    let cluster = match settings.redis.target() {
        None => None,
        Some(target) => {
            let store = ClusterStore::new(&target, &settings.redis.channel_prefix)
                .context("invalid setting redis.url or redis.cluster_nodes")?;
            Some(store)
        }
    };
    let demo = settings
        .console
        .demo_tokens
        .then(|| settings.auth.jwt_secret.clone())
        .filter(|secret| !secret.is_empty())
        .map(|secret| Demo {
            secret,
            user: crate::dev::DEMO_USER.to_owned(),
        });
    let actions = LocalActions {
        broker: state.broker.clone(),
        history: state.history.clone(),
    };
    let console = web::Data::new(Console {
        auth: AdminAuth::new(&settings.console.admin_key)?,
        started_at: SystemTime::now(),
        live: Mutex::new(LiveStats::default()),
        cluster,
        actions: Arc::new(actions),
        demo,
        ws_path: settings.server.ws_path.clone(),
    });
    let task = actix_web::rt::spawn(sample_and_beat(state.clone(), console.clone()));
    Ok(Some((console, task)))
}

/// Every [`HEARTBEAT_EVERY`]: samples this node's counters, then writes its heartbeat. A Redis
/// failure is logged once when it starts and once when it ends.
async fn sample_and_beat(state: web::Data<AppState>, console: web::Data<Console>) {
    let mut sampler = Sampler::new(state.metrics.relay.clone());
    let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        {
            let mut live = console.live.lock().unwrap_or_else(PoisonError::into_inner);
            sampler.sample(&mut live, SystemTime::now());
        }
        let Some(cluster) = &console.cluster else {
            continue;
        };
        match cluster.beat(&console.local_record(&state)).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("console heartbeat written to redis again");
            }
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "console heartbeat not written: other replicas do not see this node");
            }
            Err(_) => {}
        }
    }
}

/// Registers the console page and the admin API.
pub fn configure(cfg: &mut web::ServiceConfig, console: web::Data<Console>) {
    let api = web::scope("/api/v1/admin")
        .wrap(assets::api_headers())
        .route("/login", web::post().to(api::login))
        .route("/logout", web::post().to(api::logout))
        .route("/session", web::get().to(api::session))
        .route("/overview", web::get().to(api::overview))
        .route("/nodes", web::get().to(api::nodes))
        .route("/refusals", web::get().to(api::refusals))
        .route("/users/{user_id}", web::get().to(api::user))
        .route("/publish", web::post().to(api::publish))
        .route("/disconnect", web::post().to(api::disconnect))
        .route("/demo-token", web::post().to(api::demo_token));
    let pages = web::scope("/console")
        .wrap(assets::page_headers())
        .route("", web::get().to(assets::index))
        .route("/", web::get().to(assets::index))
        .route("/try", web::get().to(assets::try_page))
        .route("/assets/{name}", web::get().to(assets::asset));
    cfg.app_data(console).service(api).service(pages);
}

/// Headers every console response carries (for `DefaultHeaders`).
fn security_headers(csp: &'static str) -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("content-security-policy", csp))
        .add(("x-frame-options", "DENY"))
        .add(("x-content-type-options", "nosniff"))
        .add(("referrer-policy", "no-referrer"))
        .add(("cross-origin-opener-policy", "same-origin"))
        .add(("cross-origin-resource-policy", "same-origin"))
        .add(("cache-control", "no-store"))
}
