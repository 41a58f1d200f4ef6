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
//! | `floor` | reads one value from the session, through tower-sessions or actix-session on a store that does nothing but one raw `GET` and hands back a ready-made session (no hashing, no decoding, no larder layer): the least any Redis-backed store can cost under these middlewares |
//! | `floor-own` | (Axum) `floor` under a minimal layer of the bench's own instead of `SessionManagerLayer`: the `Session` made straight from the `Cookie` header (no tower-cookies jar, nothing done on the response): what a leaner session layer could cost |
//! | `floor-signed` | (Actix) `floor` with signed instead of private (encrypted, actix-session's default) cookies |
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

/// The values `POST /login` stores (and the floor stores hand back ready-made).
fn floor_values() -> [(&'static str, serde_json::Value); 3] {
    [
        ("n", serde_json::json!(1)),
        ("cart", serde_json::json!([1, 2, 3])),
        ("theme", serde_json::json!("dark")),
    ]
}

/// The `floor` modes' store: one raw `GET` per load, then a clone of the session's
/// values, made once at start in the form the middleware keeps them (`V`).
#[derive(Debug, Clone)]
struct Floor<V> {
    conn: redis::aio::MultiplexedConnection,
    values: std::sync::Arc<std::collections::HashMap<String, V>>,
}

impl<V> Floor<V> {
    async fn connect(form: fn(serde_json::Value) -> V) -> Result<Self, Box<dyn std::error::Error>> {
        Ok(Self {
            conn: raw_conn().await?,
            values: std::sync::Arc::new(
                floor_values()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), form(v)))
                    .collect(),
            ),
        })
    }
}

/// tower-sessions keeps JSON values.
type FloorTowerStore = Floor<serde_json::Value>;

/// actix-session keeps each value as its JSON text.
type FloorActixStore = Floor<String>;

#[async_trait::async_trait]
impl tower_sessions::SessionStore for FloorTowerStore {
    async fn create(
        &self,
        _record: &mut tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        Ok(())
    }

    async fn save(
        &self,
        _record: &tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        Ok(())
    }

