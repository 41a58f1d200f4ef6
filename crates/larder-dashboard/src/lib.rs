//! larder's admin dashboard: one place to look at and act on a service's jobs,
//! cache, rate limits, sessions and Redis, mounted in Axum or Actix-web from one
//! implementation.
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use larder_cache::Cache;
//! use larder_core::Handle;
//! use larder_dashboard::Dashboard;
//! use larder_jobs::Jobs;
//!
//! let handle = Handle::from_env()?;
//! let dashboard = Dashboard::with_token("/admin", &std::env::var("ADMIN_TOKEN")?)
//!     .jobs(Jobs::new(handle.clone()))
//!     .cache(Cache::new(handle.clone()))
//!     .redis(handle);
//! let app: axum::Router = axum::Router::new()
//!     .merge(larder_dashboard::axum::router(dashboard));
//! # let _ = app; Ok(()) }
//! ```
//!
//! # Pages and endpoints
//!
//! Paths are relative to where the dashboard is mounted (`/admin` above). None is
//! under `/cache/`: mounted at `/admin`, the dashboard leaves `/admin/cache/*` to
//! larder-cache's own admin API.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /` | overview: job counts, cache, Redis health |
//! | `GET /jobs?queue=default&list=dead&page=0` | every queue's counts by state (queued, delayed, retrying, running, dead), the last hour's outcomes per minute (a chart), live workers, scheduler entries; one queue's delayed, retrying, running or dead jobs, paged (without `queue`: the queue with the most jobs in that state) |
//! | `GET /jobs?queue=default&list=dead&task=&tenant=&from=` | that list searched by task and tenant, one bounded call a page ([`larder_jobs::Jobs::search`]), with a link that goes on |
//! | `GET /jobs/{id}` | one job: arguments, attempts, every failed attempt's error, times, result |
//! | `POST /jobs/{id}/revoke`, `/redrive`, `/delete` | revoke a job; send a dead one back to its queue; delete one no worker holds |
//! | `POST /queues/{name}/redrive-dead` | redrive a queue's dead jobs, oldest first, at most 1,000 per request |
//! | `POST /queues/{name}/purge` | delete every ready job of a queue |
//! | `GET /rate-limits?key=` | every instance's admissions and rejections of the last hour per minute and policy (charts), the keys this instance rejected most (hashed), a key's hash |
//! | `GET /cache-stats` | hit ratio, entries, memory, degraded look-ups; each module's and tenant's hit ratio over the last hour; the breaker's last outages |
//! | `POST /cache-invalidate` | form fields `tenant`, `module`: drop one module's entries for one tenant, or with no module all of the tenant's |
//! | `GET /sessions?tenant=&user=` | live sessions without a tenant and of the tenants that logged in last; a user's live sessions (started, last seen, user agent, IP) |
//! | `POST /sessions-revoke`, `POST /sessions-revoke-all` | form fields `tenant` (optional), `user`, `session`: end one, or all, of a user's sessions |
//! | `GET /redis` | health, breaker and its last outages, latency, memory, eviction policy, topology |
//! | `GET /api/overview`, `/api/jobs`, `/api/jobs/{id}`, `/api/rate-limits`, `/api/sessions`, `/api/redis` | the same data as JSON |
//! | `GET /login`, `POST /login`, `POST /logout` | browser sign-in with the admin token |
//!
//! Every page is live: its part below the title is asked for again every 5 s and
//! put in place (`assets/live.js`), unless the user is typing in it.
//!
//! # Who may use it
//!
//! Every page, endpoint and action needs either a request the [`Authorize`] hook
//! accepts (scripts: `Authorization: Bearer <token>` with [`BearerToken`]) or the
//! sign-in cookie that the login form sets once the hook has accepted the token
//! typed into it. Cookie-authenticated actions are protected against cross-site
//! requests (see [`signin`]). A browser without either is sent to the login page;
//! anything else gets 401.
//!
//! # Cost
//!
//! Nothing a page or endpoint does scans the keyspace: job counts are set sizes,
//! lists are ranges of sorted sets (see [`larder_jobs::inspect`]), a search looks
//! at 5,000 jobs at most per request, live sessions are one `ZCOUNT` per tenant
//! shown, the cache and Redis figures are `INFO` and `DBSIZE` per primary, and the
//! per-minute series are kept in process. BENCHMARKS.md has the
//! figures at one million jobs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use larder_cache::Cache;
use larder_core::{Handle, RequestView};
use larder_jobs::Jobs;
use larder_ratelimit::RateLimiter;
use larder_session::Sessions;
use percent_encoding::percent_decode_str;

