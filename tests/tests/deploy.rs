//! Deployed as operators do: two real instances of each app on one Redis share
//! sessions across instances and restarts, and a logout ends them everywhere;
//! the Actix app, which encrypts its cookie, refuses to start with Redis and no
//! `SESSION_KEY`, and rotates keys without logging anybody out; the probes say
//! what they promise; logs are plain or JSON, never coloured into a file.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use larder_e2e::{
    client, login, serial, session_cookie, App, AppEnv, Framework, Role, Site, SESSION_KEY,
};
use larder_testing::RedisServer;

async fn me(http: &reqwest::Client, app: &App, cookie: &str) -> (u16, Option<String>) {
    let r = http
        .get(app.url("/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), session_cookie(&r))
}

async fn get_json(http: &reqwest::Client, app: &App, path: &str) -> (u16, serde_json::Value) {
    let r = http.get(app.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_span_instances_and_restarts_and_end_everywhere() {
    let _one_at_a_time = serial().await;
    for framework in Framework::BOTH {
        let redis = RedisServer::start();
        let site = Site::new();
        let env = AppEnv::single(&redis);
        let http = client();
        let a = App::start(framework, &site, Role::Both, &env);
        let b = App::start(framework, &site, Role::Both, &env);
        let cookie = login(&http, &a, "alice").await;
        assert_eq!(
            me(&http, &b, &cookie).await.0,
            200,
            "{}: made on A, valid on B",
            framework.name()
        );
        // Both restart (a deploy): the session lives on.
        drop((a, b));
        let a = App::start(framework, &site, Role::Both, &env);
        let b = App::start(framework, &site, Role::Both, &env);
        assert_eq!(
            me(&http, &a, &cookie).await.0,
            200,
            "{}: after a restart, on A",
            framework.name()
        );
        assert_eq!(
            me(&http, &b, &cookie).await.0,
            200,
            "{}: after a restart, on B",
            framework.name()
        );
        // A logout on B ends it on A too.
        let out = http
            .post(b.url("/logout"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(out.status().as_u16(), 200);
        assert_eq!(
            me(&http, &a, &cookie).await.0,
            401,
            "{}: ended on A",
            framework.name()
        );
        assert_eq!(
            me(&http, &b, &cookie).await.0,
            401,
            "{}: ended on B",
            framework.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actix_app_needs_a_session_key_with_redis_and_rotates_it() {
    let _one_at_a_time = serial().await;
    let redis = RedisServer::start();
    let site = Site::new();
    let with_redis = || AppEnv::single(&redis);

    // No key with Redis: refused, naming the variable.
    let (ok, log) = App::start_refused(
        Framework::Actix,
        &site,
        &with_redis().var("SESSION_KEY", ""),
    );
    assert!(!ok, "exits with an error");
    assert!(log.contains("SESSION_KEY: required with Redis"), "{log}");
    // A short key: refused too.
    let (ok, log) = App::start_refused(
        Framework::Actix,
        &site,
        &with_redis().var("SESSION_KEY", "short"),
    );
    assert!(
        !ok && log.contains("SESSION_KEY: expected at least 64 bytes"),
        "{log}"
    );
    // The development way out starts, and says so.
    let dev = App::start(
        Framework::Actix,
        &site,
        Role::Both,
        &with_redis()
            .var("SESSION_KEY", "")
            .var("ALLOW_RANDOM_SESSION_KEY", "true"),
    );
    assert!(
        dev.log()
            .contains("ALLOW_RANDOM_SESSION_KEY=true: a random session key"),
        "{}",
        dev.log()
    );
    drop(dev);
    // Without Redis a random key is fine (sessions are in process anyway).
    let alone = App::start(
        Framework::Actix,
        &site,
        Role::Both,
        &AppEnv::default().var("SESSION_KEY", ""),
    );
    drop(alone);

    // Rotation: a cookie made with the old key is read after the switch, and
    // comes back made with the new one.
    let http = client();
    let old_key = SESSION_KEY;
    let new_key = "a-brand-new-session-key-a-brand-new-session-key-a-brand-new-key!!";
    let app = App::start(
        Framework::Actix,
        &site,
        Role::Both,
        &with_redis().var("SESSION_KEY", old_key),
    );
    let old_cookie = login(&http, &app, "alice").await;
    drop(app);
    let rotating = with_redis()
        .var("SESSION_KEY", new_key)
        .var("SESSION_KEY_PREVIOUS", old_key);
    let app = App::start(Framework::Actix, &site, Role::Both, &rotating);
    let (status, renewed) = me(&http, &app, &old_cookie).await;
    assert_eq!(status, 200, "the old cookie is still read");
    let renewed = renewed.expect("and re-made with the new key");
    assert_ne!(renewed, old_cookie);
    drop(app);
    // Once the previous key is dropped, the re-made cookie works and the old does not.
    let app = App::start(
        Framework::Actix,
        &site,
        Role::Both,
        &with_redis().var("SESSION_KEY", new_key),
    );
    assert_eq!(me(&http, &app, &renewed).await.0, 200);
    assert_eq!(me(&http, &app, &old_cookie).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_stay_ready_through_a_redis_outage() {
    let _one_at_a_time = serial().await;
    for framework in Framework::BOTH {
        let mut redis = RedisServer::start();
        let site = Site::new();
        let app = App::start(framework, &site, Role::Both, &AppEnv::single(&redis));
        let http = client();
        assert_eq!(
            get_json(&http, &app, "/health/live").await,
            (200, serde_json::json!({"status": "live"}))
        );
        let (status, body) = get_json(&http, &app, "/health/ready").await;
        assert_eq!(
            (status, body["redis"].as_str()),
            (200, Some("healthy")),
            "{body}"
        );
        redis.stop();
        // Fail-open: still ready, and the body says Redis is degraded.
        let mut degraded = None;
        for _ in 0..60 {
            let (status, body) = get_json(&http, &app, "/health/ready").await;
            assert_eq!(
                status,
                200,
                "{}: ready without Redis: {body}",
                framework.name()
            );
            if body["redis"] == "degraded" {
                degraded = Some(body);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(degraded.is_some(), "{}: the outage shows", framework.name());
        assert_eq!(get_json(&http, &app, "/health/live").await.0, 200);
        // In process: ready, and says so.
        let alone = App::start(framework, &site, Role::Both, &AppEnv::default());
        let (status, body) = get_json(&http, &alone, "/health/ready").await;
        assert_eq!(
            (status, body["redis"].as_str()),
            (200, Some("in_process")),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_without_a_terminal_or_one_json_object_per_line() {
    let _one_at_a_time = serial().await;
    for framework in Framework::BOTH {
        let redis = RedisServer::start();
        let site = Site::new();
        let env = || AppEnv::single(&redis).var("RUST_LOG", "info,larder=debug");
        let http = client();
        for (format, json) in [("text", false), ("json", true)] {
            let app = App::start(
                framework,
                &site,
                Role::Both,
                &env().var("LOG_FORMAT", format),
            );
            // A report job: its worker logs the tenant and the job.
            let r = http
                .post(app.url("/reports/daily"))
                .header("x-tenant-id", "1")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            assert!(
                larder_testing::eventually(100, std::time::Duration::from_millis(50), || async {
                    app.log().contains("daily report written")
                })
                .await,
                "{}",
                app.log()
            );
            let log = app.log();
            assert!(
                !log.contains('\u{1b}'),
                "no colour codes into a file: {log}"
            );
            if json {
                for line in log.lines().filter(|l| !l.trim().is_empty()) {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    assert!(v["level"].is_string() && v["target"].is_string(), "{line}");
                }
                let report = log
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|v| v["message"] == "daily report written")
                    .unwrap();
                assert_eq!(report["tenant"], 1, "{report}");
                assert!(report["job_id"].is_string(), "{report}");
            }
        }
        // A malformed LOG_FORMAT is refused, naming the variable.
        let (ok, log) = App::start_refused(framework, &site, &env().var("LOG_FORMAT", "xml"));
        assert!(!ok && log.contains("LOG_FORMAT"), "{log}");
    }
}
