//! What a dashboard or an operator reads about a queue without touching its work:
//! counts by queue and state, paged lists of a queue's delayed, retrying, running
//! and dead jobs, searches of those lists by task and tenant, one job's whole
//! record, the live workers, and the outcomes of the last hour per minute.
//!
//! Every read is bounded: counts come from the sizes of the sets the queue keeps
//! anyway (one sorted set per queue and state: `ZCARD`), lists are ranges of those
//! sorted sets (`ZRANGE` by rank, `O(log n + page)`), and nothing scans the
//! keyspace. With 1,000,000 jobs a count is a handful of commands per queue and
//! partition and a page is one range per partition. A search reads the list in
//! order and each job's descriptor, at most [`SEARCH_BUDGET`] jobs per call, and
//! says where the next call goes on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::jobs::ms;
use crate::state::{JobState, JobStatus};

/// A state whose jobs sit in one sorted set per queue and partition, and so can be
/// counted by the set's size and listed page by page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Listing {
    /// Waiting for their due time: a countdown, an ETA, or a task's deferral;
    /// ordered by due time.
    Delayed,
    /// Waiting out a retry's back-off after a failed attempt; ordered by due time.
    Retrying,
    /// Held by a worker; ordered by the end of the worker's lease.
    Running,
    /// Failed for good (the dead letters); oldest first.
    Dead,
}

impl Listing {
    /// Every listing, in the order a dashboard shows them.
    pub const ALL: [Listing; 4] = [
        Listing::Delayed,
        Listing::Retrying,
        Listing::Running,
        Listing::Dead,
    ];

    /// The listing's name (`"delayed"`, `"retrying"`, `"running"`, `"dead"`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delayed => "delayed",
            Self::Retrying => "retrying",
            Self::Running => "running",
            Self::Dead => "dead",
        }
    }

    /// The listing named `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// The name of the sorted set that holds this listing's ids, per queue (the
    /// key `q:{queue}:{set}` of a partition; see `lua/lib.lua`).
    pub(crate) fn set(self) -> &'static str {
        match self {
            Self::Delayed => "delayed",
            Self::Retrying => "retrying",
            Self::Running => "inflight",
            Self::Dead => "dead",
        }
    }
}

/// How many jobs of one queue are in each state now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// Ready to run, all tenants.
    pub queued: u64,
    /// Waiting for a countdown, an ETA or a deferral.
    pub delayed: u64,
    /// Waiting out a retry's back-off.
    pub retrying: u64,
    /// Held by a worker.
    pub running: u64,
    /// Dead letters.
    pub dead: u64,
}

impl QueueCounts {
    /// The count of a listing.
    #[must_use]
    pub fn of(&self, listing: Listing) -> u64 {
        match listing {
            Listing::Delayed => self.delayed,
            Listing::Retrying => self.retrying,
            Listing::Running => self.running,
            Listing::Dead => self.dead,
        }
    }

    /// The count of a listing, to set (one place for the listing-to-field rule,
    /// besides [`of`](Self::of)).
    pub(crate) fn of_mut(&mut self, listing: Listing) -> &mut u64 {
        match listing {
            Listing::Delayed => &mut self.delayed,
            Listing::Retrying => &mut self.retrying,
            Listing::Running => &mut self.running,
            Listing::Dead => &mut self.dead,
        }
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &QueueCounts) {
        self.queued += other.queued;
        self.delayed += other.delayed;
        self.retrying += other.retrying;
        self.running += other.running;
        self.dead += other.dead;
    }
}

/// How many jobs are in each state now, per queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    /// Each queue a job was ever enqueued to, by name, with its counts.
    pub queues: BTreeMap<String, QueueCounts>,
}

impl JobCounts {
    /// The counts of every queue added up.
    #[must_use]
    pub fn total(&self) -> QueueCounts {
        let mut total = QueueCounts::default();
        for counts in self.queues.values() {
            total.add(counts);
        }
        total
    }

    /// The counts of queue `name` (zero for a queue never enqueued to).
    #[must_use]
    pub fn queue(&self, name: &str) -> QueueCounts {
        self.queues.get(name).copied().unwrap_or_default()
    }
}

