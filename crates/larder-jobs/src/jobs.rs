//! The producer side: enqueue, status, results, revocation, dead letters.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use larder_core::config::{env_vars, parse_bool, parse_millis, parse_secs, parse_u64, RedisUrl};
use larder_core::{ConfigError, Handle};

use crate::backend::memory::MemoryBackend;
use crate::backend::redis::RedisBackend;
use crate::backend::{Backend, Keeping, NewJob, Registry};
use crate::error::JobError;
use crate::inspect::{
    minute_of, JobCounts, JobDetail, JobFilter, ListPage, Listing, Registered, ScheduleInfo,
    SearchCursor, SearchPage, Throughput, WorkerInfo, FORGET_AFTER, MINUTES_KEPT,
};
use crate::options::EnqueueOptions;
use crate::partition;
use crate::state::{JobState, JobStatus};
use crate::task::{Payload, TaskRef};

/// Queue-wide settings. Read with [`JobsConfig::from_env`] or build one.
///
/// | variable | default | meaning |
/// | --- | --- | --- |
/// | `JOBS_MAX_RETRIES` | `3` | retries after the first attempt, unless a job says otherwise |
/// | `JOBS_RESULT_TTL` | `86400` (s) | how long results (and revoked tombstones) are kept |
/// | `JOBS_TASK_TIMEOUT` | `300` (s) | a task's time limit, unless a job says otherwise |
/// | `JOBS_LEASE_MS` | `30000` | lease of a fetched job; renewed by its worker every third of it |
/// | `JOBS_RETRY_BASE_MS` | `1000` | first retry delay (then doubled, with jitter) |
/// | `JOBS_RETRY_MAX_MS` | `600000` | longest retry delay |
/// | `JOBS_PARTITIONS` | `3` on a cluster, `1` otherwise | slots a queue spreads over ([`partitions`](Self::partitions)) |
#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub(crate) max_retries: u32,
    pub(crate) result_ttl: Duration,
    pub(crate) task_timeout: Duration,
    pub(crate) lease: Duration,
    pub(crate) retry_base: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) redis_url: Option<RedisUrl>,
    pub(crate) allow_eviction: bool,
    pub(crate) dead_ttl: Duration,
    pub(crate) dead_max: u64,
    /// Replicas that must confirm an enqueue, and how long to wait for them.
    pub(crate) replicas: Option<(u32, Duration)>,
    /// Partitions; `None`: the topology's default.
    pub(crate) partitions: Option<u16>,
}

/// How long an enqueue waits for its replicas by default (`JOBS_WAIT_TIMEOUT_MS`).
const DEFAULT_REPLICA_WAIT: Duration = Duration::from_secs(1);

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            result_ttl: Duration::from_secs(86_400),
            task_timeout: Duration::from_secs(300),
            lease: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            redis_url: None,
            allow_eviction: false,
            dead_ttl: Duration::from_secs(7 * 86_400),
            dead_max: 10_000,
            replicas: None,
            partitions: None,
        }
    }
}

