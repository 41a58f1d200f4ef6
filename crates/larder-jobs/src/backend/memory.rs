//! The in-process backend: the same semantics as the Redis scripts, in memory.
//! Development only: jobs live and die with the process.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Deleted, Fetched, NewJob, Outcome, Registry, Renewal};
use crate::inspect::{
    self, minute_fields, minute_of, AttemptError, FoundJob, JobCounts, JobDetail, ListPage, Listed,
    Listing, MinuteTally, QueueCounts, Throughput, COUNTED, ERRORS_KEPT, MINUTES_KEPT,
};
use crate::options::{now_ms, NO_TENANT};
use crate::state::{JobState, JobStatus};

#[derive(Debug, Clone)]
struct Job {
    task: String,
    args: String,
    queue: String,
    tenant: String,
    priority: u8,
    state: JobState,
    attempts: u32,
    max_retries: u32,
    expires_ms: u64,
    timeout_ms: u64,
    result: Option<String>,
    error: Option<String>,
    token: Option<String>,
    /// Revoked while it ran: it never runs again (see `lua/lib.lua`).
    revoked: bool,
    /// Leases that ran out without an outcome.
    expired: u32,
    /// When a finished job's record is dropped (result TTL).
    gone_at: Option<u64>,
    /// When it was enqueued, ms.
    created_ms: u64,
    /// Each failed attempt's error, the last `ERRORS_KEPT`.
    errors: Vec<AttemptError>,
}

impl Job {
    /// Counts a failed attempt and keeps its error.
    fn fail_attempt(&mut self, error: &str, at_ms: u64) {
        self.attempts += 1;
        self.error = Some(error.to_owned());
        self.errors.push(AttemptError {
            attempt: self.attempts,
            at_ms,
            error: error.to_owned(),
        });
        let over = self.errors.len().saturating_sub(ERRORS_KEPT);
        self.errors.drain(..over);
    }
}

impl Job {
    /// Ends the job as REVOKED (kept, like a failed job, for the process's life).
    fn revoke_now(&mut self, why: &str) {
        self.state = JobState::Revoked;
        self.error = Some(why.to_owned());
        self.token = None;
    }
}

#[derive(Debug, Default)]
struct Queue {
    ring: VecDeque<String>,
    ready: HashMap<String, BTreeSet<(i64, String)>>,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<String, Job>,
    /// Every queue a job was ever enqueued to (the Redis backend's `queues` set).
    queues: HashMap<String, Queue>,
    /// Delayed and retrying jobs alike (a retrying job's state is RETRY).
    delayed: BTreeSet<(u64, String)>,
    inflight: HashMap<String, u64>,
    dead: BTreeSet<(u64, String)>,
    /// How long a dead letter is kept, and how many at most (see `lua/lib.lua`).
    dead_ttl_ms: u64,
    dead_max: usize,
    seq: i64,
    /// What processes publish for inspection (see `Registry`), by registry and id.
    registries: BTreeMap<(Registry, String), String>,
    /// Outcome counts per minute number, by field as the Redis backend's hashes
    /// (`inspect::minute_fields`); the last `MINUTES_KEPT` and a few more.
    minutes: BTreeMap<u64, HashMap<String, u64>>,
}

impl State {
    /// `queue`'s jobs in a listing, in order, as time and id (the Redis backend's
    /// sorted sets per queue).
    fn listing(&self, queue: &str, listing: Listing) -> Vec<(u64, &String)> {
        let job = |id: &String| self.jobs.get(id).filter(|j| j.queue == queue);
        let retrying = |id: &String| job(id).is_some_and(|j| j.state == JobState::Retry);
        let mut v: Vec<(u64, &String)> = match listing {
            Listing::Delayed | Listing::Retrying => self
                .delayed
                .iter()
                .filter(|(_, id)| retrying(id) == (listing == Listing::Retrying))
                .map(|(at, id)| (*at, id))
                .collect(),
            Listing::Running => self.inflight.iter().map(|(id, at)| (*at, id)).collect(),
            Listing::Dead => self.dead.iter().map(|(at, id)| (*at, id)).collect(),
        };
        v.retain(|(_, id)| job(id).is_some());
        v.sort();
        v
    }

