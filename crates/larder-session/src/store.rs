//! The framework-free session store on larder-core's handle.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::{Either, FutureExt};
use larder_core::keyspace::{Component, Keyspace};
use larder_core::{Handle, Scope};
use serde::{Deserialize, Serialize};

use crate::config::{Degraded, SessionConfig};
use crate::context::{self, Fault};
use crate::local::{now_ms, LocalTier, Write};
use crate::record::hex_sha256;
pub use crate::record::{Loaded, SessionRef, Written};

/// The reserved key of the session data under which the adapters' `login` helpers
/// keep the [`Identity`]; the store reads it to maintain the per-user index.
pub const IDENTITY_KEY: &str = "larder.identity";

/// Who a session belongs to, as the app records it at login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user id (any string; the index key holds only its hash).
    pub user: String,
    /// The user agent of the login request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client IP of the login request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl Identity {
    /// An identity for `user`, without user agent or IP.
    #[must_use]
    pub fn new(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            user_agent: None,
            ip: None,
        }
    }

    /// Records the user agent.
    #[must_use]
    pub fn with_user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = Some(ua.into());
        self
    }

    /// Records the client IP.
    #[must_use]
    pub fn with_ip(mut self, ip: impl Into<String>) -> Self {
        self.ip = Some(ip.into());
        self
    }
}

/// One of a user's sessions, as listed by [`Sessions::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// The session's public reference.
    pub id: SessionRef,
    /// When it began (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it was last seen (ms since the Unix epoch; updated at most once per
    /// touch interval).
    pub last_seen_ms: u64,
    /// The user agent recorded at login.
    pub user_agent: Option<String>,
    /// The client IP recorded at login.
    pub ip: Option<String>,
    /// Whether this is the session of the current request.
    pub current: bool,
}

/// How many tenants the registry behind [`Sessions::active_by_tenant`] keeps (the
/// ones that started a session most recently).
pub const TENANTS_KEPT: usize = 10_000;

/// A scope's live sessions ([`Sessions::active_by_tenant`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveSessions {
    /// The tenant; `None` for sessions without one.
    pub tenant: Option<String>,
    /// Its live sessions.
    pub active: u64,
}

