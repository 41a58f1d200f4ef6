//! The Redis backend: every state change is one Lua script, run by SHA, in one
//! partition (one hash-tag slot) of the queue.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use larder_core::redis::{self as r, Value};
use larder_core::{Handle, Scope};

use super::{Completion, Deleted, Fetched, Keeping, NewJob, Registry, Renewal, PURGE_BATCH};
use crate::error::JobError;
use crate::inspect::{
    self, minute_of, AttemptError, FoundJob, JobCounts, JobDetail, ListPage, Listed, Listing,
    MinuteTally, QueueCounts, SearchCursor, Throughput,
};
use crate::options::now_ms;
use crate::options::NO_TENANT;
use crate::partition;
use crate::state::{JobState, JobStatus};

/// The error of a job whose record cannot be read; `bury` in `lua/lib.lua` writes the
/// same text for the ones the scripts meet.
const MALFORMED_RECORD: &str = "malformed job record (not written by this version of larder-jobs)";

/// Jobs per enqueue script call: bounds one call's work (and its deadline).
const ENQUEUE_CHUNK: usize = 500;

/// A job script with the shared functions of `lua/lib.lua` in front of it.
macro_rules! job_script {
    ($file:literal) => {
        r::Script::new(concat!(
            include_str!("../../lua/lib.lua"),
            include_str!(concat!("../../lua/", $file))
        ))
    };
}

struct Scripts {
    enqueue: r::Script,
    fetch: r::Script,
    renew: r::Script,
    complete: r::Script,
    move_: r::Script,
    revoke: r::Script,
    redrive: r::Script,
    delete: r::Script,
    purge: r::Script,
    arm_wait: r::Script,
}

#[derive(Clone)]
pub(crate) struct RedisBackend {
    handle: Handle,
    /// Each partition's key base (see `partition.rs`); a job lives in the one its
    /// id names, and every script touches one partition.
    partitions: Arc<[Arc<str>]>,
    /// Where the next fetch starts, so that workers visit the partitions in turn.
    next: Arc<AtomicUsize>,
    /// How long finished jobs' records and signals are kept (for the scripts that
    /// finish a job on their own: an expired job at fetch, an unreadable one at
    /// maintenance).
    result_ttl_ms: u64,
    /// How long dead letters (and their records) are kept, and how many at most.
    dead_ttl_ms: u64,
    dead_max: u64,
    scripts: Arc<Scripts>,
    /// The server's eviction policy, judged once (at the first enqueue or fetch
    /// that reaches it): `Err` holds the refusal.
    policy: Arc<tokio::sync::OnceCell<Result<(), String>>>,
    allow_eviction: bool,
    /// Replicas that must confirm an enqueue, and the wait for them.
    replicas: Option<(u32, std::time::Duration)>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn number(v: &Value) -> u64 {
    text(v).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A job's `d` field (see `lua/lib.lua`): what it is, written once at enqueue.
fn descriptor(job: &NewJob<'_>, created_ms: u64) -> String {
    let o = &job.opts;
    format!(
        "{}\t{}\t{}\t{}\t{}\t{created_ms}\t{}",
        o.queue, o.tenant, o.priority, o.max_retries, o.timeout_ms, job.task
    )
}

/// A job's `d` field, read.
struct Descriptor<'a> {
    queue: &'a str,
    tenant: &'a str,
    priority: u8,
    max_retries: u32,
    timeout_ms: u64,
    created_ms: u64,
    task: &'a str,
}

impl<'a> Descriptor<'a> {
    fn parse(d: &'a str) -> Option<Self> {
        let mut f = d.splitn(7, '\t');
        Some(Self {
            queue: f.next()?,
            tenant: f.next()?,
            priority: f.next()?.parse().ok()?,
            max_retries: f.next()?.parse().ok()?,
            timeout_ms: f.next()?.parse().ok()?,
            created_ms: f.next()?.parse().ok()?,
            task: f.next()?,
        })
    }
}

/// A partition's positions in chunks of at most [`ENQUEUE_CHUNK`], each with the
/// partition.
fn chunks((p, group): (usize, &Vec<usize>)) -> impl Iterator<Item = (usize, &[usize])> {
    group.chunks(ENQUEUE_CHUNK).map(move |c| (p, c))
}

fn tenant_of(t: &str) -> Option<String> {
    (t != NO_TENANT).then(|| t.to_owned())
}

impl RedisBackend {
    pub(crate) fn new(handle: Handle, partitions: &[Scope], keeping: Keeping) -> Self {
        Self {
            policy: Arc::default(),
            allow_eviction: keeping.allow_eviction,
            handle,
            partitions: partitions.iter().map(|s| Arc::from(s.base())).collect(),
            next: Arc::default(),
            result_ttl_ms: keeping.result_ttl_ms,
            dead_ttl_ms: keeping.dead_ttl_ms,
            dead_max: keeping.dead_max,
            replicas: keeping.replicas,
            scripts: Arc::new(Scripts {
                enqueue: job_script!("enqueue_many.lua"),
                fetch: job_script!("fetch.lua"),
                renew: job_script!("renew.lua"),
                complete: job_script!("complete_many.lua"),
                move_: job_script!("move.lua"),
                revoke: job_script!("revoke.lua"),
                redrive: job_script!("redrive.lua"),
                delete: job_script!("delete.lua"),
                purge: job_script!("purge.lua"),
                arm_wait: r::Script::new(include_str!("../../lua/arm_wait.lua")),
            }),
        }
    }

