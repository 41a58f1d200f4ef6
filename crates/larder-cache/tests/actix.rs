//! The response cache through a real Actix-web service stack, on a real redis-server,
//! a real Redis Cluster and a real Sentinel set.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{test, web, App, HttpRequest, HttpResponse};
use common::{conformance, handle, handle_on, with_l1, Origin, T1, T2};
use larder_cache::actix::{admin_scope, health_resource, CacheMiddleware};
use larder_cache::admin::{Admin, BearerToken};
use larder_cache::{Cache, CacheRoute, InvalidateRoute, ResponseCache};
use larder_core::Handle;
use larder_testing::{on_every_topology, Redis};

async fn balance(req: HttpRequest, origin: web::Data<Origin>) -> HttpResponse {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let tenant = req
        .headers()
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!(
            "{{\"tenant\":\"{tenant}\",\"q\":\"{}\"}}",
            req.query_string()
        ))
}

async fn short(origin: web::Data<Origin>) -> HttpResponse {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    if origin.failing.load(Ordering::SeqCst) {
        return HttpResponse::InternalServerError().body("down");
    }
    HttpResponse::Ok().body(format!("v{}", origin.calls()))
}

async fn product(path: web::Path<u32>, origin: web::Data<Origin>) -> HttpResponse {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    match path.into_inner() {
        999 => HttpResponse::NotFound().body("no such product"),
        id => HttpResponse::Ok().body(format!("product {id}")),
    }
}

async fn cookie(origin: web::Data<Origin>) -> HttpResponse {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok()
        .insert_header(("set-cookie", "sid=1"))
        .body("cookie")
}

macro_rules! app {
    ($handle:expr, $origin:expr, $stale:expr) => {{
        let handle: Handle = $handle;
        let mut cache = Cache::new(handle.clone());
        if $stale {
            let mut s = cache.settings().clone();
            s.stale_window = Duration::from_secs(60);
            cache = cache.with_settings(s);
        }
        let responses = ResponseCache::new(cache.clone())
            .route(
                CacheRoute::new("/balance", "balance")
                    .unwrap()
                    .query(&["from", "to", "a", "b", "x", "burst", "after", "new"]),
            )
            .route(
                CacheRoute::new("/short", "balance")
                    .unwrap()
                    .ttl(Duration::from_millis(300)),
            )
            .route(CacheRoute::new("/products/{id}", "products").unwrap())
            .route(CacheRoute::new("/cookie", "misc").unwrap())
            .invalidate(InvalidateRoute::new("POST", "/sales", &["balance"]).unwrap())
            .stale_while_revalidate($stale);
        test::init_service(
            App::new()
                .app_data(web::Data::new($origin.clone()))
                .service(health_resource(handle))
                .service(admin_scope(Admin::new(cache, BearerToken::new("t0ken"))))
                .service(
                    web::scope("")
                        .wrap(CacheMiddleware::new(responses))
                        .route("/balance", web::get().to(balance))
                        .route("/short", web::get().to(short))
                        .route("/products/{id}", web::get().to(product))
                        .route("/cookie", web::get().to(cookie))
                        .route(
                            "/sales",
                            web::post().to(|| async { HttpResponse::Created().finish() }),
                        ),
                ),
        )
        .await
    }};
}

struct Reply {
    status: StatusCode,
    x_cache: String,
    etag: Option<String>,
    age: Option<String>,
    body: Vec<u8>,
}

async fn send<S, B>(app: &S, method: &str, uri: &str, headers: &[(&str, &str)]) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let mut req = test::TestRequest::default()
        .method(method.parse().unwrap())
        .uri(uri);
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let res = test::call_service(app, req.to_request()).await;
    let get = |n: &str| res.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    let (status, x_cache, etag, age) = (
        res.status(),
        get("x-cache").unwrap_or_default(),
        get("etag"),
        get("age"),
    );
    let body = test::read_body(res).await.to_vec();
    Reply {
        status,
        x_cache,
        etag,
        age,
        body,
    }
}