/// The tenants that started a session, by last start, in process (what
/// [`Sessions::active_by_tenant`] lists without Redis).
#[derive(Debug, Default)]
struct RecentTenants(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl RecentTenants {
    /// Notes `tenant` at `now`, unless it was noted less than a minute ago (the
    /// registry orders tenants to the minute); returns whether it noted it.
    fn note(&self, tenant: &str, now: u64) -> bool {
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen
            .get(tenant)
            .is_some_and(|at| now.saturating_sub(*at) < 60_000)
        {
            return false;
        }
        if seen.len() >= TENANTS_KEPT && !seen.contains_key(tenant) {
            // Full: the tenant seen least recently makes room.
            if let Some(oldest) = seen
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, _)| t.clone())
            {
                seen.remove(&oldest);
            }
        }
        seen.insert(tenant.to_owned(), now);
        true
    }

    fn recent(&self, limit: usize) -> Vec<String> {
        let seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<(&String, &u64)> = seen.iter().collect();
        all.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        all.into_iter()
            .take(limit)
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Redis could not be used and the policy is fail-closed.
    #[error("the session store is unavailable: {0}")]
    Unavailable(#[source] larder_core::Error),
    /// The state was over the size cap; nothing was stored.
    #[error("session state of {size} bytes exceeds the cap of {cap} bytes; nothing was stored")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The cap.
        cap: usize,
    },
    /// The state could not be encoded.
    #[error("session state could not be encoded: {0}")]
    Encode(String),
    /// Redis answered with something the store did not expect.
    #[error("session store error: {0}")]
    Store(#[source] larder_core::Error),
    /// Every id tried for a new session was taken ([`Sessions::create_fresh`]).
    #[error("could not find a free session id")]
    NoFreeId,
}

/// How many ids [`Sessions::create_fresh`] tries.
pub const CREATE_ATTEMPTS: usize = 8;

/// A value of an adapter's session map: JSON values (tower-sessions) or JSON text
/// (actix-session). The identity is the map's [`IDENTITY_KEY`] entry.
#[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
pub(crate) trait StoredValue: Serialize {
    /// The identity this value holds, if it is one.
    fn identity(&self) -> Option<Identity>;
}

impl StoredValue for serde_json::Value {
    fn identity(&self) -> Option<Identity> {
        Identity::deserialize(self).ok()
    }
}

impl StoredValue for String {
    fn identity(&self) -> Option<Identity> {
        serde_json::from_str(self).ok()
    }
}

/// An adapter's session map as stored bytes, and the identity it holds (for the
/// per-user index): the one rule both adapters follow.
#[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
pub(crate) fn encode_map<V: StoredValue, S: std::hash::BuildHasher>(
    map: &std::collections::HashMap<String, V, S>,
) -> Result<(Vec<u8>, Option<Identity>), SessionError> {
    let bytes = serde_json::to_vec(map).map_err(|e| SessionError::Encode(e.to_string()))?;
    let identity = map.get(IDENTITY_KEY).and_then(StoredValue::identity);
    Ok((bytes, identity))
}

/// Sessions on larder's shared handle: the store the Tower and Actix adapters wrap.
///
/// - Keys: `{prefix}:session:tenant:{t}:{namespace}:s:{sha256(id)}` when the request context
///   carries a tenant, `{prefix}:session:global:{namespace}:s:{sha256(id)}` otherwise; the
///   per-user index is `...:{namespace}:u:{sha256(user)}` beside it (same slot).
///   Redis never holds a live cookie value.
/// - Idle and absolute timeouts, both in Redis's clock; a load is one `HMGET`, and
///   extends the idle expiry (one script call) at most once per touch interval.
/// - Writes to an existing session only land while it is alive and not rotated away:
///   a save racing a logout or revoke cannot bring the session back.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use larder_core::Handle;
/// use larder_session::{Identity, SessionConfig, Sessions, Written};
///
/// let sessions = Sessions::new(Handle::in_process(), SessionConfig::default());
/// let id = "a-random-cookie-value";
/// let who = Identity::new("alice");
/// assert_eq!(sessions.create(id, b"{}", Some(&who)).await?, Written::Stored);
/// assert!(sessions.load(id).await?.is_some());
/// assert_eq!(sessions.list(None, "alice").await?.len(), 1);
/// sessions.revoke_all(None, "alice", None).await?;
/// assert!(sessions.load(id).await?.is_none());
/// // A late save of the revoked session does not bring it back.
/// assert_eq!(sessions.update(id, b"{}", Some(&who)).await?, Written::Gone);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Handle,
    /// The sessions' own keyspace (`{prefix}:session:`), out of every cache sweep.
    keyspace: Keyspace,
    config: SessionConfig,
    global: Scope,
    touch: redis::Script,
    write: redis::Script,
    rotate: redis::Script,
    revoke: redis::Script,
    local: LocalTier,
    tenants: RecentTenants,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("namespace", &self.inner.global)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What `touch.lua` returns for a live session.
type LoadRow = (Vec<u8>, u64, u64, u64, u8);
/// What the load's HMGET returns: data, and the record's times (see [`Times`]).
type HashRow = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A record's `h` field, `"created touched absolute rotated"`: times in ms of
/// Redis's clock, `rotated` 1 once the id was rotated away (read-only for the grace
/// window). One field rather than four: each field of a reply costs its own parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Times {
    created: u64,
    touched: u64,
    absolute: u64,
    rotated: bool,
}

impl Times {
    /// `None` for anything but four space-separated numbers, the last 0 or 1.
    fn parse(h: &[u8]) -> Option<Self> {
        let mut parts = h.split(|b| *b == b' ');
        let mut num = || parts.next().and_then(larder_core::codec::parse_u64);
        let times = Self {
            created: num()?,
            touched: num()?,
            absolute: num()?,
            rotated: match num()? {
                0 => false,
                1 => true,
                _ => return None,
            },
        };
        parts.next().is_none().then_some(times)
    }
}

use larder_core::time::millis as ms;

/// Session operations by `op` and `outcome`, keyed once per operation.
static SESSION_OPS: larder_core::metrics::Family = larder_core::metrics::Family::new(
    larder_core::metrics::SESSION_OPS,
    "op",
    "outcome",
    &[
        "hit",
        "miss",
        "ok",
        "stored",
        "gone",
        "collision",
        "too_large",
    ],
);

