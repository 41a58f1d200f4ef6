//! The multi-tenant stock app's domain, shared by `example-axum-balance` and
//! `example-actix-balance`: the SQLite database (schema, demo data, queries), the
//! `send_daily_report` task, the HTTP operations as framework-free functions, and
//! the larder wiring (cache routes and invalidations, rate limits, sessions, jobs).
//! Each app is only its framework's glue around [`Stock`].

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use larder::cache::admin::{Admin, BearerToken};
use larder::cache::{
    Cache, CacheRoute, FromHeader, InvalidateRoute, ResponseCache, TenantExtractor,
};
use larder::core::{Config, Handle, HealthProbe};
use larder::dashboard::Dashboard;
use larder::jobs::celery::{Celery, CeleryError, CeleryWorker, TaskFailure};
use larder::jobs::{EnqueueOptions, JobState, Jobs, TaskError, TaskRef, Worker};
use larder::ratelimit::{ClientIp, Key, Policy, RateLimit, RateLimiter};
use larder::session::Sessions;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub mod db;
pub mod deploy;
pub mod money;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use db::{Db, Granularity, NamedTable, ProductInput};
pub use deploy::{init_logging, prometheus, session_keys, SessionKeys};
pub use money::Money;

/// `send_daily_report(tenant_id)`: writes the tenant's report (a database row and a
/// JSON file) and returns where.
pub const SEND_DAILY_REPORT: TaskRef<i64, ReportOutcome> = TaskRef::new("send_daily_report");

/// What the report task returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReportOutcome {
    /// The report's row id.
    pub report_id: i64,
    /// The JSON file written.
    pub path: String,
    /// Sales, payments and balance of the last 30 days.
    pub totals: Value,
}

/// An HTTP answer: status and JSON body. The apps turn it into their response type.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self { status: 200, body }
    }

    fn created(body: Value) -> Self {
        Self { status: 201, body }
    }

    /// An error with a message.
    #[must_use]
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    fn internal(e: &impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::error(500, "internal error")
    }

    /// A 503 for a backend that failed (`what`: "report not enqueued"). The
    /// backend's own text goes to the log, never to the client: it names servers,
    /// keys and configuration.
    #[must_use]
    pub fn unavailable(what: &str, e: &impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "{what}");
        Self::error(503, format!("{what}: temporarily unavailable"))
    }
}

/// The app's settings (beside larder's own variables). `Debug` never shows the
/// admin token.
#[derive(Clone)]
pub struct Settings {
    /// `PORT` (default 5000).
    pub port: u16,
    /// `DATABASE_URL` (default `sqlite://stock.db`).
    pub database_url: String,
    /// `ADMIN_TOKEN`: admin routes are mounted only when set.
    pub admin_token: Option<String>,
    /// `RATE_LIMIT` (default `100/minute` per client IP).
    pub rate_limit: String,
    /// `REPORTS_DIR` (default `reports`).
    pub reports_dir: PathBuf,
    /// `TENANT_SOURCE`: where a request's tenant comes from (default `header`, for
    /// the README's tour; `session` in production).
    pub tenant_source: TenantSource,
    /// `COOKIE_SECURE`: the session cookie is sent over HTTPS only (default
    /// `false`, for plain-HTTP development; `true` in production).
    pub cookie_secure: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("port", &self.port)
            .field("database_url", &self.database_url)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("rate_limit", &self.rate_limit)
            .field("reports_dir", &self.reports_dir)
            .field("tenant_source", &self.tenant_source)
            .field("cookie_secure", &self.cookie_secure)
            .finish()
    }
}

/// Where a request's tenant comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantSource {
    /// `X-Tenant-Id`, or the session's after login (a header naming another tenant
    /// than the session's is a 403). Any anonymous client can name any tenant:
    /// development only.
    Header,
    /// The logged-in session only: anonymous requests to tenant routes get 401, a
    /// header that disagrees with the session is a 403.
    Session,
}

