//! The cache service against a real redis-server (and in process).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::with_l1;
use larder_cache::{Cache, Lookup, LookupCounts};
use larder_core::last_hour::MinuteCounts;
use larder_core::{Config, ConfigBuilder, Handle, Module, Tenant};
use larder_testing::{eventually, on_every_topology, Redis, RedisServer};

/// A handle on `redis`, configured from its topology's variables.
fn handle(redis: &Redis) -> Handle {
    Handle::new(
        ConfigBuilder::from_config(Config::from_vars(redis.vars()).unwrap())
            .key_prefix("stock")
            // Room for a loaded two-core machine running six cluster nodes; the
            // fault tests still see the deadline end every wait.
            .op_timeout(Duration::from_millis(300))
            .breaker_threshold(3)
            .breaker_cooldown(Duration::from_millis(200))
            .negative_ttl(Duration::from_secs(1))
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn t(s: &str) -> Tenant {
    Tenant::new(s).unwrap()
}
fn m(s: &str) -> Module {
    Module::new(s).unwrap()
}

/// A handle on one node (for the client-side tracking tests: tracking is one
/// node's feature, off on a cluster).
fn handle_single(server: &RedisServer) -> Handle {
    Handle::new(
        ConfigBuilder::from_config(Config::from_vars([("REDIS_URL", server.url())]).unwrap())
            .key_prefix("stock")
            .op_timeout(Duration::from_millis(100))
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// Data commands every primary has processed, from `INFO commandstats`.
fn commands(redis: &Redis) -> u64 {
    redis.client_calls(&[]).iter().sum()
}

async fn balance(cache: &Cache, tenant: &Tenant, calls: &AtomicUsize, value: i64) -> i64 {
    cache
        .get_or_set(tenant, &m("balance"), "2026-01", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(value)
        })
        .await
        .unwrap()
}

on_every_topology!(
    async fn miss_then_hit_and_readable_entries(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        let calls = AtomicUsize::new(0);
        assert_eq!(balance(&cache, &t("1"), &calls, 42).await, 42);
        assert_eq!(balance(&cache, &t("1"), &calls, 99).await, 42);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let key = "stock:cache:tenant:{1}:balance:2026-01";
        let raw = redis.command_on_key(key, &["GET", key]);
        assert!(raw.contains("LC1 ") && raw.ends_with("\n42\r\n"), "{raw:?}");
        let stats = cache.stats().await;
        assert_eq!((stats.hits, stats.misses), (1, 1));
        assert!(stats.redis_keys.unwrap() >= 3);
        assert!(stats.redis_used_memory.unwrap() > 0);
    }
);

on_every_topology!(
    async fn tenants_never_see_each_others_entries(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        let calls = AtomicUsize::new(0);
        assert_eq!(balance(&cache, &t("1"), &calls, 1).await, 1);
        assert_eq!(balance(&cache, &t("2"), &calls, 2).await, 2);
        assert_eq!(balance(&cache, &t("1"), &calls, 0).await, 1);
        assert_eq!(balance(&cache, &t("2"), &calls, 0).await, 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(balance(&cache, &t("2"), &calls, 0).await, 2);
        // The last hour, per tenant and per module (summed over minutes, in case
        // the look-ups straddled one's end).
        let history = cache.last_hour().await.unwrap();
        let summed = |minutes: &[MinuteCounts<LookupCounts>], name: &str| {
            let mut sum = LookupCounts::default();
            for m in minutes {
                if let Some(c) = m.counts.get(name) {
                    sum.add(c);
                }
            }
            (sum.hits, sum.misses, sum.stale)
        };
        assert_eq!(summed(&history.by_tenant, "1"), (1, 1, 0));
        assert_eq!(summed(&history.by_tenant, "2"), (2, 1, 0));
        assert_eq!(summed(&history.by_module, "balance"), (3, 2, 0));
        assert_eq!(summed(&history.by_tenant, "3"), (0, 0, 0));
        // Another instance on the same Redis counts its own; once each has shared
        // its counts, both report the sum.
        let other = Cache::new(handle(redis));
        assert_eq!(balance(&other, &t("1"), &calls, 0).await, 1);
        let before = other.last_hour().await.unwrap();
        assert_eq!(summed(&before.by_tenant, "1"), (1, 0, 0));
        cache.share_last_hour().await.unwrap();
        other.share_last_hour().await.unwrap();
        for instance in [&cache, &other] {
            let history = instance.last_hour().await.unwrap();
            assert_eq!(summed(&history.by_tenant, "1"), (2, 1, 0));
            assert_eq!(summed(&history.by_module, "balance"), (4, 2, 0));
        }
    }
);

on_every_topology!(
    async fn concurrent_misses_make_one_origin_call(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_set(&t("1"), &m("products"), "all", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, std::io::Error>(vec![1, 2, 3])
                    })
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), vec![1, 2, 3]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
);

on_every_topology!(
    async fn module_invalidation_costs_the_same_for_10_and_10000_keys(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        let mut cost = Vec::new();
        for (tenant, n) in [(t("small"), 10usize), (t("large"), 10_000)] {
            let module = m("products");
            // Populate in bounded concurrency.
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                let (cache, tenant, module) = (cache.clone(), tenant.clone(), module.clone());
                set.spawn(async move {
                    cache
                        .set(&tenant, &module, &format!("p{i}"), &i, None)
                        .await
                });
                if set.len() >= 200 {
                    assert!(set.join_next().await.unwrap().unwrap());
                }
            }
            while let Some(r) = set.join_next().await {
                assert!(r.unwrap());
            }
            assert_eq!(cache.get::<usize>(&tenant, &module, "p7").await, Some(7));

            let before = commands(redis);
            assert!(cache.invalidate_module(&tenant, &module).await);
            cost.push(commands(redis) - before);
            assert_eq!(cache.get::<usize>(&tenant, &module, "p7").await, None);
            assert_eq!(
                cache
                    .get::<usize>(&tenant, &module, &format!("p{}", n - 1))
                    .await,
                None
            );
        }
        assert_eq!(
            cost[0], cost[1],
            "invalidation commands for 10 vs 10,000 keys"
        );
        // One SET of a fresh marker (and a PUBLISH to other instances, not counted:
        // sentinels publish their own hellos on the primary).
        assert_eq!(cost[0], 1);
    }
);

on_every_topology!(
    async fn tenant_invalidation_spares_other_tenants(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        for tenant in ["1", "2"] {
            for module in ["products", "balance"] {
                assert!(cache.set(&t(tenant), &m(module), "k", &tenant, None).await);
            }
        }
        assert!(cache.invalidate_tenant(&t("1")).await);
        for module in ["products", "balance"] {
            assert_eq!(cache.get::<String>(&t("1"), &m(module), "k").await, None);
            assert_eq!(
                cache
                    .get::<String>(&t("2"), &m(module), "k")
                    .await
                    .as_deref(),
                Some("2")
            );
        }
        // New writes for tenant 1 are visible again.
        assert!(cache.set(&t("1"), &m("products"), "k", &"new", None).await);
        assert_eq!(
            cache
                .get::<String>(&t("1"), &m("products"), "k")
                .await
                .as_deref(),
            Some("new")
        );
    }
);

on_every_topology!(
    async fn pattern_invalidation_scans_and_unlinks_within_the_tenant(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        for i in 0..2500 {
            assert!(
                cache
                    .set(&t("1"), &m("products"), &format!("p{i}"), &i, None)
                    .await
            );
        }
        assert!(cache.set(&t("1"), &m("categories"), "c1", &1, None).await);
        assert!(cache.set(&t("2"), &m("products"), "p1", &1, None).await);
        let deleted = cache
            .invalidate_pattern(&t("1"), "products:*")
            .await
            .unwrap();
        assert_eq!(deleted, Some(2500));
        assert_eq!(cache.get::<i32>(&t("1"), &m("products"), "p1").await, None);
        assert_eq!(
            cache.get::<i32>(&t("1"), &m("categories"), "c1").await,
            Some(1)
        );
        assert_eq!(
            cache.get::<i32>(&t("2"), &m("products"), "p1").await,
            Some(1)
        );
        // A tenant-wide glob keeps the invalidation markers.
        assert_eq!(
            cache.invalidate_pattern(&t("1"), "*").await.unwrap(),
            Some(1)
        );
        let marker = "stock:cache:tenant:{1}:_larder:gen";
        assert!(redis
            .command_on_key(marker, &["EXISTS", marker])
            .contains(":1"));
        for calls in redis.command_calls().values() {
            assert!(!calls.contains_key("keys"), "{calls:?}");
        }
        assert!(cache.invalidate_pattern(&t("1"), "").await.is_err());
        assert!(cache
            .invalidate_pattern(&t("1"), "a\r\nFLUSHALL")
            .await
            .is_err());
    }
);

on_every_topology!(
    async fn clear_removes_everything_under_the_prefix(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        assert_eq!(
            redis.command_on_key("other:key", &["SET", "other:key", "1"]),
            "+OK\r\n"
        );
        for tenant in ["1", "2"] {
            assert!(cache.set(&t(tenant), &m("products"), "k", &1, None).await);
        }
        assert_eq!(
            cache.clear().await,
            Some(6),
            "2 entries, 2 tenant and 2 module markers"
        );
        assert_eq!(redis.dbsize(), 1);
    }
);

on_every_topology!(
    async fn corrupt_and_mistyped_entries_are_misses_and_deleted(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        let key = "stock:cache:tenant:{1}:products:k";
        assert!(cache.set(&t("1"), &m("products"), "k", &5, None).await);
        assert_eq!(
            redis.command_on_key(key, &["SET", key, "\u{1}garbage"]),
            "+OK\r\n"
        );
        assert_eq!(cache.get::<i32>(&t("1"), &m("products"), "k").await, None);
        assert_eq!(redis.command_on_key(key, &["EXISTS", key]), ":0\r\n");

        // Well-formed entry, wrong shape for the caller's type.
        assert!(cache.set(&t("1"), &m("products"), "k", &"text", None).await);
        let calls = AtomicUsize::new(0);
        let v: i32 = cache
            .get_or_set(&t("1"), &m("products"), "k", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(9)
            })
            .await
            .unwrap();
        assert_eq!((v, calls.load(Ordering::SeqCst)), (9, 1));
        assert!(cache.stats().await.errors >= 2);
    }
);

on_every_topology!(
    async fn a_value_read_before_an_invalidation_is_not_written_back(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        assert!(cache.set(&t("1"), &m("balance"), "warm", &0, None).await);
        let v: i32 = cache
            .get_or_set(&t("1"), &m("balance"), "2026-01", || async {
                // A write lands while the origin computes: its invalidation wins.
                assert!(cache.invalidate_module(&t("1"), &m("balance")).await);
                Ok::<_, std::io::Error>(100)
            })
            .await
            .unwrap();
        assert_eq!(v, 100);
        assert_eq!(
            cache.get::<i32>(&t("1"), &m("balance"), "2026-01").await,
            None
        );
    }
);

on_every_topology!(
    async fn negative_results_are_cached_for_the_negative_ttl(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        let calls = AtomicUsize::new(0);
        let (tenant, module) = (t("1"), m("products"));
        let lookup = || {
            cache.get_or_set_opt(&tenant, &module, "404", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<Option<i32>, std::io::Error>(None)
            })
        };
        assert_eq!(lookup().await.unwrap(), None);
        assert_eq!(lookup().await.unwrap(), None);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let key = "stock:cache:tenant:{1}:products:404";
        let pttl = redis.command_on_key(key, &["PTTL", key]);
        let ms: i64 = pttl.trim_start_matches(':').trim().parse().unwrap();
        assert!(ms > 0 && ms <= 1000, "{pttl}");
    }
);

