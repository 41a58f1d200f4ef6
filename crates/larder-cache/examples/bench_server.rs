//! A server for load benchmarks (`scripts/bench-cache` drives it with wrk).
//!
//! Run with: `cargo run --release -p larder-cache --example bench_server -- FRAMEWORK MODE PORT`
//!
//! FRAMEWORK is `axum` or `actix`; MODE is one of
//!
//! | mode | `GET /data` does |
//! | --- | --- |
//! | `plain` | returns a 1 KiB JSON body |
//! | `raw` | one raw redis-rs `GET` on a multiplexed connection, returns the value |
//! | `mget` | one raw redis-rs `MGET` of three keys (two 27-byte markers and the value): the reply a Redis-tier hit parses, and nothing else |
//! | `core` | the `raw` mode's `GET` through larder-core's `Handle::query` (the guard's deadline, breaker and metrics, the shared reconnecting connection): what every larder call pays before a component's own work |
//! | `cache` | the same body through larder's response cache (Redis tier) |
//! | `outer` | Axum only: the same, with the cache in front of the router instead of a `Router::layer` (a hit is answered before routing) |
//! | `local` | the same, with the L1 in-process tier in front of Redis |
//! | `off` | the cache layer installed with caching turned off |
//! | `inproc` | the response cache on the in-process store (no Redis: `cargo run`'s default) |
//!
//! `REDIS_URL` names Redis. Requests carry `X-Tenant-Id`; a `?n=` query that changes
//! per request makes every request a miss.

#![allow(clippy::print_stdout)]

use std::time::Duration;

use larder_cache::{Cache, CacheRoute, L1Settings, ResponseCache};
use larder_core::redis::AsyncCommands;
use larder_core::{Config, Handle};

fn body() -> String {
    let mut s = String::from("{\"series\":[");
    let mut i = 0;
    while s.len() < 1000 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{{\"day\":{i},\"balance\":{}}}", 1000 + i * 7));
        i += 1;
    }
    s.push_str("]}");
    s
}

/// Stores the raw modes' keys and opens their connection.
async fn raw_connection(
    body: &str,
) -> Result<larder_core::redis::aio::MultiplexedConnection, Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL")?;
    let client = larder_core::redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let marker = "19ab2c3d4e5f60718293a4b5c6d";
    let _: () = conn
        .mset(&[
            ("bench:raw", body),
            ("bench:gen", marker),
            ("bench:gen:bench", marker),
        ])
        .await?;
    Ok(conn)
}

/// The `raw` and `mget` handlers' Redis call.
async fn raw_read(mut conn: larder_core::redis::aio::MultiplexedConnection, mget: bool) -> String {
    if mget {
        let reply: Result<(Option<String>, Option<String>, Option<String>), _> = conn
            .mget(&["bench:gen", "bench:gen:bench", "bench:raw"])
            .await;
        reply.ok().and_then(|(_, _, v)| v).unwrap_or_default()
    } else {
        conn.get::<_, String>("bench:raw").await.unwrap_or_default()
    }
}

