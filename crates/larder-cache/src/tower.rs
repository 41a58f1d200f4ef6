//! The response cache as a Tower layer (Axum, hyper, tonic).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{routing::get, Router};
//! use larder_cache::tower::CacheLayer;
//! use larder_cache::{Cache, CacheRoute, InvalidateRoute, ResponseCache};
//! use larder_core::Handle;
//!
//! let cache = Cache::new(Handle::from_env()?);
//! let responses = ResponseCache::new(cache)
//!     .route(CacheRoute::new("/balance", "balance")?)
//!     .invalidate(InvalidateRoute::new("POST", "/sales", &["balance"])?);
//! let app: Router = Router::new()
//!     .route("/balance", get(|| async { "{}" }))
//!     .layer(CacheLayer::new(responses));
//! # Ok(()) }
//! ```
//!
//! Redis trouble never becomes a service error: `type Error = S::Error`, and every
//! outcome is the origin's response or a cached one. A body of unknown size (a
//! stream) is read up to the size limit and stored if it ends within it; a longer
//! one goes out as the part read so far followed by the rest, unstored (as with the
//! Actix middleware: both follow the flow in `http::flow`).
//!
//! # In front of the router
//!
//! Under `Router::layer` every request is routed before the cache sees it, hits
//! included. The cache matches its routes itself, so it can also wrap the whole
//! router, where a hit costs no routing (BENCHMARKS.md has the figure). Do this
//! only when nothing inside the router
//! must see every request (authentication, a check of the session's tenant): a hit
//! never reaches it.
//!
//! ```no_run
//! # async fn demo(responses: larder_cache::ResponseCache) -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{extract::Request, response::IntoResponse, routing::get, Router};
//! use larder_cache::tower::CacheLayer;
//! use tower::{Layer, ServiceExt};
//!
//! let router: Router = Router::new().route("/balance", get(|| async { "{}" }));
//! let app = ServiceExt::<Request>::map_response(
//!     CacheLayer::new(responses).layer(router),
//!     IntoResponse::into_response,
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, axum::ServiceExt::<Request>::into_make_service(app)).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use larder_core::future::{BoxedOrReady, MaybeReady};
use tower_layer::Layer;
use tower_service::Service;

use crate::http::flow::{
    age_value, x_cache, After, Begin, Cached, CachedBody, OriginHead, Start, Ticket,
};
use crate::http::{field_value, Decision, LookupPlan, ResponseCache, StoredResponse, VALIDATORS};
use crate::service::Found;

/// Adds the response cache to a service.
#[derive(Debug, Clone)]
pub struct CacheLayer {
    cache: ResponseCache,
}

impl CacheLayer {
    /// A layer serving `cache`.
    #[must_use]
    pub fn new(cache: ResponseCache) -> Self {
        Self { cache }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner: Arc::new(Mutex::new(inner)),
            cache: self.cache.clone(),
        }
    }
}

/// The response cache around an inner service. The response body must be `Unpin`
/// (Axum's and hyper's bodies are).
///
/// Like Axum's own routes, it is always ready, and clones the inner service (then
/// drives the clone to readiness) only for a request that goes to it: a cache hit
/// clones nothing, and cloning this service (which Axum does for every request) is
/// a reference-count increment.
#[derive(Debug, Clone)]
pub struct CacheService<S> {
    /// The inner service, only ever cloned (the lock is held for the clone).
    inner: Arc<Mutex<S>>,
    cache: ResponseCache,
}

/// A clone of the inner service, ready for one call.
async fn ready_clone<S: Service<R> + Clone, R>(template: &Mutex<S>) -> Result<S, S::Error> {
    let mut service = template
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    Ok(service)
}

/// The response future of [`CacheService`]: a hit on an in-process tier answered at
/// once, or the look-up and the inner service.
pub struct ResponseFuture<B: Body, E> {
    state: BoxedOrReady<Result<Response<CacheBody<B>>, E>>,
}

impl<B: Body, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("state", &self.state)
            .finish()
    }
}

