//! Run with: cargo run -p example-quickstart
//!
//! A small Axum service on larder. It starts with no Redis at all (the cache, the
//! rate limits and the counter live in process); set `REDIS_URL` to use Redis.
//! Every route but `/health/*` and `/metrics` is limited per client IP by
//! `RATE_LIMIT` (default `100/minute`), `POST /visits` also by `10/minute`.
//!
//! ```text
//! curl -si -H 'X-Tenant-Id: 1' localhost:5000/report     # X-Cache: MISS (slow), then HIT
//! curl -s -XPOST -H 'X-Tenant-Id: 1' localhost:5000/visits  # counts, invalidates `report`
//! curl -s localhost:5000/health/cache
//! curl -s localhost:5000/metrics
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use larder::cache::tower::CacheLayer;
use larder::cache::{Cache, CacheRoute, InvalidateRoute, ResponseCache};
use larder::core::{Handle, Module, Tenant};
use larder::ratelimit::tower::RateLimitLayer;
use larder::ratelimit::{ClientIp, Key, Policy, RateLimit, RateLimiter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

#[derive(Clone)]
struct AppState {
    larder: Handle,
    visits: Module,
    /// Counts kept while Redis is unavailable (per instance, not shared).
    local: Arc<Mutex<HashMap<Tenant, i64>>>,
    prometheus: PrometheusHandle,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,larder=debug".into()),
        )
        .init();
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    larder::core::metrics::describe_now();

    let handle = Handle::from_env()?;
    let responses = ResponseCache::new(Cache::new(handle.clone()))
        .route(CacheRoute::new("/report", "report")?)
        .invalidate(InvalidateRoute::new("POST", "/visits", &["report"])?);
    let per_ip = std::env::var("RATE_LIMIT").unwrap_or_else(|_| "100/minute".into());
    let client_ip = Key::ClientIp(ClientIp::from_env()?); // TRUSTED_PROXIES
    let limits = RateLimit::new(RateLimiter::new(handle.clone()))
        .policy(Policy::new("ip", &per_ip)?.key(client_ip.clone()))
        .route(
            "POST",
            "/visits",
            Policy::new("visits", "10/minute")?.key(client_ip),
        )
        .exempt_prefix("/health/")
        .exempt_prefix("/metrics");
    let state = AppState {
        larder: handle.clone(),
        visits: Module::new("visits")?,
        local: Arc::default(),
        prometheus,
    };
    let app = Router::new()
        .route("/report", get(report))
        .route("/visits", post(visit))
        .layer(CacheLayer::new(responses))
        .route("/metrics", get(render_metrics))
        .with_state(state)
        .merge(larder::cache::axum::health_routes(handle))
        .layer(RateLimitLayer::new(limits));

    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT: expected a port number, got {p:?}"))?,
        Err(_) => 5000,
    };
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    // The peer address is what per-IP limits count by.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// A slow, per-tenant computation: the response cache answers it after the first call.
async fn report(headers: HeaderMap) -> Response {
    let tenant = headers
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Json(json!({ "tenant": tenant, "computed_at": format!("{:?}", std::time::SystemTime::now()) }))
        .into_response()
}

async fn render_metrics(State(state): State<AppState>) -> String {
    state.prometheus.render()
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn visit(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(raw) = headers.get("x-tenant-id") else {
        return error(StatusCode::BAD_REQUEST, "missing X-Tenant-Id header".into());
    };
    let tenant = match raw
        .to_str()
        .map_err(|e| e.to_string())
        .and_then(|s| Tenant::new(s).map_err(|e| e.to_string()))
    {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid X-Tenant-Id: {e}")),
    };
    let key = match state
        .larder
        .keyspace()
        .scope(&tenant, &state.visits)
        .key("count")
    {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state
        .larder
        .query::<i64>("visits_incr", larder::core::redis::cmd("INCR").arg(&key))
        .await
    {
        Ok(n) => Json(json!({ "tenant": tenant, "visits": n, "source": "redis", "key": key }))
            .into_response(),
        Err(e) => {
            tracing::debug!(error = %e, "redis unavailable, counting in process");
            let n = {
                let mut local = state
                    .local
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = local.entry(tenant.clone()).or_insert(0);
                *n += 1;
                *n
            };
            Json(json!({ "tenant": tenant, "visits": n, "source": "in_process" })).into_response()
        }
    }
}
