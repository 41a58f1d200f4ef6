//! The scenario both example apps must pass, run through each framework's test
//! harness against a real redis-server (feature `testkit`).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test support: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use larder::core::{Config, ConfigBuilder, Handle};
use larder_testing::{eventually, Redis, RedisServer};
use serde_json::Value;

use crate::{Settings, Stock};

/// One reply as a client sees it.
#[derive(Debug, Clone)]
pub struct Got {
    /// Status.
    pub status: u16,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Got {
    /// A header's value.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The value of the session cookie this reply sets, if any.
    #[must_use]
    pub fn session_cookie(&self) -> Option<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .find_map(|(_, v)| {
                let first = v.split(';').next()?;
                let (name, value) = first.split_once('=')?;
                (name.trim() == "stock_session" && !value.is_empty()).then(|| value.to_owned())
            })
    }
}

/// What the scenario needs of an app. (`async fn`: the Actix harness is not `Send`.)
#[allow(async_fn_in_trait)]
pub trait Client {
    /// Sends a request with headers and a body.
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Got;
}

/// A stock app on `redis` (or in process), with its database in `dir`.
#[must_use]
pub fn stock(redis: Option<&RedisServer>, dir: &Path) -> Stock {
    stock_with(redis, dir, |_| {})
}

/// [`stock`] with its settings changed by `change` first.
#[must_use]
pub fn stock_with(
    redis: Option<&RedisServer>,
    dir: &Path,
    change: impl FnOnce(&mut Settings),
) -> Stock {
    let vars = redis
        .map(|r| vec![("REDIS_URL", r.url())])
        .unwrap_or_default();
    build(vars, dir, change)
}

/// A stock app on a Redis of any topology (one node, a cluster, Sentinel),
/// configured from the variables an operator would set.
#[must_use]
pub fn stock_on(redis: &Redis, dir: &Path) -> Stock {
    build(redis.vars(), dir, |_| {})
}

fn build(vars: Vec<(&str, String)>, dir: &Path, change: impl FnOnce(&mut Settings)) -> Stock {
    let mut config = ConfigBuilder::from_config(Config::from_vars(vars).unwrap())
        .key_prefix("stock")
        .op_timeout(Duration::from_millis(200))
        .breaker_threshold(2)
        .breaker_cooldown(Duration::from_millis(300))
        .build()
        .unwrap();
    config
        .module_ttls
        .insert("balance".into(), Duration::from_secs(60));
    let mut settings = Settings {
        port: 0,
        database_url: dir.join("stock.db").to_string_lossy().into_owned(),
        admin_token: Some("admin-secret".into()),
        rate_limit: "1000/minute".into(),
        reports_dir: dir.join("reports"),
        tenant_source: crate::TenantSource::Header,
        cookie_secure: false,
    };
    change(&mut settings);
    Stock::new(settings, Handle::new(config).unwrap()).unwrap()
}

/// The primary holding tenant 1's keys is killed with SIGKILL while requests go
/// on; a replica is promoted. Every cached and limited route answers 200 the whole
/// time, within the deadlines (fail-open); HITs come back without a restart, and
/// logins work again (sessions fail closed meanwhile). Returns the slowest
/// request seen during the failover.
pub async fn primary_failover<C: Client>(app: &C, redis: &mut Redis) -> Duration {
    let _ = app.send("GET", BALANCE, &T1, "").await;
    assert_eq!(
        app.send("GET", BALANCE, &T1, "").await.header("x-cache"),
        Some("HIT")
    );
    let before = match redis {
        Redis::Cluster(cluster) => {
            let victim = cluster.primary_of_key("{1}");
            cluster.node_mut(victim).kill();
            0
        }
        Redis::Sentinel(set) => {
            let old = set.primary_port();
            set.kill_primary();
            old
        }
        Redis::Single(_) => panic!("a failover needs a cluster or Sentinel"),
    };
    let promoted = |redis: &Redis| match redis {
        Redis::Cluster(cluster) => cluster.primaries().len() == 3,
        Redis::Sentinel(set) => set.primary_port() != before,
        Redis::Single(_) => false,
    };
    let started = std::time::Instant::now();
    let mut worst = Duration::ZERO;
    let mut back = false;
    while started.elapsed() < Duration::from_secs(40) {
        for path in [BALANCE, "/products", "/categories"] {
            let sent = std::time::Instant::now();
            let r = app.send("GET", path, &T1, "").await;
            worst = worst.max(sent.elapsed());
            assert_eq!(r.status, 200, "{path} during the failover: {r:?}");
        }
        if promoted(redis)
            && app.send("GET", BALANCE, &T1, "").await.header("x-cache") == Some("HIT")
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "HITs came back after the failover without a restart");
    // A request makes at most three Redis calls (limit, look-up, write), each
    // bounded by the 200 ms deadline; the origin is a local SQLite query.
    assert!(worst < Duration::from_secs(1), "slowest request {worst:?}");
    let logged_in = eventually(100, Duration::from_millis(100), || async {
        log_in(app, "alice", "alice").await.status == 200
    })
    .await;
    assert!(logged_in, "logins work again after the failover");
    worst
}

