//! websocket-service: a JWT-authenticated WebSocket relay. Backends publish per-user
//! notifications (Redis channel `ws:{user_id}`, or the publish API); every socket of that user
//! receives them.
//!
//! # Layout
//! - [`config`] — settings from `settings.toml` and `WS__SECTION__KEY` overrides.
//! - [`console`] — the operator console at `/console` and the admin API `/api/v1/admin/…`.
//! - [`auth`] — JWT validation for upgrades.
//! - [`routes`] — the HTTP surface (`/ws`, `/healthz`, `/readyz`, `/metrics`, publish API).
//! - [`correlation`] — correlation ids and request metrics middleware.
//! - [`errors`] — the HTTP error JSON.
//! - [`http_spans`] — HTTP request spans with query values redacted.
//! - [`metrics`] — the Prometheus registry.
//! - [`open_files`] — the open-files limit, raised at start-up, and the cap kept within it.
//! - [`telemetry`] — logging.
//! - [`dev`] — the zero-setup `--dev` mode.
//! - [`state`] — what handlers share.
//! - [`shutdown`] — shutdown as a value: the handle that triggers the drain.
//!
//! [`run`] serves on an already bound listener until its [`Shutdown`] is triggered; the binary
//! turns SIGTERM and SIGINT into triggers, tests trigger it directly.
//!
//! The actors (sessions, hubs, directory, brokers, drain) live in the `ws-actors` crate.

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod console;
pub mod correlation;
pub mod dev;
pub mod errors;
pub mod http_spans;
pub mod metrics;
pub mod open_files;
pub mod routes;
pub mod shutdown;
mod startup;
pub mod state;
pub mod telemetry;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use actix_http::HttpService;
use actix_service::{fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::middleware::from_fn;
use actix_web::{web, App};
use anyhow::Context as _;
use tokio::sync::oneshot;
use tracing_actix_web::TracingLogger;
use ws_actors::drain::{DrainOutcome, ShutdownSignal};
use ws_actors::history::HistoryStore;
use ws_actors::trace::ForwardTracer;
use ws_actors::{ConnectionLimiter, DrainCoordinator, DrainState, NodeId, SessionConfig};

use crate::config::Settings;
use crate::http_spans::RedactingRootSpan;
use crate::metrics::Metrics;
pub use crate::shutdown::{Shutdown, ShutdownHandle};
use crate::startup::{history_access, start_broker, start_cluster, Started, LEASE_RELEASE_GRACE};
use crate::state::AppState;
use crate::telemetry::UserIdHasher;

/// Extra HTTP connections each worker serves beyond the cap (upgraded sockets leave the HTTP
/// layer, so this bounds requests in flight, not WebSockets).
const ACCEPT_MARGIN: usize = 1024;

/// How long a closed WebSocket's TCP connection waits for the client to hang up before the
/// server drops it (the close frame is already written); actix's default of 1 s doubled
/// reconnect gaps during a drain.
pub(crate) const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// Handshakes the kernel may queue before the server accepts them. The listener is bound with
/// std's 128, which overflowed under connect bursts (a dropped SYN costs the client 1 s).
const LISTEN_BACKLOG: i32 = 4096;

/// How many HTTP workers (and directory shards) to run.
fn worker_count(settings: &Settings) -> usize {
    match settings.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn session_config(settings: &Settings) -> SessionConfig {
    let limits = &settings.limits;
    SessionConfig {
        heartbeat_interval: Duration::from_secs(limits.heartbeat_interval_s),
        heartbeat_timeout: Duration::from_secs(limits.heartbeat_timeout_s),
        idle_timeout: Duration::from_secs(limits.idle_timeout_s),
        send_queue_max: limits.send_queue_max,
        close_on_expiry: settings.auth.close_on_expiry,
        max_frame_bytes: settings.server.max_frame_bytes,
    }
}

/// The Kafka ingest (`[kafka]`): started after the broker when `kafka.brokers` is set.
#[cfg(feature = "kafka")]
mod kafka {
    use std::sync::Arc;

    use actix_web::web;
    use anyhow::Context as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use ws_actors::history::HistoryStore;
    use ws_actors::ingest::{Ingest, IngestMetrics, TraceParent};
    use ws_actors::Broker;

    use crate::config::Settings;
    use crate::metrics::Metrics;
    use crate::routes::IngestStatus;
    use crate::telemetry;

    /// Parents `kafka.ingest` spans on the envelope's `traceparent` (when exporting traces).
    struct OtelTraceParent;

    impl TraceParent for OtelTraceParent {
        fn set_parent(&self, span: &tracing::Span, traceparent: &str) {
            let _ = span.set_parent(telemetry::remote_context(traceparent));
        }
    }

    /// Starts the ingest, publishing durably into `history` when history is on.
    pub(super) fn start(
        settings: &Settings,
        broker: &Broker,
        history: Option<&HistoryStore>,
        metrics: &Metrics,
        exporting: bool,
    ) -> anyhow::Result<Option<Ingest>> {
        if !settings.kafka.enabled() {
            return Ok(None);
        }
        let ingest_metrics =
            IngestMetrics::register(&metrics.registry).context("cannot register metrics")?;
        let trace = exporting.then(|| Arc::new(OtelTraceParent) as Arc<dyn TraceParent>);
        let config = settings.kafka.ingest_config(&settings.redis);
        let history = history.cloned();
        let ingest = Ingest::start(config, broker.clone(), history, ingest_metrics, trace)
            .context("cannot start the kafka ingest")?;
        Ok(Some(ingest))
    }

    pub(super) fn status(ingest: &Ingest, settings: &Settings) -> web::Data<IngestStatus> {
        web::Data::new(IngestStatus {
            health: ingest.health_receiver(),
            required: settings.kafka.required,
        })
    }
}

/// Forwards every trigger of `shutdown` to the drain coordinator (the first drains, the next
/// one exits at once).
fn forward_shutdown(mut shutdown: Shutdown, coordinator: Addr<DrainCoordinator>) {
    actix_web::rt::spawn(async move {
        while shutdown.triggered().await.is_some() {
            coordinator.do_send(ShutdownSignal);
        }
    });
}

/// Runs the server on `listener` until `shutdown` drains it. Returns once the process may exit.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    run_traced(settings, listener, shutdown, None).await
}

/// Like [`run`]; `tracer` makes forward spans when trace export is on.
pub async fn run_traced(
    settings: Settings,
    listener: TcpListener,
    shutdown: Shutdown,
    tracer: Option<Arc<dyn ForwardTracer>>,
) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("cannot register metrics")?;
    let workers = worker_count(&settings);
    let shards: Vec<Arbiter> = (0..workers).map(|_| Arbiter::new()).collect();
    #[cfg(feature = "kafka")]
    let exporting = tracer.is_some();
    let Started {
        broker,
        directory,
        history,
    } = start_broker(&settings, &shards, &metrics, tracer)?;
    let shared_history = history.as_ref().map(HistoryStore::shared);
    let node = NodeId::generate();
    tracing::info!(node = %node, "node id");
    let cluster = start_cluster(&settings, &directory, &metrics, &node)?;
    let leases = cluster.leases.clone();
    #[cfg(feature = "kafka")]
    let ingest = kafka::start(&settings, &broker, history.as_ref(), &metrics, exporting)?;
    #[cfg(feature = "kafka")]
    let ingest_status = ingest.as_ref().map(|i| kafka::status(i, &settings));
    #[cfg(not(feature = "kafka"))]
    let ingest_status: Option<web::Data<routes::IngestStatus>> = None;
    let limiter = ConnectionLimiter::new(
        settings.limits.max_connections,
        settings.limits.max_connections_per_user,
    );
    let drain = DrainState::default();
    let (done_tx, done_rx) = oneshot::channel();
    let coordinator = DrainCoordinator::new(
        drain.clone(),
        directory.clone(),
        limiter.clone(),
        Duration::from_secs(settings.shutdown.drain_timeout_s),
        done_tx,
    )
    .start();
    forward_shutdown(shutdown, coordinator);

    let state = web::Data::new(AppState {
        validator: settings.auth.token_validator()?,
        broker,
        directory,
        limiter,
        leases: cluster.leases,
        cluster_quota: cluster.quota,
        control: cluster.control,
        drain,
        metrics: metrics.clone(),
        session_config: Arc::new(session_config(&settings)),
        allowed_origins: settings.server.allowed_origins.clone(),
        publish_api_key: Some(settings.api.publish_api_key.clone()).filter(|k| !k.is_empty()),
        trace_user_hash: UserIdHasher::from_settings(&settings.telemetry, &settings.auth)?,
        history_access: shared_history
            .as_ref()
            .map(|store| Arc::new(history_access(&settings, store))),
        history: shared_history,
        node,
    });
    let console = console::start(&settings, &state)?;
    let (console_data, console_task) = console.unzip();
    let server = http_server(
        &settings,
        listener,
        workers,
        state,
        ingest_status,
        console_data,
    )?;
    let handle = server.handle();
    let serving = actix_web::rt::spawn(server);

    let outcome = done_rx.await.unwrap_or(DrainOutcome::Forced);
    tracing::info!(?outcome, "shutting down");
    // Every session is gone (or the deadline passed): nothing is left worth waiting for.
    handle.stop(false).await;
    let _ = serving.await;
    if let Some(task) = console_task {
        task.abort();
    }
    if let Some(leases) = leases {
        leases.release_all(LEASE_RELEASE_GRACE).await;
    }
    #[cfg(feature = "kafka")]
    if let Some(ingest) = ingest {
        ingest.stop().await;
    }
    for shard in shards {
        shard.stop();
    }
    Ok(())
}

