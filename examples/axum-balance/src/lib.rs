//! The stock app's Axum wiring: routes, and larder's layers around them. The domain
//! (database, queries, report task, larder configuration) is `example-stock-domain`.

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use example_stock_domain::{NamedTable, Reply, Stock, TenantSource};
use larder::cache::tower::CacheLayer;
use larder::ratelimit::tower::RateLimitLayer;
use larder::session::tower::{
    self as sessions, RedisSessionStore, SessionContextLayer, SessionTenantLayer,
};
use larder::session::Identity;
use serde_json::json;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

fn respond(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(reply.body)).into_response()
}

/// The tenant of a request: `X-Tenant-Id`, or the session's after login.
fn tenant(s: &Stock, headers: &HeaderMap) -> Result<i64, Reply> {
    s.tenant(headers.get("x-tenant-id").and_then(|v| v.to_str().ok()))
}

/// The whole app: API routes behind the response cache, sessions and the tenant
/// middleware; `/health/cache`, `/health/live`, `/health/ready` and (with
/// `ADMIN_TOKEN`) `/admin/cache/*` beside them; rate limits around everything
/// (`/health/*` exempt).
///
/// The session cookie (`stock_session`) carries the session id only, neither
/// signed nor encrypted: tower-sessions' id is 128 random bits, which a client
/// cannot guess, and larder's store keeps only a hash of it, so neither a forged
/// cookie nor a read of Redis yields a session. Nothing in it needs a key, so no
/// `SESSION_KEY` is read, and every instance and restart reads the same cookies.
pub fn router(stock: Stock) -> Router {
    let mut session_tenant = SessionTenantLayer::new("tenant", "x-tenant-id");
    if stock.settings.tenant_source == TenantSource::Session {
        session_tenant = session_tenant.session_only();
    }
    let api = Router::new()
        .route("/balance", get(balance))
        .route("/sales", post(sale))
        .route("/payments", post(payment))
        .route("/products", get(products).post(create_product))
        .route(
            "/products/{id}",
            get(product).put(update_product).delete(delete_product),
        )
        .route("/categories", get(categories).post(add_category))
        .route("/uom", get(uoms).post(add_uom))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/logout-all", post(logout_all))
        .route("/sessions", get(list_sessions))
        .route("/reports/daily", post(daily_report))
        .route("/jobs/{id}", get(job))
        .layer(CacheLayer::new(stock.responses.clone()))
        // A logged-in session's tenant is the request's X-Tenant-Id (another is a 403).
        .layer(session_tenant)
        .layer(
            SessionManagerLayer::new(RedisSessionStore::new(stock.sessions.clone()))
                .with_name("stock_session")
                .with_secure(stock.settings.cookie_secure)
                .with_expiry(Expiry::OnSessionEnd),
        )
        .layer(SessionContextLayer::new())
        .with_state(stock.clone());
    let probes = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(stock.clone());
    let mut app = api
        .merge(larder::cache::axum::health_routes(stock.handle.clone()))
        .merge(probes);
    if let Some(admin) = stock.admin.clone() {
        app = app.merge(larder::cache::axum::admin_routes(admin));
    }
    if let Some(dashboard) = stock.dashboard.clone() {
        app = app.merge(larder::dashboard::axum::router(dashboard));
    }
    app.layer(RateLimitLayer::new(stock.limits.clone()))
}

async fn live(State(s): State<Stock>) -> Response {
    respond(s.liveness())
}

async fn ready(State(s): State<Stock>) -> Response {
    respond(s.readiness().await)
}

async fn metrics(State(s): State<Stock>) -> Response {
    let (status, body) = s.metrics().await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn balance(State(s): State<Stock>, headers: HeaderMap, req: Request) -> Response {
    let t = match tenant(&s, &headers) {
        Ok(t) => t,
        Err(r) => return respond(r),
    };
    respond(s.balance(t, req.uri().query().unwrap_or("")).await)
}

async fn sale(State(s): State<Stock>, headers: HeaderMap, body: Bytes) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.add_sale(t, &body).await),
        Err(r) => respond(r),
    }
}

