//! How list and map settings are read: a sequence or a table in TOML, one string in an
//! environment variable (a comma-separated list, or JSON).

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};

/// A list given either as a sequence (TOML) or as one comma-separated string (environment).
pub(super) fn string_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    deserializer.deserialize_any(StringList)
}

/// Reads a list of strings from a sequence or a comma-separated string.
struct StringList;

impl<'de> Visitor<'de> for StringList {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings or a comma-separated string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(value
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(String::from)
            .collect())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            items.push(item);
        }
        Ok(items)
    }
}

/// A string map given as a table (TOML) or as a JSON object string (environment).
pub(super) fn string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    structured_or_json(deserializer, "a table of strings or a JSON object string")
}

/// `T` given in its structured form (TOML) or as a string holding it as JSON (environment); an
/// empty string is `T::default()`. `expecting` describes both forms.
pub(super) fn structured_or_json<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    deserializer: D,
    expecting: &'static str,
) -> Result<T, D::Error> {
    deserializer.deserialize_any(JsonOr::<T>::new(expecting))
}

/// Deserializes `T` from its structured form, or from a string holding it as JSON.
struct JsonOr<T> {
    expecting: &'static str,
    _type: PhantomData<T>,
}

impl<T> JsonOr<T> {
    fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            _type: PhantomData,
        }
    }
}

impl<'de, T: DeserializeOwned + Default> Visitor<'de> for JsonOr<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        if value.trim().is_empty() {
            return Ok(T::default());
        }
        serde_json::from_str(value).map_err(|e| E::custom(format!("invalid JSON: {e}")))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::deserialize(de::value::SeqAccessDeserializer::new(seq))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}
