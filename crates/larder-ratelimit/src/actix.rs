//! Rate limits as Actix-web middleware.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use actix_web::{web, App, HttpResponse};
//! use larder_core::Handle;
//! use larder_ratelimit::actix::RateLimitMiddleware;
//! use larder_ratelimit::{Policy, RateLimit, RateLimiter};
//!
//! let limits = RateLimit::new(RateLimiter::new(Handle::from_env()?))
//!     .policy(Policy::new("ip", "100/minute")?)
//!     .route("POST", "/login", Policy::new("login", "5/minute")?);
//! let app = App::new()
//!     .wrap(RateLimitMiddleware::new(limits))
//!     .route("/", web::get().to(|| async { HttpResponse::Ok().body("hello") }));
//! # let _ = app; Ok(()) }
//! ```
//!
//! The peer address is the connection's (`HttpRequest::peer_addr`). Redis trouble
//! never becomes an error response: each policy's fail mode answers instead.

use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use larder_core::future::LocalBoxedOrReady;

use crate::http::{RateLimit, Rejection, Verdict};

/// Adds rate limits to an Actix-web app or scope.
#[derive(Debug, Clone)]
pub struct RateLimitMiddleware {
    limits: RateLimit,
}

impl RateLimitMiddleware {
    /// Middleware applying `limits`.
    #[must_use]
    pub fn new(limits: RateLimit) -> Self {
        Self { limits }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RateLimitMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, BoxBody>>;
    type Error = actix_web::Error;
    type Transform = RateLimitMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RateLimitMiddlewareService {
            service: Rc::new(service),
            limits: self.limits.clone(),
        }))
    }
}

/// The service [`RateLimitMiddleware`] wraps around an app's service.
#[derive(Debug)]
pub struct RateLimitMiddlewareService<S> {
    service: Rc<S>,
    limits: RateLimit,
}

impl<S, B> Service<ServiceRequest> for RateLimitMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, BoxBody>>;
    type Error = actix_web::Error;
    type Future = RateLimitFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let plan = match self.limits.plan(req.request()).reject_locally() {
            // Rejected by the local pre-check: answered now, nothing boxed.
            Ok(rejection) => {
                return RateLimitFuture::ready(Ok(req
                    .into_response(rejected(rejection))
                    .map_into_right_body()))
            }
            Err(plan) => plan,
        };
        let service = Rc::clone(&self.service);
        RateLimitFuture::Running(Box::pin(async move {
            if plan.is_empty() {
                return Ok(service.call(req).await?.map_into_left_body());
            }
            match plan.run().await {
                Verdict::Pass { headers } => {
                    let mut res = service.call(req).await?;
                    let map = res.headers_mut();
                    for (name, value) in headers {
                        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
                            map.insert(header_name(name), value);
                        }
                    }
                    Ok(res.map_into_left_body())
                }
                Verdict::Reject(rejection) => {
                    Ok(req.into_response(rejected(rejection)).map_into_right_body())
                }
            }
        }))
    }
}

fn rejected(rejection: Rejection) -> HttpResponse {
    let mut builder = HttpResponse::build(
        StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
    );
    for (name, value) in rejection.headers {
        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
            builder.insert_header((header_name(name), value));
        }
    }
    builder.body(rejection.body)
}

/// The future of [`RateLimitMiddlewareService`]: the limiter's round trip and the
/// app's service, or a rejection made at once by the local pre-check.
pub type RateLimitFuture<T> = LocalBoxedOrReady<T>;

/// The names the limiter sends, without parsing them per response.
fn header_name(name: &'static str) -> HeaderName {
    const RATELIMIT_POLICY: HeaderName = HeaderName::from_static(crate::http::RATELIMIT_POLICY);
    const RATELIMIT: HeaderName = HeaderName::from_static(crate::http::RATELIMIT);
    match name {
        crate::http::RETRY_AFTER => actix_web::http::header::RETRY_AFTER,
        "content-type" => actix_web::http::header::CONTENT_TYPE,
        crate::http::RATELIMIT_POLICY => RATELIMIT_POLICY,
        crate::http::RATELIMIT => RATELIMIT,
        other => HeaderName::from_static(other),
    }
}
