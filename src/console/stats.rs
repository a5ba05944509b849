//! What this node measures for the console, sampled from its own Prometheus counters (so no
//! hot path is touched): messages forwarded per second, and connection refusals by reason per
//! minute over the last [`WINDOW_MINUTES`] minutes, kept in a small ring.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use ws_actors::RelayMetrics;

/// How many minutes of refusals are kept and shown.
pub const WINDOW_MINUTES: u64 = 15;

/// The refusal outcomes of `ws_connections_opened_total`, in the order the console shows them:
/// token refused, origin refused, per-user quota, node cap, draining.
pub const REFUSAL_REASONS: [&str; 5] = [
    "auth_failed",
    "origin_refused",
    "quota_user",
    "quota_global",
    "draining",
];

/// Refusals counted in one minute, by reason (in [`REFUSAL_REASONS`] order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCounts {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    /// One count per reason.
    pub counts: [u64; REFUSAL_REASONS.len()],
}

/// The last [`WINDOW_MINUTES`] minutes of refusals; only minutes with a refusal are stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefusalLog {
    minutes: VecDeque<MinuteCounts>,
}

impl RefusalLog {
    /// Adds `counts` to `minute` and forgets minutes that left the window.
    pub fn add(&mut self, minute: u64, counts: [u64; REFUSAL_REASONS.len()]) {
        if counts.iter().any(|&n| n > 0) {
            match self.minutes.back_mut() {
                Some(last) if last.minute == minute => {
                    for (sum, n) in last.counts.iter_mut().zip(counts) {
                        *sum += n;
                    }
                }
                _ => self.minutes.push_back(MinuteCounts { minute, counts }),
            }
        }
        let oldest = minute.saturating_sub(WINDOW_MINUTES - 1);
        while self.minutes.front().is_some_and(|m| m.minute < oldest) {
            self.minutes.pop_front();
        }
    }

    /// The minutes with refusals, oldest first.
    pub fn minutes(&self) -> Vec<MinuteCounts> {
        self.minutes.iter().cloned().collect()
    }
}

/// The refusal window as the API answers it: every minute of the window ending at `now_minute`
/// (oldest first, zeros included), with the counts of `logs` (one per node) summed.
pub fn refusals_json<'a>(
    now_minute: u64,
    logs: impl IntoIterator<Item = &'a [MinuteCounts]>,
) -> Value {
    let first = now_minute.saturating_sub(WINDOW_MINUTES - 1);
    let mut sums: BTreeMap<u64, [u64; REFUSAL_REASONS.len()]> =
        (first..=now_minute).map(|m| (m, [0; 5])).collect();
    for log in logs {
        for minute in log {
            if let Some(sum) = sums.get_mut(&minute.minute) {
                for (total, n) in sum.iter_mut().zip(minute.counts) {
                    *total += n;
                }
            }
        }
    }
    let mut totals = [0u64; REFUSAL_REASONS.len()];
    let minutes: Vec<Value> = sums
        .iter()
        .map(|(minute, counts)| {
            for (total, n) in totals.iter_mut().zip(counts) {
                *total += n;
            }
            json!({ "start_ms": minute * 60_000, "counts": by_reason(counts) })
        })
        .collect();
    json!({
        "window_minutes": WINDOW_MINUTES,
        "reasons": REFUSAL_REASONS,
        "minutes": minutes,
        "totals": by_reason(&totals),
    })
}

fn by_reason(counts: &[u64; REFUSAL_REASONS.len()]) -> Value {
    let map: serde_json::Map<String, Value> = REFUSAL_REASONS
        .iter()
        .zip(counts)
        .map(|(reason, n)| ((*reason).to_owned(), json!(n)))
        .collect();
    Value::Object(map)
}

/// The minute (since the Unix epoch) that `time` falls in.
pub fn minute_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() / 60)
}

/// This node's live figures, updated by each [`Sampler::sample`].
#[derive(Clone, Debug, Default)]
pub struct LiveStats {
    /// Messages written to sockets per second, over the last sampling interval.
    pub messages_per_s: f64,
    /// Refusals per minute.
    pub refusals: RefusalLog,
}

/// Reads the counters at each tick and turns their growth into rates and minute counts.
pub struct Sampler {
    metrics: RelayMetrics,
    last_at: Instant,
    last_forwarded: u64,
    last_refusals: [u64; REFUSAL_REASONS.len()],
}

impl Sampler {
    /// Starts from the counters' current values (what happened before is not attributed).
    pub fn new(metrics: RelayMetrics) -> Self {
        let last_forwarded = metrics.messages_forwarded.get();
        let last_refusals = refusal_counters(&metrics);
        Self {
            metrics,
            last_at: Instant::now(),
            last_forwarded,
            last_refusals,
        }
    }

