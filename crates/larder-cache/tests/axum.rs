//! The response cache through a real Axum router, on a real redis-server,
//! a real Redis Cluster and a real Sentinel set.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use common::{conformance, handle, handle_on, with_l1, Origin, T1, T2};
use http_body_util::BodyExt;
use larder_cache::admin::{Admin, BearerToken};
use larder_cache::tower::CacheLayer;
use larder_cache::{Cache, CacheRoute, InvalidateRoute, ResponseCache};
use larder_core::Handle;
use larder_testing::{on_every_topology, Redis};
use tower::{Service, ServiceExt};

fn app(handle: Handle, origin: &Origin, stale: bool) -> Router {
    let mut cache = Cache::new(handle.clone());
    if stale {
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
        .route(CacheRoute::new("/private", "misc").unwrap())
        .route(CacheRoute::new("/cookie", "misc").unwrap())
        .route(CacheRoute::new("/big", "misc").unwrap())
        .invalidate(InvalidateRoute::new("POST", "/sales", &["balance", "products"]).unwrap())
        .max_body(64 * 1024)
        .stale_while_revalidate(stale);
    let o = origin.clone();
    let count = move || {
        o.calls.fetch_add(1, Ordering::SeqCst);
    };
    let (c1, c2, c3, c4, c5, c6) = (
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count,
    );
    let failing = origin.failing.clone();
    Router::new()
        .route(
            "/balance",
            get(
                move |q: Query<Vec<(String, String)>>, headers: axum::http::HeaderMap| async move {
                    c1();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let tenant = headers
                        .get("x-tenant-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    axum::Json(serde_json::json!({ "tenant": tenant, "query": q.0.len() }))
                },
            ),
        )
        .route(
            "/short",
            get(move || async move {
                c2();
                if failing.load(Ordering::SeqCst) {
                    (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response()
                } else {
                    format!(
                        "v{}",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_nanos()
                    )
                    .into_response()
                }
            }),
        )
        .route(
            "/products/{id}",
            get(move |Path(id): Path<u32>| async move {
                c3();
                if id == 999 {
                    (StatusCode::NOT_FOUND, "no such product").into_response()
                } else {
                    format!("product {id}").into_response()
                }
            }),
        )
        .route(
            "/private",
            get(move || async move {
                c4();
                ([("cache-control", "private, max-age=60")], "mine").into_response()
            }),
        )
        .route(
            "/cookie",
            get(move || async move {
                c5();
                ([("set-cookie", "sid=1")], "cookie").into_response()
            }),
        )
        .route(
            "/big",
            get(move || async move {
                c6();
                let body = Body::from_stream(futures_stream(200));
                body.into_response()
            }),
        )
        .route("/sales", post(|| async { StatusCode::CREATED }))
        .layer(CacheLayer::new(responses))
        .merge(larder_cache::axum::health_routes(handle))
        .merge(larder_cache::axum::admin_routes(Admin::new(
            cache,
            BearerToken::new("t0ken"),
        )))
}

/// 200 chunks of 1 KiB, streamed without a Content-Length.
fn futures_stream(
    n: usize,
) -> impl futures_core::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    struct Chunks(usize);
    impl futures_core::Stream for Chunks {
        type Item = Result<bytes::Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.0 == 0 {
                return std::task::Poll::Ready(None);
            }
            self.0 -= 1;
            std::task::Poll::Ready(Some(Ok(bytes::Bytes::from(vec![b'x'; 1024]))))
        }
    }
    Chunks(n)
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .map_or("", |v| v.to_str().unwrap())
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn send(app: &Router, method: &str, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes().to_vec(),
    }
}

on_every_topology!(
    async fn miss_then_hit_with_age_etag_and_304(redis: &Redis) {
        let origin = Origin::default();
        let app = app(handle_on(redis), &origin, false);
        let first = send(&app, "GET", "/balance?to=2&from=1", &[T1]).await;
        assert_eq!((first.status, first.x_cache()), (StatusCode::OK, "MISS"));
        let etag = first.header("etag").unwrap().to_owned();
        let second = send(&app, "GET", "/balance?from=1&to=2", &[T1]).await;
        assert_eq!(second.x_cache(), "HIT");
        assert_eq!(second.body, first.body);
        assert_eq!(second.header("content-type"), Some("application/json"));
        assert!(second.header("age").is_some());
        assert_eq!(second.header("etag"), Some(etag.as_str()));
        assert_eq!(origin.calls(), 1);

        let not_modified = send(
            &app,
            "GET",
            "/balance?from=1&to=2",
            &[T1, ("if-none-match", &etag)],
        )
        .await;
        assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
        assert!(not_modified.body.is_empty());
        let head = send(&app, "HEAD", "/balance?from=1&to=2", &[T1]).await;
        assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "HIT"));
        assert!(head.body.is_empty());
        assert_eq!(origin.calls(), 1);
        // The entry is readable in redis-cli, under the tenant's keys.
        let keys = redis.command_on_key(
            "{1}",
            &[
                "SCAN",
                "0",
                "MATCH",
                "stock:cache:tenant:{1}:balance:*",
                "COUNT",
                "100",
            ],
        );
        assert!(keys.contains("GET:/balance?from=1&to=2"), "{keys}");
    }
);

