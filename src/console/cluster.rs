//! The console's view of the other replicas, through the Redis they share:
//!
//! - **Heartbeats**: every replica with the console on writes its [`NodeRecord`] every
//!   [`HEARTBEAT_EVERY`] to `{ws-console}:node:<id>` (a JSON string expiring after
//!   [`RECORD_TTL`]) and adds its id to the set `{ws-console}:nodes`. Readers take the set, read
//!   the records in one `MGET` and drop the ids whose record has expired (a replica that
//!   stopped). Liveness is the key's TTL, so replicas' clocks never need to agree. Every key
//!   carries the hash tag `{ws-console}`, so in Redis Cluster they share one slot and the
//!   `MGET` and the pipeline stay legal.
//! - **Leases**: the per-socket quota leases other code keeps per user (a sorted set
//!   `UserKeys::leases()` of `<node>/<conn>` scored by expiry in ms, and a hash
//!   `UserKeys::lease_info()` of details by member), read against Redis' own clock (`TIME`):
//!   which sockets a user has on every replica.

use std::collections::HashMap;
use std::time::Duration;

use redis::RedisError;
use serde::{Deserialize, Serialize};
use ws_actors::broker::keys::UserKeys;
use ws_actors::broker::{BrokerError, ConnOptions, RedisConn, RedisTarget};
use ws_actors::UserId;

use super::stats::MinuteCounts;

/// How often each replica writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How long a heartbeat record lives: three missed beats and the replica is gone.
pub const RECORD_TTL: Duration = Duration::from_secs(6);
/// The set of node ids.
const NODES_KEY: &str = "{ws-console}:nodes";
/// How long one Redis command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

fn node_key(id: &str) -> String {
    format!("{{ws-console}}:node:{id}")
}

/// A broker's state as a heartbeat carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerState {
    /// `memory` or `redis`.
    pub kind: String,
    /// `up` or `down`.
    pub state: String,
}

/// What one replica says about itself in each heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The replica's [`NodeId`](ws_actors::NodeId).
    pub id: String,
    /// Its build's version.
    pub version: String,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// Open WebSocket sessions.
    pub connections: u64,
    /// Users with at least one session there.
    pub users: u64,
    /// Messages written to sockets per second, over the last heartbeat interval.
    pub messages_per_s: f64,
    /// Its broker's state.
    pub broker: BrokerState,
    /// Whether it is draining (SIGTERM received).
    pub draining: bool,
    /// When it wrote this record, RFC 3339.
    pub updated_at: String,
    /// Its refusals per minute over the window (minutes with none left out).
    #[serde(default)]
    pub refusals: Vec<MinuteCounts>,
}

/// One socket of a user, from its lease.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct LeaseInfo {
    /// The replica holding it.
    pub node: String,
    /// Its connection id there.
    pub conn: u64,
    /// When it connected, ms since the Unix epoch.
    pub since_ms: u64,
    /// `legacy` or `v2`.
    #[serde(default = "legacy")]
    pub protocol: String,
}

fn legacy() -> String {
    "legacy".to_owned()
}

/// The console's Redis connection (lazy: Redis may be down now; commands then fail fast). On
/// Redis Cluster every heartbeat key shares the `{ws-console}` slot and a user's leases share
/// the user's slot, so each command and pipeline below stays within one slot.
#[derive(Clone)]
pub struct ClusterStore {
    connection: RedisConn,
    prefix: String,
}

impl ClusterStore {
    /// A store on the server's Redis (standalone or cluster), for users whose channels start
    /// with `prefix`. Fails only on a bad URL. Must be called inside a Tokio runtime.
    pub fn new(target: &RedisTarget, prefix: &str) -> Result<Self, BrokerError> {
        let options = ConnOptions {
            timeout: COMMAND_TIMEOUT,
            retries: 1,
        };
        Ok(Self {
            connection: target.connect(options)?,
            prefix: prefix.to_owned(),
        })
    }

    /// Writes this replica's heartbeat.
    pub async fn beat(&self, record: &NodeRecord) -> Result<(), RedisError> {
        let json = serde_json::to_string(record).unwrap_or_default();
        let ttl_ms = RECORD_TTL.as_millis() as u64;
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(node_key(&record.id))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SADD")
            .arg(NODES_KEY)
            .arg(&record.id)
            .ignore()
            .query_async::<()>(&mut self.connection.clone())
            .await
    }

    /// Every replica whose heartbeat has not expired, in id order. Forgets the others.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, RedisError> {
        let mut connection = self.connection.clone();
        let mut ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(NODES_KEY)
            .query_async(&mut connection)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort();
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let records: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await?;
        let gone: Vec<&String> = ids
            .iter()
            .zip(&records)
            .filter(|(_, record)| record.is_none())
            .map(|(id, _)| id)
            .collect();
        if !gone.is_empty() {
            // Best effort: the next reader tries again.
            let _ = redis::cmd("SREM")
                .arg(NODES_KEY)
                .arg(&gone)
                .query_async::<()>(&mut connection)
                .await;
        }
        Ok(records
            .into_iter()
            .flatten()
            .filter_map(|json| serde_json::from_str(&json).ok())
            .collect())
    }

    /// The sockets `user` holds on every replica, from its unexpired leases (by Redis' clock).
    pub async fn leases(&self, user: &UserId) -> Result<Vec<LeaseInfo>, RedisError> {
        let keys = UserKeys::of_user(&self.prefix, user);
        let mut connection = self.connection.clone();
        let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut connection).await?;
        let now_ms = seconds * 1000 + micros / 1000;
        let (members, info): (Vec<String>, HashMap<String, String>) = redis::pipe()
            .cmd("ZRANGEBYSCORE")
            .arg(keys.leases())
            .arg(format!("({now_ms}"))
            .arg("+inf")
            .cmd("HGETALL")
            .arg(keys.lease_info())
            .query_async(&mut connection)
            .await?;
        Ok(members
            .iter()
            .filter_map(|member| {
                let json = info.get(member)?;
                serde_json::from_str(json).ok()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_shares_one_slot() {
        let slot = ws_actors::broker::keys::slot;
        assert_eq!(
            slot(NODES_KEY.as_bytes()),
            slot(node_key("pod-a-1234").as_bytes())
        );
        assert_eq!(slot(NODES_KEY.as_bytes()), slot(b"ws-console"));
    }

    #[test]
    fn lease_info_reads_the_shared_format() {
        let info: LeaseInfo = serde_json::from_str(
            r#"{"node":"n-1","conn":7,"since_ms":1700000000000,"protocol":"v2"}"#,
        )
        .unwrap();
        assert_eq!(info.node, "n-1");
        assert_eq!(info.conn, 7);
        assert_eq!(info.protocol, "v2");
        let old: LeaseInfo = serde_json::from_str(r#"{"node":"n","conn":1,"since_ms":0}"#).unwrap();
        assert_eq!(old.protocol, "legacy");
    }
}
