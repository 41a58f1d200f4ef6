//! The in-process tier: a moka cache bounded in bytes, with per-entry expiry.
//!
//! It is the store when no Redis is configured (the embedded default a newcomer gets
//! from `cargo run`); its invalidation markers live in the cache service.

use std::time::{Duration, Instant};

use bytes::Bytes;
use larder_core::keyspace::glob_matches;

use crate::entry::{now_ms, Meta};

#[derive(Clone)]
struct LocalEntry {
    meta: Meta,
    payload: Bytes,
}

struct ExpireWithEntry;

impl moka::Expiry<String, LocalEntry> for ExpireWithEntry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &LocalEntry,
        _now: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(
            value.meta.stale_until_ms.saturating_sub(now_ms()),
        ))
    }

    fn expire_after_update(
        &self,
        key: &String,
        value: &LocalEntry,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

/// Entries held in this process. Cheap to clone.
#[derive(Clone)]
pub(crate) struct LocalTier {
    entries: moka::sync::Cache<String, LocalEntry>,
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
    pub(crate) fn new(max_bytes: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &LocalEntry| {
                u32::try_from(k.len() + v.payload.len() + 64).unwrap_or(u32::MAX)
            })
            .expire_after(ExpireWithEntry)
            .build();
        Self { entries }
    }

    pub(crate) fn get(&self, key: &str) -> Option<(Meta, Bytes)> {
        self.entries.get(key).map(|e| (e.meta, e.payload))
    }

    pub(crate) fn insert(&self, key: String, meta: Meta, payload: Bytes) {
        self.entries.insert(key, LocalEntry { meta, payload });
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

    pub(crate) fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}
