//! Unit tests of the number formatting and the JSON path lookups.

use serde_json::Value;

use super::*;

#[test]
fn formats_numbers() {
    assert_eq!(group(1234567), "1,234,567");
    assert_eq!(group(-12), "-12");
    assert_eq!(fmt(Some(1.234), 2), "1.23");
    assert_eq!(fmt(None, 2), "n/a");
    let v: Value = serde_json::json!({"a": {"b": 3}});
    assert_eq!(num(&v, "a.b"), Some(3.0));
    assert_eq!(num(&v, "a.c"), None);
}
