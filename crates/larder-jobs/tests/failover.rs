//! Failover drills on real Sentinel sets and clusters: producers enqueue while the
//! primary is killed with SIGKILL; with `wait_for_replicas` on, no job the queue
//! acknowledged is lost once a replica is promoted.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_core::{Config, ConfigBuilder, Handle};
use larder_jobs::{JobError, Jobs, JobsConfig, TaskRef};
use larder_testing::{eventually, Redis, TopologyKind};

const ADD: TaskRef<(i64, i64), i64> = TaskRef::new("add");

fn jobs_on(redis: &Redis, config: JobsConfig) -> Jobs {
    let handle = Handle::new(
        ConfigBuilder::from_config(Config::from_vars(redis.vars()).unwrap())
            .op_timeout(Duration::from_millis(500))
            .breaker_threshold(3)
            .breaker_cooldown(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .unwrap();
    Jobs::with_config(handle, config)
}

/// Enqueues without pause until told to stop; returns the ids the queue
/// acknowledged and how many enqueues failed (an error is never an acknowledgement).
fn produce(jobs: Jobs, stop: Arc<Mutex<bool>>) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    tokio::spawn(async move {
        let (mut acked, mut failed) = (Vec::new(), 0);
        let mut i = 0i64;
        while !*stop.lock().unwrap() {
            i += 1;
            match jobs.delay(ADD, &(i, i)).await {
                Ok(id) => acked.push(id),
                Err(
                    JobError::NotReplicated { .. }
                    | JobError::Unavailable(_)
                    | JobError::Backend(_),
                ) => {
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("unexpected enqueue error: {e}"),
            }
        }
        (acked, failed)
    })
}

/// Starts producers, lets `kill` take the primary down, waits for the promotion,
/// stops the producers, and checks every acknowledged job is on the new primary.
async fn drill(mut redis: Redis, kill: impl FnOnce(&mut Redis, &Jobs)) {
    let config = JobsConfig::default().wait_for_replicas(1, Duration::from_secs(2));
    let jobs = jobs_on(&redis, config);
    let stop = Arc::new(Mutex::new(false));
    let producers: Vec<_> = (0..4)
        .map(|_| produce(jobs.clone(), Arc::clone(&stop)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill(&mut redis, &jobs);
    // Enqueues go on against the promoted replica.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    *stop.lock().unwrap() = true;
    let (mut acked, mut failed) = (Vec::new(), 0);
    for p in producers {
        let (a, f) = p.await.unwrap();
        acked.extend(a);
        failed += f;
    }
    assert!(
        acked.len() > 50,
        "too few enqueues to tell: {}",
        acked.len()
    );
    // A fresh queue on the same topology: the handle finds the new primary.
    let reader = jobs_on(&redis, JobsConfig::default());
    let mut lost = Vec::new();
    for id in &acked {
        let found = eventually(100, Duration::from_millis(50), || async {
            reader.status(id).await.is_ok_and(|s| s.is_some())
        })
        .await;
        if !found {
            lost.push(id.clone());
        }
    }
    eprintln!(
        "{:?} failover drill: {} acknowledged, {} refused or unconfirmed, {} lost",
        redis.kind(),
        acked.len(),
        failed,
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged jobs lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_job_is_lost_when_sentinel_fails_over() {
    drill(Redis::start(TopologyKind::Sentinel), |redis, _| {
        let Redis::Sentinel(set) = redis else {
            unreachable!()
        };
        let old = set.primary_port();
        set.kill_primary();
        set.wait_failover(old);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_job_is_lost_when_a_cluster_primary_dies() {
    drill(Redis::start(TopologyKind::Cluster), |redis, jobs| {
        let Redis::Cluster(cluster) = redis else {
            unreachable!()
        };
        // The primary of one of the queue's partitions.
        assert!(jobs.partitions() > 1);
        let victim = cluster.primary_of_key(&jobs.record_key("probe").unwrap());
        cluster.node_mut(victim).kill();
        cluster.wait_primary_count(3);
    })
    .await;
}

#[test]
fn the_replica_wait_is_read_from_the_environment_names() {
    let c = JobsConfig::from_vars([("JOBS_WAIT_REPLICAS", "2"), ("JOBS_WAIT_TIMEOUT_MS", "250")])
        .unwrap();
    assert!(
        format!("{c:?}").contains("replicas: Some((2, 250ms))"),
        "{c:?}"
    );
    let off = JobsConfig::from_vars([("JOBS_WAIT_REPLICAS", "0")]).unwrap();
    assert!(format!("{off:?}").contains("replicas: None"), "{off:?}");
    let err = JobsConfig::from_vars([("JOBS_WAIT_REPLICAS", "some")]).unwrap_err();
    assert!(err.to_string().starts_with("JOBS_WAIT_REPLICAS:"), "{err}");
    let err = JobsConfig::from_vars([("JOBS_WAIT_TIMEOUT_MS", "0")]).unwrap_err();
    assert!(
        err.to_string().starts_with("JOBS_WAIT_TIMEOUT_MS:"),
        "{err}"
    );
}

/// Moving the slot of one of the queue's partitions to another primary while
/// producers enqueue and a worker runs jobs: every enqueue succeeds (redirections
/// are followed) and every job runs to its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_queues_slot_under_load_loses_nothing() {
    let redis = Redis::start(TopologyKind::Cluster);
    let Redis::Cluster(cluster) = &redis else {
        unreachable!()
    };
    let jobs = jobs_on(&redis, JobsConfig::default().lease(Duration::from_secs(5)));
    let worker = larder_jobs::Worker::new(jobs.clone())
        .concurrency(4)
        .task(ADD, |(a, b), _| async move { Ok(a + b) })
        .spawn();
    let stop = Arc::new(Mutex::new(false));
    let producer = {
        let (jobs, stop) = (jobs.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut i = 0i64;
            while !*stop.lock().unwrap() {
                i += 1;
                let id = jobs
                    .delay(ADD, &(i, 1))
                    .await
                    .unwrap_or_else(|e| panic!("enqueue {i}: {e}"));
                ids.push((id, i + 1));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(jobs.partitions() > 1);
    let slot = cluster.slot_of(&jobs.record_key("probe").unwrap());
    let to = (cluster.primary_of_slot(slot) + 1) % 3;
    tokio::task::block_in_place(|| cluster.move_slot(slot, to));
    tokio::time::sleep(Duration::from_millis(300)).await;
    *stop.lock().unwrap() = true;
    let ids = producer.await.unwrap();
    assert!(ids.len() > 50, "{}", ids.len());
    assert_eq!(cluster.primary_of_slot(slot), to);
    for (id, sum) in &ids {
        assert_eq!(
            jobs.wait(ADD, id, Duration::from_secs(20)).await.unwrap(),
            *sum,
            "{id}"
        );
    }
    worker.shutdown(Duration::from_secs(10)).await;
}
