//! A framework-free view of an HTTP request, shared by every component's adapters,
//! and the ways of finding a request's tenant.
//!
//! The Tower and Actix adapters of each component present a request through
//! [`RequestView`]; the decision logic (cache keys, rate-limit keys, session scope)
//! reads it and never sees a framework type.

use std::net::IpAddr;
use std::sync::Arc;

use crate::keyspace::Tenant;

/// A read-only view of a request, implemented by each framework adapter.
pub trait RequestView {
    /// The method, upper case.
    fn method(&self) -> &str;
    /// The path, without query, as the framework's router matches it: every rule
    /// (cache routes, invalidations, rate-limit routes, exemptions) matches this
    /// spelling, so a request reaches a handler only under the rules of its route.
    /// Axum (matchit) routes on the path as sent; Actix-web routes on the path with
    /// its percent-escapes decoded (all but `%2F`, `%25` and `%2B`), so its adapter
    /// gives that (`/%73ales` is `/sales`).
    fn path(&self) -> &str;
    /// The raw query string, if any.
    fn query(&self) -> Option<&str>;
    /// The first value of a header (name in lower case), as bytes.
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// The first value of a header named by a [`HeaderKey`] (prepared once, at
    /// configuration time). The default looks its name up as [`header`](Self::header)
    /// does; the Tower and Actix adapters use the framework's parsed name, which
    /// saves parsing the name on every request.
    fn header_key(&self, key: &HeaderKey) -> Option<&[u8]> {
        self.header(key.as_str())
    }
    /// Every value of a header (name in lower case), in the order received.
    ///
    /// The default returns the first value only; adapters override it.
    fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.header(name).into_iter().collect()
    }
    /// The address of the TCP peer, when the server exposes it.
    fn peer_ip(&self) -> Option<IpAddr> {
        None
    }
    /// The authenticated principal an application middleware attached to the request
    /// (a [`Principal`] in the request's extensions), if any.
    fn principal(&self) -> Option<Principal> {
        None
    }
}

/// A header name prepared once for look-ups on every request: the frameworks' header
/// maps parse a `&str` name on each look-up, a `HeaderKey` carries the parsed name
/// (the saving: BENCHMARKS.md, "prepared header names").
///
/// ```
/// use larder_core::request::{HeaderKey, RequestView, SimpleRequest};
///
/// let tenant = HeaderKey::new("X-Tenant-Id");
/// assert_eq!(tenant.as_str(), "x-tenant-id");
/// let req = SimpleRequest::new("GET", "/").with_header("x-tenant-id", "7");
/// assert_eq!(req.header_key(&tenant), Some(&b"7"[..]));
/// ```
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: String,
    #[cfg(feature = "http")]
    http: Option<http::HeaderName>,
    #[cfg(feature = "actix")]
    actix: Option<actix_web::http::header::HeaderName>,
}

impl HeaderKey {
    /// Prepares `name` (any case). A name no header can have (a space, say) is kept
    /// and matches nothing.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        Self {
            #[cfg(feature = "http")]
            http: http::HeaderName::from_bytes(name.as_bytes()).ok(),
            #[cfg(feature = "actix")]
            actix: actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).ok(),
            name,
        }
    }

    /// The name, in lower case.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

/// An owned request, for tests and for callers outside an HTTP framework (a job
/// that applies a rate-limit policy, a unit test of an extractor).
///
/// ```
/// use larder_core::request::{RequestView, SimpleRequest};
///
/// let req = SimpleRequest::new("GET", "/balance?from=2026-01-01")
///     .with_header("X-Tenant-Id", "1")
///     .with_peer("203.0.113.9".parse().unwrap());
/// assert_eq!(req.query(), Some("from=2026-01-01"));
/// assert_eq!(req.header("x-tenant-id"), Some(&b"1"[..]));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SimpleRequest {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    peer: Option<IpAddr>,
    principal: Option<Principal>,
}

