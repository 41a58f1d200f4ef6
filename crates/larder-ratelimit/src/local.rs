//! The in-process fallback: a `governor` keyed limiter per quota, bounded in memory.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::RateLimiter;

use crate::quota::Quota;

/// Default bound on the keys one quota's local tier tracks.
pub(crate) const DEFAULT_CAPACITY: usize = 100_000;

/// How often idle keys are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The outcome of a local check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalOutcome {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
    /// Until this request would be admitted (zero when allowed).
    pub(crate) retry: Duration,
}

/// One quota's local limiter.
pub(crate) struct LocalTier {
    quota: Quota,
    capacity: usize,
    limiter: RwLock<Arc<Keyed>>,
    born: Instant,
    last_sweep_ms: AtomicU64,
}

impl fmt::Debug for LocalTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTier")
            .field("quota", &self.quota)
            .field("capacity", &self.capacity)
            .field("keys", &self.len())
            .finish()
    }
}

impl LocalTier {
    pub(crate) fn new(quota: Quota, capacity: usize) -> Self {
        Self {
            quota,
            capacity: capacity.max(1),
            limiter: RwLock::new(Arc::new(Self::build(quota))),
            born: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
        }
    }

    fn build(quota: Quota) -> Keyed {
        RateLimiter::dashmap(quota.to_governor()).with_middleware::<StateInformationMiddleware>()
    }

    fn current(&self) -> Arc<Keyed> {
        match self.limiter.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Checks (and on success charges) `cost` for `key`.
    pub(crate) fn check(&self, key: &str, cost: u32) -> LocalOutcome {
        let limiter = self.maintain(self.current());
        let n = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match limiter.check_key_n(&key.to_owned(), n) {
            Ok(Ok(snapshot)) => LocalOutcome {
                allowed: true,
                remaining: u64::from(snapshot.remaining_burst_capacity()),
                retry: Duration::ZERO,
            },
            Ok(Err(not_until)) => LocalOutcome {
                allowed: false,
                remaining: 0,
                retry: not_until.wait_time_from(limiter.clock().now()),
            },
            // The cost exceeds the burst: it can never pass.
            Err(_) => LocalOutcome {
                allowed: false,
                remaining: 0,
                retry: self.quota.period(),
            },
        }
    }

    /// Evicts idle keys every few seconds; over capacity after that, starts over
    /// (every key fresh) rather than grow without bound. Returns the limiter to use.
    fn maintain(&self, limiter: Arc<Keyed>) -> Arc<Keyed> {
        let now_ms = larder_core::time::millis(self.born.elapsed());
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        let due =
            now_ms.saturating_sub(last) >= u64::try_from(SWEEP_EVERY.as_millis()).unwrap_or(5000);
        let over = limiter.len() >= self.capacity;
        if !(due || over) {
            return limiter;
        }
        if self
            .last_sweep_ms
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return limiter;
        }
        limiter.retain_recent();
        limiter.shrink_to_fit();
        if limiter.len() >= self.capacity {
            tracing::warn!(
                target: "larder::ratelimit",
                quota = %self.quota,
                capacity = self.capacity,
                "local rate-limit tier is full of active keys: starting over"
            );
            let fresh = Arc::new(Self::build(self.quota));
            match self.limiter.write() {
                Ok(mut guard) => *guard = fresh.clone(),
                Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
            }
            return fresh;
        }
        limiter
    }

    /// Keys currently tracked.
    pub(crate) fn len(&self) -> usize {
        self.current().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_quota_as_redis_and_bounded_memory() {
        let tier = LocalTier::new(Quota::per_minute(3).unwrap(), 50);
        let outcomes: Vec<_> = (0..4).map(|_| tier.check("ip:1.2.3.4", 1)).collect();
        assert_eq!(
            outcomes.iter().filter(|o| o.allowed).count(),
            3,
            "{outcomes:?}"
        );
        assert_eq!(outcomes[0].remaining, 2);
        assert!(!outcomes[3].allowed);
        let retry = outcomes[3].retry;
        assert!(
            retry > Duration::from_secs(15) && retry <= Duration::from_secs(20),
            "{retry:?}"
        );
        // Another key has its own bucket.
        assert!(tier.check("ip:5.6.7.8", 1).allowed);
        // A cost over the burst never passes.
        assert!(!tier.check("ip:9.9.9.9", 4).allowed);

        // A flood of distinct keys does not grow the tier past its capacity.
        for i in 0..500 {
            tier.check(&format!("ip:10.0.{}.{}", i / 256, i % 256), 1);
        }
        assert!(tier.len() <= 50, "{}", tier.len());
    }
}
