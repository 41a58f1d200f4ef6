//! Where jobs live: Redis, or process memory when no Redis is configured.

use std::sync::Arc;
use std::time::Duration;

use crate::error::JobError;
use crate::inspect::{
    FoundJob, JobCounts, JobDetail, JobFilter, ListPage, Listing, SearchCursor, SearchPage,
    Throughput, SEARCH_BUDGET, SEARCH_CHUNK,
};
pub(crate) use crate::jobs::Deleted;
use crate::options::Resolved;
use crate::state::JobStatus;

pub(crate) mod memory;
pub(crate) mod redis;

/// A job a worker fetched: it holds the lease while `token` matches.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) id: String,
    pub(crate) token: String,
    pub(crate) task: String,
    pub(crate) args: String,
    pub(crate) tenant: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) max_retries: u32,
    pub(crate) timeout_ms: u64,
    /// When it was enqueued, ms (0 when unknown).
    pub(crate) created_ms: u64,
    /// Why the job cannot run at all (a record this crate cannot read): the worker
    /// fails it with this error instead of calling a task.
    pub(crate) problem: Option<String>,
}

/// How a delivery ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Success(String),
    Retry { error: String, at_ms: u64 },
    Failure(String),
    Revoked(String),
    Defer { at_ms: u64 },
    Requeue,
}

impl Outcome {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Success(_) => "SUCCESS",
            Self::Retry { .. } => "RETRY",
            Self::Failure(_) => "FAILURE",
            Self::Revoked(_) => "REVOKED",
            Self::Defer { .. } => "DEFER",
            Self::Requeue => "REQUEUE",
        }
    }

    pub(crate) fn payload(&self) -> &str {
        match self {
            Self::Success(p) | Self::Failure(p) | Self::Revoked(p) => p,
            Self::Retry { error, .. } => error,
            Self::Defer { .. } | Self::Requeue => "",
        }
    }

    pub(crate) fn at_ms(&self) -> u64 {
        match self {
            Self::Retry { at_ms, .. } | Self::Defer { at_ms } => *at_ms,
            _ => 0,
        }
    }
}

/// One job's outcome to record.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub(crate) id: String,
    pub(crate) token: String,
    pub(crate) outcome: Outcome,
}

/// What a lease renewal found.
#[derive(Debug, Default)]
pub(crate) struct Renewal {
    /// Revoked while running: cancel.
    pub(crate) revoked: Vec<String>,
    /// Lease lost: another worker may run the job; stop and report nothing.
    pub(crate) lost: Vec<String>,
}

/// What the queue's processes publish for inspection, each entry a JSON value under
/// an id: one Redis hash per registry, in the first partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Registry {
    /// Workers' heartbeats (`WorkerInfo`), by worker id.
    Workers,
    /// The scheduler's entries (`ScheduleInfo`), by entry name.
    Schedule,
}

impl Registry {
    /// The hash's key after the partition's base.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Workers => "workers",
            Self::Schedule => "sched:entries",
        }
    }
}

/// Ready jobs a purge removes per Redis call.
pub(crate) const PURGE_BATCH: u64 = 1000;

/// One job to enqueue.
#[derive(Debug)]
pub(crate) struct NewJob<'a> {
    pub(crate) task: &'a str,
    pub(crate) args: String,
    pub(crate) opts: Resolved,
}

/// What a backend keeps and refuses, from the queue's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keeping {
    /// How long finished jobs' records and signals are kept, ms.
    pub(crate) result_ttl_ms: u64,
    /// How long dead letters (and their records) are kept, ms.
    pub(crate) dead_ttl_ms: u64,
    /// How many dead letters are kept at most.
    pub(crate) dead_max: u64,
    /// Whether a Redis that evicts any key is accepted.
    pub(crate) allow_eviction: bool,
    /// Replicas that must confirm an enqueue, and the wait for them.
    pub(crate) replicas: Option<(u32, std::time::Duration)>,
}

#[derive(Clone)]
pub(crate) enum Backend {
    Redis(redis::RedisBackend),
    Memory(Arc<memory::MemoryBackend>),
}