on_every_topology!(
    async fn tenants_are_isolated_and_tenantless_requests_bypass(redis: &Redis) {
        let origin = Origin::default();
        let app = app(handle_on(redis), &origin, false);
        let a = send(&app, "GET", "/balance", &[T1]).await;
        let b = send(&app, "GET", "/balance", &[T2]).await;
        assert_eq!(b.x_cache(), "MISS");
        assert_ne!(a.body, b.body);
        assert!(String::from_utf8_lossy(&b.body).contains("\"tenant\":\"2\""));
        for hostile in ["", "1:*", "{1}", "1 OR 2", "a]b", "1\t2"] {
            let r = send(&app, "GET", "/balance", &[("x-tenant-id", hostile)]).await;
            assert_eq!(
                (r.status, r.x_cache()),
                (StatusCode::OK, "BYPASS"),
                "{hostile:?}"
            );
        }
        let r = send(&app, "GET", "/balance", &[]).await;
        assert_eq!(r.x_cache(), "BYPASS");
        // An odd but valid id is a tenant of its own, apart from "2".
        let odd = send(&app, "GET", "/balance", &[("x-tenant-id", "../2")]).await;
        assert_eq!(odd.x_cache(), "MISS");
        assert!(String::from_utf8_lossy(&odd.body).contains("\"tenant\":\"../2\""));
        assert_eq!(origin.calls(), 2 + 6 + 1 + 1);
    }
);

on_every_topology!(
    async fn http_rules_decide_what_is_stored(redis: &Redis) {
        let origin = Origin::default();
        let app = app(handle_on(redis), &origin, false);
        // Authorization bypasses unless the route opts in.
        for _ in 0..2 {
            assert_eq!(
                send(
                    &app,
                    "GET",
                    "/balance",
                    &[T1, ("authorization", "Bearer x")]
                )
                .await
                .x_cache(),
                "BYPASS"
            );
        }
        assert_eq!(origin.calls(), 2);
        // no-store bypasses; no-cache revalidates and refills.
        assert_eq!(
            send(
                &app,
                "GET",
                "/balance",
                &[T1, ("cache-control", "no-store")]
            )
            .await
            .x_cache(),
            "BYPASS"
        );
        assert_eq!(send(&app, "GET", "/balance", &[T1]).await.x_cache(), "MISS");
        assert_eq!(
            send(
                &app,
                "GET",
                "/balance",
                &[T1, ("cache-control", "no-cache")]
            )
            .await
            .x_cache(),
            "MISS"
        );
        assert_eq!(send(&app, "GET", "/balance", &[T1]).await.x_cache(), "HIT");
        assert_eq!(origin.calls(), 5);
        // private and Set-Cookie responses are never stored.
        for path in ["/private", "/cookie"] {
            for _ in 0..2 {
                assert_eq!(
                    send(&app, "GET", path, &[T1]).await.x_cache(),
                    "MISS",
                    "{path}"
                );
            }
        }
        assert_eq!(origin.calls(), 9);
        // A 404 is cached for the negative TTL.
        let missing = send(&app, "GET", "/products/999", &[T1]).await;
        assert_eq!(
            (missing.status, missing.x_cache()),
            (StatusCode::NOT_FOUND, "MISS")
        );
        let again = send(&app, "GET", "/products/999", &[T1]).await;
        assert_eq!(
            (again.status, again.x_cache()),
            (StatusCode::NOT_FOUND, "HIT")
        );
        assert_eq!(origin.calls(), 10);
    }
);

