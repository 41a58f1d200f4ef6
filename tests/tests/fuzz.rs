//! Fuzzing of everything that parses untrusted bytes, with proptest: strategies
//! of hostile and arbitrary input, shrunk to a minimal case on failure, run by
//! `cargo test` on stable Rust with a bounded number of cases (`PROPTEST_CASES`
//! raises it; `LARDER_E2E_HEAVY=1` multiplies the suite's own). cargo-fuzz would
//! need a nightly toolchain and a run of its own outside the README's test
//! command; proptest runs in it, on every commit.
//!
//! - Pure parsers, called directly: tenant ids and modules, key patterns, rate-limit
//!   policy strings, `X-Forwarded-For`, stored cache entries and stored responses.
//! - Through a running app over HTTP: `X-Tenant-Id`, cookies, `X-Forwarded-For`
//!   and admin path patterns as raw header and path bytes.
//! - Through Redis: cache entries and session records overwritten with arbitrary
//!   bytes under a running app, and job records and payloads overwritten under a
//!   real worker.
//!
//! Every case asserts a typed answer (an `Err`, a 4xx, a miss), never a panic, a
//! 5xx or a stuck worker. A crash found here becomes a regression test below.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use larder::cache::http::StoredResponse;
use larder::core::request::SimpleRequest;
use larder::core::{Keyspace, Module, Tenant};
use larder::ratelimit::{ClientIp, Policy, Quota};
use larder_e2e::{client, heavy, App, AppEnv, Framework, Role, Site, ADMIN_TOKEN};
use larder_testing::RedisServer;
use proptest::prelude::*;

fn cases(n: u32) -> u32 {
    if heavy() {
        n * 20
    } else {
        n
    }
}

/// Hostile text: separators, globs, braces, control and wide characters, and
/// anything at all.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{0,8}",
        "[a-z0-9:*?{}\\[\\]\\\\ ,;=/.%-]{0,24}",
        any::<String>(),
        "[0-9]{1,3}(\\.[0-9]{1,3}){0,4}",
        "[0-9a-f:]{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2000)))]

    /// Tenant ids and modules are accepted or refused, and an accepted one builds
    /// keys and patterns that stay inside its own scope.
    #[test]
    fn tenant_ids_modules_and_patterns(t in hostile(), m in hostile(), glob in hostile()) {
        let ks = Keyspace::new("app").unwrap();
        if let (Ok(tenant), Ok(module)) = (Tenant::new(&t), Module::new(&m)) {
            let scope = ks.scope(&tenant, &module);
            let root = ks.tenant_pattern(&tenant);
            let root = root.trim_end_matches('*');
            if let Ok(p) = scope.pattern(&glob) {
                prop_assert!(p.starts_with(root), "{p} outside {root}");
            }
            if let Ok(k) = scope.key(&glob) {
                prop_assert!(k.starts_with(root), "{k} outside {root}");
            }
        }
    }

    /// Policy strings (`RATE_LIMIT`, per-route policies) parse or are refused with
    /// a typed error; what parses is positive.
    #[test]
    fn rate_limit_policy_strings(s in hostile()) {
        if let Ok(quotas) = Quota::parse_many(&s) {
            prop_assert!(!quotas.is_empty());
        }
        let _ = Policy::new("p", &s);
    }

    /// `X-Forwarded-For` from a trusted proxy: the client is the peer or an address
    /// the header names, never one made up; from an untrusted peer, the peer.
    #[test]
    fn forwarded_for_chains(lines in prop::collection::vec(hostile(), 0..4), trusted_peer in any::<bool>()) {
        let ips = ClientIp::new().trust_proxies(["127.0.0.1/32", "10.0.0.0/8"]).unwrap();
        let peer: IpAddr = if trusted_peer { "127.0.0.1" } else { "203.0.113.7" }.parse().unwrap();
        let mut req = SimpleRequest::new("GET", "/").with_peer(peer);
        for l in &lines {
            req = req.with_header("x-forwarded-for", l);
        }
        let got = ips.resolve(&req).unwrap();
        if trusted_peer {
            let named = lines.iter().any(|l| l.contains(&got.to_string()))
                || lines.iter().flat_map(|l| l.split(','))
                    .filter_map(|e| e.trim().trim_matches(['[', ']']).parse::<IpAddr>().ok())
                    .any(|ip| ip == got);
            prop_assert!(got == peer || named, "{got} from {lines:?}");
        } else {
            prop_assert_eq!(got, peer);
        }
    }

    /// Stored cache entries and stored responses, as Redis could hand them back
    /// after a bug, a version change or a hostile write: decoded or refused.
    #[test]
    fn stored_entries_and_responses(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        let raw = Bytes::from(raw);
        let _ = larder::cache::entry::decode(raw.clone());
        let _ = StoredResponse::decode(&raw);
    }
}

