//! The dashboard through real HTTP servers, Axum and Actix-web, over one real
//! redis-server: every scenario runs against both, from the same code.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use larder_cache::Cache;
use larder_core::{Config, ConfigBuilder, Handle, Module, Tenant};
use larder_dashboard::Dashboard;
use larder_jobs::{
    EnqueueOptions, JobState, Jobs, JobsConfig, Scheduler, TaskError, TaskRef, Worker,
};
use larder_ratelimit::{Check, Policy as LimitPolicy, RateLimiter};
use larder_session::{Identity, SessionConfig, Sessions};
use larder_testing::{eventually, RedisServer};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::redirect::Policy;
use serde_json::Value;

const TOKEN: &str = "dash-t0ken";
const FAIL: TaskRef<String, ()> = TaskRef::new("fail");
const LATER: TaskRef<u32, ()> = TaskRef::new("later");

#[derive(Debug, Clone, Copy)]
enum Framework {
    Axum,
    Actix,
}

/// One framework's server with the dashboard at `/admin`, and what it shows.
struct Site {
    addr: SocketAddr,
    jobs: Jobs,
    cache: Cache,
    sessions: Sessions,
    limiter: RateLimiter,
    http: reqwest::Client,
}

fn handle_on(server: &RedisServer) -> Handle {
    Handle::new(
        ConfigBuilder::from_config(Config::from_vars([("REDIS_URL", server.url())]).unwrap())
            .op_timeout(Duration::from_millis(300))
            .breaker_threshold(2)
            .breaker_cooldown(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap()
}

impl Site {
    async fn start(framework: Framework, server: &RedisServer) -> Self {
        let handle = handle_on(server);
        let jobs = Jobs::with_config(handle.clone(), JobsConfig::default().max_retries(0));
        let cache = Cache::new(handle.clone());
        let sessions = Sessions::new(handle.clone(), SessionConfig::default());
        let limiter = RateLimiter::new(handle.clone());
        let dashboard = Dashboard::with_token("/admin", TOKEN)
            .secure_cookie(false)
            .jobs(jobs.clone())
            .cache(cache.clone())
            .sessions(sessions.clone())
            .rate_limits(limiter.clone())
            .redis(handle);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        match framework {
            Framework::Axum => {
                let app: axum::Router =
                    axum::Router::new().merge(larder_dashboard::axum::router(dashboard));
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
            Framework::Actix => {
                let srv = actix_web::HttpServer::new(move || {
                    actix_web::App::new().service(larder_dashboard::actix::scope(dashboard.clone()))
                })
                .workers(1)
                .listen(listener)
                .unwrap()
                .run();
                tokio::spawn(srv);
            }
        }
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self {
            addr,
            jobs,
            cache,
            sessions,
            limiter,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/admin{path}", self.addr)
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .headers(header_map(headers))
            .send()
            .await
            .unwrap()
    }

    async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .headers(header_map(headers))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn api(&self, path: &str) -> Value {
        let res = self.get(path, &[("authorization", &bearer())]).await;
        assert_eq!(res.status(), 200, "{path}");
        res.json().await.unwrap()
    }

    /// Signs in through the form; returns the cookie and the CSRF token its pages
    /// carry.
    async fn sign_in(&self) -> (String, String) {
        let res = self
            .post(
                "/login",
                &[("sec-fetch-site", "same-origin")],
                &[("token", TOKEN)],
            )
            .await;
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/admin/");
        let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
        for attribute in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/admin",
            "Max-Age=43200",
        ] {
            assert!(set.contains(attribute), "{set}");
        }
        let cookie = set.split(';').next().unwrap().to_owned();
        let page = self.get("/", &[("cookie", &cookie)]).await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        let csrf = html
            .split("name=\"_csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned();
        (cookie, csrf)
    }
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// Runs `scenario` against an Axum and an Actix server, each on its own Redis.
macro_rules! on_both_frameworks {
    (async fn $name:ident($site:ident: &Site, $server:ident: &mut RedisServer $(,)?) $body:block) => {
        mod $name {
            use super::*;

            async fn scenario($site: &Site, $server: &mut RedisServer) $body

            #[actix_web::test]
            async fn axum() {
                let mut server = RedisServer::start();
                let site = Site::start(Framework::Axum, &server).await;
                scenario(&site, &mut server).await;
            }

            #[actix_web::test]
            async fn actix() {
                let mut server = RedisServer::start();
                let site = Site::start(Framework::Actix, &server).await;
                scenario(&site, &mut server).await;
            }
        }
    };
}

on_both_frameworks!(
    async fn nothing_is_open_without_the_token(site: &Site, _server: &mut RedisServer) {
        // A browser is sent to sign in; anything else is refused.
        let page = site.get("/jobs", &[("accept", "text/html")]).await;
        assert_eq!(page.status(), 303);
        assert_eq!(page.headers()["location"], "/admin/login");
        for path in ["/api/overview", "/api/jobs", "/api/redis", "/jobs/x", "/"] {
            assert_eq!(site.get(path, &[]).await.status(), 401, "{path}");
            let wrong = site
                .get(path, &[("authorization", "Bearer dash-t0ke")])
                .await;
            assert_eq!(wrong.status(), 401, "{path}");
        }
        let id = site.jobs.delay(LATER, &1).await.unwrap();
        for path in [
            format!("/jobs/{id}/revoke"),
            "/queues/default/redrive-dead".into(),
            "/cache-invalidate".into(),
        ] {
            assert_eq!(site.post(&path, &[], &[]).await.status(), 401, "{path}");
        }
        assert_eq!(
            site.jobs.status(&id).await.unwrap().unwrap().state,
            JobState::Pending
        );
        // The sign-in page and the assets are open, and carry the security headers.
        let login = site.get("/login", &[]).await;
        assert_eq!(login.status(), 200);
        let csp = login.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(login.headers()["x-frame-options"], "DENY");
        assert!(login.text().await.unwrap().contains("type=\"password\""));
        let css = site.get("/assets/dashboard.css", &[]).await;
        assert_eq!(css.status(), 200);
        assert!(css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css"));
        assert_eq!(site.get("/assets/../lib.rs", &[]).await.status(), 401);
    }
);

on_both_frameworks!(
    async fn a_browser_signs_in_once_with_the_token(site: &Site, _server: &mut RedisServer) {
        let wrong = site
            .post(
                "/login",
                &[("sec-fetch-site", "same-origin")],
                &[("token", "guess")],
            )
            .await;
        assert_eq!(wrong.status(), 401);
        assert!(wrong.headers().get("set-cookie").is_none());
        assert!(wrong.text().await.unwrap().contains("not accepted"));
        // Another site's page cannot sign a browser in (login CSRF).
        let cross = site
            .post(
                "/login",
                &[("sec-fetch-site", "cross-site")],
                &[("token", TOKEN)],
            )
            .await;
        assert_eq!(cross.status(), 403);

        let (cookie, _) = site.sign_in().await;
        for path in ["/", "/jobs", "/jobs?list=delayed", "/cache-stats", "/redis"] {
            let page = site.get(path, &[("cookie", &cookie)]).await;
            assert_eq!(page.status(), 200, "{path}");
            assert_eq!(page.headers()["cache-control"], "no-store");
            assert!(page.text().await.unwrap().contains("Sign out"), "{path}");
        }
        // A cookie edited by hand is no sign-in.
        let (name, value) = cookie.split_once('=').unwrap();
        // Its last character changed (to one it is not: the MAC may end in '0').
        let last = if value.ends_with('0') { '1' } else { '0' };
        let forged = format!("{name}={}{last}", &value[..value.len() - 1]);
        let page = site
            .get("/", &[("cookie", &forged), ("accept", "text/html")])
            .await;
        assert_eq!(page.status(), 303);
        // Signing out clears the cookie.
        let (cookie, csrf) = site.sign_in().await;
        let out = site
            .post(
                "/logout",
                &[("cookie", &cookie), ("sec-fetch-site", "same-origin")],
                &[("_csrf", &csrf)],
            )
            .await;
        assert_eq!(out.status(), 303);
        assert!(out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
    }
);

on_both_frameworks!(
    async fn actions_from_a_browser_need_its_csrf_token_and_its_origin(
        site: &Site,
        _server: &mut RedisServer,
    ) {
        let (cookie, csrf) = site.sign_in().await;
        let id = site.jobs.delay(LATER, &1).await.unwrap();
        let path = format!("/jobs/{id}/revoke");
        let same = ("sec-fetch-site", "same-origin");
        for (headers, form) in [
            (vec![("cookie", cookie.as_str()), same], vec![]),
            (
                vec![("cookie", cookie.as_str()), same],
                vec![("_csrf", "0".repeat(64))],
            ),
            (
                vec![
                    ("cookie", cookie.as_str()),
                    ("sec-fetch-site", "cross-site"),
                ],
                vec![("_csrf", csrf.clone())],
            ),
            (
                vec![
                    ("cookie", cookie.as_str()),
                    ("host", "dash.example"),
                    ("origin", "https://evil.example"),
                ],
                vec![("_csrf", csrf.clone())],
            ),
        ] {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let res = site.post(&path, &headers, &form).await;
            assert_eq!(res.status(), 403, "{headers:?}");
        }
        assert_eq!(
            site.jobs.status(&id).await.unwrap().unwrap().state,
            JobState::Pending
        );

        let res = site
            .post(&path, &[("cookie", &cookie), same], &[("_csrf", &csrf)])
            .await;
        assert_eq!(res.status(), 303);
        let back = res.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            back.starts_with(&format!("/admin/jobs/{id}?done=")),
            "{back}"
        );
        assert_eq!(
            site.jobs.status(&id).await.unwrap().unwrap().state,
            JobState::Revoked
        );
        // The page it returns to says what happened.
        let page = site
            .get(back.trim_start_matches("/admin"), &[("cookie", &cookie)])
            .await;
        assert!(page.text().await.unwrap().contains("revoke: REVOKED"));
    }
);

on_both_frameworks!(
    async fn dead_jobs_are_listed_by_page_shown_escaped_and_redriven(
        site: &Site,
        _server: &mut RedisServer,
    ) {
        let jobs = &site.jobs;
        for i in 0..120 {
            let args = format!("<script>alert({i})</script>");
            jobs.enqueue(FAIL, &args, EnqueueOptions::new().tenant("acme"))
                .await
                .unwrap();
        }
        // Three more of another queue, which the default queue's actions leave alone.
        for i in 0..3 {
            jobs.enqueue(FAIL, &format!("m{i}"), EnqueueOptions::new().queue("mail"))
                .await
                .unwrap();
        }
        let worker = Worker::new(jobs.clone())
            .queues(&[("default", 1), ("mail", 1)])
            .concurrency(8)
            .task(FAIL, |s, _| async move {
                Err::<(), _>(TaskError::fatal(format!("refused {s}")))
            })
            .spawn();
        assert!(
            eventually(400, Duration::from_millis(50), || async {
                jobs.counts().await.unwrap().total().dead == 123
            })
            .await
        );
        // The live worker is listed, and the last hour's chart counts the failures.
        let running = site.api("/api/jobs").await;
        let workers = running["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 1, "{running}");
        assert_eq!(workers[0]["concurrency"], 8);
        assert_eq!(workers[0]["queues"], serde_json::json!(["default", "mail"]));
        let failed = |minutes: &serde_json::Value| -> u64 {
            minutes
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["failed"].as_u64().unwrap())
                .sum()
        };
        let last_hour = &running["last_hour"];
        assert_eq!(failed(&last_hour["total"]), 123, "{last_hour}");
        assert_eq!(failed(&last_hour["queues"]["default"]), 120, "{last_hour}");
        assert_eq!(failed(&last_hour["queues"]["mail"]), 3, "{last_hour}");
        let page = site
            .get("/jobs", &[("authorization", &bearer())])
            .await
            .text()
            .await
            .unwrap();
        let worker_id = workers[0]["id"].as_str().unwrap();
        assert!(page.contains(worker_id), "{page}");
        assert!(page.contains("<svg class=\"chart\""), "{page}");
        // A chart for all queues, and one for the queue listed (the one with the
        // most dead jobs).
        assert!(page.contains("123 failed"), "{page}");
        assert!(
            page.contains("Outcomes of queue default per minute"),
            "{page}"
        );
        assert!(page.contains("120 failed"), "{page}");
        // Each queue's row counts its own dead jobs.
        for (figure, n) in [("queue.default.dead", 120), ("queue.mail.dead", 3)] {
            let cell = format!("data-figure=\"{figure}\">{n}<");
            assert!(page.contains(&cell), "{cell} not in {page}");
        }
        worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            site.api("/api/jobs").await["workers"],
            serde_json::json!([])
        );

        let overview = site.api("/api/overview").await;
        assert_eq!(overview["jobs"]["queues"]["default"]["dead"], 120);
        assert_eq!(overview["jobs"]["queues"]["mail"]["dead"], 3);
        assert_eq!(overview["health"]["redis"], "healthy");
        // Without a queue: the one with the most dead jobs.
        let first = site.api("/api/jobs?list=dead").await;
        assert_eq!(first["queue"], "default");
        assert_eq!(first["list"]["total"], 120);
        let mail = site.api("/api/jobs?queue=mail&list=dead").await;
        assert_eq!(mail["list"]["total"], 3);
        assert_eq!(first["list"]["more"], true);
        assert_eq!(first["list"]["jobs"].as_array().unwrap().len(), 50);
        let last = site.api("/api/jobs?list=dead&page=2").await;
        assert_eq!(last["list"]["jobs"].as_array().unwrap().len(), 20);
        assert_eq!(last["list"]["more"], false);
        let bad = site
            .get("/api/jobs?list=nope", &[("authorization", &bearer())])
            .await;
        assert_eq!(bad.status(), 400);
        let unknown = site
            .get("/api/jobs?queue=q%3Adead", &[("authorization", &bearer())])
            .await;
        assert_eq!(unknown.status(), 404);

        // A job's page shows its arguments and error as text, never as markup.
        let id = first["list"]["jobs"][0]["id"].as_str().unwrap().to_owned();
        let page = site
            .get(&format!("/jobs/{id}"), &[("authorization", &bearer())])
            .await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert("));
        assert!(html.contains("refused"));
        assert!(html.contains("Redrive"));
        let detail = site.api(&format!("/api/jobs/{id}")).await;
        assert_eq!(detail["state"], "FAILURE");
        assert_eq!(detail["tenant"], "acme");
        assert_eq!(detail["errors"][0]["attempt"], 1);
        assert!(detail["errors"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("refused <script>"));
        let missing = site
            .get("/api/jobs/no-such-job", &[("authorization", &bearer())])
            .await;
        assert_eq!(missing.status(), 404);

        // One job from its page, then the rest in one go.
        let one = site
            .post(
                &format!("/jobs/{id}/redrive"),
                &[("authorization", &bearer())],
                &[],
            )
            .await;
        assert_eq!(one.status(), 200);
        assert_eq!(
            one.json::<Value>().await.unwrap()["outcome"],
            "redriven: back in its queue"
        );
        let all = site
            .post(
                "/queues/default/redrive-dead",
                &[("authorization", &bearer())],
                &[],
            )
            .await;
        let all: Value = all.json().await.unwrap();
        assert_eq!(all["redriven"], 119);
        assert_eq!(all["left"], 0);
        let counts = jobs.counts().await.unwrap();
        let default = counts.queue("default");
        assert_eq!((default.dead, default.queued), (0, 120));
        assert_eq!(counts.queue("mail").dead, 3, "another queue's dead stay");

        // One job deleted from its page, then the queue purged.
        let page = site.get("/jobs", &[("authorization", &bearer())]).await;
        let page = page.text().await.unwrap();
        assert!(page.contains("/queues/default/purge"), "{page}");
        let deleted = site
            .post(
                &format!("/jobs/{id}/delete"),
                &[("authorization", &bearer())],
                &[],
            )
            .await;
        assert_eq!(deleted.json::<Value>().await.unwrap()["outcome"], "deleted");
        let gone = site
            .get(&format!("/api/jobs/{id}"), &[("authorization", &bearer())])
            .await;
        assert_eq!(gone.status(), 404);
        let purged = site
            .post(
                "/queues/default/purge",
                &[("authorization", &bearer())],
                &[],
            )
            .await;
        assert_eq!(purged.json::<Value>().await.unwrap()["purged"], 119);
        assert_eq!(jobs.queued("default").await.unwrap(), 0);
    }
);

on_both_frameworks!(
    async fn the_jobs_page_shows_the_schedule(site: &Site, _server: &mut RedisServer) {
        let scheduler = Scheduler::new(site.jobs.clone())
            .every("nightly-<b>", Duration::from_secs(1), LATER, 1)
            .pass_every(Duration::from_millis(50))
            .spawn();
        let published =
            || async { site.api("/api/jobs").await["schedule"][0]["last_job"].is_string() };
        assert!(eventually(100, Duration::from_millis(50), published).await);
        scheduler.shutdown().await;
        let api = site.api("/api/jobs").await;
        let entry = &api["schedule"][0];
        assert_eq!(entry["name"], "nightly-<b>");
        assert_eq!(entry["schedule"], "every 1 s");
        assert_eq!(entry["last_state"], "PENDING");
        let page = site
            .get("/jobs", &[("authorization", &bearer())])
            .await
            .text()
            .await
            .unwrap();
        assert!(page.contains("nightly-&lt;b&gt;") && page.contains("every 1 s"));
        // The last tick's job, linked, its id escaped as a path segment.
        let tick = entry["last_ms"].as_u64().unwrap();
        assert_eq!(entry["last_job"], format!("periodic:nightly-<b>:{tick}"));
        let link = format!("/jobs/periodic:nightly-%3Cb%3E:{tick}\">PENDING</a>");
        assert!(page.contains(&link), "{link} not in the page");
    }
);

on_both_frameworks!(
    async fn jobs_are_searched_by_task_and_tenant(site: &Site, _server: &mut RedisServer) {
        let later = || EnqueueOptions::new().countdown(Duration::from_secs(3600));
        let mut acme = Vec::new();
        for i in 0..5 {
            let tenant = if i % 2 == 0 { "acme" } else { "<b>rival</b>" };
            let id = site
                .jobs
                .enqueue(LATER, &i, later().tenant(tenant))
                .await
                .unwrap();
            if tenant == "acme" {
                acme.push(id);
            }
        }
        let api = site.api("/api/jobs?list=delayed&tenant=acme").await;
        let search = &api["search"];
        let found: Vec<&str> = search["found"]["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap())
            .collect();
        assert_eq!(found.len(), 3, "{api}");
        assert!(found.iter().all(|id| acme.iter().any(|a| a == id)), "{api}");
        assert_eq!(search["found"]["examined"], 5);
        assert!(search["found"]["next"].is_null());
        let none = site.api("/api/jobs?list=delayed&task=fail").await;
        assert_eq!(none["search"]["found"]["jobs"].as_array().unwrap().len(), 0);
        // The page: the matches with task and tenant, the tenant escaped.
        let page = site
            .get(
                "/jobs?list=delayed&task=later&tenant=%3Cb%3Erival%3C%2Fb%3E",
                &[("authorization", &bearer())],
            )
            .await
            .text()
            .await
            .unwrap();
        assert!(page.contains("2 found among 5 jobs looked at"), "{page}");
        assert!(page.contains("&lt;b&gt;rival&lt;/b&gt;") && !page.contains("<b>rival"));
        // A cursor that is not one is a clear error.
        let bad = site
            .get(
                "/api/jobs?list=delayed&task=later&from=x",
                &[("authorization", &bearer())],
            )
            .await;
        assert_eq!(bad.status(), 400);
        assert!(bad.text().await.unwrap().contains("cursor"));
    }
);

on_both_frameworks!(
    async fn rejected_keys_are_listed_hashed(site: &Site, _server: &mut RedisServer) {
        let policy = LimitPolicy::new("login", "1/hour").unwrap();
        for _ in 0..3 {
            site.limiter
                .check(&[Check::new(&policy, "203.0.113.7")])
                .await;
        }
        site.limiter
            .check(&[Check::new(&policy, "198.51.100.2")])
            .await;
        let api = site.api("/api/rate-limits?key=203.0.113.7").await;
        // Two admitted (each key's first), two rejected; summed over minutes, in
        // case the checks straddled one's end.
        let sum = |what: &str| {
            api["minutes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["by_policy"]["login"][what].as_u64())
                .sum::<u64>()
        };
        assert_eq!((sum("allowed"), sum("rejected")), (2, 2), "{api}");
        let hash = larder_ratelimit::activity::key_hash("203.0.113.7");
        assert_eq!(api["top"][0]["key_hash"], hash.as_str());
        assert_eq!(api["top"][0]["rejected"], 2);
        assert_eq!(api["key_hash"], hash.as_str());
        let page = site
            .get(
                "/rate-limits?key=203.0.113.7",
                &[("authorization", &bearer())],
            )
            .await
            .text()
            .await
            .unwrap();
        assert!(page.contains(&hash), "{page}");
        assert!(
            page.contains("admitted 2 requests and rejected 2"),
            "{page}"
        );
        assert!(page.contains("Policy <code>login</code>"), "{page}");
        assert!(!page.contains("203.0.113.7"), "a key in the clear");
    }
);

on_both_frameworks!(
    async fn a_tenants_module_is_invalidated_from_the_page(site: &Site, _server: &mut RedisServer) {
        let tenant = Tenant::new("acme").unwrap();
        let module = Module::new("stock").unwrap();
        site.cache
            .set(&tenant, &module, "item-1", &"cached", None)
            .await;
        assert_eq!(
            site.cache
                .get::<String>(&tenant, &module, "item-1")
                .await
                .as_deref(),
            Some("cached")
        );
        let (cookie, csrf) = site.sign_in().await;
        let res = site
            .post(
                "/cache-invalidate",
                &[("cookie", &cookie), ("sec-fetch-site", "same-origin")],
                &[("_csrf", &csrf), ("tenant", "acme"), ("module", "stock")],
            )
            .await;
        assert_eq!(res.status(), 303);
        assert_eq!(
            site.cache.get::<String>(&tenant, &module, "item-1").await,
            None
        );
        // Without a module, every module of the tenant.
        let other = Module::new("prices").unwrap();
        site.cache
            .set(&tenant, &other, "p-1", &"cached", None)
            .await;
        site.cache
            .set(&tenant, &module, "item-2", &"cached", None)
            .await;
        let all = site
            .post(
                "/cache-invalidate",
                &[("authorization", &bearer())],
                &[("tenant", "acme"), ("module", "")],
            )
            .await;
        assert_eq!(all.status(), 200);
        assert_eq!(all.json::<Value>().await.unwrap()["module"], Value::Null);
        assert_eq!(site.cache.get::<String>(&tenant, &other, "p-1").await, None);
        assert_eq!(
            site.cache.get::<String>(&tenant, &module, "item-2").await,
            None
        );
        assert_eq!(site.cache.stats().await.invalidations, 2);
        // A hostile tenant id is a clear error, and nothing is touched.
        let bad = site
            .post(
                "/cache-invalidate",
                &[("authorization", &bearer())],
                &[("tenant", "a:*"), ("module", "stock")],
            )
            .await;
        assert_eq!(bad.status(), 400);
        assert!(bad.text().await.unwrap().contains("tenant"));
        let stats = site
            .get("/cache-stats", &[("authorization", &bearer())])
            .await;
        let page = stats.text().await.unwrap();
        assert!(page.contains("hit ratio"));
        // The tenant's last hour: one hit, three misses; its module stock's: one hit,
        // two misses.
        for (name, lookups, ratio) in [("acme", 4, "25.0 %"), ("stock", 3, "33.3 %")] {
            let row = format!(
                "<td><code>{name}</code></td><td class=\"num\">{lookups}</td><td class=\"num\">{ratio}</td>"
            );
            assert!(page.contains(&row), "{row} not in {page}");
        }
    }
);

on_both_frameworks!(
    async fn redis_settings_that_lose_jobs_are_warned_about(site: &Site, server: &mut RedisServer) {
        let fine = site.api("/api/redis").await;
        assert_eq!(fine["configured"], true);
        assert_eq!(fine["warnings"].as_array().unwrap().len(), 0, "{fine}");
        assert_eq!(fine["topology"][0], "single");
        let _ = server.command(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
        let warned = site.api("/api/redis").await;
        assert!(
            warned["warnings"][0]
                .as_str()
                .unwrap()
                .contains("allkeys-lru"),
            "{warned}"
        );
        let page = site.get("/redis", &[("authorization", &bearer())]).await;
        assert!(page.text().await.unwrap().contains("Redis may evict jobs"));
    }
);

on_both_frameworks!(
    async fn with_redis_stopped_or_frozen_pages_still_answer_quickly(
        site: &Site,
        server: &mut RedisServer,
    ) {
        for fault in ["stop", "freeze"] {
            match fault {
                "stop" => server.stop(),
                _ => {
                    server.restart();
                    server.freeze();
                }
            }
            for path in ["/", "/redis", "/cache-stats", "/sessions", "/api/overview"] {
                let started = Instant::now();
                let res = site.get(path, &[("authorization", &bearer())]).await;
                assert_eq!(res.status(), 200, "{fault} {path}");
                // Bounded by the op deadline (300 ms) per read, not by a TCP timeout.
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{fault} {path}: {:?}",
                    started.elapsed()
                );
            }
            let overview = site.api("/api/overview").await;
            assert_eq!(
                overview["health"]["status"], "degraded",
                "{fault}: {overview}"
            );
            assert!(overview["jobs_error"].is_string(), "{fault}: {overview}");
            let jobs = site.get("/jobs", &[("authorization", &bearer())]).await;
            assert_eq!(jobs.status(), 503, "{fault}");
            // The shared hour of look-ups and decisions lives in Redis: the cache
            // page says so and shows the rest; the rate-limits page is unavailable.
            let cache = site
                .get("/cache-stats", &[("authorization", &bearer())])
                .await;
            let cache = cache.text().await.unwrap();
            assert!(cache.contains("Hit ratio over time"), "{fault}: {cache}");
            assert!(cache.contains("Breaker history"), "{fault}: {cache}");
            let limits = site
                .get("/rate-limits", &[("authorization", &bearer())])
                .await;
            assert_eq!(limits.status(), 503, "{fault}");
            // The breaker gave Redis up: an outage that is still going on.
            let outage = &site.api("/api/redis").await["outages"][0];
            assert!(outage["closed_ms"].is_null(), "{fault}: {outage}");
            assert!(outage["cause"].is_string(), "{fault}: {outage}");
        }
        server.thaw();
        // Back: a probe closes the breaker, and the history says when. The stop and
        // the freeze were two outages (or one, had the freeze come before a probe).
        let closed = || async { site.api("/api/redis").await["outages"][0]["closed_ms"].is_u64() };
        assert!(eventually(100, Duration::from_millis(100), closed).await);
        let outages = site.api("/api/redis").await["outages"].clone();
        let outages = outages.as_array().unwrap();
        assert!((1..=2).contains(&outages.len()), "{outages:?}");
        for page in ["/redis", "/cache-stats"] {
            let html = site
                .get(page, &[("authorization", &bearer())])
                .await
                .text()
                .await
                .unwrap();
            assert!(html.contains("Breaker history"), "{page}");
            let cause = outages[0]["cause"].as_str().unwrap();
            assert!(html.contains(&format!("<code>{cause}</code>")), "{page}");
        }
    }
);

on_both_frameworks!(
    async fn oversized_bodies_are_refused(site: &Site, _server: &mut RedisServer) {
        let big = "x".repeat(larder_dashboard::MAX_BODY + 1);
        let res = site
            .post(
                "/cache-invalidate",
                &[("authorization", &bearer())],
                &[("tenant", big.as_str())],
            )
            .await;
        assert_eq!(res.status(), 413);
    }
);

on_both_frameworks!(
    async fn a_users_sessions_are_listed_and_revoked(site: &Site, _server: &mut RedisServer) {
        let alice = Identity::new("alice").with_user_agent("<b>Firefox</b>");
        for id in [
            "sess-a-0000000000000000000001",
            "sess-a-0000000000000000000002",
            "sess-a-0000000000000000000003",
        ] {
            site.sessions.create(id, b"{}", Some(&alice)).await.unwrap();
        }
        site.sessions
            .create(
                "sess-b-0000000000000000000001",
                b"{}",
                Some(&Identity::new("bob")),
            )
            .await
            .unwrap();
        let listed = site.api("/api/sessions?user=alice").await;
        let refs: Vec<String> = listed["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(refs.len(), 3, "{listed}");
        // The page shows them, data escaped.
        let page = site
            .get("/sessions?user=alice", &[("authorization", &bearer())])
            .await;
        let html = page.text().await.unwrap();
        assert!(html.contains("&lt;b&gt;Firefox"), "{html}");
        assert_eq!(html.matches(">Revoke</button>").count(), 3);

        // A browser ends one with the page's token.
        let (cookie, csrf) = site.sign_in().await;
        let res = site
            .post(
                "/sessions-revoke",
                &[("cookie", &cookie), ("sec-fetch-site", "same-origin")],
                &[("_csrf", &csrf), ("user", "alice"), ("session", &refs[0])],
            )
            .await;
        assert_eq!(res.status(), 303);
        assert!(res.headers()["location"]
            .to_str()
            .unwrap()
            .contains("user=alice"));
        assert_eq!(
            site.api("/api/sessions?user=alice").await["sessions"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // The live sessions: alice's two and bob's one, none with a tenant; then a
        // tenant's login is counted under it.
        let active = site.api("/api/sessions").await["active"].clone();
        assert_eq!(active[0]["tenant"], Value::Null, "{active}");
        assert_eq!(active[0]["active"], 3, "{active}");
        let acme = larder_core::Tenant::new("acme").unwrap();
        larder_session::RequestContext::scope(
            larder_session::RequestContext::new(Some(acme)),
            site.sessions
                .create("sess-c-0000000000000000000001", b"{}", None),
        )
        .await
        .unwrap();
        let active = site.api("/api/sessions").await["active"].clone();
        assert_eq!(active[1]["tenant"], "acme", "{active}");
        assert_eq!(active[1]["active"], 1, "{active}");
        let html = site
            .get("/sessions", &[("authorization", &bearer())])
            .await
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("<td><code>acme</code></td><td class=\"num\">1</td>"),
            "{html}"
        );
        // Another user's session cannot be ended through alice's name.
        let bob = site.api("/api/sessions?user=bob").await["sessions"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let res = site
            .post(
                "/sessions-revoke",
                &[("authorization", &bearer())],
                &[("user", "alice"), ("session", &bob)],
            )
            .await;
        assert_eq!(res.json::<Value>().await.unwrap()["ended"], 0);
        // A malformed reference or tenant is a clear error.
        let res = site
            .post(
                "/sessions-revoke",
                &[("authorization", &bearer())],
                &[("user", "alice"), ("session", "x")],
            )
            .await;
        assert_eq!(res.status(), 400);
        let res = site
            .get(
                "/api/sessions?user=alice&tenant=a:*",
                &[("authorization", &bearer())],
            )
            .await;
        assert_eq!(res.status(), 400);
        // Revoke all: alice has none left, bob keeps his.
        let res = site
            .post(
                "/sessions-revoke-all",
                &[("authorization", &bearer())],
                &[("user", "alice")],
            )
            .await;
        assert_eq!(res.json::<Value>().await.unwrap()["ended"], 2);
        assert_eq!(
            site.api("/api/sessions?user=alice").await["sessions"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            site.api("/api/sessions?user=bob").await["sessions"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
);

on_both_frameworks!(
    async fn a_job_id_with_reserved_characters_reaches_its_page(
        site: &Site,
        _server: &mut RedisServer,
    ) {
        // Ids are any visible characters: the dashboard's links escape them, and both
        // frameworks' paths decode to the same id.
        let id = "report/2026?#1%+x";
        let opts = EnqueueOptions::new().id(id).queue("parked");
        site.jobs.enqueue(LATER, &1, opts).await.unwrap();
        let escaped = "report%2F2026%3F%231%25%2Bx";
        let detail = site.api(&format!("/api/jobs/{escaped}")).await;
        assert_eq!(detail["id"], id, "{detail}");
        let page = site
            .get(&format!("/jobs/{escaped}"), &[("authorization", &bearer())])
            .await;
        assert_eq!(page.status(), 200);
        assert!(page
            .text()
            .await
            .unwrap()
            .contains(&format!("/admin/jobs/{escaped}/revoke")));
        let res = site
            .post(
                &format!("/jobs/{escaped}/revoke"),
                &[("authorization", &bearer())],
                &[],
            )
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            site.jobs.status(id).await.unwrap().unwrap().state,
            JobState::Revoked
        );
        // Find by id redirects to the escaped page.
        let found = site
            .get(
                &format!("/jobs/find?id={}", "report%2F2026%3F%231%25%2Bx"),
                &[("authorization", &bearer())],
            )
            .await;
        assert_eq!(
            found.headers()["location"],
            format!("/admin/jobs/{escaped}")
        );
    }
);
