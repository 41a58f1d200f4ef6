//! Counts per name per minute over the last hour: what the dashboard draws (the
//! rate limiter's decisions per policy, the cache's look-ups per module and
//! tenant). Prometheus has every instance's totals; this is the recent history a
//! page can show without a metrics server.
//!
//! [`LastHour`] keeps one instance's counts in process. [`SharedHour`] adds up
//! every instance's through Redis: each instance counts in process and adds what it
//! counted to one hash per minute every [`FLUSH_EVERY`]; a report reads the hour's
//! hashes and this instance's counts not yet added.
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use serde::Serialize;

use crate::task::AbortOnDrop;
use crate::{Error, Handle};

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

/// Counts that a [`SharedHour`] adds up in Redis: a fixed list of named numbers,
/// one hash field each.
pub trait Fields: Default + Clone {
    /// The numbers' names, as the hash fields carry them.
    const NAMES: &'static [&'static str];

    /// The number named `NAMES[i]` (0 for any other `i`).
    fn value(&self, i: usize) -> u64;

    /// Adds `n` to the number named `NAMES[i]` (nothing for any other `i`).
    fn add_value(&mut self, i: usize, n: u64);
}

/// How many names a [`SharedHour`] flush adds to a minute's hash at most: the
/// ones this instance counted most since the last flush, the rest under
/// [`OTHERS`]. It bounds what a report reads (a dashboard table shows the names
/// counted most), whatever the bound of names counted in process.
pub const SHARED_NAMES: usize = 100;

/// How often a [`SharedHour`] adds what this instance counted to Redis.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// The deadline of a flush and of a report's read. Neither is on a request's path
/// to its answer (a flush runs in the background, a report serves a dashboard
/// page), and at the bounds a minute's hash holds thousands of fields: the
/// guard's per-request deadline would cut them short.
const DEADLINE: Duration = Duration::from_millis(500);

/// How long a minute's hash is kept: the hour and a few minutes.
const KEPT_MS: u64 = (MINUTES + 5) * 60_000;

/// A [`LastHour`] of every instance of an app, added up through Redis: hash
/// `{base}{minute}`, field `{name}<TAB>{field}` per [`Fields`] name, kept a little
/// over an hour. Without Redis ([`Handle::in_process`]), this instance's hour.
///
/// Counting stays in process (a lock and a map entry, no round trip); a task adds
/// the counts to Redis every [`FLUSH_EVERY`] in one pipeline, and ends when this
/// is dropped. Counts whose flush fails (Redis unavailable) are dropped from the
/// shared view, as are the last [`FLUSH_EVERY`] of an instance that stops.
pub struct SharedHour<C> {
    inner: Arc<Inner<C>>,
    _flusher: Option<AbortOnDrop>,
}

impl<C> std::fmt::Debug for SharedHour<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHour")
            .field("names", &self.inner.names)
            .field("base", &self.inner.redis.as_ref().map(|(_, base)| base))
            .finish_non_exhaustive()
    }
}

struct Inner<C> {
    /// With Redis, what was counted since the last flush; without, the hour.
    counted: Mutex<LastHour<C>>,
    /// The bound of names counted in process, per minute.
    names: usize,
    /// The bound of names a flush adds, and a report shows, per minute.
    shared_names: usize,
    /// The handle and the key base, with Redis.
    redis: Option<(Handle, String)>,
}

