//! The in-process tier: sessions in a bounded moka cache, with the same semantics as
//! the Redis scripts (no resurrection, read-only after rotation, idle and absolute
//! expiry). Used when no Redis is configured, and while Redis is down under
//! [`Degraded::InMemory`](crate::Degraded::InMemory).

use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::Op;

use crate::record::{Loaded, Written};

#[derive(Debug, Clone)]
pub(crate) struct LocalRecord {
    pub(crate) data: Arc<[u8]>,
    pub(crate) created: u64,
    pub(crate) touched: u64,
    absolute: u64,
    pub(crate) expires: u64,
    pub(crate) user: Option<String>,
    pub(crate) identity: Option<String>,
    read_only: bool,
}

struct UntilExpires;

impl moka::Expiry<String, Arc<LocalRecord>> for UntilExpires {
    fn expire_after_create(
        &self,
        _key: &String,
        r: &Arc<LocalRecord>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(r.expires.saturating_sub(now_ms())))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        r: &Arc<LocalRecord>,
        _now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(Duration::from_millis(r.expires.saturating_sub(now_ms())))
    }
}

pub(crate) use larder_core::time::now_ms;

pub(crate) struct LocalTier {
    records: moka::sync::Cache<String, Arc<LocalRecord>>,
}

/// One write, as the Redis script takes it.
pub(crate) struct Write<'a> {
    pub(crate) create: bool,
    pub(crate) data: &'a [u8],
    pub(crate) idle: u64,
    pub(crate) absolute: u64,
    pub(crate) user: Option<&'a str>,
    pub(crate) identity: Option<&'a str>,
}

impl LocalTier {
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            records: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpires)
                .build(),
        }
    }

    fn live(&self, key: &str, now: u64) -> Option<Arc<LocalRecord>> {
        let r = self.records.get(key)?;
        if r.expires <= now || r.absolute <= now {
            self.records.invalidate(key);
            return None;
        }
        Some(r)
    }

    pub(crate) fn load(&self, key: &str, idle: u64, touch: u64) -> Option<Loaded> {
        let now = now_ms();
        let r = self.live(key, now)?;
        let r = if !r.read_only && now.saturating_sub(r.touched) >= touch {
            let mut t = (*r).clone();
            t.touched = now;
            t.expires = now.saturating_add(idle).min(t.absolute);
            let t = Arc::new(t);
            self.records.insert(key.to_owned(), Arc::clone(&t));
            t
        } else {
            r
        };
        Some(Loaded {
            data: r.data.to_vec(),
            created_ms: r.created,
            touched_ms: r.touched,
            expires_ms: r.expires,
            read_only: r.read_only,
        })
    }

    /// Writes a record; past `max_per_user` live records of its user in its scope,
    /// the oldest go (as `write.lua` does).
    pub(crate) fn write(&self, key: &str, w: &Write<'_>, max_per_user: u64) -> Written {
        let now = now_ms();
        let mut outcome = Written::Gone;
        self.records
            .entry(key.to_owned())
            .and_compute_with(|current| {
                let current = current
                    .map(moka::Entry::into_value)
                    .filter(|r| r.expires > now && r.absolute > now);
                let (created, absolute) = match (&current, w.create) {
                    (Some(_), true) => {
                        outcome = Written::Collision;
                        return Op::Nop;
                    }
                    (None, true) => (now, now.saturating_add(w.absolute)),
                    (Some(r), false) if !r.read_only => (r.created, r.absolute),
                    (_, false) => {
                        outcome = Written::Gone;
                        return Op::Nop;
                    }
                };
                outcome = Written::Stored;
                Op::Put(Arc::new(LocalRecord {
                    data: Arc::from(w.data),
                    created,
                    touched: now,
                    absolute,
                    expires: now.saturating_add(w.idle).min(absolute),
                    user: w.user.map(str::to_owned),
                    identity: w.identity.map(str::to_owned),
                    read_only: false,
                }))
            });
        if let (Written::Stored, Some(user)) = (outcome, w.user) {
            // `{base}s:{hash}`: the hash holds no `:`.
            let prefix = &key[..key.rfind(':').map_or(0, |i| i + 1)];
            let mut mine = self.of_user(prefix, user);
            let cap = usize::try_from(max_per_user).unwrap_or(usize::MAX);
            if mine.len() > cap {
                mine.sort_by_key(|(_, r)| r.absolute);
                for (old, _) in &mine[..mine.len() - cap] {
                    self.records.invalidate(old.as_str());
                }
            }
        }
        outcome
    }

    pub(crate) fn rotate(&self, key: &str, grace: u64) {
        let now = now_ms();
        if grace == 0 {
            self.records.invalidate(key);
            return;
        }
        if let Some(r) = self.live(key, now) {
            let mut t = (*r).clone();
            t.read_only = true;
            t.expires = t.expires.min(now.saturating_add(grace));
            self.records.insert(key.to_owned(), Arc::new(t));
        }
    }

    pub(crate) fn delete(&self, key: &str) {
        self.records.invalidate(key);
    }

    /// Live records under `prefix` (the scope's `s:` prefix) owned by `user`.
    /// How many live sessions (not rotated away) have keys starting with `prefix`.
    pub(crate) fn live_in(&self, prefix: &str) -> u64 {
        let now = now_ms();
        let live = self.records.iter().filter(|(k, r)| {
            k.starts_with(prefix) && !r.read_only && r.expires > now && r.absolute > now
        });
        live.count() as u64
    }

    pub(crate) fn of_user(&self, prefix: &str, user: &str) -> Vec<(String, Arc<LocalRecord>)> {
        let now = now_ms();
        self.records
            .iter()
            .filter(|(k, r)| {
                k.starts_with(prefix)
                    && r.user.as_deref() == Some(user)
                    && r.expires > now
                    && r.absolute > now
            })
            .map(|(k, r)| (k.as_str().to_owned(), r))
            .collect()
    }
}
