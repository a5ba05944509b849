//! The node's global connection cap. A session holds a [`ConnectionPermit`] for its whole life;
//! dropping the permit gives the slot back, so no path can leak a slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts open connections against `max_connections`. Cheap to clone; lock-free.
#[derive(Clone, Debug)]
pub struct ConnectionLimiter {
    inner: Arc<Counter>,
}

#[derive(Debug)]
struct Counter {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionLimiter {
    /// A limiter that admits at most `max` connections at once.
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Counter {
                open: AtomicUsize::new(0),
                max,
            }),
        }
    }

    /// Takes a slot, or `None` when the node is full.
    pub fn try_acquire(&self) -> Option<ConnectionPermit> {
        let taken = self
            .inner
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.inner.max).then_some(open + 1)
            });
        taken.ok().map(|_| ConnectionPermit {
            inner: Arc::clone(&self.inner),
        })
    }

    /// How many connections hold a slot now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.inner.max
    }
}

/// One slot of the global cap; released on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    inner: Arc<Counter>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.inner.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_and_frees_on_drop() {
        let limiter = ConnectionLimiter::new(2);
        let a = limiter.try_acquire().expect("first");
        let _b = limiter.try_acquire().expect("second");
        assert!(limiter.try_acquire().is_none());
        assert_eq!(limiter.open(), 2);
        drop(a);
        assert_eq!(limiter.open(), 1);
        assert!(limiter.try_acquire().is_some());
    }
}
