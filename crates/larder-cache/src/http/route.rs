//! Which paths are cached, and which writes invalidate what.

use std::time::Duration;

use larder_core::{KeyError, Module};

/// A path pattern: literal segments, `{name}` for one segment, `{*rest}` (last) for
/// the remainder. `/products/{id}` matches `/products/7` but not `/products/7/x`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PathPattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
    Rest,
}

impl PathPattern {
    fn parse(pattern: &str) -> Self {
        let segments = pattern
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.starts_with("{*") && s.ends_with('}') {
                    Segment::Rest
                } else if s.starts_with('{') && s.ends_with('}') {
                    Segment::Param
                } else {
                    Segment::Literal(s.to_owned())
                }
            })
            .collect();
        Self { segments }
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = path.trim_matches('/').split('/').filter(|s| !s.is_empty());
        for seg in &self.segments {
            match seg {
                Segment::Rest => return true,
                Segment::Param => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_segments() {
        let p = PathPattern::parse("/products/{id}");
        assert!(p.matches("/products/7"));
        assert!(p.matches("/products/7/"));
        assert!(!p.matches("/products"));
        assert!(!p.matches("/products/7/x"));
        assert!(!p.matches("/productsx/7"));
        let rest = PathPattern::parse("/files/{*path}");
        assert!(rest.matches("/files/a/b/c"));
        assert!(!rest.matches("/other/a"));
        assert!(PathPattern::parse("/").matches("/"));
    }
}
