//! What the store knows about the request it serves.
//!
//! `SessionStore` traits see a session id, not the request. The context layer (Tower)
//! or middleware (Actix) wraps the frameworks' session middleware and runs the request
//! inside a task-local [`RequestContext`]: the tenant whose keyspace holds the session,
//! whether the handler asked for an id rotation, which session the request loaded,
//! and whether a store fault must become a clear 503 instead of the framework's opaque
//! 500. Without the context, sessions live in the configured namespace, rotations
//! delete the old id at once, and faults surface as the framework renders them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use larder_core::Tenant;

use crate::record::SessionRef;

tokio::task_local! {
    static CONTEXT: Arc<RequestContext>;
}

/// A store fault the context turns into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Redis could not be used and the policy is fail-closed.
    Unavailable,
    /// The state was over the size cap; nothing was stored.
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The cap.
        cap: usize,
    },
}

impl Fault {
    /// The HTTP status for the fault: 503 (unavailable) or 500 (too large).
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Unavailable => 503,
            Self::TooLarge { .. } => 500,
        }
    }

    /// The `Retry-After` seconds of the response, when retrying can help.
    #[must_use]
    pub fn retry_after(&self) -> Option<&'static str> {
        match self {
            Self::Unavailable => Some("1"),
            Self::TooLarge { .. } => None,
        }
    }

    /// The JSON body of the response: `error` (a stable code) and `message` (the
    /// fault's text).
    #[must_use]
    pub fn body(&self) -> String {
        let error = match self {
            Self::Unavailable => "session_store_unavailable",
            Self::TooLarge { .. } => "session_too_large",
        };
        serde_json::json!({ "error": error, "message": self.to_string() }).to_string()
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable => f.write_str("the session store is unavailable; retry shortly"),
            Self::TooLarge { size, cap } => write!(
                f,
                "session state of {size} bytes exceeds the cap of {cap} bytes; nothing was stored"
            ),
        }
    }
}

/// The per-request context of the session store.
#[derive(Debug, Default)]
pub struct RequestContext {
    tenant: Option<Tenant>,
    rotating: AtomicBool,
    current: Mutex<Option<SessionRef>>,
    fault: Mutex<Option<Fault>>,
}

impl RequestContext {
    /// A context for a request of `tenant` (`None`: the configured namespace).
    #[must_use]
    pub fn new(tenant: Option<Tenant>) -> Arc<Self> {
        Arc::new(Self {
            tenant,
            ..Self::default()
        })
    }

    /// Runs `fut` with `ctx` as the current context.
    pub fn scope<F: std::future::Future>(
        ctx: Arc<Self>,
        fut: F,
    ) -> impl std::future::Future<Output = F::Output> {
        // Not an `async fn`: it would hold `fut` and the copy it awaits.
        CONTEXT.scope(ctx, fut)
    }

    /// Calls `call` (a service's `call`) with `ctx` as the current context, and runs
    /// the future it returns there too. The future is polled where `call` left it:
    /// wrapping the call in an `async` block would keep the request next to it.
    #[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
    pub(crate) fn call_in<Fut: std::future::Future>(
        ctx: Arc<Self>,
        call: impl FnOnce() -> Fut,
    ) -> impl std::future::Future<Output = Fut::Output> {
        use futures_util::future::FutureExt as _;
        Self::scope(ctx, futures_util::future::lazy(move |_| call()).flatten())
    }