impl Settings {
    /// Reads the environment.
    ///
    /// # Errors
    /// A malformed `PORT`, `TENANT_SOURCE` or `COOKIE_SECURE`.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Ok(Self {
            port: match var("PORT") {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("PORT: expected a port number, got {p:?}"))?,
                None => 5000,
            },
            database_url: var("DATABASE_URL").unwrap_or_else(|| "sqlite://stock.db".into()),
            admin_token: var("ADMIN_TOKEN"),
            rate_limit: var("RATE_LIMIT").unwrap_or_else(|| "100/minute".into()),
            reports_dir: var("REPORTS_DIR").map_or_else(|| PathBuf::from("reports"), PathBuf::from),
            tenant_source: match var("TENANT_SOURCE").as_deref() {
                None | Some("header") => TenantSource::Header,
                Some("session") => TenantSource::Session,
                Some(other) => {
                    return Err(format!(
                        "TENANT_SOURCE: expected `header` or `session`, got {other:?}"
                    ))
                }
            },
            cookie_secure: match var("COOKIE_SECURE").as_deref() {
                None => false,
                Some(v) => larder::core::config::parse_bool("COOKIE_SECURE", v)
                    .map_err(|e| e.to_string())?,
            },
        })
    }
}

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT) or SIGTERM, which
/// `docker stop` and orchestrators send. Both apps then drain HTTP, hand their
/// unfinished jobs back and exit 0. The handlers are installed by this call, not
/// when the future is first polled: call it first thing in `main` (in a runtime),
/// so a signal that arrives while the app starts is not the default (death).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only"))
        .ok();
    let interrupt = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = interrupt => tracing::info!("SIGINT: shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            }
            return;
        }
        let _ = interrupt.await;
        tracing::info!("SIGINT: shutting down");
    }
}

/// How a process runs: web and worker (default), or one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// HTTP server and an in-process worker.
    Both,
    /// HTTP server only (`--web-only`).
    Web,
    /// Worker and scheduler only (`--worker-only`).
    Worker,
}

impl Role {
    /// From the command line.
    ///
    /// # Errors
    /// An unknown flag.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut role = Self::Both;
        for a in args {
            role = match a.as_str() {
                "--web-only" => Self::Web,
                "--worker-only" => Self::Worker,
                other => {
                    return Err(format!(
                        "unknown argument {other:?} (use --web-only or --worker-only)"
                    ))
                }
            };
        }
        Ok(role)
    }
}

/// Everything the apps share: database, larder handle, response cache, limits,
/// sessions and jobs.
#[derive(Clone)]
pub struct Stock {
    /// Settings.
    pub settings: Settings,
    /// The database.
    pub db: Db,
    /// larder's handle (Redis, or in process).
    pub handle: Handle,
    /// The cache service.
    pub cache: Cache,
    /// The response cache's configuration.
    pub responses: ResponseCache,
    /// Rate limits.
    pub limits: RateLimit,
    /// Sessions.
    pub sessions: Sessions,
    /// Jobs.
    pub jobs: Jobs,
    /// Admin endpoints, when `ADMIN_TOKEN` is set.
    pub admin: Option<Admin>,
    /// The admin dashboard at `/admin`, when `ADMIN_TOKEN` is set.
    pub dashboard: Option<Dashboard>,
    /// The tenants the app admits (its `tenants` table, read at startup).
    pub tenants: Arc<HashSet<i64>>,
    /// Redis's health, probed at most once a second for `/health/ready`.
    pub probe: HealthProbe,
}

impl std::fmt::Debug for Stock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stock")
            .field("settings", &self.settings)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

/// The example's larder configuration: `CACHE_KEY_PREFIX` defaults to `stock`, and
/// the modules' TTLs to the seed's (balance 60 s, products 60 s, categories 300 s,
/// units 3600 s) unless their variables are set.
///
/// # Errors
/// A malformed variable.
pub fn larder_config() -> Result<Config, larder::core::ConfigError> {
    let mut config = Config::from_env()?;
    if std::env::var_os("CACHE_KEY_PREFIX").is_none() {
        "stock".clone_into(&mut config.key_prefix);
    }
    for (module, secs) in [
        ("balance", 60),
        ("products", 60),
        ("categories", 300),
        ("uom", 3600),
    ] {
        config
            .module_ttls
            .entry(module.to_owned())
            .or_insert(Duration::from_secs(secs));
    }
    Ok(config)
}

