//! HdrHistogram helpers: the histograms of a run (latency in µs, close times), their V2
//! serialisation as base64 (how workers ship them to the parent, which merges them), and
//! percentile summaries in milliseconds.

use anyhow::{anyhow, Context as _};
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram of `u64` values.
pub type Hist = Histogram<u64>;

/// Largest value recorded without saturation: one hour in µs.
const HIGHEST_US: u64 = 3_600_000_000;

/// A histogram for µs values up to an hour, 3 significant digits (latency, close times).
pub fn precise() -> anyhow::Result<Hist> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

/// A smaller histogram (2 significant digits) for per-interval latency series.
pub fn coarse() -> anyhow::Result<Hist> {
    Histogram::new_with_bounds(1, HIGHEST_US, 2).map_err(|e| anyhow!("histogram: {e:?}"))
}

/// V2 serialisation, base64.
pub fn encode(h: &Hist) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| anyhow!("serialising a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Inverse of [`encode`].
pub fn decode(text: &str) -> anyhow::Result<Hist> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("histogram base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow!("deserialising a histogram: {e:?}"))
}

/// Adds `src` (base64) into `dst`.
pub fn merge_into(dst: &mut Hist, src: &str) -> anyhow::Result<()> {
    let h = decode(src)?;
    dst.add(&h)
        .map_err(|e| anyhow!("merging histograms: {e:?}"))
}

/// Percentiles of a µs histogram, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The percentiles of `h` (µs) in ms.
pub fn percentiles(h: &Hist) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.len(),
        mean_ms: h.mean().round() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_serialisation_and_merges() {
        let mut a = precise().unwrap();
        let mut b = precise().unwrap();
        for v in 1..=1000 {
            a.record(v).unwrap();
            b.record(v * 1000).unwrap();
        }
        let mut merged = precise().unwrap();
        merge_into(&mut merged, &encode(&a).unwrap()).unwrap();
        merge_into(&mut merged, &encode(&b).unwrap()).unwrap();
        assert_eq!(merged.len(), 2000);
        assert_eq!(merged.max(), b.max());
        let p = percentiles(&a);
        assert!((p.p50_ms - 0.5).abs() < 0.01, "{p:?}");
    }
}