impl SimpleRequest {
    /// A request for `method` on `target` (a path, optionally with `?query`).
    #[must_use]
    pub fn new(method: &str, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (target, None),
        };
        Self {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            query,
            ..Self::default()
        }
    }

    /// Adds a header (names are case-insensitive; repeat a name for several values).
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the TCP peer's address.
    #[must_use]
    pub fn with_peer(mut self, ip: IpAddr) -> Self {
        self.peer = Some(ip);
        self
    }

    /// Sets the authenticated principal.
    #[must_use]
    pub fn with_principal(mut self, principal: Principal) -> Self {
        self.principal = Some(principal);
        self
    }
}

impl RequestView for SimpleRequest {
    fn method(&self) -> &str {
        &self.method
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
    fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
            .collect()
    }
    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer
    }
    fn principal(&self) -> Option<Principal> {
        self.principal.clone()
    }
}

/// Tower, Axum and hyper requests. The peer address is read from Axum's
/// `ConnectInfo<SocketAddr>` (feature `axum`) or a [`std::net::SocketAddr`] in the
/// extensions.
#[cfg(feature = "http")]
impl RequestView for http::request::Parts {
    fn method(&self) -> &str {
        self.method.as_str()
    }
    fn path(&self) -> &str {
        self.uri.path()
    }
    fn query(&self) -> Option<&str> {
        self.uri.query()
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(http::HeaderValue::as_bytes)
    }
    fn header_key(&self, key: &HeaderKey) -> Option<&[u8]> {
        self.headers
            .get(key.http.as_ref()?)
            .map(http::HeaderValue::as_bytes)
    }
    fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .get_all(name)
            .iter()
            .map(http::HeaderValue::as_bytes)
            .collect()
    }
    fn peer_ip(&self) -> Option<IpAddr> {
        #[cfg(feature = "axum")]
        if let Some(info) = self
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        {
            return Some(info.0.ip());
        }
        self.extensions
            .get::<std::net::SocketAddr>()
            .map(std::net::SocketAddr::ip)
    }
    fn principal(&self) -> Option<Principal> {
        self.extensions.get::<Principal>().cloned()
    }
}

/// Actix-web requests (`ServiceRequest::request()` gives one).
#[cfg(feature = "actix")]
impl RequestView for actix_web::HttpRequest {
    fn method(&self) -> &str {
        actix_web::HttpRequest::method(self).as_str()
    }
    fn path(&self) -> &str {
        // What actix's router matches: `/%73ales` routes to `/sales`.
        self.match_info().as_str()
    }
    fn query(&self) -> Option<&str> {
        Some(self.query_string()).filter(|q| !q.is_empty())
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .get(name)
            .map(actix_web::http::header::HeaderValue::as_bytes)
    }
    fn header_key(&self, key: &HeaderKey) -> Option<&[u8]> {
        self.headers()
            .get(key.actix.as_ref()?)
            .map(actix_web::http::header::HeaderValue::as_bytes)
    }
    fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.headers()
            .get_all(name)
            .map(actix_web::http::header::HeaderValue::as_bytes)
            .collect()
    }
    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_addr().map(|a| a.ip())
    }
    fn principal(&self) -> Option<Principal> {
        actix_web::HttpMessage::extensions(self)
            .get::<Principal>()
            .cloned()
    }
}

/// Who the request is, as established by the application (a user id, an API client
/// id). Insert it into the request's extensions in an authentication middleware;
/// components read it (for example a rate limit keyed by user).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(Arc<str>);

impl Principal {
    /// A principal named `id`.
    #[must_use]
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The principal's id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Finds the tenant of a request. `None` means "no tenant" (the response cache then
/// bypasses, a rate-limit policy keyed by tenant does not apply). An id that is not a
/// valid [`Tenant`] counts as none.
///
/// Closures work too: `|req: &dyn RequestView| Some(Tenant::new("1").ok()?)`.
pub trait TenantExtractor: Send + Sync + 'static {
    /// The tenant, if the request names a valid one.
    fn extract(&self, req: &dyn RequestView) -> Option<Tenant>;