/// One job in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// The job's id.
    pub id: String,
    /// The listing's time for it, ms since the Unix epoch: when it is due
    /// (delayed), when its lease ends (running), when it died (dead).
    pub at_ms: u64,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListPage {
    /// The jobs of the page, ordered by [`Listed::at_ms`].
    pub jobs: Vec<Listed>,
    /// How many jobs the listing holds in all.
    pub total: u64,
    /// Whether a later page holds more.
    pub more: bool,
}

/// What a search of a listing looks for ([`crate::Jobs::search`]): jobs of a task,
/// of a tenant, or of both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// The task's name, exactly.
    pub task: Option<String>,
    /// The tenant's id, exactly.
    pub tenant: Option<String>,
}

impl JobFilter {
    /// Jobs of task `name`.
    #[must_use]
    pub fn task(mut self, name: impl Into<String>) -> Self {
        self.task = Some(name.into());
        self
    }

    /// Jobs of tenant `id`.
    #[must_use]
    pub fn tenant(mut self, id: impl Into<String>) -> Self {
        self.tenant = Some(id.into());
        self
    }

    /// Whether `job` is one of those looked for.
    #[must_use]
    pub fn matches(&self, job: &FoundJob) -> bool {
        self.task.as_ref().is_none_or(|t| *t == job.task)
            && self
                .tenant
                .as_ref()
                .is_none_or(|t| job.tenant.as_ref() == Some(t))
    }
}

/// The most jobs one call of [`crate::Jobs::search`] looks at: a search of a
/// listing of a million jobs goes on call by call, each one bounded.
pub const SEARCH_BUDGET: u64 = 5_000;

/// How many jobs one read of a search fetches (a range and a descriptor each).
pub(crate) const SEARCH_CHUNK: u64 = 500;

/// Where a search goes on: the partition and the rank in it of the next job to look
/// at. Written `{partition}-{rank}` in a URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SearchCursor {
    /// The partition (0 on one node).
    pub partition: usize,
    /// The rank in the partition's listing.
    pub rank: u64,
}

impl std::fmt::Display for SearchCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.partition, self.rank)
    }
}

impl std::str::FromStr for SearchCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("a search cursor is partition-rank, not {s:?}");
        let (partition, rank) = s.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            partition: partition.parse().map_err(|_| bad())?,
            rank: rank.parse().map_err(|_| bad())?,
        })
    }
}

/// A job a search looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundJob {
    /// The job's id.
    pub id: String,
    /// The listing's time for it ([`Listed::at_ms`]).
    pub at_ms: u64,
    /// Its task (empty when its record is gone).
    pub task: String,
    /// Its tenant, if it has one.
    pub tenant: Option<String>,
}

/// One call's worth of a search.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SearchPage {
    /// The matching jobs, partition by partition, each in the listing's order.
    pub jobs: Vec<FoundJob>,
    /// How many jobs this call looked at.
    pub examined: u64,
    /// Where the next call goes on; `None` once the whole listing was searched.
    pub next: Option<SearchCursor>,
}

/// Everything a job's record holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDetail {
    /// State, task, tenant, attempts, result and last error.
    #[serde(flatten)]
    pub status: JobStatus,
    /// The queue it was enqueued to.
    pub queue: String,
    /// Its arguments as JSON text (emptied once it succeeds).
    pub args: Option<String>,
    /// Its priority (higher runs first).
    pub priority: u8,
    /// How many retries it may take.
    pub max_retries: u32,
    /// Its time limit per attempt, ms.
    pub timeout_ms: u64,
    /// When it was enqueued, ms since the epoch.
    pub created_ms: u64,
    /// When it is due, for a delayed job.
    pub eta_ms: Option<u64>,
    /// When it expires unrun, if it was given an expiry.
    pub expires_ms: Option<u64>,
    /// When it failed or was revoked for good.
    pub finished_ms: Option<u64>,
    /// The worker that holds it now, if any.
    pub worker: Option<String>,
    /// How many of its leases ran out without an outcome (its worker died).
    pub lost_leases: u32,
    /// Each failed attempt's error, oldest first (the last ten).
    pub errors: Vec<AttemptError>,
}

