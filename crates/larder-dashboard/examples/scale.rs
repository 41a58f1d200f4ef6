//! The dashboard at scale (`scripts/bench-dashboard` runs it): fills the Redis at
//! `REDIS_URL` with `JOBS` jobs (default 1,000,000: 60 % ready over 3 queues and
//! 50 tenants, 20 % delayed, 20 % dead) and `CACHE_ENTRIES` cache entries (default
//! 100,000) and `SESSIONS` sessions over 50 tenants (default 10,000), fills the
//! cache's shared hour of look-ups at its bounds (every minute of the hour: 100
//! modules and `LOOKUP_TENANTS` tenants, default 1,000, as if each instance of an
//! app had counted its look-ups and added them), serves the
//! dashboard over Axum on a loopback port, and times every page and JSON endpoint
//! over HTTP (`TRIES` times each, default 5). Prints one Markdown row per
//! endpoint: median and slowest.

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)] // a benchmark

use std::sync::Arc;
use std::time::{Duration, Instant};

use larder_cache::{Cache, LookupCounts};
use larder_core::keyspace::Component;
use larder_core::last_hour::{Fields, SharedHour};
use larder_core::{Handle, Module, Tenant};
use larder_dashboard::Dashboard;
use larder_jobs::inspect::Listing;
use larder_jobs::{EnqueueOptions, Jobs, JobsConfig, TaskError, TaskRef, Worker};
use larder_ratelimit::{Check, Policy, RateLimiter};
use larder_session::{Identity, RequestContext, SessionConfig, Sessions};

const WORK: TaskRef<u64, ()> = TaskRef::new("work");
const DOOMED: TaskRef<u64, ()> = TaskRef::new("doomed");

