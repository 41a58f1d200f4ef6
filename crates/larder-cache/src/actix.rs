//! The response cache as Actix-web middleware, plus health and admin services.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use actix_web::{web, App, HttpResponse};
//! use larder_cache::actix::{admin_scope, health_resource, CacheMiddleware};
//! use larder_cache::admin::{Admin, BearerToken};
//! use larder_cache::{Cache, CacheRoute, ResponseCache};
//! use larder_core::Handle;
//!
//! let handle = Handle::from_env()?;
//! let cache = Cache::new(handle.clone());
//! let responses = ResponseCache::new(cache.clone()).route(CacheRoute::new("/balance", "balance")?);
//! let app = App::new()
//!     .service(health_resource(handle))
//!     .service(admin_scope(Admin::new(cache, BearerToken::new("s3cret"))))
//!     .service(
//!         web::scope("")
//!             .wrap(CacheMiddleware::new(responses))
//!             .route("/balance", web::get().to(|| async { HttpResponse::Ok().body("{}") })),
//!     );
//! # let _ = app; Ok(()) }
//! ```
//!
//! Redis trouble never becomes an error response: every outcome is the origin's
//! response or a cached one. A streamed body is read up to the size cap
//! (`ResponseCache::max_body`) and stored when it fits; a larger one is sent on
//! whole, unstored, as with the Tower layer.
//!
//! Stale-while-revalidate differs from the Tower layer in one way: Actix cannot
//! replay a request, so the first request after expiry refreshes the entry in the
//! foreground while concurrent requests for the key get the stale copy at once.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::FutureExt;
use larder_core::future::LocalBoxedOrReady;
use larder_core::Handle;

use crate::admin::Admin;
use crate::http::flow::{
    age_value, x_cache, After, Begin, Cached, CachedBody, OriginHead, Start, Ticket,
};
use crate::http::{field_value, Decision, LookupPlan, ResponseCache, StoredResponse, VALIDATORS};

/// Adds the response cache to an Actix-web app or scope.
#[derive(Debug, Clone)]
pub struct CacheMiddleware {
    cache: ResponseCache,
}

impl CacheMiddleware {
    /// Middleware serving `cache`.
    #[must_use]
    pub fn new(cache: ResponseCache) -> Self {
        Self { cache }
    }
}

impl<S, B> Transform<S, ServiceRequest> for CacheMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, BoxBody>>;
    type Error = actix_web::Error;
    type Transform = CacheMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CacheMiddlewareService {
            service: Rc::new(service),
            cache: self.cache.clone(),
        }))
    }
}

/// The service [`CacheMiddleware`] wraps around an app's service.
#[derive(Debug)]
pub struct CacheMiddlewareService<S> {
    service: Rc<S>,
    cache: ResponseCache,
}

impl<S, B> Service<ServiceRequest> for CacheMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, BoxBody>>;
    type Error = actix_web::Error;
    type Future = CacheFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let decision = self.cache.decide(req.request());
        let service = &self.service;
        // One future per decision, each boxed at its own size: a look-up's state is
        // not padded to hold the app's future of the bypass path.
        match decision {
            Decision::Lookup(plan) => match self.cache.start(&plan) {
                // Answered here: nothing boxed, the app's service not called.
                Start::Serve(cached) => CacheFuture::ready(Ok(req
                    .into_response(from_cache(cached))
                    .map_into_right_body())),
                // Settled without waiting (Redis out, or the in-process store): only
                // the app's part is boxed.
                Start::Fetch(ticket) => CacheFuture::Running(Box::pin(
                    fetch(self.cache.clone(), Rc::clone(service), req, plan, ticket).map(tag_miss),
                )),
                Start::Later(found) => {
                    let (cache, service) = (self.cache.clone(), Rc::clone(service));
                    CacheFuture::Running(Box::pin(async move {
                        match cache.begin(&plan, found).await {
                            Begin::Serve(cached, None) => {
                                Ok(req.into_response(from_cache(cached)).map_into_right_body())
                            }
                            // The origin's paths are boxed apart: a hit never takes
                            // them, and their state would make every look-up's future
                            // larger.
                            Begin::Serve(cached, Some(ticket)) => {
                                // Actix cannot replay a request and needs it unshared
                                // while routing, so this request refreshes the entry in
                                // the foreground; concurrent ones get the stale copy
                                // meanwhile.
                                let ticket = ticket.with_stale((cached.age_secs, cached.stored));
                                Box::pin(fetch(cache, service, req, plan, ticket)).await
                            }
                            Begin::Fetch(ticket) => {
                                tag_miss(Box::pin(fetch(cache, service, req, plan, ticket)).await)
                            }
                        }
                    }))
                }
            },
            Decision::Bypass {
                cached_route,
                reason,
            } => {
                let service = Rc::clone(service);
                CacheFuture::Running(Box::pin(async move {
                    let mut res = service.call(req).await?;
                    if cached_route {
                        tracing::debug!(target: "larder::cache", reason, "cache BYPASS");
                        set_x_cache(res.headers_mut(), x_cache::BYPASS);
                    }
                    Ok(res.map_into_left_body())
                }))
            }
            Decision::Invalidate { tenant, modules } => {
                let (cache, service) = (self.cache.clone(), Rc::clone(service));
                CacheFuture::Running(Box::pin(async move {
                    let res = service.call(req).await?;
                    if res.status().is_success() {
                        cache.invalidate_modules(&tenant, &modules).await;
                    }
                    Ok(res.map_into_left_body())
                }))
            }
        }
    }
}

