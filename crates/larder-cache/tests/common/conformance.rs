//! One test body for both adapters: what the docs promise of the response cache,
//! checked against the Tower layer (`tests/axum.rs`) and the Actix middleware
//! (`tests/actix.rs`), each through its framework's test harness.
//!
//! Each adapter's test file builds its conformance app with the same routes and
//! settings:
//!
//! | route | answers |
//! | --- | --- |
//! | `GET /small` | 300 bytes, streamed in three chunks (no length up front) |
//! | `GET /big` | 5,000 bytes, streamed in ten chunks: over the 1,024-byte cap |
//! | `GET /short` | `v1`, kept 300 ms; a 500 while the [`Origin`] is `failing` |
//! | `GET /whoami` | the request's `X-Tenant-Id` (module `balance`); counts the [`Origin`]'s calls |
//! | `POST /sales` | 201; invalidates the tenant's `balance` |
//! | `GET /health/cache` | the health report |
//!
//! with a 60 s stale window and stale-while-revalidate on.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::atomic::Ordering;
use std::time::Duration;

use larder_cache::{Cache, CacheRoute, InvalidateRoute, ResponseCache};
use larder_core::Handle;

use super::{Origin, T1, T2};

/// The size cap of the conformance apps' cache.
pub(crate) const MAX_BODY: usize = 1024;

/// The conformance apps' response cache on `handle`: the routes of the table
/// above, a 60 s stale window, stale-while-revalidate on.
pub(crate) fn responses(handle: &Handle) -> ResponseCache {
    let mut cache = Cache::new(handle.clone());
    let mut settings = cache.settings().clone();
    settings.stale_window = Duration::from_secs(60);
    cache = cache.with_settings(settings);
    ResponseCache::new(cache)
        .route(CacheRoute::new("/small", "misc").unwrap())
        .route(CacheRoute::new("/big", "misc").unwrap())
        .route(
            CacheRoute::new("/short", "balance")
                .unwrap()
                .ttl(Duration::from_millis(300)),
        )
        .route(CacheRoute::new("/whoami", "balance").unwrap())
        .invalidate(InvalidateRoute::new("POST", "/sales", &["balance"]).unwrap())
        .max_body(MAX_BODY)
        .stale_while_revalidate(true)
}

/// A reply, as either harness gives it.
#[derive(Debug)]
pub(crate) struct Got {
    pub(crate) status: u16,
    pub(crate) x_cache: String,
    pub(crate) etag: Option<String>,
    pub(crate) body: Vec<u8>,
}

/// What a scenario needs of an app. (`async fn`: the Actix harness is not `Send`.)
#[allow(async_fn_in_trait)]
pub(crate) trait Client {
    /// Sends a request with headers.
    async fn send(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Got;
}

/// A streamed body within the cap is stored: MISS, then HIT with the same bytes,
/// an `ETag`, a 304 for `If-None-Match`, and a body-less `HEAD`.
pub(crate) async fn streamed_bodies_within_the_cap_are_stored(app: &impl Client) {
    let first = app.send("GET", "/small", &[T1]).await;
    assert_eq!(
        (first.status, first.x_cache.as_str()),
        (200, "MISS"),
        "{first:?}"
    );
    assert_eq!(first.body, vec![b'x'; 300]);
    let second = app.send("GET", "/small", &[T1]).await;
    assert_eq!(
        (second.x_cache.as_str(), &second.body),
        ("HIT", &first.body)
    );
    let etag = second.etag.clone().expect("a stored response has an ETag");
    let not_modified = app
        .send("GET", "/small", &[T1, ("if-none-match", etag.as_str())])
        .await;
    assert_eq!((not_modified.status, not_modified.body.len()), (304, 0));
    let head = app.send("HEAD", "/small", &[T1]).await;
    assert_eq!(
        (head.status, head.x_cache.as_str(), head.body.len()),
        (200, "HIT", 0)
    );
}

/// A streamed body over the cap is sent on whole (what was read, then the rest)
/// and never stored.
pub(crate) async fn streamed_bodies_over_the_cap_pass_whole(app: &impl Client) {
    for _ in 0..2 {
        let big = app.send("GET", "/big", &[T1]).await;
        assert_eq!(big.status, 200);
        assert!(big.body.len() > MAX_BODY);
        assert_eq!(big.body, vec![b'x'; 5000], "passed on whole");
        assert_ne!(big.x_cache, "HIT");
    }
}

/// When the origin fails (a 5xx) and a stale copy is inside its window, the
/// client gets the copy, marked `STALE`.
pub(crate) async fn stale_copies_stand_in_for_a_failing_origin(app: &impl Client, origin: &Origin) {
    let failing = &origin.failing;
    let first = app.send("GET", "/short", &[T1]).await;
    assert_eq!(
        (first.x_cache.as_str(), first.body.as_slice()),
        ("MISS", &b"v1"[..])
    );
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = app
        .send("GET", "/short", &[T1, ("cache-control", "no-cache")])
        .await;
    assert_eq!(
        (r.status, r.x_cache.as_str(), r.body.as_slice()),
        (200, "STALE", &b"v1"[..])
    );
    failing.store(false, Ordering::SeqCst);
}

/// Entries are the tenant's own, and a successful write invalidates the modules
/// its rule names for its tenant only.
pub(crate) async fn tenants_are_apart_and_writes_invalidate_their_own(app: &impl Client) {
    for (tenant, id) in [(T1, "1"), (T2, "2")] {
        let r = app.send("GET", "/whoami", &[tenant]).await;
        assert_eq!(
            (r.x_cache.as_str(), r.body.as_slice()),
            ("MISS", id.as_bytes())
        );
    }
    let again = app.send("GET", "/whoami", &[T1]).await;
    assert_eq!(
        (again.x_cache.as_str(), again.body.as_slice()),
        ("HIT", &b"1"[..])
    );
    assert_eq!(app.send("POST", "/sales", &[T1]).await.status, 201);
    assert_eq!(app.send("GET", "/whoami", &[T1]).await.x_cache, "MISS");
    let other = app.send("GET", "/whoami", &[T2]).await;
    assert_eq!(
        (other.x_cache.as_str(), other.body.as_slice()),
        ("HIT", &b"2"[..])
    );
}

/// Concurrent misses of one key make one origin call, and all get its answer.
pub(crate) async fn concurrent_misses_reach_the_origin_once(app: &impl Client, origin: &Origin) {
    let replies =
        futures_util::future::join_all((0..20).map(|_| app.send("GET", "/whoami", &[T1]))).await;
    assert!(
        replies.iter().all(|r| r.status == 200 && r.body == b"1"),
        "{replies:?}"
    );
    assert_eq!(origin.calls(), 1);
}

/// Without Redis the cache runs in process: misses, hits and invalidation work,
/// and health says so.
pub(crate) async fn without_redis_the_cache_runs_in_process(app: &impl Client) {
    assert_eq!(app.send("GET", "/whoami", &[T1]).await.x_cache, "MISS");
    assert_eq!(app.send("GET", "/whoami", &[T1]).await.x_cache, "HIT");
    assert_eq!(app.send("POST", "/sales", &[T1]).await.status, 201);
    assert_eq!(app.send("GET", "/whoami", &[T1]).await.x_cache, "MISS");
    let health = app.send("GET", "/health/cache", &[]).await;
    let json: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(
        (json["status"].as_str(), json["cache"].as_str()),
        (Some("ok"), Some("in_process"))
    );
}
