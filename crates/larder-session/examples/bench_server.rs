//! A server for load benchmarks (`scripts/bench-session` drives it with wrk).
//!
//! Run with: `cargo run --release -p larder-session --features _bench --example bench_server -- FRAMEWORK MODE PORT`
//!
//! FRAMEWORK is `axum` or `actix`; MODE is one of
//!
//! | mode | `GET /data` does |
//! | --- | --- |
//! | `plain` | returns a short body (no session layers) |
//! | `raw` | one raw redis-rs `GET` on a multiplexed connection (no session layers) |
//! | `session` | reads one value from the session (tower-sessions or actix-session on larder's store, context layer included) |
//! | `untouched` | behind the same session layers, never touches the session |
//!
//! `POST /login` (session modes) starts a session holding a few values and sets the
//! cookie the load generator then sends. `REDIS_URL` names Redis.

#![allow(clippy::print_stdout)]

use larder_core::redis;
use larder_core::{Config, Handle};
use larder_session::{Identity, SessionConfig, Sessions};

const BODY: &str = "{\"ok\":true}";

fn sessions() -> Result<Sessions, Box<dyn std::error::Error>> {
    let mut config = Config::from_env()?;
    config.key_prefix = "bench".into();
    Ok(Sessions::new(
        Handle::new(config)?,
        SessionConfig::from_env()?,
    ))
}

async fn raw_conn() -> Result<redis::aio::MultiplexedConnection, Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL")?;
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    // A value of about the size of a small session.
    let value = format!(
        "{{\"n\":1,\"cart\":[1,2,3],\"theme\":\"dark\",\"pad\":\"{}\"}}",
        "x".repeat(120)
    );
    redis::cmd("SET")
        .arg("bench:raw")
        .arg(value)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(conn)
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
    use axum::routing::{get, post};
    use axum::Router;
    use larder_session::tower::{self as s, RedisSessionStore, SessionContextLayer};
    use tower_sessions::{Session, SessionManagerLayer};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app: Router = match mode {
            "plain" => Router::new().route("/data", get(|| async { BODY })),
            "raw" => {
                let conn = raw_conn().await?;
                Router::new().route(
                    "/data",
                    get(move || {
                        let mut conn = conn.clone();
                        async move {
                            let v: Result<Option<String>, _> = redis::cmd("GET")
                                .arg("bench:raw")
                                .query_async(&mut conn)
                                .await;
                            match v {
                                Ok(Some(_)) => (StatusCode::OK, BODY),
                                _ => (StatusCode::INTERNAL_SERVER_ERROR, "{}"),
                            }
                        }
                    }),
                )
            }
            "session" | "untouched" => {
                let store = RedisSessionStore::new(sessions()?);
                let data = if mode == "session" {
                    get(|session: Session| async move {
                        match session.get::<u64>("n").await {
                            Ok(Some(_)) => (StatusCode::OK, BODY),
                            _ => (StatusCode::UNAUTHORIZED, "{}"),
                        }
                    })
                } else {
                    get(|| async { (StatusCode::OK, BODY) })
                };
                Router::new()
                    .route("/data", data)
                    .route(
                        "/login",
                        post(|session: Session| async move {
                            let ok = s::login(&session, Identity::new("bench")).await.is_ok()
                                && session.insert("n", 1u64).await.is_ok()
                                && session.insert("cart", [1, 2, 3]).await.is_ok()
                                && session.insert("theme", "dark").await.is_ok();
                            if ok {
                                StatusCode::OK
                            } else {
                                StatusCode::INTERNAL_SERVER_ERROR
                            }
                        }),
                    )
                    .layer(SessionManagerLayer::new(store).with_name("sid"))
                    .layer(SessionContextLayer::new())
            }
            other => return Err(format!("unknown mode {other}").into()),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("axum {mode} on {port}");
        axum::serve(listener, app).await?;
        Ok(())
    })
}

fn actix_server(mode: &str, port: u16) -> Result<(), Box<dyn std::error::Error>> {
    use actix_session::{Session, SessionMiddleware};
    use actix_web::cookie::Key;
    use actix_web::{web, App, HttpResponse, HttpServer};
    use larder_session::actix::{self as s, RedisSessionStore, SessionContext};

    let mode = mode.to_owned();
    actix_web::rt::System::new().block_on(async move {
        let conn = if mode == "raw" {
            Some(raw_conn().await?)
        } else {
            None
        };
        let store = match mode.as_str() {
            "session" | "untouched" => Some(RedisSessionStore::new(sessions()?)),
            _ => None,
        };
        let key = Key::from(&[9u8; 64]);
        println!("actix {mode} on {port}");
        HttpServer::new(move || {
            let app = App::new();
            let mode = mode.clone();
            let conn = conn.clone();
            let session_routes = web::scope("")
                .route(
                    "/data",
                    web::get().to(move |session: Session| {
                        let read = mode == "session";
                        async move {
                            if !read || session.get::<u64>("n").ok().flatten().is_some() {
                                HttpResponse::Ok().body(BODY)
                            } else {
                                HttpResponse::Unauthorized().finish()
                            }
                        }
                    }),
                )
                .route(
                    "/login",
                    web::post().to(|session: Session| async move {
                        let ok = s::login(&session, &Identity::new("bench")).is_ok()
                            && session.insert("n", 1u64).is_ok()
                            && session.insert("cart", [1, 2, 3]).is_ok()
                            && session.insert("theme", "dark").is_ok();
                        if ok {
                            HttpResponse::Ok().finish()
                        } else {
                            HttpResponse::InternalServerError().finish()
                        }
                    }),
                );
            match (&store, conn) {
                (Some(store), _) => app.service(
                    session_routes
                        .wrap(
                            SessionMiddleware::builder(store.clone(), key.clone())
                                .cookie_name("sid".into())
                                .cookie_secure(false)
                                .build(),
                        )
                        .wrap(SessionContext::new()),
                ),
                (None, Some(conn)) => app.route(
                    "/data",
                    web::get().to(move || {
                        let mut conn = conn.clone();
                        async move {
                            let v: Result<Option<String>, _> = redis::cmd("GET")
                                .arg("bench:raw")
                                .query_async(&mut conn)
                                .await;
                            match v {
                                Ok(Some(_)) => HttpResponse::Ok().body(BODY),
                                _ => HttpResponse::InternalServerError().finish(),
                            }
                        }
                    }),
                ),
                (None, None) => app.route(
                    "/data",
                    web::get().to(|| async { HttpResponse::Ok().body(BODY) }),
                ),
            }
        })
        .workers(1)
        .bind(("127.0.0.1", port))?
        .run()
        .await?;
        Ok(())
    })
}
