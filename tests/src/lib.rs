//! The harness of larder's black-box suites: the example stock apps (Axum and
//! Actix-web) built once and started as real processes against real
//! `redis-server` processes on free loopback ports, a load of concurrent HTTP
//! clients (reqwest on Tokio tasks), and the figures each scenario reports.
//!
//! The suites are in `tests/tests/`; what they measure, and the command that
//! reproduces it, is in RELIABILITY.md at the top of the workspace. Heavy variants
//! (more clients, longer phases) run with `LARDER_E2E_HEAVY=1`.

#![allow(clippy::missing_panics_doc)] // test support: a failed expectation is a failed test

pub mod load;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use load::{Load, Req, Sample, Summary};

/// The secret the apps sign session cookies with in these suites (64 bytes).
pub const SESSION_KEY: &str = "e2e-session-key-e2e-session-key-e2e-session-key-e2e-session-key!";
/// The admin token the apps are started with.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";
/// The deadline of one Redis call in the apps under test (`LARDER_OP_TIMEOUT_MS`).
/// The default is 50 ms; the apps here are debug builds sharing two cores with
/// the load generator and Redis, so they get twice that.
pub const OP_TIMEOUT: Duration = Duration::from_millis(100);

/// Whether the heavy variants were asked for (`LARDER_E2E_HEAVY=1`).
#[must_use]
pub fn heavy() -> bool {
    std::env::var("LARDER_E2E_HEAVY").is_ok_and(|v| v == "1")
}

/// Scenarios that load the machine run one at a time, whichever test asks first:
/// on two cores, two loads at once would measure each other.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// The web framework of an example app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    /// `example-axum-balance`.
    Axum,
    /// `example-actix-balance`.
    Actix,
}

impl Framework {
    /// Both, Axum first.
    pub const BOTH: [Self; 2] = [Self::Axum, Self::Actix];

    /// The package (and binary) name.
    #[must_use]
    pub fn package(self) -> &'static str {
        match self {
            Self::Axum => "example-axum-balance",
            Self::Actix => "example-actix-balance",
        }
    }

    /// The name shown in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Axum => "Axum",
            Self::Actix => "Actix",
        }
    }

    /// The built binary.
    #[must_use]
    pub fn binary(self) -> &'static Path {
        let built = binaries();
        match self {
            Self::Axum => &built.0,
            Self::Actix => &built.1,
        }
    }
}

/// Builds both example apps once per test binary (`cargo build`, the same
/// profile and target directory as the tests: nothing is rebuilt when
/// `cargo test --workspace` already built them) and returns their paths.
fn binaries() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "-p",
                "example-axum-balance",
                "-p",
                "example-actix-balance",
                "--bins",
                "--message-format=json-render-diagnostics",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(out.status.success(), "the example apps build");
        let mut found = (None, None);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let Some(exe) = msg["executable"].as_str() else {
                continue;
            };
            match msg["target"]["name"].as_str() {
                Some("example-axum-balance") => found.0 = Some(PathBuf::from(exe)),
                Some("example-actix-balance") => found.1 = Some(PathBuf::from(exe)),
                _ => {}
            }
        }
        (
            found.0.expect("the Axum app's binary"),
            found.1.expect("the Actix app's binary"),
        )
    })
}

/// One deployment's shared state: a SQLite database (seeded with the demo's two
/// tenants, plus any added) and a reports folder, in a temporary directory, which
/// every app process started on it shares.
#[derive(Debug)]
pub struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// A fresh site with the demo data.
    #[must_use]
    pub fn new() -> Self {
        Self::with_tenants(2)
    }

    /// A site with tenants `1..=count`: the demo's two, and more with a user
    /// `user{n}` whose password is `user{n}`.
    #[must_use]
    pub fn with_tenants(count: i64) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("larder-e2e-")
            .tempdir()
            .expect("a temp dir");
        let db = example_stock_domain::Db::open(&Self::db_url_in(dir.path())).expect("database");
        for n in 3..=count {
            let user = format!("user{n}");
            db.add_tenant(n, &format!("Tenant {n}"), &user, &user)
                .expect("tenant added");
        }
        Self { dir }
    }

    fn db_url_in(dir: &Path) -> String {
        format!("sqlite://{}", dir.join("stock.db").display())
    }

    /// `DATABASE_URL` of the site.
    #[must_use]
    pub fn db_url(&self) -> String {
        Self::db_url_in(self.dir.path())
    }

    /// The database, opened by the test itself (to count what the apps wrote).
    #[must_use]
    pub fn db(&self) -> example_stock_domain::Db {
        example_stock_domain::Db::open(&self.db_url()).expect("database")
    }

    /// The folder report files go to.
    #[must_use]
    pub fn reports_dir(&self) -> PathBuf {
        self.dir.path().join("reports")
    }

    /// The report files written so far.
    #[must_use]
    pub fn report_files(&self) -> usize {
        std::fs::read_dir(self.reports_dir()).map_or(0, Iterator::count)
    }

    /// Where app processes' output goes.
    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }
}

impl Default for Site {
    fn default() -> Self {
        Self::new()
    }
}

/// How an app process runs: `--web-only`, `--worker-only`, or both in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// HTTP server and worker.
    Both,
    /// HTTP server only.
    Web,
    /// Worker only.
    Worker,
}