on_every_topology!(
    async fn bodies_over_the_limit_stream_through_unstored(redis: &Redis) {
        let origin = Origin::default();
        let app = app(handle_on(redis), &origin, false);
        for _ in 0..2 {
            let r = send(&app, "GET", "/big", &[T1]).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.body.len(), 200 * 1024);
            assert!(r.body.iter().all(|&b| b == b'x'));
        }
        assert_eq!(origin.calls(), 2);
    }
);

on_every_topology!(
    async fn a_successful_write_invalidates_the_modules_it_names(redis: &Redis) {
        let origin = Origin::default();
        let app = app(handle_on(redis), &origin, false);
        send(&app, "GET", "/balance", &[T1]).await;
        send(&app, "GET", "/balance", &[T2]).await;
        assert_eq!(send(&app, "GET", "/balance", &[T1]).await.x_cache(), "HIT");
        let sale = send(&app, "POST", "/sales", &[T1]).await;
        assert_eq!(sale.status, StatusCode::CREATED);
        assert_eq!(send(&app, "GET", "/balance", &[T1]).await.x_cache(), "MISS");
        assert_eq!(
            send(&app, "GET", "/balance", &[T2]).await.x_cache(),
            "HIT",
            "other tenant untouched"
        );
    }
);

on_every_topology!(
    async fn redis_stopped_or_frozen_never_breaks_a_route(redis: &mut Redis) {
        let origin = Origin::default();
        let handle = handle_on(redis);
        let app = app(handle.clone(), &origin, false);
        send(&app, "GET", "/balance", &[T1]).await;
        for fault in ["stop", "freeze"] {
            if fault == "stop" {
                redis.stop();
            } else {
                redis.restart();
                redis.freeze();
            }
            for _ in 0..10 {
                let r = send(&app, "GET", "/balance", &[T1]).await;
                assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "MISS"), "{fault}");
                assert!(String::from_utf8_lossy(&r.body).contains("\"tenant\":\"1\""));
            }
            let health = send(&app, "GET", "/health/cache", &[]).await;
            assert_eq!(health.status, StatusCode::OK);
            let json: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
            assert_eq!(json["status"], "degraded", "{fault}");
            assert_eq!(json["cache"], "unavailable");
            // Single flight still holds with Redis down. A call to Redis first (it
            // fails) puts the burst inside the breaker's cool-down, so every request
            // of it is refused at once and served in one flight. (Past the cool-down,
            // one request may probe Redis and wait out the deadline; the burst's
            // flight can be over by then, and that request calls the origin anew.)
            let _ = handle.health().await;
            let before = origin.calls();
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let app = app.clone();
                tasks.push(tokio::spawn(async move {
                    send(&app, "GET", "/balance?burst=1", &[T1]).await.status
                }));
            }
            for t in tasks {
                assert_eq!(t.await.unwrap(), StatusCode::OK);
            }
            assert_eq!(origin.calls() - before, 1, "{fault}");
        }
        redis.thaw();
        // Back: the same app caches again, no restart.
        let mut hit = false;
        for _ in 0..100 {
            let r = send(&app, "GET", "/balance?after=1", &[T1]).await;
            if r.x_cache() == "HIT" {
                hit = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(hit, "HITs return after Redis is back");
        let health = send(&app, "GET", "/health/cache", &[]).await;
        let json: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
        assert_eq!(json["status"], "ok");
    }
);

on_every_topology!(
    async fn stale_entries_are_served_while_refreshing_and_on_origin_errors(redis: &Redis) {
        let origin = Origin::default();
        let app = app(handle_on(redis), &origin, true);
        let first = send(&app, "GET", "/short", &[T1]).await;
        assert_eq!(first.x_cache(), "MISS");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let stale = send(&app, "GET", "/short", &[T1]).await;
        assert_eq!(stale.x_cache(), "STALE");
        assert_eq!(stale.body, first.body);
        // One background refresh replaces it.
        let mut refreshed = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let r = send(&app, "GET", "/short", &[T1]).await;
            if r.x_cache() == "HIT" {
                refreshed = Some(r);
                break;
            }
        }
        let refreshed = refreshed.expect("refreshed in the background");
        assert_ne!(refreshed.body, first.body);
        assert_eq!(origin.calls(), 2);

        // Stale-if-error: the origin fails after expiry, the stale copy answers.
        origin.failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = send(&app, "GET", "/short", &[T1, ("cache-control", "no-cache")]).await;
        assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "STALE"));
        assert_eq!(r.body, refreshed.body);
    }
);