on_every_topology!(
    #[actix_web::test]
    async fn miss_then_hit_304_and_head(redis: &Redis) {
        let origin = Origin::default();
        let app = app!(handle_on(redis), origin, false);
        let first = send(&app, "GET", "/balance?b=2&a=1", &[T1]).await;
        assert_eq!(
            (first.status, first.x_cache.as_str()),
            (StatusCode::OK, "MISS")
        );
        let etag = first.etag.clone().unwrap();
        let second = send(&app, "GET", "/balance?a=1&b=2", &[T1]).await;
        assert_eq!(second.x_cache, "HIT");
        assert_eq!(second.body, first.body);
        assert!(second.age.is_some());
        let nm = send(
            &app,
            "GET",
            "/balance?a=1&b=2",
            &[T1, ("if-none-match", &etag)],
        )
        .await;
        assert_eq!(nm.status, StatusCode::NOT_MODIFIED);
        assert!(nm.body.is_empty());
        let head = send(&app, "HEAD", "/balance?a=1&b=2", &[T1]).await;
        assert_eq!(
            (head.status, head.x_cache.as_str()),
            (StatusCode::OK, "HIT")
        );
        assert!(head.body.is_empty());
        assert_eq!(origin.calls(), 1);
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn tenants_isolated_writes_invalidate_cookies_never_stored(redis: &Redis) {
        let origin = Origin::default();
        let app = app!(handle_on(redis), origin, false);
        let a = send(&app, "GET", "/balance", &[T1]).await;
        let b = send(&app, "GET", "/balance", &[T2]).await;
        assert_ne!(a.body, b.body);
        assert_eq!(
            send(&app, "GET", "/balance", &[("x-tenant-id", "1:*")])
                .await
                .x_cache,
            "BYPASS"
        );
        assert_eq!(send(&app, "GET", "/balance", &[]).await.x_cache, "BYPASS");
        assert_eq!(
            send(&app, "POST", "/sales", &[T1]).await.status,
            StatusCode::CREATED
        );
        assert_eq!(send(&app, "GET", "/balance", &[T1]).await.x_cache, "MISS");
        assert_eq!(send(&app, "GET", "/balance", &[T2]).await.x_cache, "HIT");
        for _ in 0..2 {
            assert_eq!(send(&app, "GET", "/cookie", &[T1]).await.x_cache, "MISS");
        }
        let nf = send(&app, "GET", "/products/999", &[T1]).await;
        assert_eq!(
            (nf.status, nf.x_cache.as_str()),
            (StatusCode::NOT_FOUND, "MISS")
        );
        let nf = send(&app, "GET", "/products/999", &[T1]).await;
        assert_eq!(
            (nf.status, nf.x_cache.as_str()),
            (StatusCode::NOT_FOUND, "HIT")
        );
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn redis_stopped_or_frozen_never_breaks_a_route_and_recovers(redis: &mut Redis) {
        let origin = Origin::default();
        let app = app!(handle_on(redis), origin, false);
        for fault in ["stop", "freeze"] {
            if fault == "stop" {
                redis.stop();
            } else {
                redis.restart();
                redis.freeze();
            }
            for _ in 0..10 {
                let r = send(&app, "GET", "/balance", &[T1]).await;
                assert_eq!(
                    (r.status, r.x_cache.as_str()),
                    (StatusCode::OK, "MISS"),
                    "{fault}"
                );
            }
            let health = send(&app, "GET", "/health/cache", &[]).await;
            assert_eq!(health.status, StatusCode::OK);
            let json: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
            assert_eq!(
                (json["status"].as_str(), json["cache"].as_str()),
                (Some("degraded"), Some("unavailable"))
            );
        }
        redis.thaw();
        let mut hit = false;
        for _ in 0..100 {
            if send(&app, "GET", "/balance?after=1", &[T1]).await.x_cache == "HIT" {
                hit = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(hit, "HITs return after Redis is back, same app");
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn stale_while_revalidate_and_stale_if_error(redis: &Redis) {
        let origin = Origin::default();
        let app = app!(handle_on(redis), origin, true);
        let first = send(&app, "GET", "/short", &[T1]).await;
        assert_eq!(first.x_cache, "MISS");
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The first request after expiry refreshes in the foreground; the others,
        // concurrent with it, get the stale copy without waiting.
        let replies =
            futures_util::future::join_all((0..5).map(|_| send(&app, "GET", "/short", &[T1])))
                .await;
        let refreshed: Vec<_> = replies.iter().filter(|r| r.x_cache == "MISS").collect();
        assert_eq!(refreshed.len(), 1);
        assert_eq!(refreshed[0].body, b"v2");
        assert!(replies
            .iter()
            .filter(|r| r.x_cache != "MISS")
            .all(|r| r.x_cache == "STALE" && r.body == first.body));
        assert_eq!(send(&app, "GET", "/short", &[T1]).await.x_cache, "HIT");
        assert_eq!(origin.calls(), 2);
        origin.failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = send(&app, "GET", "/short", &[T1, ("cache-control", "no-cache")]).await;
        assert_eq!(
            (r.status, r.x_cache.as_str(), r.body.as_slice()),
            (StatusCode::OK, "STALE", &b"v2"[..])
        );
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn admin_needs_the_token(redis: &Redis) {
        let origin = Origin::default();
        let app = app!(handle_on(redis), origin, false);
        send(&app, "GET", "/balance", &[T1]).await;
        assert_eq!(
            send(&app, "GET", "/admin/cache/stats", &[]).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(
                &app,
                "POST",
                "/admin/cache/clear",
                &[("authorization", "Bearer nope")]
            )
            .await
            .status,
            StatusCode::UNAUTHORIZED
        );
        let auth = ("authorization", "Bearer t0ken");
        let stats = send(&app, "GET", "/admin/cache/stats", &[auth]).await;
        assert_eq!(stats.status, StatusCode::OK);
        let r = send(
            &app,
            "POST",
            "/admin/cache/invalidate-module/1/balance",
            &[auth],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(send(&app, "GET", "/balance", &[T1]).await.x_cache, "MISS");
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn in_process_hits_are_answered_in_call_without_the_app(redis: &Redis) {
        use actix_web::dev::{fn_service, ServiceRequest, Transform};
        use larder_core::future::MaybeReady;
        let l1 = with_l1(Cache::new(handle_on(redis)));
        // The L1 tier in front of Redis, and the in-process store when there is no Redis.
        for cache in [l1, Cache::new(handle(None))] {
            let responses = ResponseCache::new(cache.clone()).route(
                CacheRoute::new("/balance", "balance")
                    .unwrap()
                    .query(&["from", "to", "a", "b", "x", "burst", "after", "new"]),
            );
            let calls = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&calls);
            let app = fn_service(move |req: ServiceRequest| {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Ok(req.into_response(HttpResponse::Ok().body(format!("balance #{n}")))) }
            });
            let svc = CacheMiddleware::new(responses)
                .new_transform(app)
                .await
                .unwrap();
            let request = |extra: Option<(&str, &str)>| {
                let mut req = test::TestRequest::get().uri("/balance").insert_header(T1);
                if let Some(header) = extra {
                    req = req.insert_header(header);
                }
                req.to_srv_request()
            };
            let read = |res: ServiceResponse<_>| async move {
                let x_cache = res
                    .headers()
                    .get("x-cache")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                (x_cache, test::read_body(res).await)
            };
            let miss = svc.call(request(None));
            assert!(matches!(miss, MaybeReady::Running(_)));
            assert_eq!(
                read(miss.await.unwrap()).await,
                ("MISS".to_owned(), "balance #1".into())
            );
            let hits_before = cache.stats().await.hits;
            let hit = svc.call(request(None));
            assert!(
                matches!(hit, MaybeReady::Ready(Some(_))),
                "a hit on an in-process tier is answered in call"
            );
            assert_eq!(
                read(hit.await.unwrap()).await,
                ("HIT".to_owned(), "balance #1".into())
            );
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(
                cache.stats().await.hits,
                hits_before + 1,
                "the hit is counted"
            );
            // A revalidation takes the full path and calls the app.
            let again = svc.call(request(Some(("cache-control", "no-cache"))));
            assert!(matches!(again, MaybeReady::Running(_)));
            let (x_cache, body) = read(again.await.unwrap()).await;
            assert_eq!((x_cache.as_str(), &body[..]), ("MISS", &b"balance #2"[..]));
        }
    }
);

/// `/report` answers by the request's `Accept-Encoding` and says so (`Vary`), as a
/// compression middleware inside the cache makes it.
async fn report(req: HttpRequest, origin: web::Data<Origin>) -> HttpResponse {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    let gzip = req
        .headers()
        .get("accept-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    HttpResponse::Ok()
        .insert_header(("vary", "Accept-Encoding"))
        .body(if gzip { "gzip bytes" } else { "plain text" })
}

/// `/split` is marked `private` on the second of two `Cache-Control` lines.
async fn split(origin: web::Data<Origin>) -> HttpResponse {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok()
        .append_header(("cache-control", "max-age=60"))
        .append_header(("cache-control", "private"))
        .body("mine")
}

/// `/versioned` honours `If-None-Match` itself (304 for its ETag `"v1"`).
async fn versioned(req: HttpRequest, origin: web::Data<Origin>) -> HttpResponse {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    let mut res = if req
        .headers()
        .get("if-none-match")
        .is_some_and(|v| v.as_bytes() == b"\"v1\"")
    {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header(("etag", "\"v1\"")).body("version one")
}

macro_rules! negotiating_app {
    ($handle:expr, $origin:expr, $vary:expr) => {{
        let vary: &[&str] = $vary;
        let responses = vary.iter().fold(
            ResponseCache::new(Cache::new($handle))
                .route(CacheRoute::new("/report", "reports").unwrap())
                .route(CacheRoute::new("/split", "reports").unwrap())
                .route(CacheRoute::new("/versioned", "reports").unwrap()),
            |responses, header| responses.vary(header),
        );
        test::init_service(
            App::new()
                .app_data(web::Data::new($origin.clone()))
                .service(
                    web::scope("")
                        .wrap(CacheMiddleware::new(responses))
                        .route("/report", web::get().to(report))
                        .route("/split", web::get().to(split))
                        .route("/versioned", web::get().to(versioned)),
                ),
        )
        .await
    }};
}

on_every_topology!(
    #[actix_web::test]
    async fn a_response_is_stored_only_when_the_key_holds_what_it_varies_on(redis: &Redis) {
        let origin = Origin::default();
        let gzip = ("accept-encoding", "gzip");
        // Accept-Encoding is not part of the key: nothing is stored, and no client gets
        // another client's encoding.
        let app = negotiating_app!(handle_on(redis), origin, &[]);
        for (headers, body) in [
            (&[T1, gzip][..], "gzip bytes"),
            (&[T1][..], "plain text"),
            (&[T1, gzip][..], "gzip bytes"),
        ] {
            let r = send(&app, "GET", "/report", headers).await;
            assert_eq!(
                (r.x_cache.as_str(), r.body.as_slice()),
                ("MISS", body.as_bytes())
            );
        }
        assert_eq!(origin.calls(), 3);
        // `private` on a second Cache-Control line counts.
        for _ in 0..2 {
            let r = send(&app, "GET", "/split", &[T1]).await;
            assert_eq!(
                (r.x_cache.as_str(), r.body.as_slice()),
                ("MISS", &b"mine"[..])
            );
        }
        assert_eq!(origin.calls(), 5);

        // With Accept-Encoding in the key, each encoding has its entry.
        let app = negotiating_app!(handle_on(redis), origin, &["Accept-Encoding"]);
        for (headers, x_cache, body) in [
            (&[T2, gzip][..], "MISS", "gzip bytes"),
            (&[T2][..], "MISS", "plain text"),
            (&[T2, gzip][..], "HIT", "gzip bytes"),
            (&[T2][..], "HIT", "plain text"),
        ] {
            let r = send(&app, "GET", "/report", headers).await;
            assert_eq!(
                (r.x_cache.as_str(), r.body.as_slice()),
                (x_cache, body.as_bytes())
            );
        }
        assert_eq!(origin.calls(), 7);
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn a_miss_asks_the_origin_unconditionally_and_answers_if_none_match_itself(
        redis: &Redis,
    ) {
        let origin = Origin::default();
        let app = negotiating_app!(handle_on(redis), origin, &[]);
        let v1 = ("if-none-match", "\"v1\"");
        // A revalidating client on an empty cache: the origin gets the request without
        // its validator, so its full response is stored, and the client gets its 304.
        let r = send(&app, "GET", "/versioned", &[T1, v1]).await;
        assert_eq!(
            (r.status, r.x_cache.as_str()),
            (StatusCode::NOT_MODIFIED, "MISS")
        );
        assert_eq!(r.etag.as_deref(), Some("\"v1\""));
        assert!(r.body.is_empty());
        let r = send(&app, "GET", "/versioned", &[T1]).await;
        assert_eq!((r.status, r.x_cache.as_str()), (StatusCode::OK, "HIT"));
        assert_eq!(r.body, b"version one");
        let r = send(&app, "GET", "/versioned", &[T1, v1]).await;
        assert_eq!(
            (r.status, r.x_cache.as_str()),
            (StatusCode::NOT_MODIFIED, "HIT")
        );
        assert_eq!(origin.calls(), 1);
        // A validator that does not match gets the full response, stored as well.
        let old = ("if-none-match", "\"v0\"");
        let r = send(&app, "GET", "/versioned", &[T2, old]).await;
        assert_eq!((r.status, r.x_cache.as_str()), (StatusCode::OK, "MISS"));
        assert_eq!(r.body, b"version one");
        let r = send(&app, "GET", "/versioned", &[T2]).await;
        assert_eq!((r.status, r.x_cache.as_str()), (StatusCode::OK, "HIT"));
        assert_eq!(origin.calls(), 2);
    }
);

// When the app fails with an error (not a response: an inner middleware's `Err`)
// and a stale copy is within its window, the middleware answers with the copy, as
// the Tower layer does.
on_every_topology!(
    #[actix_web::test]
    async fn an_app_error_is_answered_with_the_stale_copy(redis: &Redis) {
        use actix_web::dev::Service as _;
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;

        let handle = handle_on(redis);
        let mut cache = Cache::new(handle);
        let mut settings = cache.settings().clone();
        settings.stale_window = Duration::from_secs(60);
        cache = cache.with_settings(settings);
        let responses = ResponseCache::new(cache)
            .route(
                CacheRoute::new("/short", "balance")
                    .unwrap()
                    .ttl(Duration::from_millis(300)),
            )
            .stale_while_revalidate(true);
        let failing = Arc::new(AtomicBool::new(false));
        let fail = Arc::clone(&failing);
        let app = test::init_service(
            App::new().service(
                web::scope("")
                    // Inside the cache (the last `wrap` is the outermost).
                    .wrap_fn(move |req, srv| {
                        use futures_util::future::{ready, Either};
                        if fail.load(Ordering::SeqCst) {
                            Either::Left(ready(Err(actix_web::error::ErrorServiceUnavailable(
                                "down",
                            ))))
                        } else {
                            Either::Right(srv.call(req))
                        }
                    })
                    .wrap(CacheMiddleware::new(responses))
                    .route("/short", web::get().to(|| async { "v1" })),
            ),
        )
        .await;
        let first = send(&app, "GET", "/short", &[T1]).await;
        assert_eq!(
            (first.x_cache.as_str(), first.body.as_slice()),
            ("MISS", &b"v1"[..])
        );
        failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The app's error reaches actix with the stale copy as its response, which is
        // what actix sends.
        let req = test::TestRequest::get()
            .uri("/short")
            .insert_header(T1)
            .insert_header(("cache-control", "no-cache"))
            .to_request();
        let res = match app.call(req).await {
            Ok(res) => res.into_parts().1.map_into_boxed_body(),
            Err(e) => e.error_response(),
        };
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers().get("x-cache").and_then(|v| v.to_str().ok()),
            Some("STALE")
        );
        let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        assert_eq!(&body[..], b"v1");
    }
);

// ---- The conformance scenarios (tests/common/conformance.rs) on the middleware ----

struct Conformance<S>(S);

impl<S, B> conformance::Client for Conformance<S>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    async fn send(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> conformance::Got {
        let r = send(&self.0, method, uri, headers).await;
        conformance::Got {
            status: r.status.as_u16(),
            x_cache: r.x_cache,
            etag: r.etag,
            body: r.body,
        }
    }
}

/// The conformance app (see `tests/common/conformance.rs`) on `redis`.
async fn conformance_app(
    redis: Option<&Redis>,
    origin: &Origin,
) -> Conformance<
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
> {
    fn streamed(chunks: usize, size: usize) -> HttpResponse {
        let chunk = bytes::Bytes::from(vec![b'x'; size]);
        HttpResponse::Ok().streaming(futures_util::stream::iter(
            (0..chunks).map(move |_| Ok::<_, actix_web::Error>(chunk.clone())),
        ))
    }
    let handle = redis.map_or_else(|| handle(None), handle_on);
    let responses = conformance::responses(&handle);
    let failing = Arc::clone(&origin.failing);
    let short = move || {
        let failing = failing.load(Ordering::SeqCst);
        async move {
            if failing {
                HttpResponse::InternalServerError().body("down")
            } else {
                HttpResponse::Ok().body("v1")
            }
        }
    };
    let calls = Arc::clone(&origin.calls);
    Conformance(
        test::init_service(
            App::new().service(health_resource(handle)).service(
                web::scope("")
                    .wrap(CacheMiddleware::new(responses))
                    .route("/small", web::get().to(|| async { streamed(3, 100) }))
                    .route("/big", web::get().to(|| async { streamed(10, 500) }))
                    .route("/short", web::get().to(short))
                    .route(
                        "/whoami",
                        web::get().to(move |req: HttpRequest| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            async move {
                                req.headers()
                                    .get("x-tenant-id")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            }
                        }),
                    )
                    .route(
                        "/sales",
                        web::post().to(|| async { HttpResponse::Created().finish() }),
                    ),
            ),
        )
        .await,
    )
}

on_every_topology!(
    #[actix_web::test]
    async fn conformance_streamed_bodies_within_the_cap_are_stored(redis: &Redis) {
        let origin = Origin::default();
        let app = conformance_app(Some(redis), &origin).await;
        conformance::streamed_bodies_within_the_cap_are_stored(&app).await;
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn conformance_streamed_bodies_over_the_cap_pass_whole(redis: &Redis) {
        let origin = Origin::default();
        let app = conformance_app(Some(redis), &origin).await;
        conformance::streamed_bodies_over_the_cap_pass_whole(&app).await;
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn conformance_stale_copies_stand_in_for_a_failing_origin(redis: &Redis) {
        let origin = Origin::default();
        let app = conformance_app(Some(redis), &origin).await;
        conformance::stale_copies_stand_in_for_a_failing_origin(&app, &origin).await;
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn conformance_tenants_are_apart_and_writes_invalidate_their_own(redis: &Redis) {
        let origin = Origin::default();
        let app = conformance_app(Some(redis), &origin).await;
        conformance::tenants_are_apart_and_writes_invalidate_their_own(&app).await;
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn conformance_concurrent_misses_reach_the_origin_once(redis: &Redis) {
        let origin = Origin::default();
        let app = conformance_app(Some(redis), &origin).await;
        conformance::concurrent_misses_reach_the_origin_once(&app, &origin).await;
    }
);

#[actix_web::test]
async fn conformance_without_redis_the_cache_runs_in_process() {
    let app = conformance_app(None, &Origin::default()).await;
    conformance::without_redis_the_cache_runs_in_process(&app).await;
}
