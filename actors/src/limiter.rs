//! Admission: the per-user quota and the node's global connection cap, decided together, at
//! once, when a socket asks to upgrade. A socket the quota refuses never takes a global slot, so
//! one user's burst of refused connects cannot fill the node for everybody else.
//!
//! An admitted session holds a [`ConnectionPermit`]: a seat of its user's quota, given back as
//! soon as the session leaves its hub ([`ConnectionPermit::release_user_seat`]), and a slot of
//! the global cap, given back when the permit is dropped (the socket is gone). Both are released
//! by drop at the latest, so every path (accept, refusal, drain, error, hang-up) releases each
//! exactly once. With Redis, the permit also carries the socket's lease
//! ([`ConnectionPermit::with_lease`]), given back with the seat.
//!
//! A refused socket holds no slot, but it is still a file descriptor while it lingers to deliver
//! its close and see the client hang up. At most [`ConnectionLimiter::max_lingering`] linger at
//! once (a [`LingerSlot`] each); the others are answered and closed at once, so a flood of
//! connects that never hang up cannot run the node out of descriptors.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::ids::UserId;
use crate::leases::LeaseGuard;

/// Locks the per-user counts are split over, so that connects of different users rarely wait
/// for each other.
const SEAT_SHARDS: usize = 64;
/// Refused sockets that may linger at once: 1/`LINGER_SHARE` of the cap, at least `LINGER_MIN`.
const LINGER_SHARE: usize = 32;
const LINGER_MIN: usize = 16;

/// Why a socket was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionRefusal {
    /// The user already holds `max_connections_per_user` sessions on this node.
    #[error("the user's connection quota is used up")]
    UserQuota,
    /// The node already holds `max_connections` sockets.
    #[error("the node is at its connection cap")]
    NodeFull,
}

/// Counts open connections against `max_connections`, and each user's against
/// `max_connections_per_user`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConnectionLimiter {
    inner: Arc<Counter>,
}

#[derive(Debug)]
struct Counter {
    open: AtomicUsize,
    max: usize,
    max_per_user: usize,
    lingering: AtomicUsize,
    max_lingering: usize,
    /// Seats taken per user, sharded by user; a user with no seat has no entry.
    seats: Box<[Mutex<HashMap<UserId, usize>>]>,
}

