//! The limiter against a real redis-server: exact limits, all-or-nothing, one round
//! trip, the local pre-check, fail modes with Redis stopped and frozen.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use larder_core::Handle;
use larder_ratelimit::{Check, Decision, DenyReason, FailMode, Policy, Quota, RateLimiter, Source};
use larder_testing::{eventually, on_every_topology, Redis};

/// A handle on `redis`, configured from its topology's variables.
fn handle(redis: &Redis) -> Handle {
    Handle::new(common::config_on(redis).key_prefix("app").build().unwrap()).unwrap()
}

/// Commands clients sent, on every primary: without housekeeping, and without the
/// GET/SET/TIME the rate-limit script runs inside its one EVALSHA (commandstats
/// counts those too).
fn client_commands(redis: &Redis) -> u64 {
    redis.client_calls(&["get", "set", "time"]).iter().sum()
}

async fn warm(limiter: &RateLimiter) {
    let p = Policy::new("warmup", "1000/second").unwrap();
    let d = limiter.check(&[Check::new(&p, "w")]).await;
    assert_eq!(d.quotas()[0].source, Source::Redis, "{d:?}");
}

on_every_topology!(
    async fn every_instances_decisions_add_up(redis: &Redis) {
        // Two instances of an app (a handle each) share one quota of 3 a minute.
        let (a, b) = (
            RateLimiter::new(handle(redis)),
            RateLimiter::new(handle(redis)),
        );
        let policy = Policy::new("shared", "3/minute").unwrap();
        let check = |limiter: &RateLimiter| {
            let (limiter, policy) = (limiter.clone(), policy.clone());
            async move { limiter.check(&[Check::new(&policy, "user:7")]).await }
        };
        for _ in 0..2 {
            assert!(check(&a).await.is_allowed());
        }
        assert!(check(&b).await.is_allowed());
        assert!(!check(&b).await.is_allowed());
        // (allowed, rejected) of the policy over the hour, as `limiter` reports it.
        let seen = |limiter: &RateLimiter| {
            let limiter = limiter.clone();
            async move {
                let activity = limiter.activity().await.unwrap();
                let counts = activity
                    .minutes
                    .iter()
                    .filter_map(|m| m.by_policy.get("shared"));
                counts.fold((0, 0), |(a, r), c| (a + c.allowed, r + c.rejected))
            }
        };
        assert_eq!(seen(&a).await, (2, 0), "before sharing, its own");
        a.share_activity().await.unwrap();
        b.share_activity().await.unwrap();
        assert_eq!(seen(&a).await, (3, 1));
        assert_eq!(seen(&b).await, (3, 1));
        // The keys rejected most stay each instance's own.
        assert!(a.activity().await.unwrap().top.is_empty());
        assert_eq!(b.activity().await.unwrap().top.len(), 1);
    }
);

on_every_topology!(
    async fn concurrent_requests_admit_exactly_the_limit(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        warm(&limiter).await;
        let policy = Policy::new("burst", "10/minute").unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let limiter = limiter.clone();
                let policy = policy.clone();
                tokio::spawn(
                    async move { limiter.check(&[Check::new(&policy, "ip:1.2.3.4")]).await },
                )
            })
            .collect();
        let mut allowed = 0;
        for t in tasks {
            let d = t.await.unwrap();
            assert!(
                d.quotas()
                    .iter()
                    .all(|q| matches!(q.source, Source::Redis | Source::LocalBlock)),
                "{d:?}"
            );
            allowed += usize::from(d.is_allowed());
        }
        assert_eq!(allowed, 10);
    }
);

