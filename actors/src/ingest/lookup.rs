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

/// Why a lookup gave no owner.
#[derive(Debug)]
pub(crate) enum LookupError {
    /// The lookup service is down, slow or overloaded: try again later.
    Unavailable(String),
    /// The lookup answered, but not with an owner (4xx other than 404, a body without
    /// `user_id`): retrying will not help.
    Failed(String),
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
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| IngestError::Redis(e.to_string()))?;
                let manager = ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(config.timeout))
                    .set_response_timeout(Some(config.timeout));
                Some(
                    ConnectionManager::new_lazy_with_config(client, manager)
                        .map_err(|e| IngestError::Redis(e.to_string()))?,
                )
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(2)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| IngestError::Config(format!("owner lookup HTTP client: {e}")))?;
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
        let mut connection = self
            .redis
            .clone()
            .ok_or_else(|| LookupError::Failed("no redis configured for owner lookups".into()))?;
        let value: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await
            .map_err(|e| {
                let wrong_type = e.kind() == redis::ErrorKind::UnexpectedReturnType
                    || e.code() == Some("WRONGTYPE");
                if wrong_type {
                    LookupError::Failed(format!("GET {key}: {e}"))
                } else {
                    LookupError::Unavailable(format!("redis: {e}"))
                }
            })?;
        Ok(value.and_then(|v| user_id(&Value::String(v))))
    }

    async fn http_owner(&self, url: &str) -> Result<Option<UserId>, LookupError> {
        let unavailable = |e: reqwest::Error| LookupError::Unavailable(format!("GET {url}: {e}"));
        let response = self.http.get(url).send().await.map_err(unavailable)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            return Err(LookupError::Unavailable(format!(
                "GET {url}: HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(LookupError::Failed(format!("GET {url}: HTTP {status}")));
        }
        let body = response.bytes().await.map_err(unavailable)?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| LookupError::Failed(format!("GET {url}: body is not JSON: {e}")))?;
        match value.get("user_id") {
            Some(Value::Null) => Ok(None),
            Some(v) => user_id(v).map(Some).ok_or_else(|| {
                LookupError::Failed(format!("GET {url}: `user_id` is not a string or number"))
            }),
            None => Err(LookupError::Failed(format!(
                "GET {url}: no `user_id` in the body"
            ))),
        }
    }
}
