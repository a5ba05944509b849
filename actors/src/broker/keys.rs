//! The names of everything a user has in Redis besides its plain channel: the durable channel,
//! the history stream, its meta record, idempotency records, the Kafka ingest's dedupe records
//! and quota leases. Each name carries a hash tag (`{…}`) that makes Redis Cluster put it in the
//! **same slot as the user's plain channel** `ws:{user}`, so one Redis Function can append,
//! publish and read them atomically in cluster mode as well.
//!
//! Redis hashes a name by its tag, the text between the first `{` and the first `}` after it
//! when that text is not empty, else by the whole name. So the tag of a user's names is the
//! *channel's own* tag when it has one (`ws:{x}y` hashes by `x`), the channel itself when it
//! contains no `}` (then `{ws:alice}` hashes by `ws:alice`, exactly like the channel), and
//! otherwise (a `}` but no tag, as in `ws:a}b`) a short decimal string chosen to hash to the
//! channel's slot. Every name starts with that `{tag}`; the channel follows it unless the tag
//! *is* the channel, so names stay readable in the common case: user `alice` has
//! `{ws:alice}` (durable channel), `{ws:alice}:h` (stream), `{ws:alice}:m` (meta).
//!
//! Plain channels never start with `{` (the channel prefix may not), so a durable channel can
//! never be a plain one.

use std::sync::OnceLock;

use crate::ids::UserId;

/// Redis Cluster's number of hash slots.
pub const SLOTS: u16 = 16384;

/// CRC16/XMODEM, as Redis Cluster computes it.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `name` Redis Cluster hashes: its tag, or the whole name.
fn hashed_part(name: &[u8]) -> &[u8] {
    let Some(open) = name.iter().position(|&b| b == b'{') else {
        return name;
    };
    let rest = &name[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => name,
    }
}

/// The hash slot of `name`, as Redis Cluster computes it.
pub fn slot(name: &[u8]) -> u16 {
    crc16(hashed_part(name)) % SLOTS
}

/// For each slot, the shortest decimal string hashing to it (built once, on first need).
fn slot_tags() -> &'static [u32] {
    static TAGS: OnceLock<Vec<u32>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; usize::from(SLOTS)];
        let mut left = usize::from(SLOTS);
        let mut n: u32 = 0;
        while left > 0 {
            let s = usize::from(slot(n.to_string().as_bytes()));
            if tags[s] == u32::MAX {
                tags[s] = n;
                left -= 1;
            }
            n += 1;
        }
        tags
    })
}

/// A tag (no `}` in it) that hashes to the same slot as `channel`.
fn tag_of(channel: &[u8]) -> Vec<u8> {
    let hashed = hashed_part(channel);
    if hashed.len() < channel.len() || !channel.contains(&b'}') {
        return hashed.to_vec();
    }
    let tag = slot_tags()[usize::from(slot(channel))];
    tag.to_string().into_bytes()
}

/// Every name a user has besides its plain channel, all in the plain channel's slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserKeys {
    /// `{tag}` then the channel unless the tag is the channel.
    base: Vec<u8>,
}

impl UserKeys {
    /// The names of the user whose plain channel is `channel` (`prefix` + user id).
    pub fn of_channel(channel: &[u8]) -> Self {
        let tag = tag_of(channel);
        let mut base = Vec::with_capacity(tag.len() + channel.len() + 2);
        base.push(b'{');
        base.extend_from_slice(&tag);
        base.push(b'}');
        if tag != channel {
            base.extend_from_slice(channel);
        }
        Self { base }
    }

    /// The names of `user` with channel prefix `prefix`.
    pub fn of_user(prefix: &str, user: &UserId) -> Self {
        Self::of_channel(&super::channel_name(prefix, user))
    }

    /// Where durable messages of the user are published (`<epoch>:<offset>:<payload>`).
    pub fn durable_channel(&self) -> Vec<u8> {
        self.base.clone()
    }

    /// The history stream (entry id `<offset>-0`).
    pub fn stream(&self) -> Vec<u8> {
        self.with_suffix(b":h")
    }

    /// The meta record: the epoch and the top offset.
    pub fn meta(&self) -> Vec<u8> {
        self.with_suffix(b":m")
    }

    /// The record of an `Idempotency-Key` for this user.
    pub fn idempotency(&self, key: &str) -> Vec<u8> {
        let mut name = self.with_suffix(b":i:");
        name.extend_from_slice(key.as_bytes());
        name
    }

    /// The record of an event the Kafka ingest published to this user (`dedupe_id`: the
    /// event id), written by `ws_publish_once`.
    pub fn dedupe(&self, dedupe_id: &str) -> Vec<u8> {
        let mut name = self.with_suffix(b":d:");
        name.extend_from_slice(dedupe_id.as_bytes());
        name
    }

    /// The user's quota leases (a sorted set scored by expiry).
    pub fn leases(&self) -> Vec<u8> {
        self.with_suffix(b":l")
    }

    /// Details of each lease (node, since, protocol), by lease member.
    pub fn lease_info(&self) -> Vec<u8> {
        self.with_suffix(b":li")
    }

    fn with_suffix(&self, suffix: &[u8]) -> Vec<u8> {
        [self.base.as_slice(), suffix].concat()
    }

    /// The plain channel of a durable channel (as [`UserKeys::durable_channel`] names it), or
    /// `None` for a name that is not one.
    pub fn plain_channel_of(durable: &[u8]) -> Option<&[u8]> {
        let rest = durable.strip_prefix(b"{")?;
        let close = rest.iter().position(|&b| b == b'}')?;
        let after = &rest[close + 1..];
        Some(if after.is_empty() {
            &rest[..close]
        } else {
            after
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn crc16_matches_redis_cluster_examples() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }

    #[test]
    fn common_names_are_readable() {
        let keys = UserKeys::of_channel(b"ws:alice");
        assert_eq!(keys.durable_channel(), b"{ws:alice}");
        assert_eq!(keys.stream(), b"{ws:alice}:h");
        assert_eq!(keys.meta(), b"{ws:alice}:m");
        assert_eq!(
            UserKeys::plain_channel_of(&keys.durable_channel()),
            Some(&b"ws:alice"[..])
        );
        let braced = UserKeys::of_channel(b"ws:{x}y");
        assert_eq!(braced.durable_channel(), b"{x}ws:{x}y");
    }

    proptest! {
        #[test]
        fn every_name_shares_the_channel_slot_and_reads_back(user in "[a-z{}:]{0,12}") {
            let channel = format!("ws:{user}").into_bytes();
            let keys = UserKeys::of_channel(&channel);
            let want = slot(&channel);
            for name in [keys.durable_channel(), keys.stream(), keys.meta(),
                         keys.idempotency("k}{"), keys.dedupe("e}{"), keys.leases(),
                         keys.lease_info()] {
                prop_assert_eq!(slot(&name), want);
            }
            let durable = keys.durable_channel();
            prop_assert_eq!(UserKeys::plain_channel_of(&durable), Some(&channel[..]));
        }
    }
}