on_every_topology!(
    async fn a_rejected_request_consumes_from_no_policy(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        let wide = Policy::new("wide", "100/minute").unwrap();
        let narrow = Policy::new("narrow", "1/minute").unwrap();
        let both = || {
            [
                Check::new(&wide, "ip:9.9.9.9"),
                Check::new(&narrow, "ip:9.9.9.9"),
            ]
        };

        let first = limiter.check(&both()).await;
        assert!(first.is_allowed());
        assert_eq!(first.quotas()[0].remaining, 99);
        for _ in 0..3 {
            let d = limiter.check(&both()).await;
            let Decision::Deny { reason, .. } = &d else {
                panic!("{d:?}")
            };
            assert_eq!(reason.policy(), "narrow");
        }
        // The three rejections charged nothing to `wide`.
        let only_wide = limiter.check(&[Check::new(&wide, "ip:9.9.9.9")]).await;
        assert!(only_wide.is_allowed());
        assert_eq!(only_wide.quotas()[0].remaining, 98, "{only_wide:?}");
    }
);

on_every_topology!(
    async fn policies_counting_one_key_cost_one_round_trip(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        warm(&limiter).await;
        let ip = Policy::new("ip", "100/minute").unwrap();
        let login = Policy::new("login", "10000/hour").unwrap();
        let route = Policy::new("route", "10/second;1000/hour").unwrap();
        let key = "ip:1.1.1.1";

        let before = (redis.calls("evalsha"), client_commands(redis));
        assert!(limiter.check(&[Check::new(&ip, key)]).await.is_allowed());
        let one = (
            redis.calls("evalsha") - before.0,
            client_commands(redis) - before.1,
        );

        // Every per-IP policy of a request: one slot, one script, on every topology.
        let before = (redis.calls("evalsha"), client_commands(redis));
        let d = limiter
            .check(&[
                Check::new(&ip, key),
                Check::new(&login, key),
                Check::new(&route, key),
            ])
            .await;
        assert!(d.is_allowed());
        assert_eq!(d.quotas().len(), 4);
        let three = (
            redis.calls("evalsha") - before.0,
            client_commands(redis) - before.1,
        );
        assert_eq!(one.0, 1);
        assert_eq!(one, three, "one policy {one:?}, three policies {three:?}");
        // All four quotas were read inside that one call.
        let gets = redis.calls("get");
        assert!(limiter
            .check(&[
                Check::new(&ip, key),
                Check::new(&login, key),
                Check::new(&route, key),
            ])
            .await
            .is_allowed());
        assert_eq!(redis.calls("get") - gets, 4);

        // Policies counting different things: one round trip on one node; on a
        // cluster, one per slot their keys fall in (sent at the same time).
        let checks = [Check::new(&ip, key), Check::new(&login, "tenant:acme")];
        let slots: std::collections::BTreeSet<u16> = [
            limiter.redis_key(&ip, 0, key).unwrap(),
            limiter.redis_key(&login, 0, "tenant:acme").unwrap(),
        ]
        .iter()
        .map(|k| larder_core::keyspace::cluster_slot(k.as_bytes()))
        .collect();
        let before = redis.calls("evalsha");
        assert!(limiter.check(&checks).await.is_allowed());
        let scripts = redis.calls("evalsha") - before;
        match redis {
            Redis::Cluster(_) => assert_eq!(scripts, slots.len() as u64),
            _ => assert_eq!(scripts, 1),
        }
    }
);

on_every_topology!(
    async fn policies_in_different_slots_stay_all_or_nothing(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        let ip = Policy::new("ip", "100/minute").unwrap();
        let tenant = Policy::new("tenant", "1/minute").unwrap();
        let both = || {
            [
                Check::new(&ip, "ip:9.9.9.9"),
                Check::new(&tenant, "tenant:acme"),
            ]
        };
        if let Redis::Cluster(_) = redis {
            let slot = |k: String| larder_core::keyspace::cluster_slot(k.as_bytes());
            assert_ne!(
                slot(limiter.redis_key(&ip, 0, "ip:9.9.9.9").unwrap()),
                slot(limiter.redis_key(&tenant, 0, "tenant:acme").unwrap()),
                "the test needs keys in two slots"
            );
        }
        assert!(limiter.check(&both()).await.is_allowed());
        for _ in 0..3 {
            let d = limiter.check(&both()).await;
            let Decision::Deny { reason, .. } = &d else {
                panic!("{d:?}")
            };
            assert_eq!(reason.policy(), "tenant");
        }
        // The rejections took nothing from the IP's quota: it was reserved in its
        // slot, then refunded (on one node, never charged).
        let only_ip = limiter.check(&[Check::new(&ip, "ip:9.9.9.9")]).await;
        assert!(only_ip.is_allowed());
        assert_eq!(only_ip.quotas()[0].remaining, 98, "{only_ip:?}");
    }
);