impl Sessions {
    /// Sessions on `handle` with `config`.
    #[must_use]
    pub fn new(handle: Handle, config: SessionConfig) -> Self {
        let keyspace = handle.keyspace().component(Component::Session);
        let global = keyspace.global_scope(&config.namespace);
        Self {
            inner: Arc::new(Inner {
                keyspace,
                local: LocalTier::new(config.local_capacity),
                handle,
                config,
                global,
                touch: redis::Script::new(include_str!("../lua/touch.lua")),
                write: redis::Script::new(include_str!("../lua/write.lua")),
                rotate: redis::Script::new(include_str!("../lua/rotate.lua")),
                revoke: redis::Script::new(include_str!("../lua/revoke.lua")),
                tenants: RecentTenants::default(),
            }),
        }
    }

    /// Sessions on `handle`, configured from the `SESSION_*` variables.
    ///
    /// # Errors
    /// A malformed variable.
    pub fn from_env(handle: Handle) -> Result<Self, larder_core::ConfigError> {
        Ok(Self::new(handle, SessionConfig::from_env()?))
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// The handle.
    #[must_use]
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    fn scope_of(&self, tenant: Option<&larder_core::Tenant>) -> Scope {
        match tenant {
            Some(t) => self.inner.keyspace.scope(t, &self.inner.config.namespace),
            None => self.inner.global.clone(),
        }
    }

    fn scope(&self) -> Scope {
        context::with(|c| match c.and_then(|c| c.tenant()) {
            Some(t) => self.scope_of(Some(t)),
            None => self.inner.global.clone(),
        })
    }

    /// The Redis key of the session whose cookie value is `id`, in the current
    /// request's scope (for tests and tools).
    #[must_use]
    pub fn record_key(&self, id: &str) -> String {
        Self::key(&self.scope(), &SessionRef::of_id(id))
    }

    fn key(scope: &Scope, r: &SessionRef) -> String {
        let mut s = String::with_capacity(scope.base().len() + 66);
        s.push_str(scope.base());
        s.push_str("s:");
        s.push_str(r.as_str());
        s
    }

    /// The scope's live sessions: a sorted set of session hashes scored by their
    /// idle expiry, which the scripts keep and [`active`](Self::active) counts.
    fn live_key(scope: &Scope) -> String {
        format!("{}live", scope.base())
    }

    fn index_key(scope: &Scope, user_hash: &str) -> String {
        let mut s = String::with_capacity(scope.base().len() + 66);
        s.push_str(scope.base());
        s.push_str("u:");
        s.push_str(user_hash);
        s
    }

    fn in_memory(&self) -> bool {
        self.inner.config.degraded == Degraded::InMemory
    }

    /// Runs a Redis operation under the degraded policy: `Ok(None)` means "use the
    /// local tier".
    fn redis<'a, T: 'a>(
        &'a self,
        op: &'static str,
        fut: impl Future<Output = Result<T, larder_core::Error>> + 'a,
    ) -> impl Future<Output = Result<Option<T>, SessionError>> + 'a {
        if !self.inner.handle.is_redis_configured() {
            return Either::Left(std::future::ready(Ok(None)));
        }
        // A combinator, not an `async fn`: the call's future is polled where it lies.
        // An `async fn` keeps its argument and the copy it awaits, which doubled the
        // state of every session operation (and of the box each adapter call makes).
        Either::Right(fut.map(move |outcome| self.settle(op, outcome)))
    }

    /// What a Redis call's outcome means under the degraded policy.
    fn settle<T>(
        &self,
        op: &'static str,
        outcome: Result<T, larder_core::Error>,
    ) -> Result<Option<T>, SessionError> {
        match outcome {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_backend_fault() => {
                larder_core::metrics::DEGRADED_BY_COMPONENT.increment("session", "");
                if self.in_memory() {
                    tracing::debug!(target: "larder::session", op, error = %e, "redis unavailable: session served in process");
                    Ok(None)
                } else {
                    tracing::warn!(target: "larder::session", op, error = %e, "redis unavailable: session store fails closed");
                    context::record_fault(Fault::Unavailable);
                    Err(SessionError::Unavailable(e))
                }
            }
            Err(e) => Err(SessionError::Store(e)),
        }
    }