on_every_topology!(
    async fn stale_values_are_served_when_the_origin_fails(redis: &Redis) {
        let base = Cache::new(handle(redis));
        let mut settings = base.settings().clone();
        settings.stale_window = Duration::from_secs(60);
        let cache = base.with_settings(settings);
        assert!(
            cache
                .set(
                    &t("1"),
                    &m("balance"),
                    "k",
                    &7,
                    Some(Duration::from_millis(1))
                )
                .await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            cache.lookup::<i32>(&t("1"), &m("balance"), "k").await,
            Lookup::Stale { value: 7, .. }
        ));
        let v: i32 = cache
            .get_or_set(&t("1"), &m("balance"), "k", || async {
                Err::<i32, _>("origin down")
            })
            .await
            .unwrap();
        assert_eq!(v, 7);
    }
);

on_every_topology!(
    async fn redis_down_or_frozen_serves_the_origin_with_one_call_per_key(redis: &mut Redis) {
        let cache = Cache::new(handle(redis));
        for fault in ["stop", "freeze"] {
            match fault {
                "stop" => redis.stop(),
                _ => {
                    redis.restart();
                    redis.freeze();
                }
            }
            let calls = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let (cache, calls) = (cache.clone(), calls.clone());
                tasks.push(tokio::spawn(async move {
                    cache
                        .get_or_set(&t("1"), &m("products"), "all", || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            // Longer than a look-up bounded by the deadline: every
                            // request joins the flight while the origin runs.
                            tokio::time::sleep(Duration::from_millis(1000)).await;
                            Ok::<_, std::io::Error>(3)
                        })
                        .await
                        .unwrap()
                }));
            }
            for task in tasks {
                assert_eq!(task.await.unwrap(), 3, "{fault}");
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{fault}");
            assert!(!cache.set(&t("1"), &m("products"), "x", &1, None).await);
            assert!(cache.stats().await.degraded > 0);
        }
        redis.thaw();
    }
);

