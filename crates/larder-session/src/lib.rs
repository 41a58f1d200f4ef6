//! Redis sessions for [`tower-sessions`] (Axum) and [`actix-session`] on larder's
//! shared handle, with what their Redis stores lack.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! use std::time::Duration;
//! use larder_core::Handle;
//! use larder_session::{Identity, SessionConfig, Sessions, Written};
//!
//! // `Handle::from_env()` uses REDIS_URL; without it sessions live in process.
//! let config = SessionConfig::builder()
//!     .idle_timeout(Duration::from_secs(30 * 60))
//!     .absolute_timeout(Duration::from_secs(12 * 3600))
//!     .max_bytes(16 * 1024)
//!     .build()?;
//! let sessions = Sessions::new(Handle::in_process(), config);
//!
//! // The adapters call these; apps use the per-user index directly.
//! sessions.create("cookie-1", br#"{"cart":"3"}"#, Some(&Identity::new("alice"))).await?;
//! sessions.create("cookie-2", b"{}", Some(&Identity::new("alice"))).await?;
//! assert_eq!(sessions.list(None, "alice").await?.len(), 2);
//! assert_eq!(sessions.revoke_all(None, "alice", None).await?, 2); // log out everywhere
//! assert!(sessions.load("cookie-1").await?.is_none());
//! // Over the cap: a clear error, nothing stored.
//! let big = vec![b'x'; 20_000];
//! assert!(sessions.create("cookie-3", &big, None).await.is_err());
//! assert!(sessions.load("cookie-3").await?.is_none());
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! # What it adds
//!
//! - **Hashed ids.** Redis keys hold SHA-256 of the cookie value, so a dump, a
//!   replica or `MONITOR` yields no live cookie. Keys come from larder-core's
//!   keyspace: the tenant's (`{prefix}:session:tenant:{t}:session:s:{hash}`) when the context
//!   layer finds one, the configured namespace otherwise.
//! - **Idle and absolute timeouts**, in Redis's clock. A load is one `HMGET`; rolling
//!   expiry writes (one script call) at most once per touch interval, so most
//!   requests write nothing. A request that never touches the session costs no round
//!   trip (tower-sessions loads lazily).
//! - **Per-user index**: [`Sessions::list`] (created, last seen, user agent, IP),
//!   [`Sessions::revoke`], [`Sessions::revoke_all`] ("log out everywhere").
//! - **No resurrection**: a save only lands on a live record, so a slow request
//!   cannot bring back a session a logout or revoke ended.
//! - **Rotation with grace**: the `login`/`rotate` helpers give the session a new id;
//!   the old one stays readable, read-only, for a few seconds for parallel requests.
//!   It holds the pre-rotation state (a fixated id never sees the logged-in state).
//! - **Size cap**: over it, a clear error and nothing stored.
//! - **Degraded policy** per store: [`Degraded::FailClosed`] (a clear 503 through the
//!   context layer, within the guard's deadline) or [`Degraded::InMemory`]
//!   (development). A tampered, unknown, expired or malformed cookie, or a corrupt
//!   entry, yields a fresh anonymous session.
//!
//! # Features
//!
//! | Name | Description |
//! | --- | --- |
//! | `tower` | `tower::RedisSessionStore` (`tower_sessions::SessionStore`), `tower::SessionContextLayer`, `tower::SessionTenantLayer` |
//! | `axum` | `tower`, with Axum's `ConnectInfo` visible to tenant extractors |
//! | `actix` | `actix::RedisSessionStore` (`actix_session::storage::SessionStore`), `actix::SessionContext`, `actix::SessionTenant` |
//!
//! [`tower-sessions`]: https://docs.rs/tower-sessions
//! [`actix-session`]: https://docs.rs/actix-session

pub mod config;
pub mod context;
mod local;
mod record;
pub mod store;

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "tower")]
pub mod tower;

pub use config::{Degraded, SessionConfig, SessionConfigBuilder};
pub use context::{current_session, current_tenant, mark_rotation, Fault, RequestContext};
pub use store::{
    ActiveSessions, Identity, Loaded, SessionError, SessionInfo, SessionRef, Sessions, Written,
    IDENTITY_KEY, TENANTS_KEPT,
};