    /// Loads the session whose cookie value is `id`. `None` for an unknown, expired,
    /// revoked or malformed id; the caller starts a fresh anonymous session.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] when Redis is down and the policy is fail-closed.
    pub async fn load(&self, id: &str) -> Result<Option<Loaded>, SessionError> {
        // The `session.load` span ([`larder_core::trace`]): never the id.
        let span = context::with(|c| {
            let tenant = c.and_then(|c| c.tenant()).map_or("", |t| t.as_str());
            tracing::debug_span!(
                target: "larder::session",
                "session.load",
                tenant,
                namespace = self.inner.config.namespace.as_str(),
                outcome = tracing::field::Empty
            )
        });
        let outcome = |loaded: &Result<Option<Loaded>, SessionError>| match loaded {
            Ok(Some(_)) => "hit",
            Ok(None) => "miss",
            Err(SessionError::Unavailable(_)) => "unavailable",
            Err(_) => "error",
        };
        larder_core::trace::in_span(span, self.load_record(id), outcome).await
    }

    /// [`load`](Self::load)'s work.
    async fn load_record(&self, id: &str) -> Result<Option<Loaded>, SessionError> {
        let r = SessionRef::of_id(id);
        let scope = self.scope();
        let key = Self::key(&scope, &r);
        let idle = ms(self.inner.config.idle_timeout);
        let touch = ms(self.inner.config.touch_interval);
        // One HMGET: as cheap for Redis as a GET. Expiry is Redis's (every write and
        // touch sets the TTL to the earlier of the idle and absolute deadlines); the
        // touch, when due, is a second call at most once per interval.
        // Sized up front: growing the command costs more than the rest of writing it.
        let mut cmd = redis::Cmd::with_capacity(4, 64 + key.len());
        cmd.arg("HMGET").arg(&key).arg("d").arg("h");
        let row: Option<HashRow> = self
            .redis(
                "session_load",
                self.inner.handle.query("session_load", &cmd),
            )
            .await?;
        // A record is its data and valid times; anything less is no session.
        let record = row.map(|(data, h)| data.zip(h.as_deref().and_then(Times::parse)));
        let loaded = match record {
            Some(Some((
                data,
                Times {
                    created: created_ms,
                    touched: touched_ms,
                    absolute,
                    rotated: read_only,
                },
            ))) => {
                let now = now_ms();
                if absolute <= now {
                    None
                } else if !read_only && now.saturating_sub(touched_ms) >= touch {
                    // Boxed apart: at most once per touch interval, and its state
                    // would otherwise double that of every load.
                    Box::pin(self.touch_key(&scope, &r, idle)).await?
                } else {
                    Some(Loaded {
                        data,
                        created_ms,
                        touched_ms,
                        expires_ms: touched_ms.saturating_add(idle).min(absolute),
                        read_only,
                    })
                }
            }
            // Redis has none (or a partial record, which never counts as a session);
            // under the in-memory policy a session made during an outage may live in
            // process.
            Some(None) if !self.in_memory() => None,
            _ => self.inner.local.load(&key, idle, touch),
        };
        let outcome = if loaded.is_some() { "hit" } else { "miss" };
        SESSION_OPS.increment("load", outcome);
        context::set_current(loaded.as_ref().map(|_| r));
        Ok(loaded)
    }

    /// Touches session `r` of `scope` now (Redis's clock) and returns it, if alive.
    async fn touch_key(
        &self,
        scope: &Scope,
        r: &SessionRef,
        idle: u64,
    ) -> Result<Option<Loaded>, SessionError> {
        let key = Self::key(scope, r);
        let mut inv = self.inner.touch.key(&key);
        inv.key(Self::live_key(scope))
            .arg(idle)
            .arg(0)
            .arg(r.as_str());
        let found: Option<Option<LoadRow>> = self
            .redis(
                "session_touch",
                self.inner.handle.script("session_touch", &inv),
            )
            .await?;
        Ok(match found {
            Some(Some((data, created_ms, touched_ms, expires_ms, ro))) => Some(Loaded {
                data,
                created_ms,
                touched_ms,
                expires_ms,
                read_only: ro == 1,
            }),
            Some(None) => None,
            None => self.inner.local.load(&key, idle, 0),
        })
    }

