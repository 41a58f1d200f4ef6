//! A Celery-like job queue on larder's shared handle that never loses a job.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! # rt.block_on(async {
//! use std::time::Duration;
//! use larder_core::Handle;
//! use larder_jobs::{EnqueueOptions, Jobs, TaskError, TaskRef, Worker};
//!
//! /// `send_daily_report(tenant_id)`: the stable name, typed arguments and result.
//! const SEND_DAILY_REPORT: TaskRef<u64, String> = TaskRef::new("send_daily_report");
//!
//! // `Handle::from_env()` uses REDIS_URL; without it jobs run in process.
//! let jobs = Jobs::new(Handle::in_process());
//! let worker = Worker::new(jobs.clone())
//!     .task(SEND_DAILY_REPORT, |tenant, _ctx| async move {
//!         if tenant == 0 {
//!             return Err(TaskError::fatal("no such tenant"));
//!         }
//!         Ok(format!("report for tenant {tenant}"))
//!     })
//!     .spawn();
//!
//! let id = jobs.delay(SEND_DAILY_REPORT, &7).await?;
//! let report = jobs.wait(SEND_DAILY_REPORT, &id, Duration::from_secs(5)).await?;
//! assert_eq!(report, "report for tenant 7");
//!
//! // An idempotency key: enqueueing it twice makes one job.
//! let opts = || EnqueueOptions::new().id("report:7:2026-11-22").tenant("7");
//! let a = jobs.enqueue(SEND_DAILY_REPORT, &7, opts()).await?;
//! let b = jobs.enqueue(SEND_DAILY_REPORT, &7, opts()).await?;
//! assert_eq!(a, b);
//! worker.shutdown(Duration::from_secs(1)).await;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! # Guarantees
//!
//! - **At-least-once.** A job is never only in process memory: enqueue returns once
//!   it is in Redis (or returns [`JobError::Unavailable`]). A fetch moves jobs, in
//!   one script, into an in-flight set with a lease and a fencing token; running
//!   workers renew leases; any live worker returns jobs whose lease expired (a dead
//!   worker's) to their queue; an outcome reported with a lost lease is rejected.
//! - **Retries in Redis**: exponential backoff with jitter, then the queue's dead
//!   letters, which keep the error; [`Jobs::redrive`] sends a dead job back.
//! - **Delayed jobs** live in a sorted set per queue, promoted in bounded batches: a long ETA
//!   never makes duplicate runs, and a backlog of any size drains.
//! - **Periodic tasks** ([`Scheduler`]): cron (time-zone aware) or fixed intervals,
//!   once per tick across instances (leader lease plus a per-tick idempotency key).
//! - **Results**: states PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE,
//!   REVOKED; results kept for a TTL; [`Jobs::wait`] blocks on a completion signal
//!   (no polling).
//! - **Revoke** by id: queued and delayed jobs never run; a running job's task is
//!   cancelled ([`JobContext::cancelled`]).
//! - **Per-tenant fairness**: jobs carrying a tenant are served round-robin across
//!   tenants, one job per tenant per turn.
//! - **Workers**: bounded concurrency, weighted queues, per-task timeout, per-task
//!   rate limit shared by all workers, graceful shutdown; they pause while Redis is
//!   down and resume by themselves.
//!
//! Keys live in the jobs component's global module `jobs` (`{prefix}:jobs:global:{jobs}:...`,
//! out of reach of every cache sweep): one hash-tag slot, so every script's keys
//! are co-located on Redis Cluster. On a cluster a queue is split into
//! [partitions](JobsConfig::partitions) (3 by default), one module and slot each
//! (`{jobs.0.2}`, `{jobs.1.4}`, …), placed so that they fall on different
//! primaries: a job lives in the partition its id names, workers visit every
//! partition in turn, and each script still touches one slot.
//!
//! # Celery
//!
//! With the `celery` feature, [`celery`] speaks Celery 5's protocol on kombu's
//! Redis transport: a [`celery::CeleryWorker`] runs tasks a Python Celery app
//! sends, and [`celery::Celery::send_task`] sends tasks Python workers run, on
//! the same broker and result backend (Celery's keys, not larder's keyspace).

mod backend;
#[cfg(feature = "celery")]
pub mod celery;
mod error;
pub mod inspect;
mod jobs;
mod options;
mod partition;
mod schedule;
mod state;
mod task;
mod worker;

/// How long tasks ran, keyed once per task.
static JOB_RUN: larder_core::metrics::Family =
    larder_core::metrics::Family::new(larder_core::metrics::JOB_RUN, "task", "", &[]);

/// Jobs' age at their first start, keyed once per task.
static JOB_AGE_AT_START: larder_core::metrics::Family =
    larder_core::metrics::Family::new(larder_core::metrics::JOB_AGE_AT_START, "task", "", &[]);

/// Job outcomes by task, keyed once per task.
static JOB_OUTCOMES: larder_core::metrics::Family = larder_core::metrics::Family::new(
    larder_core::metrics::JOBS,
    "task",
    "outcome",
    &[
        "enqueued",
        "success",
        "failure",
        "retry",
        "revoked",
        "rate_limited",
        "fenced",
    ],
);

pub use error::JobError;
pub use jobs::{Deleted, Jobs, JobsConfig, MAX_PAGE};
pub use options::EnqueueOptions;
pub use schedule::{RunningScheduler, Scheduler};
pub use state::{JobState, JobStatus};
pub use task::{JobContext, Payload, TaskError, TaskRef};
pub use worker::{RunningWorker, Worker};