#[tokio::test]
async fn in_process_mode_has_the_same_semantics() {
    let cache = Cache::new(Handle::in_process());
    let calls = AtomicUsize::new(0);
    assert_eq!(balance(&cache, &t("1"), &calls, 1).await, 1);
    assert_eq!(balance(&cache, &t("1"), &calls, 2).await, 1);
    assert_eq!(balance(&cache, &t("2"), &calls, 3).await, 3);
    assert!(cache.invalidate_module(&t("1"), &m("balance")).await);
    assert_eq!(balance(&cache, &t("1"), &calls, 4).await, 4);
    assert_eq!(balance(&cache, &t("2"), &calls, 5).await, 3);
    assert!(cache.invalidate_tenant(&t("2")).await);
    assert_eq!(balance(&cache, &t("2"), &calls, 6).await, 6);
    assert!(cache.set(&t("1"), &m("products"), "p1", &1, None).await);
    assert_eq!(
        cache
            .invalidate_pattern(&t("1"), "products:*")
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(cache.get::<i32>(&t("1"), &m("products"), "p1").await, None);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

on_every_topology!(
    async fn l1_tier_stays_coherent_across_instances_and_flushes_without_redis(redis: &mut Redis) {
        let instance = || with_l1(Cache::new(handle(redis)));
        let (a, b) = (instance(), instance());
        // Subscribers of every primary (on a cluster, a subscriber is on one node).
        let subscribed = |n: usize| {
            let total: usize = redis
                .primaries()
                .iter()
                .map(|node| {
                    let reply =
                        node.command(&["PUBSUB", "NUMSUB", "stock:cache:_larder:invalidate"]);
                    reply
                        .rsplit(':')
                        .next()
                        .unwrap()
                        .trim()
                        .parse::<usize>()
                        .unwrap()
                })
                .sum();
            total == n
        };
        for _ in 0..100 {
            if subscribed(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(subscribed(2), "both instances subscribe");

        assert!(a.set(&t("1"), &m("products"), "p1", &1, None).await);
        assert_eq!(b.get::<i32>(&t("1"), &m("products"), "p1").await, Some(1));
        // B now answers from its own memory: no command reaches Redis.
        let before = commands(redis);
        for _ in 0..50 {
            assert_eq!(b.get::<i32>(&t("1"), &m("products"), "p1").await, Some(1));
        }
        assert_eq!(commands(redis) - before, 0, "no data command");

        // A write on A (its invalidation) reaches B's tier.
        assert!(a.invalidate_module(&t("1"), &m("products")).await);
        let started = std::time::Instant::now();
        let mut gone = false;
        while started.elapsed() < Duration::from_secs(2) {
            if b.get::<i32>(&t("1"), &m("products"), "p1").await.is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            gone,
            "B stops serving the old value within 2 s (pub/sub delivery)"
        );
        eprintln!(
            "L1 invalidation reached instance B after {:?}",
            started.elapsed()
        );

        // When Redis goes, invalidations from other instances could be missed: the
        // tier is flushed as soon as its subscription is lost, and B reads through.
        assert!(a.set(&t("1"), &m("products"), "p2", &2, None).await);
        assert_eq!(b.get::<i32>(&t("1"), &m("products"), "p2").await, Some(2));
        redis.stop();
        let flushed = eventually(200, Duration::from_millis(25), || async {
            b.get::<i32>(&t("1"), &m("products"), "p2").await.is_none()
        })
        .await;
        assert!(flushed, "the tier is flushed once the subscription is lost");
        // Back (empty): the tier fills and serves again.
        redis.restart();
        let back = eventually(200, Duration::from_millis(25), || async {
            a.set(&t("1"), &m("products"), "p3", &3, None).await
                && b.get::<i32>(&t("1"), &m("products"), "p3").await == Some(3)
        })
        .await;
        assert!(back, "the tiers work again once Redis is back");
    }
);

on_every_topology!(
    async fn with_the_lease_several_instances_make_one_origin_call(redis: &Redis) {
        let instance = || {
            let cache = Cache::new(handle(redis));
            let mut settings = cache.settings().clone();
            settings.lease = Some(Duration::from_secs(2));
            cache.with_settings(settings)
        };
        let instances = [instance(), instance(), instance()];
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..30 {
            let (cache, calls) = (instances[i % 3].clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_set(&t("1"), &m("balance"), "report", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, std::io::Error>(77)
                    })
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 77);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one origin call across three instances"
        );
        let lease = "stock:cache:tenant:{1}:_larder:lease:*";
        let leases = redis.command_on_key(lease, &["SCAN", "0", "MATCH", lease, "COUNT", "1000"]);
        assert!(
            leases.ends_with("*0\r\n"),
            "the lease is released: {leases}"
        );

        // Without the lease, each instance makes its own call.
        let plain = [Cache::new(handle(redis)), Cache::new(handle(redis))];
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for cache in &plain {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_set(&t("1"), &m("balance"), "other", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, std::io::Error>(1)
                    })
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
);

on_every_topology!(
    async fn a_decoded_entry_is_reused_only_for_the_same_bytes_and_current_markers(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        let (tenant, module) = (t("1"), m("balance"));
        assert!(cache.set(&tenant, &module, "k", &1_i64, None).await);
        for _ in 0..3 {
            assert_eq!(cache.get::<i64>(&tenant, &module, "k").await, Some(1));
        }
        // The invalidation leaves the entry's bytes in Redis as they were, so the reply
        // equals the bytes decoded above: still not served.
        assert!(cache.invalidate_module(&tenant, &module).await);
        let key = "stock:cache:tenant:{1}:balance:k";
        assert!(redis
            .command_on_key(key, &["GET", key])
            .ends_with("\n1\r\n"));
        assert_eq!(cache.get::<i64>(&tenant, &module, "k").await, None);
        // Another writer changes the payload and keeps the header: new bytes, read anew.
        assert!(cache.set(&tenant, &module, "k", &2_i64, None).await);
        assert_eq!(cache.get::<i64>(&tenant, &module, "k").await, Some(2));
        let raw = redis.command_on_key(key, &["GET", key]);
        let stored = raw
            .split_once("\r\n")
            .unwrap()
            .1
            .strip_suffix("\r\n")
            .unwrap();
        let changed = format!("{}\n3", stored.strip_suffix("\n2").unwrap());
        assert_eq!(
            redis.command_on_key(key, &["SET", key, &changed, "KEEPTTL"]),
            "+OK\r\n"
        );
        assert_eq!(cache.get::<i64>(&tenant, &module, "k").await, Some(3));
        // And the first of them again: equal bytes decode equally.
        assert_eq!(
            redis.command_on_key(key, &["SET", key, stored, "KEEPTTL"]),
            "+OK\r\n"
        );
        assert_eq!(cache.get::<i64>(&tenant, &module, "k").await, Some(2));
    }
);

/// Clients of `server` with client-side tracking on (`t` among their flags).
fn tracking_clients(server: &RedisServer) -> usize {
    server
        .command(&["CLIENT", "LIST"])
        .lines()
        .filter(|line| {
            line.split(' ')
                .find_map(|f| f.strip_prefix("flags="))
                .is_some_and(|flags| flags.contains('t'))
        })
        .count()
}

/// Waits until a cache's tracking connection is up.
async fn tracking(server: &RedisServer, clients: usize) {
    assert!(
        eventually(100, Duration::from_millis(20), || async {
            tracking_clients(server) == clients
        })
        .await,
        "{} tracking clients, not {clients}",
        tracking_clients(server)
    );
}

fn calls_of(server: &RedisServer, command: &str) -> u64 {
    server
        .command_calls()
        .get(command)
        .copied()
        .unwrap_or_default()
}

/// A cache whose tracking connection is up, with `k` = 1 stored for tenant 1's
/// `balance` and read once (which reads the markers, tracked, with the entry).
async fn tracked_cache(server: &RedisServer) -> (Cache, Tenant, Module) {
    let cache = Cache::new(handle_single(server));
    tracking(server, 1).await;
    let (tenant, module) = (t("1"), m("balance"));
    assert!(cache.set(&tenant, &module, "k", &1_i64, None).await);
    assert_eq!(cache.get::<i64>(&tenant, &module, "k").await, Some(1));
    (cache, tenant, module)
}

#[tokio::test]
async fn once_its_markers_are_tracked_a_hit_reads_the_entry_alone() {
    let server = RedisServer::start();
    let (cache, tenant, module) = tracked_cache(&server).await;
    let (get, mget) = (calls_of(&server, "get"), calls_of(&server, "mget"));
    for _ in 0..10 {
        assert_eq!(cache.get::<i64>(&tenant, &module, "k").await, Some(1));
    }
    assert_eq!(calls_of(&server, "get") - get, 10);
    assert_eq!(calls_of(&server, "mget"), mget);
    // Switched off, every look-up reads markers and entry with one MGET.
    let mut settings = cache.settings().clone();
    settings.track_markers = false;
    let untracked = cache.clone().with_settings(settings);
    let (get, mget) = (calls_of(&server, "get"), calls_of(&server, "mget"));
    for _ in 0..10 {
        assert_eq!(untracked.get::<i64>(&tenant, &module, "k").await, Some(1));
    }
    assert_eq!(calls_of(&server, "mget") - mget, 10);
    assert_eq!(calls_of(&server, "get"), get);
}

#[tokio::test]
async fn an_invalidation_by_another_instance_is_seen_by_the_very_next_look_up() {
    let server = RedisServer::start();
    let (a, b) = (
        Cache::new(handle_single(&server)),
        Cache::new(handle_single(&server)),
    );
    tracking(&server, 2).await;
    let (tenant, module) = (t("1"), m("balance"));
    for i in 0..50_i64 {
        assert!(a.set(&tenant, &module, "k", &i, None).await);
        // Twice: the second is a hit on tracked markers.
        assert_eq!(a.get::<i64>(&tenant, &module, "k").await, Some(i));
        assert_eq!(a.get::<i64>(&tenant, &module, "k").await, Some(i));
        // Alternately the module and the whole tenant, by the other instance, or
        // by a client that is not larder at all.
        match i % 3 {
            0 => assert!(b.invalidate_module(&tenant, &module).await),
            1 => assert!(b.invalidate_tenant(&tenant).await),
            _ => {
                let marker = "stock:cache:tenant:{1}:_larder:gen:balance";
                let fresh = format!("other-{i}");
                assert_eq!(server.command(&["SET", marker, &fresh]), "+OK\r\n");
            }
        }
        assert_eq!(a.get::<i64>(&tenant, &module, "k").await, None, "round {i}");
    }
}

#[tokio::test]
async fn markers_known_before_a_lost_tracking_connection_are_read_again() {
    let server = RedisServer::start();
    let (cache, tenant, module) = tracked_cache(&server).await;
    assert_eq!(cache.get::<i64>(&tenant, &module, "k").await, Some(1));
    // The tracking connection goes, and while it is gone a marker changes: no push
    // can tell this process.
    let killed = server.command(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(!killed.starts_with('-'), "{killed}");
    let marker = "stock:cache:tenant:{1}:_larder:gen:balance";
    assert_eq!(server.command(&["SET", marker, "changed"]), "+OK\r\n");
    tracking(&server, 1).await;
    // Back with a new connection: never the old entry.
    for _ in 0..5 {
        assert_eq!(cache.get::<i64>(&tenant, &module, "k").await, None);
    }
}

#[tokio::test]
async fn where_the_server_refuses_tracking_look_ups_read_the_markers_with_the_entry() {
    // A user who may turn tracking on but not opt a read in (refused for good), and
    // a server without `HELLO`, as before Redis 6 (tried again after a long pause).
    for refused in ["-client|caching", "no HELLO"] {
        let (server, url) = if refused == "no HELLO" {
            let server = RedisServer::builder()
                .config("rename-command", "HELLO \"\"")
                .start();
            let url = server.url();
            (server, url)
        } else {
            let server = RedisServer::start();
            let acl = server.command(&[
                "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", refused,
            ]);
            assert_eq!(acl, "+OK\r\n");
            let url = server.url_with_auth("app", "pw");
            (server, url)
        };
        let cache = Cache::new(
            Handle::new(
                Config::builder()
                    .redis_url(&url)
                    .key_prefix("stock")
                    .op_timeout(Duration::from_millis(100))
                    .build()
                    .unwrap(),
            )
            .unwrap(),
        );
        let (tenant, module) = (t("1"), m("balance"));
        assert!(cache.set(&tenant, &module, "k", &1_i64, None).await);
        // Let the tracker try, and be refused.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mget = calls_of(&server, "mget");
        for _ in 0..5 {
            assert_eq!(cache.get::<i64>(&tenant, &module, "k").await, Some(1));
        }
        assert_eq!(calls_of(&server, "mget") - mget, 5, "{refused}");
        assert_eq!(tracking_clients(&server), 0, "{refused}");
        let stats = cache.stats().await;
        assert_eq!((stats.hits, stats.errors, stats.degraded), (5, 0, 0));
        // Not asked again at once: no connection since but the one asking.
        let connections = || {
            server
                .command(&["INFO", "stats"])
                .lines()
                .find_map(|l| l.strip_prefix("total_connections_received:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap()
        };
        let before = connections();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(connections() - before, 1, "{refused}");
    }
}

/// The milliseconds left to `key` (`-1`: no expiry, `-2`: no key).
fn pttl(redis: &Redis, key: &str) -> i64 {
    let reply = redis.command_on_key(key, &["PTTL", key]);
    reply.trim().trim_start_matches(':').parse().unwrap()
}

// Every key the cache writes for a request expires, markers included, and a
// marker outlives each entry stamped with it: made-up tenants and modules leave
// nothing behind for good. A marker written by an older release (no expiry) gets
// one at the next write.
on_every_topology!(
    async fn every_key_the_cache_writes_expires_and_markers_outlive_their_entries(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        let legacy = "stock:cache:tenant:{old}:_larder:gen";
        assert_eq!(
            redis.command_on_key(legacy, &["SET", legacy, "7"]),
            "+OK\r\n"
        );
        let calls = AtomicUsize::new(0);
        for tenant in ["1", "made-up-1", "made-up-2", "old"] {
            let _ = balance(&cache, &t(tenant), &calls, 1).await;
            assert!(cache.invalidate_module(&t(tenant), &m("products")).await);
        }
        assert!(cache.invalidate_tenant(&t("made-up-3")).await);
        // A look-up alone (nothing stored) creates the markers too.
        assert_eq!(cache.get::<i32>(&t("made-up-4"), &m("x"), "k").await, None);
        // An entry longer-lived than the settings' longest TTL.
        assert!(
            cache
                .set(
                    &t("1"),
                    &m("long"),
                    "k",
                    &1,
                    Some(Duration::from_secs(3600))
                )
                .await
        );

        // Test code may list keys (the cache never does): every primary's.
        let keys: Vec<String> = redis
            .primaries()
            .iter()
            .flat_map(|n| {
                n.command(&["KEYS", "*"])
                    .lines()
                    .filter(|l| l.starts_with("stock:"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(keys.len() >= 12, "{keys:?}");
        for key in &keys {
            assert!(pttl(redis, key) > 0, "{key} never expires");
        }
        for (entry, markers) in [
            (
                "stock:cache:tenant:{1}:long:k",
                [
                    "stock:cache:tenant:{1}:_larder:gen",
                    "stock:cache:tenant:{1}:_larder:gen:long",
                ],
            ),
            (
                "stock:cache:tenant:{old}:balance:2026-01",
                [legacy, "stock:cache:tenant:{old}:_larder:gen:balance"],
            ),
        ] {
            let lives = pttl(redis, entry);
            assert!(lives > 0, "{entry}");
            for marker in markers {
                assert!(pttl(redis, marker) >= lives, "{marker} dies before {entry}");
            }
        }
    }
);

// A hit is one command on one node, on every topology: the tenant's entry and its
// markers share a slot (one `MGET` on a cluster; one `GET` where the markers are
// tracked), measured per node with `INFO commandstats`.
on_every_topology!(
    async fn a_hit_is_one_command_on_one_node(redis: &Redis) {
        let cache = Cache::new(handle(redis));
        let calls = AtomicUsize::new(0);
        assert_eq!(balance(&cache, &t("acme"), &calls, 5).await, 5);
        // Let tracking (where there is any) settle, then warm the markers.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(balance(&cache, &t("acme"), &calls, 6).await, 5);
        let per_node = |redis: &Redis| -> Vec<u64> {
            redis
                .command_calls()
                .values()
                .map(|calls| {
                    calls
                        .iter()
                        .filter(|(name, _)| ["get", "mget", "evalsha"].contains(&name.as_str()))
                        .map(|(_, n)| n)
                        .sum()
                })
                .collect()
        };
        let before = per_node(redis);
        assert_eq!(balance(&cache, &t("acme"), &calls, 7).await, 5);
        let after = per_node(redis);
        let moved: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_eq!(moved.iter().sum::<u64>(), 1, "one read in all: {moved:?}");
        assert_eq!(
            moved.iter().filter(|&&n| n > 0).count(),
            1,
            "on one node: {moved:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
);

/// Moving the slot that holds a tenant's entries and markers, while requests run:
/// every request gets the right value (redirections are followed; a look-up that
/// meets a half-moved slot reads as a miss, never as an error), and the moved
/// entries are hits on their new node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_tenants_slot_under_load_shows_users_no_error() {
    let redis = Redis::start(larder_testing::TopologyKind::Cluster);
    let Redis::Cluster(cluster) = &redis else {
        unreachable!()
    };
    let cache = Cache::new(handle(&redis));
    let (tenant, module) = (t("moving"), m("products"));
    for i in 0..300 {
        assert!(
            cache
                .set(&tenant, &module, &format!("p{i}"), &i, None)
                .await
        );
    }
    let slot = cluster.slot_of("{moving}");
    let from = cluster.primary_of_slot(slot);
    let to = (from + 1) % 3;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (cache, tenant, module, stop) =
            (cache.clone(), tenant.clone(), module.clone(), stop.clone());
        tokio::spawn(async move {
            let mut served = 0u64;
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                i = (i + 7) % 400;
                let got = cache
                    .get_or_set(&tenant, &module, &format!("p{i}"), || async move {
                        Ok::<_, std::io::Error>(i)
                    })
                    .await
                    .unwrap();
                assert_eq!(got, i, "p{i}");
                served += 1;
            }
            served
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Blocking (the test's other thread keeps the load going).
    tokio::task::block_in_place(|| cluster.move_slot(slot, to));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let served = load.await.unwrap();
    assert!(served > 100, "{served}");
    assert_eq!(cluster.primary_of_slot(slot), to);
    // The entries moved with the slot and are hits on the new node.
    let hits = cache.stats().await.hits;
    assert_eq!(cache.get::<usize>(&tenant, &module, "p3").await, Some(3));
    assert_eq!(cache.stats().await.hits, hits + 1);
}
