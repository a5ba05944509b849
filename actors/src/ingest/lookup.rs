//! Owner lookups: `GET key` in Redis or `GET url` over HTTP, each answer cached in a bounded TTL
//! cache. The caller decides what to do with a failure: [`LookupError::Unavailable`] is an
//! outage (retry), [`LookupError::Failed`] is about this key (dead-letter).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;

use super::cache::TtlCache;
use super::route::{user_id, LookupKey};
use super::{IngestError, LookupConfig};
use crate::ids::UserId;

/// Why a lookup gave no owner. [`LookupError::is_outage`] tells an outage of the lookup service
/// (retry later) from an answer that is not an owner (retrying will not help).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    /// Outage: the owner Redis is unreachable or timed out.
    #[error("redis: {0}")]
    RedisDown(#[source] redis::RedisError),
    /// Outage: the lookup service is unreachable, timed out or cut the body short.
    #[error("GET {url}: {source}")]
    HttpDown {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Outage: the lookup service answered 5xx, 429 or 408.
    #[error("GET {url}: HTTP {status}")]
    HttpBusy {
        url: String,
        status: reqwest::StatusCode,
    },
    /// A Redis key route, but no owner Redis configured.
    #[error("no redis configured for owner lookups")]
    NoRedis,
    /// The owner key holds something `GET` cannot read.
    #[error("GET {key}: {source}")]
    RedisWrongType {
        key: String,
        #[source]
        source: redis::RedisError,
    },
    /// A 4xx other than 404, 408 and 429.
    #[error("GET {url}: HTTP {status}")]
    HttpRefused {
        url: String,
        status: reqwest::StatusCode,
    },
    /// The body is not JSON.
    #[error("GET {url}: body is not JSON: {source}")]
    NotJson {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    /// `user_id` is neither a string nor a number.
    #[error("GET {url}: `user_id` is not a string or number")]
    BadUserId { url: String },
    /// The body has no `user_id`.
    #[error("GET {url}: no `user_id` in the body")]
    NoUserId { url: String },
}

impl LookupError {
    /// Whether the lookup service is down, slow or overloaded (try again later), rather than
    /// answering without an owner.
    pub(crate) fn is_outage(&self) -> bool {
        matches!(
            self,
            Self::RedisDown(_) | Self::HttpDown { .. } | Self::HttpBusy { .. }
        )
    }
}

/// Looks owners up, with a cache.
pub(crate) struct OwnerLookup {
    cache: Mutex<TtlCache<LookupKey, UserId>>,
    redis: Option<ConnectionManager>,
    http: reqwest::Client,
}

impl OwnerLookup {
    pub(crate) fn new(config: &LookupConfig) -> Result<Self, IngestError> {
        let redis = match &config.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.as_str())?;
                let manager = ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(config.timeout))
                    .set_response_timeout(Some(config.timeout));
                Some(ConnectionManager::new_lazy_with_config(client, manager)?)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(2)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(IngestError::HttpClient)?;
        Ok(Self {
            cache: Mutex::new(TtlCache::new(config.cache_size, config.cache_ttl)),
            redis,
            http,
        })
    }

    /// The owner of `key`: `Ok(None)` when there is none (Redis nil, HTTP 404, `user_id` null).
    pub(crate) async fn owner(&self, key: &LookupKey) -> Result<Option<UserId>, LookupError> {
        if let Some(user) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return Ok(Some(user));
        }
        let owner = match key {
            LookupKey::Redis(name) => self.redis_owner(name).await?,
            LookupKey::Http(url) => self.http_owner(url).await?,
        };
        if let Some(user) = &owner {
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone(), user.clone());
        }
        Ok(owner)
    }

    async fn redis_owner(&self, key: &str) -> Result<Option<UserId>, LookupError> {
        let mut connection = self.redis.clone().ok_or(LookupError::NoRedis)?;
        let value: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await
            .map_err(|e| {
                let wrong_type = e.kind() == redis::ErrorKind::UnexpectedReturnType
                    || e.code() == Some("WRONGTYPE");
                if wrong_type {
                    LookupError::RedisWrongType {
                        key: key.to_owned(),
                        source: e,
                    }
                } else {
                    LookupError::RedisDown(e)
                }
            })?;
        Ok(value.and_then(|v| user_id(&Value::String(v))))
    }

    async fn http_owner(&self, url: &str) -> Result<Option<UserId>, LookupError> {
        let down = |source| LookupError::HttpDown {
            url: url.to_owned(),
            source,
        };
        let response = self.http.get(url).send().await.map_err(down)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let url = url.to_owned();
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            return Err(LookupError::HttpBusy { url, status });
        }
        if !status.is_success() {
            return Err(LookupError::HttpRefused { url, status });
        }
        let body = response
            .bytes()
            .await
            .map_err(|source| LookupError::HttpDown {
                url: url.clone(),
                source,
            })?;
        owner_in_body(&body, url)
    }
}

/// The owner named by a lookup answer's body: `{"user_id": …}` (`null`: no owner).
fn owner_in_body(body: &[u8], url: String) -> Result<Option<UserId>, LookupError> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(source) => return Err(LookupError::NotJson { url, source }),
    };
    match value.get("user_id") {
        Some(Value::Null) => Ok(None),
        Some(v) => user_id(v).map(Some).ok_or(LookupError::BadUserId { url }),
        None => Err(LookupError::NoUserId { url }),
    }
}
