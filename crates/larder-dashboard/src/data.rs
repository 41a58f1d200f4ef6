//! What the pages show, gathered from the components: each figure is one bounded
//! read (a set size, a range, `INFO`), and a component that is down or not
//! configured shows as such instead of failing the page.

use larder_core::{redis, HealthReport, Outage, Tenant};
use larder_jobs::inspect::{
    JobCounts, JobDetail, JobFilter, ListPage, Listing, ScheduleInfo, SearchCursor, SearchPage,
    Throughput, WorkerInfo, MINUTES_KEPT,
};
use larder_ratelimit::activity::{key_hash, Activity};
use serde::Serialize;

use crate::{Call, Dashboard, Reply};

use crate::PAGE;

/// The overview (also `GET /api/overview`, for scripts).
#[derive(Debug, Serialize)]
pub(crate) struct Overview {
    /// Job counts, when a queue is shown and answers.
    pub(crate) jobs: Option<JobCounts>,
    /// Why the counts are missing, when the queue did not answer.
    pub(crate) jobs_error: Option<String>,
    pub(crate) cache: Option<larder_cache::Stats>,
    pub(crate) health: Option<HealthReport>,
}

pub(crate) async fn overview(d: &Dashboard) -> Overview {
    let jobs = async {
        match &d.inner.jobs {
            Some(jobs) => Some(jobs.counts().await.map_err(|e| e.to_string())),
            None => None,
        }
    };
    let cache = async {
        match &d.inner.cache {
            Some(cache) => Some(cache.stats().await),
            None => None,
        }
    };
    let health = async {
        match &d.inner.redis {
            Some(handle) => Some(handle.health().await),
            None => None,
        }
    };
    let (jobs, cache, health) = futures_util::join!(jobs, cache, health);
    let (jobs, jobs_error) = match jobs {
        Some(Ok(counts)) => (Some(counts), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    Overview {
        jobs,
        jobs_error,
        cache,
        health,
    }
}

/// The Redis page.
#[derive(Debug, Serialize)]
pub(crate) struct RedisView {
    pub(crate) configured: bool,
    pub(crate) health: Option<HealthReport>,
    /// The circuit breaker's last outages, newest first.
    pub(crate) outages: Vec<Outage>,
    /// `single`, `cluster` or `sentinel`, and the addresses (never credentials).
    pub(crate) topology: Option<(String, Vec<String>)>,
    /// Per primary: selected `INFO` fields.
    pub(crate) nodes: Vec<Vec<(String, String)>>,
    /// What in Redis's configuration puts larder's data at risk.
    pub(crate) warnings: Vec<String>,
    pub(crate) error: Option<String>,
}

/// The `INFO` fields the Redis page shows.
const INFO_FIELDS: [&str; 11] = [
    "redis_version",
    "role",
    "uptime_in_seconds",
    "connected_clients",
    "used_memory_human",
    "maxmemory_human",
    "maxmemory_policy",
    "evicted_keys",
    "instantaneous_ops_per_sec",
    "keyspace_hits",
    "keyspace_misses",
];

pub(crate) async fn redis(d: &Dashboard) -> RedisView {
    let mut view = RedisView {
        configured: false,
        health: None,
        outages: Vec::new(),
        topology: None,
        nodes: Vec::new(),
        warnings: Vec::new(),
        error: None,
    };
    let Some(handle) = &d.inner.redis else {
        return view;
    };
    view.health = Some(handle.health().await);
    view.outages = handle.guard().outages();
    let Some(topology) = handle.topology() else {
        view.warnings
            .push("No Redis configured: every component runs in process.".into());
        return view;
    };
    view.configured = true;
    view.topology = Some(match topology {
        larder_core::Topology::Single(url) => ("single".into(), vec![url.to_string()]),
        larder_core::Topology::Cluster(c) => (
            "cluster".into(),
            c.seeds.iter().map(ToString::to_string).collect(),
        ),
        larder_core::Topology::Sentinel(s) => (
            format!("sentinel (primary {:?})", s.master),
            s.sentinels.iter().map(ToString::to_string).collect(),
        ),
        _ => ("other".into(), Vec::new()),
    });
    let mut info = redis::cmd("INFO");
    info.arg("server")
        .arg("clients")
        .arg("memory")
        .arg("stats")
        .arg("replication");
    match handle
        .query_each_primary::<String>("dashboard_info", &info)
        .await
    {
        Ok(infos) => {
            for text in &infos {
                let fields: Vec<(String, String)> = INFO_FIELDS
                    .iter()
                    .filter_map(|&name| {
                        info_field(text, name).map(|v| (name.to_owned(), v.to_owned()))
                    })
                    .collect();
                if let Some(policy) = info_field(text, "maxmemory_policy") {
                    if policy != "noeviction" && d.inner.jobs.is_some() {
                        view.warnings.push(format!(
                            "maxmemory-policy is {policy}: Redis may evict jobs. Jobs need noeviction (or a separate Redis for them)."
                        ));
                    }
                }
                if info_field(text, "evicted_keys").is_some_and(|n| n != "0") {
                    view.warnings
                        .push("Redis has evicted keys: it is running out of memory.".into());
                }
                view.nodes.push(fields);
            }
        }
        Err(e) => view.error = Some(e.to_string()),
    }
    view
}

/// Field `name` of an `INFO` reply.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// The cache page.
#[derive(Debug, Serialize)]
pub(crate) struct CacheView {
    pub(crate) stats: Option<larder_cache::Stats>,
    /// Every instance's look-ups of the last hour, per minute, by module and
    /// tenant (`None`: no cache, or Redis did not answer: see `last_hour_error`).
    pub(crate) last_hour: Option<larder_cache::LookupHistory>,
    /// Why `last_hour` could not be read: the page still shows the rest.
    pub(crate) last_hour_error: Option<String>,
    pub(crate) health: Option<HealthReport>,
    /// The circuit breaker's last outages (the cache's handle), newest first.
    pub(crate) outages: Vec<Outage>,
}

pub(crate) async fn cache(d: &Dashboard) -> CacheView {
    let Some(cache) = &d.inner.cache else {
        return CacheView {
            stats: None,
            last_hour: None,
            last_hour_error: None,
            health: None,
            outages: Vec::new(),
        };
    };
    // Three reads at once: the hour's hashes are the slow one at the bounds.
    let (stats, history, health) =
        futures_util::join!(cache.stats(), cache.last_hour(), cache.handle().health());
    let (last_hour, last_hour_error) = match history {
        Ok(h) => (Some(h), None),
        Err(e) => (None, Some(e.to_string())),
    };
    CacheView {
        stats: Some(stats),
        last_hour,
        last_hour_error,
        health: Some(health),
        outages: cache.handle().guard().outages(),
    }
}

/// The rate-limits page: the decisions of the last hour, and the hash of a key an
/// operator looks for (`?key=`).
#[derive(Debug, Serialize)]
pub(crate) struct RateLimitsView {
    #[serde(flatten)]
    pub(crate) report: Activity,
    /// The hash of the key asked for, to find it among the top keys.
    pub(crate) key_hash: Option<String>,
}

pub(crate) async fn rate_limits(d: &Dashboard, call: &Call) -> Result<RateLimitsView, Reply> {
    let Some(limiter) = &d.inner.limiter else {
        return Err(Reply::json_error(404, "no rate limiter is shown here"));
    };
    let report = limiter.activity().await.map_err(|e| {
        tracing::warn!(target: "larder::dashboard", error = %e, "rate-limit activity unavailable");
        Reply::json_error(503, &format!("rate-limit activity unavailable: {e}"))
    })?;
    Ok(RateLimitsView {
        report,
        key_hash: call
            .query("key")
            .filter(|k| !k.is_empty())
            .map(|k| key_hash(&k)),
    })
}

/// The jobs page: counts, and one page of one queue's listing.
#[derive(Debug, Serialize)]
pub(crate) struct JobsView {
    pub(crate) counts: JobCounts,
    /// The queue whose listing is shown (`None`: no job was ever enqueued).
    pub(crate) queue: Option<String>,
    /// The workers that beat lately, the silent ones among them.
    pub(crate) workers: Vec<WorkerInfo>,
    /// The outcomes of the last hour, minute by minute, oldest first, for all
    /// queues and for each.
    pub(crate) last_hour: Throughput,
    /// The scheduler's entries, as its leader published them.
    pub(crate) schedule: Vec<ScheduleInfo>,
    pub(crate) listing: Listing,
    pub(crate) page: u64,
    pub(crate) per_page: u64,
    pub(crate) list: ListPage,
    /// With `?task=` or `?tenant=`: what was looked for, and one call's matches
    /// from `?from=` on.
    pub(crate) search: Option<JobSearch>,
}

/// A search of the listing by task and tenant ([`larder_jobs::Jobs::search`]).
#[derive(Debug, Serialize)]
pub(crate) struct JobSearch {
    pub(crate) task: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) from: SearchCursor,
    pub(crate) found: SearchPage,
}

pub(crate) async fn jobs(d: &Dashboard, call: &Call) -> Result<JobsView, Reply> {
    let jobs = d.queue()?;
    let listing = match call.query("list") {
        None => Listing::Dead,
        Some(name) => Listing::parse(&name).ok_or_else(|| {
            Reply::json_error(400, "list must be delayed, retrying, running or dead")
        })?,
    };
    let page = match call.query("page") {
        None => 0,
        Some(p) => p
            .parse::<u64>()
            .ok()
            .filter(|&p| p < 1_000_000)
            .ok_or_else(|| Reply::json_error(400, "page must be a number"))?,
    };
    let filled = |name: &str| call.query(name).filter(|v| !v.is_empty());
    let filter = JobFilter {
        task: filled("task"),
        tenant: filled("tenant"),
    };
    let from = match filled("from") {
        None => SearchCursor::default(),
        Some(c) => c.parse().map_err(|e: String| Reply::json_error(400, &e))?,
    };
    let counts = jobs.counts().await.map_err(unavailable)?;
    // The queue asked for (one that exists: its name goes into key names), or the
    // one with the most jobs in the listing.
    let queue = match call.query("queue") {
        Some(name) => Some(
            counts
                .queues
                .contains_key(&name)
                .then_some(name)
                .ok_or_else(|| Reply::json_error(404, "no job was ever enqueued to that queue"))?,
        ),
        None => counts
            .queues
            .iter()
            .max_by(|a, b| a.1.of(listing).cmp(&b.1.of(listing)).then(b.0.cmp(a.0)))
            .map(|(name, _)| name.clone()),
    };
    let shown = queue.as_deref().unwrap_or("default");
    let searching = filter.task.is_some() || filter.tenant.is_some();
    let search = async {
        if searching {
            Some(jobs.search(shown, listing, &filter, from, PAGE).await)
        } else {
            None
        }
    };
    let (list, workers, last_hour, schedule, found) = futures_util::join!(
        jobs.list(shown, listing, page * PAGE, PAGE),
        jobs.workers(),
        jobs.throughput(MINUTES_KEPT),
        jobs.schedule(),
        search
    );
    Ok(JobsView {
        counts,
        queue,
        workers: workers.map_err(unavailable)?,
        last_hour: last_hour.map_err(unavailable)?,
        schedule: schedule.map_err(unavailable)?,
        listing,
        page,
        per_page: PAGE,
        list: list.map_err(unavailable)?,
        search: match found {
            Some(found) => Some(JobSearch {
                task: filter.task,
                tenant: filter.tenant,
                from,
                found: found.map_err(unavailable)?,
            }),
            None => None,
        },
    })
}

pub(crate) async fn job(d: &Dashboard, id: &str) -> Result<Option<JobDetail>, Reply> {
    let jobs = d.queue()?;
    match jobs.detail(id).await {
        Ok(detail) => Ok(detail),
        Err(larder_jobs::JobError::Invalid(e)) => Err(Reply::json_error(400, &e)),
        Err(e) => Err(unavailable(e)),
    }
}

/// The sessions page: whose sessions were asked for, and what was found.
#[derive(Debug, Serialize)]
pub(crate) struct SessionsView {
    pub(crate) tenant: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) sessions: Vec<larder_session::SessionInfo>,
    /// Live sessions without a tenant, then of the tenants that logged in last.
    pub(crate) active: Vec<larder_session::ActiveSessions>,
    /// Why the live sessions could not be counted, if they could not.
    pub(crate) active_error: Option<String>,
}

