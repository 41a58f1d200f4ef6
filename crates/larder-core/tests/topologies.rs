//! The handle's behaviour on every topology (one node, Redis Cluster, Sentinel),
//! from one body each: the components above never know which one they run on.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use larder_core::{Config, ConfigBuilder, Handle, Module, Tenant};
use larder_testing::{on_every_topology, Redis};

/// A handle configured the way an operator would: from the topology's variables.
fn handle_on(redis: &Redis) -> Handle {
    let config = ConfigBuilder::from_config(Config::from_vars(redis.vars()).unwrap())
        .key_prefix("t")
        .op_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    Handle::new(config).unwrap()
}

on_every_topology!(
    async fn commands_scripts_and_pipelines(redis: &Redis) {
        let handle = handle_on(redis);
        let ks = handle.keyspace();
        // Keys of many tenants: on a cluster, many slots and every primary.
        for t in 0..30 {
            let key = ks
                .key(
                    &Tenant::new(format!("t{t}")).unwrap(),
                    &Module::new("m").unwrap(),
                    "k",
                )
                .unwrap();
            let _: () = handle
                .query("set", redis::cmd("SET").arg(&key).arg(t))
                .await
                .unwrap();
            let got: i64 = handle
                .query("get", redis::cmd("GET").arg(&key))
                .await
                .unwrap();
            assert_eq!(got, t);
            // A script and a pipeline on one tenant's keys (one slot).
            let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
            let mut inv = script.prepare_invoke();
            inv.key(&key).arg(5);
            let n: i64 = handle.script("incr", &inv).await.unwrap();
            assert_eq!(n, t + 5);
            let mut pipe = redis::pipe();
            pipe.cmd("INCR").arg(&key).cmd("GET").arg(&key);
            let (a, b): (i64, i64) = handle.pipeline("pipe", &pipe).await.unwrap();
            assert_eq!((a, b), (t + 6, t + 6));
        }
        let health = handle.health().await;
        assert!(health.is_ok(), "{health:?}");
    }
);

on_every_topology!(
    async fn scan_reaches_every_primary(redis: &Redis) {
        let handle = handle_on(redis);
        let ks = handle.keyspace();
        let module = Module::new("m").unwrap();
        let mut written = Vec::new();
        for t in 0..60 {
            let key = ks
                .key(&Tenant::new(format!("s{t}")).unwrap(), &module, "k")
                .unwrap();
            let _: () = handle
                .query("set", redis::cmd("SET").arg(&key).arg(1))
                .await
                .unwrap();
            written.push(key);
        }
        let mut seen = Vec::new();
        let mut scan = handle.scan("t:tenant:*", 7);
        while let Some(page) = scan.next_page().await.unwrap() {
            seen.extend(page);
        }
        seen.sort();
        seen.dedup();
        written.sort();
        assert_eq!(seen, written);
        if matches!(redis, Redis::Cluster(_)) {
            // The keys really are spread: more than one primary holds some.
            let holding = redis
                .primaries()
                .iter()
                .filter(|n| n.command(&["DBSIZE"]) != ":0\r\n")
                .count();
            assert!(holding > 1, "keys on {holding} primary");
        }
    }
);

on_every_topology!(
    async fn blocking_pops_and_pubsub(redis: &Redis) {
        let handle = handle_on(redis);
        let list = "t:global:{jobs}:ready";
        let pusher = handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _: i64 = pusher
                .query("rpush", redis::cmd("RPUSH").arg(list).arg("job"))
                .await
                .unwrap();
        });
        let popped: Option<(String, String)> = handle
            .blocking(
                "blpop",
                redis::cmd("BLPOP").arg(list).arg(3),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(popped, Some((list.to_owned(), "job".to_owned())));

        let mut pubsub = handle.pubsub().await.unwrap();
        pubsub.subscribe("t:chan").await.unwrap();
        let _: i64 = handle
            .query("publish", redis::cmd("PUBLISH").arg("t:chan").arg("hello"))
            .await
            .unwrap();
        let mut messages = pubsub.on_message();
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut messages),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(got.get_payload::<String>().unwrap(), "hello");
    }
);

/// Writes `key` until it succeeds (at most `limit`), checking that no call waits
/// past the deadline meanwhile; returns how long it took.
async fn write_until_ok(handle: &Handle, key: &str, limit: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    let deadline = handle.guard().deadline();
    loop {
        let call = tokio::time::Instant::now();
        let result: Result<(), _> = handle
            .query("set", redis::cmd("SET").arg(key).arg("after"))
            .await;
        // The deadline, plus scheduling slack on a busy 2-core machine.
        assert!(
            call.elapsed() < deadline + Duration::from_millis(500),
            "a call waited {:?}",
            call.elapsed()
        );
        if result.is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no successful write in {limit:?}: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_follows_sentinels_failover() {
    let Redis::Sentinel(mut set) = Redis::start(larder_testing::TopologyKind::Sentinel) else {
        unreachable!()
    };
    let redis_vars = vec![
        ("REDIS_SENTINEL_NODES", set.sentinel_urls().join(",")),
        ("REDIS_SENTINEL_MASTER", set.master_name().to_owned()),
    ];
    let config = ConfigBuilder::from_config(Config::from_vars(redis_vars).unwrap())
        .op_timeout(Duration::from_millis(200))
        .breaker_cooldown(Duration::from_millis(200))
        .build()
        .unwrap();
    let handle = Handle::new(config).unwrap();
    write_until_ok(&handle, "t:k", Duration::from_secs(5)).await;
    let old = set.primary_port();
    set.kill_primary();
    let new = set.wait_failover(old);
    assert_ne!(new, old);
    // No restart, no new handle: the next calls find the promoted replica.
    write_until_ok(&handle, "t:k", Duration::from_secs(20)).await;
    assert_eq!(set.primary().command(&["GET", "t:k"]), "$5\r\nafter\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_follows_a_cluster_failover() {
    let Redis::Cluster(mut cluster) = Redis::start(larder_testing::TopologyKind::Cluster) else {
        unreachable!()
    };
    let config = ConfigBuilder::from_config(
        Config::from_vars([("REDIS_CLUSTER_NODES", cluster.seed_urls().join(","))]).unwrap(),
    )
    .op_timeout(Duration::from_millis(200))
    .breaker_cooldown(Duration::from_millis(200))
    .build()
    .unwrap();
    let handle = Handle::new(config).unwrap();
    let key = "t:tenant:{k1}:m:k";
    write_until_ok(&handle, key, Duration::from_secs(5)).await;
    let victim = cluster.primary_of_key(key);
    cluster.node_mut(victim).kill();
    cluster.wait_primary_count(3);
    write_until_ok(&handle, key, Duration::from_secs(20)).await;
    let owner = cluster.primary_of_key(key);
    assert_ne!(owner, victim);
    assert_eq!(
        cluster.node(owner).command(&["GET", key]),
        "$5\r\nafter\r\n"
    );
}