    /// Admits only the tenants `known` accepts (the application's tenant table):
    /// any other id counts as no tenant, so no component writes a key for it — a
    /// client sending made-up ids cannot fill Redis.
    ///
    /// ```
    /// use larder_core::request::{FromHeader, RequestView, SimpleRequest, TenantExtractor};
    ///
    /// let tenants = FromHeader::new("x-tenant-id").only(|t| ["1", "2"].contains(&t.as_str()));
    /// let req = |id| SimpleRequest::new("GET", "/").with_header("x-tenant-id", id);
    /// assert!(tenants.extract(&req("1")).is_some());
    /// assert!(tenants.extract(&req("made-up")).is_none());
    /// ```
    fn only<F>(self, known: F) -> KnownTenants<Self>
    where
        Self: Sized,
        F: Fn(&Tenant) -> bool + Send + Sync + 'static,
    {
        KnownTenants {
            extractor: self,
            known: Arc::new(known),
        }
    }
}

/// A [`TenantExtractor`] that admits only known tenants; made by
/// [`TenantExtractor::only`].
pub struct KnownTenants<E> {
    extractor: E,
    known: Arc<dyn Fn(&Tenant) -> bool + Send + Sync>,
}

impl<E: std::fmt::Debug> std::fmt::Debug for KnownTenants<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownTenants")
            .field("extractor", &self.extractor)
            .finish_non_exhaustive()
    }
}

impl<E: TenantExtractor> TenantExtractor for KnownTenants<E> {
    fn extract(&self, req: &dyn RequestView) -> Option<Tenant> {
        self.extractor
            .extract(req)
            .filter(|tenant| (self.known)(tenant))
    }
}

impl<F> TenantExtractor for F
where
    F: Fn(&dyn RequestView) -> Option<Tenant> + Send + Sync + 'static,
{
    fn extract(&self, req: &dyn RequestView) -> Option<Tenant> {
        self(req)
    }
}

/// The tenant is a header's value (`X-Tenant-Id: 42`).
#[derive(Debug, Clone)]
pub struct FromHeader {
    name: HeaderKey,
}

impl FromHeader {
    /// Reads header `name`.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: HeaderKey::new(name),
        }
    }
}

impl TenantExtractor for FromHeader {
    fn extract(&self, req: &dyn RequestView) -> Option<Tenant> {
        let raw = std::str::from_utf8(req.header_key(&self.name)?).ok()?;
        Tenant::new(raw.trim()).ok()
    }
}

/// The tenant is the first label of the host under a base domain
/// (`acme.example.com` under `example.com` is `acme`).
#[derive(Debug, Clone)]
pub struct FromSubdomain {
    suffix: String,
}

impl FromSubdomain {
    /// Tenants are subdomains of `base_domain`.
    #[must_use]
    pub fn new(base_domain: &str) -> Self {
        Self {
            suffix: format!(
                ".{}",
                base_domain.trim_start_matches('.').to_ascii_lowercase()
            ),
        }
    }
}

impl TenantExtractor for FromSubdomain {
    fn extract(&self, req: &dyn RequestView) -> Option<Tenant> {
        let host = std::str::from_utf8(req.header("host")?).ok()?;
        let host = host.split(':').next()?.to_ascii_lowercase();
        let label = host.strip_suffix(&self.suffix)?;
        if label.contains('.') {
            return None;
        }
        Tenant::new(label).ok()
    }
}

/// The tenant is a path segment (`/t/{tenant}/...` is index 1).
#[derive(Debug, Clone, Copy)]
pub struct FromPathSegment {
    index: usize,
}

impl FromPathSegment {
    /// Reads the segment at `index` (0-based, leading `/` ignored).
    #[must_use]
    pub fn new(index: usize) -> Self {
        Self { index }
    }
}

impl TenantExtractor for FromPathSegment {
    fn extract(&self, req: &dyn RequestView) -> Option<Tenant> {
        let segment = req
            .path()
            .trim_start_matches('/')
            .split('/')
            .nth(self.index)?;
        // Both routers hand a handler its path parameters percent-decoded: the
        // tenant is the decoded segment, or `/t/%31/` would be tenant `%31` to
        // larder and tenant `1` to the handler.
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .ok()?;
        Tenant::new(decoded).ok()
    }
}

