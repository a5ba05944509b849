//! [`History`] in process, for the in-process broker: the same semantics as the Redis one.
//!
//! Each user has an epoch (12 random characters, made when the user has none), a dense offset
//! and its last `size` entries; a user's whole history expires after `ttl` without an append
//! (checked lazily on every access, and swept oldest-first on every call, which costs nothing
//! when nothing is due). Idempotency records live [`IDEMPOTENCY_WINDOW`]. Everything is bounded:
//! at most [`MAX_USERS`] users (the least recently appended is evicted first, and comes back
//! under a new epoch) and [`MAX_IDEMPOTENCY_RECORDS`] records (oldest evicted first).
//!
//! The store sits behind a `std::sync::Mutex`: every critical section is short (a few map
//! operations, no I/O) and never held across an await. [`MemoryHistory::publish`] appends and
//! hands the messages to the directory ([`RouteSink::route_all`], which never waits) under the
//! same lock, so each user's messages reach its hub in offset order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::{self, BoxFuture};

use super::{
    Epoch, History, HistoryConfig, HistoryEntry, HistoryRead, Position, IDEMPOTENCY_WINDOW,
};
use crate::broker::{BrokerError, RouteSink, RouteUser};
use crate::ids::UserId;
use crate::payload::{Payload, Published};

/// The most users whose history is kept.
pub const MAX_USERS: usize = 100_000;

/// The most idempotency records kept.
pub const MAX_IDEMPOTENCY_RECORDS: usize = 100_000;

/// Characters in an epoch made here.
const EPOCH_LEN: usize = 12;

/// Every user's history, in this process.
pub struct MemoryHistory {
    config: HistoryConfig,
    directory: Box<dyn RouteSink>,
    store: Mutex<Store>,
}

impl MemoryHistory {
    /// A history keeping `config.size` entries per user, publishing into `directory`.
    pub fn new(config: HistoryConfig, directory: Box<dyn RouteSink>) -> Self {
        Self::with_limits(config, directory, MAX_USERS, MAX_IDEMPOTENCY_RECORDS)
    }

    /// Like [`MemoryHistory::new`] with other bounds on users and idempotency records.
    pub fn with_limits(
        config: HistoryConfig,
        directory: Box<dyn RouteSink>,
        max_users: usize,
        max_records: usize,
    ) -> Self {
        Self {
            config,
            directory,
            store: Mutex::new(Store::new(max_users.max(1), max_records.max(1))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish_at(
        &self,
        users: Vec<UserId>,
        payload: Bytes,
        key: Option<&str>,
        now: Instant,
    ) -> Vec<Position> {
        let message = Payload::from_bytes(payload.clone());
        let mut store = self.lock();
        store.expire(now, &self.config);
        let mut routes = Vec::with_capacity(users.len());
        let mut positions = Vec::with_capacity(users.len());
        for user in users {
            if let Some(done) = key.and_then(|key| store.records.get(&user, key, now)) {
                positions.push(done);
                continue;
            }
            let position = store.append(&user, payload.clone(), now, &self.config);
            if let Some(key) = key {
                store.records.insert(&user, key, position.clone(), now);
            }
            let published = Published::durable(message.clone(), position.clone());
            routes.push((RouteUser::Id(user), published));
            positions.push(position);
        }
        self.directory.route_all(routes);
        positions
    }

    fn read_at(&self, user: &UserId, after: u64, max: usize, now: Instant) -> HistoryRead {
        let mut store = self.lock();
        store.expire(now, &self.config);
        let log = store.live_or_new(user, now, &self.config);
        let start = log.entries.partition_point(|entry| entry.offset <= after);
        HistoryRead {
            epoch: log.epoch.clone(),
            top: log.top,
            entries: log.entries.range(start..).take(max).cloned().collect(),
        }
    }

    fn renew_at(&self, user: &UserId, lost: &Epoch, now: Instant) -> (Epoch, u64) {
        let mut store = self.lock();
        store.expire(now, &self.config);
        let log = store.live_or_new(user, now, &self.config);
        if log.epoch != *lost {
            return (log.epoch.clone(), log.top);
        }
        log.epoch = new_epoch(Some(lost));
        log.entries.clear();
        let renewed = (log.epoch.clone(), log.top);
        store.touch(user, now);
        renewed
    }
}

impl History for MemoryHistory {
    fn publish(
        &self,
        users: Vec<UserId>,
        payload: Bytes,
        idempotency_key: Option<String>,
    ) -> BoxFuture<'static, Result<Vec<Position>, BrokerError>> {
        let positions = self.publish_at(users, payload, idempotency_key.as_deref(), Instant::now());
        Box::pin(future::ready(Ok(positions)))
    }

    fn read(
        &self,
        user: UserId,
        after: u64,
        max: usize,
    ) -> BoxFuture<'static, Result<HistoryRead, BrokerError>> {
        let read = self.read_at(&user, after, max, Instant::now());
        Box::pin(future::ready(Ok(read)))
    }

    fn renew_epoch(
        &self,
        user: UserId,
        lost: Epoch,
    ) -> BoxFuture<'static, Result<(Epoch, u64), BrokerError>> {
        let renewed = self.renew_at(&user, &lost, Instant::now());
        Box::pin(future::ready(Ok(renewed)))
    }
}

