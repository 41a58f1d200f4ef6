//! Distributed, fail-open rate limits for Axum and Actix-web, on [larder]'s shared
//! Redis handle, with `governor` as the local tier.
//!
//! ```
//! use larder_core::Handle;
//! use larder_ratelimit::{Check, Decision, Policy, RateLimiter};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! // In an app: `Handle::from_env()?` (REDIS_URL). Without Redis, each policy applies
//! // its fail mode; the default is an in-process limiter with the same quota.
//! let limiter = RateLimiter::new(Handle::in_process());
//! let login = Policy::new("login", "2/minute")?;
//! let per_user = Policy::new("user", "10/second;1000/hour")?;
//!
//! let attempt = || [Check::new(&login, "ip:203.0.113.9"), Check::new(&per_user, "user:42")];
//! assert!(limiter.check(&attempt()).await.is_allowed());
//! assert!(limiter.check(&attempt()).await.is_allowed());
//! match limiter.check(&attempt()).await {
//!     Decision::Deny { reason, retry_after, .. } => {
//!         assert_eq!(reason.policy(), "login");
//!         assert!(retry_after.as_secs() <= 30);
//!     }
//!     Decision::Allow { .. } => unreachable!("the third login in a minute is over the limit"),
//!     _ => unreachable!(),
//! }
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! # How it decides
//!
//! - **GCRA in one round trip.** Every quota of every policy that applies to a request
//!   is evaluated by one Lua script, run by SHA (reloaded on `NOSCRIPT`), on Redis's
//!   own clock. All or nothing: a request rejected by one quota consumes from none.
//!   Works on Redis 6.2+ without modules; all of a limiter's keys share one hash-tag
//!   slot. GCRA keeps one small key per quota and client (a sliding log keeps one
//!   entry per request) and spreads a quota smoothly instead of resetting at window
//!   edges (a fixed window admits twice the limit across an edge).
//! - **Local pre-check.** A key Redis reported over its limit until T is rejected
//!   in-process, with no round trip, until T.
//! - **Fail modes per policy** while Redis is down, frozen or absent
//!   ([`FailMode`]): an in-process `governor` limiter with the same quota (default),
//!   allow, or deny with 503/429. The handle's deadline and circuit breaker keep a
//!   dead Redis from costing more than one deadline.
//! - **Shadow mode per policy**: counted and logged, never rejected.
//! - **Client IP** with trusted-proxy handling ([`ClientIp`]): `X-Forwarded-For` is
//!   walked right to left over trusted networks only; IPv6 grouped by /64.
//! - **Responses**: 429 with a JSON body and `Retry-After`, and the IETF
//!   `RateLimit-Policy` / `RateLimit` fields on limited routes (see [`http`]).
//!
//! # Features
//!
//! | Name | Description | Default? |
//! | --- | --- | --- |
//! | `tower` | [`tower::RateLimitLayer`] for Tower, hyper and Axum | no |
//! | `axum` | `tower`, plus Axum's `ConnectInfo` as the peer address | no |
//! | `actix` | [`actix::RateLimitMiddleware`] for Actix-web | no |
//!
//! [larder]: https://docs.rs/larder

pub mod activity;
#[cfg(feature = "actix")]
pub mod actix;
pub mod http;
pub mod ip;
mod limiter;
mod local;
mod policy;
pub mod quota;
#[cfg(feature = "tower")]
pub mod tower;

pub use http::{Plan, RateLimit, Rejection, Verdict};
pub use ip::ClientIp;
pub use limiter::{Check, Decision, DenyReason, QuotaState, RateLimiter, Source};
pub use policy::{Cost, CostFn, FailMode, Key, KeyFn, Policy};
pub use quota::{PolicyError, Quota};
