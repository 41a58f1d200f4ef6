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
//! | [`topology`] | [`Topology`]: one node (`REDIS_URL`), Redis Cluster (`REDIS_CLUSTER_NODES`) or Sentinel (`REDIS_SENTINEL_NODES`, `REDIS_SENTINEL_MASTER`) |
//! | [`connection`] | [`Connection`]: what [`Handle::run`] hands its closure, on any topology |
//! | [`scan`] | [`Handle::scan`] over every primary, [`Handle::query_each_primary`] |
//! | [`future`] | [`MaybeReady`](future::MaybeReady): the response future of middleware that may answer at once |
//! | [`guard`] | [`Guard`]: per-call deadline (default 50 ms) and circuit breaker |
//! | [`keyspace`] | [`Keyspace`], [`Tenant`], [`Module`], [`Scope`]: `{prefix}:{component}:tenant:{tenant}:{module}:{key}` and SCAN patterns |
//! | [`codec`] | [`Codec`], [`Json`] |
//! | [`config`] | [`Config`]: builder and `from_env()` |
//! | [`health`] | [`HealthReport`] for `/health/cache` |
//! | [`last_hour`] | [`LastHour`](last_hour::LastHour): counts per name per minute over the last hour, in process; [`SharedHour`](last_hour::SharedHour): the same for every instance, through Redis (the dashboard's charts) |
//! | [`metrics`] | metric names (see the table there) |
//! | [`request`] | [`RequestView`] (what adapters show of a request), [`TenantExtractor`] |
//! | [`task`] | [`AbortOnDrop`](task::AbortOnDrop): a background task that ends with its owner |
//! | [`time`] | millisecond helpers (`millis`, `now_ms`) |
//! | [`trace`] | the components' spans (`cache.lookup`, `ratelimit.check`, `session.load`, `jobs.enqueue`) and [`in_span`](trace::in_span) |
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
//! # Redis Cluster and Sentinel
//!
//! The topology is configuration ([`topology`]); components never ask which one
//! they run on, except where a cluster forbids what one node allows. The key design
//! that makes a cluster work, component by component:
//!
//! - **No script or multi-key command touches two slots.** The hash tag is the
//!   tenant (`…:tenant:{42}:…`) for a tenant's keys, the module for global scopes
//!   (`…:global:{jobs}:…`), and the counted key for rate limits
//!   (`…:ratelimit:…:{ip:192.0.2.7}`); [`keyspace::cluster_slot`] computes a key's
//!   slot as the server does.
//! - **Cache**: a tenant's entries and its invalidation markers share the tenant's
//!   slot, so a look-up is one `MGET` on one node and the write script sees them
//!   all. Client-side tracking is off on a cluster (a tracking connection is one
//!   node's). Pipelines keep to one slot: the invalidation's `PUBLISH` goes as a
//!   command of its own there (any node delivers it cluster-wide).
//! - **Sessions**: a session and its user's index share the tenant's slot (or the
//!   session namespace's, without a tenant), so every write stays one atomic
//!   script, and listing and revoke-all keep their guarantees unchanged.
//! - **Rate limits**: state spreads over the slots by counted key; a request's
//!   policies that count the same thing (every per-IP policy) are one script on one
//!   node; policies counting different things are decided per slot at once,
//!   reserving and refunding so a request is admitted by all or charged to none.
//! - **Jobs**: a queue is split into partitions (3 on a cluster by default), each
//!   a full copy of the queue's keys under one hash tag (`{jobs.1.4}`), so every
//!   job script is single-slot. A job's id names its partition; workers fetch
//!   from every partition in turn. The tags are chosen so that `n` partitions
//!   fall in `n` equal ranges of the slots: on a cluster whose primaries hold
//!   equal contiguous ranges (as `redis-cli --cluster create` makes them), they
//!   sit on different primaries.
//! - **Sweeps** ([`Handle::scan`]) `SCAN` every primary in turn; `UNLINK` of keys
//!   from several slots is split by the cluster client.
//!
//! Behind Sentinel the handle asks the sentinels for the primary on first use and
//! again after a fault that a failover explains (the primary unreachable, or
//! `READONLY` from a demoted one), so it follows a promoted replica without a
//! restart; dedicated connections are checked with `ROLE` before reuse.
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

pub mod auth;
pub mod codec;
pub mod config;
pub mod connection;
pub mod error;
pub mod future;
pub mod guard;
pub mod handle;
pub mod health;
pub mod keyspace;
pub mod last_hour;
pub mod metrics;
pub mod request;
pub mod scan;
pub mod task;
pub mod time;
pub mod topology;
pub mod trace;

pub use codec::{Codec, CodecError, Json};
pub use config::{Config, ConfigBuilder, ConfigError, RedisUrl};
pub use connection::Connection;
pub use error::{BackendError, BackendErrorKind, Error, UnavailableReason};
pub use guard::{BreakerState, Guard, GuardStats, Outage};
pub use handle::{Dedicated, Handle};
pub use health::{HealthProbe, HealthReport};
pub use keyspace::{KeyError, Keyspace, Module, Scope, Tenant};
pub use request::{HeaderKey, Principal, RequestView, TenantExtractor};
pub use topology::{NodeAuth, Topology};

/// The redis-rs crate larder is built on, for commands and scripts.
pub use redis;
