//! Policies: a name, one or more quotas, what a request is counted by, its cost, and
//! what happens while Redis is unavailable.

use std::fmt;
use std::sync::Arc;

use larder_core::{Module, RequestView, TenantExtractor};
use sha2::{Digest, Sha256};

use crate::ip::ClientIp;
use crate::local::LocalTier;
use crate::quota::{PolicyError, Quota};

/// A closure that finds a request's key.
pub type KeyFn = Arc<dyn Fn(&dyn RequestView) -> Option<String> + Send + Sync>;
/// A closure that finds a request's cost.
pub type CostFn = Arc<dyn Fn(&dyn RequestView) -> u32 + Send + Sync>;

/// What a request is counted by. `None` from [`Key::extract`] means the policy does
/// not apply to the request (no tenant, no API key, no user).
#[derive(Clone)]
#[non_exhaustive]
pub enum Key {
    /// The client address (the default), see [`ClientIp`].
    ClientIp(ClientIp),
    /// The request's tenant.
    Tenant(Arc<dyn TenantExtractor>),
    /// The authenticated user: a [`larder_core::Principal`] an auth middleware put in
    /// the request's extensions.
    User,
    /// A header's value, such as an API key. The value is stored hashed (SHA-256), so
    /// Redis never holds the secret.
    Header(Arc<str>),
    /// One counter per policy: a limit on the route (or the app) as a whole.
    Global,
    /// A closure's answer, such as a plan id.
    Custom(KeyFn),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientIp(c) => f.debug_tuple("ClientIp").field(c).finish(),
            Self::Tenant(_) => f.write_str("Tenant(..)"),
            Self::User => f.write_str("User"),
            Self::Header(h) => f.debug_tuple("Header").field(h).finish(),
            Self::Global => f.write_str("Global"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// The client has no address the server exposed; such requests share one bucket (a
/// warning is logged once: serve Axum with `into_make_service_with_connect_info`).
const UNKNOWN_CLIENT: &str = "ip:unknown";

impl Key {
    /// The tenant from a header (`X-Tenant-Id`).
    #[must_use]
    pub fn tenant_header(name: &str) -> Self {
        Self::Tenant(Arc::new(larder_core::request::FromHeader::new(name)))
    }

    /// A header's value, hashed (for API keys).
    #[must_use]
    pub fn header(name: &str) -> Self {
        Self::Header(Arc::from(name.to_ascii_lowercase()))
    }

    /// A closure's answer.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&dyn RequestView) -> Option<String> + Send + Sync + 'static,
    {
        Self::Custom(Arc::new(f))
    }

    /// The key part of a request: a kind prefix and a value that is safe in a Redis
    /// key (hashed when it is a secret, long, or holds control characters).
    #[must_use]
    pub fn extract(&self, req: &dyn RequestView) -> Option<String> {
        match self {
            Self::ClientIp(client) => Some(match client.resolve(req) {
                Some(ip) => client.key_for(ip),
                None => {
                    warn_no_peer();
                    UNKNOWN_CLIENT.to_owned()
                }
            }),
            Self::Tenant(extractor) => Some(format!("tenant:{}", extractor.extract(req)?.as_str())),
            Self::User => Some(safe_part("user", req.principal()?.as_str())),
            Self::Header(name) => {
                let raw = req.header(name)?;
                if raw.is_empty() {
                    return None;
                }
                Some(format!("hdr:{}", digest(raw)))
            }
            Self::Global => Some("all".to_owned()),
            Self::Custom(f) => Some(safe_part("custom", &f(req)?)),
        }
    }
}

fn warn_no_peer() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            target: "larder::ratelimit",
            "the server does not expose the peer address: all clients share one per-IP \
             bucket (Axum: serve with `into_make_service_with_connect_info::<SocketAddr>()`)"
        );
    });
}

/// 128 bits of SHA-256, hex.
pub(crate) fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(32);
    for b in &hash[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `kind:value`, with the value hashed when it could not be a readable key part.
pub(crate) fn safe_part(kind: &str, value: &str) -> String {
    if value.is_empty() || value.len() > 64 || value.chars().any(char::is_control) {
        format!("{kind}:h:{}", digest(value.as_bytes()))
    } else {
        format!("{kind}:{value}")
    }
}

/// How much one request costs (its weight).
#[derive(Clone)]
pub enum Cost {
    /// Every request costs this much.
    Fixed(u32),
    /// A closure decides per request (for example by body size or plan).
    Custom(CostFn),
}

impl fmt::Debug for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => f.debug_tuple("Fixed").field(n).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Cost {
    pub(crate) fn of(&self, req: &dyn RequestView) -> u32 {
        match self {
            Self::Fixed(n) => *n,
            Self::Custom(f) => f(req),
        }
    }
}

/// What a policy does while Redis is unavailable (down, frozen, breaker open, or not
/// configured at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailMode {
    /// An in-process `governor` limiter with the same quota, per instance (the
    /// default). Idle keys are evicted, so its memory stays bounded.
    #[default]
    Local,
    /// Admit every request.
    Allow,
    /// Reject every request with this status (503 or 429).
    Deny {
        /// The status of the rejection.
        status: u16,
    },
}