impl<C: Fields + Send + 'static> SharedHour<C> {
    /// Counts kept in hashes `{base}{minute}` (`base` holds the cluster hash tag:
    /// the hour's hashes are read in one pipeline), at most `names` names per
    /// minute and instance. With Redis, must be called inside a Tokio runtime (as
    /// [`Handle::new`]).
    #[must_use]
    pub fn new(handle: &Handle, base: String, names: usize) -> Self {
        let redis = handle.is_redis_configured().then(|| (handle.clone(), base));
        let inner = Arc::new(Inner {
            counted: Mutex::new(LastHour::new(names)),
            names,
            shared_names: names.min(SHARED_NAMES),
            redis,
        });
        let flusher = inner
            .redis
            .as_ref()
            .and_then(|_| tokio::runtime::Handle::try_current().ok())
            .map(|runtime| AbortOnDrop(runtime.spawn(flush_every(Arc::downgrade(&inner)))));
        Self {
            inner,
            _flusher: flusher,
        }
    }

    /// Counts at `now_ms` for `name`: `count` adds to its minute's counts.
    pub fn count(&self, name: &Arc<str>, now_ms: u64, count: impl FnOnce(&mut C)) {
        count(self.inner.lock().count(name, now_ms));
    }

    /// Counts at `now_ms` for each of `names` (under one lock): `count` adds to
    /// each one's minute's counts.
    pub fn count_each<'a>(
        &self,
        names: impl IntoIterator<Item = &'a Arc<str>>,
        now_ms: u64,
        count: impl Fn(&mut C),
    ) {
        let mut counted = self.inner.lock();
        for name in names {
            count(counted.count(name, now_ms));
        }
    }

    /// Adds what this instance counted to Redis now (it also happens every
    /// [`FLUSH_EVERY`]). Without Redis, nothing to do.
    ///
    /// # Errors
    /// Redis's error; the counts it carried are dropped from the shared view.
    pub async fn flush(&self) -> Result<(), Error> {
        self.inner.flush().await
    }

    /// The minutes of the last hour as of `now_ms` that counted anything, oldest
    /// first: every instance's counts (what they added to Redis), and this one's
    /// not added yet. With Redis, a minute holds at most [`SHARED_NAMES`] names (or
    /// the bound given to [`new`](Self::new), if lower), the rest counted under
    /// [`OTHERS`]; in process, the bound given to `new`.
    ///
    /// # Errors
    /// Redis's error.
    pub async fn report(&self, now_ms: u64) -> Result<Vec<MinuteCounts<C>>, Error> {
        let unsent = self.inner.lock().report(now_ms);
        let Some((handle, base)) = &self.inner.redis else {
            return Ok(unsent);
        };
        let last = now_ms / 60_000;
        let first = (last + 1).saturating_sub(MINUTES);
        let mut pipe = redis::pipe();
        for minute in first..=last {
            pipe.cmd("HGETALL").arg(format!("{base}{minute}"));
        }
        let hashes: Vec<HashMap<String, String>> = handle
            .run_with_deadline("last_hour_read", DEADLINE, |mut conn| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        let mut minutes: BTreeMap<u64, BTreeMap<String, C>> = BTreeMap::new();
        for (minute, hash) in (first..).zip(hashes) {
            for (field, n) in hash {
                // Names (a policy's, say) may hold a tab; field names do not. A
                // field that is not a count of ours is passed over.
                let (Some((name, field)), Ok(n)) = (field.rsplit_once('\t'), n.parse::<u64>())
                else {
                    continue;
                };
                if let Some(i) = C::NAMES.iter().position(|f| *f == field) {
                    let counts = minutes.entry(minute).or_default();
                    counts.entry(name.to_owned()).or_default().add_value(i, n);
                }
            }
        }
        for m in unsent {
            let counts = minutes.entry(m.start_ms / 60_000).or_default();
            for (name, c) in m.counts {
                add_all(counts.entry(name).or_default(), &c);
            }
        }
        Ok(minutes
            .into_iter()
            .map(|(minute, counts)| MinuteCounts {
                start_ms: minute * 60_000,
                counts: bounded(counts, self.inner.shared_names),
            })
            .collect())
    }
}

impl<C: Fields> Inner<C> {
    fn lock(&self) -> MutexGuard<'_, LastHour<C>> {
        self.counted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn flush(&self) -> Result<(), Error> {
        let Some((handle, base)) = &self.redis else {
            return Ok(());
        };
        let taken = std::mem::replace(&mut *self.lock(), LastHour::new(self.names));
        let minutes = taken.report(crate::time::now_ms());
        if minutes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for m in minutes {
            let key = format!("{base}{}", m.start_ms / 60_000);
            for (name, counts) in &bounded(m.counts, self.shared_names) {
                for (i, field) in C::NAMES.iter().enumerate() {
                    let n = counts.value(i);
                    if n > 0 {
                        pipe.cmd("HINCRBY")
                            .arg(&key)
                            .arg(format!("{name}\t{field}"))
                            .arg(n)
                            .ignore();
                    }
                }
            }
            pipe.cmd("PEXPIRE").arg(&key).arg(KEPT_MS).ignore();
        }
        handle
            .run_with_deadline("last_hour_flush", DEADLINE, |mut conn| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut conn).await }
            })
            .await
    }
}

/// Flushes every [`FLUSH_EVERY`] until the [`SharedHour`] is dropped.
async fn flush_every<C: Fields>(inner: Weak<Inner<C>>) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(e) = inner.flush().await {
            tracing::debug!(target: "larder::core", error = %e, "last hour's counts not shared");
        }
    }
}

/// Adds every field of `c` to `to`.
fn add_all<C: Fields>(to: &mut C, c: &C) {
    for i in 0..C::NAMES.len() {
        to.add_value(i, c.value(i));
    }
}

/// `counts` with at most `names` names: the ones counted most, and [`OTHERS`]
/// for the rest (instances each kept their own bound, so their sum may hold more).
fn bounded<C: Fields>(counts: BTreeMap<String, C>, names: usize) -> BTreeMap<String, C> {
    let names = names.max(2);
    if counts.len() <= names {
        return counts;
    }
    let total = |c: &C| (0..C::NAMES.len()).map(|i| c.value(i)).sum::<u64>();
    let mut by_size: Vec<(String, C)> = counts.into_iter().collect();
    by_size.sort_by(|a, b| total(&b.1).cmp(&total(&a.1)).then(a.0.cmp(&b.0)));
    let rest = by_size.split_off(names - 1);
    let mut kept: BTreeMap<String, C> = by_size.into_iter().collect();
    let others = kept.entry(OTHERS.to_owned()).or_default();
    for (_, c) in rest {
        add_all(others, &c);
    }
    kept
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