fn var(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Enqueues `n` jobs of `task` in batches of 10,000, the `i`-th of a batch (its
/// argument too) with `opts(i)`.
async fn enqueue(
    jobs: &Jobs,
    task: TaskRef<u64, ()>,
    n: u64,
    opts: impl Fn(u64) -> EnqueueOptions,
) {
    let args: Vec<u64> = (0..10_000).collect();
    let mut done = 0;
    while done < n {
        let batch = &args[..(n - done).min(10_000) as usize];
        jobs.enqueue_many(task, batch.iter().map(|a| (a, opts(*a))))
            .await
            .unwrap();
        done += batch.len() as u64;
    }
}

async fn fill(jobs: &Jobs, cache: &Cache, total: u64, entries: u64) {
    let started = Instant::now();
    let ready = total * 6 / 10;
    let delayed = total * 2 / 10;
    let dead = total - ready - delayed;
    enqueue(jobs, WORK, ready, |i| {
        EnqueueOptions::new()
            .queue(["default", "reports", "mail"][(i % 3) as usize])
            .tenant(format!("t{}", i % 50))
    })
    .await;
    enqueue(jobs, WORK, delayed, |i| {
        EnqueueOptions::new().countdown(Duration::from_secs(3600 + i))
    })
    .await;
    enqueue(jobs, DOOMED, dead, |_| {
        EnqueueOptions::new().queue("doomed").max_retries(0)
    })
    .await;
    let worker = Worker::new(jobs.clone())
        .queues(&[("doomed", 1)])
        .concurrency(64)
        .task(DOOMED, |i, _| async move {
            Err::<(), _>(TaskError::fatal(format!("job {i} cannot be done")))
        })
        .spawn();
    while jobs.counts().await.unwrap().total().dead < dead {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    worker.shutdown(Duration::from_secs(10)).await;
    let module = Module::new("stock").unwrap();
    let mut pending = Vec::new();
    for i in 0..entries {
        let tenant = Tenant::new(format!("t{}", i % 50)).unwrap();
        let cache = cache.clone();
        let module = module.clone();
        pending.push(tokio::spawn(async move {
            cache
                .set(
                    &tenant,
                    &module,
                    &format!("item-{i}"),
                    &"x".repeat(200),
                    None,
                )
                .await;
        }));
        if pending.len() == 256 {
            for p in pending.drain(..) {
                p.await.unwrap();
            }
        }
    }
    for p in pending {
        p.await.unwrap();
    }
    eprintln!("filled in {:.1} s", started.elapsed().as_secs_f64());
}

/// The cache's hour of look-ups at its bounds: for each minute of the last hour,
/// 100 modules and `tenants` tenants, each with hits, stale serves and misses.
/// Counted through a `SharedHour` on the cache's own hashes (the key base as the
/// cache builds it: its system module's global scope), then added to Redis.
async fn fill_lookup_hour(handle: &Handle, tenants: u64) {
    let started = Instant::now();
    let keyspace = handle.keyspace().component(Component::Cache);
    let base = keyspace.global_scope(&Module::new("_larder").unwrap());
    let now = larder_core::time::now_ms();
    for (what, names) in [("module", 100), ("tenant", tenants)] {
        let hour: SharedHour<LookupCounts> = SharedHour::new(
            handle,
            format!("{}lookups:{what}:", base.base()),
            usize::try_from(names).unwrap(),
        );
        for minutes_ago in (0..60).rev() {
            let at = now - minutes_ago * 60_000;
            for i in 0..names {
                hour.count(&Arc::from(format!("{what}-{i}")), at, |c| {
                    for (field, n) in [90, 3, 7].into_iter().enumerate() {
                        c.add_value(field, n); // hits, stale serves, misses
                    }
                });
            }
            // A flush per minute, as a running instance's (a few per minute).
            hour.flush().await.unwrap();
        }
    }
    eprintln!(
        "hour of look-ups filled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let handle = Handle::from_env().unwrap();
    let jobs = Jobs::with_config(
        handle.clone(),
        JobsConfig::default().dead_letters(Duration::from_secs(7 * 86_400), 10_000_000),
    );
    let cache = Cache::new(handle.clone());
    let total = var("JOBS", 1_000_000);
    let entries = var("CACHE_ENTRIES", 100_000);
    let tries = var("TRIES", 5);
    let counts = jobs.counts().await.unwrap().total();
    if counts.queued + counts.delayed + counts.dead < total {
        fill(&jobs, &cache, total, entries).await;
    }
    let by_queue = jobs.counts().await.unwrap();
    for (name, c) in &by_queue.queues {
        eprintln!("queue {name}: {c:?}");
    }
    let counts = by_queue.total();
    // Sessions over 50 tenants (made again each run: they expire).
    let sessions = Sessions::new(handle.clone(), SessionConfig::default());
    let started = Instant::now();
    for i in 0..var("SESSIONS", 10_000) {
        let tenant = Tenant::new(format!("t{}", i % 50)).unwrap();
        let who = Identity::new(format!("user-{}", i % 500));
        RequestContext::scope(
            RequestContext::new(Some(tenant)),
            sessions.create(&format!("bench-session-{i:012}"), b"{}", Some(&who)),
        )
        .await
        .unwrap();
    }
    eprintln!("sessions made in {:.1} s", started.elapsed().as_secs_f64());
    // A limiter that admitted and rejected requests of 1,000 keys.
    let limiter = RateLimiter::new(handle.clone());
    let policy = Policy::new("login", "2/minute").unwrap();
    for i in 0..3_000 {
        limiter
            .check(&[Check::new(
                &policy,
                &format!("10.0.{}.{}", i % 1000 / 256, i % 256),
            )])
            .await;
    }
    fill_lookup_hour(&handle, var("LOOKUP_TENANTS", 1_000)).await;
    // The key rule is written again above: the cache must read what was written.
    let hour = cache.last_hour().await.unwrap();
    assert_eq!(
        hour.by_tenant.len(),
        60,
        "the hour was filled where the cache reads"
    );
    let dead_id = jobs.list("doomed", Listing::Dead, 0, 1).await.unwrap().jobs[0]
        .id
        .clone();
    let dashboard = Dashboard::with_token("/admin", "bench")
        .jobs(jobs.clone())
        .cache(cache)
        .sessions(sessions)
        .rate_limits(limiter)
        .redis(handle);
    let app: axum::Router = axum::Router::new().merge(larder_dashboard::axum::router(dashboard));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let last_page = counts.dead.saturating_sub(1) / larder_dashboard::PAGE;
    let gets = [
        "/admin/".to_owned(),
        "/admin/api/overview".to_owned(),
        "/admin/jobs".to_owned(),
        "/admin/jobs?list=delayed".to_owned(),
        format!("/admin/jobs?queue=doomed&list=dead&page={last_page}"),
        format!("/admin/api/jobs?list=dead&page={}", last_page / 2),
        format!("/admin/jobs/{dead_id}"),
        // A search that matches nothing: it looks at its 5,000 jobs.
        "/admin/jobs?list=dead&tenant=t1".to_owned(),
        "/admin/api/jobs?list=delayed&task=work&tenant=t1".to_owned(),
        "/admin/cache-stats".to_owned(),
        "/admin/sessions".to_owned(),
        "/admin/rate-limits".to_owned(),
        "/admin/redis".to_owned(),
        "/admin/api/redis".to_owned(),
    ];
    println!("| request | median | slowest | status |");
    println!("| --- | --- | --- | --- |");
    for path in gets {
        let url = format!("http://{addr}{path}");
        time(&path, tries, || http.get(&url)).await;
    }
    let url = format!("http://{addr}/admin/queues/doomed/redrive-dead");
    time(
        "POST /admin/queues/doomed/redrive-dead (1,000 jobs)",
        tries,
        || http.post(&url),
    )
    .await;
}

/// Sends the request `tries` times and prints its row: median and slowest.
async fn time(label: &str, tries: u64, request: impl Fn() -> reqwest::RequestBuilder) {
    let mut times = Vec::new();
    let mut status = 0;
    for _ in 0..tries {
        let t = Instant::now();
        let res = request().bearer_auth("bench").send().await.unwrap();
        status = res.status().as_u16();
        let _ = res.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "| `{label}` | {:.1} ms | {:.1} ms | {status} |",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}
