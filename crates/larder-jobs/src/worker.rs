//! The consumer side: a worker with bounded concurrency, weighted queues, leases
//! renewed while tasks run, per-task timeouts and rate limits, graceful shutdown.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use larder_core::task::AbortOnDrop;
use larder_ratelimit::{Check, Decision, Policy, RateLimiter};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, Completion, Fetched, Outcome, Registry};
use crate::error::JobError;
use crate::inspect::{WorkerInfo, HEARTBEAT_EVERY};
use crate::jobs::{ms, Jobs};
use crate::options::now_ms;
use crate::task::{JobContext, Payload, TaskError, TaskRef};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler =
    Arc<dyn Fn(String, JobContext) -> BoxFuture<Result<String, TaskError>> + Send + Sync>;

/// A worker: register tasks, choose queues, then [`spawn`](Self::spawn) it inside
/// an app or [`run`](Self::run) it as its own process.
pub struct Worker {
    jobs: Jobs,
    handlers: HashMap<&'static str, Handler>,
    queues: Vec<(String, u32)>,
    concurrency: usize,
    shutdown_timeout: Duration,
    limits: HashMap<&'static str, Policy>,
    limiter: Option<RateLimiter>,
    renew_leases: bool,
    track_started: bool,
    id: String,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("tasks", &self.handlers.keys().collect::<Vec<_>>())
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Jobs the worker fetches per maintenance batch (promotion, reaping).
const MAINTAIN_BATCH: usize = 1000;
/// How long a cancelled task has to return before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(1);
/// How often a worker promotes due delayed jobs and reaps expired leases.
const MAINTAIN_EVERY: Duration = Duration::from_millis(250);

impl Worker {
    /// A worker on `jobs`: queue `default`, concurrency 8, 30 s shutdown deadline.
    #[must_use]
    pub fn new(jobs: Jobs) -> Self {
        Self {
            jobs,
            handlers: HashMap::new(),
            queues: vec![("default".to_owned(), 1)],
            concurrency: 8,
            shutdown_timeout: Duration::from_secs(30),
            limits: HashMap::new(),
            limiter: None,
            renew_leases: true,
            track_started: true,
            id: format!("w-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Registers the function that runs `task`. Arguments that do not decode fail
    /// the job for good (dead-letter set, with the decode error).
    #[must_use]
    pub fn task<A, O, F, Fut>(mut self, task: TaskRef<A, O>, f: F) -> Self
    where
        A: Payload,
        O: Payload,
        F: Fn(A, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, TaskError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |raw: String, ctx: JobContext| {
            let f = Arc::clone(&f);
            Box::pin(async move {
                let args: A = serde_json::from_str(&raw)
                    .map_err(|e| TaskError::fatal(format!("malformed arguments: {e}")))?;
                let out = f(args, ctx).await?;
                serde_json::to_string(&out)
                    .map_err(|e| TaskError::fatal(format!("result does not serialize: {e}")))
            })
        });
        self.handlers.insert(task.name(), handler);
        self
    }

    /// The queues to serve, with weights: `[("high", 3), ("default", 1)]` tries
    /// `high` first three rounds in four, `default` first in the fourth; an empty
    /// queue never blocks another.
    #[must_use]
    pub fn queues(mut self, queues: &[(&str, u32)]) -> Self {
        self.queues = queues
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|(q, w)| ((*q).to_owned(), *w))
            .collect();
        self
    }

    /// Jobs run at once (default 8).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long shutdown waits for running jobs before handing them back to their
    /// queue (default 30 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// Limits how often `task` starts, across every worker sharing the Redis (for
    /// example `"10/second"`): a job over the limit waits in the delayed set (not
    /// counted as an attempt).
    ///
    /// # Errors
    /// A malformed limit.
    pub fn rate_limit<A, O>(
        mut self,
        task: TaskRef<A, O>,
        limit: &str,
    ) -> Result<Self, larder_ratelimit::PolicyError> {
        let name = format!(
            "task-{}",
            task.name()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        );
        self.limits.insert(task.name(), Policy::new(&name, limit)?);
        if self.limiter.is_none() {
            self.limiter = Some(RateLimiter::new(self.jobs.handle().clone()));
        }
        Ok(self)
    }

    /// Whether fetched jobs show `STARTED` (default on: the worker fetches only for
    /// free slots, so a fetched job starts at once and the fetch marks it) or
    /// `RECEIVED` until their outcome, as in Celery's default
    /// (`task_track_started = False`). Leases, fencing and revocation are the same.
    #[must_use]
    pub fn track_started(mut self, on: bool) -> Self {
        self.track_started = on;
        self
    }

    /// Turns lease renewal off: the worker behaves like one that stalled (a long GC
    /// pause, a frozen VM), so its jobs' leases expire and another worker takes
    /// them. For tests and failure drills only.
    #[must_use]
    pub fn renew_leases(mut self, on: bool) -> Self {
        self.renew_leases = on;
        self
    }

    /// Starts the worker on the current Tokio runtime.
    #[must_use]
    pub fn spawn(self) -> RunningWorker {
        let stop = CancellationToken::new();
        let join = tokio::spawn(self.run_until(stop.clone()));
        RunningWorker { stop, join }
    }

    /// Runs until `shutdown` completes (for example `tokio::signal::ctrl_c()`), then
    /// shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        let run = self.run_until(stop);
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => return,
            () = shutdown => trigger.cancel(),
        }
        run.await;
    }

