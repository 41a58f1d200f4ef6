//! The rejections one limiter made over the last hour, for the dashboard: how many
//! per policy per minute, and the keys rejected most. Kept in process (one
//! instance's view: Prometheus's `larder_ratelimit_decisions_total` has every
//! instance's decisions by policy), and only for rejections, so an admitted
//! request pays nothing for it.
//!
//! Keys are kept hashed (SHA-256, the first 16 bytes in hex): a counted key may be
//! an API key or a client's address. [`key_hash`] gives a key's hash, to find it in
//! the list.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::policy::digest;

/// How many minutes are kept.
const MINUTES: u64 = 60;
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

/// What a limiter rejected in the last hour ([`crate::RateLimiter::rejections`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RejectionReport {
    /// Each minute of the last hour with a rejection, oldest first.
    pub minutes: Vec<RejectedMinute>,
    /// The keys rejected most in the last hour, most first.
    pub top: Vec<TopKey>,
}

/// Rejections in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedMinute {
    /// The minute's start, ms since the epoch.
    pub start_ms: u64,
    /// Rejections by policy.
    pub by_policy: BTreeMap<String, u64>,
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

#[derive(Default)]
pub(crate) struct Rejections(Mutex<State>);

#[derive(Default)]
struct State {
    /// Minute number and rejections by policy, oldest first.
    minutes: VecDeque<(u64, BTreeMap<Arc<str>, u64>)>,
    /// By policy and key hash: rejections and the last one's minute.
    keys: HashMap<(Arc<str>, String), (u64, u64)>,
    /// The minute keys older than the hour were last dropped in.
    pruned: u64,
}

impl Rejections {
    /// Counts a rejection of `key` by `policy` at `now_ms`.
    pub(crate) fn record(&self, policy: &Arc<str>, key: &str, now_ms: u64) {
        let minute = now_ms / 60_000;
        let hash = key_hash(key);
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if s.minutes.back().is_none_or(|(m, _)| *m != minute) {
            s.minutes.push_back((minute, BTreeMap::new()));
            while s
                .minutes
                .front()
                .is_some_and(|(m, _)| *m + MINUTES <= minute)
            {
                s.minutes.pop_front();
            }
        }
        if let Some((_, by_policy)) = s.minutes.back_mut() {
            *by_policy.entry(Arc::clone(policy)).or_default() += 1;
        }
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
    pub(crate) fn report(&self, now_ms: u64) -> RejectionReport {
        let minute = now_ms / 60_000;
        let s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let recent = |m: u64| m + MINUTES > minute;
        let minutes = s
            .minutes
            .iter()
            .filter(|(m, _)| recent(*m))
            .map(|(m, by_policy)| RejectedMinute {
                start_ms: m * 60_000,
                by_policy: by_policy.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
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
        RejectionReport { minutes, top }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_minute_and_per_key_for_an_hour() {
        let r = Rejections::default();
        let (ip, login): (Arc<str>, Arc<str>) = (Arc::from("ip"), Arc::from("login"));
        let t0 = 1_000 * 60_000;
        for _ in 0..3 {
            r.record(&ip, "203.0.113.9", t0);
        }
        r.record(&login, "alice", t0 + 1);
        r.record(&ip, "198.51.100.1", t0 + 60_000);
        let report = r.report(t0 + 60_000);
        assert_eq!(report.minutes.len(), 2);
        assert_eq!(report.minutes[0].by_policy["ip"], 3);
        assert_eq!(report.minutes[0].by_policy["login"], 1);
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
        let r = Rejections::default();
        let ip: Arc<str> = Arc::from("ip");
        for i in 0..(KEYS + 500) {
            r.record(&ip, &format!("10.0.{}.{}", i / 256, i % 256), 0);
        }
        let s = r.0.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(s.keys.len(), KEYS);
        assert_eq!(s.minutes[0].1[&ip], (KEYS + 500) as u64);
    }
}
