//! The Redis broker on a standalone Redis, and the pieces both modes share. [`RedisSubscriber`]
//! owns this process's one pub/sub connection (a RESP3 connection manager with a push channel):
//! it SUBSCRIBEs and UNSUBSCRIBEs as hubs come and go, batching the changes, hands each message
//! to the directory without waiting on any socket, and after a disconnect reconnects with capped
//! exponential backoff and full jitter, then re-subscribes every channel that still has a local
//! session in a few large batches. On Redis Cluster the subscriber is `cluster`'s
//! `ClusterSubscriber` (sharded pub/sub) instead; [`RedisStart`] starts whichever the target
//! asks for. [`RedisPublisher`] publishes on a command connection of its own (`PUBLISH`, or
//! `SPUBLISH` on a cluster). Plain pub/sub: a message published while this node is disconnected
//! is lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, watch};

use super::cluster::{ClusterNodeHealth, ClusterStart};
use super::conn::{RedisConn, RedisTarget};
use super::durable::parse_durable;
use super::keys::UserKeys;
pub use super::publisher::RedisPublisher;
use super::{channel_name, Broker, BrokerError, BrokerHealth, Interest, RouteSink, RouteUser};
use crate::backoff::full_jitter;
use crate::ids::UserId;
use crate::metrics::RelayMetrics;
use crate::payload::{Payload, Published};

/// Channels per SUBSCRIBE or UNSUBSCRIBE command.
const SUBSCRIBE_BATCH: usize = 1000;
/// First reconnect delay; doubles per failed attempt up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait between reconnect attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How often a connected subscriber checks its link with PING.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(5);
/// Most pushes taken from the connection's channel at once (and so routed together).
const PUSH_BATCH: usize = 256;
/// How long a single command may take before the link counts as broken.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// Where Redis is and how channels are named.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// A standalone Redis (`redis://…` or `rediss://…`), or a cluster's seed nodes.
    pub target: RedisTarget,
    /// Prepended to the user id: `ws:` gives `ws:{user_id}`.
    pub channel_prefix: String,
    /// Whether history is on: each user's durable channel is subscribed beside the plain one.
    pub durable: bool,
}

/// A RESP3 client for the standalone Redis at `url` (pushes need RESP3).
fn client(url: &str) -> Result<Client, BrokerError> {
    let info = url
        .into_connection_info()
        .map_err(BrokerError::InvalidUrl)?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings)).map_err(BrokerError::InvalidUrl)
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_min_delay(BACKOFF_BASE)
        .set_max_delay(BACKOFF_CAP)
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
}

/// The one pub/sub connection of this process.
pub struct RedisSubscriber {
    connection: ConnectionManager,
    prefix: String,
    directory: Box<dyn RouteSink>,
    metrics: RelayMetrics,
    health: watch::Sender<BrokerHealth>,
    /// Users whose channel this node needs: the truth.
    wanted: HashSet<UserId>,
    /// Users whose subscription state may differ from `wanted` on the server.
    dirty: HashSet<UserId>,
    /// Users wanted while the link was down: their next acknowledgement is a re-subscription
    /// (their live v2 sockets then catch up on what they missed).
    resubscribing: HashSet<UserId>,
    /// Subscribe each user's durable channel too.
    durable: bool,
    connected: bool,
    ever_connected: bool,
    flushing: bool,
    probing: bool,
}

/// A Redis broker being started: the subscriber's address already takes [`Interest`], so the
/// directory can be started with it, and the subscriber runs once it has that directory.
pub struct RedisStart {
    prefix: String,
    durable: bool,
    publisher: RedisPublisher,
    subscriber: Subscriber,
    health: watch::Sender<BrokerHealth>,
    health_rx: watch::Receiver<BrokerHealth>,
}

