//! The framework-free cache service.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use larder_core::keyspace::{Component, Keyspace};
use larder_core::last_hour::{Fields, MinuteCounts, SharedHour};
use larder_core::redis;
use larder_core::task::AbortOnDrop;
use larder_core::{metrics as m, Codec, Handle, Json, Module, Tenant};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::entry::{self, now_ms, Meta};
use crate::fill::Step;
use crate::flight::Flights;
use crate::keys::{safe_key, Keys, MarkerKey};
use crate::local::{self, DecodeMemo, Entry, LocalTier};
use crate::tracked::{track, Markers, Route, Tracked};

mod fill;
mod read;
mod write;

/// Keys per SCAN page and per UNLINK batch.
const SCAN_COUNT: usize = 1000;
/// The reserved module holding invalidation markers.
const SYSTEM_MODULE: &str = "_larder";

/// The result of a look-up. Not an error: a miss is an ordinary outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    /// A fresh value.
    Hit {
        /// The value.
        value: T,
        /// Its metadata.
        meta: Meta,
    },
    /// A value past its freshness, still inside its stale window.
    Stale {
        /// The value.
        value: T,
        /// Its metadata.
        meta: Meta,
    },
    /// Nothing usable is stored (or Redis is unavailable).
    Miss,
}

impl<T> Lookup<T> {
    /// The value, fresh or stale.
    pub fn into_value(self) -> Option<T> {
        match self {
            Self::Hit { value, .. } | Self::Stale { value, .. } => Some(value),
            Self::Miss => None,
        }
    }
}

/// Cache settings. Built from the handle's [`larder_core::Config`] by default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// Caching on or off (`CACHE_ENABLED`). Off: every call goes to the origin.
    pub enabled: bool,
    /// Default time to live (`CACHE_DEFAULT_TTL`).
    pub default_ttl: Duration,
    /// Time to live of not-found results (`CACHE_NEGATIVE_TTL`).
    pub negative_ttl: Duration,
    /// Per-module times to live (`CACHE_<MODULE>_TTL`).
    pub module_ttls: HashMap<String, Duration>,
    /// How long past its freshness an entry is kept for stale serving.
    pub stale_window: Duration,
    /// Bytes the in-process tier may hold (used when no Redis is configured).
    pub local_max_bytes: u64,
    /// An in-process tier in front of Redis (off by default).
    pub l1: Option<L1Settings>,
    /// Cross-instance stampede control: on a miss, the first instance takes a lease
    /// in Redis for this long and calls the origin; the others wait for its entry
    /// (up to the lease time) instead of calling the origin too. Off by default.
    pub lease: Option<Duration>,
    /// Know the invalidation markers through Redis's client-side tracking (on by
    /// default): a hit then reads its entry alone (`GET`) instead of the entry and
    /// both markers (`MGET` of three keys), on a connection of the cache's own,
    /// with the same coherence. Needs Redis 6 or later (RESP3 and `CLIENT
    /// TRACKING`); where the server refuses either, the cache reads the markers
    /// with each entry, as with this off.
    pub track_markers: bool,
}

/// The in-process tier in front of Redis: hits cost no round trip.
///
/// Instances stay coherent through a pub/sub channel: every invalidation publishes a
/// message and every instance drops what it names. While the subscription is down
/// (Redis unavailable), messages may be lost, so the tier is flushed whenever the
/// subscription (re)connects. Staleness is bounded by pub/sub delivery while
/// connected, and by `max_ttl` in any case.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct L1Settings {
    /// Bytes the tier may hold.
    pub max_bytes: u64,
    /// The longest an entry lives in the tier (never longer than in Redis).
    pub max_ttl: Duration,
    /// Modules that use the tier; `None` for all.
    pub modules: Option<Vec<String>>,
}

impl L1Settings {
    /// A tier of `max_bytes` whose entries live at most `max_ttl`, for all modules
    /// (turned on with [`Cache::with_l1`]).
    #[must_use]
    pub fn new(max_bytes: u64, max_ttl: Duration) -> Self {
        Self {
            max_bytes,
            max_ttl,
            modules: None,
        }
    }

    /// Restricts the tier to these modules.
    #[must_use]
    pub fn modules(mut self, modules: &[&str]) -> Self {
        self.modules = Some(modules.iter().map(|m| (*m).to_owned()).collect());
        self
    }
}

