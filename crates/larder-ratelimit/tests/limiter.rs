//! The limiter against a real redis-server: exact limits, all-or-nothing, one round
//! trip, the local pre-check, fail modes with Redis stopped and frozen.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::calls;

use std::time::Duration;

use larder_core::Handle;
use larder_ratelimit::{Check, Decision, DenyReason, FailMode, Policy, Quota, RateLimiter, Source};
use larder_testing::{eventually, RedisServer};

fn handle(url: &str) -> Handle {
    Handle::new(common::config(url).key_prefix("app").build().unwrap()).unwrap()
}

/// Commands clients sent: every command the server processed except the INFO calls
/// that measure it and the GET/SET/TIME the rate-limit script runs inside its one
/// EVALSHA (commandstats counts those too).
fn client_commands(server: &RedisServer) -> u64 {
    server
        .command_calls()
        .iter()
        .filter(|(name, _)| !["info", "get", "set", "time"].contains(&name.as_str()))
        .map(|(_, calls)| calls)
        .sum()
}

async fn warm(limiter: &RateLimiter) {
    let p = Policy::new("warmup", "1000/second").unwrap();
    let d = limiter.check(&[Check::new(&p, "w")]).await;
    assert_eq!(d.quotas()[0].source, Source::Redis, "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_admit_exactly_the_limit() {
    let server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
    warm(&limiter).await;
    let policy = Policy::new("burst", "10/minute").unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let limiter = limiter.clone();
            let policy = policy.clone();
            tokio::spawn(async move { limiter.check(&[Check::new(&policy, "ip:1.2.3.4")]).await })
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

#[tokio::test]
async fn a_rejected_request_consumes_from_no_policy() {
    let server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
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

#[tokio::test]
async fn three_policies_cost_the_same_round_trips_as_one() {
    let server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
    warm(&limiter).await;
    let ip = Policy::new("ip", "100/minute").unwrap();
    let tenant = Policy::new("tenant", "10000/hour").unwrap();
    let route = Policy::new("route", "10/second;1000/hour").unwrap();

    let before = (calls(&server, "evalsha"), client_commands(&server));
    assert!(limiter
        .check(&[Check::new(&ip, "ip:1.1.1.1")])
        .await
        .is_allowed());
    let one = (
        calls(&server, "evalsha") - before.0,
        client_commands(&server) - before.1,
    );

    let before = (calls(&server, "evalsha"), client_commands(&server));
    let d = limiter
        .check(&[
            Check::new(&ip, "ip:1.1.1.1"),
            Check::new(&tenant, "tenant:acme"),
            Check::new(&route, "all"),
        ])
        .await;
    assert!(d.is_allowed());
    assert_eq!(d.quotas().len(), 4);
    let three = (
        calls(&server, "evalsha") - before.0,
        client_commands(&server) - before.1,
    );
    assert_eq!(one.0, 1);
    assert_eq!(one, three, "one policy {one:?}, three policies {three:?}");
    // All four quotas were read inside that one call.
    let gets = calls(&server, "get");
    assert!(limiter
        .check(&[
            Check::new(&ip, "ip:1.1.1.1"),
            Check::new(&tenant, "tenant:acme"),
            Check::new(&route, "all"),
        ])
        .await
        .is_allowed());
    assert_eq!(calls(&server, "get") - gets, 4);
}

#[tokio::test]
async fn two_instances_share_one_limit() {
    let server = RedisServer::start();
    let a = RateLimiter::new(handle(&server.url()));
    let b = RateLimiter::new(handle(&server.url()));
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

#[tokio::test]
async fn a_known_blocked_key_is_rejected_without_a_round_trip() {
    let server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
    warm(&limiter).await;
    let policy = Policy::new("login", "1/minute").unwrap();
    let check = || [Check::new(&policy, "ip:5.5.5.5")];
    assert!(limiter.check(&check()).await.is_allowed());
    let before = calls(&server, "evalsha");
    let second = limiter.check(&check()).await;
    assert!(!second.is_allowed());
    assert_eq!(second.quotas()[0].source, Source::Redis);
    assert_eq!(calls(&server, "evalsha"), before + 1);

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
        calls(&server, "evalsha"),
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

#[tokio::test]
async fn retrying_after_retry_after_is_admitted() {
    let server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
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

#[tokio::test]
async fn state_lives_in_the_limiter_scope_and_expires() {
    let server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
    let policy = Policy::new("ip", "100/minute").unwrap();
    assert!(limiter
        .check(&[Check::new(&policy, "ip:7.7.7.7")])
        .await
        .is_allowed());
    let key = limiter.redis_key(&policy, 0, "ip:7.7.7.7").unwrap();
    assert_eq!(
        key,
        "app:ratelimit:global:{ratelimit}:ip:100r60000ms:ip:7.7.7.7"
    );
    let pttl: i64 = server
        .command(&["PTTL", &key])
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    // One request's worth of the quota (600 ms), not the whole period.
    assert!(pttl > 0 && pttl <= 602, "{pttl}");
}

#[tokio::test]
async fn a_corrupt_state_reads_as_a_fresh_key() {
    let server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
    let policy = Policy::new("ip", "10/minute").unwrap();
    let key = limiter.redis_key(&policy, 0, "ip:8.8.8.8").unwrap();
    assert!(server
        .command(&["SET", &key, "not a number"])
        .contains("OK"));
    let d = limiter.check(&[Check::new(&policy, "ip:8.8.8.8")]).await;
    assert!(d.is_allowed());
    assert_eq!(d.quotas()[0].source, Source::Redis);
    assert_eq!(d.quotas()[0].remaining, 9);
}

#[tokio::test]
async fn a_flushed_script_is_reloaded() {
    let server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
    let policy = Policy::new("ip", "10/minute").unwrap();
    assert!(limiter
        .check(&[Check::new(&policy, "ip:1.1.1.1")])
        .await
        .is_allowed());
    assert!(server.command(&["SCRIPT", "FLUSH"]).contains("OK"));
    let d = limiter.check(&[Check::new(&policy, "ip:1.1.1.1")]).await;
    assert_eq!(d.quotas()[0].source, Source::Redis, "{d:?}");
    assert_eq!(d.quotas()[0].remaining, 8);
}

#[tokio::test]
async fn shadow_policies_count_but_never_reject() {
    let server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
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

#[tokio::test]
async fn a_cost_over_the_burst_is_rejected_with_its_reason() {
    let server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
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

#[tokio::test]
async fn hostile_keys_stay_in_their_scope() {
    let server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
    let policy = Policy::new("ip", "10/minute").unwrap();
    for hostile in ["*", "a\r\nFLUSHALL", "x".repeat(1000).as_str(), ""] {
        let d = limiter.check(&[Check::new(&policy, hostile)]).await;
        assert!(d.is_allowed(), "{hostile:?}: {d:?}");
        assert_eq!(d.quotas()[0].source, Source::Redis);
    }
    let keys = server.command(&["SCAN", "0", "COUNT", "1000"]);
    // Every key the server holds is checked below (DBSIZE is 4 too).
    assert_eq!(
        keys.lines().filter(|l| l.contains("app:")).count(),
        4,
        "{keys}"
    );
    for line in keys.lines().filter(|l| l.contains("app:")) {
        assert!(
            line.contains("app:ratelimit:global:{ratelimit}:ip:10r60000ms:"),
            "{line}"
        );
        assert!(line.len() < 200, "{line}");
    }
    assert!(!keys.contains("FLUSHALL"));
    assert_eq!(
        server.command(&["DBSIZE"]).trim().trim_start_matches(':'),
        "4"
    );
}

#[tokio::test]
async fn redis_stopped_applies_each_fail_mode_and_recovers() {
    let mut server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
    warm(&limiter).await;
    let local = Policy::new("local", "2/minute").unwrap();
    let open = Policy::new("open", "1/minute")
        .unwrap()
        .fail_mode(FailMode::Allow);
    let closed = Policy::new("closed", "100/minute")
        .unwrap()
        .fail_mode(FailMode::Deny { status: 503 });
    server.stop();

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

    server.restart();
    let recovered = eventually(100, Duration::from_millis(50), || async {
        let d = limiter.check(&[Check::new(&open, "ip:2.2.2.2")]).await;
        d.quotas()[0].source == Source::Redis
    })
    .await;
    assert!(recovered, "the limiter did not return to Redis by itself");
}

#[tokio::test]
async fn a_frozen_redis_never_hangs_a_check() {
    let mut server = RedisServer::start();
    let limiter = RateLimiter::new(handle(&server.url()));
    warm(&limiter).await;
    let policy = Policy::new("ip", "2/minute").unwrap();
    server.freeze();
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
    server.thaw();
}

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
