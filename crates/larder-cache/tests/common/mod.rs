//! What the cache's test binaries share: the counting origin, the handle, tenant
//! headers, the L1 tier's settings, and the adapters' conformance scenarios.

// Each test binary uses a part of this module.
#![allow(dead_code)]

pub(crate) mod conformance;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use larder_cache::{Cache, L1Settings};
use larder_core::{Config, Handle};

/// Counts the origin's calls; `failing` makes the routes that look at it answer 500.
#[derive(Clone, Default)]
pub(crate) struct Origin {
    pub(crate) calls: Arc<AtomicUsize>,
    pub(crate) failing: Arc<AtomicBool>,
}

impl Origin {
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A handle on `url` (in-process without one): short deadline, a breaker that
/// opens after three faults, module `balance` kept 60 s.
pub(crate) fn handle(url: Option<&str>) -> Handle {
    let mut b = Config::builder()
        .key_prefix("stock")
        .op_timeout(Duration::from_millis(100))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(200))
        .module_ttl("balance", Duration::from_secs(60));
    if let Some(url) = url {
        b = b.redis_url(url);
    }
    #[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
    Handle::new(b.build().unwrap()).unwrap()
}

/// [`handle`]'s settings on a Redis of any topology, from its variables.
#[allow(dead_code)] // not every test file uses it
pub(crate) fn handle_on(redis: &larder_testing::Redis) -> Handle {
    #[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
    let config = larder_core::ConfigBuilder::from_config(Config::from_vars(redis.vars()).unwrap())
        .key_prefix("stock")
        .op_timeout(Duration::from_millis(100))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(200))
        .module_ttl("balance", Duration::from_secs(60))
        .build()
        .unwrap();
    #[allow(clippy::unwrap_used)]
    Handle::new(config).unwrap()
}

/// `cache` with a 1 MiB, 30 s in-process (L1) tier in front of it.
pub(crate) fn with_l1(cache: Cache) -> Cache {
    cache.with_l1(L1Settings::new(1 << 20, Duration::from_secs(30)))
}

pub(crate) const T1: (&str, &str) = ("x-tenant-id", "1");
pub(crate) const T2: (&str, &str) = ("x-tenant-id", "2");