    fn order(&self, round: usize) -> Vec<String> {
        let wheel: Vec<&str> = self
            .queues
            .iter()
            .flat_map(|(q, w)| std::iter::repeat_n(q.as_str(), *w as usize))
            .collect();
        let mut out: Vec<String> = Vec::with_capacity(self.queues.len());
        for i in 0..wheel.len() {
            let q = wheel[(round + i) % wheel.len()];
            if !out.iter().any(|o| o == q) {
                out.push(q.to_owned());
            }
        }
        out
    }

    async fn run_until(self, stop: CancellationToken) {
        let backend = &self.jobs.inner.backend;
        let lease = self.jobs.config().lease;
        let lease_ms = ms(lease);
        let (completions, _completion_task) =
            completion_batcher(backend.clone(), ms(self.jobs.config().result_ttl));
        let me = Arc::new(Shared {
            jobs: self.jobs.clone(),
            handlers: self.handlers.clone(),
            limits: self.limits.clone(),
            limiter: self.limiter.clone(),
            inflight: Mutex::new(HashMap::new()),
            worker_id: self.id.clone(),
            completions,
        });
        tracing::info!(target: "larder::jobs", worker = %self.id, queues = ?self.queues, concurrency = self.concurrency, "worker started");
        let background = CancellationToken::new();
        // Aborted when this future is dropped (an aborted worker is a crashed one).
        let maintenance = AbortOnDrop(tokio::spawn(maintain(backend.clone(), background.clone())));
        let renewal = AbortOnDrop(tokio::spawn(renew(
            Arc::clone(&me),
            lease,
            background.clone(),
            self.renew_leases,
        )));
        let beating = AbortOnDrop(tokio::spawn(heartbeat(
            Arc::clone(&me),
            WorkerInfo {
                id: self.id.clone(),
                host: host_name(),
                pid: std::process::id(),
                queues: self.queues.iter().map(|(q, _)| q.clone()).collect(),
                concurrency: self.concurrency,
                running: Vec::new(),
                started_ms: now_ms(),
                beat_ms: 0,
            },
            background.clone(),
        )));
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut running = JoinSet::new();
        let all_queues: Vec<String> = self.queues.iter().map(|(q, _)| q.clone()).collect();
        let mut wakeups = Wakeups::new(backend.clone(), all_queues);
        let mut pause = Pause::default();
        let mut round = 0usize;
        while !stop.is_cancelled() {
            while running.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    permit = Arc::clone(&slots).acquire_owned() => drop(permit),
                    () = stop.cancelled() => break,
                }
                continue;
            }
            round = round.wrapping_add(1);
            let mut fetched = 0;
            let mut failed = false;
            for queue in self.order(round) {
                match backend
                    .fetch(
                        &queue,
                        free - fetched,
                        lease_ms,
                        &self.id,
                        self.track_started,
                    )
                    .await
                {
                    Ok(jobs) => {
                        pause.resumed(&self.id);
                        for job in jobs {
                            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                                break;
                            };
                            fetched += 1;
                            let me = Arc::clone(&me);
                            running.spawn(async move {
                                me.execute(job).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        failed = true;
                        pause.paused(&self.id, &e);
                        break;
                    }
                }
                if fetched >= free {
                    break;
                }
            }
            if failed {
                tokio::select! {
                    () = tokio::time::sleep(pause.backoff()) => {}
                    () = stop.cancelled() => break,
                }
            } else if fetched == 0 {
                tokio::select! {
                    r = wakeups.next() => {
                        if let Err(e) = r {
                            pause.paused(&self.id, &e);
                            tokio::time::sleep(pause.backoff()).await;
                        }
                    }
                    () = stop.cancelled() => break,
                }
            }
        }
        // Graceful shutdown: no more fetching; running jobs get the deadline, then
        // are cancelled and handed back to their queues.
        tracing::info!(target: "larder::jobs", worker = %self.id, running = running.len(), "worker stopping");
        let deadline = tokio::time::sleep(self.shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                () = &mut deadline => break,
            }
        }
        let left: Vec<(String, String, CancellationToken)> = me
            .inflight_lock()
            .iter()
            .map(|(id, (token, cancel))| (id.clone(), token.clone(), cancel.clone()))
            .collect();
        for (_, _, cancel) in &left {
            cancel.cancel();
        }
        running.abort_all();
        while running.join_next().await.is_some() {}
        for (id, token, _) in &left {
            let back = Completion {
                id: id.clone(),
                token: token.clone(),
                outcome: Outcome::Requeue,
            };
            match backend
                // The result TTL: a job revoked while it ran ends here, and its
                // record is kept as any finished job's.
                .complete(&[back], ms(me.jobs.config().result_ttl))
                .await
                .map(|r| r.first() == Some(&true))
            {
                Ok(true) => {
                    tracing::info!(target: "larder::jobs", id, "job handed back at shutdown");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(target: "larder::jobs", id, error = %e, "could not hand back job; it returns when its lease expires");
                }
            }
        }
        background.cancel();
        maintenance.join().await;
        renewal.join().await;
        beating.join().await;
        if let Err(e) = backend
            .unregister(Registry::Workers, std::slice::from_ref(&self.id))
            .await
        {
            tracing::debug!(target: "larder::jobs", error = %e, "heartbeat left behind; it ages out");
        }
        tracing::info!(target: "larder::jobs", worker = %self.id, "worker stopped");
    }
}

