//! Logging and tracing set-up. Logs: `tracing` with a `RUST_LOG`-style filter, JSON lines for
//! production or a human format for a terminal, on stdout. Traces: when
//! `telemetry.otlp_endpoint` is set, spans of this service are exported over OTLP/HTTP (JSON
//! encoding, which Jaeger and the OpenTelemetry Collector ingest on port 4318); when it is
//! empty, no exporter exists and the per-message forward span is never even created.
//!
//! Spans never carry a user id, only [`UserIdHasher`]'s keyed hash of it (or nothing).

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use hmac::{Hmac, Mac as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{global, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use sha2::Sha256;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use ws_actors::trace::ForwardTracer;

use crate::config::{AuthSettings, LogFormat, SettingsError, TelemetrySettings, TraceUserId};

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

/// The label the user-id hash key is derived with from `auth.jwt_secret`: HMAC-SHA256 of this
/// label keyed by the secret, so the hash key is unrelated to any token's signature.
const DERIVED_KEY_LABEL: &[u8] = b"websocket-service telemetry.trace_user_id_key v1";
/// Bytes of the HMAC kept in a user-id hash (16 hex digits).
const USER_HASH_BYTES: usize = 8;
const USER_ID_KEY: &str = "telemetry.trace_user_id_key";

/// A stable tag for a user id in traces: HMAC-SHA256 of the id under a secret key, truncated to
/// 64 bits, as 16 hex digits. Without the key, candidate ids cannot be tested against it; with
/// the same key, every replica and every release gives the same tag. Cheap to clone.
#[derive(Clone)]
pub struct UserIdHasher {
    mac: Hmac<Sha256>,
}

impl UserIdHasher {
    /// A hasher keyed by `key` (any length).
    pub fn new(key: &[u8]) -> Result<Self, SettingsError> {
        let mac = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|_| SettingsError::invalid(USER_ID_KEY, "not a usable HMAC key"))?;
        Ok(Self { mac })
    }

    /// The hasher of `telemetry.trace_user_id = "hash"`, `None` with `"omit"`. Its key is
    /// `telemetry.trace_user_id_key`, else derived from `auth.jwt_secret`, else (public-key
    /// auth) random for this process, which is logged as a warning.
    pub fn from_settings(
        telemetry: &TelemetrySettings,
        auth: &AuthSettings,
    ) -> Result<Option<Self>, SettingsError> {
        if telemetry.trace_user_id == TraceUserId::Omit {
            return Ok(None);
        }
        if !telemetry.trace_user_id_key.is_empty() {
            return Self::new(telemetry.trace_user_id_key.as_bytes()).map(Some);
        }
        if !auth.jwt_secret.is_empty() {
            let derived = Self::new(auth.jwt_secret.as_bytes())?.digest(DERIVED_KEY_LABEL);
            return Self::new(&derived).map(Some);
        }
        tracing::warn!(
            "telemetry.trace_user_id_key is not set and there is no auth.jwt_secret to derive \
             it from: user.hash uses a random key of this process, so hashes are not comparable \
             across replicas or restarts; set telemetry.trace_user_id_key to make them so"
        );
        Self::new(&rand::random::<[u8; 32]>()).map(Some)
    }

    /// The tag of `user_id`.
    pub fn hash(&self, user_id: &str) -> String {
        let digest = self.digest(user_id.as_bytes());
        digest[..USER_HASH_BYTES].iter().fold(
            String::with_capacity(2 * USER_HASH_BYTES),
            |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            },
        )
    }

    fn digest(&self, message: &[u8]) -> [u8; 32] {
        self.mac
            .clone()
            .chain_update(message)
            .finalize()
            .into_bytes()
            .into()
    }
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
    fn the_user_hash_is_truncated_hmac_sha256() {
        // RFC 4231, test case 2: HMAC-SHA256(key "Jefe", "what do ya want for nothing?").
        let hasher = UserIdHasher::new(b"Jefe").unwrap();
        assert_eq!(
            hasher.hash("what do ya want for nothing?"),
            "5bdcc146bf60754e"
        );
        let keyed = UserIdHasher::new(b"0123456789abcdef0123").unwrap();
        assert_eq!(keyed.hash("user-42"), keyed.hash("user-42"), "stable");
        assert_ne!(keyed.hash("user-42"), keyed.hash("user-43"));
    }

    #[test]
    fn different_keys_give_different_hashes() {
        let one = UserIdHasher::new(b"0123456789abcdef-one").unwrap();
        let two = UserIdHasher::new(b"0123456789abcdef-two").unwrap();
        assert_ne!(one.hash("user-42"), two.hash("user-42"));
    }

    fn settings(key: &str, secret: &str) -> (TelemetrySettings, AuthSettings) {
        let telemetry = TelemetrySettings {
            trace_user_id_key: key.into(),
            ..TelemetrySettings::default()
        };
        let auth = AuthSettings {
            jwt_secret: secret.into(),
            ..AuthSettings::default()
        };
        (telemetry, auth)
    }

    fn hash_of(key: &str, secret: &str, user_id: &str) -> Option<String> {
        let (telemetry, auth) = settings(key, secret);
        let hasher = UserIdHasher::from_settings(&telemetry, &auth).unwrap();
        hasher.map(|hasher| hasher.hash(user_id))
    }

    #[test]
    fn the_key_comes_from_settings_or_the_jwt_secret() {
        const SECRET: &str = "0123456789abcdef0123456789abcdef";
        const KEY: &str = "trace-key-0123456789";
        let configured = hash_of(KEY, SECRET, "user-42").unwrap();
        assert_eq!(
            configured,
            UserIdHasher::new(KEY.as_bytes()).unwrap().hash("user-42")
        );
        assert_eq!(
            hash_of(KEY, "another-secret-0123456789", "user-42"),
            Some(configured)
        );

        let derived = hash_of("", SECRET, "user-42").unwrap();
        // Pinned (computed with Python's hmac module) so that a change of the derivation, which
        // would break every dashboard correlating users across a release, cannot go unnoticed.
        assert_eq!(derived, "f24dc707a1d9797c");
        let with_secret_as_key = UserIdHasher::new(SECRET.as_bytes()).unwrap();
        assert_ne!(
            derived,
            with_secret_as_key.hash("user-42"),
            "derived, not the secret"
        );

        let random = hash_of("", "", "user-42").unwrap();
        assert_ne!(
            hash_of("", "", "user-42").unwrap(),
            random,
            "random per hasher"
        );
        let (mut telemetry, auth) = settings(KEY, SECRET);
        telemetry.trace_user_id = TraceUserId::Omit;
        assert!(UserIdHasher::from_settings(&telemetry, &auth)
            .unwrap()
            .is_none());
    }

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