/// The future of [`CacheMiddlewareService`]: a hit on an in-process tier answered at
/// once, or the look-up and the app's service.
pub type CacheFuture<T> = LocalBoxedOrReady<T>;

/// `X-Cache: MISS` on a response [`fetch`] passed on from the app untagged.
fn tag_miss<B>(
    res: Result<ServiceResponse<B>, actix_web::Error>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    res.map(|mut res| {
        if !res.headers().contains_key(X_CACHE) {
            set_x_cache(res.headers_mut(), x_cache::MISS);
        }
        res
    })
}

/// Calls the app's service for a look-up that did not answer, and passes its
/// response on or [`keep`]s it.
#[allow(clippy::manual_async_fn)] // see the comment in the body
fn fetch<S, B>(
    cache: ResponseCache,
    service: Rc<S>,
    mut req: ServiceRequest,
    plan: Box<LookupPlan>,
    mut ticket: Ticket,
) -> impl Future<Output = Result<ServiceResponse<EitherBody<B, BoxBody>>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    // A block, not an `async fn`: an `async fn` copies its arguments into its
    // body's locals, and its future holds both (the request twice).
    async move {
        let (cache, plan) = (&cache, &*plan);
        if ticket.fills() {
            for name in VALIDATORS {
                req.headers_mut().remove(name);
            }
        }
        let res = service.call(req).await;
        let after = {
            let header = |name: &str| {
                let res = res.as_ref().ok()?;
                field_value(res.headers().get_all(name).map(HeaderValue::as_bytes))
            };
            let head = res.as_ref().ok().map(|res| OriginHead {
                status: res.status().as_u16(),
                len: match res.response().body().size() {
                    BodySize::Sized(n) => Some(n),
                    BodySize::None => Some(0),
                    BodySize::Stream => None,
                },
                header: &header,
            });
            cache.after_origin(plan, &mut ticket, head)
        };
        let ttl = match after {
            After::Store(ttl) => ttl,
            After::Stale(stale) => {
                cache.finish(plan, ticket, None).await;
                return match res {
                    Ok(res) => {
                        let http_req = res.request().clone();
                        Ok(ServiceResponse::new(http_req, from_cache(stale)).map_into_right_body())
                    }
                    // The request went to the app (the router needs it alone), so the
                    // stale copy rides on the error as its response.
                    Err(e) => Err(InternalError::from_response(e, from_cache(stale)).into()),
                };
            }
            After::Send => {
                cache.finish(plan, ticket, None).await;
                return res.map(ServiceResponse::map_into_left_body);
            }
        };
        // `after_origin` says `Send` for an error.
        let res = res?;
        // Boxed apart: a response passed through (Redis out, nobody waiting) does not
        // carry the state of reading and storing the body.
        Box::pin(keep(cache, plan, ticket, ttl, res)).await
    }
}