    fn push_ready(&mut self, id: &str) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        job.state = JobState::Pending;
        self.seq += 1;
        let score = -i64::from(job.priority) * (1 << 40) + self.seq;
        let q = self.queues.entry(job.queue.clone()).or_default();
        let set = q.ready.entry(job.tenant.clone()).or_default();
        if set.is_empty() && !q.ring.contains(&job.tenant) {
            q.ring.push_back(job.tenant.clone());
        }
        set.insert((score, id.to_owned()));
    }

    fn remove_ready(&mut self, id: &str) {
        let Some(job) = self.jobs.get(id) else { return };
        if let Some(q) = self.queues.get_mut(&job.queue) {
            if let Some(set) = q.ready.get_mut(&job.tenant) {
                set.retain(|(_, i)| i != id);
            }
        }
    }

    fn expire(&mut self, now: u64) {
        self.jobs.retain(|_, j| j.gone_at.is_none_or(|t| t > now));
    }

    /// Adds `id` to the dead letters; drops those past their time and, over the
    /// cap of its queue, the queue's oldest, with their records (as `to_dead` in
    /// `lua/lib.lua`).
    fn bury_dead(&mut self, id: &str, now: u64) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        job.gone_at = Some(now + self.dead_ttl_ms);
        let queue = job.queue.clone();
        self.dead.insert((now, id.to_owned()));
        let oldest_kept = now.saturating_sub(self.dead_ttl_ms);
        while let Some((at, old)) = self.dead.first().cloned() {
            if at > oldest_kept {
                break;
            }
            self.dead.pop_first();
            self.jobs.remove(&old);
        }
        let of_queue: Vec<(u64, String)> = self
            .dead
            .iter()
            .filter(|(_, i)| self.jobs.get(i).is_some_and(|j| j.queue == queue))
            .cloned()
            .collect();
        for old in of_queue
            .iter()
            .take(of_queue.len().saturating_sub(self.dead_max))
        {
            self.dead.remove(old);
            self.jobs.remove(&old.1);
        }
    }
}

#[derive(Debug)]
pub(crate) struct MemoryBackend {
    state: Mutex<State>,
    work: Notify,
    done: Notify,
}