pub use larder_core::auth::{Authorize, BearerToken};

mod actions;
mod data;
mod pages;
pub mod signin;

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "axum")]
pub mod axum;

use signin::SigningKey;

/// How long a browser sign-in lasts unless configured.
pub const DEFAULT_SIGN_IN: Duration = Duration::from_secs(12 * 3600);

/// Jobs per page of a listing.
pub const PAGE: u64 = 50;

/// The largest request body the dashboard reads (its forms are a few fields).
pub const MAX_BODY: usize = 16 * 1024;

/// The dashboard: what it shows, who may see it, and where it is mounted.
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    authorize: Box<dyn Authorize>,
    key: SigningKey,
    sign_in_for: Duration,
    secure_cookie: bool,
    jobs: Option<Jobs>,
    cache: Option<Cache>,
    sessions: Option<Sessions>,
    limiter: Option<RateLimiter>,
    redis: Option<Handle>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("base", &self.inner.base)
            .field("jobs", &self.inner.jobs.is_some())
            .field("cache", &self.inner.cache.is_some())
            .field("redis", &self.inner.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// A dashboard mounted at `base` (for example `"/admin"`: its links and its
    /// cookie's path), open to requests `authorize` accepts and to browsers signed
    /// in through its login form. Sign-in cookies are signed with a random key, so
    /// they last as long as this process; give [`signing_secret`](Self::signing_secret)
    /// to share them across instances and restarts.
    #[must_use]
    pub fn new(base: &str, authorize: impl Authorize) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        Self {
            inner: Arc::new(Inner {
                base,
                authorize: Box::new(authorize),
                key: SigningKey::random(),
                sign_in_for: DEFAULT_SIGN_IN,
                secure_cookie: true,
                jobs: None,
                cache: None,
                sessions: None,
                limiter: None,
                redis: None,
            }),
        }
    }

    /// A dashboard for one admin token: [`BearerToken`] as the hook, and sign-in
    /// cookies signed with a key derived from the token, so every instance that
    /// shares the token accepts them and a new token signs every browser out.
    #[must_use]
    pub fn with_token(base: &str, token: &str) -> Self {
        Self::new(base, BearerToken::new(token)).signing_secret(token.as_bytes())
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner)
            .unwrap_or_else(|| unreachable!("configured before it is cloned"))
    }

    /// Signs sign-in cookies and CSRF tokens with a key derived from `secret`.
    #[must_use]
    pub fn signing_secret(mut self, secret: &[u8]) -> Self {
        self.inner_mut().key = SigningKey::derive(secret);
        self
    }

    /// How long a browser sign-in lasts (default [`DEFAULT_SIGN_IN`]).
    #[must_use]
    pub fn sign_in_for(mut self, ttl: Duration) -> Self {
        self.inner_mut().sign_in_for = ttl;
        self
    }

    /// Whether the sign-in cookie is `Secure` (sent over HTTPS only; browsers
    /// treat `http://localhost` as secure too). Default true; turn it off only
    /// for plain HTTP on a trusted network.
    #[must_use]
    pub fn secure_cookie(mut self, on: bool) -> Self {
        self.inner_mut().secure_cookie = on;
        self
    }

    /// Shows this job queue.
    #[must_use]
    pub fn jobs(mut self, jobs: Jobs) -> Self {
        self.inner_mut().jobs = Some(jobs);
        self
    }

    /// Shows this cache.
    #[must_use]
    pub fn cache(mut self, cache: Cache) -> Self {
        self.inner_mut().cache = Some(cache);
        self
    }

    /// Shows a user's sessions, with revoke and revoke-all.
    #[must_use]
    pub fn sessions(mut self, sessions: Sessions) -> Self {
        self.inner_mut().sessions = Some(sessions);
        self
    }

    /// Shows what this limiter rejected in the last hour (this instance's view).
    #[must_use]
    pub fn rate_limits(mut self, limiter: RateLimiter) -> Self {
        self.inner_mut().limiter = Some(limiter);
        self
    }

    /// Shows the Redis behind this handle.
    #[must_use]
    pub fn redis(mut self, handle: Handle) -> Self {
        self.inner_mut().redis = Some(handle);
        self
    }

    /// Where the dashboard is mounted.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.inner.base
    }

    /// Answers one request. `path` is the request's path below the mount point
    /// (`"/jobs"`, or `""`/`"/"` for the overview); `body` is the request body, read
    /// by the adapter up to [`MAX_BODY`]. The request is read before the returned
    /// future runs, so the future is `Send + 'static`.
    pub fn handle(
        &self,
        req: &dyn RequestView,
        path: &str,
        body: Bytes,
    ) -> impl std::future::Future<Output = Reply> + Send + 'static {
        let call = Call::read(self, req, path, body);
        let this = self.clone();
        async move { this.answer(call).await }
    }

    async fn answer(&self, call: Call) -> Reply {
        // Segments decoded once: Axum hands over the path as sent, Actix with most
        // escapes decoded but `%2F`, `%25` and `%2B` kept, so a job id holding a
        // `/`, `%` or space reaches the same segment either way.
        let decoded: Vec<String> = call
            .path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
        // The sign-in pages and the style sheet are open; everything else is not.
        match (call.method.as_str(), parts.as_slice()) {
            ("GET", ["assets", name]) => return pages::asset(name),
            ("GET", ["login"]) => return pages::login(self.base(), None),
            ("POST", ["login"]) => return self.sign_in(&call),
            _ => {}
        }
        let Some(who) = call.who.clone() else {
            return if call.method == "GET" && call.wants_html {
                Reply::redirect(&format!("{}/login", self.base()))
            } else {
                Reply::json_error(401, "unauthorized")
            };
        };
        if call.method == "POST" {
            if let Who::Browser { cookie } = &who {
                let token = call.form("_csrf").unwrap_or_default();
                if call.cross_site || !self.inner.key.csrf_matches(cookie, &token) {
                    tracing::warn!(target: "larder::dashboard", path = %call.path, "cross-site or tokenless action refused");
                    return Reply::json_error(403, "cross-site request refused");
                }
            }
        }
        let view = View {
            base: self.base(),
            csrf: match &who {
                Who::Browser { cookie } => Some(self.inner.key.csrf(cookie)),
                Who::Script => None,
            },
        };
        match (call.method.as_str(), parts.as_slice()) {
            ("POST", ["logout"]) => {
                let mut reply = Reply::redirect(&format!("{}/login", self.base()));
                reply.set_cookie = Some(signin::clear_cookie(
                    self.cookie_path(),
                    self.inner.secure_cookie,
                ));
                reply
            }
            ("GET", []) => pages::overview(&view, &data::overview(self).await),
            ("GET", ["api", "overview"]) => Reply::json(200, &data::overview(self).await),
            ("GET", ["redis"]) => pages::redis(&view, &data::redis(self).await),
            ("GET", ["api", "redis"]) => Reply::json(200, &data::redis(self).await),
            ("GET", ["rate-limits"]) => match data::rate_limits(self, &call).await {
                Ok(limits) => pages::rate_limits(&view, &limits),
                Err(reply) => reply,
            },
            ("GET", ["api", "rate-limits"]) => match data::rate_limits(self, &call).await {
                Ok(limits) => Reply::json(200, &limits),
                Err(reply) => reply,
            },
            ("GET", ["cache-stats"]) => {
                pages::cache(&view, &data::cache(self).await, call.query("done"))
            }
            ("GET", ["jobs"]) => match data::jobs(self, &call).await {
                Ok(jobs) => pages::jobs(&view, &jobs, call.query("done")),
                Err(reply) => reply,
            },
            ("GET", ["api", "jobs"]) => match data::jobs(self, &call).await {
                Ok(jobs) => Reply::json(200, &jobs),
                Err(reply) => reply,
            },
            ("GET", ["jobs", "find"]) => {
                let id = call.query("id").unwrap_or_default();
                Reply::redirect(&format!(
                    "{}/jobs/{}",
                    self.base(),
                    pages::path_segment(&id)
                ))
            }
            ("GET", ["jobs", id]) => match data::job(self, id).await {
                Ok(job) => pages::job(&view, id, job.as_ref(), call.query("done")),
                Err(reply) => reply,
            },
            ("GET", ["api", "jobs", id]) => match data::job(self, id).await {
                Ok(Some(job)) => Reply::json(200, &job),
                Ok(None) => Reply::json_error(404, "no such job"),
                Err(reply) => reply,
            },
            ("POST", ["queues", queue, "redrive-dead"]) => {
                actions::redrive_dead(self, &call, queue).await
            }
            ("POST", ["jobs", id, action @ ("revoke" | "redrive" | "delete")]) => {
                actions::job(self, &call, id, action).await
            }
            ("POST", ["queues", queue, "purge"]) => actions::purge(self, &call, queue).await,
            ("POST", ["cache-invalidate"]) => actions::invalidate(self, &call).await,
            ("GET", ["sessions"]) => match data::sessions(self, &call).await {
                Ok(found) => pages::sessions(&view, &found, call.query("done")),
                Err(reply) => reply,
            },
            ("GET", ["api", "sessions"]) => match data::sessions(self, &call).await {
                Ok(found) => Reply::json(200, &found),
                Err(reply) => reply,
            },
            ("POST", ["sessions-revoke"]) => actions::revoke_session(self, &call, false).await,
            ("POST", ["sessions-revoke-all"]) => actions::revoke_session(self, &call, true).await,
            _ => Reply::json_error(404, "not found"),
        }
    }

    /// `POST /login`: the token typed into the form, judged by the hook as if it
    /// came in an `Authorization: Bearer` header.
    fn sign_in(&self, call: &Call) -> Reply {
        if call.cross_site {
            return Reply::json_error(403, "cross-site request refused");
        }
        if !call.token_accepted {
            tracing::warn!(target: "larder::dashboard", "sign-in refused");
            let mut reply = pages::login(self.base(), Some("That token is not accepted."));
            reply.status = 401;
            return reply;
        }
        let cookie = self
            .inner
            .key
            .issue(SystemTime::now(), self.inner.sign_in_for);
        tracing::info!(target: "larder::dashboard", "browser signed in");
        let mut reply = Reply::redirect(&format!("{}/", self.base()));
        reply.set_cookie = Some(signin::set_cookie(
            &cookie,
            self.cookie_path(),
            self.inner.sign_in_for,
            self.inner.secure_cookie,
        ));
        reply
    }

    fn cookie_path(&self) -> &str {
        if self.base().is_empty() {
            "/"
        } else {
            self.base()
        }
    }
}