/// A failed attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// Which attempt (1 for the first).
    pub attempt: u32,
    /// When it failed, ms since the epoch.
    pub at_ms: u64,
    /// The task's error.
    pub error: String,
}

/// How many failed attempts a job's record keeps.
pub(crate) const ERRORS_KEPT: usize = 10;

/// A worker as its last heartbeat described it ([`crate::Jobs::workers`]). Workers
/// beat every [`HEARTBEAT_EVERY`](crate::inspect::HEARTBEAT_EVERY) and remove
/// themselves when they stop; one killed stays listed, no longer
/// [`alive`](Self::alive), until [`FORGET_AFTER`] has passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's id (`w-…`), as jobs' records name their holder.
    pub id: String,
    /// The machine it runs on (Linux's host name; empty elsewhere).
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The queues it takes jobs from, in order.
    pub queues: Vec<String>,
    /// How many jobs it runs at once, at most.
    pub concurrency: usize,
    /// The ids of the jobs it runs now.
    pub running: Vec<String>,
    /// When it started, ms since the epoch.
    pub started_ms: u64,
    /// Its last heartbeat, ms since the epoch.
    pub beat_ms: u64,
}

/// What a registry (workers, scheduler entries) holds: a value with an id, and
/// when it was written.
pub(crate) trait Registered: serde::de::DeserializeOwned {
    fn id(&self) -> &str;
    fn written_ms(&self) -> u64;
}

impl Registered for WorkerInfo {
    fn id(&self) -> &str {
        &self.id
    }
    fn written_ms(&self) -> u64 {
        self.beat_ms
    }
}

impl Registered for ScheduleInfo {
    fn id(&self) -> &str {
        &self.name
    }
    fn written_ms(&self) -> u64 {
        self.published_ms
    }
}

/// How often a worker writes its [`WorkerInfo`].
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a worker that stopped beating (killed, or cut off) stays listed.
pub const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

impl WorkerInfo {
    /// Whether its last heartbeat is recent (within three beats of `now_ms`).
    #[must_use]
    pub fn alive(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.beat_ms) < 3 * ms(HEARTBEAT_EVERY)
    }
}

/// A scheduler entry as the leading [`Scheduler`](crate::Scheduler) last published
/// it ([`crate::Jobs::schedule`]): the leader publishes its entries when it takes
/// the lead, after each tick it fires, and every 30 s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// The entry's name.
    pub name: String,
    /// When it fires: `every 60 s`, or `cron 0 0 7 * * * Europe/Madrid`.
    pub schedule: String,
    /// The task it enqueues.
    pub task: String,
    /// The queue it enqueues to.
    pub queue: String,
    /// Its next tick, ms since the epoch (`None`: a cron expression with no future
    /// time).
    pub next_ms: Option<u64>,
    /// The last tick it fired, ms since the epoch, if one is known.
    pub last_ms: Option<u64>,
    /// The job that tick enqueued.
    pub last_job: Option<String>,
    /// That job's state when the schedule was read (`None`: no tick known, or its
    /// record has expired).
    #[serde(default)]
    pub last_state: Option<JobState>,
    /// When the leader published this, ms since the epoch.
    pub published_ms: u64,
}

/// Outcomes recorded in one minute, by every worker of the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Minute {
    /// The minute's start, ms since the epoch.
    pub start_ms: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that failed for good (dead letters).
    pub failed: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Jobs revoked while they ran.
    pub revoked: u64,
}

/// The outcomes of the last minutes ([`crate::Jobs::throughput`]): every queue's
/// added up, and each queue's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Throughput {
    /// All queues' outcomes, minute by minute, oldest first. It also counts the
    /// outcomes of workers of an earlier larder, which did not record the queue.
    pub total: Vec<Minute>,
    /// Each queue that had an outcome in those minutes, by name, with its minutes
    /// (the same minutes as [`Throughput::total`]).
    pub queues: BTreeMap<String, Vec<Minute>>,
}