/// The subscriber of either mode, not yet running.
enum Subscriber {
    /// One pub/sub connection to a standalone Redis.
    Single {
        connection: ConnectionManager,
        context: Context<RedisSubscriber>,
    },
    /// Sharded pub/sub on Redis Cluster, with each node's health.
    Cluster {
        start: Box<ClusterStart>,
        nodes: watch::Receiver<Vec<ClusterNodeHealth>>,
    },
}

impl RedisStart {
    /// Opens the (lazy) connections and the subscriber's mailbox; fails only on a bad URL.
    pub(super) fn new(config: RedisConfig) -> Result<Self, BrokerError> {
        let subscriber = match &config.target {
            RedisTarget::Single(url) => {
                let (push_tx, push_rx) = mpsc::unbounded_channel::<PushInfo>();
                let connection = ConnectionManager::new_lazy_with_config(
                    client(url)?,
                    manager_config().set_push_sender(push_tx),
                )?;
                let mut context = Context::<RedisSubscriber>::new();
                context.add_stream(pushes(push_rx));
                Subscriber::Single {
                    connection,
                    context,
                }
            }
            RedisTarget::Cluster(seeds) => {
                let (start, nodes) = ClusterStart::new(seeds)?;
                Subscriber::Cluster {
                    start: Box::new(start),
                    nodes,
                }
            }
        };
        let reason = if config.target.is_cluster() {
            "connecting to redis cluster"
        } else {
            "connecting to redis"
        };
        let (health, health_rx) = watch::channel(BrokerHealth::Down {
            reason: reason.into(),
        });
        Ok(Self {
            publisher: RedisPublisher::new(&config)?,
            prefix: config.channel_prefix,
            durable: config.durable,
            subscriber,
            health,
            health_rx,
        })
    }

    /// The publisher's command connection (the users' histories use it too, so a durable
    /// publish queues behind no subscription traffic).
    pub fn publisher_connection(&self) -> RedisConn {
        self.publisher.connection.clone()
    }

    /// Where the directory reports which channels this node wants.
    pub fn interest(&self) -> Recipient<Interest> {
        match &self.subscriber {
            Subscriber::Single { context, .. } => context.address().recipient(),
            Subscriber::Cluster { start, .. } => start.interest(),
        }
    }

    /// Starts the subscriber on the current arbiter, feeding `directory`, and returns the
    /// broker handle (with a publisher on its own connection).
    pub fn start(self, directory: impl RouteSink + 'static, metrics: &RelayMetrics) -> Broker {
        let cluster = match self.subscriber {
            Subscriber::Single {
                connection,
                context,
            } => {
                let subscriber = RedisSubscriber {
                    connection,
                    prefix: self.prefix,
                    directory: Box::new(directory),
                    metrics: metrics.clone(),
                    health: self.health,
                    wanted: HashSet::new(),
                    dirty: HashSet::new(),
                    resubscribing: HashSet::new(),
                    durable: self.durable,
                    connected: false,
                    ever_connected: false,
                    flushing: false,
                    probing: false,
                };
                context.run(subscriber);
                None
            }
            Subscriber::Cluster { start, nodes } => {
                start.start(
                    Box::new(directory),
                    metrics,
                    self.health,
                    self.prefix,
                    self.durable,
                );
                Some(nodes)
            }
        };
        Broker {
            kind: "redis",
            publisher: Arc::new(self.publisher),
            health: self.health_rx,
            cluster,
        }
    }
}

/// The connection manager's pushes as a stream of batches of up to [`PUSH_BATCH`].
fn pushes(
    mut push_rx: mpsc::UnboundedReceiver<PushInfo>,
) -> impl futures_util::Stream<Item = Pushes> {
    futures_util::stream::poll_fn(move |cx| {
        let mut batch = Vec::new();
        match push_rx.poll_recv_many(cx, &mut batch, PUSH_BATCH) {
            Poll::Ready(0) => Poll::Ready(None),
            Poll::Ready(_) => Poll::Ready(Some(Pushes(batch))),
            Poll::Pending => Poll::Pending,
        }
    })
}

