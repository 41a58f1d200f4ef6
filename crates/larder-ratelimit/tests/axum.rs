//! Rate limits through real Axum routers (and one real Axum server), on a real
//! redis-server, a real Redis Cluster and a real Sentinel set.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{assert_rejected_locally, handle_on};

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use larder_core::Principal;
use larder_ratelimit::tower::RateLimitLayer;
use larder_ratelimit::{ClientIp, FailMode, Key, Policy, RateLimit, RateLimiter};
use larder_testing::{eventually, on_every_topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// Stands in for an app's authentication: the `x-user` header becomes the principal.
async fn fake_auth(mut req: Request, next: Next) -> Response {
    if let Some(user) = req.headers().get("x-user").and_then(|v| v.to_str().ok()) {
        let principal = Principal::new(user);
        req.extensions_mut().insert(principal);
    }
    next.run(req).await
}

fn app(limits: RateLimit) -> Router {
    Router::new()
        .route("/", get(|| async { "home" }))
        .route("/login", post(|| async { "welcome" }))
        .route("/strict", get(|| async { "strict" }))
        .route("/health/cache", get(|| async { "{}" }))
        .layer(RateLimitLayer::new(limits))
        .layer(axum::middleware::from_fn(fake_auth))
}

type Reply = common::Reply<StatusCode>;

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let mut req = req.body(Body::empty()).unwrap();
    let addr = SocketAddr::new(peer.parse().unwrap(), 40_000);
    req.extensions_mut().insert(ConnectInfo(addr));
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

/// The `t` of the first item of a `RateLimit` field.
fn reset_of(field: &str) -> u64 {
    field
        .split(";t=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

on_every_topology!(
    async fn limits_per_ip_with_ietf_fields_and_a_json_429(redis: &Redis) {
        let limits = RateLimit::new(RateLimiter::new(handle_on(redis)))
            .policy(Policy::new("ip", "3/minute").unwrap())
            .exempt_prefix("/health/");
        let app = app(limits);

        for remaining in [2, 1, 0] {
            let r = send(&app, "GET", "/", "203.0.113.1", &[]).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.header("ratelimit-policy"), Some("\"ip\";q=3;w=60"));
            let state = r.header("ratelimit").unwrap();
            assert!(
                state.starts_with(&format!("\"ip\";r={remaining};t=")),
                "{state}"
            );
            assert!(r.header("retry-after").is_none());
        }
        let r = send(&app, "GET", "/", "203.0.113.1", &[]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body["error"], "rate_limited");
        assert_eq!(r.body["policy"], "ip");
        assert_eq!(r.body["limit"], "3/minute");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=20).contains(&retry), "{retry}");
        assert_eq!(r.body["retry_after"], retry);
        let state = r.header("ratelimit").unwrap();
        assert!(state.starts_with("\"ip\";r=0;"), "{state}");
        assert!(
            retry >= reset_of(state),
            "Retry-After {retry} earlier than the reset in {state}"
        );

        // Rejected again, now by the local pre-check (answered in `call`, no round
        // trip): the same fields and body, Retry-After never later than the first.
        let again = assert_rejected_locally(
            redis,
            "\"ip\";q=3;w=60",
            retry,
            send(&app, "GET", "/", "203.0.113.1", &[]),
        )
        .await;
        assert_eq!(again.body["policy"], "ip");

        // Another client has its own bucket; health checks are never limited.
        assert_eq!(
            send(&app, "GET", "/", "203.0.113.2", &[]).await.status,
            StatusCode::OK
        );
        for _ in 0..10 {
            let r = send(&app, "GET", "/health/cache", "203.0.113.1", &[]).await;
            assert_eq!(r.status, StatusCode::OK);
            assert!(r.header("ratelimit").is_none());
        }
    }
);

on_every_topology!(
    async fn a_route_policy_applies_with_the_global_one(redis: &Redis) {
        let limits = RateLimit::new(RateLimiter::new(handle_on(redis)))
            .policy(Policy::new("ip", "100/minute").unwrap())
            .route("POST", "/login", Policy::new("login", "2/minute").unwrap());
        let app = app(limits);
        for _ in 0..2 {
            let r = send(&app, "POST", "/login", "198.51.100.9", &[]).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(
                r.header("ratelimit-policy"),
                Some("\"ip\";q=100;w=60, \"login\";q=2;w=60")
            );
        }
        let r = send(&app, "POST", "/login", "198.51.100.9", &[]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.body["policy"], "login");
        // Other routes answer: only the login limit is spent, and the rejected login
        // did not charge the per-IP limit (2 logins + this request = 3 of 100).
        let r = send(&app, "GET", "/", "198.51.100.9", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.header("ratelimit").unwrap().starts_with("\"ip\";r=97;"),
            "{:?}",
            r.header("ratelimit")
        );
    }
);