    /// Creates a session under `id` holding `data`, owned by `identity` if given.
    ///
    /// # Errors
    /// [`SessionError::TooLarge`] over the size cap (nothing stored);
    /// [`SessionError::Unavailable`] as for [`load`](Self::load).
    pub async fn create(
        &self,
        id: &str,
        data: &[u8],
        identity: Option<&Identity>,
    ) -> Result<Written, SessionError> {
        self.write(true, id, data, identity).await
    }

    /// Creates a session under the first free id: `first`, then whatever `next_id`
    /// gives, up to [`CREATE_ATTEMPTS`] ids in all (an id taken already is a
    /// collision: the adapters' rule, kept here once). Returns the id stored.
    ///
    /// # Errors
    /// As [`create`](Self::create), and [`SessionError::NoFreeId`] when every id
    /// was taken.
    pub async fn create_fresh(
        &self,
        first: String,
        mut next_id: impl FnMut() -> String,
        data: &[u8],
        identity: Option<&Identity>,
    ) -> Result<String, SessionError> {
        let mut id = first;
        for _ in 0..CREATE_ATTEMPTS {
            match self.create(&id, data, identity).await? {
                Written::Collision => id = next_id(),
                Written::Stored | Written::Gone => return Ok(id),
            }
        }
        Err(SessionError::NoFreeId)
    }

    /// Loads `id` and decodes its state with the adapter's `decode`. State that does
    /// not decode (a corrupt or foreign entry) is no session: logged, and the
    /// request goes on with a fresh one (the adapters' rule, kept here once).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn load_decoded<T, E: fmt::Display>(
        &self,
        id: &str,
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<Option<(T, Loaded)>, SessionError> {
        let Some(loaded) = self.load(id).await? else {
            return Ok(None);
        };
        match decode(&loaded.data) {
            Ok(state) => Ok(Some((state, loaded))),
            Err(e) => {
                tracing::warn!(target: "larder::session", error = %e, "corrupt session entry: starting a fresh session");
                context::set_current(None);
                Ok(None)
            }
        }
    }

    /// Replaces the state of the live session `id`. Returns [`Written::Gone`], storing
    /// nothing, when the session was deleted, revoked, rotated away or has expired.
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub async fn update(
        &self,
        id: &str,
        data: &[u8],
        identity: Option<&Identity>,
    ) -> Result<Written, SessionError> {
        self.write(false, id, data, identity).await
    }

