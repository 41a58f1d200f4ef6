//! Failure drills on real Redis: worker processes killed with SIGKILL in the middle
//! of a 10,000-job run (on one node, a partitioned cluster queue and Sentinel), and
//! one redis-server killed and restarted (AOF, fsync always) while producers
//! enqueue (a primary's death on a cluster or Sentinel is `tests/failover.rs`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_core::{redis, Config, ConfigBuilder, Handle};
use larder_jobs::{EnqueueOptions, JobState, Jobs, JobsConfig, TaskRef, Worker};
use larder_testing::{on_every_topology, Redis, RedisServer};

const WORK: TaskRef<u32, u32> = TaskRef::new("drill-work");
const CHILD_ENV: &str = "LARDER_DRILL_REDIS";

/// A handle on the Redis that `vars` (an operator's variables) point at.
fn handle<K: AsRef<str>, V: AsRef<str>>(vars: impl IntoIterator<Item = (K, V)>) -> Handle {
    Handle::new(
        ConfigBuilder::from_config(Config::from_vars(vars).unwrap())
            .op_timeout(Duration::from_millis(500))
            .breaker_cooldown(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn config() -> JobsConfig {
    // Each kill that interrupts a job spends one of its retries (a lease that runs
    // out counts): more retries than the drill has kills, so none is dead-lettered.
    JobsConfig::default()
        .lease(Duration::from_millis(1000))
        .max_retries(10)
}

/// The worker process of the kill drill: this test binary, started again by
/// `kill_9_worker_processes_mid_run_loses_no_job` with [`CHILD_ENV`] set to the
/// Redis variables (one `NAME=value` per line), runs only this test, which then
/// serves as a worker until it is killed. Without the variable it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_worker_process() {
    let Ok(vars) = std::env::var(CHILD_ENV) else {
        return;
    };
    let vars: Vec<(String, String)> = vars
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let handle = handle(vars);
    let jobs = Jobs::with_config(handle.clone(), config());
    let _worker = Worker::new(jobs)
        .concurrency(16)
        .task(WORK, move |n, ctx| {
            let handle = handle.clone();
            async move {
                // Count every execution, to report re-executions.
                let mut cmd = redis::cmd("HINCRBY");
                cmd.arg("drill:runs").arg(ctx.id()).arg(1);
                handle
                    .query::<i64>("drill_count", &cmd)
                    .await
                    .map_err(|e| larder_jobs::TaskError::retry(e.to_string()))?;
                tokio::time::sleep(Duration::from_millis(u64::from(n % 5) + 1)).await;
                Ok(n)
            }
        })
        .spawn();
    let never: std::convert::Infallible = std::future::pending().await;
    match never {}
}

fn spawn_worker(redis: &Redis) -> Child {
    let vars: Vec<String> = redis
        .vars()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "drill_worker_process",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, vars.join("\n"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

on_every_topology!(
    async fn kill_9_worker_processes_mid_run_loses_no_job(redis: &Redis) {
        let jobs = Jobs::with_config(handle(redis.vars()), config());
        let args: Vec<u32> = (0..10_000).collect();
        let ids = jobs
            .enqueue_many(WORK, args.iter().map(|a| (a, EnqueueOptions::new())))
            .await
            .unwrap();
        let mut workers: Vec<Child> = (0..3).map(|_| spawn_worker(redis)).collect();
        // Kill a worker with SIGKILL every 400 ms, five times, starting a new one each
        // time: each dies with up to 16 jobs leased and running.
        for round in 0..5 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let victim = round % workers.len();
            workers[victim].kill().unwrap();
            workers[victim].wait().unwrap();
            workers[victim] = spawn_worker(redis);
        }
        let mut states = Vec::new();
        for id in &ids {
            states.push(
                jobs.wait_status(id, Duration::from_secs(60))
                    .await
                    .unwrap()
                    .state,
            );
        }
        for mut w in workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let succeeded = states.iter().filter(|s| **s == JobState::Success).count();
        assert_eq!(
            succeeded,
            10_000,
            "every job ends SUCCESS: {:?}",
            states.iter().find(|s| **s != JobState::Success)
        );
        let runs: Vec<u64> = redis
            .command_on_key("drill:runs", &["HVALS", "drill:runs"])
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        assert_eq!(runs.len(), 10_000, "every job ran");
        let total: u64 = runs.iter().sum();
        let re_executed = total - 10_000;
        eprintln!(
        "kill -9 drill ({:?}, {} partitions): 10000 jobs, 5 worker processes killed mid-run, 0 lost, {re_executed} re-executions",
        redis.kind(),
        jobs.partitions()
    );
        assert!(
            re_executed > 0,
            "the kills interrupted running jobs (else the drill proved nothing)"
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_during_enqueue_keeps_every_acknowledged_job() {
    let mut redis = RedisServer::builder().appendonly("always").start();
    let jobs = Jobs::with_config(handle([("REDIS_URL", redis.url())]), config());
    let acked = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..4 {
        let (jobs, acked, failed, stop) = (
            jobs.clone(),
            Arc::clone(&acked),
            Arc::clone(&failed),
            Arc::clone(&stop),
        );
        producers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("aof-{p}-{i}");
                match jobs
                    .enqueue(WORK, &i, EnqueueOptions::new().id(id.clone()))
                    .await
                {
                    Ok(got) => acked.lock().unwrap().push(got),
                    Err(_) => {
                        *failed.lock().unwrap() += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let failed = *failed.lock().unwrap();
    // The handle is back (its breaker closes after the cool-down).
    assert!(
        larder_testing::eventually(50, Duration::from_millis(100), || async {
            jobs.status("probe").await.is_ok()
        })
        .await
    );
    assert!(failed > 0, "some enqueues saw the outage as an error");
    assert!(
        acked.len() > 100,
        "enqueues succeeded before and after: {}",
        acked.len()
    );
    let mut lost = Vec::new();
    for id in &acked {
        if jobs.status(id).await.unwrap().is_none() {
            lost.push(id.clone());
        }
    }
    eprintln!(
        "AOF drill: {} acknowledged, {failed} refused during the outage, {} lost",
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged jobs lost: {lost:?}");
}