impl Throughput {
    /// The minutes of queue `name` (all zero for a queue with no outcome in them).
    #[must_use]
    pub fn queue(&self, name: &str) -> Vec<Minute> {
        match self.queues.get(name) {
            Some(minutes) => minutes.clone(),
            None => self
                .total
                .iter()
                .map(|m| Minute::of(m.start_ms, [0; 4]))
                .collect(),
        }
    }
}

/// How many minutes of outcomes are kept ([`crate::Jobs::throughput`]).
pub const MINUTES_KEPT: u64 = 60;

/// The outcome names a minute counts, as completions record them.
pub(crate) const COUNTED: [&str; 4] = ["SUCCESS", "FAILURE", "RETRY", "REVOKED"];

impl Minute {
    /// The minute starting at `start_ms` with `counts` in the order of [`COUNTED`].
    pub(crate) fn of(start_ms: u64, counts: [u64; 4]) -> Self {
        let [succeeded, failed, retried, revoked] = counts;
        Self {
            start_ms,
            succeeded,
            failed,
            retried,
            revoked,
        }
    }
}

/// A minute's outcome counts as both backends keep them, field by field: field
/// `OUTCOME` (one of [`COUNTED`]) counts all queues', `queue<TAB>OUTCOME` one
/// queue's. Every completion adds to both (an earlier larder wrote the first only).
pub(crate) fn minute_fields(queue: &str, outcome: &str) -> [String; 2] {
    [outcome.to_owned(), format!("{queue}\t{outcome}")]
}

/// The minutes `first..=last` being added up, field by field, into a [`Throughput`].
pub(crate) struct MinuteTally {
    first: u64,
    total: Vec<[u64; 4]>,
    queues: BTreeMap<String, Vec<[u64; 4]>>,
}

impl MinuteTally {
    pub(crate) fn new(first: u64, last: u64) -> Self {
        let span = usize::try_from(last.saturating_sub(first) + 1).unwrap_or(0);
        Self {
            first,
            total: vec![[0; 4]; span],
            queues: BTreeMap::new(),
        }
    }

    /// Adds `n` to the count `field` ([`minute_fields`]) of `minute`; a field of
    /// an outcome that is not counted, or a minute out of range, is passed over.
    pub(crate) fn add(&mut self, minute: u64, field: &str, n: u64) {
        let (queue, outcome) = match field.split_once('\t') {
            Some((queue, outcome)) => (Some(queue), outcome),
            None => (None, field),
        };
        let Some(kind) = COUNTED.iter().position(|k| *k == outcome) else {
            return;
        };
        let Some(i) = minute
            .checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.total.len())
        else {
            return;
        };
        let minutes = match queue {
            None => &mut self.total,
            Some(queue) => self
                .queues
                .entry(queue.to_owned())
                .or_insert_with(|| vec![[0; 4]; self.total.len()]),
        };
        minutes[i][kind] += n;
    }

    pub(crate) fn into_throughput(self) -> Throughput {
        let first = self.first;
        let minutes = move |counts: Vec<[u64; 4]>| -> Vec<Minute> {
            (first..)
                .zip(counts)
                .map(|(m, c)| Minute::of(m * 60_000, c))
                .collect()
        };
        Throughput {
            total: minutes(self.total),
            queues: self
                .queues
                .into_iter()
                .map(|(name, counts)| (name, minutes(counts)))
                .collect(),
        }
    }
}

/// The number of the minute `at_ms` falls in (ms since the epoch / 60,000).
pub(crate) fn minute_of(at_ms: u64) -> u64 {
    at_ms / 60_000
}

/// How a page of a listing is taken: the same ranks of every partition, merged in
/// time order. With one partition (anything but a partitioned queue on a cluster)
/// that is the listing's own order; with several, page `k` holds the `k`-th slice
/// of each partition, so every job is on exactly one page and a page costs one
/// range per partition, however deep it is.
pub(crate) fn merge(parts: Vec<Vec<Listed>>, totals: &[u64], end: u64) -> ListPage {
    let mut jobs: Vec<Listed> = parts.into_iter().flatten().collect();
    jobs.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.id.cmp(&b.id)));
    ListPage {
        jobs,
        total: totals.iter().sum(),
        more: totals.iter().any(|&t| t > end),
    }
}
