//! One `[[kafka.routes]]` entry and its rules. Key templates (`owner_redis_key`,
//! `owner_http_url`) are checked by the ingest's parser, the one parser of their grammar.

use serde::Deserialize;

use crate::config::de::string_list;
use crate::config::SettingsError;

/// One `[[kafka.routes]]` entry: a topic (and optionally one `event_type` on it), the
/// notification's `event` name, the `data` fields it carries and how its user is found (exactly
/// one of `user_pointer`, `owner_redis_key`, `owner_http_url`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaRoute {
    /// Kafka topic.
    pub topic: String,
    /// Envelope `event_type` taken by this route; empty = any type on the topic.
    #[serde(default)]
    pub event_type: String,
    /// The notification's `event` name.
    pub event: String,
    /// `data` fields copied into the notification; empty = all of `data`.
    #[serde(default, deserialize_with = "string_list")]
    pub fields: Vec<String>,
    /// JSON pointer to the user id in the envelope, e.g. `/metadata/user_id`.
    #[serde(default)]
    pub user_pointer: String,
    /// Redis key holding the user id, with `{field}`s from `data`, e.g. `batch_owner:{batch_id}`.
    #[serde(default)]
    pub owner_redis_key: String,
    /// HTTP URL answering `{"user_id": …}` (404: none), with `{field}`s from `data`.
    #[serde(default)]
    pub owner_http_url: String,
}

impl KafkaRoute {
    /// Checks route `i`; `has_owner_redis`: an owner Redis is configured for key lookups.
    pub(super) fn validate(&self, i: usize, has_owner_redis: bool) -> Result<(), SettingsError> {
        topic_name(&route_key(i, "topic"), &self.topic)?;
        if self.event.trim().is_empty() {
            return Err(SettingsError::missing(
                &route_key(i, "event"),
                "name the notification's event",
            ));
        }
        if self.fields.iter().any(|f| f.trim().is_empty()) {
            return Err(SettingsError::invalid(
                &route_key(i, "fields"),
                "a field name is empty",
            ));
        }
        self.validate_owner_source(i)?;
        self.validate_user_pointer(i)?;
        self.validate_owner_redis_key(i, has_owner_redis)?;
        self.validate_owner_http_url(i)
    }

    /// Exactly one of `user_pointer`, `owner_redis_key`, `owner_http_url` is set.
    fn validate_owner_source(&self, i: usize) -> Result<(), SettingsError> {
        let sources = [
            ("user_pointer", &self.user_pointer),
            ("owner_redis_key", &self.owner_redis_key),
            ("owner_http_url", &self.owner_http_url),
        ];
        let set: Vec<&str> = sources
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(name, _)| *name)
            .collect();
        if set.len() == 1 {
            return Ok(());
        }
        let reason = format!(
            "set exactly one of user_pointer, owner_redis_key, owner_http_url (got {})",
            if set.is_empty() {
                "none".to_owned()
            } else {
                set.join(", ")
            }
        );
        Err(SettingsError::invalid(
            &route_key(i, set.first().unwrap_or(&"user_pointer")),
            reason,
        ))
    }

    /// A set `user_pointer` is a JSON pointer.
    fn validate_user_pointer(&self, i: usize) -> Result<(), SettingsError> {
        if !self.user_pointer.is_empty() && !self.user_pointer.starts_with('/') {
            let reason = format!(
                "expected a JSON pointer such as \"/metadata/user_id\", got {:?}",
                self.user_pointer
            );
            return Err(SettingsError::invalid(
                &route_key(i, "user_pointer"),
                reason,
            ));
        }
        Ok(())
    }

    /// A set `owner_redis_key` is a template, and there is a Redis to look it up in.
    fn validate_owner_redis_key(
        &self,
        i: usize,
        has_owner_redis: bool,
    ) -> Result<(), SettingsError> {
        if self.owner_redis_key.is_empty() {
            return Ok(());
        }
        let key = route_key(i, "owner_redis_key");
        check_template(&key, &self.owner_redis_key)?;
        if !has_owner_redis {
            return Err(SettingsError::missing(
                &key,
                "set kafka.owner_redis_url (or redis.url) for Redis owner lookups",
            ));
        }
        Ok(())
    }

    /// A set `owner_http_url` is a template of a plain `http://host…` URL.
    fn validate_owner_http_url(&self, i: usize) -> Result<(), SettingsError> {
        if self.owner_http_url.is_empty() {
            return Ok(());
        }
        let key = route_key(i, "owner_http_url");
        check_template(&key, &self.owner_http_url)?;
        let rest = self
            .owner_http_url
            .strip_prefix("http://")
            .unwrap_or_default();
        if rest.is_empty() || rest.starts_with('/') || rest.starts_with('{') {
            let reason = format!(
                "expected http://host[:port]/path…{{field}}… (plain HTTP: no TLS in this build), got {:?}",
                self.owner_http_url
            );
            return Err(SettingsError::invalid(&key, reason));
        }
        Ok(())
    }
}

/// `kafka.routes[i].name`.
fn route_key(i: usize, name: &str) -> String {
    format!("kafka.routes[{i}].{name}")
}

/// A Kafka topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub(super) fn topic_name(key: &str, topic: &str) -> Result<(), SettingsError> {
    let valid = (1..=249).contains(&topic.len())
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && topic != "."
        && topic != "..";
    if valid {
        Ok(())
    } else {
        let reason =
            format!("expected a Kafka topic name (1-249 of A-Z a-z 0-9 . _ -), got {topic:?}");
        Err(SettingsError::invalid(key, reason))
    }
}

/// A `{field}` template (`{{`/`}}` are literal braces), checked by the ingest's parser. The
/// message keeps to two cases: a stray `}`, or a `{field}` that names no data field.
#[cfg(feature = "kafka")]
fn check_template(key: &str, template: &str) -> Result<(), SettingsError> {
    use ws_actors::ingest::{parse_template, TemplateError};

    let problem = match parse_template(template) {
        Ok(_) => return Ok(()),
        Err(TemplateError::UnmatchedClose { .. }) => "unmatched } (write }} for a literal brace)",
        Err(_) => "a {field} must name a data field with A-Z a-z 0-9 _ . -",
    };
    let reason = format!("{problem}, got {template:?}");
    Err(SettingsError::invalid(key, reason))
}

/// Without the ingest (no cargo feature `kafka`) there is no template to check: an enabled
/// `[kafka]` is refused before its routes are looked at.
#[cfg(not(feature = "kafka"))]
fn check_template(_key: &str, _template: &str) -> Result<(), SettingsError> {
    Ok(())
}
