//! Actor tests of message accounting (issue #11, defect 8): every message a node accepts is
//! counted once, as forwarded or as dropped with its reason. A heartbeat ping that finds a
//! stuck client's outbox full is not a message, a message for a session that has just stopped
//! is not lost uncounted, and a directory shard's queue of broker messages is bounded in
//! messages, not in envelopes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use ws_actors::broker::RouteUser;
use ws_actors::directory::ROUTE_QUEUE_MAX;
use ws_actors::hub::HubSettings;
use ws_actors::session::{Deliver, SessionControl, SessionLink};
use ws_actors::{
    ConnId, ConnectionLimiter, Directory, Payload, RelayMetrics, Session, SessionConfig,
    SessionParams, Upgraded, UserId,
};

const DEADLINE: Duration = Duration::from_secs(5);
/// Socket buffers asked for on both ends of the stuck client's connection (the kernel doubles
/// them and applies its minimum): a large message cannot fit in them.
const SMALL_BUFFER: u32 = 4096;

fn directory(metrics: &RelayMetrics) -> Directory {
    let hubs = HubSettings {
        max_sessions_per_user: 10,
        tracer: None,
    };
    Directory::start_local(hubs, None, metrics.clone())
}

fn dropped(metrics: &RelayMetrics, reason: &str) -> u64 {
    metrics.messages_dropped.with_label_values(&[reason]).get()
}

fn text(bytes: impl Into<Bytes>) -> Payload {
    Payload::from_bytes(bytes.into())
}

/// Polls `condition` on this thread (the actors run here too) until it holds.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A connected pair: the client end never reads; both ends have small socket buffers.
async fn stuck_connection() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let client = TcpSocket::new_v4().expect("client socket");
    client
        .set_recv_buffer_size(SMALL_BUFFER)
        .expect("client SO_RCVBUF");
    let (client, accepted) = tokio::join!(client.connect(address), listener.accept());
    let client = client.expect("connect");
    let (server, _) = accepted.expect("accept");
    socket2::SockRef::from(&server)
        .set_send_buffer_size(SMALL_BUFFER as usize)
        .expect("server SO_SNDBUF");
    (client, server)
}

/// Starts a session on `server` (already upgraded) for `user`, pinging every 20 ms.
fn spawn_session(
    server: TcpStream,
    user: &str,
    send_queue_max: usize,
    directory: &Directory,
    metrics: &RelayMetrics,
) {
    let config = SessionConfig {
        heartbeat_interval: Duration::from_millis(20),
        heartbeat_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        send_queue_max,
        close_on_expiry: false,
        max_frame_bytes: 64 * 1024,
    };
    let params = SessionParams {
        user: UserId::new(user),
        conn: ConnId::next(),
        correlation_id: Arc::from("accounting-test"),
        expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
        permit: ConnectionLimiter::new(1, 1)
            .try_admit(&UserId::new(user))
            .expect("a fresh limiter has room"),
        config: Arc::new(config),
        hub: directory.hub_link(&UserId::new(user)),
        metrics: metrics.clone(),
        protocol: ws_actors::v2::Protocol::Legacy,
        history: None,
    };
    let upgraded = Upgraded {
        stream: server,
        handshake: Bytes::new(),
        read_ahead: BytesMut::new(),
    };
    Session::spawn(params, upgraded).expect("session started");
}

