//! larder: everything web services usually keep in Redis — a multi-tenant response
//! cache, sessions, rate limits and a job queue — sharing one connection handle and
//! one fail-open policy.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! use larder::core::{Config, Handle, Module, Tenant};
//!
//! // In an app: `Handle::from_env()?`, which reads REDIS_URL and friends.
//! let handle = Handle::new(Config::builder().key_prefix("stock").build()?)?;
//! let scope = handle.keyspace().scope(&Tenant::new("1")?, &Module::new("balance")?);
//! assert_eq!(scope.pattern_all(), "stock:tenant:{1}:balance:*");
//! assert!(handle.health().await.is_ok());
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! # Features
//!
//! | Name | Description | Default? |
//! | --- | --- | --- |
//! | `tls` | `rediss://` URLs through rustls | no |
//! | `cache` | [`cache`]: the typed cache service and the response cache's core | no |
//! | `ratelimit` | [`ratelimit`]: distributed rate limits (GCRA in one round trip) and their HTTP core | no |
//! | `session` | [`session`]: the session store behind tower-sessions and actix-session | no |
//! | `jobs` | [`jobs`]: the job queue (tasks, workers, periodic scheduler) | no |
//! | `dashboard` | [`dashboard`]: the admin dashboard (jobs, cache, sessions, Redis), with `cache`, `jobs` and `session` | no |
//! | `tower` | Tower layers of the enabled components | no |
//! | `axum` | `tower`, plus Axum glue (`/health/cache` and admin routes, `ConnectInfo`) | no |
//! | `actix` | Actix-web middleware of the enabled components, health and admin services | no |
//! | `otel` | [`otel`]: export spans to an OpenTelemetry collector (OTLP over HTTP) | no |
//! | `full` | all of the above | no |
//!
//! Framework features apply to the components you enable: `features = ["cache",
//! "ratelimit", "axum"]` gives both Tower layers and no Actix code.

/// The shared spine: handle, guard, keyspace, codec, config, health, metrics.
pub use larder_core as core;

/// Multi-tenant, fail-open caching: [`cache::Cache`] and [`cache::ResponseCache`].
#[cfg(feature = "cache")]
pub use larder_cache as cache;

/// Distributed, fail-open rate limits: [`ratelimit::RateLimiter`],
/// [`ratelimit::RateLimit`] and the Tower/Actix adapters.
#[cfg(feature = "ratelimit")]
pub use larder_ratelimit as ratelimit;

/// Sessions for tower-sessions and actix-session: [`session::Sessions`], hashed ids,
/// idle and absolute timeouts, per-user index, rotation with grace.
#[cfg(feature = "session")]
pub use larder_session as session;

/// The job queue: [`jobs::Jobs`], [`jobs::Worker`], [`jobs::Scheduler`].
#[cfg(feature = "jobs")]
pub use larder_jobs as jobs;

/// The admin dashboard: [`dashboard::Dashboard`], its Axum router and Actix scope.
#[cfg(feature = "dashboard")]
pub use larder_dashboard as dashboard;

#[cfg(feature = "otel")]
pub mod otel;