/// `POST /login` as `user` with `password`: the reply, whatever it is.
async fn log_in<C: Client>(app: &C, user: &str, password: &str) -> Got {
    let body = serde_json::json!({ "username": user, "password": password });
    app.send("POST", "/login", &[], &body.to_string()).await
}

/// Logs alice in (her password is her name): the reply, asserted 200.
async fn log_in_alice<C: Client>(app: &C) -> Got {
    let login = log_in(app, "alice", "alice").await;
    assert_eq!(login.status, 200, "{login:?}");
    login
}

/// The `Cookie` header value that sends `reply`'s session back.
fn session_of(reply: &Got) -> String {
    format!(
        "stock_session={}",
        reply.session_cookie().expect("a session cookie")
    )
}

const T1: [(&str, &str); 1] = [("x-tenant-id", "1")];
/// One unit of tenant 1's first product at 1.00: a write that invalidates the
/// balance.
const ONE_SALE: &str = r#"{"product_id":1,"quantity":1,"unit_price":1}"#;
const T2: [(&str, &str); 1] = [("x-tenant-id", "2")];
const BALANCE: &str = "/balance?from=2020-01-01&to=2100-01-01&granularity=monthly";

/// MISS then HIT; a sale and a payment invalidate the balance; tenants never see
/// each other's data; keys are per tenant; bad input is a 400.
pub async fn cache_and_tenants<C: Client>(app: &C, redis: &RedisServer) {
    let first = app.send("GET", BALANCE, &T1, "").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = app.send("GET", BALANCE, &T1, "").await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert!(second.header("etag").is_some() && second.header("age").is_some());
    assert_eq!(first.body, second.body);

    let other = app.send("GET", BALANCE, &T2, "").await;
    assert_eq!(
        other.header("x-cache"),
        Some("MISS"),
        "tenant 2 has its own entry"
    );
    assert_ne!(
        other.json()["series"],
        first.json()["series"],
        "and its own data"
    );
    assert_eq!(other.json()["tenant"], 2);

    let sale = app
        .send(
            "POST",
            "/sales",
            &T1,
            r#"{"product_id":1,"quantity":3,"unit_price":100}"#,
        )
        .await;
    assert_eq!(sale.status, 201, "{sale:?}");
    let after = app.send("GET", BALANCE, &T1, "").await;
    assert_eq!(
        after.header("x-cache"),
        Some("MISS"),
        "the sale invalidated balance"
    );
    assert_ne!(after.body, first.body, "and the new balance includes it");
    assert_eq!(
        app.send("GET", BALANCE, &T2, "").await.header("x-cache"),
        Some("HIT"),
        "tenant 2 untouched"
    );
    let _ = app.send("GET", BALANCE, &T1, "").await;
    let pay = app
        .send("POST", "/payments", &T1, r#"{"amount":50,"method":"card"}"#)
        .await;
    assert_eq!(pay.status, 201);
    assert_eq!(
        app.send("GET", BALANCE, &T1, "").await.header("x-cache"),
        Some("MISS")
    );

    // Tenant 2 cannot read tenant 1's product through any id.
    let mine = app.send("GET", "/products", &T1, "").await.json();
    let id = mine[0]["id"].as_i64().unwrap();
    assert_eq!(
        app.send("GET", &format!("/products/{id}"), &T1, "")
            .await
            .status,
        200
    );
    assert_eq!(
        app.send("GET", &format!("/products/{id}"), &T2, "")
            .await
            .status,
        404
    );
    let missing = app.send("GET", "/products/99999", &T1, "").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        app.send("GET", "/products/99999", &T1, "")
            .await
            .header("x-cache"),
        Some("HIT"),
        "negatively cached"
    );

    // Keys: `stock:cache:tenant:{1}:...` and `stock:cache:tenant:{2}:...`, apart.
    let keys = redis.command(&["KEYS", "stock:cache:tenant:*"]);
    assert!(keys.contains("stock:cache:tenant:{1}:balance:"), "{keys}");
    assert!(keys.contains("stock:cache:tenant:{2}:balance:"), "{keys}");

    for (path, needle) in [
        ("/balance?from=2026-13-01", "from"),
        ("/balance?granularity=hourly", "granularity"),
        ("/balance?from=2026-02-01&to=2026-01-01", "after"),
    ] {
        let bad = app.send("GET", path, &T1, "").await;
        assert_eq!(bad.status, 400, "{path}: {bad:?}");
        assert!(
            bad.json()["error"].as_str().unwrap_or("").contains(needle),
            "{bad:?}"
        );
    }
    assert_eq!(
        app.send("GET", BALANCE, &[("x-tenant-id", "1:*")], "")
            .await
            .status,
        400
    );
    assert_eq!(app.send("GET", BALANCE, &[], "").await.status, 400);
    assert_eq!(
        app.send("POST", "/sales", &T1, "{not json").await.status,
        400
    );
}

