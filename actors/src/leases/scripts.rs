//! The Lua scripts of the lease store, and how they are run: `EVALSHA` with the digest Redis
//! gave at `SCRIPT LOAD`, and `EVAL` with the script's text when the Redis that runs it answers
//! `NOSCRIPT` (a restarted or failed-over Redis has an empty script cache; on Redis Cluster each
//! primary has its own, and a call runs on the primary serving its keys' slot). `EVAL` also
//! caches the script on that Redis, so the next `EVALSHA` there succeeds. Before the digest is
//! known (`SCRIPT LOAD` not answered yet), calls use `EVAL`. Every script reads the time from Redis
//! (`TIME`), never from a replica's clock, so replicas whose clocks differ agree on expiry.
//!
//! A user's leases are a sorted set (member `<node>/<conn>`, score = expiry in ms) and a hash of
//! the same members' details; both expire with the last lease (`PEXPIRE`, only ever extended).

use std::sync::{Arc, Mutex, PoisonError};

use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, RedisResult, ServerErrorKind};

/// Shared by every script: the Redis time in ms, dropping expired leases, extending a user's
/// keys so they outlive their newest lease.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function drop_expired(leases, info, now)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  for _, member in ipairs(expired) do
    redis.call('HDEL', info, member)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  end
end
local function extend(leases, info, ms)
  for _, key in ipairs({leases, info}) do
    if redis.call('PTTL', key) < ms then
      redis.call('PEXPIRE', key, ms)
    end
  end
end
"#;

/// Takes a lease if the user holds fewer than the limit (0: no limit), in one atomic step.
/// KEYS: leases, info. ARGV: limit, lease_ms, member, info head, info tail (the details are
/// head .. since_ms .. tail). Returns {admitted 0|1, leases held after, now_ms}.
const ACQUIRE: &str = r#"
local now = now_ms()
drop_expired(KEYS[1], KEYS[2], now)
local held = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[1])
if limit > 0 and held >= limit then
  return {0, held, now}
end
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4] .. string.format('%.0f', now) .. ARGV[5])
extend(KEYS[1], KEYS[2], lease)
return {1, held + 1, now}
"#;

/// Refreshes (or registers again) a batch of leases of several users.
/// KEYS: leases, info of each user. ARGV: lease_ms, then per user: n, then n × (member,
/// details). Returns the number of users.
const REFRESH: &str = r#"
local now = now_ms()
local lease = tonumber(ARGV[1])
local a = 2
for k = 1, #KEYS, 2 do
  local leases, info = KEYS[k], KEYS[k + 1]
  drop_expired(leases, info, now)
  local n = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, n do
    redis.call('ZADD', leases, now + lease, ARGV[a])
    redis.call('HSETNX', info, ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  extend(leases, info, lease)
end
return #KEYS / 2
"#;

/// Counts each user's unexpired leases. KEYS: the leases of each user. Returns the counts.
const COUNT: &str = r#"
local bound = '(' .. string.format('%.0f', now_ms())
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('ZCOUNT', key, bound, '+inf')
end
return counts
"#;

/// One script: its source and, once loaded, the digest Redis knows it by.
#[derive(Debug)]
pub(super) struct LuaScript {
    source: String,
    digest: Mutex<Option<Arc<str>>>,
}

impl LuaScript {
    fn new(body: &str) -> Self {
        Self {
            source: format!("{PRELUDE}{body}"),
            digest: Mutex::new(None),
        }
    }

    /// Runs the script with `keys` (routed by the first on a cluster; all in one slot) and
    /// `args`: one round trip, one more when the Redis running it lacks the script.
    pub(super) async fn invoke<T, C>(
        &self,
        connection: &mut C,
        keys: &[Vec<u8>],
        args: &[Vec<u8>],
    ) -> RedisResult<T>
    where
        T: FromRedisValue,
        C: ConnectionLike,
    {
        let Some(digest) = self.known_digest() else {
            return eval(&self.source, keys, args).query_async(connection).await;
        };
        match evalsha(&digest, keys, args).query_async(connection).await {
            Err(error) if is_noscript(&error) => {
                eval(&self.source, keys, args).query_async(connection).await
            }
            other => other,
        }
    }

    fn known_digest(&self) -> Option<Arc<str>> {
        // Never held across an await; a poisoned lock still holds a valid digest.
        self.digest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Loads the script into Redis's cache (every primary's, on a cluster) and remembers its
    /// digest.
    pub(super) async fn load<C: ConnectionLike>(
        &self,
        connection: &mut C,
    ) -> RedisResult<Arc<str>> {
        let digest: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(&self.source)
            .query_async(connection)
            .await?;
        let digest: Arc<str> = Arc::from(digest);
        *self.digest.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&digest));
        Ok(digest)
    }
}

fn eval(source: &str, keys: &[Vec<u8>], args: &[Vec<u8>]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(source).arg(keys.len()).arg(keys).arg(args);
    cmd
}

fn evalsha(digest: &str, keys: &[Vec<u8>], args: &[Vec<u8>]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(digest).arg(keys.len()).arg(keys).arg(args);
    cmd
}

fn is_noscript(error: &redis::RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(ServerErrorKind::NoScript))
}

/// The three scripts, shared by every clone of the store.
#[derive(Debug)]
pub(super) struct Scripts {
    /// Check the quota and take a lease.
    pub(super) acquire: LuaScript,
    /// Refresh a batch of leases.
    pub(super) refresh: LuaScript,
    /// Count users' leases.
    pub(super) count: LuaScript,
}

impl Scripts {
    /// Loads every script, so that a burst of first connects finds them loaded.
    pub(super) async fn load_all<C: ConnectionLike>(&self, connection: &mut C) -> RedisResult<()> {
        for script in [&self.acquire, &self.refresh, &self.count] {
            script.load(connection).await?;
        }
        Ok(())
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            acquire: LuaScript::new(ACQUIRE),
            refresh: LuaScript::new(REFRESH),
            count: LuaScript::new(COUNT),
        }
    }
}