impl JobsConfig {
    /// Reads the `JOBS_*` variables.
    ///
    /// # Errors
    /// A malformed variable, named.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(env_vars(|k| k.starts_with("JOBS_"))?)
    }

    /// Reads settings from name/value pairs.
    ///
    /// # Errors
    /// A malformed variable, named.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut c = Self::default();
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref().trim());
            match k {
                "JOBS_MAX_RETRIES" => {
                    c.max_retries = u32::try_from(parse_u64(k, v, "retries")?)
                        .map_err(|_| ConfigError::invalid(k, "too large"))?;
                }
                "JOBS_RESULT_TTL" => c.result_ttl = parse_secs(k, v)?,
                "JOBS_TASK_TIMEOUT" => c.task_timeout = parse_secs(k, v)?,
                "JOBS_LEASE_MS" => c.lease = parse_millis(k, v)?,
                "JOBS_RETRY_BASE_MS" => c.retry_base = parse_millis(k, v)?,
                "JOBS_RETRY_MAX_MS" => c.retry_max = parse_millis(k, v)?,
                "JOBS_REDIS_URL" if !v.is_empty() => c.redis_url = Some(RedisUrl::parse_var(k, v)?),
                "JOBS_ALLOW_EVICTION" => c.allow_eviction = parse_bool(k, v)?,
                "JOBS_DEAD_TTL" => c.dead_ttl = parse_secs(k, v)?,
                "JOBS_DEAD_MAX" => c.dead_max = parse_u64(k, v, "dead letters")?.max(1),
                "JOBS_WAIT_REPLICAS" => {
                    let n = u32::try_from(parse_u64(k, v, "replicas")?)
                        .map_err(|_| ConfigError::invalid(k, "too large"))?;
                    let timeout = c.replicas.map_or(DEFAULT_REPLICA_WAIT, |(_, t)| t);
                    c.replicas = (n > 0).then_some((n, timeout));
                }
                "JOBS_PARTITIONS" => {
                    let n = parse_u64(k, v, "partitions")?;
                    if !(1..=u64::from(partition::MAX)).contains(&n) {
                        return Err(ConfigError::invalid(
                            k,
                            format!("{n} partitions: from 1 to {}", partition::MAX),
                        ));
                    }
                    c.partitions = u16::try_from(n).ok();
                }
                "JOBS_WAIT_TIMEOUT_MS" => {
                    let timeout = parse_millis(k, v)?;
                    c.replicas = Some((c.replicas.map_or(0, |(n, _)| n), timeout));
                }
                _ => {}
            }
        }
        Ok(c)
    }

    /// Retries after the first attempt (default 3).
    #[must_use]
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// How long results are kept (default one day).
    #[must_use]
    pub fn result_ttl(mut self, d: Duration) -> Self {
        self.result_ttl = d;
        self
    }

    /// Default task time limit (default 5 minutes).
    #[must_use]
    pub fn task_timeout(mut self, d: Duration) -> Self {
        self.task_timeout = d;
        self
    }

    /// Lease of a fetched job (default 30 s): a dead worker's jobs return to their
    /// queue about this long after it stopped renewing.
    #[must_use]
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }

    /// Retry backoff: first delay and cap (defaults 1 s and 10 minutes).
    #[must_use]
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = base;
        self.retry_max = max;
        self
    }

    /// Acknowledges an enqueue only once `replicas` replicas hold it (Redis's
    /// `WAIT`, on the connection that wrote it), waiting at most `timeout`;
    /// otherwise the enqueue returns [`JobError::NotReplicated`](crate::JobError::NotReplicated)
    /// (the job is queued all the same). `JOBS_WAIT_REPLICAS` (0: off, the
    /// default) and `JOBS_WAIT_TIMEOUT_MS` (default 1000).
    ///
    /// Off, an enqueue is acknowledged once the primary has it, and Redis
    /// replicates asynchronously: a job enqueued in the moment before the primary
    /// dies (and its replica is promoted) can be lost. On, an acknowledged job is on
    /// `replicas` replicas, and a failover promotes one of them; each enqueue waits
    /// a replication round trip more (BENCHMARKS.md has the figure).
    #[must_use]
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replicas = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// Spreads every queue over `n` partitions (`JOBS_PARTITIONS`, 1 to 64), each
    /// in a hash-tag slot of its own, so that on a Redis Cluster the queue's work
    /// spreads over `n` slots and, placed apart, over up to `n` primaries: producers
    /// send each job to the partition its id names, workers fetch from every
    /// partition in turn (tenants round-robin within each), and maintenance
    /// visits each. Fairness, delays, retries, dead letters, revocation, results,
    /// `wait` and uniqueness hold as on one partition; the dead-letter cap
    /// ([`dead_letters`](Self::dead_letters)) applies per queue and partition.
    ///
    /// The default is 3 on a cluster (the fewest primaries a Redis Cluster has: a
    /// freshly made one holds one partition on each) and 1 elsewhere, where more
    /// would only add calls. On a bigger cluster, set it to the number of
    /// primaries. Every producer and worker of a queue must use the same count: a
    /// job's partition follows from its id and the count, so changing it strands
    /// the jobs already queued; drain the queue first (stop producers, let the
    /// workers finish, then restart everything with the new count).
    /// Clamped to 1–64.
    #[must_use]
    pub fn partitions(mut self, n: u16) -> Self {
        self.partitions = Some(n.clamp(1, partition::MAX));
        self
    }

    /// What the backend keeps and refuses.
    fn keeping(&self) -> Keeping {
        Keeping {
            result_ttl_ms: larder_core::time::millis(self.result_ttl),
            dead_ttl_ms: larder_core::time::millis(self.dead_ttl),
            dead_max: self.dead_max,
            allow_eviction: self.allow_eviction,
            replicas: self.replicas.filter(|(n, _)| *n > 0),
        }
    }

    /// A Redis of the jobs' own (`JOBS_REDIS_URL`, same forms as `REDIS_URL`), for
    /// [`Jobs::from_env`]: jobs on a `noeviction` server while the cache evicts on
    /// another. In code, give [`Jobs::with_config`] a handle on that server instead.
    #[must_use]
    pub fn redis_url(mut self, url: RedisUrl) -> Self {
        self.redis_url = Some(url);
        self
    }

    /// How long a dead letter (a job that failed for good) is kept, with its record
    /// (`JOBS_DEAD_TTL`, default 7 days), and how many are kept at most
    /// (`JOBS_DEAD_MAX`, default 10,000; the oldest go first), per queue and
    /// [partition](Self::partitions).
    #[must_use]
    pub fn dead_letters(mut self, ttl: Duration, max: u64) -> Self {
        self.dead_ttl = ttl;
        self.dead_max = max.max(1);
        self
    }

    /// Accepts a Redis whose `maxmemory-policy` evicts any key (`allkeys-*`,
    /// `JOBS_ALLOW_EVICTION`). Off by default: queued jobs, their records and
    /// schedules have no expiry, and such a server drops them silently under memory
    /// pressure, so the queue refuses it (and says so loudly when allowed).
    #[must_use]
    pub fn allow_eviction(mut self, on: bool) -> Self {
        self.allow_eviction = on;
        self
    }
}