/// Redis stopped: routes answer 200 and health says degraded; restarted: HITs come
/// back without restarting the app.
pub async fn redis_outage_and_recovery<C: Client>(app: &C, redis: &mut RedisServer) {
    assert_eq!(
        app.send("GET", "/health/cache", &[], "").await.json()["redis"],
        "healthy"
    );
    let _ = app.send("GET", "/products", &T1, "").await;
    assert_eq!(
        app.send("GET", "/products", &T1, "")
            .await
            .header("x-cache"),
        Some("HIT")
    );
    redis.stop();
    for _ in 0..5 {
        let r = app.send("GET", "/products", &T1, "").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(app.send("GET", BALANCE, &T2, "").await.status, 200);
    }
    // A backend failure is a 503 whose body names what failed, never the
    // backend's own text (servers, ports, errno).
    let job = app.send("POST", "/reports/daily", &T1, "").await;
    assert_eq!(job.status, 503, "{job:?}");
    assert_eq!(
        job.json(),
        serde_json::json!({ "error": "report not enqueued: temporarily unavailable" })
    );
    let health = app.send("GET", "/health/cache", &[], "").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "degraded");
    assert_eq!(health.json()["cache"], "unavailable");
    redis.restart();
    assert!(
        eventually(60, Duration::from_millis(100), || async {
            let _ = app.send("GET", "/products", &T1, "").await;
            app.send("GET", "/products", &T1, "")
                .await
                .header("x-cache")
                == Some("HIT")
        })
        .await,
        "HITs return once Redis is back"
    );
    assert_eq!(
        app.send("GET", "/health/cache", &[], "").await.json()["status"],
        "ok"
    );
}

/// Login, session tenant, logout, logout-all, the login rate limit, admin auth, and
/// the report job.
pub async fn sessions_jobs_admin<C: Client>(app: &C) {
    let bad = log_in(app, "alice", "wrong").await;
    assert_eq!(bad.status, 401);
    let cookie = session_of(&log_in_alice(app).await);
    let with = [("cookie", cookie.as_str())];
    assert_eq!(app.send("GET", "/me", &with, "").await.json()["tenant"], 1);
    assert_eq!(app.send("GET", "/me", &[], "").await.status, 401);
    // The session's tenant is the request's tenant; another one is refused.
    let products = app.send("GET", "/products", &with, "").await;
    assert_eq!(products.status, 200);
    let cross = [("cookie", cookie.as_str()), ("x-tenant-id", "2")];
    assert_eq!(app.send("GET", "/products", &cross, "").await.status, 403);
    let listed = app.send("GET", "/sessions", &with, "").await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // The report job.
    let job = app.send("POST", "/reports/daily", &with, "").await;
    assert_eq!(job.status, 202, "{job:?}");
    let id = job.json()["job_id"].as_str().unwrap().to_owned();
    let path = format!("/jobs/{id}");
    assert!(
        eventually(100, Duration::from_millis(100), || async {
            app.send("GET", &path, &with, "").await.json()["state"] == "SUCCESS"
        })
        .await,
        "the report job completes"
    );
    let done = app.send("GET", &path, &with, "").await.json();
    let file = done["result"]["path"].as_str().unwrap();
    assert!(std::path::Path::new(file).exists(), "report file {file}");
    assert_eq!(
        app.send("GET", &path, &T2, "").await.status,
        404,
        "not tenant 2's job"
    );

    assert_eq!(app.send("POST", "/logout-all", &with, "").await.status, 200);
    assert_eq!(
        app.send("GET", "/me", &with, "").await.status,
        401,
        "old cookie rejected"
    );

    // Admin routes need the token.
    assert_eq!(
        app.send("GET", "/admin/cache/stats", &[], "").await.status,
        401
    );
    let auth = [("authorization", "Bearer admin-secret")];
    assert_eq!(
        app.send("GET", "/admin/cache/stats", &auth, "")
            .await
            .status,
        200
    );

    // Login is limited to 5/minute per IP (one used above, one failed).
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(log_in(app, "bob", "bob").await);
    }
    let limited = statuses.last().unwrap();
    assert_eq!(
        limited.status,
        429,
        "{:?}",
        statuses.iter().map(|s| s.status).collect::<Vec<_>>()
    );
    assert!(limited.header("retry-after").is_some() && limited.header("ratelimit").is_some());
}

