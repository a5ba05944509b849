//! Reading the scenario reports and formatting their numbers: dotted-path lookups in a JSON
//! report, numbers with thousands separators, target verdicts, and the repeated-run notes.

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

/// Looks up a dotted path (`a.b.c`, `rounds.0.flood`) in a JSON value.
pub(super) fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, key| match (v, key.parse::<usize>()) {
            (Value::Array(a), Ok(i)) => a.get(i),
            _ => v.get(key),
        })
}

/// The number at `path`, if there is one.
pub(super) fn num(v: &Value, path: &str) -> Option<f64> {
    at(v, path).and_then(Value::as_f64)
}

/// The value at `path` as compact JSON (strings quoted), or an empty string.
pub(super) fn raw(v: &Value, path: &str) -> String {
    at(v, path).map_or_else(String::new, Value::to_string)
}

/// `v` with `decimals` decimals (thousands grouped when 0), or `n/a`.
pub(super) fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        None => "n/a".to_owned(),
        Some(x) if decimals == 0 => group(x.round() as i64),
        Some(x) => format!("{x:.decimals$}"),
    }
}

/// `n` with a comma every three digits.
fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The verdict cell of a target: met, missed, or not applicable.
pub(super) fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "n/a",
    }
}

/// `DIR/NAME.json`, if it exists.
pub(super) fn load(dir: &Path, name: &str) -> anyhow::Result<Option<Value>> {
    let path = dir.join(format!("{name}.json"));
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(value))
}

/// "a / b / c" of one field of `NAME.runs.json` (one entry per repeated run), if present.
fn runs(dir: &Path, name: &str, field: &str, decimals: usize) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.runs.json"))).ok()?;
    let runs: Vec<Value> = serde_json::from_str(&text).ok()?;
    Some(
        runs.iter()
            .map(|r| fmt(r.get(field).and_then(Value::as_f64), decimals))
            .collect::<Vec<_>>()
            .join(" / "),
    )
}

/// The sentence naming every repeated run of a scenario, or nothing.
pub(super) fn runs_note(dir: &Path, name: &str) -> String {
    match (
        runs(dir, name, "p99_ms", 2),
        runs(dir, name, "steal_pct", 1),
        runs(dir, name, "other_processes_pct", 0),
    ) {
        (Some(p99), Some(steal), Some(other)) => format!(
            "; the median p99 of {} runs: p99 per run {p99} ms, host steal {steal} % of the machine, other processes {other} % of a core",
            p99.split(" / ").count()
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