on_every_topology!(
    async fn corrupt_stored_responses_are_misses(redis: &Redis) {
        let origin = Origin::default();
        let app = app(handle_on(redis), &origin, false);
        send(&app, "GET", "/products/1", &[T1]).await;
        let key = "stock:cache:tenant:{1}:products:GET:/products/1";
        let raw = redis.command_on_key(key, &["GET", key]);
        // Keep the entry header valid but break the stored response inside it.
        let start = raw.find("LC1").unwrap();
        let header = &raw[start..start + raw[start..].find('\n').unwrap()];
        assert_eq!(
            redis.command_on_key(key, &["SET", key, &format!("{header}\nnot-a-status\n\n")]),
            "+OK\r\n"
        );
        let r = send(&app, "GET", "/products/1", &[T1]).await;
        assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "MISS"));
        assert_eq!(r.body, b"product 1");
        assert_eq!(origin.calls(), 2);
    }
);

on_every_topology!(
    async fn admin_needs_the_token_and_works_with_it(redis: &Redis) {
        let origin = Origin::default();
        let app = app(handle_on(redis), &origin, false);
        send(&app, "GET", "/balance", &[T1]).await;
        send(&app, "GET", "/products/1", &[T1]).await;
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("t0ken"),
            Some("Bearer t0ke"),
        ] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("authorization", a)).into_iter().collect();
            let r = send(&app, "GET", "/admin/cache/stats", &headers).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
            let r = send(&app, "POST", "/admin/cache/clear", &headers).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(send(&app, "GET", "/balance", &[T1]).await.x_cache(), "HIT");
        let auth = ("authorization", "Bearer t0ken");
        let stats = send(&app, "GET", "/admin/cache/stats", &[auth]).await;
        assert_eq!(stats.status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
        assert!(json["hits"].as_u64().unwrap() >= 1, "{json}");

        let r = send(
            &app,
            "POST",
            "/admin/cache/invalidate-module/1/balance",
            &[auth],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(send(&app, "GET", "/balance", &[T1]).await.x_cache(), "MISS");

        let r = send(
            &app,
            "POST",
            "/admin/cache/invalidate/stock:cache:tenant:%7B1%7D:products:GET:%2Fproducts%2F1",
            &[auth],
        )
        .await;
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(json["deleted"], true, "{json}");
        assert_eq!(
            redis.command_on_key("other:key", &["SET", "other:key", "1"]),
            "+OK\r\n"
        );
        let r = send(&app, "POST", "/admin/cache/invalidate/other:key", &[auth]).await;
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            json["deleted"], false,
            "keys outside the prefix are refused"
        );

        let r = send(
            &app,
            "POST",
            "/admin/cache/invalidate-pattern/tenant:%7B1%7D:balance:*",
            &[auth],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = send(
            &app,
            "POST",
            "/admin/cache/invalidate-module/1:*/balance",
            &[auth],
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = send(&app, "GET", "/admin/cache/clear", &[auth]).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        let r = send(&app, "POST", "/admin/cache/clear", &[auth]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            redis.command_on_key("other:key", &["EXISTS", "other:key"]),
            ":1\r\n"
        );
    }
);

on_every_topology!(
    async fn with_the_lease_two_app_instances_make_one_origin_call(redis: &Redis) {
        let origin = Origin::default();
        let instance = || {
            let cache = Cache::new(handle_on(redis));
            let mut settings = cache.settings().clone();
            settings.lease = Some(Duration::from_secs(2));
            let cache = cache.with_settings(settings);
            let responses =
                ResponseCache::new(cache).route(CacheRoute::new("/slow", "balance").unwrap());
            let o = origin.clone();
            Router::new()
                .route(
                    "/slow",
                    get(move || {
                        let o = o.clone();
                        async move {
                            o.calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            "computed"
                        }
                    }),
                )
                .layer(CacheLayer::new(responses))
        };
        let apps = [instance(), instance()];
        let mut tasks = Vec::new();
        for i in 0..20 {
            let app = apps[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                send(&app, "GET", "/slow", &[T1]).await
            }));
        }
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(
                (r.status, r.body.as_slice()),
                (StatusCode::OK, &b"computed"[..])
            );
        }
        assert_eq!(origin.calls(), 1);
    }
);

