//! Logging and tracing set-up. Logs: `tracing` with a `RUST_LOG`-style filter, JSON lines for
//! production or a human format for a terminal, on stdout. Traces: when
//! `telemetry.otlp_endpoint` is set, spans of this service are exported over OTLP/HTTP (JSON
//! encoding, which Jaeger and the OpenTelemetry Collector ingest on port 4318); when it is
//! empty, no exporter exists and the per-message forward span is never even created.

use std::sync::Arc;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{global, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use ws_actors::trace::ForwardTracer;

use crate::config::{LogFormat, TelemetrySettings};

/// The target of the spans this service exports (`websocket.*`).
pub const SPAN_TARGET: &str = "websocket";

/// Owns the trace pipeline; flushes it on shutdown.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// The forward-span hook for the hubs, present only when exporting.
    pub fn forward_tracer(&self) -> Option<Arc<dyn ForwardTracer>> {
        self.exporting()
            .then(|| Arc::new(OtelForwardTracer) as Arc<dyn ForwardTracer>)
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown() {
                eprintln!("trace exporter shutdown: {error}");
            }
        }
    }
}

fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    }
}

fn tracer_provider(settings: &TelemetrySettings) -> anyhow::Result<SdkTracerProvider> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(traces_url(&settings.otlp_endpoint))
        .build()
        .context("invalid setting telemetry.otlp_endpoint")?;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Which spans go to the exporter: this service's own, and the HTTP request spans.
fn exported_spans() -> Targets {
    Targets::new()
        .with_target(SPAN_TARGET, Level::INFO)
        .with_target("websocket_service", Level::INFO)
        .with_target("ws_actors", Level::INFO)
}

/// Installs the global subscriber (logs, and traces when configured).
pub fn init(settings: &TelemetrySettings) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match settings.log_format {
        // JSON lines carry no span context, so the layer is not shown spans at all: formatting
        // the fields of every connect's spans was half the CPU of a connect.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(filter.and(filter_fn(|meta| meta.is_event())))
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_filter(filter).boxed(),
    };
    let provider = if settings.otlp_endpoint.is_empty() {
        None
    } else {
        Some(tracer_provider(settings)?)
    };
    let traces = provider.as_ref().map(|provider| {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let tracer = provider.tracer("websocket-service");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(exported_spans())
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("logging already initialised")?;
    Ok(Telemetry { provider })
}

/// Makes `websocket.forward_message` spans, parented on the payload's `traceparent`.
struct OtelForwardTracer;

impl ForwardTracer for OtelForwardTracer {
    fn forward_span(&self, traceparent: Option<&str>, size: usize, fanout: usize) -> tracing::Span {
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "websocket.forward_message",
            messaging.message.body.size = size,
            fanout = fanout,
        );
        if let Some(traceparent) = traceparent {
            let _ = span.set_parent(remote_context(traceparent));
        }
        span
    }
}

/// The OpenTelemetry context a W3C `traceparent` value names.
pub fn remote_context(traceparent: &str) -> opentelemetry::Context {
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    global::get_text_map_propagator(|propagator| propagator.extract(&carrier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_path_once() {
        assert_eq!(traces_url("http://j:4318"), "http://j:4318/v1/traces");
        assert_eq!(traces_url("http://j:4318/"), "http://j:4318/v1/traces");
        assert_eq!(
            traces_url("http://j:4318/v1/traces"),
            "http://j:4318/v1/traces"
        );
    }
}