    async fn write(
        &self,
        create: bool,
        id: &str,
        data: &[u8],
        identity: Option<&Identity>,
    ) -> Result<Written, SessionError> {
        let cap = self.inner.config.max_bytes;
        if data.len() > cap {
            SESSION_OPS.increment("write", "too_large");
            context::record_fault(Fault::TooLarge {
                size: data.len(),
                cap,
            });
            return Err(SessionError::TooLarge {
                size: data.len(),
                cap,
            });
        }
        let scope = self.scope();
        let r = SessionRef::of_id(id);
        let key = Self::key(&scope, &r);
        let user_hash = identity.map(|i| hex_sha256(i.user.as_bytes()));
        let identity_json = identity
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| SessionError::Encode(e.to_string()))?;
        let idle = ms(self.inner.config.idle_timeout);
        let absolute = ms(self.inner.config.absolute_timeout);
        let index = user_hash.as_deref().map(|u| Self::index_key(&scope, u));
        let mut inv = self.inner.write.key(&key);
        inv.key(Self::live_key(&scope));
        if let Some(index) = &index {
            inv.key(index);
        }
        inv.arg(if create { "c" } else { "u" })
            .arg(data)
            .arg(idle)
            .arg(absolute)
            .arg(user_hash.as_deref().unwrap_or(""))
            .arg(identity_json.as_deref().unwrap_or(""))
            .arg(r.as_str())
            .arg(self.inner.config.max_per_user);
        let res: Option<i64> = self
            .redis(
                "session_write",
                self.inner.handle.script("session_write", &inv),
            )
            .await?;
        let max_per_user = self.inner.config.max_per_user;
        let local = Write {
            create,
            data,
            idle,
            absolute,
            user: user_hash.as_deref(),
            identity: identity_json.as_deref(),
        };
        let written = match res {
            Some(1) => Written::Stored,
            Some(-1) => Written::Collision,
            Some(_) if self.in_memory() && !create => {
                self.inner.local.write(&key, &local, max_per_user)
            }
            Some(_) => Written::Gone,
            None => self.inner.local.write(&key, &local, max_per_user),
        };
        let outcome = match written {
            Written::Stored => "stored",
            Written::Gone => "gone",
            Written::Collision => "collision",
        };
        if written == Written::Gone {
            tracing::debug!(target: "larder::session", session = %r, "save of a session that no longer exists dropped");
        }
        SESSION_OPS.increment(if create { "create" } else { "update" }, outcome);
        if written == Written::Stored {
            context::set_current(Some(r));
            if create {
                if let Some(tenant) = context::current_tenant() {
                    self.note_tenant(&tenant).await;
                }
            }
        }
        Ok(written)
    }

    /// Records that `tenant` started a session now, in the registry
    /// [`active_by_tenant`](Self::active_by_tenant) reads: a sorted set of tenant ids
    /// by last session start (the most recent [`TENANTS_KEPT`]), beside the
    /// namespace's sessions, and in process; at most once a minute per tenant and
    /// instance. Best effort: a failure only leaves the tenant out of the
    /// dashboard's list until a login a minute later.
    async fn note_tenant(&self, tenant: &larder_core::Tenant) {
        let now = now_ms();
        // A login of a tenant this instance noted less than a minute ago costs no
        // round trip.
        if !self.inner.tenants.note(tenant.as_str(), now)
            || !self.inner.handle.is_redis_configured()
        {
            return;
        }
        let key = self.tenants_key();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(now)
            .arg(tenant.as_str())
            .ignore()
            .cmd("ZREMRANGEBYRANK")
            .arg(&key)
            .arg(0)
            .arg(-(TENANTS_KEPT as i64) - 1)
            .ignore();
        if let Err(e) = self
            .inner
            .handle
            .pipeline::<()>("session_tenants", &pipe)
            .await
        {
            tracing::debug!(target: "larder::session", error = %e, "tenant registry not updated");
        }
    }

    fn tenants_key(&self) -> String {
        format!("{}tenants", self.inner.global.base())
    }

    /// How many sessions are live in `tenant`'s scope (`None`: the namespace's
    /// sessions without a tenant): one `ZCOUNT` of the set the scripts keep (a
    /// session counts until its idle expiry; one rotated away or revoked, at once no
    /// more).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn active(&self, tenant: Option<&larder_core::Tenant>) -> Result<u64, SessionError> {
        let scope = self.scope_of(tenant);
        let mut cmd = redis::cmd("ZCOUNT");
        cmd.arg(Self::live_key(&scope)).arg(now_ms()).arg("+inf");
        let counted = self
            .redis(
                "session_active",
                self.inner.handle.query::<u64>("session_active", &cmd),
            )
            .await?;
        Ok(match counted {
            Some(n) if !self.in_memory() => n,
            redis => {
                let prefix = Self::key(&scope, &SessionRef(String::new()));
                redis.unwrap_or(0) + self.inner.local.live_in(&prefix)
            }
        })
    }

    /// The live sessions without a tenant, then those of the `limit` tenants that
    /// started a session most recently (at most [`TENANTS_KEPT`]), each counted as
    /// [`active`](Self::active) counts: `limit + 2` bounded reads.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn active_by_tenant(
        &self,
        limit: usize,
    ) -> Result<Vec<ActiveSessions>, SessionError> {
        let limit = limit.min(TENANTS_KEPT);
        let mut range = redis::cmd("ZRANGE");
        range
            .arg(self.tenants_key())
            .arg(0)
            .arg(limit.saturating_sub(1))
            .arg("REV");
        let recent = self
            .redis(
                "session_tenants",
                self.inner
                    .handle
                    .query::<Vec<String>>("session_tenants", &range),
            )
            .await?;
        let mut tenants = match recent {
            Some(ids) if !self.in_memory() => ids,
            _ => self.inner.tenants.recent(limit),
        };
        // (`ZRANGE 0 0` is one, not none.)
        tenants.truncate(limit);
        let mut out = vec![ActiveSessions {
            tenant: None,
            active: self.active(None).await?,
        }];
        for id in tenants {
            // Ids were valid tenants when noted; one that is not (a hand-edited
            // registry) is skipped.
            let Ok(tenant) = larder_core::Tenant::new(&id) else {
                continue;
            };
            out.push(ActiveSessions {
                active: self.active(Some(&tenant)).await?,
                tenant: Some(id),
            });
        }
        Ok(out)
    }

    /// Extends the idle expiry of `id` now (for frameworks that ask for it on every
    /// request; loads already touch once per interval).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn touch(&self, id: &str) -> Result<(), SessionError> {
        let scope = self.scope();
        self.touch_key(
            &scope,
            &SessionRef::of_id(id),
            ms(self.inner.config.idle_timeout),
        )
        .await?;
        Ok(())
    }

    /// Ends the session `id`. When the handler marked a rotation
    /// ([`mark_rotation`](crate::mark_rotation)), the old id instead stays readable,
    /// read-only, for the rotation grace window.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn delete(&self, id: &str) -> Result<(), SessionError> {
        let scope = self.scope();
        let r = SessionRef::of_id(id);
        let key = Self::key(&scope, &r);
        let grace = if context::take_rotating() {
            ms(self.inner.config.rotation_grace)
        } else {
            0
        };
        let mut inv = self.inner.rotate.key(&key);
        inv.key(Self::live_key(&scope)).arg(grace).arg(r.as_str());
        let res: Option<i64> = self
            .redis(
                "session_delete",
                self.inner.handle.script("session_delete", &inv),
            )
            .await?;
        if res.is_none() || self.in_memory() {
            self.inner.local.rotate(&key, grace);
        }
        SESSION_OPS.increment(if grace > 0 { "rotate" } else { "delete" }, "ok");
        Ok(())
    }

    /// The live sessions of `user` in `tenant`'s scope (`None`: the namespace).
    /// Entries of sessions that ended are dropped from the index as they are met.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn list(
        &self,
        tenant: Option<&larder_core::Tenant>,
        user: &str,
    ) -> Result<Vec<SessionInfo>, SessionError> {
        let scope = self.scope_of(tenant);
        let user_hash = hex_sha256(user.as_bytes());
        let index = Self::index_key(&scope, &user_hash);
        let current = context::current_session();
        let mut out = Vec::new();
        let handle = &self.inner.handle;
        let members = self.members(&index).await?;
        if let Some(members) = members.filter(|m| !m.is_empty()) {
            let mut pipe = redis::pipe();
            for m in &members {
                pipe.cmd("HMGET")
                    .arg(Self::key(&scope, &SessionRef(m.clone())))
                    .arg("h")
                    .arg("u")
                    .arg("m");
            }
            type Row = (Option<Vec<u8>>, Option<String>, Option<String>);
            let rows = self
                .redis(
                    "session_list",
                    handle.pipeline::<Vec<Row>>("session_list", &pipe),
                )
                .await?
                .unwrap_or_default();
            let mut dead = Vec::new();
            for (m, (h, u, meta)) in members.into_iter().zip(rows) {
                match (h.as_deref().map(Times::parse), u) {
                    (Some(Some(t)), Some(u)) if u == user_hash && !t.rotated => {
                        out.push(info(
                            SessionRef(m),
                            t.created,
                            t.touched,
                            meta.as_deref(),
                            current.as_ref(),
                        ));
                    }
                    (None, _) => dead.push(m),
                    _ => {}
                }
            }
            if !dead.is_empty() {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(&index).arg(&dead);
                // Best effort: a failed clean-up is retried by the next listing.
                let _ = handle.query::<i64>("session_index_clean", &cmd).await;
            }
        }
        if !handle.is_redis_configured() || self.in_memory() {
            let prefix = Self::key(&scope, &SessionRef(String::new()));
            for (k, r) in self.inner.local.of_user(&prefix, &user_hash) {
                let id = SessionRef(k[prefix.len()..].to_owned());
                if out.iter().any(|i| i.id == id) {
                    continue;
                }
                out.push(info(
                    id,
                    r.created,
                    r.touched,
                    r.identity.as_deref(),
                    current.as_ref(),
                ));
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.last_seen_ms));
        Ok(out)
    }

    /// Revokes one session of `user` (it must belong to the user). Returns whether a
    /// session was ended.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn revoke(
        &self,
        tenant: Option<&larder_core::Tenant>,
        user: &str,
        session: &SessionRef,
    ) -> Result<bool, SessionError> {
        let n = self
            .revoke_refs(tenant, user, vec![session.clone()])
            .await?;
        Ok(n > 0)
    }

    /// Revokes every session of `user` ("log out everywhere"), except `keep` if given
    /// (typically the current session). Returns how many sessions ended.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn revoke_all(
        &self,
        tenant: Option<&larder_core::Tenant>,
        user: &str,
        keep: Option<&SessionRef>,
    ) -> Result<usize, SessionError> {
        let scope = self.scope_of(tenant);
        let index = Self::index_key(&scope, &hex_sha256(user.as_bytes()));
        let handle = &self.inner.handle;
        let mut refs: Vec<SessionRef> = self
            .members(&index)
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(SessionRef)
            .collect();
        if !handle.is_redis_configured() || self.in_memory() {
            let prefix = Self::key(&scope, &SessionRef(String::new()));
            for (k, _) in self
                .inner
                .local
                .of_user(&prefix, &hex_sha256(user.as_bytes()))
            {
                let r = SessionRef(k[prefix.len()..].to_owned());
                if !refs.contains(&r) {
                    refs.push(r);
                }
            }
        }
        refs.retain(|r| Some(r) != keep);
        self.revoke_refs(tenant, user, refs).await
    }

    /// The members of a user's index (`None`: use the local tier).
    async fn members(&self, index: &str) -> Result<Option<Vec<String>>, SessionError> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(index).arg(0).arg(-1);
        self.redis(
            "session_index",
            self.inner
                .handle
                .query::<Vec<String>>("session_index", &cmd),
        )
        .await
    }

    async fn revoke_refs(
        &self,
        tenant: Option<&larder_core::Tenant>,
        user: &str,
        refs: Vec<SessionRef>,
    ) -> Result<usize, SessionError> {
        if refs.is_empty() {
            return Ok(0);
        }
        let scope = self.scope_of(tenant);
        let user_hash = hex_sha256(user.as_bytes());
        let keys: Vec<String> = refs.iter().map(|r| Self::key(&scope, r)).collect();
        let mut n = 0;
        if self.inner.handle.is_redis_configured() {
            let mut inv = self.inner.revoke.key(Self::index_key(&scope, &user_hash));
            inv.key(Self::live_key(&scope)).arg(&user_hash);
            for (k, r) in keys.iter().zip(&refs) {
                inv.key(k).arg(r.as_str());
            }
            n = self
                .redis(
                    "session_revoke",
                    self.inner.handle.script::<usize>("session_revoke", &inv),
                )
                .await?
                .unwrap_or(0);
        }
        if !self.inner.handle.is_redis_configured() || self.in_memory() {
            let prefix = Self::key(&scope, &SessionRef(String::new()));
            for (k, _) in self.inner.local.of_user(&prefix, &user_hash) {
                if keys.contains(&k) {
                    self.inner.local.delete(&k);
                    n += 1;
                }
            }
        }
        SESSION_OPS.add("revoke", "ok", n as u64);
        tracing::info!(target: "larder::session", revoked = n, "sessions revoked");
        Ok(n)
    }
}