async fn payment(State(s): State<Stock>, headers: HeaderMap, body: Bytes) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.add_payment(t, &body).await),
        Err(r) => respond(r),
    }
}

async fn products(State(s): State<Stock>, headers: HeaderMap) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.products(t).await),
        Err(r) => respond(r),
    }
}

async fn product(State(s): State<Stock>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.product(t, &id).await),
        Err(r) => respond(r),
    }
}

async fn create_product(State(s): State<Stock>, headers: HeaderMap, body: Bytes) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.save_product(t, None, &body).await),
        Err(r) => respond(r),
    }
}

async fn update_product(
    State(s): State<Stock>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.save_product(t, Some(&id), &body).await),
        Err(r) => respond(r),
    }
}

async fn delete_product(
    State(s): State<Stock>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.delete_product(t, &id).await),
        Err(r) => respond(r),
    }
}

async fn categories(State(s): State<Stock>, headers: HeaderMap) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.named(t, NamedTable::Categories).await),
        Err(r) => respond(r),
    }
}

async fn add_category(State(s): State<Stock>, headers: HeaderMap, body: Bytes) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.add_named(t, NamedTable::Categories, &body).await),
        Err(r) => respond(r),
    }
}

async fn uoms(State(s): State<Stock>, headers: HeaderMap) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.named(t, NamedTable::Uom).await),
        Err(r) => respond(r),
    }
}

async fn add_uom(State(s): State<Stock>, headers: HeaderMap, body: Bytes) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.add_named(t, NamedTable::Uom, &body).await),
        Err(r) => respond(r),
    }
}

async fn login(
    State(s): State<Stock>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (user, tenant) = match s.check_login(&body).await {
        Ok(found) => found,
        Err(r) => return respond(r),
    };
    let mut who = Identity::new(&user);
    if let Some(ua) = headers.get("user-agent").and_then(|v| v.to_str().ok()) {
        who = who.with_user_agent(ua);
    }
    let stored = async {
        sessions::login(&session, who).await?;
        session.insert("tenant", tenant).await
    };
    match stored.await {
        Ok(()) => respond(Reply {
            status: 200,
            body: json!({ "user": user, "tenant": tenant }),
        }),
        Err(e) => respond(Reply::unavailable("session not stored", &e)),
    }
}

async fn me(session: Session) -> Response {
    match (
        sessions::identity(&session).await,
        session.get::<i64>("tenant").await,
    ) {
        (Some(i), Ok(Some(t))) => Json(json!({ "user": i.user, "tenant": t })).into_response(),
        _ => respond(Reply::error(401, "not logged in")),
    }
}

async fn logout(session: Session) -> Response {
    match sessions::logout(&session).await {
        Ok(()) => Json(json!({ "logged_out": true })).into_response(),
        Err(e) => respond(Reply::unavailable("logout failed", &e)),
    }
}

async fn logout_all(State(s): State<Stock>, session: Session) -> Response {
    let Some(i) = sessions::identity(&session).await else {
        return respond(Reply::error(401, "not logged in"));
    };
    match s.sessions.revoke_all(None, &i.user, None).await {
        Ok(n) => {
            let _ = sessions::logout(&session).await;
            Json(json!({ "revoked": n })).into_response()
        }
        Err(e) => respond(Reply::unavailable("revoke failed", &e)),
    }
}

async fn list_sessions(State(s): State<Stock>, session: Session) -> Response {
    let Some(i) = sessions::identity(&session).await else {
        return respond(Reply::error(401, "not logged in"));
    };
    match s.sessions.list(None, &i.user).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => respond(Reply::unavailable("sessions unavailable", &e)),
    }
}

async fn daily_report(State(s): State<Stock>, headers: HeaderMap) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.enqueue_report(t).await),
        Err(r) => respond(r),
    }
}

async fn job(State(s): State<Stock>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    match tenant(&s, &headers) {
        Ok(t) => respond(s.job(t, &id).await),
        Err(r) => respond(r),
    }
}
