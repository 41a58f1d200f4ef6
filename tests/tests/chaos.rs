//! Chaos under load: a steady load of concurrent clients over cached, limited,
//! session and job routes of each example app (a real process) while its
//! redis-server is stopped, frozen (SIGSTOP), flapped (stopped and started every
//! second for 10 s) and restarted empty. Each scenario prints its figures as a row
//! of RELIABILITY.md (`cargo test -p larder-e2e --test chaos -- --nocapture`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use larder_e2e::{
    client, heavy, login, serial, App, AppEnv, Framework, Load, Req, Role, Sample, Site, Summary,
    OP_TIMEOUT,
};
use larder_testing::RedisServer;

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGTERM, 3 s down, started again (empty: no persistence).
    Stop,
    /// SIGSTOP for 3 s, then SIGCONT: sockets open, nothing answers.
    Freeze,
    /// Stopped and started every second for 10 s.
    Flap,
    /// SIGKILL and started again at once, with nothing in it.
    RestartEmpty,
}

impl Fault {
    const ALL: [Self; 4] = [Self::Stop, Self::Freeze, Self::Flap, Self::RestartEmpty];

    fn name(self) -> &'static str {
        match self {
            Self::Stop => "stopped 3 s",
            Self::Freeze => "frozen 3 s (SIGSTOP)",
            Self::Flap => "flapped 1 s × 10",
            Self::RestartEmpty => "restarted empty",
        }
    }

    /// Brings the fault about and ends it (blocking: the load runs on the
    /// runtime's other thread meanwhile).
    fn run(self, redis: &mut RedisServer) {
        let sleep = std::thread::sleep;
        match self {
            Self::Stop => {
                redis.stop();
                sleep(Duration::from_secs(3));
                redis.restart();
            }
            Self::Freeze => {
                redis.freeze();
                sleep(Duration::from_secs(3));
                redis.thaw();
            }
            Self::Flap => {
                for _ in 0..10 {
                    redis.stop();
                    sleep(Duration::from_millis(500));
                    redis.restart();
                    sleep(Duration::from_millis(500));
                }
            }
            Self::RestartEmpty => {
                redis.kill();
                redis.restart();
            }
        }
    }
}

/// Tenant `t`'s `GET /balance`, limited (every route counts against the per-IP
/// policy) and cached.
fn balance(app: &str, t: u64) -> Req {
    Req::get("cached", format!("{app}/balance")).header("x-tenant-id", t.to_string())
}

/// The request mix: six cached reads (`/balance`, `/products`) in ten, two
/// session reads (`/me`), one report enqueue, one job status read.
fn mix(app: String, cookies: Vec<(u64, String)>) -> Arc<larder_e2e::load::Make> {
    Arc::new(move |c, n| {
        let tenant = (c as u64 + n) % 2 + 1;
        match n % 10 {
            0..=4 => balance(&app, tenant),
            5 => Req::get("cached", format!("{app}/products"))
                .header("x-tenant-id", tenant.to_string()),
            6 | 7 => {
                let (t, cookie) = &cookies[(c + n as usize) % cookies.len()];
                Req::get("session", format!("{app}/me"))
                    .header("cookie", cookie.clone())
                    .header("x-expect-tenant", t.to_string())
            }
            8 => Req::post("job", format!("{app}/reports/daily"), "")
                .header("x-tenant-id", tenant.to_string()),
            _ => Req::get("job", format!("{app}/jobs/no-such-job"))
                .header("x-tenant-id", tenant.to_string()),
        }
    })
}

