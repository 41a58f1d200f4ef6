//! Which paths are cached, and which writes invalidate what.

use std::time::Duration;

use larder_core::request::PathPattern;
use larder_core::{KeyError, Module};

/// A cached route: `GET` (and `HEAD`) responses of matching paths are stored in
/// `module`.
#[derive(Debug, Clone)]
pub struct CacheRoute {
    pattern: PathPattern,
    pub(crate) module: Module,
    pub(crate) ttl: Option<Duration>,
    pub(crate) allow_authorization: bool,
}

impl CacheRoute {
    /// Caches paths matching `pattern` in `module`, for the module's TTL.
    ///
    /// # Errors
    /// [`KeyError`] when `module` is not a valid module name.
    pub fn new(pattern: &str, module: &str) -> Result<Self, KeyError> {
        Ok(Self {
            pattern: PathPattern::parse(pattern),
            module: Module::new(module)?,
            ttl: None,
            allow_authorization: false,
        })
    }

    /// Overrides the module's TTL for this route.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Caches requests that carry `Authorization` (shared by everyone of the tenant:
    /// only for responses that do not depend on the caller).
    #[must_use]
    pub fn allow_authorization(mut self) -> Self {
        self.allow_authorization = true;
        self
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        self.pattern.matches(path)
    }
}

/// An invalidation rule: a 2xx response to `method` on a matching path invalidates
/// `modules` for the request's tenant (`POST /sales` -> `balance`, `products`).
#[derive(Debug, Clone)]
pub struct InvalidateRoute {
    method: String,
    pattern: PathPattern,
    pub(crate) modules: Vec<Module>,
}

impl InvalidateRoute {
    /// A rule for `method` (`POST`, `PUT`, `PATCH`, `DELETE`) on `pattern`.
    ///
    /// # Errors
    /// [`KeyError`] when a module name is invalid.
    pub fn new(method: &str, pattern: &str, modules: &[&str]) -> Result<Self, KeyError> {
        Ok(Self {
            method: method.to_ascii_uppercase(),
            pattern: PathPattern::parse(pattern),
            modules: modules.iter().map(Module::new).collect::<Result<_, _>>()?,
        })
    }

    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        self.method == method && self.pattern.matches(path)
    }
}