impl Settings {
    /// How long an invalidation marker lives in Redis: twice the longest life an
    /// entry of these settings has (its TTL and stale window), at least a minute.
    /// A marker is only needed while an entry stamped with it may live, so a
    /// tenant or module that stops being used leaves nothing behind; an entry
    /// written for longer (a route's own TTL, say) extends its markers.
    #[must_use]
    pub fn marker_ttl(&self) -> Duration {
        let longest = self
            .module_ttls
            .values()
            .copied()
            .chain([self.default_ttl, self.negative_ttl])
            .max()
            .unwrap_or_default();
        ((longest + self.stale_window) * 2).max(Duration::from_secs(60))
    }

    fn from_config(c: &larder_core::Config) -> Self {
        Self {
            enabled: c.cache_enabled,
            default_ttl: c.default_ttl,
            negative_ttl: c.negative_ttl,
            module_ttls: c.module_ttls.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            stale_window: Duration::ZERO,
            local_max_bytes: 64 * 1024 * 1024,
            l1: None,
            lease: None,
            track_markers: true,
        }
    }

    /// The time to live of `module`.
    #[must_use]
    pub fn ttl_for(&self, module: &Module) -> Duration {
        self.module_ttls
            .get(module.as_str())
            .copied()
            .unwrap_or(self.default_ttl)
    }
}

/// Counts since the cache was built.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Fresh hits.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// Stale serves.
    pub stale: u64,
    /// Faults (Redis errors, corrupt entries).
    pub errors: u64,
    /// Look-ups answered in degraded mode (Redis unavailable).
    pub degraded: u64,
    /// Invalidations this instance made that took effect: modules, tenants,
    /// patterns and single keys.
    pub invalidations: u64,
    /// hits / (hits + misses + stale), 0 when nothing was looked up.
    pub hit_ratio: f64,
    /// From Redis `INFO stats`: server-wide keyspace hits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_keyspace_hits: Option<u64>,
    /// From Redis `INFO stats`: server-wide keyspace misses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_keyspace_misses: Option<u64>,
    /// From Redis `INFO memory`: used memory in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_used_memory: Option<u64>,
    /// From `DBSIZE`: keys in the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_keys: Option<u64>,
    /// Entries in the in-process tier.
    pub local_entries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    errors: AtomicU64,
    degraded: AtomicU64,
    invalidations: AtomicU64,
}

/// How many modules, and tenants, one minute of [`Cache::last_hour`] lists at most
/// (more are counted together, as `(others)`).
const MODULES_PER_MINUTE: usize = 100;
const TENANTS_PER_MINUTE: usize = 1_000;

/// Look-ups per minute by module and by tenant, every instance's added up.
struct History {
    modules: SharedHour<LookupCounts>,
    tenants: SharedHour<LookupCounts>,
}

/// A module's or a tenant's look-ups in one minute ([`Cache::last_hour`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LookupCounts {
    /// Fresh hits.
    pub hits: u64,
    /// Stale serves.
    pub stale: u64,
    /// Misses.
    pub misses: u64,
}

impl LookupCounts {
    /// Look-ups counted.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.hits + self.stale + self.misses
    }

    /// `hits / total`, as [`Stats::hit_ratio`]; `None` without a look-up.
    #[must_use]
    pub fn hit_ratio(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        (self.total() > 0).then(|| self.hits as f64 / self.total() as f64)
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        self.hits += other.hits;
        self.stale += other.stale;
        self.misses += other.misses;
    }
}

impl Fields for LookupCounts {
    const NAMES: &'static [&'static str] = &["hits", "stale", "misses"];

    fn value(&self, i: usize) -> u64 {
        [self.hits, self.stale, self.misses]
            .get(i)
            .copied()
            .unwrap_or(0)
    }

    fn add_value(&mut self, i: usize, n: u64) {
        let field = match i {
            0 => &mut self.hits,
            1 => &mut self.stale,
            2 => &mut self.misses,
            _ => return,
        };
        *field += n;
    }
}

/// The look-ups of the last hour, per minute, by module and by tenant, every
/// instance's added up ([`Cache::last_hour`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LookupHistory {
    /// Each minute with a look-up, oldest first: counts by module.
    pub by_module: Vec<MinuteCounts<LookupCounts>>,
    /// Each minute with a look-up, oldest first: counts by tenant.
    pub by_tenant: Vec<MinuteCounts<LookupCounts>>,
}

/// Tenant marker, module marker and entry, as `MGET` returns them.
type MgetReply = (Option<String>, Option<String>, Option<Vec<u8>>);

/// The markers (`MGET`) and the entry (`GET`) of a tracked read.
type TrackedReply = ((Option<String>, Option<String>), Option<Vec<u8>>);