/// A framework's app on a Redis of its own, for one test's many cases (a
/// process per case would be slow); both end with the test.
struct Running {
    redis: RedisServer,
    app: App,
    _site: Site,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// Runs `cases` cases of `strategy` through `check`, shrinking a failure.
fn run<S: Strategy>(cases: u32, strategy: S, check: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    let outcome = runner.run(&strategy, |v| {
        check(v);
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

impl Running {
    fn start(framework: Framework) -> Self {
        let redis = RedisServer::start();
        let site = Site::new();
        let app = App::start(framework, &site, Role::Both, &AppEnv::single(&redis));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let http = rt.block_on(async { client() });
        Self {
            redis,
            app,
            _site: site,
            rt,
            http,
        }
    }

    /// Sends a request with raw header bytes; returns the status. A header value
    /// HTTP cannot carry at all (a newline) is not sent.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &[u8])]) -> u16 {
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(method.parse().unwrap(), self.app.url(path));
            for (name, value) in headers {
                if let Ok(v) = reqwest::header::HeaderValue::from_bytes(value) {
                    req = req.header(*name, v);
                }
            }
            req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        })
    }

    /// Overwrites every key matching `pattern` with `bytes` (each field of a hash,
    /// the value of a string), keeping its time to live.
    fn corrupt(&self, pattern: &str, bytes: &[u8]) -> usize {
        self.rt.block_on(async {
            let client = larder::core::redis::Client::open(self.redis.url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = larder::core::redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut conn)
                .await
                .unwrap();
            for key in &keys {
                let kind: String = larder::core::redis::cmd("TYPE")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                match kind.as_str() {
                    "string" => {
                        let _: () = larder::core::redis::cmd("SET")
                            .arg(key)
                            .arg(bytes)
                            .arg("KEEPTTL")
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                    }
                    "hash" => {
                        let fields: Vec<Vec<u8>> = larder::core::redis::cmd("HKEYS")
                            .arg(key)
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                        for f in fields {
                            let _: () = larder::core::redis::cmd("HSET")
                                .arg(key)
                                .arg(f)
                                .arg(bytes)
                                .query_async(&mut conn)
                                .await
                                .unwrap();
                        }
                    }
                    _ => {}
                }
            }
            keys.len()
        })
    }
}

/// Bytes an attacker would send in a header: anything but the line breaks HTTP
/// cannot carry.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        hostile().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn http_fuzz(app: &Running, tenant: &[u8], cookie: &[u8], xff: &[u8], glob: &str) {
    for path in ["/balance", "/products", "/me"] {
        let status = app.send(
            "GET",
            path,
            &[
                ("x-tenant-id", tenant),
                ("cookie", cookie),
                ("x-forwarded-for", xff),
            ],
        );
        assert!(
            (200..500).contains(&status),
            "{path} with tenant {tenant:?} cookie {cookie:?} xff {xff:?}: {status}"
        );
    }
    let encoded: String = glob.bytes().map(|b| format!("%{b:02X}")).collect();
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let status = app.send(
        "POST",
        &format!("/admin/cache/invalidate-pattern/{encoded}"),
        &[("authorization", bearer.as_bytes())],
    );
    assert!((200..500).contains(&status), "pattern {glob:?}: {status}");
}

fn corrupt_fuzz(app: &Running, bytes: &[u8]) {
    // Fill the cache and a session, then overwrite them.
    let t1: &[(&str, &[u8])] = &[("x-tenant-id", b"1")];
    for _ in 0..2 {
        assert_eq!(app.send("GET", "/balance", t1), 200);
    }
    let cookie = app
        .rt
        .block_on(larder_e2e::login(&app.http, &app.app, "alice"));
    let with: &[(&str, &[u8])] = &[("cookie", cookie.as_bytes())];
    assert_eq!(app.send("GET", "/me", with), 200);
    let cache_keys = app.corrupt("stock:cache:*", bytes);
    let session_keys = app.corrupt("stock:session:*", bytes);
    assert!(
        cache_keys > 0 && session_keys > 0,
        "something was overwritten"
    );
    // A corrupt entry is a miss: the origin answers.
    assert_eq!(app.send("GET", "/balance", t1), 200);
    assert_eq!(app.send("GET", "/balance", t1), 200);
    // A corrupt session record is no session: 401, never a 5xx.
    let me = app.send("GET", "/me", with);
    assert!(me == 401 || me == 200, "/me on a corrupt record: {me}");
}