on_every_topology!(
    async fn two_instances_share_one_limit(redis: &Redis) {
        let a = RateLimiter::new(handle(redis));
        let b = RateLimiter::new(handle(redis));
        let policy = Policy::new("shared", "6/minute").unwrap();
        let mut allowed = 0;
        for i in 0..12 {
            let limiter = if i % 2 == 0 { &a } else { &b };
            allowed += usize::from(
                limiter
                    .check(&[Check::new(&policy, "tenant:1")])
                    .await
                    .is_allowed(),
            );
        }
        assert_eq!(allowed, 6);
    }
);

on_every_topology!(
    async fn a_known_blocked_key_is_rejected_without_a_round_trip(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        warm(&limiter).await;
        let policy = Policy::new("login", "1/minute").unwrap();
        let check = || [Check::new(&policy, "ip:5.5.5.5")];
        assert!(limiter.check(&check()).await.is_allowed());
        let before = redis.calls("evalsha");
        let second = limiter.check(&check()).await;
        assert!(!second.is_allowed());
        assert_eq!(second.quotas()[0].source, Source::Redis);
        assert_eq!(redis.calls("evalsha"), before + 1);

        let third = limiter.check(&check()).await;
        let Decision::Deny {
            retry_after,
            quotas,
            ..
        } = &third
        else {
            panic!("{third:?}")
        };
        assert_eq!(quotas[0].source, Source::LocalBlock);
        assert!(
            *retry_after > Duration::from_secs(50) && *retry_after <= Duration::from_secs(60),
            "{retry_after:?}"
        );
        assert_eq!(
            redis.calls("evalsha"),
            before + 1,
            "the local pre-check made a round trip"
        );

        // Another key is not blocked; with the pre-check off every call goes to Redis.
        assert!(limiter
            .check(&[Check::new(&policy, "ip:6.6.6.6")])
            .await
            .is_allowed());
        let strict = limiter.clone().local_precheck(false);
        let d = strict.check(&check()).await;
        assert_eq!(d.quotas()[0].source, Source::Redis);
        assert!(!d.is_allowed());
    }
);

on_every_topology!(
    async fn retrying_after_retry_after_is_admitted(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        let policy = Policy::new("fast", "4/second").unwrap();
        let check = || [Check::new(&policy, "user:1")];
        for _ in 0..4 {
            assert!(limiter.check(&check()).await.is_allowed());
        }
        let d = limiter.check(&check()).await;
        let Decision::Deny {
            retry_after,
            quotas,
            ..
        } = &d
        else {
            panic!("{d:?}")
        };
        // One request every 250 ms: the next is admitted within that.
        assert!(
            *retry_after > Duration::ZERO && *retry_after <= Duration::from_millis(250),
            "{retry_after:?}"
        );
        assert_eq!(quotas[0].reset, *retry_after);
        tokio::time::sleep(*retry_after + Duration::from_millis(5)).await;
        let d = limiter.check(&check()).await;
        assert!(d.is_allowed(), "{d:?}");
    }
);

on_every_topology!(
    async fn state_lives_in_the_limiter_scope_and_expires(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        let policy = Policy::new("ip", "100/minute").unwrap();
        assert!(limiter
            .check(&[Check::new(&policy, "ip:7.7.7.7")])
            .await
            .is_allowed());
        let key = limiter.redis_key(&policy, 0, "ip:7.7.7.7").unwrap();
        assert_eq!(
            key,
            "app:ratelimit:global:ratelimit:ip:100r60000ms:{ip:7.7.7.7}"
        );
        let pttl: i64 = redis
            .command_on_key(&key, &["PTTL", &key])
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap();
        // One request's worth of the quota (600 ms), not the whole period.
        assert!(pttl > 0 && pttl <= 602, "{pttl}");
    }
);

