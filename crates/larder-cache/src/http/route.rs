//! Which paths are cached, and which writes invalidate what.

use std::time::Duration;

use larder_core::request::PathPattern;
use larder_core::{KeyError, Module};

/// A cached route: `GET` (and `HEAD`) responses of matching paths are stored in
/// `module`.
///
/// The query parameters that form the key are declared ([`query`](Self::query));
/// a request carrying any other parameter bypasses the cache by default, so
/// `?x=<random>` can neither fill Redis nor defeat the cache.
///
/// ```
/// use larder_cache::{CacheRoute, UndeclaredQuery};
///
/// let route = CacheRoute::new("/balance", "balance")?
///     .query(&["from", "to", "granularity"])
///     .undeclared_query(UndeclaredQuery::Ignore); // `utm_source=...` is left out
/// # Ok::<(), larder_core::KeyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CacheRoute {
    pattern: PathPattern,
    pub(crate) module: Module,
    pub(crate) ttl: Option<Duration>,
    pub(crate) allow_authorization: bool,
    query: Vec<String>,
    undeclared: UndeclaredQuery,
}

/// What a cached route does with a request carrying a query parameter it did not
/// declare with [`CacheRoute::query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UndeclaredQuery {
    /// The request bypasses the cache (`X-Cache: BYPASS`): it reaches the origin
    /// and nothing is stored. The default: it never serves one answer for another.
    #[default]
    Bypass,
    /// The parameter is left out of the key: requests that differ only in it share
    /// one entry. Only for parameters the answer never depends on (tracking tags).
    Ignore,
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
            query: Vec::new(),
            undeclared: UndeclaredQuery::Bypass,
        })
    }

    /// The query parameters that form the key, by name as sent (`from`, `to`).
    /// Parameters are matched by their raw name: a percent-encoded spelling of a
    /// name is another, undeclared name.
    #[must_use]
    pub fn query(mut self, names: &[&str]) -> Self {
        self.query = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// What a request with an undeclared query parameter does (bypass by default).
    #[must_use]
    pub fn undeclared_query(mut self, policy: UndeclaredQuery) -> Self {
        self.undeclared = policy;
        self
    }

    /// The query's part of the key: the declared parameters (`name=value` as sent),
    /// sorted by name and otherwise in the order received, so `b=2&a=1` and
    /// `a=1&b=2` share an entry and `ids=3&ids=1` keeps its order. `None` when the
    /// request must bypass the cache for an undeclared parameter.
    pub(crate) fn key_query<'q>(&self, query: Option<&'q str>) -> Option<Vec<&'q str>> {
        let mut pairs = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            if self.query.iter().any(|declared| declared == name) {
                pairs.push((name, pair));
            } else if self.undeclared == UndeclaredQuery::Bypass {
                return None;
            }
        }
        pairs.sort_by_key(|(name, _)| *name);
        Some(pairs.into_iter().map(|(_, pair)| pair).collect())
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
    fn only_declared_parameters_form_the_key() {
        let route = CacheRoute::new("/balance", "balance")
            .unwrap()
            .query(&["from", "to", "ids"]);
        let key = |q: &str| route.key_query(Some(q)).map(|pairs| pairs.join("&"));
        assert_eq!(key("to=2&from=1"), Some("from=1&to=2".into()));
        assert_eq!(key("ids=3&ids=1"), Some("ids=3&ids=1".into()));
        assert_eq!(key("from&&to="), Some("from&to=".into()));
        assert_eq!(route.key_query(None), Some(Vec::new()));
        for undeclared in ["x=1", "from=1&x=1", "fr%6Fm=1", "FROM=1"] {
            assert_eq!(key(undeclared), None, "{undeclared}");
        }
        let ignoring = route.undeclared_query(UndeclaredQuery::Ignore);
        assert_eq!(
            ignoring.key_query(Some("utm=9&to=2&x=1")),
            Some(vec!["to=2"])
        );
        let bare = CacheRoute::new("/products", "products").unwrap();
        assert_eq!(bare.key_query(Some("x=1")), None);
        assert_eq!(bare.key_query(Some("")), Some(Vec::new()));
    }
}
