//! The handle against real Redis: commands, pipelines, scripts by SHA, dedicated
//! and pub/sub connections, health, credentials. Behaviour that does not depend on
//! the topology runs on one node, a cluster and Sentinel from one body
//! (`on_every_topology!`); the rest counts one server's connections or starts
//! servers with credentials of their own.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{handle_for, handle_for_url, handle_on, LogCapture};
use larder_core::{BackendErrorKind, Error, Handle};
use larder_testing::{on_every_topology, Redis, RedisServer};

/// Empties the script cache of every primary.
fn script_flush(redis: &Redis) {
    for node in redis.primaries() {
        assert!(node.command(&["SCRIPT", "FLUSH"]).starts_with("+OK"));
    }
}

#[tokio::test]
async fn commands_and_pipelines_ride_the_shared_connection() {
    let server = RedisServer::start();
    let handle = handle_for(&server);
    let _: () = handle
        .query("set", redis::cmd("SET").arg("a").arg("1"))
        .await
        .unwrap();
    let v: String = handle
        .query("get", redis::cmd("GET").arg("a"))
        .await
        .unwrap();
    assert_eq!(v, "1");
    let (x, y): (i64, i64) = handle
        .pipeline("incr2", redis::pipe().incr("n", 1).incr("n", 2))
        .await
        .unwrap();
    assert_eq!((x, y), (1, 3));
    // One client connection for all of it: the multiplexed one (plus our probe).
    let clients = server.command(&["CLIENT", "LIST"]);
    assert_eq!(
        clients.lines().filter(|l| l.contains("cmd=")).count(),
        2,
        "{clients}"
    );
}

on_every_topology!(
    async fn scripts_run_by_sha_and_reload_after_script_flush(redis: &Redis) {
        let handle = handle_on(redis);
        let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
        let mut inv = script.key("s");
        inv.arg(5);
        let n: i64 = handle.script("incrby", &inv).await.unwrap();
        assert_eq!(n, 5);
        script_flush(redis);
        let n: i64 = handle.script("incrby", &inv).await.unwrap();
        assert_eq!(n, 10);
        // Run by SHA: EVALSHA, a NOSCRIPT reply, SCRIPT LOAD, EVALSHA again; never
        // EVAL. redis-rs sends a cluster's SCRIPT LOAD to every primary.
        assert_eq!(redis.calls("eval"), 0);
        assert_eq!(
            redis.calls("script|load"),
            2 * redis.primaries().len() as u64
        );
    }
);

on_every_topology!(
    async fn prepared_evalsha_commands_reload_after_script_flush(redis: &Redis) {
        let handle = handle_on(redis);
        let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
        let mut cmd = Handle::evalsha_cmd(&script, 1);
        cmd.arg("e").arg(7);
        let n: i64 = handle.evalsha("incrby", &script, &cmd).await.unwrap();
        assert_eq!(n, 7, "loaded on the first NOSCRIPT");
        script_flush(redis);
        let n: i64 = handle.evalsha("incrby", &script, &cmd).await.unwrap();
        assert_eq!(n, 14);
        assert_eq!(redis.calls("eval"), 0);
        assert_eq!(
            redis.calls("script|load"),
            2 * redis.primaries().len() as u64
        );
        assert_eq!(redis.calls("evalsha"), 4);
    }
);

