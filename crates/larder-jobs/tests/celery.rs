//! Celery interop against real Celery: Python clients and Celery worker
//! processes (the `celery` package from the Python package index, in the
//! virtual environment `scripts/celery-env` makes) and larder workers share one
//! real redis-server as broker and result backend.

#![cfg(feature = "celery")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder_jobs::celery::{Celery, CeleryWorker, SendOptions, TaskFailure};
use larder_jobs::JobState;
use larder_testing::RedisServer;
use serde_json::{json, Map, Value};

fn venv() -> &'static Path {
    larder_testing::celery_venv()
}

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/celery")
}

/// Runs `interop.py` with `args` against `redis`; its one JSON line.
fn py(redis: &RedisServer, args: &[&str]) -> Value {
    let out = Command::new(venv().join("bin/python"))
        .arg("interop.py")
        .args(args)
        .current_dir(python_dir())
        .env("CELERY_BROKER_URL", redis.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Sends task `name` from Python (`how`: `send_task`, `delay`, `apply_async`).
fn py_send(redis: &RedisServer, name: &str, args: Value, options: Value) -> String {
    let r = py(
        redis,
        &["send", name, &args.to_string(), "{}", &options.to_string()],
    );
    r["id"].as_str().unwrap().to_owned()
}

/// Python's `AsyncResult(id).get(propagate=False)`, as `{"state", "result"}` or
/// `{"state", "error_type", "error"}`.
fn py_get(redis: &RedisServer, id: &str) -> Value {
    py(redis, &["get", id, "30"])
}

/// A real Celery worker process (threads pool), killed on drop.
struct PyWorker {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PyWorker {
    fn start(redis: &RedisServer, queues: &str, visibility_timeout: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let child = Command::new(venv().join("bin/celery"))
            .args([
                "-A",
                "interop",
                "worker",
                "-P",
                "threads",
                "-c",
                "2",
                "--without-mingle",
                "--without-gossip",
                "-Q",
                queues,
                "--loglevel=INFO",
                "-f",
            ])
            .arg(&log)
            .current_dir(python_dir())
            .env("CELERY_BROKER_URL", redis.url())
            .env("CELERY_VISIBILITY_TIMEOUT", visibility_timeout.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let worker = Self {
            child,
            log,
            _dir: dir,
        };
        let started = Instant::now();
        while !worker.log().contains("ready.") {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the Celery worker did not start:\n{}",
                worker.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        worker
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn celery_on(redis: &RedisServer, visibility_timeout_secs: u64, queue: &str) -> Celery {
    Celery::from_vars([
        ("CELERY_BROKER_URL", redis.url()),
        ("CELERY_QUEUE", queue.to_owned()),
        (
            "CELERY_VISIBILITY_TIMEOUT",
            visibility_timeout_secs.to_string(),
        ),
        ("CELERY_TASK_TRACK_STARTED", "true".to_owned()),
        ("LARDER_OP_TIMEOUT_MS", "500".to_owned()),
    ])
    .unwrap()
}

/// A larder worker with the tests' tasks.
fn rust_worker(celery: &Celery) -> CeleryWorker {
    CeleryWorker::new(celery.clone())
        .task("rust.add", |call| async move {
            let extra = call.kwargs.get("c").and_then(Value::as_i64).unwrap_or(0);
            Ok(json!(call.arg::<i64>(0)? + call.arg::<i64>(1)? + extra))
        })
        .task("rust.fail", |call| async move {
            Err(TaskFailure::new(
                "ValueError",
                call.arg::<String>(0).unwrap_or_else(|_| "boom".into()),
            ))
        })
        .task("rust.slow", |call| async move {
            tokio::time::sleep(Duration::from_millis(call.arg(0)?)).await;
            Ok(json!({ "by": "rust" }))
        })
        .task("shared.work", |call| async move {
            Ok(json!({ "n": call.args.first().cloned().unwrap_or(Value::Null), "by": "rust" }))
        })
        .task("rust.count", |_| async move {
            COUNT.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        })
}

/// Runs of `rust.count` in this process.
static COUNT: AtomicU32 = AtomicU32::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_calls_run_on_a_larder_worker() {
    let redis = RedisServer::start();
    let celery = celery_on(&redis, 3600, "celery");
    let worker = rust_worker(&celery).spawn();
    let sent = Instant::now();
    let ids = [
        py_send(&redis, "rust.add", json!([2, 3]), json!({})),
        py_send(&redis, "rust.add", json!([2, 3]), json!({"how": "delay"})),
        py_send(
            &redis,
            "rust.add",
            json!([2, 3]),
            json!({"how": "apply_async", "countdown": 1}),
        ),
        py_send(&redis, "rust.add", json!([1, 1]), json!({"eta_in": 1})),
    ];
    for (id, want) in ids.iter().zip([5, 5, 5, 2]) {
        let got = py_get(&redis, id);
        assert_eq!(got["state"], "SUCCESS", "{got}");
        assert_eq!(got["result"], want, "{got}");
    }
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "countdown and eta waited"
    );
    // kwargs, and a message whose expiry has passed: REVOKED, never run.
    let r = py(
        &redis,
        &["send", "rust.add", "[1, 2]", r#"{"c": 10}"#, "{}"],
    );
    assert_eq!(py_get(&redis, r["id"].as_str().unwrap())["result"], 13);
    let expired = py_send(&redis, "rust.add", json!([1, 2]), json!({"expires_in": -5}));
    assert_eq!(py_get(&redis, &expired)["state"], "REVOKED");
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retries_and_states_read_as_celery_shows_them() {
    let redis = RedisServer::start();
    let celery = celery_on(&redis, 3600, "celery");
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&attempts);
    let worker = rust_worker(&celery)
        .task("rust.flaky", move |_| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(TaskFailure::new("ConnectionError", "not yet")
                        .retry_in(Duration::from_millis(800)))
                } else {
                    Ok(json!("third time"))
                }
            }
        })
        .task("rust.hopeless", |_| async move {
            Err(TaskFailure::new("RuntimeError", "never").retry_in(Duration::from_millis(10)))
        })
        .max_retries(2)
        .spawn();

    let failed = py_send(&redis, "rust.fail", json!(["boom"]), json!({}));
    let got = py_get(&redis, &failed);
    assert_eq!(got["state"], "FAILURE", "{got}");
    assert_eq!(got["error_type"], "ValueError", "{got}");
    assert_eq!(got["error"], json!(["boom"]), "{got}");

    let flaky = py_send(&redis, "rust.flaky", json!([]), json!({}));
    let mut states = Vec::new();
    let started = Instant::now();
    loop {
        let s = celery.state(&flaky).await.unwrap();
        if states.last() != Some(&s) {
            states.push(s);
        }
        if s.is_terminal() || started.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(states.contains(&JobState::Retry), "{states:?}");
    assert_eq!(states.last(), Some(&JobState::Success), "{states:?}");
    assert_eq!(py_get(&redis, &flaky)["result"], "third time");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);

    // Retries run out: FAILURE with the task's own error.
    let hopeless = py_send(&redis, "rust.hopeless", json!([]), json!({}));
    let got = py_get(&redis, &hopeless);
    assert_eq!(
        (got["state"].as_str(), got["error_type"].as_str()),
        (Some("FAILURE"), Some("RuntimeError")),
        "{got}"
    );

    // STARTED while it runs (task_track_started).
    let slow = py_send(&redis, "rust.slow", json!([1500]), json!({}));
    let mut saw_started = false;
    for _ in 0..100 {
        let state = py(&redis, &["state", &slow]);
        if state["state"] == "STARTED" {
            saw_started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_started, "Python saw STARTED");
    assert_eq!(py_get(&redis, &slow)["result"], json!({"by": "rust"}));

    // A task no larder worker knows: FAILURE NotRegistered, as Celery does.
    let unknown = py_send(&redis, "rust.nope", json!([]), json!({}));
    let got = py_get(&redis, &unknown);
    assert_eq!(
        (got["state"].as_str(), got["error_type"].as_str()),
        (Some("FAILURE"), Some("NotRegistered")),
        "{got}"
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_serializers_and_malformed_messages_are_refused_and_block_nothing() {
    let redis = RedisServer::start();
    let celery = celery_on(&redis, 3600, "celery");
    let worker = rust_worker(&celery).spawn();
    let pickle = json!({
        "body": "gASVAAAAAAAAAAA=",
        "content-type": "application/x-python-serialize",
        "content-encoding": "binary",
        "headers": {"task": "rust.add", "id": "pickled-1", "lang": "py"},
        "properties": {"delivery_tag": "tag-pickle", "body_encoding": "base64", "delivery_info": {"exchange": "", "routing_key": "celery"}}
    });
    let bad_body = json!({
        "body": "%%%not base64",
        "content-type": "application/json",
        "headers": {"task": "rust.add", "id": "bad-body-1", "lang": "py"},
        "properties": {"delivery_tag": "tag-bad", "body_encoding": "base64"}
    });
    for raw in [
        pickle.to_string(),
        bad_body.to_string(),
        "not json at all".to_owned(),
        "\u{1}\u{2}".to_owned(),
    ] {
        assert!(redis.command(&["LPUSH", "celery", &raw]).starts_with(':'));
    }
    // A good message behind them still runs.
    let good = py_send(&redis, "rust.add", json!([20, 22]), json!({}));
    assert_eq!(py_get(&redis, &good)["result"], 42);
    for id in ["pickled-1", "bad-body-1"] {
        let meta = celery.result(id).await.unwrap().unwrap();
        assert_eq!(meta.status, JobState::Failure, "{meta:?}");
        assert_eq!(meta.result["exc_type"], "ContentDisallowed");
    }
    assert!(
        larder_testing::eventually(50, Duration::from_millis(50), || async {
            redis.command(&["LLEN", "celery"]) == ":0\r\n"
                && redis.command(&["HLEN", "unacked"]) == ":0\r\n"
        })
        .await,
        "every refused message is gone from the queue and from unacked"
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn larder_sends_tasks_a_python_worker_runs() {
    let redis = RedisServer::start();
    let _py = PyWorker::start(&redis, "celery", 3600);
    let celery = celery_on(&redis, 3600, "celery");
    let id = celery
        .send_task(
            "py.add",
            vec![json!(2), json!(3)],
            Map::new(),
            SendOptions::new(),
        )
        .await
        .unwrap();
    let meta = celery.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        (meta.status, meta.result.clone()),
        (JobState::Success, json!(5)),
        "{meta:?}"
    );
    let id = celery
        .send_task(
            "py.fail",
            vec![json!("bad input")],
            Map::new(),
            SendOptions::new(),
        )
        .await
        .unwrap();
    let meta = celery.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(meta.status, JobState::Failure);
    assert_eq!(meta.result["exc_type"], "ValueError");
    assert!(meta.traceback.unwrap_or_default().contains("bad input"));
    // A countdown from Rust is honoured by Python.
    let sent = Instant::now();
    let id = celery
        .send_task(
            "py.add",
            vec![json!(1), json!(1)],
            Map::new(),
            SendOptions::new().countdown(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert_eq!(
        celery
            .wait(&id, Duration::from_secs(30))
            .await
            .unwrap()
            .result,
        2
    );
    assert!(sent.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        celery.state("no-such-task").await.unwrap(),
        JobState::Pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eta_tasks_run_once_and_python_revokes_stop_a_larder_worker() {
    let redis = RedisServer::start();
    let celery = celery_on(&redis, 3600, "celery");
    // Two workers: each countdown task runs once, not once per worker.
    let a = rust_worker(&celery).spawn();
    let b = rust_worker(&celery).spawn();
    let before = COUNT.load(Ordering::SeqCst);
    let ids: Vec<String> = (0..5)
        .map(|_| {
            py_send(
                &redis,
                "rust.count",
                json!([]),
                json!({"how": "apply_async", "countdown": 1}),
            )
        })
        .collect();
    for id in &ids {
        assert_eq!(py_get(&redis, id)["state"], "SUCCESS");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        COUNT.load(Ordering::SeqCst) - before,
        5,
        "five tasks, five runs"
    );

    // Revoked from Python while a larder worker holds it for its countdown.
    let held = py_send(
        &redis,
        "rust.count",
        json!([]),
        json!({"how": "apply_async", "countdown": 3}),
    );
    assert!(
        larder_testing::eventually(100, Duration::from_millis(20), || async {
            redis.command(&["HLEN", "unacked"]) == ":1\r\n"
        })
        .await,
        "a worker holds it"
    );
    let before = COUNT.load(Ordering::SeqCst);
    py(&redis, &["revoke", &held]);
    let got = py_get(&redis, &held);
    assert_eq!(got["state"], "REVOKED", "{got}");
    assert_eq!(COUNT.load(Ordering::SeqCst), before, "never ran");
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_larder_workers_share_a_queue_and_route_by_name() {
    let redis = RedisServer::start();
    let _py = PyWorker::start(&redis, "celery", 3600);
    let celery = celery_on(&redis, 3600, "celery");
    let worker = rust_worker(&celery).concurrency(2).spawn();
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(
            celery
                .send_task(
                    "shared.work",
                    vec![json!(n)],
                    Map::new(),
                    SendOptions::new(),
                )
                .await
                .unwrap(),
        );
    }
    let mut by = std::collections::BTreeMap::new();
    for id in &ids {
        let meta = celery.wait(id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(meta.status, JobState::Success);
        *by.entry(meta.result["by"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    eprintln!("mixed fleet: 40 tasks, by worker kind {by:?}");
    assert_eq!(by.values().sum::<i32>(), 40);
    assert!(
        by.get("py").copied().unwrap_or(0) > 0 && by.get("rust").copied().unwrap_or(0) > 0,
        "{by:?}"
    );
    worker.shutdown(Duration::from_secs(5)).await;

    // A larder worker on its own queue takes only that queue's messages.
    let own = celery_on(&redis, 3600, "rustq");
    let worker = rust_worker(&own).spawn();
    let routed = py_send(&redis, "rust.add", json!([4, 4]), json!({"queue": "rustq"}));
    assert_eq!(py_get(&redis, &routed)["result"], 8);
    worker.shutdown(Duration::from_secs(5)).await;
}

/// The worker process of the kill drill: this test binary again, with the
/// broker's URL in the variable, runs a larder worker until it is killed.
const CHILD: &str = "LARDER_CELERY_CHILD_BROKER";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_worker_process() {
    let Ok(url) = std::env::var(CHILD) else {
        return;
    };
    let celery = Celery::from_vars([
        ("CELERY_BROKER_URL", url.as_str()),
        ("CELERY_TASK_TRACK_STARTED", "true"),
    ])
    .unwrap();
    let _worker = rust_worker(&celery).spawn();
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_loses_no_message_either_way() {
    let redis = RedisServer::start();
    // Python → larder: the larder worker process dies running it; after the
    // visibility timeout (2 s here) another larder worker runs it.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "celery_worker_process", "--test-threads=1"])
        .env(CHILD, redis.url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = py_send(&redis, "rust.slow", json!([4000]), json!({}));
    let celery = celery_on(&redis, 2, "celery");
    assert!(
        larder_testing::eventually(200, Duration::from_millis(50), || async {
            celery.state(&id).await.ok() == Some(JobState::Started)
        })
        .await,
        "the child started it"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let worker = rust_worker(&celery).spawn();
    let meta = celery.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(meta.status, JobState::Success, "{meta:?}");
    worker.shutdown(Duration::from_secs(5)).await;

    // larder → Python: the Celery worker dies running it; a new one (visibility
    // timeout 2 s) puts it back and runs it.
    let mut first = PyWorker::start(&redis, "celery", 2);
    let id = celery
        .send_task(
            "py.slow",
            vec![json!(4), json!("drill")],
            Map::new(),
            SendOptions::new(),
        )
        .await
        .unwrap();
    assert!(
        larder_testing::eventually(200, Duration::from_millis(50), || async {
            celery.state(&id).await.ok() == Some(JobState::Started)
        })
        .await,
        "the Python worker started it"
    );
    first.kill();
    // kombu sweeps `unacked` when a worker starts and then every 100 s: the
    // delivery must be older than the visibility timeout by then.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = PyWorker::start(&redis, "celery", 2);
    let meta = celery
        .wait(&id, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: unacked {:?}, index {:?}, mutex {:?}, queue {:?}\nworker log:\n{}",
                redis.command(&["HKEYS", "unacked"]),
                redis.command(&["ZRANGE", "unacked_index", "0", "-1", "WITHSCORES"]),
                redis.command(&["GET", "unacked_mutex"]),
                redis.command(&["LLEN", "celery"]),
                second.log()
            )
        });
    assert_eq!(meta.status, JobState::Success, "{meta:?}");
    assert_eq!(meta.result, json!({"tag": "drill", "by": "py"}));
}