/// An idle worker's wait for work, on every partition of the queue at once.
///
/// A blocking pop reaches one slot, and a partitioned queue has one wake-up list per
/// partition (per queue), each in its partition's slot. So each partition has a
/// wait of its own, in a task that outlives a wake-up elsewhere: cancelling a
/// blocked call would close its connection, and the next wait would open another.
/// A wait ends when its partition has work (or after a second); then the worker
/// fetches, and only that partition's wait is started again.
struct Wakeups {
    backend: Backend,
    queues: Arc<[String]>,
    /// Partitions with no wait running.
    idle: Vec<usize>,
    /// The running waits, each answering with its partition (aborted on drop).
    waits: JoinSet<(usize, Result<(), JobError>)>,
}

impl Wakeups {
    /// How long one blocking wait lasts before it is started again.
    const WAIT: Duration = Duration::from_secs(1);

    fn new(backend: Backend, queues: Vec<String>) -> Self {
        Self {
            idle: (0..backend.partitions()).collect(),
            backend,
            queues: queues.into(),
            waits: JoinSet::new(),
        }
    }

    /// Returns when one partition may have work (or its wait timed out or failed).
    async fn next(&mut self) -> Result<(), JobError> {
        for p in self.idle.drain(..) {
            let (backend, queues) = (self.backend.clone(), Arc::clone(&self.queues));
            self.waits
                .spawn(async move { (p, backend.wait_work(&queues, p, Self::WAIT).await) });
        }
        match self.waits.join_next().await {
            Some(Ok((p, result))) => {
                self.idle.push(p);
                result
            }
            // A wait that panicked (its partition is unknown): every partition
            // starts a wait again.
            Some(Err(_)) | None => {
                self.waits.shutdown().await;
                self.idle = (0..self.backend.partitions()).collect();
                Ok(())
            }
        }
    }
}

