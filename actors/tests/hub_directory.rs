//! Actor tests of the directory and hubs inside a real actix System: admission, the per-user
//! quota, subscribe on the first session and unsubscribe after the last, fan-out, retirement of
//! empty hubs and refusal while draining. A probe actor stands in for sessions and the broker.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::timeout;
use ws_actors::broker::Interest;
use ws_actors::hub::HubSettings;
use ws_actors::session::{Deliver, JoinRefusal, SessionControl, SessionLink};
use ws_actors::{ConnId, Directory, Payload, RelayMetrics, SpreadCloses, UserId};

const DEADLINE: Duration = Duration::from_secs(5);

/// What a probe saw.
#[derive(Debug, PartialEq)]
enum Seen {
    Delivered(Payload),
    Joined,
    Refused(JoinRefusal),
    Drain,
    Disconnect(String),
    Interest(String, bool),
}

/// Forwards everything it receives into a channel.
struct Probe(mpsc::UnboundedSender<Seen>);

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Probe {
    type Result = ();
    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        let _ = self.0.send(Seen::Delivered(msg.message.payload));
    }
}

impl Handler<SessionControl> for Probe {
    type Result = ();
    fn handle(&mut self, msg: SessionControl, _: &mut Context<Self>) {
        let seen = match msg {
            SessionControl::Joined => Seen::Joined,
            SessionControl::Refused(refusal) => Seen::Refused(refusal),
            SessionControl::Drain { .. } => Seen::Drain,
            SessionControl::Disconnect { reason } => Seen::Disconnect(reason.to_string()),
            // Channel acknowledgements concern v2 sessions only.
            SessionControl::Subscribed | SessionControl::CatchUp => return,
        };
        let _ = self.0.send(seen);
    }
}

impl Handler<Interest> for Probe {
    type Result = ();
    fn handle(&mut self, msg: Interest, _: &mut Context<Self>) {
        let _ = self
            .0
            .send(Seen::Interest(msg.user.to_string(), msg.wanted));
    }
}

struct Fixture {
    directory: Directory,
    interest: mpsc::UnboundedReceiver<Seen>,
    metrics: RelayMetrics,
}

fn fixture(max_per_user: usize) -> Fixture {
    let (tx, interest) = mpsc::unbounded_channel();
    let broker = Probe(tx).start();
    let metrics = RelayMetrics::unregistered();
    let directory = Directory::start_local(
        HubSettings {
            max_sessions_per_user: max_per_user,
            tracer: None,
        },
        Some(broker.recipient()),
        metrics.clone(),
    );
    Fixture {
        directory,
        interest,
        metrics,
    }
}

/// A fake session: its address and what it receives.
struct FakeSession {
    conn: ConnId,
    addr: Addr<Probe>,
    rx: mpsc::UnboundedReceiver<Seen>,
}

fn join(directory: &Directory, user: &str) -> FakeSession {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = Probe(tx).start();
    let conn = ConnId::next();
    let link = SessionLink {
        deliver: addr.clone().recipient(),
        control: addr.clone().recipient(),
        v2: false,
        since: std::time::SystemTime::now(),
    };
    directory.connect(UserId::new(user), conn, link);
    FakeSession { conn, addr, rx }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    timeout(DEADLINE, rx.recv())
        .await
        .expect("nothing received before the deadline")
        .expect("channel closed")
}

fn text(s: &'static str) -> Payload {
    Payload::from_bytes(Bytes::from_static(s.as_bytes()))
}

/// The first session subscribes the user's channel and is admitted; a second does not subscribe again.
#[actix::test]
async fn first_session_subscribes_once() {
    let mut f = fixture(10);
    let mut a = join(&f.directory, "alice");
    assert_eq!(next(&mut a.rx).await, Seen::Joined);
    assert_eq!(
        next(&mut f.interest).await,
        Seen::Interest("alice".into(), true)
    );
    let mut b = join(&f.directory, "alice");
    assert_eq!(next(&mut b.rx).await, Seen::Joined);
    assert_eq!(f.directory.hub_count().await.unwrap(), 1);
    assert!(f.interest.try_recv().is_err(), "no second subscribe");
    assert_eq!(f.metrics.users_active.get(), 1);
}

/// A message routed to a user reaches every session of that user and no other user's.
#[actix::test]
async fn fan_out_reaches_every_session_of_the_user_only() {
    let f = fixture(10);
    let mut a1 = join(&f.directory, "alice");
    let mut a2 = join(&f.directory, "alice");
    let mut b = join(&f.directory, "bob");
    for s in [&mut a1, &mut a2, &mut b] {
        assert_eq!(next(&mut s.rx).await, Seen::Joined);
    }
    f.directory.route(UserId::new("alice"), text("hi"));
    assert_eq!(next(&mut a1.rx).await, Seen::Delivered(text("hi")));
    assert_eq!(next(&mut a2.rx).await, Seen::Delivered(text("hi")));
    f.directory.route(UserId::new("bob"), text("yo"));
    assert_eq!(
        next(&mut b.rx).await,
        Seen::Delivered(text("yo")),
        "bob got alice's message first"
    );
    // Sessions count a message as forwarded once they have written it: probes write nothing.
    assert_eq!(f.metrics.messages_forwarded.get(), 0);
}