impl Backend {
    /// Enqueues jobs; returns, per job, its id and whether it is new.
    pub(crate) async fn enqueue(
        &self,
        jobs: &[NewJob<'_>],
        ttl_ms: u64,
    ) -> Result<Vec<(String, bool)>, JobError> {
        match self {
            // The Redis backend takes the ttl at completion (a job's record lives on).
            Self::Redis(r) => r.enqueue(jobs).await,
            Self::Memory(m) => Ok(m.enqueue(jobs, ttl_ms)),
        }
    }

    pub(crate) async fn fetch(
        &self,
        queue: &str,
        n: usize,
        lease_ms: u64,
        worker: &str,
        started: bool,
    ) -> Result<Vec<Fetched>, JobError> {
        match self {
            Self::Redis(r) => r.fetch(queue, n, lease_ms, worker, started).await,
            Self::Memory(m) => Ok(m.fetch(queue, n, lease_ms, worker, started)),
        }
    }

    pub(crate) async fn renew(
        &self,
        lease_ms: u64,
        jobs: &[(String, String)],
    ) -> Result<Renewal, JobError> {
        if jobs.is_empty() {
            return Ok(Renewal::default());
        }
        match self {
            Self::Redis(r) => r.renew(lease_ms, jobs).await,
            Self::Memory(m) => Ok(m.renew(lease_ms, jobs)),
        }
    }

    /// Records outcomes in one call; per job, false when its lease was lost (fenced
    /// off).
    pub(crate) async fn complete(
        &self,
        jobs: &[Completion],
        ttl_ms: u64,
    ) -> Result<Vec<bool>, JobError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Self::Redis(r) => r.complete(jobs, ttl_ms).await,
            Self::Memory(m) => Ok(jobs
                .iter()
                .map(|c| m.complete(&c.id, &c.token, &c.outcome, ttl_ms))
                .collect()),
        }
    }

    /// Promotes due delayed jobs and returns expired leases' jobs to their queues,
    /// in bounded batches until none is left. Returns (promoted, reaped).
    pub(crate) async fn maintain(&self, batch: usize) -> Result<(usize, usize), JobError> {
        match self {
            Self::Redis(r) => r.maintain(batch).await,
            Self::Memory(m) => Ok(m.maintain()),
        }
    }

    pub(crate) async fn revoke(&self, id: &str, ttl_ms: u64) -> Result<String, JobError> {
        match self {
            Self::Redis(r) => r.revoke(id, ttl_ms).await,
            Self::Memory(m) => Ok(m.revoke(id, ttl_ms)),
        }
    }

    pub(crate) async fn status(&self, id: &str) -> Result<Option<JobStatus>, JobError> {
        match self {
            Self::Redis(r) => r.status(id).await,
            Self::Memory(m) => Ok(m.status(id)),
        }
    }

    /// Waits (without polling) until job `id` reaches a terminal state or `timeout`
    /// passes.
    pub(crate) async fn wait_done(&self, id: &str, timeout: Duration) -> Result<(), JobError> {
        match self {
            Self::Redis(r) => r.wait_done(id, timeout).await,
            Self::Memory(m) => {
                m.wait_done(id, timeout).await;
                Ok(())
            }
        }
    }

    /// How many partitions the queue has (in process: one).
    pub(crate) fn partitions(&self) -> usize {
        match self {
            Self::Redis(r) => r.partition_count(),
            Self::Memory(_) => 1,
        }
    }

    /// Waits until work may be ready in one of `queues` in partition `partition`,
    /// or `timeout`.
    pub(crate) async fn wait_work(
        &self,
        queues: &[String],
        partition: usize,
        timeout: Duration,
    ) -> Result<(), JobError> {
        match self {
            Self::Redis(r) => r.wait_work(queues, partition, timeout).await,
            Self::Memory(m) => {
                m.wait_work(timeout).await;
                Ok(())
            }
        }
    }

    pub(crate) async fn dead(&self, limit: usize) -> Result<Vec<String>, JobError> {
        match self {
            Self::Redis(r) => r.dead(limit).await,
            Self::Memory(m) => Ok(m.dead(limit)),
        }
    }

    pub(crate) async fn redrive(&self, id: &str) -> Result<bool, JobError> {
        match self {
            Self::Redis(r) => r.redrive(id).await,
            Self::Memory(m) => Ok(m.redrive(id)),
        }
    }

    /// Ready jobs of a queue (all tenants), for stats and tests.
    pub(crate) async fn queued(&self, queue: &str) -> Result<usize, JobError> {
        match self {
            Self::Redis(r) => r.queued(queue).await,
            Self::Memory(m) => Ok(m.queued(queue)),
        }
    }

    pub(crate) async fn counts(&self) -> Result<JobCounts, JobError> {
        match self {
            Self::Redis(r) => r.counts().await,
            Self::Memory(m) => Ok(m.counts()),
        }
    }

    pub(crate) async fn list(
        &self,
        queue: &str,
        listing: Listing,
        offset: u64,
        limit: u64,
    ) -> Result<ListPage, JobError> {
        match self {
            Self::Redis(r) => r.list(queue, listing, offset, limit).await,
            Self::Memory(m) => Ok(m.list(queue, listing, offset, limit)),
        }
    }

    /// Looks through `queue`'s `listing` from `from` on, in order, for at most `limit` jobs
    /// that `filter` matches, looking at no more than [`SEARCH_BUDGET`] jobs.
    pub(crate) async fn search(
        &self,
        queue: &str,
        listing: Listing,
        filter: &JobFilter,
        from: SearchCursor,
        limit: u64,
    ) -> Result<SearchPage, JobError> {
        let mut page = SearchPage::default();
        let mut at = from;
        while at.partition < self.partitions() {
            if page.examined >= SEARCH_BUDGET || page.jobs.len() as u64 >= limit {
                page.next = Some(at);
                break;
            }
            let n = SEARCH_CHUNK.min(SEARCH_BUDGET - page.examined);
            let chunk = self.search_chunk(queue, listing, at, n).await?;
            if chunk.is_empty() {
                at = SearchCursor {
                    partition: at.partition + 1,
                    rank: 0,
                };
                continue;
            }
            for job in chunk {
                at.rank += 1;
                page.examined += 1;
                if filter.matches(&job) {
                    page.jobs.push(job);
                    if page.jobs.len() as u64 >= limit {
                        break;
                    }
                }
            }
        }
        Ok(page)
    }

    /// `n` jobs of `queue`'s `listing` from `at` on, with their task and tenant.
    async fn search_chunk(
        &self,
        queue: &str,
        listing: Listing,
        at: SearchCursor,
        n: u64,
    ) -> Result<Vec<FoundJob>, JobError> {
        match self {
            Self::Redis(r) => r.search_chunk(queue, listing, at, n).await,
            Self::Memory(m) => Ok(m.search_chunk(queue, listing, at.rank, n)),
        }
    }

    pub(crate) async fn detail(&self, id: &str) -> Result<Option<JobDetail>, JobError> {
        match self {
            Self::Redis(r) => r.detail(id).await,
            Self::Memory(m) => Ok(m.detail(id)),
        }
    }

    pub(crate) async fn delete(&self, id: &str) -> Result<Deleted, JobError> {
        match self {
            Self::Redis(r) => r.delete(id).await,
            Self::Memory(m) => Ok(m.delete(id)),
        }
    }

    pub(crate) async fn purge(&self, queue: &str) -> Result<u64, JobError> {
        match self {
            Self::Redis(r) => r.purge(queue).await,
            Self::Memory(m) => Ok(m.purge(queue)),
        }
    }

    /// Writes `value` (JSON) under `id` in `registry`.
    pub(crate) async fn register(
        &self,
        registry: Registry,
        id: &str,
        value: &str,
    ) -> Result<(), JobError> {
        match self {
            Self::Redis(r) => r.register(registry, id, value).await,
            Self::Memory(m) => {
                m.register(registry, id, value);
                Ok(())
            }
        }
    }

    /// Removes `ids` from `registry`.
    pub(crate) async fn unregister(
        &self,
        registry: Registry,
        ids: &[String],
    ) -> Result<(), JobError> {
        if ids.is_empty() {
            return Ok(());
        }
        match self {
            Self::Redis(r) => r.unregister(registry, ids).await,
            Self::Memory(m) => {
                m.unregister(registry, ids);
                Ok(())
            }
        }
    }

    /// Every value of `registry`, as written.
    pub(crate) async fn registered(&self, registry: Registry) -> Result<Vec<String>, JobError> {
        match self {
            Self::Redis(r) => r.registered(registry).await,
            Self::Memory(m) => Ok(m.registered(registry)),
        }
    }

    /// The outcomes of minutes `first..=last` (minute numbers), oldest first.
    pub(crate) async fn minutes(&self, first: u64, last: u64) -> Result<Throughput, JobError> {
        match self {
            Self::Redis(r) => r.minutes(first, last).await,
            Self::Memory(m) => Ok(m.minutes(first, last)),
        }
    }
}
