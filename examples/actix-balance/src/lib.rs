//! The stock app's Actix-web wiring: routes, and larder's middleware around them.
//! The domain (database, queries, report task, larder configuration) is
//! `example-stock-domain`.

use actix_session::{Session, SessionMiddleware};
use actix_web::body::MessageBody;
use actix_web::cookie::{Cookie, CookieJar, Key, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::web::{self, Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use example_stock_domain::{NamedTable, Reply, SessionKeys, Stock, TenantSource};
use larder::cache::actix::CacheMiddleware;
use larder::ratelimit::actix::RateLimitMiddleware;
use larder::session::actix::{self as sessions, RedisSessionStore, SessionContext, SessionTenant};
use larder::session::Identity;
use serde_json::json;

/// The session cookie's name.
pub const COOKIE: &str = "stock_session";

/// The keys of the session cookie, which is encrypted and signed (actix-session's
/// private cookie, holding the session id): `current` makes every cookie set; a
/// cookie made with `previous` is still read, and given back made with `current`,
/// so a key rotation logs nobody out.
#[derive(Clone)]
pub struct CookieKeys {
    /// Makes every cookie set.
    pub current: Key,
    /// Read too, during a rotation.
    pub previous: Option<Key>,
}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieKeys").finish_non_exhaustive()
    }
}

impl CookieKeys {
    /// The keys derived from `SESSION_KEY` and `SESSION_KEY_PREVIOUS`, or a
    /// random one (see [`example_stock_domain::session_keys`] for when that is
    /// allowed).
    #[must_use]
    pub fn new(keys: Option<&SessionKeys>) -> Self {
        match keys {
            Some(k) => Self {
                current: Key::derive_from(&k.current),
                previous: k.previous.as_deref().map(Key::derive_from),
            },
            None => Self {
                current: Key::generate(),
                previous: None,
            },
        }
    }

    /// A `Cookie` header whose session cookie was made with the previous key,
    /// with that cookie made again with the current one: the new header and the
    /// new cookie's value. `None` when there is nothing to re-make.
    fn upgrade_header(&self, header: &str) -> Option<(String, String)> {
        let mut upgraded = None;
        let parts: Vec<String> = header
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|part| {
                // Values go over the wire percent-encoded (as actix-web sets them).
                let value = Cookie::parse_encoded(part.to_owned())
                    .ok()
                    .filter(|c| c.name() == COOKIE)
                    .and_then(|c| self.upgrade(c.value()));
                match value {
                    Some(value) => {
                        let part = Cookie::new(COOKIE, value.clone()).encoded().to_string();
                        upgraded = Some(value);
                        part
                    }
                    None => part.to_owned(),
                }
            })
            .collect();
        upgraded.map(|value| (parts.join("; "), value))
    }

    /// The cookie value `value` made again with the current key, when it was
    /// made with the previous one; `None` otherwise.
    fn upgrade(&self, value: &str) -> Option<String> {
        let previous = self.previous.as_ref()?;
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(COOKIE, value.to_owned()));
        if jar.private(&self.current).get(COOKIE).is_some() {
            return None;
        }
        let plain = jar.private(previous).get(COOKIE)?;
        let mut out = CookieJar::new();
        out.private_mut(&self.current).add(plain);
        out.get(COOKIE).map(|c| c.value().to_owned())
    }
}

/// Reads a session cookie made with the previous key as if it were made with
/// the current one, and sets the re-made cookie on the response.
async fn rotate_session_cookie(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Outside a rotation (no previous key) the request goes through untouched.
    let upgraded = req
        .app_data::<Data<CookieKeys>>()
        .filter(|keys| keys.previous.is_some())
        .and_then(|keys| {
            let header = req.headers().get(header::COOKIE)?.to_str().ok()?;
            keys.upgrade_header(header)
        });
    let Some((header, value)) = upgraded else {
        return next.call(req).await;
    };
    if let Ok(v) = header::HeaderValue::from_str(&header) {
        req.headers_mut().insert(header::COOKIE, v);
    }
    let secure = req
        .app_data::<Data<Stock>>()
        .is_some_and(|s| s.settings.cookie_secure);
    let mut res = next.call(req).await?;
    if !res.response().cookies().any(|c| c.name() == COOKIE) {
        let cookie = Cookie::build(COOKIE, value)
            .path("/")
            .http_only(true)
            .secure(secure)
            .same_site(SameSite::Lax)
            .finish();
        let _ = res.response_mut().add_cookie(&cookie);
    }
    Ok(res)
}

