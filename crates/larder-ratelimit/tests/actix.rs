//! Rate limits through real Actix-web apps (the test harness), on a real
//! redis-server, a real Redis Cluster and a real Sentinel set.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{assert_rejected_locally, handle_on};

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{test, web, App, HttpResponse};
use larder_ratelimit::actix::RateLimitMiddleware;
use larder_ratelimit::{ClientIp, FailMode, Key, Policy, RateLimit, RateLimiter};
use larder_testing::{eventually, on_every_topology};

async fn app(
    limits: RateLimit,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        App::new()
            .wrap(RateLimitMiddleware::new(limits))
            .route(
                "/",
                web::get().to(|| async { HttpResponse::Ok().body("home") }),
            )
            .route(
                "/login",
                web::post().to(|| async { HttpResponse::Ok().body("welcome") }),
            )
            .route(
                "/strict",
                web::get().to(|| async { HttpResponse::Ok().body("strict") }),
            )
            .route(
                "/health/cache",
                web::get().to(|| async { HttpResponse::Ok().body("{}") }),
            ),
    )
    .await
}

type Reply = common::Reply<StatusCode>;

async fn send<S, B>(
    app: &S,
    method: &str,
    path: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut req = test::TestRequest::default()
        .method(method.parse().unwrap())
        .uri(path)
        .peer_addr(SocketAddr::new(peer.parse().unwrap(), 40_000));
    for (n, v) in headers {
        req = req.insert_header((*n, *v));
    }
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status();
    let headers = res
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = test::read_body(res).await;
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

on_every_topology!(
    #[actix_web::test]
    async fn limits_per_ip_with_ietf_fields_and_a_json_429(redis: &Redis) {
        let limits = RateLimit::new(RateLimiter::new(handle_on(redis)))
            .policy(Policy::new("ip", "3/minute").unwrap())
            .route("POST", "/login", Policy::new("login", "1/minute").unwrap())
            .exempt_prefix("/health/");
        let app = app(limits).await;

        for remaining in [2, 1, 0] {
            let r = send(&app, "GET", "/", "203.0.113.1", &[]).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.header("ratelimit-policy"), Some("\"ip\";q=3;w=60"));
            let state = r.header("ratelimit").unwrap();
            assert!(
                state.starts_with(&format!("\"ip\";r={remaining};t=")),
                "{state}"
            );
        }
        let r = send(&app, "GET", "/", "203.0.113.1", &[]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body["error"], "rate_limited");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=20).contains(&retry), "{retry}");

        // Rejected again, now by the local pre-check (answered in `call`, no round
        // trip): the same fields and body, Retry-After never later than the first.
        assert_rejected_locally(
            redis,
            "\"ip\";q=3;w=60",
            retry,
            send(&app, "GET", "/", "203.0.113.1", &[]),
        )
        .await;

        // The login route has its own, tighter limit on top.
        assert_eq!(
            send(&app, "POST", "/login", "203.0.113.2", &[])
                .await
                .status,
            StatusCode::OK
        );
        let r = send(&app, "POST", "/login", "203.0.113.2", &[]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.body["policy"], "login");

        for _ in 0..5 {
            let r = send(&app, "GET", "/health/cache", "203.0.113.1", &[]).await;
            assert_eq!(r.status, StatusCode::OK);
        }
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn forwarded_for_counts_only_behind_trusted_proxies(redis: &Redis) {
        let client = ClientIp::new().trust_proxies(["10.0.0.0/8"]).unwrap();
        let limits = RateLimit::new(RateLimiter::new(handle_on(redis))).policy(
            Policy::new("ip", "1/minute")
                .unwrap()
                .key(Key::ClientIp(client)),
        );
        let app = app(limits).await;
        let xff = |v| [("x-forwarded-for", v)];

        assert_eq!(
            send(&app, "GET", "/", "203.0.113.7", &xff("1.1.1.1"))
                .await
                .status,
            StatusCode::OK
        );
        let r = send(&app, "GET", "/", "203.0.113.7", &xff("2.2.2.2")).await;
        assert_eq!(
            r.status,
            StatusCode::TOO_MANY_REQUESTS,
            "an untrusted peer picked its bucket"
        );

        assert_eq!(
            send(&app, "GET", "/", "10.0.0.5", &xff("198.51.100.1"))
                .await
                .status,
            StatusCode::OK
        );
        let r = send(&app, "GET", "/", "10.0.0.5", &xff("6.6.6.6, 198.51.100.1")).await;
        assert_eq!(
            r.status,
            StatusCode::TOO_MANY_REQUESTS,
            "a prepended hop escaped the limit"
        );
        assert_eq!(
            send(&app, "GET", "/", "10.0.0.5", &xff("198.51.100.2"))
                .await
                .status,
            StatusCode::OK
        );
    }
);

on_every_topology!(
    #[actix_web::test]
    async fn with_redis_stopped_each_policy_applies_its_fail_mode(redis: &mut Redis) {
        let limits = RateLimit::new(RateLimiter::new(handle_on(redis)))
            .route("GET", "/", Policy::new("ip", "2/minute").unwrap())
            .route(
                "GET",
                "/strict",
                Policy::new("strict", "100/minute")
                    .unwrap()
                    .fail_mode(FailMode::Deny { status: 429 }),
            );
        let app = app(limits).await;
        redis.stop();

        assert_eq!(
            send(&app, "GET", "/", "192.0.2.1", &[]).await.status,
            StatusCode::OK
        );
        assert_eq!(
            send(&app, "GET", "/", "192.0.2.1", &[]).await.status,
            StatusCode::OK
        );
        assert_eq!(
            send(&app, "GET", "/", "192.0.2.1", &[]).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
        let r = send(&app, "GET", "/strict", "192.0.2.1", &[]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.body["error"], "rate_limit_unavailable");

        redis.restart();
        let back = eventually(100, Duration::from_millis(50), || async {
            send(&app, "GET", "/strict", "192.0.2.1", &[]).await.status == StatusCode::OK
        })
        .await;
        assert!(back, "the middleware did not recover by itself");
    }
);
