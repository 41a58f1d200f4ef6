//! A response as it is stored: status line, end-to-end headers, body.
//!
//! ```text
//! 200\n
//! content-type: application/json\n
//! etag: "9f2c..."\n
//! \n
//! {"balance": ...}
//! ```
//!
//! Readable in `redis-cli`. Hop-by-hop headers, `Set-Cookie`, `Date`, `Age`,
//! `Content-Length` and `X-Cache` are not stored.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue};

use crate::entry::CorruptEntry;

const NOT_STORED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
    "date",
    "age",
    "content-length",
    "x-cache",
];

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// Status code.
    pub status: u16,
    /// End-to-end headers, `etag` included. Values share the stored bytes, so a
    /// response built from them copies no header.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Bytes,
}

impl StoredResponse {
    /// Builds a stored response from an origin response's parts, adding a strong
    /// `ETag` (a hash of the body) when the origin gave none. Headers that are not
    /// valid HTTP field names or values are left out.
    pub fn new<'a>(
        status: u16,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
        body: Bytes,
    ) -> Self {
        let mut kept: Vec<(HeaderName, HeaderValue)> = headers
            .filter(|(n, v)| {
                !NOT_STORED.iter().any(|x| n.eq_ignore_ascii_case(x))
                    && !v.contains(&b'\n')
                    && !v.contains(&b'\r')
            })
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_bytes(v).ok()?,
                ))
            })
            .collect();
        if !kept.iter().any(|(n, _)| n == http::header::ETAG) {
            let tag = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(&body));
            if let Ok(tag) = HeaderValue::from_str(&tag) {
                kept.push((http::header::ETAG, tag));
            }
        }
        Self {
            status,
            headers: kept,
            body,
        }
    }

    /// The `ETag`.
    #[must_use]
    pub fn etag(&self) -> Option<&[u8]> {
        self.header("etag")
    }

    /// The first value of a stored header.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_bytes())
    }

    /// Serialises for storage.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let size = 8
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 3)
                .sum::<usize>()
            + self.body.len();
        let mut out = BytesMut::with_capacity(size);
        out.put_slice(self.status.to_string().as_bytes());
        out.put_u8(b'\n');
        for (n, v) in &self.headers {
            out.put_slice(n.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(v.as_bytes());
            out.put_u8(b'\n');
        }
        out.put_u8(b'\n');
        out.put_slice(&self.body);
        out.freeze()
    }

    /// Parses stored bytes.
    ///
    /// # Errors
    /// [`CorruptEntry`] when the bytes are not a stored response.
    pub fn decode(raw: &Bytes) -> Result<Self, CorruptEntry> {
        let mut pos = 0;
        // The next line, as a range of `raw`.
        let mut line = || -> Result<std::ops::Range<usize>, CorruptEntry> {
            let nl = memchr::memchr(b'\n', &raw[pos..])
                .ok_or(CorruptEntry("response header not terminated"))?;
            let range = pos..pos + nl;
            pos += nl + 1;
            Ok(range)
        };
        let status = std::str::from_utf8(&raw[line()?])
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| (100..=999).contains(s))
            .ok_or(CorruptEntry("bad status line"))?;
        // Most stored responses carry a handful of headers: one allocation.
        let mut headers = Vec::with_capacity(4);
        loop {
            let l = line()?;
            if l.is_empty() {
                break;
            }
            // A name holds no ':', so the first one ends it; ": " separates.
            let colon = memchr::memchr(b':', &raw[l.clone()])
                .filter(|&c| raw.get(l.start + c + 1) == Some(&b' '))
                .ok_or(CorruptEntry("bad header line"))?;
            let name = HeaderName::from_bytes(&raw[l.start..l.start + colon])
                .map_err(|_| CorruptEntry("bad header name"))?;
            let value = HeaderValue::from_maybe_shared(raw.slice(l.start + colon + 2..l.end))
                .map_err(|_| CorruptEntry("bad header value"))?;
            headers.push((name, value));
            if headers.len() > 256 {
                return Err(CorruptEntry("too many headers"));
            }
        }
        Ok(Self {
            status,
            headers,
            body: raw.slice(pos..),
        })
    }
}

