//! Where a cache entry and its markers live: the key shapes, in one place.
//!
//! An entry is `{root}tenant:{t}:{module}:{key part}` (the key part hashed when it
//! is long or unfit); its markers are `{root}tenant:{t}:_larder:gen` (the tenant's)
//! and `…:_larder:gen:{module}` (the module's); a stampede lease is
//! `…:_larder:lease:{module}:{key part}`. `{root}` is the cache component's root,
//! `{prefix}:cache:`.

use std::sync::OnceLock;

use larder_core::redis;
use larder_core::{Module, Tenant};

/// Key parts longer than this, or holding characters unfit for a key, are hashed.
pub(crate) const MAX_PLAIN_KEY: usize = 200;

/// A marker key as a command argument: `{base}{system}:gen[:{module}]`, written into
/// the command without a string of its own.
pub(crate) struct MarkerKey<'a> {
    /// The tenant's base, `{prefix}:cache:tenant:{t}:`.
    pub(crate) base: &'a str,
    pub(crate) system: &'a str,
    /// The module, for a module's marker.
    pub(crate) module: Option<&'a str>,
}

impl<'a> MarkerKey<'a> {
    /// The key's pieces, in order: the one definition of a marker key's form.
    fn pieces(&self) -> [&str; 5] {
        let (sep, module) = self.module.map_or(("", ""), |m| (":", m));
        [self.base, self.system, ":gen", sep, module]
    }

    /// The marker key `key` is, if it is one of the reserved module `system`'s (the
    /// inverse of [`pieces`](Self::pieces); module names hold no `:`).
    pub(crate) fn parse(key: &'a str, system: &'a str) -> Option<Self> {
        let before_gen = |head: &'a str| head.strip_suffix(":gen")?.strip_suffix(system);
        let (base, module) = match before_gen(key) {
            Some(base) => (base, None),
            None => {
                let (head, module) = key.rsplit_once(':')?;
                (before_gen(head)?, Some(module))
            }
        };
        Some(Self {
            base,
            system,
            module,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.pieces().iter().map(|p| p.len()).sum()
    }

    /// The key as a string of its own.
    pub(crate) fn to_key(&self) -> String {
        let mut key = String::with_capacity(self.len());
        for piece in self.pieces() {
            key.push_str(piece);
        }
        key
    }
}

impl redis::ToRedisArgs for MarkerKey<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write as _;
        let mut w = out.writer_for_next_arg();
        for piece in self.pieces() {
            // Into the command's buffer: cannot fail.
            let _ = w.write_all(piece.as_bytes());
        }
    }
}

/// Where one cache key lives.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) tenant: Tenant,
    pub(crate) module: Module,
    pub(crate) entry: String,
    /// The length of the entry key's `{prefix}:cache:tenant:{tenant}:` part.
    pub(crate) tenant_base: usize,
    /// The module marker's key, built on first use by the paths that need the keys
    /// as strings (a hit writes them into its command), and the length of the tenant
    /// marker's key, which is its prefix: `…:gen` and `…:gen:{module}`.
    pub(crate) markers: OnceLock<(String, usize)>,
    pub(crate) lease: String,
}

impl Keys {
    /// The entry key's `{prefix}:cache:tenant:{tenant}:` part: the tenant's marker keys
    /// start with it, and the tracking table is keyed by it.
    pub(crate) fn tenant_base(&self) -> &str {
        &self.entry[..self.tenant_base]
    }
}

/// The key part as stored: itself when it is short and plain, else a hash of it
/// (`#h:…`, which no plain key part starts with).
pub(crate) fn safe_key(key: &str) -> std::borrow::Cow<'_, str> {
    let plain = !key.is_empty()
        && key.len() <= MAX_PLAIN_KEY
        && !key.starts_with('#')
        && !key.chars().any(char::is_control);
    if plain {
        std::borrow::Cow::Borrowed(key)
    } else {
        std::borrow::Cow::Owned(format!(
            "#h:{:032x}",
            xxhash_rust::xxh3::xxh3_128(key.as_bytes())
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    const SYSTEM_MODULE: &str = "_larder";

    #[test]
    fn a_marker_key_reads_back_as_the_pieces_it_was_written_from() {
        let base = "app:tenant:{1}:";
        for module in [None, Some("balance"), Some("gen")] {
            let key = MarkerKey {
                base,
                system: SYSTEM_MODULE,
                module,
            }
            .to_key();
            let back = MarkerKey::parse(&key, SYSTEM_MODULE).unwrap();
            assert_eq!((back.base, back.module), (base, module), "{key}");
        }
        for other in [
            "app:tenant:{1}:balance:x",
            "app:tenant:{1}:_larder:gen:a:b",
            "",
        ] {
            assert!(MarkerKey::parse(other, SYSTEM_MODULE).is_none(), "{other}");
        }
    }

    #[test]
    fn hostile_and_long_keys_are_hashed() {
        assert_eq!(safe_key("GET:/a?b=1"), "GET:/a?b=1");
        for k in ["", "a\nb", "#h:00", &"x".repeat(MAX_PLAIN_KEY + 1)] {
            let s = safe_key(k);
            assert!(s.starts_with("#h:") && s.len() == 35, "{k:?} -> {s}");
        }
        assert_ne!(safe_key("a\nb"), safe_key("a\nc"));
    }
}
