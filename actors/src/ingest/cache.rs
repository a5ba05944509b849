//! A bounded cache whose entries expire: owner lookups and, with the in-process broker, seen
//! event ids. Eviction is oldest-inserted first; memory is bounded by the capacity.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// At most `capacity` entries, each valid for `ttl` after it was inserted.
#[derive(Debug)]
pub(crate) struct TtlCache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    /// Insertion order, with the insertion time to recognise entries replaced since.
    order: VecDeque<(K, Instant)>,
    capacity: usize,
    ttl: Duration,
}

impl<K: Clone + Eq + Hash, V: Clone> TtlCache<K, V> {
    /// An empty cache (`capacity` at least 1).
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// The live value of `key`.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.get_at(key, Instant::now())
    }

    fn get_at(&self, key: &K, now: Instant) -> Option<V> {
        let (value, at) = self.entries.get(key)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| value.clone())
    }

    /// Inserts or replaces `key`, evicting expired and then the oldest entries to make room.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        self.insert_at(key, value, Instant::now());
    }

    fn insert_at(&mut self, key: K, value: V, now: Instant) {
        self.entries.insert(key.clone(), (value, now));
        self.order.push_back((key, now));
        if self.order.len() > 2 * self.capacity + 16 {
            // Keys replaced behind a long-lived front entry: drop their stale order entries.
            let entries = &self.entries;
            self.order
                .retain(|(k, at)| entries.get(k).is_some_and(|(_, t)| t == at));
        }
        while let Some((oldest, at)) = self.order.front() {
            let current = self.entries.get(oldest).is_some_and(|(_, t)| t == at);
            if !current {
                // Replaced since: only the newer order entry counts.
                self.order.pop_front();
                continue;
            }
            let expired = now.saturating_duration_since(*at) >= self.ttl;
            if !expired && self.entries.len() <= self.capacity {
                break;
            }
            if let Some((oldest, _)) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    /// Live and expired entries not yet evicted.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let mut cache = TtlCache::new(10, Duration::from_secs(5));
        let start = Instant::now();
        cache.insert_at("a", 1, start);
        assert_eq!(cache.get_at(&"a", start + Duration::from_secs(4)), Some(1));
        assert_eq!(cache.get_at(&"a", start + Duration::from_secs(5)), None);
        cache.insert_at("b", 2, start + Duration::from_secs(6));
        assert_eq!(cache.len(), 1, "the expired entry was evicted");
    }

    #[test]
    fn capacity_evicts_the_oldest() {
        let mut cache = TtlCache::new(2, Duration::from_secs(60));
        let now = Instant::now();
        cache.insert_at("a", 1, now);
        cache.insert_at("b", 2, now);
        cache.insert_at("a", 3, now + Duration::from_millis(1));
        cache.insert_at("c", 4, now + Duration::from_millis(2));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"b"), None, "b was the oldest live entry");
        assert_eq!(cache.get(&"a"), Some(3));
        assert_eq!(cache.get(&"c"), Some(4));
        let mut long_lived = TtlCache::new(4, Duration::from_secs(60));
        long_lived.insert("a", 0);
        for i in 0..1000 {
            long_lived.insert("x", i);
        }
        assert_eq!(long_lived.len(), 2);
        assert!(
            long_lived.order.len() <= 2 * 4 + 17,
            "{}",
            long_lived.order.len()
        );
    }
}