fn respond(reply: Reply) -> HttpResponse {
    HttpResponse::build(
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    )
    .json(reply.body)
}

fn tenant(s: &Stock, req: &HttpRequest) -> Result<i64, Reply> {
    s.tenant(
        req.headers()
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok()),
    )
}

/// Configures the app: API routes behind the response cache, sessions and the
/// tenant middleware; `/health/cache` and (with `ADMIN_TOKEN`) `/admin/cache/*`
/// beside them, with `/health/live` and `/health/ready`; rate limits around
/// everything (`/health/*` exempt). `keys` sign and encrypt the session cookie.
pub fn app(
    stock: Stock,
    keys: CookieKeys,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let mut session_tenant = SessionTenant::new("tenant", "x-tenant-id");
    if stock.settings.tenant_source == TenantSource::Session {
        session_tenant = session_tenant.session_only();
    }
    let api = web::scope("")
        .route("/balance", web::get().to(balance))
        .route("/sales", web::post().to(sale))
        .route("/payments", web::post().to(payment))
        .route("/products", web::get().to(products))
        .route("/products", web::post().to(create_product))
        .route("/products/{id}", web::get().to(product))
        .route("/products/{id}", web::put().to(update_product))
        .route("/products/{id}", web::delete().to(delete_product))
        .route("/categories", web::get().to(categories))
        .route("/categories", web::post().to(add_category))
        .route("/uom", web::get().to(uoms))
        .route("/uom", web::post().to(add_uom))
        .route("/login", web::post().to(login))
        .route("/me", web::get().to(me))
        .route("/logout", web::post().to(logout))
        .route("/logout-all", web::post().to(logout_all))
        .route("/sessions", web::get().to(list_sessions))
        .route("/reports/daily", web::post().to(daily_report))
        .route("/jobs/{id}", web::get().to(job))
        // `wrap` order: the last is the outermost.
        .wrap(CacheMiddleware::new(stock.responses.clone()))
        // A logged-in session's tenant is the request's X-Tenant-Id (another is a 403).
        .wrap(session_tenant)
        .wrap(
            SessionMiddleware::builder(
                RedisSessionStore::new(stock.sessions.clone()),
                keys.current.clone(),
            )
            .cookie_name(COOKIE.into())
            .cookie_secure(stock.settings.cookie_secure)
            .build(),
        )
        .wrap(SessionContext::new())
        .wrap(from_fn(rotate_session_cookie));
    let mut app = actix_web::App::new()
        .app_data(Data::new(stock.clone()))
        .app_data(Data::new(keys))
        .service(larder::cache::actix::health_resource(stock.handle.clone()))
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
    if let Some(admin) = stock.admin.clone() {
        app = app.service(larder::cache::actix::admin_scope(admin));
    }
    // After the cache's admin scope, which keeps `/admin/cache/*`.
    if let Some(dashboard) = stock.dashboard.clone() {
        app = app.service(larder::dashboard::actix::scope(dashboard));
    }
    app.service(api)
        .wrap(RateLimitMiddleware::new(stock.limits.clone()))
}

async fn live(s: Data<Stock>) -> HttpResponse {
    respond(s.liveness())
}

async fn ready(s: Data<Stock>) -> HttpResponse {
    respond(s.readiness().await)
}

async fn metrics(s: Data<Stock>) -> HttpResponse {
    let (status, body) = s.metrics().await;
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}

async fn balance(s: Data<Stock>, req: HttpRequest) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.balance(t, req.query_string()).await),
        Err(r) => respond(r),
    }
}

async fn sale(s: Data<Stock>, req: HttpRequest, body: Bytes) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.add_sale(t, &body).await),
        Err(r) => respond(r),
    }
}

