//! The in-process tier: a moka cache bounded in bytes, with per-entry expiry.
//!
//! It is the store when no Redis is configured (the embedded default a newcomer gets
//! from `cargo run`); its invalidation markers live in the cache service.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use larder_core::keyspace::glob_matches;

use crate::entry::{now_ms, Meta};
use crate::http::StoredResponse;

/// An entry as a look-up found it. Shared: the in-process tiers hold it behind an
/// `Arc`, so a hit on them copies neither the markers nor the payload.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Freshness and the markers the entry was stamped with.
    pub(crate) meta: Meta,
    /// The codec's bytes or a stored response.
    pub(crate) payload: Bytes,
    /// The stored response decoded once and shared by the entry's later hits, so a
    /// hit on an in-process tier parses nothing.
    response: OnceLock<Arc<StoredResponse>>,
}

impl Entry {
    /// A shared entry.
    pub(crate) fn new(meta: Meta, payload: Bytes) -> Arc<Self> {
        Arc::new(Self {
            meta,
            payload,
            response: OnceLock::new(),
        })
    }

    /// Where the decoded response is kept.
    #[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
    pub(crate) fn response(&self) -> &OnceLock<Arc<StoredResponse>> {
        &self.response
    }
}

/// Entries expire with their stale window, or sooner when the tier has a cap.
struct ExpireWithEntry {
    cap: Option<Duration>,
}

impl moka::Expiry<String, Arc<Entry>> for ExpireWithEntry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _now: Instant,
    ) -> Option<Duration> {
        let own = Duration::from_millis(value.meta.stale_until_ms.saturating_sub(now_ms()));
        Some(self.cap.map_or(own, |cap| own.min(cap)))
    }

    fn expire_after_update(
        &self,
        key: &String,
        value: &Arc<Entry>,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

/// Entries held in this process. Cheap to clone.
#[derive(Clone)]
pub(crate) struct LocalTier {
    entries: moka::sync::Cache<String, Arc<Entry>>,
}

impl std::fmt::Debug for LocalTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTier")
            .field("entries", &self.entries.entry_count())
            .field("bytes", &self.entries.weighted_size())
            .finish()
    }
}

impl LocalTier {
    /// A tier of at most `max_bytes`; with `cap`, no entry lives longer than it.
    pub(crate) fn new(max_bytes: u64, cap: Option<Duration>) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Arc<Entry>| {
                u32::try_from(k.len() + v.payload.len() + 64).unwrap_or(u32::MAX)
            })
            .expire_after(ExpireWithEntry { cap })
            .build();
        Self { entries }
    }

    /// The entry under `key` (a reference-count increment).
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.entries.get(key)
    }

    pub(crate) fn insert(&self, key: String, entry: Arc<Entry>) {
        self.entries.insert(key, entry);
    }

    pub(crate) fn remove(&self, key: &str) {
        self.entries.invalidate(key);
    }

    /// Removes the keys matching a Redis glob; returns how many.
    pub(crate) fn remove_matching(&self, pattern: &str) -> u64 {
        let mut n = 0;
        for (key, _) in &self.entries {
            if glob_matches(pattern.as_bytes(), key.as_bytes()) {
                self.entries.invalidate(key.as_str());
                n += 1;
            }
        }
        n
    }

    /// Removes the keys starting with `prefix`; returns how many.
    pub(crate) fn remove_prefix(&self, prefix: &str) -> u64 {
        let mut n = 0;
        for (key, _) in &self.entries {
            if key.starts_with(prefix) {
                self.entries.invalidate(key.as_str());
                n += 1;
            }
        }
        n
    }

    /// Drops everything.
    pub(crate) fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Applies an invalidation message from [`message`] (unknown ones clear all).
    pub(crate) fn apply(&self, msg: &str) {
        match msg.split_once(' ') {
            Some(("k", key)) => self.remove(key),
            Some(("p", prefix)) => {
                self.remove_prefix(prefix);
            }
            Some(("g", glob)) => {
                self.remove_matching(glob);
            }
            _ => self.clear(),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

/// An invalidation message for other instances' tiers: `k <key>`, `p <prefix>` or
/// `g <glob>`.
pub(crate) fn message(kind: char, target: &str) -> String {
    let mut m = String::with_capacity(target.len() + 2);
    m.push(kind);
    m.push(' ');
    m.push_str(target);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_invalidation_messages() {
        let tier = LocalTier::new(1 << 20, Some(Duration::from_secs(5)));
        let meta = Meta::new(
            (String::new(), String::new()),
            Duration::from_secs(60),
            Duration::ZERO,
        );
        for k in ["p:tenant:{1}:a:x", "p:tenant:{1}:b:y", "p:tenant:{2}:a:x"] {
            tier.insert(
                k.to_owned(),
                Entry::new(meta.clone(), Bytes::from_static(b"1")),
            );
        }
        tier.apply(&message('k', "p:tenant:{1}:b:y"));
        assert!(tier.get("p:tenant:{1}:b:y").is_none());
        tier.apply(&message('p', "p:tenant:{1}:"));
        assert!(tier.get("p:tenant:{1}:a:x").is_none());
        assert!(tier.get("p:tenant:{2}:a:x").is_some());
        tier.apply(&message('g', "p:tenant:{2}:*"));
        assert!(tier.get("p:tenant:{2}:a:x").is_none());
    }
}