/// One quota of a policy and its local fallback state.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) quota: Quota,
    /// `{policy}:{quota label}`, the fixed part of the Redis key.
    pub(crate) prefix: String,
    /// The name shown in `RateLimit-Policy` and `RateLimit`.
    pub(crate) header_name: Arc<str>,
    pub(crate) local: LocalTier,
}

/// A named rate limit: quotas, a key, a cost, a fail mode.
///
/// ```
/// use larder_ratelimit::{FailMode, Key, Policy};
///
/// let per_ip = Policy::new("ip", "100/minute").unwrap();
/// let per_tenant = Policy::new("tenant", "10000/hour")
///     .unwrap()
///     .key(Key::tenant_header("x-tenant-id"))
///     .fail_mode(FailMode::Allow);
/// let api = Policy::new("api", "10/second;1000/hour")
///     .unwrap()
///     .key(Key::header("x-api-key"))
///     .cost(2);
/// assert_eq!(api.quotas().count(), 2);
/// assert!(Policy::new("bad name:*", "1/s").is_err());
/// assert!(Policy::new("ip", "100 per fortnight").is_err());
/// ```
#[derive(Clone)]
pub struct Policy {
    pub(crate) name: Arc<str>,
    pub(crate) slots: Arc<[Slot]>,
    pub(crate) key: Key,
    pub(crate) cost: Cost,
    pub(crate) fail: FailMode,
    pub(crate) shadow: bool,
    capacity: usize,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field(
                "quotas",
                &self.slots.iter().map(|s| s.quota).collect::<Vec<_>>(),
            )
            .field("key", &self.key)
            .field("cost", &self.cost)
            .field("fail", &self.fail)
            .field("shadow", &self.shadow)
            .finish()
    }
}

impl Policy {
    /// A policy named `name` with quotas parsed from `quotas` (`"100/minute"`,
    /// `"10/second;1000/hour"`), counted per client IP, cost 1, local fallback.
    ///
    /// # Errors
    /// [`PolicyError`] when the name or the quotas are invalid.
    pub fn new(name: &str, quotas: &str) -> Result<Self, PolicyError> {
        Self::with_quotas(name, Quota::parse_many(quotas)?)
    }

    /// A policy with quotas built in code.
    ///
    /// # Errors
    /// [`PolicyError`] when the name is invalid or `quotas` is empty.
    pub fn with_quotas(
        name: &str,
        quotas: impl IntoIterator<Item = Quota>,
    ) -> Result<Self, PolicyError> {
        Module::new(name).map_err(|e| PolicyError::Name {
            name: name.to_owned(),
            problem: e.to_string(),
        })?;
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        if quotas.is_empty() {
            return Err(PolicyError::Range("a policy needs at least one quota"));
        }
        let name: Arc<str> = Arc::from(name);
        Ok(Self {
            slots: slots(&name, &quotas, crate::local::DEFAULT_CAPACITY),
            name,
            key: Key::ClientIp(ClientIp::new()),
            cost: Cost::Fixed(1),
            fail: FailMode::Local,
            shadow: false,
            capacity: crate::local::DEFAULT_CAPACITY,
        })
    }