    /// Refuses a server whose `maxmemory-policy` evicts any key (`allkeys-*`): it
    /// would drop queued jobs, records and schedules silently. Asked once; while
    /// Redis cannot be asked, the caller gets that error and the next call asks.
    async fn check_eviction_policy(&self) -> Result<(), JobError> {
        let verdict = self
            .policy
            .get_or_try_init(|| async {
                // Every primary's (on a cluster, any of them may come to hold jobs).
                let infos: Vec<String> = self
                    .handle
                    .query_each_primary("jobs_policy", r::cmd("INFO").arg("memory"))
                    .await
                    .map_err(JobError::from_core)?;
                let verdict = infos
                    .iter()
                    .map(|info| {
                        let policy = info
                            .lines()
                            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
                            .unwrap_or("unknown")
                            .trim();
                        self.judge_policy(policy)
                    })
                    .find(Result::is_err)
                    .unwrap_or(Ok(()));
                Ok::<_, JobError>(verdict)
            })
            .await?;
        verdict.clone().map_err(JobError::UnsafeRedis)
    }

    fn judge_policy(&self, policy: &str) -> Result<(), String> {
        if !policy.starts_with("allkeys-") {
            return Ok(());
        }
        if self.allow_eviction {
            tracing::warn!(target: "larder::jobs", policy, "the jobs' Redis evicts any key under memory pressure (maxmemory-policy {policy}): queued jobs may be lost silently; allowed by JOBS_ALLOW_EVICTION");
            return Ok(());
        }
        let refusal = format!(
            "the jobs' Redis has maxmemory-policy {policy}: under memory pressure it would \
             silently evict queued jobs, their records and schedules. Set maxmemory-policy \
             noeviction (or a volatile-* policy) on it, give jobs a Redis of their own with \
             JOBS_REDIS_URL, or accept the risk with JOBS_ALLOW_EVICTION=true"
        );
        tracing::error!(target: "larder::jobs", policy, "{refusal}");
        Err(refusal)
    }

    /// How many partitions the queue has.
    pub(crate) fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// Partition `p`'s key base.
    fn base(&self, p: usize) -> &str {
        &self.partitions[p]
    }

    /// The partition that holds job `id`.
    fn partition_of(&self, id: &str) -> usize {
        partition::of(id, self.partitions.len())
    }

    /// Partition `p`'s key `rest`.
    fn key(&self, p: usize, rest: &str) -> String {
        let base = self.base(p);
        let mut s = String::with_capacity(base.len() + rest.len());
        s.push_str(base);
        s.push_str(rest);
        s
    }

    /// Partition `p`'s sorted set of `queue`'s jobs in `listing`'s state.
    fn queue_key(&self, p: usize, queue: &str, listing: Listing) -> String {
        self.key(p, &format!("q:{queue}:{}", listing.set()))
    }

    /// The key of job `id`'s record.
    pub(crate) fn job_key(&self, id: &str) -> String {
        self.key(self.partition_of(id), &format!("j:{id}"))
    }

    fn done_key(&self, id: &str) -> String {
        self.key(self.partition_of(id), &format!("done:{id}"))
    }

