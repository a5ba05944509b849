//! A real Redis Cluster per test: six `redis-server` processes on free loopback ports (three
//! primaries, three replicas) joined by `redis-cli --cluster create`, every node killed on drop;
//! plus what the cluster tests do to it: sharded publishing, manual failover, a crash, a slot
//! migration, and reading who serves which slot.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::Value;

use super::{free_port, wait_for, wait_until, STARTUP_DEADLINE};

/// How long the cluster may take to agree on a change (a failover, a slot move).
pub const CLUSTER_DEADLINE: Duration = Duration::from_secs(20);

/// One node of a [`RedisCluster`].
struct Node {
    port: u16,
    child: Option<Child>,
}

/// Six `redis-server` processes forming a cluster, killed on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

/// A node's entry in `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Its node id.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// `master` or `slave` (and `fail`, `myself`…).
    pub flags: String,
    /// The id of its primary, for a replica.
    pub master: Option<String>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster (one replica per primary) and waits until every
    /// node reports `cluster_state:ok` and every replica is in sync with its primary.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir for the cluster");
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..6 {
            let node = cluster.start_node().await;
            cluster.nodes.push(node);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = tokio::task::spawn_blocking(move || {
            Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&addresses)
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .output()
        })
        .await
        .expect("join redis-cli")
        .expect("cannot run redis-cli (apt-get install redis-server)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_healthy().await;
        cluster
    }

    /// Starts one node on fresh ports and waits until it answers PING. Tests run in parallel and
    /// a free port may be taken by another test's node before this one binds it (redis-server
    /// then exits): such a node is started again on other ports, up to a few times.
    async fn start_node(&self) -> Node {
        for _ in 0..NODE_START_ATTEMPTS {
            let port = free_port();
            let mut child = self.spawn(port, free_port());
            if node_answers(&mut child, port).await {
                return Node {
                    port,
                    child: Some(child),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("no redis-server node started after {NODE_START_ATTEMPTS} attempts on fresh ports");
    }

    fn spawn(&self, port: u16, bus: u16) -> Child {
        let log = File::create(self.dir.path().join(format!("redis-{port}.log")))
            .expect("redis log file");
        Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &bus.to_string()])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot spawn redis-server (apt-get install redis-server)")
    }

    /// Waits until every running node says `cluster_state:ok` and knows the same primaries,
    /// and every running replica's link to its primary is up.
    pub async fn wait_healthy(&self) {
        wait_until(
            CLUSTER_DEADLINE,
            "the cluster to be ok and in sync",
            || async {
                let mut views = Vec::new();
                for port in self.running_ports() {
                    let Some(info) = command(port, redis::cmd("CLUSTER").arg("INFO")).await else {
                        return false;
                    };
                    if !text(&info).contains("cluster_state:ok") {
                        return false;
                    }
                    let Some(replication) =
                        command(port, redis::cmd("INFO").arg("replication")).await
                    else {
                        return false;
                    };
                    let replication = text(&replication);
                    if replication.contains("role:slave")
                        && !replication.contains("master_link_status:up")
                    {
                        return false;
                    }
                    views.push(self.primaries_seen_by(port).await);
                }
                views.windows(2).all(|w| w[0] == w[1])
                    && views.first().is_some_and(|v| v.len() == 3)
            },
        )
        .await;
    }

    /// The client ports of the nodes still running.
    pub fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// `redis://127.0.0.1:P` of every node (the server's `redis.cluster_nodes`).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// A cluster connection from redis-rs (routes by slot, follows MOVED).
    pub async fn client(&self) -> redis::cluster_async::ClusterConnection {
        let urls: Vec<String> = self
            .running_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        ClusterClient::builder(urls)
            .retries(10)
            .build()
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("connect to the cluster")
    }

    /// `SPUBLISH channel payload`; answers how many subscribers of the serving node got it, or
    /// the error (e.g. CLUSTERDOWN during a failover).
    pub async fn spublish(&self, channel: &str, payload: &[u8]) -> Result<i64, redis::RedisError> {
        let mut connection = self.client().await;
        redis::cmd("SPUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut connection)
            .await
    }

    /// The primary port serving `slot`, as the first running node that answers sees it.
    pub async fn primary_of(&self, slot: u16) -> u16 {
        for port in self.running_ports() {
            let Some(reply) = command(port, redis::cmd("CLUSTER").arg("SLOTS")).await else {
                continue;
            };
            if let Some(owner) = owner_in_slots(&reply, slot) {
                return owner;
            }
        }
        panic!("no running node knows who serves slot {slot}");
    }

    /// The primaries as `port` sees them (ports, sorted).
    async fn primaries_seen_by(&self, port: u16) -> Vec<u16> {
        let mut primaries: Vec<u16> = self
            .nodes_seen_by(port)
            .await
            .into_iter()
            .filter(|n| n.flags.contains("master") && !n.flags.contains("fail"))
            .map(|n| n.port)
            .collect();
        primaries.sort_unstable();
        primaries
    }

    /// `CLUSTER NODES` as `port` sees it.
    pub async fn nodes_seen_by(&self, port: u16) -> Vec<NodeInfo> {
        let Some(reply) = command(port, redis::cmd("CLUSTER").arg("NODES")).await else {
            return Vec::new();
        };
        text(&reply)
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let address = fields.get(1)?.split('@').next()?;
                let port = address.rsplit_once(':')?.1.parse().ok()?;
                Some(NodeInfo {
                    id: (*fields.first()?).to_owned(),
                    port,
                    flags: (*fields.get(2)?).to_owned(),
                    master: fields
                        .get(3)
                        .filter(|m| **m != "-")
                        .map(|m| (*m).to_owned()),
                })
            })
            .collect()
    }

    /// A node's id.
    pub async fn id_of(&self, port: u16) -> String {
        let reply = command(port, redis::cmd("CLUSTER").arg("MYID"))
            .await
            .unwrap_or_else(|| panic!("CLUSTER MYID on {port}"));
        text(&reply)
    }

    /// The port of a replica of the primary on `primary`.
    pub async fn replica_of(&self, primary: u16) -> u16 {
        let id = self.id_of(primary).await;
        let nodes = self.nodes_seen_by(primary).await;
        nodes
            .iter()
            .find(|n| n.master.as_deref() == Some(id.as_str()) && !n.flags.contains("fail"))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no replica of {primary}: {nodes:?}"))
    }

    /// `CLUSTER FAILOVER` on the replica `replica`, then waits until it serves its primary's
    /// slots and the cluster is healthy again.
    pub async fn failover(&self, replica: u16) {
        let reply = command(replica, redis::cmd("CLUSTER").arg("FAILOVER"))
            .await
            .unwrap_or_else(|| panic!("CLUSTER FAILOVER on {replica}"));
        assert_eq!(text(&reply), "OK", "CLUSTER FAILOVER on {replica}");
        wait_until(CLUSTER_DEADLINE, &format!("{replica} to become a primary"), || async {
            command(replica, &redis::cmd("ROLE"))
                .await
                .is_some_and(|role| matches!(&role, Value::Array(f) if f.first().is_some_and(|r| text(r) == "master")))
        })
        .await;
        self.wait_healthy().await;
    }

    /// `CLIENT KILL TYPE pubsub` on the node at `port`: cuts every pub/sub connection to it;
    /// answers how many.
    pub async fn kill_pubsub_clients(&self, port: u16) -> i64 {
        let reply = command(
            port,
            redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"),
        )
        .await
        .unwrap_or_else(|| panic!("CLIENT KILL on {port}"));
        match reply {
            Value::Int(n) => n,
            other => panic!("CLIENT KILL on {port}: {other:?}"),
        }
    }

    /// SIGKILLs the node on `port` (a crash).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on {port}"));
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until a running node other than `dead` serves `slot` and the running nodes agree.
    pub async fn wait_taken_over(&self, slot: u16, dead: u16) -> u16 {
        let what = format!("slot {slot} to be served by a node other than {dead}");
        let owner = wait_for(CLUSTER_DEADLINE, &what, || async {
            let owner = self.primary_of(slot).await;
            (owner != dead).then_some(owner)
        })
        .await;
        wait_until(
            CLUSTER_DEADLINE,
            "cluster_state:ok on every running node",
            || async {
                for port in self.running_ports() {
                    match command(port, redis::cmd("CLUSTER").arg("INFO")).await {
                        Some(info) if text(&info).contains("cluster_state:ok") => {}
                        _ => return false,
                    }
                }
                true
            },
        )
        .await;
        owner
    }

    /// Moves `slot` from the primary `from` to the primary `to` the way `redis-cli --cluster
    /// reshard` does: IMPORTING on `to`, MIGRATING on `from`, MIGRATE every key, then
    /// `SETSLOT … NODE` on both and on every other primary.
    pub async fn migrate_slot(&self, slot: u16, from: u16, to: u16) {
        let (from_id, to_id) = (self.id_of(from).await, self.id_of(to).await);
        let ok = |reply: Option<Value>, what: &str| {
            let reply = reply.unwrap_or_else(|| panic!("{what}: no reply"));
            assert_eq!(text(&reply), "OK", "{what}");
        };
        ok(
            command(
                to,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("IMPORTING")
                    .arg(&from_id),
            )
            .await,
            "SETSLOT IMPORTING",
        );
        ok(
            command(
                from,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("MIGRATING")
                    .arg(&to_id),
            )
            .await,
            "SETSLOT MIGRATING",
        );
        loop {
            let keys = command(
                from,
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            )
            .await
            .expect("GETKEYSINSLOT");
            let Value::Array(keys) = keys else {
                panic!("GETKEYSINSLOT: {keys:?}");
            };
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS");
            for key in keys {
                if let Value::BulkString(key) = key {
                    migrate.arg(key);
                }
            }
            let reply = command(from, &migrate).await.expect("MIGRATE");
            assert!(
                !matches!(reply, Value::ServerError(_)),
                "MIGRATE: {reply:?}"
            );
        }
        let set_node = |port: u16| {
            let to_id = to_id.clone();
            async move {
                command(
                    port,
                    redis::cmd("CLUSTER")
                        .arg("SETSLOT")
                        .arg(slot)
                        .arg("NODE")
                        .arg(&to_id),
                )
                .await
            }
        };
        ok(set_node(to).await, "SETSLOT NODE on the target");
        ok(set_node(from).await, "SETSLOT NODE on the source");
        for port in self.primaries_seen_by(to).await {
            if port != to && port != from {
                let _ = set_node(port).await;
            }
        }
        wait_until(
            CLUSTER_DEADLINE,
            &format!("every node to see slot {slot} on {to}"),
            || async {
                for port in self.running_ports() {
                    let Some(reply) = command(port, redis::cmd("CLUSTER").arg("SLOTS")).await
                    else {
                        return false;
                    };
                    if owner_in_slots(&reply, slot) != Some(to) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    /// The primaries' ports, sorted.
    pub async fn primaries(&self) -> Vec<u16> {
        for port in self.running_ports() {
            let primaries = self.primaries_seen_by(port).await;
            if !primaries.is_empty() {
                return primaries;
            }
        }
        panic!("no running node answers CLUSTER NODES");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One command on the node at `port` (a fresh connection); `None` when it cannot be reached.
pub async fn command(port: u16, cmd: &redis::Cmd) -> Option<Value> {
    let attempt = async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        cmd.query_async::<Value>(&mut connection).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// Times a cluster node is started on fresh ports before the test gives up.
const NODE_START_ATTEMPTS: usize = 5;

/// Whether the node started as `child` answers PING on `port` while still running (a node
/// that exits could not bind its ports; a PING answered by another test's node does not count).
async fn node_answers(child: &mut Child, port: u16) -> bool {
    let deadline = std::time::Instant::now() + STARTUP_DEADLINE;
    while std::time::Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        if ping(port).await {
            return matches!(child.try_wait(), Ok(None));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn ping(port: u16) -> bool {
    command(port, &redis::cmd("PING")).await.is_some()
}

/// A reply as text (status, bulk or verbatim string).
pub fn text(value: &Value) -> String {
    match value {
        Value::SimpleString(s) => s.clone(),
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Okay => "OK".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The primary port serving `slot` in a `CLUSTER SLOTS` reply.
fn owner_in_slots(reply: &Value, slot: u16) -> Option<u16> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let Value::Array(fields) = range else {
            return None;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return None;
        };
        if !(*start..=*end).contains(&i64::from(slot)) {
            return None;
        }
        match primary.get(1) {
            Some(Value::Int(port)) => u16::try_from(*port).ok(),
            _ => None,
        }
    })
}
