//! Actor test of the hand-off of an upgraded socket to its session: a socket whose session
//! cannot start (its hub's arbiter has stopped) is closed with 1011 and the JSON reason, not
//! dropped in silence.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use ws_actors::hub::HubSettings;
use ws_actors::{
    ConnId, ConnectionLimiter, Directory, RelayMetrics, Session, SessionConfig, SessionParams,
    SpawnError, Upgraded, UserId,
};

#[actix_rt::test]
async fn a_session_that_cannot_start_closes_its_socket_with_1011() {
    let metrics = RelayMetrics::unregistered();
    let hubs = HubSettings {
        max_sessions_per_user: 10,
        tracer: None,
    };
    let directory = Directory::start_local(hubs, None, metrics.clone());
    let user = UserId::new("orphan");
    let mut hub = directory.hub_link(&user);
    let stopped = Arbiter::new();
    hub.arbiter = stopped.handle();
    stopped.stop();
    stopped.join().expect("the arbiter stops");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (client, accepted) = tokio::join!(
        TcpStream::connect(listener.local_addr().expect("address")),
        listener.accept()
    );
    let mut client = client.expect("connect");
    let (server, _) = accepted.expect("accept");

    let params = SessionParams {
        permit: ConnectionLimiter::new(1, 1)
            .try_admit(&user)
            .expect("a fresh limiter has room"),
        user,
        conn: ConnId::next(),
        correlation_id: Arc::from("handoff-test"),
        expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
        config: Arc::new(SessionConfig {
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_queue_max: 8,
            close_on_expiry: false,
            max_frame_bytes: 64 * 1024,
        }),
        hub,
        metrics,
        protocol: ws_actors::v2::Protocol::Legacy,
        history: None,
    };
    let upgraded = Upgraded {
        stream: server,
        handshake: Bytes::from_static(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        read_ahead: BytesMut::new(),
    };
    let result = Session::spawn(params, upgraded);
    assert!(matches!(result, Err(SpawnError::ArbiterGone)), "{result:?}");

    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut received))
        .await
        .expect("the server ends the connection")
        .expect("read");
    let head_end = b"\r\n\r\n";
    let at = received
        .windows(4)
        .position(|w| w == head_end)
        .expect("the 101 arrives")
        + 4;
    let frame = &received[at..];
    assert_eq!(frame[0], 0x88, "a close frame");
    let payload = &frame[2..2 + usize::from(frame[1])];
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1011);
    let reason: serde_json::Value = serde_json::from_slice(&payload[2..]).expect("JSON reason");
    assert_eq!(reason["error_code"], "CONNECTION_ERROR");
    assert_eq!(reason["correlation_id"], "handoff-test");
}
