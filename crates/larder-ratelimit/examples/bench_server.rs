//! A server for load benchmarks (`scripts/bench-ratelimit` drives it with wrk).
//!
//! Run with: `cargo run --release -p larder-ratelimit --features _bench --example bench_server -- FRAMEWORK MODE PORT`
//!
//! FRAMEWORK is `axum` or `actix`; MODE is one of
//!
//! | mode | `GET /data` does |
//! | --- | --- |
//! | `plain` | returns a short body |
//! | `plain429` | returns, without any limiter, the same 429 (headers and JSON body) larder's local reject sends |
//! | `governor` | the same behind tower_governor (Axum) or actix-governor (Actix), per IP, never limiting |
//! | `raw` | one raw redis-rs `EVALSHA` of larder's GCRA script (one key) on a multiplexed connection |
//! | `allowed` | larder, one per-IP policy that never limits |
//! | `three` | larder, three policies (IP, tenant, route) that never limit |
//! | `reject` | larder, a per-IP policy of 1/hour: after the first request, every request is rejected by the local pre-check |
//!
//! `REDIS_URL` names Redis. Requests carry `X-Tenant-Id`.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;

use larder_core::redis;
use larder_core::{Config, Handle};
use larder_ratelimit::{Key, Policy, RateLimit, RateLimiter};

const BODY: &str = "{\"ok\":true}";
const HUGE: &str = "1000000/second";
/// What larder's local reject answers for `1/hour`, byte for byte (but the date).
const REJECT_BODY: &str = "{\"error\":\"rate_limited\",\"message\":\"Too many requests: limit \\\"ip\\\" (1/hour) exceeded. Retry in 3600 s.\",\"policy\":\"ip\",\"limit\":\"1/hour\",\"retry_after\":3600}";
const REJECT_HEADERS: [(&str, &str); 4] = [
    ("ratelimit-policy", "\"ip\";q=1;w=3600"),
    ("ratelimit", "\"ip\";r=0;t=3600"),
    ("retry-after", "3600"),
    ("content-type", "application/json"),
];

fn limits(mode: &str) -> Result<RateLimit, Box<dyn std::error::Error>> {
    let mut config = Config::from_env()?;
    config.key_prefix = "bench".into();
    let handle = Handle::new(config)?;
    let limiter = RateLimiter::new(handle);
    let limits = RateLimit::new(limiter);
    Ok(match mode {
        "allowed" => limits.policy(Policy::new("ip", HUGE)?),
        "three" => limits
            .policy(Policy::new("ip", HUGE)?)
            .policy(Policy::new("tenant", HUGE)?.key(Key::tenant_header("x-tenant-id")))
            .route("GET", "/data", Policy::new("route", HUGE)?.key(Key::Global)),
        "reject" => limits.policy(Policy::new("ip", "1/hour")?),
        other => return Err(format!("no larder limits for mode {other}").into()),
    })
}

/// One raw EVALSHA of the GCRA script, for the baseline.
#[derive(Clone)]
struct Raw {
    conn: redis::aio::MultiplexedConnection,
    script: redis::Script,
}

impl Raw {
    async fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let url = std::env::var("REDIS_URL")?;
        let client = redis::Client::open(url)?;
        Ok(Self {
            conn: client.get_multiplexed_async_connection().await?,
            script: redis::Script::new(include_str!("../lua/gcra.lua")),
        })
    }

    async fn check(&self) -> bool {
        let mut conn = self.conn.clone();
        let reply: Result<Vec<i64>, _> = self
            .script
            .key("bench:raw:ip:127.0.0.1")
            .arg(1)
            .arg(1_000_000)
            .arg(1)
            .arg(0)
            .invoke_async(&mut conn)
            .await;
        matches!(reply.as_deref(), Ok([1, ..]))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, framework, mode, port] = args.as_slice() else {
        return Err("usage: bench_server FRAMEWORK MODE PORT".into());
    };
    let port: u16 = port.parse()?;
    match framework.as_str() {
        "axum" => axum_server(mode, port),
        "actix" => actix_server(mode, port),
        other => Err(format!("unknown framework {other}").into()),
    }
}