/// A spawned worker.
#[derive(Debug)]
pub struct RunningWorker {
    stop: CancellationToken,
    join: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    /// Stops fetching, waits for running jobs (up to the worker's shutdown timeout),
    /// hands back the rest, and returns when the worker is done — or after
    /// `wait_at_most`, leaving it to finish in the background.
    pub async fn shutdown(self, wait_at_most: Duration) {
        self.stop.cancel();
        let _ = tokio::time::timeout(wait_at_most, self.join).await;
    }

    /// Stops the worker without waiting: a crash, as far as the queue can tell.
    /// Its leased jobs return to their queues when the leases expire.
    pub fn abort(self) {
        self.join.abort();
    }
}

#[derive(Default)]
struct Pause {
    paused: bool,
    failures: u32,
}

impl Pause {
    fn paused(&mut self, worker: &str, e: &JobError) {
        self.failures = self.failures.saturating_add(1);
        if !self.paused {
            self.paused = true;
            tracing::warn!(target: "larder::jobs", worker, error = %e, "job queue unavailable: worker paused (retrying)");
        }
    }

    fn resumed(&mut self, worker: &str) {
        if self.paused {
            tracing::info!(target: "larder::jobs", worker, "job queue back: worker resumed");
        }
        self.paused = false;
        self.failures = 0;
    }

    fn backoff(&self) -> Duration {
        let exp = self.failures.min(5);
        Duration::from_millis(100 << exp).min(Duration::from_secs(3))
    }
}

struct Shared {
    jobs: Jobs,
    handlers: HashMap<&'static str, Handler>,
    limits: HashMap<&'static str, Policy>,
    limiter: Option<RateLimiter>,
    inflight: Mutex<HashMap<String, (String, CancellationToken)>>,
    worker_id: String,
    completions: CompletionBatcher,
}

enum Ended {
    Done(Result<String, TaskError>),
    TimedOut(Duration),
    Cancelled,
}

impl Shared {
    fn inflight_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (String, CancellationToken)>> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn backoff(&self, attempts: u32, token: &str) -> Duration {
        let c = self.jobs.config();
        let exp = c
            .retry_base
            .saturating_mul(1u32 << attempts.min(20))
            .min(c.retry_max);
        // Jitter in [exp/2, exp], from the random token's bits.
        let seed = token
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let half = exp / 2;
        half + Duration::from_millis(seed % (ms(half).max(1)))
    }

