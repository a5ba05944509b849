//! The open-files limit (`RLIMIT_NOFILE`). Every socket is a file descriptor: a node whose
//! `limits.max_connections` is above what the process may open runs out of descriptors first,
//! and then its accept loop fails ("Too many open files") and new clients hang in the backlog
//! instead of being answered 1013.
//!
//! At start-up the soft limit is raised to the hard limit, and `limits.max_connections` is
//! lowered (with a warning naming the key) when it does not fit below the limit with a reserve
//! of [`RESERVED_BASE`] descriptors plus 1/[`RESERVED_FRACTION`] of the limit, for what is not
//! a WebSocket: Redis and Kafka connections, the listener, the event loops, log files, HTTP
//! requests (health checks, metrics, publish API) and refused sockets still lingering (at most
//! 1/32 of the cap: see `ConnectionLimiter::try_linger`).

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use crate::config::LimitSettings;

/// Descriptors always kept out of the connection budget.
pub const RESERVED_BASE: u64 = 64;
/// The share of the limit (1/n) also kept out of it.
pub const RESERVED_FRACTION: u64 = 16;

/// Descriptors kept for everything but WebSockets under an open-files limit of `limit`.
pub fn reserve(limit: u64) -> u64 {
    RESERVED_BASE + limit / RESERVED_FRACTION
}

/// The most WebSockets that fit under `limit` beside the reserve (at least one).
pub fn connection_budget(limit: u64) -> usize {
    let budget = limit.saturating_sub(reserve(limit)).max(1);
    usize::try_from(budget).unwrap_or(usize::MAX)
}

/// Raises the soft open-files limit to the hard limit. Returns the soft limit in force
/// afterwards (`None`: unlimited); when the raise fails it is logged and the old one returned.
pub fn raise_soft_limit() -> Option<u64> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current == maximum {
        return current;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: maximum,
            maximum,
        },
    ) {
        Ok(()) => {
            tracing::info!(
                from = current,
                to = maximum,
                "raised the open-files soft limit"
            );
            maximum
        }
        Err(error) => {
            tracing::warn!(
                soft = current,
                hard = maximum,
                %error,
                "cannot raise the open-files soft limit to the hard limit"
            );
            current
        }
    }
}

/// Lowers `limits.max_connections` to the budget of an open-files limit `limit` (`None`:
/// unlimited) when it is above it; returns the value it had when it was lowered.
pub fn clamp_max_connections(limits: &mut LimitSettings, limit: Option<u64>) -> Option<usize> {
    let budget = connection_budget(limit?);
    if limits.max_connections <= budget {
        return None;
    }
    Some(std::mem::replace(&mut limits.max_connections, budget))
}

/// Raises the soft limit and keeps `limits.max_connections` within it, warning when it lowers it.
pub fn fit_connections_to_limit(limits: &mut LimitSettings) {
    let limit = raise_soft_limit();
    if let Some(configured) = clamp_max_connections(limits, limit) {
        tracing::warn!(
            key = "limits.max_connections",
            configured,
            effective = limits.max_connections,
            open_files_limit = limit,
            reserved = limit.map(reserve),
            "limits.max_connections is above what the open-files limit allows: lowered (raise \
             the hard limit, e.g. LimitNOFILE or ulimit -Hn, to allow more)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize) -> LimitSettings {
        LimitSettings {
            max_connections,
            ..LimitSettings::default()
        }
    }

    #[test]
    fn the_budget_keeps_a_reserve_and_at_least_one_connection() {
        assert_eq!(reserve(1_048_576), 64 + 65_536);
        assert_eq!(connection_budget(1_048_576), 1_048_576 - 64 - 65_536);
        assert_eq!(connection_budget(256), 256 - 64 - 16);
        assert_eq!(connection_budget(10), 1);
    }

    #[test]
    fn max_connections_is_lowered_only_when_above_the_budget() {
        let mut over = limits(100_000);
        assert_eq!(clamp_max_connections(&mut over, Some(256)), Some(100_000));
        assert_eq!(over.max_connections, 176);
        let mut within = limits(100);
        assert_eq!(clamp_max_connections(&mut within, Some(256)), None);
        assert_eq!(within.max_connections, 100);
        let mut unlimited = limits(100_000);
        assert_eq!(clamp_max_connections(&mut unlimited, None), None);
        assert_eq!(unlimited.max_connections, 100_000);
    }
}
