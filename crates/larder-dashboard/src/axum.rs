//! The dashboard as an Axum router, to merge into the app's.
//!
//! ```no_run
//! # fn demo(dashboard: larder_dashboard::Dashboard) {
//! let app: axum::Router = axum::Router::new()
//!     .merge(larder_dashboard::axum::router(dashboard));
//! # }
//! ```

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;

use crate::{Dashboard, Reply, MAX_BODY};

/// Every page and endpoint of `dashboard`, at [`Dashboard::base`] (`/admin`,
/// `/admin/` and below): merge it into the app's router. (Not `nest`: a nested
/// router cannot answer `/admin/`.)
pub fn router<S: Clone + Send + Sync + 'static>(dashboard: Dashboard) -> Router<S> {
    let base = dashboard.base().to_owned();
    let serve = move |req: Request| {
        let dashboard = dashboard.clone();
        async move {
            let (parts, body) = req.into_parts();
            let Ok(body) = to_bytes(body, MAX_BODY).await else {
                return respond(Reply::json_error(413, "request body too large"));
            };
            let path = parts
                .uri
                .path()
                .strip_prefix(dashboard.base())
                .unwrap_or_default()
                .to_owned();
            respond(dashboard.handle(&parts, &path, body).await)
        }
    };
    let root = if base.is_empty() { "/" } else { &base };
    let router = Router::new().route(root, any(serve.clone()));
    let router = if base.is_empty() {
        router
    } else {
        router.route(&format!("{base}/"), any(serve.clone()))
    };
    router.route(&format!("{base}/{{*rest}}"), any(serve))
}

fn respond(reply: Reply) -> Response {
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(reply.cache_control),
    );
    for (name, value) in Reply::SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    for (name, value) in [
        (header::LOCATION, reply.location),
        (header::SET_COOKIE, reply.set_cookie),
    ] {
        if let Some(value) = value.and_then(|v| HeaderValue::try_from(v).ok()) {
            headers.insert(name, value);
        }
    }
    response
}