/// How many tenants the sessions page counts the live sessions of.
const ACTIVE_TENANTS: usize = 20;

/// The tenant (optional, validated) and user (required for a listing) a sessions
/// request names, from its form or query.
pub(crate) fn session_owner(call: &Call) -> Result<(Option<Tenant>, Option<String>), Reply> {
    let field = |name| {
        call.form(name)
            .or_else(|| call.query(name))
            .filter(|v| !v.is_empty())
    };
    let tenant = match field("tenant") {
        None => None,
        Some(t) => Some(Tenant::new(t).map_err(|e| Reply::json_error(400, &e.to_string()))?),
    };
    Ok((tenant, field("user")))
}

pub(crate) async fn sessions(d: &Dashboard, call: &Call) -> Result<SessionsView, Reply> {
    let store = d.session_store()?;
    let (tenant, user) = session_owner(call)?;
    let down = |e: larder_session::SessionError| {
        Reply::json_error(503, &format!("sessions unavailable: {e}"))
    };
    let sessions = match &user {
        None => Vec::new(),
        Some(user) => store.list(tenant.as_ref(), user).await.map_err(down)?,
    };
    // The counts are a figure, not the page: Redis down shows as such.
    let (active, active_error) = match store.active_by_tenant(ACTIVE_TENANTS).await {
        Ok(active) => (active, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(SessionsView {
        tenant: tenant.map(|t| t.to_string()),
        user,
        sessions,
        active,
        active_error,
    })
}

pub(crate) fn unavailable(e: larder_jobs::JobError) -> Reply {
    tracing::warn!(target: "larder::dashboard", error = %e, "jobs unavailable");
    Reply::json_error(503, &format!("jobs unavailable: {e}"))
}

impl Dashboard {
    pub(crate) fn session_store(&self) -> Result<&larder_session::Sessions, Reply> {
        self.inner
            .sessions
            .as_ref()
            .ok_or_else(|| Reply::json_error(404, "no session store is shown here"))
    }

    pub(crate) fn queue(&self) -> Result<&larder_jobs::Jobs, Reply> {
        self.inner
            .jobs
            .as_ref()
            .ok_or_else(|| Reply::json_error(404, "no job queue is shown here"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_whole_name() {
        let info = "# Memory\r\nused_memory:100\r\nused_memory_human:100B\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(info_field(info, "used_memory"), Some("100"));
        assert_eq!(info_field(info, "used_memory_human"), Some("100B"));
        assert_eq!(info_field(info, "maxmemory_policy"), Some("allkeys-lru"));
        assert_eq!(info_field(info, "maxmemory"), None);
    }
}