impl Stock {
    /// Builds everything from the environment (see the README).
    ///
    /// # Errors
    /// A malformed variable, or a database that cannot be opened.
    pub fn from_env() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let settings = Settings::from_env()?;
        let handle = Handle::new(larder_config()?)?;
        Self::new(settings, handle)
    }

    /// Builds everything on `handle` with `settings`.
    ///
    /// # Errors
    /// A malformed variable, or a database that cannot be opened.
    pub fn new(
        settings: Settings,
        handle: Handle,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let db = Db::open(&settings.database_url)?;
        let tenants = Arc::new(db.tenant_ids()?);
        if settings.tenant_source == TenantSource::Header {
            tracing::warn!("TENANT_SOURCE=header: any client names its tenant with X-Tenant-Id (development only; set TENANT_SOURCE=session in production)");
        }
        let cache = Cache::new(handle.clone());
        // Made-up tenant ids get no cache entry (nor any other key): the response
        // cache only knows the tenants of the table.
        let known = Arc::clone(&tenants);
        let responses = ResponseCache::new(cache.clone())
            .tenant(
                FromHeader::new("x-tenant-id")
                    .only(move |t| t.as_str().parse().is_ok_and(|id: i64| known.contains(&id))),
            )
            .route(CacheRoute::new("/balance", "balance")?.query(&["from", "to", "granularity"]))
            .route(CacheRoute::new("/products", "products")?)
            .route(CacheRoute::new("/products/{id}", "products")?)
            .route(CacheRoute::new("/categories", "categories")?)
            .route(CacheRoute::new("/uom", "uom")?)
            .invalidate(InvalidateRoute::new(
                "POST",
                "/sales",
                &["balance", "products"],
            )?)
            .invalidate(InvalidateRoute::new("POST", "/payments", &["balance"])?)
            .invalidate(InvalidateRoute::new("POST", "/products", &["products"])?)
            .invalidate(InvalidateRoute::new(
                "PUT",
                "/products/{id}",
                &["products"],
            )?)
            .invalidate(InvalidateRoute::new(
                "DELETE",
                "/products/{id}",
                &["products"],
            )?)
            .invalidate(InvalidateRoute::new(
                "POST",
                "/categories",
                &["categories", "products"],
            )?)
            .invalidate(InvalidateRoute::new("POST", "/uom", &["uom"])?);
        let ip = Key::ClientIp(ClientIp::from_env()?);
        let limits = RateLimit::new(RateLimiter::new(handle.clone()))
            .policy(Policy::new("ip", &settings.rate_limit)?.key(ip.clone()))
            .route(
                "POST",
                "/login",
                Policy::new("login", "5/minute")?.key(ip.clone()),
            )
            .route(
                "POST",
                "/admin/login",
                Policy::new("admin-login", "5/minute")?.key(ip),
            )
            .exempt_prefix("/health/")
            .exempt_prefix("/metrics");
        let sessions = Sessions::from_env(handle.clone())?;
        let jobs = Jobs::from_env(handle.clone())?;
        let admin = settings
            .admin_token
            .as_deref()
            .map(|t| Admin::new(cache.clone(), BearerToken::new(t)));
        let dashboard = settings.admin_token.as_deref().map(|t| {
            Dashboard::with_token("/admin", t)
                .secure_cookie(settings.cookie_secure)
                .jobs(jobs.clone())
                .cache(cache.clone())
                .sessions(sessions.clone())
                .rate_limits(limits.limiter().clone())
                .redis(handle.clone())
        });
        let probe = HealthProbe::new(handle.clone());
        Ok(Self {
            settings,
            db,
            handle,
            cache,
            responses,
            limits,
            sessions,
            jobs,
            admin,
            dashboard,
            tenants,
            probe,
        })
    }

    /// The request's tenant (`X-Tenant-Id`, or the session's after login: with
    /// `TENANT_SOURCE=session` the session layer leaves the header only when it is
    /// the session's): 400 when malformed, 404 when the app has no such tenant;
    /// when missing, 400, or 401 when only a session can give it.
    ///
    /// # Errors
    /// The reply to send instead.
    pub fn tenant(&self, raw: Option<&str>) -> Result<i64, Reply> {
        if raw.is_none() && self.settings.tenant_source == TenantSource::Session {
            return Err(Reply::error(
                401,
                "log in: the tenant comes from your session",
            ));
        }
        let id = tenant_id(raw)?;
        if self.tenants.contains(&id) {
            Ok(id)
        } else {
            Err(Reply::error(404, format!("unknown tenant {id}")))
        }
    }

    /// A worker running the app's tasks.
    #[must_use]
    pub fn worker(&self) -> Worker {
        let db = self.db.clone();
        let dir = self.settings.reports_dir.clone();
        Worker::new(self.jobs.clone())
            .concurrency(4)
            .task(SEND_DAILY_REPORT, move |tenant, ctx| {
                let (db, dir) = (db.clone(), dir.clone());
                let job = ctx.id().to_owned();
                async move { write_report(&db, &dir, tenant, &job).await }
            })
    }

    /// With `CELERY_BROKER_URL` set, a worker that also runs the Python app's
    /// Celery messages: `send_daily_report(tenant_id)` from the `celery` queue
    /// (`CELERY_QUEUE`), its result stored in `CELERY_RESULT_BACKEND` (default:
    /// the broker), where the Python client's `.get()` reads it. `None` without
    /// the variable.
    ///
    /// # Errors
    /// A malformed `CELERY_*` variable.
    pub fn celery_worker(&self) -> Result<Option<CeleryWorker>, CeleryError> {
        if std::env::var("CELERY_BROKER_URL").map_or(true, |v| v.trim().is_empty()) {
            return Ok(None);
        }
        let celery = Celery::from_env()?;
        let (db, dir, tenants) = (
            self.db.clone(),
            self.settings.reports_dir.clone(),
            Arc::clone(&self.tenants),
        );
        Ok(Some(CeleryWorker::new(celery).task(
            "send_daily_report",
            move |call| {
                let (db, dir, tenants) = (db.clone(), dir.clone(), Arc::clone(&tenants));
                async move {
                    let tenant: i64 = call.arg(0)?;
                    if !tenants.contains(&tenant) {
                        return Err(TaskFailure::new(
                            "ValueError",
                            format!("unknown tenant {tenant}"),
                        ));
                    }
                    let outcome = write_report(&db, &dir, tenant, &call.id)
                        .await
                        .map_err(|e| {
                            let failure = TaskFailure::new("RuntimeError", e.message());
                            if e.is_retryable() {
                                failure.retry_in(Duration::from_secs(5))
                            } else {
                                failure
                            }
                        })?;
                    serde_json::to_value(outcome)
                        .map_err(|e| TaskFailure::new("TypeError", e.to_string()))
                }
            },
        )))
    }

    /// `GET /balance?from=&to=&granularity=`.
    pub async fn balance(&self, tenant: i64, query: &str) -> Reply {
        let mut from = None;
        let mut to = None;
        let mut granularity = Some(Granularity::Daily);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "from" => from = Some(v),
                "to" => to = Some(v),
                "granularity" => granularity = Granularity::parse(v),
                _ => {}
            }
        }
        let today = chrono::Utc::now().date_naive();
        let parse = |name: &str, v: Option<&str>, default: NaiveDate| match v {
            None => Ok(default),
            Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
                Reply::error(
                    400,
                    format!("{name}: expected a date YYYY-MM-DD, got {v:?}"),
                )
            }),
        };
        let from = match parse("from", from, today - chrono::Duration::days(30)) {
            Ok(d) => d,
            Err(r) => return r,
        };
        let to = match parse("to", to, today) {
            Ok(d) => d,
            Err(r) => return r,
        };
        let Some(granularity) = granularity else {
            return Reply::error(400, "granularity: expected daily, weekly or monthly");
        };
        if from > to {
            return Reply::error(400, "from must not be after to");
        }
        match self.db.balance(tenant, from, to, granularity).await {
            Ok(series) => Reply::ok(json!({
                "tenant": tenant,
                "from": from.to_string(),
                "to": to.to_string(),
                "series": series,
            })),
            Err(e) => Reply::internal(&e),
        }
    }

    /// `GET /products`.
    pub async fn products(&self, tenant: i64) -> Reply {
        match self.db.products(tenant).await {
            Ok(p) => Reply::ok(json!(p)),
            Err(e) => Reply::internal(&e),
        }
    }

    /// `GET /products/{id}`.
    pub async fn product(&self, tenant: i64, id: &str) -> Reply {
        let Ok(id) = id.parse::<i64>() else {
            return Reply::error(400, "product id must be a number");
        };
        match self.db.product(tenant, id).await {
            Ok(Some(p)) => Reply::ok(json!(p)),
            Ok(None) => Reply::error(404, format!("no product {id}")),
            Err(e) => Reply::internal(&e),
        }
    }

    /// `POST /products` (`id` None) and `PUT /products/{id}`.
    pub async fn save_product(&self, tenant: i64, id: Option<&str>, body: &[u8]) -> Reply {
        let Ok(id) = id.map(str::parse::<i64>).transpose() else {
            return Reply::error(400, "product id must be a number");
        };
        let input: ProductInput = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => return Reply::error(400, format!("invalid product: {e}")),
        };
        if input.name.trim().is_empty() || input.price < Money::default() {
            return Reply::error(400, "a product needs a name and a price >= 0");
        }
        match self.db.save_product(tenant, id, input).await {
            Ok(Some(p)) if id.is_none() => Reply::created(json!(p)),
            Ok(Some(p)) => Reply::ok(json!(p)),
            Ok(None) => Reply::error(404, "no such product"),
            Err(e) => Reply::internal(&e),
        }
    }

    /// `DELETE /products/{id}`.
    pub async fn delete_product(&self, tenant: i64, id: &str) -> Reply {
        let Ok(id) = id.parse::<i64>() else {
            return Reply::error(400, "product id must be a number");
        };
        match self.db.delete_product(tenant, id).await {
            Ok(true) => Reply::ok(json!({ "deleted": id })),
            Ok(false) => Reply::error(404, format!("no product {id}")),
            Err(e) => Reply::internal(&e),
        }
    }

    /// `GET /categories` and `GET /uom`.
    pub async fn named(&self, tenant: i64, table: NamedTable) -> Reply {
        match self.db.named(tenant, table).await {
            Ok(rows) => Reply::ok(json!(rows)),
            Err(e) => Reply::internal(&e),
        }
    }

    /// `POST /categories` and `POST /uom` (`{"name": ...}`).
    pub async fn add_named(&self, tenant: i64, table: NamedTable, body: &[u8]) -> Reply {
        #[derive(Deserialize)]
        struct Input {
            name: String,
        }
        match serde_json::from_slice::<Input>(body) {
            Ok(i) if !i.name.trim().is_empty() => {
                match self.db.add_named(tenant, table, i.name).await {
                    Ok(row) => Reply::created(json!(row)),
                    Err(e) => Reply::internal(&e),
                }
            }
            Ok(_) => Reply::error(400, "name must not be empty"),
            Err(e) => Reply::error(400, format!("invalid body: {e}")),
        }
    }

    /// `POST /sales` (`{"product_id":..,"quantity":..,"unit_price":..}`).
    pub async fn add_sale(&self, tenant: i64, body: &[u8]) -> Reply {
        #[derive(Deserialize)]
        struct Sale {
            product_id: i64,
            /// Whole units of the product's unit of measure.
            quantity: i64,
            unit_price: Money,
        }
        let sale: Sale = match serde_json::from_slice(body) {
            Ok(s) => s,
            Err(e) => return Reply::error(400, format!("invalid sale: {e}")),
        };
        if sale.quantity <= 0 || sale.unit_price < Money::default() {
            return Reply::error(400, "quantity must be > 0 and unit_price >= 0");
        }
        match self
            .db
            .add_sale(tenant, sale.product_id, sale.quantity, sale.unit_price)
            .await
        {
            Ok(Some(id)) => Reply::created(json!({ "id": id })),
            Ok(None) => Reply::error(404, format!("no product {}", sale.product_id)),
            Err(e) => Reply::internal(&e),
        }
    }

    /// `POST /payments` (`{"amount":..,"method":..}`).
    pub async fn add_payment(&self, tenant: i64, body: &[u8]) -> Reply {
        #[derive(Deserialize)]
        struct Payment {
            amount: Money,
            method: String,
        }
        let p: Payment = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => return Reply::error(400, format!("invalid payment: {e}")),
        };
        if p.amount <= Money::default() || p.method.trim().is_empty() {
            return Reply::error(400, "amount must be > 0 and method not empty");
        }
        match self.db.add_payment(tenant, p.amount, p.method).await {
            Ok(id) => Reply::created(json!({ "id": id })),
            Err(e) => Reply::internal(&e),
        }
    }

    /// Checks `{"username":..,"password":..}`; the tenant on success.
    pub async fn check_login(&self, body: &[u8]) -> Result<(String, i64), Reply> {
        #[derive(Deserialize)]
        struct Login {
            username: String,
            password: String,
        }
        let l: Login = serde_json::from_slice(body)
            .map_err(|e| Reply::error(400, format!("invalid login: {e}")))?;
        match self.db.verify_user(l.username.clone(), l.password).await {
            Ok(Some(tenant)) => Ok((l.username, tenant)),
            Ok(None) => Err(Reply::error(401, "unknown user or wrong password")),
            Err(e) => Err(Reply::internal(&e)),
        }
    }

    /// `POST /reports/daily`: enqueues the tenant's report.
    pub async fn enqueue_report(&self, tenant: i64) -> Reply {
        let opts = EnqueueOptions::new().tenant(tenant.to_string());
        match self.jobs.enqueue(SEND_DAILY_REPORT, &tenant, opts).await {
            Ok(id) => Reply {
                status: 202,
                body: json!({ "job_id": id }),
            },
            Err(e) => Reply::unavailable("report not enqueued", &e),
        }
    }

    /// `GET /jobs/{id}`: the job's state and result (only the tenant's own jobs).
    pub async fn job(&self, tenant: i64, id: &str) -> Reply {
        match self.jobs.status(id).await {
            Ok(Some(s)) if s.tenant.as_deref() == Some(tenant.to_string().as_str()) => {
                Reply::ok(json!({
                    "job_id": s.id,
                    "task": s.task,
                    "state": s.state,
                    "done": s.state.is_terminal(),
                    "result": s.result,
                    "error": s.error,
                }))
            }
            Ok(_) => Reply::error(404, format!("no job {id}")),
            Err(e) => Reply::unavailable("job status", &e),
        }
    }
}