    /// The positions of `items` grouped by the partition `id_of` names for each.
    fn by_partition<T>(&self, items: &[T], id_of: impl Fn(&T) -> &str) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.partitions.len()];
        for (i, item) in items.iter().enumerate() {
            groups[self.partition_of(id_of(item))].push(i);
        }
        groups
    }

    pub(crate) async fn enqueue(
        &self,
        jobs: &[NewJob<'_>],
    ) -> Result<Vec<(String, bool)>, JobError> {
        self.check_eviction_policy().await?;
        let mut out = vec![(String::new(), false); jobs.len()];
        let created = crate::options::ms_since_epoch(std::time::SystemTime::now());
        let groups = self.by_partition(jobs, |job| &job.opts.id);
        for (p, chunk) in groups.iter().enumerate().flat_map(chunks) {
            let mut inv = self.scripts.enqueue.key(self.key(p, "seq"));
            // Which ids to check for an earlier job (the caller's; a fresh UUID
            // cannot be taken).
            let checked: String = chunk
                .iter()
                .map(|&i| if jobs[i].opts.fresh_id { '0' } else { '1' })
                .collect();
            inv.arg(self.base(p)).arg(chunk.len()).arg(checked);
            for &i in chunk {
                let job = &jobs[i];
                let o = &job.opts;
                inv.arg(&o.id)
                    .arg(descriptor(job, created))
                    .arg(&job.args)
                    .arg(&o.queue)
                    .arg(&o.tenant)
                    .arg(o.priority)
                    .arg(o.eta_ms)
                    .arg(o.expires_ms);
            }
            let created: Vec<i64> = self
                .handle
                .script("job_enqueue", &inv)
                .await
                .map_err(JobError::from_core)?;
            for (&i, c) in chunk.iter().zip(created) {
                out[i] = (jobs[i].opts.id.clone(), c == 1);
            }
        }
        self.wait_for_replicas().await?;
        Ok(out)
    }

    /// With [`JobsConfig::wait_for_replicas`](crate::JobsConfig::wait_for_replicas):
    /// `WAIT` on the shared connection, which wrote the jobs, until the replicas
    /// confirm them (on a cluster it goes to every primary; the reply is the
    /// fewest replicas any of them confirmed).
    async fn wait_for_replicas(&self) -> Result<(), JobError> {
        let Some((wanted, timeout)) = self.replicas else {
            return Ok(());
        };
        let mut cmd = r::cmd("WAIT");
        cmd.arg(wanted)
            .arg(larder_core::time::millis(timeout).max(1));
        let acked: i64 = self
            .handle
            .run_with_deadline("job_wait_replicas", timeout * 2, |mut conn| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut conn).await }
            })
            .await
            .map_err(JobError::from_core)?;
        let acked = u32::try_from(acked).unwrap_or(0);
        if acked < wanted {
            return Err(JobError::NotReplicated {
                acked,
                wanted,
                waited: timeout,
            });
        }
        Ok(())
    }

    /// Fetches up to `n` jobs of `queue`, visiting the partitions in turn from where
    /// the last fetch started (the next one), until `n` are fetched. A partition that
    /// cannot be reached (its primary is failing over) does not hold up the others:
    /// its error is returned only when no job was fetched elsewhere.
    pub(crate) async fn fetch(
        &self,
        queue: &str,
        n: usize,
        lease_ms: u64,
        worker: &str,
        started: bool,
    ) -> Result<Vec<Fetched>, JobError> {
        self.check_eviction_policy().await?;
        let count = self.partitions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        let mut failure = None;
        for p in (0..count).map(|i| (start + i) % count) {
            if out.len() >= n {
                break;
            }
            match self
                .fetch_from(p, queue, n - out.len(), lease_ms, worker, started)
                .await
            {
                Ok(jobs) => out.extend(jobs),
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// [`fetch`](Self::fetch) in partition `p`: one script call.
    async fn fetch_from(
        &self,
        p: usize,
        queue: &str,
        n: usize,
        lease_ms: u64,
        worker: &str,
        started: bool,
    ) -> Result<Vec<Fetched>, JobError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut inv = self
            .scripts
            .fetch
            .key(self.key(p, &format!("q:{queue}:ring")));
        inv.key(self.key(p, &format!("q:{queue}:ringset")))
            .key(self.queue_key(p, queue, Listing::Running))
            .arg(self.base(p))
            .arg(queue)
            .arg(n)
            .arg(lease_ms)
            .arg(worker)
            .arg(&token)
            .arg(if started { "STARTED" } else { "RECEIVED" })
            .arg(self.result_ttl_ms);
        let flat: Vec<Value> = self
            .handle
            .script("job_fetch", &inv)
            .await
            .map_err(JobError::from_core)?;
        Ok(flat
            .chunks_exact(5)
            .filter_map(|f| {
                let id = text(&f[0])?;
                let d = text(&f[2]).unwrap_or_default();
                let Some(d) = Descriptor::parse(&d) else {
                    tracing::warn!(target: "larder::jobs", job = %id, "job record is malformed: failing it");
                    return Some(Fetched {
                        id,
                        token: text(&f[1])?,
                        task: String::new(),
                        args: String::new(),
                        tenant: None,
                        attempts: 0,
                        max_retries: 0,
                        timeout_ms: 0,
                        created_ms: 0,
                        problem: Some(MALFORMED_RECORD.to_owned()),
                    });
                };
                Some(Fetched {
                    token: text(&f[1])?,
                    task: d.task.to_owned(),
                    args: text(&f[3]).unwrap_or_default(),
                    tenant: tenant_of(d.tenant),
                    attempts: u32::try_from(number(&f[4])).unwrap_or(u32::MAX),
                    max_retries: d.max_retries,
                    timeout_ms: d.timeout_ms,
                    created_ms: d.created_ms,
                    problem: None,
                    id,
                })
            })
            .collect())
    }

    pub(crate) async fn renew(
        &self,
        lease_ms: u64,
        jobs: &[(String, String)],
    ) -> Result<Renewal, JobError> {
        let mut renewal = Renewal::default();
        for (p, group) in self.by_partition(jobs, |(id, _)| id).iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            // The key routes the call to the partition's node; the script names the
            // in-flight sets itself (by each lease's queue).
            let mut inv = self.scripts.renew.key(self.key(p, "queues"));
            inv.arg(self.base(p)).arg(lease_ms);
            for &i in group {
                let (id, token) = &jobs[i];
                inv.arg(id).arg(token);
            }
            let ids: Vec<String> = self
                .handle
                .script("job_renew", &inv)
                .await
                .map_err(JobError::from_core)?;
            let mut lost = false;
            for id in ids {
                if id == "|" {
                    lost = true;
                } else if lost {
                    renewal.lost.push(id);
                } else {
                    renewal.revoked.push(id);
                }
            }
        }
        Ok(renewal)
    }

    pub(crate) async fn complete(
        &self,
        jobs: &[Completion],
        ttl_ms: u64,
    ) -> Result<Vec<bool>, JobError> {
        let mut out = vec![false; jobs.len()];
        for (p, group) in self.by_partition(jobs, |c| &c.id).iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let mut inv = self.scripts.complete.key(self.key(p, "seq"));
            inv.key(self.minute_key(p, minute_of(now_ms())))
                .arg(self.base(p))
                .arg(ttl_ms)
                .arg(group.len())
                .arg(self.dead_ttl_ms)
                .arg(self.dead_max);
            for &i in group {
                let c = &jobs[i];
                inv.arg(&c.id)
                    .arg(&c.token)
                    .arg(c.outcome.name())
                    .arg(c.outcome.payload())
                    .arg(c.outcome.at_ms());
            }
            let done: Vec<i64> = self
                .handle
                .script("job_complete", &inv)
                .await
                .map_err(JobError::from_core)?;
            for (&i, d) in group.iter().zip(done) {
                out[i] = d == 1;
            }
        }
        Ok(out)
    }

    pub(crate) async fn maintain(&self, batch: usize) -> Result<(usize, usize), JobError> {
        let mut totals = [0usize; 2];
        for p in 0..self.partitions.len() {
            self.maintain_partition(p, batch, &mut totals).await?;
        }
        Ok((totals[0], totals[1]))
    }

    /// [`maintain`](Self::maintain) in partition `p`, adding to `totals`: one
    /// script call for every queue's sets, again while one had a full batch due.
    async fn maintain_partition(
        &self,
        p: usize,
        batch: usize,
        totals: &mut [usize; 2],
    ) -> Result<(), JobError> {
        loop {
            let mut inv = self.scripts.move_.key(self.key(p, "seq"));
            inv.arg(self.base(p))
                .arg(batch)
                .arg(self.result_ttl_ms)
                .arg(self.dead_ttl_ms)
                .arg(self.dead_max);
            let (promoted, reaped, full): (usize, usize, u8) = self
                .handle
                .script("job_maintain", &inv)
                .await
                .map_err(JobError::from_core)?;
            totals[0] += promoted;
            totals[1] += reaped;
            if full == 0 {
                return Ok(());
            }
        }
    }

    pub(crate) async fn revoke(&self, id: &str, ttl_ms: u64) -> Result<String, JobError> {
        let p = self.partition_of(id);
        let mut inv = self.scripts.revoke.key(self.job_key(id));
        inv.key(self.done_key(id))
            .arg(self.base(p))
            .arg(id)
            .arg(ttl_ms);
        self.handle
            .script("job_revoke", &inv)
            .await
            .map_err(JobError::from_core)
    }

    pub(crate) async fn status(&self, id: &str) -> Result<Option<JobStatus>, JobError> {
        let mut cmd = r::cmd("HMGET");
        cmd.arg(self.job_key(id))
            .arg("d")
            .arg("state")
            .arg("attempts")
            .arg("result")
            .arg("error");
        type Row = (
            Option<String>,
            Option<String>,
            Option<u32>,
            Option<String>,
            Option<String>,
        );
        let (d, state, attempts, result, error): Row = self
            .handle
            .query("job_status", &cmd)
            .await
            .map_err(JobError::from_core)?;
        let Some(state) = state.and_then(|s| s.parse::<JobState>().ok()) else {
            return Ok(None);
        };
        // A tombstone (a job revoked before it was enqueued) has no descriptor.
        let d = d.unwrap_or_default();
        let d = Descriptor::parse(&d);
        Ok(Some(JobStatus {
            id: id.to_owned(),
            task: d.as_ref().map(|d| d.task.to_owned()).unwrap_or_default(),
            state,
            tenant: d.and_then(|d| tenant_of(d.tenant)),
            attempts: attempts.unwrap_or(0),
            result: result.and_then(|r| serde_json::from_str(&r).ok()),
            error,
        }))
    }

    pub(crate) async fn wait_done(&self, id: &str, timeout: Duration) -> Result<(), JobError> {
        // Register as a waiter first: completions only signal waited jobs.
        let inv = self.scripts.arm_wait.key(self.job_key(id));
        let state: Option<String> = self
            .handle
            .script("job_wait_arm", &inv)
            .await
            .map_err(JobError::from_core)?;
        let finished = state
            .as_deref()
            .and_then(|s| s.parse::<JobState>().ok())
            .is_none_or(JobState::is_terminal);
        if finished {
            return Ok(());
        }
        let done = self.done_key(id);
        // BLMOVE a list onto itself: wakes on the completion signal without consuming
        // it, so every waiter of the job sees it.
        let mut cmd = r::cmd("BLMOVE");
        cmd.arg(&done).arg(&done).arg("RIGHT").arg("LEFT");
        self.block("job_wait", cmd, timeout).await
    }

    /// Waits until work may be ready in one of `queues` in partition `p`.
    pub(crate) async fn wait_work(
        &self,
        queues: &[String],
        p: usize,
        timeout: Duration,
    ) -> Result<(), JobError> {
        let mut cmd = r::cmd("BLPOP");
        for q in queues {
            cmd.arg(self.key(p, &format!("q:{q}:wake")));
        }
        self.block("job_wait_work", cmd, timeout).await
    }

    /// Runs a blocking command (its timeout argument appended) on a dedicated
    /// connection, bounded by the guard a little beyond `timeout`; a timeout on the
    /// server side (a nil reply) is not an error. An abandoned call (a worker's
    /// shutdown drops it mid-wait) closes its connection rather than leaving it
    /// blocked in the pool (see `Handle::blocking`).
    async fn block(
        &self,
        op: &'static str,
        mut cmd: r::Cmd,
        timeout: Duration,
    ) -> Result<(), JobError> {
        cmd.arg(timeout.as_secs_f64().max(0.01));
        let _: Value = self
            .handle
            .blocking(op, &cmd, timeout + Duration::from_secs(2))
            .await
            .map_err(JobError::from_core)?;
        Ok(())
    }

    /// The oldest `limit` dead letters, across queues and partitions.
    pub(crate) async fn dead(&self, limit: usize) -> Result<Vec<String>, JobError> {
        let names = self.queue_names().await?;
        let mut all: Vec<(String, f64)> = Vec::new();
        for p in 0..self.partitions.len() {
            let mut pipe = r::pipe();
            for name in &names {
                pipe.cmd("ZRANGE")
                    .arg(self.queue_key(p, name, Listing::Dead))
                    .arg(0)
                    .arg(limit.saturating_sub(1))
                    .arg("WITHSCORES");
            }
            let oldest: Vec<Vec<(String, f64)>> = self
                .handle
                .pipeline("job_dead", &pipe)
                .await
                .map_err(JobError::from_core)?;
            all.extend(oldest.into_iter().flatten());
        }
        all.sort_by(|a, b| a.1.total_cmp(&b.1));
        Ok(all.into_iter().take(limit).map(|(id, _)| id).collect())
    }

    /// The name of every queue a job was ever enqueued to, in any partition.
    async fn queue_names(&self) -> Result<std::collections::BTreeSet<String>, JobError> {
        let mut names = std::collections::BTreeSet::new();
        for p in 0..self.partitions.len() {
            let mut cmd = r::cmd("SMEMBERS");
            cmd.arg(self.key(p, "queues"));
            let queues: Vec<String> = self
                .handle
                .query("job_queues", &cmd)
                .await
                .map_err(JobError::from_core)?;
            names.extend(queues);
        }
        Ok(names)
    }

    pub(crate) async fn redrive(&self, id: &str) -> Result<bool, JobError> {
        let p = self.partition_of(id);
        let mut inv = self.scripts.redrive.key(self.job_key(id));
        inv.key(self.key(p, "seq"))
            .key(self.done_key(id))
            .arg(self.base(p))
            .arg(id);
        let n: i64 = self
            .handle
            .script("job_redrive", &inv)
            .await
            .map_err(JobError::from_core)?;
        Ok(n == 1)
    }

    pub(crate) async fn delete(&self, id: &str) -> Result<Deleted, JobError> {
        let p = self.partition_of(id);
        let mut inv = self.scripts.delete.key(self.job_key(id));
        inv.key(self.done_key(id)).arg(self.base(p)).arg(id);
        let outcome: String = self
            .handle
            .script("job_delete", &inv)
            .await
            .map_err(JobError::from_core)?;
        Ok(match outcome.as_str() {
            "DELETED" => Deleted::Deleted,
            "RUNNING" => Deleted::Running,
            _ => Deleted::Missing,
        })
    }

    /// Removes `queue`'s ready jobs, [`PURGE_BATCH`] per call, partition by partition.
    pub(crate) async fn purge(&self, queue: &str) -> Result<u64, JobError> {
        let mut total = 0;
        for p in 0..self.partitions.len() {
            loop {
                let mut inv = self
                    .scripts
                    .purge
                    .key(self.key(p, &format!("q:{queue}:ringset")));
                inv.arg(self.base(p)).arg(queue).arg(PURGE_BATCH);
                let removed: u64 = self
                    .handle
                    .script("job_purge", &inv)
                    .await
                    .map_err(JobError::from_core)?;
                total += removed;
                if removed < PURGE_BATCH {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Ready jobs of `queue`, all tenants, across partitions.
    pub(crate) async fn queued(&self, queue: &str) -> Result<usize, JobError> {
        let mut total = 0;
        for p in 0..self.partitions.len() {
            let mut cmd = r::cmd("SMEMBERS");
            cmd.arg(self.key(p, &format!("q:{queue}:ringset")));
            let tenants: Vec<String> = self
                .handle
                .query("job_queued", &cmd)
                .await
                .map_err(JobError::from_core)?;
            if tenants.is_empty() {
                continue;
            }
            let mut pipe = r::pipe();
            for t in &tenants {
                pipe.cmd("ZCARD")
                    .arg(self.key(p, &format!("q:{queue}:t:{t}")));
            }
            let counts: Vec<usize> = self
                .handle
                .pipeline("job_queued", &pipe)
                .await
                .map_err(JobError::from_core)?;
            total += counts.into_iter().sum::<usize>();
        }
        Ok(total)
    }

    /// Counts by queue and state: set sizes per queue and partition, and the ready
    /// jobs of each queue (see [`queued`](Self::queued)).
    pub(crate) async fn counts(&self) -> Result<JobCounts, JobError> {
        let names: Vec<String> = self.queue_names().await?.into_iter().collect();
        let mut counts = JobCounts::default();
        for name in &names {
            let queued = self.queued(name).await? as u64;
            counts.queues.insert(
                name.clone(),
                QueueCounts {
                    queued,
                    ..QueueCounts::default()
                },
            );
        }
        if names.is_empty() {
            return Ok(counts);
        }
        for p in 0..self.partitions.len() {
            let mut pipe = r::pipe();
            for name in &names {
                for listing in Listing::ALL {
                    pipe.cmd("ZCARD").arg(self.queue_key(p, name, listing));
                }
            }
            let sizes: Vec<u64> = self
                .handle
                .pipeline("job_counts", &pipe)
                .await
                .map_err(JobError::from_core)?;
            for (name, sizes) in names.iter().zip(sizes.chunks(Listing::ALL.len())) {
                if let Some(c) = counts.queues.get_mut(name) {
                    for (listing, n) in Listing::ALL.into_iter().zip(sizes) {
                        *c.of_mut(listing) += n;
                    }
                }
            }
        }
        Ok(counts)
    }

    /// Ranks `offset..offset + limit` of `queue`'s listing in every partition, merged.
    pub(crate) async fn list(
        &self,
        queue: &str,
        listing: Listing,
        offset: u64,
        limit: u64,
    ) -> Result<ListPage, JobError> {
        let end = offset + limit.max(1);
        let mut parts = Vec::with_capacity(self.partitions.len());
        let mut totals = Vec::with_capacity(self.partitions.len());
        for p in 0..self.partitions.len() {
            let key = self.queue_key(p, queue, listing);
            let mut pipe = r::pipe();
            pipe.cmd("ZCARD")
                .arg(&key)
                .cmd("ZRANGE")
                .arg(&key)
                .arg(offset)
                .arg(end - 1)
                .arg("WITHSCORES");
            let (total, page): (u64, Vec<(String, f64)>) = self
                .handle
                .pipeline("job_list", &pipe)
                .await
                .map_err(JobError::from_core)?;
            totals.push(total);
            parts.push(
                page.into_iter()
                    .map(|(id, at)| Listed {
                        id,
                        at_ms: at.max(0.0) as u64,
                    })
                    .collect(),
            );
        }
        Ok(inspect::merge(parts, &totals, end))
    }

    /// `n` jobs of `queue`'s `listing` in partition `at.partition` from rank `at.rank` on,
    /// with the task and tenant of their descriptors: one range, then one pipeline
    /// of `HGET`s (a partition's keys share a slot).
    pub(crate) async fn search_chunk(
        &self,
        queue: &str,
        listing: Listing,
        at: SearchCursor,
        n: u64,
    ) -> Result<Vec<FoundJob>, JobError> {
        let mut range = r::cmd("ZRANGE");
        range
            .arg(self.queue_key(at.partition, queue, listing))
            .arg(at.rank)
            .arg(at.rank + n.max(1) - 1)
            .arg("WITHSCORES");
        let listed: Vec<(String, f64)> = self
            .handle
            .query("job_search", &range)
            .await
            .map_err(JobError::from_core)?;
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = r::pipe();
        for (id, _) in &listed {
            pipe.cmd("HGET").arg(self.job_key(id)).arg("d");
        }
        let descriptors: Vec<Option<String>> = self
            .handle
            .pipeline("job_search", &pipe)
            .await
            .map_err(JobError::from_core)?;
        Ok(listed
            .into_iter()
            .zip(descriptors)
            .map(|((id, at), d)| {
                let d = d.as_deref().and_then(Descriptor::parse);
                FoundJob {
                    id,
                    at_ms: at.max(0.0) as u64,
                    task: d.as_ref().map(|d| d.task.to_owned()).unwrap_or_default(),
                    tenant: d.and_then(|d| tenant_of(d.tenant)),
                }
            })
            .collect())
    }

    /// Job `id`'s whole record, or `None` when there is none (never enqueued, or
    /// its result's time ran out).
    pub(crate) async fn detail(&self, id: &str) -> Result<Option<JobDetail>, JobError> {
        let mut cmd = r::cmd("HGETALL");
        cmd.arg(self.job_key(id));
        let fields: std::collections::HashMap<String, Vec<u8>> = self
            .handle
            .query("job_detail", &cmd)
            .await
            .map_err(JobError::from_core)?;
        let get = |name: &str| {
            fields
                .get(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let time = |name: &str| {
            get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&t| t > 0)
        };
        let Some(state) = get("state").and_then(|s| s.parse::<JobState>().ok()) else {
            return Ok(None);
        };
        let d = get("d").unwrap_or_default();
        let d = Descriptor::parse(&d);
        let worker = get("run").and_then(|run| run.split('\t').nth(1).map(str::to_owned));
        Ok(Some(JobDetail {
            status: JobStatus {
                id: id.to_owned(),
                task: d.as_ref().map(|d| d.task.to_owned()).unwrap_or_default(),
                state,
                tenant: d.as_ref().and_then(|d| tenant_of(d.tenant)),
                attempts: get("attempts").and_then(|a| a.parse().ok()).unwrap_or(0),
                result: get("result").and_then(|r| serde_json::from_str(&r).ok()),
                error: get("error"),
            },
            queue: d.as_ref().map(|d| d.queue.to_owned()).unwrap_or_default(),
            args: get("a").filter(|a| !a.is_empty()),
            priority: d.as_ref().map_or(0, |d| d.priority),
            max_retries: d.as_ref().map_or(0, |d| d.max_retries),
            timeout_ms: d.as_ref().map_or(0, |d| d.timeout_ms),
            created_ms: d.as_ref().map_or(0, |d| d.created_ms),
            eta_ms: time("eta"),
            expires_ms: time("expires"),
            finished_ms: time("finished"),
            worker: worker.filter(|w| !w.is_empty()),
            lost_leases: get("expired").and_then(|e| e.parse().ok()).unwrap_or(0),
            // `[[attempt, at ms, error], ...]`, written by `log_error` in lib.lua.
            errors: get("errors")
                .and_then(|e| serde_json::from_str::<Vec<(u32, u64, String)>>(&e).ok())
                .unwrap_or_default()
                .into_iter()
                .map(|(attempt, at_ms, error)| AttemptError {
                    attempt,
                    at_ms,
                    error,
                })
                .collect(),
        }))
    }

    /// The hash of minute `minute`'s outcome counts in partition `p`.
    fn minute_key(&self, p: usize, minute: u64) -> String {
        self.key(p, &format!("minute:{minute}"))
    }

    pub(crate) async fn register(
        &self,
        registry: Registry,
        id: &str,
        value: &str,
    ) -> Result<(), JobError> {
        let mut cmd = r::cmd("HSET");
        cmd.arg(self.key(0, registry.key())).arg(id).arg(value);
        self.handle
            .query::<()>("job_register", &cmd)
            .await
            .map_err(JobError::from_core)
    }

    pub(crate) async fn unregister(
        &self,
        registry: Registry,
        ids: &[String],
    ) -> Result<(), JobError> {
        let mut cmd = r::cmd("HDEL");
        cmd.arg(self.key(0, registry.key())).arg(ids);
        self.handle
            .query::<()>("job_unregister", &cmd)
            .await
            .map_err(JobError::from_core)
    }

    pub(crate) async fn registered(&self, registry: Registry) -> Result<Vec<String>, JobError> {
        let mut cmd = r::cmd("HVALS");
        cmd.arg(self.key(0, registry.key()));
        self.handle
            .query("job_registered", &cmd)
            .await
            .map_err(JobError::from_core)
    }

    /// One pipeline per partition: an `HGETALL` of each minute's outcome counts
    /// (fields `OUTCOME` for all queues, `queue<TAB>OUTCOME` for one).
    pub(crate) async fn minutes(&self, first: u64, last: u64) -> Result<Throughput, JobError> {
        let mut counts = MinuteTally::new(first, last);
        for p in 0..self.partitions.len() {
            let mut pipe = r::pipe();
            for minute in first..=last {
                pipe.cmd("HGETALL").arg(self.minute_key(p, minute));
            }
            let rows: Vec<BTreeMap<String, u64>> = self
                .handle
                .pipeline("job_minutes", &pipe)
                .await
                .map_err(JobError::from_core)?;
            for (minute, row) in (first..=last).zip(rows) {
                for (field, n) in row {
                    counts.add(minute, &field, n);
                }
            }
        }
        Ok(counts.into_throughput())
    }
}
