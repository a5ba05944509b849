//! Capped exponential backoff with full jitter, for retries while a dependency is down (the
//! Redis subscriber's reconnects, the Kafka ingest's pauses): the delay before attempt `n` is
//! uniform in `[0, min(cap, base·2^n)]`, so that many retrying clients spread out instead of
//! returning together.

use std::time::Duration;

use rand::Rng;

/// First retry delay ceiling of a [`Backoff`]; doubles per failed attempt up to the cap.
pub const BASE: Duration = Duration::from_millis(100);

/// The full-jitter delay before attempt `attempt` (0-based).
pub fn full_jitter(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempt.min(16))
        .min(cap.max(Duration::from_millis(1)));
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// The retry schedule of one outage.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    cap: Duration,
}

impl Backoff {
    /// A fresh schedule starting at [`BASE`] whose delays never exceed `cap`.
    pub fn new(cap: Duration) -> Self {
        Self { attempt: 0, cap }
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = full_jitter(BASE, self.cap, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        delay
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

    #[test]
    fn full_jitter_is_capped_and_starts_at_the_base() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 0..40 {
            let delay = full_jitter(base, cap, attempt);
            assert!(delay <= cap, "attempt {attempt}: {delay:?}");
        }
        assert!(full_jitter(base, cap, 0) <= base);
    }
}