    /// Samples the counters into `live`, attributing new refusals to the minute of `now`.
    pub fn sample(&mut self, live: &mut LiveStats, now: SystemTime) {
        let elapsed = self.last_at.elapsed().as_secs_f64();
        self.last_at = Instant::now();
        let forwarded = self.metrics.messages_forwarded.get();
        let delta = forwarded.saturating_sub(self.last_forwarded);
        self.last_forwarded = forwarded;
        if elapsed > 0.0 {
            live.messages_per_s = delta as f64 / elapsed;
        }
        let refusals = refusal_counters(&self.metrics);
        let mut new = [0u64; REFUSAL_REASONS.len()];
        for ((n, now), before) in new.iter_mut().zip(refusals).zip(self.last_refusals) {
            *n = now.saturating_sub(before);
        }
        self.last_refusals = refusals;
        live.refusals.add(minute_of(now), new);
    }
}

/// The refusal counters of `ws_connections_opened_total`, read without creating a series that
/// was never counted.
fn refusal_counters(metrics: &RelayMetrics) -> [u64; REFUSAL_REASONS.len()] {
    let mut counts = [0u64; REFUSAL_REASONS.len()];
    for family in metrics.connections_opened.collect() {
        for metric in family.get_metric() {
            let outcome = metric
                .get_label()
                .iter()
                .find(|label| label.name() == "outcome")
                .map(|label| label.value());
            let index = outcome.and_then(|o| REFUSAL_REASONS.iter().position(|r| *r == o));
            if let Some(index) = index {
                counts[index] = metric.get_counter().get_value() as u64;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refusals_are_counted_per_minute_and_forgotten_after_the_window() {
        let mut log = RefusalLog::default();
        log.add(100, [1, 0, 0, 0, 0]);
        log.add(100, [2, 0, 1, 0, 0]);
        log.add(101, [0; 5]);
        log.add(103, [0, 1, 0, 0, 0]);
        assert_eq!(
            log.minutes(),
            vec![
                MinuteCounts {
                    minute: 100,
                    counts: [3, 0, 1, 0, 0]
                },
                MinuteCounts {
                    minute: 103,
                    counts: [0, 1, 0, 0, 0]
                },
            ]
        );
        log.add(100 + WINDOW_MINUTES, [0; 5]);
        assert_eq!(log.minutes().len(), 1, "minute 100 left the window");
    }

    #[test]
    fn the_window_sums_nodes_and_fills_quiet_minutes() {
        let a = [MinuteCounts {
            minute: 200,
            counts: [1, 0, 0, 0, 2],
        }];
        let b = [
            MinuteCounts {
                minute: 200,
                counts: [1, 0, 0, 0, 0],
            },
            MinuteCounts {
                minute: 150,
                counts: [9, 9, 9, 9, 9],
            },
        ];
        let json = refusals_json(201, [&a[..], &b[..]]);
        let minutes = json["minutes"].as_array().unwrap();
        assert_eq!(minutes.len(), WINDOW_MINUTES as usize);
        assert_eq!(minutes[13]["start_ms"], 200 * 60_000);
        assert_eq!(minutes[13]["counts"]["auth_failed"], 2);
        assert_eq!(minutes[14]["counts"]["auth_failed"], 0);
        assert_eq!(json["totals"]["auth_failed"], 2, "minute 150 is outside");
        assert_eq!(json["totals"]["draining"], 2);
    }

    #[test]
    fn the_sampler_turns_counter_growth_into_rates_and_refusals() {
        let metrics = RelayMetrics::unregistered();
        let mut sampler = Sampler::new(metrics.clone());
        let mut live = LiveStats::default();
        metrics.opened("auth_failed");
        metrics.opened("auth_failed");
        metrics.opened("accepted");
        metrics.opened("quota_global");
        metrics.messages_forwarded.inc_by(10);
        std::thread::sleep(Duration::from_millis(5));
        let now = UNIX_EPOCH + Duration::from_secs(60 * 1000 + 5);
        sampler.sample(&mut live, now);
        assert!(live.messages_per_s > 0.0);
        assert_eq!(
            live.refusals.minutes(),
            vec![MinuteCounts {
                minute: 1000,
                counts: [2, 0, 0, 1, 0]
            }]
        );
        sampler.sample(&mut live, now);
        assert_eq!(
            live.refusals.minutes()[0].counts,
            [2, 0, 0, 1, 0],
            "no double count"
        );
    }
}
