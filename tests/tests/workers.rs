//! Workers dying: `--worker-only` processes killed with SIGKILL during a burst of
//! report jobs, and started again. Every job reaches SUCCESS, every job's report
//! file exists, and re-executions (a second file of one job: its worker died after
//! writing but before acknowledging) are counted and reported.
//! `cargo test -p larder-e2e --test workers -- --nocapture` prints the figures.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use larder_e2e::{client, heavy, serial, App, AppEnv, Framework, Role, Site};
use larder_testing::RedisServer;

async fn burst_with_dying_workers(framework: Framework) {
    let _one_at_a_time = serial().await;
    let redis = RedisServer::start();
    let site = Site::new();
    // A short lease, so that a dead worker's jobs come back within a second.
    let env = AppEnv::single(&redis)
        .var("JOBS_LEASE_MS", "1000")
        .var("JOBS_MAX_RETRIES", "20");
    let web = App::start(framework, &site, Role::Web, &env);
    let mut workers: Vec<App> = (0..3)
        .map(|_| App::start(framework, &site, Role::Worker, &env))
        .collect();
    let http = client();
    let jobs = if heavy() { 3000 } else { 600 };

    // Producers enqueue the burst over HTTP while a worker is killed every 300 ms.
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (http, url) = (http.clone(), web.url("/reports/daily"));
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..jobs / 4 {
                    let tenant = (p + i) % 2 + 1;
                    let r = http
                        .post(&url)
                        .header("x-tenant-id", tenant.to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 202);
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    ids.push((tenant, body["job_id"].as_str().unwrap().to_owned()));
                }
                ids
            })
        })
        .collect();
    let mut kills = 0;
    for round in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let victim = round % workers.len();
        workers[victim].kill();
        kills += 1;
        workers[victim] = App::start(framework, &site, Role::Worker, &env);
    }
    let mut ids = Vec::new();
    for p in producers {
        ids.extend(p.await.unwrap());
    }
    assert_eq!(ids.len(), jobs);

    let started = Instant::now();
    let mut results = BTreeMap::new();
    for (tenant, id) in &ids {
        loop {
            let r = http
                .get(web.url(&format!("/jobs/{id}")))
                .header("x-tenant-id", tenant.to_string())
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            match body["state"].as_str() {
                Some("SUCCESS") => {
                    results.insert(
                        id.clone(),
                        body["result"]["path"].as_str().unwrap().to_owned(),
                    );
                    break;
                }
                Some("FAILURE") => panic!("job {id} failed: {body}"),
                _ => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "job {id} not done after 120 s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Every job's result names a file that exists; the files say how often each
    // job's effect happened.
    let mut effects: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(site.reports_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(id) = ids
            .iter()
            .map(|(_, id)| id)
            .find(|id| name.contains(id.as_str()))
        {
            *effects.entry(id.clone()).or_default() += 1;
        }
    }
    for (id, path) in &results {
        assert!(
            std::path::Path::new(path).exists(),
            "job {id}'s report {path}"
        );
        assert!(
            effects.get(id).copied().unwrap_or(0) >= 1,
            "job {id} left no file"
        );
    }
    // A second file of a job: a worker wrote it and died before acknowledging.
    let extra_files: usize = effects.values().map(|n| n - 1).sum();
    // A row beyond one per job: a worker recorded it and died before
    // acknowledging (a worker killed between the file and the row leaves a file
    // without a row, so the two counts differ).
    let rows = {
        let db = site.db();
        db.report_count(1).await.unwrap() + db.report_count(2).await.unwrap()
    };
    let rows = usize::try_from(rows).unwrap();
    eprintln!(
        "| {} | {jobs} | {kills} | {} of {jobs} | {} | {extra_files} | {} |",
        framework.name(),
        results.len(),
        effects.len(),
        rows.saturating_sub(jobs),
    );
    assert_eq!(results.len(), jobs, "every job reached SUCCESS");
    assert_eq!(effects.len(), jobs, "every job's effect happened");
    assert!(
        rows >= jobs,
        "each job's successful run recorded its row: {rows}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_workers_killed_mid_burst() {
    burst_with_dying_workers(Framework::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_workers_killed_mid_burst() {
    burst_with_dying_workers(Framework::Actix).await;
}
