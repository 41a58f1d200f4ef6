//! One session app, built twice (Axum + tower-sessions, Actix + actix-session), and
//! the conformance cases both must pass.

#![allow(dead_code, unreachable_pub)] // each test file uses part of this module; pub for the test crate

use std::time::Duration;

use larder_core::request::FromHeader;
use larder_core::{Config, Handle};
use larder_session::{Degraded, Identity, SessionConfig, SessionRef, Sessions};
use larder_testing::Redis;

/// Short deadlines and a quick breaker, so fault tests run fast.
pub fn handle(url: Option<&str>) -> Handle {
    let mut b = Config::builder()
        .op_timeout(Duration::from_millis(200))
        .breaker_threshold(2)
        .breaker_cooldown(Duration::from_millis(200));
    if let Some(url) = url {
        b = b.redis_url(url);
    }
    Handle::new(b.build().expect("valid config")).expect("handle")
}

/// [`handle`] for a Redis of any topology, configured from its variables.
pub fn handle_on(redis: &larder_testing::Redis) -> Handle {
    let config = larder_core::ConfigBuilder::from_config(
        Config::from_vars(redis.vars()).expect("valid variables"),
    )
    .op_timeout(Duration::from_millis(200))
    .breaker_threshold(2)
    .breaker_cooldown(Duration::from_millis(200))
    .build()
    .expect("valid config");
    Handle::new(config).expect("handle")
}

/// The test apps' settings: a 600 ms rotation grace, a 1,000-byte cap.
pub fn config() -> larder_session::SessionConfigBuilder {
    SessionConfig::builder()
        .rotation_grace(Duration::from_millis(600))
        .max_bytes(1000)
}

pub fn sessions(url: Option<&str>, b: larder_session::SessionConfigBuilder) -> Sessions {
    Sessions::new(handle(url), b.build().expect("valid session config"))
}

/// Sessions on a Redis of any topology.
pub fn sessions_on(redis: &Redis, b: larder_session::SessionConfigBuilder) -> Sessions {
    Sessions::new(handle_on(redis), b.build().expect("valid session config"))
}

/// The session cookie's name in both apps.
pub const COOKIE: &str = "sid";

/// One reply, as a browser would see it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// `Some(value)` when the reply sets the session cookie (`Some("")` removes it).
    pub cookie: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub fn session_cookie(set_cookie: &str) -> Option<String> {
    let first = set_cookie.split(';').next()?;
    let (name, value) = first.split_once('=')?;
    (name.trim() == COOKIE).then(|| value.trim().to_owned())
}

/// A request to one of the apps.
#[derive(Debug, Default, Clone)]
pub struct Req<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub cookie: Option<&'a str>,
    pub tenant: Option<&'a str>,
}

pub fn get(path: &str) -> Req<'_> {
    Req {
        method: "GET",
        path,
        ..Req::default()
    }
}

pub fn post(path: &str) -> Req<'_> {
    Req {
        method: "POST",
        path,
        ..Req::default()
    }
}

impl<'a> Req<'a> {
    pub fn cookie(mut self, c: &'a str) -> Self {
        self.cookie = Some(c);
        self
    }
    pub fn tenant(mut self, t: &'a str) -> Self {
        self.tenant = Some(t);
        self
    }
}

/// What the conformance cases need of an app.
pub trait App {
    async fn send(&self, req: Req<'_>) -> Reply;
    /// The session id a cookie value carries (actix-session encrypts it).
    fn session_id(&self, cookie: &str) -> String;
}

pub fn who(user: &str) -> Identity {
    Identity::new(user)
}

// ---------------------------------------------------------------- Axum

pub mod axum_app {
    use super::*;
    use axum::body::Body;
    use axum::extract::{Query, State};
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use http_body_util::BodyExt;
    use larder_session::tower::{
        self as s, RedisSessionStore, SessionContextLayer, SessionTenantLayer,
    };
    use tower::ServiceExt;
    use tower_sessions::{Session, SessionManagerLayer};

    #[derive(serde::Deserialize)]
    struct Params {
        user: Option<String>,
        bytes: Option<usize>,
    }

