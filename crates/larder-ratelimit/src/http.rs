//! HTTP rate limiting, shared by the Tower and Actix adapters: which policies apply to
//! a request, and what the response carries.
//!
//! Nothing here knows a framework. An adapter asks [`RateLimit::plan`] for the
//! request's checks (synchronously, while it holds the request), answers at once
//! when [`Plan::reject_locally`] rejects it (a key known to be over its limit: no
//! round trip), and otherwise runs the plan and either calls the inner service and
//! adds [`Verdict::Pass`]'s headers, or answers with the [`Rejection`].
//!
//! Responses on limited routes carry the IETF `RateLimit-Policy` and `RateLimit`
//! fields (draft-ietf-httpapi-ratelimit-headers), for example
//! `RateLimit-Policy: "ip";q=100;w=60` and `RateLimit: "ip";r=42;t=35`. A rejection
//! is a 429 with a JSON body and `Retry-After` (whole seconds, rounded up, so never
//! earlier than the moment the request would be admitted).

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder_core::request::PathPattern;
use larder_core::RequestView;

use crate::limiter::{Check, Decision, DenyReason, RateLimiter, Source};
use crate::policy::Policy;
use crate::quota::Quota;

/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
/// `RateLimit`.
pub const RATELIMIT: &str = "ratelimit";
/// `Retry-After`.
pub const RETRY_AFTER: &str = "retry-after";

#[derive(Clone)]
struct Rule {
    method: Option<String>,
    pattern: Option<PathPattern>,
    policy: Policy,
}

type Predicate = Arc<dyn Fn(&dyn RequestView) -> bool + Send + Sync>;

#[derive(Clone)]
struct Inner {
    limiter: RateLimiter,
    rules: Vec<Rule>,
    exempt_prefixes: Vec<String>,
    exempt: Vec<Predicate>,
    headers: bool,
}

/// Which policies apply to which requests. Cheap to clone.
///
/// ```
/// use larder_core::Handle;
/// use larder_ratelimit::{Key, Policy, RateLimit, RateLimiter};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RateLimiter::new(Handle::in_process());
/// let limits = RateLimit::new(limiter)
///     // Every request: per client IP and per tenant.
///     .policy(Policy::new("ip", "100/minute")?)
///     .policy(Policy::new("tenant", "10000/hour")?.key(Key::tenant_header("x-tenant-id")))
///     // One route: logins per IP.
///     .route("POST", "/login", Policy::new("login", "5/minute")?)
///     .exempt_prefix("/health/");
/// # let _ = limits; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RateLimit {
    inner: Arc<Inner>,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field(
                "policies",
                &self
                    .inner
                    .rules
                    .iter()
                    .map(|r| r.policy.name())
                    .collect::<Vec<_>>(),
            )
            .field("exempt_prefixes", &self.inner.exempt_prefixes)
            .field("headers", &self.inner.headers)
            .finish_non_exhaustive()
    }
}