/// A stored response ready to serve: decoded once per entry, shared by the entry's
/// hits, with what an adapter derives from it kept beside it.
#[derive(Debug)]
pub(crate) struct Servable {
    stored: StoredResponse,
    /// The headers as Actix-web's types (`http` 0.2), converted on first use.
    #[cfg(feature = "actix")]
    actix_headers: std::sync::OnceLock<Vec<(ActixName, ActixValue)>>,
}

#[cfg(feature = "actix")]
type ActixName = actix_web::http::header::HeaderName;
#[cfg(feature = "actix")]
type ActixValue = actix_web::http::header::HeaderValue;

impl Servable {
    /// Wraps a decoded response.
    #[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
    pub(crate) fn new(stored: StoredResponse) -> Self {
        Self {
            stored,
            #[cfg(feature = "actix")]
            actix_headers: std::sync::OnceLock::new(),
        }
    }

    /// The stored headers as Actix-web's types (the stored ones are the `http` 1
    /// crate's), converted once per entry; a header that does not convert is left out.
    #[cfg(feature = "actix")]
    pub(crate) fn actix_headers(&self) -> &[(ActixName, ActixValue)] {
        self.actix_headers.get_or_init(|| {
            self.stored
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((
                        ActixName::from_bytes(name.as_str().as_bytes()).ok()?,
                        ActixValue::from_bytes(value.as_bytes()).ok()?,
                    ))
                })
                .collect()
        })
    }
}

impl std::ops::Deref for Servable {
    type Target = StoredResponse;

    fn deref(&self) -> &StoredResponse {
        &self.stored
    }
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, `*`, lists).
#[must_use]
pub fn etag_matches(if_none_match: &[u8], etag: &[u8]) -> bool {
    let strip = |t: &[u8]| -> Vec<u8> {
        let t = t.trim_ascii();
        t.strip_prefix(b"W/").unwrap_or(t).to_vec()
    };
    let want = strip(etag);
    if_none_match
        .split(|&b| b == b',')
        .any(|candidate| candidate.trim_ascii() == b"*" || strip(candidate) == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_drops_hop_by_hop_headers() {
        let headers = [
            ("Content-Type", &b"application/json"[..]),
            ("Set-Cookie", b"a=b"),
            ("Connection", b"close"),
            ("Content-Length", b"2"),
            ("X-Custom", b"x: y"),
            ("Bad Name", b"dropped"),
        ];
        let r = StoredResponse::new(200, headers.into_iter(), Bytes::from_static(b"{}\n\nbody"));
        assert_eq!(r.header("content-type"), Some(&b"application/json"[..]));
        assert!(r.header("set-cookie").is_none() && r.header("connection").is_none());
        assert_eq!(r.header("x-custom"), Some(&b"x: y"[..]));
        assert_eq!(r.headers.len(), 3, "content-type, x-custom and the etag");
        assert!(r.etag().unwrap().starts_with(b"\""));
        let back = StoredResponse::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn corrupt_bytes_are_errors() {
        for raw in [
            &b""[..],
            b"abc\n\n",
            b"200\nno-colon\n\n",
            b"200\nx: y",
            b"99\n\n",
            b"200\n: v\n\n",
            b"200\nbad name: v\n\n",
            b"200\nx: \x01\n\n",
            b"200\nx:y\n\n",
            b"200\nx:\n\n",
            b"200\na:b: c\n\n",
        ] {
            assert!(
                StoredResponse::decode(&Bytes::copy_from_slice(raw)).is_err(),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(etag_matches(b"\"a\"", b"\"a\""));
        assert!(etag_matches(b"W/\"a\"", b"\"a\""));
        assert!(etag_matches(b"\"x\", \"a\"", b"\"a\""));
        assert!(etag_matches(b"*", b"\"a\""));
        assert!(!etag_matches(b"\"b\"", b"\"a\""));
    }
}
