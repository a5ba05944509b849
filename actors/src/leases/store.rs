//! The lease store: every Redis command the leases need, on one connection of their own (a
//! [`RedisConn`]: a connection manager on a standalone Redis, or a cluster connection routing each
//! command by its key; both reconnect by themselves). A lease is the member `<node>/<conn>` of the
//! user's sorted set [`UserKeys::leases`] scored by its expiry in ms (Redis time), and the same
//! member's details in the hash [`UserKeys::lease_info`]:
//! `{"node":"…","conn":N,"since_ms":…,"protocol":"legacy"|"v2"}` (the operator console reads
//! this exact format).
//!
//! A user's two keys share one hash slot (that of the user's channel), so a connect's acquire is
//! one script call on the primary serving it. Refresh and count take the keys of many users: one
//! script call per batch on a standalone Redis; on Redis Cluster the batch is split by hash slot
//! (one call per slot, run concurrently), so no call spans slots (`CROSSSLOT`). Releases are one
//! pipeline, per slot on a cluster ([`RedisConn::run_each`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use redis::Value;

use super::scripts::Scripts;
use super::{LeaseConfig, LeaseError, LeaseProtocol};
use crate::broker::keys::{slot, UserKeys};
use crate::broker::{ConnOptions, RedisConn};
use crate::ids::{ConnId, NodeId, UserId};

/// How long connecting to Redis, or one command, may take before the link counts as broken.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One script call: its keys and arguments.
type Call = (Vec<Vec<u8>>, Vec<Vec<u8>>);

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
    connection: RedisConn,
    scripts: Arc<Scripts>,
    prefix: Arc<str>,
    node: NodeId,
    lease_ms: u64,
}

