//! What a broker exchanges with the node it feeds: the messages it receives, each with its user
//! as the broker has it ([`RouteUser`]), handed to a [`RouteSink`] (the directory); and the
//! channels the node wants ([`Interest`]), which the Redis subscriber turns into SUBSCRIBE and
//! UNSUBSCRIBE.

use actix::Message;

use super::keys::UserKeys;
use crate::ids::UserId;
use crate::payload::Published;

/// Whether this node wants a user's broker channel. Sent to the broker subscriber in order, per
/// user, so the last one it received for a user is the truth.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Interest {
    /// The user whose channel this is about.
    pub user: UserId,
    /// `true`: subscribe; `false`: unsubscribe.
    pub wanted: bool,
}

/// Whose broker message it is, as the broker has it: a user id, or the channel name it arrived
/// on (taken over without a copy) with the channel prefix to skip.
#[derive(Debug)]
pub enum RouteUser {
    /// A user id (in-process broker, publish API).
    Id(UserId),
    /// A channel name as received from Redis (`ws:{user}`, or the user's durable channel); the
    /// user id is `name[start..end]`.
    Channel {
        /// The whole channel name.
        name: String,
        /// Where the user id starts.
        start: usize,
        /// Where it ends.
        end: usize,
    },
}

/// The broker channel of `user`: the channel prefix then the user id (`ws:alice`). The one
/// place that names a channel; [`RouteUser::from_channel`] reads it back.
pub fn channel_name(prefix: &str, user: &UserId) -> Vec<u8> {
    [prefix.as_bytes(), user.as_str().as_bytes()].concat()
}

impl RouteUser {
    /// The user of a channel named `prefix` + user id, or `None` for any other channel (or a
    /// name that is not UTF-8).
    pub fn from_channel(channel: Vec<u8>, prefix: &str) -> Option<Self> {
        if !channel.starts_with(prefix.as_bytes()) {
            return None;
        }
        let name = String::from_utf8(channel).ok()?;
        Some(RouteUser::Channel {
            start: prefix.len(),
            end: name.len(),
            name,
        })
    }

    /// The user of a durable channel (`UserKeys::durable_channel`) whose plain channel has
    /// `prefix`, or `None` for any other name.
    pub fn from_durable_channel(channel: Vec<u8>, prefix: &str) -> Option<Self> {
        let plain = UserKeys::plain_channel_of(&channel)?;
        if !plain.starts_with(prefix.as_bytes()) {
            return None;
        }
        // The plain channel is the tail of the name, or the tag just before the closing brace.
        let tag_only = channel.iter().position(|&b| b == b'}') == Some(channel.len() - 1);
        let end = channel.len() - usize::from(tag_only);
        let start = end - plain.len() + prefix.len();
        let name = String::from_utf8(channel).ok()?;
        name.get(start..end)?;
        Some(RouteUser::Channel { name, start, end })
    }

    /// The user id.
    pub fn as_str(&self) -> &str {
        match self {
            RouteUser::Id(user) => user.as_str(),
            RouteUser::Channel { name, start, end } => name.get(*start..*end).unwrap_or_default(),
        }
    }
}

/// Where a broker hands the messages it receives: this node's directory, which finds each
/// user's hub. Never waits: what cannot be queued is dropped and counted by the sink.
pub trait RouteSink: Send + Sync {
    /// Hands each message to its user's hub, in order per user.
    fn route_all(&self, routes: Vec<(RouteUser, Published)>);

    /// The broker has subscribed the channels of `users` and seen it acknowledged
    /// (`resubscribed`: again, after its link came back): nothing published to them from now
    /// on can be missed.
    fn channels_live(&self, users: Vec<UserId>, resubscribed: bool);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_name_reads_back_as_its_user() {
        let user = UserId::new("alice:*");
        let channel = channel_name("ws:", &user);
        assert_eq!(channel, b"ws:alice:*");
        let route = RouteUser::from_channel(channel, "ws:").expect("our channel");
        assert_eq!(route.as_str(), "alice:*");
        assert!(RouteUser::from_channel(b"other:alice".to_vec(), "ws:").is_none());
        for user in ["alice", "{x}y", "a}b", "}"] {
            let keys = UserKeys::of_user("ws:", &UserId::new(user));
            let route = RouteUser::from_durable_channel(keys.durable_channel(), "ws:");
            assert_eq!(route.as_ref().map(RouteUser::as_str), Some(user));
        }
    }
}