impl RateLimit {
    /// No policies yet, headers on.
    #[must_use]
    pub fn new(limiter: RateLimiter) -> Self {
        Self {
            inner: Arc::new(Inner {
                limiter,
                rules: Vec::new(),
                exempt_prefixes: Vec::new(),
                exempt: Vec::new(),
                headers: true,
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// Applies `policy` to every request that is not exempt.
    #[must_use]
    pub fn policy(self, policy: Policy) -> Self {
        self.edit(|i| {
            i.rules.push(Rule {
                method: None,
                pattern: None,
                policy,
            });
        })
    }

    /// Applies `policy` to requests with `method` (`"*"` for any) on paths matching
    /// `pattern` (`/login`, `/products/{id}`, `/api/{*rest}`).
    #[must_use]
    pub fn route(self, method: &str, pattern: &str, policy: Policy) -> Self {
        let method = (method != "*").then(|| method.to_ascii_uppercase());
        let pattern = Some(PathPattern::parse(pattern));
        self.edit(|i| {
            i.rules.push(Rule {
                method,
                pattern,
                policy,
            });
        })
    }

    /// Exempts paths starting with `prefix` (`/health/`) from every policy.
    #[must_use]
    pub fn exempt_prefix(self, prefix: &str) -> Self {
        let prefix = prefix.to_owned();
        self.edit(|i| i.exempt_prefixes.push(prefix))
    }

    /// Exempts requests for which `f` returns true (an allow-list of addresses, an
    /// internal header).
    #[must_use]
    pub fn exempt<F>(self, f: F) -> Self
    where
        F: Fn(&dyn RequestView) -> bool + Send + Sync + 'static,
    {
        self.edit(|i| i.exempt.push(Arc::new(f)))
    }

    /// Turns the `RateLimit-Policy` and `RateLimit` fields on or off (default on).
    /// `Retry-After` on rejections is always sent.
    #[must_use]
    pub fn headers(self, on: bool) -> Self {
        self.edit(|i| i.headers = on)
    }

    /// The limiter.
    #[must_use]
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// The checks that apply to `req` (empty when exempt or when no policy applies).
    #[must_use]
    pub fn plan(&self, req: &dyn RequestView) -> Plan {
        let inner = &self.inner;
        let path = req.path();
        let exempt = inner
            .exempt_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
            || inner.exempt.iter().any(|f| f(req));
        let mut checks = Vec::new();
        if !exempt {
            for rule in &inner.rules {
                if rule.method.as_deref().is_some_and(|m| m != req.method()) {
                    continue;
                }
                if rule.pattern.as_ref().is_some_and(|p| !p.matches(path)) {
                    continue;
                }
                let Some(key) = rule.policy.key_of(req) else {
                    continue;
                };
                checks.push(Check::from_safe_key(
                    &rule.policy,
                    key,
                    rule.policy.cost_of(req),
                ));
            }
        }
        let keys = inner.limiter.keys_of(&checks);
        Plan {
            limiter: inner.limiter.clone(),
            checks,
            keys,
            headers: inner.headers,
            prechecked: false,
        }
    }
}

/// The checks for one request, owned, so an adapter may run them after letting go of
/// the request.
#[derive(Debug)]
pub struct Plan {
    limiter: RateLimiter,
    checks: Vec<Check>,
    /// The Redis key of each quota of `checks`, built once.
    keys: Vec<String>,
    headers: bool,
    /// The local pre-check has been made ([`Plan::reject_locally`]): `run` skips it.
    prechecked: bool,
}

impl Plan {
    /// Whether no policy applies (the request passes with no round trip).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// The rejection, at once, when the local pre-check rejects the request (a key
    /// known to be over its limit): no round trip, nothing to await, so an adapter
    /// answers without a boxed future. Otherwise the plan back, for [`run`](Self::run)
    /// (which then does not repeat the pre-check).
    ///
    /// # Errors
    /// The plan itself when the request is not rejected locally.
    pub fn reject_locally(mut self) -> Result<Rejection, Self> {
        if let Some(decision) = self.limiter.check_locally(&self.checks, &self.keys) {
            if let Verdict::Reject(rejection) = render(&decision, self.headers) {
                return Ok(rejection);
            }
        }
        self.prechecked = true;
        Err(self)
    }

    /// Decides and renders.
    pub async fn run(self) -> Verdict {
        if self.checks.is_empty() {
            return Verdict::Pass {
                headers: Vec::new(),
            };
        }
        let decision = if self.prechecked {
            self.limiter.check_remotely(&self.checks, &self.keys).await
        } else {
            self.limiter.check_keyed(&self.checks, &self.keys).await
        };
        render(&decision, self.headers)
    }
}

/// What the adapter does with the request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Verdict {
    /// Call the inner service and add these headers to its response.
    Pass {
        /// Header names (lower case) and values.
        headers: Vec<(&'static str, Bytes)>,
    },
    /// Answer with this instead.
    Reject(Rejection),
}

/// A rejection response.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The status (429, or what a fail-closed policy says).
    pub status: u16,
    /// Header names (lower case) and values, including `content-type`.
    pub headers: Vec<(&'static str, Bytes)>,
    /// The JSON body.
    pub body: Bytes,
}

fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// What a single-quota rejection's response depends on: the per-thread memo of the
/// last rejection answers when all of it is the same (a flood from one client gets
/// the same 429, to the second, many times over).
#[derive(Debug, Clone, PartialEq)]
struct RejectionKey {
    with_headers: bool,
    policy: Arc<str>,
    limit: Quota,
    retry_secs: u64,
    name: Arc<str>,
    quota: Quota,
    reset_secs: u64,
    source: Source,
}

impl RejectionKey {
    /// The key of a rejection by one exhausted quota with one quota state; `None` for
    /// any other decision (rendered each time).
    fn of(decision: &Decision, with_headers: bool) -> Option<Self> {
        let Decision::Deny {
            reason: DenyReason::Limited { policy, quota },
            retry_after,
            quotas,
        } = decision
        else {
            return None;
        };
        let [state] = quotas.as_slice() else {
            return None;
        };
        if state.shadow || state.remaining != 0 {
            return None;
        }
        Some(Self {
            with_headers,
            policy: policy.clone(),
            limit: *quota,
            // As the rendering computes it, so equal keys mean equal responses.
            retry_secs: ceil_secs(*retry_after).max(1),
            name: state.name.clone(),
            quota: state.quota,
            reset_secs: ceil_secs(state.reset),
            source: state.source,
        })
    }
}

thread_local! {
    static LAST_REJECTION: RefCell<Option<(RejectionKey, Rejection)>> = const { RefCell::new(None) };
}

/// The decision as response fields. A flood from one client meets the same 429,
/// to the second, many times over: the last rejection of each thread is kept and
/// given again while its decision is the same (BENCHMARKS.md, "The 429 memo": the
/// reject path's throughput with and without it).
#[must_use]
pub fn render(decision: &Decision, with_headers: bool) -> Verdict {
    let Some(key) = RejectionKey::of(decision, with_headers) else {
        return render_fresh(decision, with_headers);
    };
    let last = LAST_REJECTION.with(|memo| {
        memo.borrow()
            .as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, rejection)| rejection.clone())
    });
    if let Some(rejection) = last {
        return Verdict::Reject(rejection);
    }
    let verdict = render_fresh(decision, with_headers);
    if let Verdict::Reject(rejection) = &verdict {
        let kept = Some((key, rejection.clone()));
        LAST_REJECTION.with(|memo| *memo.borrow_mut() = kept);
    }
    verdict
}

/// The decision as response fields, rendered anew.
fn render_fresh(decision: &Decision, with_headers: bool) -> Verdict {
    let mut headers = Vec::with_capacity(4);
    if with_headers {
        // Every admitted request on a limited route carries these: written
        // straight into two strings, no list per request.
        use std::fmt::Write as _;
        let (mut policy, mut state) = (String::new(), String::new());
        let shown = decision.quotas().iter().filter(|q| {
            !q.shadow && matches!(q.source, Source::Redis | Source::LocalBlock | Source::Local)
        });
        for q in shown {
            let sep = if policy.is_empty() { "" } else { ", " };
            // Writing into a `String` cannot fail.
            let _ = write!(
                policy,
                "{sep}\"{}\";q={};w={}",
                q.name,
                q.quota.count(),
                q.quota.window_secs()
            );
            let _ = write!(
                state,
                "{sep}\"{}\";r={};t={}",
                q.name,
                q.remaining,
                ceil_secs(q.reset)
            );
        }
        if !policy.is_empty() {
            headers.push((RATELIMIT_POLICY, Bytes::from(policy)));
            headers.push((RATELIMIT, Bytes::from(state)));
        }
    }
    let Decision::Deny {
        reason,
        retry_after,
        ..
    } = decision
    else {
        return Verdict::Pass { headers };
    };
    let retry = ceil_secs(*retry_after).max(1);
    headers.push((RETRY_AFTER, Bytes::from(retry.to_string())));
    headers.push(("content-type", Bytes::from_static(b"application/json")));
    let policy = reason.policy();
    let (status, error, limit, message) = match reason {
        DenyReason::Limited { quota, .. } => (
            429,
            "rate_limited",
            Some(quota.to_string()),
            format!("Too many requests: limit \"{policy}\" ({quota}) exceeded. Retry in {retry} s."),
        ),
        DenyReason::CostExceedsBurst { quota, cost, .. } => (
            429,
            "rate_limited",
            Some(quota.to_string()),
            format!("This request costs {cost}, more than limit \"{policy}\" ({quota}) admits at once."),
        ),
        DenyReason::Unavailable { status, .. } => (
            *status,
            "rate_limit_unavailable",
            None,
            format!("Rate limiting is unavailable and limit \"{policy}\" rejects requests until it returns."),
        ),
    };
    let body = RejectionBody {
        error,
        message,
        policy,
        limit,
        retry_after: retry,
    };
    Verdict::Reject(Rejection {
        status,
        headers,
        // A struct of strings and a number always serialises.
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    })
}

/// A rejection's JSON body.
#[derive(serde::Serialize)]
struct RejectionBody<'a> {
    error: &'static str,
    message: String,
    policy: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<String>,
    retry_after: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::QuotaState;
    use crate::quota::Quota;

    fn state(name: &str, allowed: bool, remaining: u64, reset_ms: u64) -> QuotaState {
        QuotaState {
            policy: Arc::from(name),
            name: Arc::from(name),
            quota: Quota::per_minute(100).unwrap(),
            allowed,
            remaining,
            reset: Duration::from_millis(reset_ms),
            shadow: false,
            source: Source::Redis,
        }
    }

    #[test]
    fn pass_carries_ietf_fields() {
        let d = Decision::Allow {
            quotas: vec![
                state("ip", true, 42, 34_100),
                state("tenant", true, 9, 1000),
            ],
        };
        let Verdict::Pass { headers } = render(&d, true) else {
            panic!("expected pass")
        };
        assert_eq!(
            headers,
            vec![
                (
                    RATELIMIT_POLICY,
                    Bytes::from_static(b"\"ip\";q=100;w=60, \"tenant\";q=100;w=60")
                ),
                (
                    RATELIMIT,
                    Bytes::from_static(b"\"ip\";r=42;t=35, \"tenant\";r=9;t=1")
                ),
            ]
        );
        let Verdict::Pass { headers } = render(&d, false) else {
            panic!("expected pass")
        };
        assert!(headers.is_empty());
    }

    #[test]
    fn rejection_is_429_json_with_retry_after_rounded_up() {
        let d = Decision::Deny {
            reason: DenyReason::Limited {
                policy: Arc::from("ip"),
                quota: Quota::per_minute(100).unwrap(),
            },
            retry_after: Duration::from_millis(1_200),
            quotas: vec![state("ip", false, 0, 1_200)],
        };
        let Verdict::Reject(r) = render(&d, true) else {
            panic!("expected reject")
        };
        assert_eq!(r.status, 429);
        let find = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(find(RETRY_AFTER).as_deref(), Some(&b"2"[..]));
        assert_eq!(find(RATELIMIT).as_deref(), Some(&b"\"ip\";r=0;t=2"[..]));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["policy"], "ip");
        assert_eq!(body["retry_after"], 2);
        assert_eq!(body["limit"], "100/minute");
        assert_eq!(
            body["message"],
            "Too many requests: limit \"ip\" (100/minute) exceeded. Retry in 2 s."
        );
    }