/// The job queue: producers enqueue through it, workers run on it.
///
/// With Redis configured, every job is in Redis before `enqueue` returns, and a
/// Redis outage is a [`JobError::Unavailable`] to the caller — never a silent drop.
/// Without Redis (no `REDIS_URL`), jobs run in process: the same API, not durable,
/// for development.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use larder_core::Handle;
/// use larder_jobs::{Jobs, TaskRef, Worker};
///
/// const ADD: TaskRef<(i64, i64), i64> = TaskRef::new("add");
///
/// let jobs = Jobs::new(Handle::in_process());
/// let worker = Worker::new(jobs.clone()).task(ADD, |(a, b), _ctx| async move { Ok(a + b) });
/// let running = worker.spawn();
/// let id = jobs.delay(ADD, &(2, 3)).await?;
/// assert_eq!(jobs.wait(ADD, &id, Duration::from_secs(5)).await?, 5);
/// running.shutdown(Duration::from_secs(1)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Jobs {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) backend: Backend,
    pub(crate) config: JobsConfig,
    pub(crate) handle: Handle,
}

impl fmt::Debug for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jobs")
            .field(
                "backend",
                &match self.inner.backend {
                    Backend::Redis(_) => "redis",
                    Backend::Memory(_) => "in-process",
                },
            )
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Jobs {
    /// A queue on `handle` with the default settings: Redis when the handle has a
    /// URL, in process otherwise.
    #[must_use]
    pub fn new(handle: Handle) -> Self {
        Self::with_config(handle, JobsConfig::default())
    }

    /// A queue on `handle`, configured from the `JOBS_*` variables.
    ///
    /// # Errors
    /// A malformed variable.
    ///
    /// With `JOBS_REDIS_URL` set, jobs use that server (with the handle's other
    /// settings: prefix, deadlines, breaker) instead of the handle's.
    pub fn from_env(handle: Handle) -> Result<Self, ConfigError> {
        let config = JobsConfig::from_env()?;
        let handle = match &config.redis_url {
            Some(url) => {
                let mut own = handle.config().clone();
                own.redis = Some(larder_core::Topology::Single(url.clone()));
                Handle::new(own)
                    .map_err(|e| ConfigError::invalid("JOBS_REDIS_URL", e.to_string()))?
            }
            None => handle,
        };
        Ok(Self::with_config(handle, config))
    }

    /// A queue on `handle` with `config`. Its keys live in the jobs component's
    /// global module `jobs` (`{prefix}:jobs:global:{jobs}:...`, one hash-tag slot;
    /// with [partitions](JobsConfig::partitions), one module and slot per
    /// partition), which no cache sweep can reach.
    #[must_use]
    pub fn with_config(handle: Handle, config: JobsConfig) -> Self {
        let backend = if handle.is_redis_configured() {
            let partitions = config.partitions.unwrap_or(if handle.is_cluster() {
                partition::CLUSTER_DEFAULT
            } else {
                1
            });
            Backend::Redis(RedisBackend::new(
                handle.clone(),
                &partition::scopes(&handle, partitions),
                config.keeping(),
            ))
        } else {
            tracing::info!(target: "larder::jobs", "no REDIS_URL: jobs run in process (development only, not durable)");
            Backend::Memory(Arc::new(MemoryBackend::new(config.keeping())))
        };
        Self {
            inner: Arc::new(Inner {
                backend,
                config,
                handle,
            }),
        }
    }

    /// Whether jobs live in process (no Redis configured).
    #[must_use]
    pub fn is_in_process(&self) -> bool {
        matches!(self.inner.backend, Backend::Memory(_))
    }

    /// How many partitions the queue has (in process: one).
    #[must_use]
    pub fn partitions(&self) -> usize {
        self.inner.backend.partitions()
    }

    /// The Redis key of job `id`'s record (a hash), for an operator looking at
    /// Redis; `None` in process. `lua/lib.lua` describes its fields.
    #[must_use]
    pub fn record_key(&self, id: &str) -> Option<String> {
        match &self.inner.backend {
            Backend::Redis(r) => Some(r.job_key(id)),
            Backend::Memory(_) => None,
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &JobsConfig {
        &self.inner.config
    }

    /// The handle.
    #[must_use]
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// Enqueues `task(args)` now on the `default` queue; returns the job id.
    ///
    /// # Errors
    /// [`JobError::Unavailable`] when Redis is configured but down (nothing was
    /// enqueued); [`JobError::Payload`] when `args` does not serialize.
    pub async fn delay<A: Payload, O>(
        &self,
        task: TaskRef<A, O>,
        args: &A,
    ) -> Result<String, JobError> {
        self.enqueue(task, args, EnqueueOptions::new()).await
    }

    /// Enqueues `task(args)` with options; returns the job id (for an idempotency
    /// key that was already used, the existing job's id, and nothing is enqueued).
    ///
    /// # Errors
    /// As [`delay`](Self::delay), and [`JobError::Invalid`] for bad options.
    pub async fn enqueue<A: Payload, O>(
        &self,
        task: TaskRef<A, O>,
        args: &A,
        opts: EnqueueOptions,
    ) -> Result<String, JobError> {
        Ok(self.enqueue_unique(task, args, opts).await?.0)
    }

    /// As [`enqueue`](Self::enqueue), also saying whether the job is new (`false`:
    /// its id was taken, nothing was enqueued).
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub async fn enqueue_unique<A: Payload, O>(
        &self,
        task: TaskRef<A, O>,
        args: &A,
        opts: EnqueueOptions,
    ) -> Result<(String, bool), JobError> {
        let mut out = self.submit(task, std::iter::once((args, opts))).await?;
        out.pop()
            .ok_or_else(|| JobError::Invalid("nothing enqueued".into()))
    }

    /// Enqueues many jobs of one task in few round trips (pipelined, 500 per round
    /// trip); returns their ids in order.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue); on an error part of a large batch may have
    /// been enqueued (ids make a retry idempotent).
    pub async fn enqueue_many<'a, A: Payload + 'a, O>(
        &self,
        task: TaskRef<A, O>,
        jobs: impl IntoIterator<Item = (&'a A, EnqueueOptions)>,
    ) -> Result<Vec<String>, JobError> {
        Ok(self
            .submit(task, jobs)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    async fn submit<'a, A: Payload + 'a, O>(
        &self,
        task: TaskRef<A, O>,
        jobs: impl IntoIterator<Item = (&'a A, EnqueueOptions)>,
    ) -> Result<Vec<(String, bool)>, JobError> {
        let c = &self.inner.config;
        let mut batch = Vec::new();
        for (args, opts) in jobs {
            let args = serde_json::to_string(args).map_err(|e| JobError::Payload(e.to_string()))?;
            batch.push(NewJob {
                task: task.name(),
                args,
                opts: opts.resolve(c.max_retries, c.task_timeout)?,
            });
        }
        let ttl = ms(c.result_ttl);
        // The `jobs.enqueue` span ([`larder_core::trace`]), with the first job's
        // tenant and queue (a batch's jobs usually share them) and never the arguments.
        let first = batch.first().map(|j| &j.opts);
        let span = tracing::debug_span!(
            target: "larder::jobs",
            "jobs.enqueue",
            tenant = first.map_or("", |o| o.tenant.as_str()),
            task = task.name(),
            queue = first.map_or("", |o| o.queue.as_str()),
            jobs = batch.len(),
            outcome = tracing::field::Empty
        );
        let outcome = |out: &Result<Vec<(String, bool)>, JobError>| match out {
            Ok(out) if out.iter().any(|(_, created)| *created) => "enqueued",
            Ok(_) => "duplicate",
            Err(_) => "error",
        };
        let enqueue = self.inner.backend.enqueue(&batch, ttl);
        let out = larder_core::trace::in_span(span, enqueue, outcome).await?;
        for (id, created) in &out {
            if *created {
                crate::JOB_OUTCOMES.increment(task.name(), "enqueued");
                tracing::debug!(target: "larder::jobs", task = task.name(), id, "job enqueued");
            } else {
                tracing::debug!(target: "larder::jobs", task = task.name(), id, "duplicate enqueue ignored (id exists)");
            }
        }
        Ok(out)
    }

    /// The job's state, result or error; `None` for an unknown id (or one whose
    /// result expired).
    ///
    /// # Errors
    /// [`JobError::Unavailable`] when Redis is down.
    pub async fn status(&self, id: &str) -> Result<Option<JobStatus>, JobError> {
        self.inner.backend.status(id).await
    }

    /// Waits for the job to finish, up to `timeout`, without polling, and returns
    /// its typed result.
    ///
    /// # Errors
    /// [`JobError::WaitTimeout`], [`JobError::Failed`] (failure or revoked),
    /// [`JobError::NotFound`], [`JobError::Payload`] for a result of another type.
    pub async fn wait<A, O: Payload>(
        &self,
        _task: TaskRef<A, O>,
        id: &str,
        timeout: Duration,
    ) -> Result<O, JobError> {
        let status = self.wait_status(id, timeout).await?;
        match status.state {
            JobState::Success => {
                let value = status.result.unwrap_or(serde_json::Value::Null);
                serde_json::from_value(value).map_err(|e| JobError::Payload(e.to_string()))
            }
            JobState::Failure | JobState::Revoked => Err(JobError::Failed {
                id: id.to_owned(),
                state: status.state,
                error: status.error.unwrap_or_default(),
            }),
            state => Err(JobError::WaitTimeout {
                id: id.to_owned(),
                waited: timeout,
                state,
            }),
        }
    }

    /// Waits for the job to finish, up to `timeout`, and returns its status
    /// (terminal or not).
    ///
    /// # Errors
    /// [`JobError::NotFound`], or the backend's error.
    pub async fn wait_status(&self, id: &str, timeout: Duration) -> Result<JobStatus, JobError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self
                .status(id)
                .await?
                .ok_or_else(|| JobError::NotFound(id.to_owned()))?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if status.state.is_terminal() || left.is_zero() {
                return Ok(status);
            }
            // Blocks on the job's completion signal (chunks keep each blocking call
            // well inside the connection's response timeout).
            self.inner
                .backend
                .wait_done(id, left.min(Duration::from_secs(20)))
                .await?;
        }
    }

    /// Revokes a job: queued or delayed ones never run; a running one's task is
    /// cancelled at its worker's next lease renewal. Returns the state after the
    /// call (`REVOKING` for a running job).
    ///
    /// # Errors
    /// [`JobError::Unavailable`] when Redis is down; [`JobError::Invalid`] for an id
    /// that could not be one.
    pub async fn revoke(&self, id: &str) -> Result<String, JobError> {
        crate::options::validate_id(id)?;
        let state = self
            .inner
            .backend
            .revoke(id, ms(self.inner.config.result_ttl))
            .await?;
        tracing::info!(target: "larder::jobs", id, state, "job revoked");
        Ok(state)
    }

    /// Ids in the dead-letter set (oldest first), at most `limit`.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn dead(&self, limit: usize) -> Result<Vec<String>, JobError> {
        self.inner.backend.dead(limit).await
    }

    /// Re-drives a dead job: back to its queue with its attempts reset. Returns false
    /// when the job is not dead.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn redrive(&self, id: &str) -> Result<bool, JobError> {
        self.inner.backend.redrive(id).await
    }

    /// Deletes a job no worker holds (queued, delayed, dead or finished): it never
    /// runs, and its record is gone (a status query then finds nothing, and a waiter
    /// times out). A running job is left alone: [`revoke`](Self::revoke) it first.
    ///
    /// # Errors
    /// [`JobError::Invalid`] for an id that could not be one; the backend's error.
    pub async fn delete(&self, id: &str) -> Result<Deleted, JobError> {
        crate::options::validate_id(id)?;
        let outcome = self.inner.backend.delete(id).await?;
        tracing::info!(target: "larder::jobs", id, outcome = ?outcome, "job delete");
        Ok(outcome)
    }

    /// Deletes every ready job of `queue` (all tenants), records and all, and
    /// returns how many; delayed and running jobs of the queue are left alone. Done
    /// in batches of 1,000 per Redis call, so a queue of a million jobs never blocks
    /// Redis for long.
    ///
    /// # Errors
    /// The backend's error (the batches before it stay purged).
    pub async fn purge(&self, queue: &str) -> Result<u64, JobError> {
        let purged = self.inner.backend.purge(queue).await?;
        tracing::info!(target: "larder::jobs", queue, purged, "queue purged");
        Ok(purged)
    }

    /// Ready jobs of `queue`, all tenants.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn queued(&self, queue: &str) -> Result<usize, JobError> {
        self.inner.backend.queued(queue).await
    }

    /// The workers that beat within [`FORGET_AFTER`], newest first: each one's
    /// host, process, queues, concurrency and running jobs
    /// ([`WorkerInfo::alive`] says whether it still beats). Older heartbeats (a
    /// killed worker's) are removed, and an unreadable one is skipped.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, JobError> {
        let mut live: Vec<WorkerInfo> = self.registered(Registry::Workers).await?;
        live.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(a.id.cmp(&b.id)));
        Ok(live)
    }

    /// The scheduler's entries as the leading scheduler last published them, by
    /// name, each with its last job's state. An entry no scheduler published for
    /// [`FORGET_AFTER`] (removed from the code, or its app stopped) is removed.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn schedule(&self) -> Result<Vec<ScheduleInfo>, JobError> {
        let mut live: Vec<ScheduleInfo> = self.registered(Registry::Schedule).await?;
        for info in &mut live {
            if let Some(id) = &info.last_job {
                info.last_state = self.status(id).await?.map(|s| s.state);
            }
        }
        live.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(live)
    }

    /// What `registry` holds that was written within [`FORGET_AFTER`]; older
    /// values (a killed worker's, a removed entry's) are removed, and unreadable ones
    /// skipped.
    async fn registered<T: Registered>(&self, registry: Registry) -> Result<Vec<T>, JobError> {
        let now = crate::options::now_ms();
        let (mut live, mut gone) = (Vec::new(), Vec::new());
        for value in self.inner.backend.registered(registry).await? {
            let Ok(entry) = serde_json::from_str::<T>(&value) else {
                continue;
            };
            if now.saturating_sub(entry.written_ms()) > ms(FORGET_AFTER) {
                gone.push(entry.id().to_owned());
            } else {
                live.push(entry);
            }
        }
        self.inner.backend.unregister(registry, &gone).await?;
        Ok(live)
    }

    /// The outcomes of the last `minutes` minutes (at most [`MINUTES_KEPT`]), oldest
    /// first, this minute last, for all queues and for each: what every worker
    /// recorded, counted as it completed jobs (per batch of completions, one
    /// `HINCRBY` per outcome kind, and one per queue and kind).
    ///
    /// # Errors
    /// The backend's error.
    pub async fn throughput(&self, minutes: u64) -> Result<Throughput, JobError> {
        let last = minute_of(crate::options::now_ms());
        let first = last + 1 - minutes.clamp(1, MINUTES_KEPT);
        self.inner.backend.minutes(first, last).await
    }

    /// How many jobs of each queue are in each state (see [`crate::inspect`]: set
    /// sizes, no scan).
    ///
    /// # Errors
    /// The backend's error.
    pub async fn counts(&self) -> Result<JobCounts, JobError> {
        self.inner.backend.counts().await
    }

    /// Sets the depth gauges (`larder_jobs_queued` by queue, `larder_jobs_in_state`
    /// by queue and state) from [`counts`](Self::counts), and returns the counts: call it
    /// when metrics are scraped, so the gauges are as fresh as the scrape and cost
    /// nothing in between.
    ///
    /// # Errors
    /// The backend's error (the gauges keep their last values).
    pub async fn publish_depths(&self) -> Result<JobCounts, JobError> {
        use larder_core::metrics::{JOBS_IN_STATE, JOBS_QUEUED};
        let counts = self.counts().await?;
        #[allow(clippy::cast_precision_loss)] // a gauge is an f64; counts stay far below 2^53
        for (queue, c) in &counts.queues {
            metrics::gauge!(JOBS_QUEUED, "queue" => queue.clone()).set(c.queued as f64);
            for listing in Listing::ALL {
                metrics::gauge!(JOBS_IN_STATE, "queue" => queue.clone(), "state" => listing.as_str())
                    .set(c.of(listing) as f64);
            }
        }
        Ok(counts)
    }

    /// A page of `queue`'s delayed, retrying, running or dead jobs: at most `limit`
    /// (capped at [`MAX_PAGE`]) from rank `offset` on.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn list(
        &self,
        queue: &str,
        listing: Listing,
        offset: u64,
        limit: u64,
    ) -> Result<ListPage, JobError> {
        let limit = limit.clamp(1, MAX_PAGE);
        self.inner.backend.list(queue, listing, offset, limit).await
    }

    /// Searches `queue`'s delayed, retrying, running or dead jobs for those of a
    /// task or a tenant:
    /// at most `limit` matches (capped at [`MAX_PAGE`]) from `from` on (the start:
    /// `SearchCursor::default()`), in the listing's order, partition by partition.
    ///
    /// One call looks at no more than [`SEARCH_BUDGET`](crate::inspect::SEARCH_BUDGET)
    /// jobs (a range of the listing and each job's descriptor); where the listing is
    /// longer, [`SearchPage::next`](crate::inspect::SearchPage::next) says where the
    /// next call goes on. Nothing scans the keyspace.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn search(
        &self,
        queue: &str,
        listing: Listing,
        filter: &JobFilter,
        from: SearchCursor,
        limit: u64,
    ) -> Result<SearchPage, JobError> {
        let limit = limit.clamp(1, MAX_PAGE);
        self.inner
            .backend
            .search(queue, listing, filter, from, limit)
            .await
    }

    /// Everything job `id`'s record holds, or `None` when there is no record.
    ///
    /// # Errors
    /// [`JobError::Invalid`] for an id that could not be one; the backend's error.
    pub async fn detail(&self, id: &str) -> Result<Option<JobDetail>, JobError> {
        crate::options::validate_id(id)?;
        self.inner.backend.detail(id).await
    }

    /// Promotes due delayed jobs and returns jobs of dead workers (expired leases)
    /// to their queues. Workers do this by themselves every few hundred ms.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn maintain(&self) -> Result<(usize, usize), JobError> {
        self.inner.backend.maintain(1000).await
    }
}

/// What [`Jobs::delete`](Jobs::delete) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The job and its record are gone.
    Deleted,
    /// A worker holds it: nothing was done (revoke it, then delete it).
    Running,
    /// No such job.
    Missing,
}

pub(crate) use larder_core::time::millis as ms;

/// The longest page [`Jobs::list`] returns.
pub const MAX_PAGE: u64 = 500;