/// Parses a tenant id (`X-Tenant-Id` header or the session's) into the database's
/// tenant number.
///
/// # Errors
/// A 400 reply for a missing or malformed tenant.
pub fn tenant_id(raw: Option<&str>) -> Result<i64, Reply> {
    let raw = raw.ok_or_else(|| Reply::error(400, "missing tenant: send X-Tenant-Id or log in"))?;
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|t| *t > 0)
        .ok_or_else(|| {
            Reply::error(
                400,
                format!("invalid X-Tenant-Id {raw:?}: expected a positive number"),
            )
        })
}

async fn write_report(
    db: &Db,
    dir: &std::path::Path,
    tenant: i64,
    job: &str,
) -> Result<ReportOutcome, TaskError> {
    let today = chrono::Utc::now().date_naive();
    let series = db
        .balance(
            tenant,
            today - chrono::Duration::days(30),
            today,
            Granularity::Monthly,
        )
        .await
        .map_err(|e| TaskError::retry(e.to_string()))?;
    let sales: Money = series.iter().map(|p| p.sales).sum();
    let payments: Money = series.iter().map(|p| p.payments).sum();
    let totals = json!({ "tenant": tenant, "days": 30, "sales": sales, "payments": payments, "balance": sales - payments });
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| TaskError::retry(format!("reports folder: {e}")))?;
    // The job id keeps two reports of one tenant in the same millisecond apart,
    // and shows which job wrote which file.
    let path = dir.join(format!(
        "tenant-{tenant}-{}-{job}.json",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
    ));
    let text = serde_json::to_vec_pretty(&totals).map_err(|e| TaskError::fatal(e.to_string()))?;
    tokio::fs::write(&path, text)
        .await
        .map_err(|e| TaskError::retry(format!("report file: {e}")))?;
    let path = path.to_string_lossy().into_owned();
    let report_id = db
        .record_report(tenant, path.clone(), totals.clone())
        .await
        .map_err(|e| TaskError::retry(e.to_string()))?;
    tracing::info!(
        tenant,
        report_id,
        path,
        job_id = job,
        "daily report written"
    );
    Ok(ReportOutcome {
        report_id,
        path,
        totals,
    })
}

/// Whether a job state means "finished".
#[must_use]
pub fn is_done(state: JobState) -> bool {
    state.is_terminal()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    #[test]
    fn settings_never_show_the_admin_token() {
        let settings = crate::Settings {
            port: 5000,
            database_url: "stock.db".into(),
            admin_token: Some("s3cret-admin".into()),
            rate_limit: "100/minute".into(),
            reports_dir: "reports".into(),
            tenant_source: crate::TenantSource::Header,
            cookie_secure: false,
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("admin_token: Some(\"***\")"),
            "{shown}"
        );
    }
}