on_every_topology!(
    async fn a_corrupt_state_reads_as_a_fresh_key(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        let policy = Policy::new("ip", "10/minute").unwrap();
        let key = limiter.redis_key(&policy, 0, "ip:8.8.8.8").unwrap();
        assert!(redis
            .command_on_key(&key, &["SET", &key, "not a number"])
            .contains("OK"));
        let d = limiter.check(&[Check::new(&policy, "ip:8.8.8.8")]).await;
        assert!(d.is_allowed());
        assert_eq!(d.quotas()[0].source, Source::Redis);
        assert_eq!(d.quotas()[0].remaining, 9);
    }
);

on_every_topology!(
    async fn a_flushed_script_is_reloaded(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        let policy = Policy::new("ip", "10/minute").unwrap();
        assert!(limiter
            .check(&[Check::new(&policy, "ip:1.1.1.1")])
            .await
            .is_allowed());
        for node in redis.primaries() {
            assert!(node.command(&["SCRIPT", "FLUSH"]).contains("OK"));
        }
        let d = limiter.check(&[Check::new(&policy, "ip:1.1.1.1")]).await;
        assert_eq!(d.quotas()[0].source, Source::Redis, "{d:?}");
        assert_eq!(d.quotas()[0].remaining, 8);
    }
);

on_every_topology!(
    async fn shadow_policies_count_but_never_reject(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        let trial = Policy::new("trial", "1/minute").unwrap().shadow(true);
        let real = Policy::new("real", "100/minute").unwrap();
        let check = || {
            [
                Check::new(&trial, "ip:3.3.3.3"),
                Check::new(&real, "ip:3.3.3.3"),
            ]
        };
        let first = limiter.check(&check()).await;
        assert!(first.is_allowed());
        assert!(first.quotas()[0].allowed);
        for _ in 0..3 {
            let d = limiter.check(&check()).await;
            assert!(d.is_allowed(), "{d:?}");
            assert!(!d.quotas()[0].allowed && d.quotas()[0].shadow, "{d:?}");
            assert!(d.quotas()[1].allowed);
        }
        // The enforced policy was charged for every request.
        let d = limiter.check(&[Check::new(&real, "ip:3.3.3.3")]).await;
        assert_eq!(d.quotas()[0].remaining, 95);
    }
);

on_every_topology!(
    async fn a_cost_over_the_burst_is_rejected_with_its_reason(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        let policy = Policy::new("upload", "3/minute").unwrap();
        let d = limiter
            .check(&[Check::new(&policy, "user:9").cost(5)])
            .await;
        let Decision::Deny { reason, .. } = &d else {
            panic!("{d:?}")
        };
        assert!(
            matches!(reason, DenyReason::CostExceedsBurst { cost: 5, .. }),
            "{reason:?}"
        );
        // A cost within the burst is charged in full.
        let d = limiter
            .check(&[Check::new(&policy, "user:9").cost(2)])
            .await;
        assert!(d.is_allowed());
        assert_eq!(d.quotas()[0].remaining, 1);
        let d = limiter
            .check(&[Check::new(&policy, "user:9").cost(2)])
            .await;
        assert!(!d.is_allowed());
        assert_eq!(d.quotas()[0].remaining, 1);
    }
);

