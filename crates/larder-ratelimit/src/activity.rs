//! What a limiter decided over the last hour, for the dashboard: how many
//! requests each policy admitted and rejected per minute, every instance's added
//! up through Redis ([`SharedHour`]), and the keys this instance rejected most. An
//! admitted request adds one to its minute's count in process; only a rejection
//! hashes its key.
//!
//! Keys are kept hashed (SHA-256, the first 16 bytes in hex): a counted key may be
//! an API key or a client's address. [`key_hash`] gives a key's hash, to find it in
//! the list.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use larder_core::last_hour::{Fields, SharedHour, MINUTES};
use larder_core::{Error, Handle};

use serde::Serialize;

use crate::policy::digest;

/// How many policies one minute lists at most (more are counted together).
const POLICIES: usize = 100;
/// How many distinct rejected keys are kept at most; past it, new keys are counted
/// in their minute but not listed (a spray of fresh keys cannot grow the table).
const KEYS: usize = 10_000;
/// How many keys [`Rejections::report`] lists.
const TOP: usize = 20;

/// The hash a key is listed under.
#[must_use]
pub fn key_hash(key: &str) -> String {
    digest(key.as_bytes())
}

/// What a limiter decided in the last hour ([`crate::RateLimiter::activity`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// Each minute of the last hour with a decision, oldest first (every instance's).
    pub minutes: Vec<ActivityMinute>,
    /// The keys this instance rejected most in the last hour, most first.
    pub top: Vec<TopKey>,
}

/// Decisions in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivityMinute {
    /// The minute's start, ms since the epoch.
    pub start_ms: u64,
    /// Decisions by policy.
    pub by_policy: BTreeMap<String, PolicyCounts>,
}

/// One policy's decisions in a minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PolicyCounts {
    /// Requests it admitted (a request rejected by another policy is not counted).
    pub allowed: u64,
    /// Requests it rejected.
    pub rejected: u64,
}

impl Fields for PolicyCounts {
    const NAMES: &'static [&'static str] = &["allowed", "rejected"];

    fn value(&self, i: usize) -> u64 {
        [self.allowed, self.rejected].get(i).copied().unwrap_or(0)
    }

    fn add_value(&mut self, i: usize, n: u64) {
        match i {
            0 => self.allowed += n,
            1 => self.rejected += n,
            _ => {}
        }
    }
}

/// A key rejected often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopKey {
    /// The policy that rejected it.
    pub policy: String,
    /// The key's [`key_hash`].
    pub key_hash: String,
    /// Its rejections in the last hour (counted from its first one that was kept).
    pub rejected: u64,
    /// Its last rejection's minute, ms since the epoch.
    pub last_ms: u64,
}

pub(crate) struct Decisions {
    /// Decisions by policy per minute.
    minutes: SharedHour<PolicyCounts>,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    /// By policy and key hash: rejections and the last one's minute.
    counts: HashMap<(Arc<str>, String), (u64, u64)>,
    /// The minute keys older than the hour were last dropped in.
    pruned: u64,
}

impl Decisions {
    /// Decisions counted in hashes `{base}{minute}` with Redis, in process without.
    pub(crate) fn new(handle: &Handle, base: String) -> Self {
        Self {
            minutes: SharedHour::new(handle, base, POLICIES),
            keys: Mutex::default(),
        }
    }

