//! The stock apps run the Python app's Celery task: with `CELERY_BROKER_URL` set,
//! a real Python client's `send_task("send_daily_report", args=[1])` is run by
//! the app's worker (a `--worker-only` process of each framework's app), and
//! `.get()` returns the report's result.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use larder_e2e::{serial, App, AppEnv, Framework, Role, Site};
use larder_testing::RedisServer;

/// What a Flask app's code does: send the task by name, wait for its result.
const CLIENT: &str = r#"
import json, os, sys
from celery import Celery
app = Celery("stock", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_BROKER_URL"])
r = app.send_task("send_daily_report", args=[int(sys.argv[1])])
try:
    print(json.dumps({"state": "SUCCESS", "result": r.get(timeout=30)}))
except Exception as e:
    print(json.dumps({"state": r.state, "error_type": type(e).__name__, "error": str(e)}))
"#;

fn send_daily_report(venv: &Path, redis: &RedisServer, tenant: i64) -> serde_json::Value {
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", CLIENT, &tenant.to_string()])
        .env("CELERY_BROKER_URL", redis.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_gets_the_report_from_either_app() {
    let _one_at_a_time = serial().await;
    let venv = larder_testing::celery_venv();
    for framework in Framework::BOTH {
        let redis = RedisServer::start();
        let site = Site::new();
        let env = AppEnv::single(&redis).var("CELERY_BROKER_URL", &redis.url());
        let worker = App::start(framework, &site, Role::Worker, &env);
        let got = send_daily_report(venv, &redis, 1);
        assert_eq!(got["state"], "SUCCESS", "{got}\n{}", worker.log());
        assert_eq!(got["result"]["totals"]["tenant"], 1, "{got}");
        let path = got["result"]["path"].as_str().unwrap();
        assert!(Path::new(path).exists(), "{path}");
        // A tenant the app does not have: Python sees the task's ValueError.
        let got = send_daily_report(venv, &redis, 99);
        assert_eq!(got["state"], "FAILURE", "{got}");
        assert_eq!(got["error_type"], "ValueError", "{got}");
        assert_eq!(site.report_files(), 1, "{}", framework.name());
    }
}
