//! Capped exponential backoff with full jitter, for retries while a dependency is down.

use std::time::Duration;

use rand::Rng;

/// First retry delay ceiling; doubles per failed attempt up to the cap.
const BASE: Duration = Duration::from_millis(100);

/// The retry schedule of one outage.
#[derive(Debug)]
pub(crate) struct Backoff {
    attempt: u32,
    cap: Duration,
}

impl Backoff {
    /// A fresh schedule whose delays never exceed `cap`.
    pub(crate) fn new(cap: Duration) -> Self {
        Self { attempt: 0, cap }
    }

    /// Failed attempts so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt: uniform in `[0, min(cap, BASE·2^attempt)]`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = BASE
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap.max(Duration::from_millis(1)));
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_but_stay_under_the_cap() {
        let cap = Duration::from_secs(2);
        let mut backoff = Backoff::new(cap);
        assert!(backoff.next_delay() <= BASE);
        for _ in 0..50 {
            assert!(backoff.next_delay() <= cap);
        }
        assert_eq!(backoff.attempts(), 51);
    }
}