on_every_topology!(
    async fn with_redis_frozen_a_miss_waits_for_its_look_up_and_not_for_the_lease_too(
        redis: &mut Redis,
    ) {
        let origin = Origin::default();
        let handle = handle_on(redis);
        let cache = Cache::new(handle.clone());
        let mut settings = cache.settings().clone();
        settings.lease = Some(Duration::from_secs(2));
        let responses = ResponseCache::new(cache.with_settings(settings)).route(
            CacheRoute::new("/balance", "balance")
                .unwrap()
                .query(&["from", "to", "a", "b", "x", "burst", "after", "new"]),
        );
        let o = origin.clone();
        let app = Router::new()
            .route(
                "/balance",
                get(move || {
                    o.calls.fetch_add(1, Ordering::SeqCst);
                    async { "computed" }
                }),
            )
            .layer(CacheLayer::new(responses));
        // Connected, with the tenant's markers known.
        assert_eq!(send(&app, "GET", "/balance", &[T1]).await.x_cache(), "MISS");
        assert_eq!(send(&app, "GET", "/balance", &[T1]).await.x_cache(), "HIT");
        redis.freeze();
        let before = handle.guard().stats();
        let r = send(&app, "GET", "/balance?new=1", &[T1]).await;
        let after = handle.guard().stats();
        redis.thaw();
        assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "MISS"));
        assert_eq!(origin.calls(), 2);
        // One call, the look-up, ran out its deadline; the lease lives in the same
        // Redis, so asking for it would only have waited out another.
        assert_eq!(
            (
                after.attempted - before.attempted,
                after.timed_out - before.timed_out
            ),
            (1, 1)
        );
    }
);

/// An origin service that counts its calls and its clones (a Tower middleware clones
/// the inner service for every request it hands on).
#[derive(Default)]
struct CountingOrigin {
    calls: Arc<AtomicUsize>,
    clones: Arc<AtomicUsize>,
}

impl Clone for CountingOrigin {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            calls: Arc::clone(&self.calls),
            clones: Arc::clone(&self.clones),
        }
    }
}

impl Service<Request<Body>> for CountingOrigin {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Body>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(Ok(format!("balance #{n}").into_response()))
    }
}

on_every_topology!(
    async fn hits_neither_clone_nor_call_the_inner_service(redis: &Redis) {
        use tower::Layer;
        let l1 = with_l1(Cache::new(handle_on(redis)));
        // The L1 tier in front of Redis, Redis alone, and the in-process store when there
        // is no Redis.
        let redis = Cache::new(handle_on(redis));
        // Each case on a tenant of its own: the first two share one Redis.
        for (tenant, cache) in
            ["1", "2", "3"]
                .into_iter()
                .zip([l1, redis, Cache::new(handle(None))])
        {
            let responses = ResponseCache::new(cache.clone()).route(
                CacheRoute::new("/balance", "balance")
                    .unwrap()
                    .query(&["from", "to", "a", "b", "x", "burst", "after", "new"]),
            );
            let origin = CountingOrigin::default();
            let (calls, clones) = (Arc::clone(&origin.calls), Arc::clone(&origin.clones));
            let mut svc = CacheLayer::new(responses).layer(origin);
            let mut get = async |extra: Option<(&str, &str)>| {
                let mut req = Request::get("/balance").header("x-tenant-id", tenant);
                if let Some((name, value)) = extra {
                    req = req.header(name, value);
                }
                let res = svc
                    .ready()
                    .await
                    .unwrap()
                    .call(req.body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let x_cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                (x_cache, body)
            };
            assert_eq!(get(None).await, ("MISS".to_owned(), "balance #1".into()));
            let (clones_before, hits_before) =
                (clones.load(Ordering::SeqCst), cache.stats().await.hits);
            assert_eq!(get(None).await, ("HIT".to_owned(), "balance #1".into()));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(
                clones.load(Ordering::SeqCst),
                clones_before,
                "a hit clones nothing"
            );
            assert_eq!(
                cache.stats().await.hits,
                hits_before + 1,
                "the hit is counted"
            );
            // A revalidation takes the full path: the inner service is cloned and called.
            let (x_cache, body) = get(Some(("cache-control", "no-cache"))).await;
            assert_eq!((x_cache.as_str(), &body[..]), ("MISS", &b"balance #2"[..]));
            assert!(clones.load(Ordering::SeqCst) > clones_before);
        }
    }
);

/// An origin that is not ready at first, and refuses (poll_ready fails) when told to.
#[derive(Clone, Default)]
struct SlowToStart {
    polls: Arc<AtomicUsize>,
    refuse: Arc<AtomicBool>,
}

impl Service<Request<Body>> for SlowToStart {
    type Response = axum::response::Response;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.refuse.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(Err("overloaded"));
        }
        // Every other poll is pending: a clone must be driven to readiness.
        if self.polls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Body>) -> Self::Future {
        std::future::ready(Ok("fresh".into_response()))
    }
}

