//! The dashboard as an Actix-web scope.
//!
//! ```no_run
//! # fn demo(dashboard: larder_dashboard::Dashboard) {
//! let app = actix_web::App::new().service(larder_dashboard::actix::scope(dashboard));
//! # }
//! ```

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::{Dashboard, Reply, MAX_BODY};

/// Every page and endpoint of `dashboard`, as a scope at [`Dashboard::base`]. Register
/// it after any scope under the same prefix it should leave alone (larder-cache's
/// `/admin/cache`): Actix tries services in the order they were registered.
pub fn scope(dashboard: Dashboard) -> actix_web::Scope {
    let base = dashboard.base().to_owned();
    web::scope(&base)
        .app_data(web::PayloadConfig::new(MAX_BODY))
        .default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let path = req.match_info().unprocessed().to_owned();
            let reply = dashboard.handle(&req, &path, body);
            async move { respond(reply.await) }
        }))
}

fn respond(reply: Reply) -> HttpResponse {
    let mut response = HttpResponse::build(
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    response
        .content_type(reply.content_type)
        .insert_header(("cache-control", reply.cache_control));
    for header in Reply::SECURITY_HEADERS {
        response.insert_header(header);
    }
    if let Some(location) = reply.location {
        response.insert_header(("location", location));
    }
    if let Some(cookie) = reply.set_cookie {
        response.insert_header(("set-cookie", cookie));
    }
    response.body(reply.body)
}