/// The markers a look-up judges its entry by.
enum Marks {
    /// Known through tracking.
    Known(Markers),
    /// Read with the entry (`None`: the marker does not exist).
    Read(Option<String>, Option<String>),
}

/// What the cross-instance lease says to do after a miss.
pub(crate) enum LeaseGate {
    /// Call the origin (holding the lease when a token is given).
    Proceed(Option<String>),
    /// Another instance filled the entry while we waited.
    Filled(Arc<Entry>),
}

/// What a raw look-up found.
#[derive(Debug)]
pub(crate) struct Found {
    /// The entry, if one is usable (fresh or stale).
    pub(crate) entry: Option<Arc<Entry>>,
    /// The markers a fill must be stamped with.
    seen: Seen,
    /// The time (ms) the entry was judged at: one clock read per look-up (0, and no
    /// clock read, when there is no entry to judge). Read by the HTTP flow.
    #[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
    pub(crate) now: u64,
}

/// The markers a look-up saw.
#[derive(Debug)]
enum Seen {
    /// Read from the store.
    Markers(String, String),
    /// Those of the entry found: an L1 hit is only served while they are current, and
    /// copying them is left to the rare fill that needs them.
    OfEntry,
    /// The store was unavailable: nothing is written back.
    Unavailable,
}

impl Found {
    /// The look-up's outcome as its span records it: `degraded` when the store was
    /// out (whatever the L1 tier still served), else `hit`, `stale` or `miss`.
    pub(crate) fn outcome(&self) -> &'static str {
        match &self.entry {
            _ if !self.reached_store() => "degraded",
            Some(entry) if entry.meta.is_fresh_at(self.now) => "hit",
            Some(_) => "stale",
            None => "miss",
        }
    }

    /// Whether the look-up reached its store (Redis, or the in-process store).
    pub(crate) fn reached_store(&self) -> bool {
        !matches!(self.seen, Seen::Unavailable)
    }

    /// The markers to stamp a fill with; `None` when the store was unavailable.
    pub(crate) fn into_markers(self) -> Option<(String, String)> {
        match self.seen {
            Seen::Markers(t, m) => Some((t, m)),
            Seen::OfEntry => self
                .entry
                .map(|e| (e.meta.tenant_marker.clone(), e.meta.module_marker.clone())),
            Seen::Unavailable => None,
        }
    }
}

/// A multi-tenant cache on the shared handle. Cheap to clone.
///
/// Every key lives in a tenant's module: `{prefix}:cache:tenant:{t}:{module}:{key}`.
/// Redis trouble never becomes an error here: look-ups degrade to misses (the origin
/// answers), writes are skipped, and the handle's breaker keeps calls from waiting.
#[derive(Clone)]
pub struct Cache<C: Codec = Json> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    handle: Handle,
    /// The cache's own keyspace (`{prefix}:cache:`): every key and sweep of the
    /// cache is built here, so no sweep reaches another component's keys.
    keyspace: Keyspace,
    codec: C,
    settings: Settings,
    local: Option<LocalTier>,
    l1: Option<LocalTier>,
    channel: String,
    _subscriber: Option<AbortOnDrop>,
    /// Markers known through client-side tracking (Redis configured and
    /// `track_markers` on).
    tracked: Option<Arc<Tracked>>,
    _tracker: Option<AbortOnDrop>,
    local_markers: Mutex<HashMap<String, u64>>,
    flights: Flights<Option<Bytes>>,
    counters: Counters,
    /// Look-ups per module and per tenant, minute by minute ([`Cache::last_hour`]).
    history: History,
    system: Module,
    write: redis::Script,
    release: redis::Script,
    random: std::collections::hash_map::RandomState,
    sequence: AtomicU64,
    decoded: DecodeMemo,
}

impl<C: Codec> std::fmt::Debug for Cache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("handle", &self.inner.handle)
            .field("settings", &self.inner.settings)
            .field("codec", &C::NAME)
            .finish_non_exhaustive()
    }
}

impl Cache<Json> {
    /// A JSON cache on `handle`, configured from the handle's config.
    #[must_use]
    pub fn new(handle: Handle) -> Self {
        let settings = Settings::from_config(handle.config());
        Self::with_codec(handle, Json, settings)
    }
}