on_every_topology!(
    async fn command_errors_are_typed_and_do_not_open_the_breaker(redis: &Redis) {
        let handle = handle_on(redis);
        let _: () = handle
            .query("set", redis::cmd("SET").arg("s").arg("x"))
            .await
            .unwrap();
        for _ in 0..5 {
            let err = handle
                .query::<i64>("lpush", redis::cmd("LPUSH").arg("s").arg("y"))
                .await
                .unwrap_err();
            match &err {
                Error::Backend {
                    op: "lpush",
                    source,
                } => {
                    assert_eq!(source.kind(), BackendErrorKind::Command);
                    assert_eq!(source.code(), Some("WRONGTYPE"));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(handle.guard().state(), larder_core::BreakerState::Closed);
    }
);

#[tokio::test]
async fn an_abandoned_blocking_command_does_not_hold_up_the_next_borrower() {
    let server = RedisServer::start();
    // One pooled connection: the next borrower would get the abandoned one.
    let config = larder_core::Config::builder()
        .redis_url(&server.url())
        .key_prefix("t")
        .pool_size(1)
        .build()
        .unwrap();
    let handle = Handle::new(config).unwrap();
    let blocked = || {
        server
            .command(&["INFO", "clients"])
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:").map(str::to_owned))
            .unwrap()
    };
    // A BLPOP nobody answers (30 s on the server), dropped once Redis holds it, as a
    // worker's shutdown drops its wait for work.
    let mut idle = redis::cmd("BLPOP");
    idle.arg("nothing").arg(30);
    let mut wait =
        Box::pin(handle.blocking::<redis::Value>("blpop", &idle, Duration::from_secs(40)));
    let mut held = false;
    for _ in 0..100 {
        if tokio::time::timeout(Duration::from_millis(20), &mut wait)
            .await
            .is_ok()
        {
            panic!("a BLPOP on an empty list returned");
        }
        if blocked() == "1" {
            held = true;
            break;
        }
    }
    assert!(held, "the BLPOP reached Redis");
    drop(wait);
    // Its connection is closed, which ends the command in Redis...
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            (blocked() == "0").then_some(())
        })
        .await
        .is_some(),
        "the abandoned BLPOP still blocks a connection"
    );
    // ...and the next blocking command gets a working connection (without the fix
    // it would wait 30 s behind the abandoned one: the 10 s bound catches that).
    let _: () = handle
        .query("rpush", redis::cmd("RPUSH").arg("ready").arg("job"))
        .await
        .unwrap();
    let mut ready = redis::cmd("BLPOP");
    ready.arg("ready").arg(30);
    let popped: Option<(String, String)> = tokio::time::timeout(
        Duration::from_secs(10),
        handle.blocking("blpop", &ready, Duration::from_secs(40)),
    )
    .await
    .expect("served, not queued behind the abandoned command")
    .unwrap();
    assert_eq!(popped, Some(("ready".into(), "job".into())));
}

#[tokio::test]
async fn dedicated_connections_and_pubsub() {
    let server = RedisServer::start();
    let handle = handle_for(&server);
    let mut conn = handle.dedicated().await.unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg("q")
        .arg("job")
        .query_async(&mut conn)
        .await
        .unwrap();
    let popped: Option<(String, String)> = handle
        .guard()
        .run_with_deadline("blpop", Duration::from_secs(3), || {
            let mut c = conn.connection();
            async move {
                redis::cmd("BLPOP")
                    .arg("q")
                    .arg(1)
                    .query_async(&mut c)
                    .await
            }
        })
        .await
        .unwrap();
    assert_eq!(popped, Some(("q".into(), "job".into())));

    let mut pubsub = handle.pubsub().await.unwrap();
    pubsub.subscribe("chan").await.unwrap();
    let n: i64 = handle
        .query("publish", redis::cmd("PUBLISH").arg("chan").arg("hello"))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let mut stream = pubsub.on_message();
    let msg = tokio::time::timeout(Duration::from_secs(5), futures_next(&mut stream))
        .await
        .expect("message within 5 s")
        .expect("stream open");
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
}

async fn futures_next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await
}

on_every_topology!(
    async fn health_reports_connected_then_degraded(redis: &mut Redis) {
        let handle = handle_on(redis);
        let report = handle.health().await;
        let json: serde_json::Value = serde_json::from_slice(&report.to_json()).unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["cache"], "connected");
        assert_eq!(json["redis"], "healthy");
        assert!(json["latency_ms"].as_f64().unwrap() >= 0.0);

        redis.stop();
        let report = handle.health().await;
        let json: serde_json::Value = serde_json::from_slice(&report.to_json()).unwrap();
        assert_eq!(json["status"], "degraded");
        assert_eq!(json["cache"], "unavailable");
        assert_eq!(json["redis"], "unreachable");
    }
);

