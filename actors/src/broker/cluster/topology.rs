//! Which primary serves each hash slot, as the cluster said last (`CLUSTER SLOTS`), corrected by
//! the `MOVED` answers the subscriber gets in between.

use std::sync::Arc;

use redis::Value;

use crate::broker::keys::SLOTS;

/// A cluster node as `host:port`, the form `CLUSTER SLOTS` and `MOVED` name it in.
pub(crate) type Node = Arc<str>;

/// "No node" in the slot table.
const NONE: u16 = u16::MAX;

/// The primary of every hash slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Topology {
    /// Primaries, indexed by the slot table.
    primaries: Vec<Node>,
    /// How many slots each of `primaries` serves.
    counts: Vec<usize>,
    /// For each slot, the index of its primary in `primaries`, or [`NONE`].
    owners: Vec<u16>,
}

impl Topology {
    /// The topology in a `CLUSTER SLOTS` reply; `asked` names the node that answered (a node
    /// that does not know its own address answers an empty host). `None` when the reply is not
    /// a `CLUSTER SLOTS` reply or covers no slot.
    pub(crate) fn from_slots_reply(reply: &Value, asked: &str) -> Option<Self> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut topology = Topology {
            primaries: Vec::new(),
            counts: Vec::new(),
            owners: vec![NONE; usize::from(SLOTS)],
        };
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let (start, end) = (int(fields.first()?)?, int(fields.get(1)?)?);
            let primary = node_of(fields.get(2)?, asked)?;
            if start > end || end >= i64::from(SLOTS) || start < 0 {
                return None;
            }
            let index = topology.index_of(&primary)?;
            for slot in start..=end {
                topology.owners[slot as usize] = index;
            }
        }
        topology.count();
        (!topology.primaries.is_empty()).then_some(topology)
    }

    /// The primary serving `slot`, if any.
    pub(crate) fn owner(&self, slot: u16) -> Option<&Node> {
        let index = *self.owners.get(usize::from(slot))?;
        self.primaries.get(usize::from(index))
    }

    /// Records that `node` serves `slot` now (a `MOVED` answer).
    pub(crate) fn set_owner(&mut self, slot: u16, node: &str) {
        if let (Some(index), Some(owner)) = (
            self.index_of(&Node::from(node)),
            self.owners.get_mut(usize::from(slot)),
        ) {
            *owner = index;
            self.count();
        }
    }

    /// Counts each primary's slots.
    fn count(&mut self) {
        self.counts = vec![0; self.primaries.len()];
        for &owner in &self.owners {
            if let Some(count) = self.counts.get_mut(usize::from(owner)) {
                *count += 1;
            }
        }
    }

    /// Whether `node` serves at least one slot.
    pub(crate) fn is_primary(&self, node: &str) -> bool {
        self.slot_count(node) > 0
    }

    /// How many slots `node` serves.
    pub(crate) fn slot_count(&self, node: &str) -> usize {
        self.primaries
            .iter()
            .position(|p| &**p == node)
            .and_then(|index| self.counts.get(index))
            .copied()
            .unwrap_or(0)
    }

    /// Every node that serves at least one slot, in address order.
    pub(crate) fn primaries(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = self
            .primaries
            .iter()
            .filter(|node| self.is_primary(node))
            .cloned()
            .collect();
        nodes.sort();
        nodes
    }

    /// How many slots no primary serves.
    #[cfg(test)]
    pub(crate) fn uncovered(&self) -> usize {
        self.owners.iter().filter(|&&o| o == NONE).count()
    }

    fn index_of(&mut self, node: &Node) -> Option<u16> {
        if let Some(index) = self.primaries.iter().position(|p| p == node) {
            return u16::try_from(index).ok();
        }
        let index = u16::try_from(self.primaries.len())
            .ok()
            .filter(|&i| i != NONE)?;
        self.primaries.push(node.clone());
        Some(index)
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

/// `host:port` of a `[host, port, id, …]` node entry.
fn node_of(entry: &Value, asked: &str) -> Option<Node> {
    let Value::Array(fields) = entry else {
        return None;
    };
    let host = match fields.first()? {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.to_owned(),
        Value::SimpleString(text) => text.clone(),
        _ => return None,
    };
    let port = int(fields.get(1)?)?;
    if host.is_empty() || host == "?" {
        let asked_host = split_node(asked)?.0;
        return Some(Node::from(format!("{asked_host}:{port}")));
    }
    Some(Node::from(format!("{host}:{port}")))
}

/// `(host, port)` of a `host:port` node name (the host may be an IPv6 address).
pub(crate) fn split_node(node: &str) -> Option<(&str, u16)> {
    let (host, port) = node.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// The slot and node of a `MOVED <slot> <host:port>` error detail (what follows `MOVED`).
pub(crate) fn parse_moved(detail: &str) -> Option<(u16, Node)> {
    let mut parts = detail.split_whitespace();
    let slot: u16 = parts.next()?.parse().ok().filter(|&s| s < SLOTS)?;
    let node = parts.next()?;
    split_node(node)?;
    Some((slot, Node::from(node)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn range(start: i64, end: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
            Value::Array(vec![bulk(host), Value::Int(port + 3), bulk("replica")]),
        ])
    }

    #[test]
    fn a_slots_reply_gives_every_slot_its_primary() {
        let reply = Value::Array(vec![
            range(0, 5460, "127.0.0.1", 7001),
            range(5461, 10922, "127.0.0.1", 7002),
            range(10923, 16383, "", 7003),
        ]);
        let topology = Topology::from_slots_reply(&reply, "127.0.0.1:7002").expect("valid");
        assert_eq!(topology.owner(0).map(|n| &**n), Some("127.0.0.1:7001"));
        assert_eq!(topology.owner(5461).map(|n| &**n), Some("127.0.0.1:7002"));
        assert_eq!(topology.owner(16383).map(|n| &**n), Some("127.0.0.1:7003"));
        assert_eq!(topology.uncovered(), 0);
        assert_eq!(topology.slot_count("127.0.0.1:7001"), 5461);
        assert!(!topology.is_primary("127.0.0.1:7004"));
        let mut moved = topology.clone();
        moved.set_owner(0, "127.0.0.1:7002");
        assert_eq!(moved.owner(0).map(|n| &**n), Some("127.0.0.1:7002"));
        assert_eq!(moved.slot_count("127.0.0.1:7001"), 5460);
    }

    #[test]
    fn anything_else_is_no_topology() {
        for bad in [
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![range(5, 4, "h", 1)]),
            Value::Array(vec![range(0, 16384, "h", 1)]),
            Value::Array(vec![Value::Int(1)]),
        ] {
            assert_eq!(Topology::from_slots_reply(&bad, "h:1"), None, "{bad:?}");
        }
    }

    #[test]
    fn moved_details_parse() {
        assert_eq!(
            parse_moved("148 127.0.0.1:17001"),
            Some((148, Node::from("127.0.0.1:17001")))
        );
        assert_eq!(parse_moved("1 ::1:7000"), Some((1, Node::from("::1:7000"))));
        assert_eq!(parse_moved("16384 h:1"), None);
        assert_eq!(parse_moved("x h:1"), None);
        assert_eq!(parse_moved("1 nohost"), None);
    }
}