    #[test]
    fn rejection_bodies_stay_valid_json_whatever_the_policy_is_called() {
        let name = "we\"ird\\ name\n\t\u{1}é";
        for reason in [
            DenyReason::Limited {
                policy: Arc::from(name),
                quota: Quota::per_minute(5).unwrap(),
            },
            DenyReason::CostExceedsBurst {
                policy: Arc::from(name),
                quota: Quota::per_minute(5).unwrap(),
                cost: 9,
            },
            DenyReason::Unavailable {
                policy: Arc::from(name),
                status: 503,
            },
        ] {
            let d = Decision::Deny {
                reason,
                retry_after: Duration::from_secs(3),
                quotas: vec![],
            };
            let Verdict::Reject(r) = render(&d, false) else {
                panic!("expected reject")
            };
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["policy"], name);
            assert_eq!(body["retry_after"], 3);
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(&format!("\"{name}\"")), "{message}");
        }
    }

    /// A rejection by `policy` (100/minute, exhausted), `retry_ms` from now.
    fn deny(policy: &str, retry_ms: u64, source: Source) -> Decision {
        Decision::Deny {
            reason: DenyReason::Limited {
                policy: Arc::from(policy),
                quota: Quota::per_minute(100).unwrap(),
            },
            retry_after: Duration::from_millis(retry_ms),
            quotas: vec![QuotaState {
                source,
                ..state(policy, false, 0, retry_ms)
            }],
        }
    }

    /// `d` rendered: a rejection.
    fn reject(d: &Decision, with_headers: bool) -> Rejection {
        match render(d, with_headers) {
            Verdict::Reject(r) => r,
            Verdict::Pass { .. } => panic!("expected reject"),
        }
    }

    #[test]
    fn a_rejection_names_its_limit_and_rounds_its_wait_up() {
        let quota = Quota::per_minute(100).unwrap().to_string();
        let r = reject(&deny("ip", 1_200, Source::LocalBlock), true);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "error": "rate_limited",
                "message": format!("Too many requests: limit \"ip\" ({quota}) exceeded. Retry in 2 s."),
                "policy": "ip",
                "limit": quota,
                "retry_after": 2,
            })
        );
        let header = |r: &Rejection, name: &str| {
            r.headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header(&r, RETRY_AFTER).as_deref(), Some("2"));
        assert_eq!(
            header(&r, RATELIMIT_POLICY).as_deref(),
            Some("\"ip\";q=100;w=60")
        );
        assert_eq!(header(&r, RATELIMIT).as_deref(), Some("\"ip\";r=0;t=2"));
        let bare = reject(&deny("ip", 1_200, Source::LocalBlock), false);
        assert_eq!(header(&bare, RATELIMIT), None);
        assert_eq!(bare.body, r.body);
        // Fail-open states are not shown; the wait rounds up to whole seconds.
        let open = reject(&deny("user", 2_500, Source::FailOpen), true);
        assert_eq!(header(&open, RATELIMIT), None);
        assert_eq!(header(&open, RETRY_AFTER).as_deref(), Some("3"));
    }

    #[test]
    fn a_repeated_rejection_is_answered_from_the_memo_and_any_change_renders_anew() {
        let cases = [
            deny("ip", 1_200, Source::LocalBlock),
            deny("ip", 1_900, Source::LocalBlock),
            deny("ip", 2_500, Source::LocalBlock),
            deny("user", 2_500, Source::LocalBlock),
            deny("user", 2_500, Source::Redis),
            deny("user", 2_500, Source::FailOpen),
        ];
        for with_headers in [true, false, true] {
            for d in &cases {
                let got = reject(d, with_headers);
                let Verdict::Reject(fresh) = render_fresh(d, with_headers) else {
                    panic!("expected reject")
                };
                assert_eq!(got.status, fresh.status);
                assert_eq!(got.headers, fresh.headers, "{d:?} {with_headers}");
                assert_eq!(got.body, fresh.body, "{d:?} {with_headers}");
            }
        }
        // The same decision again shares the first answer's bytes (the memo answered);
        // 1.2 s and 1.9 s both round up to 2 s, so they share one response too.
        let first = reject(&cases[0], true);
        assert_eq!(first.body.as_ptr(), reject(&cases[0], true).body.as_ptr());
        assert_eq!(first.body.as_ptr(), reject(&cases[1], true).body.as_ptr());
        assert_ne!(first.body.as_ptr(), reject(&cases[2], true).body.as_ptr());
        let retry = |r: &Rejection| {
            r.headers
                .iter()
                .find(|(k, _)| *k == RETRY_AFTER)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(retry(&reject(&cases[2], true)).as_deref(), Some(&b"3"[..]));
        assert_eq!(retry(&reject(&cases[0], true)).as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn fail_closed_uses_its_status_and_shadow_is_hidden() {
        let mut shadow = state("exp", false, 0, 5000);
        shadow.shadow = true;
        let d = Decision::Deny {
            reason: DenyReason::Unavailable {
                policy: Arc::from("strict"),
                status: 503,
            },
            retry_after: Duration::from_secs(1),
            quotas: vec![shadow],
        };
        let Verdict::Reject(r) = render(&d, true) else {
            panic!("expected reject")
        };
        assert_eq!(r.status, 503);
        assert!(r.headers.iter().all(|(k, _)| *k != RATELIMIT));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "rate_limit_unavailable");
    }
}
