//! Routes: which topics are consumed, which event types they carry, what notification each
//! becomes and how its user is found. Configuration only: adding an event type is a settings
//! change.

use std::collections::HashMap;

use serde_json::Value;

use super::envelope::Envelope;
use crate::ids::UserId;

/// One `[[kafka.routes]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// The Kafka topic.
    pub topic: String,
    /// The envelope `event_type` this route takes; `None`: any type on the topic.
    pub event_type: Option<String>,
    /// The notification's `event` name, e.g. `essay.slot.assigned`.
    pub event: String,
    /// The `data` fields forwarded; empty: all of `data`.
    pub fields: Vec<String>,
    /// How the user is found.
    pub owner: OwnerSource,
}

/// How the user of an event is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerSource {
    /// A JSON pointer into the envelope, e.g. `/metadata/user_id`.
    Pointer(String),
    /// A Redis key template, e.g. `batch_owner:{batch_id}`: `GET` gives the user id.
    RedisKey(String),
    /// An HTTP URL template, e.g. `http://batches/v1/batches/{batch_id}/owner`: `GET` answers
    /// `{"user_id": …}` (404: no owner).
    HttpUrl(String),
}

/// One piece of a key template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Copied as is.
    Literal(String),
    /// The value of this `data` field.
    Field(String),
}

/// What is wrong with a key template, and where (`at`: 1-based character position).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// A `{` without its `}`.
    #[error("unclosed {{ at position {at}")]
    Unclosed {
        /// Where the `{` is.
        at: usize,
    },
    /// `{}`: no field named.
    #[error("empty {{}} at position {at} (name a data field)")]
    EmptyField {
        /// Where the `{` is.
        at: usize,
    },
    /// A character a field name cannot hold.
    #[error(
        "unexpected {found:?} at position {at} in a {{field}} (a field name is A-Z a-z 0-9 _ . -)"
    )]
    InvalidFieldChar {
        /// The character.
        found: char,
        /// Where it is.
        at: usize,
    },
    /// A `}` that closes nothing.
    #[error("unmatched }} at position {at} (write }}}} for a literal brace)")]
    UnmatchedClose {
        /// Where the `}` is.
        at: usize,
    },
}

/// Parses a key template, `prefix:{field}…`, into parts: the one parser of the template grammar
/// (`kafka.routes[].owner_redis_key` and `owner_http_url`). `{{` and `}}` stand for literal
/// braces; a field name is one or more of `[A-Za-z0-9_.-]`.
pub fn parse_template(template: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = template.chars().zip(1..).peekable();
    while let Some((c, at)) = chars.next() {
        match c {
            '{' | '}' if chars.next_if(|&(next, _)| next == c).is_some() => literal.push(c),
            '{' => {
                let name = field_name(&mut chars, at)?;
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Field(name));
            }
            '}' => return Err(TemplateError::UnmatchedClose { at }),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

/// The field name after the `{` at `open`, up to and including its `}`.
fn field_name(
    chars: &mut impl Iterator<Item = (char, usize)>,
    open: usize,
) -> Result<String, TemplateError> {
    let mut name = String::new();
    loop {
        match chars.next() {
            Some(('}', _)) if name.is_empty() => {
                return Err(TemplateError::EmptyField { at: open })
            }
            Some(('}', _)) => return Ok(name),
            Some((c, _)) if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') => {
                name.push(c)
            }
            Some((found, at)) => return Err(TemplateError::InvalidFieldChar { found, at }),
            None => return Err(TemplateError::Unclosed { at: open }),
        }
    }
}

/// Why the routes cannot be compiled; names the setting (`kafka.routes[i].…`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// `user_pointer` does not start with `/`.
    #[error("kafka.routes[{route}].user_pointer: not a JSON pointer: {pointer:?}")]
    NotAPointer {
        /// Index of the route.
        route: usize,
        /// The value.
        pointer: String,
    },
    /// A key template does not parse.
    #[error("kafka.routes[{route}].{setting}: {source}")]
    Template {
        /// Index of the route.
        route: usize,
        /// `owner_redis_key` or `owner_http_url`.
        setting: &'static str,
        /// What is wrong, and where.
        source: TemplateError,
    },
    /// Two routes for the same topic and event type.
    #[error(
        "kafka.routes[{route}].event_type: a route for this topic and event type already exists"
    )]
    Duplicate {
        /// Index of the second route.
        route: usize,
    },
}

/// Why an event's user cannot be found from the event itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MissingOwner {
    /// The route's JSON pointer finds no user id.
    #[error("no user id at {pointer}")]
    NoUserAt { pointer: String },
    /// A field the key template needs is missing or empty.
    #[error("data.{field} is missing or empty")]
    NoField { field: String },
}

