//! The HTTP response cache's decisions, shared by the Tower and Actix adapters.
//!
//! Nothing here knows a framework: adapters present a request through
//! [`RequestView`], ask [`ResponseCache::decide`] what to do, and store or serve
//! [`StoredResponse`]s.
//!
//! What a proxy cache would honour is honoured: only `GET`/`HEAD` are served from the
//! cache (and only `GET` responses are stored); request `Cache-Control: no-store`
//! bypasses and `no-cache` (or `max-age=0`) revalidates; a response with `no-store`,
//! `private`, `no-cache` or `Set-Cookie` is never stored; a request carrying
//! `Authorization` is not cached unless its route opts in; bodies over the size limit
//! pass through unbuffered.

#[cfg(any(feature = "tower", feature = "actix"))]
pub(crate) mod flow;
mod route;
pub(crate) mod stored;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use larder_core::request::HeaderKey;
use larder_core::{Module, Tenant};

use crate::keys::Keys;
use crate::service::Cache;

pub use larder_core::request::{
    FromHeader, FromPathSegment, FromSubdomain, RequestView, TenantExtractor,
};
pub use route::{CacheRoute, InvalidateRoute, UndeclaredQuery};
#[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(unused_imports))]
pub(crate) use stored::Servable;
pub use stored::{etag_matches, StoredResponse};

/// The request headers every cached `GET` reads, prepared once.
static AUTHORIZATION: LazyLock<HeaderKey> = LazyLock::new(|| HeaderKey::new("authorization"));
static CACHE_CONTROL: LazyLock<HeaderKey> = LazyLock::new(|| HeaderKey::new("cache-control"));
static IF_NONE_MATCH: LazyLock<HeaderKey> = LazyLock::new(|| HeaderKey::new("if-none-match"));

/// Default limit of a stored body: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// What to do with a request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Decision {
    /// Not the cache's business (or not allowed): call the origin, add `X-Cache: BYPASS`
    /// on routes the cache knows.
    Bypass {
        /// Why, for logs.
        reason: &'static str,
        /// Whether the route is a cached one (then `X-Cache: BYPASS` is added).
        cached_route: bool,
    },
    /// Look up, and on a miss call the origin and maybe store.
    Lookup(Box<LookupPlan>),
    /// An unsafe request: after a 2xx response, invalidate these modules of the tenant.
    Invalidate {
        /// The tenant.
        tenant: Tenant,
        /// The modules.
        modules: Vec<Module>,
    },
}

/// Everything needed to serve or fill one cache entry.
#[derive(Debug)]
#[non_exhaustive]
pub struct LookupPlan {
    /// The tenant.
    pub tenant: Tenant,
    /// The module.
    pub module: Module,
    /// The key part (method, path, sorted query, vary values).
    pub key: String,
    /// Time to live of a stored 2xx response.
    pub ttl: Duration,
    /// The request asked to revalidate (`no-cache` or `max-age=0`): skip the stored
    /// entry, but store the fresh response.
    pub revalidate: bool,
    /// A `HEAD` request: serve without a body, never store.
    pub head: bool,
    /// The request's `If-None-Match`, for 304s.
    pub if_none_match: Option<Vec<u8>>,
    #[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
    pub(crate) keys: Keys,
}

impl LookupPlan {
    /// Whether the request's `If-None-Match` matches a response's `etag`: the
    /// response goes out as a 304 without a body.
    #[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
    pub(crate) fn not_modified_by(&self, etag: Option<&[u8]>) -> bool {
        match (&self.if_none_match, etag) {
            (Some(inm), Some(etag)) => etag_matches(inm, etag),
            _ => false,
        }
    }
}

/// How a response may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Storable {
    /// Store for this long.
    Yes(Duration),
    /// Do not store.
    No(&'static str),
}

/// The response cache's configuration and its [`Cache`]. Cheap to clone; adapters
/// hold one.
#[derive(Clone)]
pub struct ResponseCache {
    pub(crate) cache: Cache,
    pub(crate) config: Arc<HttpConfig>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("cache", &self.cache)
            .field("routes", &self.config.routes.len())
            .finish_non_exhaustive()
    }
}