async fn payment(s: Data<Stock>, req: HttpRequest, body: Bytes) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.add_payment(t, &body).await),
        Err(r) => respond(r),
    }
}

async fn products(s: Data<Stock>, req: HttpRequest) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.products(t).await),
        Err(r) => respond(r),
    }
}

async fn product(s: Data<Stock>, req: HttpRequest, id: Path<String>) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.product(t, &id).await),
        Err(r) => respond(r),
    }
}

async fn create_product(s: Data<Stock>, req: HttpRequest, body: Bytes) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.save_product(t, None, &body).await),
        Err(r) => respond(r),
    }
}

async fn update_product(
    s: Data<Stock>,
    req: HttpRequest,
    id: Path<String>,
    body: Bytes,
) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.save_product(t, Some(&id), &body).await),
        Err(r) => respond(r),
    }
}

async fn delete_product(s: Data<Stock>, req: HttpRequest, id: Path<String>) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.delete_product(t, &id).await),
        Err(r) => respond(r),
    }
}

async fn categories(s: Data<Stock>, req: HttpRequest) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.named(t, NamedTable::Categories).await),
        Err(r) => respond(r),
    }
}

async fn add_category(s: Data<Stock>, req: HttpRequest, body: Bytes) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.add_named(t, NamedTable::Categories, &body).await),
        Err(r) => respond(r),
    }
}

async fn uoms(s: Data<Stock>, req: HttpRequest) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.named(t, NamedTable::Uom).await),
        Err(r) => respond(r),
    }
}

async fn add_uom(s: Data<Stock>, req: HttpRequest, body: Bytes) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.add_named(t, NamedTable::Uom, &body).await),
        Err(r) => respond(r),
    }
}

async fn login(s: Data<Stock>, session: Session, req: HttpRequest, body: Bytes) -> HttpResponse {
    let (user, tenant) = match s.check_login(&body).await {
        Ok(found) => found,
        Err(r) => return respond(r),
    };
    let mut who = Identity::new(&user);
    if let Some(ua) = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
    {
        who = who.with_user_agent(ua);
    }
    if let Some(peer) = req.peer_addr() {
        who = who.with_ip(peer.ip().to_string());
    }
    match sessions::login(&session, &who).and_then(|()| session.insert("tenant", tenant)) {
        Ok(()) => HttpResponse::Ok().json(json!({ "user": user, "tenant": tenant })),
        Err(e) => respond(Reply::unavailable("session not stored", &e)),
    }
}

async fn me(session: Session) -> HttpResponse {
    match (sessions::identity(&session), session.get::<i64>("tenant")) {
        (Some(i), Ok(Some(t))) => HttpResponse::Ok().json(json!({ "user": i.user, "tenant": t })),
        _ => respond(Reply::error(401, "not logged in")),
    }
}

async fn logout(session: Session) -> HttpResponse {
    sessions::logout(&session);
    HttpResponse::Ok().json(json!({ "logged_out": true }))
}

async fn logout_all(s: Data<Stock>, session: Session) -> HttpResponse {
    let Some(i) = sessions::identity(&session) else {
        return respond(Reply::error(401, "not logged in"));
    };
    match s.sessions.revoke_all(None, &i.user, None).await {
        Ok(n) => {
            sessions::logout(&session);
            HttpResponse::Ok().json(json!({ "revoked": n }))
        }
        Err(e) => respond(Reply::unavailable("revoke failed", &e)),
    }
}

async fn list_sessions(s: Data<Stock>, session: Session) -> HttpResponse {
    let Some(i) = sessions::identity(&session) else {
        return respond(Reply::error(401, "not logged in"));
    };
    match s.sessions.list(None, &i.user).await {
        Ok(list) => HttpResponse::Ok().json(list),
        Err(e) => respond(Reply::unavailable("sessions unavailable", &e)),
    }
}

async fn daily_report(s: Data<Stock>, req: HttpRequest) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.enqueue_report(t).await),
        Err(r) => respond(r),
    }
}

async fn job(s: Data<Stock>, req: HttpRequest, id: Path<String>) -> HttpResponse {
    match tenant(&s, &req) {
        Ok(t) => respond(s.job(t, &id).await),
        Err(r) => respond(r),
    }
}