    async fn execute(&self, job: Fetched) {
        let backend = &self.jobs.inner.backend;
        let ttl = ms(self.jobs.config().result_ttl);
        let task = job.task.clone();
        // Per-task rate limit, shared by every worker.
        if let (Some(policy), Some(limiter)) = (self.limits.get(task.as_str()), &self.limiter) {
            if let Decision::Deny { retry_after, .. } =
                limiter.check(&[Check::new(policy, &task)]).await
            {
                let at_ms = now_ms() + ms(retry_after).max(1);
                let defer = Completion {
                    id: job.id.clone(),
                    token: job.token.clone(),
                    outcome: Outcome::Defer { at_ms },
                };
                let _ = backend.complete(&[defer], ttl).await;
                crate::JOB_OUTCOMES.increment(&task, "rate_limited");
                return;
            }
        }
        let cancel = CancellationToken::new();
        self.inflight_lock()
            .insert(job.id.clone(), (job.token.clone(), cancel.clone()));
        let outcome = self.run(&job, &cancel).await;
        self.inflight_lock().remove(&job.id);
        let Some((outcome_name, outcome)) = outcome else {
            return;
        };
        let mut reported = false;
        for attempt in 0..5u32 {
            let done = Completion {
                id: job.id.clone(),
                token: job.token.clone(),
                outcome: outcome.clone(),
            };
            match self.completions.call(done).await {
                Ok(true) => {
                    reported = true;
                    break;
                }
                Ok(false) => {
                    tracing::warn!(target: "larder::jobs", job_id = %job.id, task, "lease lost: outcome discarded (the job runs again elsewhere)");
                    crate::JOB_OUTCOMES.increment(&task, "fenced");
                    return;
                }
                Err(e) => {
                    tracing::warn!(target: "larder::jobs", job_id = %job.id, error = %e, attempt, "could not record job outcome; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        if reported {
            crate::JOB_OUTCOMES.increment(&task, outcome_name);
            tracing::debug!(target: "larder::jobs", job_id = %job.id, task, outcome = outcome_name, "job finished");
        }
    }

    /// Runs one job; `None` when nothing must be reported (lease lost, or the job
    /// could not be started).
    async fn run(
        &self,
        job: &Fetched,
        cancel: &CancellationToken,
    ) -> Option<(&'static str, Outcome)> {
        if let Some(problem) = &job.problem {
            return Some(("failure", Outcome::Failure(problem.clone())));
        }
        let Some(handler) = self.handlers.get(job.task.as_str()) else {
            return Some((
                "failure",
                Outcome::Failure(format!(
                    "no task named {:?} is registered on worker {}",
                    job.task, self.worker_id
                )),
            ));
        };
        let ctx = JobContext {
            id: job.id.clone(),
            tenant: job.tenant.clone(),
            attempt: job.attempts + 1,
            cancel: cancel.clone(),
        };
        if job.attempts == 0 && job.created_ms > 0 {
            let age = now_ms().saturating_sub(job.created_ms);
            crate::JOB_AGE_AT_START.record(&job.task, Duration::from_millis(age).as_secs_f64());
        }
        let started = std::time::Instant::now();
        let limit = Duration::from_millis(job.timeout_ms.max(1));
        let fut = AssertUnwindSafe(handler(job.args.clone(), ctx)).catch_unwind();
        let fut = tokio::time::timeout(limit, fut);
        tokio::pin!(fut);
        let ended = tokio::select! {
            r = &mut fut => match r {
                Ok(Ok(result)) => Ended::Done(result),
                Ok(Err(_panic)) => Ended::Done(Err(TaskError::retry("the task panicked"))),
                Err(_) => Ended::TimedOut(limit),
            },
            () = cancel.cancelled() => {
                // A cooperative task sees the cancellation and returns: give it a
                // moment to clean up before it is dropped.
                let _ = tokio::time::timeout(CANCEL_GRACE, &mut fut).await;
                Ended::Cancelled
            }
        };
        crate::JOB_RUN.record(&job.task, started.elapsed().as_secs_f64());
        // Cancelled (revoked or lease lost) wins over whatever the task returned as
        // it stopped.
        let ended = if cancel.is_cancelled() {
            Ended::Cancelled
        } else {
            ended
        };
        let error = match ended {
            Ended::Done(Ok(result)) => return Some(("success", Outcome::Success(result))),
            Ended::Cancelled => {
                // Revoked (renewal saw the flag) or lease lost: only a revocation is
                // reported; a lost lease belongs to someone else now.
                return self
                    .is_revoked(job)
                    .await
                    .then(|| ("revoked", Outcome::Revoked("revoked while running".into())));
            }
            Ended::TimedOut(limit) => TaskError::retry(format!("timed out after {limit:?}")),
            Ended::Done(Err(e)) => e,
        };
        if error.is_retryable() && job.attempts < job.max_retries {
            let at_ms = now_ms() + ms(self.backoff(job.attempts, &job.token));
            Some((
                "retry",
                Outcome::Retry {
                    error: error.to_string(),
                    at_ms,
                },
            ))
        } else {
            Some(("failure", Outcome::Failure(error.to_string())))
        }
    }

    /// Whether a cancelled job was revoked (rather than its lease lost). Asked with
    /// a renewal for a whole lease, so the question leaves the job as leased as it
    /// was until its outcome is recorded.
    async fn is_revoked(&self, job: &Fetched) -> bool {
        let lease = ms(self.jobs.config().lease);
        matches!(self.jobs.inner.backend.renew(lease, &[(job.id.clone(), job.token.clone())]).await,
            Ok(r) if !r.revoked.is_empty())
    }
}

/// The completion batcher: an outcome in, whether it was recorded (not fenced) out.
type CompletionBatcher = Batcher<Completion, Result<bool, String>>;

/// Coalesces concurrent calls into one backend call: each caller sends its request
/// and awaits its answer; the batcher takes whatever is queued (up to a cap) and
/// makes one round trip for all of it. Under load, jobs finishing together share
/// one script call; alone, a call goes out at once.
struct Batcher<Req, Resp> {
    tx: tokio::sync::mpsc::UnboundedSender<(Req, tokio::sync::oneshot::Sender<Resp>)>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    fn spawn<F, Fut>(max: usize, f: F) -> (Self, AbortOnDrop)
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(Req, tokio::sync::oneshot::Sender<Resp>)>();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut reqs = vec![first.0];
                let mut waiters = vec![first.1];
                while reqs.len() < max {
                    match rx.try_recv() {
                        Ok((r, w)) => {
                            reqs.push(r);
                            waiters.push(w);
                        }
                        Err(_) => break,
                    }
                }
                for (w, r) in waiters.into_iter().zip(f(reqs).await) {
                    let _ = w.send(r);
                }
            }
        });
        (Self { tx }, AbortOnDrop(task))
    }

    async fn call(&self, req: Req) -> Resp
    where
        Resp: From<BatchGone>,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send((req, tx)).is_err() {
            return BatchGone.into();
        }
        rx.await.unwrap_or_else(|_| BatchGone.into())
    }
}