pub(crate) struct HttpConfig {
    pub(crate) tenant: Arc<dyn TenantExtractor>,
    pub(crate) routes: Vec<CacheRoute>,
    pub(crate) invalidations: Vec<InvalidateRoute>,
    pub(crate) vary: Vec<HeaderKey>,
    pub(crate) max_body: usize,
    pub(crate) cache_not_found: bool,
    pub(crate) use_max_age: bool,
    pub(crate) stale_while_revalidate: bool,
}

impl ResponseCache {
    /// A response cache on `cache`, with tenants from the `X-Tenant-Id` header and no
    /// routes yet.
    #[must_use]
    pub fn new(cache: Cache) -> Self {
        Self {
            cache,
            config: Arc::new(HttpConfig {
                tenant: Arc::new(FromHeader::new("x-tenant-id")),
                routes: Vec::new(),
                invalidations: Vec::new(),
                vary: Vec::new(),
                max_body: DEFAULT_MAX_BODY,
                cache_not_found: true,
                use_max_age: false,
                stale_while_revalidate: false,
            }),
        }
    }

    fn config_mut(&mut self) -> &mut HttpConfig {
        Arc::get_mut(&mut self.config)
            .unwrap_or_else(|| unreachable!("configuration happens before the cache is shared"))
    }

    /// Sets how the tenant is found (header, subdomain, path segment, closure).
    #[must_use]
    pub fn tenant(mut self, extractor: impl TenantExtractor) -> Self {
        self.config_mut().tenant = Arc::new(extractor);
        self
    }

    /// Caches `GET` responses of a route.
    #[must_use]
    pub fn route(mut self, route: CacheRoute) -> Self {
        self.config_mut().routes.push(route);
        self
    }

    /// Invalidates modules after a 2xx response to an unsafe request.
    #[must_use]
    pub fn invalidate(mut self, rule: InvalidateRoute) -> Self {
        self.config_mut().invalidations.push(rule);
        self
    }

    /// Adds a request header whose value becomes part of the key (`Accept-Language`).
    ///
    /// A response is stored only if every header its own `Vary` names was added here
    /// (and never with `Vary: *`): a compression layer inside the cache, say, answers
    /// `Vary: Accept-Encoding`, and without `.vary("Accept-Encoding")` its responses
    /// pass through unstored rather than reach a client that cannot read them.
    #[must_use]
    pub fn vary(mut self, header: &str) -> Self {
        self.config_mut().vary.push(HeaderKey::new(header));
        self
    }

