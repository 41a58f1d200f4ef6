//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven
//! through WebDriver (Debian's `chromium-driver`, with the `fantoccini` client),
//! against each stock app as a real process on a real redis-server. Signs in with
//! the token, renders every page with real data, redrives a dead job and revokes a
//! queued one from their pages (accepting the confirmation dialogs), sees a figure
//! change without a reload, fits a phone's screen, and leaves no console error.
//! Screenshots of each page go to `target/screenshots/`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use larder::core::{Config, Handle};
use larder::jobs::{EnqueueOptions, JobState, Jobs, TaskError, TaskRef, Worker};
use larder_e2e::{App, AppEnv, Framework, Role, Site, ADMIN_TOKEN};
use larder_testing::{eventually, free_port, RedisServer};
use serde_json::{json, Value};

/// A task only this test's worker knows: it always fails for good.
const DOOMED: TaskRef<String, ()> = TaskRef::new("doomed");
/// A queue the apps' workers never read, so what is put there stays.
const PARKED: &str = "parked";

/// `chromedriver` on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let mut child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test installs it)");
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..200 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Self {
                    child,
                    url: format!("http://{addr}"),
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromedriver did not listen on {addr}");
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        // Confirmation dialogs stay open for the test to accept.
        caps.insert("unhandledPromptBehavior".into(), json!("ignore"));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The app's job queue, seen from the test (the apps' key prefix is `stock`).
