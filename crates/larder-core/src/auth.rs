//! Who may use an admin endpoint: the [`Authorize`] hook every admin surface of
//! larder (the cache's admin routes, the dashboard) takes, and [`BearerToken`], the
//! hook for one shared token.

use std::sync::Arc;

use crate::request::RequestView;

/// Decides whether a request may use an admin endpoint.
pub trait Authorize: Send + Sync + 'static {
    /// True to let the request through.
    fn authorize(&self, req: &dyn RequestView) -> bool;
}

impl<F> Authorize for F
where
    F: Fn(&dyn RequestView) -> bool + Send + Sync + 'static,
{
    fn authorize(&self, req: &dyn RequestView) -> bool {
        self(req)
    }
}

/// Accepts `Authorization: Bearer <token>` for one token, compared in constant time.
#[derive(Clone)]
pub struct BearerToken {
    token: Arc<[u8]>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(***)")
    }
}

impl BearerToken {
    /// Accepts `token`. An empty token accepts nothing.
    #[must_use]
    pub fn new(token: &str) -> Self {
        Self {
            token: Arc::from(token.as_bytes()),
        }
    }
}

impl Authorize for BearerToken {
    fn authorize(&self, req: &dyn RequestView) -> bool {
        // The scheme's name is case-insensitive (RFC 9110, section 11.1).
        let Some(given) = req
            .header("authorization")
            .and_then(|h| h.split_at_checked(7))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|(_, token)| token)
        else {
            return false;
        };
        if self.token.is_empty() {
            return false;
        }
        // Constant time in the token: the loop runs over what was sent (its length
        // is the sender's own), comparing each byte with the token's, cycled, and
        // a length difference only sets a flag. Neither the token's bytes nor its
        // length change how long a refusal takes.
        let differ = given.iter().enumerate().fold(0u8, |acc, (i, a)| {
            acc | (a ^ self.token[i % self.token.len()])
        });
        (differ == 0) & (given.len() == self.token.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_under_any_case_of_the_scheme_and_nothing_else() {
        use crate::request::SimpleRequest;
        let token = BearerToken::new("t0ken");
        let with = |value: &str| SimpleRequest::new("GET", "/").with_header("authorization", value);
        for good in ["Bearer t0ken", "bearer t0ken", "BEARER t0ken"] {
            assert!(token.authorize(&with(good)), "{good}");
        }
        for bad in [
            "Bearer t0ke",
            "Bearer t0kenn",
            // The token cycled (the comparison cycles it): refused by its length.
            "Bearer t0kent0ken",
            "Bearer T0KEN",
            "Basic t0ken",
            "Bearert0ken",
            "t0ken",
            "Bearer ",
            "",
        ] {
            assert!(!token.authorize(&with(bad)), "{bad}");
        }
        assert!(!token.authorize(&SimpleRequest::new("GET", "/")));
        assert!(!BearerToken::new("").authorize(&with("Bearer ")));
    }
}