/// The HTTP server (routes, middleware, the WebSocket upgrade) on `listener`, built but not yet
/// polled.
fn http_server(
    settings: &Settings,
    listener: TcpListener,
    workers: usize,
    state: web::Data<AppState>,
    ingest_status: Option<web::Data<routes::IngestStatus>>,
    console: Option<web::Data<console::Console>>,
) -> anyhow::Result<actix_server::Server> {
    let http_metrics = web::Data::new(state.metrics.http.clone());
    let publish_body_limits = web::Data::new(routes::BodyLimits {
        max_bytes: routes::PUBLISH_MAX_BODY_BYTES,
        timeout: Duration::from_secs(settings.api.body_timeout_s),
    });
    let ws_path = settings.server.ws_path.clone();
    let upgrade_context = routes::UpgradeContext {
        state: state.clone(),
        http_metrics: state.metrics.http.clone(),
        ws_path: Arc::from(ws_path.as_str()),
    };
    socket2::SockRef::from(&listener)
        .listen(LISTEN_BACKLOG)
        .context("cannot set the listen backlog of server.bind")?;
    let server = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(settings.limits.max_connections + ACCEPT_MARGIN)
        .disable_signals()
        .shutdown_timeout(1)
        .listen("http", listener, move || {
            let ws_path = ws_path.clone();
            let app = App::new()
                .app_data(state.clone())
                .app_data(http_metrics.clone())
                .app_data(publish_body_limits.clone());
            let app = match ingest_status.clone() {
                Some(status) => app.app_data(status),
                None => app,
            }
            .wrap(from_fn(correlation::middleware))
            .wrap(TracingLogger::<RedactingRootSpan>::new())
            .configure(|cfg| {
                if let Some(console) = console.clone() {
                    console::configure(cfg, console);
                }
                routes::configure(cfg, &ws_path);
            });
            let upgrade_context = upgrade_context.clone();
            let upgrade = fn_service(move |(req, framed)| {
                routes::upgrade(upgrade_context.clone(), req, framed)
            });
            HttpService::build()
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .upgrade(upgrade)
                .finish(map_config(app, |()| AppConfig::default()))
                .tcp()
        })
        .context("cannot listen on server.bind")?
        .run();
    Ok(server)
}