fn jobs_of(redis: &RedisServer) -> Jobs {
    let config = Config::from_vars([
        ("REDIS_URL", redis.url()),
        ("CACHE_KEY_PREFIX", "stock".to_owned()),
    ])
    .unwrap();
    Jobs::new(Handle::new(config).unwrap())
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn snap(browser: &Client, framework: Framework, page: &str) {
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(
        screenshots().join(format!("{}-{page}.png", framework.name())),
        png,
    )
    .unwrap();
}

/// Does `act` to the element `locator` finds. The pages put fresh content in
/// their live part every few seconds, which can replace the element between the
/// find and the act (a stale element reference): then it is found again.
async fn on_element<T, F, Fut>(browser: &Client, locator: Locator<'_>, act: F) -> T
where
    F: Fn(Element) -> Fut,
    Fut: Future<Output = Result<T, CmdError>>,
{
    for _ in 0..5 {
        let element = browser.find(locator).await.unwrap();
        match act(element).await {
            Err(replaced) if replaced.is_stale_element_reference() => continue,
            done => return done.unwrap(),
        }
    }
    panic!("{locator:?} was replaced five times in a row");
}

async fn type_into(browser: &Client, field: Locator<'_>, text: &str) {
    on_element(browser, field, |e| async move { e.send_keys(text).await }).await;
}

async fn click(browser: &Client, button: Locator<'_>) {
    on_element(browser, button, |e| async move { e.click().await }).await;
}

/// The text of the first element `locator` finds.
async fn text_of(browser: &Client, locator: Locator<'_>) -> String {
    on_element(browser, locator, |e| async move { e.text().await }).await
}

async fn h1(browser: &Client) -> String {
    text_of(browser, Locator::Css("h1")).await
}

/// Accepts the confirmation dialog an action's form opens, and waits for the page
/// the action leads to.
async fn confirm(browser: &Client, expected: &str) {
    let mut text = None;
    for _ in 0..100 {
        if let Ok(t) = browser.get_alert_text().await {
            text = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = text.expect("a confirmation dialog");
    assert!(text.contains(expected), "{text}");
    browser.accept_alert().await.unwrap();
    browser
        .wait()
        .for_element(Locator::Css("p.flash"))
        .await
        .unwrap();
}

/// The browser's console entries at level SEVERE (errors, CSP violations, failed
/// loads), from chromedriver's log endpoint.
async fn console_errors(driver: &Driver, browser: &Client) -> Vec<Value> {
    let session = browser.session_id().await.unwrap().unwrap();
    let log: Value = reqwest::Client::new()
        .post(format!("{}/session/{session}/se/log", driver.url))
        .json(&json!({ "type": "browser" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log["value"]
        .as_array()
        .unwrap_or_else(|| panic!("a log: {log}"))
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .cloned()
        .collect()
}

async fn dashboard_in_a_browser(framework: Framework) {
    let _one_at_a_time = larder_e2e::serial().await;
    let redis = RedisServer::start();
    let site = Site::new();
    let app = App::start(framework, &site, Role::Both, &AppEnv::single(&redis));
    let jobs = jobs_of(&redis);

    // A dead job (its task fails for good) and a queued one, both in `parked`.
    let parked = || {
        EnqueueOptions::new()
            .queue(PARKED)
            .tenant("1")
            .max_retries(0)
    };
    let dead = jobs
        .enqueue(DOOMED, &"<i>dead</i>".to_owned(), parked())
        .await
        .unwrap();
    let worker = Worker::new(jobs.clone())
        .queues(&[(PARKED, 1)])
        .task(DOOMED, |s, _| async move {
            Err::<(), _>(TaskError::fatal(format!("cannot do {s}")))
        })
        .spawn();
    assert!(
        eventually(200, Duration::from_millis(50), || async {
            jobs.status(&dead)
                .await
                .unwrap()
                .is_some_and(|s| s.state == JobState::Failure)
        })
        .await
    );
    worker.shutdown(Duration::from_secs(5)).await;
    let queued = jobs
        .enqueue(DOOMED, &"waiting".to_owned(), parked())
        .await
        .unwrap();

    let driver = Driver::start();
    let browser = driver.browser().await;

    // Without the token: the sign-in page, whatever was asked for.
    browser.goto(&app.url("/admin/jobs")).await.unwrap();
    assert_eq!(browser.current_url().await.unwrap().path(), "/admin/login");
    type_into(&browser, Locator::Id("token"), "not-the-token").await;
    click(&browser, Locator::Css("button[type=submit]")).await;
    // The click starts a navigation; wait for the page it leads to.
    let refused = browser
        .wait()
        .for_element(Locator::Css("p.error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(refused.contains("not accepted"), "{refused}");
    snap(&browser, framework, "login").await;

    // Sign in once; the cookie is not readable by scripts.
    type_into(&browser, Locator::Id("token"), ADMIN_TOKEN).await;
    click(&browser, Locator::Css("button[type=submit]")).await;
    browser.wait().for_url(&url(&app, "/admin/")).await.unwrap();
    assert_eq!(h1(&browser).await, "Overview");
    let visible = browser
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    assert!(
        !visible
            .as_str()
            .unwrap_or_default()
            .contains("larder_admin"),
        "{visible}"
    );
    let figure = |path: &'static str| {
        let browser = browser.clone();
        async move { text_of(&browser, Locator::Css(&format!("[data-figure='{path}']"))).await }
    };
    assert_eq!(figure("jobs.dead").await, "1");
    snap(&browser, framework, "overview").await;

    // Live: a job enqueued now shows up without a reload.
    let reloaded = || {
        let browser = browser.clone();
        async move {
            browser
                .execute("return window.notReloaded !== true", vec![])
                .await
                .unwrap()
        }
    };
    browser
        .execute("window.notReloaded = true", vec![])
        .await
        .unwrap();
    let before: u64 = figure("jobs.queued_total").await.parse().unwrap();
    jobs.enqueue(DOOMED, &"later".to_owned(), parked())
        .await
        .unwrap();
    let mut now = before;
    for _ in 0..100 {
        now = figure("jobs.queued_total").await.parse().unwrap();
        if now > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(now, before + 1, "the overview did not update by itself");
    assert_eq!(reloaded().await, Value::Bool(false));

    // The dead list searched by tenant and task: the dead job, with both.
    browser
        .goto(&app.url("/admin/jobs?list=dead&tenant=1&task=doomed"))
        .await
        .unwrap();
    let found = format!("//tbody//a[code='{dead}']");
    assert!(
        browser.find(Locator::XPath(&found)).await.is_ok(),
        "{dead} not found"
    );
    let pager = text_of(&browser, Locator::Css("p.pager")).await;
    assert!(pager.contains("1 found among 1 jobs looked at"), "{pager}");
    snap(&browser, framework, "jobs-search").await;

    // The dead letters, the dead job's page, and its redrive.
    browser
        .goto(&app.url("/admin/jobs?list=dead"))
        .await
        .unwrap();
    // The queue's row counts its dead job, apart from the other states.
    assert_eq!(figure("queue.parked.dead").await, "1");
    assert_eq!(figure("queue.parked.retrying").await, "0");
    // The first job of the listing (the queue table above links counts, not jobs).
    let first_job = Locator::XPath("//tbody//a[code]");
    assert_eq!(text_of(&browser, first_job).await, dead);
    snap(&browser, framework, "jobs-dead").await;
    click(&browser, first_job).await;
    browser
        .wait()
        .for_url(&url(&app, &format!("/admin/jobs/{dead}")))
        .await
        .unwrap();
    let page = browser.source().await.unwrap();
    assert!(page.contains("cannot do &lt;i&gt;dead&lt;/i&gt;"), "{page}");
    assert!(
        browser.find(Locator::Css("pre i")).await.is_err(),
        "markup from data rendered"
    );
    snap(&browser, framework, "job-dead").await;
    click(&browser, Locator::XPath("//button[text()='Redrive']")).await;
    confirm(&browser, "back to its queue").await;
    assert_eq!(
        jobs.status(&dead).await.unwrap().unwrap().state,
        JobState::Pending
    );

    // A queued job's page, and its revocation.
    browser
        .goto(&app.url(&format!("/admin/jobs/{queued}")))
        .await
        .unwrap();
    click(&browser, Locator::XPath("//button[text()='Revoke']")).await;
    confirm(&browser, "Revoke this job").await;
    assert_eq!(
        jobs.status(&queued).await.unwrap().unwrap().state,
        JobState::Revoked
    );
    snap(&browser, framework, "job-revoked").await;

    // Every page is live: a job revoked elsewhere shows as revoked on its open page.
    let watched = jobs
        .enqueue(DOOMED, &"watched".to_owned(), parked())
        .await
        .unwrap();
    browser
        .goto(&app.url(&format!("/admin/jobs/{watched}")))
        .await
        .unwrap();
    browser
        .execute("window.notReloaded = true", vec![])
        .await
        .unwrap();
    assert_eq!(figure("job.state").await, "PENDING");
    jobs.revoke(&watched).await.unwrap();
    let mut state = String::new();
    for _ in 0..100 {
        state = figure("job.state").await;
        if state == "REVOKED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "REVOKED", "the job's page did not update by itself");
    assert_eq!(reloaded().await, Value::Bool(false));

    // The cache and Redis pages, with real figures.
    browser.goto(&app.url("/admin/cache-stats")).await.unwrap();
    assert_eq!(h1(&browser).await, "Cache");
    type_into(&browser, Locator::Id("tenant"), "1").await;
    // What the user typed outlives the page's refreshes (every 5 s), focused or not.
    browser
        .execute("document.activeElement.blur()", vec![])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let typed = browser.find(Locator::Id("tenant")).await.unwrap();
    assert_eq!(typed.prop("value").await.unwrap().as_deref(), Some("1"));
    type_into(&browser, Locator::Id("module"), "balance").await;
    click(&browser, Locator::XPath("//button[text()='Invalidate']")).await;
    confirm(&browser, "Drop every cached entry").await;
    snap(&browser, framework, "cache").await;
    browser
        .goto(&app.url("/admin/sessions?user=nobody"))
        .await
        .unwrap();
    assert_eq!(h1(&browser).await, "Sessions");
    assert!(browser.source().await.unwrap().contains("No live session."));
    snap(&browser, framework, "sessions").await;
    // The rate-limits page: the sign-ins above went through the app's policies.
    browser.goto(&app.url("/admin/rate-limits")).await.unwrap();
    assert_eq!(h1(&browser).await, "Rate limits");
    let page = browser.source().await.unwrap();
    assert!(page.contains("policies admitted"), "{page}");
    assert!(
        page.contains("<svg class=\"chart\""),
        "no policy's chart: {page}"
    );
    snap(&browser, framework, "rate-limits").await;
    browser.goto(&app.url("/admin/redis")).await.unwrap();
    let page = browser.source().await.unwrap();
    assert!(
        page.contains("redis_version") && page.contains("single"),
        "{page}"
    );
    snap(&browser, framework, "redis").await;

    // A phone's screen: nothing wider than it.
    browser.set_window_size(390, 844).await.unwrap();
    for path in [
        "/admin/",
        "/admin/jobs?list=dead",
        &format!("/admin/jobs/{dead}"),
    ] {
        browser.goto(&app.url(path)).await.unwrap();
        let fits = browser
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, Value::Bool(true), "{path} is wider than a phone");
    }
    snap(&browser, framework, "phone-job").await;

    // The one refused sign-in above answered 401 on purpose; nothing else may fail.
    let errors: Vec<Value> = console_errors(&driver, &browser)
        .await
        .into_iter()
        .filter(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            !(m.contains("/admin/login ") && m.contains("status of 401"))
        })
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    // Signing out ends the sign-in.
    browser.goto(&app.url("/admin/")).await.unwrap();
    click(&browser, Locator::XPath("//button[text()='Sign out']")).await;
    browser
        .wait()
        .for_url(&url(&app, "/admin/login"))
        .await
        .unwrap();
    browser.goto(&app.url("/admin/")).await.unwrap();
    assert_eq!(browser.current_url().await.unwrap().path(), "/admin/login");
    browser.close().await.unwrap();
}

fn url(app: &App, path: &str) -> url::Url {
    url::Url::parse(&app.url(path)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_axum() {
    dashboard_in_a_browser(Framework::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_actix() {
    dashboard_in_a_browser(Framework::Actix).await;
}
