//! What both apps need to run as operators run them: logs, metrics, the session
//! cookie's keys, and the liveness and readiness probes. One rule each, below the
//! two frameworks' glue.

use std::io::IsTerminal;
use std::sync::OnceLock;

use larder::otel::Otel;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use serde_json::json;

use crate::{Reply, Stock};

/// Starts the logs: human-readable text, coloured only when standard output is a
/// terminal, or, with `LOG_FORMAT=json`, one JSON object per line with the
/// event's fields at the top level (`tenant`, `module`, `outcome`, `job_id`,
/// ...). `RUST_LOG` filters (default `info,larder=debug,larder::core=info`).
/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans also go to that OpenTelemetry
/// collector ([`larder::otel`]); keep the returned exporter until the process
/// ends, so that the last spans are sent.
///
/// # Errors
/// A `LOG_FORMAT` other than `text` or `json`, or an exporter that cannot be set up.
pub fn init_logging() -> Result<Option<Otel>, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,larder=debug,larder::core=info".into());
    let format = std::env::var("LOG_FORMAT").unwrap_or_default();
    let otel = Otel::from_env().map_err(|e| e.to_string())?;
    let spans = tracing_subscriber::registry().with(otel.as_ref().map(Otel::layer));
    match format.trim() {
        "" | "text" => spans
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_filter(filter),
            )
            .init(),
        "json" => spans
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_filter(filter),
            )
            .init(),
        other => return Err(format!("LOG_FORMAT: expected text or json, got {other:?}")),
    }
    Ok(otel)
}

/// The keys an app signs and encrypts its session cookie with.
#[derive(Clone)]
pub struct SessionKeys {
    /// `SESSION_KEY`: signs and encrypts every cookie set.
    pub current: Vec<u8>,
    /// `SESSION_KEY_PREVIOUS`: cookies made with it are still read (and re-made
    /// with the current key), so a rotation logs nobody out.
    pub previous: Option<Vec<u8>>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("current", &"***")
            .field("previous", &self.previous.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The session cookie's keys from the environment. A key is 64 bytes or more.
///
/// Sessions live in Redis, so they belong to the deployment, not to a process:
/// with Redis configured (`redis_configured`), every instance must sign with the
/// same key, and `SESSION_KEY` is required. `ALLOW_RANDOM_SESSION_KEY=true` (for
/// development) makes a random key instead, and says so in the log: sessions then
/// end with the process and are unknown to other instances. Without Redis the
/// sessions are in process anyway, and a random key is made quietly.
///
/// # Errors
/// A message naming the variable: `SESSION_KEY` missing with Redis, or a key
/// shorter than 64 bytes, or a malformed `ALLOW_RANDOM_SESSION_KEY`.
pub fn session_keys(redis_configured: bool) -> Result<Option<SessionKeys>, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let key = |name: &str, v: String| {
        if v.len() >= 64 {
            Ok(v.into_bytes())
        } else {
            Err(format!(
                "{name}: expected at least 64 bytes, got {}",
                v.len()
            ))
        }
    };
    let previous = var("SESSION_KEY_PREVIOUS")
        .map(|v| key("SESSION_KEY_PREVIOUS", v))
        .transpose()?;
    if let Some(current) = var("SESSION_KEY") {
        return Ok(Some(SessionKeys {
            current: key("SESSION_KEY", current)?,
            previous,
        }));
    }
    let allow = match var("ALLOW_RANDOM_SESSION_KEY").as_deref().map(str::trim) {
        None | Some("false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(other) => {
            return Err(format!(
                "ALLOW_RANDOM_SESSION_KEY: expected true or false, got {other:?}"
            ))
        }
    };
    if redis_configured && !allow {
        return Err(
            "SESSION_KEY: required with Redis (64 bytes or more, the same on every \
                    instance; e.g. `openssl rand -base64 64`). For development only, \
                    ALLOW_RANDOM_SESSION_KEY=true makes a random key per process"
                .into(),
        );
    }
    if redis_configured {
        tracing::warn!("ALLOW_RANDOM_SESSION_KEY=true: a random session key for this process; its sessions end when it stops and other instances do not know them (development only)");
    }
    Ok(None)
}

/// Histogram buckets of every larder duration, in seconds: from a Redis round trip
/// on loopback (half a millisecond) to a long task (a minute).
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The process's Prometheus recorder, installed on first use (metrics recorded
/// before it are not kept, so the apps call it at startup). `None` when another
/// recorder was installed first.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    larder::core::metrics::describe_now();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no Prometheus recorder: /metrics answers 503");
                    None
                }
            }
        })
        .as_ref()
}

impl Stock {
    /// `GET /metrics`: every larder metric in Prometheus's text format, with the job
    /// queue's depths read at the scrape ([`larder::jobs::Jobs::publish_depths`]:
    /// set sizes, no scan). Open like the health probes: keep it off the public
    /// side of the proxy (DEPLOYING.md).
    pub async fn metrics(&self) -> (u16, String) {
        if let Err(e) = self.jobs.publish_depths().await {
            tracing::debug!(error = %e, "job depths not refreshed for this scrape");
        }
        match prometheus() {
            Some(handle) => (200, handle.render()),
            None => (503, "no Prometheus recorder in this process\n".to_owned()),
        }
    }

    /// `GET /health/live`: 200 while the process serves requests at all. An
    /// orchestrator restarts the process when it fails; nothing outside the
    /// process is checked (a Redis outage must not restart every instance).
    #[must_use]
    pub fn liveness(&self) -> Reply {
        Reply {
            status: 200,
            body: json!({ "status": "live" }),
        }
    }

    /// `GET /health/ready`: whether to send this instance traffic. 200 when its
    /// database answers; Redis is reported in the body (`"redis": "healthy"`,
    /// `"degraded"`, `"in_process"`) but does not make the instance unready: the
    /// cache and limits fail open, so an instance without Redis still serves
    /// (sessions fail closed, job enqueues are refused). 503 when the database
    /// does not answer.
    pub async fn readiness(&self) -> Reply {
        let database = self.db.ping().await;
        let redis = self.probe.report().await;
        let redis_state = match (self.handle.topology().is_some(), redis.is_ok()) {
            (false, _) => "in_process",
            (true, true) => "healthy",
            (true, false) => "degraded",
        };
        Reply {
            status: if database { 200 } else { 503 },
            body: json!({
                "status": if database { "ready" } else { "unready" },
                "database": if database { "ok" } else { "unavailable" },
                "redis": redis_state,
            }),
        }
    }
}
