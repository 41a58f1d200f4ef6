//! The limiter: one Redis round trip decides every quota of every policy that applies
//! to a request, all or nothing (on Redis Cluster, one per slot those quotas'
//! keys fall in, still all or nothing).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder_core::keyspace::Component;
use larder_core::metrics as m;
use larder_core::redis;
use larder_core::{Handle, Module, Scope};

use crate::activity::{Activity, Decisions};
use crate::policy::{safe_part, FailMode, Policy, Slot};
use crate::quota::Quota;

/// One policy to apply to one request: the policy, what the request is counted by
/// (from [`Policy::key_of`], or any string for non-HTTP uses), and its cost.
#[derive(Debug, Clone)]
pub struct Check {
    pub(crate) policy: Policy,
    pub(crate) key: String,
    pub(crate) cost: u32,
}

impl Check {
    /// Counts one unit against `policy` for `key` (`"user:42"`, `"task:send_report"`).
    /// A key that could not be a readable Redis key part is hashed.
    #[must_use]
    pub fn new(policy: &Policy, key: &str) -> Self {
        let key = if key.is_empty() || key.len() > 128 || key.chars().any(char::is_control) {
            safe_part("k", key)
        } else {
            key.to_owned()
        };
        Self {
            policy: policy.clone(),
            key,
            cost: 1,
        }
    }

    /// This request costs `n` units (at least 1).
    #[must_use]
    pub fn cost(mut self, n: u32) -> Self {
        self.cost = n.max(1);
        self
    }

    /// A check whose key is already a safe key part (from [`Policy::key_of`]).
    pub(crate) fn from_safe_key(policy: &Policy, key: String, cost: u32) -> Self {
        Self {
            policy: policy.clone(),
            key,
            cost: cost.max(1),
        }
    }
}

/// Where a quota's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The Redis script (the shared, exact answer).
    Redis,
    /// The in-process record of a key known to be over its limit: no round trip.
    LocalBlock,
    /// Redis was unavailable; the in-process `governor` tier answered.
    Local,
    /// Redis was unavailable; the policy fails open.
    FailOpen,
    /// Redis was unavailable; the policy fails closed.
    FailClosed,
}

/// The state of one quota after a decision.
#[derive(Debug, Clone)]
pub struct QuotaState {
    /// The policy's name.
    pub policy: Arc<str>,
    /// The quota's name in `RateLimit-Policy` (the policy's name, numbered when the
    /// policy has several quotas).
    pub name: Arc<str>,
    /// The quota.
    pub quota: Quota,
    /// Whether this quota admitted the request.
    pub allowed: bool,
    /// Requests of cost 1 still admissible now.
    pub remaining: u64,
    /// Allowed: until the quota is whole again. Rejected: until this request would be
    /// admitted.
    pub reset: Duration,
    /// Whether the policy is in shadow mode.
    pub shadow: bool,
    /// Where the answer came from.
    pub source: Source,
}

/// Why a request was rejected.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DenyReason {
    /// A quota is exhausted.
    Limited {
        /// The policy.
        policy: Arc<str>,
        /// The exhausted quota.
        quota: Quota,
    },
    /// The request costs more than a quota's burst: it can never be admitted.
    CostExceedsBurst {
        /// The policy.
        policy: Arc<str>,
        /// The quota.
        quota: Quota,
        /// The request's cost.
        cost: u32,
    },
    /// Redis is unavailable and the policy fails closed.
    Unavailable {
        /// The policy.
        policy: Arc<str>,
        /// The status its rejection carries.
        status: u16,
    },
}

impl DenyReason {
    /// The policy that rejected the request.
    #[must_use]
    pub fn policy(&self) -> &str {
        match self {
            Self::Limited { policy, .. }
            | Self::CostExceedsBurst { policy, .. }
            | Self::Unavailable { policy, .. } => policy,
        }
    }
}

/// What the limiter decided. Not an error: a rejection is a value.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Admitted (and charged to every quota).
    Allow {
        /// Each quota's state.
        quotas: Vec<QuotaState>,
    },
    /// Rejected; no quota was charged.
    Deny {
        /// Why.
        reason: DenyReason,
        /// When the request would be admitted (never earlier than any rejecting
        /// quota's reset).
        retry_after: Duration,
        /// Each quota's state.
        quotas: Vec<QuotaState>,
    },
}