/// Who a request is, once authenticated.
#[derive(Debug, Clone)]
enum Who {
    /// The hook accepted the request itself (a bearer token).
    Script,
    /// A signed-in browser, with its cookie (the CSRF token is derived from it).
    Browser { cookie: String },
}

/// A request, read into owned parts (see [`Dashboard::handle`]).
#[derive(Debug)]
struct Call {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    who: Option<Who>,
    wants_html: bool,
    cross_site: bool,
    /// On `POST /login`: whether the hook accepts the typed token (judged while the
    /// request is at hand, as if it came in an `Authorization: Bearer` header).
    token_accepted: bool,
}

impl Call {
    fn read(dashboard: &Dashboard, req: &dyn RequestView, path: &str, body: Bytes) -> Self {
        let inner = &dashboard.inner;
        let who = if inner.authorize.authorize(req) {
            Some(Who::Script)
        } else {
            signin::cookie_of(req)
                .filter(|c| inner.key.verify(c, SystemTime::now()))
                .map(|cookie| Who::Browser { cookie })
        };
        let pairs = |bytes: &[u8]| -> Vec<(String, String)> {
            form_urlencoded::parse(bytes).into_owned().collect()
        };
        let is_form = req
            .header("content-type")
            .is_some_and(|c| c.starts_with(b"application/x-www-form-urlencoded"));
        let form = if is_form { pairs(&body) } else { Vec::new() };
        let token_accepted = req.method() == "POST"
            && path.trim_matches('/') == "login"
            && field(&form, "token").is_some_and(|token| {
                !token.is_empty()
                    && inner.authorize.authorize(&WithBearer {
                        req,
                        authorization: format!("Bearer {token}").into_bytes(),
                    })
            });
        Self {
            method: req.method().to_owned(),
            path: path.to_owned(),
            query: pairs(req.query().unwrap_or_default().as_bytes()),
            form,
            who,
            wants_html: req
                .header("accept")
                .is_some_and(|a| a.windows(9).any(|w| w == b"text/html")),
            cross_site: signin::is_cross_site(req),
            token_accepted,
        }
    }

