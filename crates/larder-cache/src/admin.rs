//! Health and admin endpoints, framework-free; the `axum` and `actix` modules mount
//! them.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /health/cache` | always 200: [`larder_core::HealthReport`] |
//! | `GET /admin/cache/stats` | [`Stats`](crate::Stats) |
//! | `POST /admin/cache/invalidate/{key}` | deletes one full key under the prefix |
//! | `POST /admin/cache/invalidate-pattern/{pattern}` | SCAN + UNLINK of a glob relative to the prefix |
//! | `POST /admin/cache/invalidate-module/{tenant}/{module}` | O(1) module invalidation |
//! | `POST /admin/cache/clear` | deletes everything under the prefix |
//!
//! Nothing admin is reachable without an authorization hook: mounting needs an
//! [`Authorize`] value, and a request it refuses gets 401 before anything runs.

use std::sync::Arc;

use larder_core::{Module, Tenant};
use serde_json::json;

use crate::http::RequestView;
use crate::Cache;

pub use larder_core::auth::{Authorize, BearerToken};

/// An admin reply: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: serde_json::Value,
}

impl Reply {
    fn ok(body: serde_json::Value) -> Self {
        Self { status: 200, body }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": message.into() }),
        }
    }
}

/// The admin endpoints over one cache, behind an authorization hook.
#[derive(Clone)]
pub struct Admin {
    cache: Cache,
    authorize: Arc<dyn Authorize>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// Admin endpoints for `cache`, open only to requests `authorize` accepts.
    #[must_use]
    pub fn new(cache: Cache, authorize: impl Authorize) -> Self {
        Self {
            cache,
            authorize: Arc::new(authorize),
        }
    }

    /// Handles a request whose path starts with `/admin/cache/`. The request is read
    /// before the returned future runs, so the future is `Send + 'static`.
    pub fn handle(
        &self,
        req: &dyn RequestView,
    ) -> impl std::future::Future<Output = Reply> + Send + 'static {
        let authorized = self.authorize.authorize(req);
        let method = req.method().to_owned();
        let path = req.path().to_owned();
        let this = self.clone();
        async move {
            if !authorized {
                return Reply::error(401, "unauthorized");
            }
            this.dispatch(&method, &path).await
        }
    }

    async fn dispatch(&self, method: &str, path: &str) -> Reply {
        let Some(rest) = path.strip_prefix("/admin/cache/") else {
            return Reply::error(404, "not found");
        };
        let decoded: Vec<String> = rest.split('/').map(percent_decode).collect();
        let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
        match (method, parts.as_slice()) {
            ("GET", ["stats"]) => match serde_json::to_value(self.cache.stats().await) {
                Ok(v) => Reply::ok(v),
                Err(e) => {
                    tracing::error!(target: "larder::cache", error = %e, "cache stats not serialisable");
                    Reply::error(500, "internal error")
                }
            },
            ("POST", ["invalidate", key]) if !key.is_empty() => {
                let deleted = self.cache.delete_full_key(key).await;
                Reply::ok(json!({ "key": key, "deleted": deleted }))
            }
            ("POST", ["invalidate-pattern", pattern]) => {
                match self.cache.invalidate_glob(pattern).await {
                    Ok(Some(n)) => Reply::ok(json!({ "pattern": pattern, "deleted": n })),
                    Ok(None) => Reply::error(503, "redis unavailable"),
                    Err(e) => Reply::error(400, e.to_string()),
                }
            }
            ("POST", ["invalidate-module", tenant, module]) => {
                let (tenant, module) = match (Tenant::new(tenant), Module::new(module)) {
                    (Ok(t), Ok(m)) => (t, m),
                    (Err(e), _) | (_, Err(e)) => return Reply::error(400, e.to_string()),
                };
                let ok = self.cache.invalidate_module(&tenant, &module).await;
                if ok {
                    Reply::ok(json!({ "tenant": tenant, "module": module, "invalidated": true }))
                } else {
                    Reply::error(503, "redis unavailable")
                }
            }
            ("POST", ["clear"]) => match self.cache.clear().await {
                Some(n) => Reply::ok(json!({ "deleted": n })),
                None => Reply::error(503, "redis unavailable"),
            },
            (
                _,
                ["stats" | "invalidate" | "invalidate-pattern" | "invalidate-module" | "clear", ..],
            ) => Reply::error(405, "method not allowed"),
            _ => Reply::error(404, "not found"),
        }
    }
}

/// Decodes `%XX` escapes in a path segment.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("tenant:%7B1%7D:*"), "tenant:{1}:*");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz\u{e9}"), "%zz\u{e9}");
    }
}
