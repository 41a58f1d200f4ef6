//! Browser sign-in and cross-site request protection.
//!
//! A browser signs in once with the admin token through the login form; the
//! dashboard then sets a cookie that is `HttpOnly` (no script reads it),
//! `SameSite=Strict` (no other site's page sends it) and, unless turned off,
//! `Secure`. The cookie holds an expiry, a random nonce and an HMAC-SHA256 of both
//! under the dashboard's signing key: nothing secret is in it, and it cannot be
//! forged or extended without the key.
//!
//! Every state-changing request made with the cookie must also carry the form field
//! `_csrf`, an HMAC of the cookie under the same key that only the dashboard's own
//! pages embed, and must not come from another origin (`Sec-Fetch-Site`, else
//! `Origin` against `Host`). `SameSite=Strict` alone already keeps other sites'
//! requests cookie-less; the token and the origin check hold even where a browser
//! or a proxy gets that wrong. Scripts use `Authorization: Bearer`, which a browser
//! never attaches by itself, so they need neither.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use larder_core::RequestView;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The sign-in cookie's name.
pub const COOKIE: &str = "larder_admin";

/// The key that signs sign-in cookies and CSRF tokens.
#[derive(Clone)]
pub(crate) struct SigningKey([u8; 32]);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// A key derived from `secret`: every instance given the same secret accepts
    /// the others' cookies, and a new secret signs everyone out.
    pub(crate) fn derive(secret: &[u8]) -> Self {
        Self(mac(secret, &[b"larder-dashboard sign-in key"]))
    }

    /// A random key: sign-ins last as long as the process and its one instance.
    pub(crate) fn random() -> Self {
        let mut key = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut key) {
            // Without an entropy source no key is safe; refuse every cookie instead
            // of signing with a guessable one.
            tracing::error!(target: "larder::dashboard", error = %e, "no random source: browser sign-in is disabled");
            return Self::derive(&[]);
        }
        Self(key)
    }

    /// A new sign-in cookie's value, valid for `ttl` from `now`.
    pub(crate) fn issue(&self, now: SystemTime, ttl: Duration) -> String {
        let expires = unix(now) + ttl.as_secs();
        let mut nonce = [0u8; 16];
        // A failed entropy source leaves the nonce zero: the cookie stays unforgeable
        // (the MAC), it only stops being unique.
        let _ = getrandom::fill(&mut nonce);
        let body = format!("v1.{expires}.{}", hex(&nonce));
        let tag = hex(&mac(&self.0, &[b"cookie|", body.as_bytes()]));
        format!("{body}.{tag}")
    }

    /// Whether `value` is a cookie this key issued that has not expired.
    pub(crate) fn verify(&self, value: &str, now: SystemTime) -> bool {
        let Some((body, tag)) = value.rsplit_once('.') else {
            return false;
        };
        let mut parts = body.split('.');
        let (Some("v1"), Some(expires), Some(_nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(expires) = expires.parse::<u64>() else {
            return false;
        };
        let expected = hex(&mac(&self.0, &[b"cookie|", body.as_bytes()]));
        constant_time_eq(expected.as_bytes(), tag.as_bytes()) && unix(now) < expires
    }

    /// The CSRF token that goes with sign-in cookie `cookie`.
    pub(crate) fn csrf(&self, cookie: &str) -> String {
        hex(&mac(&self.0, &[b"csrf|", cookie.as_bytes()]))
    }

    /// Whether `token` is the CSRF token of `cookie`.
    pub(crate) fn csrf_matches(&self, cookie: &str, token: &str) -> bool {
        constant_time_eq(self.csrf(cookie).as_bytes(), token.as_bytes())
    }
}

/// The sign-in cookie a request carries, if any.
pub(crate) fn cookie_of(req: &dyn RequestView) -> Option<String> {
    req.header_values("cookie")
        .into_iter()
        .filter_map(|h| std::str::from_utf8(h).ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

/// Whether a request comes from another site: `Sec-Fetch-Site` when the browser
/// sends it (every current one does), else `Origin` against `Host`. A request with
/// neither (no browser sends a form post without one of them) is let through: the
/// CSRF token still has to match.
pub(crate) fn is_cross_site(req: &dyn RequestView) -> bool {
    let text = |name| req.header(name).and_then(|h| std::str::from_utf8(h).ok());
    if let Some(site) = text("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (text("origin"), text("host")) {
        (None, _) => false,
        // An opaque origin ("null"), or one with no host to compare it with.
        (Some(origin), Some(host)) if origin != "null" => origin
            .split_once("://")
            .map(|(_, authority)| authority)
            .is_none_or(|authority| !authority.eq_ignore_ascii_case(host)),
        (Some(_), _) => true,
    }
}

/// The `Set-Cookie` value that signs a browser in.
pub(crate) fn set_cookie(value: &str, path: &str, ttl: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        ttl.as_secs()
    )
}

/// The `Set-Cookie` value that signs a browser out.
pub(crate) fn clear_cookie(path: &str, secure: bool) -> String {
    set_cookie("", path, Duration::ZERO, secure)
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Equal slices, in a time that depends only on their lengths (`subtle`).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_core::request::SimpleRequest;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_cookie_verifies_until_it_expires_and_only_under_its_key() {
        let key = SigningKey::derive(b"token");
        let now = SystemTime::now();
        let cookie = key.issue(now, HOUR);
        assert!(key.verify(&cookie, now));
        assert!(key.verify(&cookie, now + HOUR - Duration::from_secs(2)));
        assert!(!key.verify(&cookie, now + HOUR + Duration::from_secs(1)));
        // Another instance with the same secret accepts it; another secret does not.
        assert!(SigningKey::derive(b"token").verify(&cookie, now));
        assert!(!SigningKey::derive(b"other").verify(&cookie, now));
        assert!(!SigningKey::random().verify(&cookie, now));
        // Two sign-ins get two cookies.
        assert_ne!(cookie, key.issue(now, HOUR));
    }

    #[test]
    fn a_tampered_cookie_is_refused() {
        let key = SigningKey::derive(b"token");
        let now = SystemTime::now();
        let cookie = key.issue(now, HOUR);
        let (body, tag) = cookie.rsplit_once('.').unwrap_or_default();
        let (head, _nonce) = body.rsplit_once('.').unwrap_or_default();
        let far = unix(now) + 1_000_000;
        let extended = format!("v1.{far}.{}", &body[body.len() - 32..]);
        for bad in [
            String::new(),
            "v1".into(),
            format!("{body}."),
            format!("{body}.{}", "0".repeat(64)),
            format!("{extended}.{tag}"),
            format!("{head}.{}.{tag}", "f".repeat(32)),
            format!("v2{}.{tag}", &body[2..]),
            format!("{body}.{tag}.x"),
            cookie.to_uppercase(),
        ] {
            assert!(!key.verify(&bad, now), "{bad}");
        }
    }

    #[test]
    fn the_csrf_token_belongs_to_one_cookie() {
        let key = SigningKey::derive(b"token");
        let now = SystemTime::now();
        let (a, b) = (key.issue(now, HOUR), key.issue(now, HOUR));
        assert!(key.csrf_matches(&a, &key.csrf(&a)));
        assert!(!key.csrf_matches(&a, &key.csrf(&b)));
        assert!(!key.csrf_matches(&a, ""));
        assert!(!SigningKey::derive(b"other").csrf_matches(&a, &key.csrf(&a)));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let req =
            SimpleRequest::new("GET", "/").with_header("cookie", "a=1; larder_admin=v1.2.3.4 ;b=2");
        assert_eq!(cookie_of(&req).as_deref(), Some("v1.2.3.4"));
        let other = SimpleRequest::new("GET", "/").with_header("cookie", "xlarder_admin=1");
        assert_eq!(cookie_of(&other), None);
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let req = |headers: &[(&str, &str)]| {
            headers
                .iter()
                .fold(SimpleRequest::new("POST", "/"), |r, (n, v)| {
                    r.with_header(n, v)
                })
        };
        let host = ("host", "app.example:8080");
        for same in [
            req(&[("sec-fetch-site", "same-origin")]),
            req(&[("sec-fetch-site", "none")]),
            req(&[host, ("origin", "https://app.example:8080")]),
            req(&[host, ("origin", "http://APP.example:8080")]),
            req(&[host]),
        ] {
            assert!(!is_cross_site(&same));
        }
        for cross in [
            req(&[("sec-fetch-site", "cross-site")]),
            req(&[("sec-fetch-site", "same-site")]),
            // Sec-Fetch-Site wins over a matching Origin.
            req(&[
                host,
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://app.example:8080"),
            ]),
            req(&[host, ("origin", "https://evil.example")]),
            req(&[host, ("origin", "https://app.example:8080.evil.example")]),
            req(&[host, ("origin", "null")]),
            req(&[("origin", "https://app.example:8080")]),
        ] {
            assert!(is_cross_site(&cross));
        }
    }

    #[test]
    fn the_cookie_attributes() {
        let c = set_cookie("v", "/admin", HOUR, true);
        assert_eq!(
            c,
            "larder_admin=v; Path=/admin; Max-Age=3600; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!clear_cookie("/admin", false).contains("Secure"));
        assert!(clear_cookie("/admin", false).contains("Max-Age=0"));
    }
}