    fn query(&self, name: &str) -> Option<String> {
        field(&self.query, name)
    }

    fn form(&self, name: &str) -> Option<String> {
        field(&self.form, name)
    }

    /// A form field, or else a query parameter (scripts may use either).
    fn form_or_query(&self, name: &str) -> Option<String> {
        self.form(name).or_else(|| self.query(name))
    }

    /// Whether the caller is a browser (answers are pages and redirects) rather
    /// than a script (answers are JSON).
    fn is_browser(&self) -> bool {
        matches!(self.who, Some(Who::Browser { .. }))
    }
}

/// The value of `name` among decoded pairs.
fn field(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// A request as the hook sees it on sign-in: itself, with the typed token as its
/// `Authorization` header, so a hook that also looks at the peer, a header or a
/// principal judges the sign-in as it judges a script's request.
struct WithBearer<'a> {
    req: &'a dyn RequestView,
    authorization: Vec<u8>,
}

impl RequestView for WithBearer<'_> {
    fn method(&self) -> &str {
        self.req.method()
    }
    fn path(&self) -> &str {
        self.req.path()
    }
    fn query(&self) -> Option<&str> {
        self.req.query()
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        if name == "authorization" {
            Some(&self.authorization)
        } else {
            self.req.header(name)
        }
    }
    fn header_values(&self, name: &str) -> Vec<&[u8]> {
        if name == "authorization" {
            vec![&self.authorization]
        } else {
            self.req.header_values(name)
        }
    }
    fn peer_ip(&self) -> Option<std::net::IpAddr> {
        self.req.peer_ip()
    }
    fn principal(&self) -> Option<larder_core::Principal> {
        self.req.principal()
    }
}