on_every_topology!(
    async fn forwarded_for_counts_only_behind_trusted_proxies(redis: &Redis) {
        let client = ClientIp::new().trust_proxies(["10.0.0.0/8"]).unwrap();
        let limits = RateLimit::new(RateLimiter::new(handle_on(redis))).policy(
            Policy::new("ip", "2/minute")
                .unwrap()
                .key(Key::ClientIp(client)),
        );
        let app = app(limits);

        // An untrusted peer cannot pick its bucket by inventing X-Forwarded-For.
        for (i, fake) in ["1.1.1.1", "2.2.2.2"].iter().enumerate() {
            let r = send(
                &app,
                "GET",
                "/",
                "203.0.113.7",
                &[("x-forwarded-for", fake)],
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "request {i}");
        }
        let r = send(
            &app,
            "GET",
            "/",
            "203.0.113.7",
            &[("x-forwarded-for", "3.3.3.3")],
        )
        .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);

        // Behind our proxy, the client the proxy saw is counted.
        for _ in 0..2 {
            let r = send(
                &app,
                "GET",
                "/",
                "10.0.0.5",
                &[("x-forwarded-for", "198.51.100.1")],
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let r = send(
            &app,
            "GET",
            "/",
            "10.0.0.5",
            &[("x-forwarded-for", "198.51.100.1")],
        )
        .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        // Prepending a fake hop does not escape: the rightmost untrusted entry counts.
        let r = send(
            &app,
            "GET",
            "/",
            "10.0.0.5",
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.1")],
        )
        .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        // A different real client behind the proxy has its own bucket.
        let r = send(
            &app,
            "GET",
            "/",
            "10.0.0.5",
            &[("x-forwarded-for", "198.51.100.2")],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
);

on_every_topology!(
    async fn tenant_and_user_policies_apply_only_when_present(redis: &Redis) {
        let limits = RateLimit::new(RateLimiter::new(handle_on(redis)))
            .policy(
                Policy::new("tenant", "2/minute")
                    .unwrap()
                    .key(Key::tenant_header("x-tenant-id")),
            )
            .policy(Policy::new("user", "1/minute").unwrap().key(Key::User));
        let app = app(limits);

        // One tenant shares its limit across client addresses.
        let t = [("x-tenant-id", "acme")];
        assert_eq!(
            send(&app, "GET", "/", "192.0.2.1", &t).await.status,
            StatusCode::OK
        );
        assert_eq!(
            send(&app, "GET", "/", "192.0.2.2", &t).await.status,
            StatusCode::OK
        );
        let r = send(&app, "GET", "/", "192.0.2.3", &t).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.body["policy"], "tenant");
        // Other tenants, no tenant and hostile tenant ids are not in acme's bucket.
        assert_eq!(
            send(&app, "GET", "/", "192.0.2.3", &[("x-tenant-id", "globex")])
                .await
                .status,
            StatusCode::OK
        );
        for _ in 0..3 {
            let r = send(&app, "GET", "/", "192.0.2.3", &[]).await;
            assert_eq!(r.status, StatusCode::OK);
            assert!(r.header("ratelimit").is_none());
            let r = send(&app, "GET", "/", "192.0.2.3", &[("x-tenant-id", "acme:*")]).await;
            assert_eq!(r.status, StatusCode::OK);
        }

        // Users, as established by the app's auth middleware.
        assert_eq!(
            send(&app, "GET", "/", "192.0.2.9", &[("x-user", "alice")])
                .await
                .status,
            StatusCode::OK
        );
        let r = send(&app, "GET", "/", "192.0.2.10", &[("x-user", "alice")]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.body["policy"], "user");
        assert_eq!(
            send(&app, "GET", "/", "192.0.2.9", &[("x-user", "bob")])
                .await
                .status,
            StatusCode::OK
        );
    }
);

on_every_topology!(
    async fn with_redis_stopped_each_policy_applies_its_fail_mode(redis: &mut Redis) {
        let limits = RateLimit::new(RateLimiter::new(handle_on(redis)))
            .route("GET", "/", Policy::new("ip", "2/minute").unwrap())
            .route(
                "GET",
                "/strict",
                Policy::new("strict", "100/minute")
                    .unwrap()
                    .fail_mode(FailMode::Deny { status: 503 }),
            )
            .headers(false);
        let app = app(limits);
        redis.stop();

        // The default: the same quota in-process.
        assert_eq!(
            send(&app, "GET", "/", "192.0.2.1", &[]).await.status,
            StatusCode::OK
        );
        let r = send(&app, "GET", "/", "192.0.2.1", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.header("ratelimit").is_none(), "headers were turned off");
        let r = send(&app, "GET", "/", "192.0.2.1", &[]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(r.header("retry-after").is_some());

        // Fail closed: a clear 503, never an opaque 500.
        let r = send(&app, "GET", "/strict", "192.0.2.1", &[]).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.body["error"], "rate_limit_unavailable");
        assert_eq!(r.body["policy"], "strict");
        assert_eq!(r.header("retry-after"), Some("1"));

        redis.restart();
        let back = eventually(100, Duration::from_millis(50), || async {
            send(&app, "GET", "/strict", "192.0.2.1", &[]).await.status == StatusCode::OK
        })
        .await;
        assert!(back, "the layer did not recover by itself");
    }
);

/// A request over a real TCP connection; returns the status line and headers.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

on_every_topology!(
    async fn a_real_server_counts_the_tcp_peer(redis: &Redis) {
        let limits = RateLimit::new(RateLimiter::new(handle_on(redis)))
            .policy(Policy::new("ip", "2/minute").unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = app(limits).into_make_service_with_connect_info::<SocketAddr>();
        let serving = tokio::spawn(async move { axum::serve(listener, service).await });

        for _ in 0..2 {
            let reply = http_get(addr, "/").await;
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
            assert!(
                reply.to_ascii_lowercase().contains("ratelimit: \"ip\";r="),
                "{reply}"
            );
        }
        let reply = http_get(addr, "/").await;
        assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
        assert!(
            reply.to_ascii_lowercase().contains("retry-after: "),
            "{reply}"
        );
        let key = "larder:ratelimit:global:ratelimit:ip:2r60000ms:{ip:127.0.0.1}";
        assert_eq!(
            redis
                .command_on_key(key, &["EXISTS", key])
                .trim()
                .trim_start_matches(':'),
            "1"
        );
        serving.abort();
    }
);
