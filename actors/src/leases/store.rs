//! The lease store: every Redis command the leases need, on one connection of their own (a
//! connection manager that reconnects by itself). A lease is the member `<node>/<conn>` of the
//! user's sorted set [`UserKeys::leases`] scored by its expiry in ms (Redis time), and the same
//! member's details in the hash [`UserKeys::lease_info`]:
//! `{"node":"…","conn":N,"since_ms":…,"protocol":"legacy"|"v2"}` (the operator console reads
//! this exact format).
//!
//! Refresh and count take the keys of many users in one script call: one round trip for a batch,
//! in standalone Redis. (In Redis Cluster such a batch would have to be split by hash slot.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo};

use super::scripts::Scripts;
use super::{LeaseConfig, LeaseError, LeaseProtocol};
use crate::broker::keys::UserKeys;
use crate::ids::{ConnId, NodeId, UserId};

/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one command may take before the link counts as broken.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for `url` (RESP2: the leases need no pushes).
pub(crate) fn client(url: &str) -> Result<Client, LeaseError> {
    let info = url.into_connection_info().map_err(LeaseError::InvalidUrl)?;
    Client::open(info).map_err(LeaseError::InvalidUrl)
}

/// What the acquire script answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Acquired {
    /// Whether the lease was taken.
    pub(super) admitted: bool,
    /// The user's leases across the cluster after the call.
    pub(super) held: u64,
    /// Redis time of the call, in ms.
    pub(super) now_ms: u64,
}

/// A lease as this node keeps it, to refresh it or register it again.
#[derive(Clone, Debug)]
pub(super) struct HeldLease {
    /// Whose socket it is.
    pub(super) user: UserId,
    /// Which client protocol the socket speaks.
    pub(super) protocol: LeaseProtocol,
    /// When it was first taken (Redis time; the node's clock for a lease admitted while Redis
    /// was unreachable).
    pub(super) since_ms: u64,
}

/// The Redis side of the leases; cheap to clone.
#[derive(Clone)]
pub(super) struct LeaseStore {
    connection: ConnectionManager,
    scripts: Arc<Scripts>,
    prefix: Arc<str>,
    node: NodeId,
    lease_ms: u64,
}

impl LeaseStore {
    /// A store on a lazy connection (Redis may be down now); fails only on a bad URL.
    pub(super) fn new(config: &LeaseConfig) -> Result<Self, LeaseError> {
        let manager = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connection = ConnectionManager::new_lazy_with_config(client(&config.url)?, manager)
            .map_err(LeaseError::InvalidUrl)?;
        Ok(Self {
            connection,
            scripts: Arc::default(),
            prefix: Arc::from(config.channel_prefix.as_str()),
            node: config.node.clone(),
            lease_ms: u64::try_from(config.lease.as_millis()).unwrap_or(u64::MAX),
        })
    }

    fn keys(&self, user: &UserId) -> UserKeys {
        UserKeys::of_user(&self.prefix, user)
    }

    /// The lease's member name: `<node>/<conn>`.
    pub(super) fn member(&self, conn: ConnId) -> String {
        format!("{}/{}", self.node, conn)
    }

