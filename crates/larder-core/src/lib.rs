//! The shared spine of [larder]: one Redis handle, one fail-open guard, one tenant
//! keyspace, one codec — used by the cache, sessions, rate limits and jobs.
//!
//! ```
//! use std::time::Duration;
//! use larder_core::{Codec, Config, Handle, Json, Module, Tenant};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! // In an app: `Handle::from_env()?` (REDIS_URL, CACHE_KEY_PREFIX, ...).
//! let config = Config::builder()
//!     .key_prefix("stock")
//!     .op_timeout(Duration::from_millis(50))
//!     .build()?;
//! let handle = Handle::new(config)?;
//!
//! // Every key is scoped by tenant and module, by construction.
//! let scope = handle.keyspace().scope(&Tenant::new("1")?, &Module::new("balance")?);
//! assert_eq!(scope.key("2024-01")?, "stock:tenant:{1}:balance:2024-01");
//! assert!(Tenant::new("1:*").is_err());
//!
//! // Values are serde JSON; a corrupt entry is a typed error, never a panic.
//! let bytes = Json.encode(&vec![1, 2, 3])?;
//! assert!(Json.decode::<String>(&bytes).is_err());
//!
//! // Without REDIS_URL every Redis call fails at once and components degrade.
//! let err = handle.query::<String>("ping", &redis::cmd("PING")).await.unwrap_err();
//! assert!(err.is_backend_fault());
//! assert!(handle.health().await.is_ok()); // in-process mode is healthy
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! # What is inside
//!
//! | module | what it gives |
//! | --- | --- |
//! | [`handle`] | [`Handle`]: multiplexed self-reconnecting connection for the request path, a deadpool pool for dedicated connections, pub/sub |
//! | [`future`] | [`MaybeReady`](future::MaybeReady): the response future of middleware that may answer at once |
//! | [`guard`] | [`Guard`]: per-call deadline (default 50 ms) and circuit breaker |
//! | [`keyspace`] | [`Keyspace`], [`Tenant`], [`Module`], [`Scope`]: `{prefix}:{component}:tenant:{tenant}:{module}:{key}` and SCAN patterns |
//! | [`codec`] | [`Codec`], [`Json`] |
//! | [`config`] | [`Config`]: builder and `from_env()` |
//! | [`health`] | [`HealthReport`] for `/health/cache` |
//! | [`metrics`] | metric names (see the table there) |
//! | [`request`] | [`RequestView`] (what adapters show of a request), [`TenantExtractor`] |
//! | [`time`] | millisecond helpers (`millis`, `now_ms`) |
//!
//! # Features
//!
//! | Name | Description | Default? |
//! | --- | --- | --- |
//! | `tls` | `rediss://` URLs through rustls | no |
//! | `http` | [`RequestView`] for `http::request::Parts` (Tower, hyper) | no |
//! | `axum` | `http`, plus Axum's `ConnectInfo` as the peer address | no |
//! | `actix` | [`RequestView`] for `actix_web::HttpRequest` | no |
//!
//! # The fail-open policy
//!
//! Every call has a deadline in tens of milliseconds, not seconds. After
//! `breaker_threshold` consecutive backend faults the breaker opens and calls return
//! [`Error::Unavailable`] at once, with no network I/O, until a probe after the
//! cool-down succeeds. Each component decides what degraded means for it; the handle
//! recovers by itself when Redis returns.
//!
//! [larder]: https://docs.rs/larder

pub mod codec;
pub mod config;
pub mod connection;
pub mod error;
pub mod future;
pub mod guard;
pub mod handle;
pub mod health;
pub mod keyspace;
pub mod metrics;
pub mod request;
pub mod scan;
pub mod time;
pub mod topology;

pub use codec::{Codec, CodecError, Json};
pub use config::{Config, ConfigBuilder, ConfigError, RedisUrl};
pub use connection::Connection;
pub use error::{BackendError, BackendErrorKind, Error, UnavailableReason};
pub use guard::{BreakerState, Guard, GuardStats};
pub use handle::{Dedicated, Handle};
pub use health::{HealthProbe, HealthReport};
pub use keyspace::{KeyError, Keyspace, Module, Scope, Tenant};
pub use request::{HeaderKey, Principal, RequestView, TenantExtractor};
pub use topology::{NodeAuth, Topology};

/// The redis-rs crate larder is built on, for commands and scripts.
pub use redis;