/// A disconnect reaches every session of the named users, through their hubs, with the reason;
/// another user's session hears nothing of it.
#[actix::test]
async fn disconnect_reaches_every_session_of_the_users_only() {
    let f = fixture(10);
    let mut a1 = join(&f.directory, "alice");
    let mut a2 = join(&f.directory, "alice");
    let mut b = join(&f.directory, "bob");
    for s in [&mut a1, &mut a2, &mut b] {
        assert_eq!(next(&mut s.rx).await, Seen::Joined);
    }
    let users = [UserId::new("alice"), UserId::new("nobody")];
    f.directory.disconnect(&users, "logged out");
    for s in [&mut a1, &mut a2] {
        assert_eq!(next(&mut s.rx).await, Seen::Disconnect("logged out".into()));
    }
    f.directory.route(UserId::new("bob"), text("still here"));
    assert_eq!(next(&mut b.rx).await, Seen::Delivered(text("still here")));
}

/// The per-user quota refuses the session over the limit and keeps the others.
#[actix::test]
async fn quota_refuses_the_extra_session() {
    let f = fixture(2);
    let mut a1 = join(&f.directory, "alice");
    let mut a2 = join(&f.directory, "alice");
    let mut a3 = join(&f.directory, "alice");
    assert_eq!(next(&mut a1.rx).await, Seen::Joined);
    assert_eq!(next(&mut a2.rx).await, Seen::Joined);
    assert_eq!(
        next(&mut a3.rx).await,
        Seen::Refused(JoinRefusal::UserQuota)
    );
    f.directory.route(UserId::new("alice"), text("x"));
    assert_eq!(next(&mut a1.rx).await, Seen::Delivered(text("x")));
    assert_eq!(next(&mut a2.rx).await, Seen::Delivered(text("x")));
    assert!(a3.rx.try_recv().is_err(), "a refused session got a message");
}

/// After the last session leaves, the hub is retired and the channel unsubscribed; a new session starts over.
#[actix::test]
async fn last_leave_unsubscribes_and_retires_the_hub() {
    let mut f = fixture(10);
    let mut a1 = join(&f.directory, "alice");
    let mut a2 = join(&f.directory, "alice");
    assert_eq!(next(&mut a1.rx).await, Seen::Joined);
    assert_eq!(next(&mut a2.rx).await, Seen::Joined);
    assert_eq!(
        next(&mut f.interest).await,
        Seen::Interest("alice".into(), true)
    );
    f.directory.leave(UserId::new("alice"), a1.conn);
    f.directory.leave(UserId::new("alice"), a2.conn);
    assert_eq!(
        next(&mut f.interest).await,
        Seen::Interest("alice".into(), false)
    );
    assert_eq!(f.directory.hub_count().await.unwrap(), 0);
    assert_eq!(f.metrics.users_active.get(), 0);
    let mut again = join(&f.directory, "alice");
    assert_eq!(next(&mut again.rx).await, Seen::Joined);
    assert_eq!(
        next(&mut f.interest).await,
        Seen::Interest("alice".into(), true)
    );
    drop(a1.addr);
}

/// A refused session leaves no hub and no subscription behind.
#[actix::test]
async fn refusal_of_a_lone_session_leaves_nothing() {
    let mut f = fixture(1);
    let mut a = join(&f.directory, "alice");
    assert_eq!(next(&mut a.rx).await, Seen::Joined);
    let mut extra = join(&f.directory, "alice");
    assert_eq!(
        next(&mut extra.rx).await,
        Seen::Refused(JoinRefusal::UserQuota)
    );
    f.directory.leave(UserId::new("alice"), a.conn);
    assert_eq!(
        next(&mut f.interest).await,
        Seen::Interest("alice".into(), true)
    );
    assert_eq!(
        next(&mut f.interest).await,
        Seen::Interest("alice".into(), false)
    );
    assert_eq!(f.directory.hub_count().await.unwrap(), 0);
}

/// Draining tells every session to close and refuses new ones.
#[actix::test]
async fn drain_closes_sessions_and_refuses_new_ones() {
    let f = fixture(10);
    let mut a = join(&f.directory, "alice");
    assert_eq!(next(&mut a.rx).await, Seen::Joined);
    f.directory
        .drain(Arc::new(SpreadCloses::over(Duration::from_millis(10))));
    assert_eq!(next(&mut a.rx).await, Seen::Drain);
    let mut late = join(&f.directory, "bob");
    assert_eq!(
        next(&mut late.rx).await,
        Seen::Refused(JoinRefusal::Draining)
    );
}

/// A message for a user with no session here is counted as dropped, not lost silently.
#[actix::test]
async fn message_without_session_is_counted() {
    let f = fixture(10);
    f.directory.route(UserId::new("nobody"), text("x"));
    let _ = f.directory.hub_count().await.unwrap(); // the route was handled before this answer
    let dropped = f
        .metrics
        .messages_dropped
        .with_label_values(&["no_session"])
        .get();
    assert_eq!(dropped, 1);
}

/// The console's view of a user: `sessions_of` lists the user's sessions on this node with
/// the time each was admitted; a user without a hub here has no session.
#[actix::test]
async fn sessions_are_listed_per_user() {
    let f = fixture(10);
    let before = std::time::SystemTime::now();
    let mut a1 = join(&f.directory, "alice");
    let mut a2 = join(&f.directory, "alice");
    let mut b = join(&f.directory, "bob");
    for session in [&mut a1, &mut a2, &mut b] {
        assert_eq!(next(&mut session.rx).await, Seen::Joined);
    }
    let alice = UserId::new("alice");
    let mut sessions = f.directory.sessions_of(&alice).await.unwrap();
    sessions.sort_by_key(|s| s.conn);
    let conns: Vec<ConnId> = sessions.iter().map(|s| s.conn).collect();
    assert_eq!(conns, vec![a1.conn, a2.conn]);
    assert!(sessions
        .iter()
        .all(|s| s.since >= before && s.protocol == "legacy"));
    let nobody = UserId::new("nobody");
    assert!(f.directory.sessions_of(&nobody).await.unwrap().is_empty());
    assert!(b.rx.try_recv().is_err(), "bob hears nothing");
}