impl Decision {
    /// The decision as its span records it: `limited`, `unavailable` (rejected by a
    /// fail-closed policy while Redis is out), `degraded` (admitted without Redis's
    /// answer) or `allowed`.
    fn outcome(&self) -> &'static str {
        match self {
            Self::Deny {
                reason: DenyReason::Unavailable { .. },
                ..
            } => "unavailable",
            Self::Deny { .. } => "limited",
            Self::Allow { quotas }
                if quotas
                    .iter()
                    .any(|q| !matches!(q.source, Source::Redis | Source::LocalBlock)) =>
            {
                "degraded"
            }
            Self::Allow { .. } => "allowed",
        }
    }

    /// Whether the request was admitted.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    /// Each quota's state.
    #[must_use]
    pub fn quotas(&self) -> &[QuotaState] {
        match self {
            Self::Allow { quotas } | Self::Deny { quotas, .. } => quotas,
        }
    }
}

/// Evaluates policies: GCRA in one Lua script (by SHA, one round trip however many
/// quotas apply), a local record of keys known to be over their limit, and the
/// policies' fail modes while Redis is unavailable.
///
/// Cheap to clone; build one per app and share it.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Handle,
    scope: Scope,
    /// The module the state is kept in, for spans.
    module: Module,
    /// What this limiter rejected in the last hour (shared by its copies).
    decisions: Arc<Decisions>,
    /// Whether a quota's key carries its counted key as a cluster hash tag
    /// (`LARDER_HASH_TAG`).
    tagged: bool,
    script: redis::Script,
    release: redis::Script,
    blocked: Option<Blocked>,
}

/// Keys known to be over their limit, each until a time; and the latest of those
/// times, so that when it has passed (or nothing was ever blocked, the common case)
/// the pre-check costs one atomic read instead of a cache look-up.
struct Blocked {
    /// Tells this set from any other in the per-thread memo of the last hit.
    id: u64,
    keys: moka::sync::Cache<String, Instant>,
    epoch: Instant,
    /// Milliseconds after `epoch` at which every block has ended.
    all_end_ms: std::sync::atomic::AtomicU64,
}

/// The last blocked key a thread found, with its set's id and the block's end: a
/// flood from one client is answered from here without a cache look-up. Nothing
/// lifts a block early: a key is inserted again only after a Redis answer for it,
/// which comes once the cache has lost the key (evicted at capacity), and that
/// answer ends the block at the same time or later (no request of that key can be
/// admitted meanwhile), give or take a round trip's clock skew. So the memo
/// answers as the cache would, until the end it keeps.
struct LastBlocked {
    set: u64,
    key: String,
    until: Instant,
}

thread_local! {
    static LAST_BLOCKED: std::cell::RefCell<Option<LastBlocked>> = const { std::cell::RefCell::new(None) };
}

