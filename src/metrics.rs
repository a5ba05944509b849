//! The one Prometheus registry of the process: the actors' relay metrics plus HTTP request
//! metrics, and the text exposition served at `/metrics`.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use ws_actors::{LeaseMetrics, RelayMetrics};

/// HTTP request metrics, labelled by route pattern (never the raw path) and status.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    /// Creates and registers the HTTP metrics.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            ),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }

    /// Counts one request.
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }
}

/// Every metric of the process.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Where everything is registered.
    pub registry: Registry,
    /// Connections, fan-out, broker.
    pub relay: RelayMetrics,
    /// HTTP requests.
    pub http: HttpMetrics,
    /// Quota leases, presence and disconnects.
    pub leases: LeaseMetrics,
}

impl Metrics {
    /// Creates the registry and registers everything.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let relay = RelayMetrics::register(&registry)?;
        let http = HttpMetrics::register(&registry)?;
        let leases = LeaseMetrics::register(&registry)?;
        Ok(Self {
            registry,
            relay,
            http,
            leases,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|err| prometheus::Error::Msg(err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_core_metrics() {
        let metrics = Metrics::new().unwrap();
        metrics.relay.opened("accepted");
        metrics.relay.connections_active.set(3);
        metrics
            .http
            .observe("/healthz", 200, Duration::from_millis(1));
        let text = metrics.encode().unwrap();
        assert!(text.contains("ws_connections_active 3"));
        assert!(text.contains(r#"ws_connections_opened_total{outcome="accepted"} 1"#));
        assert!(text.contains(r#"http_requests_total{route="/healthz",status="200"} 1"#));
    }
}
