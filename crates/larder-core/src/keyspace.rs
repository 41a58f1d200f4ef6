//! Tenant-scoped Redis key names, built by one type.
//!
//! Every key larder writes has the shape
//!
//! ```text
//! {prefix}:{component}:tenant:{tenant}:{module}:{key}
//! ```
//!
//! The component ([`Component`]: `cache`, `session`, `ratelimit`, `jobs`) comes
//! first, so each component owns a literal root of its own: a sweep of one
//! component (the cache's `clear`, an admin's glob) starts with that root and can
//! never match another component's keys, whatever the glob. An application's own
//! keys, built from [`Keyspace::new`] without a component, read
//! `{prefix}:tenant:{tenant}:{module}:{key}` and are never matched by a component's
//! sweep either.
//!
//! With the hash tag on (the default), the tenant part is wrapped in braces —
//! `stock:cache:tenant:{42}:balance:k` — so that all of a tenant's keys hash to one
//! Redis Cluster slot and a multi-key script over one tenant never crosses slots.
//! Structures shared by all tenants (a job queue, say) live in a *global* scope,
//! `{prefix}:{component}:global:{module}:{key}`, tagged on the module.
//!
//! Tenant ids, module names and the prefix are validated: they may not contain `:`,
//! glob metacharacters (`*`, `?`, `[`, `]`), braces, `\`, whitespace or control
//! characters, and are at most [`MAX_SEGMENT_LEN`] bytes. Validation rather than
//! escaping keeps keys readable in `redis-cli` and makes a key's owner obvious; it is
//! what makes isolation hold *by construction*: a literal segment can never widen a
//! pattern nor end early, so no key built for tenant A matches a pattern built for
//! tenant B (see the property test in this crate).
//!
//! ```
//! use larder_core::keyspace::{Keyspace, Module, Tenant};
//!
//! use larder_core::keyspace::Component;
//!
//! let ks = Keyspace::new("stock")?.component(Component::Cache);
//! let scope = ks.scope(&Tenant::new("42")?, &Module::new("balance")?);
//! assert_eq!(scope.key("2024-01")?, "stock:cache:tenant:{42}:balance:2024-01");
//! assert_eq!(scope.pattern_all(), "stock:cache:tenant:{42}:balance:*");
//! assert_eq!(ks.root_pattern(), "stock:cache:*");
//! assert!(Tenant::new("42:*").is_err());
//! # Ok::<(), larder_core::keyspace::KeyError>(())
//! ```

use std::fmt;
use std::sync::Arc;

/// The longest tenant id, module name or prefix accepted, in bytes.
pub const MAX_SEGMENT_LEN: usize = 128;

/// The longest free-form key part accepted, in bytes. Longer inputs (URLs, say)
/// should be hashed by the component before they reach the keyspace.
pub const MAX_KEY_LEN: usize = 4096;

/// Why a segment or key part was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The segment is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// Which segment: "tenant id", "module name", "key prefix" or "key".
        what: &'static str,
    },
    /// The segment is longer than allowed.
    #[error("{what} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Which segment.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The segment contains a forbidden character.
    #[error("{what} contains the forbidden character {ch:?} at byte {at}")]
    ForbiddenChar {
        /// Which segment.
        what: &'static str,
        /// The character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

fn forbidden_in_segment(c: char) -> bool {
    matches!(c, ':' | '*' | '?' | '[' | ']' | '{' | '}' | '\\')
        || c.is_whitespace()
        || c.is_control()
}

fn validate_segment(what: &'static str, s: &str) -> Result<(), KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty { what });
    }
    if s.len() > MAX_SEGMENT_LEN {
        return Err(KeyError::TooLong {
            what,
            len: s.len(),
            max: MAX_SEGMENT_LEN,
        });
    }
    if let Some((at, ch)) = s.char_indices().find(|&(_, c)| forbidden_in_segment(c)) {
        return Err(KeyError::ForbiddenChar { what, ch, at });
    }
    Ok(())
}

macro_rules! segment_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            #[doc = concat!("Validates and wraps a ", $what, ".")]
            ///
            /// # Errors
            /// [`KeyError`] when the value is empty, too long or holds a forbidden character.
            pub fn new(value: impl AsRef<str>) -> Result<Self, KeyError> {
                let value = value.as_ref();
                validate_segment($what, value)?;
                Ok(Self(Arc::from(value)))
            }

            /// The validated value.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value as a shared string (a reference-count increment, no copy).
            #[must_use]
            pub fn to_shared(&self) -> Arc<str> {
                Arc::clone(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = KeyError;
            fn from_str(s: &str) -> Result<Self, KeyError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = KeyError;
            fn try_from(s: &str) -> Result<Self, KeyError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = KeyError;
            fn try_from(s: String) -> Result<Self, KeyError> {
                Self::new(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&*s).map_err(serde::de::Error::custom)
            }
        }
    };
}

