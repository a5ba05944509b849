//! Connections to single cluster nodes: the subscriber's pub/sub link to each primary (a RESP3
//! connection manager whose pushes arrive tagged with the node), and the short-lived command
//! connections that ask a node for the slot map. Every node is reached with the scheme, user,
//! password and TLS settings of the first seed node; only the address changes.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    ProtocolVersion, PushInfo, RedisError, Value,
};
use tokio::sync::mpsc;

use super::topology::{split_node, Node, Topology};
use crate::broker::BrokerError;

/// First reconnect delay of a node link.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest delay between a node link's reconnect attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// How long connecting to a node, or one command on it, may take.
pub(super) const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach any node of the cluster: the seed nodes, and the settings (scheme, auth, TLS)
/// every node is reached with.
#[derive(Clone, Debug)]
pub(crate) struct NodeDialer {
    template: ConnectionInfo,
    seeds: Vec<Node>,
}

impl NodeDialer {
    /// From the seed node URLs; fails on a URL that does not parse or is not TCP.
    pub(crate) fn new(seeds: &[String]) -> Result<Self, BrokerError> {
        let mut template = None;
        let mut names = Vec::with_capacity(seeds.len());
        for seed in seeds {
            let info = seed
                .as_str()
                .into_connection_info()
                .map_err(BrokerError::InvalidUrl)?;
            let name = match info.addr() {
                ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                    Node::from(format!("{host}:{port}"))
                }
                _ => return Err(invalid("cluster nodes are reached over TCP")),
            };
            names.push(name);
            template.get_or_insert(info);
        }
        let template = template.ok_or_else(|| invalid("no cluster node given"))?;
        Ok(Self {
            template,
            seeds: names,
        })
    }

    /// The seed nodes, as `host:port`.
    pub(crate) fn seeds(&self) -> &[Node] {
        &self.seeds
    }

    /// How to reach `node` (`host:port`) with `protocol`.
    fn info(&self, node: &str, protocol: ProtocolVersion) -> Result<ConnectionInfo, BrokerError> {
        let (host, port) = split_node(node).ok_or_else(|| invalid("not host:port"))?;
        let host = host.to_owned();
        let addr = match self.template.addr().clone() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params,
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        let settings = self
            .template
            .redis_settings()
            .clone()
            .set_protocol(protocol);
        Ok(self
            .template
            .clone()
            .set_addr(addr)
            .set_redis_settings(settings))
    }

    /// A pub/sub link to `node`: a lazy RESP3 connection manager that reconnects by itself
    /// (and never re-subscribes by itself), whose pushes go to `pushes` tagged with `node`.
    pub(crate) fn link(
        &self,
        node: &Node,
        pushes: mpsc::UnboundedSender<(Node, PushInfo)>,
    ) -> Result<ConnectionManager, BrokerError> {
        let client = Client::open(self.info(node, ProtocolVersion::RESP3)?)
            .map_err(BrokerError::InvalidUrl)?;
        let tag = node.clone();
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(RECONNECT_MIN)
            .set_max_delay(RECONNECT_MAX)
            .set_connection_timeout(Some(NODE_TIMEOUT))
            .set_response_timeout(Some(NODE_TIMEOUT))
            .set_push_sender(move |push: PushInfo| pushes.send((tag.clone(), push)));
        Ok(ConnectionManager::new_lazy_with_config(client, config)?)
    }

    /// The slot map as `node` sees it (`CLUSTER SLOTS`, on a connection of its own: a pub/sub
    /// link may carry pushes the server sent by itself, which redis-rs could take for a reply).
    pub(crate) async fn slots(&self, node: &Node) -> Result<Topology, String> {
        let info = self
            .info(node, ProtocolVersion::RESP2)
            .map_err(|e| e.to_string())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(NODE_TIMEOUT))
            .set_response_timeout(Some(NODE_TIMEOUT));
        let ask = async {
            let client = Client::open(info)?;
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut connection)
                .await
        };
        let reply = ask.await.map_err(|e: RedisError| format!("{node}: {e}"))?;
        Topology::from_slots_reply(&reply, node)
            .ok_or_else(|| format!("{node}: no slot map in its CLUSTER SLOTS reply"))
    }
}

fn invalid(reason: &'static str) -> BrokerError {
    BrokerError::InvalidUrl(RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        reason,
    )))
}

/// Whether `error` means the link itself failed (rather than a command being refused).
pub(crate) fn is_link_failure(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_is_reached_like_the_first_seed() {
        let dialer = NodeDialer::new(&[
            "redis://user:pw@10.0.0.1:7000".into(),
            "redis://10.0.0.2:7001".into(),
        ])
        .expect("valid");
        assert_eq!(
            dialer.seeds(),
            [Node::from("10.0.0.1:7000"), Node::from("10.0.0.2:7001")]
        );
        let info = dialer
            .info("10.0.0.9:7005", ProtocolVersion::RESP3)
            .expect("valid");
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("10.0.0.9".into(), 7005));
        assert_eq!(info.redis_settings().username(), Some("user"));
        assert_eq!(info.redis_settings().protocol(), ProtocolVersion::RESP3);
        assert!(NodeDialer::new(&[]).is_err());
        assert!(NodeDialer::new(&["redis+unix:///tmp/x.sock".into()]).is_err());
    }
}
