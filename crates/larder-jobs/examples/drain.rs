//! Throughput benchmark: enqueue N no-op jobs, then drain them with one worker.
//!
//! `REDIS_URL=redis://127.0.0.1:6379/0 cargo run --release -p larder-jobs --example drain -- 20000 64`
//! (N jobs, worker concurrency). Prints enqueue and drain rates. Uses key prefix
//! `bench` on the Redis it is given, and clears nothing else.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use larder_core::{Config, Handle};
use larder_jobs::{EnqueueOptions, Jobs, JobsConfig, TaskRef, Worker};

const NOOP: TaskRef<u32, ()> = TaskRef::new("noop");

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).map_or(Ok(20_000), |s| s.parse())?;
    let concurrency: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let mut config = Config::from_env()?;
    config.key_prefix = "bench".into();
    config.op_timeout = Duration::from_secs(2);
    let jobs = Jobs::with_config(Handle::new(config)?, JobsConfig::default());

    let payload: Vec<u32> = (0..n).collect();
    let started = Instant::now();
    let ids = jobs
        .enqueue_many(NOOP, payload.iter().map(|i| (i, EnqueueOptions::new())))
        .await?;
    let enqueue = started.elapsed();

    let started = Instant::now();
    let worker = Worker::new(jobs.clone())
        .concurrency(concurrency)
        .task(NOOP, |_, _| async { Ok(()) })
        .spawn();
    let last = ids.last().ok_or("no jobs")?;
    // The queue is FIFO: once the last job is done and nothing is queued, all are.
    jobs.wait_status(last, Duration::from_secs(600)).await?;
    while jobs.queued("default").await? > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain = started.elapsed();
    worker.shutdown(Duration::from_secs(5)).await;
    println!(
        "{n} jobs: enqueue {:.0} jobs/s ({:.2} s, pipelined), drain {:.0} jobs/s ({:.2} s, 1 worker, concurrency {concurrency})",
        f64::from(n) / enqueue.as_secs_f64(),
        enqueue.as_secs_f64(),
        f64::from(n) / drain.as_secs_f64(),
        drain.as_secs_f64()
    );
    Ok(())
}