/// A running example app process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct App {
    child: Child,
    /// Its framework.
    pub framework: Framework,
    /// `http://127.0.0.1:{port}` (a worker-only process has no server, but keeps
    /// the port it would have had).
    pub base: String,
    log: PathBuf,
}

/// What an app process is started with, beyond the site's defaults.
#[derive(Debug, Clone, Default)]
pub struct AppEnv {
    vars: Vec<(String, String)>,
}

impl AppEnv {
    /// The app on `redis` (any topology's variables).
    #[must_use]
    pub fn redis<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The app on one `redis-server` (`REDIS_URL`).
    #[must_use]
    pub fn single(redis: &larder_testing::RedisServer) -> Self {
        Self::redis([("REDIS_URL", redis.url())])
    }

    /// Sets one more variable.
    #[must_use]
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.push((name.to_owned(), value.to_owned()));
        self
    }
}

impl App {
    /// Starts `framework`'s app on `site` as `role` and, unless it is worker-only,
    /// waits until it accepts connections (both apps listen once their routes are
    /// built).
    ///
    /// Defaults, each overridable through `env`: a per-IP limit high enough not to
    /// limit the load (`RATE_LIMIT`), `TRUSTED_PROXIES=127.0.0.1/32` (so that a
    /// test can name a client's address in `X-Forwarded-For`), the suite's
    /// `SESSION_KEY`, `ADMIN_TOKEN` and [`OP_TIMEOUT`], warnings-only logs but the
    /// report task's line.
    #[must_use]
    pub fn start(framework: Framework, site: &Site, role: Role, env: &AppEnv) -> Self {
        let app = Self::spawn(framework, site, role, env);
        if role != Role::Worker {
            app.wait_ready();
        }
        app
    }

    fn spawn(framework: Framework, site: &Site, role: Role, env: &AppEnv) -> Self {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = larder_testing::free_port();
        let log = site.log_path(&format!("{}-{n}", framework.package()));
        let out = std::fs::File::create(&log).expect("a log file");
        let mut cmd = Command::new(framework.binary());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("DATABASE_URL", site.db_url())
            .env("REPORTS_DIR", site.reports_dir())
            .env("RATE_LIMIT", "1000000/minute")
            .env("TRUSTED_PROXIES", "127.0.0.1/32")
            .env("SESSION_KEY", SESSION_KEY)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("LARDER_OP_TIMEOUT_MS", OP_TIMEOUT.as_millis().to_string())
            .env("RUST_LOG", "warn,example_stock_domain=info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out);
        for (k, v) in &env.vars {
            cmd.env(k, v);
        }
        match role {
            Role::Both => {}
            Role::Web => {
                cmd.arg("--web-only");
            }
            Role::Worker => {
                cmd.arg("--worker-only");
            }
        }
        let child = cmd.spawn().expect("the app starts");
        Self {
            child,
            framework,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Starts `framework`'s app as [`start`](Self::start) would, expecting it to
    /// refuse to start: waits (at most 60 s) until it exits and returns whether it
    /// exited successfully, and its log.
    #[must_use]
    pub fn start_refused(framework: Framework, site: &Site, env: &AppEnv) -> (bool, String) {
        let mut app = Self::spawn(framework, site, Role::Both, env);
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = app.child.try_wait() {
                return (status.success(), app.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} kept running:\n{}",
                framework.package(),
                app.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&self) {
        // Both apps listen only once their routes are built: a connection that is
        // accepted is a request that is served.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if std::net::TcpStream::connect(self.base.trim_start_matches("http://")).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not come up in 60 s; its log:\n{}",
            self.framework.package(),
            self.log()
        );
    }

    /// Everything the process printed so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `base` + `path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Logs `username` in on `app` and returns the `Cookie` header value to send.
///
/// # Panics
/// When the login is refused.
pub async fn login(client: &reqwest::Client, app: &App, username: &str) -> String {
    let body = format!(r#"{{"username":"{username}","password":"{username}"}}"#);
    let reply = client
        .post(app.url("/login"))
        .header("content-type", "application/json")
        // Each login its own client address: the login route allows 5 a minute per IP.
        .header("x-forwarded-for", fresh_client_ip())
        .body(body)
        .send()
        .await
        .expect("login answered");
    assert_eq!(reply.status().as_u16(), 200, "login of {username}");
    session_cookie(&reply).expect("a session cookie")
}

/// The session cookie a response sets, as the `Cookie` header value to send
/// back (`stock_session=...`).
#[must_use]
pub fn session_cookie(reply: &reqwest::Response) -> Option<String> {
    reply
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let first = v.split(';').next()?;
            first
                .starts_with("stock_session=")
                .then(|| first.to_owned())
        })
}

/// A client address no other request of this test binary used (`10.9.x.y`), for
/// `X-Forwarded-For`: each gets rate limits of its own.
#[must_use]
pub fn fresh_client_ip() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("10.9.{}.{}", n / 254 % 256, n % 254 + 1)
}

/// An HTTP client for the suites: no proxy, a 10 s timeout (a request that takes
/// longer counts as lost), connections kept alive as a browser would.
#[must_use]
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()
        .expect("an HTTP client")
}