fn info(
    id: SessionRef,
    created_ms: u64,
    last_seen_ms: u64,
    identity: Option<&str>,
    current: Option<&SessionRef>,
) -> SessionInfo {
    let identity: Option<Identity> = identity.and_then(|m| serde_json::from_str(m).ok());
    let (user_agent, ip) = identity.map_or((None, None), |i| (i.user_agent, i.ip));
    SessionInfo {
        current: current == Some(&id),
        id,
        created_ms,
        last_seen_ms,
        user_agent,
        ip,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::Times;

    #[test]
    fn times_parse_four_numbers_and_nothing_else() {
        assert_eq!(
            Times::parse(b"1700000000000 1700000000500 1700086400000 1"),
            Some(Times {
                created: 1_700_000_000_000,
                touched: 1_700_000_000_500,
                absolute: 1_700_086_400_000,
                rotated: true,
            })
        );
        assert_eq!(Times::parse(b"1 2 3 0").map(|t| t.rotated), Some(false));
        for bad in [
            &b""[..],
            b"1 2 3",
            b"1 2 3 2",
            b"1 2 3 0 ",
            b"1 2 3 0 4",
            b" 1 2 3 0",
            b"1  2 3 0",
            b"1 2 -3 0",
            b"99999999999999999999999 2 3 0",
        ] {
            assert_eq!(
                Times::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