/// No answer may carry another tenant's data: `/balance` names its tenant, `/me`
/// its session's.
fn inspect() -> Arc<larder_e2e::load::Inspect> {
    Arc::new(|req, status, body| {
        if status != 200 {
            return None;
        }
        let want = req
            .headers
            .iter()
            .find(|(k, _)| *k == "x-expect-tenant" || *k == "x-tenant-id")
            .map(|(_, v)| v.clone())?;
        if !(req.url.ends_with("/balance") || req.url.ends_with("/me")) {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        let got = json["tenant"].to_string();
        (got != want).then(|| format!("{} asked for tenant {want}, got {got}", req.url))
    })
}

/// A 5xx larder caused: any on a route that fails open (cache, limits), and any
/// that is not the app's documented refusal. Sessions fail closed (503 with a JSON
/// `error`, `SESSION_DEGRADED=fail-closed`) and a report that cannot be queued is a
/// 503 `report not enqueued`: those are the policy, counted apart.
fn larder_5xx(s: &Sample) -> bool {
    let Some(status) = s.status.filter(|st| *st >= 500) else {
        return false;
    };
    let refusal = status == 503
        && s.route != "cached"
        && s.error_body
            .as_deref()
            .is_some_and(|b| b.contains("\"error\""));
    !refusal
}

/// How long after its return Redis serves the app's reads again: until its
/// `keyspace_hits` grows (a cache entry, a session or a limit read from Redis, not
/// from the app's in-process tier).
fn redis_backed_again(redis: &RedisServer) -> Duration {
    let hits = || {
        redis
            .command(&["INFO", "stats"])
            .lines()
            .find_map(|l| l.strip_prefix("keyspace_hits:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let started = std::time::Instant::now();
    let before = hits();
    while hits() == before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Redis served no read in 30 s after its return"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

async fn scenario(framework: Framework, fault: Fault) -> String {
    let _one_at_a_time = serial().await;
    let mut redis = RedisServer::start();
    let site = Site::new();
    let app = App::start(framework, &site, Role::Both, &AppEnv::single(&redis));
    let http = client();
    let cookies = vec![
        (1, login(&http, &app, "alice").await),
        (2, login(&http, &app, "bob").await),
    ];
    let clients = if heavy() { 32 } else { 12 };
    let settle = Duration::from_secs(if heavy() { 10 } else { 3 });
    let load = Load::start(&http, clients, mix(app.base.clone(), cookies), inspect());
    tokio::time::sleep(settle).await;
    let fault_at = load.now();
    tokio::task::block_in_place(|| fault.run(&mut redis));
    let back_at = load.now();
    let redis_again = tokio::task::block_in_place(|| redis_backed_again(&redis));
    tokio::time::sleep(settle + Duration::from_secs(2)).await;
    let samples = load.stop().await;

    let all = Summary::of(&samples);
    let during = Summary::of(
        samples
            .iter()
            .filter(|s| s.sent >= fault_at && s.sent <= back_at),
    );
    let caused: Vec<&Sample> = samples.iter().filter(|s| larder_5xx(s)).collect();
    let refused = samples
        .iter()
        .filter(|s| s.status == Some(503) && !larder_5xx(s))
        .count();
    // The origin's own time: the slowest 1% of misses before the fault.
    let origin = Summary::of(
        samples
            .iter()
            .filter(|s| s.sent < fault_at && s.x_cache.as_deref() == Some("MISS")),
    )
    .p99;
    // A request makes up to three Redis calls one after another (the limit, then
    // the cache or session look-up, then the store or enqueue), each bounded by
    // the deadline; 300 ms of slack for two cores shared by the app, Redis and the
    // load generator.
    let bound = OP_TIMEOUT * 3 + origin + Duration::from_millis(300);
    let hit_again = samples
        .iter()
        .filter(|s| s.sent >= back_at && s.x_cache.as_deref() == Some("HIT"))
        .map(|s| s.sent + s.latency - back_at)
        .min();
    let problems: Vec<&String> = samples.iter().filter_map(|s| s.problem.as_ref()).collect();

    let row = format!(
        "| {} | {} | {} | {} | {} | {} | {} ms | {} ms | {} ms | {} | {} ms | {} |",
        framework.name(),
        fault.name(),
        all.requests,
        all.statuses(),
        caused.len(),
        refused,
        during.p99.as_millis(),
        during.worst.as_millis(),
        bound.as_millis(),
        hit_again.map_or("never".into(), |d| format!("{} ms", d.as_millis())),
        redis_again.as_millis(),
        all.lost,
    );
    eprintln!("{row}");
    assert!(
        caused.is_empty(),
        "{row}\n5xx caused by larder: {:?}\napp log:\n{}",
        caused.iter().take(5).collect::<Vec<_>>(),
        app.log()
    );
    assert_eq!(all.lost, 0, "{row}: requests with no answer");
    assert!(problems.is_empty(), "{row}: {problems:?}");
    assert!(
        during.worst <= bound,
        "{row}: a request waited {:?}, past the deadlines plus the origin's time ({bound:?})",
        during.worst
    );
    assert!(
        hit_again.is_some(),
        "{row}: no HIT after Redis came back\napp log:\n{}",
        app.log()
    );
    assert!(during.requests > 0, "{row}: the load ran through the fault");
    row
}

async fn chaos(framework: Framework) {
    let mut rows = Vec::new();
    for fault in Fault::ALL {
        rows.push(scenario(framework, fault).await);
    }
    eprintln!(
        "| app | fault | requests | answers by status | 5xx by larder | 503 by policy | p99 during | worst during | bound | first HIT after return | Redis read again after | lost |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{}",
        rows.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_app_under_load_through_redis_faults() {
    chaos(Framework::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_app_under_load_through_redis_faults() {
    chaos(Framework::Actix).await;
}