segment_type!(
    /// A validated tenant id: the unit of isolation. Cheap to clone.
    Tenant,
    "tenant id"
);

segment_type!(
    /// A validated module name (`balance`, `products`, `sessions`, ...). Cheap to clone.
    Module,
    "module name"
);

/// A larder component: each keeps its keys under a root of its own,
/// `{prefix}:{component}:`, that no other component's sweep can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Component {
    /// The response and value cache (`cache`): the only component whose keys an
    /// admin may sweep.
    Cache,
    /// Sessions (`session`).
    Session,
    /// Rate-limit state (`ratelimit`).
    RateLimit,
    /// Job queues, records, results and schedules (`jobs`).
    Jobs,
}

impl Component {
    /// Every component.
    pub const ALL: [Component; 4] = [
        Component::Cache,
        Component::Session,
        Component::RateLimit,
        Component::Jobs,
    ];

    /// The component's segment in its keys.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Cache => "cache",
            Component::Session => "session",
            Component::RateLimit => "ratelimit",
            Component::Jobs => "jobs",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds every key and SCAN pattern of one application, or of one of its
/// components ([`Keyspace::component`]). Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: Arc<str>,
    /// Where every key starts: the prefix, and `:{component}` for a component's.
    root: Arc<str>,
    hash_tag: bool,
}

impl fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyspace")
            .field("root", &&*self.root)
            .field("hash_tag", &self.hash_tag)
            .finish()
    }
}

impl Keyspace {
    /// A keyspace under `prefix`, with the cluster hash tag on.
    ///
    /// # Errors
    /// [`KeyError`] when the prefix is not a valid segment.
    pub fn new(prefix: impl AsRef<str>) -> Result<Self, KeyError> {
        let prefix = prefix.as_ref();
        validate_segment("key prefix", prefix)?;
        Ok(Self {
            prefix: Arc::from(prefix),
            root: Arc::from(prefix),
            hash_tag: true,
        })
    }

    /// The keyspace of one component: every key and pattern it builds starts with
    /// `{prefix}:{component}:`. Larder's components each build their keys here, so a
    /// sweep of one can never reach another's keys.
    #[must_use]
    pub fn component(&self, component: Component) -> Self {
        Self {
            prefix: Arc::clone(&self.prefix),
            root: Arc::from(format!("{}:{component}", self.prefix)),
            hash_tag: self.hash_tag,
        }
    }

    /// Turns the Redis Cluster hash tag around the tenant (or global module) part on or
    /// off. On by default; turn it off only for keys that must read `prefix:tenant:1:`.
    #[must_use]
    pub fn with_hash_tag(mut self, on: bool) -> Self {
        self.hash_tag = on;
        self
    }

    /// The prefix (`CACHE_KEY_PREFIX`), shared by every component.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where every key of this keyspace starts: the prefix, followed by
    /// `:{component}` for a component's keyspace. No `:` at the end.
    #[must_use]
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Whether keys carry a cluster hash tag.
    #[must_use]
    pub fn hash_tag(&self) -> bool {
        self.hash_tag
    }

    fn tagged(&self, out: &mut String, segment: &str) {
        if self.hash_tag {
            out.push('{');
            out.push_str(segment);
            out.push('}');
        } else {
            out.push_str(segment);
        }
    }

    fn tenant_base(&self, tenant: &Tenant) -> String {
        let mut s = String::with_capacity(self.root.len() + tenant.0.len() + 16);
        s.push_str(&self.root);
        s.push_str(":tenant:");
        self.tagged(&mut s, &tenant.0);
        s.push(':');
        s
    }

    /// The scope of one tenant's module: every key of it is built from here.
    #[must_use]
    pub fn scope(&self, tenant: &Tenant, module: &Module) -> Scope {
        let mut base = self.tenant_base(tenant);
        base.push_str(&module.0);
        base.push(':');
        Scope {
            base: Arc::from(base),
        }
    }