impl MemoryBackend {
    pub(crate) fn new(keeping: super::Keeping) -> Self {
        Self {
            state: Mutex::new(State {
                dead_ttl_ms: keeping.dead_ttl_ms,
                dead_max: usize::try_from(keeping.dead_max).unwrap_or(usize::MAX),
                ..State::default()
            }),
            work: Notify::new(),
            done: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn enqueue(&self, jobs: &[NewJob<'_>], ttl_ms: u64) -> Vec<(String, bool)> {
        let now = now_ms();
        let mut s = self.lock();
        s.expire(now);
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let o = &job.opts;
            if s.jobs.contains_key(&o.id) {
                out.push((o.id.clone(), false));
                continue;
            }
            let _ = ttl_ms;
            s.jobs.insert(
                o.id.clone(),
                Job {
                    task: job.task.to_owned(),
                    args: job.args.clone(),
                    queue: o.queue.clone(),
                    tenant: o.tenant.clone(),
                    priority: o.priority,
                    state: JobState::Pending,
                    attempts: 0,
                    max_retries: o.max_retries,
                    expires_ms: o.expires_ms,
                    timeout_ms: o.timeout_ms,
                    result: None,
                    error: None,
                    token: None,
                    revoked: false,
                    expired: 0,
                    gone_at: None,
                    created_ms: now,
                    errors: Vec::new(),
                },
            );
            s.queues.entry(o.queue.clone()).or_default();
            if o.eta_ms > now {
                s.delayed.insert((o.eta_ms, o.id.clone()));
            } else {
                s.push_ready(&o.id);
            }
            out.push((o.id.clone(), true));
        }
        drop(s);
        self.work.notify_waiters();
        out
    }

    pub(crate) fn fetch(
        &self,
        queue: &str,
        n: usize,
        lease_ms: u64,
        worker: &str,
        started: bool,
    ) -> Vec<Fetched> {
        let now = now_ms();
        let mut s = self.lock();
        let mut out = Vec::new();
        let mut budget = s.queues.get(queue).map_or(0, |q| q.ring.len()) + n * 2;
        while out.len() < n && budget > 0 {
            budget -= 1;
            let Some(q) = s.queues.get_mut(queue) else {
                break;
            };
            let Some(tenant) = q.ring.pop_front() else {
                break;
            };
            let popped = q.ready.get_mut(&tenant).and_then(BTreeSet::pop_first);
            if q.ready.get(&tenant).is_some_and(|set| !set.is_empty()) {
                q.ring.push_back(tenant.clone());
            } else {
                q.ready.remove(&tenant);
            }
            let Some((_, id)) = popped else { continue };
            let Some(job) = s.jobs.get_mut(&id) else {
                continue;
            };
            if job.state == JobState::Revoked {
                continue;
            }
            if job.revoked {
                job.revoke_now("revoked while running");
                self.done.notify_waiters();
                continue;
            }
            if job.expires_ms > 0 && job.expires_ms <= now {
                job.state = JobState::Revoked;
                job.error = Some("expired before it started".into());
                self.done.notify_waiters();
                continue;
            }
            let token = format!("{worker}:{}:{id}", uuid::Uuid::new_v4().simple());
            job.state = if started {
                JobState::Started
            } else {
                JobState::Received
            };
            job.token = Some(token.clone());
            out.push(Fetched {
                id: id.clone(),
                token,
                task: job.task.clone(),
                args: job.args.clone(),
                tenant: (tenant != NO_TENANT).then_some(tenant),
                attempts: job.attempts,
                max_retries: job.max_retries,
                timeout_ms: job.timeout_ms,
                created_ms: job.created_ms,
                problem: None,
            });
            s.inflight.insert(id, now + lease_ms);
        }
        out
    }

    pub(crate) fn renew(&self, lease_ms: u64, jobs: &[(String, String)]) -> Renewal {
        let now = now_ms();
        let mut s = self.lock();
        let mut renewal = Renewal::default();
        for (id, token) in jobs {
            let ok = s
                .jobs
                .get(id)
                .is_some_and(|j| j.token.as_deref() == Some(token));
            if !ok {
                renewal.lost.push(id.clone());
                continue;
            }
            s.inflight.insert(id.clone(), now + lease_ms);
            if let Some(job) = s.jobs.get_mut(id) {
                if job.revoked {
                    renewal.revoked.push(id.clone());
                }
            }
        }
        renewal
    }

    pub(crate) fn complete(&self, id: &str, token: &str, outcome: &Outcome, ttl_ms: u64) -> bool {
        let now = now_ms();
        let mut s = self.lock();
        match s.jobs.get(id) {
            Some(j) if j.token.as_deref() == Some(token) => {}
            _ => return false,
        }
        s.inflight.remove(id);
        let mut signal = false;
        let mut ready = false;
        let revoked_instead;
        let outcome = match (s.jobs.get(id).is_some_and(|j| j.revoked), outcome) {
            // Revoked while it ran: it does not go round again.
            (true, Outcome::Retry { .. } | Outcome::Defer { .. } | Outcome::Requeue) => {
                revoked_instead = Outcome::Revoked("revoked while running".into());
                &revoked_instead
            }
            _ => outcome,
        };
        if COUNTED.contains(&outcome.name()) {
            let minute = minute_of(now);
            let queue = s.jobs.get(id).map(|j| j.queue.clone()).unwrap_or_default();
            let counts = s.minutes.entry(minute).or_default();
            for field in minute_fields(&queue, outcome.name()) {
                *counts.entry(field).or_default() += 1;
            }
            // Like the Redis keys' expiry: a few minutes past what is shown.
            s.minutes = s
                .minutes
                .split_off(&minute.saturating_sub(MINUTES_KEPT + 5));
        }
        if let Some(job) = s.jobs.get_mut(id) {
            job.token = None;
            match outcome {
                Outcome::Success(result) => {
                    job.state = JobState::Success;
                    job.result = Some(result.clone());
                    job.gone_at = Some(now + ttl_ms);
                    signal = true;
                }
                Outcome::Retry { error, .. } => {
                    job.fail_attempt(error, now);
                    job.state = JobState::Retry;
                }
                Outcome::Defer { .. } => job.state = JobState::Pending,
                Outcome::Failure(error) => {
                    job.fail_attempt(error, now);
                    job.state = JobState::Failure;
                    signal = true;
                }
                Outcome::Revoked(error) => {
                    job.state = JobState::Revoked;
                    job.error = Some(error.clone());
                    job.gone_at = Some(now + ttl_ms);
                    signal = true;
                }
                Outcome::Requeue => ready = true,
            }
        }
        match outcome {
            Outcome::Retry { at_ms, .. } | Outcome::Defer { at_ms } => {
                s.delayed.insert((*at_ms, id.to_owned()));
            }
            Outcome::Failure(_) => s.bury_dead(id, now),
            _ => {}
        }
        if ready {
            s.push_ready(id);
            self.work.notify_waiters();
        }
        drop(s);
        if signal {
            self.done.notify_waiters();
        }
        true
    }

    pub(crate) fn maintain(&self) -> (usize, usize) {
        let now = now_ms();
        let mut s = self.lock();
        s.expire(now);
        let due: Vec<String> = s
            .delayed
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect();
        s.delayed.retain(|(at, _)| *at > now);
        let mut promoted = 0;
        for id in &due {
            if s.jobs.get(id).is_some_and(|j| !j.state.is_terminal()) {
                s.push_ready(id);
                promoted += 1;
            }
        }
        let expired: Vec<String> = s
            .inflight
            .iter()
            .filter(|(_, &deadline)| deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            s.inflight.remove(id);
            let Some(j) = s.jobs.get_mut(id).filter(|j| !j.state.is_terminal()) else {
                continue;
            };
            j.token = None;
            j.expired += 1;
            if j.revoked {
                j.revoke_now("revoked while running");
            } else if j.attempts + j.expired > j.max_retries {
                j.state = JobState::Failure;
                j.error = Some(format!(
                    "its lease ran out {} times without an outcome (the task may be crashing its worker): past its retry budget of {}",
                    j.expired, j.max_retries
                ));
                s.bury_dead(id, now);
            } else {
                s.push_ready(id);
            }
        }
        if !expired.is_empty() {
            self.done.notify_waiters();
        }
        drop(s);
        if promoted + expired.len() > 0 {
            self.work.notify_waiters();
        }
        (promoted, expired.len())
    }

    pub(crate) fn revoke(&self, id: &str, ttl_ms: u64) -> String {
        let now = now_ms();
        let mut s = self.lock();
        let Some(state) = s.jobs.get(id).map(|j| j.state) else {
            s.jobs.insert(
                id.to_owned(),
                Job {
                    task: String::new(),
                    args: String::new(),
                    queue: "default".into(),
                    tenant: NO_TENANT.into(),
                    priority: 0,
                    state: JobState::Revoked,
                    attempts: 0,
                    max_retries: 0,
                    expires_ms: 0,
                    timeout_ms: 0,
                    result: None,
                    error: Some("revoked".into()),
                    token: None,
                    revoked: false,
                    expired: 0,
                    gone_at: Some(now + ttl_ms),
                    created_ms: 0,
                    errors: Vec::new(),
                },
            );
            return "REVOKED".into();
        };
        match state {
            JobState::Success | JobState::Failure | JobState::Revoked => state.as_str().into(),
            JobState::Received | JobState::Started => {
                if let Some(j) = s.jobs.get_mut(id) {
                    j.revoked = true;
                }
                "REVOKING".into()
            }
            JobState::Pending | JobState::Retry => {
                s.remove_ready(id);
                s.delayed.retain(|(_, i)| i != id);
                if let Some(j) = s.jobs.get_mut(id) {
                    j.state = JobState::Revoked;
                    j.error = Some("revoked".into());
                    j.gone_at = Some(now + ttl_ms);
                }
                drop(s);
                self.done.notify_waiters();
                "REVOKED".into()
            }
        }
    }

    pub(crate) fn status(&self, id: &str) -> Option<JobStatus> {
        let mut s = self.lock();
        s.expire(now_ms());
        let j = s.jobs.get(id)?;
        Some(JobStatus {
            id: id.to_owned(),
            task: j.task.clone(),
            state: j.state,
            tenant: (j.tenant != NO_TENANT).then(|| j.tenant.clone()),
            attempts: j.attempts,
            result: j
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok()),
            error: j.error.clone(),
        })
    }

    pub(crate) async fn wait_done(&self, id: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.status(id).is_none_or(|st| st.state.is_terminal()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    pub(crate) async fn wait_work(&self, timeout: Duration) {
        // A notification may fall between a fetch and this wait: never sleep long.
        let _ = tokio::time::timeout(
            timeout.min(Duration::from_millis(100)),
            self.work.notified(),
        )
        .await;
    }

    pub(crate) fn dead(&self, limit: usize) -> Vec<String> {
        self.lock()
            .dead
            .iter()
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect()
    }

    pub(crate) fn redrive(&self, id: &str) -> bool {
        let mut s = self.lock();
        let before = s.dead.len();
        s.dead.retain(|(_, i)| i != id);
        if s.dead.len() == before {
            return false;
        }
        if let Some(j) = s.jobs.get_mut(id) {
            j.attempts = 0;
            j.expired = 0;
            j.gone_at = None;
        }
        s.push_ready(id);
        drop(s);
        self.work.notify_waiters();
        true
    }

    pub(crate) fn queued(&self, queue: &str) -> usize {
        self.lock()
            .queues
            .get(queue)
            .map_or(0, |q| q.ready.values().map(BTreeSet::len).sum())
    }

    pub(crate) fn counts(&self) -> JobCounts {
        let mut s = self.lock();
        s.expire(now_ms());
        let queues = s
            .queues
            .iter()
            .map(|(name, q)| {
                let mut counts = QueueCounts {
                    queued: q.ready.values().map(|r| r.len() as u64).sum(),
                    ..QueueCounts::default()
                };
                for listing in Listing::ALL {
                    *counts.of_mut(listing) = s.listing(name, listing).len() as u64;
                }
                (name.clone(), counts)
            })
            .collect();
        JobCounts { queues }
    }

    pub(crate) fn list(&self, queue: &str, listing: Listing, offset: u64, limit: u64) -> ListPage {
        let s = self.lock();
        let all = s.listing(queue, listing);
        let end = offset + limit.max(1);
        let total = all.len() as u64;
        let page = all
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(end - offset).unwrap_or(usize::MAX))
            .map(|(at_ms, id)| Listed {
                id: id.clone(),
                at_ms,
            })
            .collect();
        inspect::merge(vec![page], &[total], end)
    }

    /// `n` jobs of `queue`'s `listing` from rank `rank` on, with their task and
    /// tenant.
    pub(crate) fn search_chunk(
        &self,
        queue: &str,
        listing: Listing,
        rank: u64,
        n: u64,
    ) -> Vec<FoundJob> {
        let s = self.lock();
        s.listing(queue, listing)
            .into_iter()
            .skip(usize::try_from(rank).unwrap_or(usize::MAX))
            .take(usize::try_from(n).unwrap_or(usize::MAX))
            .map(|(at_ms, id)| {
                let job = s.jobs.get(id);
                FoundJob {
                    id: id.clone(),
                    at_ms,
                    task: job.map(|j| j.task.clone()).unwrap_or_default(),
                    tenant: job.map(|j| j.tenant.clone()).filter(|t| t != NO_TENANT),
                }
            })
            .collect()
    }

    pub(crate) fn delete(&self, id: &str) -> Deleted {
        let mut s = self.lock();
        match s.jobs.get(id) {
            None => return Deleted::Missing,
            Some(j) if j.token.is_some() => return Deleted::Running,
            Some(_) => {}
        }
        s.remove_ready(id);
        s.delayed.retain(|(_, i)| i != id);
        s.dead.retain(|(_, i)| i != id);
        s.jobs.remove(id);
        Deleted::Deleted
    }

    pub(crate) fn purge(&self, queue: &str) -> u64 {
        let mut s = self.lock();
        let Some(q) = s.queues.get_mut(queue) else {
            return 0;
        };
        let ids: Vec<String> = q
            .ready
            .drain()
            .flat_map(|(_, set)| set.into_iter().map(|(_, id)| id))
            .collect();
        q.ring.clear();
        for id in &ids {
            s.jobs.remove(id);
        }
        ids.len() as u64
    }

    pub(crate) fn register(&self, registry: Registry, id: &str, value: &str) {
        self.lock()
            .registries
            .insert((registry, id.to_owned()), value.to_owned());
    }

    pub(crate) fn unregister(&self, registry: Registry, ids: &[String]) {
        let mut s = self.lock();
        for id in ids {
            s.registries.remove(&(registry, id.clone()));
        }
    }

    pub(crate) fn registered(&self, registry: Registry) -> Vec<String> {
        self.lock()
            .registries
            .iter()
            .filter(|((r, _), _)| *r == registry)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub(crate) fn minutes(&self, first: u64, last: u64) -> Throughput {
        let mut tally = MinuteTally::new(first, last);
        for (&minute, counts) in self.lock().minutes.range(first..=last) {
            for (field, &n) in counts {
                tally.add(minute, field, n);
            }
        }
        tally.into_throughput()
    }

    pub(crate) fn detail(&self, id: &str) -> Option<JobDetail> {
        let status = self.status(id)?;
        let s = self.lock();
        let j = s.jobs.get(id)?;
        let find = |set: &std::collections::BTreeSet<(u64, String)>| {
            set.iter().find(|(_, i)| i == id).map(|(at, _)| *at)
        };
        Some(JobDetail {
            status,
            queue: j.queue.clone(),
            args: (!j.args.is_empty()).then(|| j.args.clone()),
            priority: j.priority,
            max_retries: j.max_retries,
            timeout_ms: j.timeout_ms,
            created_ms: j.created_ms,
            eta_ms: find(&s.delayed),
            expires_ms: (j.expires_ms > 0).then_some(j.expires_ms),
            finished_ms: find(&s.dead),
            // A token is `worker:nonce:id` (see `fetch`); the worker's name may hold
            // colons, the nonce and the id come last.
            worker: j.token.as_deref().and_then(|t| {
                let rest = t.strip_suffix(id)?.strip_suffix(':')?;
                rest.rsplit_once(':').map(|(worker, _)| worker.to_owned())
            }),
            lost_leases: j.expired,
            errors: j.errors.clone(),
        })
    }
}