/// What the owner lookup is asked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LookupKey {
    /// `GET key` in the owner Redis.
    Redis(String),
    /// `GET url`.
    Http(String),
}

/// Where an event's user comes from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Found in the envelope.
    Known(UserId),
    /// To be looked up.
    Lookup(LookupKey),
    /// The event lacks what is needed.
    Missing(MissingOwner),
}

/// A compiled route.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) event: String,
    pub(crate) fields: Vec<String>,
    owner: CompiledOwner,
}

#[derive(Debug)]
enum CompiledOwner {
    Pointer(String),
    Redis(Vec<Part>),
    Http(Vec<Part>),
}

impl Route {
    /// How this event's user is found.
    pub(crate) fn owner(&self, envelope: &Envelope) -> Owner {
        match &self.owner {
            CompiledOwner::Pointer(pointer) => {
                match envelope.raw.pointer(pointer).and_then(user_id) {
                    Some(user) => Owner::Known(user),
                    None => Owner::Missing(MissingOwner::NoUserAt {
                        pointer: pointer.clone(),
                    }),
                }
            }
            CompiledOwner::Redis(parts) => match render(parts, envelope, |s| s.to_owned()) {
                Ok(key) => Owner::Lookup(LookupKey::Redis(key)),
                Err(why) => Owner::Missing(why),
            },
            CompiledOwner::Http(parts) => match render(parts, envelope, encode_component) {
                Ok(url) => Owner::Lookup(LookupKey::Http(url)),
                Err(why) => Owner::Missing(why),
            },
        }
    }
}

/// A user id value: a non-empty string, or a number.
pub(crate) fn user_id(value: &Value) -> Option<UserId> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(UserId::new(s)),
        Value::Number(n) => Some(UserId::new(&n.to_string())),
        _ => None,
    }
}

fn render(
    parts: &[Part],
    envelope: &Envelope,
    encode: fn(&str) -> String,
) -> Result<String, MissingOwner> {
    let data = envelope.data();
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Literal(text) => out.push_str(text),
            Part::Field(name) => match data.get(name) {
                Some(Value::String(s)) if !s.is_empty() => out.push_str(&encode(s)),
                Some(Value::Number(n)) => out.push_str(&n.to_string()),
                _ => {
                    return Err(MissingOwner::NoField {
                        field: name.clone(),
                    })
                }
            },
        }
    }
    Ok(out)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (a URL path segment or query
/// value).
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Checks route `route`'s owner source and parses its template.
fn compile_owner(route: usize, owner: &OwnerSource) -> Result<CompiledOwner, RouteError> {
    let template = |setting, text: &str| {
        parse_template(text).map_err(|source| RouteError::Template {
            route,
            setting,
            source,
        })
    };
    match owner {
        OwnerSource::Pointer(p) if p.starts_with('/') => Ok(CompiledOwner::Pointer(p.clone())),
        OwnerSource::Pointer(p) => Err(RouteError::NotAPointer {
            route,
            pointer: p.clone(),
        }),
        OwnerSource::RedisKey(t) => Ok(CompiledOwner::Redis(template("owner_redis_key", t)?)),
        OwnerSource::HttpUrl(t) => Ok(CompiledOwner::Http(template("owner_http_url", t)?)),
    }
}

/// The routes by topic.
#[derive(Debug)]
pub(crate) struct Routes {
    by_topic: HashMap<String, Vec<(Option<String>, Route)>>,
}

impl Routes {
    /// Compiles the routes (templates parsed, pointers checked).
    pub(crate) fn new(configs: &[RouteConfig]) -> Result<Self, RouteError> {
        let mut by_topic: HashMap<String, Vec<(Option<String>, Route)>> = HashMap::new();
        for (i, config) in configs.iter().enumerate() {
            let owner = compile_owner(i, &config.owner)?;
            let routes = by_topic.entry(config.topic.clone()).or_default();
            if routes.iter().any(|(t, _)| *t == config.event_type) {
                return Err(RouteError::Duplicate { route: i });
            }
            let route = Route {
                event: config.event.clone(),
                fields: config.fields.clone(),
                owner,
            };
            routes.push((config.event_type.clone(), route));
        }
        Ok(Self { by_topic })
    }

    /// The topics to subscribe to, sorted.
    pub(crate) fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.by_topic.keys().cloned().collect();
        topics.sort();
        topics
    }

    /// The route of an event: the one naming its type, else the topic's catch-all.
    pub(crate) fn find(&self, topic: &str, event_type: &str) -> Option<&Route> {
        let routes = self.by_topic.get(topic)?;
        routes
            .iter()
            .find(|(t, _)| t.as_deref() == Some(event_type))
            .or_else(|| routes.iter().find(|(t, _)| t.is_none()))
            .map(|(_, route)| route)
    }
}

#[cfg(test)]
mod tests;