on_every_topology!(
    async fn hostile_keys_stay_in_their_scope(redis: &Redis) {
        let limiter = RateLimiter::new(handle(redis));
        let policy = Policy::new("ip", "10/minute").unwrap();
        for hostile in ["*", "a\r\nFLUSHALL", "x".repeat(1000).as_str(), ""] {
            let d = limiter.check(&[Check::new(&policy, hostile)]).await;
            assert!(d.is_allowed(), "{hostile:?}: {d:?}");
            assert_eq!(d.quotas()[0].source, Source::Redis);
        }
        let keys: String = redis
            .primaries()
            .iter()
            .map(|n| n.command(&["SCAN", "0", "COUNT", "1000"]))
            .collect();
        // Every key the server holds is checked below (DBSIZE is 4 too).
        assert_eq!(
            keys.lines().filter(|l| l.contains("app:")).count(),
            4,
            "{keys}"
        );
        for line in keys.lines().filter(|l| l.contains("app:")) {
            assert!(
                line.contains("app:ratelimit:global:ratelimit:ip:10r60000ms:{"),
                "{line}"
            );
            assert!(line.len() < 200, "{line}");
        }
        assert!(!keys.contains("FLUSHALL"));
        assert_eq!(redis.dbsize(), 4);
    }
);

on_every_topology!(
    async fn redis_stopped_applies_each_fail_mode_and_recovers(redis: &mut Redis) {
        let limiter = RateLimiter::new(handle(redis));
        warm(&limiter).await;
        let local = Policy::new("local", "2/minute").unwrap();
        let open = Policy::new("open", "1/minute")
            .unwrap()
            .fail_mode(FailMode::Allow);
        let closed = Policy::new("closed", "100/minute")
            .unwrap()
            .fail_mode(FailMode::Deny { status: 503 });
        redis.stop();

        // Local: the same quota, per instance.
        let mut local_allowed = 0;
        for _ in 0..4 {
            let d = limiter.check(&[Check::new(&local, "ip:1.1.1.1")]).await;
            assert_eq!(d.quotas()[0].source, Source::Local, "{d:?}");
            local_allowed += usize::from(d.is_allowed());
        }
        assert_eq!(local_allowed, 2);
        // Allow: everything passes.
        for _ in 0..3 {
            let d = limiter.check(&[Check::new(&open, "ip:1.1.1.1")]).await;
            assert!(d.is_allowed());
            assert_eq!(d.quotas()[0].source, Source::FailOpen);
        }
        // Deny: a clear rejection with the configured status.
        let d = limiter.check(&[Check::new(&closed, "ip:1.1.1.1")]).await;
        let Decision::Deny { reason, .. } = &d else {
            panic!("{d:?}")
        };
        assert!(
            matches!(reason, DenyReason::Unavailable { status: 503, .. }),
            "{reason:?}"
        );

        redis.restart();
        let recovered = eventually(100, Duration::from_millis(50), || async {
            let d = limiter.check(&[Check::new(&open, "ip:2.2.2.2")]).await;
            d.quotas()[0].source == Source::Redis
        })
        .await;
        assert!(recovered, "the limiter did not return to Redis by itself");
    }
);

on_every_topology!(
    async fn a_frozen_redis_never_hangs_a_check(redis: &mut Redis) {
        let limiter = RateLimiter::new(handle(redis));
        warm(&limiter).await;
        let policy = Policy::new("ip", "2/minute").unwrap();
        redis.freeze();
        for _ in 0..5 {
            // The bound only catches a hang; the deadline itself is 200 ms.
            let d = tokio::time::timeout(
                Duration::from_secs(10),
                limiter.check(&[Check::new(&policy, "ip:4.4.4.4")]),
            )
            .await
            .expect("a check waited on a frozen Redis");
            assert_eq!(d.quotas()[0].source, Source::Local);
        }
        redis.thaw();
    }
);

#[tokio::test]
async fn without_redis_the_local_tier_limits() {
    let limiter = RateLimiter::new(Handle::in_process());
    let policy = Policy::with_quotas("q", [Quota::per_minute(3).unwrap()]).unwrap();
    let mut allowed = 0;
    for _ in 0..5 {
        let d = limiter.check(&[Check::new(&policy, "k")]).await;
        assert_eq!(d.quotas()[0].source, Source::Local);
        allowed += usize::from(d.is_allowed());
    }
    assert_eq!(allowed, 3);
}
