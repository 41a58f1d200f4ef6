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
//!
//! The cache, session, rate-limit and job crates join this umbrella behind features
//! of their own as they land.

/// The shared spine: handle, guard, keyspace, codec, config, health, metrics.
pub use larder_core as core;