/// The `core` handler: the `raw` mode's `GET` through larder-core's handle.
async fn core_read(handle: Handle) -> String {
    handle
        .query::<Option<String>>("get", larder_core::redis::cmd("GET").arg("bench:raw"))
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Stores the raw modes' keys (through a raw connection) and builds the `core`
/// mode's handle.
async fn core_handle(body: &str) -> Result<Handle, Box<dyn std::error::Error>> {
    raw_connection(body).await?;
    Ok(Handle::new(Config::from_env()?)?)
}

fn responses(mode: &str) -> Result<(Handle, ResponseCache), Box<dyn std::error::Error>> {
    let mut config = Config::from_env()?;
    config.cache_enabled = mode != "off";
    config.key_prefix = "bench".into();
    if mode == "inproc" {
        config.redis = None;
    }
    let handle = Handle::new(config)?;
    let cache = Cache::new(handle.clone());
    let cache = if mode == "local" {
        cache.with_l1(L1Settings::new(64 << 20, Duration::from_secs(30)))
    } else {
        cache
    };
    Ok((
        handle,
        ResponseCache::new(cache).route(CacheRoute::new("/data", "bench")?.query(&["n"])),
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, framework, mode, port] = args.as_slice() else {
        return Err("usage: bench_server FRAMEWORK MODE PORT".into());
    };
    let port: u16 = port.parse()?;
    let body = body();
    match framework.as_str() {
        "axum" => axum_server(mode, port, body),
        "actix" => actix_server(mode, port, body),
        other => Err(format!("unknown framework {other}").into()),
    }
}

fn axum_server(mode: &str, port: u16, body: String) -> Result<(), Box<dyn std::error::Error>> {
    use axum::routing::get;
    use axum::Router;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app: Router = match mode {
            "plain" => Router::new().route("/data", get(move || std::future::ready(body.clone()))),
            "raw" | "mget" => {
                let conn = raw_connection(&body).await?;
                let mget = mode == "mget";
                Router::new().route("/data", get(move || raw_read(conn.clone(), mget)))
            }
            "core" => {
                let handle = core_handle(&body).await?;
                Router::new().route("/data", get(move || core_read(handle.clone())))
            }
            "outer" => {
                // The cache in front of the router (`ServiceExt::into_make_service`):
                // a hit is answered before routing.
                use tower_layer::Layer;
                let (_handle, responses) = responses("cache")?;
                let router: Router =
                    Router::new().route("/data", get(move || std::future::ready(body.clone())));
                let app = tower::ServiceExt::<axum::extract::Request>::map_response(
                    larder_cache::tower::CacheLayer::new(responses).layer(router),
                    axum::response::IntoResponse::into_response,
                );
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
                println!("ready");
                axum::serve(
                    listener,
                    axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
                )
                .await?;
                return Ok(());
            }
            _ => {
                let (_handle, responses) = responses(mode)?;
                Router::new()
                    .route("/data", get(move || std::future::ready(body.clone())))
                    .layer(larder_cache::tower::CacheLayer::new(responses))
            }
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("ready");
        axum::serve(listener, app).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

fn actix_server(mode: &str, port: u16, body: String) -> Result<(), Box<dyn std::error::Error>> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let mode = mode.to_owned();
    actix_web::rt::System::new().block_on(async move {
        let mget = mode == "mget";
        let raw = if mode == "raw" || mget {
            Some(raw_connection(&body).await?)
        } else {
            None
        };
        let core = if mode == "core" {
            Some(core_handle(&body).await?)
        } else {
            None
        };
        let cache = match mode.as_str() {
            "plain" | "raw" | "mget" | "core" => None,
            _ => Some(responses(&mode)?),
        };
        println!("ready");
        HttpServer::new(move || {
            let body = body.clone();
            let raw = raw.clone();
            let core = core.clone();
            let plain = move || {
                let body = body.clone();
                async move { HttpResponse::Ok().body(body) }
            };
            let scope = web::scope("");
            if let Some(handle) = core {
                return App::new().service(scope.route(
                    "/data",
                    web::get().to(move || {
                        let read = core_read(handle.clone());
                        async move { HttpResponse::Ok().body(read.await) }
                    }),
                ));
            }
            match (&raw, &cache) {
                (Some(conn), _) => {
                    let conn = conn.clone();
                    App::new().service(scope.route(
                        "/data",
                        web::get().to(move || {
                            let read = raw_read(conn.clone(), mget);
                            async move { HttpResponse::Ok().body(read.await) }
                        }),
                    ))
                }
                (None, Some((_h, responses))) => App::new().service(
                    scope
                        .wrap(larder_cache::actix::CacheMiddleware::new(responses.clone()))
                        .route("/data", web::get().to(plain)),
                ),
                (None, None) => App::new().service(scope.route("/data", web::get().to(plain))),
            }
        })
        .workers(1)
        .bind(("127.0.0.1", port))?
        .run()
        .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
