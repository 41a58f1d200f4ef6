//! The in-process tier: a moka cache bounded in bytes, with per-entry expiry.
//!
//! It is the store when no Redis is configured (the embedded default a newcomer gets
//! from `cargo run`); its invalidation markers live in the cache service.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use larder_core::keyspace::glob_matches;

use crate::entry::{now_ms, Meta};
use crate::http::stored::Servable;

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
    response: OnceLock<Arc<Servable>>,
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
    pub(crate) fn response(&self) -> &OnceLock<Arc<Servable>> {
        &self.response
    }
}

/// The last decoded copy of recent Redis entries, one per slot (slots chosen by a
/// hash of the key): a hit whose reply is byte for byte the bytes a slot decoded
/// reuses that decode (header, stored response) instead of parsing again. Equal bytes
/// decode equally, and every reply is still Redis's, so this changes no answer; it is
/// not a tier. Bounded: `SLOTS` entries of at most `MAX_BYTES` each.
pub(crate) struct DecodeMemo {
    slots: Box<[Slot]>,
}

/// The bytes a slot decoded last, and what they decoded to.
type Slot = Mutex<Option<(Bytes, Arc<Entry>)>>;

impl DecodeMemo {
    const SLOTS: usize = 128;
    /// Larger entries are decoded every time (copying them is the larger cost).
    pub(crate) const MAX_BYTES: usize = 32 * 1024;

    pub(crate) fn new() -> Self {
        Self {
            slots: (0..Self::SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, key: &str) -> &Slot {
        // Slots are a power of two; a key's slot only decides where its copy lives.
        let i = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize) & (Self::SLOTS - 1);
        &self.slots[i]
    }

    /// The entry decoded from exactly `raw`, if `key`'s slot holds it.
    pub(crate) fn get(&self, key: &str, raw: &Bytes) -> Option<Arc<Entry>> {
        let slot = self
            .slot(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some((bytes, entry)) if bytes == raw => Some(Arc::clone(entry)),
            _ => None,
        }
    }

    /// Keeps `entry`, decoded from `raw`, in `key`'s slot.
    pub(crate) fn put(&self, key: &str, raw: Bytes, entry: &Arc<Entry>) {
        if raw.len() <= Self::MAX_BYTES {
            let old = self
                .slot(key)
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .replace((raw, Arc::clone(entry)));
            drop(old);
        }
    }
}

impl std::fmt::Debug for DecodeMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeMemo")
            .field("slots", &self.slots.len())
            .finish()
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
    entries: moka::sync::Cache<String, Arc<Entry>, foldhash::fast::RandomState>,
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
            // foldhash, seeded at random per process (why, and why it is safe:
            // "Hashing the cache's maps" in BENCHMARKS.md).
            .build_with_hasher(foldhash::fast::RandomState::default());
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
    fn the_decode_memo_answers_only_for_equal_bytes_and_keeps_no_large_entry() {
        let memo = DecodeMemo::new();
        let meta = Meta::new(
            ("t".into(), "m".into()),
            Duration::from_secs(60),
            Duration::ZERO,
        );
        let raw = Bytes::from_static(b"LC1 t m 1 2 3\n{}");
        let entry = Entry::new(meta.clone(), raw.slice(14..));
        memo.put("k", raw.clone(), &entry);
        let found = memo.get("k", &Bytes::copy_from_slice(&raw)).unwrap();
        assert!(Arc::ptr_eq(&found, &entry));
        assert!(memo
            .get("k", &Bytes::from_static(b"LC1 t m 1 2 3\n{ }"))
            .is_none());
        // Slots are by key: a key of the same slot with the same bytes gets the same
        // decode (equal bytes decode equally), a key of another slot gets nothing.
        let same_slot = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| std::ptr::eq(memo.slot(k), memo.slot("k")))
            .unwrap();
        let other_slot = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| !std::ptr::eq(memo.slot(k), memo.slot("k")))
            .unwrap();
        assert!(Arc::ptr_eq(&memo.get(&same_slot, &raw).unwrap(), &entry));
        assert!(memo.get(&other_slot, &raw).is_none());
        let big = Bytes::from(vec![b'x'; DecodeMemo::MAX_BYTES + 1]);
        memo.put("big", big.clone(), &Entry::new(meta, big.clone()));
        assert!(memo.get("big", &big).is_none());
    }

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
