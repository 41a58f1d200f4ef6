//! Exports spans over OpenTelemetry (OTLP over HTTP, protobuf): larder's own
//! (`cache.lookup`, `ratelimit.check`, `session.load`, `jobs.enqueue`, see
//! [`larder_core::trace`]) and the app's, as a `tracing-subscriber` layer.
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! # fn main() -> Result<(), larder::otel::OtelError> {
//! // `None` unless OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set.
//! let otel = larder::otel::Otel::from_env()?;
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer())
//!     .with(otel.as_ref().map(larder::otel::Otel::layer))
//!     .init();
//! // ... serve; dropping `otel` at exit sends the spans still buffered.
//! # Ok(())
//! # }
//! ```
//!
//! The standard variables configure it: `OTEL_EXPORTER_OTLP_ENDPOINT` (the
//! collector's base URL; `/v1/traces` is appended) or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL), `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`. Spans are batched and sent
//! from the exporter's own thread, so a slow or absent collector never holds up a
//! request; what does not fit its queue is dropped. `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` choose the sampler (default: every trace).
//!
//! # Cost
//!
//! Measured on the Axum stock app (`scripts/bench-otel`, BENCHMARKS.md): a request
//! with three larder spans costs about 85 µs more CPU with every span exported,
//! and about 40 µs with 1 % of traces sampled (the span's data is built before the
//! sampler decides). Spans carry their name, the fields larder records (tenant,
//! module or task or policy, outcome) and their target, not the source location,
//! the thread or busy/idle times.

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The variables that turn the exporter on.
const ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// An OTLP span exporter; its [`layer`](Self::layer) feeds it. Dropping it sends
/// what is still buffered (waiting for the collector up to the exporter's timeout).
pub struct Otel {
    provider: SdkTracerProvider,
}

impl fmt::Debug for Otel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Otel").finish_non_exhaustive()
    }
}

/// The exporter could not be set up (a malformed endpoint, say).
#[derive(Debug)]
pub struct OtelError(String);

impl fmt::Display for OtelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpenTelemetry exporter: {}", self.0)
    }
}

impl std::error::Error for OtelError {}

impl Otel {
    /// The exporter the `OTEL_*` variables describe, or `None` when neither
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` nor `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
    ///
    /// # Errors
    /// The exporter refused its configuration.
    pub fn from_env() -> Result<Option<Self>, OtelError> {
        let set = ENDPOINTS
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
        if !set {
            return Ok(None);
        }
        // The exporter's HTTP client is a blocking one (the batch processor runs on
        // its own thread, with no async runtime); it may not be built on a thread
        // that runs an async runtime, as an app's `main` usually does.
        let exporter = std::thread::spawn(|| {
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
        })
        .join()
        .map_err(|_| OtelError("building the exporter panicked".into()))?
        .map_err(|e| OtelError(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .build();
        Ok(Some(Self { provider }))
    }

    /// The layer that hands spans to the exporter: `INFO` and above from every
    /// target, and larder's `DEBUG` spans (its per-request spans are at `DEBUG`;
    /// an app that does not want them adds a filter of its own with
    /// `Layer::with_filter`).
    #[must_use]
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.provider.tracer("larder");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(
                Targets::new()
                    .with_default(Level::INFO)
                    .with_target("larder", Level::DEBUG),
            )
    }

    /// Sends what is buffered now.
    ///
    /// # Errors
    /// The collector could not be reached or refused the spans.
    pub fn flush(&self) -> Result<(), OtelError> {
        self.provider
            .force_flush()
            .map_err(|e| OtelError(e.to_string()))
    }
}

impl Drop for Otel {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OpenTelemetry exporter: spans lost at shutdown");
        }
    }
}