    /// The fault recorded while the request ran, if any.
    #[must_use]
    pub fn fault(&self) -> Option<Fault> {
        self.fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The tenant of the request.
    #[must_use]
    pub fn tenant(&self) -> Option<&Tenant> {
        self.tenant.as_ref()
    }
}

pub(crate) fn with<R>(f: impl FnOnce(Option<&RequestContext>) -> R) -> R {
    let mut f = Some(f);
    let out = CONTEXT.try_with(|c| f.take().map(|f| f(Some(c))));
    match out {
        Ok(Some(r)) => r,
        _ => match f.take() {
            Some(f) => f(None),
            None => unreachable!("the closure ran inside try_with"),
        },
    }
}

pub(crate) fn record_fault(fault: Fault) {
    with(|c| {
        if let Some(c) = c {
            *c.fault.lock().unwrap_or_else(PoisonError::into_inner) = Some(fault);
        }
    });
}

pub(crate) fn set_current(r: Option<SessionRef>) {
    with(|c| {
        if let Some(c) = c {
            *c.current.lock().unwrap_or_else(PoisonError::into_inner) = r;
        }
    });
}

pub(crate) fn take_rotating() -> bool {
    with(|c| c.is_some_and(|c| c.rotating.swap(false, Ordering::AcqRel)))
}

/// The tenant of the current request, as the context layer extracted it.
#[must_use]
pub fn current_tenant() -> Option<Tenant> {
    with(|c| c.and_then(|c| c.tenant.clone()))
}

/// The session the current request loaded (its public reference, never its id).
#[must_use]
pub fn current_session() -> Option<SessionRef> {
    with(|c| {
        c.and_then(|c| {
            c.current
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    })
}

/// Marks the next deletion of the current session's id as a rotation: the old id
/// stays readable, read-only, for the grace window. The adapters' `rotate` helpers
/// call this before asking the framework for a new id.
///
/// Returns false outside a context (the old id is then deleted at once).
pub fn mark_rotation() -> bool {
    with(|c| {
        c.map(|c| c.rotating.store(true, Ordering::Release))
            .is_some()
    })
}

#[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
/// A session value as tenant header text: strings as they are, numbers printed.
pub(crate) fn tenant_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What becomes of a request's tenant header, given the logged-in session's tenant:
/// the one rule of `SessionTenantLayer` (Tower) and `SessionTenant` (Actix).
#[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TenantHeader {
    /// Leave the request as it is.
    Keep,
    /// Set the header to the session's tenant (the request sent none).
    Set(String),
    /// Remove the header: the tenant comes only from a session, and there is none.
    Remove,
    /// Refuse the request (403): the header names another tenant than the session's.
    Mismatch,
}

/// Decides [`TenantHeader`] from the session's tenant and the header as sent.
/// `session_only`: a header sent without a session is not believed.
#[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
pub(crate) fn tenant_header(
    session: Option<String>,
    sent: Option<&[u8]>,
    session_only: bool,
) -> TenantHeader {
    match (session, sent) {
        (Some(t), None) => TenantHeader::Set(t),
        (Some(t), Some(h)) if h == t.as_bytes() => TenantHeader::Keep,
        (Some(_), Some(_)) => TenantHeader::Mismatch,
        (None, Some(_)) if session_only => TenantHeader::Remove,
        (None, _) => TenantHeader::Keep,
    }
}

/// The 403 body for a tenant header naming another tenant than the session's.
#[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
pub(crate) const TENANT_MISMATCH: &str = r#"{"error":"tenant_mismatch","message":"the tenant header does not match the session's tenant"}"#;

#[cfg(test)]
mod tests {
    use super::{tenant_header, TenantHeader};

    #[test]
    fn the_session_decides_the_tenant_header() {
        let t = || Some("1".to_owned());
        for only in [false, true] {
            assert_eq!(
                tenant_header(t(), None, only),
                TenantHeader::Set("1".into())
            );
            assert_eq!(tenant_header(t(), Some(b"1"), only), TenantHeader::Keep);
            assert_eq!(tenant_header(t(), Some(b"2"), only), TenantHeader::Mismatch);
            assert_eq!(tenant_header(None, None, only), TenantHeader::Keep);
        }
        assert_eq!(tenant_header(None, Some(b"2"), false), TenantHeader::Keep);
        assert_eq!(tenant_header(None, Some(b"2"), true), TenantHeader::Remove);
    }
}