impl LeaseStore {
    /// A store on a lazy connection (Redis may be down now); fails only on a bad URL. Must be
    /// called inside a Tokio runtime.
    pub(super) fn new(config: &LeaseConfig) -> Result<Self, LeaseError> {
        let options = ConnOptions {
            timeout: RESPONSE_TIMEOUT,
            retries: 1,
        };
        let connection = config.target.connect(options)?;
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

    /// Refreshes `batch` (registering again any lease Redis lost): one script call, or on a
    /// cluster one per hash slot, run concurrently.
    pub(super) async fn refresh(&self, batch: &[(ConnId, HeldLease)]) -> Result<(), LeaseError> {
        let calls = self.refresh_calls(batch);
        let runs = calls.iter().map(|(keys, args)| {
            let mut connection = self.connection.clone();
            async move {
                self.scripts
                    .refresh
                    .invoke::<u64, _>(&mut connection, keys, args)
                    .await
            }
        });
        for result in join_all(runs).await {
            result?;
        }
        Ok(())
    }

    /// The slot a user's keys live in: grouping key of a batch (all 0 on a standalone Redis,
    /// where any batch is one call).
    fn group_of(&self, keys: &UserKeys) -> u16 {
        if self.connection.is_cluster() {
            slot(&keys.leases())
        } else {
            0
        }
    }

    /// The refresh script calls for `batch`: leases grouped by user, users by hash slot.
    fn refresh_calls(&self, batch: &[(ConnId, HeldLease)]) -> Vec<Call> {
        let mut by_user: BTreeMap<&UserId, Vec<(ConnId, &HeldLease)>> = BTreeMap::new();
        for (conn, lease) in batch {
            by_user.entry(&lease.user).or_default().push((*conn, lease));
        }
        let mut by_slot: BTreeMap<u16, Call> = BTreeMap::new();
        for (user, leases) in by_user {
            let user_keys = self.keys(user);
            let (keys, args) = by_slot
                .entry(self.group_of(&user_keys))
                .or_insert_with(|| (Vec::new(), vec![self.lease_ms.to_string().into_bytes()]));
            keys.extend([user_keys.leases(), user_keys.lease_info()]);
            args.push(leases.len().to_string().into_bytes());
            for (conn, lease) in leases {
                args.push(self.member(conn).into_bytes());
                args.push(self.info(conn, lease).into_bytes());
            }
        }
        by_slot.into_values().collect()
    }

    /// Gives leases back: ZREM and HDEL per lease in one pipeline (one per hash slot on a
    /// cluster), one round trip. An error reply to one command is ignored (the lease expires).
    pub(super) async fn release(&self, leases: &[(UserId, ConnId)]) -> Result<(), LeaseError> {
        let mut commands = Vec::with_capacity(leases.len() * 2);
        for (user, conn) in leases {
            let keys = self.keys(user);
            let member = self.member(*conn);
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(keys.leases()).arg(&member);
            let mut hdel = redis::cmd("HDEL");
            hdel.arg(keys.lease_info()).arg(&member);
            commands.extend([zrem, hdel]);
        }
        let _replies: Vec<Value> = self.connection.run_each(&commands).await?;
        Ok(())
    }

    /// Each user's unexpired leases across the cluster, in the order given: one round trip (one
    /// script call per hash slot on a cluster, run concurrently).
    pub(super) async fn count(&self, users: &[UserId]) -> Result<Vec<u64>, LeaseError> {
        let mut groups: BTreeMap<u16, (Vec<usize>, Vec<Vec<u8>>)> = BTreeMap::new();
        for (i, user) in users.iter().enumerate() {
            let keys = self.keys(user);
            let (indexes, group_keys) = groups.entry(self.group_of(&keys)).or_default();
            indexes.push(i);
            group_keys.push(keys.leases());
        }
        let runs = groups.values().map(|(_, keys)| {
            let mut connection = self.connection.clone();
            async move {
                self.scripts
                    .count
                    .invoke::<Vec<u64>, _>(&mut connection, keys, &[])
                    .await
            }
        });
        let results = join_all(runs).await;
        let mut counts = vec![0; users.len()];
        for ((indexes, _), result) in groups.values().zip(results) {
            let group_counts = result?;
            if group_counts.len() != indexes.len() {
                return Err(LeaseError::UnexpectedReply("count"));
            }
            for (&i, count) in indexes.iter().zip(group_counts) {
                counts[i] = count;
            }
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
    use crate::broker::RedisTarget;

    fn store() -> LeaseStore {
        store_on(RedisTarget::Single("redis://127.0.0.1:1".into()))
    }

    fn store_on(target: RedisTarget) -> LeaseStore {
        let config = LeaseConfig {
            target,
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
        let mut calls = store.refresh_calls(&batch);
        assert_eq!(calls.len(), 1, "one call on a standalone Redis");
        let (keys, args) = calls.remove(0);
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

    /// On a cluster a batch is split by hash slot: each call names the keys of one slot only,
    /// and every lease is in exactly one call.
    #[actix_rt::test]
    async fn a_refresh_batch_splits_by_slot_on_a_cluster() {
        let store = store_on(RedisTarget::Cluster(vec!["redis://127.0.0.1:1".into()]));
        let users = ["u1", "u2", "u3", "{u1}x", "alice"];
        let batch: Vec<(ConnId, HeldLease)> = users
            .iter()
            .chain(users.iter())
            .map(|user| (ConnId::next(), held(user)))
            .collect();
        let calls = store.refresh_calls(&batch);
        let mut leases = 0;
        let mut slots = Vec::new();
        for (keys, args) in &calls {
            let first = slot(&keys[0]);
            assert!(
                keys.iter().all(|key| slot(key) == first),
                "one slot per call"
            );
            slots.push(first);
            leases += (args.len() - 1 - keys.len() / 2) / 2;
        }
        slots.dedup();
        assert_eq!(slots.len(), calls.len(), "one call per slot");
        assert_eq!(leases, batch.len());
        assert!(calls.len() >= 4, "u1, u2, u3 and alice hash apart");
    }
}
