//! Ready-made Axum routes: `/health/cache` and the admin endpoints.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::Router;
//! use larder_cache::admin::{Admin, BearerToken};
//! use larder_cache::Cache;
//! use larder_core::Handle;
//!
//! let handle = Handle::from_env()?;
//! let cache = Cache::new(handle.clone());
//! let app: Router = Router::new()
//!     .merge(larder_cache::axum::health_routes(handle))
//!     .merge(larder_cache::axum::admin_routes(Admin::new(cache, BearerToken::new("s3cret"))));
//! # Ok(()) }
//! ```

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use larder_core::Handle;

use crate::admin::Admin;

/// `GET /health/cache`: always 200, with the handle's [`larder_core::HealthReport`],
/// probed at most once a second ([`larder_core::HealthProbe`]).
pub fn health_routes<S: Clone + Send + Sync + 'static>(handle: Handle) -> Router<S> {
    let probe = larder_core::HealthProbe::new(handle);
    Router::new().route(
        "/health/cache",
        get(move || {
            let probe = probe.clone();
            async move { Json(probe.report().await) }
        }),
    )
}

/// The admin endpoints under `/admin/cache/`, behind `admin`'s authorization hook.
pub fn admin_routes<S: Clone + Send + Sync + 'static>(admin: Admin) -> Router<S> {
    Router::new().route(
        "/admin/cache/{*rest}",
        any(move |req: Request| {
            let admin = admin.clone();
            async move {
                let (parts, _) = req.into_parts();
                let reply = admin.handle(&parts).await;
                let status =
                    StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let response: Response = (status, Json(reply.body)).into_response();
                response
            }
        }),
    )
}