    /// The lease's details around its `since_ms`: (head, tail).
    fn info_parts(&self, conn: ConnId, protocol: LeaseProtocol) -> (String, String) {
        let node = serde_json::Value::from(self.node.as_str());
        let head = format!(r#"{{"node":{node},"conn":{conn},"since_ms":"#);
        let tail = format!(r#","protocol":"{}"}}"#, protocol.as_str());
        (head, tail)
    }

    /// The lease's details as stored in the info hash.
    pub(super) fn info(&self, conn: ConnId, lease: &HeldLease) -> String {
        let (head, tail) = self.info_parts(conn, lease.protocol);
        format!("{head}{}{tail}", lease.since_ms)
    }

    /// Checks `limit` (none: no check) against the user's unexpired leases and takes one, in
    /// one script call.
    pub(super) async fn acquire(
        &self,
        user: &UserId,
        conn: ConnId,
        protocol: LeaseProtocol,
        limit: Option<usize>,
    ) -> Result<Acquired, LeaseError> {
        let keys = self.keys(user);
        let (head, tail) = self.info_parts(conn, protocol);
        let args = [
            limit.unwrap_or(0).to_string().into_bytes(),
            self.lease_ms.to_string().into_bytes(),
            self.member(conn).into_bytes(),
            head.into_bytes(),
            tail.into_bytes(),
        ];
        let mut connection = self.connection.clone();
        let reply: Vec<u64> = self
            .scripts
            .acquire
            .invoke(&mut connection, &[keys.leases(), keys.lease_info()], &args)
            .await?;
        match reply[..] {
            [admitted, held, now_ms] => Ok(Acquired {
                admitted: admitted == 1,
                held,
                now_ms,
            }),
            _ => Err(LeaseError::UnexpectedReply("acquire")),
        }
    }

    /// Refreshes `batch` (registering again any lease Redis lost) in one script call.
    pub(super) async fn refresh(&self, batch: &[(ConnId, HeldLease)]) -> Result<(), LeaseError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (keys, args) = self.refresh_call(batch);
        let mut connection = self.connection.clone();
        let _users: u64 = self
            .scripts
            .refresh
            .invoke(&mut connection, &keys, &args)
            .await?;
        Ok(())
    }

    /// The keys and arguments of the refresh script for `batch`, grouped by user.
    fn refresh_call(&self, batch: &[(ConnId, HeldLease)]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut by_user: BTreeMap<&UserId, Vec<(ConnId, &HeldLease)>> = BTreeMap::new();
        for (conn, lease) in batch {
            by_user.entry(&lease.user).or_default().push((*conn, lease));
        }
        let mut keys = Vec::with_capacity(by_user.len() * 2);
        let mut args = Vec::with_capacity(1 + by_user.len() + batch.len() * 2);
        args.push(self.lease_ms.to_string().into_bytes());
        for (user, leases) in by_user {
            let user_keys = self.keys(user);
            keys.extend([user_keys.leases(), user_keys.lease_info()]);
            args.push(leases.len().to_string().into_bytes());
            for (conn, lease) in leases {
                args.push(self.member(conn).into_bytes());
                args.push(self.info(conn, lease).into_bytes());
            }
        }
        (keys, args)
    }

    /// Gives leases back: one pipeline (ZREM and HDEL per lease), one round trip.
    pub(super) async fn release(&self, leases: &[(UserId, ConnId)]) -> Result<(), LeaseError> {
        if leases.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for (user, conn) in leases {
            let keys = self.keys(user);
            let member = self.member(*conn);
            pipeline.zrem(keys.leases(), &member).ignore();
            pipeline.hdel(keys.lease_info(), &member).ignore();
        }
        let mut connection = self.connection.clone();
        pipeline.query_async::<()>(&mut connection).await?;
        Ok(())
    }

    /// Each user's unexpired leases across the cluster, in the order given: one round trip.
    pub(super) async fn count(&self, users: &[UserId]) -> Result<Vec<u64>, LeaseError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = users.iter().map(|user| self.keys(user).leases()).collect();
        let mut connection = self.connection.clone();
        let counts: Vec<u64> = self
            .scripts
            .count
            .invoke(&mut connection, &keys, &[])
            .await?;
        if counts.len() != users.len() {
            return Err(LeaseError::UnexpectedReply("count"));
        }
        Ok(counts)
    }

    /// Loads the scripts (which also shows that Redis answers).
    pub(super) async fn prepare(&self) -> Result<(), LeaseError> {
        let mut connection = self.connection.clone();
        self.scripts.load_all(&mut connection).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> LeaseStore {
        let config = LeaseConfig {
            url: "redis://127.0.0.1:1".into(),
            channel_prefix: "ws:".into(),
            node: NodeId::new("pod-\"a\""),
            lease: Duration::from_secs(30),
        };
        LeaseStore::new(&config).expect("a valid url")
    }

    fn held(user: &str) -> HeldLease {
        HeldLease {
            user: UserId::new(user),
            protocol: LeaseProtocol::Legacy,
            since_ms: 1_700_000_000_123,
        }
    }

    /// The details are the console's exact JSON, with the node id escaped.
    #[actix_rt::test]
    async fn details_are_the_consoles_json() {
        let store = store();
        let conn = ConnId::next();
        let info = store.info(conn, &held("u"));
        let json: serde_json::Value = serde_json::from_str(&info).expect("JSON");
        assert_eq!(json["node"], "pod-\"a\"");
        assert_eq!(json["conn"], conn.get());
        assert_eq!(json["since_ms"], 1_700_000_000_123u64);
        assert_eq!(json["protocol"], "legacy");
        assert!(info.starts_with(r#"{"node":"#) && info.ends_with(r#""protocol":"legacy"}"#));
        assert_eq!(store.member(conn), format!("pod-\"a\"/{conn}"));
    }

    /// A refresh batch names each user's two keys once, with the user's leases after a count.
    #[actix_rt::test]
    async fn a_refresh_batch_groups_leases_by_user() {
        let store = store();
        let (a, b, c) = (ConnId::next(), ConnId::next(), ConnId::next());
        let batch = [(a, held("u1")), (b, held("u2")), (c, held("u1"))];
        let (keys, args) = store.refresh_call(&batch);
        let text = |bytes: &Vec<u8>| String::from_utf8_lossy(bytes).into_owned();
        let keys: Vec<String> = keys.iter().map(text).collect();
        assert_eq!(keys, ["{ws:u1}:l", "{ws:u1}:li", "{ws:u2}:l", "{ws:u2}:li"]);
        let args: Vec<String> = args.iter().map(text).collect();
        assert_eq!(args[0], "30000");
        assert_eq!(args[1], "2");
        assert_eq!(args[2], store.member(a));
        assert_eq!(args[4], store.member(c));
        assert_eq!(args[6], "1");
        assert_eq!(args[7], store.member(b));
        assert_eq!(args.len(), 1 + 2 + 3 * 2);
    }
}