impl<C: Codec> Cache<C> {
    /// A cache with an explicit codec and settings.
    #[must_use]
    pub fn with_codec(handle: Handle, codec: C, settings: Settings) -> Self {
        let local = if handle.is_redis_configured() {
            None
        } else {
            Some(LocalTier::new(settings.local_max_bytes, None))
        };
        let keyspace = handle.keyspace().component(Component::Cache);
        let system = Module::new(SYSTEM_MODULE)
            .unwrap_or_else(|_| unreachable!("the system module name is valid"));
        // The look-up counts' hashes: one slot, not a tenant's (no sweep reaches it).
        let system_scope = keyspace.global_scope(&system);
        let history = History {
            modules: SharedHour::new(
                &handle,
                format!("{}lookups:module:", system_scope.base()),
                MODULES_PER_MINUTE,
            ),
            tenants: SharedHour::new(
                &handle,
                format!("{}lookups:tenant:", system_scope.base()),
                TENANTS_PER_MINUTE,
            ),
        };
        let channel = format!("{}:{SYSTEM_MODULE}:invalidate", keyspace.root());
        let l1 = settings
            .l1
            .as_ref()
            .filter(|_| handle.is_redis_configured())
            .map(|l1| LocalTier::new(l1.max_bytes, Some(l1.max_ttl)));
        let subscriber = l1.as_ref().and_then(|tier| {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            Some(AbortOnDrop(runtime.spawn(subscribe(
                handle.clone(),
                channel.clone(),
                tier.clone(),
            ))))
        });
        // Not on a cluster: a tracking connection is one node's, and a cache's
        // tenants live on every node. There a look-up reads the markers with the
        // entry (one `MGET`: a tenant's keys share a slot).
        let tracked =
            (handle.is_redis_configured() && settings.track_markers && !handle.is_cluster())
                .then(|| tokio::runtime::Handle::try_current().ok())
                .flatten()
                .map(|runtime| {
                    let tracked = Arc::new(Tracked::new(SYSTEM_MODULE));
                    let task = runtime.spawn(track(handle.clone(), Arc::downgrade(&tracked)));
                    (tracked, AbortOnDrop(task))
                });
        let (tracked, tracker) = tracked.unzip();
        Self {
            inner: Arc::new(Inner {
                handle,
                keyspace,
                codec,
                local,
                l1,
                channel,
                _subscriber: subscriber,
                tracked,
                _tracker: tracker,
                local_markers: Mutex::default(),
                flights: Flights::default(),
                counters: Counters::default(),
                history,
                system,
                write: redis::Script::new(include_str!("../lua/write.lua")),
                release: redis::Script::new(include_str!("../lua/release.lua")),
                random: std::collections::hash_map::RandomState::new(),
                sequence: AtomicU64::new(0),
                decoded: DecodeMemo::new(),
                settings,
            }),
        }
    }

    /// Changes settings (for example the stale window) on a new cache value.
    #[must_use]
    pub fn with_settings(self, settings: Settings) -> Self {
        Self::with_codec(
            self.inner.handle.clone(),
            self.inner.codec.clone(),
            settings,
        )
    }

    /// Puts an in-process (L1) tier in front of Redis, keeping the other settings
    /// (the same as [`with_settings`](Self::with_settings) with `l1` set).
    #[must_use]
    pub fn with_l1(self, l1: L1Settings) -> Self {
        let mut settings = self.inner.settings.clone();
        settings.l1 = Some(l1);
        self.with_settings(settings)
    }

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The shared handle.
    #[must_use]
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// The time to live of `module`.
    #[must_use]
    pub fn ttl_for(&self, module: &Module) -> Duration {
        self.inner.settings.ttl_for(module)
    }

    /// Reads a value. Fresh and stale values are returned; corrupt entries are deleted
    /// and read as a miss; Redis trouble reads as a miss.
    pub async fn lookup<T: DeserializeOwned>(
        &self,
        tenant: &Tenant,
        module: &Module,
        key: &str,
    ) -> Lookup<T> {
        if !self.inner.settings.enabled {
            return Lookup::Miss;
        }
        let keys = self.keys(tenant, module, key);
        let found = self.lookup_raw(tenant, &keys).await;
        match found.entry {
            Some(entry) => match self.decode::<T>(&keys, &entry.payload) {
                Some(value) if entry.meta.is_fresh_at(now_ms()) => Lookup::Hit {
                    value,
                    meta: entry.meta.clone(),
                },
                Some(value) => Lookup::Stale {
                    value,
                    meta: entry.meta.clone(),
                },
                None => Lookup::Miss,
            },
            None => Lookup::Miss,
        }
    }