#[tokio::test]
async fn the_inner_services_readiness_is_awaited_and_its_refusal_returned() {
    use tower::Layer;
    let responses = ResponseCache::new(Cache::new(handle(None))).route(
        CacheRoute::new("/balance", "balance")
            .unwrap()
            .query(&["from", "to", "a", "b", "x", "burst", "after", "new"]),
    );
    let origin = SlowToStart::default();
    let (polls, refuse) = (Arc::clone(&origin.polls), Arc::clone(&origin.refuse));
    let svc = CacheLayer::new(responses).layer(origin);
    let get = |tenant: &'static str| {
        Request::get("/balance")
            .header("x-tenant-id", tenant)
            .body(Body::empty())
            .unwrap()
    };
    // A miss and a bypass (no tenant) both wait for readiness, then reach the origin.
    for req in [
        get("1"),
        Request::get("/balance").body(Body::empty()).unwrap(),
    ] {
        let before = polls.load(Ordering::SeqCst);
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "fresh");
        assert!(
            polls.load(Ordering::SeqCst) >= before + 2,
            "pending, then ready"
        );
    }
    // A refusal is the service's error; a hit needs no readiness at all.
    refuse.store(true, Ordering::SeqCst);
    assert_eq!(
        svc.clone().oneshot(get("2")).await.unwrap_err(),
        "overloaded"
    );
    let hit = svc.clone().oneshot(get("1")).await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT");
}

/// An app whose `/report` answers by the request's `Accept-Encoding` and says so
/// (`Vary`), as a compression layer inside the cache makes it, whose `/split` is
/// marked `private` on the second of two `Cache-Control` lines, and whose
/// `/versioned` honours `If-None-Match` itself (304 for its ETag `"v1"`).
fn negotiating_app(handle: Handle, calls: &Arc<AtomicUsize>, vary: &[&str]) -> Router {
    let responses = vary.iter().fold(
        ResponseCache::new(Cache::new(handle))
            .route(CacheRoute::new("/report", "reports").unwrap())
            .route(CacheRoute::new("/split", "reports").unwrap())
            .route(CacheRoute::new("/versioned", "reports").unwrap()),
        |responses, header| responses.vary(header),
    );
    let (c1, c2, c3) = (calls.clone(), calls.clone(), calls.clone());
    Router::new()
        .route(
            "/versioned",
            get(move |headers: axum::http::HeaderMap| async move {
                c3.fetch_add(1, Ordering::SeqCst);
                let etag = [("etag", "\"v1\"")];
                if headers
                    .get("if-none-match")
                    .is_some_and(|v| v.as_bytes() == b"\"v1\"")
                {
                    return (StatusCode::NOT_MODIFIED, etag).into_response();
                }
                (etag, "version one").into_response()
            }),
        )
        .route(
            "/report",
            get(move |headers: axum::http::HeaderMap| async move {
                c1.fetch_add(1, Ordering::SeqCst);
                let gzip = headers
                    .get("accept-encoding")
                    .is_some_and(|v| v.as_bytes() == b"gzip");
                let body = if gzip { "gzip bytes" } else { "plain text" };
                ([("vary", "Accept-Encoding")], body)
            }),
        )
        .route(
            "/split",
            get(move || async move {
                c2.fetch_add(1, Ordering::SeqCst);
                let mut res = "mine".into_response();
                for line in ["max-age=60", "private"] {
                    res.headers_mut()
                        .append("cache-control", axum::http::HeaderValue::from_static(line));
                }
                res
            }),
        )
        .layer(CacheLayer::new(responses))
}

