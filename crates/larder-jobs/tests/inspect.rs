//! Inspection (what the dashboard reads): counts by state, paged listings and a
//! job's whole record, on every topology and in process, with the same answers.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use larder_core::{Config, ConfigBuilder, Handle};
use larder_jobs::inspect::{JobFilter, Listing, Minute, QueueCounts, SearchCursor, SEARCH_BUDGET};
use larder_jobs::{
    Deleted, EnqueueOptions, JobState, Jobs, JobsConfig, Scheduler, TaskError, TaskRef, Worker,
};
use larder_testing::{eventually, on_every_topology, Redis};

const FAIL: TaskRef<String, ()> = TaskRef::new("fail");
const LATER: TaskRef<u32, ()> = TaskRef::new("later");

fn jobs_on(redis: &Redis) -> Jobs {
    let handle = Handle::new(
        ConfigBuilder::from_config(Config::from_vars(redis.vars()).unwrap())
            .op_timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
    )
    .unwrap();
    Jobs::with_config(handle, config())
}

fn config() -> JobsConfig {
    JobsConfig::default()
        .max_retries(0)
        .lease(Duration::from_millis(800))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// 23 jobs fail for good (dead), 7 wait an hour (delayed), 4 sit in queue
/// `reports`; then every listing and count is checked, and one dead job's record.
async fn counts_listings_and_records(jobs: Jobs) {
    let before = now_ms();
    let mut dead = BTreeSet::new();
    for i in 0..23 {
        let opts = EnqueueOptions::new().tenant(format!("t{}", i % 3));
        dead.insert(
            jobs.enqueue(FAIL, &format!("<b>{i}</b>"), opts)
                .await
                .unwrap(),
        );
    }
    let mut delayed = BTreeSet::new();
    for i in 0..7 {
        let opts = EnqueueOptions::new().countdown(Duration::from_secs(3600 + i));
        delayed.insert(jobs.enqueue(LATER, &1, opts).await.unwrap());
    }
    for _ in 0..4 {
        let opts = EnqueueOptions::new().queue("reports");
        jobs.enqueue(LATER, &2, opts).await.unwrap();
    }
    let worker = Worker::new(jobs.clone())
        .task(FAIL, |s, _| async move {
            Err::<(), _>(TaskError::fatal(format!("no good: {s}")))
        })
        .spawn();
    assert!(
        eventually(200, Duration::from_millis(50), || async {
            jobs.counts().await.unwrap().queue("default").dead == 23
        })
        .await,
        "{:?}",
        jobs.counts().await
    );
    worker.shutdown(Duration::from_secs(5)).await;

    // The last hour, minute by minute: the 23 failures, nothing else, all of them
    // in queue `default`.
    let throughput = jobs.throughput(60).await.unwrap();
    assert_eq!(
        throughput.queues.keys().collect::<Vec<_>>(),
        ["default"],
        "{throughput:?}"
    );
    assert_eq!(throughput.queue("default"), throughput.total);
    let idle = throughput.queue("reports");
    assert_eq!(idle.len(), 60);
    assert!(idle.iter().all(|m| m.failed + m.succeeded == 0), "{idle:?}");
    let minutes = throughput.total;
    assert_eq!(minutes.len(), 60);
    assert!(minutes
        .windows(2)
        .all(|w| w[1].start_ms == w[0].start_ms + 60_000));
    // This minute last (or the one before, if a minute turned since the read).
    let this = now_ms() / 60_000 * 60_000;
    assert!(
        [this, this - 60_000].contains(&minutes[59].start_ms),
        "{minutes:?}"
    );
    assert_eq!(minutes.iter().map(|m| m.failed).sum::<u64>(), 23);
    assert_eq!(
        minutes
            .iter()
            .map(|m| m.succeeded + m.retried + m.revoked)
            .sum::<u64>(),
        0
    );

    let counts = jobs.counts().await.unwrap();
    let default = QueueCounts {
        delayed: 7,
        dead: 23,
        ..QueueCounts::default()
    };
    let reports = QueueCounts {
        queued: 4,
        ..QueueCounts::default()
    };
    assert_eq!(counts.queue("default"), default, "{counts:?}");
    assert_eq!(counts.queue("reports"), reports, "{counts:?}");
    assert_eq!(counts.queues.len(), 2, "{counts:?}");
    assert_eq!((counts.total().queued, counts.total().dead), (4, 23));

    // Pages of 10: every dead job exactly once, each page in time order.
    let mut seen = BTreeSet::new();
    let mut page = 0;
    loop {
        let p = jobs
            .list("default", Listing::Dead, page * 10, 10)
            .await
            .unwrap();
        assert_eq!(p.total, 23);
        assert!(p.jobs.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "{p:?}");
        for listed in &p.jobs {
            assert!(
                listed.at_ms >= before && listed.at_ms <= now_ms(),
                "{listed:?}"
            );
            assert!(seen.insert(listed.id.clone()), "{} twice", listed.id);
        }
        if !p.more {
            break;
        }
        page += 1;
        assert!(page < 10, "pages never end");
    }
    assert_eq!(seen, dead);

    let d = jobs
        .list("default", Listing::Delayed, 0, 100)
        .await
        .unwrap();
    assert_eq!(
        d.jobs.iter().map(|l| l.id.clone()).collect::<BTreeSet<_>>(),
        delayed
    );
    assert!(!d.more);
    assert!(d.jobs.iter().all(|l| l.at_ms >= before + 3_600_000));
    // A page past the end is empty, not an error.
    let empty = jobs
        .list("default", Listing::Delayed, 1000, 10)
        .await
        .unwrap();
    assert!(empty.jobs.is_empty() && empty.total == 7 && !empty.more);
    // Another queue's listing holds none of them.
    let other = jobs.list("reports", Listing::Delayed, 0, 10).await.unwrap();
    assert!(other.jobs.is_empty() && other.total == 0, "{other:?}");

    // Searches, three matches a call: tenant t1's dead jobs (i % 3 == 1: 8 of
    // them), each once, every one of t1 and of task `fail`.
    let search = |listing: Listing, filter: JobFilter| {
        let jobs = jobs.clone();
        async move {
            let (mut found, mut from, mut calls) = (Vec::new(), SearchCursor::default(), 0);
            loop {
                let page = jobs
                    .search("default", listing, &filter, from, 3)
                    .await
                    .unwrap();
                assert!(page.jobs.len() <= 3 && page.examined <= SEARCH_BUDGET);
                found.extend(page.jobs);
                calls += 1;
                assert!(calls < 20, "the search never ends");
                match page.next {
                    Some(next) => from = next.to_string().parse().unwrap(),
                    None => return found,
                }
            }
        }
    };
    let t1 = search(Listing::Dead, JobFilter::default().tenant("t1")).await;
    assert_eq!(t1.len(), 8, "{t1:?}");
    assert!(t1
        .iter()
        .all(|j| j.tenant.as_deref() == Some("t1") && j.task == "fail" && dead.contains(&j.id)));
    assert_eq!(
        t1.iter().map(|j| &j.id).collect::<BTreeSet<_>>().len(),
        8,
        "a job found twice"
    );
    let both = JobFilter::default().task("fail").tenant("t2");
    assert_eq!(search(Listing::Dead, both).await.len(), 7);
    let later = search(Listing::Delayed, JobFilter::default().task("later")).await;
    assert_eq!(
        later.iter().map(|j| j.id.clone()).collect::<BTreeSet<_>>(),
        delayed
    );
    assert!(later.iter().all(|j| j.tenant.is_none()));
    let none = jobs
        .search(
            "default",
            Listing::Dead,
            &JobFilter::default().task("later"),
            SearchCursor::default(),
            3,
        )
        .await
        .unwrap();
    assert_eq!((none.jobs.len(), none.examined, none.next), (0, 23, None));
    assert!("1".parse::<SearchCursor>().is_err() && "a-1".parse::<SearchCursor>().is_err());

    let id = dead.iter().next().unwrap();
    let job = jobs.detail(id).await.unwrap().unwrap();
    assert_eq!(job.status.state, JobState::Failure);
    assert_eq!(job.status.task, "fail");
    assert_eq!(job.queue, "default");
    assert!(job.status.tenant.as_deref().unwrap().starts_with('t'));
    assert!(job.args.as_deref().unwrap().starts_with("\"<b>"), "{job:?}");
    assert!(
        job.status
            .error
            .as_deref()
            .unwrap()
            .starts_with("no good: <b>"),
        "{job:?}"
    );
    assert_eq!(job.status.attempts, 1);
    assert!(job.created_ms >= before && job.created_ms <= now_ms());
    assert!(job.finished_ms.unwrap() >= job.created_ms);
    assert!(job.worker.is_none());

    let delayed_id = delayed.iter().next().unwrap();
    let job = jobs.detail(delayed_id).await.unwrap().unwrap();
    assert_eq!(job.status.state, JobState::Pending);
    assert!(job.eta_ms.unwrap() >= before + 3_600_000);

    assert!(jobs.detail("never-enqueued").await.unwrap().is_none());
    assert!(jobs.detail("").await.is_err());
}

on_every_topology!(
    async fn counts_listings_and_records_on_redis(redis: &Redis) {
        counts_listings_and_records(jobs_on(redis)).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_listings_and_records_in_process() {
    counts_listings_and_records(Jobs::with_config(Handle::in_process(), config())).await;
}

/// A running job is listed with its lease's end, and its record names its worker.
async fn running_jobs_show_their_worker(jobs: Jobs) {
    const HOLD: TaskRef<(), ()> = TaskRef::new("hold");
    let worker = Worker::new(jobs.clone())
        .task(HOLD, |(), ctx| async move {
            ctx.cancelled().await;
            Ok(())
        })
        .spawn();
    let id = jobs.delay(HOLD, &()).await.unwrap();
    assert!(
        eventually(200, Duration::from_millis(25), || async {
            jobs.counts().await.unwrap().queue("default").running == 1
        })
        .await
    );
    let running = jobs.list("default", Listing::Running, 0, 10).await.unwrap();
    assert_eq!(running.jobs.len(), 1);
    assert_eq!(running.jobs[0].id, id);
    assert!(running.jobs[0].at_ms > now_ms() - 1000);
    let job = jobs.detail(&id).await.unwrap().unwrap();
    let holder = job.worker.unwrap_or_default();
    assert!(!holder.is_empty());

    // The worker's heartbeat names it, its queues, its concurrency and the job.
    let workers = jobs.workers().await.unwrap();
    assert_eq!(workers.len(), 1, "{workers:?}");
    let w = &workers[0];
    assert_eq!(w.id, holder);
    assert_eq!(w.queues, ["default"]);
    assert_eq!(w.concurrency, 8);
    assert_eq!(w.pid, std::process::id());
    assert!(w.alive(now_ms()), "{w:?}");
    // Within four beats: a beat whose write missed its deadline on a loaded
    // machine is skipped, not retried.
    assert!(
        eventually(400, Duration::from_millis(50), || async {
            jobs.workers().await.unwrap()[0].running == [id.clone()]
        })
        .await,
        "the next beat lists the running job: {:?}",
        jobs.workers().await
    );
    assert_eq!(jobs.delete(&id).await.unwrap(), Deleted::Running);
    jobs.revoke(&id).await.unwrap();
    worker.shutdown(Duration::from_secs(5)).await;
    // A worker that stops removes its heartbeat; the revoked job was counted.
    assert!(jobs.workers().await.unwrap().is_empty());
    let minutes = jobs.throughput(5).await.unwrap().total;
    assert_eq!(
        minutes.iter().map(|m| m.revoked).sum::<u64>(),
        1,
        "{minutes:?}"
    );
}

on_every_topology!(
    async fn running_jobs_show_their_worker_on_redis(redis: &Redis) {
        running_jobs_show_their_worker(jobs_on(redis)).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_jobs_show_their_worker_in_process() {
    running_jobs_show_their_worker(Jobs::with_config(Handle::in_process(), config())).await;
}

on_every_topology!(
    async fn a_silent_worker_is_listed_then_forgotten(redis: &Redis) {
        let jobs = jobs_on(redis);
        let worker = Worker::new(jobs.clone())
            .task(LATER, |_, _| async { Ok(()) })
            .spawn();
        assert!(
            eventually(200, Duration::from_millis(25), || async {
                jobs.workers().await.unwrap().len() == 1
            })
            .await
        );
        let live = jobs.workers().await.unwrap().remove(0);
        // The registry's hash, found the way an operator would (a test may use KEYS).
        let registry = redis
            .primaries()
            .iter()
            .flat_map(|server| {
                let reply = server.command(&["KEYS", "*workers"]);
                reply
                    .lines()
                    .filter(|l| !l.starts_with(['*', '$']))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .next()
            .expect("the workers' registry");
        // Two workers that stopped beating without removing themselves (killed):
        // one a minute ago, one eleven minutes ago; and a value that is no worker.
        let silent = |id: &str, ago_ms: u64| {
            let mut info = live.clone();
            info.id = id.to_owned();
            info.beat_ms = now_ms() - ago_ms;
            serde_json::to_string(&info).unwrap()
        };
        let (quiet, gone) = (silent("w-quiet", 60_000), silent("w-gone", 660_000));
        for (field, value) in [
            ("w-quiet", quiet.as_str()),
            ("w-gone", gone.as_str()),
            ("w-bad", "{"),
        ] {
            let added = redis.command_on_key(&registry, &["HSET", &registry, field, value]);
            assert_eq!(added.trim(), ":1", "{added:?}");
        }
        let listed = jobs.workers().await.unwrap();
        let ids: BTreeSet<&str> = listed.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(
            ids,
            BTreeSet::from([live.id.as_str(), "w-quiet"]),
            "{listed:?}"
        );
        let quiet = listed.iter().find(|w| w.id == "w-quiet").unwrap();
        assert!(
            !quiet.alive(now_ms()),
            "a minute without a beat is not alive"
        );
        // The one past FORGET_AFTER was removed from the registry, not just hidden.
        let exists = redis.command_on_key(&registry, &["HEXISTS", &registry, "w-gone"]);
        assert_eq!(exists.trim(), ":0", "{exists:?}");
        worker.shutdown(Duration::from_secs(5)).await;
    }
);

/// A purge removes every ready job of its queue, in batches, and leaves the
/// queue's delayed jobs and other queues alone; a delete removes one job from
/// wherever it waits, record and all.
async fn deleting_and_purging(jobs: Jobs) {
    let bulk = |i: usize| {
        EnqueueOptions::new()
            .queue("bulk")
            .tenant(format!("t{}", i % 3))
    };
    let args: Vec<u32> = (0..2500).collect();
    let ids = jobs
        .enqueue_many(LATER, args.iter().map(|a| (a, bulk(*a as usize))))
        .await
        .unwrap();
    let later = jobs
        .enqueue(
            LATER,
            &1,
            EnqueueOptions::new()
                .queue("bulk")
                .countdown(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let other = jobs
        .enqueue(LATER, &2, EnqueueOptions::new().queue("other"))
        .await
        .unwrap();
    assert_eq!(jobs.queued("bulk").await.unwrap(), 2500);

    assert_eq!(jobs.purge("bulk").await.unwrap(), 2500);
    assert_eq!(jobs.queued("bulk").await.unwrap(), 0);
    assert!(jobs.status(&ids[1234]).await.unwrap().is_none());
    assert_eq!(jobs.queued("other").await.unwrap(), 1);
    assert_eq!(jobs.counts().await.unwrap().queue("bulk").delayed, 1);
    assert_eq!(jobs.purge("bulk").await.unwrap(), 0);

    assert_eq!(jobs.delete(&later).await.unwrap(), Deleted::Deleted);
    assert_eq!(jobs.counts().await.unwrap().queue("bulk").delayed, 0);
    assert!(jobs.status(&later).await.unwrap().is_none());
    assert_eq!(jobs.delete(&other).await.unwrap(), Deleted::Deleted);
    assert_eq!(jobs.queued("other").await.unwrap(), 0);
    assert_eq!(jobs.delete(&other).await.unwrap(), Deleted::Missing);
    assert!(jobs.delete("").await.is_err());
}

on_every_topology!(
    async fn deleting_and_purging_on_redis(redis: &Redis) {
        deleting_and_purging(jobs_on(redis)).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_and_purging_in_process() {
    deleting_and_purging(Jobs::with_config(Handle::in_process(), config())).await;
}

/// Every failed attempt's error is kept in the record, numbered, the last one
/// also as the job's error.
async fn each_attempts_error_is_kept(jobs: Jobs) {
    const FLAKY: TaskRef<(), ()> = TaskRef::new("flaky");
    let id = jobs
        .enqueue(FLAKY, &(), EnqueueOptions::new().max_retries(2))
        .await
        .unwrap();
    let worker = Worker::new(jobs.clone())
        .task(FLAKY, |(), ctx| async move {
            Err::<(), _>(TaskError::retry(format!("try {} <failed>", ctx.attempt())))
        })
        .spawn();
    assert!(
        eventually(200, Duration::from_millis(50), || async {
            jobs.status(&id).await.unwrap().unwrap().state == JobState::Failure
        })
        .await
    );
    worker.shutdown(Duration::from_secs(5)).await;
    let job = jobs.detail(&id).await.unwrap().unwrap();
    let attempts: Vec<(u32, &str)> = job
        .errors
        .iter()
        .map(|e| (e.attempt, e.error.as_str()))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, "try 1 <failed>"),
            (2, "try 2 <failed>"),
            (3, "try 3 <failed>")
        ],
        "{job:?}"
    );
    assert!(job.errors.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert!(job.errors[0].at_ms > now_ms() - 60_000);
    assert_eq!(job.status.error.as_deref(), Some("try 3 <failed>"));
}

fn quick_retries() -> JobsConfig {
    config().retry_backoff(Duration::from_millis(10), Duration::from_millis(20))
}

on_every_topology!(
    async fn each_attempts_error_is_kept_on_redis(redis: &Redis) {
        let handle = Handle::new(Config::from_vars(redis.vars()).unwrap()).unwrap();
        each_attempts_error_is_kept(Jobs::with_config(handle, quick_retries())).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempts_error_is_kept_in_process() {
    each_attempts_error_is_kept(Jobs::with_config(Handle::in_process(), quick_retries())).await;
}

/// The leading scheduler publishes its entries: schedule, task, queue, next tick,
/// and the last tick's job with its state.
async fn the_schedule_is_published(jobs: Jobs) {
    let scheduler = Scheduler::new(jobs.clone())
        .every("tick", Duration::from_secs(1), LATER, 7)
        .cron("daily", "0 0 7 * * *", "Europe/Madrid", LATER, 8)
        .unwrap()
        .options(EnqueueOptions::new().queue("reports"))
        .pass_every(Duration::from_millis(50))
        .spawn();
    let ticked = || async {
        jobs.schedule()
            .await
            .unwrap()
            .iter()
            .any(|e| e.name == "tick" && e.last_job.is_some())
    };
    assert!(eventually(100, Duration::from_millis(50), ticked).await);
    scheduler.shutdown().await;
    let now = now_ms();
    let entries = jobs.schedule().await.unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (daily, tick) = (&entries[0], &entries[1]);
    assert_eq!(
        (
            daily.name.as_str(),
            daily.schedule.as_str(),
            daily.queue.as_str()
        ),
        ("daily", "cron 0 0 7 * * * Europe/Madrid", "reports")
    );
    assert_eq!(daily.task, "later");
    assert!(daily.last_ms.is_none() && daily.last_job.is_none());
    let next = daily.next_ms.unwrap();
    assert!(
        next > now - 2_000 && next <= now + 25 * 3_600_000,
        "{daily:?}"
    );
    assert_eq!(
        (
            tick.name.as_str(),
            tick.schedule.as_str(),
            tick.queue.as_str()
        ),
        ("tick", "every 1 s", "default")
    );
    let last = tick.last_ms.unwrap();
    assert_eq!(last % 1000, 0);
    assert!(tick.next_ms.unwrap() > last);
    let job = tick.last_job.clone().unwrap();
    assert_eq!(job, format!("periodic:tick:{last}"));
    assert_eq!(tick.last_state, Some(JobState::Pending));
}

on_every_topology!(
    async fn the_schedule_is_published_on_redis(redis: &Redis) {
        the_schedule_is_published(jobs_on(redis)).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_is_published_in_process() {
    the_schedule_is_published(Jobs::with_config(Handle::in_process(), config())).await;
}

/// A search looks at no more than `SEARCH_BUDGET` jobs a call: with more delayed
/// jobs than that and the one sought due last, the first call stops at the budget
/// and says where to go on; the calls together look at every job once and find it.
async fn a_search_call_is_bounded(jobs: Jobs) {
    let n = usize::try_from(SEARCH_BUDGET).unwrap() + 100;
    let opts = || EnqueueOptions::new().countdown(Duration::from_secs(3600));
    let args = vec![1u32; n];
    jobs.enqueue_many(LATER, args.iter().map(|a| (a, opts())))
        .await
        .unwrap();
    // Due last: ranked last in the delayed listing.
    let sought = jobs
        .enqueue(
            LATER,
            &2,
            opts().countdown(Duration::from_secs(7200)).tenant("sought"),
        )
        .await
        .unwrap();
    let filter = JobFilter::default().tenant("sought");
    let mut from = SearchCursor::default();
    let mut examined = 0;
    let mut found = Vec::new();
    for call in 0.. {
        assert!(call < 20, "the search never ends");
        let page = jobs
            .search("default", Listing::Delayed, &filter, from, 10)
            .await
            .unwrap();
        assert!(page.examined <= SEARCH_BUDGET, "{}", page.examined);
        if call == 0 {
            // (On a cluster the job may sit in a partition searched first.)
            assert_eq!(page.examined, SEARCH_BUDGET);
            assert!(page.next.is_some());
        }
        examined += page.examined;
        found.extend(page.jobs.into_iter().map(|j| j.id));
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(found, vec![sought]);
    assert_eq!(examined, n as u64 + 1);
}

on_every_topology!(
    async fn a_search_call_is_bounded_on_redis(redis: &Redis) {
        a_search_call_is_bounded(jobs_on(redis)).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_call_is_bounded_in_process() {
    a_search_call_is_bounded(Jobs::with_config(Handle::in_process(), config())).await;
}

/// Each queue counts its own jobs in each state, and a job waiting out a retry's
/// back-off is counted (and listed) as retrying, apart from a countdown's delay.
async fn states_are_counted_per_queue(jobs: Jobs) {
    const FLAKY: TaskRef<(), ()> = TaskRef::new("flaky");
    let mail = || EnqueueOptions::new().queue("mail");
    let flaky = jobs
        .enqueue(FLAKY, &(), mail().max_retries(3))
        .await
        .unwrap();
    let later = jobs
        .enqueue(LATER, &1, mail().countdown(Duration::from_secs(3600)))
        .await
        .unwrap();
    let doomed = jobs
        .enqueue(
            FAIL,
            &"x".to_owned(),
            EnqueueOptions::new().queue("reports"),
        )
        .await
        .unwrap();
    let worker = Worker::new(jobs.clone())
        .queues(&[("mail", 1), ("reports", 1)])
        .task(FLAKY, |(), _| async {
            Err::<(), _>(TaskError::retry("not yet"))
        })
        .task(FAIL, |_, _| async {
            Err::<(), _>(TaskError::fatal("never"))
        })
        .spawn();
    let settled = || async {
        let c = jobs.counts().await.unwrap();
        c.queue("mail").retrying == 1 && c.queue("reports").dead == 1
    };
    assert!(
        eventually(200, Duration::from_millis(25), settled).await,
        "{:?}",
        jobs.counts().await
    );
    worker.shutdown(Duration::from_secs(5)).await;
    // The outcomes of the last minutes, per queue: mail's retry, reports' failure.
    let throughput = jobs.throughput(5).await.unwrap();
    let sums = |minutes: Vec<Minute>| {
        minutes.iter().fold((0, 0, 0), |(r, f, s), m| {
            (r + m.retried, f + m.failed, s + m.succeeded)
        })
    };
    assert_eq!(sums(throughput.queue("mail")), (1, 0, 0), "{throughput:?}");
    assert_eq!(
        sums(throughput.queue("reports")),
        (0, 1, 0),
        "{throughput:?}"
    );
    assert_eq!(sums(throughput.total), (1, 1, 0));
    let counts = jobs.counts().await.unwrap();
    let mail = QueueCounts {
        delayed: 1,
        retrying: 1,
        ..QueueCounts::default()
    };
    let reports = QueueCounts {
        dead: 1,
        ..QueueCounts::default()
    };
    assert_eq!(counts.queue("mail"), mail, "{counts:?}");
    assert_eq!(counts.queue("reports"), reports, "{counts:?}");
    let ids = |page: larder_jobs::inspect::ListPage| -> Vec<String> {
        page.jobs.into_iter().map(|l| l.id).collect()
    };
    let list = |queue: &'static str, listing| {
        let jobs = jobs.clone();
        async move { ids(jobs.list(queue, listing, 0, 10).await.unwrap()) }
    };
    assert_eq!(list("mail", Listing::Retrying).await, [flaky.as_str()]);
    assert_eq!(list("mail", Listing::Delayed).await, [later.as_str()]);
    assert_eq!(list("reports", Listing::Dead).await, [doomed.as_str()]);
    assert!(list("reports", Listing::Retrying).await.is_empty());
    assert_eq!(
        jobs.status(&flaky).await.unwrap().unwrap().state,
        JobState::Retry
    );
    // Revoked and deleted jobs leave their queue's sets.
    assert_eq!(jobs.revoke(&flaky).await.unwrap(), "REVOKED");
    assert_eq!(jobs.delete(&doomed).await.unwrap(), Deleted::Deleted);
    let counts = jobs.counts().await.unwrap();
    assert_eq!(counts.queue("mail").retrying, 0, "{counts:?}");
    assert_eq!(counts.queue("reports").dead, 0, "{counts:?}");
    assert_eq!(counts.queue("mail").delayed, 1, "{counts:?}");
}

/// The back-off of a retry: an hour, so the job stays retrying while it is counted.
fn slow_retries() -> JobsConfig {
    config().retry_backoff(Duration::from_secs(3600), Duration::from_secs(3600))
}

on_every_topology!(
    async fn states_are_counted_per_queue_on_redis(redis: &Redis) {
        let handle = Handle::new(Config::from_vars(redis.vars()).unwrap()).unwrap();
        states_are_counted_per_queue(Jobs::with_config(handle, slow_retries())).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_are_counted_per_queue_in_process() {
    states_are_counted_per_queue(Jobs::with_config(Handle::in_process(), slow_retries())).await;
}

on_every_topology!(
    async fn the_earlier_layout_is_drained_into_the_queues(redis: &Redis) {
        the_earlier_layout_is_drained(redis).await;
    }
);

/// Jobs left in the shared sets of the earlier layout (one `delayed`, `inflight`
/// and `dead` set for every queue of a partition, written here by hand as that
/// version did) are drained into their queue's sets by the workers' maintenance: a
/// due delayed job becomes ready, a dead letter is listed with its queue's.
async fn the_earlier_layout_is_drained(redis: &Redis) {
    let jobs = jobs_on(redis);
    // A job of queue `mail` (a queue name known), and the key base of the partition
    // that holds the dead letter's id (on a cluster, the partition its redrive reads).
    jobs.enqueue(LATER, &0, EnqueueOptions::new().queue("mail"))
        .await
        .unwrap();
    let record = jobs.record_key("old-dead").unwrap();
    let base = record.strip_suffix("j:old-dead").unwrap().to_owned();
    let d = |tenant: &str| format!("mail\t{tenant}\t0\t0\t60000\t{}\tlater", now_ms());
    let run = |args: &[&str]| {
        let reply = redis.command_on_key(args[1], args);
        assert!(!reply.starts_with('-'), "{args:?}: {reply}");
    };
    let (due, dead) = ("old-due", "old-dead");
    run(&[
        "HSET",
        &format!("{base}j:{due}"),
        "d",
        &d("t1"),
        "a",
        "1",
        "state",
        "PENDING",
    ]);
    run(&["ZADD", &format!("{base}delayed"), "1", due]);
    run(&[
        "HSET",
        &format!("{base}j:{dead}"),
        "d",
        &d("t2"),
        "a",
        "1",
        "state",
        "FAILURE",
    ]);
    run(&["ZADD", &format!("{base}dead"), &now_ms().to_string(), dead]);
    // This minute's outcomes as that version counted them: all queues' in one field.
    let minute = format!("{base}minute:{}", now_ms() / 60_000);
    run(&["HINCRBY", &minute, "SUCCESS", "2"]);

    jobs.maintain().await.unwrap();
    let counts = jobs.counts().await.unwrap();
    assert_eq!(
        (counts.queue("mail").queued, counts.queue("mail").dead),
        (2, 1),
        "{counts:?}"
    );
    let listed = jobs.list("mail", Listing::Dead, 0, 10).await.unwrap();
    assert_eq!(listed.jobs.len(), 1);
    assert_eq!(listed.jobs[0].id, dead);
    for old in ["delayed", "dead"] {
        let key = format!("{base}{old}");
        let size = redis.command_on_key(&key, &["ZCARD", &key]);
        assert_eq!(size.trim(), ":0", "{old}: {size}");
    }
    // Those outcomes count in all queues' throughput, in no queue's.
    let throughput = jobs.throughput(2).await.unwrap();
    let succeeded: u64 = throughput.total.iter().map(|m| m.succeeded).sum();
    assert_eq!(succeeded, 2, "{throughput:?}");
    assert!(throughput.queues.is_empty(), "{throughput:?}");
    // The dead letter can be re-driven from its new place.
    assert!(jobs.redrive(dead).await.unwrap());
    assert_eq!(jobs.queued("mail").await.unwrap(), 3);
}