/// The dashboard at `/admin` beside the cache's admin API at `/admin/cache/*`: both
/// answer, neither without the token; a browser signs in through the form and
/// revokes a job from its page; `/admin/login` is rate limited like `/login`.
pub async fn dashboard<C: Client>(app: &C) {
    let auth = [("authorization", "Bearer admin-secret")];
    for path in ["/admin", "/admin/", "/admin/jobs", "/admin/api/overview"] {
        assert_eq!(app.send("GET", path, &[], "").await.status, 401, "{path}");
        assert_eq!(app.send("GET", path, &auth, "").await.status, 200, "{path}");
    }
    // The cache's own admin API keeps its paths.
    let stats = app.send("GET", "/admin/cache/stats", &auth, "").await;
    assert_eq!(stats.status, 200);
    assert!(stats.json().get("hit_ratio").is_some(), "{}", stats.body);
    let page = app.send("GET", "/admin/cache-stats", &auth, "").await;
    assert!(page.body.contains("hit ratio"), "{}", page.body);
    let overview = app
        .send("GET", "/admin/api/overview", &auth, "")
        .await
        .json();
    assert_eq!(overview["health"]["redis"], "healthy", "{overview}");

    // A browser: sign in, open a queued job's page, revoke it with the page's token.
    let report = app
        .send("POST", "/reports/daily", &[("x-tenant-id", "1")], "")
        .await;
    let id = report.json()["job_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("sec-fetch-site", "same-origin"),
    ];
    let signed = app
        .send("POST", "/admin/login", &form, "token=admin-secret")
        .await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let cookie = signed
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let with_cookie = [("cookie", cookie.as_str())];
    let job_page = app
        .send("GET", &format!("/admin/jobs/{id}"), &with_cookie, "")
        .await;
    assert_eq!(job_page.status, 200, "{}", job_page.body);
    assert!(
        job_page.body.contains("send_daily_report"),
        "{}",
        job_page.body
    );
    let csrf = job_page
        .body
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let post = [
        ("cookie", cookie.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
        ("sec-fetch-site", "same-origin"),
    ];
    let path = format!("/admin/jobs/{id}/revoke");
    assert_eq!(
        app.send("POST", &path, &post, "").await.status,
        403,
        "no token"
    );
    let revoked = app
        .send("POST", &path, &post, &format!("_csrf={csrf}"))
        .await;
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    let detail = app
        .send("GET", &format!("/admin/api/jobs/{id}"), &auth, "")
        .await
        .json();
    assert!(
        matches!(detail["state"].as_str(), Some("REVOKED" | "SUCCESS")),
        "{detail}"
    );

    // Guessing the token is limited to 5 tries a minute per client.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            app.send("POST", "/admin/login", &form, "token=guess")
                .await
                .status,
        );
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

/// `/metrics` in Prometheus's text format: larder's counters and histograms as the
/// app records them, and the job queue's depths read at the scrape. A worker must
/// be running the app's tasks (the job histograms need a sample).
pub async fn metrics<C: Client>(app: &C) {
    crate::prometheus().expect("the test process installs no other recorder");
    let tenant = [("x-tenant-id", "1")];
    for _ in 0..2 {
        assert_eq!(app.send("GET", "/balance", &tenant, "").await.status, 200);
    }
    let job = app.send("POST", "/reports/daily", &tenant, "").await.json();
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    assert!(
        eventually(100, Duration::from_millis(50), || async {
            let got = app.send("GET", &format!("/jobs/{id}"), &tenant, "").await;
            got.json()["state"] == "SUCCESS"
        })
        .await
    );
    let got = app.send("GET", "/metrics", &[], "").await;
    assert_eq!(got.status, 200);
    assert!(got
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/plain"));
    let text = got.body;
    for line in [
        "# TYPE larder_redis_ops_total counter",
        "larder_cache_requests_total{module=\"balance\",outcome=\"hit\"}",
        "larder_ratelimit_decisions_total{policy=\"ip\",decision=\"allow\"}",
        "larder_jobs_total{task=\"send_daily_report\",outcome=\"enqueued\"}",
        "larder_jobs_in_state{queue=\"default\",state=\"dead\"} 0",
        "larder_jobs_queued{queue=\"default\"}",
        "larder_redis_op_duration_seconds_bucket{op=",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(
        text.contains("larder_job_run_seconds_bucket{task=\"send_daily_report\""),
        "{text}"
    );
    assert!(
        text.contains("larder_job_age_at_start_seconds_count{task=\"send_daily_report\"}"),
        "{text}"
    );
}

/// Each component's work on a request runs in its span, with tenant, module (or
/// task) and outcome, and no span carries the session id or the client's address.
/// The caller holds [`larder_testing::spans::capture`]'s guard, on the thread its
/// requests run on.
pub async fn spans<C: Client>(app: &C, spans: &larder_testing::spans::Spans) {
    let tenant = [("x-tenant-id", "1")];
    for _ in 0..2 {
        assert_eq!(app.send("GET", "/balance", &tenant, "").await.status, 200);
    }
    let login = log_in_alice(app).await;
    let id = login.session_cookie().expect("a session cookie");
    let cookie = session_of(&login);
    let with = [("cookie", cookie.as_str())];
    assert_eq!(app.send("GET", "/me", &with, "").await.status, 200);
    let job = app.send("POST", "/reports/daily", &with, "").await;
    assert_eq!(job.status, 202, "{job:?}");

    let all = spans.all();
    let one = |name: &str, fields: &[(&str, &str)]| {
        all.iter()
            .any(|s| s.name == name && fields.iter().all(|(k, v)| s.field(k) == *v))
    };
    for (name, fields) in [
        (
            "cache.lookup",
            [("tenant", "1"), ("module", "balance"), ("outcome", "miss")],
        ),
        (
            "cache.lookup",
            [("tenant", "1"), ("module", "balance"), ("outcome", "hit")],
        ),
        (
            "ratelimit.check",
            [
                ("module", "ratelimit"),
                ("policy", "ip"),
                ("outcome", "allowed"),
            ],
        ),
        (
            "session.load",
            // The stock app keeps sessions out of tenants' scopes (the session
            // names the tenant): the span's tenant is empty.
            [("tenant", ""), ("namespace", "session"), ("outcome", "hit")],
        ),
        (
            "jobs.enqueue",
            [
                ("tenant", "1"),
                ("task", "send_daily_report"),
                ("outcome", "enqueued"),
            ],
        ),
    ] {
        assert!(
            one(name, &fields),
            "no {name} span with {fields:?} in {all:#?}"
        );
    }
    for span in &all {
        for value in span.fields.values() {
            assert!(
                !value.contains(id.as_str()) && !value.contains("192.0.2.10"),
                "a secret in {span:?}"
            );
        }
    }
}

/// Every key in `redis` outside the cache's root, sorted.
fn keys_outside_the_cache(redis: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> = redis
        .command(&["KEYS", "*"])
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .filter(|k| !k.starts_with("stock:cache:"))
        .map(str::to_owned)
        .collect();
    keys.sort_unstable();
    keys
}

/// The cache's admin operations touch cache keys only: with a session, a queued
/// job, its record and rate-limit state in Redis, `clear`, `invalidate-pattern` with
/// the widest globs an admin can send, and `invalidate/{key}` naming a session or a
/// job, leave every one of them as it was, while the cache's own entries go.
/// `start_worker` is called once the sweeps are done: the job queued before them
/// must still run.
pub async fn cache_admin_touches_only_the_cache<C: Client>(
    app: &C,
    redis: &RedisServer,
    start_worker: impl FnOnce(),
) {
    let auth = ("authorization", "Bearer admin-secret");
    let cookie = session_of(&log_in_alice(app).await);
    let with = [("cookie", cookie.as_str())];
    let job = app.send("POST", "/reports/daily", &with, "").await;
    assert_eq!(job.status, 202, "{job:?}");
    let job_path = format!("/jobs/{}", job.json()["job_id"].as_str().unwrap());
    let queued = app.send("GET", &job_path, &with, "").await.json();
    assert_eq!(queued["done"], false, "no worker yet: {queued}");
    for tenant in [T1, T2] {
        let _ = app.send("GET", BALANCE, &tenant, "").await;
        let _ = app.send("GET", "/products", &tenant, "").await;
    }
    let _ = app.send("POST", "/sales", &T1, ONE_SALE).await;
    let before = keys_outside_the_cache(redis);
    for family in [":session:", ":jobs:", ":ratelimit:"] {
        assert!(
            before.iter().any(|k| k.contains(family)),
            "every component has keys before the sweeps ({family}): {before:?}"
        );
    }
    let session_key = before.iter().find(|k| k.contains(":session:")).unwrap();
    let job_key = before.iter().find(|k| k.contains(":jobs:")).unwrap();

    let encoded = |k: &str| k.replace('{', "%7B").replace('}', "%7D");
    let sweeps = [
        "/admin/cache/invalidate-pattern/*".to_owned(),
        "/admin/cache/invalidate-pattern/**".to_owned(),
        "/admin/cache/invalidate-pattern/*session*".to_owned(),
        "/admin/cache/invalidate-pattern/..%2F*".to_owned(),
        format!("/admin/cache/invalidate/{}", encoded(session_key)),
        format!("/admin/cache/invalidate/{}", encoded(job_key)),
        "/admin/cache/clear".to_owned(),
    ];
    for sweep in &sweeps {
        let r = app.send("POST", sweep, &[auth], "").await;
        assert_eq!(r.status, 200, "{sweep}: {r:?}");
        assert_eq!(
            keys_outside_the_cache(redis),
            before,
            "{sweep} touched keys outside the cache"
        );
    }
    let left = redis.command(&["KEYS", "stock:cache:*"]);
    assert!(!left.contains("balance:"), "the cache was cleared: {left}");
    assert_eq!(
        app.send("GET", BALANCE, &T1, "").await.header("x-cache"),
        Some("MISS")
    );

    assert_eq!(
        app.send("GET", "/me", &with, "").await.status,
        200,
        "the session survived"
    );
    start_worker();
    assert!(
        eventually(100, Duration::from_millis(100), || async {
            app.send("GET", &job_path, &with, "").await.json()["state"] == "SUCCESS"
        })
        .await,
        "the job queued before the sweeps still runs"
    );
}

/// Rules follow the router: whatever spelling of a path the framework routes to a
/// handler (percent-escapes, double slashes, a trailing slash, dot segments), the
/// invalidation, cache and rate-limit rules of that route apply to it. A spelling
/// the router does not route (404) reaches no handler, so no rule is owed.
/// Returns how many spellings the router routed, for the caller to check against
/// what its framework is known to do.
pub async fn rules_follow_the_router<C: Client>(app: &C) -> usize {
    fn spellings(path: &str) -> Vec<String> {
        let name = path.trim_start_matches('/');
        let first = name.as_bytes()[0];
        vec![
            format!("/%{first:02X}{}", &name[1..]),
            format!("/%{first:02x}{}", &name[1..]),
            format!(
                "/{}%{:02X}",
                &name[..name.len() - 1],
                name.as_bytes()[name.len() - 1]
            ),
            format!("//{name}"),
            format!("/{name}/"),
            format!("/./{name}"),
            format!("/x/../{name}"),
            format!("/%2E/{name}"),
        ]
    }
    let mut routed = 0;

    // Invalidation: a sale however spelled invalidates the balance.
    for sales in spellings("/sales") {
        let _ = app.send("GET", BALANCE, &T1, "").await;
        assert_eq!(
            app.send("GET", BALANCE, &T1, "").await.header("x-cache"),
            Some("HIT")
        );
        let sale = app.send("POST", &sales, &T1, ONE_SALE).await;
        if sale.status == 404 {
            continue;
        }
        assert_eq!(sale.status, 201, "{sales}: {sale:?}");
        routed += 1;
        assert_eq!(
            app.send("GET", BALANCE, &T1, "").await.header("x-cache"),
            Some("MISS"),
            "POST {sales} wrote a sale: the balance must be invalidated"
        );
    }

    // Caching: a read however spelled is never a stale HIT after a write.
    let query = BALANCE.trim_start_matches("/balance");
    for balance in spellings("/balance") {
        let target = format!("{balance}{query}");
        let first = app.send("GET", &target, &T1, "").await;
        if first.status == 404 {
            continue;
        }
        assert_eq!(first.status, 200, "{target}: {first:?}");
        routed += 1;
        let _ = app.send("GET", &target, &T1, "").await;
        let sale = app.send("POST", "/sales", &T1, ONE_SALE).await;
        assert_eq!(sale.status, 201);
        let after = app.send("GET", &target, &T1, "").await;
        assert_ne!(
            after.header("x-cache"),
            Some("HIT"),
            "{target} served stale after a sale"
        );
        assert_eq!(
            after.json()["series"],
            app.send("GET", BALANCE, &T1, "").await.json()["series"]
        );
    }

    // Limits: login is 5/minute per address, however spelled.
    let wrong = r#"{"username":"alice","password":"wrong"}"#;
    for _ in 0..5 {
        let r = app.send("POST", "/login", &[], wrong).await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    for login in spellings("/login") {
        let r = app.send("POST", &login, &[], wrong).await;
        if r.status == 404 {
            continue;
        }
        routed += 1;
        assert_eq!(
            r.status, 429,
            "POST {login} reached login past its limit: {r:?}"
        );
    }
    routed
}

/// Nothing a client sends grows Redis for good: made-up tenant ids get a 404 and
/// no key at all, undeclared query parameters bypass the cache (no entry), and
/// every key requests leave behind (cache entries and markers, limits, sessions)
/// expires. Job structures are left out: a queue lives while it holds jobs.
pub async fn requests_cannot_grow_redis_for_good<C: Client>(app: &C, redis: &RedisServer) {
    for n in 0..20 {
        let made_up = format!("made-up-{n}");
        let headers = [("x-tenant-id", made_up.as_str())];
        let numeric = format!("{}", 1000 + n);
        let numeric_headers = [("x-tenant-id", numeric.as_str())];
        for headers in [&headers[..], &numeric_headers[..]] {
            let read = app.send("GET", BALANCE, headers, "").await;
            assert!(matches!(read.status, 400 | 404), "{read:?}");
            assert_ne!(read.header("x-cache"), Some("MISS"), "{read:?}");
            let write = app.send("POST", "/sales", headers, ONE_SALE).await;
            assert!(matches!(write.status, 400 | 404), "{write:?}");
        }
    }
    let keys = redis.command(&["KEYS", "*made-up*"]);
    assert!(!keys.contains("made-up"), "{keys}");
    let keys = redis.command(&["KEYS", "*{10[0-9][0-9]}*"]);
    assert!(!keys.contains("stock:"), "{keys}");

    for n in 0..20 {
        let r = app.send("GET", &format!("/products?x={n}"), &T1, "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), Some("BYPASS"), "?x={n}");
        let r = app
            .send("GET", &format!("{BALANCE}&utm={n}"), &T1, "")
            .await;
        assert_eq!(r.header("x-cache"), Some("BYPASS"), "&utm={n}");
    }
    let entries = redis.command(&["KEYS", "stock:cache:tenant:{1}:products:*"]);
    assert!(!entries.contains("x="), "{entries}");
    // The declared parameters still form the key: the plain routes cache.
    let _ = app.send("GET", "/products", &T1, "").await;
    assert_eq!(
        app.send("GET", "/products", &T1, "")
            .await
            .header("x-cache"),
        Some("HIT")
    );
    let _ = app.send("GET", BALANCE, &T1, "").await;
    assert_eq!(
        app.send("GET", BALANCE, &T1, "").await.header("x-cache"),
        Some("HIT")
    );
    let _ = app.send("POST", "/sales", &T1, ONE_SALE).await;
    let login = log_in(app, "bob", "bob").await;
    assert_eq!(login.status, 200);

    let all = redis.command(&["KEYS", "stock:*"]);
    let keys: Vec<&str> = all
        .lines()
        .filter(|k| k.starts_with("stock:") && !k.starts_with("stock:jobs:"))
        .collect();
    for family in ["stock:cache:", "stock:session:", "stock:ratelimit:"] {
        assert!(
            keys.iter().any(|k| k.starts_with(family)),
            "{family}: {keys:?}"
        );
    }
    for key in keys {
        let ttl = redis.command(&["PTTL", key]);
        let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
        assert!(ttl > 0, "{key} never expires ({ttl})");
    }
}

/// The app's binary `bin`, started as `docker stop` meets it (web and worker, or
/// `--worker-only`), stops on SIGTERM: it drains, hands its jobs back and exits 0.
/// Its database and reports go in `dir`.
pub fn sigterm_stops_the_process_cleanly(
    bin: &str,
    redis: &RedisServer,
    dir: &Path,
    args: &[&str],
) {
    use std::process::{Command, Stdio};
    let port = larder_testing::free_port();
    let mut child = Command::new(bin)
        .args(args)
        .env("REDIS_URL", redis.url())
        .env("PORT", port.to_string())
        .env("DATABASE_URL", dir.join("stock.db"))
        .env("REPORTS_DIR", dir.join("reports"))
        .env("RUST_LOG", "info")
        // The Actix app signs its cookie and, with Redis, requires a key.
        .env(
            "SESSION_KEY",
            "sigterm-test-session-key-sigterm-test-session-key-sigterm-test-key",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The app logs (to stdout) once it serves or runs jobs, after its signal
    // handlers are in place.
    let ready = if args.contains(&"--worker-only") {
        "worker only: running jobs"
    } else {
        "listening on"
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(ready) {
                let _ = tx.send(());
            }
        }
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(15)).is_ok(),
        "{bin} {args:?} did not start"
    );
    if !args.contains(&"--worker-only") {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    }
    larder_testing::terminate(child.id());
    let mut status = None;
    for _ in 0..400 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("{bin} {args:?} still running 20 s after SIGTERM");
    };
    assert_eq!(status.code(), Some(0), "{bin} {args:?}: {status}");
}

/// With `TENANT_SOURCE=session` (and `COOKIE_SECURE=true`, as in production), the
/// tenant comes from the logged-in session only: an anonymous client naming a
/// tenant gets 401 and no data, a header that disagrees with the session is a 403,
/// and the session cookie is `Secure`.
pub async fn tenant_from_the_session_only<C: Client>(app: &C) {
    for path in [BALANCE, "/products", "/products/1", "/categories"] {
        let r = app.send("GET", path, &T2, "").await;
        assert_eq!(
            r.status, 401,
            "anonymous {path} with a tenant header: {r:?}"
        );
        assert!(!r.body.contains("\"tenant\":2"), "{r:?}");
    }
    let sale = app.send("POST", "/sales", &T1, ONE_SALE).await;
    assert_eq!(sale.status, 401, "{sale:?}");

    let login = log_in_alice(app).await;
    let set_cookie = login
        .headers
        .iter()
        .find(|(n, v)| n == "set-cookie" && v.starts_with("stock_session="))
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(set_cookie.contains("Secure"), "{set_cookie}");
    let cookie = session_of(&login);
    let mine = app
        .send("GET", BALANCE, &[("cookie", cookie.as_str())], "")
        .await;
    assert_eq!(mine.status, 200, "{mine:?}");
    assert_eq!(mine.json()["tenant"], 1);
    let same = [("cookie", cookie.as_str()), ("x-tenant-id", "1")];
    assert_eq!(app.send("GET", BALANCE, &same, "").await.status, 200);
    let other = [("cookie", cookie.as_str()), ("x-tenant-id", "2")];
    assert_eq!(app.send("GET", BALANCE, &other, "").await.status, 403);
}

/// Every JSON number in `body` that has a fractional part has at most two decimals.
fn amounts_have_two_decimals_at_most(body: &str) {
    let value: Value = serde_json::from_str(body).unwrap();
    let mut stack = vec![&value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => {
                let text = n.to_string();
                let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
                assert!(decimals <= 2, "{text} in {body}");
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => stack.extend(fields.values()),
            _ => {}
        }
    }
}

/// Money is exact: prices and balances have at most two decimals (tenant 2's
/// prices are 10% above tenant 1's, which floats showed as `13.750000000000002`),
/// sums of cents add up, and an amount with more decimals or a fractional quantity
/// is a 400.
pub async fn money_is_exact<C: Client>(app: &C) {
    for tenant in [T1, T2] {
        let products = app.send("GET", "/products", &tenant, "").await;
        assert_eq!(products.status, 200);
        amounts_have_two_decimals_at_most(&products.body);
    }
    // The last period's running balance, read back as cents (exact: the amounts
    // have at most two decimals, checked first).
    let balance = |body: &str| -> i64 {
        amounts_have_two_decimals_at_most(body);
        let v: Value = serde_json::from_str(body).unwrap();
        let last = v["series"].as_array().unwrap().last().unwrap()["balance"].clone();
        serde_json::from_value::<crate::Money>(last)
            .unwrap()
            .cents()
    };
    let before = app.send("GET", BALANCE, &T2, "").await;
    for (body, status) in [
        (r#"{"product_id":6,"quantity":3,"unit_price":0.1}"#, 201),
        (r#"{"product_id":6,"quantity":1,"unit_price":0.2}"#, 201),
        (r#"{"product_id":6,"quantity":1,"unit_price":12.345}"#, 400),
        (r#"{"product_id":6,"quantity":1.5,"unit_price":1}"#, 400),
        (r#"{"product_id":6,"quantity":0,"unit_price":1}"#, 400),
    ] {
        let r = app.send("POST", "/sales", &T2, body).await;
        assert_eq!(r.status, status, "{body}: {r:?}");
    }
    let pay = app
        .send(
            "POST",
            "/payments",
            &T2,
            r#"{"amount":0.1,"method":"card"}"#,
        )
        .await;
    assert_eq!(pay.status, 201, "{pay:?}");
    let after = app.send("GET", BALANCE, &T2, "").await;
    assert_eq!(
        balance(&after.body) - balance(&before.body),
        30 + 20 - 10,
        "{} then {}",
        before.body,
        after.body
    );
}