/// A client that never reads gets one message far larger than the socket buffers, so its frame
/// stays in the outbox, partly written; heartbeat pings queue behind it until one finds the
/// outbox full. That closes the socket 4009 (the client does not read) but drops no message:
/// the message is counted only once the connection is gone, as the one message it was.
#[actix::test]
async fn ping_that_finds_a_full_outbox_is_not_a_dropped_message() {
    let metrics = RelayMetrics::unregistered();
    let directory = directory(&metrics);
    let (client, server) = stuck_connection().await;
    spawn_session(server, "pinged", 2, &directory, &metrics);
    wait_until("the session to join its hub", || {
        metrics
            .connections_opened
            .with_label_values(&["accepted"])
            .get()
            == 1
    })
    .await;

    directory.route(UserId::new("pinged"), text(vec![b'a'; 1 << 20]));
    let closed_4009 = || {
        metrics
            .connections_closed
            .with_label_values(&["4009"])
            .get()
    };
    wait_until("a 4009 close once pings fill the outbox", || {
        closed_4009() == 1
    })
    .await;
    assert_eq!(
        dropped(&metrics, "slow_consumer"),
        0,
        "a ping (or the pings behind the message) counted as a dropped message"
    );

    drop(client);
    wait_until(
        "the unfinished message to be counted at the session's end",
        || dropped(&metrics, "slow_consumer") > 0,
    )
    .await;
    assert_eq!(
        dropped(&metrics, "slow_consumer"),
        1,
        "one message was routed"
    );
    assert_eq!(
        metrics.messages_forwarded.get(),
        0,
        "the client read nothing"
    );
}

/// A shard holds [`ROUTE_QUEUE_MAX`] broker messages, however they are packed into envelopes:
/// single messages and full batches alike; a batch that straddles the bound is cut at it, and
/// exactly the excess is counted as dropped for overload. Once the shard has caught up, the
/// room is given back.
#[actix::test]
async fn shard_queue_is_bounded_in_messages() {
    const SINGLES: usize = 30;
    const EXCESS: usize = 100;
    let metrics = RelayMetrics::unregistered();
    let directory = directory(&metrics);
    directory.hub_count().await.expect("shard running");
    let nobody = || UserId::new("nobody");

    // The shard runs on this thread: nothing is taken from its queue until the test awaits.
    for _ in 0..SINGLES {
        directory.route(nobody(), text("single"));
    }
    let batched = ROUTE_QUEUE_MAX - SINGLES + EXCESS;
    directory.route_all((0..batched).map(|_| (RouteUser::Id(nobody()), text("batched").into())));
    directory.hub_count().await.expect("shard caught up"); // answered after every batch

    assert_eq!(dropped(&metrics, "overload"), EXCESS as u64);
    assert_eq!(dropped(&metrics, "no_session"), ROUTE_QUEUE_MAX as u64);

    directory.route(nobody(), text("after"));
    directory.hub_count().await.expect("shard caught up");
    assert_eq!(
        dropped(&metrics, "overload"),
        EXCESS as u64,
        "room not given back"
    );
    assert_eq!(dropped(&metrics, "no_session"), ROUTE_QUEUE_MAX as u64 + 1);
}

/// A session that has stopped and whose leave the hub has not seen yet is not handed the
/// message (it would be lost in a closed mailbox, counted nowhere): the hub counts it `closed`.
#[actix::test]
async fn message_for_a_stopped_session_is_counted_closed() {
    let metrics = RelayMetrics::unregistered();
    let directory = directory(&metrics);
    let session = Stoppable.start();
    let link = SessionLink {
        deliver: session.clone().recipient(),
        control: session.clone().recipient(),
        v2: false,
        since: std::time::SystemTime::now(),
    };
    directory.connect(UserId::new("gone"), ConnId::next(), link);
    directory.hub_count().await.expect("shard running");
    session.send(StopNow).await.expect("stop the session");
    wait_until("the session's mailbox to close", || !session.connected()).await;

    directory.route(UserId::new("gone"), text("late"));
    wait_until("the message to be counted", || {
        dropped(&metrics, "closed") == 1
    })
    .await;
    assert_eq!(dropped(&metrics, "no_session"), 0);
}

/// Stands in for a session that stops on request.
struct Stoppable;

impl Actor for Stoppable {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct StopNow;

impl Handler<StopNow> for Stoppable {
    type Result = ();
    fn handle(&mut self, _: StopNow, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Deliver> for Stoppable {
    type Result = ();
    fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {}
}

impl Handler<SessionControl> for Stoppable {
    type Result = ();
    fn handle(&mut self, _: SessionControl, _: &mut Context<Self>) {}
}
