//! Throughput and latency of the job queue on a real Redis (issue 6's figures).
//!
//! `REDIS_URL=redis://127.0.0.1:6379/0 cargo run --release -p larder-jobs --example bench -- N`
//!
//! For N no-op jobs (default 20,000): single enqueue from 64 concurrent producers,
//! bulk enqueue (`enqueue_many`), drain by one worker (concurrency 256, leases and
//! fencing on), and enqueue-to-start latency of single jobs at light load (one job
//! every 2 ms, 2,000 jobs). Uses key prefix `bench` and flushes nothing: give it a
//! Redis of its own.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use larder_core::{Config, Handle};
use larder_jobs::{EnqueueOptions, Jobs, JobsConfig, TaskRef, Worker};
use tokio::sync::mpsc;

const NOOP: TaskRef<u32, ()> = TaskRef::new("noop");
const PING: TaskRef<u128, ()> = TaskRef::new("ping");

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn drain(jobs: &Jobs, queue: &str) -> Result<(), Box<dyn std::error::Error>> {
    while jobs.queued(queue).await? > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (warnings by default; `RUST_LOG` to change) go to stderr, apart from the
    // table row on stdout.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let n: u32 = std::env::args().nth(1).map_or(Ok(20_000), |s| s.parse())?;
    let mut config = Config::from_env()?;
    config.key_prefix = "bench".into();
    config.op_timeout = Duration::from_secs(2);
    // JOBS_* from the environment (JOBS_WAIT_REPLICAS for the replicated runs).
    let jobs = Jobs::with_config(Handle::new(config)?, JobsConfig::from_env()?);
    let payload: Vec<u32> = (0..n).collect();

    // Single enqueue, 64 concurrent producers.
    let started = Instant::now();
    let per = n / 64;
    let mut producers = Vec::new();
    for p in 0..64u32 {
        let jobs = jobs.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..per {
                let opts = EnqueueOptions::new().queue("single");
                if jobs.enqueue(NOOP, &(p * per + i), opts).await.is_err() {
                    return false;
                }
            }
            true
        }));
    }
    for p in producers {
        if !p.await? {
            return Err("enqueue failed".into());
        }
    }
    let single = f64::from(per * 64) / started.elapsed().as_secs_f64();

    // Bulk enqueue.
    let started = Instant::now();
    jobs.enqueue_many(NOOP, payload.iter().map(|i| (i, EnqueueOptions::new())))
        .await?;
    let bulk = f64::from(n) / started.elapsed().as_secs_f64();

    // Drain with at-least-once on (lease, fencing token, fenced completion). Set
    // BENCH_TRACK_STARTED=0 for Celery's default of no STARTED state.
    let track = std::env::var("BENCH_TRACK_STARTED").map_or(true, |v| v != "0");
    let started = Instant::now();
    let worker = Worker::new(jobs.clone())
        .track_started(track)
        .concurrency(256)
        .queues(&[("default", 1), ("single", 1)])
        .task(NOOP, |_, _| async { Ok(()) })
        .spawn();
    drain(&jobs, "default").await?;
    drain(&jobs, "single").await?;
    let drained = f64::from(n + per * 64) / started.elapsed().as_secs_f64();
    worker.shutdown(Duration::from_secs(10)).await;

    // Enqueue-to-start latency at light load.
    let (tx, mut rx) = mpsc::unbounded_channel::<u128>();
    let tx = Arc::new(tx);
    let worker = Worker::new(jobs.clone())
        .queues(&[("latency", 1)])
        .task(PING, move |sent, _| {
            let _ = tx.send(now_ns().saturating_sub(sent));
            async { Ok(()) }
        })
        .spawn();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = 2000;
    for _ in 0..samples {
        jobs.enqueue(PING, &now_ns(), EnqueueOptions::new().queue("latency"))
            .await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut lat = Vec::with_capacity(samples);
    while lat.len() < samples {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(ns)) => lat.push(ns),
            _ => break,
        }
    }
    worker.shutdown(Duration::from_secs(5)).await;
    lat.sort_unstable();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat.get(i).map_or(f64::NAN, |ns| *ns as f64 / 1e6)
    };
    println!(
        "| {n} | {single:.0} | {bulk:.0} | {drained:.0} | {:.2} | {:.2} |",
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
