//! How the response cache finds a request's tenant.

use larder_core::Tenant;

use super::RequestView;

/// Finds the tenant of a request. `None` means "no tenant": the request bypasses the
/// cache and is never stored under a shared entry. An id that is not a valid
/// [`Tenant`] counts as none.
///
/// Closures work too: `|req: &dyn RequestView| Some(Tenant::new("1").ok()?)`.
pub trait TenantExtractor: Send + Sync + 'static {
    /// The tenant, if the request names a valid one.
    fn extract(&self, req: &dyn RequestView) -> Option<Tenant>;
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
    name: String,
}

impl FromHeader {
    /// Reads header `name`.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_ascii_lowercase(),
        }
    }
}

impl TenantExtractor for FromHeader {
    fn extract(&self, req: &dyn RequestView) -> Option<Tenant> {
        let raw = std::str::from_utf8(req.header(&self.name)?).ok()?;
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
        Tenant::new(segment).ok()
    }
}
