//! Rate limits as a Tower layer (Axum, hyper, tonic).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::SocketAddr;
//! use axum::{routing::get, Router};
//! use larder_core::Handle;
//! use larder_ratelimit::tower::RateLimitLayer;
//! use larder_ratelimit::{Policy, RateLimit, RateLimiter};
//!
//! let limits = RateLimit::new(RateLimiter::new(Handle::from_env()?))
//!     .policy(Policy::new("ip", "100/minute")?)
//!     .exempt_prefix("/health/");
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(RateLimitLayer::new(limits));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // The peer address is what per-IP limits count by.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! The decision is made in `call`, never in `poll_ready`: a 429 is a response, not
//! back-pressure. Redis trouble never becomes a service error (`type Error =
//! S::Error`); each policy's fail mode answers instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{Either, Full};
use larder_core::future::{BoxedOrReady, MaybeReady};
use tower_layer::Layer;
use tower_service::Service;

use crate::http::{RateLimit, Rejection, Verdict};

/// Adds rate limits to a service.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limits: RateLimit,
}

impl RateLimitLayer {
    /// A layer applying `limits`.
    #[must_use]
    pub fn new(limits: RateLimit) -> Self {
        Self { limits }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// Rate limits around an inner service.
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limits: RateLimit,
}

/// The response body: the inner service's, or a rejection's JSON.
pub type RateLimitBody<B> = Either<B, Full<Bytes>>;

/// The response future of [`RateLimitService`]: the limiter's round trip and the
/// inner service, or a rejection made at once by the local pre-check.
pub struct ResponseFuture<B, E> {
    state: BoxedOrReady<Result<Response<RateLimitBody<B>>, E>>,
}

impl<B, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("state", &self.state)
            .finish()
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<RateLimitBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.state).poll(cx)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<RateLimitBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let plan = self.limits.plan(&parts);
        let plan = match plan.reject_locally() {
            // Answered here: the inner service is neither cloned nor called (its
            // readiness stays for the next request).
            Ok(rejection) => {
                return ResponseFuture {
                    state: MaybeReady::ready(Ok(rejected(rejection))),
                }
            }
            Err(plan) => plan,
        };
        let req = Request::from_parts(parts, body);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: MaybeReady::Running(Box::pin(async move {
                if plan.is_empty() {
                    return Ok(inner.call(req).await?.map(Either::Left));
                }
                match plan.run().await {
                    Verdict::Pass { headers } => {
                        let mut res = inner.call(req).await?;
                        insert_headers(res.headers_mut(), headers);
                        Ok(res.map(Either::Left))
                    }
                    Verdict::Reject(rejection) => Ok(rejected(rejection)),
                }
            })),
        }
    }
}

fn rejected<B>(rejection: Rejection) -> Response<RateLimitBody<B>> {
    let mut res = Response::new(Either::Right(Full::new(rejection.body)));
    *res.status_mut() =
        StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    insert_headers(res.headers_mut(), rejection.headers);
    res
}

fn insert_headers(map: &mut HeaderMap, headers: Vec<(&'static str, Bytes)>) {
    map.reserve(headers.len());
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
            map.insert(header_name(name), value);
        }
    }
}

/// The names the limiter sends, without parsing them per response.
fn header_name(name: &'static str) -> HeaderName {
    const RATELIMIT_POLICY: HeaderName = HeaderName::from_static(crate::http::RATELIMIT_POLICY);
    const RATELIMIT: HeaderName = HeaderName::from_static(crate::http::RATELIMIT);
    match name {
        crate::http::RETRY_AFTER => http::header::RETRY_AFTER,
        "content-type" => http::header::CONTENT_TYPE,
        crate::http::RATELIMIT_POLICY => RATELIMIT_POLICY,
        crate::http::RATELIMIT => RATELIMIT,
        other => HeaderName::from_static(other),
    }
}
