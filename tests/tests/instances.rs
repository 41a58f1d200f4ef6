//! Several instances of one app sharing one Redis, as behind a load balancer: a
//! write on one is seen by the other's cache within a bounded (measured) time,
//! rate limits are shared (the sum admitted never exceeds the limit), a session
//! made on one is valid on the other and ends on both at logout, and jobs enqueued
//! on an instance without a worker run on the other.
//! `cargo test -p larder-e2e --test instances -- --nocapture` prints the figures.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use larder_e2e::{
    client, fresh_client_ip, login, serial, App, AppEnv, Framework, Role, Site, ADMIN_TOKEN,
};
use larder_testing::RedisServer;

/// The per-IP limit the pair runs with (requests per minute).
const LIMIT: usize = 40;

async fn get(
    http: &reqwest::Client,
    app: &App,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = http
        .get(app.url(path))
        .header("x-forwarded-for", fresh_client_ip());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn post(
    http: &reqwest::Client,
    app: &App,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = http
        .post(app.url(path))
        .header("x-forwarded-for", fresh_client_ip())
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn two_instances(framework: Framework) {
    let _one_at_a_time = serial().await;
    let redis = RedisServer::start();
    let site = Site::new();
    let env = AppEnv::single(&redis).var("RATE_LIMIT", &format!("{LIMIT}/minute"));
    // A serves HTTP only; B serves HTTP and runs jobs.
    let a = App::start(framework, &site, Role::Web, &env);
    let b = App::start(framework, &site, Role::Both, &env);
    let http = client();
    let t1 = [("x-tenant-id", "1")];

    // 1. A write on A is seen by B's cache: B serves a HIT, A records a sale, and
    //    B's next answers are polled until they carry the new balance.
    let mut seen_after = Vec::new();
    for round in 0..10 {
        let (_, before) = get(&http, &b, "/balance", &t1).await;
        let hit = http
            .get(b.url("/balance"))
            .header("x-tenant-id", "1")
            .header("x-forwarded-for", fresh_client_ip())
            .send()
            .await
            .unwrap();
        assert_eq!(
            hit.headers()["x-cache"],
            "HIT",
            "round {round}: B holds the entry"
        );
        let (status, _) = post(
            &http,
            &a,
            "/sales",
            &t1,
            r#"{"product_id":1,"quantity":1,"unit_price":100}"#,
        )
        .await;
        assert_eq!(status, 201);
        let written = Instant::now();
        loop {
            let (_, now) = get(&http, &b, "/balance", &t1).await;
            if now != before {
                seen_after.push(written.elapsed());
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "round {round}: B still serves the balance from before A's sale after 2 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    seen_after.sort_unstable();
    let worst_seen = *seen_after.last().unwrap();

    // 2. Rate limits are shared: one client address, 100 requests spread over
    //    both instances at once; together they admit at most the limit.
    let ip = fresh_client_ip();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..100 {
        let app = if i % 2 == 0 {
            a.url("/products")
        } else {
            b.url("/products")
        };
        let (http, ip) = (http.clone(), ip.clone());
        sends.spawn(async move {
            http.get(app)
                .header("x-tenant-id", "1")
                .header("x-forwarded-for", ip)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let mut admitted = 0;
    let mut limited = 0;
    while let Some(status) = sends.join_next().await {
        match status.unwrap() {
            200 => admitted += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        admitted <= LIMIT,
        "{admitted} admitted across both, limit {LIMIT}"
    );
    assert_eq!(admitted + limited, 100);
    assert!(admitted > 0);

    // 3. A session made on A is valid on B, and a logout on B ends it on A.
    let cookie = login(&http, &a, "alice").await;
    let with = [("cookie", cookie.as_str())];
    let (status, me) = get(&http, &b, "/me", &with).await;
    assert_eq!(status, 200, "{me}");
    assert!(me.contains("\"tenant\":1"), "{me}");
    assert_eq!(post(&http, &b, "/logout", &with, "").await.0, 200);
    assert_eq!(get(&http, &a, "/me", &with).await.0, 401, "ended on A too");
    assert_eq!(get(&http, &b, "/me", &with).await.0, 401);

    // 4. Jobs enqueued on A (no worker there) and on B run on B.
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..40 {
        let app = if i % 2 == 0 { &a } else { &b };
        let (status, body) = post(&http, app, "/reports/daily", &t1, "").await;
        assert_eq!(status, 202, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        ids.push(json["job_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        loop {
            let (status, body) = get(&http, &a, &format!("/jobs/{id}"), &t1).await;
            assert_eq!(status, 200, "{body}");
            if body.contains("\"SUCCESS\"") {
                break;
            }
            assert!(!body.contains("\"FAILURE\""), "{body}");
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "job {id} still {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let drained = started.elapsed();
    assert!(!a.log().contains("daily report written"), "A has no worker");
    assert_eq!(
        b.log().matches("daily report written").count(),
        40,
        "B ran all 40"
    );

    let auth = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(
        get(&http, &a, "/admin/cache/stats", &[("authorization", &auth)])
            .await
            .0,
        200
    );
    eprintln!(
        "| {} | {} ms (median {} ms) | {admitted} of 100 (limit {LIMIT}) | made on A, valid on B, ended on both | 40 of 40 enqueued on A and B ran on B in {} ms |",
        framework.name(),
        worst_seen.as_millis(),
        seen_after[seen_after.len() / 2].as_millis(),
        drained.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_axum_instances_share_one_redis() {
    two_instances(Framework::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_actix_instances_share_one_redis() {
    two_instances(Framework::Actix).await;
}