on_every_topology!(
    async fn a_response_is_stored_only_when_the_key_holds_what_it_varies_on(redis: &Redis) {
        let calls = Arc::new(AtomicUsize::new(0));
        let gzip = ("accept-encoding", "gzip");
        // Accept-Encoding is not part of the key: nothing is stored, and no client gets
        // another client's encoding.
        let app = negotiating_app(handle_on(redis), &calls, &[]);
        for (headers, body) in [
            (&[T1, gzip][..], "gzip bytes"),
            (&[T1][..], "plain text"),
            (&[T1, gzip][..], "gzip bytes"),
        ] {
            let r = send(&app, "GET", "/report", headers).await;
            assert_eq!((r.x_cache(), r.body.as_slice()), ("MISS", body.as_bytes()));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // `private` on a second Cache-Control line counts.
        for _ in 0..2 {
            let r = send(&app, "GET", "/split", &[T1]).await;
            assert_eq!((r.x_cache(), r.body.as_slice()), ("MISS", &b"mine"[..]));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 5);

        // With Accept-Encoding in the key, each encoding has its entry.
        let app = negotiating_app(handle_on(redis), &calls, &["Accept-Encoding"]);
        for (headers, x_cache, body) in [
            (&[T2, gzip][..], "MISS", "gzip bytes"),
            (&[T2][..], "MISS", "plain text"),
            (&[T2, gzip][..], "HIT", "gzip bytes"),
            (&[T2][..], "HIT", "plain text"),
        ] {
            let r = send(&app, "GET", "/report", headers).await;
            assert_eq!((r.x_cache(), r.body.as_slice()), (x_cache, body.as_bytes()));
            assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }
);

on_every_topology!(
    async fn a_miss_asks_the_origin_unconditionally_and_answers_if_none_match_itself(
        redis: &mut Redis,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = negotiating_app(handle_on(redis), &calls, &[]);
        let v1 = ("if-none-match", "\"v1\"");
        // A revalidating client on an empty cache: the origin gets the request without
        // its validator, so its full response is stored, and the client gets its 304.
        let r = send(&app, "GET", "/versioned", &[T1, v1]).await;
        assert_eq!((r.status, r.x_cache()), (StatusCode::NOT_MODIFIED, "MISS"));
        assert_eq!(r.header("etag"), Some("\"v1\""));
        assert!(r.body.is_empty());
        let r = send(&app, "GET", "/versioned", &[T1]).await;
        assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "HIT"));
        assert_eq!(r.body, b"version one");
        let r = send(&app, "GET", "/versioned", &[T1, v1]).await;
        assert_eq!((r.status, r.x_cache()), (StatusCode::NOT_MODIFIED, "HIT"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A validator that does not match gets the full response, stored as well.
        let old = ("if-none-match", "\"v0\"");
        let r = send(&app, "GET", "/versioned", &[T2, old]).await;
        assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "MISS"));
        assert_eq!(r.body, b"version one");
        let r = send(&app, "GET", "/versioned", &[T2]).await;
        assert_eq!((r.status, r.x_cache()), (StatusCode::OK, "HIT"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // With Redis stopped nothing is stored, so the validator goes on to the origin,
        // whose own 304 comes back.
        redis.stop();
        let r = send(&app, "GET", "/versioned", &[("x-tenant-id", "3"), v1]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
);

on_every_topology!(
    async fn in_front_of_the_router_hits_skip_routing_and_writes_still_invalidate(redis: &Redis) {
        use axum::extract::Request as AxumRequest;
        use tower::Layer;
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let router: Router = Router::new()
            .route(
                "/balance",
                get(move || async move { format!("v{}", c.fetch_add(1, Ordering::SeqCst)) }),
            )
            .route("/sales", post(|| async { StatusCode::CREATED }));
        let responses = ResponseCache::new(Cache::new(handle_on(redis)))
            .route(
                CacheRoute::new("/balance", "balance")
                    .unwrap()
                    .query(&["from", "to", "a", "b", "x", "burst", "after", "new"]),
            )
            .invalidate(InvalidateRoute::new("POST", "/sales", &["balance"]).unwrap());
        let app = tower::ServiceExt::<AxumRequest>::map_response(
            CacheLayer::new(responses).layer(router),
            IntoResponse::into_response,
        );
        let send = |method: &str, uri: &str| {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .header(T1.0, T1.1)
                .body(Body::empty())
                .unwrap();
            let app = app.clone();
            async move {
                let res = app.oneshot(req).await.unwrap();
                let x_cache = res
                    .headers()
                    .get("x-cache")
                    .map(|v| v.to_str().unwrap().to_owned());
                let status = res.status();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                (status, x_cache, body)
            }
        };
        let miss = send("GET", "/balance").await;
        assert_eq!((miss.0, miss.1.as_deref()), (StatusCode::OK, Some("MISS")));
        let hit = send("GET", "/balance").await;
        assert_eq!((hit.1.as_deref(), &hit.2), (Some("HIT"), &miss.2));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(send("POST", "/sales").await.0, StatusCode::CREATED);
        let after = send("GET", "/balance").await;
        assert_eq!(after.1.as_deref(), Some("MISS"));
        assert_ne!(after.2, miss.2);
        // Unknown paths still reach the router (its 404), untouched by the cache.
        let unknown = send("GET", "/nowhere").await;
        assert_eq!((unknown.0, unknown.1), (StatusCode::NOT_FOUND, None));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
);

// ---- The conformance scenarios (tests/common/conformance.rs) on the Tower layer ----

struct Conformance(Router);

impl conformance::Client for Conformance {
    async fn send(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> conformance::Got {
        let r = send(&self.0, method, uri, headers).await;
        conformance::Got {
            status: r.status.as_u16(),
            x_cache: r.x_cache().to_owned(),
            etag: r.header("etag").map(str::to_owned),
            body: r.body,
        }
    }
}

/// The conformance app (see `tests/common/conformance.rs`) on `redis`.
fn conformance_app(redis: Option<&Redis>, origin: &Origin) -> Conformance {
    fn streamed(chunks: usize, size: usize) -> Body {
        let chunk = bytes::Bytes::from(vec![b'x'; size]);
        Body::from_stream(futures_util::stream::iter(
            (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        ))
    }
    let handle = redis.map_or_else(|| handle(None), handle_on);
    let responses = conformance::responses(&handle);
    let calls = Arc::clone(&origin.calls);
    let whoami = move |headers: axum::http::HeaderMap| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        headers
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let failing = Arc::clone(&origin.failing);
    let short = move || {
        let failing = failing.load(Ordering::SeqCst);
        async move {
            if failing {
                (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response()
            } else {
                "v1".into_response()
            }
        }
    };
    Conformance(
        Router::new()
            .route("/small", get(|| async { streamed(3, 100) }))
            .route("/big", get(|| async { streamed(10, 500) }))
            .route("/short", get(short))
            .route("/whoami", get(whoami))
            .route("/sales", post(|| async { StatusCode::CREATED }))
            .layer(CacheLayer::new(responses))
            .merge(larder_cache::axum::health_routes(handle)),
    )
}

on_every_topology!(
    async fn conformance_streamed_bodies_within_the_cap_are_stored(redis: &Redis) {
        let origin = Origin::default();
        let app = conformance_app(Some(redis), &origin);
        conformance::streamed_bodies_within_the_cap_are_stored(&app).await;
    }
);

on_every_topology!(
    async fn conformance_streamed_bodies_over_the_cap_pass_whole(redis: &Redis) {
        let origin = Origin::default();
        let app = conformance_app(Some(redis), &origin);
        conformance::streamed_bodies_over_the_cap_pass_whole(&app).await;
    }
);

on_every_topology!(
    async fn conformance_stale_copies_stand_in_for_a_failing_origin(redis: &Redis) {
        let origin = Origin::default();
        let app = conformance_app(Some(redis), &origin);
        conformance::stale_copies_stand_in_for_a_failing_origin(&app, &origin).await;
    }
);

on_every_topology!(
    async fn conformance_tenants_are_apart_and_writes_invalidate_their_own(redis: &Redis) {
        let origin = Origin::default();
        let app = conformance_app(Some(redis), &origin);
        conformance::tenants_are_apart_and_writes_invalidate_their_own(&app).await;
    }
);

on_every_topology!(
    async fn conformance_concurrent_misses_reach_the_origin_once(redis: &Redis) {
        let origin = Origin::default();
        let app = conformance_app(Some(redis), &origin);
        conformance::concurrent_misses_reach_the_origin_once(&app, &origin).await;
    }
);

#[tokio::test]
async fn conformance_without_redis_the_cache_runs_in_process() {
    let app = conformance_app(None, &Origin::default());
    conformance::without_redis_the_cache_runs_in_process(&app).await;
}