// A health endpoint's probe PINGs at most once a second, however often it is
// asked, and shows an outage as soon as the breaker opens, not a second later.
// The handle's own call count is the measure: sentinels and replicas PING a
// primary on their own.
on_every_topology!(
    async fn the_health_probe_pings_once_a_second_and_sees_an_outage_at_once(redis: &mut Redis) {
        let handle = handle_on(redis);
        let probe = larder_core::HealthProbe::new(handle.clone());
        let calls = || handle.guard().stats().attempted;
        assert_eq!(probe.report().await.status, larder_core::health::Status::Ok);
        let before = calls();
        for _ in 0..50 {
            assert_eq!(probe.report().await.status, larder_core::health::Status::Ok);
        }
        assert_eq!(
            calls(),
            before,
            "no PING for 50 more reports within the second"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let _ = probe.report().await;
        assert_eq!(calls(), before + 1, "a second later, one");

        redis.stop();
        // Three failed calls open the breaker.
        for _ in 0..3 {
            let _ = handle.query::<String>("ping", &redis::cmd("PING")).await;
        }
        assert_eq!(
            probe.report().await.status,
            larder_core::health::Status::Degraded,
            "the open breaker is seen within the second"
        );
    }
);

#[tokio::test]
async fn in_process_handle_refuses_at_once_and_is_healthy() {
    let handle = Handle::in_process();
    let err = handle
        .query::<String>("get", redis::cmd("GET").arg("a"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Unavailable {
            reason: larder_core::UnavailableReason::NotConfigured
        }
    ));
    assert_eq!(handle.guard().stats().attempted, 0);
    let report = handle.health().await;
    let json: serde_json::Value = serde_json::from_slice(&report.to_json()).unwrap();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["cache"], "in_process");
}

#[tokio::test]
async fn requirepass_and_acl_users_authenticate() {
    let server = RedisServer::builder()
        .requirepass("top-secret")
        .acl_user("app", "app:pw with spaces")
        .start();
    for url in [
        server.url_with_auth("", "top-secret"),
        server.url_with_auth("app", "app:pw with spaces"),
    ] {
        let handle = handle_for_url(&url);
        let who: String = handle
            .query("whoami", redis::cmd("ACL").arg("WHOAMI"))
            .await
            .unwrap();
        assert!(who == "default" || who == "app", "{who}");
    }
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_that_never_shows_the_password() {
    let server = RedisServer::builder()
        .acl_user("app", "right-password")
        .default_user_off()
        .start();
    let secret = "Wr0ng-Pa55word";
    let logs = LogCapture::default();
    let _guard = logs.install();

    let url = server.url_with_auth("app", secret);
    let handle = handle_for_url(&url);
    let err = handle
        .query::<String>("get", redis::cmd("GET").arg("k"))
        .await
        .unwrap_err();
    let shown = format!("{err} | {err:?} | {handle:?} | {:?}", handle.redis_url());
    assert!(!shown.contains(secret), "{shown}");
    match &err {
        Error::Backend { source, .. } => assert_eq!(source.kind(), BackendErrorKind::Auth, "{err}"),
        other => panic!("expected an auth error, got {other:?}"),
    }
    assert!(err.to_string().contains("auth"), "{err}");
    // Keep failing until the breaker opens, so every log path runs. (While the
    // background connection is being retried, a call may be refused without
    // counting: on a loaded machine five calls were not always enough.)
    for _ in 0..200 {
        if handle.guard().state() == larder_core::BreakerState::Open {
            break;
        }
        let _ = handle
            .query::<String>("get", redis::cmd("GET").arg("k"))
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = handle.health().await;
    let text = logs.text();
    assert!(text.contains("circuit breaker open"), "{text}");
    assert!(!text.contains(secret), "{text}");
    assert!(text.contains("app:***@127.0.0.1"), "{text}");
}

#[tokio::test]
async fn the_handle_connects_in_the_background_before_the_first_request() {
    let server = RedisServer::start();
    let handle = handle_for(&server);
    // CLIENT LIST always shows the asking connection; a second one is the handle's.
    let connected = common::eventually(Duration::from_secs(5), || async {
        let clients = server.command(&["CLIENT", "LIST"]);
        (clients.lines().filter(|l| l.contains("cmd=")).count() >= 2).then_some(())
    })
    .await;
    assert!(connected.is_some(), "connected without any request");
    assert_eq!(handle.guard().stats().attempted, 1, "one warm-up PING");
    assert_eq!(handle.guard().stats().succeeded, 1);
}