/// The batcher stopped (the worker is going away).
struct BatchGone;

impl<T> From<BatchGone> for Result<T, String> {
    fn from(_: BatchGone) -> Self {
        Err("the worker is stopping".into())
    }
}

fn completion_batcher(backend: Backend, ttl_ms: u64) -> (CompletionBatcher, AbortOnDrop) {
    Batcher::spawn(256, move |jobs: Vec<Completion>| {
        let backend = backend.clone();
        async move {
            match backend.complete(&jobs, ttl_ms).await {
                Ok(done) => done.into_iter().map(Ok).collect(),
                Err(e) => jobs.iter().map(|_| Err(e.to_string())).collect(),
            }
        }
    })
}

async fn maintain(backend: Backend, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(MAINTAIN_EVERY) => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = backend.maintain(MAINTAIN_BATCH).await {
            tracing::debug!(target: "larder::jobs", error = %e, "maintenance skipped");
        }
    }
}

/// Writes the worker's [`WorkerInfo`] now and every [`HEARTBEAT_EVERY`] until
/// `stop`, with the jobs it runs at the time.
async fn heartbeat(me: Arc<Shared>, mut info: WorkerInfo, stop: CancellationToken) {
    loop {
        info.beat_ms = now_ms();
        info.running = me.inflight_lock().keys().cloned().collect();
        info.running.sort_unstable();
        let beat = serde_json::to_string(&info).unwrap_or_default();
        if let Err(e) = me
            .jobs
            .inner
            .backend
            .register(Registry::Workers, &info.id, &beat)
            .await
        {
            tracing::debug!(target: "larder::jobs", error = %e, "heartbeat skipped");
        }
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// This machine's name, for the dashboard's list of workers: Linux's, read from
/// procfs (the standard library has no call for it); empty elsewhere.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

async fn renew(me: Arc<Shared>, lease: Duration, stop: CancellationToken, enabled: bool) {
    if !enabled {
        stop.cancelled().await;
        return;
    }
    let every = lease / 3;
    let lease_ms = ms(lease);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let held: Vec<(String, String)> = me
            .inflight_lock()
            .iter()
            .map(|(id, (token, _))| (id.clone(), token.clone()))
            .collect();
        match me.jobs.inner.backend.renew(lease_ms, &held).await {
            Ok(r) => {
                let inflight = me.inflight_lock();
                for id in r.revoked.iter().chain(&r.lost) {
                    if let Some((_, cancel)) = inflight.get(id) {
                        cancel.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(target: "larder::jobs", error = %e, "lease renewal failed"),
        }
    }
}