fn hostile_requests(framework: Framework) {
    let app = Running::start(framework);
    run(
        cases(40),
        (header_bytes(), header_bytes(), header_bytes(), hostile()),
        |(tenant, cookie, xff, glob)| http_fuzz(&app, &tenant, &cookie, &xff, &glob),
    );
}

fn corrupt_records(framework: Framework) {
    let app = Running::start(framework);
    run(
        cases(12),
        prop::collection::vec(any::<u8>(), 0..256),
        |bytes| corrupt_fuzz(&app, &bytes),
    );
}

#[test]
fn axum_app_takes_hostile_headers_and_paths() {
    hostile_requests(Framework::Axum);
}

#[test]
fn actix_app_takes_hostile_headers_and_paths() {
    hostile_requests(Framework::Actix);
}

#[test]
fn axum_app_survives_corrupt_cache_entries_and_session_records() {
    corrupt_records(Framework::Axum);
}

#[test]
fn actix_app_survives_corrupt_cache_entries_and_session_records() {
    corrupt_records(Framework::Actix);
}

mod jobs {
    use super::*;
    use larder::jobs::{EnqueueOptions, JobState, Jobs, JobsConfig, TaskRef, Worker};

    const ECHO: TaskRef<u32, u32> = TaskRef::new("echo");

    /// One field of a job record overwritten (or a payload replaced) before a
    /// worker fetches it: reading its status is a typed answer, and the worker
    /// keeps running the queue's other jobs.
    fn corrupt_job(redis: &RedisServer, rt: &tokio::runtime::Runtime, field: &str, bytes: &[u8]) {
        rt.block_on(async {
            let handle = larder::core::Handle::new(
                larder::core::Config::builder()
                    .redis_url(&redis.url())
                    .key_prefix("fuzz")
                    .op_timeout(Duration::from_millis(500))
                    .build()
                    .unwrap(),
            )
            .unwrap();
            let jobs = Jobs::with_config(
                handle.clone(),
                JobsConfig::default()
                    .lease(Duration::from_millis(500))
                    .max_retries(1),
            );
            let bad = jobs.enqueue(ECHO, &1, EnqueueOptions::new()).await.unwrap();
            let key = jobs.record_key(&bad).unwrap();
            let mut cmd = larder::core::redis::cmd("HSET");
            cmd.arg(&key).arg(field).arg(bytes);
            let _: i64 = handle.query("fuzz_hset", &cmd).await.unwrap();
            // A typed answer, whatever the record holds now.
            let _ = jobs.status(&bad).await;
            let worker = Worker::new(jobs.clone())
                .concurrency(2)
                .task(ECHO, |n, _ctx| async move { Ok(n + 1) })
                .spawn();
            let good = jobs
                .enqueue(ECHO, &41, EnqueueOptions::new())
                .await
                .unwrap();
            let done = jobs.wait_status(&good, Duration::from_secs(10)).await;
            worker.shutdown(Duration::from_secs(5)).await;
            let done = done.unwrap_or_else(|e| {
                panic!("after {field}={bytes:?}, the next job did not finish: {e}")
            });
            assert_eq!(done.state, JobState::Success, "{done:?}");
            let _ = jobs.status(&bad).await;
        });
    }

    #[test]
    fn corrupt_job_records_and_payloads_stop_nothing() {
        let redis = RedisServer::start();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fields = prop::sample::select(vec![
            "d", "a", "state", "run", "attempts", "expires", "eta", "result",
        ]);
        let bytes = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            Just(b"\t\t\t\t\t\t".to_vec()),
            Just(b"not json".to_vec()),
            Just(b"-1".to_vec()),
        ];
        run(cases(16), (fields, bytes), |(field, bytes)| {
            corrupt_job(&redis, &rt, field, &bytes);
        });
    }
}