    /// Reads a fresh value (stale values count as absent).
    pub async fn get<T: DeserializeOwned>(
        &self,
        tenant: &Tenant,
        module: &Module,
        key: &str,
    ) -> Option<T> {
        match self.lookup(tenant, module, key).await {
            Lookup::Hit { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Stores a value for `ttl` (the module's TTL when `None`). Returns whether it was
    /// stored; `false` when Redis is unavailable or the value does not encode.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        tenant: &Tenant,
        module: &Module,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> bool {
        if !self.inner.settings.enabled {
            return false;
        }
        let keys = self.keys(tenant, module, key);
        let Some(payload) = self.encode(&keys, value) else {
            return false;
        };
        let markers = self.current_markers(&keys).await;
        let Some(markers) = markers else {
            return false;
        };
        let ttl = ttl.unwrap_or_else(|| self.ttl_for(module));
        self.store_raw(&keys, markers, ttl, payload).await.is_some()
    }

    /// Cache-aside: returns the cached value, or calls `origin` once (per process, for
    /// concurrent callers of one key), stores its value for the module's TTL and
    /// returns it. Origin errors are returned and not cached; while the entry is stale
    /// and the origin fails, the stale value is served (stale-if-error).
    ///
    /// # Errors
    /// Only the origin's.
    pub async fn get_or_set<T, E, F, Fut>(
        &self,
        tenant: &Tenant,
        module: &Module,
        key: &str,
        origin: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let ttl = self.ttl_for(module);
        self.memoize(tenant, module, key, origin, |_| ttl).await
    }

    /// As [`get_or_set`](Self::get_or_set), caching `None` for the negative TTL
    /// (`CACHE_NEGATIVE_TTL`) so repeated look-ups of a missing row stay cheap.
    ///
    /// # Errors
    /// Only the origin's.
    pub async fn get_or_set_opt<T, E, F, Fut>(
        &self,
        tenant: &Tenant,
        module: &Module,
        key: &str,
        origin: F,
    ) -> Result<Option<T>, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let (ttl, negative) = (self.ttl_for(module), self.inner.settings.negative_ttl);
        self.memoize(tenant, module, key, origin, |v: &Option<T>| {
            if v.is_some() {
                ttl
            } else {
                negative
            }
        })
        .await
    }

    async fn memoize<T, E, F, Fut>(
        &self,
        tenant: &Tenant,
        module: &Module,
        key: &str,
        origin: F,
        ttl_of: impl Fn(&T) -> Duration,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if !self.inner.settings.enabled {
            return origin().await;
        }
        let keys = self.keys(tenant, module, key);
        let found = self.lookup_raw(tenant, &keys).await;
        let mut stale = None;
        if let Some(entry) = &found.entry {
            if let Some(value) = self.decode::<T>(&keys, &entry.payload) {
                if entry.meta.is_fresh_at(now_ms()) {
                    return Ok(value);
                }
                stale = Some(value);
            }
        }
        // No stale-while-revalidate here: the origin is borrowed, so it cannot run
        // after this call returns.
        let decode = |payload: &Bytes| self.decode::<T>(&keys, payload);
        let mut ticket = match self.fill(&keys, found, stale, false, decode).await {
            Step::Filled(value) | Step::Stale(value, _) => return Ok(value),
            Step::Fetch(ticket) => ticket,
        };
        match origin().await {
            Ok(value) => {
                let payload = self.encode(&keys, &value);
                let fill = payload.map(|payload| (payload, ttl_of(&value)));
                self.finish(&keys, ticket, fill).await;
                Ok(value)
            }
            Err(e) => {
                let stale = ticket.take_stale();
                self.finish(&keys, ticket, None).await;
                match stale {
                    Some(value) => {
                        self.count_stale(&keys);
                        tracing::debug!(target: "larder::cache", module = %keys.module, key = %keys.entry, "origin failed: serving stale");
                        Ok(value)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// The look-ups of the last hour, per minute, by module and by tenant, of
    /// every instance that shares this Redis (each adds its counts every
    /// [`FLUSH_EVERY`](larder_core::last_hour::FLUSH_EVERY); this one's are
    /// current): each one's hit ratio over time, for the dashboard. In process,
    /// this instance's.
    ///
    /// # Errors
    /// Redis's error (the hour's hashes are read in one pipeline per view).
    pub async fn last_hour(&self) -> Result<LookupHistory, larder_core::Error> {
        let now = now_ms();
        let history = &self.inner.history;
        let (by_module, by_tenant) = futures_util::future::try_join(
            history.modules.report(now),
            history.tenants.report(now),
        )
        .await?;
        Ok(LookupHistory {
            by_module,
            by_tenant,
        })
    }

    /// Adds this instance's look-ups to the shared [`last_hour`](Self::last_hour)
    /// now (it also happens every
    /// [`FLUSH_EVERY`](larder_core::last_hour::FLUSH_EVERY)).
    ///
    /// # Errors
    /// Redis's error.
    pub async fn share_last_hour(&self) -> Result<(), larder_core::Error> {
        let history = &self.inner.history;
        futures_util::future::try_join(history.modules.flush(), history.tenants.flush()).await?;
        Ok(())
    }

    /// Counts one look-up of `keys` in [`last_hour`](Self::last_hour).
    fn remember(&self, keys: &Keys, now: u64, outcome: fn(&mut LookupCounts)) {
        let history = &self.inner.history;
        history
            .modules
            .count(&keys.module.to_shared(), now, outcome);
        history
            .tenants
            .count(&keys.tenant.to_shared(), now, outcome);
    }

    /// Counters, and Redis's own figures when it answers.
    pub async fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let mut s = Stats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            degraded: c.degraded.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            local_entries: self.inner.local.as_ref().map_or(0, LocalTier::len),
            ..Stats::default()
        };
        let looked = s.hits + s.misses + s.stale;
        if looked > 0 {
            #[allow(clippy::cast_precision_loss)]
            {
                s.hit_ratio = s.hits as f64 / looked as f64;
            }
        }
        if self.inner.handle.is_redis_configured() {
            // Each primary's figures, summed (one node, or every primary of a cluster).
            let handle = &self.inner.handle;
            let mut info = redis::cmd("INFO");
            info.arg("stats").arg("memory");
            let infos: Result<Vec<String>, _> =
                handle.query_each_primary("cache_stats", &info).await;
            let keys: Result<Vec<u64>, _> = handle
                .query_each_primary("cache_stats", &redis::cmd("DBSIZE"))
                .await;
            if let (Ok(infos), Ok(keys)) = (infos, keys) {
                let sum =
                    |name: &str| -> Option<u64> { infos.iter().map(|r| info_field(r, name)).sum() };
                s.redis_keyspace_hits = sum("keyspace_hits");
                s.redis_keyspace_misses = sum("keyspace_misses");
                s.redis_used_memory = sum("used_memory");
                s.redis_keys = Some(keys.iter().sum());
            }
        }
        s
    }

    // ---- internals shared with the response cache ----

    pub(crate) fn keys(&self, tenant: &Tenant, module: &Module, key: &str) -> Keys {
        let ks = &self.inner.keyspace;
        let system = &self.inner.system;
        let safe = safe_key(key);
        let built = |m: &Module, k: &str| {
            ks.key(tenant, m, k)
                .unwrap_or_else(|_| unreachable!("safe_key and literals are valid key parts"))
        };
        let lease = if self.inner.settings.lease.is_some() {
            built(system, &format!("lease:{module}:{safe}"))
        } else {
            String::new()
        };
        let entry = built(module, &safe);
        // `{prefix}:cache:tenant:{tenant}:`, which the marker keys share with the entry's.
        let tenant_base = entry.len() - module.as_str().len() - safe.len() - 1;
        Keys {
            tenant: tenant.clone(),
            module: module.clone(),
            entry,
            tenant_base,
            markers: OnceLock::new(),
            lease,
        }
    }

    /// `keys`' tenant marker key (and with `module`, its module marker key) as a
    /// command argument written straight into the command: the look-up of a hit builds
    /// no key string for them.
    fn marker_arg<'k>(&'k self, keys: &'k Keys, module: bool) -> MarkerKey<'k> {
        MarkerKey {
            base: keys.tenant_base(),
            system: self.inner.system.as_str(),
            module: module.then(|| keys.module.as_str()),
        }
    }

    /// The keys of `keys`' tenant marker and module marker.
    fn marker_keys<'k>(&self, keys: &'k Keys) -> (&'k str, &'k str) {
        let (module_marker, tenant_len) = keys.markers.get_or_init(|| {
            (
                self.marker_arg(keys, true).to_key(),
                self.marker_arg(keys, false).len(),
            )
        });
        (&module_marker[..*tenant_len], module_marker)
    }

    /// Whether a miss after the look-up `found` takes the cross-instance lease: when
    /// leases are on and the look-up reached Redis, where the lease lives (with Redis
    /// out, asking for it would only wait out another deadline; the in-process store
    /// has one instance).
    pub(crate) fn leases(&self, found: &Found) -> bool {
        self.inner.settings.lease.is_some() && self.inner.local.is_none() && found.reached_store()
    }

    /// On a miss that [`leases`](Self::leases): takes the cross-instance lease, or
    /// waits for the instance that holds it to fill the entry.
    pub(crate) async fn lease_or_wait(&self, keys: &Keys) -> LeaseGate {
        let Some(ttl) = self.inner.settings.lease else {
            return LeaseGate::Proceed(None);
        };
        let token = self.fresh_marker();
        let ms = larder_core::time::millis(ttl).max(1);
        let taken: Result<Option<String>, _> = self
            .inner
            .handle
            .query(
                "cache_lease",
                redis::cmd("SET")
                    .arg(&keys.lease)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms),
            )
            .await;
        match taken {
            Ok(Some(_)) => return LeaseGate::Proceed(Some(token)),
            Ok(None) => {}
            Err(_) => return LeaseGate::Proceed(None),
        }
        let deadline = tokio::time::Instant::now() + ttl;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let found = self.read(keys, false).await;
            if !found.reached_store() {
                break;
            }
            if let Some(entry) = found.entry.filter(|e| e.meta.is_fresh_at(now_ms())) {
                tracing::debug!(target: "larder::cache", module = %keys.module, key = %keys.entry, "filled by the lease holder");
                return LeaseGate::Filled(entry);
            }
        }
        LeaseGate::Proceed(None)
    }

    /// Releases a lease if it is still ours.
    pub(crate) async fn release_lease(&self, keys: &Keys, token: &str) {
        let mut inv = self.inner.release.prepare_invoke();
        inv.key(&keys.lease).arg(token);
        let _: Result<i64, _> = self.inner.handle.script("cache_lease_release", &inv).await;
    }

    pub(crate) fn flights(&self) -> &Flights<Option<Bytes>> {
        &self.inner.flights
    }

    fn l1_for(&self, module: &Module) -> Option<&LocalTier> {
        let l1 = self.inner.l1.as_ref()?;
        match self.inner.settings.l1.as_ref()?.modules.as_ref() {
            Some(list) if !list.iter().any(|m| m == module.as_str()) => None,
            _ => Some(l1),
        }
    }

    fn fresh_marker(&self) -> String {
        let mut h = self.inner.random.build_hasher();
        h.write_u64(self.inner.sequence.fetch_add(1, Ordering::Relaxed));
        h.write_u64(now_ms());
        format!("{:x}{:016x}", now_ms(), h.finish())
    }

    pub(crate) fn encode<T: Serialize + ?Sized>(&self, keys: &Keys, value: &T) -> Option<Bytes> {
        match self.inner.codec.encode(value) {
            Ok(bytes) => Some(Bytes::from(bytes)),
            Err(e) => {
                self.count_error(&keys.module, "encode");
                tracing::warn!(target: "larder::cache", module = %keys.module, key = %keys.entry, error = %e, "value not cached: it does not encode");
                None
            }
        }
    }

    fn decode<T: DeserializeOwned>(&self, keys: &Keys, payload: &[u8]) -> Option<T> {
        match self.inner.codec.decode(payload) {
            Ok(v) => Some(v),
            Err(e) => {
                // A value of another shape (a deploy changed the type): drop it.
                let this = self.clone();
                let keys = keys.clone();
                let reason = e.to_string();
                tokio::spawn(async move { this.corrupt(&keys, &reason).await });
                None
            }
        }
    }

    pub(crate) async fn corrupt(&self, keys: &Keys, reason: &str) {
        self.count_error(&keys.module, "decode");
        tracing::warn!(target: "larder::cache", module = %keys.module, key = %keys.entry, reason, "corrupt cache entry deleted");
        if let Some(local) = &self.inner.local {
            local.remove(&keys.entry);
            return;
        }
        self.unlink_one(&keys.entry).await;
    }

    fn count_lookup(&self, keys: &Keys, found: Option<&Meta>, now: u64) {
        let c = &self.inner.counters;
        let outcome = match found {
            Some(meta) if meta.is_fresh_at(now) => {
                c.hits.fetch_add(1, Ordering::Relaxed);
                self.remember(keys, now, |l| l.hits += 1);
                "hit"
            }
            Some(_) => {
                c.stale.fetch_add(1, Ordering::Relaxed);
                self.remember(keys, now, |l| l.stale += 1);
                "stale"
            }
            None => {
                c.misses.fetch_add(1, Ordering::Relaxed);
                self.remember(keys, now, |l| l.misses += 1);
                "miss"
            }
        };
        LOOKUPS.increment(keys.module.as_str(), outcome);
        tracing::debug!(target: "larder::cache", module = %keys.module, key = %keys.entry, outcome, "cache lookup");
    }

    fn count_stale(&self, keys: &Keys) {
        self.inner.counters.stale.fetch_add(1, Ordering::Relaxed);
        self.remember(keys, now_ms(), |l| l.stale += 1);
        LOOKUPS.increment(keys.module.as_str(), "stale");
    }

    /// Counts an invalidation in [`Stats::invalidations`] if it took effect, and
    /// passes `ok` on.
    pub(crate) fn count_invalidation(&self, ok: bool) -> bool {
        if ok {
            self.inner
                .counters
                .invalidations
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    fn count_error(&self, module: &Module, kind: &'static str) {
        self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
        ERRORS.increment(module.as_str(), kind);
    }
}

/// Whether an entry's marker is the in-process store's marker `value` (compared
/// without formatting `value`).
fn marker_is(marker: &str, value: u64) -> bool {
    larder_core::codec::parse_u64(marker.as_bytes()) == Some(value) && !marker.starts_with('0')
        || marker == "0" && value == 0
}

/// Look-ups by module and outcome, keyed once per module.
static LOOKUPS: m::Family = m::Family::new(
    m::CACHE_REQUESTS,
    "module",
    "outcome",
    &["hit", "miss", "stale", "bypass"],
);
/// Faults by module and kind, keyed once per module.
static ERRORS: m::Family = m::Family::new(m::CACHE_ERRORS, "module", "kind", &["decode", "encode"]);

/// Keeps the L1 tier coherent: applies invalidation messages, and flushes the tier
/// whenever the subscription starts or ends (messages may have been missed).
async fn subscribe(handle: Handle, channel: String, tier: LocalTier) {
    use futures_util::StreamExt;
    loop {
        if let Ok(mut pubsub) = handle.pubsub().await {
            if pubsub.subscribe(&channel).await.is_ok() {
                tier.clear();
                tracing::debug!(target: "larder::cache", channel = %channel, "L1 tier subscribed to invalidations");
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    match msg.get_payload::<String>() {
                        Ok(text) => tier.apply(&text),
                        Err(_) => tier.clear(),
                    }
                }
                tier.clear();
                tracing::debug!(target: "larder::cache", "L1 tier lost its subscription: flushed");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A key part fit for the keyspace: short printable keys stay readable; long ones,
/// ones with control characters, and ones that could pass for a hashed key are
/// replaced by a 128-bit hash.
fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_markers_compare_as_their_decimal_text() {
        for value in [0, 1, 7, 10, 42, u64::MAX] {
            assert!(marker_is(&value.to_string(), value), "{value}");
            for other in [
                "",
                "-",
                "00",
                "07",
                "+7",
                " 7",
                "7 ",
                "abc",
                "18446744073709551616",
            ] {
                assert_eq!(
                    marker_is(other, value),
                    other == value.to_string(),
                    "{other:?} vs {value}"
                );
            }
            assert!(!marker_is(&(value ^ 1).to_string(), value));
        }
    }

    #[test]
    fn marker_keys_are_the_keyspace_keys_of_gen_and_gen_module() {
        let cache = Cache::new(Handle::in_process());
        let ks = cache.handle().keyspace().component(Component::Cache);
        let system = Module::new("_larder").unwrap();
        for (t, m) in [
            ("1", "balance"),
            ("acme", "x"),
            ("t-9", "long_module_name_42"),
        ] {
            let (tenant, module) = (Tenant::new(t).unwrap(), Module::new(m).unwrap());
            let keys = cache.keys(&tenant, &module, "GET:/a");
            let (tenant_marker, module_marker) = (
                ks.key(&tenant, &system, "gen").unwrap(),
                ks.key(&tenant, &system, &format!("gen:{m}")).unwrap(),
            );
            assert_eq!(
                cache.marker_keys(&keys),
                (tenant_marker.as_str(), module_marker.as_str())
            );
            // The look-up's arguments, written straight into the command, are the
            // same keys.
            for (arg, key) in [
                (cache.marker_arg(&keys, false), &tenant_marker),
                (cache.marker_arg(&keys, true), &module_marker),
            ] {
                assert_eq!(arg.len(), key.len());
                assert_eq!(
                    redis::ToRedisArgs::to_redis_args(&arg),
                    vec![key.as_bytes().to_vec()]
                );
            }
        }
    }

    #[test]
    fn info_fields_parse() {
        let info = "# Stats\r\nkeyspace_hits:12\r\nkeyspace_misses:3\r\n";
        assert_eq!(info_field(info, "keyspace_hits"), Some(12));
        assert_eq!(info_field(info, "keyspace_misses"), Some(3));
        assert_eq!(info_field(info, "nope"), None);
    }
}