    /// Sets the largest body that is stored; larger responses pass through unbuffered.
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.config_mut().max_body = bytes;
        self
    }

    /// Whether 404 and 410 responses are cached for the negative TTL (default on).
    #[must_use]
    pub fn cache_not_found(mut self, on: bool) -> Self {
        self.config_mut().cache_not_found = on;
        self
    }

    /// Takes the TTL from the response's `s-maxage` or `max-age` when present.
    #[must_use]
    pub fn use_max_age(mut self, on: bool) -> Self {
        self.config_mut().use_max_age = on;
        self
    }

    /// Serves stale entries while one background request refreshes them. Needs a
    /// stale window in the cache's [`Settings`](crate::Settings).
    #[must_use]
    pub fn stale_while_revalidate(mut self, on: bool) -> Self {
        self.config_mut().stale_while_revalidate = on;
        self
    }

    /// The cache underneath.
    #[must_use]
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Decides what to do with a request.
    pub fn decide(&self, req: &dyn RequestView) -> Decision {
        let c = &self.config;
        let method = req.method();
        if !self.cache.settings().enabled {
            return Decision::Bypass {
                reason: "cache disabled",
                cached_route: false,
            };
        }
        let (get, head) = (method == "GET", method == "HEAD");
        if !(get || head) {
            if let Some(rule) = c
                .invalidations
                .iter()
                .find(|r| r.matches(method, req.path()))
            {
                if let Some(tenant) = c.tenant.extract(req) {
                    return Decision::Invalidate {
                        tenant,
                        modules: rule.modules.clone(),
                    };
                }
            }
            return Decision::Bypass {
                reason: "method",
                cached_route: false,
            };
        }
        let Some(route) = c.routes.iter().find(|r| r.matches(req.path())) else {
            return Decision::Bypass {
                reason: "no cached route",
                cached_route: false,
            };
        };
        let bypass = |reason| Decision::Bypass {
            reason,
            cached_route: true,
        };
        let Some(tenant) = c.tenant.extract(req) else {
            return bypass("no tenant");
        };
        if req.header_key(&AUTHORIZATION).is_some() && !route.allow_authorization {
            return bypass("authorization");
        }
        let cc = Directives::parse(req.header_key(&CACHE_CONTROL));
        if cc.no_store {
            return bypass("request no-store");
        }
        let Some(key) = self.key_for(route, req) else {
            return bypass("undeclared query parameter");
        };
        let ttl = route
            .ttl
            .unwrap_or_else(|| self.cache.ttl_for(&route.module));
        let keys = self.cache.keys(&tenant, &route.module, &key);
        Decision::Lookup(Box::new(LookupPlan {
            tenant,
            module: route.module.clone(),
            key,
            ttl,
            revalidate: cc.no_cache || cc.max_age == Some(0),
            head,
            if_none_match: req.header_key(&IF_NONE_MATCH).map(<[u8]>::to_vec),
            keys,
        }))
    }

    /// The key part for a request: `GET:{path}?{declared query}` plus
    /// `|{vary}={value}` for each configured `Vary` header. `HEAD` shares `GET`'s
    /// entries. `None` when an undeclared query parameter makes the request bypass.
    fn key_for(&self, route: &CacheRoute, req: &dyn RequestView) -> Option<String> {
        let pairs = route.key_query(req.query())?;
        let mut key = String::with_capacity(64);
        key.push_str("GET:");
        key.push_str(req.path());
        if !pairs.is_empty() {
            key.push('?');
            key.push_str(&pairs.join("&"));
        }
        for name in &self.config.vary {
            key.push('|');
            key.push_str(name.as_str());
            key.push('=');
            if let Some(v) = req.header_key(name) {
                key.push_str(&String::from_utf8_lossy(v));
            }
        }
        Some(key)
    }

    /// Whether a response to a cached `GET` may be stored, and for how long.
    ///
    /// `header(name)` gives the response header's field value: all of its lines
    /// joined by `", "` (as the adapters do), so that a second `Cache-Control` or
    /// `Vary` line counts. A response that varies (`Vary`) on a request header the key
    /// does not hold (one not configured with [`vary`](Self::vary)), or on `*`, is
    /// not stored: it could be served to a request it was not made for.
    pub fn storable(
        &self,
        plan: &LookupPlan,
        status: u16,
        header: &dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> Storable {
        if plan.head {
            return Storable::No("head");
        }
        let mut ttl = match status {
            200 | 203 | 204 | 300 | 301 | 308 => plan.ttl,
            404 | 410 if self.config.cache_not_found => self.cache.settings().negative_ttl,
            _ => return Storable::No("status"),
        };
        if header("set-cookie").is_some() {
            return Storable::No("set-cookie");
        }
        let cc = Directives::parse(header("cache-control").as_deref());
        if cc.no_store || cc.private || cc.no_cache {
            return Storable::No("response cache-control");
        }
        if let Some(vary) = header("vary") {
            if !self.varies_within_key(&vary) {
                return Storable::No("vary");
            }
        }
        if self.config.use_max_age {
            if let Some(secs) = cc.s_maxage.or(cc.max_age) {
                ttl = Duration::from_secs(secs);
            }
        }
        if let Some(len) = header("content-length")
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<usize>().ok())
        {
            if len > self.config.max_body {
                return Storable::No("body too large");
            }
        }
        if ttl.is_zero() {
            return Storable::No("zero ttl");
        }
        Storable::Yes(ttl)
    }

    /// Whether every request header a response's `Vary` value names is part of the
    /// key (a configured [`vary`](Self::vary) header). `*`, or a value that is not
    /// text, is not.
    fn varies_within_key(&self, vary: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(vary) else {
            return false;
        };
        text.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .all(|name| {
                self.config
                    .vary
                    .iter()
                    .any(|key| key.as_str().eq_ignore_ascii_case(name))
            })
    }

    /// The largest body stored.
    #[must_use]
    pub fn body_limit(&self) -> usize {
        self.config.max_body
    }

    /// Invalidates `modules` of `tenant` (after a successful write).
    pub async fn invalidate_modules(&self, tenant: &Tenant, modules: &[Module]) {
        for module in modules {
            self.cache.invalidate_module(tenant, module).await;
        }
    }
}

