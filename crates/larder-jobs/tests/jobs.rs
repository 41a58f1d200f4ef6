//! The job queue on a real redis-server: delivery, leases and fencing, retries and
//! dead letters, delays, revocation, fairness, outages, shutdown, periodic tasks.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_core::{Config, ConfigBuilder, Handle};
use larder_jobs::{
    EnqueueOptions, JobError, JobState, Jobs, JobsConfig, RunningWorker, Scheduler, TaskError,
    TaskRef, Worker,
};
use larder_testing::{eventually, on_every_topology, Redis, RedisServer};

const ADD: TaskRef<(i64, i64), i64> = TaskRef::new("add");
const ECHO: TaskRef<String, String> = TaskRef::new("echo");
const SLEEPY: TaskRef<u64, String> = TaskRef::new("sleepy");
const FLAKY: TaskRef<u32, String> = TaskRef::new("flaky");

fn handle_on(vars: &[(&str, String)]) -> Handle {
    Handle::new(
        ConfigBuilder::from_config(Config::from_vars(vars.iter().cloned()).unwrap())
            .op_timeout(Duration::from_millis(500))
            .breaker_threshold(3)
            .breaker_cooldown(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// Jobs on `redis`, configured from its topology's variables.
fn jobs(redis: &Redis, config: JobsConfig) -> Jobs {
    Jobs::with_config(handle_on(&redis.vars()), config)
}

/// Jobs on one node (for tests of one server's settings).
fn jobs_on_node(server: &RedisServer, config: JobsConfig) -> Jobs {
    Jobs::with_config(handle_on(&[("REDIS_URL", server.url())]), config)
}

fn quick() -> JobsConfig {
    JobsConfig::default()
        .lease(Duration::from_millis(600))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(200))
}

const WAIT: Duration = Duration::from_secs(10);

/// A worker running `ECHO` on `slots` slots that records each job's argument as the
/// job starts, in start order.
fn recording_echo_worker(jobs: &Jobs, slots: usize) -> (RunningWorker, Arc<Mutex<Vec<String>>>) {
    let started = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&started);
    let worker = Worker::new(jobs.clone())
        .concurrency(slots)
        .task(ECHO, move |s, _| {
            log.lock().unwrap().push(s.clone());
            async move { Ok(s) }
        })
        .spawn();
    (worker, started)
}

on_every_topology!(
    async fn runs_jobs_stores_results_and_honours_idempotency_keys(redis: &Redis) {
        let jobs = jobs(redis, quick());
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        let worker = Worker::new(jobs.clone())
            .task(ADD, move |(a, b), _| {
                r.fetch_add(1, Ordering::SeqCst);
                async move { Ok(a + b) }
            })
            .spawn();
        let id = jobs.delay(ADD, &(2, 40)).await.unwrap();
        assert_eq!(jobs.wait(ADD, &id, WAIT).await.unwrap(), 42);
        let status = jobs.status(&id).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Success);
        assert_eq!(status.task, "add");

        let opts = || EnqueueOptions::new().id("sum-once").tenant("7");
        let a = jobs.enqueue(ADD, &(1, 1), opts()).await.unwrap();
        let b = jobs.enqueue(ADD, &(1, 1), opts()).await.unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("sum-once", "sum-once"));
        assert_eq!(jobs.wait(ADD, &a, WAIT).await.unwrap(), 2);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "one run per job, the duplicate made none"
        );
        assert_eq!(
            jobs.status(&a).await.unwrap().unwrap().tenant.as_deref(),
            Some("7")
        );
        // In one batch, a taken id between generated ones and a new caller's id: the
        // check is per job, so exactly the other two run.
        let batch = jobs
            .enqueue_many(
                ADD,
                [
                    (&(2, 2), EnqueueOptions::new()),
                    (&(1, 1), opts()),
                    (&(3, 3), EnqueueOptions::new().id("sum-new")),
                ],
            )
            .await
            .unwrap();
        assert_eq!(batch[1], "sum-once");
        assert_eq!(jobs.wait(ADD, &batch[0], WAIT).await.unwrap(), 4);
        assert_eq!(jobs.wait(ADD, &batch[2], WAIT).await.unwrap(), 6);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "the batch's taken id made no run"
        );
        // Jobs nobody waits for leave no completion-signal key behind.
        let args: Vec<(i64, i64)> = (0..20).map(|i| (i, 1)).collect();
        let quiet = jobs
            .enqueue_many(ADD, args.iter().map(|a| (a, EnqueueOptions::new())))
            .await
            .unwrap();
        assert!(
            eventually(100, Duration::from_millis(50), || async {
                let mut all = true;
                for id in &quiet {
                    all &= jobs.status(id).await.unwrap().unwrap().state == JobState::Success;
                }
                all
            })
            .await
        );
        let signals: String = redis
            .primaries()
            .iter()
            .map(|node| node.command(&["KEYS", "*done:*"]))
            .collect();
        assert!(
            quiet.iter().all(|id| !signals.contains(id.as_str())),
            "signals only for waited jobs: {signals}"
        );
        // The waited jobs: `id`, "sum-once" and the batch's two new ones (their
        // signals may have expired already).
        let waited = [
            id.as_str(),
            "sum-once",
            batch[0].as_str(),
            batch[2].as_str(),
        ];
        assert!(
            signals
                .lines()
                .filter_map(|l| l.split_once("done:").map(|(_, job)| job))
                .all(|job| waited.contains(&job)),
            "{signals}"
        );
        worker.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn waiting_for_a_result_does_not_poll(redis: &Redis) {
        // A long lease: no renewal (whose script reads the job) during the wait.
        let jobs = jobs(redis, quick().lease(Duration::from_secs(30)));
        let worker = Worker::new(jobs.clone())
            .task(SLEEPY, |ms, _| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(format!("slept {ms}"))
            })
            .spawn();
        let id = jobs.delay(SLEEPY, &1500).await.unwrap();
        let calls = |c: &str| -> u64 {
            redis
                .command_calls()
                .values()
                .map(|calls| calls.get(c).copied().unwrap_or(0))
                .sum()
        };
        let before = (calls("blmove"), calls("hmget"));
        assert_eq!(jobs.wait(SLEEPY, &id, WAIT).await.unwrap(), "slept 1500");
        let after = (calls("blmove"), calls("hmget"));
        let delta = |c: &str| match c {
            "blmove" => after.0 - before.0,
            _ => after.1 - before.1,
        };
        // The waiter: a status read before and after one blocking BLMOVE; the worker's
        // fetch and start scripts read the job once each. A poll every 10 ms would have
        // made about 150 reads.
        assert!(delta("blmove") >= 1, "{after:?}");
        assert!(
            delta("hmget") <= 4,
            "status reads while waiting: {}",
            delta("hmget")
        );
        worker.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn a_dead_workers_job_runs_again_and_its_late_outcome_is_fenced_off(redis: &Redis) {
        let jobs = jobs(redis, quick());
        // Worker A stalls (no lease renewal) inside a slow task, its one slot taken
        // (a stalled worker fetches nothing either).
        let stalled = Worker::new(jobs.clone())
            .concurrency(1)
            .renew_leases(false)
            .task(ECHO, |s, _| async move {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                Ok(format!("A:{s}"))
            })
            .spawn();
        let id = jobs.delay(ECHO, &"x".to_owned()).await.unwrap();
        assert!(
            eventually(50, Duration::from_millis(50), || async {
                jobs.status(&id).await.unwrap().unwrap().state == JobState::Started
            })
            .await
        );
        // Worker B arrives; A's lease expires and B's maintenance returns the job.
        let b = Worker::new(jobs.clone())
            .task(ECHO, |s, _| async move { Ok(format!("B:{s}")) })
            .spawn();
        assert_eq!(jobs.wait(ECHO, &id, WAIT).await.unwrap(), "B:x");
        // A finishes later: its outcome is rejected (stale token).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let status = jobs.status(&id).await.unwrap().unwrap();
        assert_eq!(
            status.result,
            Some(serde_json::json!("B:x")),
            "A's late result was fenced off"
        );
        stalled.shutdown(WAIT).await;
        b.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn a_crashed_worker_loses_no_job(redis: &Redis) {
        let jobs = jobs(redis, quick());
        let crashing = Worker::new(jobs.clone())
            .task(SLEEPY, |ms, _| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok("crashing".to_owned())
            })
            .spawn();
        let id = jobs.delay(SLEEPY, &60_000).await.unwrap();
        assert!(
            eventually(50, Duration::from_millis(50), || async {
                jobs.status(&id).await.unwrap().unwrap().state == JobState::Started
            })
            .await
        );
        crashing.abort();
        let rescuer = Worker::new(jobs.clone())
            .task(SLEEPY, |_, _| async move { Ok("rescued".to_owned()) })
            .spawn();
        assert_eq!(jobs.wait(SLEEPY, &id, WAIT).await.unwrap(), "rescued");
        rescuer.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn retries_back_off_then_dead_letter_keeps_the_error_and_redrive_works(redis: &Redis) {
        let jobs = jobs(redis, quick().max_retries(2));
        let healthy = Arc::new(AtomicUsize::new(0));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (h, at) = (Arc::clone(&healthy), Arc::clone(&attempts));
        let worker = Worker::new(jobs.clone())
            .task(FLAKY, move |n, ctx| {
                at.lock()
                    .unwrap()
                    .push((ctx.attempt(), std::time::Instant::now()));
                let ok = h.load(Ordering::SeqCst) == 1;
                async move {
                    if ok {
                        Ok(format!("ok {n}"))
                    } else {
                        Err(TaskError::retry("database is down"))
                    }
                }
            })
            .spawn();
        let id = jobs.delay(FLAKY, &1).await.unwrap();
        match jobs.wait(FLAKY, &id, WAIT).await {
            Err(JobError::Failed { state, error, .. }) => {
                assert_eq!(state, JobState::Failure);
                assert!(error.contains("database is down"), "{error}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        let seen = attempts.lock().unwrap().clone();
        assert_eq!(
            seen.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // Backoff: each retry waited at least half its base delay (50 ms, then 100 ms).
        assert!(seen[1].1 - seen[0].1 >= Duration::from_millis(25));
        assert!(seen[2].1 - seen[1].1 >= Duration::from_millis(50));
        let status = jobs.status(&id).await.unwrap().unwrap();
        assert_eq!(status.attempts, 3);
        assert_eq!(jobs.dead(10).await.unwrap(), vec![id.clone()]);

        healthy.store(1, Ordering::SeqCst);
        assert!(jobs.redrive(&id).await.unwrap());
        assert!(!jobs.redrive(&id).await.unwrap(), "not dead any more");
        assert_eq!(jobs.wait(FLAKY, &id, WAIT).await.unwrap(), "ok 1");
        assert!(jobs.dead(10).await.unwrap().is_empty());
        worker.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn malformed_payloads_and_unknown_tasks_fail_clearly_and_lose_nothing(redis: &Redis) {
        let jobs = jobs(redis, quick());
        let worker = Worker::new(jobs.clone())
            .task(ADD, |(a, b), _| async move { Ok(a + b) })
            .spawn();
        // Same task name, wrong argument type (a producer on an older version).
        const ADD_WRONG: TaskRef<String, i64> = TaskRef::new("add");
        let bad = jobs
            .delay(ADD_WRONG, &"two and two".to_owned())
            .await
            .unwrap();
        const NOBODY: TaskRef<u8, u8> = TaskRef::new("nobody-runs-this");
        let unknown = jobs.delay(NOBODY, &1).await.unwrap();
        for (id, needle) in [(&bad, "malformed arguments"), (&unknown, "no task named")] {
            let status = jobs.wait_status(id, WAIT).await.unwrap();
            assert_eq!(status.state, JobState::Failure, "{status:?}");
            assert!(
                status.error.as_deref().unwrap_or("").contains(needle),
                "{status:?}"
            );
        }
        // Both are kept in the dead-letter set for a fix and a re-drive.
        let dead = jobs.dead(10).await.unwrap();
        assert!(dead.contains(&bad) && dead.contains(&unknown), "{dead:?}");
        // The worker kept going.
        let ok = jobs.delay(ADD, &(1, 2)).await.unwrap();
        assert_eq!(jobs.wait(ADD, &ok, WAIT).await.unwrap(), 3);
        // Hostile options are refused before anything is stored.
        for opts in [
            EnqueueOptions::new().queue("a:b"),
            EnqueueOptions::new().tenant("1:*"),
            EnqueueOptions::new().id("has space"),
            EnqueueOptions::new().priority(10),
        ] {
            assert!(matches!(
                jobs.enqueue(ADD, &(1, 1), opts).await,
                Err(JobError::Invalid(_))
            ));
        }
        worker.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn batched_fetches_still_share_slots_between_tenants(redis: &Redis) {
        let jobs = jobs(redis, quick());
        let a: Vec<String> = (0..2000).map(|i| format!("a{i}")).collect();
        jobs.enqueue_many(
            ECHO,
            a.iter().map(|s| (s, EnqueueOptions::new().tenant("A"))),
        )
        .await
        .unwrap();
        let b: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
        let b_ids = jobs
            .enqueue_many(
                ECHO,
                b.iter().map(|s| (s, EnqueueOptions::new().tenant("B"))),
            )
            .await
            .unwrap();
        // Eight slots: a fetch takes up to eight jobs, each tenant at most its share.
        let (worker, order) = recording_echo_worker(&jobs, 8);
        for id in &b_ids {
            jobs.wait(ECHO, id, WAIT).await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let last_b = order.iter().rposition(|s| s.starts_with('b')).unwrap();
        // Fetches serve tenants in turn, each taking its share of the free slots, so
        // B's ten jobs start within the first few fetches; served in arrival order they
        // would wait behind all 2,000 of A's. A partitioned queue serves tenants in
        // turn within each partition, and the worker visits the partitions in turn:
        // B's jobs, spread over them, start within a few fetches per partition.
        assert!(
            last_b < 50 * jobs.partitions(),
            "B's last job started {last_b}th: {:?}",
            &order[..order.len().min(60)]
        );
        worker.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn corrupt_job_records_are_dead_lettered_with_a_clear_error(redis: &Redis) {
        let jobs = jobs(redis, quick());
        // A ready job and a delayed one whose records are then damaged in Redis, as a
        // record from another version or a stray write would be.
        let ready = jobs
            .enqueue(ADD, &(1, 1), EnqueueOptions::new().id("corrupt-ready"))
            .await
            .unwrap();
        let delayed = jobs
            .enqueue(
                ADD,
                &(2, 2),
                EnqueueOptions::new()
                    .id("corrupt-delayed")
                    .countdown(Duration::from_millis(300)),
            )
            .await
            .unwrap();
        let key_of = |id: &str| jobs.record_key(id).unwrap();
        for id in [&ready, &delayed] {
            let key = key_of(id);
            assert_eq!(redis.command_on_key(&key, &["EXISTS", &key]), ":1\r\n");
            assert!(redis
                .command_on_key(&key, &["HSET", &key, "d", "garbage"])
                .starts_with(':'));
        }
        // Someone waits for the delayed one before any worker runs: the maintenance
        // that fails it must wake them.
        let waiter = {
            let jobs = jobs.clone();
            let id = delayed.clone();
            tokio::spawn(async move { jobs.wait_status(&id, WAIT).await })
        };
        let delayed_key = key_of(&delayed);
        assert!(
            eventually(50, Duration::from_millis(20), || async {
                redis.command_on_key(&delayed_key, &["HEXISTS", &delayed_key, "waited"]) == ":1\r\n"
            })
            .await,
            "the waiter registered"
        );
        let worker = Worker::new(jobs.clone())
            .task(ADD, |(a, b), _| async move { Ok(a + b) })
            .spawn();
        for id in [&ready, &delayed] {
            let status = jobs.wait_status(id, WAIT).await.unwrap();
            assert_eq!(status.state, JobState::Failure, "{status:?}");
            assert!(
                status
                    .error
                    .as_deref()
                    .unwrap_or("")
                    .contains("malformed job record"),
                "{status:?}"
            );
        }
        let woken = waiter.await.unwrap().unwrap();
        assert_eq!(woken.state, JobState::Failure);
        let signal = redis.command_on_key(&delayed_key, &["KEYS", &format!("*done:{delayed}")]);
        assert!(
            signal.contains(&format!("done:{delayed}")),
            "the waiter was signalled: {signal}"
        );
        let dead = jobs.dead(10).await.unwrap();
        assert!(dead.contains(&ready) && dead.contains(&delayed), "{dead:?}");
        // Nothing else was held up.
        let ok = jobs.delay(ADD, &(3, 4)).await.unwrap();
        assert_eq!(jobs.wait(ADD, &ok, WAIT).await.unwrap(), 7);
        worker.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn delayed_jobs_run_once_after_their_eta_and_any_backlog_drains(redis: &Redis) {
        let jobs = jobs(redis, quick());
        // A big backlog of due delayed jobs drains in bounded batches (no worker yet).
        let args: Vec<(i64, i64)> = (0..5000).map(|i| (i, i)).collect();
        let ids = jobs
            .enqueue_many(
                ADD,
                args.iter()
                    .map(|a| (a, EnqueueOptions::new().countdown(Duration::from_secs(3)))),
            )
            .await
            .unwrap();
        assert_eq!(ids.len(), 5000);
        assert_eq!(jobs.queued("default").await.unwrap(), 0, "all delayed");
        assert_eq!(jobs.maintain().await.unwrap(), (0, 0), "none due yet");
        tokio::time::sleep(Duration::from_millis(3100)).await;
        let (promoted, _) = jobs.maintain().await.unwrap();
        assert_eq!(promoted, 5000);
        assert_eq!(jobs.queued("default").await.unwrap(), 5000);

        // A job with an ETA runs once, after it.
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        let started = std::time::SystemTime::now();
        let id = jobs
            .enqueue(
                ECHO,
                &"later".to_owned(),
                EnqueueOptions::new()
                    .queue("eta")
                    .countdown(Duration::from_millis(1500)),
            )
            .await
            .unwrap();
        let worker = Worker::new(jobs.clone())
            .queues(&[("eta", 1)])
            .task(ECHO, move |s, _| {
                r.fetch_add(1, Ordering::SeqCst);
                async move { Ok(s) }
            })
            .spawn();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            jobs.status(&id).await.unwrap().unwrap().state,
            JobState::Pending
        );
        assert_eq!(jobs.wait(ECHO, &id, WAIT).await.unwrap(), "later");
        assert!(started.elapsed().unwrap() >= Duration::from_millis(1500));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        worker.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn revoked_jobs_never_run_and_running_ones_are_cancelled(redis: &Redis) {
        let jobs = jobs(redis, quick());
        let runs = Arc::new(AtomicUsize::new(0));
        let queued = jobs.delay(ECHO, &"queued".to_owned()).await.unwrap();
        let delayed = jobs
            .enqueue(
                ECHO,
                &"delayed".to_owned(),
                EnqueueOptions::new().countdown(Duration::from_millis(300)),
            )
            .await
            .unwrap();
        assert_eq!(jobs.revoke(&queued).await.unwrap(), "REVOKED");
        assert_eq!(jobs.revoke(&delayed).await.unwrap(), "REVOKED");
        assert_eq!(jobs.revoke("never-enqueued").await.unwrap(), "REVOKED");
        let later = jobs
            .enqueue(
                ECHO,
                &"x".to_owned(),
                EnqueueOptions::new().id("never-enqueued"),
            )
            .await
            .unwrap();
        assert_eq!(later, "never-enqueued");

        let r = Arc::clone(&runs);
        let cancelled = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&cancelled);
        let worker = Worker::new(jobs.clone())
            .task(ECHO, move |s, _| {
                r.fetch_add(1, Ordering::SeqCst);
                async move { Ok(s) }
            })
            .task(SLEEPY, move |_, ctx| {
                let c = Arc::clone(&c);
                async move {
                    ctx.cancelled().await;
                    c.fetch_add(1, Ordering::SeqCst);
                    Ok("stopped".to_owned())
                }
            })
            .spawn();
        let running = jobs.delay(SLEEPY, &0).await.unwrap();
        assert!(
            eventually(50, Duration::from_millis(50), || async {
                jobs.status(&running).await.unwrap().unwrap().state == JobState::Started
            })
            .await
        );
        assert_eq!(jobs.revoke(&running).await.unwrap(), "REVOKING");
        let status = jobs.wait_status(&running, WAIT).await.unwrap();
        assert_eq!(status.state, JobState::Revoked);
        assert_eq!(
            cancelled.load(Ordering::SeqCst),
            1,
            "the task saw the cancellation"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0, "no revoked job ran");
        for id in [&queued, &delayed, &later] {
            assert_eq!(
                jobs.status(id).await.unwrap().unwrap().state,
                JobState::Revoked
            );
        }
        worker.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn a_job_past_its_expiry_is_revoked_instead_of_run(redis: &Redis) {
        let jobs = jobs(redis, quick());
        let soon = std::time::SystemTime::now() + Duration::from_millis(100);
        let later = std::time::SystemTime::now() + Duration::from_secs(3600);
        let stale = jobs
            .enqueue(
                ECHO,
                &"stale".to_owned(),
                EnqueueOptions::new().expires(soon),
            )
            .await
            .unwrap();
        let fresh = jobs
            .enqueue(
                ECHO,
                &"fresh".to_owned(),
                EnqueueOptions::new().expires(later),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (worker, ran) = recording_echo_worker(&jobs, 8);
        assert_eq!(jobs.wait(ECHO, &fresh, WAIT).await.unwrap(), "fresh");
        let status = jobs.wait_status(&stale, WAIT).await.unwrap();
        assert_eq!(status.state, JobState::Revoked);
        assert_eq!(status.error.as_deref(), Some("expired before it started"));
        assert_eq!(status.task, "echo");
        assert_eq!(*ran.lock().unwrap(), vec!["fresh".to_owned()]);
        worker.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn one_tenants_backlog_does_not_delay_another_tenants_job(redis: &Redis) {
        let jobs = jobs(redis, quick());
        let backlog: Vec<String> = (0..10_000).map(|i| format!("a{i}")).collect();
        jobs.enqueue_many(
            ECHO,
            backlog
                .iter()
                .map(|s| (s, EnqueueOptions::new().tenant("A"))),
        )
        .await
        .unwrap();
        let b = jobs
            .enqueue(ECHO, &"b".to_owned(), EnqueueOptions::new().tenant("B"))
            .await
            .unwrap();
        let (worker, order) = recording_echo_worker(&jobs, 1);
        jobs.wait(ECHO, &b, WAIT).await.unwrap();
        let position = order.lock().unwrap().iter().position(|s| s == "b").unwrap();
        // One slot: each fetch takes one job, from the partitions in turn, and within
        // B's partition A and B take turns. So before B's job run at most one of A's
        // from each other partition per visit, twice, and one in B's partition.
        let partitions = jobs.partitions();
        assert!(
            position < 2 * partitions,
            "tenant B's job ran after {position} of tenant A's"
        );
        worker.shutdown(Duration::from_secs(2)).await;
    }
);

on_every_topology!(
    async fn redis_down_is_a_typed_error_and_workers_resume_by_themselves(redis: &mut Redis) {
        let jobs = jobs(redis, quick());
        let worker = Worker::new(jobs.clone())
            .task(ADD, |(a, b), _| async move { Ok(a + b) })
            .spawn();
        redis.stop();
        let err = jobs.delay(ADD, &(1, 1)).await.unwrap_err();
        assert!(matches!(err, JobError::Unavailable(_)), "{err}");
        tokio::time::sleep(Duration::from_millis(500)).await; // the worker is paused now
        redis.restart();
        let id = eventually(50, Duration::from_millis(100), || async {
            jobs.delay(ADD, &(20, 22)).await.is_ok()
        })
        .await;
        assert!(id, "enqueue works again");
        let id = jobs.delay(ADD, &(1, 2)).await.unwrap();
        assert_eq!(
            jobs.wait(ADD, &id, WAIT).await.unwrap(),
            3,
            "the worker resumed"
        );
        worker.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn graceful_shutdown_hands_unfinished_jobs_back(redis: &Redis) {
        let jobs = jobs(redis, quick());
        let worker = Worker::new(jobs.clone())
            .shutdown_timeout(Duration::from_millis(200))
            .task(SLEEPY, |ms, _| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok("done".to_owned())
            })
            .spawn();
        let quick_job = jobs.delay(SLEEPY, &10).await.unwrap();
        let long_job = jobs.delay(SLEEPY, &60_000).await.unwrap();
        assert!(
            eventually(50, Duration::from_millis(50), || async {
                jobs.status(&long_job).await.unwrap().unwrap().state == JobState::Started
            })
            .await
        );
        worker.shutdown(WAIT).await;
        assert_eq!(
            jobs.status(&quick_job).await.unwrap().unwrap().state,
            JobState::Success
        );
        assert_eq!(
            jobs.status(&long_job).await.unwrap().unwrap().state,
            JobState::Pending
        );
        assert_eq!(
            jobs.queued("default").await.unwrap(),
            1,
            "handed back, not lost"
        );
    }
);

on_every_topology!(
    async fn task_timeouts_fail_and_rate_limits_space_starts_across_workers(redis: &Redis) {
        let jobs = jobs(redis, quick().max_retries(0));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let make = |starts: Arc<Mutex<Vec<std::time::Instant>>>| {
            Worker::new(jobs.clone())
                .rate_limit(ECHO, "2/second")
                .unwrap()
                .task(ECHO, move |s, _| {
                    starts.lock().unwrap().push(std::time::Instant::now());
                    async move { Ok(s) }
                })
                .task(SLEEPY, |ms, _| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok("late".to_owned())
                })
                .spawn()
        };
        let (w1, w2) = (make(Arc::clone(&starts)), make(Arc::clone(&starts)));
        let slow = jobs
            .enqueue(
                SLEEPY,
                &5_000,
                EnqueueOptions::new().timeout(Duration::from_millis(100)),
            )
            .await
            .unwrap();
        let status = jobs.wait_status(&slow, WAIT).await.unwrap();
        assert_eq!(status.state, JobState::Failure);
        assert!(status.error.unwrap_or_default().contains("timed out"));

        let args: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let ids = jobs
            .enqueue_many(ECHO, args.iter().map(|a| (a, EnqueueOptions::new())))
            .await
            .unwrap();
        for id in &ids {
            jobs.wait_status(id, WAIT).await.unwrap();
        }
        let mut s = starts.lock().unwrap().clone();
        s.sort();
        assert_eq!(s.len(), 5);
        // 2/second shared by both workers: 5 starts span at least ~1.5 s (burst 1 + 4
        // at 500 ms), far more than the few ms they take unlimited.
        assert!(
            s[4] - s[0] >= Duration::from_millis(1400),
            "{:?}",
            s[4] - s[0]
        );
        w1.shutdown(WAIT).await;
        w2.shutdown(WAIT).await;
    }
);

on_every_topology!(
    async fn periodic_ticks_fire_once_across_schedulers(redis: &Redis) {
        let jobs = jobs(redis, quick());
        let make = || {
            Scheduler::new(jobs.clone())
                .every("tick", Duration::from_secs(3600), ECHO, "hourly".to_owned())
                // This hour's tick may be up to an hour old: let it count.
                .catch_up(Duration::from_secs(3600))
                .cron(
                    "cron",
                    "* * * * *",
                    "Europe/Madrid",
                    ECHO,
                    "minutely".to_owned(),
                )
                .unwrap()
        };
        let (s1, s2, s3) = (make(), make(), make());
        let (a, b, c) = tokio::join!(s1.run_once(), s2.run_once(), s3.run_once());
        let fired = a.unwrap() + b.unwrap() + c.unwrap();
        assert_eq!(
            fired, 2,
            "each entry's tick enqueued once across three schedulers"
        );
        assert_eq!(
            s1.run_once().await.unwrap(),
            0,
            "and not again in the same tick"
        );
        assert_eq!(jobs.queued("default").await.unwrap(), 2);
        assert!(matches!(
            Scheduler::new(jobs.clone()).cron(
                "x",
                "0 7 * * *",
                "Mars/Olympus",
                ECHO,
                String::new()
            ),
            Err(JobError::Invalid(_))
        ));
        assert!(matches!(
            Scheduler::new(jobs.clone()).cron("x", "not cron", "UTC", ECHO, String::new()),
            Err(JobError::Invalid(_))
        ));
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_backend_has_the_same_semantics() {
    let jobs = Jobs::with_config(Handle::in_process(), quick().max_retries(1));
    assert!(jobs.is_in_process());
    let fails = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&fails);
    let worker = Worker::new(jobs.clone())
        .task(ADD, |(a, b), _| async move { Ok(a + b) })
        .task(FLAKY, move |_, _| {
            f.fetch_add(1, Ordering::SeqCst);
            async { Err::<String, _>(TaskError::retry("nope")) }
        })
        .spawn();
    let id = jobs.delay(ADD, &(3, 4)).await.unwrap();
    assert_eq!(jobs.wait(ADD, &id, WAIT).await.unwrap(), 7);
    let dup = jobs
        .enqueue(ADD, &(0, 0), EnqueueOptions::new().id(id.clone()))
        .await
        .unwrap();
    assert_eq!(dup, id);
    let bad = jobs.delay(FLAKY, &1).await.unwrap();
    assert!(matches!(
        jobs.wait(FLAKY, &bad, WAIT).await,
        Err(JobError::Failed { .. })
    ));
    assert_eq!(fails.load(Ordering::SeqCst), 2);
    assert_eq!(jobs.dead(5).await.unwrap(), vec![bad.clone()]);
    let queued = jobs
        .enqueue(
            ADD,
            &(1, 1),
            EnqueueOptions::new().countdown(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(jobs.revoke(&queued).await.unwrap(), "REVOKED");
    worker.shutdown(WAIT).await;
}

on_every_topology!(
    async fn without_started_tracking_a_running_job_shows_received(redis: &Redis) {
        let jobs = jobs(redis, quick());
        let worker = Worker::new(jobs.clone())
            .track_started(false)
            .task(SLEEPY, |ms, _| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok("done".to_owned())
            })
            .spawn();
        let id = jobs.delay(SLEEPY, &800).await.unwrap();
        assert!(
            eventually(50, Duration::from_millis(20), || async {
                jobs.status(&id).await.unwrap().unwrap().state == JobState::Received
            })
            .await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            jobs.status(&id).await.unwrap().unwrap().state,
            JobState::Received,
            "never STARTED"
        );
        assert_eq!(jobs.wait(SLEEPY, &id, WAIT).await.unwrap(), "done");
        worker.shutdown(WAIT).await;
    }
);

/// How many times each task ran, by the job's argument.
type Runs = Arc<Mutex<Vec<String>>>;

fn runs_of(runs: &Runs, arg: &str) -> usize {
    runs.lock().unwrap().iter().filter(|a| *a == arg).count()
}

/// A job revoked while it runs never runs again, whichever way it would go back
/// to a queue: its task's retryable error (before a renewal saw the flag), its
/// worker's death (the lease runs out), or a shutdown's hand-back.
async fn revoked_stays_revoked(jobs: Jobs) {
    let runs: Runs = Arc::default();
    let worker = |renew: bool| {
        let log = Arc::clone(&runs);
        Worker::new(jobs.clone())
            .renew_leases(renew)
            .shutdown_timeout(Duration::from_millis(100))
            .task(FLAKY, move |n, _| {
                log.lock().unwrap().push(format!("flaky-{n}"));
                async move {
                    tokio::time::sleep(Duration::from_millis(u64::from(n))).await;
                    Err::<String, _>(TaskError::retry("try again"))
                }
            })
    };
    let started = |id: String| {
        let jobs = jobs.clone();
        async move {
            eventually(100, Duration::from_millis(20), || async {
                jobs.status(&id).await.unwrap().unwrap().state == JobState::Started
            })
            .await
        }
    };
    // The record says STARTED just before the task is called: a step that kills or
    // stops the worker waits for the call too.
    let called = |arg: &'static str| {
        let runs = Arc::clone(&runs);
        async move {
            eventually(100, Duration::from_millis(20), || async {
                runs_of(&runs, arg) == 1
            })
            .await
        }
    };
    let revoked = |id: String| {
        let jobs = jobs.clone();
        async move {
            let status = jobs.wait_status(&id, WAIT).await.unwrap();
            assert_eq!(status.state, JobState::Revoked, "{status:?}");
        }
    };

    // 1. The task fails (retryable) soon after the revoke, before any renewal.
    let w = worker(true).spawn();
    let id = jobs.delay(FLAKY, &50).await.unwrap();
    assert!(started(id.clone()).await);
    assert_eq!(jobs.revoke(&id).await.unwrap(), "REVOKING");
    revoked(id).await;
    w.shutdown(WAIT).await;
    assert_eq!(runs_of(&runs, "flaky-50"), 1);

    // 2. The worker dies mid-task (no renewal again): its lease runs out.
    let stalled = worker(false).spawn();
    let id = jobs.delay(FLAKY, &60_000).await.unwrap();
    assert!(started(id.clone()).await);
    assert!(called("flaky-60000").await);
    assert_eq!(jobs.revoke(&id).await.unwrap(), "REVOKING");
    stalled.abort();
    let rescuer = worker(true).spawn();
    revoked(id).await;

    // 3. Shutdown hands the running job back before a renewal saw the flag.
    let id = jobs.delay(FLAKY, &30_000).await.unwrap();
    assert!(started(id.clone()).await);
    assert!(called("flaky-30000").await);
    assert_eq!(jobs.revoke(&id).await.unwrap(), "REVOKING");
    rescuer.shutdown(WAIT).await;
    revoked(id).await;

    let after = worker(true).spawn();
    tokio::time::sleep(Duration::from_millis(800)).await;
    after.shutdown(WAIT).await;
    assert_eq!(runs_of(&runs, "flaky-60000"), 1, "{runs:?}");
    assert_eq!(runs_of(&runs, "flaky-30000"), 1, "{runs:?}");
}

on_every_topology!(
    async fn a_revoked_job_never_runs_again_whatever_path_it_takes(redis: &Redis) {
        revoked_stays_revoked(jobs(redis, quick())).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_a_revoked_job_never_runs_again() {
    revoked_stays_revoked(Jobs::with_config(Handle::in_process(), quick())).await;
}

/// A job whose lease runs out again and again (it kills or freezes its worker) is
/// delivered at most its retry budget's worth of times, then dead-lettered with a
/// clear reason, instead of going round forever.
async fn poison_jobs_are_dead_lettered(jobs: Jobs) {
    let runs: Runs = Arc::default();
    let log = Arc::clone(&runs);
    // No renewal: every lease runs out while the task "hangs".
    let worker = Worker::new(jobs.clone())
        .renew_leases(false)
        .task(SLEEPY, move |ms, _| {
            log.lock().unwrap().push("poison".into());
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok("never".to_owned())
            }
        })
        .spawn();
    let id = jobs.delay(SLEEPY, &600_000).await.unwrap();
    let status = jobs
        .wait_status(&id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(status.state, JobState::Failure, "{status:?}");
    let error = status.error.unwrap_or_default();
    assert!(error.contains("lease ran out 3 times"), "{error}");
    assert!(jobs.dead(10).await.unwrap().contains(&id));
    // Delivered once and redelivered twice: the budget of max_retries = 2.
    assert_eq!(runs_of(&runs, "poison"), 3);
    worker.abort();
}

on_every_topology!(
    async fn a_job_that_keeps_killing_its_worker_is_dead_lettered(redis: &Redis) {
        poison_jobs_are_dead_lettered(jobs(redis, quick().max_retries(2))).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_a_job_that_keeps_killing_its_worker_is_dead_lettered() {
    poison_jobs_are_dead_lettered(Jobs::with_config(
        Handle::in_process(),
        quick().max_retries(2),
    ))
    .await;
}

/// A Redis whose `maxmemory-policy` evicts any key would drop queued jobs
/// silently: the queue refuses it with a clear error and writes nothing, workers
/// take nothing from it, unless eviction is explicitly allowed. `volatile-*`
/// policies (only keys with an expiry go) are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_refused_unless_allowed() {
    let redis = RedisServer::builder()
        .config("maxmemory-policy", "allkeys-lru")
        .start();
    let refusing = jobs_on_node(&redis, quick());
    let err = refusing.delay(ADD, &(1, 2)).await.unwrap_err();
    assert!(matches!(err, JobError::UnsafeRedis(_)), "{err:?}");
    let text = err.to_string();
    for needle in [
        "allkeys-lru",
        "noeviction",
        "JOBS_REDIS_URL",
        "JOBS_ALLOW_EVICTION",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert_eq!(redis.command(&["DBSIZE"]), ":0\r\n", "nothing written");

    let allowed = jobs_on_node(&redis, quick().allow_eviction(true));
    let id = allowed.delay(ADD, &(1, 2)).await.unwrap();
    let worker = Worker::new(refusing.clone())
        .task(ADD, |(a, b), _| async move { Ok(a + b) })
        .spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        allowed.status(&id).await.unwrap().unwrap().state,
        JobState::Pending,
        "a refusing worker takes nothing"
    );
    worker.shutdown(WAIT).await;
    let worker = Worker::new(allowed.clone())
        .task(ADD, |(a, b), _| async move { Ok(a + b) })
        .spawn();
    assert_eq!(allowed.wait(ADD, &id, WAIT).await.unwrap(), 3);
    worker.shutdown(WAIT).await;

    let volatile = RedisServer::builder()
        .config("maxmemory-policy", "volatile-lru")
        .start();
    let jobs = jobs_on_node(&volatile, quick());
    assert!(jobs.delay(ADD, &(1, 2)).await.is_ok());
}

/// `JOBS_REDIS_URL` takes the forms of `REDIS_URL`; a bad one is an error naming
/// the variable, and its password never shows.
#[test]
fn jobs_redis_url_is_read_checked_and_redacted() {
    let config =
        JobsConfig::from_vars([("JOBS_REDIS_URL", "redis://:hunter2@127.0.0.1:6380/1")]).unwrap();
    let shown = format!("{config:?}");
    assert!(
        shown.contains("127.0.0.1:6380") && !shown.contains("hunter2"),
        "{shown}"
    );
    let err = JobsConfig::from_vars([("JOBS_REDIS_URL", "http://:hunter2@x")]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("JOBS_REDIS_URL:") && !text.contains("hunter2"),
        "{text}"
    );
    let err = JobsConfig::from_vars([("JOBS_ALLOW_EVICTION", "maybe")]).unwrap_err();
    assert!(err.to_string().starts_with("JOBS_ALLOW_EVICTION:"), "{err}");
}

/// On a cluster the queue spreads over its partitions' primaries: producers send
/// jobs to every partition (so every primary holds some), and a worker drains them
/// all, fetching from every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_spreads_over_the_cluster_primaries() {
    let redis = Redis::start(larder_testing::TopologyKind::Cluster);
    let jobs = jobs(&redis, quick());
    assert_eq!(jobs.partitions(), 3, "the cluster default");
    let args: Vec<(i64, i64)> = (0..300).map(|i| (i, 1)).collect();
    let ids = jobs
        .enqueue_many(ADD, args.iter().map(|a| (a, EnqueueOptions::new())))
        .await
        .unwrap();
    assert_eq!(jobs.queued("default").await.unwrap(), 300);
    let held: Vec<u64> = redis
        .primaries()
        .iter()
        .map(|n| {
            let reply = n.command(&["DBSIZE"]);
            reply.trim().trim_start_matches(':').parse().unwrap()
        })
        .collect();
    assert!(
        held.iter().all(|&keys| keys >= 50),
        "every primary holds a partition's share: {held:?}"
    );
    let scripts = || -> Vec<u64> {
        let calls = redis.command_calls();
        calls
            .values()
            .map(|c| c.get("evalsha").copied().unwrap_or(0))
            .collect()
    };
    let before = scripts();
    let worker = Worker::new(jobs.clone())
        .concurrency(8)
        .task(ADD, |(a, b), _| async move { Ok(a + b) })
        .spawn();
    for (id, (a, b)) in ids.iter().zip(&args) {
        assert_eq!(jobs.wait(ADD, id, WAIT).await.unwrap(), a + b);
    }
    assert_eq!(jobs.queued("default").await.unwrap(), 0);
    worker.shutdown(WAIT).await;
    let after = scripts();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a > b),
        "the worker ran scripts (fetches, completions) on every primary: {before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn the_partition_count_is_read_and_checked() {
    let c = JobsConfig::from_vars([("JOBS_PARTITIONS", "6")]).unwrap();
    assert!(format!("{c:?}").contains("partitions: Some(6)"), "{c:?}");
    for bad in ["0", "65", "many"] {
        let err = JobsConfig::from_vars([("JOBS_PARTITIONS", bad)]).unwrap_err();
        assert!(err.to_string().starts_with("JOBS_PARTITIONS:"), "{err}");
    }
    let one_node = Jobs::with_config(
        handle_on(&[("REDIS_URL", "redis://127.0.0.1:1".to_owned())]),
        JobsConfig::default(),
    );
    assert_eq!(one_node.partitions(), 1, "one node: one partition");
    let four = Jobs::with_config(
        handle_on(&[("REDIS_URL", "redis://127.0.0.1:1".to_owned())]),
        JobsConfig::default().partitions(4),
    );
    assert_eq!(four.partitions(), 4);
    let keys: std::collections::BTreeSet<String> = (0..100)
        .map(|i| {
            let id = format!("j{i}");
            let key = four.record_key(&id).unwrap();
            key.trim_end_matches(&format!("j:{id}")).to_owned()
        })
        .collect();
    assert_eq!(
        keys.len(),
        4,
        "ids spread over the four partitions: {keys:?}"
    );
}

/// Dead letters do not pile up for ever: each is kept for its time (its record
/// expires with it) and only the newest `max` are kept.
async fn dead_letters_are_capped(jobs: Jobs, redis: Option<&Redis>) {
    let worker = Worker::new(jobs.clone())
        .task(FLAKY, |_, _| async {
            Err::<String, _>(TaskError::fatal("broken"))
        })
        .spawn();
    // Ids of one partition (the cap applies per partition).
    let partition = |id: &str| {
        jobs.record_key(id)
            .map(|key| key.trim_end_matches(&format!("j:{id}")).to_owned())
    };
    let first = partition("dead-0");
    let chosen: Vec<String> = (0..)
        .map(|k| format!("dead-{k}"))
        .filter(|id| partition(id) == first)
        .take(5)
        .collect();
    let mut ids = Vec::new();
    for (n, id) in chosen.iter().enumerate() {
        let opts = EnqueueOptions::new().id(id.clone());
        let id = jobs
            .enqueue(FLAKY, &u32::try_from(n).unwrap(), opts)
            .await
            .unwrap();
        let status = jobs.wait_status(&id, WAIT).await.unwrap();
        assert_eq!(status.state, JobState::Failure);
        ids.push(id);
        // Dead letters are ordered by the millisecond they died in.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    worker.shutdown(WAIT).await;
    let mut dead = jobs.dead(10).await.unwrap();
    dead.sort();
    let mut newest = ids[2..].to_vec();
    newest.sort();
    assert_eq!(dead, newest, "the three newest are kept");
    for gone in &ids[..2] {
        assert!(
            jobs.status(gone).await.unwrap().is_none(),
            "{gone}'s record went with it"
        );
    }
    if let Some(redis) = redis {
        for id in &ids[2..] {
            let key = jobs.record_key(id).unwrap();
            let ttl = redis.command_on_key(&key, &["PTTL", &key]);
            let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
            assert!(ttl > 0 && ttl <= 60_000, "{key}: {ttl}");
        }
    }
    // A re-driven job is a live job again: it no longer expires.
    assert!(jobs.redrive(&ids[4]).await.unwrap());
    if let Some(redis) = redis {
        let key = jobs.record_key(&ids[4]).unwrap();
        assert_eq!(redis.command_on_key(&key, &["PTTL", &key]), ":-1\r\n");
    }
}

on_every_topology!(
    async fn dead_letters_expire_and_are_capped(redis: &Redis) {
        let config = quick().dead_letters(Duration::from_secs(60), 3);
        dead_letters_are_capped(jobs(redis, config), Some(redis)).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_dead_letters_expire_and_are_capped() {
    let config = quick().dead_letters(Duration::from_secs(60), 3);
    dead_letters_are_capped(Jobs::with_config(Handle::in_process(), config), None).await;
}