/// What every page needs: links and the CSRF token of its forms.
#[derive(Debug)]
struct View<'a> {
    base: &'a str,
    csrf: Option<String>,
}

/// The dashboard's answer; the adapters turn it into their framework's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `Location`, for a redirect.
    pub location: Option<String>,
    /// `Set-Cookie`, on sign-in and sign-out.
    pub set_cookie: Option<String>,
    /// `Cache-Control`.
    pub cache_control: &'static str,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// Headers every answer carries: no framing by other sites, no sniffing, no
    /// referrer, scripts and styles only from the dashboard itself.
    pub const SECURITY_HEADERS: [(&'static str, &'static str); 4] = [
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ];

    fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type,
            location: None,
            set_cookie: None,
            cache_control: "no-store",
            body: body.into(),
        }
    }

    fn html(status: u16, markup: maud::Markup) -> Self {
        Self::new(status, "text/html; charset=utf-8", markup.into_string())
    }

    fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::new(status, "application/json", body),
            Err(e) => {
                tracing::error!(target: "larder::dashboard", error = %e, "answer not serialisable");
                Self::json_error(500, "internal error")
            }
        }
    }

    fn json_error(status: u16, message: &str) -> Self {
        Self::new(
            status,
            "application/json",
            serde_json::json!({ "error": message }).to_string(),
        )
    }

    fn redirect(location: &str) -> Self {
        let mut reply = Self::new(303, "text/plain; charset=utf-8", "");
        reply.location = Some(location.to_owned());
        reply
    }
}