    /// The full key for `key` in a tenant's module, built in one allocation (the
    /// same string as `scope(tenant, module).key(key)`).
    ///
    /// # Errors
    /// [`KeyError`] when the key part is rejected.
    pub fn key(&self, tenant: &Tenant, module: &Module, key: &str) -> Result<String, KeyError> {
        validate_key_part("key", key)?;
        let mut s = String::with_capacity(
            self.root.len() + tenant.0.len() + module.0.len() + key.len() + 14,
        );
        s.push_str(&self.root);
        s.push_str(":tenant:");
        self.tagged(&mut s, &tenant.0);
        s.push(':');
        s.push_str(&module.0);
        s.push(':');
        s.push_str(key);
        Ok(s)
    }

    /// A scope shared by all tenants, for structures that are not a tenant's data
    /// (job queues, scheduler leases). Its hash tag is the module.
    #[must_use]
    pub fn global_scope(&self, module: &Module) -> Scope {
        let mut base = String::with_capacity(self.root.len() + module.0.len() + 12);
        base.push_str(&self.root);
        base.push_str(":global:");
        self.tagged(&mut base, &module.0);
        base.push(':');
        Scope {
            base: Arc::from(base),
        }
    }

    /// The SCAN pattern matching every key of one tenant, in all modules.
    #[must_use]
    pub fn tenant_pattern(&self, tenant: &Tenant) -> String {
        let mut s = self.tenant_base(tenant);
        s.push('*');
        s
    }

    /// A SCAN pattern for a caller's glob over all of one tenant's keys
    /// (`{prefix}:tenant:{t}:` followed by the glob). The literal tenant prefix comes
    /// first, so the glob can only narrow matches inside the tenant.
    ///
    /// # Errors
    /// [`KeyError`] when the glob is empty, too long or holds control characters.
    pub fn tenant_glob(&self, tenant: &Tenant, glob: &str) -> Result<String, KeyError> {
        validate_key_part("pattern", glob)?;
        let mut s = self.tenant_base(tenant);
        s.push_str(glob);
        Ok(s)
    }

    /// A SCAN pattern for a glob relative to the root (`tenant:{1}:products:*`),
    /// for admin tools that work across tenants. The literal root comes first, so
    /// on a component's keyspace the glob can only narrow matches inside the
    /// component.
    ///
    /// # Errors
    /// [`KeyError`] when the glob is empty, too long or holds control characters.
    pub fn root_glob(&self, glob: &str) -> Result<String, KeyError> {
        validate_key_part("pattern", glob)?;
        Ok(format!("{}:{glob}", self.root))
    }

    /// The SCAN pattern matching every key under the root (on a component's
    /// keyspace: every key of the component, and nothing else).
    #[must_use]
    pub fn root_pattern(&self) -> String {
        format!("{}:*", self.root)
    }
}

/// One tenant's module (or one global module): a key prefix that is fixed and trusted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    base: Arc<str>,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Scope").field(&&*self.base).finish()
    }
}

impl Scope {
    /// The scope's literal prefix, ending in `:`.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full key for `key` in this scope.
    ///
    /// The key part is free-form (it is the last segment, so it cannot reach another
    /// scope) but must be non-empty, hold no control character and be at most
    /// [`MAX_KEY_LEN`] bytes.
    ///
    /// # Errors
    /// [`KeyError`] when the key part is rejected.
    pub fn key(&self, key: &str) -> Result<String, KeyError> {
        validate_key_part("key", key)?;
        let mut s = String::with_capacity(self.base.len() + key.len());
        s.push_str(&self.base);
        s.push_str(key);
        Ok(s)
    }

    /// The full key for a key part made of several pieces joined by `:`.
    ///
    /// # Errors
    /// [`KeyError`] when a piece is rejected.
    pub fn key_parts(&self, parts: &[&str]) -> Result<String, KeyError> {
        let mut s = String::with_capacity(
            self.base.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>(),
        );
        s.push_str(&self.base);
        for (i, part) in parts.iter().enumerate() {
            validate_key_part("key", part)?;
            if i > 0 {
                s.push(':');
            }
            s.push_str(part);
        }
        if s.len() - self.base.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong {
                what: "key",
                len: s.len() - self.base.len(),
                max: MAX_KEY_LEN,
            });
        }
        if parts.is_empty() {
            return Err(KeyError::Empty { what: "key" });
        }
        Ok(s)
    }

    /// The SCAN pattern matching every key of the scope.
    #[must_use]
    pub fn pattern_all(&self) -> String {
        let mut s = String::with_capacity(self.base.len() + 1);
        s.push_str(&self.base);
        s.push('*');
        s
    }

    /// A SCAN pattern for a caller's glob, confined to the scope.
    ///
    /// The scope's literal prefix comes first and contains no metacharacter, so the
    /// glob can only narrow matches inside the scope. A glob may not be empty or hold
    /// control characters.
    ///
    /// # Errors
    /// [`KeyError`] when the glob is rejected.
    pub fn pattern(&self, glob: &str) -> Result<String, KeyError> {
        validate_key_part("pattern", glob)?;
        let mut s = String::with_capacity(self.base.len() + glob.len());
        s.push_str(&self.base);
        s.push_str(glob);
        Ok(s)
    }

    /// Strips the scope's prefix from a full key, if the key belongs to the scope.
    #[must_use]
    pub fn strip<'a>(&self, full_key: &'a str) -> Option<&'a str> {
        full_key.strip_prefix(&*self.base)
    }
}