impl Counter {
    fn seats_of(&self, user: &UserId) -> MutexGuard<'_, HashMap<UserId, usize>> {
        let mut hasher = DefaultHasher::new();
        user.hash(&mut hasher);
        let shard = (hasher.finish() % self.seats.len() as u64) as usize;
        // A panic while holding the lock cannot leave a count half-updated: use it anyway.
        self.seats[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ConnectionLimiter {
    /// A limiter that admits at most `max` connections at once, and at most `max_per_user` of
    /// any one user.
    pub fn new(max: usize, max_per_user: usize) -> Self {
        let seats = (0..SEAT_SHARDS).map(|_| Mutex::default()).collect();
        Self {
            inner: Arc::new(Counter {
                open: AtomicUsize::new(0),
                max,
                max_per_user,
                lingering: AtomicUsize::new(0),
                max_lingering: (max / LINGER_SHARE).max(LINGER_MIN),
                seats,
            }),
        }
    }

    /// Admits a connection of `user`: takes a seat of the user's quota, then a global slot. A
    /// refusal holds neither.
    pub fn try_admit(&self, user: &UserId) -> Result<ConnectionPermit, AdmissionRefusal> {
        let seat = self.take_seat(user).ok_or(AdmissionRefusal::UserQuota)?;
        let slot = self.take_slot().ok_or(AdmissionRefusal::NodeFull)?;
        Ok(ConnectionPermit {
            seat: Some(seat),
            lease: None,
            _slot: slot,
        })
    }

    fn take_seat(&self, user: &UserId) -> Option<UserSeat> {
        let mut seats = self.inner.seats_of(user);
        let taken = seats.entry(user.clone()).or_insert(0);
        if *taken >= self.inner.max_per_user {
            return None;
        }
        *taken += 1;
        Some(UserSeat {
            inner: Arc::clone(&self.inner),
            user: user.clone(),
        })
    }

    fn take_slot(&self) -> Option<GlobalSlot> {
        take_below(&self.inner.open, self.inner.max).then(|| GlobalSlot {
            inner: Arc::clone(&self.inner),
        })
    }

    /// Lets a refused socket linger for the client's hang-up, or `None` when
    /// [`max_lingering`](Self::max_lingering) already do: close it at once after its answer.
    pub fn try_linger(&self) -> Option<LingerSlot> {
        take_below(&self.inner.lingering, self.inner.max_lingering).then(|| LingerSlot {
            inner: Arc::clone(&self.inner),
        })
    }

    /// How many refused sockets may linger at once.
    pub fn max_lingering(&self) -> usize {
        self.inner.max_lingering
    }

    /// How many connections hold a global slot now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// The global cap.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// How many seats of its quota `user` holds now.
    pub fn seats_of(&self, user: &UserId) -> usize {
        self.inner.seats_of(user).get(user).copied().unwrap_or(0)
    }
}

/// An admitted connection's seat of its user's quota and slot of the global cap.
#[derive(Debug)]
pub struct ConnectionPermit {
    seat: Option<UserSeat>,
    /// The socket's lease in Redis (cluster-wide quota, presence), given back with the seat.
    lease: Option<LeaseGuard>,
    _slot: GlobalSlot,
}

impl ConnectionPermit {
    /// Gives the user's seat (and the socket's lease) back at once (the session has left its
    /// hub and no longer counts against the quota); the global slot stays taken until the
    /// permit is dropped.
    pub fn release_user_seat(&mut self) {
        self.lease = None;
        self.seat = None;
    }

    /// The permit, also holding the socket's lease.
    pub fn with_lease(mut self, lease: LeaseGuard) -> Self {
        self.lease = Some(lease);
        self
    }
}

/// One seat of a user's quota; released on drop.
#[derive(Debug)]
struct UserSeat {
    inner: Arc<Counter>,
    user: UserId,
}

impl Drop for UserSeat {
    fn drop(&mut self) {
        let mut seats = self.inner.seats_of(&self.user);
        if let Some(taken) = seats.get_mut(&self.user) {
            *taken = taken.saturating_sub(1);
            if *taken == 0 {
                seats.remove(&self.user);
            }
        }
    }
}

/// Adds one to `count` unless it has reached `max`; whether it did.
fn take_below(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// A refused socket's leave to linger; released on drop.
#[derive(Debug)]
pub struct LingerSlot {
    inner: Arc<Counter>,
}

impl Drop for LingerSlot {
    fn drop(&mut self) {
        self.inner.lingering.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One slot of the global cap; released on drop.
#[derive(Debug)]
struct GlobalSlot {
    inner: Arc<Counter>,
}

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        self.inner.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_and_frees_on_drop() {
        let limiter = ConnectionLimiter::new(2, 10);
        let a = limiter.try_admit(&UserId::new("a")).expect("first");
        let _b = limiter.try_admit(&UserId::new("b")).expect("second");
        let refused = limiter.try_admit(&UserId::new("c"));
        assert_eq!(refused.err(), Some(AdmissionRefusal::NodeFull));
        assert_eq!(limiter.open(), 2);
        assert_eq!(
            limiter.seats_of(&UserId::new("c")),
            0,
            "a refusal keeps no seat"
        );
        drop(a);
        assert_eq!(limiter.open(), 1);
        assert!(limiter.try_admit(&UserId::new("c")).is_ok());
    }

    #[test]
    fn a_quota_refusal_takes_no_global_slot() {
        let limiter = ConnectionLimiter::new(3, 2);
        let user = UserId::new("burst");
        let _first = limiter.try_admit(&user).expect("first");
        let _second = limiter.try_admit(&user).expect("second");
        for _ in 0..10 {
            let refused = limiter.try_admit(&user);
            assert_eq!(refused.err(), Some(AdmissionRefusal::UserQuota));
        }
        assert_eq!(limiter.open(), 2);
        assert!(limiter.try_admit(&UserId::new("other")).is_ok());
    }

    #[test]
    fn lingering_is_bounded_and_freed_on_drop() {
        let limiter = ConnectionLimiter::new(32 * 20, 1);
        assert_eq!(limiter.max_lingering(), 20);
        let held: Vec<_> = (0..20).filter_map(|_| limiter.try_linger()).collect();
        assert_eq!(held.len(), 20);
        assert!(limiter.try_linger().is_none());
        drop(held);
        assert!(limiter.try_linger().is_some());
        assert_eq!(ConnectionLimiter::new(10, 1).max_lingering(), LINGER_MIN);
    }

    #[test]
    fn the_seat_is_given_back_before_the_slot() {
        let limiter = ConnectionLimiter::new(2, 1);
        let user = UserId::new("u");
        let mut permit = limiter.try_admit(&user).expect("admitted");
        permit.release_user_seat();
        permit.release_user_seat();
        assert_eq!(limiter.seats_of(&user), 0);
        assert_eq!(limiter.open(), 1, "the socket still holds its slot");
        let again = limiter.try_admit(&user).expect("the seat is free");
        drop(permit);
        drop(again);
        assert_eq!((limiter.open(), limiter.seats_of(&user)), (0, 0));
    }
}