/// The request headers the cache answers itself, taken off a request whose response
/// it will store: an origin that honours them answers 304, which cannot be stored.
/// (`If-Modified-Since` is not evaluated by the cache: such a request gets the full
/// response, as HTTP allows.)
#[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
pub(crate) const VALIDATORS: [&str; 2] = ["if-none-match", "if-modified-since"];

/// A response header's field value for [`ResponseCache::storable`]: each of its
/// lines, joined by `", "` (RFC 9110, section 5.3); `None` without any.
#[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
pub(crate) fn field_value<'a>(mut lines: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut value = lines.next()?.to_vec();
    for line in lines {
        value.extend_from_slice(b", ");
        value.extend_from_slice(line);
    }
    Some(value)
}

/// The parts of `Cache-Control` the cache acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Directives {
    no_store: bool,
    no_cache: bool,
    private: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
}

impl Directives {
    fn parse(value: Option<&[u8]>) -> Self {
        let mut d = Self::default();
        let Some(text) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
            return d;
        };
        for part in text.split(',') {
            let part = part.trim();
            let (name, arg) = match part.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (part, None),
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "max-age" => d.max_age = arg.and_then(|a| a.parse().ok()),
                "s-maxage" => d.s_maxage = arg.and_then(|a| a.parse().ok()),
                _ => {}
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_core::request::SimpleRequest;
    use larder_core::Handle;

    fn request(
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: Vec<(&str, &str)>,
    ) -> SimpleRequest {
        let target = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        headers
            .into_iter()
            .fold(SimpleRequest::new(method, &target), |r, (n, v)| {
                r.with_header(n, v)
            })
    }

    fn get(path: &str, query: Option<&str>, headers: Vec<(&str, &str)>) -> SimpleRequest {
        request("GET", path, query, headers)
    }

    fn rc() -> ResponseCache {
        ResponseCache::new(Cache::new(Handle::in_process()))
            .route(
                CacheRoute::new("/balance", "balance")
                    .unwrap()
                    .query(&["from", "to", "a", "b", "ids"]),
            )
            .route(CacheRoute::new("/products/{id}", "products").unwrap())
            .invalidate(InvalidateRoute::new("POST", "/sales", &["balance", "products"]).unwrap())
            .vary("Accept-Language")
    }

    fn plan(d: Decision) -> LookupPlan {
        match d {
            Decision::Lookup(p) => *p,
            other => panic!("expected a lookup, got {other:?}"),
        }
    }

    #[test]
    fn keys_sort_the_query_and_include_vary_headers() {
        let rc = rc();
        let a = plan(rc.decide(&get(
            "/balance",
            Some("to=2&from=1"),
            vec![("x-tenant-id", "1"), ("accept-language", "fr")],
        )));
        let b = plan(rc.decide(&get(
            "/balance",
            Some("from=1&to=2"),
            vec![("x-tenant-id", "1"), ("accept-language", "fr")],
        )));
        assert_eq!(a.key, b.key);
        assert_eq!(a.key, "GET:/balance?from=1&to=2|accept-language=fr");
        let c = plan(rc.decide(&get(
            "/balance",
            Some("from=1&to=2"),
            vec![("x-tenant-id", "1")],
        )));
        assert_ne!(a.key, c.key);
        assert_eq!(a.module.as_str(), "balance");
        // Names are sorted; the values of a repeated name keep their order.
        let key =
            |q: &str| plan(rc.decide(&get("/balance", Some(q), vec![("x-tenant-id", "1")]))).key;
        assert_eq!(
            key("ids=3&b=1&ids=1&a"),
            "GET:/balance?a&b=1&ids=3&ids=1|accept-language="
        );
        assert_ne!(key("ids=3&ids=1"), key("ids=1&ids=3"));
        assert_eq!(key("to=2&&from=1&"), key("from=1&to=2"));
    }

    #[test]
    fn bypasses_what_must_not_be_shared() {
        let rc = rc();
        let reason = |d: Decision| match d {
            Decision::Bypass { reason, .. } => reason,
            other => panic!("expected bypass, got {other:?}"),
        };
        assert_eq!(
            reason(rc.decide(&get("/balance", None, vec![]))),
            "no tenant"
        );
        assert_eq!(
            reason(rc.decide(&get("/balance", None, vec![("x-tenant-id", "1:*")]))),
            "no tenant"
        );
        assert_eq!(
            reason(rc.decide(&get("/balance", Some("x=9"), vec![("x-tenant-id", "1")]))),
            "undeclared query parameter"
        );
        assert_eq!(
            reason(rc.decide(&get(
                "/balance",
                None,
                vec![("x-tenant-id", "1"), ("authorization", "Bearer x")]
            ))),
            "authorization"
        );
        assert_eq!(
            reason(rc.decide(&get(
                "/balance",
                None,
                vec![("x-tenant-id", "1"), ("cache-control", "no-store")]
            ))),
            "request no-store"
        );
        assert_eq!(
            reason(rc.decide(&get("/other", None, vec![("x-tenant-id", "1")]))),
            "no cached route"
        );
        let p = plan(rc.decide(&get(
            "/balance",
            None,
            vec![("x-tenant-id", "1"), ("cache-control", "no-cache")],
        )));
        assert!(p.revalidate);
    }

    #[test]
    fn unsafe_methods_map_to_invalidations() {
        let rc = rc();
        let req = request("POST", "/sales", None, vec![("x-tenant-id", "7")]);
        match rc.decide(&req) {
            Decision::Invalidate { tenant, modules } => {
                assert_eq!(tenant.as_str(), "7");
                let names: Vec<&str> = modules.iter().map(Module::as_str).collect();
                assert_eq!(names, ["balance", "products"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn storable_follows_status_and_cache_control() {
        let rc = rc();
        let p = plan(rc.decide(&get("/balance", None, vec![("x-tenant-id", "1")])));
        let none = |_: &str| None;
        assert!(matches!(rc.storable(&p, 200, &none), Storable::Yes(_)));
        assert_eq!(
            rc.storable(&p, 404, &none),
            Storable::Yes(Duration::from_secs(15))
        );
        assert_eq!(rc.storable(&p, 500, &none), Storable::No("status"));
        let cookie = |n: &str| (n == "set-cookie").then(|| b"a=b".to_vec());
        assert_eq!(rc.storable(&p, 200, &cookie), Storable::No("set-cookie"));
        for cc in ["no-store", "private, max-age=60", "no-cache"] {
            let h = |n: &str| (n == "cache-control").then(|| cc.as_bytes().to_vec());
            assert_eq!(
                rc.storable(&p, 200, &h),
                Storable::No("response cache-control"),
                "{cc}"
            );
        }
        let big = |n: &str| (n == "content-length").then(|| b"2000000".to_vec());
        assert_eq!(rc.storable(&p, 200, &big), Storable::No("body too large"));
    }

    #[test]
    fn a_response_varying_on_a_header_outside_the_key_is_not_stored() {
        let rc = rc(); // keys hold Accept-Language
        let p = plan(rc.decide(&get("/balance", None, vec![("x-tenant-id", "1")])));
        let vary = |v: &'static [u8]| move |n: &str| (n == "vary").then(|| v.to_vec());
        for within in [
            &b"Accept-Language"[..],
            b"accept-language",
            b" ACCEPT-LANGUAGE , ",
            b"",
        ] {
            let reason = rc.storable(&p, 200, &vary(within));
            assert!(matches!(reason, Storable::Yes(_)), "{within:?}: {reason:?}");
        }
        for outside in [
            &b"*"[..],
            b"Accept-Encoding",
            b"Accept-Language, Accept-Encoding",
            b"Accept-Language, *",
            b"Cookie",
            b"\xffAccept-Language",
        ] {
            assert_eq!(
                rc.storable(&p, 200, &vary(outside)),
                Storable::No("vary"),
                "{outside:?}"
            );
        }
    }

    #[test]
    fn a_header_of_several_lines_is_read_whole() {
        assert_eq!(field_value(std::iter::empty()), None);
        assert_eq!(
            field_value([&b"max-age=60"[..]].into_iter()),
            Some(b"max-age=60".to_vec())
        );
        let joined = field_value([&b"max-age=60"[..], b"private"].into_iter());
        assert_eq!(joined.as_deref(), Some(&b"max-age=60, private"[..]));
        // The second line is what forbids storing.
        let rc = rc();
        let p = plan(rc.decide(&get("/balance", None, vec![("x-tenant-id", "1")])));
        let cc = |n: &str| (n == "cache-control").then(|| joined.clone()).flatten();
        assert_eq!(
            rc.storable(&p, 200, &cc),
            Storable::No("response cache-control")
        );
    }

    #[test]
    fn ttl_can_come_from_max_age_and_s_maxage() {
        let with_max_age = rc().use_max_age(true);
        let p = plan(with_max_age.decide(&get("/balance", None, vec![("x-tenant-id", "1")])));
        let cc =
            |v: &'static str| move |n: &str| (n == "cache-control").then(|| v.as_bytes().to_vec());
        assert_eq!(
            with_max_age.storable(&p, 200, &cc("public, max-age=42")),
            Storable::Yes(Duration::from_secs(42))
        );
        assert_eq!(
            with_max_age.storable(&p, 200, &cc("max-age=42, s-maxage=7")),
            Storable::Yes(Duration::from_secs(7))
        );
        assert_eq!(
            with_max_age.storable(&p, 200, &cc("max-age=0")),
            Storable::No("zero ttl")
        );
        // Off by default: the module's TTL stands.
        assert_eq!(
            rc().storable(&p, 200, &cc("max-age=42")),
            Storable::Yes(Duration::from_secs(300))
        );
    }

    #[test]
    fn tenant_extractors_read_header_subdomain_path_or_closure() {
        let req =
            |path: &str, host: &str| get(path, None, vec![("host", host), ("x-tenant-id", " 7 ")]);
        let name = |t: Option<Tenant>| t.map(|t| t.as_str().to_owned());
        assert_eq!(
            name(FromHeader::new("X-Tenant-Id").extract(&req("/", "x"))),
            Some("7".into())
        );
        let sub = FromSubdomain::new("example.com");
        assert_eq!(
            name(sub.extract(&req("/", "acme.example.com:8080"))),
            Some("acme".into())
        );
        assert_eq!(name(sub.extract(&req("/", "a.b.example.com"))), None);
        assert_eq!(name(sub.extract(&req("/", "example.com"))), None);
        assert_eq!(name(sub.extract(&req("/", "acme.example.org"))), None);
        let seg = FromPathSegment::new(1);
        assert_eq!(
            name(seg.extract(&req("/t/acme/balance", "x"))),
            Some("acme".into())
        );
        assert_eq!(name(seg.extract(&req("/t", "x"))), None);
        assert_eq!(name(seg.extract(&req("/t/a*b/balance", "x"))), None);
        let closure = |r: &dyn RequestView| Tenant::new(r.path().trim_start_matches('/')).ok();
        assert_eq!(
            name(closure.extract(&req("/zeta", "x"))),
            Some("zeta".into())
        );
    }
}