impl<B: Body, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.state).poll(cx)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
    ResBody::Error: Send,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the clone's, awaited by the request that calls it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let decision = self.cache.decide(&parts);
        let inner = &self.inner;
        // One future per decision, each boxed at its own size: a look-up's state is
        // not padded to hold the origin's future of the bypass path (a hit allocates
        // and moves that state; test `a_look_up_does_not_carry_the_origins_future`).
        let running: RunningFuture<ResBody, S::Error> = match decision {
            Decision::Lookup(plan) => {
                match self.cache.start(&plan) {
                    // Answered here: the inner service is neither cloned nor called.
                    Start::Serve(cached) => {
                        return ResponseFuture {
                            state: MaybeReady::ready(Ok(from_cache(cached))),
                        }
                    }
                    // Settled without waiting (Redis out, or the in-process store):
                    // only the origin's part is boxed.
                    Start::Fetch(ticket) => Box::pin(
                        fetch(
                            self.cache.clone(),
                            Arc::clone(inner),
                            Request::from_parts(parts, body),
                            plan,
                            ticket,
                        )
                        .map(tag_miss),
                    ),
                    Start::Later(found) => Box::pin(serve(
                        self.cache.clone(),
                        Arc::clone(inner),
                        Request::from_parts(parts, body),
                        plan,
                        found,
                    )),
                }
            }
            Decision::Bypass {
                cached_route,
                reason,
            } => {
                let (req, inner) = (Request::from_parts(parts, body), Arc::clone(inner));
                Box::pin(async move {
                    let mut res = ready_clone(&inner)
                        .await?
                        .call(req)
                        .await?
                        .map(CacheBody::inner);
                    if cached_route {
                        tracing::debug!(target: "larder::cache", reason, "cache BYPASS");
                        set_x_cache(&mut res, x_cache::BYPASS);
                    }
                    Ok(res)
                })
            }
            Decision::Invalidate { tenant, modules } => {
                let (req, inner) = (Request::from_parts(parts, body), Arc::clone(inner));
                let cache = self.cache.clone();
                Box::pin(async move {
                    let res = ready_clone(&inner).await?.call(req).await?;
                    if res.status().is_success() {
                        cache.invalidate_modules(&tenant, &modules).await;
                    }
                    Ok(res.map(CacheBody::inner))
                })
            }
        };
        ResponseFuture {
            state: MaybeReady::Running(running),
        }
    }
}

/// The boxed future of a request the adapter could not answer in `call`.
type RunningFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, E>> + Send>>;

#[allow(clippy::manual_async_fn)] // a block, as `fetch` is
fn serve<S, ReqBody, ResBody>(
    cache: ResponseCache,
    inner: Arc<Mutex<S>>,
    req: Request<ReqBody>,
    plan: Box<LookupPlan>,
    found: Option<Found>,
) -> impl Future<Output = Result<Response<CacheBody<ResBody>>, S::Error>>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
    ResBody::Error: Send,
{
    async move {
        match cache.begin(&plan, found).await {
            Begin::Serve(cached, refresh) => {
                if let Some(ticket) = refresh {
                    let refresh_req = replay(&req);
                    // The refreshed response goes to the cache only; errors are dropped.
                    tokio::spawn(fetch(cache, inner, refresh_req, plan, ticket));
                }
                Ok(from_cache(cached))
            }
            // Boxed apart: the miss path's state is large, and neither it nor the
            // look-up's outcome is kept in the state of a hit.
            Begin::Fetch(ticket) => {
                tag_miss(Box::pin(fetch(cache, inner, req, plan, ticket)).await)
            }
        }
    }
}

/// `X-Cache: MISS` on a response [`fetch`] passed on from the origin untagged.
fn tag_miss<B, E>(res: Result<Response<B>, E>) -> Result<Response<B>, E> {
    res.map(|mut res| {
        if res.headers().get(X_CACHE).is_none() {
            set_x_cache(&mut res, x_cache::MISS);
        }
        res
    })
}

/// Calls the origin, stores what may be stored, and returns the response.
#[allow(clippy::manual_async_fn)] // see the comment in the body
fn fetch<S, ReqBody, ResBody>(
    cache: ResponseCache,
    inner: Arc<Mutex<S>>,
    mut req: Request<ReqBody>,
    plan: Box<LookupPlan>,
    mut ticket: Ticket,
) -> impl Future<Output = Result<Response<CacheBody<ResBody>>, S::Error>>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send,
    ResBody: Body<Data = Bytes> + Unpin + Send,
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
        let res = match ready_clone(&inner).await {
            Ok(mut service) => service.call(req).await,
            Err(e) => Err(e),
        };
        let after = {
            let header = |name: &str| {
                let res = res.as_ref().ok()?;
                field_value(
                    res.headers()
                        .get_all(name)
                        .iter()
                        .map(HeaderValue::as_bytes),
                )
            };
            let head = res.as_ref().ok().map(|res| OriginHead {
                status: res.status().as_u16(),
                len: res.body().size_hint().exact(),
                header: &header,
            });
            cache.after_origin(plan, &mut ticket, head)
        };
        let ttl = match after {
            After::Store(ttl) => ttl,
            After::Stale(stale) => {
                cache.finish(plan, ticket, None).await;
                return Ok(from_cache(stale));
            }
            After::Send => {
                cache.finish(plan, ticket, None).await;
                return res.map(|res| res.map(CacheBody::inner));
            }
        };
        let res = match res {
            Ok(res) => res,
            // `after_origin` says `Send` for an error.
            Err(e) => return Err(e),
        };
        // Boxed apart: a response passed through (Redis out, nobody waiting) does not
        // carry the state of buffering and storing.
        Ok(Box::pin(keep(cache, plan, ticket, ttl, res)).await)
    }
}

