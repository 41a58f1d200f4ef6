//! The stock app's Actix-web wiring: routes, and larder's middleware around them.
//! The domain (database, queries, report task, larder configuration) is
//! `example-stock-domain`.

use actix_session::{Session, SessionMiddleware};
use actix_web::body::MessageBody;
use actix_web::cookie::Key;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use example_stock_domain::{NamedTable, Reply, Stock, TenantSource};
use larder::cache::actix::CacheMiddleware;
use larder::ratelimit::actix::RateLimitMiddleware;
use larder::session::actix::{self as sessions, RedisSessionStore, SessionContext, SessionTenant};
use larder::session::Identity;
use serde_json::json;

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
/// beside them; rate limits around everything (`/health/*` exempt). `key` signs and
/// encrypts the session cookie.
pub fn app(
    stock: Stock,
    key: Key,
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
            SessionMiddleware::builder(RedisSessionStore::new(stock.sessions.clone()), key)
                .cookie_name("stock_session".into())
                .cookie_secure(stock.settings.cookie_secure)
                .build(),
        )
        .wrap(SessionContext::new());
    let mut app = actix_web::App::new()
        .app_data(Data::new(stock.clone()))
        .service(larder::cache::actix::health_resource(stock.handle.clone()));
    if let Some(admin) = stock.admin.clone() {
        app = app.service(larder::cache::actix::admin_scope(admin));
    }
    app.service(api)
        .wrap(RateLimitMiddleware::new(stock.limits.clone()))
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
