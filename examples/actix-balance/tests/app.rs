//! The stock app on Actix-web, through actix's test harness, against a real
//! redis-server: the shared scenario of `example-stock-domain`'s testkit.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test;
use example_actix_balance::CookieKeys;
use example_stock_domain::testkit::{self, Client, Got};
use larder_testing::RedisServer;

struct App<S>(S);

impl<S, B> Client for App<S>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Got {
        let mut req = test::TestRequest::default()
            .method(method.parse().unwrap())
            .uri(path)
            .peer_addr("192.0.2.10:40000".parse().unwrap());
        for (n, v) in headers {
            req = req.insert_header((*n, *v));
        }
        if !body.is_empty() {
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                req = req.insert_header(("content-type", "application/json"));
            }
            req = req.set_payload(body.to_owned());
        }
        let res = match self.0.call(req.to_request()).await {
            Ok(res) => res,
            Err(e) => {
                let res = e.error_response();
                return Got {
                    status: res.status().as_u16(),
                    headers: Vec::new(),
                    body: String::new(),
                };
            }
        };
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = test::read_body(res).await;
        Got {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// The app on `stock`, in actix's test harness.
async fn serve(
    stock: example_stock_domain::Stock,
) -> App<
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
> {
    App(test::init_service(example_actix_balance::app(stock, CookieKeys::new(None))).await)
}

#[actix_web::test]
async fn cache_invalidation_and_tenant_isolation() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock(Some(&redis), dir.path());
    let app = serve(stock).await;
    testkit::cache_and_tenants(&app, &redis).await;
}

#[actix_web::test]
async fn redis_outage_keeps_routes_up_and_recovery_needs_no_restart() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock(Some(&redis), dir.path());
    let app = serve(stock).await;
    testkit::redis_outage_and_recovery(&app, &mut redis).await;
}

#[actix_web::test]
async fn metrics_for_prometheus() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock(Some(&redis), dir.path());
    let worker = stock.worker().spawn();
    let app = serve(stock).await;
    testkit::metrics(&app).await;
    worker.shutdown(std::time::Duration::from_secs(5)).await;
}

/// On one thread, so that the capturing subscriber sees the requests' spans.
#[actix_web::test]
async fn each_component_traces_its_work_on_a_request() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = serve(testkit::stock(Some(&redis), dir.path())).await;
    let (spans, _guard) = larder_testing::spans::capture();
    testkit::spans(&app, &spans).await;
}

#[actix_web::test]
async fn dashboard_beside_the_cache_admin() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = serve(testkit::stock(Some(&redis), dir.path())).await;
    testkit::dashboard(&app).await;
}

#[actix_web::test]
async fn sessions_report_job_admin_and_login_limit() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock(Some(&redis), dir.path());
    let worker = stock.worker().spawn();
    let app = serve(stock).await;
    testkit::sessions_jobs_admin(&app).await;
    worker.shutdown(std::time::Duration::from_secs(5)).await;
}

#[actix_web::test]
async fn cache_admin_sweeps_leave_sessions_jobs_and_limits_alone() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock(Some(&redis), dir.path());
    let app = serve(stock.clone()).await;
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

#[actix_web::test]
async fn rules_match_every_spelling_the_router_routes() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock(Some(&redis), dir.path());
    let app = serve(stock).await;
    let routed = testkit::rules_follow_the_router(&app).await;
    // Actix decodes `%73` and `%6C` before routing: at least the escaped spellings
    // of /sales, /balance and /login reach their handlers.
    assert!(routed >= 6, "routed {routed}");
}

#[actix_web::test]
async fn made_up_tenants_and_queries_leave_nothing_for_good() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock(Some(&redis), dir.path());
    let app = serve(stock).await;
    testkit::requests_cannot_grow_redis_for_good(&app, &redis).await;
}

// `test` is actix's module here: the standard attribute by its full path.
#[::core::prelude::v1::test]
fn sigterm_drains_and_exits_zero() {
    let redis = RedisServer::start();
    let bin = env!("CARGO_BIN_EXE_example-actix-balance");
    let dir = tempfile::tempdir().unwrap();
    testkit::sigterm_stops_the_process_cleanly(bin, &redis, dir.path(), &[]);
    testkit::sigterm_stops_the_process_cleanly(bin, &redis, dir.path(), &["--worker-only"]);
}

#[actix_web::test]
async fn with_tenant_source_session_only_the_session_names_the_tenant() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock_with(Some(&redis), dir.path(), |s| {
        s.tenant_source = example_stock_domain::TenantSource::Session;
        s.cookie_secure = true;
    });
    let app = serve(stock).await;
    testkit::tenant_from_the_session_only(&app).await;
}

#[actix_web::test]
async fn money_is_stored_and_summed_in_cents() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = testkit::stock(Some(&redis), dir.path());
    let app = serve(stock).await;
    testkit::money_is_exact(&app).await;
}

#[actix_web::test]
async fn a_cluster_primary_dies_and_routes_stay_up() {
    let mut redis = larder_testing::Redis::start(larder_testing::TopologyKind::Cluster);
    let dir = tempfile::tempdir().unwrap();
    let app = serve(testkit::stock_on(&redis, dir.path())).await;
    let worst = testkit::primary_failover(&app, &mut redis).await;
    eprintln!("Actix cluster failover: slowest request {worst:?}");
}

#[actix_web::test]
async fn sentinel_fails_over_and_routes_stay_up() {
    let mut redis = larder_testing::Redis::start(larder_testing::TopologyKind::Sentinel);
    let dir = tempfile::tempdir().unwrap();
    let app = serve(testkit::stock_on(&redis, dir.path())).await;
    let worst = testkit::primary_failover(&app, &mut redis).await;
    eprintln!("Actix sentinel failover: slowest request {worst:?}");
}