    /// Counts a request `policies` admitted at `now_ms`.
    pub(crate) fn allowed<'a>(&self, policies: impl Iterator<Item = &'a Arc<str>>, now_ms: u64) {
        self.minutes
            .count_each(policies, now_ms, |c| c.allowed += 1);
    }

    /// Counts a rejection of `key` by `policy` at `now_ms`.
    pub(crate) fn rejected(&self, policy: &Arc<str>, key: &str, now_ms: u64) {
        let minute = now_ms / 60_000;
        let hash = key_hash(key);
        self.minutes.count(policy, now_ms, |c| c.rejected += 1);
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.pruned != minute {
            keys.pruned = minute;
            keys.counts.retain(|_, (_, last)| *last + MINUTES > minute);
        }
        let full = keys.counts.len() >= KEYS;
        match keys.counts.get_mut(&(Arc::clone(policy), hash.clone())) {
            Some((n, last)) => {
                *n += 1;
                *last = minute;
            }
            None if !full => {
                keys.counts.insert((Arc::clone(policy), hash), (1, minute));
            }
            None => {}
        }
    }

    /// Adds this instance's counts to Redis now.
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        self.minutes.flush().await
    }

    /// The last hour as of `now_ms`.
    pub(crate) async fn report(&self, now_ms: u64) -> Result<Activity, Error> {
        let minutes = self
            .minutes
            .report(now_ms)
            .await?
            .into_iter()
            .map(|m| ActivityMinute {
                start_ms: m.start_ms,
                by_policy: m.counts,
            })
            .collect();
        Ok(Activity {
            minutes,
            top: self.top(now_ms),
        })
    }

    /// The keys rejected most in the hour up to `now_ms`, most first.
    fn top(&self, now_ms: u64) -> Vec<TopKey> {
        let minute = now_ms / 60_000;
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let mut top: Vec<TopKey> = keys
            .counts
            .iter()
            .filter(|(_, (_, last))| last + MINUTES > minute)
            .map(|((policy, hash), (n, last))| TopKey {
                policy: policy.to_string(),
                key_hash: hash.clone(),
                rejected: *n,
                last_ms: last * 60_000,
            })
            .collect();
        top.sort_by(|a, b| {
            b.rejected
                .cmp(&a.rejected)
                .then(a.key_hash.cmp(&b.key_hash))
        });
        top.truncate(TOP);
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_per_minute_and_per_key_for_an_hour() {
        let r = Decisions::new(&Handle::in_process(), String::new());
        let (ip, login): (Arc<str>, Arc<str>) = (Arc::from("ip"), Arc::from("login"));
        let t0 = 1_000 * 60_000;
        for _ in 0..3 {
            r.rejected(&ip, "203.0.113.9", t0);
        }
        r.rejected(&login, "alice", t0 + 1);
        r.allowed([&ip, &login].into_iter(), t0 + 2);
        r.allowed([&ip].into_iter(), t0 + 3);
        r.rejected(&ip, "198.51.100.1", t0 + 60_000);
        let report = r.report(t0 + 60_000).await.unwrap();
        assert_eq!(report.minutes.len(), 2);
        let first = &report.minutes[0].by_policy;
        assert_eq!(
            first["ip"],
            PolicyCounts {
                allowed: 2,
                rejected: 3
            }
        );
        assert_eq!(
            first["login"],
            PolicyCounts {
                allowed: 1,
                rejected: 1
            }
        );
        assert_eq!(report.minutes[1].by_policy["ip"].allowed, 0);
        assert_eq!(report.minutes[1].start_ms, t0 + 60_000);
        assert_eq!(report.top[0].key_hash, key_hash("203.0.113.9"));
        assert_eq!(report.top[0].rejected, 3);
        assert_eq!(report.top.len(), 3);
        // No key is kept in the clear.
        let text = serde_json::to_string(&report).unwrap_or_default();
        assert!(!text.contains("203.0.113.9") && !text.contains("alice"));
        // An hour on, the first minute and its keys are gone.
        let later = r.report(t0 + 60 * 60_000).await.unwrap();
        assert_eq!(later.minutes.len(), 1);
        assert_eq!(later.top.len(), 1);
    }

    #[tokio::test]
    async fn a_spray_of_fresh_keys_cannot_grow_the_table() {
        let r = Decisions::new(&Handle::in_process(), String::new());
        let ip: Arc<str> = Arc::from("ip");
        for i in 0..(KEYS + 500) {
            r.rejected(&ip, &format!("10.0.{}.{}", i / 256, i % 256), 0);
        }
        let kept = r
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counts
            .len();
        assert_eq!(kept, KEYS);
        let report = r.report(0).await.unwrap();
        assert_eq!(
            report.minutes[0].by_policy["ip"].rejected,
            (KEYS + 500) as u64
        );
    }
}