impl RedisSubscriber {
    /// Routes the messages of a batch together (one envelope per shard), in order, and reacts to
    /// a disconnect where it happened in the sequence.
    fn on_pushes(&mut self, pushes: Vec<PushInfo>, ctx: &mut Context<Self>) {
        let mut routes = Vec::with_capacity(pushes.len());
        for push in pushes {
            match push.kind {
                PushKind::Message => routes.extend(route_message(&self.prefix, push.data)),
                PushKind::Disconnection => {
                    self.directory.route_all(std::mem::take(&mut routes));
                    self.on_disconnected(ctx, "redis connection lost");
                }
                _ => {}
            }
        }
        self.directory.route_all(routes);
    }

    fn set_health(&mut self, health: BrokerHealth) {
        let up = health.is_up();
        self.metrics.broker_connected.set(i64::from(up));
        self.health.send_replace(health);
    }

    fn on_disconnected(&mut self, ctx: &mut Context<Self>, reason: &str) {
        if self.connected {
            tracing::warn!(reason, "redis subscriber disconnected");
        }
        self.connected = false;
        self.set_health(BrokerHealth::Down {
            reason: reason.to_owned(),
        });
        self.probe(ctx, 0);
    }

    fn on_connected(&mut self, ctx: &mut Context<Self>) {
        if self.ever_connected {
            self.metrics.broker_reconnects.inc();
        }
        tracing::info!(channels = self.wanted.len(), "redis subscriber connected");
        self.ever_connected = true;
        self.connected = true;
        self.set_health(BrokerHealth::Up);
        self.dirty.extend(self.wanted.iter().cloned());
        self.resubscribing.extend(self.wanted.iter().cloned());
        self.flush(ctx);
    }

    /// PINGs until Redis answers, waiting a jittered, growing delay between attempts.
    fn probe(&mut self, ctx: &mut Context<Self>, attempt: u32) {
        if self.probing || self.connected {
            return;
        }
        self.probing = true;
        let mut connection = self.connection.clone();
        let ping = async move { redis::cmd("PING").query_async::<()>(&mut connection).await };
        ctx.spawn(ping.into_actor(self).map(move |result, this, ctx| {
            this.probing = false;
            match result {
                Ok(()) => this.on_connected(ctx),
                Err(error) => {
                    let reason = format!("redis unreachable: {error}");
                    this.set_health(BrokerHealth::Down { reason });
                    let delay = full_jitter(BACKOFF_BASE, BACKOFF_CAP, attempt);
                    ctx.run_later(delay, move |this, ctx| this.probe(ctx, attempt + 1));
                }
            }
        }));
    }

    fn health_check(&mut self, ctx: &mut Context<Self>) {
        if !self.connected || self.probing {
            return;
        }
        let mut connection = self.connection.clone();
        let ping = async move { redis::cmd("PING").query_async::<()>(&mut connection).await };
        ctx.spawn(ping.into_actor(self).map(|result, this, ctx| {
            if let Err(error) = result {
                this.on_disconnected(ctx, &format!("redis health check failed: {error}"));
            }
        }));
    }