/// Reads the app's body up to the limit, stores it (and hands it to the key's
/// followers), and returns the response to send.
async fn keep<B>(
    cache: &ResponseCache,
    plan: &LookupPlan,
    ticket: Ticket,
    ttl: Duration,
    res: ServiceResponse<B>,
) -> Result<ServiceResponse<EitherBody<B, BoxBody>>, actix_web::Error>
where
    B: MessageBody + 'static,
{
    let (http_req, response) = res.into_parts();
    let (mut head, body) = response.into_parts();
    // A streamed body is read up to the limit, as the Tower layer does: within it,
    // stored; over it, sent on as it comes (what was read, then the rest).
    let bytes = match buffer(body, cache.body_limit()).await {
        Buffered::Complete(bytes) => bytes,
        Buffered::TooLarge(prefix, mut rest) => {
            cache.not_stored(plan, ticket, "body over the limit").await;
            let rest = futures_util::stream::poll_fn(move |cx| rest.as_mut().poll_next(cx));
            let body = futures_util::StreamExt::chain(
                futures_util::stream::once(std::future::ready(Ok(prefix))),
                rest,
            );
            let response = head.set_body(BoxBody::new(actix_web::body::BodyStream::new(body)));
            return Ok(ServiceResponse::new(http_req, response).map_into_right_body());
        }
        Buffered::Failed(e) => {
            cache.not_stored(plan, ticket, "body failed").await;
            return Err(actix_web::error::ErrorInternalServerError(e));
        }
    };
    let headers = head
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    let stored = StoredResponse::new(head.status().as_u16(), headers, bytes.clone());
    let kept = cache.store(plan, ticket, ttl, stored).await;
    let body = if kept.not_modified {
        *head.status_mut() = StatusCode::NOT_MODIFIED;
        head.headers_mut()
            .remove(actix_web::http::header::CONTENT_LENGTH);
        BoxBody::new(())
    } else {
        BoxBody::new(bytes)
    };
    if let Some(etag) = kept.etag.and_then(|e| HeaderValue::from_bytes(&e).ok()) {
        head.headers_mut()
            .insert(actix_web::http::header::ETAG, etag);
    }
    let mut response = head.set_body(body);
    set_x_cache(response.headers_mut(), x_cache::MISS);
    Ok(ServiceResponse::new(http_req, response).map_into_right_body())
}

/// `X-Cache`, built at compile time (`from_static` outside a constant parses the
/// name on every call).
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn set_x_cache(headers: &mut actix_web::http::header::HeaderMap, value: &'static str) {
    headers.insert(X_CACHE, HeaderValue::from_static(value));
}

/// A response body read up to a limit.
enum Buffered<B> {
    /// All of it, within the limit.
    Complete(Bytes),
    /// Over the limit: what was read, and the rest still to come.
    TooLarge(Bytes, Pin<Box<B>>),
    /// The body failed.
    Failed(Box<dyn std::error::Error>),
}

async fn buffer<B: MessageBody>(body: B, limit: usize) -> Buffered<B> {
    let mut body = Box::pin(body);
    let mut buf = bytes::BytesMut::new();
    loop {
        if buf.len() > limit {
            return Buffered::TooLarge(buf.freeze(), body);
        }
        match std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
            None => return Buffered::Complete(buf.freeze()),
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => return Buffered::Failed(e.into()),
        }
    }
}

fn from_cache(cached: Cached) -> HttpResponse {
    let mut builder =
        HttpResponse::build(StatusCode::from_u16(cached.status()).unwrap_or(StatusCode::OK));
    // Converted to Actix's header types once per entry (reference-count increments
    // here).
    for (name, value) in cached.stored.actix_headers() {
        builder.append_header((name.clone(), value.clone()));
    }
    builder.insert_header((
        actix_web::http::header::AGE,
        age_value(cached.age_secs, HeaderValue::from_static),
    ));
    builder.insert_header((X_CACHE, HeaderValue::from_static(cached.x_cache)));
    match cached.body() {
        CachedBody::Empty => builder.finish(),
        CachedBody::HeadOf(len) => builder.no_chunking(len as u64).finish(),
        CachedBody::Full(bytes) => builder.body(bytes),
    }
}

fn json(status: u16, body: &impl serde::Serialize) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(Bytes::from(bytes))
}

/// `GET /health/cache`: always 200, with the handle's [`larder_core::HealthReport`],
/// probed at most once a second ([`larder_core::HealthProbe`]).
#[must_use]
pub fn health_resource(handle: Handle) -> actix_web::Resource {
    let probe = larder_core::HealthProbe::new(handle);
    web::resource("/health/cache").route(web::get().to(move || {
        let probe = probe.clone();
        async move { json(200, &probe.report().await) }
    }))
}

/// The admin endpoints under `/admin/cache/`, behind `admin`'s authorization hook.
#[must_use]
pub fn admin_scope(admin: Admin) -> actix_web::Scope {
    web::scope("/admin/cache").default_service(web::to(move |req: HttpRequest| {
        let reply = admin.handle(&req);
        async move {
            let reply = reply.await;
            json(reply.status, &reply.body)
        }
    }))
}