/// Reads the origin's body up to the limit, stores it (and hands it to the key's
/// followers), and returns the response to send.
async fn keep<ResBody>(
    cache: &ResponseCache,
    plan: &LookupPlan,
    ticket: Ticket,
    ttl: Duration,
    res: Response<ResBody>,
) -> Response<CacheBody<ResBody>>
where
    ResBody: Body<Data = Bytes> + Unpin + Send,
{
    let (mut parts, body) = res.into_parts();
    let bytes = match buffer(body, cache.body_limit()).await {
        Buffered::Complete(bytes) => bytes,
        Buffered::TooLarge(prefix, rest) => {
            cache.not_stored(plan, ticket, "body over the limit").await;
            return Response::from_parts(parts, CacheBody::prefixed(prefix, rest));
        }
        Buffered::Failed(prefix, error) => {
            cache.not_stored(plan, ticket, "body failed").await;
            return Response::from_parts(parts, CacheBody::failed(prefix, error));
        }
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    let stored = StoredResponse::new(parts.status.as_u16(), headers, bytes.clone());
    let kept = cache.store(plan, ticket, ttl, stored).await;
    let body = if kept.not_modified {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(http::header::CONTENT_LENGTH);
        Bytes::new()
    } else {
        bytes
    };
    if let Some(etag) = kept.etag.and_then(|e| HeaderValue::from_bytes(&e).ok()) {
        parts.headers.insert(http::header::ETAG, etag);
    }
    let mut res = Response::from_parts(parts, CacheBody::full(body));
    set_x_cache(&mut res, x_cache::MISS);
    res
}

/// A body-less copy of a `GET`, for a background refresh.
fn replay<B: Default>(req: &Request<B>) -> Request<B> {
    let mut copy = Request::new(B::default());
    *copy.method_mut() = http::Method::GET;
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// `X-Cache`, built at compile time (`from_static` outside a constant parses the
/// name on every call).
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn set_x_cache<B>(res: &mut Response<B>, value: &'static str) {
    res.headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(value));
}

fn from_cache<B: Body>(cached: Cached) -> Response<CacheBody<B>> {
    let (body, head_length) = match cached.body() {
        CachedBody::Empty => (CacheBody::full(Bytes::new()), None),
        CachedBody::HeadOf(len) => (CacheBody::full(Bytes::new()), Some(len)),
        CachedBody::Full(bytes) => (CacheBody::full(bytes), None),
    };
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::from_u16(cached.status()).unwrap_or(StatusCode::OK);
    let stored = &cached.stored.headers;
    let headers = res.headers_mut();
    headers.reserve(stored.len() + 3);
    // Stored names and values are already parsed, and values share the stored
    // bytes: these are reference-count increments, not copies.
    for (name, value) in stored {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(
        http::header::AGE,
        age_value(cached.age_secs, HeaderValue::from_static),
    );
    if let Some(len) = head_length {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    set_x_cache(&mut res, cached.x_cache);
    res
}

enum Buffered<B: Body> {
    Complete(Bytes),
    TooLarge(Bytes, B),
    Failed(Bytes, B::Error),
}

async fn buffer<B: Body<Data = Bytes> + Unpin>(mut body: B, limit: usize) -> Buffered<B> {
    let mut buf = BytesMut::new();
    loop {
        if buf.len() > limit {
            return Buffered::TooLarge(buf.freeze(), body);
        }
        match body.frame().await {
            None => return Buffered::Complete(buf.freeze()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Buffered::Failed(buf.freeze(), e),
        }
    }
}

pin_project_lite::pin_project! {
    /// The body of a response through the cache: a stored body, the origin's body,
    /// or (for bodies over the size limit) the part read so far and the rest.
    pub struct CacheBody<B: Body> {
        prefix: Option<Bytes>,
        error: Option<B::Error>,
        #[pin]
        rest: Option<B>,
    }
}

impl<B: Body> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBody")
            .field("prefix", &self.prefix.as_ref().map(Bytes::len))
            .field("streaming", &self.rest.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> CacheBody<B> {
    fn full(bytes: Bytes) -> Self {
        Self {
            prefix: (!bytes.is_empty()).then_some(bytes),
            error: None,
            rest: None,
        }
    }

    fn inner(body: B) -> Self {
        Self {
            prefix: None,
            error: None,
            rest: Some(body),
        }
    }

    fn prefixed(prefix: Bytes, rest: B) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            error: None,
            rest: Some(rest),
        }
    }

    fn failed(prefix: Bytes, error: B::Error) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            error: Some(error),
            rest: None,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for CacheBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(e) = this.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match this.rest.as_pin_mut() {
            Some(rest) => rest.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, Bytes::len) as u64;
        match &self.rest {
            Some(rest) if self.prefix.is_none() => rest.size_hint(),
            Some(_) => SizeHint::default(),
            None => SizeHint::with_exact(prefix),
        }
    }
}