    async fn load(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<Option<tower_sessions::session::Record>> {
        let found = raw_get(&self.conn)
            .await
            .map_err(|e| tower_sessions::session_store::Error::Backend(e.to_string()))?;
        Ok(found.map(|_| tower_sessions::session::Record {
            id: *id,
            data: (*self.values).clone(),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        }))
    }

    async fn delete(
        &self,
        _id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<()> {
        Ok(())
    }
}

impl actix_session::storage::SessionStore for FloorActixStore {
    async fn load(
        &self,
        _key: &actix_session::storage::SessionKey,
    ) -> Result<Option<std::collections::HashMap<String, String>>, actix_session::storage::LoadError>
    {
        let found = raw_get(&self.conn)
            .await
            .map_err(|e| actix_session::storage::LoadError::Other(e.into()))?;
        Ok(found.map(|_| (*self.values).clone()))
    }

    async fn save(
        &self,
        _state: std::collections::HashMap<String, String>,
        _ttl: &actix_web::cookie::time::Duration,
    ) -> Result<actix_session::storage::SessionKey, actix_session::storage::SaveError> {
        actix_session::storage::SessionKey::try_from("floor".repeat(8))
            .map_err(|e| actix_session::storage::SaveError::Other(e.into()))
    }

    async fn update(
        &self,
        key: actix_session::storage::SessionKey,
        _state: std::collections::HashMap<String, String>,
        _ttl: &actix_web::cookie::time::Duration,
    ) -> Result<actix_session::storage::SessionKey, actix_session::storage::UpdateError> {
        Ok(key)
    }

    async fn update_ttl(
        &self,
        _key: &actix_session::storage::SessionKey,
        _ttl: &actix_web::cookie::time::Duration,
    ) -> Result<(), anyhow::Error> {
        Ok(())
    }

    async fn delete(&self, _key: &actix_session::storage::SessionKey) -> Result<(), anyhow::Error> {
        Ok(())
    }
}

/// The Axum session modes' `GET /data`: reads one value of the session.
async fn read_n(session: tower_sessions::Session) -> (axum::http::StatusCode, &'static str) {
    match session.get::<u64>("n").await {
        Ok(Some(_)) => (axum::http::StatusCode::OK, BODY),
        _ => (axum::http::StatusCode::UNAUTHORIZED, "{}"),
    }
}

/// The `floor-own` mode's layer: a `tower_sessions::Session` on the id the `sid`
/// cookie names, made straight from the `Cookie` header.
async fn own_session_layer(
    axum::extract::State(store): axum::extract::State<std::sync::Arc<FloorTowerStore>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let id = req
        .headers()
        .get(axum::http::header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').find_map(|p| p.trim().strip_prefix("sid=")))
        .and_then(|v| v.parse::<tower_sessions::session::Id>().ok());
    req.extensions_mut()
        .insert(tower_sessions::Session::new(id, store, None));
    next.run(req).await
}

/// The raw modes' one `GET` (the `raw` handlers' and the floor stores' round trip).
async fn raw_get(conn: &redis::aio::MultiplexedConnection) -> redis::RedisResult<Option<String>> {
    let mut conn = conn.clone();
    redis::cmd("GET")
        .arg("bench:raw")
        .query_async(&mut conn)
        .await
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
                        let conn = conn.clone();
                        async move {
                            match raw_get(&conn).await {
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
                    get(read_n)
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
            "floor" => {
                let store = FloorTowerStore::connect(|v| v).await?;
                Router::new()
                    .route("/data", get(read_n))
                    .route(
                        "/login",
                        post(|session: Session| async move {
                            match session.insert("n", 1u64).await {
                                Ok(()) => StatusCode::OK,
                                Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
                            }
                        }),
                    )
                    .layer(SessionManagerLayer::new(store).with_name("sid"))
            }
            "floor-own" => {
                let store = std::sync::Arc::new(FloorTowerStore::connect(|v| v).await?);
                Router::new()
                    .route("/data", get(read_n))
                    .route(
                        "/login",
                        post(|| async {
                            let id = tower_sessions::session::Id::default();
                            (
                                [(
                                    axum::http::header::SET_COOKIE,
                                    format!("sid={id}; Path=/; HttpOnly"),
                                )],
                                "",
                            )
                        }),
                    )
                    .layer(axum::middleware::from_fn_with_state(
                        store,
                        own_session_layer,
                    ))
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
    use actix_session::config::CookieContentSecurity;
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
        let floor = if mode.starts_with("floor") {
            Some(FloorActixStore::connect(|v| v.to_string()).await?)
        } else {
            None
        };
        let key = Key::from(&[9u8; 64]);
        println!("actix {mode} on {port}");
        HttpServer::new(move || {
            let app = App::new();
            let signed = mode == "floor-signed";
            let mode = mode.clone();
            let conn = conn.clone();
            let session_routes = web::scope("")
                .route(
                    "/data",
                    web::get().to(move |session: Session| {
                        let read = mode != "untouched";
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
            match (&store, &floor, conn) {
                (_, Some(floor), _) => app.service(
                    session_routes.wrap(
                        SessionMiddleware::builder(floor.clone(), key.clone())
                            .cookie_content_security(if signed {
                                CookieContentSecurity::Signed
                            } else {
                                CookieContentSecurity::Private
                            })
                            .cookie_name("sid".into())
                            .cookie_secure(false)
                            .build(),
                    ),
                ),
                (Some(store), _, _) => app.service(
                    session_routes
                        .wrap(
                            SessionMiddleware::builder(store.clone(), key.clone())
                                .cookie_name("sid".into())
                                .cookie_secure(false)
                                .build(),
                        )
                        .wrap(SessionContext::new()),
                ),
                (None, None, Some(conn)) => app.route(
                    "/data",
                    web::get().to(move || {
                        let conn = conn.clone();
                        async move {
                            match raw_get(&conn).await {
                                Ok(Some(_)) => HttpResponse::Ok().body(BODY),
                                _ => HttpResponse::InternalServerError().finish(),
                            }
                        }
                    }),
                ),
                (None, None, None) => app.route(
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
