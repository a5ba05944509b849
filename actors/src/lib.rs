//! The actor system of websocket-service: everything between a broker message and the bytes on
//! a socket, with nothing of HTTP routing or configuration parsing in it.
//!
//! # Layout
//! - [`ids`] — newtypes for user and connection ids.
//! - [`close`] — close codes, error codes and the bounded JSON close reason.
//! - [`position`] — a durable message's place in its user's history: epoch and offset.
//! - [`payload`] — a published message, shared by every socket it fans out to.
//! - [`limiter`] — admission: the per-user quota and the global cap, as permits held by sessions.
//! - [`leases`] — quota leases in Redis: the cluster-wide per-user quota and presence counts.
//! - [`control`] — the cluster control channel: disconnect commands reach every replica.
//! - [`session`] — the `Session` actor, one per WebSocket: deadlines, bounded outbound queue;
//!   `session::messages` holds every message a session accepts and sends.
//! - [`hub`] — the `UserHub` actor, one per connected user: admission, quota, fan-out.
//! - [`directory`] — sharded `DirectoryShard` actors that find or create hubs.
//! - [`broker`] — the in-process and Redis brokers behind one handle, and what they exchange
//!   with the directory (`RouteUser`, `Interest`, `RouteSink`).
//! - [`history`] — per-user history: positions, durable publishing, reads for a resume.
//! - [`resume`] — the merge of history and live messages on a resume or catch-up.
//! - [`drain`] — the `DrainCoordinator` actor: readiness and graceful drain, and its pacing.
//! - [`metrics`] — the Prometheus metrics the actors update.
//! - [`trace`] — the forward-span hook and payload scans for `traceparent` and `ts`.
//! - [`wire`] — the server's WebSocket frames on a session's own TCP stream (the outbox).
//! - [`client_frames`] — the client's frames, validated as RFC 6455 requires as they arrive.
//! - [`v2`] — the JSON frames of client protocol v2, and [`v2::Protocol`].
//! - [`utf8`] — incremental UTF-8 validation of text arriving in pieces.
//! - [`backoff`] — capped exponential backoff with full jitter, for every retry loop.
//! - `ingest` (feature `kafka`) — the Kafka ingest: platform events become notifications.
//!
//! # Dependency direction
//! `drain` → `directory` → `hub` → `session`; the directory also uses `broker`, which names
//! none of them. `control` → `directory`; `limiter` → `leases`, which names none of them. Each actor reaches the one below through messages it defines or a
//! `Recipient`; no module depends on one above it. The server starts the directory with the
//! broker's interest recipient, then hands the directory to the broker
//! (`Broker::memory`, `Broker::redis(..)?.start`).

#![forbid(unsafe_code)]

pub mod backoff;
pub mod broker;
pub mod client_frames;
pub mod close;
pub mod control;
pub mod directory;
pub mod drain;
pub mod history;
pub mod hub;
pub mod ids;
#[cfg(feature = "kafka")]
pub mod ingest;
pub mod leases;
pub mod limiter;
pub mod metrics;
pub mod payload;
pub mod position;
pub mod resume;
pub mod session;
pub mod trace;
pub mod utf8;
pub mod v2;
pub mod wire;

pub use broker::{Broker, BrokerError, BrokerHealth, RedisConfig};
pub use close::{CloseCode, CloseReason, ErrorCode};
pub use directory::Directory;
pub use drain::{DrainCoordinator, DrainState, SpreadCloses};
pub use hub::{HubSettings, SessionInfo};
pub use ids::{ConnId, NodeId, UserId};
pub use leases::{LeaseConfig, LeaseGuard, LeaseMetrics, LeaseProtocol, Leases, QuotaReached};
pub use limiter::{AdmissionRefusal, ConnectionLimiter, ConnectionPermit, LingerSlot};
pub use metrics::RelayMetrics;
pub use payload::{Payload, Published};
pub use session::{HubLink, Session, SessionConfig, SessionParams, SpawnError, Upgraded};
