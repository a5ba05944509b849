//! The messages between a session and its user's hub, in one place: what a `Session` accepts
//! ([`Deliver`], [`SessionControl`]) and how a hub reaches it ([`SessionLink`]); what a session
//! sends to join and leave its hub ([`JoinHub`], [`LeaveHub`]) and how it reaches the directory
//! shard that holds the hub ([`HubLink`]). A session's other input, its client's frames, is a
//! stream (`client_frames`), not a message.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use bytestring::ByteString;

use crate::ids::{ConnId, UserId};
use crate::payload::Published;

/// A message for one session's socket. Sent on the hot path: carries shared handles.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    /// The message (payload and position), shared with every other session of the user.
    pub message: Published,
    /// Its v2 `message` frame, encoded once by the hub when the user has a v2 session.
    pub v2_frame: Option<ByteString>,
}

/// Why a hub did not admit a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The user already has `max_connections_per_user` sessions on this node.
    UserQuota,
    /// The node is draining and takes no new sessions.
    Draining,
}

/// What a hub (or shard) tells a session about its membership and its end.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum SessionControl {
    /// Admitted: deliveries follow.
    Joined,
    /// Not admitted: the session closes with the matching code.
    Refused(JoinRefusal),
    /// The user's broker channels are subscribed (acknowledged by the broker): a v2 session
    /// may read the history now, nothing published from here on can be missed.
    Subscribed,
    /// The broker link came back after an outage: a live v2 session reads what it missed.
    CatchUp,
    /// The node is draining: close with 1012 after this delay.
    Drain {
        /// When to close, counted from receipt, so that closes are spread over the window.
        after: Duration,
    },
    /// Disconnected by the operator API: close with 4003 at once.
    Disconnect {
        /// The message of the close reason (why, e.g. "logged out").
        reason: Arc<str>,
    },
}

/// The two ways a hub reaches one session.
#[derive(Clone, Debug)]
pub struct SessionLink {
    /// Hot path: messages to send.
    pub deliver: Recipient<Deliver>,
    /// Membership and drain.
    pub control: Recipient<SessionControl>,
    /// Whether the session speaks protocol v2 (the hub then encodes v2 frames).
    pub v2: bool,
    /// When the session started (the console's "connected since").
    pub since: SystemTime,
}

/// A new session asks to join its user's hub (sent to the directory shard of its user).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct JoinHub {
    /// The session's user.
    pub user: UserId,
    /// The session.
    pub conn: ConnId,
    /// How to reach it.
    pub link: SessionLink,
}

/// A session has stopped; its hub forgets it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LeaveHub {
    /// The session's user.
    pub user: UserId,
    /// The session.
    pub conn: ConnId,
}

/// How a session reaches its user's hub: the directory shard that holds (or will start) the
/// hub, and the arbiter they run on, where the session runs too.
#[derive(Clone)]
pub struct HubLink {
    /// The arbiter of the user's shard and hub.
    pub arbiter: ArbiterHandle,
    /// Where [`JoinHub`] goes.
    pub join: Recipient<JoinHub>,
    /// Where [`LeaveHub`] goes.
    pub leave: Recipient<LeaveHub>,
}