fn validate_key_part(what: &'static str, key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty { what });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong {
            what,
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    if let Some((at, ch)) = key.char_indices().find(|&(_, c)| c.is_control()) {
        return Err(KeyError::ForbiddenChar { what, ch, at });
    }
    Ok(())
}

/// The Redis Cluster slot of `key` (0–16383): CRC16/XMODEM of its hash tag (the
/// part between the first `{` and the next `}`, when not empty) or of the whole
/// key, as the server computes it. For grouping a request's keys by slot.
#[must_use]
pub fn cluster_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % 16384
}

/// Redis's glob matching, ported from `stringmatchlen` in Redis's `util.c` (case
/// sensitive): `*`, `?`, `[...]` with ranges and `^` negation, and `\` escapes.
///
/// Used by the isolation tests and to check a pattern locally before it is sent.
#[must_use]
pub fn glob_matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    glob_impl(pattern, string, &mut skip_longer, 0)
}

fn glob_impl(mut pat: &[u8], mut s: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > 1000 {
        return false;
    }
    while !pat.is_empty() && !s.is_empty() {
        match pat[0] {
            b'*' => {
                while pat.len() > 1 && pat[1] == b'*' {
                    pat = &pat[1..];
                }
                if pat.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if glob_impl(&pat[1..], s, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s = &s[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                pat = &pat[1..];
                let negate = pat.first() == Some(&b'^');
                if negate {
                    pat = &pat[1..];
                }
                let mut matched = false;
                loop {
                    match pat {
                        [b'\\', escaped, ..] => {
                            if *escaped == s[0] {
                                matched = true;
                            }
                            pat = &pat[2..];
                        }
                        [b']', ..] => break,
                        [] => {
                            // An unterminated class ends with the pattern. Leave one
                            // byte for the shared advance below to consume.
                            pat = b" ";
                            break;
                        }
                        [start, b'-', end, ..] => {
                            let (lo, hi) = if start <= end {
                                (*start, *end)
                            } else {
                                (*end, *start)
                            };
                            if (lo..=hi).contains(&s[0]) {
                                matched = true;
                            }
                            pat = &pat[3..];
                        }
                        [c, ..] => {
                            if *c == s[0] {
                                matched = true;
                            }
                            pat = &pat[1..];
                        }
                    }
                }
                if matched == negate {
                    return false;
                }
                s = &s[1..];
            }
            first => {
                let literal = if first == b'\\' && pat.len() >= 2 {
                    pat = &pat[1..];
                    pat[0]
                } else {
                    first
                };
                if literal != s[0] {
                    return false;
                }
                s = &s[1..];
            }
        }
        pat = &pat[1..];
        if s.is_empty() {
            while pat.first() == Some(&b'*') {
                pat = &pat[1..];
            }
            break;
        }
    }
    pat.is_empty() && s.is_empty()
}

#[cfg(test)]
mod tests {

    #[test]
    fn cluster_slots_match_the_servers() {
        // Figures from `CLUSTER KEYSLOT` on Redis 7.
        for (key, slot) in [
            ("foo", 12182),
            ("{user1000}.following", 3443),
            ("{user1000}.followers", 3443),
            ("foo{}{bar}", 8363),
            ("foo{{bar}}zap", 4015),
            ("foo{bar}{zap}", 5061),
        ] {
            assert_eq!(cluster_slot(key.as_bytes()), slot, "{key}");
        }
    }
    use super::*;

    fn t(s: &str) -> Tenant {
        Tenant::new(s).unwrap()
    }
    fn m(s: &str) -> Module {
        Module::new(s).unwrap()
    }

    #[test]
    fn builds_tagged_and_untagged_keys() {
        let ks = Keyspace::new("stock").unwrap();
        assert_eq!(
            ks.scope(&t("1"), &m("balance")).key("a").unwrap(),
            "stock:tenant:{1}:balance:a"
        );
        let plain = ks.clone().with_hash_tag(false);
        assert_eq!(
            plain.scope(&t("1"), &m("balance")).key("a").unwrap(),
            "stock:tenant:1:balance:a"
        );
        assert_eq!(
            ks.global_scope(&m("jobs")).key("queue:default").unwrap(),
            "stock:global:{jobs}:queue:default"
        );
        assert_eq!(ks.tenant_pattern(&t("7")), "stock:tenant:{7}:*");
        assert_eq!(
            ks.key(&t("1"), &m("balance"), "a").unwrap(),
            ks.scope(&t("1"), &m("balance")).key("a").unwrap()
        );
    }

    #[test]
    fn each_component_has_a_root_of_its_own() {
        let ks = Keyspace::new("stock").unwrap();
        let cache = ks.component(Component::Cache);
        assert_eq!(cache.root(), "stock:cache");
        assert_eq!(cache.prefix(), "stock");
        assert_eq!(
            cache.scope(&t("1"), &m("balance")).key("a").unwrap(),
            "stock:cache:tenant:{1}:balance:a"
        );
        assert_eq!(
            ks.component(Component::Jobs)
                .global_scope(&m("jobs"))
                .key("q")
                .unwrap(),
            "stock:jobs:global:{jobs}:q"
        );
        assert_eq!(cache.root_pattern(), "stock:cache:*");
        assert_eq!(cache.root_glob("*").unwrap(), "stock:cache:*");
        assert_eq!(
            cache.component(Component::Session).root(),
            "stock:session",
            "a component's keyspace is never nested in another's"
        );
        let names: std::collections::HashSet<_> =
            Component::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Component::ALL.len());
    }

    #[test]
    fn rejects_hostile_segments_with_a_clear_error() {
        for bad in [
            "", "a:b", "*", "a?", "[x]", "{1}", "a\\b", "a b", "a\tb", "a\nb", "\u{7f}", "\u{2028}",
        ] {
            let err = Tenant::new(bad).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("tenant id"), "{bad:?}: {text}");
        }
        let long = "x".repeat(MAX_SEGMENT_LEN + 1);
        assert_eq!(
            Module::new(&long).unwrap_err(),
            KeyError::TooLong {
                what: "module name",
                len: MAX_SEGMENT_LEN + 1,
                max: MAX_SEGMENT_LEN
            }
        );
        assert!(Tenant::new("x".repeat(MAX_SEGMENT_LEN)).is_ok());
        assert!(Tenant::new("acme-corp_01.eu").is_ok());
        assert!(Keyspace::new("a:b").is_err());
    }

    #[test]
    fn key_part_rejects_control_characters_and_empty() {
        let scope = Keyspace::new("p").unwrap().scope(&t("1"), &m("m"));
        assert!(scope.key("").is_err());
        assert!(scope.key("a\r\nDEL x").is_err());
        assert!(scope.key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert_eq!(
            scope.key_parts(&["GET", "/a"]).unwrap(),
            "p:tenant:{1}:m:GET:/a"
        );
        assert!(scope.key_parts(&[]).is_err());
    }

    #[test]
    fn deserialising_a_tenant_validates_it() {
        let ok: Tenant = serde_json::from_str("\"42\"").unwrap();
        assert_eq!(ok.as_str(), "42");
        let err = serde_json::from_str::<Tenant>("\"4*\"").unwrap_err();
        assert!(err.to_string().contains("forbidden character"), "{err}");
    }

    #[test]
    fn glob_matches_like_redis() {
        let cases: &[(&str, &str, bool)] = &[
            // Redis never matches an empty string, not even with `*`.
            ("*", "", false),
            ("a*", "abc", true),
            ("a*c", "abc", true),
            ("a*c", "abd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a[bc]d", "acd", true),
            ("a[^bc]d", "acd", false),
            ("a[^bc]d", "axd", true),
            ("a[a-c]d", "abd", true),
            ("a[c-a]d", "abd", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("p:tenant:{1}:*", "p:tenant:{10}:x", false),
            ("p:tenant:{1}:*", "p:tenant:{1}:x", true),
            ("*:x", "a:b:x", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(glob_matches(p.as_bytes(), s.as_bytes()), *want, "{p} ~ {s}");
        }
    }
}
