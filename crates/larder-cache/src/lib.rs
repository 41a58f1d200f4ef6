//! Multi-tenant, fail-open caching on the shared larder handle.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! use larder_cache::Cache;
//! use larder_core::{Handle, Module, Tenant};
//!
//! // `Handle::from_env()?` in an app; with no REDIS_URL the cache lives in process.
//! let cache = Cache::new(Handle::in_process());
//! let (tenant, module) = (Tenant::new("1")?, Module::new("products")?);
//!
//! let mut origin_calls = 0;
//! for _ in 0..3 {
//!     let names: Vec<String> = cache
//!         .get_or_set(&tenant, &module, "all", || async {
//!             origin_calls += 1;
//!             Ok::<_, std::io::Error>(vec!["bolts".to_owned(), "nuts".to_owned()])
//!         })
//!         .await?;
//!     assert_eq!(names.len(), 2);
//! }
//! assert_eq!(origin_calls, 1);
//!
//! cache.invalidate_module(&tenant, &module).await; // O(1), whatever the key count
//! assert_eq!(cache.get::<Vec<String>>(&tenant, &module, "all").await, None);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! # How it stays correct
//!
//! - **Tenant isolation**: keys come from larder-core's keyspace; a tenant id cannot
//!   reach another tenant's keys or patterns.
//! - **Invalidation in O(1)**: each tenant and each tenant+module has a marker key.
//!   An entry is stamped with the markers its reader saw *before* calling the origin;
//!   it is served only while they are unchanged. Invalidation is one `SET` of a fresh
//!   marker.
//! - **A hit reads one key**: the cache learns the current markers once per tenant
//!   and module through Redis's client-side tracking (`CLIENT TRACKING ON OPTIN`, on
//!   a RESP3 connection of its own) and Redis tells it when one changes, so a hit is
//!   one `GET` of the entry on that connection. The change's notice reaches the
//!   connection before the reply of any later command, so a hit is judged by current
//!   markers, as if it had read them with the entry. Until the connection tracks (or
//!   where the server refuses RESP3 or tracking, or with `Settings::track_markers`
//!   off) a look-up is one `MGET` of markers and entry on the shared connection.
//! - **No stale write-back**: the write is a Lua script that stores only if the
//!   markers have not moved since the read, so an origin call that raced with a write
//!   and its invalidation is not cached.
//! - **Fail-open**: Redis faults read as misses and skip writes; the handle's breaker
//!   keeps calls from waiting. Corrupt entries are deleted and read as misses.
//! - **Stampede control**: concurrent misses for one key make one origin call per
//!   process.
//!
//! # Features
//!
//! | Name | Description | Default? |
//! | --- | --- | --- |
//! | `tower` | the response cache as a Tower layer | no |
//! | `axum` | `tower`, plus Axum health and admin routers | no |
//! | `actix` | the response cache as Actix-web middleware, health and admin services | no |

#[cfg(feature = "actix")]
pub mod actix;
pub mod admin;
#[cfg(feature = "axum")]
pub mod axum;
pub mod entry;
mod fill;
mod flight;
pub mod http;
mod keys;
mod local;
mod service;
#[cfg(feature = "tower")]
pub mod tower;
mod tracked;

pub use entry::Meta;
pub use http::{
    CacheRoute, FromHeader, FromPathSegment, FromSubdomain, InvalidateRoute, RequestView,
    ResponseCache, TenantExtractor, UndeclaredQuery,
};
pub use service::{Cache, L1Settings, Lookup, LookupCounts, LookupHistory, Settings, Stats};
