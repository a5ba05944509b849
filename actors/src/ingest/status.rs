//! The ingest's health (for `/readyz`): down while Kafka is unusable (told by the client's
//! callbacks) or while consumption is paused by an outage (told by the pipeline), and the
//! `ws_ingest_paused` gauge.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::IngestMetrics;
use crate::broker::BrokerHealth;

/// The ingest's health, from Kafka's side (connection, assignment) and the pipeline's (paused by
/// an outage). The lock is never held across an `.await`.
pub(crate) struct Status {
    health: watch::Sender<BrokerHealth>,
    state: Mutex<State>,
    metrics: IngestMetrics,
}

struct State {
    /// Why Kafka is not usable, if it is not.
    kafka: Option<String>,
    /// Dependencies that paused consumption, with why.
    paused: BTreeMap<&'static str, String>,
}

impl Status {
    /// A status that is down until Kafka is connected, and a receiver of its health changes.
    pub(crate) fn new(metrics: IngestMetrics) -> (Arc<Status>, watch::Receiver<BrokerHealth>) {
        const CONNECTING: &str = "connecting to kafka";
        let (health, receiver) = watch::channel(BrokerHealth::Down {
            reason: CONNECTING.into(),
        });
        let state = State {
            kafka: Some(CONNECTING.into()),
            paused: BTreeMap::new(),
        };
        let status = Status {
            health,
            state: Mutex::new(state),
            metrics,
        };
        (Arc::new(status), receiver)
    }

    /// The metrics the Kafka callbacks update.
    pub(crate) fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// Kafka usable (`None`) or not, with why.
    pub(crate) fn kafka(&self, problem: Option<String>) {
        self.update(|state| state.kafka = problem);
    }

    /// Marks consumption paused by `dependency`; true when it was not paused by it already.
    pub(crate) fn pause(&self, dependency: &'static str, why: &str) -> bool {
        self.update(|state| state.paused.insert(dependency, why.to_owned()).is_none())
    }

    /// Clears a pause by `dependency`; true when there was one.
    pub(crate) fn resume(&self, dependency: &'static str) -> bool {
        self.update(|state| state.paused.remove(dependency).is_some())
    }

    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = change(&mut state);
        self.metrics.paused.set(i64::from(!state.paused.is_empty()));
        let health = state.health();
        self.health.send_if_modified(|current| {
            let modified = *current != health;
            *current = health;
            modified
        });
        changed
    }
}

impl State {
    fn health(&self) -> BrokerHealth {
        match (&self.kafka, self.paused.iter().next()) {
            (Some(reason), _) => BrokerHealth::Down {
                reason: reason.clone(),
            },
            (None, Some((dependency, reason))) => BrokerHealth::Down {
                reason: format!("consumption paused: {dependency} unavailable: {reason}"),
            },
            (None, None) => BrokerHealth::Up,
        }
    }
}