static NEXT_BLOCKED_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Blocked {
    fn new() -> Self {
        Self {
            id: NEXT_BLOCKED_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            keys: moka::sync::Cache::builder()
                .max_capacity(BLOCKED_CAPACITY)
                .expire_after(UntilExpiry)
                .build(),
            epoch: Instant::now(),
            all_end_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn since_epoch_ms(&self, at: Instant) -> u64 {
        larder_core::time::millis(at.saturating_duration_since(self.epoch))
    }

    fn insert(&self, key: String, until: Instant) {
        // Rounded up: the check below must never skip a key that is still blocked.
        let end = self.since_epoch_ms(until).saturating_add(1);
        self.all_end_ms
            .fetch_max(end, std::sync::atomic::Ordering::Relaxed);
        self.keys.insert(key, until);
    }

    /// Whether any block may last until `now` (false once every block has ended).
    fn any_until(&self, now: Instant) -> bool {
        self.since_epoch_ms(now) < self.all_end_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn get(&self, key: &str, now: Instant) -> Option<Instant> {
        if !self.any_until(now) {
            return None;
        }
        let remembered = LAST_BLOCKED.with(|last| {
            last.borrow()
                .as_ref()
                .filter(|l| l.set == self.id && l.until > now && l.key == key)
                .map(|l| l.until)
        });
        if remembered.is_some() {
            return remembered;
        }
        let found = self.keys.get(key).filter(|until| *until > now)?;
        LAST_BLOCKED.with(|last| match &mut *last.borrow_mut() {
            Some(l) => {
                l.set = self.id;
                l.key.clear();
                l.key.push_str(key);
                l.until = found;
            }
            none => {
                *none = Some(LastBlocked {
                    set: self.id,
                    key: key.to_owned(),
                    until: found,
                });
            }
        });
        Some(found)
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("scope", &self.inner.scope)
            .field("local_precheck", &self.inner.blocked.is_some())
            .finish_non_exhaustive()
    }
}

struct UntilExpiry;

impl moka::Expiry<String, Instant> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        until: &Instant,
        now: Instant,
    ) -> Option<Duration> {
        Some(until.saturating_duration_since(now))
    }
}

/// One quota of one check.
struct Item<'a> {
    check: &'a Check,
    slot: usize,
    key: &'a str,
}

/// Keys the local pre-check remembers at most.
const BLOCKED_CAPACITY: u64 = 100_000;

impl RateLimiter {
    /// A limiter on `handle`, keeping its state in the rate-limit component's global
    /// module `ratelimit`: `{prefix}:ratelimit:global:ratelimit:{policy}:{quota}:{{key}}`.
    /// The counted key is the hash tag, so on Redis Cluster the state spreads over
    /// the slots by key (no slot that every limited request hits), and the
    /// policies of a request that count the same thing (every per-IP policy)
    /// share a slot: one script, one round trip. Policies counting different
    /// things are decided per slot, all or nothing ([`check`](Self::check)).
    #[must_use]
    pub fn new(handle: Handle) -> Self {
        let module = Module::new("ratelimit").unwrap_or_else(|_| unreachable!("valid literal"));
        Self::with_module(handle, &module)
    }

    /// A limiter keeping its state in another global module (separate limiters).
    #[must_use]
    pub fn with_module(handle: Handle, module: &Module) -> Self {
        // No hash tag on the module: each quota's key is tagged with what it counts
        // (`…:{192.0.2.7}`), so state spreads over a cluster's slots by key, and a
        // request's policies that count the same thing share a slot.
        let keyspace = handle.keyspace();
        let tagged = keyspace.hash_tag();
        let scope = keyspace
            .component(Component::RateLimit)
            .with_hash_tag(false)
            .global_scope(module);
        // The decisions' minute hashes: one slot (the module's tag), read together.
        let activity = keyspace
            .component(Component::RateLimit)
            .global_scope(module);
        let decisions = Arc::new(Decisions::new(
            &handle,
            format!("{}activity:", activity.base()),
        ));
        Self {
            inner: Arc::new(Inner {
                handle,
                scope,
                module: module.clone(),
                decisions,
                tagged,
                script: redis::Script::new(include_str!("../lua/gcra.lua")),
                release: redis::Script::new(include_str!("../lua/release.lua")),
                blocked: Some(Blocked::new()),
            }),
        }
    }