/// A fresh random epoch, never equal to `unlike`.
fn new_epoch(unlike: Option<&Epoch>) -> Epoch {
    loop {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        if let Some(epoch) = hex.get(..EPOCH_LEN).and_then(Epoch::parse) {
            if Some(&epoch) != unlike {
                return epoch;
            }
        }
    }
}

fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// One user's history.
struct UserLog {
    epoch: Epoch,
    top: u64,
    entries: VecDeque<HistoryEntry>,
    /// The last append (or creation): the ttl runs from here.
    touched: Instant,
    /// This user's key in [`Store::by_age`].
    stamp: u64,
}

impl UserLog {
    fn expired(&self, now: Instant, config: &HistoryConfig) -> bool {
        now.saturating_duration_since(self.touched) >= config.ttl
    }
}

struct Store {
    users: HashMap<UserId, UserLog>,
    /// Users by their last append, oldest first: the order of expiry and of eviction.
    by_age: BTreeMap<u64, UserId>,
    next_stamp: u64,
    max_users: usize,
    records: Records,
}

impl Store {
    fn new(max_users: usize, max_records: usize) -> Self {
        Self {
            users: HashMap::new(),
            by_age: BTreeMap::new(),
            next_stamp: 0,
            max_users,
            records: Records::new(max_records),
        }
    }

    /// Drops the users whose ttl ran out, oldest first, stopping at the first that did not.
    fn expire(&mut self, now: Instant, config: &HistoryConfig) {
        while let Some(user) = self.by_age.first_key_value().map(|(_, user)| user.clone()) {
            match self.users.get(&user) {
                Some(log) if !log.expired(now, config) => break,
                _ => self.remove(&user),
            }
        }
        self.records.expire(now);
    }

    fn remove(&mut self, user: &UserId) {
        if let Some(log) = self.users.remove(user) {
            self.by_age.remove(&log.stamp);
        }
    }

    /// The user's history, or a new one (new epoch, top 0) when it has none or it expired.
    fn live_or_new(&mut self, user: &UserId, now: Instant, config: &HistoryConfig) -> &mut UserLog {
        if self
            .users
            .get(user)
            .is_some_and(|log| log.expired(now, config))
        {
            self.remove(user);
        }
        if !self.users.contains_key(user) {
            self.make_room();
        }
        let (by_age, next_stamp) = (&mut self.by_age, &mut self.next_stamp);
        self.users.entry(user.clone()).or_insert_with(|| {
            let stamp = *next_stamp;
            *next_stamp += 1;
            by_age.insert(stamp, user.clone());
            fresh_log(now, stamp)
        })
    }

    /// Evicts the least recently appended users until one more fits.
    fn make_room(&mut self) {
        while self.users.len() >= self.max_users {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.users.remove(&oldest);
        }
    }

    /// Restarts the user's ttl and makes it the most recently appended.
    fn touch(&mut self, user: &UserId, now: Instant) {
        let Some(old) = self.users.get(user).map(|log| log.stamp) else {
            return;
        };
        self.by_age.remove(&old);
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.by_age.insert(stamp, user.clone());
        if let Some(log) = self.users.get_mut(user) {
            log.stamp = stamp;
            log.touched = now;
        }
    }

    fn append(
        &mut self,
        user: &UserId,
        payload: Bytes,
        now: Instant,
        config: &HistoryConfig,
    ) -> Position {
        let log = self.live_or_new(user, now, config);
        log.top += 1;
        log.entries.push_back(HistoryEntry {
            offset: log.top,
            payload,
            time_ms: unix_ms(),
        });
        while log.entries.len() > config.size {
            log.entries.pop_front();
        }
        let position = Position {
            epoch: log.epoch.clone(),
            offset: log.top,
        };
        self.touch(user, now);
        position
    }
}

fn fresh_log(now: Instant, stamp: u64) -> UserLog {
    UserLog {
        epoch: new_epoch(None),
        top: 0,
        entries: VecDeque::new(),
        touched: now,
        stamp,
    }
}

/// Idempotency records: (user, key) → the position published, for [`IDEMPOTENCY_WINDOW`].
struct Records {
    positions: HashMap<(UserId, String), (Position, Instant)>,
    /// Every record with its expiry, oldest first (the window is fixed, so also by expiry).
    order: VecDeque<(Instant, UserId, String)>,
    max: usize,
}

impl Records {
    fn new(max: usize) -> Self {
        Self {
            positions: HashMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    fn get(&self, user: &UserId, key: &str, now: Instant) -> Option<Position> {
        let (position, expires) = self.positions.get(&(user.clone(), key.to_owned()))?;
        (now < *expires).then(|| position.clone())
    }

    fn insert(&mut self, user: &UserId, key: &str, position: Position, now: Instant) {
        while self.positions.len() >= self.max && self.pop_oldest() {}
        let expires = now + IDEMPOTENCY_WINDOW;
        self.order
            .push_back((expires, user.clone(), key.to_owned()));
        self.positions
            .insert((user.clone(), key.to_owned()), (position, expires));
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(expires, ..)| *expires <= now)
        {
            self.pop_oldest();
        }
    }

    /// Drops the oldest record (unless a newer one replaced it); false when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some((expires, user, key)) = self.order.pop_front() else {
            return false;
        };
        let id = (user, key);
        if self.positions.get(&id).is_some_and(|(_, e)| *e == expires) {
            self.positions.remove(&id);
        }
        true
    }
}

#[cfg(test)]
mod tests;