    /// Sends the pending subscription changes, a batch of channels per command.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || !self.connected || self.dirty.is_empty() {
            return;
        }
        self.flushing = true;
        let dirty: Vec<UserId> = self.dirty.drain().collect();
        let (subscribe, unsubscribe): (Vec<UserId>, Vec<UserId>) = dirty
            .into_iter()
            .partition(|user| self.wanted.contains(user));
        let commands = SubscriptionBatch {
            subscribe: self.channels(&subscribe),
            unsubscribe: self.channels(&unsubscribe),
        };
        let connection = self.connection.clone();
        ctx.spawn(
            commands
                .send(connection)
                .into_actor(self)
                .map(move |result, this, ctx| {
                    this.flushing = false;
                    match result {
                        Ok(()) => {
                            this.metrics
                                .subscribed_channels
                                .set(this.wanted.len() as i64);
                            this.acknowledge(subscribe);
                            this.flush(ctx);
                        }
                        Err(error) => {
                            this.dirty.extend(subscribe);
                            this.dirty.extend(unsubscribe);
                            this.on_disconnected(ctx, &format!("redis subscribe failed: {error}"));
                        }
                    }
                }),
        );
    }

    /// Tells the directory which users' channels are now subscribed, and which of them were
    /// subscribed again after an outage.
    fn acknowledge(&mut self, users: Vec<UserId>) {
        let (again, first): (Vec<UserId>, Vec<UserId>) = users
            .into_iter()
            .filter(|user| self.wanted.contains(user))
            .partition(|user| self.resubscribing.remove(user));
        if !first.is_empty() {
            self.directory.channels_live(first, false);
        }
        if !again.is_empty() {
            self.directory.channels_live(again, true);
        }
    }

    /// The channels of `users`: the plain one, and the durable one when history is on.
    fn channels(&self, users: &[UserId]) -> Vec<Vec<u8>> {
        let mut channels = Vec::with_capacity(users.len() * (1 + usize::from(self.durable)));
        for user in users {
            let plain = channel_name(&self.prefix, user);
            if self.durable {
                channels.push(UserKeys::of_channel(&plain).durable_channel());
            }
            channels.push(plain);
        }
        channels
    }
}

/// The user and message of a `message` (or sharded `smessage`) push on one of our channels
/// (plain, or durable: `<epoch>:<offset>:<payload>`); the channel name and body are taken over
/// as they are, without a copy.
pub(super) fn route_message(prefix: &str, data: Vec<Value>) -> Option<(RouteUser, Published)> {
    let mut fields = data.into_iter();
    let (Some(Value::BulkString(channel)), Some(Value::BulkString(body))) =
        (fields.next(), fields.next())
    else {
        return None;
    };
    if channel.first() == Some(&b'{') {
        let user = RouteUser::from_durable_channel(channel, prefix)?;
        let (position, payload) = parse_durable(Bytes::from(body))?;
        return Some((
            user,
            Published::durable(Payload::from_bytes(payload), position),
        ));
    }
    let user = RouteUser::from_channel(channel, prefix)?;
    Some((user, Payload::from_bytes(Bytes::from(body)).into()))
}

/// One round of SUBSCRIBE and UNSUBSCRIBE commands.
struct SubscriptionBatch {
    subscribe: Vec<Vec<u8>>,
    unsubscribe: Vec<Vec<u8>>,
}

impl SubscriptionBatch {
    async fn send(self, mut connection: ConnectionManager) -> redis::RedisResult<()> {
        for chunk in self.subscribe.chunks(SUBSCRIBE_BATCH) {
            connection.subscribe(chunk).await?;
        }
        for chunk in self.unsubscribe.chunks(SUBSCRIBE_BATCH) {
            connection.unsubscribe(chunk).await?;
        }
        Ok(())
    }
}

impl Actor for RedisSubscriber {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(HEALTH_CHECK_EVERY, |this, ctx| this.health_check(ctx));
        self.probe(ctx, 0);
    }
}

impl Handler<Interest> for RedisSubscriber {
    type Result = ();

    fn handle(&mut self, interest: Interest, ctx: &mut Context<Self>) {
        if interest.wanted {
            self.wanted.insert(interest.user.clone());
        } else {
            self.wanted.remove(&interest.user);
            self.resubscribing.remove(&interest.user);
        }
        self.dirty.insert(interest.user);
        self.flush(ctx);
    }
}

/// Pushes from the connection manager, as many as are waiting: messages and disconnect notices.
struct Pushes(Vec<PushInfo>);

impl StreamHandler<Pushes> for RedisSubscriber {
    fn handle(&mut self, pushes: Pushes, ctx: &mut Context<Self>) {
        self.on_pushes(pushes.0, ctx);
    }
}