    async fn me(session: Session) -> impl IntoResponse {
        match s::identity(&session).await {
            Some(i) => (StatusCode::OK, Json(serde_json::json!({"user": i.user}))).into_response(),
            None => StatusCode::UNAUTHORIZED.into_response(),
        }
    }

    async fn login(session: Session, Query(p): Query<Params>) -> impl IntoResponse {
        let user = p.user.unwrap_or_else(|| "alice".into());
        match s::login(&session, who(&user).with_user_agent("test-agent")).await {
            Ok(()) if user == "tina" => match session.insert("tenant", 7).await {
                Ok(()) => StatusCode::OK,
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Ok(()) => StatusCode::OK,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    async fn logout(session: Session) -> StatusCode {
        match s::logout(&session).await {
            Ok(()) => StatusCode::OK,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    async fn logout_all(State(sessions): State<Sessions>, session: Session) -> impl IntoResponse {
        let Some(i) = s::identity(&session).await else {
            return StatusCode::UNAUTHORIZED.into_response();
        };
        let keep = session.id().map(|id| SessionRef::of_id(&id.to_string()));
        let tenant = larder_session::current_tenant();
        match sessions
            .revoke_all(tenant.as_ref(), &i.user, keep.as_ref())
            .await
        {
            Ok(n) => Json(serde_json::json!({"revoked": n})).into_response(),
            Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }

    async fn list(State(sessions): State<Sessions>, session: Session) -> impl IntoResponse {
        let Some(i) = s::identity(&session).await else {
            return StatusCode::UNAUTHORIZED.into_response();
        };
        let tenant = larder_session::current_tenant();
        match sessions.list(tenant.as_ref(), &i.user).await {
            Ok(list) => Json(list).into_response(),
            Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }

    async fn slow_save(session: Session) -> StatusCode {
        let _ = s::identity(&session).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        match session.insert("late", true).await {
            Ok(()) => StatusCode::OK,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    async fn put(session: Session, Query(p): Query<Params>) -> StatusCode {
        let blob = "x".repeat(p.bytes.unwrap_or(10));
        match session.insert("blob", blob).await {
            Ok(()) => StatusCode::OK,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    async fn incr(session: Session) -> impl IntoResponse {
        let n: u64 = session.get("n").await.ok().flatten().unwrap_or(0) + 1;
        match session.insert("n", n).await {
            Ok(()) => n.to_string().into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }

    async fn peek(session: Session) -> String {
        let n: u64 = session.get("n").await.ok().flatten().unwrap_or(0);
        n.to_string()
    }

    async fn seen_tenant(headers: axum::http::HeaderMap) -> String {
        headers
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned()
    }

    pub fn router(sessions: Sessions) -> Router {
        Router::new()
            .route("/me", get(me))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route("/logout-all", post(logout_all))
            .route("/sessions", get(list))
            .route("/slow-save", post(slow_save))
            .route("/put", post(put))
            .route("/incr", post(incr))
            .route("/peek", get(peek))
            .route("/noop", get(|| async { "ok" }))
            .route(
                "/tenant",
                get(seen_tenant).layer(SessionTenantLayer::new("tenant", "x-tenant-id")),
            )
            .with_state(sessions.clone())
            .layer(
                SessionManagerLayer::new(RedisSessionStore::new(sessions))
                    .with_name(COOKIE)
                    .with_secure(false),
            )
            .layer(SessionContextLayer::new().tenant(FromHeader::new("x-tenant-id")))
    }

    pub struct AxumApp(pub Router);

    impl App for AxumApp {
        fn session_id(&self, cookie: &str) -> String {
            cookie.to_owned()
        }

        async fn send(&self, req: Req<'_>) -> Reply {
            let mut b = Request::builder().method(req.method).uri(req.path);
            if let Some(c) = req.cookie {
                b = b.header("cookie", format!("{COOKIE}={c}"));
            }
            if let Some(t) = req.tenant {
                b = b.header("x-tenant-id", t);
            }
            let res = self
                .0
                .clone()
                .oneshot(b.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = res.status().as_u16();
            let cookie = res
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(session_cookie);
            let content_type = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            Reply {
                status,
                cookie,
                content_type,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        }
    }
}

// ---------------------------------------------------------------- Actix

pub mod actix_app {
    use super::*;
    use actix_session::{Session, SessionMiddleware};
    use actix_web::body::MessageBody;
    use actix_web::cookie::Key;
    use actix_web::dev::{Service, ServiceResponse};
    use actix_web::{test, web, HttpResponse};
    use larder_session::actix::{self as s, RedisSessionStore, SessionContext, SessionTenant};

    async fn seen_tenant(req: actix_web::HttpRequest) -> HttpResponse {
        let t = req
            .headers()
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        HttpResponse::Ok().body(t)
    }

    #[derive(serde::Deserialize)]
    struct Params {
        user: Option<String>,
        bytes: Option<usize>,
    }

    async fn me(session: Session) -> HttpResponse {
        match s::identity(&session) {
            Some(i) => HttpResponse::Ok().json(serde_json::json!({"user": i.user})),
            None => HttpResponse::Unauthorized().finish(),
        }
    }

    async fn login(session: Session, p: web::Query<Params>) -> HttpResponse {
        let user = p.user.clone().unwrap_or_else(|| "alice".into());
        let tenant = if user == "tina" { Some(7) } else { None };
        let stored = s::login(&session, &who(&user).with_user_agent("test-agent"))
            .and_then(|()| tenant.map_or(Ok(()), |t| session.insert("tenant", t)));
        match stored {
            Ok(()) => HttpResponse::Ok().finish(),
            Err(_) => HttpResponse::InternalServerError().finish(),
        }
    }

    async fn logout(session: Session) -> HttpResponse {
        s::logout(&session);
        HttpResponse::Ok().finish()
    }

    async fn logout_all(sessions: web::Data<Sessions>, session: Session) -> HttpResponse {
        let Some(i) = s::identity(&session) else {
            return HttpResponse::Unauthorized().finish();
        };
        let keep = larder_session::current_session();
        let tenant = larder_session::current_tenant();
        match sessions
            .revoke_all(tenant.as_ref(), &i.user, keep.as_ref())
            .await
        {
            Ok(n) => HttpResponse::Ok().json(serde_json::json!({"revoked": n})),
            Err(_) => HttpResponse::ServiceUnavailable().finish(),
        }
    }

    async fn list(sessions: web::Data<Sessions>, session: Session) -> HttpResponse {
        let Some(i) = s::identity(&session) else {
            return HttpResponse::Unauthorized().finish();
        };
        let tenant = larder_session::current_tenant();
        match sessions.list(tenant.as_ref(), &i.user).await {
            Ok(list) => HttpResponse::Ok().json(list),
            Err(_) => HttpResponse::ServiceUnavailable().finish(),
        }
    }

    async fn slow_save(session: Session) -> HttpResponse {
        let _ = s::identity(&session);
        tokio::time::sleep(Duration::from_millis(400)).await;
        match session.insert("late", true) {
            Ok(()) => HttpResponse::Ok().finish(),
            Err(_) => HttpResponse::InternalServerError().finish(),
        }
    }

    async fn put(session: Session, p: web::Query<Params>) -> HttpResponse {
        let blob = "x".repeat(p.bytes.unwrap_or(10));
        match session.insert("blob", blob) {
            Ok(()) => HttpResponse::Ok().finish(),
            Err(_) => HttpResponse::InternalServerError().finish(),
        }
    }

    async fn incr(session: Session) -> HttpResponse {
        let n: u64 = session.get("n").ok().flatten().unwrap_or(0) + 1;
        match session.insert("n", n) {
            Ok(()) => HttpResponse::Ok().body(n.to_string()),
            Err(_) => HttpResponse::InternalServerError().finish(),
        }
    }

    async fn peek(session: Session) -> HttpResponse {
        let n: u64 = session.get("n").ok().flatten().unwrap_or(0);
        HttpResponse::Ok().body(n.to_string())
    }

    fn key() -> Key {
        Key::from(&[7u8; 64])
    }

    /// The app: session routes in a scope wrapped by the session middleware (which
    /// loads eagerly), `/noop` outside it.
    pub async fn service(
        sessions: Sessions,
    ) -> impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    > {
        let key = key();
        let store = RedisSessionStore::new(sessions.clone());
        test::init_service(
            actix_web::App::new()
                .app_data(web::Data::new(sessions))
                .route(
                    "/noop",
                    web::get().to(|| async { HttpResponse::Ok().body("ok") }),
                )
                .service(
                    web::scope("")
                        .route("/me", web::get().to(me))
                        .route("/login", web::post().to(login))
                        .route("/logout", web::post().to(logout))
                        .route("/logout-all", web::post().to(logout_all))
                        .route("/sessions", web::get().to(list))
                        .route("/slow-save", web::post().to(slow_save))
                        .route("/put", web::post().to(put))
                        .route("/incr", web::post().to(incr))
                        .route("/peek", web::get().to(peek))
                        .route("/tenant", web::get().to(seen_tenant))
                        .wrap(SessionTenant::new("tenant", "x-tenant-id"))
                        .wrap(
                            SessionMiddleware::builder(store, key)
                                .cookie_name(COOKIE.into())
                                .cookie_secure(false)
                                .build(),
                        )
                        .wrap(SessionContext::new().tenant(FromHeader::new("x-tenant-id"))),
                ),
        )
        .await
    }

    pub struct ActixApp<S>(pub S);

    impl<S, B> App for ActixApp<S>
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        fn session_id(&self, cookie: &str) -> String {
            let mut jar = actix_web::cookie::CookieJar::new();
            let parsed = actix_web::cookie::Cookie::parse_encoded(format!("{COOKIE}={cookie}"))
                .expect("a cookie")
                .into_owned();
            jar.add_original(parsed);
            jar.private(&key())
                .get(COOKIE)
                .map(|c| c.value().to_owned())
                .expect("a cookie this app issued")
        }

        async fn send(&self, req: Req<'_>) -> Reply {
            let mut r = match req.method {
                "POST" => test::TestRequest::post(),
                _ => test::TestRequest::get(),
            }
            .uri(req.path);
            if let Some(c) = req.cookie {
                r = r.insert_header(("cookie", format!("{COOKIE}={c}")));
            }
            if let Some(t) = req.tenant {
                r = r.insert_header(("x-tenant-id", t));
            }
            let res = match self.0.call(r.to_request()).await {
                Ok(res) => res,
                Err(e) => {
                    // What actix-web sends for a service error.
                    let res = e.error_response();
                    let content_type = res
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let status = res.status().as_u16();
                    let body = actix_web::body::to_bytes(res.into_body())
                        .await
                        .unwrap_or_default();
                    return Reply {
                        status,
                        cookie: None,
                        content_type,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                }
            };
            let status = res.status().as_u16();
            let cookie = res
                .headers()
                .get_all("set-cookie")
                .filter_map(|v| v.to_str().ok())
                .find_map(session_cookie);
            let content_type = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = test::read_body(res).await;
            Reply {
                status,
                cookie,
                content_type,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        }
    }
}

// ---------------------------------------------------------------- cases

async fn login<A: App>(app: &A, user: &str, tenant: Option<&str>) -> String {
    let path = format!("/login?user={user}");
    let mut r = post(&path);
    r.tenant = tenant;
    let reply = app.send(r).await;
    assert_eq!(reply.status, 200, "login: {reply:?}");
    reply
        .cookie
        .filter(|c| !c.is_empty())
        .expect("login sets the session cookie")
}

/// The keys matching `pattern` on every primary (KEYS is fine on a test server).
pub fn keys(redis: &Redis, pattern: &str) -> Vec<String> {
    redis
        .primaries()
        .iter()
        .flat_map(|node| {
            node.command(&["KEYS", pattern])
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with('$'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn all_redis_text(redis: &Redis) -> String {
    let keys = keys(redis, "*");
    let mut text = keys.join("\n");
    for k in &keys {
        let t = redis.command_on_key(k, &["TYPE", k]);
        let dump = match t.trim() {
            "+hash" => redis.command_on_key(k, &["HGETALL", k]),
            "+zset" => redis.command_on_key(k, &["ZRANGE", k, "0", "-1", "WITHSCORES"]),
            _ => redis.command_on_key(k, &["GET", k]),
        };
        text.push_str(&dump);
    }
    text
}

/// login -> cookie -> authenticated request -> logout -> old cookie rejected; Redis
/// holds only hashes of the cookie.
pub async fn login_me_logout<A: App>(app: &A, redis: &Redis) {
    assert_eq!(app.send(get("/me")).await.status, 401);
    let c = login(app, "alice", None).await;
    let me = app.send(get("/me").cookie(&c)).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json()["user"], "alice");

    let text = all_redis_text(redis);
    let id = app.session_id(&c);
    assert!(text.contains(&SessionRef::of_id(&id).to_string()), "{text}");
    assert!(
        !text.contains(&id),
        "a live session id is stored in Redis: {text}"
    );

    let out = app.send(post("/logout").cookie(&c)).await;
    assert_eq!(out.status, 200);
    assert_eq!(out.cookie.as_deref(), Some(""), "logout removes the cookie");
    assert_eq!(app.send(get("/me").cookie(&c)).await.status, 401);
}

/// Two sessions of one user; one revokes the others; the listing shows the live ones.
pub async fn revoke_all_from_another_session<A: App>(app: &A) {
    let a = login(app, "bob", None).await;
    let b = login(app, "bob", None).await;
    let listed = app.send(get("/sessions").cookie(&b)).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let list = listed.json();
    let list = list.as_array().expect("a list");
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(
        list.iter().all(|s| s["user_agent"] == "test-agent"),
        "{list:?}"
    );

    let revoked = app.send(post("/logout-all").cookie(&b)).await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert_eq!(revoked.json()["revoked"], 1);
    assert_eq!(app.send(get("/me").cookie(&a)).await.status, 401);
    assert_eq!(app.send(get("/me").cookie(&b)).await.status, 200);
    let list = app.send(get("/sessions").cookie(&b)).await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:?}");
}

/// A logout racing a slower request that saves the session: it stays logged out.
pub async fn no_resurrection<A: App>(app: &A, sessions: &Sessions, redis: &Redis) {
    let c = login(app, "carol", None).await;
    let (slow, out) = tokio::join!(app.send(post("/slow-save").cookie(&c)), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.send(post("/logout").cookie(&c)).await
    });
    assert_eq!(out.status, 200);
    assert!(
        slow.status == 200,
        "the slow request still answers: {slow:?}"
    );
    let key = sessions.record_key(&app.session_id(&c));
    assert!(
        key.starts_with("larder:session:global:{session}:s:"),
        "{key}"
    );
    assert_eq!(
        redis.command_on_key(&key, &["EXISTS", &key]).trim(),
        ":0",
        "{key} came back"
    );
    assert_eq!(app.send(get("/me").cookie(&c)).await.status, 401);
}

/// Rotation: a new id; the old one reads the pre-rotation state during the grace
/// window (never the logged-in state), keeps none of its writes, then ends.
pub async fn rotation_grace<A: App>(app: &A) {
    let first = app.send(post("/incr")).await;
    assert_eq!(first.body, "1");
    let old = first.cookie.expect("a session cookie");
    let login = app.send(post("/login?user=dave").cookie(&old)).await;
    assert_eq!(login.status, 200);
    let new = login.cookie.expect("rotated cookie");
    assert_ne!(new, old);
    // The data moved to the new id.
    assert_eq!(app.send(get("/peek").cookie(&new)).await.body, "1");
    assert_eq!(app.send(get("/me").cookie(&new)).await.status, 200);
    // The old id still resolves, to the state before the login.
    assert_eq!(app.send(get("/peek").cookie(&old)).await.body, "1");
    assert_eq!(app.send(get("/me").cookie(&old)).await.status, 401);
    // Writes under the old id are not kept.
    let _ = app.send(post("/incr").cookie(&old)).await;
    assert_eq!(app.send(get("/peek").cookie(&old)).await.body, "1");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(app.send(get("/peek").cookie(&old)).await.body, "0");
    assert_eq!(app.send(get("/me").cookie(&new)).await.status, 200);
}

/// Tampered, unknown and malformed cookies (and a corrupt stored entry): a fresh
/// anonymous session, never an error page.
pub async fn bad_cookies_get_a_fresh_session<A: App>(app: &A, sessions: &Sessions, redis: &Redis) {
    let good = login(app, "erin", None).await;
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let unknown = {
        // Same shape as a real cookie, never issued.
        let fresh = app.send(post("/incr")).await.cookie.unwrap();
        let _ = app.send(post("/logout").cookie(&fresh)).await;
        fresh
    };
    for (what, cookie) in [
        ("tampered", tampered.as_str()),
        ("unknown", unknown.as_str()),
        ("malformed", "%%%not-a-cookie%%%"),
        ("empty", ""),
    ] {
        let me = app.send(get("/me").cookie(cookie)).await;
        assert_eq!(me.status, 401, "{what}: {me:?}");
        let incr = app.send(post("/incr").cookie(cookie)).await;
        assert_eq!(incr.status, 200, "{what}: {incr:?}");
        assert_eq!(incr.body, "1", "{what}: a fresh session");
        let issued = incr.cookie.expect("a new session cookie");
        assert_ne!(issued, cookie, "{what}");
    }
    // A corrupt entry in Redis: the same.
    let key = sessions.record_key(&app.session_id(&good));
    assert_eq!(
        redis
            .command_on_key(&key, &["HSET", &key, "d", "\u{1}not json"])
            .trim(),
        ":0"
    );
    assert_eq!(app.send(get("/me").cookie(&good)).await.status, 401);
    let incr = app.send(post("/incr").cookie(&good)).await;
    assert_eq!((incr.status, incr.body.as_str()), (200, "1"));
}

/// An expired session (idle timeout passed): a fresh anonymous session.
pub async fn expired_cookie_gets_a_fresh_session<A: App>(app: &A) {
    let c = login(app, "frank", None).await;
    assert_eq!(app.send(get("/me").cookie(&c)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(app.send(get("/me").cookie(&c)).await.status, 401);
    let incr = app.send(post("/incr").cookie(&c)).await;
    assert_eq!((incr.status, incr.body.as_str()), (200, "1"));
}

/// Over the size cap: a clear error, nothing stored, the old state intact.
pub async fn size_cap<A: App>(app: &A, redis: &Redis) {
    let before = redis.dbsize();
    let big = app.send(post("/put?bytes=5000")).await;
    assert_eq!(big.status, 500, "{big:?}");
    assert!(
        big.body.contains("exceeds the cap of 1000 bytes"),
        "{big:?}"
    );
    assert_eq!(big.content_type.as_deref(), Some("application/json"));
    assert_eq!(redis.dbsize(), before, "nothing stored");

    let c = login(app, "gina", None).await;
    let big = app.send(post("/put?bytes=5000").cookie(&c)).await;
    assert_eq!(big.status, 500);
    assert!(big.body.contains("nothing was stored"), "{big:?}");
    let me = app.send(get("/me").cookie(&c)).await;
    assert_eq!(me.status, 200, "the stored session is intact");
    assert_eq!(
        app.send(post("/put?bytes=100").cookie(&c)).await.status,
        200
    );
}

/// Sessions live in the tenant's keyspace: a cookie presented under another tenant
/// finds nothing.
pub async fn tenant_isolation<A: App>(app: &A, redis: &Redis) {
    let c = login(app, "hank", Some("1")).await;
    let me = app.send(get("/me").cookie(&c).tenant("1")).await;
    assert_eq!(me.status, 200);
    assert_eq!(
        app.send(get("/me").cookie(&c).tenant("2")).await.status,
        401
    );
    assert_eq!(app.send(get("/me").cookie(&c)).await.status, 401);
    let hash = SessionRef::of_id(&app.session_id(&c)).to_string();
    let keys = keys(redis, &format!("*{hash}*"));
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("larder:session:tenant:{1}:session:s:"),
        "{keys:?}"
    );
}

/// A request that never touches the session costs no Redis command, even with a
/// session cookie.
pub async fn untouched_session_costs_no_round_trip<A: App>(app: &A, redis: &Redis) {
    let c = login(app, "ivy", None).await;
    let total = |calls: Vec<u64>| -> u64 { calls.into_iter().sum() };
    let before = total(redis.client_calls(&[]));
    for _ in 0..5 {
        assert_eq!(app.send(get("/noop").cookie(&c)).await.status, 200);
    }
    let after = total(redis.client_calls(&[]));
    assert_eq!(after, before, "untouched requests reached Redis");
    // And one that reads it does (the check above can fail).
    assert_eq!(app.send(get("/me").cookie(&c)).await.status, 200);
    assert!(total(redis.client_calls(&[])) > after);
}

/// Fail-closed: Redis stopped or frozen -> 503 with a clear JSON body, never a hang
/// or an opaque 500; back to normal when Redis returns.
pub async fn fail_closed<A: App>(app: &A, redis: &mut Redis) {
    let c = login(app, "jack", None).await;
    redis.freeze();
    let me = tokio::time::timeout(Duration::from_secs(10), app.send(get("/me").cookie(&c)))
        .await
        .expect("no hang while Redis is frozen");
    assert_eq!(me.status, 503, "{me:?}");
    assert!(me.body.contains("session_store_unavailable"), "{me:?}");
    redis.thaw();
    redis.stop();
    let me = app.send(get("/me").cookie(&c)).await;
    assert_eq!(me.status, 503, "{me:?}");
    let login = app.send(post("/login?user=kim")).await;
    assert_eq!(login.status, 503, "{login:?}");
    // The test server keeps no data over a restart: log in again once it is back.
    redis.restart();
    assert!(
        larder_testing::eventually(50, Duration::from_millis(100), || async {
            let r = app.send(post("/login?user=kim")).await;
            match r.cookie.filter(|_| r.status == 200) {
                Some(c) => app.send(get("/me").cookie(&c)).await.status == 200,
                None => false,
            }
        })
        .await,
        "sessions work again once Redis is back, without a restart of the app"
    );
}

/// In-memory policy: with Redis stopped, login and authenticated requests work.
pub async fn in_memory_fallback<A: App>(app: &A, redis: &mut Redis) {
    redis.stop();
    let c = login(app, "lena", None).await;
    assert_eq!(app.send(get("/me").cookie(&c)).await.status, 200);
    assert_eq!(app.send(post("/logout").cookie(&c)).await.status, 200);
    assert_eq!(app.send(get("/me").cookie(&c)).await.status, 401);
    redis.restart();
}

/// The policies the conformance apps use.
pub fn fail_closed_config() -> larder_session::SessionConfigBuilder {
    config().degraded(Degraded::FailClosed)
}

/// The session's tenant becomes the tenant header; without a session the header
/// passes as sent. (These apps keep sessions in the tenant's keyspace, so a cookie
/// under another tenant's header finds no session at all: anonymous, not a 403. The
/// 403 for a mismatching header, with sessions in the namespace, is exercised by the
/// stock example apps' tests.)
pub async fn session_tenant_header<A: App>(app: &A) {
    assert_eq!(app.send(get("/tenant")).await.body, "none");
    assert_eq!(app.send(get("/tenant").tenant("9")).await.body, "9");
    let c = login(app, "tina", None).await;
    assert_eq!(app.send(get("/tenant").cookie(&c)).await.body, "7");
    assert_eq!(
        app.send(get("/tenant").cookie(&c).tenant("7")).await.body,
        "7"
    );
    let other = app.send(get("/tenant").cookie(&c).tenant("8")).await;
    assert_eq!((other.status, other.body.as_str()), (200, "8"), "{other:?}");
    assert_eq!(
        app.send(get("/me").cookie(&c).tenant("8")).await.status,
        401
    );
    // A session without a tenant field adds nothing.
    let plain = login(app, "ulla", None).await;
    assert_eq!(app.send(get("/tenant").cookie(&plain)).await.body, "none");
}
