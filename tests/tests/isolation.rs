//! Tenant isolation under load: many clients send randomized requests as many
//! tenants and users (cached balances and categories, sessions, job results) with
//! writes interleaved, and every answer is checked for another tenant's data.
//! `cargo test -p larder-e2e --test isolation -- --nocapture` prints the figures.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use larder_e2e::{
    client, heavy, login, serial, App, AppEnv, Framework, Load, Req, Role, Site, Summary,
};
use larder_testing::RedisServer;
use serde_json::Value;

const TENANTS: u64 = 8;

/// A spread of numbers from (client, request) with no randomness crate: SplitMix64.
fn mix(c: usize, n: u64) -> u64 {
    let mut z =
        (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_add(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What an answer must show, carried to the inspector in headers the app ignores.
fn expect(req: Req, check: &str, tenant: u64) -> Req {
    req.header("x-check", check)
        .header("x-expect-tenant", tenant.to_string())
}

fn header<'a>(req: &'a Req, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

/// The leak, if the answer holds another tenant's data.
fn leak(req: &Req, status: u16, body: &[u8]) -> Option<String> {
    let check = header(req, "x-check")?;
    let want: u64 = header(req, "x-expect-tenant")?.parse().ok()?;
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let wrong = |what: String| Some(format!("{} {check}: {what}", req.url));
    match (check, status) {
        ("tenant-field", 200) => (json["tenant"] != want)
            .then(|| format!("{} tenant {want}: got {}", req.url, json["tenant"])),
        ("categories", 200) => {
            // Names the suite writes are `t{tenant}-{n}`: any other tenant's is a leak.
            let names = json.as_array()?;
            names
                .iter()
                .filter_map(|c| c["name"].as_str())
                .filter_map(|n| n.strip_prefix('t')?.split_once('-'))
                .find(|(t, _)| *t != want.to_string())
                .and_then(|(t, n)| wrong(format!("tenant {want} saw t{t}-{n}")))
        }
        ("own-job", _) => {
            if status != 200 {
                return wrong(format!("own job answered {status}"));
            }
            (json["result"]["totals"]["tenant"] != want).then(|| {
                format!(
                    "{}: tenant {want}'s job shows {}",
                    req.url, json["result"]["totals"]
                )
            })
        }
        ("foreign-job", _) => {
            (status != 404).then(|| format!("{}: another tenant's job answered {status}", req.url))
        }
        (_, 200 | 201 | 202 | 404 | 429 | 503) => None,
        (_, other) => wrong(format!("status {other}")),
    }
}

async fn isolation(framework: Framework) {
    let _one_at_a_time = serial().await;
    let redis = RedisServer::start();
    let site = Site::with_tenants(i64::try_from(TENANTS).unwrap());
    let app = App::start(framework, &site, Role::Both, &AppEnv::single(&redis));
    let http = client();
    let mut cookies = Vec::new();
    for t in 1..=TENANTS {
        let user = match t {
            1 => "alice".to_owned(),
            2 => "bob".to_owned(),
            n => format!("user{n}"),
        };
        cookies.push((t, login(&http, &app, &user).await));
    }
    // One finished report job per tenant, whose result names its tenant.
    let mut jobs = HashMap::new();
    for t in 1..=TENANTS {
        let r = http
            .post(app.url("/reports/daily"))
            .header("x-tenant-id", t.to_string())
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        jobs.insert(t, body["job_id"].as_str().unwrap().to_owned());
    }
    for (t, id) in &jobs {
        assert!(
            larder_testing::eventually(200, Duration::from_millis(50), || async {
                let r = http
                    .get(app.url(&format!("/jobs/{id}")))
                    .header("x-tenant-id", t.to_string())
                    .send()
                    .await
                    .unwrap();
                r.text().await.unwrap().contains("\"SUCCESS\"")
            })
            .await,
            "tenant {t}'s report ran"
        );
    }

    let base = app.base.clone();
    let make: Arc<larder_e2e::load::Make> = Arc::new(move |c, n| {
        let r = mix(c, n);
        let t = r % TENANTS + 1;
        let other = (r >> 8) % TENANTS + 1;
        let tid = t.to_string();
        match (r >> 16) % 10 {
            0..=2 => expect(
                Req::get("cached", format!("{base}/balance")).header("x-tenant-id", tid),
                "tenant-field",
                t,
            ),
            3 | 4 => expect(
                Req::get("cached", format!("{base}/categories")).header("x-tenant-id", tid),
                "categories",
                t,
            ),
            5 => Req::post(
                "write",
                format!("{base}/categories"),
                &format!(r#"{{"name":"t{t}-{c}x{n}"}}"#),
            )
            .header("x-tenant-id", tid),
            6 | 7 => {
                let (owner, cookie) = &cookies[usize::try_from(t - 1).unwrap()];
                expect(
                    Req::get("session", format!("{base}/me")).header("cookie", cookie.clone()),
                    "tenant-field",
                    *owner,
                )
            }
            _ => {
                let id = &jobs[&other];
                let check = if other == t { "own-job" } else { "foreign-job" };
                expect(
                    Req::get("job", format!("{base}/jobs/{id}")).header("x-tenant-id", tid),
                    check,
                    t,
                )
            }
        }
    });
    let clients = if heavy() { 32 } else { 16 };
    let load = Load::start(&http, clients, make, Arc::new(leak));
    tokio::time::sleep(Duration::from_secs(if heavy() { 30 } else { 6 })).await;
    let samples = load.stop().await;
    let all = Summary::of(&samples);
    let checked = samples
        .iter()
        .filter(|s| s.route != "write" && s.status.is_some())
        .count();
    let leaks: Vec<&String> = samples.iter().filter_map(|s| s.problem.as_ref()).collect();
    eprintln!(
        "| {} | {TENANTS} tenants, {TENANTS} users, {clients} clients | {} | {} | {checked} | {} |",
        framework.name(),
        all.requests,
        all.statuses(),
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "{} leaks, first: {:?}",
        leaks.len(),
        leaks.first()
    );
    assert_eq!(all.lost, 0);
    let writes = samples.iter().filter(|s| s.route == "write").count();
    assert!(
        writes > 0 && checked > 1000,
        "the load ran: {writes} writes, {checked} checked"
    );
    // Every check kind ran and passed at least once (the inspector is not vacuous).
    for kind in ["cached", "session", "job"] {
        assert!(
            samples
                .iter()
                .any(|s| s.route == kind && s.status == Some(200)),
            "no successful {kind} request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_app_never_serves_another_tenants_data() {
    isolation(Framework::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_app_never_serves_another_tenants_data() {
    isolation(Framework::Actix).await;
}

/// The inspector sees a leak when there is one (else 0 leaks would prove nothing).
#[test]
fn the_inspector_catches_foreign_data() {
    let base = "http://x";
    let balance = expect(
        Req::get("cached", format!("{base}/balance")),
        "tenant-field",
        3,
    );
    assert!(leak(&balance, 200, br#"{"tenant":4,"series":[]}"#).is_some());
    assert!(leak(&balance, 200, br#"{"tenant":3,"series":[]}"#).is_none());
    let cats = expect(
        Req::get("cached", format!("{base}/categories")),
        "categories",
        3,
    );
    assert!(leak(
        &cats,
        200,
        br#"[{"id":1,"name":"General"},{"id":9,"name":"t5-0x1"}]"#
    )
    .is_some());
    assert!(leak(
        &cats,
        200,
        br#"[{"id":1,"name":"General"},{"id":9,"name":"t3-0x1"}]"#
    )
    .is_none());
    let foreign = expect(Req::get("job", format!("{base}/jobs/j")), "foreign-job", 3);
    assert!(leak(&foreign, 200, b"{}").is_some());
    assert!(leak(&foreign, 404, b"{}").is_none());
    let own = expect(Req::get("job", format!("{base}/jobs/j")), "own-job", 3);
    assert!(leak(&own, 200, br#"{"result":{"totals":{"tenant":2}}}"#).is_some());
    assert!(leak(&own, 200, br#"{"result":{"totals":{"tenant":3}}}"#).is_none());
}