    /// Counts requests by `key` (default: client IP, no trusted proxy).
    #[must_use]
    pub fn key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }

    /// Every request costs `n` (default 1; 0 is read as 1).
    #[must_use]
    pub fn cost(mut self, n: u32) -> Self {
        self.cost = Cost::Fixed(n.max(1));
        self
    }

    /// A closure sets each request's cost (0 is read as 1).
    #[must_use]
    pub fn cost_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&dyn RequestView) -> u32 + Send + Sync + 'static,
    {
        self.cost = Cost::Custom(Arc::new(f));
        self
    }

    /// Sets the burst of every quota (requests admitted at once).
    ///
    /// # Errors
    /// [`PolicyError::Range`] when `burst` is zero.
    pub fn burst(mut self, burst: u32) -> Result<Self, PolicyError> {
        let quotas = self
            .slots
            .iter()
            .map(|s| s.quota.with_burst(burst))
            .collect::<Result<Vec<_>, _>>()?;
        self.slots = slots(&self.name, &quotas, self.capacity);
        Ok(self)
    }

    /// What to do while Redis is unavailable (default [`FailMode::Local`]).
    #[must_use]
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail = mode;
        self
    }

    /// Shadow mode: requests are counted and would-be rejections logged and counted
    /// (`decision="shadow_deny"`), but never rejected.
    #[must_use]
    pub fn shadow(mut self, on: bool) -> Self {
        self.shadow = on;
        self
    }

    /// Bounds the local fallback's memory: at most `keys` tracked keys per quota
    /// (default 100,000; idle keys are evicted first, and a tier full of active keys
    /// starts over).
    #[must_use]
    pub fn local_capacity(mut self, keys: usize) -> Self {
        self.capacity = keys;
        let quotas: Vec<Quota> = self.quotas().collect();
        self.slots = slots(&self.name, &quotas, keys);
        self
    }

    /// The policy's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy's quotas.
    pub fn quotas(&self) -> impl Iterator<Item = Quota> + '_ {
        self.slots.iter().map(|s| s.quota)
    }

    /// The policy's fail mode.
    #[must_use]
    pub fn fail(&self) -> FailMode {
        self.fail
    }

    /// Whether the policy is in shadow mode.
    #[must_use]
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// What the policy counts this request by, or `None` when it does not apply.
    #[must_use]
    pub fn key_of(&self, req: &dyn RequestView) -> Option<String> {
        self.key.extract(req)
    }

    /// This request's cost (at least 1).
    #[must_use]
    pub fn cost_of(&self, req: &dyn RequestView) -> u32 {
        self.cost.of(req).max(1)
    }
}

fn slots(name: &str, quotas: &[Quota], capacity: usize) -> Arc<[Slot]> {
    let many = quotas.len() > 1;
    quotas
        .iter()
        .enumerate()
        .map(|(i, q)| Slot {
            quota: *q,
            prefix: format!("{name}:{}", q.label()),
            header_name: if many {
                Arc::from(format!("{name}-{}", i + 1))
            } else {
                Arc::from(name)
            },
            local: LocalTier::new(*q, capacity),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_core::request::SimpleRequest;
    use larder_core::Principal;

    fn req(headers: &[(&str, &str)]) -> SimpleRequest {
        headers
            .iter()
            .fold(SimpleRequest::new("GET", "/"), |r, (n, v)| {
                r.with_header(n, v)
            })
    }

    #[test]
    fn keys_are_safe_and_secrets_hashed() {
        let api = Key::header("X-Api-Key");
        let k = api
            .extract(&req(&[("x-api-key", "sk_live_secret")]))
            .unwrap();
        assert!(k.starts_with("hdr:") && !k.contains("secret"), "{k}");
        assert_eq!(k.len(), 4 + 32);
        assert_eq!(api.extract(&req(&[])), None);
        assert_eq!(api.extract(&req(&[("x-api-key", "")])), None);

        let tenant = Key::tenant_header("x-tenant-id");
        assert_eq!(
            tenant.extract(&req(&[("x-tenant-id", "acme")])).as_deref(),
            Some("tenant:acme")
        );
        // A hostile tenant id is no tenant: the policy does not apply.
        assert_eq!(tenant.extract(&req(&[("x-tenant-id", "a:*")])), None);

        let user = Key::User;
        assert_eq!(user.extract(&req(&[])), None);
        let with_user = req(&[]).with_principal(Principal::new("u-42"));
        assert_eq!(user.extract(&with_user).as_deref(), Some("user:u-42"));

        let custom = Key::custom(|_| Some("bad\nvalue".to_owned()));
        let k = custom.extract(&req(&[])).unwrap();
        assert!(k.starts_with("custom:h:") && !k.contains('\n'), "{k}");
        let long = Key::custom(|_| Some("x".repeat(500)));
        assert!(long.extract(&req(&[])).unwrap().len() < 80);

        // No peer address: one shared bucket, never a bypass.
        assert_eq!(
            Key::ClientIp(ClientIp::new()).extract(&req(&[])).as_deref(),
            Some(UNKNOWN_CLIENT)
        );
    }

    #[test]
    fn policies_validate_names_and_build_slots() {
        let p = Policy::new("api", "10/second;1000/hour").unwrap();
        let names: Vec<_> = p.slots.iter().map(|s| &*s.header_name).collect();
        assert_eq!(names, ["api-1", "api-2"]);
        assert_eq!(p.slots[0].prefix, "api:10r1000ms");
        let one = Policy::new("ip", "100/minute").unwrap();
        assert_eq!(&*one.slots[0].header_name, "ip");
        for bad in ["", "a:b", "a*", "a b", "{x}"] {
            assert!(Policy::new(bad, "1/s").is_err(), "{bad:?}");
        }
        let bursty = one.clone().burst(5).unwrap();
        assert_eq!(bursty.quotas().next().unwrap().burst(), 5);
        assert!(one.clone().burst(0).is_err());
        assert_eq!(one.cost(0).cost_of(&req(&[])), 1);
    }
}
