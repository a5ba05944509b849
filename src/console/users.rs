//! `GET /api/v1/admin/users/{user_id}`: is this user connected, on which replicas, since when,
//! and (with a history store) what were the last messages.
//!
//! Two sources are merged: this replica's own hubs (`Directory::sessions_of`, so the answer
//! works without Redis and is exact for this replica) and the quota leases in Redis (every
//! other replica's sockets). A socket is named by `(node, conn)`; for this replica the hubs are
//! the truth, so its leases are not used (a lease may outlive its socket by a release in
//! flight).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};
use ws_actors::history::History;
use ws_actors::{SessionInfo, UserId};

use super::cluster::LeaseInfo;
use super::Console;
use crate::state::AppState;

/// How many of the user's last messages the lookup shows.
pub const HISTORY_SHOWN: u64 = 20;

/// One socket of the user, as the lookup answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    /// The replica holding it.
    pub node: String,
    /// Its connection id there.
    pub conn: u64,
    /// When it connected, ms since the Unix epoch.
    pub since_ms: u64,
    /// `legacy` or `v2`.
    pub protocol: String,
    /// The last durable message this replica handed to the user's sockets, `<epoch>:<offset>`
    /// (known for this replica's sockets only).
    pub last_position: Option<String>,
    /// Whether it is on the replica that answered.
    pub this_node: bool,
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This replica's sessions and the leases of the others, oldest first.
pub fn merge(node: &str, local: &[SessionInfo], leases: Vec<LeaseInfo>) -> Vec<Connection> {
    let mut connections: Vec<Connection> = local
        .iter()
        .map(|session| Connection {
            node: node.to_owned(),
            conn: session.conn.get(),
            since_ms: millis(session.since),
            protocol: session.protocol.to_owned(),
            last_position: session.last_position.as_ref().map(ToString::to_string),
            this_node: true,
        })
        .collect();
    let mut others: Vec<Connection> = leases
        .into_iter()
        .filter(|lease| lease.node != node)
        .map(|lease| Connection {
            node: lease.node,
            conn: lease.conn,
            since_ms: lease.since_ms,
            protocol: lease.protocol,
            last_position: None,
            this_node: false,
        })
        .collect();
    others.sort_by(|a, b| (&a.node, a.conn).cmp(&(&b.node, b.conn)));
    others.dedup_by(|a, b| a.node == b.node && a.conn == b.conn);
    connections.append(&mut others);
    connections.sort_by_key(|c| c.since_ms);
    connections
}

/// The lookup's answer for `user`.
pub async fn lookup(state: &AppState, console: &Console, user: &UserId) -> Value {
    let node = state.node.as_str();
    let mut notes = serde_json::Map::new();
    let local = match state.directory.sessions_of(user).await {
        Ok(local) => local,
        Err(_) => {
            notes.insert("local_error".into(), json!("this node is shutting down"));
            Vec::new()
        }
    };
    let leases = match &console.cluster {
        Some(cluster) => match cluster.leases(user).await {
            Ok(leases) => {
                notes.insert("source".into(), json!("redis"));
                leases
            }
            Err(error) => {
                notes.insert("source".into(), json!("local"));
                let error = format!("redis unreachable, this node only: {error}");
                notes.insert("error".into(), json!(error));
                Vec::new()
            }
        },
        None => {
            notes.insert("source".into(), json!("local"));
            Vec::new()
        }
    };
    let connections = merge(node, &local, leases);
    let mut answer = json!({
        "user_id": user.as_str(),
        "online": !connections.is_empty(),
        "connections": connections,
        "node": node,
        "cluster": Value::Object(notes),
    });
    if let Some(history) = &state.history {
        add_history(&mut answer, history.as_ref(), user).await;
    }
    answer
}

/// Adds `history` (the last [`HISTORY_SHOWN`] messages) and `position` to `answer`, or
/// `history_error` when the store fails.
async fn add_history(answer: &mut Value, history: &dyn History, user: &UserId) {
    let read = async {
        let head = history.read(user.clone(), 0, 0).await?;
        let after = head.top.saturating_sub(HISTORY_SHOWN);
        history
            .read(user.clone(), after, HISTORY_SHOWN as usize)
            .await
    };
    match read.await {
        Ok(read) => {
            let entries: Vec<Value> = read
                .entries
                .iter()
                .map(|entry| {
                    json!({
                        "offset": entry.offset,
                        "time_ms": entry.time_ms,
                        "data": payload_json(&entry.payload),
                    })
                })
                .collect();
            answer["history"] = Value::Array(entries);
            answer["position"] = json!({ "epoch": read.epoch.as_str(), "offset": read.top });
        }
        Err(error) => answer["history_error"] = json!(error.to_string()),
    }
}

/// A payload as JSON: itself when it is JSON text, else as a string.
pub fn payload_json(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ws_actors::ConnId;

    use super::*;

    fn lease(node: &str, conn: u64, since_ms: u64) -> LeaseInfo {
        LeaseInfo {
            node: node.into(),
            conn,
            since_ms,
            protocol: "v2".into(),
        }
    }

    #[test]
    fn this_nodes_sessions_win_and_other_nodes_come_from_leases() {
        let conn = ConnId::next();
        let local = [SessionInfo {
            conn,
            since: UNIX_EPOCH + Duration::from_millis(5_000),
            protocol: "legacy",
            last_position: None,
        }];
        let leases = vec![
            lease("me", conn.get(), 1),
            lease("me", 999_999, 2),
            lease("other", 3, 9_000),
            lease("other", 3, 9_000),
            lease("other", 1, 1_000),
        ];
        let merged = merge("me", &local, leases);
        let ids: Vec<(&str, u64, bool)> = merged
            .iter()
            .map(|c| (c.node.as_str(), c.conn, c.this_node))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("other", 1, false),
                ("me", conn.get(), true),
                ("other", 3, false)
            ]
        );
        assert_eq!(merged[1].since_ms, 5_000);
        assert_eq!(merged[1].protocol, "legacy");
    }

    #[test]
    fn payloads_are_shown_as_json_when_they_are() {
        assert_eq!(payload_json(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(payload_json(b"plain text"), json!("plain text"));
    }
}
