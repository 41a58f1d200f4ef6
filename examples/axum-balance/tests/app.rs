//! The stock app on Axum, through its router (the test harness), against a real
//! redis-server: the shared scenario of `example-stock-domain`'s testkit.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::Request;
use axum::Router;
use example_stock_domain::testkit::{self, Client, Got};
use http_body_util::BodyExt;
use larder_testing::RedisServer;
use tower::ServiceExt;

struct App(Router);

impl Client for App {
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Got {
        let mut req = Request::builder().method(method).uri(path);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let typed = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if !body.is_empty() && !typed {
            req = req.header("content-type", "application/json");
        }
        let res = self
            .0
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Got {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

fn app(stock: example_stock_domain::Stock) -> App {
    let peer: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    App(example_axum_balance::router(stock).layer(MockConnectInfo(peer)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_invalidation_and_tenant_isolation() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(testkit::stock(Some(&redis), dir.path()));
    testkit::cache_and_tenants(&app, &redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_routes_up_and_recovery_needs_no_restart() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(testkit::stock(Some(&redis), dir.path()));
    testkit::redis_outage_and_recovery(&app, &mut redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_for_prometheus() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock(Some(&redis), dir.path());
    let worker = stock.worker().spawn();
    let app = app(stock);
    testkit::metrics(&app).await;
    worker.shutdown(std::time::Duration::from_secs(5)).await;
}

/// On one thread, so that the capturing subscriber sees the requests' spans.
#[tokio::test]
async fn each_component_traces_its_work_on_a_request() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(testkit::stock(Some(&redis), dir.path()));
    let (spans, _guard) = larder_testing::spans::capture();
    testkit::spans(&app, &spans).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_beside_the_cache_admin() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(testkit::stock(Some(&redis), dir.path()));
    testkit::dashboard(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_report_job_admin_and_login_limit() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock(Some(&redis), dir.path());
    let worker = stock.worker().spawn();
    let app = app(stock);
    testkit::sessions_jobs_admin(&app).await;
    worker.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_admin_sweeps_leave_sessions_jobs_and_limits_alone() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock(Some(&redis), dir.path());
    let app = app(stock.clone());
    let mut worker = None;
    testkit::cache_admin_touches_only_the_cache(&app, &redis, || {
        worker = Some(stock.worker().spawn());
    })
    .await;
    worker
        .unwrap()
        .shutdown(std::time::Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_match_every_spelling_the_router_routes() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(testkit::stock(Some(&redis), dir.path()));
    // Axum routes the path as sent, so most spellings are 404s; the scenario
    // checks the rules on those it does route.
    let _routed = testkit::rules_follow_the_router(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_tenants_and_queries_leave_nothing_for_good() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(testkit::stock(Some(&redis), dir.path()));
    testkit::requests_cannot_grow_redis_for_good(&app, &redis).await;
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let redis = RedisServer::start();
    let bin = env!("CARGO_BIN_EXE_example-axum-balance");
    let dir = tempfile::tempdir().unwrap();
    testkit::sigterm_stops_the_process_cleanly(bin, &redis, dir.path(), &[]);
    testkit::sigterm_stops_the_process_cleanly(bin, &redis, dir.path(), &["--worker-only"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tenant_source_session_only_the_session_names_the_tenant() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock_with(Some(&redis), dir.path(), |s| {
        s.tenant_source = example_stock_domain::TenantSource::Session;
        s.cookie_secure = true;
    });
    testkit::tenant_from_the_session_only(&app(stock)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_is_stored_and_summed_in_cents() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    testkit::money_is_exact(&app(testkit::stock(Some(&redis), dir.path()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_primary_dies_and_routes_stay_up() {
    let mut redis = larder_testing::Redis::start(larder_testing::TopologyKind::Cluster);
    let dir = tempfile::tempdir().unwrap();
    let app = app(testkit::stock_on(&redis, dir.path()));
    let worst = testkit::primary_failover(&app, &mut redis).await;
    eprintln!("Axum cluster failover: slowest request {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_fails_over_and_routes_stay_up() {
    let mut redis = larder_testing::Redis::start(larder_testing::TopologyKind::Sentinel);
    let dir = tempfile::tempdir().unwrap();
    let app = app(testkit::stock_on(&redis, dir.path()));
    let worst = testkit::primary_failover(&app, &mut redis).await;
    eprintln!("Axum sentinel failover: slowest request {worst:?}");
}