    /// Turns the local pre-check on or off (default on): a key Redis reported over
    /// its limit until T is rejected in-process, with no round trip, until T.
    #[must_use]
    pub fn local_precheck(self, on: bool) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                handle: inner.handle.clone(),
                scope: inner.scope.clone(),
                module: inner.module.clone(),
                decisions: Arc::clone(&inner.decisions),
                tagged: inner.tagged,
                script: inner.script.clone(),
                release: inner.release.clone(),
                blocked: on.then(Blocked::new),
            }),
        }
    }

    /// The handle this limiter runs on.
    #[must_use]
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// The Redis key of a policy's quota for `key` (for tests and tools).
    #[must_use]
    pub fn redis_key(&self, policy: &Policy, quota_index: usize, key: &str) -> Option<String> {
        let slot = policy.slots.get(quota_index)?;
        Some(self.full_key(&slot.prefix, &Check::new(policy, key).key))
    }

    /// `{scope}{policy}:{quota}:{{key}}` (the key in braces: its cluster hash
    /// tag). Both parts are safe by construction: the prefix from a validated policy
    /// name, the key from [`Check::new`] or [`Policy::key_of`], which hash anything
    /// that could not be a key part.
    fn full_key(&self, prefix: &str, key: &str) -> String {
        let base = self.inner.scope.base();
        let mut s = String::with_capacity(base.len() + prefix.len() + key.len() + 3);
        s.push_str(base);
        s.push_str(prefix);
        s.push(':');
        if self.inner.tagged {
            s.push('{');
            s.push_str(key);
            s.push('}');
        } else {
            s.push_str(key);
        }
        s
    }

    /// Decides `checks` together: admitted only if every enforced quota admits the
    /// request, and then every quota is charged; otherwise none is.
    ///
    /// On Redis Cluster, quotas in different slots are each decided by one script
    /// on their slot, at the same time; a slot that admits reserves its charge,
    /// and when another slot rejects, the reservations are refunded. The cost: a
    /// round trip per slot (in parallel), one more per reserving slot on a
    /// rejection, and a concurrent request may see a reserved share as used until
    /// it is refunded.
    ///
    /// Never fails: while Redis is unavailable each policy applies its [`FailMode`]
    /// (the local tier is per instance and checks policies one after another, so
    /// there a rejection may already have charged earlier policies).
    pub async fn check(&self, checks: &[Check]) -> Decision {
        self.check_keyed(checks, &self.keys_of(checks)).await
    }

    /// [`check`](Self::check) with the keys already built by
    /// [`keys_of`](Self::keys_of).
    pub(crate) async fn check_keyed(&self, checks: &[Check], keys: &[String]) -> Decision {
        match self.check_locally(checks, keys) {
            Some(denied) => denied,
            None => self.check_remotely(checks, keys).await,
        }
    }

    /// The Redis key of each quota of `checks`, in order (checks, then their quotas).
    pub(crate) fn keys_of(&self, checks: &[Check]) -> Vec<String> {
        let mut keys = Vec::with_capacity(checks.len());
        for check in checks {
            for s in check.policy.slots.iter() {
                keys.push(self.full_key(&s.prefix, &check.key));
            }
        }
        keys
    }

    /// Each quota of `checks` with its key from [`keys_of`](Self::keys_of).
    fn items<'a>(checks: &'a [Check], keys: &'a [String]) -> impl Iterator<Item = Item<'a>> {
        checks
            .iter()
            .flat_map(|check| (0..check.policy.slots.len()).map(move |slot| (check, slot)))
            .zip(keys)
            .map(|((check, slot), key)| Item { check, slot, key })
    }

    /// The local pre-check alone (no round trip): `Some` when a quota of `checks` is
    /// known to be over its limit. `keys` are [`keys_of`](Self::keys_of)`(checks)`.
    pub(crate) fn check_locally(&self, checks: &[Check], keys: &[String]) -> Option<Decision> {
        let decision = self.check_blocked(checks, keys)?;
        self.note(checks, &decision);
        // Settled without a round trip: a span that opens and closes at once.
        let policy = match &decision {
            Decision::Deny { reason, .. } => reason.policy(),
            Decision::Allow { .. } => "",
        };
        let _span = self.span(policy, decision.outcome());
        Some(decision)
    }

    /// [`check_locally`](Self::check_locally)'s decision.
    fn check_blocked(&self, checks: &[Check], keys: &[String]) -> Option<Decision> {
        let blocked = self.inner.blocked.as_ref().filter(|_| !checks.is_empty())?;
        let now = Instant::now();
        if !blocked.any_until(now) {
            return None;
        }
        for item in Self::items(checks, keys) {
            if item.check.policy.shadow {
                continue;
            }
            let Some(until) = blocked.get(item.key, now) else {
                continue;
            };
            let retry = until - now;
            let policy = &item.check.policy;
            count(&policy.name, "local_deny");
            tracing::debug!(target: "larder::ratelimit", policy = %policy.name, key = %item.check.key, "rate limit: rejected locally, key known to be over its limit");
            return Some(Decision::Deny {
                reason: item.limited(),
                retry_after: retry,
                quotas: vec![item.state(false, 0, retry, Source::LocalBlock)],
            });
        }
        None
    }

    /// [`check`](Self::check) without the local pre-check, for a caller that has
    /// just made it ([`check_locally`](Self::check_locally)).
    pub(crate) async fn check_remotely(&self, checks: &[Check], keys: &[String]) -> Decision {
        let policy = checks.first().map_or("", |c| &*c.policy.name);
        let span = self.span(policy, tracing::field::Empty);
        let decision =
            larder_core::trace::in_span(span, self.decide(checks, keys), Decision::outcome).await;
        self.note(checks, &decision);
        decision
    }

    /// Counts a decision in [`activity`](Self::activity): an admission for every
    /// policy checked, a rejection for the one that rejected.
    fn note(&self, checks: &[Check], decision: &Decision) {
        let now = larder_core::time::now_ms();
        match decision {
            Decision::Allow { .. } => {
                let policies = checks.iter().map(|c| &c.policy.name);
                self.inner.decisions.allowed(policies, now);
            }
            Decision::Deny { reason, .. } => {
                let policy = reason.policy();
                if let Some(check) = checks.iter().find(|c| &*c.policy.name == policy) {
                    self.inner
                        .decisions
                        .rejected(&check.policy.name, &check.key, now);
                }
            }
        }
    }

    /// What the limiters of this module decided in the last hour: admissions and
    /// rejections per policy per minute, every instance's added up through Redis
    /// (each adds its counts every
    /// [`FLUSH_EVERY`](larder_core::last_hour::FLUSH_EVERY); this one's are
    /// current), and the keys this instance rejected most, hashed (see
    /// [`crate::activity`]). In process, this instance's.
    ///
    /// # Errors
    /// Redis's error.
    pub async fn activity(&self) -> Result<Activity, larder_core::Error> {
        self.inner
            .decisions
            .report(larder_core::time::now_ms())
            .await
    }

    /// Adds this instance's decisions to the shared [`activity`](Self::activity)
    /// now (it also happens every
    /// [`FLUSH_EVERY`](larder_core::last_hour::FLUSH_EVERY)).
    ///
    /// # Errors
    /// Redis's error.
    pub async fn share_activity(&self) -> Result<(), larder_core::Error> {
        self.inner.decisions.flush().await
    }

    /// A decision's `ratelimit.check` span ([`larder_core::trace`]): the module and a
    /// policy's name (the first one checked, or the one that rejected), never the
    /// counted key: it may be a client's address or an API key.
    fn span(&self, policy: &str, outcome: impl tracing::Value) -> tracing::Span {
        tracing::debug_span!(
            target: "larder::ratelimit",
            "ratelimit.check",
            module = self.inner.module.as_str(),
            policy,
            outcome
        )
    }

    /// [`check_remotely`](Self::check_remotely)'s decision.
    async fn decide(&self, checks: &[Check], keys: &[String]) -> Decision {
        let items: Vec<Item<'_>> = Self::items(checks, keys).collect();
        if items.is_empty() {
            return Decision::Allow { quotas: Vec::new() };
        }
        match self.evaluate(&items).await {
            Ok(decision) => decision,
            Err(error) => {
                if self.inner.handle.is_redis_configured() {
                    tracing::debug!(target: "larder::ratelimit", %error, "rate limit degraded: applying fail modes");
                }
                larder_core::metrics::DEGRADED_BY_COMPONENT.increment("ratelimit", "");
                self.fallback(&items)
            }
        }
    }

    async fn evaluate(&self, items: &[Item<'_>]) -> Result<Decision, EvalError> {
        let reply = if self.inner.handle.is_cluster() {
            self.reserve_by_slot(items).await?
        } else {
            self.run_script(items.iter()).await?
        };
        // reply[0] (admitted) is what `worst` says: admitted iff no enforced quota
        // rejected.
        let now = Instant::now();
        let mut quotas = Vec::with_capacity(items.len());
        let mut worst = Worst::default();
        for (item, chunk) in items.iter().zip(reply[1..].chunks_exact(5)) {
            let policy = &item.check.policy;
            let slot = item.slot();
            let allowed = chunk[0] == 1;
            let remaining = u64::try_from(chunk[1]).unwrap_or(0);
            let reset = ms(chunk[2]);
            let retry = chunk[3];
            let free = ms(chunk[4]);
            if !allowed && !policy.shadow {
                if retry < 0 {
                    worst.keep(
                        slot.quota.period(),
                        DenyReason::CostExceedsBurst {
                            policy: policy.name.clone(),
                            quota: slot.quota,
                            cost: item.check.cost,
                        },
                    );
                } else {
                    worst.keep(ms(retry), item.limited());
                }
                if let Some(blocked) = &self.inner.blocked {
                    if !free.is_zero() {
                        blocked.insert(item.key.to_owned(), now + free);
                    }
                }
            }
            quotas.push(item.state(allowed, remaining, reset, Source::Redis));
        }
        Ok(conclude(worst, quotas))
    }

    /// One `gcra.lua` over `items` (one slot's, or on one node every one): the
    /// script's reply, checked for shape.
    async fn run_script<'i, 'a: 'i>(
        &self,
        items: impl ExactSizeIterator<Item = &'i Item<'a>> + Clone,
    ) -> Result<Vec<i64>, EvalError> {
        let n = items.len();
        // The command is written directly (keys, then four arguments per key): this
        // is every request's round trip.
        let mut cmd = Handle::evalsha_cmd(&self.inner.script, n);
        for item in items.clone() {
            cmd.arg(item.key);
        }
        for item in items {
            let slot = &item.check.policy.slots[item.slot];
            cmd.arg(slot.quota.interval_micros())
                .arg(slot.quota.burst())
                .arg(item.check.cost)
                .arg(u8::from(item.check.policy.shadow));
        }
        let reply: Vec<i64> = self
            .inner
            .handle
            .evalsha("ratelimit_check", &self.inner.script, &cmd)
            .await
            .map_err(EvalError::Backend)?;
        if reply.len() != 1 + 5 * n {
            return Err(EvalError::Shape {
                got: reply.len(),
                quotas: n,
            });
        }
        Ok(reply)
    }

    /// On a cluster: `gcra.lua` once per slot among `items` (at the same time), so
    /// no script touches two slots. A slot whose quotas all admit charges them at
    /// once (a reservation); when another slot rejected the request, the
    /// reservations are refunded (`release.lua`), keeping all or nothing. Returns
    /// the reply `gcra.lua` would give for all of `items` together.
    ///
    /// The cost, for a request whose policies count different things (an IP and a
    /// tenant): one round trip per slot, in parallel, plus one more per admitting
    /// slot when the request is rejected; and between reservation and refund a
    /// concurrent request may see the reserved share as used.
    async fn reserve_by_slot(&self, items: &[Item<'_>]) -> Result<Vec<i64>, EvalError> {
        let mut slots: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let slot = larder_core::keyspace::cluster_slot(item.key.as_bytes());
            match slots.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(i),
                None => slots.push((slot, vec![i])),
            }
        }
        if let [(_, _)] = slots[..] {
            return self.run_script(items.iter()).await;
        }
        let replies = futures_util::future::join_all(
            slots
                .iter()
                .map(|(_, members)| self.run_script(members.iter().map(|&i| &items[i]))),
        )
        .await;
        let mut reply = vec![1; 1 + 5 * items.len()];
        let mut refunds = Vec::new();
        let mut failed = None;
        for ((_, members), got) in slots.iter().zip(replies) {
            let got = match got {
                Ok(got) => got,
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            for (k, &i) in members.iter().enumerate() {
                reply[1 + 5 * i..1 + 5 * (i + 1)].copy_from_slice(&got[1 + 5 * k..1 + 5 * (k + 1)]);
            }
            if got[0] == 1 {
                refunds.push((members, got));
            } else {
                reply[0] = 0;
            }
        }
        if failed.is_some() || reply[0] == 0 {
            // Not admitted (or undecided): give back what the admitting slots took.
            for (members, got) in refunds {
                self.refund(items, members, &got).await;
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(reply),
        }
    }

    /// Takes back one slot's reservation (`got`: that slot's `gcra.lua` reply).
    async fn refund(&self, items: &[Item<'_>], members: &[usize], got: &[i64]) {
        let mut inv = self.inner.release.prepare_invoke();
        for (k, &i) in members.iter().enumerate() {
            if got[1 + 5 * k] != 1 {
                continue; // not charged
            }
            let item = &items[i];
            let quota = item.slot().quota;
            inv.key(item.key)
                .arg(quota.interval_micros() * u64::from(item.check.cost));
        }
        let undone: Result<i64, _> = self.inner.handle.script("ratelimit_release", &inv).await;
        if let Err(error) = undone {
            tracing::warn!(target: "larder::ratelimit", %error, "rate limit: a reservation was not refunded; it expires with its quota's period");
        }
    }

    /// Applies each policy's fail mode.
    fn fallback(&self, items: &[Item<'_>]) -> Decision {
        let mut quotas = Vec::with_capacity(items.len());
        let mut worst = Worst::default();
        for item in items {
            let policy = &item.check.policy;
            let slot = item.slot();
            let state = match policy.fail {
                FailMode::Allow => item.state(
                    true,
                    u64::from(slot.quota.burst()),
                    Duration::ZERO,
                    Source::FailOpen,
                ),
                FailMode::Deny { status } => {
                    let retry = Duration::from_secs(1);
                    if !policy.shadow {
                        worst.keep(
                            retry,
                            DenyReason::Unavailable {
                                policy: policy.name.clone(),
                                status,
                            },
                        );
                    }
                    item.state(false, 0, retry, Source::FailClosed)
                }
                FailMode::Local => {
                    let out = slot.local.check(&item.check.key, item.check.cost);
                    let reset = if out.allowed {
                        let used = u64::from(slot.quota.burst()).saturating_sub(out.remaining);
                        slot.quota.emission_interval() * u32::try_from(used).unwrap_or(u32::MAX)
                    } else {
                        if !policy.shadow {
                            worst.keep(out.retry, item.limited());
                        }
                        out.retry
                    };
                    item.state(out.allowed, out.remaining, reset, Source::Local)
                }
            };
            quotas.push(state);
        }
        conclude(worst, quotas)
    }
}

impl Item<'_> {
    fn slot(&self) -> &Slot {
        &self.check.policy.slots[self.slot]
    }

    fn state(&self, allowed: bool, remaining: u64, reset: Duration, source: Source) -> QuotaState {
        let policy = &self.check.policy;
        let slot = self.slot();
        QuotaState {
            policy: policy.name.clone(),
            name: slot.header_name.clone(),
            quota: slot.quota,
            allowed,
            remaining,
            reset,
            shadow: policy.shadow,
            source,
        }
    }

    fn limited(&self) -> DenyReason {
        DenyReason::Limited {
            policy: self.check.policy.name.clone(),
            quota: self.slot().quota,
        }
    }
}

/// The enforced rejection with the longest wait, if any.
#[derive(Default)]
struct Worst(Option<(Duration, DenyReason)>);

impl Worst {
    fn keep(&mut self, retry: Duration, reason: DenyReason) {
        if self.0.as_ref().is_none_or(|(w, _)| retry > *w) {
            self.0 = Some((retry, reason));
        }
    }
}

/// Counts each policy's outcome and builds the decision: rejected iff an enforced
/// quota rejected.
fn conclude(worst: Worst, quotas: Vec<QuotaState>) -> Decision {
    let admitted = worst.0.is_none();
    // A policy's quotas are adjacent (one check's slots in order).
    for run in quotas.chunk_by(|a, b| Arc::ptr_eq(&a.policy, &b.policy)) {
        let q = &run[0];
        let all_ok = run.iter().all(|o| o.allowed);
        let degraded = q.source != Source::Redis;
        let decision = match (all_ok, q.shadow, admitted, degraded) {
            (false, true, _, _) => {
                tracing::info!(target: "larder::ratelimit", policy = %q.policy, "rate limit (shadow): would reject");
                "shadow_deny"
            }
            (true, _, true, false) => "allow",
            (true, _, true, true) => "fallback_allow",
            // Admitted by this policy, rejected by another: not charged, not counted.
            (true, _, false, _) => continue,
            (false, false, _, false) => "deny",
            (false, false, _, true) => "fallback_deny",
        };
        count(&q.policy, decision);
    }
    match worst.0 {
        Some((retry_after, reason)) => {
            tracing::debug!(target: "larder::ratelimit", policy = reason.policy(), retry_ms = retry_after.as_millis() as u64, "rate limit: rejected");
            Decision::Deny {
                reason,
                retry_after,
                quotas,
            }
        }
        None => Decision::Allow { quotas },
    }
}

/// Why the script's answer could not be used.
#[derive(Debug, thiserror::Error)]
enum EvalError {
    #[error(transparent)]
    Backend(larder_core::Error),
    #[error("rate-limit script returned {got} values for {quotas} quotas")]
    Shape { got: usize, quotas: usize },
}

/// Decisions by policy, keyed once per policy.
static DECISIONS: larder_core::metrics::Family = larder_core::metrics::Family::new(
    m::RATELIMIT_DECISIONS,
    "policy",
    "decision",
    &[
        "allow",
        "deny",
        "local_deny",
        "shadow_deny",
        "fallback_allow",
        "fallback_deny",
    ],
);

fn count(policy: &str, decision: &'static str) {
    DECISIONS.increment(policy, decision);
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    #[test]
    fn the_last_blocked_key_is_remembered_per_set_and_only_until_its_end() {
        let (a, b) = (Blocked::new(), Blocked::new());
        let t0 = Instant::now();
        let until = t0 + Duration::from_millis(400);
        a.insert("ip:1".to_owned(), until);
        b.insert("ip:9".to_owned(), until);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(a.get("ip:1", t1), Some(until));
        // The memo answers for its own set only, and for its key only.
        assert_eq!(b.get("ip:1", t1), None);
        assert_eq!(a.get("ip:9", t1), None);
        assert_eq!(a.get("ip:1", t1), Some(until));
        // It is what answers the next look-up of that key (the cache is not asked:
        // a key dropped from it is still found) ...
        a.keys.invalidate("ip:1");
        assert_eq!(a.get("ip:1", t1), Some(until));
        // ... and never past the block's end.
        assert_eq!(a.get("ip:1", until), None);
        assert_eq!(a.get("ip:1", until + Duration::from_millis(1)), None);
        // Another key becomes the remembered one.
        assert_eq!(b.get("ip:9", t1), Some(until));
        assert_eq!(
            a.get("ip:1", t1),
            None,
            "dropped from the cache and no longer remembered"
        );
    }

    #[test]
    fn blocked_keys_end_at_their_time_and_nothing_blocked_costs_no_look_up() {
        let blocked = Blocked::new();
        let t0 = Instant::now();
        assert_eq!(blocked.get("ip:1", t0), None, "nothing was ever blocked");
        let until = t0 + Duration::from_millis(500);
        blocked.insert("ip:1".to_owned(), until);
        assert_eq!(
            blocked.get("ip:1", t0 + Duration::from_millis(100)),
            Some(until)
        );
        assert_eq!(blocked.get("ip:2", t0 + Duration::from_millis(100)), None);
        assert_eq!(blocked.get("ip:1", until), None, "ended at its time");
        // A shorter block later does not shorten the window of the longer one.
        blocked.insert("ip:3".to_owned(), t0 + Duration::from_millis(200));
        assert_eq!(
            blocked.get("ip:1", t0 + Duration::from_millis(300)),
            Some(until)
        );
        // Once every block has ended the look-up is skipped.
        let after = t0 + Duration::from_millis(600);
        assert!(
            blocked.since_epoch_ms(after)
                >= blocked
                    .all_end_ms
                    .load(std::sync::atomic::Ordering::Relaxed)
        );
        assert_eq!(blocked.get("ip:1", after), None);
    }
}
