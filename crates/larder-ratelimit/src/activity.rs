//! What one limiter decided over the last hour, for the dashboard: how many
//! requests each policy admitted and rejected per minute, and the keys rejected
//! most. Kept in process (one instance's view: Prometheus's
//! `larder_ratelimit_decisions_total` has every instance's decisions by policy).
//! An admitted request adds one to its minute's count; only a rejection hashes its
//! key.
//!
//! Keys are kept hashed (SHA-256, the first 16 bytes in hex): a counted key may be
//! an API key or a client's address. [`key_hash`] gives a key's hash, to find it in
//! the list.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use larder_core::last_hour::{LastHour, MINUTES};

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
    /// Each minute of the last hour with a decision, oldest first.
    pub minutes: Vec<ActivityMinute>,
    /// The keys rejected most in the last hour, most first.
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

pub(crate) struct Decisions(Mutex<State>);

impl Default for Decisions {
    fn default() -> Self {
        Self(Mutex::new(State {
            minutes: LastHour::new(POLICIES),
            keys: HashMap::new(),
            pruned: 0,
        }))
    }
}

struct State {
    /// Decisions by policy per minute.
    minutes: LastHour<PolicyCounts>,
    /// By policy and key hash: rejections and the last one's minute.
    keys: HashMap<(Arc<str>, String), (u64, u64)>,
    /// The minute keys older than the hour were last dropped in.
    pruned: u64,
}

impl Decisions {
    /// Counts a request `policies` admitted at `now_ms`.
    pub(crate) fn allowed<'a>(&self, policies: impl Iterator<Item = &'a Arc<str>>, now_ms: u64) {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for policy in policies {
            s.minutes.count(policy, now_ms).allowed += 1;
        }
    }

    /// Counts a rejection of `key` by `policy` at `now_ms`.
    pub(crate) fn rejected(&self, policy: &Arc<str>, key: &str, now_ms: u64) {
        let minute = now_ms / 60_000;
        let hash = key_hash(key);
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        s.minutes.count(policy, now_ms).rejected += 1;
        if s.pruned != minute {
            s.pruned = minute;
            s.keys.retain(|_, (_, last)| *last + MINUTES > minute);
        }
        let full = s.keys.len() >= KEYS;
        match s.keys.get_mut(&(Arc::clone(policy), hash.clone())) {
            Some((n, last)) => {
                *n += 1;
                *last = minute;
            }
            None if !full => {
                s.keys.insert((Arc::clone(policy), hash), (1, minute));
            }
            None => {}
        }
    }

    /// The last hour as of `now_ms`.
    pub(crate) fn report(&self, now_ms: u64) -> Activity {
        let minute = now_ms / 60_000;
        let s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let recent = |m: u64| m + MINUTES > minute;
        let minutes = s
            .minutes
            .report(now_ms)
            .into_iter()
            .map(|m| ActivityMinute {
                start_ms: m.start_ms,
                by_policy: m.counts,
            })
            .collect();
        let mut top: Vec<TopKey> = s
            .keys
            .iter()
            .filter(|(_, (_, last))| recent(*last))
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
        Activity { minutes, top }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_minute_and_per_key_for_an_hour() {
        let r = Decisions::default();
        let (ip, login): (Arc<str>, Arc<str>) = (Arc::from("ip"), Arc::from("login"));
        let t0 = 1_000 * 60_000;
        for _ in 0..3 {
            r.rejected(&ip, "203.0.113.9", t0);
        }
        r.rejected(&login, "alice", t0 + 1);
        r.allowed([&ip, &login].into_iter(), t0 + 2);
        r.allowed([&ip].into_iter(), t0 + 3);
        r.rejected(&ip, "198.51.100.1", t0 + 60_000);
        let report = r.report(t0 + 60_000);
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
        let later = r.report(t0 + 60 * 60_000);
        assert_eq!(later.minutes.len(), 1);
        assert_eq!(later.top.len(), 1);
    }

    #[test]
    fn a_spray_of_fresh_keys_cannot_grow_the_table() {
        let r = Decisions::default();
        let ip: Arc<str> = Arc::from("ip");
        for i in 0..(KEYS + 500) {
            r.rejected(&ip, &format!("10.0.{}.{}", i / 256, i % 256), 0);
        }
        let s = r.0.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(s.keys.len(), KEYS);
        assert_eq!(
            s.minutes.report(0)[0].counts["ip"].rejected,
            (KEYS + 500) as u64
        );
    }
}