fn axum_server(mode: &str, port: u16) -> Result<(), Box<dyn std::error::Error>> {
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app: Router = match mode {
            "plain" => Router::new().route("/data", get(|| async { BODY })),
            "plain429" => Router::new().route(
                "/data",
                get(|| async {
                    let mut headers = axum::http::HeaderMap::new();
                    for (n, v) in REJECT_HEADERS {
                        headers.insert(n, axum::http::HeaderValue::from_static(v));
                    }
                    (StatusCode::TOO_MANY_REQUESTS, headers, REJECT_BODY)
                }),
            ),
            "governor" => {
                let config = tower_governor::governor::GovernorConfigBuilder::default()
                    .per_nanosecond(1)
                    .burst_size(u32::MAX)
                    .finish()
                    .ok_or("governor config")?;
                Router::new()
                    .route("/data", get(|| async { BODY }))
                    .layer(tower_governor::GovernorLayer::new(config))
            }
            "raw" => {
                let raw = Raw::new().await?;
                Router::new().route(
                    "/data",
                    get(move || {
                        let raw = raw.clone();
                        async move {
                            if raw.check().await {
                                (StatusCode::OK, BODY)
                            } else {
                                (StatusCode::TOO_MANY_REQUESTS, "{}")
                            }
                        }
                    }),
                )
            }
            other => Router::new()
                .route("/data", get(|| async { BODY }))
                .layer(larder_ratelimit::tower::RateLimitLayer::new(limits(other)?)),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on {port}");
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await?;
        Ok(())
    })
}

fn actix_server(mode: &str, port: u16) -> Result<(), Box<dyn std::error::Error>> {
    use actix_web::middleware::Condition;
    use actix_web::{web, App, HttpResponse, HttpServer};
    let mode = mode.to_owned();
    actix_web::rt::System::new().block_on(async move {
        let raw = if mode == "raw" {
            Some(Raw::new().await?)
        } else {
            None
        };
        let larder = match mode.as_str() {
            "plain" | "plain429" | "governor" | "raw" => None,
            other => Some(limits(other)?),
        };
        let governor = actix_governor::GovernorConfigBuilder::default()
            .nanoseconds_per_request(1)
            .burst_size(u32::MAX)
            .finish()
            .ok_or("governor config")?;
        let use_governor = mode == "governor";
        println!("listening on {port}");
        HttpServer::new(move || {
            let raw = raw.clone();
            let larder = larder
                .clone()
                .unwrap_or_else(|| RateLimit::new(RateLimiter::new(Handle::in_process())));
            let use_larder = !matches!(mode.as_str(), "plain" | "plain429" | "governor" | "raw");
            let reject = mode == "plain429";
            App::new()
                .wrap(Condition::new(
                    use_larder,
                    larder_ratelimit::actix::RateLimitMiddleware::new(larder),
                ))
                .wrap(Condition::new(
                    use_governor,
                    actix_governor::Governor::new(&governor),
                ))
                .route(
                    "/data",
                    web::get().to(move || {
                        let raw = raw.clone();
                        async move {
                            if reject {
                                let mut res = HttpResponse::TooManyRequests();
                                for (n, v) in REJECT_HEADERS {
                                    res.insert_header((n, v));
                                }
                                return res.body(REJECT_BODY);
                            }
                            match raw {
                                Some(raw) if !raw.check().await => {
                                    HttpResponse::TooManyRequests().body("{}")
                                }
                                _ => HttpResponse::Ok().body(BODY),
                            }
                        }
                    }),
                )
        })
        .workers(1)
        .bind(("127.0.0.1", port))?
        .run()
        .await?;
        Ok(())
    })
}