/// A path pattern: literal segments, `{name}` for one segment, `{*rest}` (last) for
/// the remainder (as in Axum and matchit). `/products/{id}` matches `/products/7` but not `/products/7/x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
    /// A pattern of literal segments only: its plain spelling (`/a/b`), which most
    /// requests use; compared whole before the segments are walked.
    exact: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
    Rest,
}

impl PathPattern {
    /// Parses a pattern; anything that is not `{..}` is a literal segment.
    #[must_use]
    pub fn parse(pattern: &str) -> Self {
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
            .collect::<Vec<_>>();
        let exact = segments
            .iter()
            .map(|s| match s {
                Segment::Literal(lit) => Some(format!("/{lit}")),
                Segment::Param | Segment::Rest => None,
            })
            .collect::<Option<String>>()
            .map(|path| {
                if path.is_empty() {
                    "/".to_owned()
                } else {
                    path
                }
            });
        Self { segments, exact }
    }

    /// Whether `path` (without query) matches.
    #[must_use]
    pub fn matches(&self, path: &str) -> bool {
        if self.exact.as_deref() == Some(path) {
            return true;
        }
        let mut parts = path.split('/').filter(|s| !s.is_empty());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A request carrying `X-Tenant-Id: 7` and `Cache-Control: no-store`, through an
    /// adapter: prepared names find what string names find.
    #[cfg(any(feature = "http", feature = "actix"))]
    fn assert_prepared_names_match(req: &dyn RequestView) {
        for name in [
            "x-tenant-id",
            "X-TENANT-ID",
            "cache-control",
            "if-none-match",
            "bad name",
        ] {
            let key = HeaderKey::new(name);
            assert_eq!(
                req.header_key(&key),
                req.header(&name.to_ascii_lowercase()),
                "{name}"
            );
        }
        assert_eq!(
            req.header_key(&HeaderKey::new("X-Tenant-Id")),
            Some(&b"7"[..])
        );
    }

    #[cfg(feature = "http")]
    #[test]
    fn prepared_header_names_find_what_string_names_find() {
        let (parts, ()) = http::Request::builder()
            .header("X-Tenant-Id", "7")
            .header("Cache-Control", "no-store")
            .body(())
            .unwrap()
            .into_parts();
        assert_prepared_names_match(&parts);
    }

    #[cfg(feature = "actix")]
    #[test]
    fn prepared_header_names_find_what_string_names_find_in_actix() {
        let req = actix_web::test::TestRequest::default()
            .insert_header(("X-Tenant-Id", "7"))
            .insert_header(("Cache-Control", "no-store"))
            .to_http_request();
        assert_prepared_names_match(&req);
    }

    #[test]
    fn a_path_tenant_is_the_decoded_segment_a_handler_sees() {
        let from = FromPathSegment::new(1);
        let tenant = |path: &str| from.extract(&SimpleRequest::new("GET", path));
        assert_eq!(tenant("/t/1/balance"), Some(Tenant::new("1").unwrap()));
        assert_eq!(tenant("/t/%31/balance"), Some(Tenant::new("1").unwrap()));
        assert_eq!(tenant("/t/1%3A%2A/balance"), None, "decodes to `1:*`");
        assert_eq!(tenant("/t/%FF/balance"), None, "not UTF-8");
        assert_eq!(tenant("/t"), None);
    }

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
        assert!(!PathPattern::parse("/").matches("/a"));
    }

    #[test]
    fn a_literal_pattern_matches_its_path_however_spelled_and_nothing_else() {
        let p = PathPattern::parse("/stock/items");
        for path in [
            "/stock/items",
            "/stock/items/",
            "//stock//items",
            "stock/items",
        ] {
            assert!(p.matches(path), "{path}");
        }
        for path in [
            "/stock",
            "/stock/item",
            "/stock/items/x",
            "/stock/itemsx",
            "/",
        ] {
            assert!(!p.matches(path), "{path}");
        }
    }
}
