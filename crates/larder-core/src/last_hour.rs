//! Counts per name per minute over the last hour, kept in process: what the
//! dashboard draws for one instance (the rate limiter's decisions per policy, the
//! cache's look-ups per module and tenant). Prometheus has every instance's totals;
//! this is the recent history a page can show without a metrics server.
//!
//! The names one minute holds are bounded ([`LastHour::new`]): past the bound, new
//! names are counted under [`OTHERS`], so that a spray of fresh tenant ids or keys
//! cannot grow the table.
//!
//! ```
//! use std::sync::Arc;
//! use larder_core::last_hour::LastHour;
//!
//! let mut hits: LastHour<u64> = LastHour::new(100);
//! let t0 = 1_000 * 60_000;
//! *hits.count(&Arc::from("acme"), t0) += 1;
//! *hits.count(&Arc::from("acme"), t0 + 60_000) += 2;
//! let minutes = hits.report(t0 + 60_000);
//! assert_eq!(minutes.len(), 2);
//! assert_eq!(minutes[1].counts["acme"], 2);
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

/// How many minutes are kept.
pub const MINUTES: u64 = 60;

/// The name that counts a minute's names past its bound.
pub const OTHERS: &str = "(others)";

/// Counts of type `C` per name per minute, for the last [`MINUTES`] minutes.
#[derive(Debug)]
pub struct LastHour<C> {
    /// Minute number (ms since the epoch / 60,000) and counts by name, oldest first.
    minutes: VecDeque<(u64, BTreeMap<Arc<str>, C>)>,
    /// Names one minute holds at most, [`OTHERS`] included.
    names: usize,
    others: Arc<str>,
}

/// One minute of a [`LastHour`] report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MinuteCounts<C> {
    /// The minute's start, ms since the epoch.
    pub start_ms: u64,
    /// Counts by name.
    pub counts: BTreeMap<String, C>,
}

impl<C: Default + Clone> LastHour<C> {
    /// Empty, holding at most `names` names per minute (at least 2).
    #[must_use]
    pub fn new(names: usize) -> Self {
        Self {
            minutes: VecDeque::new(),
            names: names.max(2),
            others: Arc::from(OTHERS),
        }
    }

    /// `name`'s counts in the minute of `now_ms`, to add to: started at
    /// `C::default()` if new, or [`OTHERS`]' counts when the minute is full. Minutes
    /// older than the hour are dropped.
    pub fn count(&mut self, name: &Arc<str>, now_ms: u64) -> &mut C {
        let minute = now_ms / 60_000;
        if self.minutes.back().is_none_or(|(m, _)| *m != minute) {
            self.minutes.push_back((minute, BTreeMap::new()));
            while self
                .minutes
                .front()
                .is_some_and(|(m, _)| *m + MINUTES <= minute)
            {
                self.minutes.pop_front();
            }
        }
        let names = self.names;
        let Some((_, counts)) = self.minutes.back_mut() else {
            unreachable!("the current minute was just pushed");
        };
        let name = if counts.contains_key(name) || counts.len() < names - 1 {
            name
        } else {
            &self.others
        };
        counts.entry(Arc::clone(name)).or_default()
    }

    /// The minutes of the last hour as of `now_ms` that counted anything, oldest
    /// first.
    #[must_use]
    pub fn report(&self, now_ms: u64) -> Vec<MinuteCounts<C>> {
        let minute = now_ms / 60_000;
        self.minutes
            .iter()
            .filter(|(m, _)| *m + MINUTES > minute)
            .map(|(m, counts)| MinuteCounts {
                start_ms: m * 60_000,
                counts: counts
                    .iter()
                    .map(|(name, c)| (name.to_string(), c.clone()))
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_kept_and_older_minutes_dropped() {
        let mut h: LastHour<u64> = LastHour::new(10);
        let a: Arc<str> = Arc::from("a");
        let t0 = 5_000 * 60_000;
        *h.count(&a, t0) += 1;
        *h.count(&a, t0 + 59_999) += 1;
        *h.count(&a, t0 + 30 * 60_000) += 1;
        let report = h.report(t0 + 30 * 60_000);
        assert_eq!(report.len(), 2);
        assert_eq!((report[0].start_ms, report[0].counts["a"]), (t0, 2));
        // An hour after the first minute, it is gone from the report, and from the
        // table once the next count comes.
        assert_eq!(h.report(t0 + 60 * 60_000).len(), 1);
        *h.count(&a, t0 + 60 * 60_000) += 1;
        assert_eq!(h.minutes.len(), 2);
    }

    #[test]
    fn names_past_the_bound_are_counted_as_others() {
        let mut h: LastHour<u64> = LastHour::new(3);
        for name in ["a", "b", "c", "d", "a"] {
            *h.count(&Arc::from(name), 0) += 1;
        }
        let counts = &h.report(0)[0].counts;
        assert_eq!(counts.len(), 3);
        assert_eq!((counts["a"], counts["b"], counts[OTHERS]), (2, 1, 2));
        // The next minute starts empty.
        *h.count(&Arc::from("d"), 60_000) += 1;
        assert_eq!(h.report(60_000)[1].counts["d"], 1);
    }
}
